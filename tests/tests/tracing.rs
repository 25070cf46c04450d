//! Trace context and OTLP export: the multi-backend gateway in front of real upstreams, sending
//! spans to an OTLP/HTTP receiver on loopback that decodes them with the protobuf definitions.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use specgate_tests::{Gateway, Upstream, gateway_binary, get, send};

/// A span as exported, with the service name of its resource.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    span: Span,
}

impl Exported {
    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    fn attr(&self, key: &str) -> Option<String> {
        self.span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref()).map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            Value::BoolValue(b) => b.to_string(),
            Value::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
    }
    fn is_server(&self) -> bool {
        self.span.kind == 2
    }
    fn is_client(&self) -> bool {
        self.span.kind == 3
    }
    /// Status code ERROR (2).
    fn is_error(&self) -> bool {
        self.span.status.as_ref().is_some_and(|s| s.code == 2)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Exported>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start() -> Receiver {
        Self::start_slow(Duration::ZERO).await
    }

    /// A receiver that takes `delay` to answer each export.
    async fn start_slow(delay: Duration) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let store = spans.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { break };
                let store = store.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            let ok = req.method() == hyper::Method::POST
                                && req.uri().path() == "/v1/traces"
                                && req.headers().get("content-type").is_some_and(|c| c == "application/x-protobuf");
                            let auth = req.headers().get("x-otlp-token").map(|v| v.as_bytes().to_vec());
                            let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                            tokio::time::sleep(delay).await;
                            let status = match ExportTraceServiceRequest::decode(body) {
                                Ok(decoded) if ok && auth.as_deref() == Some(b"secret value") => {
                                    let mut s = store.lock().expect("spans");
                                    for rs in decoded.resource_spans {
                                        let service = rs
                                            .resource
                                            .iter()
                                            .flat_map(|r| r.attributes.iter())
                                            .find(|kv| kv.key == "service.name")
                                            .and_then(|kv| kv.value.as_ref())
                                            .and_then(|v| match &v.value {
                                                Some(Value::StringValue(s)) => Some(s.clone()),
                                                _ => None,
                                            })
                                            .unwrap_or_default();
                                        for ss in rs.scope_spans {
                                            for span in ss.spans {
                                                s.push(Exported { service: service.clone(), span });
                                            }
                                        }
                                    }
                                    200
                                }
                                _ => 400,
                            };
                            let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_REQUEST);
                            resp.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/x-protobuf"));
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Receiver { addr, spans, task }
    }

    fn spans(&self) -> Vec<Exported> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

struct Setup {
    users: Upstream,
    catalog: Upstream,
    _orders: Upstream,
    gw: Gateway,
}

async fn setup(extra: &[(&str, String)]) -> Setup {
    let users = Upstream::start("users").await;
    let orders = Upstream::start("orders").await;
    let catalog = Upstream::start("catalog").await;
    let mut env = vec![("USERS_URL", users.url()), ("ORDERS_URL", orders.url()), ("CATALOG_URL", format!("{}/", catalog.url()))];
    env.extend(extra.iter().cloned());
    let gw = Gateway::start(&gateway_binary("multi-backend"), &env).await;
    Setup { users, catalog, _orders: orders, gw }
}

/// `(version, trace id, parent id, flags)` of a traceparent the upstream received.
fn traceparent(v: Option<&str>) -> (String, String, String, String) {
    let v = v.expect("the upstream received a traceparent");
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "{v}");
    assert!(parts[1].len() == 32 && parts[2].len() == 16 && parts[3].len() == 2, "{v}");
    assert!(v.bytes().all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{v}");
    assert_ne!(parts[1], "0".repeat(32));
    assert_ne!(parts[2], "0".repeat(16));
    (parts[0].to_owned(), parts[1].to_owned(), parts[2].to_owned(), parts[3].to_owned())
}

const INCOMING_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const INCOMING_PARENT: &str = "b7ad6b7169203331";

