//! CORS: the `corsPolicy` of a route (`anything-goes` or an entry of `corsPolicies`).
//!
//! A [`CorsPolicy`] is built once at start-up from its options (after `$env` resolution,
//! like policy options). The server answers preflights with [`CorsPolicy::preflight`] before
//! any route policy runs, and puts the CORS headers on every response of the route with
//! [`CorsPolicy::apply`], whoever produced it (handler, policy, proxy error). Routes without a
//! CORS policy get [`strip`]: whatever `Access-Control-*` headers the upstream sent are removed.
//!
//! Two rules hold whatever the configuration: an origin that is not allowed is never
//! reflected, and `Access-Control-Allow-Origin: *` never goes with credentials (a policy that
//! allows any origin with credentials reflects the request's origin instead, and refuses the
//! opaque origin `null`).

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use serde::Deserialize;

use crate::Response;
use crate::policy::FromOptions;

/// `Access-Control-Request-Method`.
pub const REQUEST_METHOD: HeaderName = header::ACCESS_CONTROL_REQUEST_METHOD;
/// `Access-Control-Request-Headers`.
pub const REQUEST_HEADERS: HeaderName = header::ACCESS_CONTROL_REQUEST_HEADERS;

/// A list option: an array of strings or one comma-separated string (numbers and booleans,
/// which `$env` resolution may produce, are taken as text).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum List {
    /// `"GET, POST"`.
    Csv(String),
    /// `["GET", "POST"]`.
    Items(Vec<ListItem>),
}

/// One item of a [`List`].
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ListItem {
    /// A string.
    Text(String),
    /// A number (from `$env` resolution).
    Number(serde_json::Number),
    /// A boolean (from `$env` resolution).
    Bool(bool),
}

impl List {
    /// The items, split on commas, trimmed, empty ones dropped.
    pub fn items(&self) -> Vec<String> {
        let raw: Vec<String> = match self {
            List::Csv(s) => vec![s.clone()],
            List::Items(v) => v
                .iter()
                .map(|i| match i {
                    ListItem::Text(s) => s.clone(),
                    ListItem::Number(n) => n.to_string(),
                    ListItem::Bool(b) => b.to_string(),
                })
                .collect(),
        };
        raw.iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// An entry of `corsPolicies` in `config/policies.json` (without its `name`, which the
/// generator passes separately).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CorsPolicyOptions {
    /// Origins allowed to read responses: `https://app.example.com`, `https://*.example.com`
    /// (exactly one subdomain level), or `*`. Required.
    pub allowed_origins: List,
    /// Methods a preflight may ask for; `*` for any. Default: the methods of the routes of the
    /// path that use this policy.
    #[serde(default)]
    pub allowed_methods: Option<List>,
    /// Request headers a preflight may ask for; `*` for any (the requested ones are reflected,
    /// since a literal `*` neither covers `Authorization` nor works with credentials).
    #[serde(default)]
    pub allowed_headers: Option<List>,
    /// Response headers the browser lets the page read; `*` for all of the response's.
    #[serde(default)]
    pub expose_headers: Option<List>,
    /// How long (seconds) a browser may cache a preflight answer.
    #[serde(default)]
    pub max_age: Option<u64>,
    /// Whether the page may send cookies and credentials (`Access-Control-Allow-Credentials`).
    #[serde(default)]
    pub allow_credentials: Option<bool>,
}

/// Which origins a policy allows.
#[derive(Debug, Clone)]
enum Origins {
    /// `*`.
    Any,
    /// Exact origins (lower case) and one-label wildcards.
    List { exact: Vec<Box<str>>, wildcards: Vec<Wildcard> },
}

/// `scheme://*.suffix`: one DNS label, then `suffix` (which starts with `.` and may end with
/// a port). Without a scheme (`*.example.com`), `http` and `https` both match.
#[derive(Debug, Clone)]
struct Wildcard {
    /// `https://`, or `None` for http and https.
    scheme: Option<Box<str>>,
    /// `.example.com` or `.example.com:8443`, lower case.
    suffix: Box<str>,
}

impl Wildcard {
    fn matches(&self, origin: &[u8]) -> bool {
        let rest = match &self.scheme {
            Some(s) => strip_prefix_ci(origin, s.as_bytes()),
            None => strip_prefix_ci(origin, b"https://").or_else(|| strip_prefix_ci(origin, b"http://")),
        };
        let Some(rest) = rest else { return false };
        let suffix = self.suffix.as_bytes();
        if rest.len() <= suffix.len() {
            return false;
        }
        let (label, tail) = rest.split_at(rest.len() - suffix.len());
        tail.eq_ignore_ascii_case(suffix) && label.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    }
}

fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) { s.get(prefix.len()..) } else { None }
}

