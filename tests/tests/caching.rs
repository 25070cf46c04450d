//! The caching example: responses served from the gateway's cache without reaching the
//! upstream (which counts what it receives), entries scoped per caller and per configured
//! header, expiry, what is never stored, single flight for concurrent misses, streamed bodies,
//! and two gateway processes sharing entries through a real Redis (and surviving its loss).

use std::time::Duration;

use bytes::Bytes;
use specgate_tests::redis::RedisServer;
use specgate_tests::{Gateway, Got, Upstream, gateway_binary, get, send};

async fn gateway(api: &Upstream, extra: &[(&str, String)]) -> Gateway {
    let mut env = vec![("API_URL", api.url()), ("CACHE_ID", "v1".to_owned())];
    env.extend(extra.iter().cloned());
    Gateway::start(&gateway_binary("caching"), &env).await
}

/// Requests the upstream received for `target`: exactly this path and query, or, when
/// `target` has no query, this path with any query.
fn received(api: &Upstream, target: &str) -> usize {
    api.seen()
        .iter()
        .filter(|s| s.target == target || (!target.contains('?') && s.target.split('?').next() == Some(target)))
        .count()
}

async fn fetch(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Got {
    send("GET", &gw.url(path), headers, Bytes::new()).await.expect("request")
}

#[tokio::test]
async fn a_second_get_is_served_from_the_cache_with_age_and_cache_status() {
    let api = Upstream::start("api").await;
    let gw = gateway(&api, &[]).await;
    let first = fetch(&gw, "/items/a?x=1", &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("cache-status"), Some("specgate; fwd=miss; stored"));
    assert_eq!(first.header("x-upstream-seq"), Some("1"));
    assert!(first.header("age").is_none());

    let hit = fetch(&gw, "/items/a?x=1", &[]).await;
    assert_eq!(hit.status, 200);
    assert_eq!(hit.header("cache-status"), Some("specgate; hit"));
    assert_eq!(hit.header("x-upstream-seq"), Some("1"), "the stored response, not a new one");
    assert_eq!(hit.body, first.body);
    assert_eq!(hit.header("content-type"), Some("application/json"));
    assert!(hit.header("age").and_then(|a| a.parse::<u64>().ok()).is_some_and(|a| a <= 1), "{:?}", hit.header("age"));
    assert_ne!(hit.header("x-request-id"), first.header("x-request-id"), "each response has its own request id");
    assert_eq!(received(&api, "/items/a"), 1, "the hit never reached the upstream");

    // Age counts the seconds since the response was stored.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = fetch(&gw, "/items/a?x=1", &[]).await;
    assert!(later.header("age").and_then(|a| a.parse::<u64>().ok()).is_some_and(|a| a >= 1), "{:?}", later.header("age"));

    // Another query, or the same one written differently, is another request.
    assert_eq!(fetch(&gw, "/items/a?x=2", &[]).await.header("x-upstream-seq"), Some("2"));
    assert_eq!(fetch(&gw, "/items/a?x=1&", &[]).await.header("x-upstream-seq"), Some("3"));
    assert_eq!(received(&api, "/items/a"), 3);
}

#[tokio::test]
async fn authorization_and_configured_headers_select_entries() {
    let api = Upstream::start("api").await;
    let gw = gateway(&api, &[]).await;

    // Default: each Authorization value has its own entries; none is one more.
    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    let a1 = fetch(&gw, "/items/me", &alice).await;
    let b1 = fetch(&gw, "/items/me", &bob).await;
    let none = fetch(&gw, "/items/me", &[]).await;
    assert_ne!(a1.header("x-upstream-seq"), b1.header("x-upstream-seq"));
    assert_eq!(fetch(&gw, "/items/me", &alice).await.header("x-upstream-seq"), a1.header("x-upstream-seq"));
    assert_eq!(fetch(&gw, "/items/me", &bob).await.header("x-upstream-seq"), b1.header("x-upstream-seq"));
    assert_eq!(fetch(&gw, "/items/me", &[]).await.header("x-upstream-seq"), none.header("x-upstream-seq"));
    assert_eq!(received(&api, "/items/me"), 3);

    // A configured header: one entry per value (and one without it).
    for (tenant, expected) in [(Some("t1"), 1), (Some("t2"), 2), (Some("t1"), 2), (None, 3), (None, 3), (Some("t2"), 3)] {
        let headers: Vec<(&str, &str)> = tenant.map(|t| vec![("x-tenant", t)]).unwrap_or_default();
        fetch(&gw, "/tenant/report", &headers).await;
        assert_eq!(received(&api, "/tenant/report"), expected, "after tenant {tenant:?}");
    }

    // dangerouslyIgnoreAuthorizationHeader: callers share entries.
    let a = fetch(&gw, "/shared/catalog", &alice).await;
    let b = fetch(&gw, "/shared/catalog", &bob).await;
    assert_eq!(b.header("cache-status"), Some("specgate; hit"));
    assert_eq!(a.header("x-upstream-seq"), b.header("x-upstream-seq"));
    assert_eq!(received(&api, "/shared/catalog"), 1);
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let api = Upstream::start("api").await;
    let gw = gateway(&api, &[]).await;
    fetch(&gw, "/short/x", &[]).await;
    assert_eq!(fetch(&gw, "/short/x", &[]).await.header("cache-status"), Some("specgate; hit"));
    assert_eq!(received(&api, "/short/x"), 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let again = fetch(&gw, "/short/x", &[]).await;
    assert_eq!(again.header("cache-status"), Some("specgate; fwd=miss; stored"));
    assert_eq!(again.header("x-upstream-seq"), Some("2"));
    assert_eq!(received(&api, "/short/x"), 2);
}

#[tokio::test]
async fn responses_that_must_not_be_stored_are_not() {
    let api = Upstream::start("api").await;
    let gw = gateway(&api, &[]).await;
    let cases = [
        ("/items/no-store?h-cache-control=no-store", 200, "detail=no-store"),
        ("/items/private?h-cache-control=private%2C%20max-age%3D60", 200, "detail=private"),
        ("/items/cookie?h-set-cookie=session%3Dabc", 200, "detail=set-cookie"),
        ("/items/status/500", 500, "detail=status"),
        ("/items/status/201", 201, "detail=status"),
        ("/shared/status/404", 404, "detail=status"),
    ];
    for (path, status, detail) in cases {
        for round in 1..=2 {
            let r = fetch(&gw, path, &[]).await;
            assert_eq!(r.status, status, "{path}");
            let cs = r.header("cache-status").unwrap_or_default();
            assert!(cs.starts_with("specgate; fwd=miss") && cs.ends_with(detail), "{path}: {cs}");
            assert_eq!(received(&api, path), round, "{path} reached the upstream every time");
        }
    }
    // Statuses in the default list are stored, errors and redirects included.
    for path in ["/items/status/404", "/items/status/410", "/items/redirect"] {
        let first = fetch(&gw, path, &[]).await;
        let second = fetch(&gw, path, &[]).await;
        assert_eq!(first.status, second.status);
        assert_eq!(second.header("cache-status"), Some("specgate; hit"), "{path}");
        assert_eq!(second.header("location"), first.header("location"));
        assert_eq!(received(&api, path), 1, "{path}");
    }
}

#[tokio::test]
async fn methods_outside_cache_http_methods_pass_through() {
    let api = Upstream::start("api").await;
    let gw = gateway(&api, &[]).await;
    for round in 1..=2 {
        let r = send("POST", &gw.url("/items/orders"), &[], "{\"n\":1}").await.expect("request");
        assert_eq!(r.status, 200);
        assert!(r.header("cache-status").is_none(), "untouched: {:?}", r.header("cache-status"));
        assert_eq!(received(&api, "/items/orders"), round);
    }
    assert_eq!(api.last().body, Bytes::from_static(b"{\"n\":1}"));

    // Where POST is listed, the body is part of the key.
    let post = async |body: &'static str| send("POST", &gw.url("/versioned/search"), &[], body).await.expect("request");
    let q1 = post("{\"q\":1}").await;
    assert_eq!(post("{\"q\":1}").await.header("x-upstream-seq"), q1.header("x-upstream-seq"));
    let q2 = post("{\"q\":2}").await;
    assert_ne!(q2.header("x-upstream-seq"), q1.header("x-upstream-seq"));
    assert_eq!(received(&api, "/versioned/search"), 2);
    assert_eq!(api.last().body, Bytes::from_static(b"{\"q\":2}"), "a miss forwards the body");
}

#[tokio::test]
async fn concurrent_misses_go_upstream_once() {
    let api = Upstream::start("api").await;
    let gw = gateway(&api, &[]).await;
    let url = gw.url("/items/slow/300");
    let tasks: Vec<_> = (0..20).map(|_| tokio::spawn(get_owned(url.clone()))).collect();
    let mut statuses = Vec::new();
    for t in tasks {
        let r = t.await.expect("join");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-upstream-seq"), Some("1"));
        statuses.push(r.header("cache-status").unwrap_or_default().to_owned());
    }
    assert_eq!(received(&api, "/items/slow/300"), 1, "20 concurrent misses, one upstream request");
    assert_eq!(statuses.iter().filter(|s| s.as_str() == "specgate; fwd=miss; stored").count(), 1, "{statuses:?}");

    // When the first response cannot be stored, the others go upstream on their own.
    let url = gw.url("/items/slow/200?h-cache-control=no-store");
    let tasks: Vec<_> = (0..5).map(|_| tokio::spawn(get_owned(url.clone()))).collect();
    for t in tasks {
        assert_eq!(t.await.expect("join").status, 200);
    }
    assert_eq!(received(&api, "/items/slow/200"), 5);
}

async fn get_owned(url: String) -> Got {
    get(&url).await.expect("request")
}

#[tokio::test]
async fn bodies_stream_while_they_are_stored_and_large_ones_are_not_stored() {
    let api = Upstream::start("api").await;
    let gw = gateway(&api, &[("CACHE_MAX_ENTRY_BYTES", "4096".to_owned())]).await;

    // The first chunk reaches the client before the upstream sends the second.
    let uri: hyper::Uri = gw.url("/items/stream").parse().expect("uri");
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
    api.release();
    assert_eq!(body.collect().await.expect("rest").to_bytes(), Bytes::from_static(b"second"));
    // The whole body was stored.
    let hit = fetch(&gw, "/items/stream", &[]).await;
    assert_eq!(hit.header("cache-status"), Some("specgate; hit"));
    assert_eq!(hit.text(), "first;second");
    assert_eq!(received(&api, "/items/stream"), 1);

    // Above CACHE_MAX_ENTRY_BYTES: passed through whole, not stored.
    for round in 1..=2 {
        let r = fetch(&gw, "/items/bytes/10000", &[]).await;
        assert_eq!(r.body.len(), 10000);
        assert_eq!(r.header("cache-status"), Some("specgate; fwd=miss; detail=too-large"));
        assert_eq!(received(&api, "/items/bytes/10000"), round);
    }
    fetch(&gw, "/items/bytes/1000", &[]).await;
    let small = fetch(&gw, "/items/bytes/1000", &[]).await;
    assert_eq!(small.body.len(), 1000);
    assert_eq!(received(&api, "/items/bytes/1000"), 1);
}

/// Two gateway processes on one Redis: what one stored, the other serves; a different
/// cacheId starts from an empty cache.
#[tokio::test]
async fn replicas_share_entries_through_redis() {
    let redis = RedisServer::start();
    let api = Upstream::start("api").await;
    let store = [("CACHE_REDIS_URL", redis.url.clone())];
    let a = gateway(&api, &store).await;
    let b = gateway(&api, &store).await;

    let first = fetch(&a, "/items/shared-entry?page=1", &[("authorization", "Bearer k")]).await;
    assert_eq!(first.header("cache-status"), Some("specgate; fwd=miss; stored"));
    // The store completes right after the body; allow it a moment.
    let mut other = fetch(&b, "/items/shared-entry?page=1", &[("authorization", "Bearer k")]).await;
    for _ in 0..20 {
        if other.header("cache-status") == Some("specgate; hit") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        other = fetch(&b, "/items/shared-entry?page=1", &[("authorization", "Bearer k")]).await;
    }
    assert_eq!(other.header("cache-status"), Some("specgate; hit"), "replica b serves what a stored");
    assert_eq!(other.body, first.body);
    assert_eq!(other.header("x-upstream-seq"), first.header("x-upstream-seq"));
    assert_eq!(received(&api, "/items/shared-entry"), 1);
    // Another caller is still apart, across replicas too.
    assert_eq!(fetch(&b, "/items/shared-entry?page=1", &[]).await.header("cache-status"), Some("specgate; fwd=miss; stored"));

    // Cache busting: a replica with another CACHE_ID does not see the entries of v1.
    fetch(&a, "/versioned/list", &[]).await;
    assert_eq!(fetch(&b, "/versioned/list", &[]).await.header("cache-status"), Some("specgate; hit"));
    let c = gateway(&api, &[("CACHE_REDIS_URL", redis.url.clone()), ("CACHE_ID", "v2".to_owned())]).await;
    assert_eq!(fetch(&c, "/versioned/list", &[]).await.header("cache-status"), Some("specgate; fwd=miss; stored"));
    assert_eq!(received(&api, "/versioned/list"), 2);
}

/// Redis down: every request is still answered (from the upstream); when Redis is back,
/// caching resumes without a restart.
#[tokio::test]
async fn requests_are_answered_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let api = Upstream::start("api").await;
    let gw = gateway(&api, &[("CACHE_REDIS_URL", redis.url.clone())]).await;
    fetch(&gw, "/items/before", &[]).await;
    assert_eq!(fetch(&gw, "/items/before", &[]).await.header("cache-status"), Some("specgate; hit"));
    assert_eq!(received(&api, "/items/before"), 1);

    redis.stop();
    for round in 1..=4 {
        let started = std::time::Instant::now();
        let path = format!("/items/during/{round}");
        let r = fetch(&gw, &path, &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("cache-status"), Some("specgate; fwd=miss; stored"));
        assert!(started.elapsed() < Duration::from_secs(5), "a dead Redis must not stall requests");
        assert_eq!(received(&api, &path), 1);
    }
    // Nothing reached Redis: once the in-flight store has failed, the next request is a miss.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(fetch(&gw, "/items/during/1", &[]).await.header("cache-status"), Some("specgate; fwd=miss; stored"));
    assert_eq!(received(&api, "/items/during/1"), 2);

    let _back = RedisServer::start_on(port);
    let mut hit = false;
    for i in 0..30 {
        let path = format!("/items/after/{i}");
        fetch(&gw, &path, &[]).await;
        // Longer than a store may take on a dead Redis: the second request asks Redis.
        tokio::time::sleep(Duration::from_millis(400)).await;
        if fetch(&gw, &path, &[]).await.header("cache-status") == Some("specgate; hit") {
            hit = true;
            break;
        }
    }
    assert!(hit, "caching resumed once Redis was back");
}
