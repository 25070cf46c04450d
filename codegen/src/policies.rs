//! `config/policies.json`: every policy with typed, checked options; composite expansion;
//! resolution of route policy lists into straight chains.

use std::collections::BTreeMap;
use std::path::Path;

use crate::catalog::{self, Builtin, OptType, Side};
use crate::diag::{Diagnostics, Files, Location};
use crate::modules::{self, ModuleRef, Role};
use crate::source::{Kind, Node, Span};

/// The module of the built-in handlers and policies.
pub const BUILTIN_MODULE: &str = "$import(@zuplo/runtime)";

/// A policy of `policies.json`.
#[derive(Debug, Clone)]
pub struct PolicyDef {
    /// Its name.
    pub name: String,
    /// Where the name is.
    pub at: Location,
    /// What implements it.
    pub kind: PolicyKind,
}

/// What implements a policy.
#[derive(Debug, Clone)]
pub enum PolicyKind {
    /// A built-in with checked options (JSON text with unknown keys removed).
    Builtin {
        /// The catalog entry.
        spec: &'static Builtin,
        /// Options as JSON text.
        options: String,
        /// Custom functions the policy calls (`identifier` of the rate-limit and quota
        /// policies).
        functions: Vec<PolicyFn>,
        /// The JSON Schema file of validate-json-schema-inbound (`validator` option) as
        /// written, and where.
        schema_file: Option<(String, Location)>,
        /// That file's schema, bundled (filled in by the project loader).
        json_schema: Option<String>,
    },
    /// `composite-inbound` / `composite-outbound`.
    Composite {
        /// Side it may be used on.
        side: Side,
        /// Member names and where they are written.
        members: Vec<(String, Location)>,
    },
    /// Custom code.
    Custom {
        /// The module.
        module: ModuleRef,
        /// The export.
        export: String,
        /// Options as JSON text.
        options: String,
        /// Where the module reference is.
        module_at: Location,
    },
    /// Errors were reported; the name stays defined so routes do not get extra errors.
    Invalid,
}

/// A custom function a built-in policy calls.
#[derive(Debug, Clone)]
pub struct PolicyFn {
    /// The module.
    pub module: ModuleRef,
    /// The export.
    pub export: String,
    /// What it is used as (decides its signature and how it is wired in).
    pub role: Role,
    /// Where the module reference is.
    pub at: Location,
}

/// Every policy by name, in file order.
#[derive(Debug, Default)]
pub struct PolicySet {
    /// Definitions in file order.
    pub list: Vec<PolicyDef>,
    /// Name → index.
    pub by_name: BTreeMap<String, usize>,
    /// `corsPolicies`, in file order.
    pub cors: Vec<CorsDef>,
    /// CORS policy name → index into [`PolicySet::cors`].
    pub cors_by_name: BTreeMap<String, usize>,
}

/// An entry of `corsPolicies`.
#[derive(Debug, Clone)]
pub struct CorsDef {
    /// Its name.
    pub name: String,
    /// Where the name is.
    pub at: Location,
    /// Its options as JSON text (without `name`), `None` when errors were reported.
    pub options: Option<String>,
}

/// The CORS policies every project has; `corsPolicies` may not redefine them.
pub const BUILTIN_CORS: [&str; 2] = ["none", "anything-goes"];

use crate::catalog::CORS_FIELDS;

fn at(file: usize, span: Span) -> Location {
    Location { file, span }
}

