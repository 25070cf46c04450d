//! The generator's model of a project: what the loader extracts from the documents, with
//! source locations kept for diagnostics.

use std::path::PathBuf;

use crate::diag::{Files, Location};
use crate::modules::{ModuleRef, Role};
use crate::pattern::ParsedPath;
use crate::policies::PolicySet;
use crate::source::Node;
use crate::template::Template;

/// A loaded project.
#[derive(Debug)]
pub struct Project {
    /// The project folder.
    pub root: PathBuf,
    /// The project's name (the folder's name unless overridden).
    pub name: String,
    /// Every file read.
    pub files: Files,
    /// The OpenAPI documents in processing order.
    pub documents: Vec<Document>,
    /// Routes in match order.
    pub routes: Vec<Route>,
    /// `zuplo.jsonc` settings.
    pub settings: Settings,
    /// `config/policies.json`.
    pub policies: PolicySet,
    /// `modules/runtime.rs`, when the project registers hooks.
    pub hooks: Option<ModuleRef>,
    /// Referenced modules that do not exist, with the exports they must provide (stubbed
    /// with `--stub-missing`).
    pub missing_modules: Vec<(ModuleRef, Vec<(String, Role)>)>,
    /// Routes left out because their handler is a Zuplo built-in specgate lacks (each also
    /// reported as an error).
    pub unsupported_handlers: Vec<UnsupportedHandler>,
    /// SHA-256 of every input, hex.
    pub input_hash: String,
}

/// A route whose handler is a Zuplo built-in specgate lacks.
#[derive(Debug, Clone)]
pub struct UnsupportedHandler {
    /// `METHOD path`.
    pub route: String,
    /// The handler's export.
    pub export: String,
    /// Where the export is written.
    pub at: Location,
}

/// A parsed OpenAPI document.
#[derive(Debug)]
pub struct Document {
    /// File id in [`Project::files`].
    pub file: usize,
    /// Its tree.
    pub root: Node,
}

/// `zuplo.jsonc`.
#[derive(Debug, Default, Clone)]
pub struct Settings {
    /// `compatibilityDate`.
    pub compatibility_date: Option<String>,
    /// `allowDuplicateRoutes`.
    pub allow_duplicate_routes: bool,
}

/// How a path is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMode {
    /// `{id}`, `{+rest}`.
    OpenApi,
    /// URLPattern syntax.
    UrlPattern,
}

/// One operation with its `x-zuplo-route`.
#[derive(Debug)]
pub struct Route {
    /// The path as written.
    pub path: String,
    /// Where the path key is.
    pub path_at: Location,
    /// Upper-case method.
    pub method: String,
    /// Where the operation is.
    pub method_at: Location,
    /// `operationId`, if any.
    pub operation_id: Option<String>,
    /// Path mode.
    pub mode: PathMode,
    /// The parsed path.
    pub parsed: ParsedPath,
    /// The handler.
    pub handler: Handler,
    /// `corsPolicy`, if set.
    pub cors_policy: Option<String>,
    /// Inbound chain after composite expansion (indices into the policy set).
    pub inbound: Vec<usize>,
    /// Outbound chain after composite expansion.
    pub outbound: Vec<usize>,
    /// Response examples of the operation (for mock-api-inbound).
    pub examples: Vec<Example>,
    /// Parameters and request body with bundled schemas, for routes that use a validation
    /// policy.
    pub operation: Option<Operation>,
    /// The gateway a forward or rewrite target names literally (`local://NAME...`).
    pub local_target: Option<LocalTarget>,
}

/// A `local://NAME` written at the start of a `baseUrl` or `rewritePattern`.
#[derive(Debug, Clone)]
pub struct LocalTarget {
    /// The gateway name as written.
    pub name: String,
    /// Where the name is written.
    pub at: Location,
}

/// What request validation needs of an operation.
#[derive(Debug, Clone, Default)]
pub struct Operation {
    /// Path-item and operation parameters (cookies and ignored headers left out).
    pub parameters: Vec<Parameter>,
    /// The request body.
    pub body: Option<RequestBody>,
}

