//! The upstream options of `urlForwardHandler` and `urlRewriteHandler` (specgate extensions):
//! `upstreams`, `timeoutMs`, `connectTimeoutMs`, `retries`, `ejection`, `healthCheck`.
//!
//! Every value is checked here, with its position, so that a gateway never starts with a
//! setting it would have to guess about.

use super::{Loader, Options, at};
use crate::diag::FileId;
use crate::model::{EjectionDef, HealthCheckDef, RetriesDef, UpstreamDef, UpstreamOptions};
use crate::pattern::ParsedPath;
use crate::source::{Kind, Node};
use crate::template::{self, Part};

/// The most upstreams in one list (the runtime's `MAX_UPSTREAMS`).
const MAX_UPSTREAMS: usize = 64;
/// The largest weight (the runtime's `MAX_WEIGHT`).
const MAX_WEIGHT: u64 = 1000;
/// The longest timeout, interval or cool-down: one hour.
const MAX_MS: u64 = 3_600_000;

/// Retries of a route with several upstreams when it sets none: one failover.
const DEFAULT_RETRIES: RetriesDef = RetriesDef { max_retries: 1, budget_percent: 20, backoff_ms: 25 };
const DEFAULT_EJECTION: EjectionDef = EjectionDef { consecutive_failures: 5, cooldown_ms: 10_000, max_cooldown_ms: 300_000 };

