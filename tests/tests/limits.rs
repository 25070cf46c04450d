//! Limits against abusive clients and request smuggling, against the multi-backend example
//! with real upstreams: what the client gets back and what reached the upstream.

use std::time::{Duration, Instant};

use specgate_tests::{Gateway, Upstream, gateway_binary, get, raw_exchange, send};

struct Setup {
    users: Upstream,
    _orders: Upstream,
    _catalog: Upstream,
    gw: Gateway,
}

async fn setup(extra: &[(&str, &str)]) -> Setup {
    let users = Upstream::start("users").await;
    let orders = Upstream::start("orders").await;
    let catalog = Upstream::start("catalog").await;
    let mut env = vec![("USERS_URL", users.url()), ("ORDERS_URL", orders.url()), ("CATALOG_URL", catalog.url())];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let gw = Gateway::start(&gateway_binary("multi-backend"), &env).await;
    Setup { users, _orders: orders, _catalog: catalog, gw }
}

fn status_line(raw: &str) -> &str {
    raw.lines().next().unwrap_or("")
}

#[tokio::test]
async fn smuggling_attempts_are_rejected_and_never_reach_the_upstream() {
    let s = setup(&[]).await;
    let attacks: [&[u8]; 5] = [
        // CL.TE: a front end honouring Content-Length would see one request, a back end
        // honouring chunked two.
        b"POST /api/users HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/users/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        // Two different lengths.
        b"POST /api/users HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 48\r\n\r\nabcdGET /api/users/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        // chunked not last: the body length is unknowable.
        b"POST /api/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\nGET /api/users/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        // An unknown coding.
        b"POST /api/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\nGET /api/users/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        // A length that is not a number.
        b"POST /api/users HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcdGET /api/users/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    for (i, attack) in attacks.iter().enumerate() {
        let raw = raw_exchange(s.gw.addr, attack, Duration::from_secs(5)).await;
        if i == 0 {
            // hyper follows RFC 9112 §6.3 here: Transfer-Encoding wins, Content-Length is
            // dropped, and the connection is closed after the response, so the bytes after the
            // chunked body are never read as a request. (Rejecting with 400 would be fine too.)
            let closed = raw.to_ascii_lowercase().contains("\r\nconnection: close\r\n");
            assert!(status_line(&raw).starts_with("HTTP/1.1 400") || closed, "attack {i}: {raw:?}");
        } else {
            assert!(status_line(&raw).starts_with("HTTP/1.1 400"), "attack {i}: {raw:?}");
        }
        assert_eq!(raw.matches("HTTP/1.1 ").count(), 1, "attack {i}: exactly one response, then the connection closes: {raw:?}");
    }
    assert!(s.users.seen().iter().all(|r| !r.target.contains("smuggled")), "a smuggled request reached the upstream");
    // Only attack 0's outer request (an empty chunked body) may have been forwarded.
    let seen = s.users.seen();
    assert!(seen.len() <= 1 && seen.iter().all(|r| r.body.is_empty()), "{:?}", seen.iter().map(|r| r.target.clone()).collect::<Vec<_>>());
    // The gateway is still healthy.
    assert_eq!(get(&s.gw.url("/api/users")).await.expect("request").status, 200);
}

