//! request-validation-inbound and the deprecated validate-json-schema-inbound.

use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;

use crate::policy::{Flow, FromOptions, Inbound};
use crate::validation::{Buffered, CompiledMedia, CompiledOperation, In, JsonValidator, Operation, Violation, read_limited};
use crate::{Context, Problem, Request};

/// The largest body validated when `maxBodySizeInBytes` is not set: 1 MiB.
pub const DEFAULT_MAX_BODY_SIZE: u64 = 1024 * 1024;

/// What to do about violations of one part of the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValidationAction {
    /// Do not check (default).
    #[default]
    None,
    /// Check and log, let the request through.
    LogOnly,
    /// Check, log and answer 400.
    RejectAndLog,
    /// Check and answer 400 without logging.
    RejectOnly,
}

impl ValidationAction {
    fn rejects(self) -> bool {
        matches!(self, ValidationAction::RejectAndLog | ValidationAction::RejectOnly)
    }

    fn logs(self) -> bool {
        matches!(self, ValidationAction::LogOnly | ValidationAction::RejectAndLog)
    }
}

/// The level validation failures are logged at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// `error`.
    Error,
    /// `warn`.
    Warn,
    /// `info` (default).
    #[default]
    Info,
    /// `debug`.
    Debug,
}

/// Options of request-validation-inbound (Zuplo's names and defaults).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestValidationOptions {
    /// The request body against the schema of its media type.
    #[serde(default)]
    pub validate_body: ValidationAction,
    /// Query parameters.
    #[serde(default)]
    pub validate_query_parameters: ValidationAction,
    /// Path parameters.
    #[serde(default)]
    pub validate_path_parameters: ValidationAction,
    /// Header parameters.
    #[serde(default)]
    pub validate_headers: ValidationAction,
    /// Log level of failures (default info).
    #[serde(default)]
    pub log_level: LogLevel,
    /// Add the request's method, URL and headers (credentials redacted) to the log line.
    #[serde(default)]
    pub include_request_in_logs: bool,
    /// The largest body that is buffered for validation (default 1 MiB); larger bodies get
    /// 413 (or pass unread with `log-only`). A specgate extension.
    #[serde(default)]
    pub max_body_size_in_bytes: Option<u64>,
}

/// `RequestValidationInboundPolicy`: checks parameters and body against the operation's
/// schemas.
///
/// Built with `from_options`, then [`RequestValidationInbound::with_operation`] compiles the
/// route's schemas once at start-up. Per request: parameters are checked first; then the
/// body's content type must be one the operation accepts (else 415), a JSON body is buffered
/// up to the limit (a larger declared `Content-Length` is 413 before reading, a stream passing
/// the limit is 413 as soon as it does), validated, and put back unchanged for the upstream.
/// Violations of parts set to reject give one 400 problem whose `errors` list every violation
/// with its location.
#[derive(Debug, Clone)]
pub struct RequestValidationInbound {
    options: RequestValidationOptions,
    name: Arc<str>,
    operation: Option<Arc<CompiledOperation>>,
}

impl FromOptions for RequestValidationInbound {
    type Options = RequestValidationOptions;
    fn from_options(options: Self::Options, name: &str) -> Result<Self, String> {
        Ok(RequestValidationInbound { options, name: Arc::from(name), operation: None })
    }
}

/// The outcome of the body check.
enum BodyCheck {
    /// Checked (the violations may be empty).
    Checked(Vec<Violation>),
    /// Refused with this status (413, 415, or 400 for a broken body) before validation.
    Refused(Problem, Violation),
}

impl RequestValidationInbound {
    /// Compiles the route's schemas (done once at start-up by the generated code).
    pub fn with_operation(mut self, op: &'static Operation) -> Result<Self, String> {
        self.operation = Some(Arc::new(CompiledOperation::compile(op)?));
        Ok(self)
    }

    fn limit(&self) -> u64 {
        self.options.max_body_size_in_bytes.unwrap_or(DEFAULT_MAX_BODY_SIZE)
    }