impl Loader<'_> {
    /// Reads the upstream options of a forward or rewrite handler, reporting every problem
    /// (the caller lists `catalog::UPSTREAM_OPTIONS` as known once its own options are).
    pub(super) fn upstream_options(&mut self, opts: &mut Options<'_>, parsed: &ParsedPath) -> UpstreamOptions {
        let (node, file) = (opts.node, opts.file);
        let mut out = UpstreamOptions {
            upstreams: node.get("upstreams").map(|v| self.upstream_list(v, file, parsed)).unwrap_or_default(),
            timeout_ms: node.get("timeoutMs").and_then(|v| self.millis(v, "timeoutMs", file, 1)),
            connect_timeout_ms: node.get("connectTimeoutMs").and_then(|v| self.millis(v, "connectTimeoutMs", file, 1)),
            ..UpstreamOptions::default()
        };
        if let (Some(connect), Some(total), Some(v)) = (out.connect_timeout_ms, out.timeout_ms, node.get("connectTimeoutMs"))
            && connect > total
        {
            self.diags.warning(at(file, v.span), format!("`connectTimeoutMs` ({connect}) is longer than `timeoutMs` ({total})"))
                .help("`timeoutMs` bounds the whole exchange, connecting included, so it ends the wait first");
        }
        let several = out.upstreams.len() >= 2;
        out.retries = match node.get("retries") {
            None if several => Some(DEFAULT_RETRIES),
            None => None,
            Some(v) => self.retries(v, file),
        };
        out.ejection = match node.get("ejection") {
            None if several => Some(DEFAULT_EJECTION),
            None => None,
            Some(v) => {
                let e = self.ejection(v, file);
                if e.is_some() && !several {
                    self.diags.warning(at(file, v.span), "`ejection` does nothing on a route with one upstream")
                        .help("ejection takes an upstream out of the rotation of a route's `upstreams`; list at least two");
                    None
                } else {
                    e
                }
            }
        };
        if let Some(v) = node.get("healthCheck") {
            let hc = self.health_check(v, file);
            if hc.is_some() && out.upstreams.is_empty() {
                self.diags.warning(at(file, v.span), "`healthCheck` needs `upstreams`: ignored")
                    .help("list the base URLs to probe in `upstreams` (one or more) instead of `baseUrl`/an absolute `rewritePattern`");
            } else {
                out.health_check = hc;
            }
        }
        out
    }

    /// With `upstreams`, a `rewritePattern` is the path appended to the chosen upstream.
    pub(super) fn check_path_pattern(&mut self, options: &Node, pattern: &template::Template, file: FileId) -> Option<()> {
        let ok = matches!(pattern.parts.first(), Some(Part::Lit(l)) if l.starts_with('/'));
        if !ok {
            let span = options.get("rewritePattern").map_or(options.span, |v| v.span);
            self.diags.error(at(file, span), "with `upstreams`, `rewritePattern` must be a path starting with `/`")
                .help("the path is appended to the base URL of the chosen upstream, e.g. \"/v2/items/${params.id}\"");
            return None;
        }
        Some(())
    }

    fn upstream_list(&mut self, v: &Node, file: FileId, parsed: &ParsedPath) -> Vec<UpstreamDef> {
        let Kind::Array(items) = &v.kind else {
            self.diags.error(at(file, v.span), format!("option `upstreams` must be an array of base URLs, found {}", v.type_name()))
                .help(r#"e.g. "upstreams": [{ "url": "${env.STABLE_URL}", "weight": 90 }, { "url": "${env.CANARY_URL}", "weight": 10 }]"#);
            return Vec::new();
        };
        if items.is_empty() {
            self.diags.error(at(file, v.span), "option `upstreams` lists no upstream").help("list at least one base URL");
            return Vec::new();
        }
        if items.len() > MAX_UPSTREAMS {
            self.diags.error(at(file, v.span), format!("option `upstreams` lists {} upstreams; at most {MAX_UPSTREAMS} are supported", items.len()));
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            let (url_node, weight) = match &item.kind {
                Kind::String(_) => (item, 1),
                Kind::Object(_) => {
                    self.unknown_keys(item, file, "an entry of `upstreams`", &["url", "weight"]);
                    let weight = match item.get("weight") {
                        None => 1,
                        Some(w) => match w.as_u64().filter(|n| (1..=MAX_WEIGHT).contains(n)) {
                            Some(n) => u32::try_from(n).unwrap_or(1),
                            None => {
                                self.diags.error(at(file, w.span), format!("`weight` must be a whole number from 1 to {MAX_WEIGHT}, found {}", shown(w)))
                                    .help("weights are relative: 90 and 10 send 90 % and 10 % of the requests");
                                ok = false;
                                continue;
                            }
                        },
                    };
                    match item.get("url") {
                        Some(u) => (u, weight),
                        None => {
                            self.diags.error(at(file, item.span), "an entry of `upstreams` has no `url`");
                            ok = false;
                            continue;
                        }
                    }
                }
                _ => {
                    self.diags.error(at(file, item.span), format!("an entry of `upstreams` must be a base URL or {{ \"url\", \"weight\" }}, found {}", item.type_name()));
                    ok = false;
                    continue;
                }
            };
            let Some(url) = self.template_value(url_node, "url", file, parsed) else {
                ok = false;
                continue;
            };
            if !url.is_static() {
                self.diags.error(at(file, url_node.span), "an upstream URL must be fixed at start-up: only text and `${env.X}`")
                    .help("request values cannot choose an upstream of a set; use a `rewritePattern` (with `upstreams`, its path) for request-dependent parts");
                ok = false;
                continue;
            }
            let text = url_node.as_str().unwrap_or_default().to_owned();
            if super::after_local_scheme(&text).is_some() {
                self.diags.error(at(file, url_node.span), "an upstream set cannot list a local:// gateway")
                    .help("a gateway of this build needs no balancing or health checks: use it as `baseUrl` of a route without `upstreams`");
                ok = false;
                continue;
            }
            if out.iter().any(|u: &UpstreamDef| u.text == text) {
                self.diags.warning(at(file, url_node.span), format!("upstream `{text}` is listed twice"))
                    .help("to send it more traffic, raise its `weight` instead");
            }
            out.push(UpstreamDef { url, text, weight });
        }
        if ok { out } else { Vec::new() }
    }

    fn retries(&mut self, v: &Node, file: FileId) -> Option<RetriesDef> {
        if let Some(n) = v.as_u64() {
            return match n {
                0 => None,
                1..=5 => Some(RetriesDef { max_retries: u32::try_from(n).unwrap_or(1), ..DEFAULT_RETRIES }),
                _ => {
                    self.diags.error(at(file, v.span), format!("option `retries` must be from 0 to 5, found {n}"));
                    None
                }
            };
        }
        if !matches!(v.kind, Kind::Object(_)) {
            self.diags.error(at(file, v.span), format!("option `retries` must be a number of retries or an object, found {}", v.type_name()))
                .help(r#"e.g. "retries": { "maxRetries": 2, "budgetPercent": 20, "backoffMs": 25 }"#);
            return None;
        }
        self.unknown_keys(v, file, "`retries`", &["maxRetries", "budgetPercent", "backoffMs"]);
        let max_retries = self.bounded(v, "maxRetries", file, 0, 5).unwrap_or(u64::from(DEFAULT_RETRIES.max_retries));
        let budget_percent = self.bounded(v, "budgetPercent", file, 1, 100).unwrap_or(u64::from(DEFAULT_RETRIES.budget_percent));
        let backoff_ms = self.bounded(v, "backoffMs", file, 0, 10_000).unwrap_or(DEFAULT_RETRIES.backoff_ms);
        (max_retries > 0).then(|| RetriesDef {
            max_retries: u32::try_from(max_retries).unwrap_or(1),
            budget_percent: u32::try_from(budget_percent).unwrap_or(20),
            backoff_ms,
        })
    }

    fn ejection(&mut self, v: &Node, file: FileId) -> Option<EjectionDef> {
        if v.as_bool() == Some(false) {
            return None;
        }
        if !matches!(v.kind, Kind::Object(_)) {
            self.diags.error(at(file, v.span), format!("option `ejection` must be an object or false, found {}", v.type_name()))
                .help(r#"e.g. "ejection": { "consecutiveFailures": 5, "cooldownMs": 10000, "maxCooldownMs": 300000 }"#);
            return None;
        }
        self.unknown_keys(v, file, "`ejection`", &["consecutiveFailures", "cooldownMs", "maxCooldownMs"]);
        let d = DEFAULT_EJECTION;
        let consecutive_failures = self.bounded(v, "consecutiveFailures", file, 1, 100).unwrap_or(u64::from(d.consecutive_failures));
        let cooldown_ms = self.bounded(v, "cooldownMs", file, 1, MAX_MS).unwrap_or(d.cooldown_ms);
        let mut max_cooldown_ms = self.bounded(v, "maxCooldownMs", file, 1, MAX_MS).unwrap_or(d.max_cooldown_ms.max(cooldown_ms));
        if max_cooldown_ms < cooldown_ms {
            if let Some(m) = v.get("maxCooldownMs") {
                self.diags.error(at(file, m.span), format!("`maxCooldownMs` ({max_cooldown_ms}) is shorter than `cooldownMs` ({cooldown_ms})"));
            }
            max_cooldown_ms = cooldown_ms;
        }
        Some(EjectionDef { consecutive_failures: u32::try_from(consecutive_failures).unwrap_or(5), cooldown_ms, max_cooldown_ms })
    }

    fn health_check(&mut self, v: &Node, file: FileId) -> Option<HealthCheckDef> {
        if !matches!(v.kind, Kind::Object(_)) {
            self.diags.error(at(file, v.span), format!("option `healthCheck` must be an object, found {}", v.type_name()))
                .help(r#"e.g. "healthCheck": { "path": "/healthz", "intervalMs": 5000, "timeoutMs": 1000, "unhealthyThreshold": 3, "healthyThreshold": 2 }"#);
            return None;
        }
        self.unknown_keys(v, file, "`healthCheck`", &["path", "intervalMs", "timeoutMs", "unhealthyThreshold", "healthyThreshold"]);
        let path = match v.get("path") {
            None => {
                self.diags.error(at(file, v.span), "`healthCheck` has no `path`").help(r#"e.g. "path": "/healthz""#);
                None
            }
            Some(p) => match p.as_str() {
                Some(s) if s.starts_with('/') && !s.contains(['\r', '\n', ' ', '#']) => Some(s.to_owned()),
                _ => {
                    self.diags.error(at(file, p.span), format!("`path` of `healthCheck` must be a path starting with `/`, found {}", shown(p)));
                    None
                }
            },
        };
        let interval_ms = self.bounded(v, "intervalMs", file, 100, MAX_MS).unwrap_or(10_000);
        let timeout_ms = self.bounded(v, "timeoutMs", file, 1, MAX_MS).unwrap_or(2_000.min(interval_ms));
        if timeout_ms > interval_ms
            && let Some(t) = v.get("timeoutMs")
        {
            self.diags.warning(at(file, t.span), format!("`timeoutMs` of `healthCheck` ({timeout_ms}) is longer than its `intervalMs` ({interval_ms})"))
                .help("a probe still waiting when the next is due delays it");
        }
        let unhealthy_threshold = self.bounded(v, "unhealthyThreshold", file, 1, 100).unwrap_or(3);
        let healthy_threshold = self.bounded(v, "healthyThreshold", file, 1, 100).unwrap_or(2);
        Some(HealthCheckDef {
            path: path?,
            interval_ms,
            timeout_ms,
            unhealthy_threshold: u32::try_from(unhealthy_threshold).unwrap_or(3),
            healthy_threshold: u32::try_from(healthy_threshold).unwrap_or(2),
        })
    }

    /// A whole number of milliseconds from `min` to one hour.
    fn millis(&mut self, v: &Node, key: &str, file: FileId, min: u64) -> Option<u64> {
        match v.as_u64().filter(|n| (min..=MAX_MS).contains(n)) {
            Some(n) => Some(n),
            None => {
                self.diags.error(at(file, v.span), format!("option `{key}` must be a whole number of milliseconds from {min} to {MAX_MS}, found {}", shown(v)));
                None
            }
        }
    }

    /// Member `key` of `obj`: a whole number from `min` to `max` (`None` when absent or wrong,
    /// the latter reported).
    fn bounded(&mut self, obj: &Node, key: &str, file: FileId, min: u64, max: u64) -> Option<u64> {
        let v = obj.get(key)?;
        match v.as_u64().filter(|n| (min..=max).contains(n)) {
            Some(n) => Some(n),
            None => {
                self.diags.error(at(file, v.span), format!("`{key}` must be a whole number from {min} to {max}, found {}", shown(v)));
                None
            }
        }
    }

    fn unknown_keys(&mut self, obj: &Node, file: FileId, what: &str, known: &[&str]) {
        for e in obj.entries() {
            if !known.contains(&e.key.as_str()) {
                self.diags.warning(at(file, e.key_span), format!("unknown key `{}` in {what}", e.key))
                    .help(format!("known keys: {}", known.join(", ")));
            }
        }
    }
}

/// A value as a diagnostic shows it: numbers and strings as written, other kinds by name.
fn shown(v: &Node) -> String {
    match &v.kind {
        Kind::Number(n) => n.to_string(),
        Kind::String(s) => format!("\"{s}\""),
        _ => v.type_name().to_owned(),
    }
}
