//! Custom code: `$import(./modules/x)` references, the Rust signatures they must export, and
//! the module tree copied into the generated crate.

use std::path::{Path, PathBuf};

/// What a module export is used as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// A custom inbound policy.
    Inbound,
    /// A custom outbound policy.
    Outbound,
    /// A custom handler.
    Handler,
    /// The `identifier` function of rate-limit-inbound.
    RateLimitIdentifier,
    /// The `identifier` function of complex-rate-limit-inbound (same signature).
    ComplexRateLimitIdentifier,
    /// The `getQuotaDetail` function of quota-inbound.
    QuotaDetail,
    /// The `getAnchorDate` function of quota-inbound.
    QuotaAnchorDate,
}

/// A resolved `$import(./modules/...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRef {
    /// As written (`$import(./modules/customer-routing)`).
    pub import: String,
    /// Path under `modules/` with `/`, hyphens made underscores, no extension (`customer_routing`).
    pub rel: String,
    /// The source file in the project.
    pub source: PathBuf,
    /// `crate::modules::customer_routing`.
    pub rust_path: String,
}

impl ModuleRef {
    /// Whether the source file exists.
    pub fn exists(&self) -> bool {
        self.source.is_file()
    }
}

/// Resolves `$import(./modules/a/b-c)` against the project root.
pub fn resolve(root: &Path, import: &str) -> Result<ModuleRef, String> {
    let inner = import
        .strip_prefix("$import(")
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("`{import}` is not a module reference; write `$import(./modules/name)`"))?;
    let inner = inner.trim().trim_matches(|c| c == '"' || c == '\'');
    let path = inner.strip_prefix("./").unwrap_or(inner);
    let path = path.strip_suffix(".ts").or_else(|| path.strip_suffix(".rs")).or_else(|| path.strip_suffix(".js")).unwrap_or(path);
    let Some(under) = path.strip_prefix("modules/") else {
        return Err(format!("`{inner}` is not under ./modules/; custom code lives in the project's modules folder"));
    };
    let mut segs = Vec::new();
    for seg in under.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(format!("`{inner}` is not a plain path under ./modules/"));
        }
        let ident = seg.replace('-', "_");
        if !ident.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || ident.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("`{seg}` cannot be a Rust module name (letters, digits, `-` and `_` only)"));
        }
        segs.push(ident);
    }
    let rel = segs.join("/");
    let source = root.join("modules").join(format!("{rel}.rs"));
    let rust_path = format!("crate::modules::{}", segs.iter().map(|s| escape_keyword(s)).collect::<Vec<_>>().join("::"));
    Ok(ModuleRef { import: import.to_owned(), rel, source, rust_path })
}

/// A module file name that is a Rust keyword needs a raw identifier.
pub fn escape_keyword(s: &str) -> String {
    const KW: &[&str] = &[
        "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern", "false", "fn", "for", "if", "impl",
        "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "self", "static", "struct", "super", "trait", "true",
        "type", "unsafe", "use", "where", "while", "gen",
    ];
    if KW.contains(&s) { format!("r#{s}") } else { s.to_owned() }
}

/// The Rust function name of an export (`default` stays `default`).
pub fn fn_name(export: &str) -> String {
    escape_keyword(export)
}

