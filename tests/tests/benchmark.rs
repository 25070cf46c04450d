//! The benchmark project (specs/benchmark, measured by bench/run.sh): its four routes once each
//! through a real gateway in front of a real upstream, so the benchmark measures routes that
//! do what they claim.

use std::process::Command;

use specgate_tests::{Gateway, Upstream, gateway_binary, get, send, specgate_binary};

/// The body bench/run.sh posts to the validated route.
const ORDER: &str = include_str!("../../bench/order-1k.json");

fn create_key(file: &str) -> String {
    let out = Command::new(specgate_binary())
        .args(["keys", "create", "--file", file, "--consumer", "bench"])
        .output()
        .expect("specgate keys create");
    assert!(out.status.success(), "specgate keys create: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::trim).find(|l| l.starts_with("zpka_")).expect("a key is printed").to_owned()
}

#[tokio::test]
async fn the_four_benchmark_routes_forward_rewrite_authorize_and_validate() {
    let dir = std::env::temp_dir().join(format!("specgate-benchmark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let keys = dir.join("api-keys.json").to_string_lossy().into_owned();
    let key = create_key(&keys);
    let up = Upstream::start("up").await;
    let gw = Gateway::start(&gateway_binary("benchmark"), &[("UP", up.url()), ("API_KEYS_FILE", keys.clone())]).await;

    // 1. Plain forward: the path as sent.
    let r = get(&gw.url("/plain/items/7")).await.expect("plain");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().target, "/plain/items/7");

    // 2. Rewrite: the path parameter lands in the upstream's own path.
    let r = get(&gw.url("/v1/items/42")).await.expect("rewrite");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().target, "/items/42");

    // 3. API key, rate limit and header policies.
    let before = up.seen().len();
    let r = get(&gw.url("/secure/items/3")).await.expect("no key");
    assert_eq!(r.status, 401, "{}", r.text());
    let r = send("GET", &gw.url("/secure/items/3"), &[("authorization", "Bearer zpka_not_a_real_key")], "").await.expect("bad key");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(up.seen().len(), before, "refused requests never reach the upstream");
    let auth = format!("Bearer {key}");
    for _ in 0..3 {
        let r = send("GET", &gw.url("/secure/items/3"), &[("authorization", &auth)], "").await.expect("with key");
        assert_eq!(r.status, 200, "the rate limit is never reached: {}", r.text());
        assert_eq!(r.header("x-powered-by"), Some("specgate"), "set-headers-outbound");
    }
    let seen = up.last();
    assert_eq!(seen.target, "/secure/items/3");
    assert_eq!(seen.header("x-gateway"), Some("specgate"), "set-headers-inbound");

    // 4. Request validation of the ~1 KB body.
    assert!((900..=1100).contains(&ORDER.len()), "the benchmark body is about 1 KB, not {}", ORDER.len());
    let json = [("content-type", "application/json")];
    let r = send("POST", &gw.url("/orders"), &json, ORDER).await.expect("valid order");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!((seen.method.as_str(), seen.target.as_str()), ("POST", "/orders"));
    assert_eq!(seen.body, ORDER.as_bytes(), "the body is forwarded as sent");
    let before = up.seen().len();
    let invalid = ORDER.replacen("\"quantity\":1,", "\"quantity\":0,", 1);
    assert_ne!(invalid, ORDER, "the body has an item with quantity 1");
    let r = send("POST", &gw.url("/orders"), &json, invalid).await.expect("invalid order");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let r = send("POST", &gw.url("/orders"), &json, "{\"orderId\":\"ord-2026-000123\"}").await.expect("incomplete order");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(up.seen().len(), before, "invalid bodies never reach the upstream");

    let _ = std::fs::remove_dir_all(&dir);
}
