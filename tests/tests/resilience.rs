//! The resilience example (specs/resilience) in front of real upstreams on loopback that fail
//! on purpose: failover and ejection, weighted splits, per-route timeouts, retries and their
//! budget, active health checks, readiness and per-upstream metrics.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use specgate_tests::{Gateway, Upstream, free_port, gateway_binary, get, send};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// An upstream whose behaviour the test changes while it runs. It counts every accepted
/// connection, can close connections without answering, answer slowly, answer with a given
/// status (`/healthz` has its own), and stop listening altogether.
struct Scripted {
    addr: SocketAddr,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

#[derive(Default)]
struct State {
    name: String,
    accepts: AtomicUsize,
    /// Requests answered (health checks not included).
    answered: AtomicUsize,
    health_checks: AtomicUsize,
    /// Close this many of the next connections after reading the request, without answering.
    close_next: AtomicUsize,
    /// Close every connection after reading the request, without answering.
    close_all: AtomicBool,
    delay_ms: AtomicU64,
    /// Status of ordinary answers (0: 200).
    status: AtomicU16,
    /// Status of `/healthz` (0: 200).
    health_status: AtomicU16,
    /// Methods and bodies of answered requests.
    bodies: Mutex<Vec<(String, Bytes)>>,
}

impl Scripted {
    async fn start(name: &str) -> Scripted {
        Self::start_on(name, 0, Arc::new(State { name: name.to_owned(), ..State::default() })).await
    }

    async fn start_on(name: &str, port: u16, state: Arc<State>) -> Scripted {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap_or_else(|e| panic!("bind {name}: {e}"));
        let addr = listener.local_addr().expect("upstream address");
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (st, conns) = (state.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                st.accepts.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                let task = tokio::spawn(serve(stream, st));
                conns.lock().expect("connections").push(task);
            }
        });
        Scripted { addr, state, accept: Some(accept), connections }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn accepts(&self) -> usize {
        self.state.accepts.load(Ordering::SeqCst)
    }

    fn answered(&self) -> usize {
        self.state.answered.load(Ordering::SeqCst)
    }

    /// Stops listening and closes every open connection (a crashed process).
    fn stop(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        for c in self.connections.lock().expect("connections").drain(..) {
            c.abort();
        }
    }

    /// Closes the open connections (keep-alive ones included) but keeps listening.
    fn drop_connections(&self) {
        for c in self.connections.lock().expect("connections").drain(..) {
            c.abort();
        }
    }

