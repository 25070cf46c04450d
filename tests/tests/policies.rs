//! The policy-showcase example: every built-in policy, composites, custom policies and
//! handlers, hooks, short-circuits and failing custom code, against a real upstream.

use specgate_tests::{Gateway, Upstream, gateway_binary, get, send};

async fn setup() -> (Upstream, Gateway) {
    let api = Upstream::start("api").await;
    let gw = Gateway::start(
        &gateway_binary("policy-showcase"),
        &[("API_URL", api.url()), ("GATEWAY_SECRET", "s3cr3t".to_owned())],
    )
    .await;
    (api, gw)
}

#[tokio::test]
async fn header_policies_and_the_lifecycle_order() {
    let (api, gw) = setup().await;
    let r = send(
        "GET",
        &gw.url("/headers"),
        &[("x-remove-me", "1"), ("cookie", "a=b"), ("x-kept", "client"), ("x-trace", "client")],
        "",
    )
    .await
    .expect("request");
    assert_eq!(r.status, 200);
    let seen = api.last();
    assert_eq!(seen.header("x-gateway-secret"), Some("s3cr3t"), "$env in options resolved at start-up");
    assert_eq!(seen.header("x-kept"), Some("client"), "overwrite: false keeps the client's value");
    assert!(seen.header("x-remove-me").is_none());
    assert!(seen.header("cookie").is_none());
    // request hook, then the inbound policy; outbound policy, then the response hook.
    assert_eq!(seen.header("x-trace"), Some("hook,policy"));
    assert_eq!(r.header("x-trace"), Some("outbound,response-hook"));
    assert_eq!(r.header("x-powered-by"), Some("specgate"));
    assert_eq!(r.header("x-hooked"), Some("1"));

    // The pre-routing hook drops the trailing slash.
    let r = get(&gw.url("/headers/")).await.expect("request");
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn clear_headers_keep_only_the_excluded_ones() {
    let (api, gw) = setup().await;
    let r = send("GET", &gw.url("/clear"), &[("x-keep", "1"), ("x-other", "2"), ("accept", "text/plain")], "")
        .await
        .expect("request");
    let seen = api.last();
    assert_eq!(seen.header("x-keep"), Some("1"));
    assert_eq!(seen.header("accept"), Some("text/plain"));
    assert!(seen.header("x-other").is_none());
    assert!(seen.header("user-agent").is_none());
    assert_eq!(r.header("content-type"), Some("application/json"));
    // The response hook still runs after the outbound chain.
    assert_eq!(r.header("x-hooked"), Some("1"));
}

#[tokio::test]
async fn query_policies() {
    let (api, gw) = setup().await;
    get(&gw.url("/query?page=7&debug=1&apikey=k%2B1&x=y")).await.expect("request");
    let seen = api.last();
    assert_eq!(seen.header("authorization"), Some("Bearer k+1"));
    let target = seen.target;
    assert!(target.starts_with("/echo?"), "{target}");
    let q: Vec<&str> = target.trim_start_matches("/echo?").split('&').collect();
    assert!(q.contains(&"page=7"), "overwrite: false keeps page: {target}");
    assert!(q.contains(&"x=y"));
    assert!(q.contains(&"api-version=2024-01-01"));
    assert!(!q.iter().any(|p| p.starts_with("debug")), "{target}");
    assert!(!q.iter().any(|p| p.starts_with("apikey")), "{target}");
}

#[tokio::test]
async fn method_body_and_status_policies() {
    let (api, gw) = setup().await;
    let r = send("POST", &gw.url("/method"), &[("content-type", "application/json")], "{\"original\":1}").await.expect("request");
    assert_eq!(r.status, 200);
    let seen = api.last();
    assert_eq!(seen.method, "PUT");
    assert_eq!(&seen.body[..], b"{\"replaced\":true}");

    let r = get(&gw.url("/status")).await.expect("request");
    assert_eq!(r.status, 202);
}

#[tokio::test]
async fn replace_string_in_responses() {
    let (_api, gw) = setup().await;
    let r = get(&gw.url("/replace")).await.expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"{"gateway":"api","path":"/text/gateway-#-and-#"}"#);
    assert_eq!(r.header("content-length").map(|l| l.parse::<usize>().ok()), Some(Some(r.body.len())));
}

#[tokio::test]
async fn request_size_limit() {
    let (api, gw) = setup().await;
    let r = send("POST", &gw.url("/upload"), &[], vec![b'a'; 1024]).await.expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(api.last().body.len(), 1024);
    let before = api.seen().len();
    let r = send("POST", &gw.url("/upload"), &[], vec![b'a'; 1025]).await.expect("request");
    assert_eq!(r.status, 413);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    // Chunked, without Content-Length: counted while read.
    let raw = specgate_tests::raw_exchange(
        gw.addr,
        format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n400\r\n{}\r\n400\r\n{}\r\n0\r\n\r\n",
            "b".repeat(1024),
            "c".repeat(1024)
        )
        .as_bytes(),
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert_eq!(api.seen().len(), before, "nothing over the limit reached the upstream");
}

#[tokio::test]
async fn require_origin_and_ip_restriction() {
    let (api, gw) = setup().await;
    let r = send("GET", &gw.url("/origin"), &[("origin", "https://app.example.com")], "").await.expect("request");
    assert_eq!(r.status, 200);
    let r = send("GET", &gw.url("/origin"), &[("origin", "https://evil.example.com")], "").await.expect("request");
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["detail"], "This origin may not call this API");
    let r = get(&gw.url("/origin")).await.expect("request");
    assert_eq!(r.status, 403);

    assert_eq!(get(&gw.url("/ip/allowed")).await.expect("request").status, 200);
    let before = api.seen().len();
    let r = get(&gw.url("/ip/denied")).await.expect("request");
    assert_eq!(r.status, 403);
    assert_eq!(api.seen().len(), before);
}

