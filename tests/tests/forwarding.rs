//! The multi-backend example in front of three real upstreams on loopback: what the upstream
//! received and what the client got back, for forwarding, rewriting, errors and attacks.

use std::time::Duration;

use bytes::Bytes;
use specgate_tests::{Gateway, Upstream, gateway_binary, get, raw_exchange, send};

struct Setup {
    users: Upstream,
    orders: Upstream,
    catalog: Upstream,
    gw: Gateway,
}

async fn setup(extra: &[(&str, String)]) -> Setup {
    let users = Upstream::start("users").await;
    let orders = Upstream::start("orders").await;
    let catalog = Upstream::start("catalog").await;
    let mut env = vec![
        ("USERS_URL", users.url()),
        ("ORDERS_URL", orders.url()),
        ("CATALOG_URL", format!("{}/", catalog.url())),
    ];
    env.extend(extra.iter().cloned());
    let gw = Gateway::start(&gateway_binary("multi-backend"), &env).await;
    Setup { users, orders, catalog, gw }
}

#[tokio::test]
async fn rewrites_reach_the_right_upstream_with_method_query_headers_and_body() {
    let s = setup(&[]).await;

    let r = get(&s.gw.url("/api/users?limit=5")).await.expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["upstream"], "users");
    let seen = s.users.last();
    assert_eq!((seen.method.as_str(), seen.target.as_str()), ("GET", "/users?limit=5"));

    let body = r#"{"name":"Ada"}"#;
    let r = send("POST", &s.gw.url("/api/users"), &[("content-type", "application/json"), ("x-custom", "kept")], body)
        .await
        .expect("request");
    assert_eq!(r.status, 200);
    let seen = s.users.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/users");
    assert_eq!(seen.body, Bytes::from(body));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("x-custom"), Some("kept"));
    assert_eq!(seen.header("host"), Some(s.users.addr.to_string().as_str()), "Host is the upstream's");

    let r = send("DELETE", &s.gw.url("/api/users/a%20b"), &[], "").await.expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(s.users.last().target, "/users/a%20b");
    assert_eq!(s.users.last().method, "DELETE");

    get(&s.gw.url("/api/orders/2024/open/items?page=2")).await.expect("request");
    assert_eq!(s.orders.last().target, "/v2/2024/open/items?page=2");

    get(&s.gw.url("/catalog/shoes/red?size=42")).await.expect("request");
    assert_eq!(s.catalog.last().target, "/catalog/shoes/red?size=42", "forward appends the whole path to baseUrl");
}

#[tokio::test]
async fn query_and_header_values_are_encoded_where_they_land() {
    let s = setup(&[]).await;
    let r = send("GET", &s.gw.url("/api/search?q=a%26b%0D%0AX-Evil:%201&ignored=1"), &[("x-tenant", "t1&admin=true")], "")
        .await
        .expect("request");
    assert_eq!(r.status, 200);
    let seen = s.orders.last();
    assert_eq!(seen.target, "/v2/search?q=a%26b%0D%0AX-Evil%3A%201&tenant=t1%26admin%3Dtrue");
    assert!(seen.header("x-evil").is_none());
}

#[tokio::test]
async fn client_values_cannot_escape_the_upstream_prefix() {
    let s = setup(&[]).await;

    // An encoded slash stays inside one segment and is re-encoded for the upstream.
    let r = get(&s.gw.url("/api/users/..%2F..%2Fadmin")).await.expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(s.users.last().target, "/users/..%2F..%2Fadmin");

    // Encoded dot segments are resolved before routing: this is GET /api, which no route has.
    let before = s.users.seen().len();
    let r = get(&s.gw.url("/api/users/%2e%2e")).await.expect("request");
    assert_eq!(r.status, 404);
    let r = get(&s.gw.url("/api/users/%2e%2e/%2e%2e/admin/health")).await.expect("request");
    assert_eq!(r.status, 200, "normalized to /admin/health, a route of its own");
    assert_eq!(s.users.last().target, "/health");

    // A rest capture whose decoded value climbs is refused before anything is sent.
    let orders_before = s.orders.seen().len();
    let r = get(&s.gw.url("/api/orders/a%2F..%2F..%2Fsecret")).await.expect("request");
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(s.orders.seen().len(), orders_before);

    // A parameter that is exactly `..` once decoded cannot form a dot segment upstream.
    let r = get(&s.gw.url("/api/users/%252e%252e")).await.expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(s.users.last().target, "/users/%252e%252e");
    assert!(s.users.seen().len() >= before);

    // Malformed escapes and control characters in the path are refused.
    let r = get(&s.gw.url("/api/users/%zz")).await.expect("request");
    assert_eq!(r.status, 400);
    let raw = raw_exchange(s.gw.addr, b"GET /api/users/%0d%0aX-Injected:%201 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", Duration::from_secs(5)).await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
}

