//! Snapshot tests of the generator's diagnostics.
//!
//! Every folder under `tests/diagnostics/` is a small project, or several built together when
//! it holds a `federation.txt` listing them. Its `expected.txt` holds the rendered diagnostics
//! (no colour) followed by `exit: error` or `exit: ok`. Run with
//! `UPDATE_SNAPSHOTS=1` to rewrite the snapshots after an intended change, then read the diff.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use specgate::generate::{Options, generate};

/// Generates the case: one project, or the projects its `federation.txt` lists.
fn generate_case(dir: &Path, opts: &Options) -> (Option<specgate::generate::Output>, specgate::diag::Diagnostics, Option<specgate::diag::Files>) {
    let list = dir.join("federation.txt");
    if !list.exists() {
        return generate(dir, opts);
    }
    let projects = specgate::federation::read_list(&list).expect("federation.txt");
    specgate::federation::generate(&projects, None, opts)
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("diagnostics")
}

/// What the generator reports for the project at `dir`, as stored in `expected.txt`.
fn render_case(dir: &Path, name: &str) -> String {
    let opts = Options { name: Some(name.to_owned()), out: std::env::temp_dir().join("specgate-diagnostics-out"), runtime_path: None, stub_missing: false };
    let (output, diags, files) = generate_case(dir, &opts);
    let files = files.unwrap_or_default();
    // No wrapping: a message naming the project folder would wrap where the checkout's path
    // length puts it.
    let mut text = diags.render_with_width(&files, false, 10_000);
    // Diagnostics without a file may name the project folder: keep snapshots machine-independent.
    for root in [dir.to_path_buf(), dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())] {
        let shown = root.display().to_string();
        text = text.replace(&shown, "<project>");
    }
    let exit = if diags.has_errors() { "error" } else { "ok" };
    assert_eq!(output.is_some(), !diags.has_errors(), "{name}: output present iff no errors");
    let mut out = String::new();
    for line in text.lines() {
        // miette pads some lines with spaces; editors strip them, so the snapshot does too.
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let _ = writeln!(out, "exit: {exit}");
    out
}

/// A line diff (longest common subsequence), `-` expected, `+` actual.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            let _ = writeln!(out, "  {}", a[i]);
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "- {}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "+ {}", b[j]);
            j += 1;
        }
    }
    out
}

#[test]
fn diagnostics_snapshots() {
    let update = std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/diagnostics exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "expected the diagnostics cases, found {}", cases.len());

    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let actual = render_case(dir, &name);
        let snapshot = dir.join("expected.txt");
        if update {
            std::fs::write(&snapshot, &actual).expect("write expected.txt");
            continue;
        }
        let expected = std::fs::read_to_string(&snapshot).unwrap_or_default().replace("\r\n", "\n");
        if expected != actual {
            failures.push(format!(
                "── case `{name}` ({}) differs (- expected, + actual):\n{}",
                snapshot.display(),
                diff(&expected, &actual)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} diagnostics snapshots differ; rerun with UPDATE_SNAPSHOTS=1 to accept:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