impl Operation {
    /// Whether there is anything to check in `location` (`None`: the body).
    pub fn has(&self, location: Option<ParamIn>) -> bool {
        match location {
            None => self.body.as_ref().is_some_and(|b| !b.content.is_empty()),
            Some(l) => self.parameters.iter().any(|p| p.location == l),
        }
    }
}

/// Where a parameter is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamIn {
    /// Path.
    Path,
    /// Query.
    Query,
    /// Header.
    Header,
}

/// One parameter.
#[derive(Debug, Clone)]
pub struct Parameter {
    /// Name (headers lower-cased).
    pub name: String,
    /// Where it is sent.
    pub location: ParamIn,
    /// Whether it must be present.
    pub required: bool,
    /// `style` as written (or its default).
    pub style: String,
    /// `explode` (or its default).
    pub explode: bool,
    /// The schema.
    pub schema: ParamSchema,
    /// Where the parameter is written.
    pub at: Location,
}

/// A parameter schema in the runtime's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamSchema {
    /// No constraints.
    Any,
    /// A simple type, checked from const data.
    Simple(SimpleSpec),
    /// An array of a simple type.
    Array {
        /// Items.
        items: SimpleSpec,
        /// `minItems`.
        min_items: Option<u64>,
        /// `maxItems`.
        max_items: Option<u64>,
        /// `uniqueItems`.
        unique_items: bool,
    },
    /// A bundled JSON Schema 2020-12 document checked by jsonschema.
    Json {
        /// The schema as JSON text.
        schema: String,
        /// `Scalar`, `Array` or `Object` (the runtime's `Shape` variant).
        shape: &'static str,
    },
}

/// A simple schema (the runtime's `Simple`).
#[derive(Debug, Clone, PartialEq)]
pub struct SimpleSpec {
    /// `String`, `Integer`, `Number` or `Boolean` (the runtime's `SimpleType` variant).
    pub ty: &'static str,
    /// `enum` values as text.
    pub enumeration: Vec<String>,
    /// `minimum`.
    pub minimum: Option<f64>,
    /// `maximum`.
    pub maximum: Option<f64>,
    /// `exclusiveMinimum` (numeric form).
    pub exclusive_minimum: Option<f64>,
    /// `exclusiveMaximum` (numeric form).
    pub exclusive_maximum: Option<f64>,
    /// `multipleOf`.
    pub multiple_of: Option<f64>,
    /// `minLength`.
    pub min_length: Option<u64>,
    /// `maxLength`.
    pub max_length: Option<u64>,
    /// `pattern`.
    pub pattern: Option<String>,
    /// `format`.
    pub format: Option<String>,
}

/// The request body.
#[derive(Debug, Clone)]
pub struct RequestBody {
    /// `required`.
    pub required: bool,
    /// Media types in document order.
    pub content: Vec<MediaType>,
}

/// One media type of a request body.
#[derive(Debug, Clone)]
pub struct MediaType {
    /// The media type or range.
    pub media_type: String,
    /// Its bundled schema as JSON text.
    pub schema: Option<String>,
}

/// One response example of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Status code (`default` responses are left out).
    pub status: u16,
    /// Media type.
    pub content_type: String,
    /// Example name (`""` for a single `example`).
    pub name: String,
    /// The example value as JSON text (a string value is sent as it is).
    pub body: String,
}

/// A route's handler with typed options.
#[derive(Debug)]
pub enum Handler {
    /// `urlForwardHandler`.
    Forward {
        /// `baseUrl` (`None` when the route lists `upstreams`).
        base: Option<Template>,
        /// `forwardSearch`.
        forward_search: bool,
        /// `followRedirects`.
        follow_redirects: bool,
        /// Timeouts, retries, several upstreams.
        upstream: UpstreamOptions,
    },
    /// `urlRewriteHandler`.
    Rewrite {
        /// `rewritePattern` (a path when the route lists `upstreams`).
        pattern: Template,
        /// `forwardSearch`.
        forward_search: bool,
        /// `followRedirects`.
        follow_redirects: bool,
        /// Timeouts, retries, several upstreams.
        upstream: UpstreamOptions,
    },
    /// `redirectHandler`.
    Redirect {
        /// `location`.
        location: Template,
        /// `status`.
        status: u16,
    },
    /// `openApiSpecHandler`: serves the public document.
    OpenApiSpec,
    /// `webSocketHandler`.
    WebSocket {
        /// `rewritePattern`: the upstream WebSocket URL.
        pattern: Template,
    },
    /// A custom handler from `$import(./modules/...)`.
    Custom {
        /// The module.
        module: ModuleRef,
        /// The export.
        export: String,
        /// Where the module reference is written.
        at: Location,
    },
}

