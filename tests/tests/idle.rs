//! Plain-text HTTP/1 connections between requests (runtime/src/conn.rs): an idle keep-alive
//! connection is parked (hyper's state freed) and served again when the client sends, closed
//! after the keep-alive timeout; slow heads are still cut off; pipelined requests, slow
//! answers, HTTP/2 with prior knowledge and shutdown work across parking. Against the
//! path-modes example (no WebSocket route, so its connections are parked) and a real upstream.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use specgate_tests::{Gateway, Upstream, gateway_binary, raw_exchange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn setup(extra: &[(&str, &str)]) -> (Upstream, Gateway) {
    let up = Upstream::start("api").await;
    let mut env = vec![("API_URL", up.url())];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let gw = Gateway::start(&gateway_binary("path-modes"), &env).await;
    (up, gw)
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n").into_bytes()
}

/// Reads from `s` until `count` complete responses (heads with a Content-Length body) have
/// arrived; `None` when the connection closes or `timeout` passes first.
async fn read_responses(s: &mut TcpStream, count: usize, timeout: Duration) -> Option<String> {
    let mut buf = Vec::new();
    let read = async {
        loop {
            if complete_responses(&buf) >= count {
                return Some(String::from_utf8_lossy(&buf).into_owned());
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(timeout, read).await.ok().flatten()
}

/// How many whole responses `buf` holds.
fn complete_responses(buf: &[u8]) -> usize {
    let text = String::from_utf8_lossy(buf);
    let mut rest: &str = &text;
    let mut n = 0;
    while let Some(end) = rest.find("\r\n\r\n") {
        let head = &rest[..end];
        let len = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
            .unwrap_or(0);
        let body_start = end + 4;
        if rest.len() < body_start + len {
            break;
        }
        n += 1;
        rest = &rest[body_start + len..];
    }
    n
}

/// Whether the gateway closed `s` (EOF) within `timeout`.
async fn closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    let mut b = [0u8; 64];
    matches!(tokio::time::timeout(timeout, s.read(&mut b)).await, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test]
async fn an_idle_connection_is_served_again_after_parking_and_closed_after_the_keep_alive_timeout() {
    // The header-read timeout (1 s) is shorter than the idle time: a parked connection waits
    // under the keep-alive timeout instead, and hyper's header timer is not running.
    let (up, gw) = setup(&[("HEADER_READ_TIMEOUT_SECONDS", "1"), ("KEEPALIVE_TIMEOUT_SECONDS", "4")]).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(&get("/users/1")).await.expect("write");
    let first = read_responses(&mut s, 1, Duration::from_secs(5)).await.expect("first answer");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Quiet for more than two ticks: parked.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s.write_all(&get("/users/2")).await.expect("write after idling");
    let second = read_responses(&mut s, 1, Duration::from_secs(5)).await.expect("an answer on the parked connection");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert_eq!(up.last().target, "/users/2");
    assert!(!second.to_ascii_lowercase().contains("connection: close"), "{second}");
    // Then nothing: closed once the keep-alive timeout has passed, not before.
    let idle_from = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(8)).await, "closed after the keep-alive timeout");
    let idle = idle_from.elapsed();
    assert!(idle >= Duration::from_millis(3500), "closed after {idle:?}, before the 4 s keep-alive timeout");
}

#[tokio::test]
async fn pipelined_requests_are_all_answered_across_parking() {
    let (up, gw) = setup(&[]).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    let mut three = get("/users/1");
    three.extend(get("/users/2"));
    three.extend(get("/users/3"));
    s.write_all(&three).await.expect("write");
    let raw = read_responses(&mut s, 3, Duration::from_secs(5)).await.expect("three answers");
    assert_eq!(raw.matches("HTTP/1.1 200").count(), 3, "{raw}");
    // Parked, then two pipelined requests in one write again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut two = get("/users/4");
    two.extend(get("/users/5"));
    s.write_all(&two).await.expect("write");
    let raw = read_responses(&mut s, 2, Duration::from_secs(5)).await.expect("two answers");
    assert_eq!(raw.matches("HTTP/1.1 200").count(), 2, "{raw}");
    let targets: Vec<String> = up.seen().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/users/1", "/users/2", "/users/3", "/users/4", "/users/5"]);
}

#[tokio::test]
async fn an_answer_slower_than_the_idle_tick_keeps_the_connection() {
    let (_up, gw) = setup(&[]).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    // The upstream answers after 2.5 s: the connection is quiet meanwhile, but a request is
    // waiting for its answer, so it is not parked (which would add `connection: close`).
    s.write_all(&get("/files/slow/2500")).await.expect("write");
    let raw = read_responses(&mut s, 1, Duration::from_secs(10)).await.expect("the slow answer");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(!raw.to_ascii_lowercase().contains("connection: close"), "{raw}");
    s.write_all(&get("/users/9")).await.expect("write");
    let raw = read_responses(&mut s, 1, Duration::from_secs(5)).await.expect("the next answer on the same connection");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
}

#[tokio::test]
async fn slow_heads_and_silent_connections_are_cut_off() {
    let (up, gw) = setup(&[("HEADER_READ_TIMEOUT_SECONDS", "1")]).await;
    // A head that never ends: closed within about two seconds (one tick of slack).
    let started = Instant::now();
    let raw = raw_exchange(gw.addr, b"GET /users/1 HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n", Duration::from_secs(8)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "slow head held for {took:?}: {raw:?}");
    assert!(raw.is_empty(), "{raw:?}");
    // A connection that sends nothing at all.
    let started = Instant::now();
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    assert!(closed_within(&mut s, Duration::from_secs(8)).await);
    assert!(started.elapsed() < Duration::from_secs(4), "silent connection held for {:?}", started.elapsed());
    // A head that trickles in, one byte every 300 ms, never reaches the upstream.
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    let started = Instant::now();
    for b in b"GET /users/trickle HTTP/1.1\r\nHost: x\r\n\r\n" {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        if started.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    assert!(closed_within(&mut s, Duration::from_secs(3)).await, "trickling head cut off");
    assert!(started.elapsed() < Duration::from_secs(6), "trickling head held for {:?}", started.elapsed());
    assert!(up.seen().iter().all(|r| r.target != "/users/trickle"));
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_still_served() {
    let (up, gw) = setup(&[]).await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).http2_only(true).build_http::<Full<Bytes>>();
    for i in 0..3 {
        let req = hyper::Request::get(gw.url(&format!("/users/{i}"))).body(Full::new(Bytes::new())).expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req)).await.expect("in time").expect("response");
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let _ = resp.into_body().collect().await;
    }
    assert_eq!(up.last().target, "/users/2");
}

#[tokio::test]
async fn shutdown_closes_parked_connections_at_once() {
    let (_up, mut gw) = setup(&[]).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(&get("/users/1")).await.expect("write");
    assert!(read_responses(&mut s, 1, Duration::from_secs(5)).await.is_some());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let started = Instant::now();
    gw.terminate();
    let code = gw.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", gw.log_text());
    assert!(started.elapsed() < Duration::from_secs(3), "shutdown took {:?} with a parked connection open", started.elapsed());
    assert!(closed_within(&mut s, Duration::from_secs(2)).await);
}