/// Which methods a preflight may ask for.
#[derive(Debug, Clone)]
enum Methods {
    /// Those of the routes of the path that use the policy (`anything-goes`, or no
    /// `allowedMethods`).
    Route,
    /// `*`.
    Any,
    /// A fixed list, with its header value.
    List(Vec<Method>, HeaderValue),
}

/// `allowedHeaders` / `exposeHeaders`.
#[derive(Debug, Clone)]
enum Headers {
    /// Not set: the header is not sent.
    Unset,
    /// `*`.
    Any,
    /// A fixed list as one header value.
    List(HeaderValue),
}

/// A CORS policy, built once at start-up.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    name: Box<str>,
    origins: Origins,
    methods: Methods,
    allow_headers: Headers,
    expose_headers: Headers,
    max_age: Option<HeaderValue>,
    credentials: bool,
}

impl FromOptions for CorsPolicy {
    type Options = CorsPolicyOptions;

    fn from_options(options: Self::Options, name: &str) -> Result<Self, String> {
        let origins = parse_origins(&options.allowed_origins.items())?;
        let methods = match &options.allowed_methods {
            None => Methods::Route,
            Some(list) => parse_methods(&list.items())?,
        };
        let allow_headers = parse_headers("allowedHeaders", options.allowed_headers.as_ref())?;
        let expose_headers = parse_headers("exposeHeaders", options.expose_headers.as_ref())?;
        let max_age = options.max_age.map(HeaderValue::from);
        Ok(CorsPolicy {
            name: name.into(),
            origins,
            methods,
            allow_headers,
            expose_headers,
            max_age,
            credentials: options.allow_credentials.unwrap_or(false),
        })
    }
}

fn parse_origins(items: &[String]) -> Result<Origins, String> {
    if items.is_empty() {
        return Err("allowedOrigins lists no origin".to_owned());
    }
    let mut exact = Vec::new();
    let mut wildcards = Vec::new();
    for raw in items {
        let o = raw.trim_end_matches('/').to_ascii_lowercase();
        if o == "*" {
            return Ok(Origins::Any);
        }
        if o == "null" {
            exact.push(o.into_boxed_str());
            continue;
        }
        let (scheme, host) = match o.split_once("://") {
            Some((s, h)) => (Some(s), h),
            None if o.starts_with("*.") => (None, o.as_str()),
            None => return Err(format!("`{raw}` in allowedOrigins is not an origin: write scheme://host[:port]")),
        };
        if let Some(s) = scheme
            && !(s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
        {
            return Err(format!("`{raw}` in allowedOrigins has an invalid scheme"));
        }
        let host_ok = |h: &str| {
            !h.is_empty()
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_'))
        };
        if let Some(rest) = host.strip_prefix("*.") {
            if !host_ok(rest) {
                return Err(format!("`{raw}` in allowedOrigins is not an origin pattern: write https://*.example.com"));
            }
            wildcards.push(Wildcard { scheme: scheme.map(|s| format!("{s}://").into_boxed_str()), suffix: format!(".{rest}").into_boxed_str() });
        } else if host.contains('*') {
            return Err(format!("`{raw}` in allowedOrigins: `*` may only stand for the first label of the host (https://*.example.com)"));
        } else if !host_ok(host) {
            return Err(format!("`{raw}` in allowedOrigins is not an origin: write scheme://host[:port] without a path"));
        } else {
            exact.push(o.into_boxed_str());
        }
    }
    Ok(Origins::List { exact, wildcards })
}

fn parse_methods(items: &[String]) -> Result<Methods, String> {
    if items.iter().any(|m| m == "*") {
        return Ok(Methods::Any);
    }
    let mut methods = Vec::new();
    for m in items {
        let upper = m.to_ascii_uppercase();
        let method = Method::from_bytes(upper.as_bytes()).map_err(|_| format!("`{m}` in allowedMethods is not an HTTP method"))?;
        if !methods.contains(&method) {
            methods.push(method);
        }
    }
    if methods.is_empty() {
        return Err("allowedMethods lists no method".to_owned());
    }
    let joined = methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
    let value = HeaderValue::from_str(&joined).map_err(|_| "allowedMethods cannot be sent as a header".to_owned())?;
    Ok(Methods::List(methods, value))
}

fn parse_headers(what: &str, list: Option<&List>) -> Result<Headers, String> {
    let Some(list) = list else { return Ok(Headers::Unset) };
    let items = list.items();
    if items.iter().any(|h| h == "*") {
        return Ok(Headers::Any);
    }
    if items.is_empty() {
        return Ok(Headers::Unset);
    }
    for h in &items {
        HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("`{h}` in {what} is not a header name"))?;
    }
    let value = HeaderValue::from_str(&items.join(", ")).map_err(|_| format!("{what} cannot be sent as a header"))?;
    Ok(Headers::List(value))
}

