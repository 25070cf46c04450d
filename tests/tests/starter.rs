//! The starter project `specgate new` writes (specs/starter): it runs at once, and each of its
//! routes does what its README says.

use specgate_tests::{Gateway, Upstream, gateway_binary, get, send};

#[tokio::test]
async fn starter_routes_answer_as_documented() {
    let api = Upstream::start("api").await;
    let gw = Gateway::start(&gateway_binary("starter"), &[("API_URL", api.url()), ("GREETING", "hi there".to_owned())]).await;

    // mock-api-inbound answers from the operation's example; the upstream is not called.
    let r = get(&gw.url("/hello")).await.expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"message": "Hello from specgate"}));
    // An inbound policy's answer skips the handler and the outbound chain.
    assert_eq!(r.header("x-powered-by"), None);
    assert!(api.seen().is_empty(), "the mock must not reach the upstream");

    // Forwarded with the custom policy's header; the body is passed on.
    let r = send("POST", &gw.url("/echo/a/b?x=1"), &[("content-type", "application/json")], r#"{"n":1}"#).await.expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-powered-by"), Some("specgate"));
    let seen = api.last();
    assert_eq!((seen.method.as_str(), seen.target.as_str()), ("POST", "/a/b?x=1"));
    assert_eq!(seen.header("x-greeting"), Some("hi there"));
    assert_eq!(&seen.body[..], br#"{"n":1}"#);

    // The public document, without x-zuplo-*.
    let r = get(&gw.url("/openapi.json")).await.expect("request");
    assert_eq!(r.status, 200);
    let doc = r.json();
    let op = &doc["paths"]["/echo/{+path}"]["get"];
    assert_eq!(op["operationId"], "echoGet");
    assert!(op.get("x-zuplo-route").is_none(), "{doc}");
}

#[test]
fn specgate_new_writes_the_starter_project() {
    let dir = std::env::temp_dir().join(format!("specgate-new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = std::process::Command::new(specgate_tests::specgate_binary()).arg("new").arg(&dir).output().expect("specgate new");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let root = specgate_tests::workspace_root().join("specs/starter");
    for rel in ["config/routes.oas.json", "config/policies.json", "modules/greeting.rs", ".env", "zuplo.jsonc"] {
        assert_eq!(std::fs::read(dir.join(rel)).expect(rel), std::fs::read(root.join(rel)).expect(rel), "{rel}");
    }
    // Not over an existing project.
    let again = std::process::Command::new(specgate_tests::specgate_binary()).arg("new").arg(&dir).output().expect("specgate new");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    let v = std::process::Command::new(specgate_tests::specgate_binary()).arg("validate").arg(&dir).output().expect("validate");
    assert!(v.status.success() && String::from_utf8_lossy(&v.stderr).contains("no problems found"), "{}", String::from_utf8_lossy(&v.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
