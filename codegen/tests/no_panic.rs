//! The generator never panics on user input.
//!
//! Copies the example projects of `specs/` to a temporary folder, applies a few hundred
//! deterministic mutations to their files (truncation, byte edits, values of other JSON types,
//! stray `{` `}` `${` `$ref` ...) and runs the whole pipeline on each mutant inside
//! `catch_unwind`. A run without output must come with at least one error.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use specgate::generate::{Options, generate};

/// Mutants to try (deterministic: the same sequence on every run). For a longer local hunt,
/// set `NO_PANIC_ITERATIONS` (and `NO_PANIC_SEED`); the time budget then does not apply.
const ITERATIONS: usize = 600;
/// Stop early on a slow machine rather than exceed the test's time budget.
const BUDGET: Duration = Duration::from_secs(18);
const SEED: u64 = 0x5EED_5EED_2025;

/// splitmix64: tiny, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (`0` when `n == 0`).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

/// Removes the temporary folder however the test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create temp dir");
    for entry in std::fs::read_dir(from).expect("read spec dir").flatten() {
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).expect("copy spec file");
        }
    }
}

/// Files the generator reads (the mutation targets), sorted for determinism.
fn inputs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            inputs(&path, out);
        } else if path.extension().is_some_and(|e| ["json", "jsonc", "yaml", "yml"].contains(&e.to_string_lossy().as_ref())) {
            out.push(path);
        }
    }
}

/// Text dropped into documents: structure, template and reference fragments.
const SNIPPETS: &[&str] = &[
    "{", "}", "[", "]", ",", ":", "\"", "'", "${", "}", "${params.nope}", "${env.}", "$env(", "$env(X)",
    "\"$ref\": \"#/nope\",", "$ref", "\"$ref\": \"../missing.json#/x\",", "{+rest}", "{id}", "/{", ":id(", "(?<=x)",
    "\\", "\\u", "\\ud800", "- ", "*anchor", "&anchor ", "!!binary ", "\n  ", "\t", "\u{feff}", "\u{0}", "é", "🦀",
    "null", "true", "1e999", "-0", "\"x-zuplo-route\": {},", "\"pathMode\": \"url-pattern\",",
];

/// Text dropped into strings (paths, templates, `$ref`s, module names).
const STRING_SNIPPETS: &[&str] = &[
    "{", "}", "{x}", "{x}{y}", "{+rest}", "{}", ":", ":x", ":x(", "(", ")", "(\\d+)", "((a))", "(?<=x)", "*", "?", "+",
    "{/}?", "\\", "${", "}", "${}", "${params.x}", "${params.id}", "${env.X}", "${env.}", "${foo.bar}", "${e(", "$env(",
    "$env(X)", "$env()", "${headers.get(\"", "${query[\"a\"]}", "?.", "#", "#/", "~", "~2", "%", "%2F", "..", "//", "/",
    "\n", "\r", "é", "🦀", "\u{feff}", "$import(", "$import(./modules/x)", "@zuplo/runtime",
];

/// Values of every JSON type (and troublesome strings) that replace a value of the document.
fn replacement(rng: &mut Rng) -> Value {
    let choices = [
        Value::Null,
        Value::Bool(true),
        serde_json::json!(42),
        serde_json::json!(-1.5),
        serde_json::json!(""),
        serde_json::json!("${"),
        serde_json::json!("${params.x}/${foo.bar}"),
        serde_json::json!("/a/{x}/{x}"),
        serde_json::json!("$import(./modules/nope)"),
        serde_json::json!([]),
        serde_json::json!([1, "two", null]),
        serde_json::json!({}),
        serde_json::json!({ "$ref": "#/components/nope" }),
        serde_json::json!({ "$ref": "../nope.json#/x" }),
        serde_json::json!({ "handler": {} }),
    ];
    rng.pick(&choices)
}

