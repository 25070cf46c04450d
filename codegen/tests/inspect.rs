//! `specgate routes`, `specgate explain` and the porting report of `specgate validate`, on the
//! example projects and on a Zuplo project with TypeScript modules and missing built-ins.

use std::path::{Path, PathBuf};
use std::process::Command;

use specgate::inspect::{self, Outcome};
use specgate::model::Project;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(spec: &str) -> Project {
    let (p, diags) = specgate::project::load(&root().join("specs").join(spec), None);
    assert!(!diags.has_errors(), "{spec}: {diags:?}");
    p.expect("project")
}

fn names(chain: &[inspect::ChainEntry]) -> Vec<&str> {
    chain.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn routes_show_chains_after_composite_expansion() {
    let p = load("policy-showcase");
    let rows = inspect::rows(&p);
    let r = rows.iter().find(|r| r.path == "/composite").expect("GET /composite");
    // `standard-inbound` = [set-request-headers, query-bundle = [set-query, remove-query]].
    assert_eq!(names(&r.inbound), ["set-request-headers", "set-query", "remove-query"]);
    assert_eq!(names(&r.outbound), ["set-response-headers", "remove-response-headers"]);
    assert_eq!(r.inbound[0].kind, "set-headers-inbound");
    assert_eq!(r.handler, "urlRewriteHandler");
    assert_eq!(r.target.as_deref(), Some("${env.API_URL}/echo"));
    // set-request-headers reads $env(GATEWAY_SECRET).
    assert_eq!(r.env, ["API_URL", "GATEWAY_SECRET"]);
    // A custom policy is named by module and export, and the variables its module reads count.
    let h = rows.iter().find(|r| r.path == "/headers").expect("GET /headers");
    assert_eq!(h.inbound[0].kind, "$import(./modules/tenant-policy)#trace");
    assert_eq!(h.outbound.last().map(|c| c.kind.as_str()), Some("$import(./modules/outbound/stamp)#trace"));
    let outer = load("outer-gateway");
    let api = &inspect::rows(&outer)[0];
    assert_eq!(api.env, ["API_KEY_CACHE_TTL_SECONDS", "DEDICATED_INNER_URL", "INNER_URL"], "environment(\"X\") in route-by-tier counts");
    assert_eq!(rows.len(), p.routes.len());
    assert!(rows.iter().enumerate().all(|(i, r)| r.index == i));
}

#[test]
fn routes_json_lists_every_route_with_cors() {
    let p = load("web-api");
    let v = inspect::rows_json(&inspect::rows(&p));
    let list = v.as_array().expect("array");
    assert_eq!(list.len(), p.routes.len());
    let notes = list.iter().find(|r| r["path"] == "/notes" && r["method"] == "POST").expect("POST /notes");
    assert_eq!(notes["corsPolicy"], "web-app");
    assert!(notes["definedAt"].as_str().is_some_and(|s| s.starts_with("config/routes.oas.json:")), "{notes}");
}

fn found(p: &Project, method: &str, path: &str) -> (usize, Vec<(String, String)>, Option<String>) {
    let ex = inspect::explain(p, method, path).expect("explain");
    match ex.outcome {
        Outcome::Found { route, params } => (route, params, ex.upstream),
        other => panic!("{method} {path}: {other:?}"),
    }
}

#[test]
fn explain_picks_the_route_the_gateway_picks() {
    let p = load("path-modes");
    let idx = |m: &str, path: &str| p.routes.iter().position(|r| r.method == m && r.path == path).expect(path);
    // A literal route declared before `{id}` wins for /users/me; `{id}` takes the rest.
    assert_eq!(found(&p, "GET", "/users/me").0, idx("GET", "/users/me"));
    let (r, params, _) = found(&p, "GET", "/users/42");
    assert_eq!(r, idx("GET", "/users/{id}"));
    assert_eq!(params, [("id".to_owned(), "42".to_owned())]);
    // Mixed segments and percent-decoding, as the runtime does them.
    let (r, params, _) = found(&p, "GET", "/users/get(a%20b)");
    assert_eq!(r, idx("GET", "/users/get({id})"));
    assert_eq!(params[0].1, "a b");
    // Dot segments are normalised before matching.
    assert_eq!(found(&p, "get", "/users/x/../me").0, idx("GET", "/users/me"));
    // A multi-segment parameter; this route does not forward the query.
    let (r, params, upstream) = found(&p, "GET", "/files/a/b/c.txt?v=1");
    assert_eq!(r, idx("GET", "/files/{+path}"));
    assert_eq!(params[0].1, "a/b/c.txt");
    assert_eq!(upstream.as_deref(), Some("${env.API_URL}/storage/a/b/c.txt"));
    // urlForwardHandler: base + path + query.
    let (_, _, upstream) = found(&p, "PUT", "/users/9?dry=1");
    assert_eq!(upstream.as_deref(), Some("${env.API_URL}/users/9?dry=1"));
}

#[test]
fn explain_reports_405_404_preflight_system_and_bad_paths() {
    let p = load("path-modes");
    match inspect::explain(&p, "DELETE", "/users/42").expect("explain").outcome {
        Outcome::MethodNotAllowed(allow) => assert_eq!(allow, ["GET", "PUT", "HEAD"]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(inspect::explain(&p, "GET", "/nowhere").expect("explain").outcome, Outcome::NotFound));
    assert!(matches!(inspect::explain(&p, "GET", "/__zuplo/ping").expect("explain").outcome, Outcome::System(_)));
    assert!(matches!(inspect::explain(&p, "GET", "/users/%00").expect("explain").outcome, Outcome::BadPath(_)));
    assert!(inspect::explain(&p, "G ET", "/users").is_err());
    assert!(inspect::explain(&p, "GET", "users").is_err());
    let web = load("web-api");
    match inspect::explain(&web, "OPTIONS", "/notes").expect("explain").outcome {
        Outcome::Preflight { route: Some(r) } => assert_eq!(web.routes[r].cors_policy.as_deref(), Some("web-app")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn porting_report_names_modules_to_write_and_missing_builtins() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/porting/zuplo-project");
    let (p, diags) = specgate::project::load(&dir, None);
    assert!(diags.has_errors());
    let report = specgate::porting::report(&p.expect("loaded despite errors"));
    assert_eq!((report.routes, report.as_is), (4, 0));
    let modules: Vec<(&str, Option<&str>, Vec<&str>)> = report
        .modules
        .iter()
        .map(|m| (m.module.as_str(), m.original.as_deref(), m.routes.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        modules,
        [
            ("modules/auth_check", Some("modules/auth-check.ts"), vec!["GET /a", "GET /d"]),
            ("modules/my_handler", None, vec!["GET /b"]),
        ]
    );
    let gaps: Vec<(&str, &str, Vec<&str>)> =
        report.builtins.iter().map(|b| (b.kind, b.export.as_str(), b.routes.iter().map(String::as_str).collect())).collect();
    assert_eq!(
        gaps,
        [
            ("policy", "GraphQLComplexityLimitInboundPolicy", vec!["GET /b", "GET /d"]),
            ("handler", "awsLambdaHandler", vec!["POST /c"]),
        ]
    );
    assert!(report.builtins[0].at.starts_with("config/policies.json:3:"), "{}", report.builtins[0].at);
    // Every example project ports as is.
    for spec in ["path-modes", "policy-showcase", "web-api"] {
        let r = specgate::porting::report(&load(spec));
        assert!(r.is_clean() && r.as_is == r.routes, "{spec}: {r:?}");
    }
}

fn specgate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_specgate")).args(args).current_dir(root()).output().expect("run specgate");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn commands_print_tables_json_and_the_porting_report() {
    let (ok, out, _) = specgate(&["routes", "specs/path-modes"]);
    assert!(ok);
    assert!(out.lines().any(|l| l.contains("GET") && l.contains("/users/{id}") && l.contains("${env.API_URL}/users/${params.id}")), "{out}");
    let (ok, out, _) = specgate(&["explain", "specs/path-modes", "GET", "/users/me", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["outcome"], "route");
    assert_eq!(v["route"]["path"], "/users/me");
    let (ok, out, _) = specgate(&["explain", "specs/path-modes", "DELETE", "/users/42"]);
    assert!(ok);
    assert!(out.contains("405 Method Not Allowed, Allow: GET, PUT, HEAD"), "{out}");
    let (ok, _, err) = specgate(&["validate", "codegen/tests/porting/zuplo-project"]);
    assert!(!ok);
    assert!(err.contains("ports as is: 0 of 4 routes") && err.contains("modules/auth_check.rs (port modules/auth-check.ts)"), "{err}");
    // routes refuses a project with errors, showing them.
    let (ok, _, err) = specgate(&["routes", "codegen/tests/porting/zuplo-project"]);
    assert!(!ok && err.contains("error"), "{err}");
}

#[test]
fn import_turns_a_plain_document_into_a_forwarding_project() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import");
    let out = std::env::temp_dir().join(format!("specgate-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let out_s = out.to_string_lossy().into_owned();
    let doc = fixtures.join("petstore.yaml").to_string_lossy().into_owned();
    let (ok, _, err) = specgate(&["import", &doc, "--upstream", "http://127.0.0.1:9/v1", "--out", &out_s]);
    assert!(ok, "{err}");
    assert!(err.contains("imported 6 operations on 4 paths"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join(".env")).expect(".env").lines().last(), Some("API_URL=http://127.0.0.1:9/v1"));
    let (p, diags) = specgate::project::load(&out, None);
    assert!(!diags.has_errors() && diags.counts().1 == 0, "{diags:?}");
    let p = p.expect("project");
    // The literal /pets/mine moved ahead of /pets/{petId}, and the mixed segment ahead of it too.
    let order: Vec<String> = p.routes.iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(
        order,
        ["GET /pets/mine", "GET /pets/{petId}", "DELETE /pets/{petId}", "GET /pets", "POST /pets", "GET /pets/{petId}/photo.{format}"]
    );
    let ex = inspect::explain(&p, "GET", "/pets/mine?limit=2").expect("explain");
    assert_eq!(ex.upstream.as_deref(), Some("${env.API_URL}/pets/mine?limit=2"));
    match ex.outcome {
        Outcome::Found { route, .. } => assert_eq!(p.routes[route].operation_id.as_deref(), Some("myPets")),
        other => panic!("{other:?}"),
    }
    // Components survive (for request validation policies added later).
    let text = std::fs::read_to_string(out.join("config/routes.oas.json")).expect("routes");
    assert!(text.contains("\"Pet\"") && text.contains("\"format\": \"int64\""));
    // Not twice without --force.
    let (ok, _, err) = specgate(&["import", &doc, "--upstream", "http://127.0.0.1:9", "--out", &out_s]);
    assert!(!ok && err.contains("--force"), "{err}");
    let _ = std::fs::remove_dir_all(&out);

    for (file, expect) in [
        ("swagger2.json", "swagger2.json:2:14: Swagger 2.0 documents are not supported"),
        ("broken.yaml", "broken.yaml:7:"),
    ] {
        let path = fixtures.join(file).to_string_lossy().into_owned();
        let (ok, _, err) = specgate(&["import", &path, "--upstream", "http://127.0.0.1:9", "--out", &out_s]);
        assert!(!ok && err.contains(expect), "{file}: {err}");
        assert!(!out.exists(), "{file}: nothing written on error");
    }
    let (ok, _, err) = specgate(&["import", &doc, "--upstream", "ftp://x", "--out", &out_s]);
    assert!(!ok && err.contains("not an http(s) URL"), "{err}");
}

#[test]
fn completions_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, out, err) = specgate(&["completions", shell]);
        assert!(ok, "{shell}: {err}");
        for cmd in ["generate", "validate", "routes", "explain", "import", "new", "keys"] {
            assert!(out.contains(cmd), "{shell} completion lacks {cmd}");
        }
    }
    let (ok, _, _) = specgate(&["completions", "tcsh"]);
    assert!(!ok);
}
