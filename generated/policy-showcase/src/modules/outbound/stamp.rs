// Copied by specgate from the project's modules/outbound/stamp.rs: edit that file, not this copy.
//! Custom outbound policies (a module in a nested folder).

use specgate_runtime::prelude::*;

/// Stamps the response with the tenant slug a policy put into `context.custom`.
pub async fn stamp(mut response: Response, request: &RequestHead, context: &mut Context, _options: &Value, _policy_name: &str) -> Response {
    let slug = context.custom_text("tenantSlug").into_owned();
    if let Ok(v) = specgate_runtime::http::HeaderValue::from_str(&slug) {
        response.headers_mut().insert("x-tenant-slug", v);
    }
    if let Some(plan) = request.header("x-tenant-plan").and_then(|p| specgate_runtime::http::HeaderValue::from_str(p).ok()) {
        response.headers_mut().insert("x-tenant-plan", plan);
    }
    response
}

/// Appends `outbound` to the response's `x-trace`.
pub async fn trace(mut response: Response, _request: &RequestHead, _context: &mut Context, _options: &Value, _policy_name: &str) -> Response {
    let before = response.headers().get("x-trace").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let value = if before.is_empty() { "outbound".to_owned() } else { format!("{before},outbound") };
    if let Ok(v) = specgate_runtime::http::HeaderValue::from_str(&value) {
        response.headers_mut().insert("x-trace", v);
    }
    response
}
