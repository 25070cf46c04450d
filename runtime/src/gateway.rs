//! The contract between a generated crate and the runtime.

use std::future::Future;

use crate::context::RouteInfo;
use crate::env::Reader;
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

    /// Reads every environment variable the project uses. Missing ones are collected by the
    /// reader so that start-up can report them all at once.
    fn configure(env: &mut Reader<'_>) -> Self;

    /// Serves a request matched to route number `route`.
    fn handle(&'static self, route: usize, req: Request, cx: Context) -> impl Future<Output = Response> + Send;
}
