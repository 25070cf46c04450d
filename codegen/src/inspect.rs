//! `specgate routes` and `specgate explain`: what the generated gateway does with a request,
//! read from the project without building it. `explain` matches with the runtime's own router
//! and path normalisation, so its answer is the gateway's answer.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::{Value, json};
use specgate_runtime::http;
use specgate_runtime::router::{Lookup, Part as RtPart, Pattern, RouteSpec, Router, Seg};

use crate::model::{Handler, PathMode, Project, Route};
use crate::pattern::{Matcher, PartDef, SegDef};
use crate::policies::PolicyKind;
use crate::template::{Expr, Part, Template, UrlPiece};

/// One policy of a route's effective chain.
#[derive(Debug, Clone)]
pub struct ChainEntry {
    /// The policy's name in policies.json.
    pub name: String,
    /// What implements it: a built-in's policy type, or `module#export` for custom code.
    pub kind: String,
}

/// One route as the gateway will serve it.
#[derive(Debug, Clone)]
pub struct RouteRow {
    /// Position in match order (0-based).
    pub index: usize,
    /// Upper-case method.
    pub method: String,
    /// The path as written.
    pub path: String,
    /// `open-api` or `url-pattern`.
    pub path_mode: &'static str,
    /// `operationId`.
    pub operation_id: Option<String>,
    /// Where the operation is written (`file:line:col`).
    pub defined_at: String,
    /// The handler's export (or `module#export` for custom code).
    pub handler: String,
    /// The URL template of the handler, when it has one.
    pub target: Option<String>,
    /// Inbound chain after composite expansion.
    pub inbound: Vec<ChainEntry>,
    /// Outbound chain after composite expansion.
    pub outbound: Vec<ChainEntry>,
    /// The CORS policy (`none` when unset).
    pub cors: String,
    /// Environment variables the route reads (templates, policy options, custom code).
    pub env: Vec<String>,
}

/// The routes of a project in match order.
pub fn rows(project: &Project) -> Vec<RouteRow> {
    let finders = EnvFinders::new();
    project.routes.iter().enumerate().map(|(i, r)| row(project, i, r, &finders)).collect()
}

/// `$env(X)` in options and `environment("X")` in custom code.
struct EnvFinders {
    dollar: Option<regex::Regex>,
    call: Option<regex::Regex>,
}

