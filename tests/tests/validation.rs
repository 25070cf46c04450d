//! The validation example: request-validation-inbound and validate-json-schema-inbound against
//! a real upstream, on OpenAPI 3.0 and 3.1 documents.

use std::time::Duration;

use serde_json::Value;
use specgate_tests::{Gateway, Upstream, gateway_binary, get, raw_exchange, send};

async fn setup() -> (Upstream, Gateway) {
    let api = Upstream::start("api").await;
    let gw = Gateway::start(&gateway_binary("validation"), &[("API_URL", api.url())]).await;
    (api, gw)
}

/// `(in, name or pointer)` of every error of a 400 problem.
fn locations(body: &Value) -> Vec<(String, String)> {
    body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let place = e["name"].as_str().or(e["pointer"].as_str()).unwrap_or("").to_owned();
            let place = match (e["name"].as_str(), e["pointer"].as_str()) {
                (Some(n), Some(p)) => format!("{n}{p}"),
                _ => place,
            };
            (e["in"].as_str().unwrap_or("").to_owned(), place)
        })
        .collect()
}

const ORDER: &str = r#"{
  "customer": {"email": "ada@example.com", "name": null},
  "items": [{"sku": "ABC-1", "quantity": 2}],
  "note": null,
  "discount": 49.5
}"#;

#[tokio::test]
async fn valid_requests_reach_the_upstream_byte_identical() {
    let (api, gw) = setup().await;
    let r = send("POST", &gw.url("/orders"), &[("content-type", "application/json"), ("x-request-source", "web")], ORDER).await.expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = api.last();
    assert_eq!(seen.body, ORDER.as_bytes(), "the body is forwarded exactly as sent");
    assert_eq!(seen.header("content-length"), Some(ORDER.len().to_string().as_str()));

    let r = get(&gw.url("/orders?limit=10&status=open&status=shipped&fields=id,total&since=2024-02-29&paid=true")).await.expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(api.last().target, "/orders?limit=10&status=open&status=shipped&fields=id,total&since=2024-02-29&paid=true");

    let r = send("GET", &gw.url("/orders/7/items/1,2,3"), &[("x-api-version", "2")], "").await.expect("request");
    assert_eq!(r.status, 200, "{}", r.text());

    // A declared media type without a schema is accepted as it is.
    let r = send("POST", &gw.url("/orders"), &[("content-type", "text/csv")], "sku,quantity\nABC-1,2\n").await.expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(api.last().body, "sku,quantity\nABC-1,2\n".as_bytes());
}

#[tokio::test]
async fn body_violations_are_listed_with_pointers() {
    let (api, gw) = setup().await;
    let bad = r#"{"customer": {"email": "not-an-email"}, "items": [{"sku": "abc", "quantity": 0}], "discount": 50, "extra": 1}"#;
    let r = send("POST", &gw.url("/orders"), &[("content-type", "application/json")], bad).await.expect("request");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let body = r.json();
    let got = locations(&body);
    for want in ["/customer/email", "/items/0/sku", "/items/0/quantity", "/discount", ""] {
        assert!(got.iter().any(|(i, p)| i == "body" && p == want), "missing body error at {want:?}: {body}");
    }
    assert!(api.seen().is_empty(), "nothing reached the upstream");

    let r = send("POST", &gw.url("/orders"), &[("content-type", "application/json")], "{not json").await.expect("request");
    assert_eq!(r.status, 400);
    let r = send("POST", &gw.url("/orders"), &[("content-type", "application/json")], "").await.expect("request");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errors"][0]["message"], "the request body is required");
}

#[tokio::test]
async fn parameter_violations_name_query_path_and_header() {
    let (api, gw) = setup().await;
    let r = get(&gw.url("/orders?limit=0&status=lost&fields=a,b,c,d&since=2024-02-30&paid=yes")).await.expect("request");
    assert_eq!(r.status, 400, "{}", r.text());
    let got = locations(&r.json());
    for want in ["limit", "status/0", "fields", "since", "paid"] {
        assert!(got.contains(&("query".to_owned(), want.to_owned())), "missing query error {want}: {got:?}");
    }

    let r = send("GET", &gw.url("/orders/0/items/1,x"), &[("x-api-version", "3")], "").await.expect("request");
    assert_eq!(r.status, 400, "{}", r.text());
    let got = locations(&r.json());
    assert!(got.contains(&("path".to_owned(), "orderId".to_owned())), "{got:?}");
    assert!(got.contains(&("path".to_owned(), "ids/1".to_owned())), "{got:?}");
    assert!(got.contains(&("header".to_owned(), "x-api-version".to_owned())), "{got:?}");

    let r = get(&gw.url("/orders/1/items/1")).await.expect("request");
    assert_eq!(r.status, 400);
    assert!(r.json()["errors"][0]["message"].as_str().unwrap_or("").contains("required header parameter"), "{}", r.text());

    let r = send("POST", &gw.url("/orders"), &[("content-type", "application/json"), ("x-request-source", "fax")], ORDER).await.expect("request");
    assert_eq!(r.status, 400);
    assert_eq!(locations(&r.json()), vec![("header".to_owned(), "x-request-source".to_owned())]);
    assert!(api.seen().is_empty());
}

