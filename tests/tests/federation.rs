//! The federated build (generated/federated: `edge` listening, `orders` reached as
//! `local://orders` in the same process) in front of a real upstream on loopback: the inner
//! gateway's policies apply, nothing goes over a socket between the two, errors keep their
//! status, unknown names and HTTP mappings, loops, and streaming bodies.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use specgate_tests::{Gateway, Got, Upstream, free_port, gateway_binary, get, send, specgate_binary};

/// A key file with one key; returns the file and the key.
fn key_file(tag: &str) -> (String, String) {
    let dir = std::env::temp_dir().join(format!("specgate-federation-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("api-keys.json");
    let _ = std::fs::remove_file(&file);
    let f = file.to_string_lossy().into_owned();
    let out = Command::new(specgate_binary()).args(["keys", "create", "--file", &f, "--consumer", "shop"]).output().expect("specgate keys");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let key = stdout.lines().map(str::trim).find(|l| l.starts_with("zpka_")).expect("a key is printed").to_owned();
    (f, key)
}

/// The federated binary with `ORDERS_BACKEND_URL` = `backend` and the metrics on the main
/// listener, one worker (so the process has exactly one listening socket).
async fn start(backend: &str, keys: &str, extra: &[(&str, String)]) -> Gateway {
    let mut env = vec![
        ("ORDERS_BACKEND_URL", backend.to_owned()),
        ("ORDERS_GATEWAY", "local://orders".to_owned()),
        ("API_KEYS_FILE", keys.to_owned()),
        ("METRICS_PATH", "/__specgate/metrics".to_owned()),
        ("WORKER_THREADS", "1".to_owned()),
    ];
    for (k, v) in extra {
        env.retain(|(n, _)| n != k);
        env.push((k, v.clone()));
    }
    Gateway::start(&gateway_binary("federated"), &env).await
}

async fn with_key(gw: &Gateway, method: &str, path: &str, key: &str, body: impl Into<Bytes>) -> Got {
    send(method, &gw.url(path), &[("authorization", &format!("Bearer {key}"))], body).await.expect("request")
}

/// The value of the sample whose line starts with `prefix` (labels included).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

async fn metrics(gw: &Gateway) -> String {
    get(&gw.url("/__specgate/metrics")).await.expect("metrics").text()
}

fn local_calls(text: &str, from: &str, target: &str, outcome: &str) -> f64 {
    sample(text, &format!("specgate_local_calls_total{{gateway=\"{from}\",target=\"{target}\",outcome=\"{outcome}\"}}")).unwrap_or(0.0)
}

fn connections(text: &str, gateway: &str) -> Option<f64> {
    sample(text, &format!("specgate_connections_accepted_total{{gateway=\"{gateway}\"}}"))
}

/// The TCP sockets of process `pid` from /proc (Linux): `(state, local port, remote port)`,
/// state as the kernel writes it (`0A` listening, `01` established).
fn tcp_sockets(pid: u32) -> Vec<(String, u16, u16)> {
    let mut inodes = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the gateway's file descriptors").flatten() {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy().into_owned();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(inode.to_owned());
            }
        }
    }
    let port = |addr: &str| addr.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()).unwrap_or(0);
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && inodes.contains(cols[9]) {
                out.push((cols[3].to_owned(), port(cols[1]), port(cols[2])));
            }
        }
    }
    out
}

