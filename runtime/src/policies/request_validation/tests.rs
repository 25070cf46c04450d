use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;

use super::*;
use crate::policies::test_context;
use crate::policies::test_util::{body_text, build, continued, must, problem_status, request};
use crate::validation::{MediaType, ParamSchema, Parameter, RequestBody, Simple, SimpleType, Style};

const ITEM: &str = r#"{"type":"object","required":["items"],"properties":{"items":{"type":"array","items":{"type":"object","required":["id"],"properties":{"id":{"type":"integer","minimum":1}}}}}}"#;

static PARAMS: &[Parameter] = &[Parameter {
    name: "limit",
    location: In::Query,
    required: false,
    style: Style::Form,
    explode: true,
    schema: ParamSchema::Simple(Simple { maximum: Some(10.0), ..Simple::of(SimpleType::Integer) }),
}];
static CONTENT: &[MediaType] = &[
    MediaType { media_type: "application/json", schema: Some(ITEM) },
    MediaType { media_type: "text/plain", schema: None },
];
static OP: Operation = Operation { parameters: PARAMS, body: Some(RequestBody { required: true, content: CONTENT }) };

fn policy(options: serde_json::Value) -> RequestValidationInbound {
    must(must(build::<RequestValidationInbound>(options)).with_operation(&OP))
}

fn reject_all() -> serde_json::Value {
    json!({"validateBody": "reject-and-log", "validateQueryParameters": "reject-only", "validatePathParameters": "reject-and-log", "validateHeaders": "reject-and-log"})
}

