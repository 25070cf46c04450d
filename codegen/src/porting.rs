//! The porting report of `specgate validate`: for a Zuplo project, which routes port as they
//! are, which custom modules must be written in Rust, and which Zuplo built-ins it uses that
//! specgate lacks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::catalog;
use crate::model::{Handler, Project};
use crate::modules::{self, Role};
use crate::policies::{BUILTIN_MODULE, PolicyKind};
use crate::source::{self, Format, Kind, Node};

/// A custom module the project references that has no Rust source yet.
#[derive(Debug, Clone)]
pub struct ModuleNeed {
    /// `modules/<rel>` (hyphens as underscores, as the Rust file is named).
    pub module: String,
    /// As written in the project.
    pub import: String,
    /// The exports it must provide and what each is used as.
    pub exports: Vec<(String, Role)>,
    /// The project's TypeScript or JavaScript source of the module, if present.
    pub original: Option<String>,
    /// Routes that use it (`METHOD path`).
    pub routes: BTreeSet<String>,
}

/// A Zuplo built-in that specgate does not implement.
#[derive(Debug, Clone)]
pub struct BuiltinGap {
    /// `policy` or `handler`.
    pub kind: &'static str,
    /// The export name.
    pub export: String,
    /// The policy's name (policies only).
    pub policy: Option<String>,
    /// `file:line:col` of the export.
    pub at: String,
    /// Routes that use it (`METHOD path`).
    pub routes: BTreeSet<String>,
}

/// What porting a project takes.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Routes with an `x-zuplo-route`.
    pub routes: usize,
    /// Of those, how many port as they are (no missing module, no missing built-in).
    pub as_is: usize,
    /// Modules to write in Rust.
    pub modules: Vec<ModuleNeed>,
    /// Built-ins specgate lacks.
    pub builtins: Vec<BuiltinGap>,
}

impl Report {
    /// Whether everything ports as it is.
    pub fn is_clean(&self) -> bool {
        self.modules.is_empty() && self.builtins.is_empty()
    }
}

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// Builds the report of a loaded project (errors or not).
pub fn report(project: &Project) -> Report {
    let mut out = Report::default();

    // Policy names each route lists, as written (composites expanded below).
    let mut listed: Vec<(String, Vec<String>)> = Vec::new();
    for doc in &project.documents {
        let Some(paths) = doc.root.get("paths") else { continue };
        for p in paths.entries() {
            for op in p.value.entries() {
                if !METHODS.contains(&op.key.to_ascii_lowercase().as_str()) {
                    continue;
                }
                let Some(x) = op.value.get("x-zuplo-route") else { continue };
                let route = format!("{} {}", op.key.to_ascii_uppercase(), p.key);
                let mut names = Vec::new();
                if let Some(pol) = x.get("policies") {
                    for side in ["inbound", "outbound"] {
                        names.extend(pol.get(side).map(Node::items).unwrap_or_default().iter().filter_map(Node::as_str).map(str::to_owned));
                    }
                }
                listed.push((route, names));
            }
        }
    }
    out.routes = listed.len();
    let expanded: Vec<(String, BTreeSet<String>)> = listed.into_iter().map(|(r, names)| (r, expand(project, &names))).collect();

    // Built-in policies specgate lacks, read from policies.json as written.
    if let Some(f) = project.files.iter().position(|f| f.name == "config/policies.json")
        && let (Some(node), _) = source::parse(&project.files.get(f).text, Format::Json)
    {
        let list = match &node.kind {
            Kind::Array(items) => items.as_slice(),
            _ => node.get("policies").map(Node::items).unwrap_or_default(),
        };
        for item in list {
            let (Some(name), Some(handler)) = (item.get("name").and_then(Node::as_str), item.get("handler")) else { continue };
            let (Some(export), Some(module)) = (handler.get("export"), handler.get("module").and_then(Node::as_str)) else { continue };
            let Some(export_name) = export.as_str() else { continue };
            let composite = matches!(export_name, "CompositeInboundPolicy" | "CompositeOutboundPolicy");
            if module != BUILTIN_MODULE || composite || catalog::find(export_name).is_some() {
                continue;
            }
            let routes = expanded.iter().filter(|(_, names)| names.contains(name)).map(|(r, _)| r.clone()).collect();
            out.builtins.push(BuiltinGap {
                kind: "policy",
                export: export_name.to_owned(),
                policy: Some(name.to_owned()),
                at: project.files.position(f, export.span.start),
                routes,
            });
        }
    }
    for h in &project.unsupported_handlers {
        out.builtins.push(BuiltinGap {
            kind: "handler",
            export: h.export.clone(),
            policy: None,
            at: project.files.position(h.at.file, h.at.span.start),
            routes: BTreeSet::from([h.route.clone()]),
        });
    }

    // Modules without a Rust source, and the routes that use them.
    let mut by_rel: BTreeMap<String, ModuleNeed> = BTreeMap::new();
    for (m, exports) in &project.missing_modules {
        // Zuplo keeps the module's TypeScript (or JavaScript) under the name it is imported by.
        let written = m.import.trim_start_matches("$import(").trim_end_matches(')').trim_matches(|c| c == '"' || c == '\'');
        let written = written.strip_prefix("./").unwrap_or(written);
        let written = written.strip_suffix(".ts").or_else(|| written.strip_suffix(".js")).unwrap_or(written);
        let original = ["ts", "js", "mts", "mjs"]
            .iter()
            .map(|ext| project.root.join(format!("{written}.{ext}")))
            .find(|p| p.is_file())
            .and_then(|p| p.strip_prefix(&project.root).ok().map(|r| r.display().to_string()));
        by_rel.insert(
            m.rel.clone(),
            ModuleNeed { module: format!("modules/{}", m.rel), import: m.import.clone(), exports: exports.clone(), original, routes: BTreeSet::new() },
        );
    }
    let mut blocked: BTreeSet<String> = out.builtins.iter().flat_map(|b| b.routes.iter().cloned()).collect();
    for r in &project.routes {
        let key = format!("{} {}", r.method, r.path);
        let mut rels = Vec::new();
        if let Handler::Custom { module, .. } = &r.handler {
            rels.push(module.rel.clone());
        }
        for &i in r.inbound.iter().chain(&r.outbound) {
            match &project.policies.list[i].kind {
                PolicyKind::Custom { module, .. } => rels.push(module.rel.clone()),
                PolicyKind::Builtin { functions, .. } => rels.extend(functions.iter().map(|f| f.module.rel.clone())),
                PolicyKind::Composite { .. } | PolicyKind::Invalid => {}
            }
        }
        for rel in rels {
            if let Some(need) = by_rel.get_mut(&rel) {
                need.routes.insert(key.clone());
                blocked.insert(key.clone());
            }
        }
    }
    out.modules = by_rel.into_values().collect();
    out.as_is = expanded.iter().filter(|(r, _)| !blocked.contains(r)).count().min(project.routes.len());
    out
}