impl EnvFinders {
    fn new() -> EnvFinders {
        EnvFinders {
            dollar: regex::Regex::new(r"\$env\(([A-Za-z_][A-Za-z0-9_]*)\)").ok(),
            call: regex::Regex::new(r#"environment\(\s*"([A-Za-z_][A-Za-z0-9_]*)"\s*\)"#).ok(),
        }
    }
}

fn row(project: &Project, index: usize, r: &Route, finders: &EnvFinders) -> RouteRow {
    let chain = |list: &[usize]| -> Vec<ChainEntry> {
        list.iter()
            .map(|&i| {
                let p = &project.policies.list[i];
                let kind = match &p.kind {
                    PolicyKind::Builtin { spec, .. } => spec.policy_type.to_owned(),
                    PolicyKind::Custom { module, export, .. } => format!("{}#{export}", module.import),
                    PolicyKind::Composite { .. } | PolicyKind::Invalid => "?".to_owned(),
                };
                ChainEntry { name: p.name.clone(), kind }
            })
            .collect()
    };
    let handler = match &r.handler {
        Handler::Custom { module, export, .. } => format!("{}#{export}", module.import),
        h => h.export().to_owned(),
    };
    let set = |u: &crate::model::UpstreamOptions| {
        let items: Vec<String> = u.upstreams.iter().map(|d| format!("{} ({})", template_text(&d.url, r), d.weight)).collect();
        format!("one of {}", items.join(", "))
    };
    let target = match &r.handler {
        Handler::Forward { base: None, upstream, .. } => Some(set(upstream)),
        Handler::Rewrite { pattern, upstream, .. } if !upstream.upstreams.is_empty() => Some(format!("{} + {}", set(upstream), template_text(pattern, r))),
        h => h.templates().first().map(|t| template_text(t, r)),
    };
    RouteRow {
        index,
        method: r.method.clone(),
        path: r.path.clone(),
        path_mode: if r.mode == PathMode::OpenApi { "open-api" } else { "url-pattern" },
        operation_id: r.operation_id.clone(),
        defined_at: project.files.position(r.method_at.file, r.method_at.span.start),
        handler,
        target,
        inbound: chain(&r.inbound),
        outbound: chain(&r.outbound),
        cors: r.cors_policy.clone().unwrap_or_else(|| "none".to_owned()),
        env: route_env(project, r, finders).into_iter().collect(),
    }
}

/// The environment variables one route reads.
fn route_env(project: &Project, r: &Route, finders: &EnvFinders) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = r.handler.templates().iter().flat_map(|t| t.env_vars()).map(str::to_owned).collect();
    let (dollar, call) = (&finders.dollar, &finders.call);
    let mut modules: Vec<String> = Vec::new();
    if let Handler::Custom { module, .. } = &r.handler {
        modules.push(module.rel.clone());
    }
    for &i in r.inbound.iter().chain(&r.outbound) {
        match &project.policies.list[i].kind {
            PolicyKind::Builtin { options, functions, .. } => {
                if let Some(re) = dollar {
                    out.extend(re.captures_iter(options).map(|c| c[1].to_owned()));
                }
                modules.extend(functions.iter().map(|f| f.module.rel.clone()));
            }
            PolicyKind::Custom { options, module, .. } => {
                if let Some(re) = dollar {
                    out.extend(re.captures_iter(options).map(|c| c[1].to_owned()));
                }
                modules.push(module.rel.clone());
            }
            PolicyKind::Composite { .. } | PolicyKind::Invalid => {}
        }
    }
    if let Some(name) = &r.cors_policy
        && let Some(&c) = project.policies.cors_by_name.get(name)
        && let (Some(re), Some(text)) = (dollar, &project.policies.cors[c].options)
    {
        out.extend(re.captures_iter(text).map(|c| c[1].to_owned()));
    }
    for rel in modules {
        let name = format!("modules/{rel}.rs");
        if let (Some(re), Some(f)) = (call, project.files.iter().find(|f| f.name == name)) {
            out.extend(re.captures_iter(&f.text).map(|c| c[1].to_owned()));
        }
    }
    out
}

/// A template written back in Zuplo's syntax (normalised: `${env.X}`, `${params.id}`, ...).
pub fn template_text(t: &Template, r: &Route) -> String {
    let mut s = String::new();
    for p in &t.parts {
        match p {
            Part::Lit(l) => s.push_str(l),
            Part::Expr { expr, .. } => {
                s.push_str("${");
                s.push_str(&expr_text(expr, r));
                s.push('}');
            }
        }
    }
    s
}

fn expr_text(e: &Expr, r: &Route) -> String {
    match e {
        Expr::Param { index, .. } => format!("params.{}", r.parsed.params.get(*index).map_or("?", |p| p.name.as_str())),
        Expr::Query(q) => format!("query.{q}"),
        Expr::Header(h) => format!("headers.get(\"{h}\")"),
        Expr::Env(n) => format!("env.{n}"),
        Expr::Custom(c) => format!("context.custom.{c}"),
        Expr::UserSub => "request.user.sub".to_owned(),
        Expr::UserData(d) => format!("request.user.data.{d}"),
        Expr::Url(piece) => match piece {
            UrlPiece::Url => "url",
            UrlPiece::Host => "host",
            UrlPiece::Hostname => "hostname",
            UrlPiece::Pathname => "pathname",
            UrlPiece::Port => "port",
            UrlPiece::Search => "search",
            UrlPiece::Method => "method",
            UrlPiece::Origin => "origin",
            UrlPiece::Protocol => "protocol",
        }
        .to_owned(),
        Expr::Encode(inner) => format!("encodeURIComponent({})", expr_text(inner, r)),
    }
}

