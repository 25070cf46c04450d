//! Global hooks of the request lifecycle, registered by a project's `modules/runtime.rs`:
//! pre-routing → (route match) → request → inbound policies → handler → outbound policies →
//! response-sending → response-sending-final. Also the not-found answer, the error answer for
//! failing custom code, and the problem format.
//!
//! A project implements [`Hooks`] on a type of its own; every method has a default that does
//! nothing, so a module only writes the hooks it needs. Calls are statically dispatched.

use std::future::Future;

use crate::policy::Flow;
use crate::{Context, Problem, Request, RequestHead, Response};

/// The hooks of a gateway.
pub trait Hooks: Send + Sync + 'static {
    /// Before routing: may rewrite the request (URL normalization, version routing) or answer
    /// at once (`Err`).
    fn pre_routing(&self, req: http::Request<axum::body::Body>) -> impl Future<Output = Result<http::Request<axum::body::Body>, Response>> + Send {
        async move { Ok(req) }
    }

    /// After routing, before the route's inbound policies.
    fn on_request(&self, req: Request, _cx: &mut Context) -> impl Future<Output = Flow> + Send {
        async move { Flow::Continue(req) }
    }

    /// On every response of a matched route before it is sent, short-circuits included.
    fn on_response(&self, resp: Response, _req: &RequestHead, _cx: &mut Context) -> impl Future<Output = Response> + Send {
        async move { resp }
    }

    /// After the response is final (logging, analytics): sees its status and headers, cannot
    /// change them. (The body is streaming and not shareable across threads, so it is not
    /// passed.)
    fn on_response_final(&self, _status: http::StatusCode, _headers: &http::HeaderMap, _req: &RequestHead, _cx: &Context) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The answer when no route matches (`problem` is the default 404).
    fn not_found(&self, problem: Problem) -> Problem {
        problem
    }

    /// The problem sent when custom code fails or panics (`problem` is the default 500).
    fn on_error(&self, problem: Problem) -> Problem {
        problem
    }

    /// Renders every problem the gateway sends (default: RFC 9457 problem+json).
    fn format_problem(&self, problem: Problem, instance: &str, request_id: &str) -> Response {
        problem.into_response_with(instance, request_id)
    }
}

/// Object-safe view of [`Hooks::format_problem`], so problem rendering can reach the project's
/// format from anywhere without making every type generic (problems are the slow path).
pub(crate) trait FormatProblem: Send + Sync {
    fn format(&self, problem: Problem, instance: &str, request_id: &str) -> Response;
    fn on_error(&self, problem: Problem) -> Problem;
}

impl<H: Hooks> FormatProblem for H {
    fn format(&self, problem: Problem, instance: &str, request_id: &str) -> Response {
        self.format_problem(problem, instance, request_id)
    }
    fn on_error(&self, problem: Problem) -> Problem {
        Hooks::on_error(self, problem)
    }
}

/// A gateway without hooks.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

impl Hooks for NoHooks {}
