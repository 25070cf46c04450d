//! The shapes of the request lifecycle: inbound policies return the request or a response,
//! outbound policies transform the response, handlers produce it. Generated route functions
//! call concrete policy types through these traits (static dispatch, options parsed once).

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use serde::de::DeserializeOwned;

use crate::{Context, Problem, Request, RequestHead, Response};

/// What an inbound policy or request hook decides.
// The request moves through the chain by value once per policy; boxing it to shrink the enum
// would add an allocation per policy instead.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Flow {
    /// Go on with this request.
    Continue(Request),
    /// Stop here and send this response (the handler and outbound policies are skipped).
    Respond(Response),
    /// Stop here with a problem response.
    Problem(Problem),
}

impl From<Request> for Flow {
    fn from(r: Request) -> Self {
        Flow::Continue(r)
    }
}

impl From<Response> for Flow {
    fn from(r: Response) -> Self {
        Flow::Respond(r)
    }
}

impl From<Problem> for Flow {
    fn from(p: Problem) -> Self {
        Flow::Problem(p)
    }
}

/// What custom inbound code may return: a [`Flow`], a request, a response, a problem, or a
/// `Result` of those (an `Err` becomes a 500 problem, logged with the policy name).
pub trait IntoFlow {
    /// Converts, given the policy name for messages.
    fn into_flow(self, name: &str, cx: &Context) -> Flow;
}

impl<T: Into<Flow>> IntoFlow for T {
    fn into_flow(self, _name: &str, _cx: &Context) -> Flow {
        self.into()
    }
}

impl<T: Into<Flow>, E: std::fmt::Display> IntoFlow for Result<T, E> {
    fn into_flow(self, name: &str, cx: &Context) -> Flow {
        match self {
            Ok(v) => v.into(),
            Err(e) => {
                tracing::error!(request_id = %cx.request_id, policy = name, error = %e, "policy failed");
                Flow::Problem(cx.runtime().error_problem(Problem::internal(format!("the policy `{name}` failed"))))
            }
        }
    }
}

/// An inbound policy.
pub trait Inbound: Send + Sync + 'static {
    /// Runs the policy.
    fn on_request(&self, req: Request, cx: &mut Context) -> impl Future<Output = Flow> + Send;
}

/// An outbound policy: runs on every response of the route, whatever its status.
pub trait Outbound: Send + Sync + 'static {
    /// Runs the policy.
    fn on_response(&self, resp: Response, req: &RequestHead, cx: &mut Context) -> impl Future<Output = Response> + Send;
}

/// A built-in policy built once at start-up from its typed options.
pub trait FromOptions: Sized {
    /// The options as `policies.json` spells them.
    type Options: DeserializeOwned;
    /// Builds the policy; `name` is the policy's name in `policies.json`.
    fn from_options(options: Self::Options, name: &str) -> Result<Self, String>;
}

/// What outbound custom code may return: a response, or a `Result` of one.
pub trait IntoResponseResult {
    /// Converts, given the policy name for messages.
    fn into_response_result(self, name: &str, cx: &Context) -> Response;
}

impl IntoResponseResult for Response {
    fn into_response_result(self, _name: &str, _cx: &Context) -> Response {
        self
    }
}

impl<E: std::fmt::Display> IntoResponseResult for Result<Response, E> {
    fn into_response_result(self, name: &str, cx: &Context) -> Response {
        match self {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(request_id = %cx.request_id, policy = name, error = %e, "outbound policy failed");
                cx.problem(cx.runtime().error_problem(Problem::internal(format!("the policy `{name}` failed"))))
            }
        }
    }
}

/// Runs custom code, catching a panic so it fails this request only (`Err` carries the panic
/// message; turn it into a response with [`panicked`]).
pub async fn guard<T>(fut: impl Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(fut).catch_unwind().await.map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned())
    })
}

/// The 500 problem for custom code `what` that panicked with `message`.
pub fn panicked(what: &str, message: &str, cx: &Context) -> Response {
    tracing::error!(request_id = %cx.request_id, code = what, panic = %message, "custom code panicked");
    cx.problem(cx.runtime().error_problem(Problem::internal(format!("`{what}` failed"))))
}

/// [`settle`] for the inbound policy `name`: a short-circuit with 400/401/403/413/415/429 is
/// counted as that policy's rejection in the metrics (when they are on).
#[allow(clippy::result_large_err)]
pub fn settle_policy(flow: Flow, cx: &Context, name: &str) -> Result<Request, Response> {
    let result = settle(flow, cx);
    if let Err(resp) = &result
        && let Some(metrics) = cx.runtime().metrics()
    {
        use crate::metrics::Rejection;
        let why = match resp.status().as_u16() {
            401 => Some(Rejection::Unauthenticated),
            403 => Some(Rejection::Forbidden),
            429 => Some(Rejection::RateLimited),
            400 | 413 | 415 => Some(Rejection::Invalid),
            _ => None,
        };
        if let Some(why) = why {
            metrics.count_rejection(name, why);
        }
    }
    result
}

/// Turns a [`Flow`] into what a route function needs next.
#[allow(clippy::result_large_err)]
pub fn settle(flow: Flow, cx: &Context) -> Result<Request, Response> {
    match flow {
        Flow::Continue(r) => Ok(r),
        Flow::Respond(r) => Err(r),
        Flow::Problem(p) => Err(cx.problem(p)),
    }
}