impl Handler {
    /// The Zuplo export name.
    pub fn export(&self) -> &'static str {
        match self {
            Handler::Forward { .. } => "urlForwardHandler",
            Handler::Rewrite { .. } => "urlRewriteHandler",
            Handler::Redirect { .. } => "redirectHandler",
            Handler::OpenApiSpec => "openApiSpecHandler",
            Handler::WebSocket { .. } => "webSocketHandler",
            Handler::Custom { .. } => "custom handler",
        }
    }

    /// The templates of the handler.
    pub fn templates(&self) -> Vec<&Template> {
        match self {
            Handler::Forward { base, upstream, .. } => base.iter().chain(upstream.upstreams.iter().map(|u| &u.url)).collect(),
            Handler::Rewrite { pattern, upstream, .. } => std::iter::once(pattern).chain(upstream.upstreams.iter().map(|u| &u.url)).collect(),
            Handler::Redirect { location, .. } => vec![location],
            Handler::WebSocket { pattern } => vec![pattern],
            Handler::OpenApiSpec | Handler::Custom { .. } => Vec::new(),
        }
    }
}

/// The upstream options of a forward or rewrite handler (specgate extensions): several
/// upstreams with weights, per-route timeouts, retries, passive ejection, active health checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamOptions {
    /// `upstreams` (empty: the handler's own URL).
    pub upstreams: Vec<UpstreamDef>,
    /// `timeoutMs`.
    pub timeout_ms: Option<u64>,
    /// `connectTimeoutMs`.
    pub connect_timeout_ms: Option<u64>,
    /// `retries`, defaults applied (`None`: no retries).
    pub retries: Option<RetriesDef>,
    /// `ejection`, defaults applied (`None`: off).
    pub ejection: Option<EjectionDef>,
    /// `healthCheck` (`None`: off).
    pub health_check: Option<HealthCheckDef>,
}

impl UpstreamOptions {
    /// Whether none of the options is in effect (the route takes the plain forward path).
    pub fn is_plain(&self) -> bool {
        self.upstreams.is_empty() && self.timeout_ms.is_none() && self.connect_timeout_ms.is_none() && self.retries.is_none()
    }

    /// What makes two routes' upstream sets one shared set: the same URLs (as written) and
    /// weights, the same ejection and health check settings.
    pub fn pool_key(&self) -> Option<String> {
        if self.upstreams.is_empty() {
            return None;
        }
        let urls: Vec<String> = self.upstreams.iter().map(|u| format!("{}*{}", u.text, u.weight)).collect();
        Some(format!("{urls:?}|{:?}|{:?}", self.ejection, self.health_check))
    }
}

/// One entry of `upstreams`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamDef {
    /// The base URL (literals and `${env.X}` only).
    pub url: Template,
    /// The template as written.
    pub text: String,
    /// `weight` (default 1).
    pub weight: u32,
}

/// `retries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetriesDef {
    /// `maxRetries`.
    pub max_retries: u32,
    /// `budgetPercent`.
    pub budget_percent: u32,
    /// `backoffMs`.
    pub backoff_ms: u64,
}

/// `ejection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectionDef {
    /// `consecutiveFailures`.
    pub consecutive_failures: u32,
    /// `cooldownMs`.
    pub cooldown_ms: u64,
    /// `maxCooldownMs`.
    pub max_cooldown_ms: u64,
}

/// `healthCheck`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckDef {
    /// `path`.
    pub path: String,
    /// `intervalMs`.
    pub interval_ms: u64,
    /// `timeoutMs`.
    pub timeout_ms: u64,
    /// `unhealthyThreshold`.
    pub unhealthy_threshold: u32,
    /// `healthyThreshold`.
    pub healthy_threshold: u32,
}
