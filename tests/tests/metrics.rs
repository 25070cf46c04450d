//! Prometheus metrics after known traffic: per-route status classes and latency, policy
//! rejections by reason, upstream connect errors, unmatched requests, on a separate listener
//! and on a path of the main one.

use specgate_tests::{Gateway, Upstream, free_port, gateway_binary, get, send};

/// The value of the sample whose line starts with `prefix` (labels included).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

fn route(label: &str, path: &str) -> String {
    format!("gateway=\"rate-limits\",route=\"{label}\",method=\"GET\",path=\"{path}\"")
}

#[tokio::test]
async fn metrics_count_known_traffic() {
    let api = Upstream::start("api").await;
    let metrics_port = free_port();
    let env = [
        ("API_URL", api.url()),
        ("METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
        ("METRICS_PATH", "/__specgate/metrics".to_owned()),
    ];
    let gw = Gateway::start(&gateway_binary("rate-limits"), &env).await;

    // 5 admitted, 2 rate limited.
    for _ in 0..7 {
        get(&gw.url("/limited/ip")).await.expect("request");
    }
    // 1 unauthenticated (basic auth), 1 authenticated.
    assert_eq!(get(&gw.url("/limited/user")).await.expect("request").status, 401);
    let r = send("GET", &gw.url("/limited/user"), &[("authorization", "Basic YTpwYQ==")], "").await.expect("request");
    assert_eq!(r.status, 200);
    // 2 that match no route.
    assert_eq!(get(&gw.url("/nowhere")).await.expect("request").status, 404);
    assert_eq!(get(&gw.url("/nowhere/else")).await.expect("request").status, 404);

    let r = get(&format!("http://127.0.0.1:{metrics_port}/metrics")).await.expect("metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain; version=0.0.4")));
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let ip = route("byIp", "/limited/ip");
    assert_eq!(sample(&text, &format!("specgate_requests_total{{{ip},status=\"2xx\"}}")), Some(5.0), "{text}");
    assert_eq!(sample(&text, &format!("specgate_requests_total{{{ip},status=\"4xx\"}}")), Some(2.0));
    assert_eq!(sample(&text, &format!("specgate_request_duration_seconds_count{{{ip}}}")), Some(7.0));
    assert_eq!(sample(&text, &format!("specgate_upstream_duration_seconds_count{{{ip}}}")), Some(5.0), "rejected requests never went upstream");
    let user = route("byUser", "/limited/user");
    assert_eq!(sample(&text, &format!("specgate_requests_total{{{user},status=\"4xx\"}}")), Some(1.0));
    assert_eq!(sample(&text, &format!("specgate_requests_total{{{user},status=\"2xx\"}}")), Some(1.0));
    let rej = |policy: &str, reason: &str| {
        sample(&text, &format!("specgate_policy_rejections_total{{gateway=\"rate-limits\",policy=\"{policy}\",reason=\"{reason}\"}}"))
    };
    assert_eq!(rej("per-ip", "rate_limited"), Some(2.0));
    assert_eq!(rej("partners", "unauthenticated"), Some(1.0));
    assert_eq!(sample(&text, "specgate_requests_total{gateway=\"rate-limits\",route=\"\",method=\"\",path=\"\",status=\"4xx\"}"), Some(2.0));
    assert_eq!(sample(&text, &format!("specgate_upstream_connect_errors_total{{{ip}}}")), Some(0.0));
    // Only the scrape itself is in flight on the main listener: none.
    assert_eq!(sample(&text, "specgate_requests_in_flight{gateway=\"rate-limits\"}"), Some(0.0));

    // The same numbers on the main listener's path (which is not itself a route).
    let r = get(&gw.url("/__specgate/metrics")).await.expect("metrics");
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(sample(&text, &format!("specgate_requests_total{{{ip},status=\"2xx\"}}")), Some(5.0));
    // This scrape is in flight while it renders.
    assert_eq!(sample(&text, "specgate_requests_in_flight{gateway=\"rate-limits\"}"), Some(1.0));
}

#[tokio::test]
async fn metrics_are_off_by_default() {
    let api = Upstream::start("api").await;
    let gw = Gateway::start(&gateway_binary("rate-limits"), &[("API_URL", api.url())]).await;
    assert_eq!(get(&gw.url("/__specgate/metrics")).await.expect("request").status, 404);
    assert_eq!(get(&gw.url("/metrics")).await.expect("request").status, 404);
}

#[tokio::test]
async fn unreachable_upstreams_are_counted_as_connect_errors() {
    // Nothing listens on this port.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let env = [("API_URL", dead), ("METRICS_PATH", "/__specgate/metrics".to_owned())];
    let gw = Gateway::start(&gateway_binary("rate-limits"), &env).await;
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/bench/plain")).await.expect("request").status, 502);
    }
    let text = String::from_utf8_lossy(&get(&gw.url("/__specgate/metrics")).await.expect("metrics").body).into_owned();
    let plain = route("benchPlain", "/bench/plain");
    assert_eq!(sample(&text, &format!("specgate_requests_total{{{plain},status=\"5xx\"}}")), Some(3.0), "{text}");
    assert_eq!(sample(&text, &format!("specgate_upstream_connect_errors_total{{{plain}}}")), Some(3.0));
    assert_eq!(sample(&text, &format!("specgate_upstream_timeouts_total{{{plain}}}")), Some(0.0));
    assert_eq!(sample(&text, &format!("specgate_upstream_duration_seconds_count{{{plain}}}")), None, "no answer, no upstream latency");
}
