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

/// A project with `n` forward routes (`GET /r0` … ), in a fresh folder.
fn project_with_routes(dir: &Path, n: usize) {
    let paths: serde_json::Map<String, serde_json::Value> = (0..n)
        .map(|i| {
            let op = serde_json::json!({"get": {"operationId": format!("get{i}"), "responses": {"200": {"description": "ok"}},
                "x-zuplo-route": {"corsPolicy": "none", "handler": {"export": "urlForwardHandler", "module": "$import(@zuplo/runtime)",
                    "options": {"baseUrl": format!("https://upstream.example/{i}")}}}}});
            (format!("/r{i}"), op)
        })
        .collect();
    let doc = serde_json::json!({"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": paths});
    std::fs::create_dir_all(dir.join("config")).expect("config/");
    std::fs::write(dir.join("config/routes.oas.json"), doc.to_string()).expect("routes.oas.json");
    std::fs::write(dir.join("config/policies.json"), r#"{"policies": []}"#).expect("policies.json");
}

#[test]
fn routes_are_split_into_modules_of_64_and_stale_modules_removed() {
    let tmp = std::env::temp_dir().join(format!("specgate-route-modules-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (project, out) = (tmp.join("big"), tmp.join("out"));
    let generate_into = |routes: usize| {
        project_with_routes(&project, routes);
        let opts = Options { name: Some("big".into()), out: out.clone(), runtime_path: None, stub_missing: false };
        let (output, diags, _) = generate::generate(&project, &opts);
        let output = output.unwrap_or_else(|| panic!("generation failed: {diags:?}"));
        generate::write(&output, &out).expect("write");
        output
    };
    let output = generate_into(130);
    let modules: Vec<&String> = output.files.keys().filter(|k| k.starts_with("src/routes/")).collect();
    assert_eq!(modules, ["src/routes/part_0.rs", "src/routes/part_1.rs", "src/routes/part_2.rs"]);
    let root = String::from_utf8_lossy(&output.files["src/routes.rs"]).into_owned();
    for arm in ["0usize..=63usize => self.handle_part_0(", "64usize..=127usize => self.handle_part_1(", "128usize..=129usize => self.handle_part_2("] {
        assert!(root.contains(arm), "routes.rs lacks `{arm}`:\n{root}");
    }
    let part_2 = String::from_utf8_lossy(&output.files["src/routes/part_2.rs"]).into_owned();
    assert!(part_2.contains("route_129_base") && !part_2.contains("route_127_base"), "part_2.rs holds routes 128 and 129 only:\n{part_2}");
    // Shrinking the project removes the modules it no longer has.
    generate_into(10);
    assert!(out.join("src/routes/part_0.rs").exists());
    assert!(!out.join("src/routes/part_1.rs").exists() && !out.join("src/routes/part_2.rs").exists(), "stale route modules left behind");
    let _ = std::fs::remove_dir_all(&tmp);
}
