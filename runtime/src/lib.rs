//! specgate-runtime: everything a specgate-generated gateway links against.
//!
//! A generated crate holds only wiring: its route table, one function per route that renders
//! the compiled URL templates and calls a handler from [`handlers`], and a [`Gateway`]
//! implementation. Routing ([`router`]), proxying ([`proxy`]), upstream resilience
//! ([`upstreams`]: per-route timeouts, retries, several upstreams, health), problem responses
//! ([`problem`]), environment handling ([`env`]) and the server loop ([`server`]) live here.

/// The allocator of every gateway (see the `mimalloc` feature in Cargo.toml).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod cache;
mod conn;
pub mod context;
pub mod cors;
pub mod env;
pub mod federation;
pub mod gateway;
pub mod handlers;
mod h1pool;
pub mod health;
pub mod hooks;
pub mod keys;
pub mod loader;
pub mod metrics;
pub mod path;
pub mod policies;
pub mod policy;
pub mod problem;
pub mod proxy;
pub mod ratelimit;
mod redis_conn;
pub mod request;
pub mod request_id;
pub mod response_cache;
pub mod router;
pub mod server;
pub mod template;
pub mod tls;
pub mod trace;
pub mod upstreams;
pub mod validation;
mod time;

pub use context::{Context, User};
pub use gateway::Gateway;
pub use handlers::Json;
pub use hooks::Hooks;
pub use policy::Flow;
pub use problem::Problem;
pub use request::{Request, RequestHead};

/// The response type every handler returns (an axum body, streamed).
pub type Response = http::Response<axum::body::Body>;
/// A response body.
pub type Body = axum::body::Body;

/// Crates that custom modules may use through `specgate_runtime::...`, so a generated crate
/// needs no dependency of its own besides this runtime.
pub use {bytes, http, reqwest, serde, serde_json, tokio, tracing};

/// What custom modules usually need: `use specgate_runtime::prelude::*;`.
pub mod prelude {
    pub use crate::cache::MemoryCache;
    pub use crate::env::var as environment;
    pub use crate::handlers::Json;
    pub use crate::loader::BackgroundLoader;
    pub use crate::policy::Flow;
    pub use crate::{Body, Context, Hooks, Problem, Request, RequestHead, Response, User};
    pub use serde::{Deserialize, Serialize};
    pub use serde_json::{Value, json};
}