#[tokio::test]
async fn oversized_and_overcrowded_heads_get_431() {
    let s = setup(&[("MAX_HEADER_BYTES", "16384"), ("MAX_HEADERS", "50")]).await;
    let big = format!("GET /api/users HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "a".repeat(20_000));
    let raw = raw_exchange(s.gw.addr, big.as_bytes(), Duration::from_secs(5)).await;
    assert!(status_line(&raw).starts_with("HTTP/1.1 431"), "{raw:?}");
    let mut many = String::from("GET /api/users HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..60 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let raw = raw_exchange(s.gw.addr, many.as_bytes(), Duration::from_secs(5)).await;
    assert!(status_line(&raw).starts_with("HTTP/1.1 431"), "{raw:?}");
    assert!(s.users.seen().is_empty());
    // Within the limits: served.
    let headers: Vec<(String, String)> = (0..40).map(|i| (format!("x-h{i}"), "v".repeat(100))).collect();
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(send("GET", &s.gw.url("/api/users"), &h, "").await.expect("request").status, 200);
}

#[tokio::test]
async fn slow_request_heads_are_cut_off() {
    let s = setup(&[("HEADER_READ_TIMEOUT_SECONDS", "1")]).await;
    let started = Instant::now();
    // A head that never ends: the connection must be closed after about a second, not held.
    let raw = raw_exchange(s.gw.addr, b"GET /api/users HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n", Duration::from_secs(8)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "connection held for {took:?}: {raw:?}");
    assert!(raw.is_empty() || status_line(&raw).starts_with("HTTP/1.1 408"), "{raw:?}");
    assert!(s.users.seen().is_empty());
}

#[tokio::test]
async fn request_bodies_over_the_default_limit_get_413() {
    let s = setup(&[("MAX_REQUEST_BODY_BYTES", "1000")]).await;
    // Declared length over the limit: refused before reading.
    let r = send("POST", &s.gw.url("/api/users"), &[("content-type", "application/json")], "x".repeat(2000)).await.expect("request");
    assert_eq!(r.status, 413);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    // Chunked, over the limit: cut off, 413.
    let mut chunked = String::from("POST /api/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    for _ in 0..4 {
        chunked.push_str(&format!("{:x}\r\n{}\r\n", 600, "y".repeat(600)));
    }
    chunked.push_str("0\r\n\r\n");
    let raw = raw_exchange(s.gw.addr, chunked.as_bytes(), Duration::from_secs(5)).await;
    assert!(status_line(&raw).starts_with("HTTP/1.1 413"), "{raw:?}");
    // Within the limit, both ways: forwarded whole.
    let r = send("POST", &s.gw.url("/api/users"), &[], "z".repeat(900)).await.expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(s.users.last().body.len(), 900);
    let mut small = String::from("POST /api/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    small.push_str(&format!("{:x}\r\n{}\r\n0\r\n\r\n", 500, "w".repeat(500)));
    let raw = raw_exchange(s.gw.addr, small.as_bytes(), Duration::from_secs(5)).await;
    assert!(status_line(&raw).starts_with("HTTP/1.1 200"), "{raw:?}");
    assert_eq!(s.users.last().body.len(), 500);
}

#[tokio::test]
async fn connections_over_the_limit_are_closed() {
    let s = setup(&[("MAX_CONNECTIONS", "2"), ("WORKER_THREADS", "1"), ("HEADER_READ_TIMEOUT_SECONDS", "60")]).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Two keep-alive connections take both permits; each proves it was admitted by being
    // served. (The start-up probe's connection may still hold a permit for a moment: retry.)
    let mut open = Vec::new();
    for _ in 0..100 {
        if open.len() == 2 {
            break;
        }
        let mut c = tokio::net::TcpStream::connect(s.gw.addr).await.expect("connect");
        let _ = c.write_all(b"GET /api/users HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await {
            Ok(Ok(n)) if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200") => open.push(c),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(open.len(), 2, "two connections admitted");
    let raw = raw_exchange(s.gw.addr, b"GET /api/users HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", Duration::from_secs(5)).await;
    assert!(raw.is_empty(), "the third connection is closed unanswered: {raw:?}\n{}", s.gw.log_text());
    // A permit comes back when a connection closes.
    let a = open.pop();
    drop(a);
    let mut served = false;
    for _ in 0..50 {
        let raw = raw_exchange(s.gw.addr, b"GET /api/users HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", Duration::from_secs(5)).await;
        if status_line(&raw).starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "a freed permit lets a new connection in");
    drop(open);
}