#[tokio::test]
async fn unsupported_media_type_is_415() {
    let (api, gw) = setup().await;
    let r = send("POST", &gw.url("/orders"), &[("content-type", "application/xml")], "<order/>").await.expect("request");
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(r.json()["detail"].as_str().unwrap_or("").contains("application/json"), "{}", r.text());
    assert!(api.seen().is_empty());
}

#[tokio::test]
async fn log_only_lets_invalid_requests_through_and_logs_them() {
    let (api, gw) = setup().await;
    let bad = r#"{"items": []}"#;
    let r = send("PUT", &gw.url("/orders/abc"), &[("content-type", "application/json"), ("authorization", "Bearer secret-token")], bad).await.expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(api.last().body, bad.as_bytes());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = gw.log_text();
        if log.contains("request validation failed") || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(log.contains("request validation failed"), "{log}");
    assert!(log.contains("orderId"), "{log}");
    assert!(log.contains("PUT"), "includeRequestInLogs: {log}");
    assert!(!log.contains("secret-token"), "credentials are redacted: {log}");
}

#[tokio::test]
async fn oversized_bodies_get_413_without_being_buffered() {
    let (api, gw) = setup().await;
    // Content-Length over the limit: answered before a byte of the body is sent.
    let head = "POST /uploads HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\n\r\n";
    let answer = raw_exchange(gw_addr(&gw), head.as_bytes(), Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // A chunked stream that passes the limit and never ends: 413 as soon as it passes.
    let mut chunked = String::from("POST /uploads HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
    chunked.push_str(&format!("800\r\n{}\r\n", "x".repeat(0x800)));
    let answer = raw_exchange(gw_addr(&gw), chunked.as_bytes(), Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(api.seen().is_empty());

    // Within the limit it is validated and forwarded.
    let r = send("POST", &gw.url("/uploads"), &[("content-type", "application/json")], r#"{"a": 1}"#).await.expect("request");
    assert_eq!(r.status, 200);
    let r = send("POST", &gw.url("/uploads"), &[("content-type", "application/json")], "[1]").await.expect("request");
    assert_eq!(r.status, 400);
}

fn gw_addr(gw: &Gateway) -> std::net::SocketAddr {
    gw.url("").trim_start_matches("http://").parse().expect("gateway address")
}

#[tokio::test]
async fn openapi_31_schemas_are_json_schema_2020_12() {
    let (api, gw) = setup().await;
    let ok = r#"{"name": "Rex", "tag": null, "age": 1}"#;
    let r = send("POST", &gw.url("/v31/pets"), &[("content-type", "application/json")], ok).await.expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(api.last().body, ok.as_bytes());
    let r = send("POST", &gw.url("/v31/pets"), &[("content-type", "application/json")], r#"{"name": "", "age": 0, "tag": 5}"#).await.expect("request");
    assert_eq!(r.status, 400);
    let got = locations(&r.json());
    for want in ["/name", "/age", "/tag"] {
        assert!(got.iter().any(|(_, p)| p == want), "{want}: {got:?}");
    }
}

#[tokio::test]
async fn json_schema_file_policy() {
    let (api, gw) = setup().await;
    let ok = r#"{"text": "hello", "tags": ["a", "b"]}"#;
    let r = send("POST", &gw.url("/notes"), &[("content-type", "application/json")], ok).await.expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(api.last().body, ok.as_bytes());
    let r = send("POST", &gw.url("/notes"), &[("content-type", "application/json")], r#"{"text": "", "tags": ["A", "a", "a"], "x": 1}"#).await.expect("request");
    assert_eq!(r.status, 400);
    let got = locations(&r.json());
    for want in ["/text", "/tags/0", "/tags", ""] {
        assert!(got.iter().any(|(_, p)| p == want), "{want}: {got:?}");
    }
}