// The receiver must keep answering while the test blocks waiting for the gateway to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_requests_export_a_server_span_and_a_client_span_per_upstream_call() {
    let receiver = Receiver::start().await;
    let s = setup(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", receiver.addr)),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-otlp-token=secret%20value".to_owned()),
        ("OTEL_SERVICE_NAME", "shop-edge".to_owned()),
        // Nothing is exported on schedule during the test: what arrives was flushed at shutdown.
        ("OTEL_BSP_SCHEDULE_DELAY", "600000".to_owned()),
    ])
    .await;

    for id in ["7", "8"] {
        assert_eq!(get(&s.gw.url(&format!("/api/users/{id}"))).await.expect("request").status, 200);
    }
    let incoming = format!("00-{INCOMING_TRACE}-{INCOMING_PARENT}-01");
    let r = send("GET", &s.gw.url("/api/users/9"), &[("traceparent", &incoming), ("tracestate", "congo=t61rcWkgMzE")], "").await.expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(get(&s.gw.url("/nowhere")).await.expect("request").status, 404);
    assert_eq!(get(&s.gw.url("/catalog/status/503")).await.expect("request").status, 503);
    assert!(receiver.spans().is_empty(), "spans wait in the batch queue");

    s.gw.terminate();
    let mut gw = s.gw;
    assert_eq!(gw.wait_exit(Duration::from_secs(15)), Some(0), "graceful exit; log:\n{}", gw.log_text());
    let spans = receiver.spans();
    assert!(spans.iter().all(|e| e.service == "shop-edge"), "{spans:#?}");
    let servers: Vec<&Exported> = spans.iter().filter(|e| e.is_server()).collect();
    let clients: Vec<&Exported> = spans.iter().filter(|e| e.is_client()).collect();
    // The readiness pings of the test helper are requests too.
    let routed: Vec<&&Exported> = servers.iter().filter(|e| e.attr("url.path").as_deref() != Some("/__zuplo/ping")).collect();
    assert_eq!(routed.len(), 5, "one server span per request: {servers:#?}; log:\n{}", gw.log_text());
    assert_eq!(clients.len(), 4, "one client span per upstream call: {clients:#?}");

    let seen = s.users.seen();
    assert_eq!(seen.len(), 3);
    for (i, req) in seen.iter().enumerate() {
        let (version, trace_id, parent_id, flags) = traceparent(req.header("traceparent"));
        assert_eq!((version.as_str(), flags.as_str()), ("00", "01"));
        let client = clients.iter().find(|c| c.span_id() == parent_id).unwrap_or_else(|| panic!("the upstream's parent {parent_id} is a client span"));
        assert_eq!(client.trace_id(), trace_id);
        assert_eq!(client.span.name, "GET");
        assert_eq!(client.attr("server.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(client.attr("server.port"), Some(s.users.addr.port().to_string()));
        assert_eq!(client.attr("http.response.status_code").as_deref(), Some("200"));
        assert!(!client.is_error());
        let server = servers.iter().find(|v| v.span_id() == client.parent_id()).expect("the client span's parent is a server span");
        assert_eq!(server.trace_id(), trace_id);
        assert_eq!(server.span.name, "GET /api/users/{id}");
        assert_eq!(server.attr("http.route").as_deref(), Some("/api/users/{id}"));
        assert_eq!(server.attr("http.request.method").as_deref(), Some("GET"));
        assert_eq!(server.attr("url.path"), Some(format!("/api/users/{}", 7 + i)));
        assert_eq!(server.attr("http.response.status_code").as_deref(), Some("200"));
        assert_eq!(server.attr("specgate.request_id").as_deref(), req.header("x-request-id"));
        assert!(server.span.start_time_unix_nano <= client.span.start_time_unix_nano);
        assert!(client.span.end_time_unix_nano <= server.span.end_time_unix_nano);
        if i == 2 {
            assert_eq!(trace_id, INCOMING_TRACE, "the client's trace is continued");
            assert_eq!(server.parent_id(), INCOMING_PARENT, "the client's span is the server span's parent");
            assert_eq!(req.header("tracestate"), Some("congo=t61rcWkgMzE"));
        } else {
            assert_eq!(server.parent_id(), "", "a new trace starts at the gateway");
            assert_eq!(req.header("tracestate"), None);
        }
    }

    let not_found = routed.iter().find(|v| v.attr("http.response.status_code").as_deref() == Some("404")).expect("the 404's span");
    assert_eq!(not_found.span.name, "GET");
    assert_eq!(not_found.attr("http.route"), None);
    assert!(!not_found.is_error(), "a 4xx is not the server's error");
    assert!(clients.iter().all(|c| c.trace_id() != not_found.trace_id()), "no upstream call, no client span");

    let failed = routed.iter().find(|v| v.attr("http.response.status_code").as_deref() == Some("503")).expect("the 503's span");
    assert_eq!(failed.attr("http.route").as_deref(), Some("/catalog/{+rest}"));
    assert!(failed.is_error());
    let failed_client = clients.iter().find(|c| c.parent_id() == failed.span_id()).expect("its client span");
    assert!(failed_client.is_error());
    assert_eq!(failed_client.attr("error.type").as_deref(), Some("503"));
    let (_, trace_id, parent_id, _) = traceparent(s.catalog.last().header("traceparent"));
    assert_eq!((trace_id, parent_id), (failed.trace_id(), failed_client.span_id()));
}

// The receiver must keep answering while the test blocks waiting for the gateway to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_off_exports_nothing_but_still_propagates() {
    let receiver = Receiver::start().await;
    let s = setup(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", receiver.addr)),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-otlp-token=secret%20value".to_owned()),
        ("OTEL_TRACES_SAMPLER", "always_off".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
    ])
    .await;
    assert_eq!(get(&s.gw.url("/api/users/1")).await.expect("request").status, 200);
    let (_, minted, _, flags) = traceparent(s.users.last().header("traceparent"));
    assert_eq!(flags, "00", "not sampled");
    let incoming = format!("00-{INCOMING_TRACE}-{INCOMING_PARENT}-01");
    send("GET", &s.gw.url("/api/users/2"), &[("traceparent", &incoming)], "").await.expect("request");
    let (_, trace_id, parent_id, flags) = traceparent(s.users.last().header("traceparent"));
    assert_eq!(trace_id, INCOMING_TRACE);
    assert_ne!(parent_id, INCOMING_PARENT);
    assert_eq!(flags, "00", "always_off is not parent-based");
    assert!(s.gw.log_text().contains(&format!("trace_id={minted}")), "{}", s.gw.log_text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.gw.terminate();
    let mut gw = s.gw;
    assert_eq!(gw.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(receiver.spans().is_empty(), "{:#?}", receiver.spans());
}

#[tokio::test]
async fn trace_context_is_propagated_without_export() {
    let s = setup(&[]).await;
    // Minted when absent: sampled by the default parentbased_always_on.
    let r = get(&s.gw.url("/api/users/1")).await.expect("request");
    assert_eq!(r.status, 200);
    let (version, minted, _, flags) = traceparent(s.users.last().header("traceparent"));
    assert_eq!((version.as_str(), flags.as_str()), ("00", "01"));
    let request_id = r.header("x-request-id").expect("request id").to_owned();
    let log = s.gw.log_text();
    let line = log.lines().find(|l| l.contains(&request_id) && l.contains("specgate::access")).unwrap_or_else(|| panic!("access line: {log}"));
    assert!(line.contains(&format!("trace_id={minted}")), "{line}");

    // Continued, unsampled parent: still unsampled, the gateway's span is the new parent.
    let incoming = format!("00-{INCOMING_TRACE}-{INCOMING_PARENT}-00");
    send("GET", &s.gw.url("/api/users/2"), &[("traceparent", &incoming), ("tracestate", "a=1"), ("tracestate", "b=2")], "").await.expect("request");
    let seen = s.users.last();
    let (_, trace_id, parent_id, flags) = traceparent(seen.header("traceparent"));
    assert_eq!((trace_id.as_str(), flags.as_str()), (INCOMING_TRACE, "00"));
    assert_ne!(parent_id, INCOMING_PARENT);
    assert_eq!(seen.header("tracestate"), Some("a=1,b=2"));

    // Invalid (upper-case hex): replaced by a new trace, its tracestate dropped.
    let invalid = format!("00-{}-{INCOMING_PARENT}-01", INCOMING_TRACE.to_uppercase());
    send("GET", &s.gw.url("/api/users/3"), &[("traceparent", &invalid), ("tracestate", "a=1")], "").await.expect("request");
    let seen = s.users.last();
    let (_, trace_id, _, flags) = traceparent(seen.header("traceparent"));
    assert_ne!(trace_id.to_uppercase(), INCOMING_TRACE.to_uppercase());
    assert_ne!(trace_id, minted);
    assert_eq!(flags, "01");
    assert_eq!(seen.header("tracestate"), None);

    // Every request gets its own trace.
    get(&s.gw.url("/api/users/4")).await.expect("request");
    let (_, other, _, _) = traceparent(s.users.last().header("traceparent"));
    assert_ne!(other, minted);
}

#[tokio::test]
async fn ratio_sampling_decides_the_sampled_flag_for_new_traces_only() {
    let s = setup(&[("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".to_owned()), ("OTEL_TRACES_SAMPLER_ARG", "0".to_owned())]).await;
    for _ in 0..5 {
        get(&s.gw.url("/api/users/1")).await.expect("request");
        let (_, _, _, flags) = traceparent(s.users.last().header("traceparent"));
        assert_eq!(flags, "00", "ratio 0 samples no new trace");
    }
    let incoming = format!("00-{INCOMING_TRACE}-{INCOMING_PARENT}-01");
    send("GET", &s.gw.url("/api/users/2"), &[("traceparent", &incoming)], "").await.expect("request");
    let (_, _, _, flags) = traceparent(s.users.last().header("traceparent"));
    assert_eq!(flags, "01", "a sampled parent is followed");
}

#[test]
fn malformed_tracing_variables_stop_start_up() {
    let out = std::process::Command::new(gateway_binary("multi-backend"))
        .env("PORT", specgate_tests::free_port().to_string())
        .env("HOST", "127.0.0.1")
        .env("USERS_URL", "http://127.0.0.1:1")
        .env("ORDERS_URL", "http://127.0.0.1:1")
        .env("CATALOG_URL", "http://127.0.0.1:1")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")
        .env("OTEL_TRACES_SAMPLER", "sometimes")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run gateway");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OTEL_TRACES_SAMPLER=\"sometimes\" is not supported"), "{err}");
    assert!(err.contains("OTEL_EXPORTER_OTLP_ENDPOINT: \"collector:4318/v1/traces\" is not an http(s) URL"), "{err}");
}

