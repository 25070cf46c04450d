//! `specgate import`: a plain OpenAPI 3.0/3.1 document (JSON or YAML) becomes a project whose
//! operations forward to one upstream.
//!
//! Paths are reordered so that literal segments come before templated ones (`/users/me`
//! before `/users/{id}`): OpenAPI servers match concrete paths first, while a gateway project
//! matches routes in document order. Operations that already carry `x-zuplo-route` keep it.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::source::{self, Format, LineIndex};

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The OpenAPI document.
    pub input: PathBuf,
    /// The upstream base URL (written to `.env` as `API_URL`).
    pub upstream: String,
    /// The project folder to write.
    pub out: PathBuf,
    /// Overwrite files of an existing project.
    pub force: bool,
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    /// Paths in the document.
    pub paths: usize,
    /// Operations given a forwarding route.
    pub forwarded: usize,
    /// Operations that already had an `x-zuplo-route`.
    pub kept: usize,
    /// Paths that moved to come before a templated path that would shadow them.
    pub moved: usize,
    /// The files written, relative to the project.
    pub files: Vec<String>,
}

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// Reads, converts and writes. Errors are one-line messages with a position when there is one.
pub fn import(opts: &ImportOptions) -> Result<Imported, String> {
    let display = opts.input.display().to_string();
    let text = std::fs::read_to_string(&opts.input).map_err(|e| format!("cannot read {display}: {e}"))?;
    let format = match Format::from_path(&opts.input) {
        Some(Format::Yaml) => Format::Yaml,
        Some(_) => Format::Json,
        // No telling extension: JSON when it looks like JSON.
        None if text.trim_start().starts_with('{') => Format::Json,
        None => Format::Yaml,
    };
    let (node, errors) = source::parse(&text, format);
    if let Some(e) = errors.first() {
        let (line, col) = LineIndex::new(&text).line_col(e.span.start);
        return Err(format!("{display}:{line}:{col}: {}", e.message));
    }
    let node = node.ok_or_else(|| format!("{display}: not a JSON or YAML document"))?;
    let position = |n: &source::Node| {
        let (line, col) = LineIndex::new(&text).line_col(n.span.start);
        format!("{display}:{line}:{col}")
    };
    if let Some(v) = node.get("swagger") {
        return Err(format!("{}: Swagger 2.0 documents are not supported; convert the document to OpenAPI 3 first", position(v)));
    }
    match node.get("openapi") {
        Some(v) if v.as_str().is_some_and(|s| s.starts_with("3.")) => {}
        Some(v) => return Err(format!("{}: `openapi` must be a 3.0 or 3.1 version string", position(v))),
        None => return Err(format!("{display}: not an OpenAPI document (no `openapi` field)")),
    }
    if !url_ok(&opts.upstream) {
        return Err(format!("--upstream {:?} is not an http(s) URL", opts.upstream));
    }
    let mut doc = node.to_value();
    let mut done = Imported::default();
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        let (ordered, moved) = order_paths(std::mem::take(paths));
        done.moved = moved;
        *paths = ordered;
        done.paths = paths.len();
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for (method, op) in item.iter_mut() {
                if !METHODS.contains(&method.as_str()) {
                    continue;
                }
                let Some(op) = op.as_object_mut() else { continue };
                if op.contains_key("x-zuplo-route") {
                    done.kept += 1;
                    continue;
                }
                op.insert(
                    "x-zuplo-route".into(),
                    json!({
                        "corsPolicy": "none",
                        "handler": {
                            "export": "urlForwardHandler",
                            "module": "$import(@zuplo/runtime)",
                            "options": { "baseUrl": "${env.API_URL}" }
                        },
                        "policies": { "inbound": [] }
                    }),
                );
                done.forwarded += 1;
            }
        }
    }

    let config = opts.out.join("config");
    let routes = config.join("routes.oas.json");
    let env = opts.out.join(".env");
    if !opts.force {
        for p in [&routes, &env] {
            if p.exists() {
                return Err(format!("{} exists; use --force to overwrite it", p.display()));
            }
        }
    }
    std::fs::create_dir_all(&config).map_err(|e| format!("cannot create {}: {e}", config.display()))?;
    let write = |p: &Path, text: String| std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()));
    let mut json = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    json.push('\n');
    write(&routes, json)?;
    done.files.push("config/routes.oas.json".into());
    let policies = config.join("policies.json");
    if !policies.exists() {
        write(&policies, "{\n  \"policies\": []\n}\n".into())?;
        done.files.push("config/policies.json".into());
    }
    write(&env, format!("# The upstream every imported operation forwards to.\nAPI_URL={}\n", opts.upstream))?;
    done.files.push(".env".into());
    let gitignore = opts.out.join(".gitignore");
    if !gitignore.exists() {
        write(&gitignore, "/gateway/\n/.specgate/\n".into())?;
        done.files.push(".gitignore".into());
    }
    Ok(done)
}

