//! Distributed tracing: W3C trace context on every request, and spans exported over OTLP
//! (HTTP/protobuf) when an endpoint is configured.
//!
//! Propagation does not depend on export. Every request gets a trace context: an incoming
//! valid `traceparent` is continued (same trace id, its span as parent, its `tracestate`
//! forwarded), an invalid or absent one is replaced by a fresh trace. The upstream always
//! receives a `traceparent` naming the gateway's span, sampled as the configured sampler
//! decides. Without export that costs two random numbers and one header value per request.
//!
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), sampled
//! requests also record a server span (route, method, status, request id) and a client span
//! around each upstream exchange, handed to the OpenTelemetry SDK's batch processor: a bounded
//! queue drained by its own thread (spans are dropped, and counted in its log, when the queue
//! is full), flushed on graceful shutdown.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use opentelemetry::trace::{Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _, TracerProvider as _};
use opentelemetry::{Context as OtelContext, KeyValue};
use opentelemetry_sdk::trace::{SamplingDecision, SamplingResult, SdkTracer, SdkTracerProvider, ShouldSample};

use crate::env::Environment;

/// The W3C trace context header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The W3C vendor-specific trace state header, forwarded with a continued trace.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// How new traces are sampled (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampler {
    /// Follow the parent's sampled flag when the request continues a trace.
    parent_based: bool,
    root: Root,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    On,
    Off,
    /// Sampled when the trace id's low 63 bits fall under the threshold (ratio × 2^63), the
    /// rule of the OpenTelemetry SDKs, so that every service samples a trace id alike.
    Ratio { threshold: u64 },
}

impl Default for Sampler {
    /// `parentbased_always_on`, the OpenTelemetry default.
    fn default() -> Self {
        Sampler { parent_based: true, root: Root::On }
    }
}

impl Sampler {
    /// Reads a sampler name and its argument as the OpenTelemetry environment variables give
    /// them.
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Self, String> {
        let ratio = || -> Result<Root, String> {
            let ratio = match arg.map(str::trim).filter(|a| !a.is_empty()) {
                None => 1.0,
                Some(a) => match a.parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => r,
                    _ => return Err(format!("OTEL_TRACES_SAMPLER_ARG={a:?} is not a ratio between 0 and 1")),
                },
            };
            // 2^63 for 1.0: every 63-bit value is under it.
            Ok(Root::Ratio { threshold: (ratio * (1u64 << 63) as f64) as u64 })
        };
        let (parent_based, root) = match name.trim().to_ascii_lowercase().as_str() {
            "always_on" => (false, Root::On),
            "always_off" => (false, Root::Off),
            "traceidratio" => (false, ratio()?),
            "" | "parentbased_always_on" => (true, Root::On),
            "parentbased_always_off" => (true, Root::Off),
            "parentbased_traceidratio" => (true, ratio()?),
            other => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER={other:?} is not supported (always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio)"
                ));
            }
        };
        Ok(Sampler { parent_based, root })
    }

    /// Whether a span of trace `trace_id` is sampled; `parent` is the parent's sampled flag
    /// when there is a parent.
    pub fn sampled(&self, parent: Option<bool>, trace_id: &[u8; 16]) -> bool {
        if self.parent_based
            && let Some(p) = parent
        {
            return p;
        }
        match self.root {
            Root::On => true,
            Root::Off => false,
            Root::Ratio { threshold } => {
                let low = u64::from_be_bytes([
                    trace_id[8], trace_id[9], trace_id[10], trace_id[11], trace_id[12], trace_id[13], trace_id[14], trace_id[15],
                ]);
                (low >> 1) < threshold
            }
        }
    }
}

/// The SDK asks the same sampler, so that exported and propagated decisions agree.
impl ShouldSample for Sampler {
    fn should_sample(
        &self,
        parent_context: Option<&OtelContext>,
        trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[opentelemetry::trace::Link],
    ) -> SamplingResult {
        let parent = parent_context.map(|c| c.span().span_context().clone()).filter(SpanContext::is_valid);
        let sampled = self.sampled(parent.as_ref().map(SpanContext::is_sampled), &trace_id.to_bytes());
        SamplingResult {
            decision: if sampled { SamplingDecision::RecordAndSample } else { SamplingDecision::Drop },
            attributes: Vec::new(),
            trace_state: parent.map(|p| p.trace_state().clone()).unwrap_or_default(),
        }
    }
}