// The receiver must keep answering while the test blocks waiting for the gateway to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_export_queue_drops_spans_and_counts_them() {
    // Each export takes a second, so spans pile up behind it in a queue of four.
    let receiver = Receiver::start_slow(Duration::from_secs(1)).await;
    let s = setup(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", receiver.addr)),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-otlp-token=secret%20value".to_owned()),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "4".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ])
    .await;
    const REQUESTS: usize = 40;
    for i in 0..REQUESTS {
        // Requests are not slowed down by the export.
        let r = tokio::time::timeout(Duration::from_secs(2), get(&s.gw.url(&format!("/api/users/{i}")))).await;
        assert_eq!(r.expect("answered without waiting for the export").expect("request").status, 200);
    }
    s.gw.terminate();
    let mut gw = s.gw;
    assert_eq!(gw.wait_exit(Duration::from_secs(20)), Some(0));
    let log = gw.log_text();
    let dropped: usize = log
        .lines()
        .find(|l| l.contains("BatchSpanProcessor.SpansDropped"))
        .and_then(|l| l.split("dropped_span_count=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the dropped spans are counted in the log:\n{log}"));
    let exported = receiver.spans().iter().filter(|e| e.attr("url.path").as_deref() != Some("/__zuplo/ping")).count();
    assert!(dropped > 0);
    assert!(exported < 2 * REQUESTS, "{exported} spans exported");
    assert!(exported + dropped >= 2 * REQUESTS, "every span is exported or counted: {exported} + {dropped}");
}