#[tokio::test]
async fn forwarding_headers_request_ids_and_hop_by_hop_headers() {
    let s = setup(&[]).await;
    let r = send(
        "GET",
        &s.gw.url("/api/users/7"),
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil.example"),
            ("connection", "keep-alive, x-drop-me"),
            ("x-drop-me", "1"),
            ("keep-alive", "timeout=5"),
            ("x-request-id", "client-id-123"),
        ],
        "",
    )
    .await
    .expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("client-id-123"));
    let seen = s.users.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"), "client-supplied X-Forwarded-For is not trusted by default");
    assert_eq!(seen.header("x-forwarded-host"), Some(s.gw.addr.to_string().as_str()));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-request-id"), Some("client-id-123"));
    assert!(seen.header("x-drop-me").is_none(), "headers named in Connection are hop-by-hop");
    assert!(seen.header("keep-alive").is_none());

    // A minted id when the client sends none, the same on the response and upstream.
    let r = get(&s.gw.url("/api/users/8")).await.expect("request");
    let id = r.header("x-request-id").expect("request id").to_owned();
    assert_eq!(id.len(), 36);
    assert_eq!(s.users.last().header("x-request-id"), Some(id.as_str()));

    // Hop-by-hop headers of the upstream's response are removed too.
    let r = get(&s.gw.url("/api/orders/hop")).await.expect("request");
    assert_eq!(r.header("x-upstream-public"), Some("yes"));
    assert!(r.header("x-upstream-private").is_none());
    assert!(r.header("keep-alive").is_none());
}

#[tokio::test]
async fn trusted_proxy_hops_keep_the_forwarded_chain() {
    let s = setup(&[("TRUSTED_PROXY_HOPS", "1".to_owned())]).await;
    send("GET", &s.gw.url("/api/users/1"), &[("x-forwarded-for", "203.0.113.9"), ("x-forwarded-proto", "https")], "")
        .await
        .expect("request");
    let seen = s.users.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("203.0.113.9, 127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
}

#[tokio::test]
async fn system_routes_and_problem_responses() {
    let s = setup(&[]).await;
    let r = get(&s.gw.url("/__zuplo/ping")).await.expect("request");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));

    let r = get(&s.gw.url("/nope")).await.expect("request");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let p = r.json();
    assert_eq!(p["status"], 404);
    assert_eq!(p["title"], "Not Found");
    assert_eq!(p["instance"], "/nope");
    assert_eq!(p["trace"]["requestId"].as_str(), r.header("x-request-id"));

    let r = send("PATCH", &s.gw.url("/api/users"), &[], "").await.expect("request");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, POST, HEAD"));
    assert_eq!(r.json()["status"], 405);

    // HEAD is served by the GET route and forwarded as HEAD.
    let r = send("HEAD", &s.gw.url("/api/users"), &[], "").await.expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(s.users.last().method, "HEAD");
}