/// Response headers a page may always read, so listing them is pointless.
const SAFELISTED: [&str; 7] =
    ["cache-control", "content-language", "content-length", "content-type", "expires", "last-modified", "pragma"];

impl CorsPolicy {
    /// The built-in `anything-goes`: any origin (reflected), the methods of the route, any
    /// request header (reflected), every response header exposed, credentials, max-age 600.
    pub fn anything_goes() -> CorsPolicy {
        CorsPolicy {
            name: "anything-goes".into(),
            origins: Origins::Any,
            methods: Methods::Route,
            allow_headers: Headers::Any,
            expose_headers: Headers::Any,
            max_age: Some(HeaderValue::from_static("600")),
            credentials: true,
        }
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the policy allows credentials.
    pub fn allows_credentials(&self) -> bool {
        self.credentials
    }

    /// Whether the answer is `Access-Control-Allow-Origin: *` for everyone (any origin, no
    /// credentials): then it does not depend on the request's origin.
    fn wildcard_answer(&self) -> bool {
        matches!(self.origins, Origins::Any) && !self.credentials
    }

    /// Whether `origin` (the `Origin` header's bytes) may read responses. Exact origins
    /// compare ignoring ASCII case; `https://*.example.com` takes exactly one DNS label in
    /// place of `*`. With `*` and credentials, the opaque origin `null` is refused.
    pub fn allows_origin(&self, origin: &[u8]) -> bool {
        match &self.origins {
            Origins::Any => !(self.credentials && origin.eq_ignore_ascii_case(b"null")),
            Origins::List { exact, wildcards } => {
                exact.iter().any(|e| e.as_bytes().eq_ignore_ascii_case(origin)) || wildcards.iter().any(|w| w.matches(origin))
            }
        }
    }

    /// Whether a preflight may ask for `method` on a route that uses this policy (a policy that
    /// takes its methods from the routes allows the route's own).
    pub fn allows_method(&self, method: &Method) -> bool {
        match &self.methods {
            Methods::Route | Methods::Any => true,
            Methods::List(list, _) => list.contains(method),
        }
    }

    /// Whether the policy takes its allowed methods from the routes that use it; the server
    /// then passes their methods to [`CorsPolicy::preflight`].
    pub fn methods_from_routes(&self) -> bool {
        matches!(self.methods, Methods::Route)
    }

    /// The answer to a preflight from `origin` asking for `method` (and the request headers
    /// `request_headers`) on a route of this policy; `route_methods` are the methods of the
    /// routes of the path that use this policy. `None` when the origin or the method is not
    /// allowed (the server answers 404).
    pub fn preflight(
        &self,
        origin: &HeaderValue,
        method: &Method,
        request_headers: Option<&HeaderValue>,
        route_methods: &[&str],
    ) -> Option<Response> {
        if !self.allows_origin(origin.as_bytes()) || !self.allows_method(method) {
            return None;
        }
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::OK;
        let h = resp.headers_mut();
        let mut vary: Vec<&'static str> = Vec::with_capacity(3);
        if self.wildcard_answer() {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        } else {
            vary.push("Origin");
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
        if self.credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        let methods = match &self.methods {
            Methods::List(_, v) => Some(v.clone()),
            Methods::Route => HeaderValue::from_str(&route_methods.join(", ")).ok(),
            Methods::Any if !self.credentials => Some(HeaderValue::from_static("*")),
            // `*` is a literal method name with credentials: name the requested one.
            Methods::Any => {
                vary.push("Access-Control-Request-Method");
                HeaderValue::from_str(method.as_str()).ok()
            }
        };
        if let Some(m) = methods {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m);
        }
        match &self.allow_headers {
            Headers::Unset => {}
            Headers::List(v) => {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
            }
            Headers::Any => {
                vary.push("Access-Control-Request-Headers");
                if let Some(requested) = request_headers.filter(|v| is_header_list(v.as_bytes())) {
                    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
                }
            }
        }
        if let Some(age) = &self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        if !vary.is_empty()
            && let Ok(v) = HeaderValue::from_str(&vary.join(", "))
        {
            h.insert(header::VARY, v);
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        Some(resp)
    }

    /// Puts the CORS headers on a response of a route of this policy for a request with
    /// `origin` (its `Origin` header): the upstream's `Access-Control-*` headers are replaced,
    /// `Vary: Origin` is added when the answer depends on the origin, and an origin that is
    /// not allowed gets no `Access-Control-Allow-Origin`.
    pub fn apply(&self, origin: Option<&HeaderValue>, resp: &mut Response) {
        let h = resp.headers_mut();
        strip(h);
        if self.wildcard_answer() {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            self.expose(h);
            return;
        }
        add_vary(h, "Origin");
        let Some(origin) = origin.filter(|o| self.allows_origin(o.as_bytes())) else { return };
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        self.expose(h);
    }

    fn expose(&self, h: &mut HeaderMap) {
        match &self.expose_headers {
            Headers::Unset => {}
            Headers::List(v) => {
                h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
            }
            Headers::Any if !self.credentials => {
                h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("*"));
            }
            // `*` is a literal header name with credentials: name the response's headers.
            Headers::Any => {
                let mut names = String::new();
                for name in h.keys() {
                    let n = name.as_str();
                    if SAFELISTED.contains(&n) || n == "set-cookie" || n.starts_with("access-control-") || n == "vary" {
                        continue;
                    }
                    if !names.is_empty() {
                        names.push_str(", ");
                    }
                    names.push_str(n);
                }
                if !names.is_empty()
                    && let Ok(v) = HeaderValue::from_str(&names)
                {
                    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
                }
            }
        }
    }
}

/// A comma-separated list of header names (what a browser sends in
/// `Access-Control-Request-Headers`), so reflecting it sends nothing else.
fn is_header_list(v: &[u8]) -> bool {
    v.iter().all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~, ".contains(&b))
}

/// Whether a request is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    *method == Method::OPTIONS && headers.contains_key(header::ORIGIN) && headers.contains_key(REQUEST_METHOD)
}