/// Reads the policies of `node` (the parsed policies.json of `file`).
pub fn load(root: &Path, file: usize, node: &Node, files: &Files, diags: &mut Diagnostics) -> PolicySet {
    let mut out = PolicySet::default();
    // Three forms in the wild: {"policies": [...], "corsPolicies": [...]}, a bare array, {}.
    let list = match &node.kind {
        Kind::Array(items) => Some(items.as_slice()),
        Kind::Object(_) => match node.get("policies") {
            None => None,
            Some(p) => match &p.kind {
                Kind::Array(items) => Some(items.as_slice()),
                _ => {
                    diags.error(at(file, p.span), format!("`policies` must be an array, found {}", p.type_name()));
                    None
                }
            },
        },
        _ => {
            diags.error(at(file, node.span), format!("policies.json must hold an object or an array, found {}", node.type_name()));
            None
        }
    };
    if let Kind::Object(_) = &node.kind
        && let Some(cors) = node.get("corsPolicies")
    {
        load_cors(file, cors, files, diags, &mut out);
    }
    for item in list.unwrap_or(&[]) {
        if !matches!(item.kind, Kind::Object(_)) {
            diags.error(at(file, item.span), format!("a policy must be an object, found {}", item.type_name()));
            continue;
        }
        let Some(name_node) = item.get("name") else {
            diags.error(at(file, item.span), "policy without a `name`");
            continue;
        };
        let Some(name) = name_node.as_str() else {
            diags.error(at(file, name_node.span), format!("a policy `name` must be a string, found {}", name_node.type_name()));
            continue;
        };
        if let Some(&first) = out.by_name.get(name) {
            let first_at = out.list[first].at;
            let line = crate::source::LineIndex::new(&files.get(first_at.file).text).line_col(first_at.span.start).0;
            diags.error(at(file, name_node.span), format!("policy `{name}` is defined twice"))
                .label(format!("first defined at line {line}"));
            continue;
        }
        let kind = policy_kind(root, file, name, item, diags);
        out.by_name.insert(name.to_owned(), out.list.len());
        out.list.push(PolicyDef { name: name.to_owned(), at: at(file, name_node.span), kind });
    }
    out
}