/// Policy names reachable from `names` through composites.
fn expand(project: &Project, names: &[String]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<String> = names.to_vec();
    while let Some(n) = stack.pop() {
        if !seen.insert(n.clone()) {
            continue;
        }
        if let Some(&i) = project.policies.by_name.get(&n)
            && let PolicyKind::Composite { members, .. } = &project.policies.list[i].kind
        {
            stack.extend(members.iter().map(|(m, _)| m.clone()));
        }
    }
    seen
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Inbound => "inbound policy",
        Role::Outbound => "outbound policy",
        Role::Handler => "handler",
        Role::RateLimitIdentifier => "rate-limit identifier",
        Role::ComplexRateLimitIdentifier => "complex-rate-limit identifier",
        Role::QuotaDetail => "quota getQuotaDetail",
        Role::QuotaAnchorDate => "quota getAnchorDate",
    }
}

fn list(routes: &BTreeSet<String>) -> String {
    if routes.is_empty() {
        return "no route".to_owned();
    }
    let v: Vec<&str> = routes.iter().map(String::as_str).collect();
    if v.len() > 6 { format!("{} and {} more", v[..6].join(", "), v.len() - 6) } else { v.join(", ") }
}

/// The report as text.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "porting report:");
    let _ = writeln!(out, "  ports as is: {} of {} route{}", r.as_is, r.routes, if r.routes == 1 { "" } else { "s" });
    if !r.modules.is_empty() {
        let _ = writeln!(out, "  needs a Rust module: {}", r.modules.len());
        for m in &r.modules {
            let from = m.original.as_deref().map(|o| format!(" (port {o})")).unwrap_or_default();
            let _ = writeln!(out, "    {}.rs{from}, used by {}", m.module, list(&m.routes));
            for (export, role) in &m.exports {
                let _ = writeln!(out, "      {}: {}", role_name(*role), modules::signature(*role, export));
            }
        }
        let _ = writeln!(out, "    (`specgate generate --stub-missing` builds the gateway with stubs answering 501 until they are written)");
    }
    if !r.builtins.is_empty() {
        let _ = writeln!(out, "  Zuplo built-ins specgate lacks: {}", r.builtins.len());
        for b in &r.builtins {
            let name = b.policy.as_deref().map(|p| format!(" `{p}`")).unwrap_or_default();
            let _ = writeln!(out, "    {}{name}: {} at {}, used by {}", b.kind, b.export, b.at, list(&b.routes));
        }
    }
    out
}