    /// Listens again on the same port with the same counters.
    async fn restart(mut self) -> Scripted {
        self.stop();
        let (name, port, state) = (self.state.name.clone(), self.addr.port(), self.state.clone());
        Self::start_on(&name, port, state).await
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(mut stream: TcpStream, st: Arc<State>) {
    let close = st.close_all.load(Ordering::SeqCst)
        || st.close_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    if close {
        // Read the request (head and declared body), then hang up without a word.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await;
            let Ok(Ok(n)) = read else { break };
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    break;
                }
            }
        }
        return;
    }
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let st = st.clone();
        async move {
            let path = req.uri().path().to_owned();
            let method = req.method().to_string();
            if path == "/healthz" {
                st.health_checks.fetch_add(1, Ordering::SeqCst);
                let status = match st.health_status.load(Ordering::SeqCst) {
                    0 => 200,
                    s => s,
                };
                let mut resp = hyper::Response::new(Full::new(Bytes::from("health")));
                *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
                return Ok::<_, std::convert::Infallible>(resp);
            }
            let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            let delay = st.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            st.answered.fetch_add(1, Ordering::SeqCst);
            st.bodies.lock().expect("bodies").push((method, body));
            let status = match st.status.load(Ordering::SeqCst) {
                0 => 200,
                s => s,
            };
            let mut resp = hyper::Response::new(Full::new(Bytes::from(format!("{{\"upstream\":\"{}\",\"path\":\"{path}\"}}", st.name))));
            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
            resp.headers_mut().insert("content-type", "application/json".parse().expect("static header"));
            Ok(resp)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A loopback URL nothing listens on (connections are refused).
fn refused_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

async fn gateway(env: &[(&str, String)]) -> Gateway {
    let mut all: Vec<(&str, String)> = vec![
        ("CATALOG_STABLE_URL", refused_url()),
        ("CATALOG_CANARY_URL", refused_url()),
        ("INVENTORY_A_URL", refused_url()),
        ("INVENTORY_B_URL", refused_url()),
        ("PRICING_URL", refused_url()),
        ("SEARCH_A_URL", refused_url()),
        ("SEARCH_B_URL", refused_url()),
        ("METRICS_PATH", "/__specgate/metrics".to_owned()),
    ];
    for (k, v) in env {
        all.retain(|(name, _)| name != k);
        all.push((k, v.clone()));
    }
    Gateway::start(&gateway_binary("resilience"), &all).await
}

/// The metrics label of the upstream at `addr`.
fn up(addr: SocketAddr) -> String {
    format!("upstream=\"http://{addr}\"")
}

/// The value of the metrics sample whose line starts with `name{` and contains every label.
async fn metric(gw: &Gateway, name: &str, labels: &[&str]) -> Option<f64> {
    let text = get(&gw.url("/__specgate/metrics")).await.ok()?.text();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn weighted_split_is_exact() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let gw = gateway(&[("CATALOG_STABLE_URL", stable.url()), ("CATALOG_CANARY_URL", format!("{}/", canary.url()))]).await;
    for i in 0..200 {
        let r = get(&gw.url(&format!("/products/items/{i}?full=1"))).await.expect("request");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Smooth weighted round-robin is deterministic: 90/10 is exactly 180 and 20 of 200.
    assert_eq!((stable.seen().len(), canary.seen().len()), (180, 20));
    assert!(canary.seen().iter().all(|s| s.target.starts_with("/products/items/") && s.target.ends_with("?full=1")), "path and query forwarded");
    // The canary's requests are spread over the run, not bunched: one in every ten.
    let first: Vec<u64> = canary.seen().iter().take(3).map(|s| s.target[16..s.target.len() - 7].parse().unwrap_or(0)).collect();
    assert!(first.windows(2).all(|w| w[1] - w[0] == 10), "{first:?}");
}

#[tokio::test]
async fn failover_ejects_a_dead_replica_and_readmits_it_after_the_cooldown() {
    let a = Scripted::start("a").await;
    let b = Scripted::start("b").await;
    let gw = gateway(&[("INVENTORY_A_URL", a.url()), ("INVENTORY_B_URL", b.url())]).await;

    for _ in 0..10 {
        let r = get(&gw.url("/inventory/stock/1")).await.expect("request");
        assert_eq!(r.status, 200);
    }
    assert_eq!((a.answered(), b.answered()), (5, 5), "equal weights: round-robin");

    // A breaks: its connections drop and new ones are closed without an answer.
    a.state.close_all.store(true, Ordering::SeqCst);
    a.drop_connections();
    let accepts_before = a.accepts();
    for _ in 0..10 {
        let r = get(&gw.url("/inventory/stock/2")).await.expect("request");
        assert_eq!(r.status, 200, "failed over: {}", r.text());
        assert!(r.text().contains("\"b\""));
    }
    let tried = a.accepts() - accepts_before;
    assert!((1..=3).contains(&tried), "A is tried until 2 consecutive failures eject it: {tried} connections");
    assert_eq!(metric(&gw, "specgate_upstream_target_ejections_total", &[&up(a.addr)]).await, Some(1.0));
    assert_eq!(metric(&gw, "specgate_upstream_target_ejected", &[&up(a.addr)]).await, Some(1.0));
    // Ejected: no connection attempt at all for the rest of the cool-down (1 s).
    let ejected_at = a.accepts();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(600) {
        let r = get(&gw.url("/inventory/stock/3")).await.expect("request");
        assert_eq!(r.status, 200);
    }
    assert_eq!(a.accepts(), ejected_at, "an ejected upstream gets no connection attempts");

    // A recovers; once the cool-down has passed it is back in the rotation.
    a.state.close_all.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let answered = a.answered();
    for _ in 0..10 {
        let r = get(&gw.url("/inventory/stock/4")).await.expect("request");
        assert_eq!(r.status, 200);
    }
    assert!(a.answered() - answered >= 4, "re-admitted: A answered {} of 10", a.answered() - answered);
    assert_eq!(metric(&gw, "specgate_upstream_target_ejected", &[&up(a.addr)]).await, Some(0.0));

    // A crashes outright (nothing listens): still every request succeeds.
    let mut a = a;
    a.stop();
    for _ in 0..10 {
        let r = get(&gw.url("/inventory/stock/5")).await.expect("request");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // And it comes back on the same port: after the (doubled, 2 s) cool-down it serves again.
    let a = a.restart().await;
    let answered = a.answered();
    let deadline = Instant::now() + Duration::from_secs(6);
    while a.answered() == answered && Instant::now() < deadline {
        let r = get(&gw.url("/inventory/stock/6")).await.expect("request");
        assert_eq!(r.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(a.answered() > answered, "re-admitted after the restart");
    let retries = metric(&gw, "specgate_upstream_target_retries_total", &[&up(b.addr)]).await.unwrap_or(0.0);
    assert!(retries >= 2.0, "the failed-over attempts are counted as retries on B: {retries}");
}

#[tokio::test]
async fn posts_fail_over_only_when_nothing_was_sent() {
    let b = Scripted::start("b").await;
    let pricing = Scripted::start("pricing").await;
    // Replica A refuses connections: a POST that met it was never sent, so it goes to B.
    let gw = gateway(&[("INVENTORY_A_URL", refused_url()), ("INVENTORY_B_URL", b.url()), ("PRICING_URL", pricing.url())]).await;
    for i in 0..6 {
        let body = format!("{{\"reserve\":{i}}}");
        let r = send("POST", &gw.url("/inventory/reservations"), &[("content-type", "application/json")], body.clone()).await.expect("request");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let bodies = b.state.bodies.lock().expect("bodies").clone();
    let sent: Vec<String> = bodies.iter().map(|(m, b)| format!("{m} {}", String::from_utf8_lossy(b))).collect();
    let want: Vec<String> = (0..6).map(|i| format!("POST {{\"reserve\":{i}}}")).collect();
    assert_eq!(sent, want, "every reservation reached B exactly once, body intact");

    // The pricing service reads a POST and hangs up: the request was sent, so no retry.
    pricing.state.close_next.store(1, Ordering::SeqCst);
    let r = send("POST", &gw.url("/quotes"), &[("content-type", "application/json")], r#"{"sku":"A-1"}"#).await.expect("request");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pricing.accepts(), 1, "the POST was not sent again");
    assert_eq!(pricing.answered(), 0);

    // The same failure on a GET: idempotent, so it is retried and succeeds.
    pricing.state.close_next.store(1, Ordering::SeqCst);
    let r = get(&gw.url("/quotes/q-7")).await.expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/v1/quotes/q-7");
    assert_eq!(pricing.accepts(), 3, "one failed attempt, one retry");
    assert_eq!(metric(&gw, "specgate_upstream_retries_total", &["route=\"getQuote\""]).await, Some(1.0));
    assert_eq!(metric(&gw, "specgate_upstream_retries_total", &["route=\"createQuote\""]).await, Some(0.0));
}

#[tokio::test]
async fn retry_budget_stops_retries_when_everything_fails() {
    let pricing = Scripted::start("pricing").await;
    pricing.state.close_all.store(true, Ordering::SeqCst);
    let gw = gateway(&[("PRICING_URL", pricing.url())]).await;
    let requests = 40;
    for i in 0..requests {
        let r = get(&gw.url(&format!("/quotes/q-{i}"))).await.expect("request");
        assert_eq!(r.status, 502, "{}", r.text());
    }
    let attempts = pricing.accepts();
    // Up to 2 retries each would be 120 attempts. The budget allows the reserve of 10
    // retries, then 20 % of the requests: 40 + 10 + 8 at most.
    assert!(attempts > requests && attempts <= requests + 10 + requests / 5, "{attempts} attempts for {requests} requests");
    let retries = metric(&gw, "specgate_upstream_retries_total", &["route=\"getQuote\""]).await;
    assert_eq!(retries, Some((attempts - requests) as f64));
}

#[tokio::test]
async fn per_route_timeouts_answer_504_quickly_while_default_routes_wait() {
    let pricing = Scripted::start("pricing").await;
    pricing.state.delay_ms.store(1500, Ordering::SeqCst);
    let gw = gateway(&[("PRICING_URL", pricing.url())]).await;
    let quick = async {
        let started = Instant::now();
        let r = get(&gw.url("/quotes/q-1")).await.expect("request");
        (r, started.elapsed())
    };
    let slow = async {
        let started = Instant::now();
        let r = get(&gw.url("/reports/daily")).await.expect("request");
        (r, started.elapsed())
    };
    let ((quick, quick_took), (slow, slow_took)) = tokio::join!(quick, slow);
    assert_eq!(quick.status, 504, "{}", quick.text());
    assert_eq!(quick.header("content-type"), Some("application/problem+json"));
    assert!(quick_took >= Duration::from_millis(450) && quick_took < Duration::from_millis(1200), "timeoutMs 500: took {quick_took:?}");
    assert_eq!(slow.status, 200, "default timeout (30 s): {}", slow.text());
    assert!(slow_took >= Duration::from_millis(1500));
    assert_eq!(slow.json()["path"], "/reports/daily");
}

#[tokio::test]
async fn per_route_connect_timeout_bounds_an_upstream_that_accepts_nothing() {
    // A listener whose accept queue is full: the kernel drops further SYNs, so connecting
    // hangs until the connect timeout.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("address")).expect("bind");
    let addr = socket.local_addr().expect("address");
    let listener = socket.listen(0).expect("listen");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            fillers.push(s);
        }
    }
    let gw = gateway(&[("PRICING_URL", format!("http://{addr}"))]).await;
    let started = Instant::now();
    let r = get(&gw.url("/quotes/q-1")).await.expect("request");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    // connectTimeoutMs 250 with timeoutMs 500: the global connect timeout (10 s) is not used.
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    drop((listener, fillers));
}

#[tokio::test]
async fn active_health_checks_take_an_unhealthy_upstream_out_before_clients_see_it() {
    let a = Scripted::start("a").await;
    let b = Scripted::start("b").await;
    // B is down for maintenance: its health check and everything else answer 503.
    b.state.health_status.store(503, Ordering::SeqCst);
    b.state.status.store(503, Ordering::SeqCst);
    let gw = gateway(&[("SEARCH_A_URL", a.url()), ("SEARCH_B_URL", b.url())]).await;
    let b_label = up(b.addr);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&gw, "specgate_upstream_target_healthy", &[&b_label]).await != Some(0.0) {
        assert!(Instant::now() < deadline, "B was never found unhealthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for path in ["/search?q=shoes", "/search/suggest?q=sh"] {
        for _ in 0..10 {
            let r = get(&gw.url(path)).await.expect("request");
            assert_eq!(r.status, 200, "no client request fails: {}", r.text());
            assert_eq!(r.json()["upstream"], "a");
        }
    }
    assert_eq!(b.answered(), 0, "B got health checks only");
    assert!(b.state.health_checks.load(Ordering::SeqCst) >= 2);
    let probes = a.state.health_checks.load(Ordering::SeqCst);
    assert!(probes >= 2, "A is probed too");

    // B is back: two passed probes later it takes its share again.
    b.state.health_status.store(200, Ordering::SeqCst);
    b.state.status.store(200, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&gw, "specgate_upstream_target_healthy", &[&b_label]).await != Some(1.0) {
        assert!(Instant::now() < deadline, "B never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..10 {
        let r = get(&gw.url("/search?q=boots")).await.expect("request");
        assert_eq!(r.status, 200);
    }
    assert_eq!(b.answered(), 5, "round-robin again");
    // Both routes share one set of probes: about one probe per interval (250 ms), not two.
    let before = a.state.health_checks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let per_second = a.state.health_checks.load(Ordering::SeqCst) - before;
    assert!((2..=6).contains(&per_second), "{per_second} probes of A in one second");
}

#[tokio::test]
async fn readiness_checks_every_upstream_of_a_set() {
    let stable = Upstream::start("stable").await;
    let canary_port = free_port();
    let pricing = Scripted::start("pricing").await;
    let a = Scripted::start("a").await;
    let b = Scripted::start("b").await;
    let env = [
        ("READINESS_CHECK_UPSTREAMS", "on".to_owned()),
        ("CATALOG_STABLE_URL", stable.url()),
        ("CATALOG_CANARY_URL", format!("http://127.0.0.1:{canary_port}")),
        ("INVENTORY_A_URL", a.url()),
        ("INVENTORY_B_URL", b.url()),
        ("PRICING_URL", pricing.url()),
        ("SEARCH_A_URL", a.url()),
        ("SEARCH_B_URL", b.url()),
    ];
    let gw = gateway(&env).await;
    let r = get(&gw.url("/__specgate/ready")).await.expect("request");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains(&format!("upstream 127.0.0.1:{canary_port}")), "names the canary: {}", r.text());
    let canary = Upstream::start_on("canary", canary_port).await;
    let r = get(&gw.url("/__specgate/ready")).await.expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    drop(canary);
}