/// Tracing settings read from the environment at start-up.
#[derive(Debug, Clone, Default)]
pub struct TracingConfig {
    /// The sampler (propagation follows it too).
    pub sampler: Sampler,
    /// OTLP export, when an endpoint is configured.
    pub export: Option<ExportConfig>,
}

/// Where and how spans are exported.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// The full URL spans are POSTed to (`…/v1/traces`).
    pub endpoint: String,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TRACES_HEADERS`).
    pub headers: Vec<(String, String)>,
    /// `OTEL_SERVICE_NAME`; the gateway's name when unset.
    pub service_name: Option<String>,
    /// Spans waiting for export at most (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048); more are dropped.
    pub max_queue_size: usize,
    /// Spans per export request at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, 512).
    pub max_export_batch_size: usize,
    /// How often the queue is exported (`OTEL_BSP_SCHEDULE_DELAY`, 5000 ms).
    pub schedule_delay: Duration,
    /// How long one export request may take (`OTEL_EXPORTER_OTLP_TIMEOUT`, 10000 ms).
    pub timeout: Duration,
}

impl TracingConfig {
    /// Reads the OpenTelemetry variables; every malformed value is reported.
    pub fn from_env(env: &Environment) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let get = |name: &str| env.get(name).filter(|v| !v.trim().is_empty());
        let sampler = Sampler::parse(&get("OTEL_TRACES_SAMPLER").unwrap_or_default(), get("OTEL_TRACES_SAMPLER_ARG").as_deref())
            .unwrap_or_else(|e| {
                errors.push(e);
                Sampler::default()
            });
        let disabled = get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let exporter_on = match get("OTEL_TRACES_EXPORTER").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("otlp") => true,
            Some("none") => false,
            Some(other) => {
                errors.push(format!("OTEL_TRACES_EXPORTER={other:?} is not supported (otlp or none)"));
                false
            }
        };
        for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            if let Some(p) = get(name)
                && p.trim() != "http/protobuf"
            {
                errors.push(format!("{name}={p:?} is not supported: spans are exported as http/protobuf"));
            }
        }
        let endpoint = match (get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), get("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(e), _) => Some(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", e.trim().to_owned())),
            (None, Some(base)) => {
                let base = base.trim();
                Some(("OTEL_EXPORTER_OTLP_ENDPOINT", format!("{}/v1/traces", base.trim_end_matches('/'))))
            }
            (None, None) => None,
        };
        let endpoint = endpoint.and_then(|(name, url)| match url.parse::<Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => Some(url),
            _ => {
                errors.push(format!("{name}: {url:?} is not an http(s) URL"));
                None
            }
        });
        let mut headers = Vec::new();
        for name in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] {
            if let Some(v) = get(name) {
                match parse_headers(&v) {
                    Ok(h) => headers.extend(h),
                    Err(e) => errors.push(format!("{name}: {e}")),
                }
            }
        }
        let mut number = |name: &str, default: u64, min: u64| -> u64 {
            match get(name) {
                None => default,
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n >= min => n,
                    _ => {
                        errors.push(format!("{name}={v:?} is not a whole number of at least {min}"));
                        default
                    }
                },
            }
        };
        let max_queue_size = usize::try_from(number("OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1)).unwrap_or(2048);
        let max_export_batch_size = usize::try_from(number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1)).unwrap_or(512).min(max_queue_size);
        let schedule_delay = Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 5000, 1));
        let timeout_ms = match get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") {
            Some(_) => number("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", 10_000, 1),
            None => number("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000, 1),
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let export = endpoint.filter(|_| exporter_on && !disabled).map(|endpoint| ExportConfig {
            endpoint,
            headers,
            service_name: get("OTEL_SERVICE_NAME").map(|s| s.trim().to_owned()),
            max_queue_size,
            max_export_batch_size,
            schedule_delay,
            timeout: Duration::from_millis(timeout_ms),
        });
        Ok(TracingConfig { sampler, export })
    }
}

/// `key=value,key2=value2` with percent-encoded values, as `OTEL_EXPORTER_OTLP_HEADERS` has them.
fn parse_headers(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("{pair:?} is not key=value"));
        };
        let (k, v) = (k.trim(), crate::path::percent_decode(v.trim()).into_owned());
        if HeaderName::from_bytes(k.as_bytes()).is_err() || HeaderValue::from_str(&v).is_err() {
            return Err(format!("{pair:?} is not a valid HTTP header"));
        }
        out.push((k.to_owned(), v));
    }
    Ok(out)
}

/// The tracing of a running gateway: the sampler, and the SDK pipeline when exporting.
pub struct Tracing {
    sampler: Sampler,
    export: Option<Export>,
}

struct Export {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracing").field("sampler", &self.sampler).field("exporting", &self.export.is_some()).finish()
    }
}

impl Tracing {
    /// Propagation only, with the default sampler.
    pub fn propagation_only() -> Self {
        Tracing { sampler: Sampler::default(), export: None }
    }

    /// Starts the export pipeline when `config` has an endpoint (its batch thread runs until
    /// [`Tracing::shutdown`]). `default_service` names the service when `OTEL_SERVICE_NAME`
    /// is unset.
    pub fn start(config: &TracingConfig, default_service: &str) -> Result<Self, String> {
        let Some(export) = &config.export else {
            return Ok(Tracing { sampler: config.sampler, export: None });
        };
        use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(export.endpoint.clone())
            .with_timeout(export.timeout)
            .with_headers(export.headers.iter().cloned().collect())
            .build()
            .map_err(|e| format!("the OTLP trace exporter for {} cannot be built: {e}", export.endpoint))?;
        let batch = opentelemetry_sdk::trace::BatchConfigBuilder::default()
            .with_max_queue_size(export.max_queue_size)
            .with_max_export_batch_size(export.max_export_batch_size)
            .with_scheduled_delay(export.schedule_delay)
            .build();
        let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
        let service = export.service_name.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| default_service.to_owned());
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(service.clone()).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(config.sampler)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("specgate");
        tracing::info!(endpoint = %export.endpoint, service = %service, sampler = ?config.sampler, "exporting traces over OTLP");
        Ok(Tracing { sampler: config.sampler, export: Some(Export { provider, tracer }) })
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.export.is_some()
    }

    /// Exports the spans still queued and stops the batch thread (blocks for at most
    /// `timeout`).
    pub fn shutdown(&self, timeout: Duration) {
        if let Some(e) = &self.export
            && let Err(err) = e.provider.shutdown_with_timeout(timeout)
        {
            tracing::warn!(error = %err, "flushing the remaining spans failed");
        }
    }

    /// The trace context of a new request (continuing the client's trace when its
    /// `traceparent` is valid) and, when exporting a sampled request, its server span.
    pub(crate) fn start_request<B>(&self, req: &http::Request<B>, scheme: &'static str, peer: Option<std::net::IpAddr>) -> (TraceContext, Option<ServerSpan>) {
        let headers = req.headers();
        let parent = incoming_parent(headers);
        let tracestate = parent.as_ref().and_then(|_| joined_tracestate(headers));
        let Some(export) = &self.export else {
            let trace_id = match &parent {
                Some(p) => p.trace_id,
                None => random_trace_id(),
            };
            let sampled = self.sampler.sampled(parent.as_ref().map(|p| p.sampled), &trace_id);
            return (TraceContext { trace_id, span_id: random_span_id(), sampled, tracestate }, None);
        };
        let parent_cx = match &parent {
            Some(p) => {
                let state = tracestate
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse::<TraceState>().ok())
                    .unwrap_or_default();
                let flags = if p.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
                let sc = SpanContext::new(TraceId::from_bytes(p.trace_id), opentelemetry::trace::SpanId::from_bytes(p.span_id), flags, true, state);
                OtelContext::new().with_remote_span_context(sc)
            }
            None => OtelContext::new(),
        };
        let mut span = export
            .tracer
            .span_builder(method_name(req.method()))
            .with_kind(SpanKind::Server)
            .start_with_context(&export.tracer, &parent_cx);
        let sc = span.span_context();
        let trace = TraceContext {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            sampled: sc.is_sampled(),
            tracestate,
        };
        if !span.is_recording() {
            return (trace, None);
        }
        let version = match req.version() {
            http::Version::HTTP_10 => "1.0",
            http::Version::HTTP_2 => "2",
            http::Version::HTTP_3 => "3",
            _ => "1.1",
        };
        span.set_attributes([
            KeyValue::new("http.request.method", req.method().as_str().to_owned()),
            KeyValue::new("url.path", req.uri().path().to_owned()),
            KeyValue::new("url.scheme", scheme),
            KeyValue::new("network.protocol.version", version),
        ]);
        let host = req.uri().host().or_else(|| headers.get(http::header::HOST).and_then(|h| h.to_str().ok()));
        if let Some(host) = host {
            span.set_attribute(KeyValue::new("server.address", crate::context::split_host_port(host).0.to_owned()));
        }
        if let Some(ip) = peer {
            span.set_attribute(KeyValue::new("client.address", ip.to_string()));
        }
        if let Some(ua) = headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()) {
            span.set_attribute(KeyValue::new("user_agent.original", ua.to_owned()));
        }
        (trace, Some(ServerSpan { span }))
    }

    /// A client span for one upstream exchange, child of the request's server span.
    pub(crate) fn client_span(&self, trace: &TraceContext, method: &Method, uri: &Uri) -> ClientSpan {
        let Some(export) = self.export.as_ref().filter(|_| trace.sampled) else {
            return ClientSpan { span_id: trace.span_id, span: None };
        };
        let parent = SpanContext::new(
            TraceId::from_bytes(trace.trace_id),
            opentelemetry::trace::SpanId::from_bytes(trace.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let parent_cx = OtelContext::new().with_remote_span_context(parent);
        let mut span = export.tracer.span_builder(method_name(method)).with_kind(SpanKind::Client).start_with_context(&export.tracer, &parent_cx);
        let span_id = span.span_context().span_id().to_bytes();
        if span.is_recording() {
            let host = uri.host().unwrap_or_default().to_owned();
            let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
            span.set_attributes([
                KeyValue::new("http.request.method", method.as_str().to_owned()),
                KeyValue::new("server.address", host),
                KeyValue::new("server.port", i64::from(port)),
                KeyValue::new("url.full", format!("{}://{}{}", uri.scheme_str().unwrap_or("http"), uri.authority().map(|a| a.as_str()).unwrap_or(""), uri.path())),
            ]);
        }
        ClientSpan { span_id, span: span.is_recording().then_some(span) }
    }
}

/// The span names of the standard methods without allocating.
fn method_name(method: &Method) -> std::borrow::Cow<'static, str> {
    const KNOWN: [&str; 9] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT"];
    match KNOWN.iter().find(|m| **m == method.as_str()) {
        Some(m) => std::borrow::Cow::Borrowed(m),
        None => std::borrow::Cow::Owned(method.as_str().to_owned()),
    }
}

/// The trace context of one request: its trace, the gateway's span in it, and the sampling
/// decision.
#[derive(Debug, Clone)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
    tracestate: Option<HeaderValue>,
}

impl TraceContext {
    /// A fresh, sampled trace (tests and benchmarks).
    pub(crate) fn for_tests() -> Self {
        TraceContext { trace_id: random_trace_id(), span_id: random_span_id(), sampled: true, tracestate: None }
    }

    /// The trace id in lower-case hex (32 characters, no allocation).
    pub fn trace_id(&self) -> TraceIdHex {
        TraceIdHex(self.trace_id)
    }

    /// Whether the trace is sampled.
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// A `traceparent` value naming the gateway's span as parent, for side calls.
    pub fn traceparent(&self) -> HeaderValue {
        traceparent(&self.trace_id, &self.span_id, self.sampled)
    }

    /// Sets `traceparent` (with `parent_span_id` as parent) and the continued `tracestate` on
    /// an upstream request, replacing whatever the client sent.
    pub(crate) fn inject(&self, headers: &mut HeaderMap, parent_span_id: &[u8; 8]) {
        headers.insert(TRACEPARENT, traceparent(&self.trace_id, parent_span_id, self.sampled));
        match &self.tracestate {
            Some(v) => {
                headers.insert(TRACESTATE, v.clone());
            }
            None => {
                headers.remove(TRACESTATE);
            }
        }
    }

    /// The gateway's span id.
    pub(crate) fn span_id(&self) -> &[u8; 8] {
        &self.span_id
    }
}

/// A trace id formatted as hex when displayed.
#[derive(Clone, Copy)]
pub struct TraceIdHex([u8; 16]);

impl fmt::Display for TraceIdHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 32];
        hex_into(&self.0, &mut buf);
        // Only ASCII hex digits were written.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TraceIdHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The recorded server span of a sampled request.
pub(crate) struct ServerSpan {
    span: opentelemetry_sdk::trace::Span,
}

impl ServerSpan {
    /// Records the outcome and ends the span. `route` is the matched route's path pattern.
    /// The span covers the time to the response head: a streamed body may still be flowing.
    pub(crate) fn finish(mut self, method: &Method, route: Option<&str>, status: u16, request_id: &str) {
        let span = &mut self.span;
        if let Some(route) = route {
            span.update_name(format!("{method} {route}"));
            span.set_attribute(KeyValue::new("http.route", route.to_owned()));
        }
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        span.set_attribute(KeyValue::new("specgate.request_id", request_id.to_owned()));
        // Server spans are errors for 5xx only: a 4xx is the client's.
        if status >= 500 {
            span.set_attribute(KeyValue::new("error.type", status.to_string()));
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// The gateway's span around one upstream exchange.
pub(crate) struct ClientSpan {
    span_id: [u8; 8],
    span: Option<opentelemetry_sdk::trace::Span>,
}

impl ClientSpan {
    /// The id to send upstream as the parent.
    pub(crate) fn span_id(&self) -> &[u8; 8] {
        &self.span_id
    }

    /// Ends the span with the upstream's status.
    pub(crate) fn answered(self, status: u16) {
        if let Some(mut span) = self.span {
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
            if status >= 400 {
                span.set_attribute(KeyValue::new("error.type", status.to_string()));
                span.set_status(Status::error(""));
            }
            span.end();
        }
    }

    /// Ends the span for an exchange that failed (`kind`: timeout, connect_error, …).
    pub(crate) fn failed(self, kind: &'static str, detail: &str) {
        if let Some(mut span) = self.span {
            span.set_attribute(KeyValue::new("error.type", kind));
            span.set_status(Status::error(detail.to_owned()));
            span.end();
        }
    }
}

/// A valid incoming parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

fn incoming_parent(headers: &HeaderMap) -> Option<Parent> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let first = values.next()?;
    // Two traceparent headers cannot be told apart: neither is trusted.
    if values.next().is_some() {
        return None;
    }
    parse_traceparent(first.as_bytes())
}

/// Parses a `traceparent` (W3C Trace Context level 1): `00-<32 hex>-<16 hex>-<2 hex>`; later
/// versions may append fields after a `-`. Upper-case hex, all-zero ids and version `ff` are
/// invalid.
fn parse_traceparent(v: &[u8]) -> Option<Parent> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex_byte(v[0], v[1])?;
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let mut trace_id = [0u8; 16];
    for (i, b) in trace_id.iter_mut().enumerate() {
        *b = hex_byte(v[3 + 2 * i], v[4 + 2 * i])?;
    }
    let mut span_id = [0u8; 8];
    for (i, b) in span_id.iter_mut().enumerate() {
        *b = hex_byte(v[36 + 2 * i], v[37 + 2 * i])?;
    }
    let flags = hex_byte(v[53], v[54])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent { trace_id, span_id, sampled: flags & 1 == 1 })
}

fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    let d = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(d(hi)? << 4 | d(lo)?)
}

/// The client's `tracestate`, several header lines joined as one list.
fn joined_tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(TRACESTATE).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(first.clone());
    };
    let mut joined = first.as_bytes().to_vec();
    for v in std::iter::once(second).chain(values) {
        joined.push(b',');
        joined.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
}

/// `00-<trace id>-<span id>-<flags>`, built on the stack; the header value is the only
/// allocation.
fn traceparent(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> HeaderValue {
    let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex_into(trace_id, &mut buf[3..35]);
    hex_into(span_id, &mut buf[36..52]);
    if sampled {
        buf[54] = b'1';
    }
    match HeaderValue::from_bytes(&buf) {
        Ok(v) => v,
        // Only hex digits and dashes were written.
        Err(_) => HeaderValue::from_static("00-00000000000000000000000000000000-0000000000000000-00"),
    }
}

fn random_trace_id() -> [u8; 16] {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

fn random_span_id() -> [u8; 8] {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_valid_traceparents_and_refuses_the_rest() {
        let p = parse_traceparent(VALID.as_bytes()).expect("valid");
        assert!(p.sampled);
        assert_eq!(p.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(traceparent(&p.trace_id, &p.span_id, p.sampled).to_str().ok(), Some(VALID));
        assert!(!parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").expect("valid").sampled);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad}");
        }
        // A later version may carry more fields.
        assert!(parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-abcd").is_some());
        assert!(parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01abcd").is_none());
    }

    #[test]
    fn two_traceparent_headers_are_refused() {
        let mut h = HeaderMap::new();
        h.append(TRACEPARENT, HeaderValue::from_static(VALID));
        assert!(incoming_parent(&h).is_some());
        h.append(TRACEPARENT, HeaderValue::from_static(VALID));
        assert!(incoming_parent(&h).is_none());
    }

    #[test]
    fn samplers_follow_their_rules() {
        let id_low = |low: u64| {
            let mut id = [0xab; 16];
            id[8..].copy_from_slice(&low.to_be_bytes());
            id
        };
        let on = Sampler::parse("always_on", None).expect("sampler");
        let off = Sampler::parse("always_off", None).expect("sampler");
        assert!(on.sampled(Some(false), &id_low(1)), "always_on ignores the parent");
        assert!(!off.sampled(Some(true), &id_low(1)));
        let pb = Sampler::default();
        assert!(pb.sampled(None, &id_low(1)));
        assert!(!pb.sampled(Some(false), &id_low(1)), "parentbased follows the parent");
        let half = Sampler::parse("traceidratio", Some("0.5")).expect("sampler");
        assert!(half.sampled(None, &id_low(1)));
        assert!(!half.sampled(None, &id_low(u64::MAX)));
        assert!(Sampler::parse("traceidratio", Some("1")).expect("sampler").sampled(None, &id_low(u64::MAX)));
        assert!(!Sampler::parse("traceidratio", Some("0")).expect("sampler").sampled(None, &id_low(0)));
        let pb_ratio = Sampler::parse("parentbased_traceidratio", Some("0")).expect("sampler");
        assert!(pb_ratio.sampled(Some(true), &id_low(0)));
        assert!(!pb_ratio.sampled(None, &id_low(0)));
        assert!(Sampler::parse("traceidratio", Some("1.5")).is_err());
        assert!(Sampler::parse("jaeger_remote", None).is_err());
    }

    #[test]
    fn headers_variable_is_parsed_and_decoded() {
        let h = parse_headers("api-key=abc%20def, x-tenant = t1").expect("headers");
        assert_eq!(h, vec![("api-key".to_owned(), "abc def".to_owned()), ("x-tenant".to_owned(), "t1".to_owned())]);
        assert!(parse_headers("novalue").is_err());
    }

    #[test]
    fn endpoint_and_variables_from_the_environment() {
        let env = Environment::from_pairs([("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")]);
        let c = TracingConfig::from_env(&env).expect("config");
        assert_eq!(c.export.map(|e| e.endpoint).as_deref(), Some("http://127.0.0.1:4318/v1/traces"));
        let env = Environment::from_pairs([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9999/custom"),
        ]);
        assert_eq!(TracingConfig::from_env(&env).expect("config").export.map(|e| e.endpoint).as_deref(), Some("http://127.0.0.1:9999/custom"));
        assert!(TracingConfig::from_env(&Environment::from_pairs(Vec::<(String, String)>::new())).expect("config").export.is_none());
        let env = Environment::from_pairs([("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"), ("OTEL_TRACES_EXPORTER", "none")]);
        assert!(TracingConfig::from_env(&env).expect("config").export.is_none());
        let env = Environment::from_pairs([("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318"), ("OTEL_TRACES_SAMPLER", "nope")]);
        assert_eq!(TracingConfig::from_env(&env).map(|_| ()).expect_err("errors").len(), 2);
    }

    #[test]
    fn propagation_without_export_continues_or_mints() {
        let t = Tracing::propagation_only();
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        h.insert(TRACESTATE, HeaderValue::from_static("vendor=1"));
        let req = |h: &HeaderMap| {
            let mut r = http::Request::new(());
            *r.headers_mut() = h.clone();
            r
        };
        let (cx, span) = t.start_request(&req(&h), "http", None);
        assert!(span.is_none());
        assert_eq!(cx.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let mut out = h.clone();
        cx.inject(&mut out, cx.span_id());
        let sent = out.get(TRACEPARENT).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent.ends_with("-01"), "{sent}");
        assert_ne!(&sent[36..52], "00f067aa0ba902b7", "the gateway's span is the new parent");
        assert_eq!(out.get(TRACESTATE).and_then(|v| v.to_str().ok()), Some("vendor=1"));

        h.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        let (cx, _) = t.start_request(&req(&h), "http", None);
        assert_ne!(cx.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let mut out = h.clone();
        cx.inject(&mut out, cx.span_id());
        assert!(out.get(TRACESTATE).is_none(), "tracestate goes with an invalid traceparent");
        let sent = out.get(TRACEPARENT).map(|v| v.as_bytes().to_vec()).unwrap_or_default();
        assert!(parse_traceparent(&sent).is_some());
    }
}