#[tokio::test]
async fn a_local_call_goes_through_the_inner_gateways_policies_to_the_upstream() {
    let backend = Upstream::start("orders-backend").await;
    let (keys, key) = key_file("policies");
    let gw = start(&backend.url(), &keys, &[]).await;

    // The orders gateway (not the edge) demands an API key: its 401 problem reaches the client.
    let r = get(&gw.url("/orders/42")).await.expect("request");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")));
    assert_eq!(r.json()["instance"], "/orders/42");
    assert!(backend.seen().is_empty(), "a rejected request never reaches the upstream");

    // With a key: both gateways' policies applied, in order, and the upstream answers.
    let r = send("GET", &gw.url("/orders/42?x=1"), &[("authorization", &format!("Bearer {key}")), ("x-request-id", "fed-req-1")], "")
        .await
        .expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["upstream"], "orders-backend");
    assert_eq!(r.header("x-served-by"), Some("orders"), "the orders gateway's outbound policy ran");
    assert_eq!(r.header("x-request-id"), Some("fed-req-1"));
    let seen = backend.last();
    assert_eq!(seen.target, "/orders/42?x=1");
    assert_eq!(seen.header("x-edge"), Some("passed"), "the edge gateway's inbound policy ran");
    assert_eq!(seen.header("x-orders-checked"), Some("yes"), "the orders gateway's inbound policy ran");
    assert_eq!(seen.header("x-request-id"), Some("fed-req-1"), "one request id across the hop");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("host"), Some(backend.addr.to_string().as_str()));
    assert!(seen.header("x-specgate-local-hops").is_none(), "the hop count never leaves the gateways");

    // The same through `${env.ORDERS_GATEWAY}` = local://orders, resolved at run time.
    let r = with_key(&gw, "GET", "/via-env/7", &key, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(backend.last().target, "/orders/7");
    let text = metrics(&gw).await;
    assert_eq!(local_calls(&text, "edge", "orders", "in_process"), 3.0, "{text}");
}