fn json_pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                json_pointers(child, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                json_pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Replaces one value of a JSON document with a value of another type; for YAML (or JSON that
/// does not parse, e.g. JSONC) replaces the text after a `key: ` on some line.
fn replace_value(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(mut doc) = serde_json::from_str::<Value>(text.trim_start_matches('\u{feff}')) {
        let mut pointers = Vec::new();
        json_pointers(&doc, String::new(), &mut pointers);
        let ptr = rng.pick(&pointers);
        let new = replacement(rng);
        if let Some(slot) = doc.pointer_mut(&ptr) {
            *slot = new;
        }
        return serde_json::to_string_pretty(&doc).unwrap_or_default().into_bytes();
    }
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let candidates: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].contains(": ")).collect();
    if candidates.is_empty() {
        return bytes.to_vec();
    }
    let i = rng.pick(&candidates);
    let yaml_values: &[&str] = &["null", "true", "42", "[]", "{}", "\"${\"", "[1, {a: b}]", "{ $ref: \"#/nope\" }", "|\n  block", "'${params.x}'"];
    let cut = lines[i].find(": ").unwrap_or(0) + 2;
    lines[i].truncate(cut);
    let value: &str = rng.pick(yaml_values);
    lines[i].push_str(value);
    (lines.join("\n") + "\n").into_bytes()
}

fn string_pointers(v: &Value, at: String, out: &mut Vec<(String, Option<String>)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                out.push((at.clone(), Some(k.clone())));
                string_pointers(child, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                string_pointers(child, format!("{at}/{i}"), out);
            }
        }
        Value::String(_) => out.push((at, None)),
        _ => {}
    }
}

/// Edits a string value or an object key (e.g. a route path) of a JSON document; falls back
/// to inserting text into a random line for other files.
fn edit_string(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let edit = |s: &str, rng: &mut Rng| -> String {
        let chars: Vec<char> = s.chars().collect();
        let at = rng.below(chars.len() + 1);
        let mut out: String = chars[..at].iter().collect();
        match rng.below(3) {
            0 => {
                out.push_str(rng.pick(STRING_SNIPPETS));
                out.extend(&chars[at..]);
            }
            1 => out.extend(chars.iter().skip(at + 1 + rng.below(4))),
            _ => {}
        }
        out
    };
    let text = String::from_utf8_lossy(bytes);
    let Ok(mut doc) = serde_json::from_str::<Value>(text.trim_start_matches('\u{feff}')) else {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.is_empty() {
            return bytes.to_vec();
        }
        let i = rng.below(lines.len());
        lines[i] = edit(&lines[i], rng);
        return (lines.join("\n") + "\n").into_bytes();
    };
    let mut targets = Vec::new();
    string_pointers(&doc, String::new(), &mut targets);
    if targets.is_empty() {
        return bytes.to_vec();
    }
    let (ptr, key) = rng.pick(&targets);
    match (doc.pointer_mut(&ptr), key) {
        (Some(Value::String(s)), None) => *s = edit(s, rng),
        (Some(Value::Object(map)), Some(key)) => {
            // Rename the key in place (keeping the order of the other keys).
            let new_key = edit(&key, rng);
            let old = std::mem::take(map);
            for (k, v) in old {
                let k = if k == key { new_key.clone() } else { k };
                map.entry(k).or_insert(v);
            }
        }
        _ => {}
    }
    serde_json::to_string_pretty(&doc).unwrap_or_default().into_bytes()
}

/// One random edit of `bytes`.
fn mutate(bytes: &[u8], rng: &mut Rng) -> (Vec<u8>, &'static str) {
    let mut b = bytes.to_vec();
    let len = b.len();
    match rng.below(9) {
        0 => {
            b.truncate(rng.below(len + 1));
            (b, "truncate")
        }
        1 => {
            let at = rng.below(len);
            let n = 1 + rng.below(8);
            b.drain(at..(at + n).min(len));
            (b, "delete bytes")
        }
        2 => {
            let at = rng.below(len);
            let n = 1 + rng.below(40);
            let piece: Vec<u8> = b[at..(at + n).min(len)].to_vec();
            let to = rng.below(len + 1);
            b.splice(to..to, piece);
            (b, "duplicate bytes")
        }
        3 => {
            if len > 1 {
                let (i, j) = (rng.below(len), rng.below(len));
                b.swap(i, j);
            }
            (b, "swap bytes")
        }
        4 => (replace_value(bytes, rng), "replace value"),
        5 => {
            let at = rng.below(len + 1);
            let s = rng.pick(SNIPPETS).as_bytes();
            b.splice(at..at, s.iter().copied());
            (b, "insert snippet")
        }
        6 | 7 => (edit_string(bytes, rng), "edit string or key"),
        _ => {
            // A byte that is never valid UTF-8, or a random byte.
            let at = rng.below(len + 1);
            let byte = if rng.below(2) == 0 { 0xFF } else { rng.below(256) as u8 };
            b.insert(at, byte);
            (b, "insert byte")
        }
    }
}

