//! specgate-runtime: everything a specgate-generated gateway links against.
//!
//! A generated crate holds only wiring: its route table, one function per route that renders
//! the compiled URL templates and calls a handler from [`handlers`], and a [`Gateway`]
//! implementation. Routing ([`router`]), proxying ([`proxy`]), problem responses ([`problem`]),
//! environment handling ([`env`]) and the server loop ([`server`]) live here.

pub mod context;
pub mod env;
pub mod gateway;
pub mod handlers;
pub mod path;
pub mod problem;
pub mod proxy;
pub mod request_id;
pub mod router;
pub mod server;
pub mod template;
mod time;

pub use context::Context;
pub use gateway::Gateway;
pub use problem::Problem;

/// The request type every handler sees (an axum body, streamed).
pub type Request = http::Request<axum::body::Body>;
/// The response type every handler returns.
pub type Response = http::Response<axum::body::Body>;

/// Re-exports that generated code names through `::specgate_runtime::deps::...`, so a generated
/// crate needs no dependency of its own besides this runtime.
pub mod deps {
    pub use http;
    pub use serde_json;
}