fn chain_text(chain: &[ChainEntry]) -> String {
    if chain.is_empty() {
        return "-".to_owned();
    }
    chain.iter().map(|c| format!("{} ({})", c.name, c.kind)).collect::<Vec<_>>().join(", ")
}

/// `specgate routes`: one block per route, aligned for reading in a terminal.
pub fn render_table(rows: &[RouteRow]) -> String {
    let mut out = String::new();
    let mw = rows.iter().map(|r| r.method.len()).max().unwrap_or(0);
    let pw = rows.iter().map(|r| r.path.len()).max().unwrap_or(0);
    for r in rows {
        let target = r.target.as_deref().map(|t| format!(" → {t}")).unwrap_or_default();
        let _ = writeln!(out, "{:>3}  {:<mw$}  {:<pw$}  {}{target}", r.index, r.method, r.path, r.handler);
        let pad = " ".repeat(5);
        if !r.inbound.is_empty() {
            let _ = writeln!(out, "{pad}inbound:  {}", chain_text(&r.inbound));
        }
        if !r.outbound.is_empty() {
            let _ = writeln!(out, "{pad}outbound: {}", chain_text(&r.outbound));
        }
        if r.cors != "none" {
            let _ = writeln!(out, "{pad}cors:     {}", r.cors);
        }
        if !r.env.is_empty() {
            let _ = writeln!(out, "{pad}env:      {}", r.env.join(", "));
        }
    }
    let _ = writeln!(out, "{} route{}", rows.len(), if rows.len() == 1 { "" } else { "s" });
    out
}

fn chain_json(chain: &[ChainEntry]) -> Value {
    Value::Array(chain.iter().map(|c| json!({"name": c.name, "kind": c.kind})).collect())
}

/// One route as JSON.
pub fn row_json(r: &RouteRow) -> Value {
    json!({
        "index": r.index,
        "method": r.method,
        "path": r.path,
        "pathMode": r.path_mode,
        "operationId": r.operation_id,
        "definedAt": r.defined_at,
        "handler": r.handler,
        "target": r.target,
        "inbound": chain_json(&r.inbound),
        "outbound": chain_json(&r.outbound),
        "corsPolicy": r.cors,
        "env": r.env,
    })
}

/// `specgate routes --json`.
pub fn rows_json(rows: &[RouteRow]) -> Value {
    Value::Array(rows.iter().map(row_json).collect())
}