#[test]
fn generate_never_panics_on_mutated_projects() {
    let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("specs");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let tmp = TempDir(std::env::temp_dir().join(format!("specgate-no-panic-{}-{nanos}", std::process::id())));
    let mut projects = Vec::new();
    for name in ["multi-backend", "path-modes"] {
        let dir = tmp.0.join(name);
        copy_dir(&specs.join(name), &dir);
        let mut files = Vec::new();
        inputs(&dir, &mut files);
        assert!(!files.is_empty(), "no input files in {}", dir.display());
        let originals: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).expect("read input")).collect();
        projects.push((dir, files, originals));
    }
    let out = tmp.0.join("out");

    // The unmutated examples generate cleanly (otherwise the mutants prove little).
    for (dir, _, _) in &projects {
        let opts = Options { name: None, out: out.clone(), runtime_path: None, stub_missing: false };
        let (output, diags, _) = generate(dir, &opts);
        assert!(output.is_some() && !diags.has_errors(), "{} does not generate", dir.display());
    }

    let env_number = |key: &str| std::env::var(key).ok().and_then(|v| v.parse::<u64>().ok());
    let iterations = env_number("NO_PANIC_ITERATIONS").map_or(ITERATIONS, |n| n as usize);
    let budget = if env_number("NO_PANIC_ITERATIONS").is_some() { Duration::MAX } else { BUDGET };
    let mut rng = Rng(env_number("NO_PANIC_SEED").unwrap_or(SEED));
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut ran = 0;
    let mut with_errors = 0;
    for iteration in 0..iterations {
        if started.elapsed() > budget {
            eprintln!("time budget reached after {iteration} mutants");
            break;
        }
        let (dir, files, originals) = &projects[rng.below(projects.len())];
        let k = rng.below(files.len());
        // One to three edits of one file.
        let mut bytes = originals[k].clone();
        let mut applied = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let (b, what) = mutate(&bytes, &mut rng);
            bytes = b;
            applied.push(what);
        }
        std::fs::write(&files[k], &bytes).expect("write mutant");

        let opts = Options { name: Some("mutant".into()), out: out.clone(), runtime_path: None, stub_missing: false };
        let result = catch_unwind(AssertUnwindSafe(|| {
            let (output, diags, files) = generate(dir, &opts);
            let rendered = diags.render(&files.unwrap_or_default(), false);
            (output.is_some(), diags.has_errors(), rendered)
        }));
        ran += 1;
        let rel = files[k].strip_prefix(&tmp.0).unwrap_or(&files[k]).display().to_string();
        let what = applied.join(" + ");
        let problem = match result {
            Err(_) => Some("panicked".to_owned()),
            Ok((has_output, has_errors, rendered)) => {
                with_errors += usize::from(has_errors);
                match (has_output, has_errors) {
                    (false, false) => Some(format!("no output and no error:\n{rendered}")),
                    (true, true) => Some("output despite errors".to_owned()),
                    _ => None,
                }
            }
        };
        if let Some(problem) = problem {
            // Keep the first few failing mutants (outside the temp project) for inspection.
            let mut kept = String::new();
            if failures.len() < 5 {
                let keep = std::env::temp_dir().join(format!("specgate-no-panic-mutant-{iteration}.txt"));
                if std::fs::write(&keep, &bytes).is_ok() {
                    kept = format!(" [mutant kept at {}]", keep.display());
                }
            }
            failures.push(format!("#{iteration} {rel} ({what}){kept}: {problem}"));
        }
        std::fs::write(&files[k], &originals[k]).expect("restore input");
    }
    eprintln!("{ran} mutants in {:.1?}, {with_errors} with errors", started.elapsed());
    assert!(ran >= iterations.min(100), "only {ran} mutants ran within the time budget");
    assert!(failures.is_empty(), "{} of {ran} mutants failed:\n{}", failures.len(), failures.join("\n"));
}