fn url_ok(u: &str) -> bool {
    (u.starts_with("http://") || u.starts_with("https://")) && u.len() > "https://".len() && !u.contains(char::is_whitespace)
}

/// How specific each segment is: literals first, then segments mixing literals and
/// parameters, then whole-segment parameters, and `{+rest}` last.
fn rank(path: &str) -> Vec<u8> {
    path.trim_start_matches('/')
        .split('/')
        .map(|s| {
            if s.starts_with("{+") {
                3
            } else if s.starts_with('{') && s.ends_with('}') && s.matches('{').count() == 1 {
                2
            } else if s.contains('{') {
                1
            } else {
                0
            }
        })
        .collect()
}

/// Whether a request could match both paths (same segment count, and every pair of
/// segments could be equal).
fn overlap(a: &str, b: &str) -> bool {
    let sa: Vec<&str> = a.trim_start_matches('/').split('/').collect();
    let sb: Vec<&str> = b.trim_start_matches('/').split('/').collect();
    let compat = |(x, y): (&&str, &&str)| x == y || x.contains('{') || y.contains('{');
    let rest = |s: &[&str]| s.iter().position(|seg| seg.starts_with("{+"));
    match (rest(&sa), rest(&sb)) {
        (None, None) => sa.len() == sb.len() && sa.iter().zip(&sb).all(compat),
        (Some(k), None) => sb.len() >= k && sa[..k].iter().zip(&sb[..k]).all(compat),
        (None, Some(k)) => sa.len() >= k && sa[..k].iter().zip(&sb[..k]).all(compat),
        (Some(k), Some(m)) => sa[..k.min(m)].iter().zip(&sb[..k.min(m)]).all(compat),
    }
}

/// Orders paths so that no path comes after a less specific path it overlaps with; otherwise
/// keeps document order. Returns the map and how many paths moved.
fn order_paths(paths: Map<String, Value>) -> (Map<String, Value>, usize) {
    let entries: Vec<(String, Value)> = paths.into_iter().collect();
    let ranks: Vec<Vec<u8>> = entries.iter().map(|(p, _)| rank(p)).collect();
    // Insertion: each path goes before the first placed path that overlaps it and is less
    // specific; stable otherwise.
    let mut order: Vec<usize> = Vec::with_capacity(entries.len());
    for i in 0..entries.len() {
        let pos = order
            .iter()
            .position(|&j| overlap(&entries[j].0, &entries[i].0) && ranks[i] < ranks[j])
            .unwrap_or(order.len());
        order.insert(pos, i);
    }
    let moved = order.iter().enumerate().filter(|(pos, i)| pos != *i).count();
    let mut slots: Vec<Option<(String, Value)>> = entries.into_iter().map(Some).collect();
    let mut out = Map::new();
    for i in order {
        if let Some((k, v)) = slots[i].take() {
            out.insert(k, v);
        }
    }
    (out, moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(m: &Map<String, Value>) -> Vec<&str> {
        m.keys().map(String::as_str).collect()
    }

    #[test]
    fn literal_paths_come_before_templated_ones_that_shadow_them() {
        let mut m = Map::new();
        for p in ["/users/{id}", "/orgs", "/users/me", "/users/{id}/repos", "/files/{+path}", "/files/readme", "/users/{id}.json"] {
            m.insert(p.to_owned(), Value::Null);
        }
        let (out, moved) = order_paths(m);
        assert_eq!(keys(&out), ["/users/me", "/users/{id}.json", "/users/{id}", "/orgs", "/users/{id}/repos", "/files/readme", "/files/{+path}"]);
        assert!(moved > 0);
    }

    #[test]
    fn unrelated_paths_keep_document_order() {
        let mut m = Map::new();
        for p in ["/b", "/a/{x}", "/c/{+y}", "/a", "/d/e"] {
            m.insert(p.to_owned(), Value::Null);
        }
        let (out, moved) = order_paths(m);
        assert_eq!(keys(&out), ["/b", "/a/{x}", "/c/{+y}", "/a", "/d/e"]);
        assert_eq!(moved, 0);
    }
}