/// What the gateway does with one request.
#[derive(Debug)]
pub enum Outcome {
    /// A path the gateway answers itself before routing.
    System(&'static str),
    /// The path cannot be normalised: 400.
    BadPath(String),
    /// A CORS preflight answered before routing.
    Preflight {
        /// The route whose CORS policy answers it, if any.
        route: Option<usize>,
    },
    /// A route handles it.
    Found {
        /// Index in match order.
        route: usize,
        /// Parameters by name.
        params: Vec<(String, String)>,
    },
    /// The path matches routes of other methods: 405 with this Allow list.
    MethodNotAllowed(Vec<&'static str>),
    /// No route matches: 404.
    NotFound,
}

/// The answer of `specgate explain`.
#[derive(Debug)]
pub struct Explanation {
    /// The method asked about.
    pub method: String,
    /// The path and query asked about.
    pub target: String,
    /// The path after normalisation (what routes are matched against).
    pub normalized: Option<String>,
    /// The outcome.
    pub outcome: Outcome,
    /// Other routes whose path pattern matches, with whether they come before the chosen one.
    pub also_matching: Vec<usize>,
    /// The upstream URL the handler would call (environment variables taken from this
    /// process, others left as `${...}`).
    pub upstream: Option<String>,
}

fn leak<T>(v: Vec<T>) -> &'static [T] {
    Box::leak(v.into_boxed_slice())
}

fn leak_str(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// The runtime's description of a route (what the generated crate holds as const data).
fn route_spec(r: &Route) -> RouteSpec {
    let pattern = match &r.parsed.matcher {
        Matcher::Segments(segs) => Pattern::Segments(leak(
            segs.iter()
                .map(|s| match s {
                    SegDef::Lit(l) => Seg::Lit(leak_str(l)),
                    SegDef::Param => Seg::Param,
                    SegDef::Rest => Seg::Rest,
                    SegDef::Mixed(parts) => Seg::Mixed(leak(
                        parts
                            .iter()
                            .map(|p| match p {
                                PartDef::Lit(l) => RtPart::Lit(leak_str(l)),
                                PartDef::Param => RtPart::Param,
                            })
                            .collect(),
                    )),
                })
                .collect(),
        )),
        Matcher::Regex { regex, prefix } => Pattern::Regex { regex: leak_str(regex), prefix: leak(prefix.iter().map(|p| leak_str(p)).collect()) },
    };
    RouteSpec { method: leak_str(&r.method), pattern, params: leak(r.parsed.params.iter().map(|p| leak_str(&p.name)).collect()) }
}

/// Which route `method` `target` (a path with an optional query) reaches, and why.
pub fn explain(project: &Project, method: &str, target: &str) -> Result<Explanation, String> {
    let method_uc = method.to_ascii_uppercase();
    let http_method = http::Method::from_bytes(method_uc.as_bytes()).map_err(|_| format!("`{method}` is not an HTTP method"))?;
    if !target.starts_with('/') {
        return Err(format!("`{target}` is not a path: it must start with `/` (e.g. /users/42?active=true)"));
    }
    let (raw_path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut ex = Explanation {
        method: method_uc.clone(),
        target: target.to_owned(),
        normalized: None,
        outcome: Outcome::NotFound,
        also_matching: Vec::new(),
        upstream: None,
    };
    let get_or_head = matches!(method_uc.as_str(), "GET" | "HEAD");
    let system = match raw_path {
        "/__zuplo/ping" if get_or_head => Some("the liveness answer `ok` (GET /__zuplo/ping), before routing"),
        "/__specgate/ready" if get_or_head => Some("the readiness check (Redis and, when enabled, upstreams), before routing"),
        _ => None,
    };
    if let Some(s) = system {
        ex.outcome = Outcome::System(s);
        return Ok(ex);
    }
    let normalized = match specgate_runtime::path::normalize_path(raw_path) {
        Ok(p) => p.into_owned(),
        Err(e) => {
            ex.outcome = Outcome::BadPath(e.to_string());
            return Ok(ex);
        }
    };
    ex.normalized = Some(normalized.clone());
    let specs: &'static [RouteSpec] = leak(project.routes.iter().map(route_spec).collect());
    let router = Router::new(specs).map_err(|e| e.to_string())?;
    // Every route whose path pattern matches, whatever its method.
    let mut path_matches = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let one = Router::new(std::slice::from_ref(spec)).map_err(|e| e.to_string())?;
        let m = http::Method::from_bytes(spec.method.as_bytes()).map_err(|e| e.to_string())?;
        if matches!(one.lookup(&m, &normalized), Lookup::Found { .. }) {
            path_matches.push(i);
        }
    }
    if http_method == http::Method::OPTIONS
        && !path_matches.is_empty()
        && path_matches.iter().any(|&i| project.routes[i].cors_policy.is_some())
        && !path_matches.iter().any(|&i| project.routes[i].method == "OPTIONS")
    {
        ex.outcome = Outcome::Preflight { route: path_matches.iter().copied().find(|&i| project.routes[i].cors_policy.is_some()) };
        ex.also_matching = path_matches;
        return Ok(ex);
    }
    match router.lookup(&http_method, &normalized) {
        Lookup::Found { route, params } => {
            let r = &project.routes[route];
            let values: Vec<(String, String)> = r
                .parsed
                .params
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name.clone(), params.get(i).map(|c| c.into_owned()).unwrap_or_default()))
                .collect();
            ex.upstream = upstream_url(r, &values, &normalized, query);
            ex.also_matching = path_matches.into_iter().filter(|&i| i != route).collect();
            ex.outcome = Outcome::Found { route, params: values };
        }
        Lookup::MethodNotAllowed { allow } => {
            ex.also_matching = path_matches;
            ex.outcome = Outcome::MethodNotAllowed(allow);
        }
        Lookup::NotFound => ex.outcome = Outcome::NotFound,
    }
    Ok(ex)
}