#[tokio::test]
async fn upstream_errors_pass_through_unchanged() {
    let s = setup(&[]).await;
    for code in [401u16, 404, 500, 503] {
        let r = get(&s.gw.url(&format!("/api/orders/status/{code}"))).await.expect("request");
        assert_eq!(r.status, code);
        assert_eq!(r.text(), format!("upstream says {code}"));
        assert_eq!(r.header("content-type"), Some("text/plain"));
    }
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_slow_upstream_is_504() {
    let users = Upstream::start("users").await;
    let closed = format!("http://127.0.0.1:{}", specgate_tests::free_port());
    let gw = Gateway::start(
        &gateway_binary("multi-backend"),
        &[
            ("USERS_URL", users.url()),
            ("ORDERS_URL", closed),
            ("CATALOG_URL", users.url()),
            ("UPSTREAM_TIMEOUT_SECONDS", "1".to_owned()),
        ],
    )
    .await;
    let r = get(&gw.url("/api/orders/anything")).await.expect("request");
    assert_eq!(r.status, 502);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.json()["title"], "Bad Gateway");

    let r = get(&gw.url("/catalog/slow/3000")).await.expect("request");
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["status"], 504);
}

#[tokio::test]
async fn followed_redirects_and_passed_through_redirects() {
    let s = setup(&[]).await;
    // /api/orders does not follow: the client sees the upstream's 302.
    let r = get(&s.gw.url("/api/orders/redirect")).await.expect("request");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/redirected"));

    // /admin/health has followRedirects: the gateway follows and the client sees the target.
    let r = get(&s.gw.url("/admin/health?redirect-to=/final")).await.expect("request");
    assert_eq!(r.status, 200);
    let seen = s.users.seen();
    let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(targets, ["/health?redirect-to=/final", "/final"]);
}

#[tokio::test]
async fn bodies_are_streamed_both_ways() {
    let s = setup(&[]).await;

    // Response: the upstream sends a first chunk and waits; the client must see it before the
    // upstream finishes. A buffering gateway would hang here (bounded by the timeout).
    let uri: hyper::Uri = s.gw.url("/api/orders/stream").parse().expect("uri");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    let resp = client.get(uri).await.expect("response head");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    use http_body_util::BodyExt;
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("first chunk arrives before the upstream finishes")
        .expect("frame")
        .expect("frame ok");
    assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"first;")));
    s.orders.release();
    let rest = body.collect().await.expect("rest").to_bytes();
    assert_eq!(rest, Bytes::from_static(b"second"));

    // Request: the upstream must get the first piece while the client still holds the rest.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>(4);
    let stream_body = http_body_util::StreamBody::new(ReceiverStream(rx));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let req = hyper::Request::post(s.gw.url("/api/orders/upload-stream")).body(stream_body).expect("request");
    let pending = tokio::spawn(async move { client.request(req).await.map(|r| r.status().as_u16()) });
    tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"part-1;")))).await.expect("send");
    tokio::time::timeout(Duration::from_secs(10), s.orders.first_chunk_arrived())
        .await
        .expect("the upstream received the first part before the client sent the rest");
    tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"part-2")))).await.expect("send");
    drop(tx);
    assert_eq!(pending.await.expect("join").expect("response"), 200);
    assert_eq!(s.orders.last().body, Bytes::from_static(b"part-1;part-2"));

    // A large body arrives whole.
    let big = vec![b'x'; 5 * 1024 * 1024];
    let r = send("POST", &s.gw.url("/api/orders/upload"), &[], big.clone()).await.expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(s.orders.last().body.len(), big.len());
}

struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

#[tokio::test]
async fn invalid_host_header_is_refused() {
    let s = setup(&[]).await;
    let raw = raw_exchange(s.gw.addr, b"GET /api/users HTTP/1.1\r\nHost: evil.com/x?\r\nConnection: close\r\n\r\n", Duration::from_secs(5)).await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert!(s.users.seen().is_empty());
}

#[tokio::test]
async fn open_api_spec_handler_serves_the_public_document() {
    let s = setup(&[]).await;
    let r = get(&s.gw.url("/openapi.json")).await.expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert!(doc["info"]["title"].as_str().is_some_and(|t| t.starts_with("Shop API")), "{doc}");
    // Every operation of every config/*.oas.* file, the admin YAML included.
    assert!(doc["paths"]["/api/users"]["post"].is_object(), "{doc}");
    assert!(doc["paths"]["/openapi.json"]["get"].is_object());
    assert!(doc["paths"].as_object().is_some_and(|p| p.len() > 4));
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert!(!text.contains("x-zuplo"), "gateway configuration leaked: {text}");
    assert!(!text.contains("USERS_URL"), "upstream configuration leaked");
    // The external $ref is bundled, so the document stands alone.
    assert!(!text.contains("../schemas/user.json"), "{text}");
    let head = send("HEAD", &s.gw.url("/openapi.json"), &[], "").await.expect("request");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(s.users.seen().len() + s.orders.seen().len() + s.catalog.seen().len(), 0, "served by the gateway itself");
}