    async fn check_body(&self, req: &mut Request, required: bool, content: &[CompiledMedia], action: ValidationAction) -> BodyCheck {
        let declared = req.header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        let chunked = req.headers().contains_key(http::header::TRANSFER_ENCODING);
        let hint = http_body::Body::size_hint(req.body());
        let empty = declared == Some(0) || (declared.is_none() && !chunked && hint.exact() == Some(0));
        if empty {
            return BodyCheck::Checked(if required { vec![Violation::body("", "the request body is required")] } else { Vec::new() });
        }
        let Some(content_type) = req.header("content-type").map(str::to_owned) else {
            let problem = unsupported(content, "the request has no Content-Type");
            return BodyCheck::Refused(problem, Violation::body("", "the request has no Content-Type"));
        };
        let Some(media) = crate::validation::media_for(content, &content_type) else {
            let why = format!("the content type `{content_type}` is not accepted");
            return BodyCheck::Refused(unsupported(content, &why), Violation::body("", why));
        };
        let Some(validator) = &media.validator else { return BodyCheck::Checked(Vec::new()) };
        match read_body(req, self.limit(), declared, action.rejects()).await {
            Ok(bytes) if bytes.is_empty() => {
                BodyCheck::Checked(if required { vec![Violation::body("", "the request body is required")] } else { Vec::new() })
            }
            Ok(bytes) => {
                let mut out = Vec::new();
                validator.check_body(&bytes, &mut out);
                BodyCheck::Checked(out)
            }
            Err((problem, why)) => BodyCheck::Refused(problem, Violation::body("", why)),
        }
    }

    fn problem(violations: Vec<Violation>) -> Problem {
        let detail = match violations.len() {
            1 => "the request does not match the API's schema: 1 error".to_owned(),
            n => format!("the request does not match the API's schema: {n} errors"),
        };
        Problem::bad_request(detail).with_extension("errors", serde_json::to_value(violations).unwrap_or_default())
    }

    fn log(&self, cx: &Context, req: &Request, violations: &[Violation], rejected: bool) {
        let errors = serde_json::to_string(violations).unwrap_or_default();
        let request = if self.options.include_request_in_logs { describe_request(req) } else { String::new() };
        let name = &*self.name;
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!($level, request_id = %cx.request_id, policy = name, rejected, errors = %errors, request = %request, "request validation failed")
            };
        }
        match self.options.log_level {
            LogLevel::Error => emit!(tracing::Level::ERROR),
            LogLevel::Warn => emit!(tracing::Level::WARN),
            LogLevel::Info => emit!(tracing::Level::INFO),
            LogLevel::Debug => emit!(tracing::Level::DEBUG),
        }
    }
}

fn unsupported(content: &[CompiledMedia], why: &str) -> Problem {
    let accepted: Vec<&str> = content.iter().map(|m| m.media_type).collect();
    Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE).with_detail(format!("{why}; expected {}", accepted.join(", ")))
}

fn too_large(limit: u64) -> (Problem, String) {
    let why = format!("the request body is larger than {limit} bytes");
    (Problem::new(StatusCode::PAYLOAD_TOO_LARGE).with_detail(why.clone()), why)
}

/// Buffers the body (at most `limit` bytes) and puts it back into the request. Over the
/// limit: `Err` with a 413; when `rejecting` is false the body is put back whole (read part
/// then the unread rest), so a log-only check still forwards it.
async fn read_body(req: &mut Request, limit: u64, declared: Option<u64>, rejecting: bool) -> Result<bytes::Bytes, (Problem, String)> {
    if declared.is_some_and(|len| len > limit) || http_body::Body::size_hint(req.body()).lower() > limit {
        return Err(too_large(limit));
    }
    let body = std::mem::take(req.body_mut());
    match read_limited(body, usize::try_from(limit).unwrap_or(usize::MAX)).await {
        Buffered::Complete(bytes) => {
            *req.body_mut() = axum::body::Body::from(bytes.clone());
            Ok(bytes)
        }
        Buffered::TooLarge { prefix, rest } => {
            if !rejecting {
                *req.body_mut() = Buffered::reassemble(prefix, rest);
            }
            Err(too_large(limit))
        }
        Buffered::Failed(e) => Err((Problem::bad_request("the request body could not be read"), format!("the request body could not be read: {e}"))),
    }
}

