//! Responses are streamed, never buffered: Server-Sent Events reach the client event by event,
//! and a large response flows through with bounded memory. Metrics, the access log and trace
//! propagation are on, so none of them may hold a body back.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use specgate_tests::{Gateway, Upstream, gateway_binary};

async fn setup() -> (Upstream, Upstream, Gateway) {
    let users = Upstream::start("users").await;
    let catalog = Upstream::start("catalog").await;
    let env = [
        ("USERS_URL", users.url()),
        ("ORDERS_URL", users.url()),
        ("CATALOG_URL", format!("{}/", catalog.url())),
        ("METRICS_PATH", "/__specgate/metrics".to_owned()),
        ("ACCESS_LOG", "on".to_owned()),
    ];
    let gw = Gateway::start(&gateway_binary("multi-backend"), &env).await;
    (users, catalog, gw)
}

/// Opens a streaming GET (HTTP/1.1, or HTTP/2 with prior knowledge when `http2`).
async fn open(url: &str, http2: bool) -> hyper::Response<hyper::body::Incoming> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).http2_only(http2).build_http::<Full<Bytes>>();
    let req = hyper::Request::get(url).body(Full::new(Bytes::new())).expect("request");
    tokio::time::timeout(Duration::from_secs(10), client.request(req)).await.expect("response head in time").expect("response")
}

/// Reads until `buf` contains `needle` (at most 5 s).
async fn read_until(body: &mut hyper::body::Incoming, buf: &mut Vec<u8>, needle: &str) {
    let read = async {
        while !String::from_utf8_lossy(buf).contains(needle) {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
                other => panic!("the stream ended before {needle:?}: {other:?}; got {:?}", String::from_utf8_lossy(buf)),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap_or_else(|_| panic!("{needle:?} did not arrive; got {:?}", String::from_utf8_lossy(buf)));
}

async fn sse_event_by_event(http2: bool) {
    let (_users, catalog, gw) = setup().await;
    let resp = open(&gw.url("/catalog/events/sse"), http2).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("content-type").map(|v| v.as_bytes()), Some(&b"text/event-stream"[..]));
    assert!(resp.headers().get("content-length").is_none());
    assert!(resp.headers().get("content-encoding").is_none());
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    // The upstream sends event 2 only when released: event 1 must be here before that.
    read_until(&mut body, &mut buf, "data: {\"n\":1}\n\n").await;
    assert!(!String::from_utf8_lossy(&buf).contains("\"n\":2"));
    catalog.release();
    read_until(&mut body, &mut buf, "data: {\"n\":2}\n\n").await;
    assert!(!String::from_utf8_lossy(&buf).contains("\"n\":3"));
    catalog.release();
    read_until(&mut body, &mut buf, "data: {\"n\":3}\n\n").await;
    // Then the end (HTTP/2 may close the stream with an empty DATA frame).
    let rest = tokio::time::timeout(Duration::from_secs(5), body.collect()).await.expect("the stream ends");
    assert!(rest.expect("clean end").to_bytes().is_empty());
    let text = String::from_utf8_lossy(&buf).into_owned();
    assert_eq!(text.matches("event: tick").count(), 3, "{text}");
    assert!(text.starts_with("id: 1\n"), "{text}");
    // The stream was counted like any request.
    let metrics = specgate_tests::get(&gw.url("/__specgate/metrics")).await.expect("metrics").text();
    let counted = "specgate_requests_total{gateway=\"multi-backend\",route=\"catalog\",method=\"GET\",path=\"/catalog/{+rest}\",status=\"2xx\"} 1";
    assert!(metrics.contains(counted), "{metrics}");
}

#[tokio::test]
async fn server_sent_events_arrive_event_by_event_over_http1() {
    sse_event_by_event(false).await;
}

#[tokio::test]
async fn server_sent_events_arrive_event_by_event_over_http2() {
    sse_event_by_event(true).await;
}

#[tokio::test]
async fn a_large_response_streams_with_bounded_memory() {
    const MIB: usize = 64;
    let (_users, catalog, gw) = setup().await;
    // Warm up the connection pool and the allocator.
    assert_eq!(specgate_tests::get(&gw.url("/catalog/warm")).await.expect("warm-up").status, 200);
    let before = gw.peak_rss_kib().expect("VmHWM");
    let resp = open(&gw.url(&format!("/catalog/large/{MIB}")), false).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // The upstream holds everything after its first chunk until released.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("first bytes before the upstream finished");
    let mut total = first.and_then(|f| f.ok()).and_then(|f| f.into_data().ok()).map(|d| d.len()).unwrap_or(0);
    assert!(total > 0);
    catalog.release();
    // Not reading for a while: a buffering gateway would now pull the whole body into memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rest = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("body frame").into_data() {
                total += data.len();
            }
        }
        total
    };
    let total = tokio::time::timeout(Duration::from_secs(60), rest).await.expect("the body completes");
    assert_eq!(total, MIB * 1024 * 1024);
    let after = gw.peak_rss_kib().expect("VmHWM");
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(grown_mib < 16, "peak memory grew by {grown_mib} MiB for a {MIB} MiB body ({before} → {after} KiB)");
}