#[tokio::test]
async fn https_upstreams_with_a_private_ca_and_http2() {
    let (tls, ca_pem) = Upstream::start_tls("secure").await;
    let dir = std::env::temp_dir().join(format!("specgate-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).expect("write CA");
    let base = format!("https://localhost:{}", tls.addr.port());
    let s = setup(&[("USERS_URL", base.clone()), ("UPSTREAM_CA_FILE", ca_file.display().to_string())]).await;
    let r = send("POST", &s.gw.url("/api/users?x=1"), &[("content-type", "application/json")], r#"{"name":"Ada"}"#)
        .await
        .expect("request");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["upstream"], "secure");
    let seen = tls.last();
    assert_eq!(seen.target, "/users?x=1");
    assert_eq!(seen.body, Bytes::from(r#"{"name":"Ada"}"#));
    assert_eq!(seen.version, "HTTP/2.0", "HTTP/2 is used when the upstream offers it");

    // Without the CA the certificate is not trusted: 502, and nothing reached the upstream.
    let before = tls.seen().len();
    let untrusting = setup(&[("USERS_URL", base)]).await;
    let r = get(&untrusting.gw.url("/api/users")).await.expect("request");
    assert_eq!(r.status, 502);
    assert_eq!(tls.seen().len(), before);

    // A CA file that is not PEM stops start-up with a message.
    std::fs::write(dir.join("bad.pem"), "not a certificate").expect("write");
    let out = std::process::Command::new(gateway_binary("multi-backend"))
        .env("USERS_URL", "http://127.0.0.1:1")
        .env("ORDERS_URL", "http://127.0.0.1:1")
        .env("CATALOG_URL", "http://127.0.0.1:1")
        .env("PORT", "0")
        .env("UPSTREAM_CA_FILE", dir.join("bad.pem"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("UPSTREAM_CA_FILE"), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[allow(clippy::result_large_err)]
/// A WebSocket server on loopback that echoes text messages prefixed with `echo:` and reports
/// the request path and one request header of each handshake.
async fn websocket_echo() -> (std::net::SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handshakes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let record = |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                    let fwd = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()).map(str::to_owned);
                    if let Ok(mut s) = seen.lock() {
                        s.push((req.uri().path().to_owned(), fwd));
                    }
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Text(t) if ws.send(Message::text(format!("echo:{t}"))).await.is_err() => break,
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, handshakes)
}

#[tokio::test]
async fn websocket_messages_pass_both_ways() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (ws_addr, handshakes) = websocket_echo().await;
    let s = setup(&[("ORDERS_URL", format!("http://{ws_addr}"))]).await;
    let url = format!("ws://{}/ws/updates", s.gw.addr);
    let (mut ws, resp) = tokio_tungstenite::connect_async(&url).await.expect("handshake through the gateway");
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        ws.send(Message::text(format!("m{i}"))).await.expect("send");
        let got = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("answer in time").expect("open").expect("message");
        assert_eq!(got, Message::text(format!("echo:m{i}")));
    }
    // A large message crosses intact.
    let big = "x".repeat(200_000);
    ws.send(Message::text(big.clone())).await.expect("send");
    let got = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("answer in time").expect("open").expect("message");
    assert_eq!(got.into_text().expect("text").len(), big.len() + 5);
    ws.close(None).await.expect("close");
    let h = handshakes.lock().map(|h| h.clone()).unwrap_or_default();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].0, "/updates");
    assert_eq!(h[0].1.as_deref(), Some("127.0.0.1"), "X-Forwarded-For set on the handshake");

    // A plain GET on a WebSocket route: 426 with Upgrade: websocket.
    let r = get(&s.gw.url("/ws/updates")).await.expect("request");
    assert_eq!(r.status, 426);
    assert_eq!(r.header("upgrade"), Some("websocket"));
}