/// Reads `corsPolicies`: names unique and not built-in, fields typed like policy options
/// (`$env(X)` allowed), unknown fields warned about.
fn load_cors(file: usize, node: &Node, files: &Files, diags: &mut Diagnostics, out: &mut PolicySet) {
    let Kind::Array(items) = &node.kind else {
        diags.error(at(file, node.span), format!("`corsPolicies` must be an array, found {}", node.type_name()));
        return;
    };
    for item in items {
        if !matches!(item.kind, Kind::Object(_)) {
            diags.error(at(file, item.span), format!("a CORS policy must be an object, found {}", item.type_name()));
            continue;
        }
        let Some(name_node) = item.get("name") else {
            diags.error(at(file, item.span), "CORS policy without a `name`")
                .help(r#"write { "name": "my-cors", "allowedOrigins": ["https://app.example.com"], ... }"#);
            continue;
        };
        let Some(name) = name_node.as_str() else {
            diags.error(at(file, name_node.span), format!("a CORS policy `name` must be a string, found {}", name_node.type_name()));
            continue;
        };
        if BUILTIN_CORS.contains(&name) {
            diags.error(at(file, name_node.span), format!("`{name}` is a built-in CORS policy and cannot be redefined"))
                .help("choose another name");
            continue;
        }
        if let Some(&first) = out.cors_by_name.get(name) {
            let first_at = out.cors[first].at;
            let line = crate::source::LineIndex::new(&files.get(first_at.file).text).line_col(first_at.span.start).0;
            diags.error(at(file, name_node.span), format!("CORS policy `{name}` is defined twice"))
                .label(format!("first defined at line {line}"));
            continue;
        }
        let mut ok = true;
        let mut kept = serde_json::Map::new();
        for e in item.entries() {
            if e.key != "name" && !CORS_FIELDS.iter().any(|f| f.name == e.key) {
                diags.warning(at(file, e.key_span), format!("unknown field `{}` of CORS policy `{name}`", e.key))
                    .help(format!("known fields: name, {}", CORS_FIELDS.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")));
            }
        }
        for &crate::catalog::OptSpec { name: key, ty, required, .. } in CORS_FIELDS {
            let Some(v) = item.get(key) else {
                if required {
                    diags.error(at(file, item.span), format!("CORS policy `{name}` has no `{key}`"))
                        .help(format!("`{key}`: {} (`*`, https://app.example.com or https://*.example.com)", ty.describe()));
                    ok = false;
                }
                continue;
            };
            if let Err((span, extra)) = check_type(ty, v) {
                diags.error(at(file, span), format!("`{key}` of CORS policy `{name}` must be {}{extra}", ty.describe()));
                ok = false;
                continue;
            }
            kept.insert(key.to_owned(), v.to_value());
        }
        out.cors_by_name.insert(name.to_owned(), out.cors.len());
        out.cors.push(CorsDef {
            name: name.to_owned(),
            at: at(file, name_node.span),
            options: ok.then(|| serde_json::Value::Object(kept).to_string()),
        });
    }
}

fn policy_kind(root: &Path, file: usize, name: &str, item: &Node, diags: &mut Diagnostics) -> PolicyKind {
    let Some(handler) = item.get("handler") else {
        diags.error(at(file, item.span), format!("policy `{name}` has no `handler`"))
            .help(r#"add "handler": { "export": "...", "module": "$import(@zuplo/runtime)", "options": { ... } }"#);
        return PolicyKind::Invalid;
    };
    let str_field = |key: &str, diags: &mut Diagnostics| -> Option<(String, Span)> {
        match handler.get(key) {
            Some(v) => match v.as_str() {
                Some(s) => Some((s.to_owned(), v.span)),
                None => {
                    diags.error(at(file, v.span), format!("`handler.{key}` must be a string, found {}", v.type_name()));
                    None
                }
            },
            None => {
                diags.error(at(file, handler.span), format!("policy `{name}` has no `handler.{key}`"));
                None
            }
        }
    };
    let (Some((export, export_span)), Some((module, module_span))) = (str_field("export", diags), str_field("module", diags)) else {
        return PolicyKind::Invalid;
    };
    let empty = Node { span: handler.span, kind: Kind::Object(Vec::new()) };
    let options = handler.get("options").unwrap_or(&empty);
    if !matches!(options.kind, Kind::Object(_)) {
        diags.error(at(file, options.span), format!("policy `options` must be an object, found {}", options.type_name()));
        return PolicyKind::Invalid;
    }
    if module != BUILTIN_MODULE {
        return match modules::resolve(root, &module) {
            Ok(m) => PolicyKind::Custom {
                module: m,
                export,
                options: options.to_value().to_string(),
                module_at: at(file, module_span),
            },
            Err(e) => {
                diags.error(at(file, module_span), e);
                PolicyKind::Invalid
            }
        };
    }
    if export == "CompositeInboundPolicy" || export == "CompositeOutboundPolicy" {
        let side = if export == "CompositeInboundPolicy" { Side::Inbound } else { Side::Outbound };
        let Some(list) = options.get("policies") else {
            diags.error(at(file, options.span), "required option `policies` is missing")
                .help("a composite policy lists the policies it groups: \"policies\": [\"a\", \"b\"]");
            return PolicyKind::Invalid;
        };
        let Kind::Array(items) = &list.kind else {
            diags.error(at(file, list.span), format!("option `policies` must be an array of policy names, found {}", list.type_name()));
            return PolicyKind::Invalid;
        };
        let mut members = Vec::new();
        for i in items {
            match i.as_str() {
                Some(s) => members.push((s.to_owned(), at(file, i.span))),
                None => {
                    diags.error(at(file, i.span), format!("a policy name must be a string, found {}", i.type_name()));
                }
            }
        }
        unknown_keys(options, &["policies"], &export, file, diags);
        return PolicyKind::Composite { side, members };
    }
    let Some(spec) = catalog::find(&export) else {
        let msg = if catalog::NOT_YET.contains(&export.as_str()) {
            format!("`{export}` is not supported by this version of specgate")
        } else {
            format!("`{export}` is not a policy of $import(@zuplo/runtime)")
        };
        let supported: Vec<&str> = catalog::BUILTINS.iter().map(|b| b.export).collect();
        diags.error(at(file, export_span), msg)
            .help(format!("supported built-ins: {}, CompositeInboundPolicy, CompositeOutboundPolicy; or custom code from $import(./modules/...)", supported.join(", ")));
        return PolicyKind::Invalid;
    };
    let functions = if spec.export == "QuotaInboundPolicy" {
        match quota_functions(root, file, options, diags) {
            Some(f) => f,
            None => return PolicyKind::Invalid,
        }
    } else {
        match options.get("identifier") {
            None => Vec::new(),
            Some(id) => {
                let export = id.get("export").and_then(Node::as_str);
                let module = id.get("module").and_then(Node::as_str);
                match (export, module) {
                    (Some(e), Some(m)) => match modules::resolve(root, m) {
                        Ok(r) => {
                            let role = if spec.export == "ComplexRateLimitInboundPolicy" { Role::ComplexRateLimitIdentifier } else { Role::RateLimitIdentifier };
                            vec![PolicyFn { module: r, export: e.to_owned(), role, at: at(file, id.get("module").map_or(id.span, |n| n.span)) }]
                        }
                        Err(msg) => {
                            diags.error(at(file, id.span), msg);
                            return PolicyKind::Invalid;
                        }
                    },
                    _ => {
                        diags.error(at(file, id.span), "`identifier` needs `export` and `module`")
                            .help(r#"write "identifier": { "export": "byCustomer", "module": "$import(./modules/limits)" }"#);
                        return PolicyKind::Invalid;
                    }
                }
            }
        }
    };
    if options.get("rateLimitBy").and_then(Node::as_str) == Some("function") && functions.is_empty() {
        diags.error(at(file, options.span), "rateLimitBy \"function\" needs an `identifier` {export, module}");
        return PolicyKind::Invalid;
    }
    match check_options(spec, options, file, diags) {
        Some(json) => {
            let schema_file = (spec.export == "ValidateJsonSchemaInbound")
                .then(|| options.get("validator"))
                .flatten()
                .and_then(|v| Some((v.as_str()?.to_owned(), at(file, v.span))));
            PolicyKind::Builtin { spec, options: json, functions, schema_file, json_schema: None }
        }
        None => PolicyKind::Invalid,
    }
}

/// The functions of a quota policy's `identifier` {module, getQuotaDetailExport,
/// getAnchorDateExport}: the detail function when `quotaBy` is `function`, the anchor function
/// when `quotaAnchorMode` is `function` (each export defaulting to Zuplo's name).
fn quota_functions(root: &Path, file: usize, options: &Node, diags: &mut Diagnostics) -> Option<Vec<PolicyFn>> {
    let by_fn = options.get("quotaBy").and_then(Node::as_str) == Some("function");
    let anchor_fn = options.get("quotaAnchorMode").and_then(Node::as_str) == Some("function");
    let Some(id) = options.get("identifier") else {
        if by_fn || anchor_fn {
            let which = if by_fn { "quotaBy" } else { "quotaAnchorMode" };
            diags.error(at(file, options.span), format!("{which} \"function\" needs an `identifier` {{module, getQuotaDetailExport, getAnchorDateExport}}"))
                .help(r#"write "identifier": { "module": "$import(./modules/quotas)", "getQuotaDetailExport": "getQuotaDetail" }"#);
            return None;
        }
        return Some(Vec::new());
    };
    let field = |key: &str, diags: &mut Diagnostics| -> Result<Option<String>, ()> {
        match id.get(key) {
            None => Ok(None),
            Some(v) => match v.as_str() {
                Some(s) => Ok(Some(s.to_owned())),
                None => {
                    diags.error(at(file, v.span), format!("`identifier.{key}` must be a string, found {}", v.type_name()));
                    Err(())
                }
            },
        }
    };
    let module = field("module", diags).ok()?;
    let detail = field("getQuotaDetailExport", diags).ok()?;
    let anchor = field("getAnchorDateExport", diags).ok()?;
    for e in id.entries() {
        if !["module", "getQuotaDetailExport", "getAnchorDateExport"].contains(&e.key.as_str()) {
            diags.warning(at(file, e.key_span), format!("unknown key `{}` of the quota `identifier`", e.key))
                .help("known keys: module, getQuotaDetailExport, getAnchorDateExport");
        }
    }
    let Some(module) = module else {
        diags.error(at(file, id.span), "`identifier` needs `module`")
            .help(r#"write "identifier": { "module": "$import(./modules/quotas)", "getQuotaDetailExport": "getQuotaDetail" }"#);
        return None;
    };
    let module_at = at(file, id.get("module").map_or(id.span, |n| n.span));
    let m = match modules::resolve(root, &module) {
        Ok(m) => m,
        Err(msg) => {
            diags.error(module_at, msg);
            return None;
        }
    };
    let mut out = Vec::new();
    if by_fn {
        out.push(PolicyFn { module: m.clone(), export: detail.unwrap_or_else(|| "getQuotaDetail".to_owned()), role: Role::QuotaDetail, at: module_at });
    }
    if anchor_fn {
        out.push(PolicyFn { module: m, export: anchor.unwrap_or_else(|| "getAnchorDate".to_owned()), role: Role::QuotaAnchorDate, at: module_at });
    }
    Some(out)
}

fn unknown_keys(options: &Node, known: &[&str], export: &str, file: usize, diags: &mut Diagnostics) {
    for e in options.entries() {
        if !known.contains(&e.key.as_str()) {
            diags.warning(at(file, e.key_span), format!("unknown option `{}` of {export}", e.key))
                .help(format!("known options: {}", known.join(", ")));
        }
    }
}

/// Checks options against the catalog; returns them as JSON text without unknown keys.
fn check_options(spec: &Builtin, options: &Node, file: usize, diags: &mut Diagnostics) -> Option<String> {
    let mut ok = true;
    let known: Vec<&str> = spec.options.iter().map(|o| o.name).collect();
    unknown_keys(options, &known, spec.export, file, diags);
    let mut kept = serde_json::Map::new();
    for o in spec.options {
        let Some(v) = options.get(o.name) else {
            if o.required {
                diags.error(at(file, options.span), format!("required option `{}` of {} is missing", o.name, spec.export))
                    .help(format!("`{}`: {} ({})", o.name, o.ty.describe(), o.doc));
                ok = false;
            }
            continue;
        };
        if let Err(msg) = check_type(o.ty, v) {
            diags.error(at(file, msg.0), format!("option `{}` must be {}{}", o.name, o.ty.describe(), msg.1));
            ok = false;
            continue;
        }
        kept.insert(o.name.to_owned(), v.to_value());
    }
    if !spec.one_of.is_empty() && !spec.one_of.iter().any(|k| options.get(k).is_some()) {
        diags.error(at(file, options.span), format!("{} needs at least one of: {}", spec.export, spec.one_of.join(", ")));
        ok = false;
    }
    ok.then(|| serde_json::Value::Object(kept).to_string())
}

fn is_env_ref(v: &Node) -> bool {
    v.as_str().is_some_and(|s| s.trim().starts_with("$env(") && s.trim().ends_with(')'))
}

/// `Err((span, extra))` when `v` does not have type `ty`.
fn check_type(ty: OptType, v: &Node) -> Result<(), (Span, String)> {
    let bad = |extra: String| Err((v.span, extra));
    let found = || format!(", found {}", v.type_name());
    match ty {
        OptType::String => if v.as_str().is_some() { Ok(()) } else { bad(found()) },
        OptType::Bool => if v.as_bool().is_some() || is_env_ref(v) { Ok(()) } else { bad(found()) },
        OptType::Integer => if v.as_u64().is_some() || is_env_ref(v) { Ok(()) } else { bad(found()) },
        OptType::Number => match v.as_f64() {
            Some(n) if n > 0.0 => Ok(()),
            Some(_) => bad(", found a number that is not positive".to_owned()),
            None if is_env_ref(v) => Ok(()),
            None => bad(found()),
        },
        OptType::Enum(values) => match v.as_str() {
            Some(s) if values.contains(&s) || is_env_ref(v) => Ok(()),
            Some(s) => bad(format!(", found \"{s}\"")),
            None => bad(found()),
        },
        OptType::Object => if matches!(v.kind, Kind::Object(_)) { Ok(()) } else { bad(found()) },
        OptType::ArrayOrObject => if matches!(v.kind, Kind::Object(_) | Kind::Array(_)) { Ok(()) } else { bad(found()) },
        OptType::Counts => {
            if !matches!(v.kind, Kind::Object(_)) {
                return bad(found());
            }
            match v.entries().iter().find(|e| e.value.as_u64().is_none_or(|n| n == 0)) {
                Some(e) => Err((e.value.span, format!("; `{}` is {}", e.key, e.value.type_name()))),
                None => Ok(()),
            }
        }
        OptType::StatusCodes => {
            let code = |n: u64| (100..=599).contains(&n);
            if let Some(text) = v.as_str() {
                let ok = text.split(',').map(str::trim).filter(|p| !p.is_empty()).all(|part| {
                    let (a, b) = part.split_once('-').unwrap_or((part, part));
                    matches!((a.trim().parse::<u64>(), b.trim().parse::<u64>()), (Ok(a), Ok(b)) if code(a) && code(b) && a <= b)
                });
                return if ok { Ok(()) } else { bad(format!(", found \"{text}\"")) };
            }
            let Kind::Array(items) = &v.kind else { return bad(found()) };
            match items.iter().find(|i| !i.as_u64().is_some_and(code)) {
                Some(i) => Err((i.span, format!("; this item is {}", i.type_name()))),
                None => Ok(()),
            }
        }
        OptType::ObjectArray => {
            let Kind::Array(items) = &v.kind else { return bad(found()) };
            match items.iter().find(|i| !matches!(i.kind, Kind::Object(_))) {
                Some(i) => Err((i.span, format!("; this item is {}", i.type_name()))),
                None => Ok(()),
            }
        }
        OptType::IntegerArray => {
            let Kind::Array(items) = &v.kind else { return bad(found()) };
            match items.iter().find(|i| i.as_u64().is_none()) {
                Some(i) => Err((i.span, format!("; this item is {}", i.type_name()))),
                None => Ok(()),
            }
        }
        OptType::BoolStringOrNumber => {
            if v.as_bool() == Some(true) || v.as_str().is_some() || v.as_f64().is_some() { Ok(()) } else { bad(found()) }
        }
        OptType::StringArray | OptType::StringOrArray => {
            if ty == OptType::StringOrArray && v.as_str().is_some() {
                return Ok(());
            }
            let Kind::Array(items) = &v.kind else { return bad(found()) };
            match items.iter().find(|i| i.as_str().is_none()) {
                Some(i) => Err((i.span, format!("; this item is {}", i.type_name()))),
                None => Ok(()),
            }
        }
        OptType::NameValueList => {
            let Kind::Array(items) = &v.kind else { return bad(found()) };
            for i in items {
                let Kind::Object(_) = &i.kind else { return Err((i.span, format!("; this item is {}", i.type_name()))) };
                for key in ["name", "value"] {
                    match i.get(key) {
                        Some(x) if x.as_str().is_some() => {}
                        Some(x) => return Err((x.span, format!("; `{key}` must be a string, found {}", x.type_name()))),
                        None => return Err((i.span, format!("; this item has no `{key}`"))),
                    }
                }
                if let Some(o) = i.get("overwrite")
                    && o.as_bool().is_none()
                {
                    return Err((o.span, format!("; `overwrite` must be true or false, found {}", o.type_name())));
                }
                for e in i.entries() {
                    if !matches!(e.key.as_str(), "name" | "value" | "overwrite") {
                        return Err((e.key_span, format!("; unknown key `{}` (name, value, overwrite)", e.key)));
                    }
                }
            }
            Ok(())
        }
    }
}

impl PolicySet {
    /// Reports every cycle among composite policies, at the member that closes it.
    pub fn check_cycles(&self, diags: &mut Diagnostics) {
        let mut reported = std::collections::BTreeSet::new();
        for (i, p) in self.list.iter().enumerate() {
            if matches!(p.kind, PolicyKind::Composite { .. }) {
                self.dfs(i, &mut vec![i], diags, &mut reported);
            }
        }
    }

    fn dfs(&self, i: usize, stack: &mut Vec<usize>, diags: &mut Diagnostics, reported: &mut std::collections::BTreeSet<Vec<usize>>) {
        let PolicyKind::Composite { members, .. } = &self.list[i].kind else { return };
        for (m, loc) in members {
            let Some(&j) = self.by_name.get(m) else { continue };
            if let Some(pos) = stack.iter().position(|&s| s == j) {
                let mut cycle: Vec<usize> = stack[pos..].to_vec();
                cycle.sort_unstable();
                if reported.insert(cycle) {
                    let mut names: Vec<&str> = stack[pos..].iter().map(|&k| self.list[k].name.as_str()).collect();
                    names.push(m);
                    diags.error(*loc, format!("composite policies form a cycle: {}", names.join(" → ")));
                }
                continue;
            }
            stack.push(j);
            self.dfs(j, stack, diags, reported);
            stack.pop();
        }
    }

    /// Expands a route's list for `side` into policy indices (composites flattened in place).
    /// Undefined names, side mismatches and cycles are reported.
    pub fn resolve(&self, names: &[(String, Location)], side: Side, diags: &mut Diagnostics, used: &mut [bool]) -> Vec<usize> {
        let mut out = Vec::new();
        for (name, loc) in names {
            self.expand(name, *loc, side, &mut Vec::new(), &mut out, diags, used);
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn expand(&self, name: &str, loc: Location, side: Side, stack: &mut Vec<String>, out: &mut Vec<usize>, diags: &mut Diagnostics, used: &mut [bool]) {
        let Some(&i) = self.by_name.get(name) else {
            let help = if self.list.is_empty() {
                "config/policies.json defines no policies".to_owned()
            } else {
                format!("config/policies.json defines: {}", self.list.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "))
            };
            diags.error(loc, format!("policy `{name}` is not defined in config/policies.json")).help(help);
            return;
        };
        used[i] = true;
        if stack.iter().any(|s| s == name) {
            // Reported once by `check_cycles`.
            return;
        }
        let side_name = |s: Side| if s == Side::Inbound { "inbound" } else { "outbound" };
        match &self.list[i].kind {
            PolicyKind::Composite { side: s, members } => {
                if *s != side {
                    diags.error(loc, format!("`{name}` is a composite-{} policy, used in an {} list", side_name(*s), side_name(side)));
                    return;
                }
                stack.push(name.to_owned());
                for (m, mloc) in members {
                    self.expand(m, *mloc, side, stack, out, diags, used);
                }
                stack.pop();
            }
            PolicyKind::Builtin { spec, .. } => {
                if spec.side != side {
                    diags.error(loc, format!("`{name}` ({}) is an {} policy, used in an {} list", spec.export, side_name(spec.side), side_name(side)));
                    return;
                }
                out.push(i);
            }
            PolicyKind::Custom { .. } => out.push(i),
            PolicyKind::Invalid => {}
        }
    }
}
