//! The rate-limits example: limits by IP, user, function and for everyone, in process and in a
//! real Redis shared by two gateway processes, including Redis going away and coming back.

use std::time::Duration;

use specgate_tests::redis::RedisServer;
use specgate_tests::{Gateway, Upstream, gateway_binary, get, send};

async fn gateway(api: &Upstream, extra: &[(&str, String)]) -> Gateway {
    let mut env = vec![("API_URL", api.url())];
    env.extend(extra.iter().cloned());
    Gateway::start(&gateway_binary("rate-limits"), &env).await
}

#[tokio::test]
async fn per_ip_limit_with_retry_after_that_is_never_early() {
    let api = Upstream::start("api").await;
    let gw = gateway(&api, &[]).await;
    for i in 0..5 {
        let r = get(&gw.url("/limited/ip")).await.expect("request");
        assert_eq!(r.status, 200, "request {i}");
        // Admitted responses (here the upstream's) carry the limit and what is left of it; t is
        // the seconds until the oldest counted request leaves the 3 s window.
        assert_eq!(r.header("ratelimit-policy"), Some("\"per-ip\";q=5;w=3"), "request {i}");
        let state = r.header("ratelimit").unwrap_or_default();
        assert!(state.starts_with(&format!("\"per-ip\";r={};t=", 4 - i)), "request {i}: {state}");
        let t: u64 = state.rsplit("t=").next().and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!((1..=3).contains(&t), "{state}");
    }
    let r = get(&gw.url("/limited/ip")).await.expect("request");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After in seconds");
    assert!((1..=3).contains(&retry), "the window is 3 s: {retry}");
    assert!(r.header("ratelimit-policy").is_some_and(|p| p.contains("q=5")), "{:?}", r.header("ratelimit-policy"));
    assert!(r.header("ratelimit").is_some());
    assert_eq!(api.seen().len(), 5, "rejected requests never reach the upstream");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(get(&gw.url("/limited/ip")).await.expect("request").status, 200, "allowed again once Retry-After has passed");
}

#[tokio::test]
async fn per_user_and_per_function_limits() {
    let api = Upstream::start("api").await;
    let gw = gateway(&api, &[]).await;
    let as_user = |u: &'static str| format!("Basic {}", if u == "a" { "YTpwYQ==" } else { "YjpwYg==" });
    for _ in 0..3 {
        let r = send("GET", &gw.url("/limited/user"), &[("authorization", &as_user("a"))], "").await.expect("request");
        assert_eq!(r.status, 200);
    }
    let r = send("GET", &gw.url("/limited/user"), &[("authorization", &as_user("a"))], "").await.expect("request");
    assert_eq!(r.status, 429, "user a is over its limit");
    let r = send("GET", &gw.url("/limited/user"), &[("authorization", &as_user("b"))], "").await.expect("request");
    assert_eq!(r.status, 200, "user b has its own counter");

    // Dynamic limits from custom code: gold gets 6, silver 2, no customer is not limited.
    let count = async |customer: Option<&str>, n: usize| {
        let mut ok = 0;
        for _ in 0..n {
            let headers: Vec<(&str, &str)> = customer.map(|c| vec![("x-customer", c)]).unwrap_or_default();
            if send("GET", &gw.url("/limited/function"), &headers, "").await.expect("request").status == 200 {
                ok += 1;
            }
        }
        ok
    };
    assert_eq!(count(Some("gold"), 8).await, 6);
    assert_eq!(count(Some("silver"), 4).await, 2);
    assert_eq!(count(None, 10).await, 10);
}

#[tokio::test]
async fn combined_policies_all_must_pass() {
    let api = Upstream::start("api").await;
    let gw = gateway(&api, &[]).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(&gw.url("/limited/combined")).await.expect("request").status);
    }
    assert_eq!(statuses, [200, 200, 429, 429], "the stricter of the two decides");
}