/// The URL a forward or rewrite handler would call.
fn upstream_url(r: &Route, params: &[(String, String)], pathname: &str, query: Option<&str>) -> Option<String> {
    let render = |t: &Template| -> String {
        let mut s = String::new();
        for p in &t.parts {
            match p {
                Part::Lit(l) => s.push_str(l),
                Part::Expr { expr: Expr::Param { index, .. }, .. } => s.push_str(params.get(*index).map_or("", |p| p.1.as_str())),
                Part::Expr { expr: Expr::Env(n), .. } => match std::env::var(n) {
                    Ok(v) => s.push_str(&v),
                    Err(_) => {
                        let _ = write!(s, "${{env.{n}}}");
                    }
                },
                Part::Expr { expr, .. } => {
                    let _ = write!(s, "${{{}}}", expr_text(expr, r));
                }
            }
        }
        s
    };
    let query = query.filter(|q| !q.is_empty());
    // With several upstreams: the one a fresh gateway picks first (the heaviest, the first of
    // equals).
    let first_upstream = |u: &crate::model::UpstreamOptions| {
        let best = u.upstreams.iter().rev().max_by_key(|d| d.weight)?;
        Some(render(&best.url).trim_end_matches('/').to_owned())
    };
    match &r.handler {
        Handler::Forward { base, forward_search, upstream, .. } => {
            let mut url = match base {
                Some(base) => render(base).trim_end_matches('/').to_owned(),
                None => first_upstream(upstream)?,
            };
            url.push_str(pathname);
            if let (true, Some(q)) = (*forward_search, query) {
                url.push('?');
                url.push_str(q);
            }
            Some(url)
        }
        Handler::Rewrite { pattern, forward_search, upstream, .. } => {
            let mut url = match first_upstream(upstream) {
                Some(base) => base + &render(pattern),
                None => render(pattern),
            };
            if let (true, Some(q)) = (*forward_search, query) {
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str(q);
            }
            Some(url)
        }
        Handler::Redirect { location, .. } => Some(render(location)),
        Handler::WebSocket { pattern } => Some(render(pattern)),
        Handler::OpenApiSpec | Handler::Custom { .. } => None,
    }
}

fn route_title(rows: &[RouteRow], i: usize) -> String {
    let r = &rows[i];
    let op = r.operation_id.as_deref().map(|o| format!(" ({o})")).unwrap_or_default();
    format!("#{i} {} {}{op}, {}", r.method, r.path, r.defined_at)
}

