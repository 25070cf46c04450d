//! The contract between a generated crate and the runtime.

use std::future::Future;

use crate::context::RouteInfo;
use crate::cors::CorsPolicy;
use crate::env::Reader;
use crate::hooks::Hooks;
use crate::router::RouteSpec;
use crate::{Context, Request, Response};

/// What a generated crate implements: its routes, its start-up configuration, and one
/// statically dispatched function per route.
pub trait Gateway: Send + Sync + Sized + 'static {
    /// The gateway's name (used in logs).
    const NAME: &'static str;
    /// The route table, in match order.
    const ROUTES: &'static [RouteSpec];
    /// Static facts per route, same order as [`Gateway::ROUTES`].
    const ROUTE_INFO: &'static [RouteInfo];

    /// The project's lifecycle hooks (`modules/runtime.rs`), or [`crate::hooks::NoHooks`].
    type Hooks: Hooks;
    /// Whether the project registers hooks (false skips every hook call and copy).
    const HAS_HOOKS: bool;
    /// Whether some route passes WebSocket upgrades through. Connections of such a gateway are
    /// served with hyper's upgrade support, which keeps each connection's buffers while it is
    /// idle; the others free them (see the server).
    const WEBSOCKETS: bool = false;

    /// Reads every environment variable the project uses and builds every policy from its
    /// options. Problems are collected by the reader so that start-up reports them all at
    /// once; `None` when something could not be built.
    fn configure(env: &mut Reader<'_>) -> Option<Self>;

    /// Builds the hooks.
    fn hooks() -> Self::Hooks;

    /// The CORS policy of route number `route` (`None`: the route strips the upstream's CORS
    /// headers and adds none). The server answers preflights and decorates the route's
    /// responses with it.
    fn cors(&'static self, route: usize) -> Option<&'static CorsPolicy> {
        let _ = route;
        None
    }

    /// The upstream URLs fixed at start-up, every upstream of a route's upstream set included
    /// (checked by the readiness endpoint when `READINESS_CHECK_UPSTREAMS` is on).
    fn upstream_urls(&'static self) -> Vec<&'static str> {
        Vec::new()
    }

    /// The upstream settings of routes that have some (several upstreams, timeouts, retries).
    /// The server prepares them at start-up, starts the active health checks of their
    /// upstream sets and exposes those sets in the metrics.
    fn route_upstreams(&'static self) -> Vec<&'static crate::upstreams::RouteUpstream> {
        Vec::new()
    }

    /// Serves a request matched to route number `route`.
    fn handle(&'static self, route: usize, req: Request, cx: &mut Context) -> impl Future<Output = Response> + Send;
}