#[tokio::test]
async fn mock_api_answers_from_the_operation_examples() {
    let (api, gw) = setup().await;
    let r = get(&gw.url("/mock/products/9")).await.expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["name"], "Sun hat");
    assert!(api.seen().is_empty(), "a mock never calls the upstream");
}

#[tokio::test]
async fn deprecation_and_sleep() {
    let (_api, gw) = setup().await;
    let r = get(&gw.url("/deprecated")).await.expect("request");
    assert_eq!(r.header("deprecation"), Some("@1738281600"));
    assert_eq!(r.header("sunset"), Some("Thu, 31 Dec 2026 00:00:00 GMT"));
    assert!(r.header("link").is_some_and(|l| l.contains("<https://example.com/migrate>") && l.contains("rel=\"deprecation\"")));
    let started = std::time::Instant::now();
    assert_eq!(get(&gw.url("/sleep")).await.expect("request").status, 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(50));
}

#[tokio::test]
async fn composites_expand_in_place_and_nest() {
    let (api, gw) = setup().await;
    let r = get(&gw.url("/composite?debug=1")).await.expect("request");
    let seen = api.last();
    assert_eq!(seen.header("x-gateway-secret"), Some("s3cr3t"));
    assert!(seen.target.contains("api-version=2024-01-01"));
    assert!(!seen.target.contains("debug"));
    assert_eq!(r.header("x-powered-by"), Some("specgate"));
}

#[tokio::test]
async fn custom_policies_with_typed_options_and_context_custom() {
    let (api, gw) = setup().await;
    let r = get(&gw.url("/tenants/acme/items")).await.expect("request");
    assert_eq!(r.status, 200);
    let seen = api.last();
    assert_eq!(seen.target, "/tenants/t-acme/items", "context.custom feeds the rewrite");
    assert_eq!(seen.header("x-tenant-plan"), Some("gold"));
    assert_eq!(r.header("x-tenant-slug"), Some("t-acme"));
    assert_eq!(r.header("x-tenant-plan"), Some("gold"));
    let r = get(&gw.url("/tenants/initech/items")).await.expect("request");
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["detail"], "unknown tenant initech");
}

#[tokio::test]
async fn short_circuit_skips_handler_and_outbound_but_not_response_hooks() {
    let (api, gw) = setup().await;
    let r = get(&gw.url("/denied")).await.expect("request");
    assert_eq!(r.status, 401);
    assert!(r.header("x-powered-by").is_none(), "outbound policies are skipped");
    assert_eq!(r.header("x-hooked"), Some("1"), "response hooks still run");
    assert!(api.seen().is_empty());
}

#[tokio::test]
async fn panicking_custom_code_fails_one_request_only() {
    let (api, gw) = setup().await;
    for _ in 0..3 {
        let r = get(&gw.url("/panic")).await.expect("request");
        assert_eq!(r.status, 500);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert!(r.header("x-powered-by").is_none());
    }
    assert!(api.seen().is_empty());
    // The gateway keeps serving, the same route included.
    let r = send("GET", &gw.url("/panic"), &[("x-no-panic", "1")], "").await.expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-powered-by"), Some("specgate"), "outbound runs on the normal path");
    assert!(gw.log_text().contains("custom code panicked"));
}

#[tokio::test]
async fn custom_handlers_and_final_hooks() {
    let (_api, gw) = setup().await;
    let r = get(&gw.url("/hello/ada")).await.expect("request");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["hello"], "ada");
    assert_eq!(v["hooked"], true, "the request hook's context.custom reaches the handler");
    assert_eq!(v["requestId"].as_str(), r.header("x-request-id"));
    let before = get(&gw.url("/hook-stats")).await.expect("request").json()["finalHookCalls"].as_u64().unwrap_or(0);
    get(&gw.url("/hello/x")).await.expect("request");
    let after = get(&gw.url("/hook-stats")).await.expect("request").json()["finalHookCalls"].as_u64().unwrap_or(0);
    assert_eq!(after, before + 2, "one final hook call per response");
    // wait_until work runs after the response, so give it a moment (bounded).
    let mut ran = 0;
    for _ in 0..100 {
        ran = get(&gw.url("/hook-stats")).await.expect("request").json()["afterResponse"].as_u64().unwrap_or(0);
        if ran >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ran >= 2, "wait_until work ran after the responses");
}

#[tokio::test]
async fn not_found_error_and_problem_format_hooks() {
    let (_api, gw) = setup().await;
    let r = get(&gw.url("/no/such/route")).await.expect("request");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["detail"], "nothing here (policy-showcase)");
    assert_eq!(r.header("x-problem-format"), Some("showcase"));
    let r = get(&gw.url("/panic")).await.expect("request");
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["support"], "https://status.example.com", "on_error shapes failures of custom code");
    assert_eq!(r.header("x-problem-format"), Some("showcase"));
}