/// Two gateway processes on one Redis: over one window the total admitted equals the limit.
#[tokio::test]
async fn two_replicas_share_exact_counts_through_redis() {
    let mut redis = RedisServer::start();
    let api = Upstream::start("api").await;
    let store = [("RATE_LIMIT_REDIS_URL", redis.url.clone())];
    let a = gateway(&api, &store).await;
    let b = gateway(&api, &store).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let url = if i % 2 == 0 { a.url("/limited/all") } else { b.url("/limited/all") };
        tasks.push(tokio::spawn(async move { get(&url).await.map(|r| r.status).unwrap_or(0) }));
    }
    let mut admitted = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap_or(0) {
            200 => admitted += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((admitted, limited), (10, 30), "exactly requestsAllowed across both replicas");

    // Redis goes away: the default fails open, throwOnFailure answers 503.
    redis.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = get(&a.url("/limited/strict-store")).await.expect("request");
    assert_eq!(r.status, 503);
    let mut open = 0;
    for _ in 0..3 {
        if get(&b.url("/limited/ip")).await.expect("request").status == 200 {
            open += 1;
        }
    }
    assert_eq!(open, 3, "fail open while the store is unreachable");

    // Redis comes back on the same port: counting resumes without restarting the gateways.
    let back = RedisServer::start_on(redis.port);
    let mut statuses = Vec::new();
    // Bounded: the reconnect may take a moment, during which requests fail open.
    for _ in 0..60 {
        statuses.push(get(&a.url("/limited/all")).await.expect("request").status);
        if statuses.last() == Some(&429) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(statuses.last(), Some(&429), "limits apply again once Redis is back: {statuses:?}");
    drop(back);
}

/// quota-inbound per user: only listed statuses count, and over quota is a 429 whose
/// Retry-After is the rest of the (daily) cycle that the first call anchored.
#[tokio::test]
async fn daily_quota_counts_listed_statuses_and_rejects_until_the_cycle_ends() {
    let api = Upstream::start("api").await;
    let gw = gateway(&api, &[]).await;
    let call = async |user: &str, path: &str| {
        let auth = format!("Basic {}", if user == "a" { "YTpwYQ==" } else { "YjpwYg==" });
        send("GET", &gw.url(&format!("/quota/daily/{path}")), &[("authorization", &auth)], "").await.expect("request")
    };
    // Upstream failures are not counted ("200-299, 304"), however many.
    for _ in 0..5 {
        assert_eq!(call("a", "status/500").await.status, 500);
    }
    assert_eq!(call("a", "status/304").await.status, 304);
    assert_eq!(call("a", "ok").await.status, 200);
    assert_eq!(call("a", "status/201").await.status, 201);
    let r = call("a", "ok").await;
    assert_eq!(r.status, 429, "three counted requests use the daily allowance");
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After in seconds");
    assert!((86_390..=86_400).contains(&retry), "the rest of a day anchored moments ago: {retry}");
    assert!(r.text().contains("`requests` used 3 of 3"), "{}", r.text());
    assert_eq!(call("b", "ok").await.status, 200, "user b has a quota of its own");
    assert_eq!(api.seen().len(), 9, "rejected requests never reach the upstream");
}

/// quota-inbound by function with a custom meter set after the response by an outbound policy.
#[tokio::test]
async fn plan_quota_by_function_and_custom_meters() {
    let api = Upstream::start("api").await;
    let gw = gateway(&api, &[]).await;
    let call = async |plan: Option<&str>, tokens: &str| {
        let mut headers = vec![("x-tokens", tokens)];
        if let Some(p) = plan {
            headers.push(("x-plan", p));
        }
        send("GET", &gw.url("/quota/plan"), &headers, "").await.expect("request").status
    };
    // The free plan's own allowance: 2 requests.
    assert_eq!([call(Some("free"), "0").await, call(Some("free"), "0").await, call(Some("free"), "0").await], [200, 200, 429]);
    // The pro plan: 50 tokens; the request that crosses the allowance is admitted (its cost is
    // known only afterwards), the next is not.
    assert_eq!(call(Some("pro"), "30").await, 200);
    assert_eq!(call(Some("pro"), "19").await, 200);
    assert_eq!(call(Some("pro"), "10").await, 200);
    assert_eq!(call(Some("pro"), "1").await, 429);
    // No plan: no quota.
    for _ in 0..4 {
        assert_eq!(call(None, "100").await, 200);
    }
}

/// Quotas in Redis are shared by replicas; counting happens after the response, in the
/// background, so the test lets each count land before the next request.
#[tokio::test]
async fn two_replicas_share_a_quota_through_redis() {
    let redis = RedisServer::start();
    let api = Upstream::start("api").await;
    let store = [("RATE_LIMIT_REDIS_URL", redis.url.clone())];
    let a = gateway(&api, &store).await;
    let b = gateway(&api, &store).await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let gw = if i % 2 == 0 { &a } else { &b };
        statuses.push(send("GET", &gw.url("/quota/plan"), &[("x-plan", "free")], "").await.expect("request").status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(statuses, [200, 200, 429, 429], "the free plan's 2 requests across both replicas");
}

/// complex-rate-limit-inbound: a request counter and a token counter whose increments the
/// upstream reports on its response (read by an outbound policy). The request that takes
/// `tokens` over its limit is admitted (its cost is known only afterwards), the next is not.
#[tokio::test]
async fn complex_limits_count_tokens_reported_after_the_response() {
    let api = Upstream::start("api").await;
    let gw = gateway(&api, &[]).await;
    let call = async |path: &str| get(&gw.url(path)).await.expect("request");
    assert_eq!(call("/complex/tokens/60").await.status, 200);
    let r = call("/complex/tokens/45").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-tokens-used"), Some("45"));
    let r = call("/complex/tokens/1").await;
    assert_eq!(r.status, 429, "105 tokens of 100 used");
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(r.text().contains("`tokens` used 105 of 100"), "{}", r.text());
    let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After in seconds");
    assert!((1..=3).contains(&retry), "the window is 3 s: {retry}");
    assert_eq!(api.seen().len(), 2, "rejected requests never reach the upstream");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    // The requests counter (5 per window, 1 each by default) limits free requests too.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(call("/complex/free").await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);

    // Per customer through the identifier function: silver's requestsAllowed 2 replaces the
    // `requests` limit; tokens (50) are counted per customer.
    let per = async |customer: &str, path: &str| {
        send("GET", &gw.url(&format!("/complex-customer/{path}")), &[("x-customer", customer)], "").await.expect("request").status
    };
    assert_eq!([per("silver", "a").await, per("silver", "b").await, per("silver", "c").await], [200, 200, 429]);
    assert_eq!([per("gold", "tokens/50").await, per("gold", "tokens/1").await], [200, 429]);
}

/// Weighted counts in Redis are shared by replicas (recorded after the response, in the
/// background, so each count is given a moment to land).
#[tokio::test]
async fn two_replicas_share_complex_counters_through_redis() {
    let redis = RedisServer::start();
    let api = Upstream::start("api").await;
    let store = [("RATE_LIMIT_REDIS_URL", redis.url.clone())];
    let a = gateway(&api, &store).await;
    let b = gateway(&api, &store).await;
    let mut statuses = Vec::new();
    for (gw, path) in [(&a, "/complex/tokens/70"), (&b, "/complex/tokens/40"), (&a, "/complex/x"), (&b, "/complex/x")] {
        statuses.push(get(&gw.url(path)).await.expect("request").status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(statuses, [200, 200, 429, 429], "110 tokens across both replicas");
}

/// `mode: async` on two replicas sharing Redis: requests never wait for Redis, yet the total
/// admitted in a window stays within the documented bound (limit + one per replica for traffic
/// slower than a Redis round trip), and once Redis has answered both replicas reject.
#[tokio::test]
async fn async_mode_across_replicas_stays_within_its_bound() {
    let redis = RedisServer::start();
    let api = Upstream::start("api").await;
    let store = [("RATE_LIMIT_REDIS_URL", redis.url.clone())];
    let replicas = [gateway(&api, &store).await, gateway(&api, &store).await];
    let limit = 6;
    let started = std::time::Instant::now();
    let mut admitted = 0;
    let mut rejected_by = [0, 0];
    // Sequential, alternating between the replicas.
    for i in 0..16 {
        match get(&replicas[i % 2].url("/limited/async")).await.expect("request").status {
            200 => admitted += 1,
            429 => rejected_by[i % 2] += 1,
            other => panic!("unexpected status {other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!((limit..=limit + 2).contains(&admitted), "{admitted} admitted sequentially for a limit of {limit}");
    assert!(rejected_by[0] > 0 && rejected_by[1] > 0, "both replicas reject after Redis answered: {rejected_by:?}");
    // Then concurrent traffic over both: the verdicts already known, nothing more gets through.
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let url = replicas[i % 2].url("/limited/async");
            tokio::spawn(async move { (i % 2, get(&url).await.map(|r| r.status).unwrap_or(0)) })
        })
        .collect();
    for t in tasks {
        let (r, status) = t.await.unwrap_or((0, 0));
        match status {
            200 => admitted += 1,
            429 => rejected_by[r] += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(3), "the test must stay within one 3 s window");
    assert!(admitted <= limit + 2, "{admitted} admitted in one window for a limit of {limit}");
    assert!(rejected_by[0] >= 15 && rejected_by[1] >= 15, "{rejected_by:?}");
}