/// `specgate explain` as text.
pub fn render_explanation(project: &Project, ex: &Explanation) -> String {
    let rows = rows(project);
    let mut out = String::new();
    let _ = writeln!(out, "{} {}", ex.method, ex.target);
    if let Some(n) = &ex.normalized {
        let raw = ex.target.split('?').next().unwrap_or("");
        if n != raw {
            let _ = writeln!(out, "  normalised path: {n}");
        }
    }
    match &ex.outcome {
        Outcome::System(what) => {
            let _ = writeln!(out, "  answered by the gateway itself: {what}");
        }
        Outcome::BadPath(e) => {
            let _ = writeln!(out, "  400 Bad Request: the path cannot be normalised ({e}); no route is consulted");
        }
        Outcome::Preflight { route } => {
            let _ = writeln!(out, "  a CORS preflight (with Origin and Access-Control-Request-Method) is answered before routing and before any policy");
            if let Some(i) = route {
                let _ = writeln!(out, "  by the CORS policy `{}` of route {}", rows[*i].cors, route_title(&rows, *i));
            }
            let _ = writeln!(out, "  without those headers: 400 (no OPTIONS route exists on this path)");
        }
        Outcome::Found { route, params } => {
            let r = &rows[*route];
            let _ = writeln!(out, "  route {}", route_title(&rows, *route));
            let earlier: Vec<&usize> = ex.also_matching.iter().filter(|&&i| i < *route).collect();
            let why = if earlier.is_empty() {
                "the first route in match order whose path and method match".to_owned()
            } else {
                format!(
                    "the first route in match order whose path and method match; earlier routes match the path with other methods: {}",
                    earlier.iter().map(|&&i| format!("#{i} {}", rows[i].method)).collect::<Vec<_>>().join(", ")
                )
            };
            let _ = writeln!(out, "  why: {why}");
            for (name, value) in params {
                let _ = writeln!(out, "  params.{name} = {value:?}");
            }
            let target = r.target.as_deref().map(|t| format!(" → {t}")).unwrap_or_default();
            let _ = writeln!(out, "  handler: {}{target}", r.handler);
            if let Some(u) = &ex.upstream {
                let _ = writeln!(out, "  upstream URL: {u}");
            }
            let _ = writeln!(out, "  inbound:  {}", chain_text(&r.inbound));
            let _ = writeln!(out, "  outbound: {}", chain_text(&r.outbound));
            let _ = writeln!(out, "  cors:     {}", r.cors);
            let later: Vec<String> = ex
                .also_matching
                .iter()
                .filter(|&&i| i > *route && rows[i].method == r.method)
                .map(|&i| route_title(&rows, i))
                .collect();
            if !later.is_empty() {
                let _ = writeln!(out, "  shadowed (never reached for this request): {}", later.join("; "));
            }
        }
        Outcome::MethodNotAllowed(allow) => {
            let _ = writeln!(out, "  405 Method Not Allowed, Allow: {}", allow.join(", "));
            for &i in &ex.also_matching {
                let _ = writeln!(out, "  path matches route {}", route_title(&rows, i));
            }
        }
        Outcome::NotFound => {
            let _ = writeln!(out, "  404 Not Found: no route's path pattern matches");
        }
    }
    out
}

/// `specgate explain --json`.
pub fn explanation_json(project: &Project, ex: &Explanation) -> Value {
    let rows = rows(project);
    let (status, kind, route, params) = match &ex.outcome {
        Outcome::System(_) => (200, "system", None, Vec::new()),
        Outcome::BadPath(_) => (400, "bad-path", None, Vec::new()),
        Outcome::Preflight { route } => (200, "cors-preflight", route.map(|i| row_json(&rows[i])), Vec::new()),
        Outcome::Found { route, params } => (0, "route", Some(row_json(&rows[*route])), params.clone()),
        Outcome::MethodNotAllowed(_) => (405, "method-not-allowed", None, Vec::new()),
        Outcome::NotFound => (404, "not-found", None, Vec::new()),
    };
    let mut v = json!({
        "method": ex.method,
        "target": ex.target,
        "normalizedPath": ex.normalized,
        "outcome": kind,
        "route": route,
        "params": params.into_iter().map(|(k, v)| (k, Value::String(v))).collect::<serde_json::Map<_, _>>(),
        "upstreamUrl": ex.upstream,
        "alsoMatching": ex.also_matching.iter().map(|&i| row_json(&rows[i])).collect::<Vec<_>>(),
    });
    if status != 0 {
        v["status"] = json!(status);
    }
    if let Outcome::MethodNotAllowed(allow) = &ex.outcome {
        v["allow"] = json!(allow);
    }
    v
}
