//! The user-routing example: the seed's four user-based routing patterns, written in Rust,
//! each feeding `${context.custom.downstreamUrl}` into a rewrite.

use specgate_tests::{Gateway, Upstream, gateway_binary, send};

const ACME: &str = "Bearer sk_live_acme_0001";
const ACME_TEST: &str = "Bearer sk_test_acme_0001";
const WAYNE: &str = "Bearer sk_live_wayne_0001";
const STARK: &str = "Bearer sk_live_stark_0001";
const NOBODY: &str = "Bearer sk_live_nobody_0001";

async fn get_as(gw: &Gateway, path: &str, key: &str) -> specgate_tests::Got {
    send("GET", &gw.url(path), &[("authorization", key)], "").await.expect("request")
}

#[tokio::test]
async fn four_routing_patterns() {
    let sandbox = Upstream::start("sandbox").await;
    let production = Upstream::start("production").await;
    let shared = Upstream::start("shared").await;
    // Ports named in specs/user-routing/config/customers.json and dedicated-customers.json.
    let acme = Upstream::start_on("acme", 19301).await;
    let wayne = Upstream::start_on("wayne", 19302).await;
    let stark = Upstream::start_on("stark", 19303).await;
    let config = Upstream::start_with_body(
        "config",
        &format!(r#"[{{"customerId":"acme-corp","backendUrl":"{}"}},{{"customerId":"wayne-ent","backendUrl":"{}"}}]"#, wayne.url(), acme.url()),
    )
    .await;
    let gw = Gateway::start(
        &gateway_binary("user-routing"),
        &[
            ("SANDBOX_BACKEND_URL", sandbox.url()),
            ("PRODUCTION_BACKEND_URL", production.url()),
            ("MULTI_TENANT_BACKEND_URL", shared.url()),
            ("CUSTOMER_CONFIG_API_URL", format!("{}/customers", config.url())),
            ("CONFIG_API_TOKEN", "cfg-token".to_owned()),
        ],
    )
    .await;

    // 1. Environment routing from key metadata.
    assert_eq!(get_as(&gw, "/env/v1/charges/ch_1?expand=x", ACME_TEST).await.status, 200);
    assert_eq!(sandbox.last().target, "/charges/ch_1?expand=x");
    assert_eq!(get_as(&gw, "/env/v1/charges", ACME).await.status, 200);
    assert_eq!(production.last().target, "/charges");
    let r = get_as(&gw, "/env/v1/charges", NOBODY).await;
    assert_eq!(r.status, 500, "an unknown environment is an error of the policy");
    let r = get_as(&gw, "/env/v1/charges", "Bearer wrong").await;
    assert_eq!(r.status, 401);

    // 2a. Customer routing from the config file.
    assert_eq!(get_as(&gw, "/customers/v1/orders/1", ACME).await.status, 200);
    assert_eq!(acme.last().target, "/orders/1");
    assert_eq!(get_as(&gw, "/customers/v1/orders/2", WAYNE).await.status, 200);
    assert_eq!(wayne.last().target, "/orders/2");
    let r = get_as(&gw, "/customers/v1/orders/3", STARK).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["detail"], "Customer not configured");
    let r = get_as(&gw, "/customers/v1/orders/3", NOBODY).await;
    assert_eq!(r.status, 401);

    // 2b. Customer routing through the background loader (the config service swaps them).
    let before = config.seen().len();
    for _ in 0..5 {
        assert_eq!(get_as(&gw, "/dynamic/v1/orders/9", ACME).await.status, 200);
    }
    assert_eq!(wayne.last().target, "/orders/9");
    assert_eq!(config.seen().len() - before, 1, "the loader fetched the configuration once");
    assert_eq!(config.last().header("authorization"), Some("Bearer cfg-token"));
    assert_eq!(get_as(&gw, "/dynamic/v1/orders/10", STARK).await.status, 403);

    // 3. Hybrid: dedicated backend for stark, the shared one for the others.
    assert_eq!(get_as(&gw, "/hybrid/v1/reports", STARK).await.status, 200);
    assert_eq!(stark.last().target, "/reports");
    assert_eq!(get_as(&gw, "/hybrid/v1/reports", WAYNE).await.status, 200);
    assert_eq!(shared.last().target, "/reports");
}