/// Method, URL and headers for a log line, with credentials redacted.
fn describe_request(req: &Request) -> String {
    let mut out = format!("{} {}", req.method(), req.uri());
    for (name, value) in req.headers() {
        let shown = match name.as_str() {
            "authorization" | "cookie" | "proxy-authorization" | "x-api-key" => "[redacted]",
            _ => value.to_str().unwrap_or("[binary]"),
        };
        out.push_str(&format!("\n{name}: {shown}"));
    }
    out
}

impl Inbound for RequestValidationInbound {
    async fn on_request(&self, mut req: Request, cx: &mut Context) -> Flow {
        let Some(op) = self.operation.clone() else { return Flow::Continue(req) };
        let o = &self.options;
        let mut rejected = Vec::new();
        let mut logged = Vec::new();
        let sort = |action: ValidationAction, found: Vec<Violation>, rejected: &mut Vec<Violation>, logged: &mut Vec<Violation>| {
            if action.logs() {
                logged.extend(found.iter().cloned());
            }
            if action.rejects() {
                rejected.extend(found);
            }
        };
        for (location, action) in [(In::Path, o.validate_path_parameters), (In::Query, o.validate_query_parameters), (In::Header, o.validate_headers)] {
            if action == ValidationAction::None || !op.has_params(location) {
                continue;
            }
            let mut found = Vec::new();
            op.check_params(&req, location, &mut found);
            sort(action, found, &mut rejected, &mut logged);
        }
        let action = o.validate_body;
        if action != ValidationAction::None
            && let Some((required, content)) = op.body()
        {
            match self.check_body(&mut req, required, content, action).await {
                BodyCheck::Checked(found) => sort(action, found, &mut rejected, &mut logged),
                BodyCheck::Refused(problem, violation) => {
                    if action.logs() {
                        logged.push(violation);
                        self.log(cx, &req, &logged, action.rejects());
                    }
                    if action.rejects() {
                        return Flow::Problem(problem);
                    }
                    logged.clear();
                }
            }
        }
        if !logged.is_empty() {
            self.log(cx, &req, &logged, !rejected.is_empty());
        }
        if rejected.is_empty() { Flow::Continue(req) } else { Flow::Problem(Self::problem(rejected)) }
    }
}

/// Options of validate-json-schema-inbound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ValidateJsonSchemaOptions {
    /// `$import(./schemas/x.json)`: the schema file (read and bundled by the generator).
    pub validator: String,
}

/// `ValidateJsonSchemaInbound` (deprecated in Zuplo in favour of request validation): the
/// JSON body must match one JSON Schema file of the project. Violations are a 400 problem
/// listing them; a body over 1 MiB is 413 without buffering it. The body is forwarded as sent.
#[derive(Debug, Clone)]
pub struct ValidateJsonSchemaInbound {
    validator: Option<Arc<JsonValidator>>,
}

impl FromOptions for ValidateJsonSchemaInbound {
    type Options = ValidateJsonSchemaOptions;
    fn from_options(_options: Self::Options, _name: &str) -> Result<Self, String> {
        Ok(ValidateJsonSchemaInbound { validator: None })
    }
}

impl ValidateJsonSchemaInbound {
    /// Compiles the schema (JSON text emitted by the generator) once at start-up.
    pub fn with_schema(mut self, schema: &'static str) -> Result<Self, String> {
        self.validator = Some(Arc::new(JsonValidator::compile(schema)?));
        Ok(self)
    }
}

impl Inbound for ValidateJsonSchemaInbound {
    async fn on_request(&self, mut req: Request, cx: &mut Context) -> Flow {
        let Some(validator) = &self.validator else { return Flow::Continue(req) };
        let declared = req.header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = match read_body(&mut req, DEFAULT_MAX_BODY_SIZE, declared, true).await {
            Ok(b) => b,
            Err((problem, _)) => return Flow::Problem(problem),
        };
        let mut found = Vec::new();
        if bytes.is_empty() {
            found.push(Violation::body("", "the request body is required"));
        } else {
            validator.check_body(&bytes, &mut found);
        }
        if found.is_empty() {
            return Flow::Continue(req);
        }
        tracing::info!(request_id = %cx.request_id, errors = %serde_json::to_string(&found).unwrap_or_default(), "JSON schema validation failed");
        Flow::Problem(RequestValidationInbound::problem(found))
    }
}

#[cfg(test)]
mod tests;
