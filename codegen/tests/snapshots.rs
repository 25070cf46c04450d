//! Snapshot tests: every project under specs/ generates exactly the crate checked in under
//! generated/ (those crates are workspace members, so the snapshots are also compiled). A
//! folder holding `federation.txt` lists projects built together into one crate.
//! `UPDATE_SNAPSHOTS=1 cargo test -p specgate --test snapshots` rewrites them.

use std::path::Path;

use specgate::generate::{self, Options};

#[test]
fn generated_crates_match_their_specs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut specs: Vec<_> = std::fs::read_dir(root.join("specs")).expect("specs/").flatten().map(|e| e.path()).collect();
    specs.sort();
    assert!(specs.len() >= 2, "expected example projects under specs/");
    let mut failures = Vec::new();
    for spec in specs {
        let name = spec.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let out = root.join("generated").join(&name);
        let list = spec.join("federation.txt");
        let federated = list.exists();
        let opts = Options { name: federated.then(|| name.clone()), out: out.clone(), runtime_path: None, stub_missing: false };
        let run = || {
            if federated {
                let projects = specgate::federation::read_list(&list).expect("federation.txt");
                specgate::federation::generate(&projects, None, &opts)
            } else {
                generate::generate(&spec, &opts)
            }
        };
        let (output, diags, _) = run();
        let Some(output) = output else {
            failures.push(format!("{name}: generation failed: {diags:?}"));
            continue;
        };
        if update {
            generate::write(&output, &out).expect("write snapshot");
            continue;
        }
        let drift = generate::check(&output, &out);
        if !drift.is_clean() {
            failures.push(format!("{name}: {drift:?}"));
        }
        // Same input, byte-identical output.
        let (again, _, _) = run();
        assert_eq!(again.map(|o| o.files), Some(output.files), "{name}: output is not deterministic");
    }
    assert!(failures.is_empty(), "generated/ drifted from specs/ (run with UPDATE_SNAPSHOTS=1):\n{}", failures.join("\n"));
}