/// The options type a module may declare for an export: `Options` for `default`,
/// `<Export>Options` (PascalCase) otherwise.
pub fn options_type_name(export: &str) -> String {
    if export == "default" {
        return "Options".to_owned();
    }
    let mut out = String::new();
    let mut upper = true;
    for c in export.chars() {
        if c == '_' || c == '-' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out.push_str("Options");
    out
}

/// Whether `text` declares `pub async fn <name>`.
pub fn has_export(text: &str, export: &str) -> bool {
    let name = regex::escape(export);
    regex::Regex::new(&format!(r"pub\s+async\s+fn\s+(r#)?{name}\s*[<(]")).is_ok_and(|r| r.is_match(text))
}

/// Whether `text` declares `pub struct <name>`.
pub fn has_struct(text: &str, name: &str) -> bool {
    let name = regex::escape(name);
    regex::Regex::new(&format!(r"pub\s+struct\s+{name}\b")).is_ok_and(|r| r.is_match(text))
}

/// The signature a module must export for a role.
pub fn signature(role: Role, export: &str) -> String {
    let f = fn_name(export);
    match role {
        Role::Inbound => format!(
            "pub async fn {f}(request: Request, context: &mut Context, options: &Value, policy_name: &str) -> Flow"
        ),
        Role::Outbound => format!(
            "pub async fn {f}(response: Response, request: &RequestHead, context: &mut Context, options: &Value, policy_name: &str) -> Response"
        ),
        Role::Handler => format!("pub async fn {f}(request: Request, context: &mut Context) -> Response"),
        Role::RateLimitIdentifier | Role::ComplexRateLimitIdentifier => format!(
            "pub async fn {f}(request: &RequestHead, context: &Context, policy_name: &str) -> Option<specgate_runtime::policies::RateLimitKey>"
        ),
        Role::QuotaDetail => format!(
            "pub async fn {f}(request: &RequestHead, context: &Context, policy_name: &str) -> Option<specgate_runtime::policies::QuotaDetail>"
        ),
        Role::QuotaAnchorDate => format!(
            "pub async fn {f}(request: &RequestHead, context: &Context, policy_name: &str) -> Option<std::time::SystemTime>"
        ),
    }
}

/// The help text for a missing module or export.
pub fn signature_help(role: Role, export: &str, rel: &str) -> String {
    format!(
        "write modules/{rel}.rs with:\n    use specgate_runtime::prelude::*;\n    {} {{ ... }}\n(the return type may also be a Result; options may be a `pub struct {}` deriving Deserialize; \
         or run `specgate generate --stub-missing` to get a stub answering 501)",
        signature(role, export),
        options_type_name(export)
    )
}

/// Source of a stub module answering 501 for each export it must provide.
pub fn stub_source(m: &ModuleRef, exports: &[(String, Role)]) -> String {
    let mut s = format!(
        "//! Stub for `{}` written by `specgate generate --stub-missing`: every export answers 501.\n//! Replace it with modules/{}.rs in the project.\n\nuse specgate_runtime::prelude::*;\n",
        m.import, m.rel
    );
    for (export, role) in exports {
        let f = fn_name(export);
        let module = &m.import;
        let body = match role {
            Role::Inbound => format!(
                "pub async fn {f}(_request: Request, context: &mut Context, _options: &Value, _policy_name: &str) -> Flow {{\n    Flow::Respond(specgate_runtime::handlers::not_implemented(context, {module:?}))\n}}\n"
            ),
            Role::Outbound => format!(
                "pub async fn {f}(_response: Response, _request: &RequestHead, context: &mut Context, _options: &Value, _policy_name: &str) -> Response {{\n    specgate_runtime::handlers::not_implemented(context, {module:?})\n}}\n"
            ),
            Role::Handler => format!(
                "pub async fn {f}(_request: Request, context: &mut Context) -> Response {{\n    specgate_runtime::handlers::not_implemented(context, {module:?})\n}}\n"
            ),
            // A stub identifier limits nothing: the route works, unlimited, until it is written.
            Role::RateLimitIdentifier | Role::ComplexRateLimitIdentifier => format!(
                "pub async fn {f}(_request: &RequestHead, _context: &Context, _policy_name: &str) -> Option<specgate_runtime::policies::RateLimitKey> {{\n    None\n}}\n"
            ),
            // A stub quota key function limits nothing either; a stub anchor anchors at the first call.
            Role::QuotaDetail => format!(
                "pub async fn {f}(_request: &RequestHead, _context: &Context, _policy_name: &str) -> Option<specgate_runtime::policies::QuotaDetail> {{\n    None\n}}\n"
            ),
            Role::QuotaAnchorDate => format!(
                "pub async fn {f}(_request: &RequestHead, _context: &Context, _policy_name: &str) -> Option<std::time::SystemTime> {{\n    None\n}}\n"
            ),
        };
        s.push('\n');
        s.push_str(&body);
    }
    s
}

/// Every `.rs` file under `modules/`, as (path relative to modules/ with underscores, source).
pub fn all_module_files(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    walk(&root.join("modules"), "", &mut out);
    out.sort();
    out
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().replace('-', "_");
        if path.is_dir() {
            walk(&path, &format!("{prefix}{name}/"), out);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            out.push((format!("{prefix}{stem}"), path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_imports() {
        let m = resolve(Path::new("/p"), "$import(./modules/a/b-c)").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.rel, "a/b_c");
        assert_eq!(m.rust_path, "crate::modules::a::b_c");
        assert_eq!(m.source, Path::new("/p/modules/a/b_c.rs"));
        assert!(resolve(Path::new("/p"), "$import(./modules/../x)").is_err());
        assert!(resolve(Path::new("/p"), "$import(./lib/x)").is_err());
        assert_eq!(resolve(Path::new("/p"), "$import(./modules/match)").map(|m| m.rust_path).ok().as_deref(), Some("crate::modules::r#match"));
    }

    #[test]
    fn finds_exports_and_options() {
        let src = "use x;\npub struct Options { a: u8 }\npub async fn default(request: Request) -> Flow {}\npub async fn by_tier<'a>() {}";
        assert!(has_export(src, "default"));
        assert!(has_export(src, "by_tier"));
        assert!(!has_export(src, "other"));
        assert!(has_struct(src, &options_type_name("default")));
        assert_eq!(options_type_name("by_tier"), "ByTierOptions");
    }
}