fn json_request(uri: &str, body: &'static str) -> Request {
    let mut r = request("POST", uri, body);
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

async fn problem_body(flow: Flow) -> serde_json::Value {
    let cx = test_context();
    match flow {
        Flow::Problem(p) => {
            let resp = cx.problem(p);
            serde_json::from_str(&body_text(resp.into_body()).await).unwrap_or_default()
        }
        other => panic!("expected a problem, got {:?}", continued(other).map(|_| ())),
    }
}

/// A chunked body of `chunks` 10-byte chunks that counts what was pulled.
fn chunked(chunks: usize, pulled: Arc<AtomicUsize>) -> Body {
    let stream = futures_util::stream::iter(0..chunks).map(move |_| {
        pulled.fetch_add(1, Ordering::SeqCst);
        Ok::<_, Infallible>(Bytes::from_static(b"0123456789"))
    });
    Body::from_stream(stream)
}

#[tokio::test]
async fn valid_body_continues_unchanged() {
    let p = policy(reject_all());
    let mut cx = test_context();
    let body = r#"{ "items": [ {"id": 1} ] , "extra": "kept as sent" }"#;
    let req = must(continued(p.on_request(json_request("/a?limit=3", body), &mut cx).await));
    assert_eq!(body_text(req.into_http().into_body()).await, body);
}

#[tokio::test]
async fn every_violation_is_listed_with_its_location() {
    let p = policy(reject_all());
    let mut cx = test_context();
    let flow = p.on_request(json_request("/a?limit=11", r#"{"items":[{"id":0},{}]}"#), &mut cx).await;
    assert_eq!(problem_status(&flow), Some(400));
    let v = problem_body(flow).await;
    let errors = v["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), 3, "{v}");
    assert_eq!(errors[0]["in"], "query");
    assert_eq!(errors[0]["name"], "limit");
    let pointers: Vec<&str> = errors[1..].iter().filter_map(|e| e["pointer"].as_str()).collect();
    assert!(pointers.contains(&"/items/0/id"), "{v}");
    assert!(pointers.contains(&"/items/1"), "{v}");
    assert!(errors[1..].iter().all(|e| e["in"] == "body"));
    assert_eq!(v["status"], 400);
}

#[tokio::test]
async fn body_that_is_not_json_is_a_violation() {
    let p = policy(reject_all());
    let mut cx = test_context();
    let v = problem_body(p.on_request(json_request("/a", "{nope"), &mut cx).await).await;
    assert_eq!(v["errors"][0]["pointer"], "");
    assert!(v["errors"][0]["message"].as_str().unwrap_or("").contains("not valid JSON"), "{v}");
}

#[tokio::test]
async fn required_body_missing_is_a_violation() {
    let p = policy(reject_all());
    let mut cx = test_context();
    let flow = p.on_request(request("POST", "/a", ""), &mut cx).await;
    let v = problem_body(flow).await;
    assert_eq!(v["errors"][0]["message"], "the request body is required");
}

#[tokio::test]
async fn unsupported_content_type_is_415_and_other_declared_types_pass_unread() {
    let p = policy(reject_all());
    let mut cx = test_context();
    let mut r = request("POST", "/a", "<x/>");
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/xml"));
    assert_eq!(problem_status(&p.on_request(r, &mut cx).await), Some(415));
    let mut r = request("POST", "/a", "just text");
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    let req = must(continued(p.on_request(r, &mut cx).await));
    assert_eq!(body_text(req.into_http().into_body()).await, "just text");
}

#[tokio::test]
async fn declared_length_over_the_limit_is_413_without_reading() {
    let p = policy(json!({"validateBody": "reject-only", "maxBodySizeInBytes": 50}));
    let mut cx = test_context();
    let pulled = Arc::new(AtomicUsize::new(0));
    let mut r = request("POST", "/a", chunked(10, pulled.clone()));
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r.headers_mut().insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(100));
    assert_eq!(problem_status(&p.on_request(r, &mut cx).await), Some(413));
    assert_eq!(pulled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn stream_over_the_limit_is_413_as_soon_as_it_passes() {
    let p = policy(json!({"validateBody": "reject-and-log", "maxBodySizeInBytes": 25}));
    let mut cx = test_context();
    let pulled = Arc::new(AtomicUsize::new(0));
    let mut r = request("POST", "/a", chunked(1000, pulled.clone()));
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    assert_eq!(problem_status(&p.on_request(r, &mut cx).await), Some(413));
    assert_eq!(pulled.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn log_only_lets_everything_through_with_the_body_intact() {
    let p = policy(json!({"validateBody": "log-only", "validateQueryParameters": "log-only", "maxBodySizeInBytes": 25}));
    let mut cx = test_context();
    let req = must(continued(p.on_request(json_request("/a?limit=99", r#"{"items":"no"}"#), &mut cx).await));
    assert_eq!(body_text(req.into_http().into_body()).await, r#"{"items":"no"}"#);
    // Too large to validate: forwarded whole.
    let mut r = request("POST", "/a", chunked(10, Arc::default()));
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    let req = must(continued(p.on_request(r, &mut cx).await));
    assert_eq!(body_text(req.into_http().into_body()).await.len(), 100);
}

#[tokio::test]
async fn nothing_is_checked_by_default() {
    let p = policy(json!({}));
    let mut cx = test_context();
    let mut r = request("POST", "/a?limit=abc", "<x/>");
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/xml"));
    assert!(continued(p.on_request(r, &mut cx).await).is_ok());
}

#[tokio::test]
async fn only_the_rejecting_parts_are_in_the_problem() {
    let p = policy(json!({"validateBody": "reject-only", "validateQueryParameters": "log-only"}));
    let mut cx = test_context();
    let v = problem_body(p.on_request(json_request("/a?limit=99", r#"{}"#), &mut cx).await).await;
    let errors = v["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), 1, "{v}");
    assert_eq!(errors[0]["in"], "body");
}

#[test]
fn options_use_zuplo_names_and_values() {
    assert!(build::<RequestValidationInbound>(json!({"validateBody": "reject-and-log", "logLevel": "warn", "includeRequestInLogs": true})).is_ok());
    assert!(build::<RequestValidationInbound>(json!({"validateBody": "reject"})).is_err());
    assert!(build::<RequestValidationInbound>(json!({"logLevel": "trace"})).is_err());
    assert!(build::<RequestValidationInbound>(json!({"validateBodies": "none"})).is_err());
}

#[tokio::test]
async fn json_schema_file_policy_validates_the_body() {
    let p = must(must(build::<ValidateJsonSchemaInbound>(json!({"validator": "$import(./schemas/item.json)"}))).with_schema(ITEM));
    let mut cx = test_context();
    let req = must(continued(p.on_request(json_request("/a", r#"{"items":[]}"#), &mut cx).await));
    assert_eq!(body_text(req.into_http().into_body()).await, r#"{"items":[]}"#);
    let v = problem_body(p.on_request(json_request("/a", r#"{"items":[{"id":"x"}]}"#), &mut cx).await).await;
    assert_eq!(v["errors"][0]["pointer"], "/items/0/id");
    assert!(build::<ValidateJsonSchemaInbound>(json!({})).is_err());
}
