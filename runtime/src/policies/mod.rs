//! The built-in policies of `$import(@zuplo/runtime)`, each a concrete type built once at
//! start-up from typed options ([`crate::policy::FromOptions`]) and called by generated route
//! functions through [`crate::policy::Inbound`] / [`crate::policy::Outbound`].
//!
//! Option names are exactly those of Zuplo's documentation.

mod api_key;
mod basic_auth;
mod caching;
mod complex_rate_limit;
mod de;
mod deprecation;
mod headers;
mod ip_restriction;
mod jwks;
mod jwt;
mod mock;
mod query;
mod quota;
mod rate_limit;
mod remove_headers;
mod replace_string;
mod request_edit;
mod request_validation;
mod require_origin;
mod set_status;
mod size_limit;
mod upstream;

// api_key, basic_auth, jwt and upstream re-export their types here.
pub use api_key::{ApiKeyInbound, ApiKeyInboundOptions};
pub use jwt::{
    Audience, Auth0JwtInbound, Auth0JwtOptions, ClerkJwtInbound, ClerkJwtOptions, CognitoJwtInbound, CognitoJwtOptions,
    FirebaseJwtInbound, FirebaseJwtOptions, JwtScopesInbound, JwtScopesOptions, OktaJwtInbound, OktaJwtOptions,
    OpenIdJwtInbound, OpenIdJwtOptions, RequiredClaims, SupabaseJwtInbound, SupabaseJwtOptions,
};
pub use basic_auth::{BasicAuthAccount, BasicAuthInbound, BasicAuthOptions};
pub use caching::{CachingInbound, CachingInboundOptions, HeaderNames};
pub use upstream::{
    SetUpstreamApiKeyInbound, SetUpstreamApiKeyOptions, UpstreamJwtInbound, UpstreamJwtOptions, published_jwks,
};
pub use deprecation::{DeprecationValue, HttpDeprecationOptions, HttpDeprecationOutbound};
pub use headers::{HeaderSpec, SetHeadersInbound, SetHeadersOptions, SetHeadersOutbound};
pub use ip_restriction::{IpAddressRestrictionInbound, IpAddressRestrictionOptions};
pub use mock::{MockApiInbound, MockApiOptions, MockExample};
pub use query::{
    QueryParamSpec, QueryParamToHeaderInbound, QueryParamToHeaderOptions, RemoveQueryParamsInbound,
    RemoveQueryParamsOptions, SetQueryParamsInbound, SetQueryParamsOptions,
};
pub use remove_headers::{
    ClearHeadersInbound, ClearHeadersOptions, ClearHeadersOutbound, RemoveHeadersInbound, RemoveHeadersOptions,
    RemoveHeadersOutbound,
};
pub use rate_limit::{
    HeaderMode, Identifier, IdentifierFuture, IdentifierRef, RateLimitBy, RateLimitInbound, RateLimitInboundOptions,
    RateLimitKey, RateLimitMode, rate_limit_identifier,
};
pub use complex_rate_limit::{ComplexRateLimitInbound, ComplexRateLimitInboundOptions};
pub use quota::{
    Clock, QuotaAnchorFn, QuotaAnchorFuture, QuotaAnchorMode, QuotaBy, QuotaDetail, QuotaDetailFn, QuotaDetailFuture,
    QuotaIdentifierRef, QuotaInbound, QuotaInboundOptions, StatusCodes, quota_anchor_fn, quota_detail_fn,
};
pub use replace_string::{ReplaceMode, ReplaceStringOptions, ReplaceStringOutbound};
pub use request_edit::{
    ChangeMethodInbound, ChangeMethodOptions, SetBodyInbound, SetBodyOptions, SleepInbound, SleepOptions,
};
pub use request_validation::{
    DEFAULT_MAX_BODY_SIZE, LogLevel, RequestValidationInbound, RequestValidationOptions, ValidateJsonSchemaInbound,
    ValidateJsonSchemaOptions, ValidationAction,
};
pub use require_origin::{Origins, RequireOriginInbound, RequireOriginOptions};
pub use set_status::{SetStatusOptions, SetStatusOutbound};
pub use size_limit::{RequestSizeLimitInbound, RequestSizeLimitOptions};

/// A context for calling policies directly in unit tests (route `GET /test`, client
/// 127.0.0.1). Call inside a Tokio runtime: the test runtime builds an upstream client.
#[cfg(test)]
pub(crate) fn test_context() -> crate::Context {
    context_on(crate::server::Runtime::for_tests())
}

/// The context of `test_context` for the runtime's benchmarks (`runtime/benches`), which
/// call policies the way generated route functions do; every call shares one runtime. Not
/// part of the API; call inside a Tokio runtime.
#[doc(hidden)]
pub fn bench_context() -> crate::Context {
    static RUNTIME: std::sync::OnceLock<&'static crate::server::Runtime> = std::sync::OnceLock::new();
    context_on(RUNTIME.get_or_init(crate::server::Runtime::for_tests))
}

fn context_on(runtime: &'static crate::server::Runtime) -> crate::Context {
    use crate::context::{Log, RouteInfo};
    static ROUTE: RouteInfo = RouteInfo { index: 0, method: "GET", path: "/test", label: "test" };
    crate::Context {
        request_id: "test-request".to_owned(),
        route: &ROUTE,
        pathname: "/test".to_owned(),
        host: "localhost".to_owned(),
        peer: std::net::SocketAddr::from(([127, 0, 0, 1], 40000)),
        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        custom: serde_json::Map::new(),
        log: Log { request_id: "test-request".to_owned(), route: ROUTE.label },
        runtime,
        after: Vec::new(),
        trace: crate::trace::TraceContext::for_tests(),
        local_hops: 0,
    }
}

/// Helpers shared by the policy tests.
#[cfg(test)]
pub(crate) mod test_util {
    use axum::body::Body;
    use http_body_util::BodyExt;

    use crate::policy::FromOptions;
    use crate::{Flow, Request, Response};

    /// Builds a policy from options written as JSON, as `policies.json` would.
    pub(crate) fn build<P: FromOptions>(json: serde_json::Value) -> Result<P, String> {
        let options = serde_json::from_value::<P::Options>(json).map_err(|e| e.to_string())?;
        P::from_options(options, "test-policy")
    }

    /// The value of a result a test cannot go on without.
    pub(crate) fn must<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    /// A request with this method, URI and body.
    pub(crate) fn request(method: &str, uri: &str, body: impl Into<Body>) -> Request {
        let r = http::Request::builder().method(method).uri(uri).body(body.into());
        Request::from(r.unwrap_or_else(|_| http::Request::new(Body::empty())))
    }

    /// The request of a `Continue`, or a description of what else came back.
    pub(crate) fn continued(flow: Flow) -> Result<Request, String> {
        match flow {
            Flow::Continue(r) => Ok(r),
            Flow::Respond(r) => Err(format!("responded {}", r.status())),
            Flow::Problem(p) => Err(format!("problem {p}")),
        }
    }

    /// The status of a problem flow (`None` for anything else).
    pub(crate) fn problem_status(flow: &Flow) -> Option<u16> {
        match flow {
            Flow::Problem(p) => Some(p.status().as_u16()),
            _ => None,
        }
    }

    /// The whole body as text (lossy, so failing tests show what arrived).
    pub(crate) async fn body_text(body: Body) -> String {
        let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A response with this status, headers and body.
    pub(crate) fn response(status: u16, headers: &[(&str, &str)], body: impl Into<Body>) -> Response {
        let mut b = http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(body.into()).unwrap_or_else(|_| Response::new(Body::empty()))
    }
}