fn is_cors_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("access-control-")
}

/// Removes every `Access-Control-*` header (what a route without CORS does to the upstream's).
pub fn strip(headers: &mut HeaderMap) {
    if !headers.keys().any(is_cors_header) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| is_cors_header(n)).cloned().collect();
    for n in names {
        headers.remove(n);
    }
}

/// Adds `name` to `Vary`, keeping what is there (several `Vary` lines become one list); does
/// nothing when `Vary` already names it or is `*`.
pub fn add_vary(headers: &mut HeaderMap, name: &'static str) {
    let mut existing: Vec<&str> = Vec::new();
    for v in headers.get_all(header::VARY) {
        for item in v.to_str().unwrap_or("").split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" || item.eq_ignore_ascii_case(name) {
                return;
            }
            existing.push(item);
        }
    }
    if existing.is_empty() {
        headers.insert(header::VARY, HeaderValue::from_static(name));
        return;
    }
    existing.push(name);
    if let Ok(v) = HeaderValue::from_str(&existing.join(", ")) {
        headers.insert(header::VARY, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::test_util::{build, must, response};
    use serde_json::json;

    fn policy(options: serde_json::Value) -> CorsPolicy {
        must(build::<CorsPolicy>(options))
    }

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("invalid"))
    }

    fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
        r.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn exact_origins_and_one_level_wildcards() {
        let p = policy(json!({"allowedOrigins": "https://app.example.com, https://*.example.org/, http://localhost:3000"}));
        let ok = |o: &str| p.allows_origin(o.as_bytes());
        assert!(ok("https://app.example.com"));
        assert!(ok("HTTPS://APP.example.com"));
        assert!(ok("http://localhost:3000"));
        assert!(!ok("http://localhost:3001"));
        assert!(!ok("http://app.example.com"), "scheme differs");
        assert!(!ok("https://app.example.com.evil.com"));
        assert!(!ok("https://app.example.com:443"));
        assert!(ok("https://a.example.org"));
        assert!(ok("https://a-1.example.org"));
        assert!(!ok("https://a.b.example.org"), "two levels");
        assert!(!ok("https://example.org"), "the apex");
        assert!(!ok("https://.example.org"), "empty label");
        assert!(!ok("https://evil-example.org"));
        assert!(!ok("https://a.example.org.evil.com"));
        assert!(!ok("http://a.example.org"), "scheme of the pattern");
        assert!(!ok("https://a.example.org:8443"), "port of the pattern");
        assert!(!ok("https://a@b.example.org"));
        assert!(!ok("null"));
        assert!(!ok(""));
    }

    #[test]
    fn wildcards_with_ports_or_without_scheme() {
        let p = policy(json!({"allowedOrigins": ["http://*.localhost:8080", "*.example.net"]}));
        let ok = |o: &str| p.allows_origin(o.as_bytes());
        assert!(ok("http://app.localhost:8080"));
        assert!(!ok("http://app.localhost"));
        assert!(!ok("http://app.localhost:80801"));
        assert!(ok("https://x.example.net"));
        assert!(ok("http://x.example.net"));
        assert!(!ok("ftp://x.example.net"));
        assert!(!ok("https://example.net"));
    }

    #[test]
    fn any_origin_refuses_null_with_credentials() {
        let p = policy(json!({"allowedOrigins": "*", "allowCredentials": true}));
        assert!(p.allows_origin(b"https://anything.test"));
        assert!(!p.allows_origin(b"null"));
        let p = policy(json!({"allowedOrigins": ["*"]}));
        assert!(p.allows_origin(b"null"));
        assert!(CorsPolicy::anything_goes().allows_origin(b"http://x.test"));
        assert!(!CorsPolicy::anything_goes().allows_origin(b"null"));
    }

    #[test]
    fn bad_options_fail_at_start_up() {
        for bad in [
            json!({}),
            json!({"allowedOrigins": ""}),
            json!({"allowedOrigins": []}),
            json!({"allowedOrigins": "example.com"}),
            json!({"allowedOrigins": "https://a.*.example.com"}),
            json!({"allowedOrigins": "https://*"}),
            json!({"allowedOrigins": "https://example.com/path"}),
            json!({"allowedOrigins": "1https://example.com"}),
            json!({"allowedOrigins": "*", "allowedMethods": "GET, NOT A METHOD"}),
            json!({"allowedOrigins": "*", "allowedHeaders": ["x ok"]}),
            json!({"allowedOrigins": "*", "maxAge": -1}),
            json!({"allowedOrigins": "*", "allowCredentials": "yes"}),
            json!({"allowedOrigins": "*", "unknown": 1}),
            json!({"allowedOrigins": {"a": 1}}),
        ] {
            assert!(build::<CorsPolicy>(bad.clone()).is_err(), "{bad}");
        }
        // `$env` resolution turns "600" into a number and "true" into a boolean.
        let p = policy(json!({"allowedOrigins": ["https://a.test"], "allowedHeaders": ["x-a", 1], "maxAge": 600, "allowCredentials": true}));
        assert!(p.allows_credentials());
        assert_eq!(p.name(), "test-policy");
    }

    #[test]
    fn preflight_headers_of_a_named_policy() {
        let p = policy(json!({
            "allowedOrigins": ["https://app.example.com"],
            "allowedMethods": "get, PUT,post",
            "allowedHeaders": ["Content-Type", "X-Custom"],
            "exposeHeaders": "X-Exposed",
            "maxAge": 3600,
            "allowCredentials": true
        }));
        let origin = hv("https://app.example.com");
        let r = p.preflight(&origin, &Method::PUT, Some(&hv("x-custom")), &[]);
        let Some(r) = r else { panic!("preflight refused") };
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "access-control-allow-origin"), Some("https://app.example.com"));
        assert_eq!(header(&r, "access-control-allow-methods"), Some("GET, PUT, POST"));
        assert_eq!(header(&r, "access-control-allow-headers"), Some("Content-Type, X-Custom"));
        assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
        assert_eq!(header(&r, "access-control-max-age"), Some("3600"));
        assert_eq!(header(&r, "vary"), Some("Origin"));
        assert_eq!(header(&r, "access-control-expose-headers"), None, "expose is for actual responses");
        assert!(p.preflight(&origin, &Method::DELETE, None, &[]).is_none(), "method not listed");
        assert!(p.preflight(&hv("https://evil.example.com"), &Method::GET, None, &[]).is_none());
    }

    #[test]
    fn preflight_of_anything_goes_reflects() {
        let p = CorsPolicy::anything_goes();
        let origin = hv("http://127.0.0.1:5000");
        let r = p.preflight(&origin, &Method::PUT, Some(&hv("authorization, x-custom")), &["GET", "PUT"]);
        let Some(r) = r else { panic!("preflight refused") };
        assert_eq!(header(&r, "access-control-allow-origin"), Some("http://127.0.0.1:5000"));
        assert_eq!(header(&r, "access-control-allow-methods"), Some("GET, PUT"));
        assert_eq!(header(&r, "access-control-allow-headers"), Some("authorization, x-custom"));
        assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
        assert_eq!(header(&r, "access-control-max-age"), Some("600"));
        assert_eq!(header(&r, "vary"), Some("Origin, Access-Control-Request-Headers"));
        // Nothing but a header list is reflected.
        let r = p.preflight(&origin, &Method::PUT, Some(&hv("x-a; evil=1")), &["PUT"]);
        assert_eq!(r.as_ref().and_then(|r| header(r, "access-control-allow-headers")), None);
    }

    #[test]
    fn wildcard_origin_without_credentials_answers_star() {
        let p = policy(json!({"allowedOrigins": "*", "allowedMethods": "*", "exposeHeaders": "*"}));
        let r = p.preflight(&hv("https://x.test"), &Method::PATCH, None, &[]);
        let Some(r) = r else { panic!("preflight refused") };
        assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
        assert_eq!(header(&r, "access-control-allow-methods"), Some("*"));
        assert_eq!(header(&r, "access-control-allow-credentials"), None);
        assert_eq!(header(&r, "vary"), None);
        let mut resp = response(200, &[("x-a", "1")], "");
        p.apply(None, &mut resp);
        assert_eq!(header(&resp, "access-control-allow-origin"), Some("*"));
        assert_eq!(header(&resp, "access-control-expose-headers"), Some("*"));
        assert_eq!(header(&resp, "vary"), None);
    }

    #[test]
    fn wildcard_origin_with_credentials_never_answers_star() {
        let p = policy(json!({"allowedOrigins": "*", "allowedMethods": "*", "allowCredentials": true, "exposeHeaders": "*"}));
        let r = p.preflight(&hv("https://x.test"), &Method::PATCH, None, &[]);
        let Some(r) = r else { panic!("preflight refused") };
        assert_eq!(header(&r, "access-control-allow-origin"), Some("https://x.test"));
        assert_eq!(header(&r, "access-control-allow-methods"), Some("PATCH"));
        assert_eq!(header(&r, "vary"), Some("Origin, Access-Control-Request-Method"));
        let mut resp = response(200, &[("x-a", "1"), ("content-type", "text/plain"), ("x-b", "2")], "");
        p.apply(Some(&hv("https://x.test")), &mut resp);
        assert_eq!(header(&resp, "access-control-allow-origin"), Some("https://x.test"));
        assert_eq!(header(&resp, "access-control-allow-credentials"), Some("true"));
        assert_eq!(header(&resp, "access-control-expose-headers"), Some("x-a, x-b"));
        assert_eq!(header(&resp, "vary"), Some("Origin"));
    }

    #[test]
    fn apply_replaces_upstream_headers_and_keeps_vary() {
        let p = policy(json!({"allowedOrigins": "https://app.example.com", "exposeHeaders": ["X-Exposed"], "allowCredentials": true}));
        let upstream = [
            ("access-control-allow-origin", "*"),
            ("access-control-expose-headers", "x-secret"),
            ("access-control-max-age", "99"),
            ("vary", "Accept-Encoding"),
        ];
        let mut resp = response(401, &upstream, "");
        p.apply(Some(&hv("https://app.example.com")), &mut resp);
        assert_eq!(resp.status(), 401);
        assert_eq!(header(&resp, "access-control-allow-origin"), Some("https://app.example.com"));
        assert_eq!(header(&resp, "access-control-allow-credentials"), Some("true"));
        assert_eq!(header(&resp, "access-control-expose-headers"), Some("X-Exposed"));
        assert_eq!(header(&resp, "access-control-max-age"), None);
        assert_eq!(header(&resp, "vary"), Some("Accept-Encoding, Origin"));

        // A disallowed origin: no CORS header at all, never the upstream's `*`.
        let mut resp = response(200, &upstream, "");
        p.apply(Some(&hv("https://evil.example.com")), &mut resp);
        assert!(resp.headers().keys().all(|k| !k.as_str().starts_with("access-control-")), "{:?}", resp.headers());
        assert_eq!(header(&resp, "vary"), Some("Accept-Encoding, Origin"));

        // No Origin: nothing added but Vary.
        let mut resp = response(200, &[], "");
        p.apply(None, &mut resp);
        assert_eq!(resp.headers().len(), 1);
        assert_eq!(header(&resp, "vary"), Some("Origin"));
    }

    #[test]
    fn vary_is_extended_once() {
        let mut h = HeaderMap::new();
        add_vary(&mut h, "Origin");
        add_vary(&mut h, "Origin");
        assert_eq!(h.get_all(header::VARY).iter().count(), 1);
        assert_eq!(h.get(header::VARY), Some(&HeaderValue::from_static("Origin")));
        let mut h = HeaderMap::new();
        h.append(header::VARY, HeaderValue::from_static("Accept"));
        h.append(header::VARY, HeaderValue::from_static("Accept-Language, Cookie"));
        add_vary(&mut h, "Origin");
        assert_eq!(h.get_all(header::VARY).iter().count(), 1);
        assert_eq!(h.get(header::VARY), Some(&HeaderValue::from_static("Accept, Accept-Language, Cookie, Origin")));
        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("*"));
        add_vary(&mut h, "Origin");
        assert_eq!(h.get(header::VARY), Some(&HeaderValue::from_static("*")));
        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("origin"));
        add_vary(&mut h, "Origin");
        assert_eq!(h.get(header::VARY), Some(&HeaderValue::from_static("origin")));
    }

    #[test]
    fn strip_removes_only_cors_headers() {
        let mut resp = response(200, &[("access-control-allow-origin", "*"), ("Access-Control-Allow-Credentials", "true"), ("x-a", "1")], "");
        strip(resp.headers_mut());
        assert_eq!(resp.headers().len(), 1);
        assert_eq!(header(&resp, "x-a"), Some("1"));
    }

    #[test]
    fn preflight_detection() {
        let mut h = HeaderMap::new();
        assert!(!is_preflight(&Method::OPTIONS, &h));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://a.test"));
        assert!(!is_preflight(&Method::OPTIONS, &h));
        h.insert(REQUEST_METHOD, HeaderValue::from_static("PUT"));
        assert!(is_preflight(&Method::OPTIONS, &h));
        assert!(!is_preflight(&Method::GET, &h));
    }
}
