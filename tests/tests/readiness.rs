//! The readiness endpoint follows the dependencies a gateway was configured with: a real Redis
//! going away and coming back, and upstreams that do not accept connections.

use std::time::Duration;

use specgate_tests::redis::RedisServer;
use specgate_tests::{Gateway, Upstream, free_port, gateway_binary, get};

async fn ready_status(gw: &Gateway) -> (u16, String) {
    let r = get(&gw.url("/__specgate/ready")).await.expect("request");
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

#[tokio::test]
async fn readiness_follows_redis() {
    let api = Upstream::start("api").await;
    let mut redis = RedisServer::start();
    let env = [("API_URL", api.url()), ("RATE_LIMIT_REDIS_URL", redis.url.clone())];
    let gw = Gateway::start(&gateway_binary("rate-limits"), &env).await;
    // The limiter's connection is made when the first policy is built at start-up.
    assert_eq!(ready_status(&gw).await, (200, "ready".to_owned()));
    redis.stop();
    let (status, body) = ready_status(&gw).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("rate limit Redis"), "{body}");
    // Liveness is unaffected.
    assert_eq!(get(&gw.url("/__zuplo/ping")).await.expect("ping").status, 200);
    let _back = RedisServer::start_on(redis.port);
    let mut ready = false;
    for _ in 0..60 {
        if ready_status(&gw).await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ready, "ready again once Redis is back, without a restart");
}

#[tokio::test]
async fn readiness_can_require_the_upstreams() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let gw = Gateway::start(&gateway_binary("rate-limits"), &[("API_URL", dead.clone())]).await;
    assert_eq!(ready_status(&gw).await.0, 200, "upstreams are not checked by default");
    let gw = Gateway::start(&gateway_binary("rate-limits"), &[("API_URL", dead), ("READINESS_CHECK_UPSTREAMS", "on".to_owned())]).await;
    let (status, body) = ready_status(&gw).await;
    assert_eq!(status, 503);
    assert!(body.contains("upstream 127.0.0.1:"), "{body}");
    let api = Upstream::start("api").await;
    let gw = Gateway::start(&gateway_binary("rate-limits"), &[("API_URL", api.url()), ("READINESS_CHECK_UPSTREAMS", "on".to_owned())]).await;
    assert_eq!(ready_status(&gw).await.0, 200);
}