#[tokio::test]
async fn local_calls_never_touch_the_network() {
    let backend = Upstream::start("orders-backend").await;
    let (keys, key) = key_file("network");
    let gw = start(&backend.url(), &keys, &[]).await;

    let before = metrics(&gw).await;
    let accepted_before = connections(&before, "edge").expect("edge connections");
    const N: usize = 6;
    for i in 0..N {
        let r = with_key(&gw, "GET", &format!("/orders/{i}"), &key, "").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // While the gateway runs: its only listening socket is the edge's port, and every TCP
    // connection it has is either a client's (on that port) or to the upstream.
    let sockets = tcp_sockets(gw.pid());
    let listening: BTreeSet<u16> = sockets.iter().filter(|s| s.0 == "0A").map(|s| s.1).collect();
    assert_eq!(listening, BTreeSet::from([gw.addr.port()]), "the orders gateway has no listener: {sockets:?}");
    for (state, local, remote) in sockets.iter().filter(|s| s.0 == "01") {
        assert!(*local == gw.addr.port() || *remote == backend.addr.port(), "unexpected connection {state} {local} -> {remote}");
    }

    let text = metrics(&gw).await;
    assert_eq!(local_calls(&text, "edge", "orders", "in_process"), N as f64, "{text}");
    assert_eq!(local_calls(&text, "edge", "orders", "http"), 0.0);
    // One connection per client request (each `send` opens its own) and one for this scrape:
    // the local calls added none.
    let accepted = connections(&text, "edge").expect("edge connections");
    assert_eq!(accepted - accepted_before, N as f64 + 1.0, "{text}");
    assert_eq!(connections(&text, "orders"), Some(0.0), "nothing ever connects to the orders gateway");
    let orders = "gateway=\"orders\",route=\"getOrders\",method=\"GET\",path=\"/orders/{+path}\"";
    assert_eq!(sample(&text, &format!("specgate_requests_total{{{orders},status=\"2xx\"}}")), Some(N as f64), "the orders gateway served them");
    let edge = "gateway=\"edge\",route=\"orders\",method=\"GET\",path=\"/orders/{+path}\"";
    assert_eq!(sample(&text, &format!("specgate_requests_total{{{edge},status=\"2xx\"}}")), Some(N as f64));
    assert_eq!(sample(&text, &format!("specgate_upstream_duration_seconds_count{{{edge}}}")), None, "the edge has no network upstream");
    assert_eq!(sample(&text, &format!("specgate_upstream_duration_seconds_count{{{orders}}}")), Some(N as f64));
    assert_eq!(backend.seen().len(), N);
}

#[tokio::test]
async fn upstream_errors_behind_the_inner_gateway_keep_their_status() {
    let backend = Upstream::start("orders-backend").await;
    let (keys, key) = key_file("errors");
    let gw = start(&backend.url(), &keys, &[]).await;
    for code in [500u16, 404, 503, 418] {
        let r = with_key(&gw, "GET", &format!("/orders/status/{code}"), &key, "").await;
        assert_eq!(r.status, code);
        assert_eq!(r.text(), format!("upstream says {code}"), "the upstream's own body, not a problem");
        assert_eq!(r.header("x-served-by"), Some("orders"));
    }
    // A method the edge does not route: the edge's own 405, nothing handed over.
    let r = with_key(&gw, "DELETE", "/orders/1", &key, "").await;
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(local_calls(&metrics(&gw).await, "edge", "orders", "in_process"), 4.0);

    // The orders gateway's upstream is down: its 502 problem comes back through the edge.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let gw2 = start(&dead, &keys, &[]).await;
    let r = with_key(&gw2, "GET", "/orders/1", &key, "").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let p = r.json();
    assert_eq!(p["status"], 502);
    assert_eq!(p["detail"], "the upstream could not be reached");
    assert_eq!(p["instance"], "/orders/1");
}

#[tokio::test]
async fn unknown_local_names_answer_502_and_mapped_ones_go_over_http() {
    let backend = Upstream::start("orders-backend").await;
    let (keys, key) = key_file("mapping");

    // `local://billing` is no gateway of this binary and has no mapping.
    let lone = start(&backend.url(), &keys, &[("ORDERS_GATEWAY", "local://billing".to_owned())]).await;
    let r = with_key(&lone, "GET", "/via-env/7", &key, "").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let detail = r.json()["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("local://billing") && detail.contains("LOCAL_GATEWAY_BILLING_URL"), "{detail}");
    assert!(backend.seen().is_empty());
    assert_eq!(local_calls(&metrics(&lone).await, "edge", "billing", "unknown"), 1.0);

    // With LOCAL_GATEWAY_BILLING_URL it goes over HTTP to a separately running gateway (here
    // another instance of the same binary, whose edge hands it to its orders gateway).
    let other = start(&backend.url(), &keys, &[]).await;
    let mapped = start(
        &backend.url(),
        &keys,
        &[("ORDERS_GATEWAY", "local://billing".to_owned()), ("LOCAL_GATEWAY_BILLING_URL", format!("http://{}", other.addr))],
    )
    .await;
    let r = with_key(&mapped, "GET", "/via-env/7?q=1", &key, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-served-by"), Some("orders"));
    let seen = backend.last();
    assert_eq!(seen.target, "/orders/7?q=1");
    assert_eq!(seen.header("x-orders-checked"), Some("yes"));
    assert!(seen.header("x-specgate-local-hops").is_none());
    assert_eq!(local_calls(&metrics(&mapped).await, "edge", "billing", "http"), 1.0);
    let text = metrics(&other).await;
    let edge = "gateway=\"edge\",route=\"orders\",method=\"GET\",path=\"/orders/{+path}\"";
    assert_eq!(sample(&text, &format!("specgate_requests_total{{{edge},status=\"2xx\"}}")), Some(1.0), "the mapped call arrived on the other's listener: {text}");
    assert_eq!(local_calls(&text, "edge", "orders", "in_process"), 1.0, "and went on in process there");

    // The mapping is not consulted for a gateway of the binary itself.
    let r = with_key(&mapped, "GET", "/orders/8", &key, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(local_calls(&metrics(&mapped).await, "edge", "orders", "in_process"), 1.0);
}

#[tokio::test]
async fn a_gateway_calling_itself_is_stopped_with_508() {
    let backend = Upstream::start("orders-backend").await;
    let (keys, _) = key_file("loop");
    let gw = start(&backend.url(), &keys, &[]).await;
    let started = Instant::now();
    let r = get(&gw.url("/loop/x")).await.expect("request");
    assert_eq!(r.status, 508, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(r.json()["detail"].as_str().is_some_and(|d| d.contains("more than 8 local gateway calls")), "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = metrics(&gw).await;
    assert_eq!(local_calls(&text, "edge", "edge", "in_process"), 8.0, "{text}");
    assert_eq!(local_calls(&text, "edge", "edge", "loop"), 1.0);
    // The gateway still serves.
    assert_eq!(get(&gw.url("/__zuplo/ping")).await.expect("ping").status, 200);

    // A client cannot smuggle a lower count in; a higher one only stops its own call earlier.
    let r = send("GET", &gw.url("/loop/y"), &[("x-specgate-local-hops", "0")], "").await.expect("request");
    assert_eq!(r.status, 508);
    let r = send("GET", &gw.url("/loop/z"), &[("x-specgate-local-hops", "8")], "").await.expect("request");
    assert_eq!(r.status, 508);
    assert_eq!(local_calls(&metrics(&gw).await, "edge", "edge", "in_process"), 16.0);
}

#[tokio::test]
async fn each_gateway_reads_its_own_variables() {
    // Start-up reports what every gateway misses, each under its name, and stops.
    let mut child = Command::new(gateway_binary("federated"))
        .env_remove("ORDERS_BACKEND_URL")
        .env_remove("ORDERS_GATEWAY")
        .env("PORT", free_port().to_string())
        .env("HOST", "127.0.0.1")
        .current_dir(std::env::temp_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gateway started without its variables");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gateway `edge`: missing environment variable: ORDERS_GATEWAY"), "{err}");
    assert!(err.contains("gateway `orders`: missing environment variable: ORDERS_BACKEND_URL"), "{err}");

    // ORDERS__ORDERS_BACKEND_URL is the orders gateway's own and wins over the plain name.
    let backend = Upstream::start("orders-backend").await;
    let (keys, key) = key_file("scope");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let gw = start(&dead, &keys, &[("ORDERS__ORDERS_BACKEND_URL", backend.url())]).await;
    let r = with_key(&gw, "GET", "/orders/1", &key, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(backend.last().target, "/orders/1");
}

struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

#[tokio::test]
async fn bodies_stream_through_a_local_call() {
    let backend = Upstream::start("orders-backend").await;
    let (keys, key) = key_file("stream");
    let gw = start(&backend.url(), &keys, &[]).await;
    let auth = format!("Bearer {key}");

    // Response: the first chunk reaches the client while the upstream still holds the second.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<http_body_util::Empty<Bytes>>();
    let req = hyper::Request::get(gw.url("/orders/stream")).header("authorization", &auth).body(http_body_util::Empty::new()).expect("request");
    let resp = client.request(req).await.expect("response head");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the first chunk arrives before the upstream finishes")
        .expect("frame")
        .expect("frame ok");
    assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"first;")));
    backend.release();
    assert_eq!(body.collect().await.expect("rest").to_bytes(), Bytes::from_static(b"second"));

    // Request: the upstream gets the first part while the client still holds the rest.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>(4);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let req = hyper::Request::post(gw.url("/orders/upload-stream"))
        .header("authorization", &auth)
        .body(http_body_util::StreamBody::new(ReceiverStream(rx)))
        .expect("request");
    let pending = tokio::spawn(async move { client.request(req).await.map(|r| r.status().as_u16()) });
    tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"part-1;")))).await.expect("send");
    tokio::time::timeout(Duration::from_secs(10), backend.first_chunk_arrived())
        .await
        .expect("the upstream received the first part before the client sent the rest");
    tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"part-2")))).await.expect("send");
    drop(tx);
    assert_eq!(pending.await.expect("join").expect("response"), 200);
    assert_eq!(backend.last().body, Bytes::from_static(b"part-1;part-2"));

    // Large bodies both ways arrive whole.
    let big: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let r = with_key(&gw, "POST", "/orders/upload", &key, big.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(backend.last().body, Bytes::from(big));
    let r = with_key(&gw, "GET", "/orders/bytes/9000000", &key, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 9_000_000);
    assert_eq!(local_calls(&metrics(&gw).await, "edge", "orders", "in_process"), 4.0);
}