// A federated build: the in-process call to `local://orders` continues the trace (the orders
// gateway's server span is a child of the edge's client span), and at shutdown every gateway
// of the process exports what it queued, not only the listening one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_call_continues_the_trace_and_every_gateway_exports_at_shutdown() {
    let receiver = Receiver::start().await;
    let backend = Upstream::start("orders-backend").await;
    let mut gw = Gateway::start(
        &gateway_binary("federated"),
        &[
            ("ORDERS_BACKEND_URL", backend.url()),
            ("ORDERS_GATEWAY", "local://orders".to_owned()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", receiver.addr)),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-otlp-token=secret%20value".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000".to_owned()),
            ("WORKER_THREADS", "1".to_owned()),
        ],
    )
    .await;
    // The orders gateway turns the request away (no API key): a span on each side of the hop.
    let r = get(&gw.url("/orders/42")).await.expect("request");
    assert_eq!(r.status, 401, "{}", r.text());
    gw.terminate();
    assert_eq!(gw.wait_exit(Duration::from_secs(15)), Some(0), "graceful exit; log:\n{}", gw.log_text());

    let spans = receiver.spans();
    let routed = |service: &str| -> Vec<Exported> {
        spans.iter().filter(|e| e.service == service && e.is_server() && e.attr("url.path").as_deref() == Some("/orders/42")).cloned().collect()
    };
    let edge = routed("edge");
    let orders = routed("orders");
    assert_eq!((edge.len(), orders.len()), (1, 1), "one server span per gateway: {spans:#?}");
    let hop = spans
        .iter()
        .find(|e| e.service == "edge" && e.is_client() && e.parent_id() == edge[0].span_id())
        .unwrap_or_else(|| panic!("the edge's client span for the local call: {spans:#?}"));
    assert_eq!(hop.trace_id(), edge[0].trace_id());
    assert_eq!(orders[0].trace_id(), edge[0].trace_id(), "one trace across the hop");
    assert_eq!(orders[0].parent_id(), hop.span_id(), "the orders gateway's span is a child of the hop");
    assert_eq!(orders[0].attr("http.response.status_code").as_deref(), Some("401"));
    assert!(backend.seen().is_empty());
}
