//! Loading a project folder: documents in order, `x-zuplo-route`s, `policies.json`,
//! `zuplo.jsonc`, `$ref` checks, route diagnostics.
//!
//! Real documents are messy, so this reads leniently into the narrow model of [`crate::model`]
//! instead of a full OpenAPI type, and reports every problem with its position.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::diag::{Diagnostics, FileId, Files, Location};
use crate::catalog::{self, Side};
use crate::model::{Document, Example, Handler, LocalTarget, PathMode, Project, Route, Settings, UnsupportedHandler};

/// The built-in handlers specgate implements.
pub const SUPPORTED_HANDLERS: &[&str] = &["urlForwardHandler", "urlRewriteHandler", "redirectHandler", "openApiSpecHandler", "webSocketHandler"];
use crate::modules::{ModuleRef, Role};
use crate::policies::{PolicyKind, PolicySet};
use crate::pattern::{self, ParsedPath};
use crate::schema::{Bundler, OperationInput, Sources};
use crate::source::{self, Format, Kind, Node, Span};
use crate::template;

mod upstreams;

/// HTTP methods an OpenAPI path item may hold.
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

use crate::policies::BUILTIN_MODULE;

/// Loads the project at `root`. Returns the project when it could be read at all (it may still
/// carry errors in the diagnostics) and every diagnostic found.
pub fn load(root: &Path, name: Option<&str>) -> (Option<Project>, Diagnostics) {
    load_with(root, name, false)
}

/// [`load`], where `stub_missing` turns missing custom modules into warnings (the generator
/// then writes stubs answering 501).
pub fn load_with(root: &Path, name: Option<&str>, stub_missing: bool) -> (Option<Project>, Diagnostics) {
    // Canonical, so that every file the project reads has a name relative to it whatever
    // the working directory or the checkout location (the input hash depends on the names).
    let root_buf = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let root = root_buf.as_path();
    let mut diags = Diagnostics::default();
    let mut files = Files::default();
    let config = root.join("config");
    let name = name.map(str::to_owned).unwrap_or_else(|| {
        root.canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "gateway".to_owned())
    });

    let mut doc_paths: Vec<PathBuf> = match std::fs::read_dir(&config) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let n = p.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
                n.ends_with(".oas.json") || n.ends_with(".oas.yaml") || n.ends_with(".oas.yml")
            })
            .collect(),
        Err(e) => {
            diags.error(None, format!("cannot read {}: {e}", config.display()))
                .help("a project folder holds config/*.oas.json (or .oas.yaml) and config/policies.json");
            return (None, diags);
        }
    };
    doc_paths.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
    if doc_paths.is_empty() {
        diags.error(None, format!("no OpenAPI documents in {}", config.display()))
            .help("name them config/<anything>.oas.json, .oas.yaml or .oas.yml");
        return (None, diags);
    }

    let mut documents = Vec::new();
    for path in &doc_paths {
        let Some((file, node)) = read_file(root, path, &mut files, &mut diags) else { continue };
        documents.push(Document { file, root: node });
    }

    let settings = load_settings(root, &mut files, &mut diags);
    let mut policies = load_policies(root, &mut files, &mut diags);
    let mut used = vec![false; policies.list.len()];
    let mut sources = Sources::default();
    load_json_schemas(root, &mut policies, &mut sources, &mut files, &mut diags);

    let mut loader = Loader { root, files: &mut files, diags: &mut diags, external: BTreeMap::new(), cors_used: vec![false; policies.cors.len()], sources, unsupported_handlers: Vec::new() };
    let mut routes = Vec::new();
    for doc in &documents {
        loader.check_document(doc);
        loader.collect_routes(doc, &policies, &mut used, &mut routes);
    }
    let cors_used = std::mem::take(&mut loader.cors_used);
    let unsupported_handlers = std::mem::take(&mut loader.unsupported_handlers);
    check_route_order(&routes, &settings, &files, &mut diags);
    for (c, used) in policies.cors.iter().zip(&cors_used) {
        if !used && c.options.is_some() {
            diags.warning(c.at, format!("CORS policy `{}` is defined but no route uses it", c.name));
        }
    }
    for (p, used) in policies.list.iter().zip(&used) {
        if !used && !matches!(p.kind, PolicyKind::Invalid) {
            diags.warning(p.at, format!("policy `{}` is defined but no route uses it", p.name));
        }
    }
    let missing_modules = check_modules(root, &policies, &routes, &mut files, &mut diags, stub_missing);
    let hooks = check_hooks(root, &mut files, &mut diags);

    let input_hash = hash_inputs(&files);
    let project = Project {
        root: root.to_path_buf(),
        name,
        files,
        documents,
        routes,
        settings,
        policies,
        hooks,
        missing_modules,
        unsupported_handlers,
        input_hash,
    };
    (Some(project), diags)
}

/// Reads and parses one file, registering it.
fn read_file(root: &Path, path: &Path, files: &mut Files, diags: &mut Diagnostics) -> Option<(FileId, Node)> {
    let display = display_name(root, path);
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            diags.error(None, format!("cannot read {display}: {e}"));
            return None;
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            // Register a lossy copy so the error can show line:col and the offending byte
            // (the text before it is unchanged, so the offset still holds).
            let bad = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let byte = bytes.get(bad).copied().unwrap_or(0);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let len = text[bad..].chars().next().map_or(0, char::len_utf8);
            let file = files.add(display.clone(), path.to_path_buf(), text);
            diags.error(at(file, Span { start: bad, end: bad + len }), "the file is not UTF-8 text")
                .label(format!("invalid byte 0x{byte:02X}"))
                .help("save the file as UTF-8");
            return None;
        }
    };
    let lower = display.to_ascii_lowercase();
    let format = if lower.ends_with(".yaml") || lower.ends_with(".yml") {
        Format::Yaml
    } else if lower.ends_with(".jsonc") {
        Format::Jsonc
    } else {
        Format::Json
    };
    let file = files.add(display, path.to_path_buf(), text);
    let text = files.get(file).text.clone();
    let (node, errors) = source::parse(&text, format);
    for e in errors {
        let d = diags.error(Location { file, span: e.span }, e.message);
        if let Some(l) = e.label {
            d.label(l);
        }
    }
    node.map(|n| (file, n))
}

/// Reads and bundles the schema file of every validate-json-schema-inbound policy.
fn load_json_schemas(root: &Path, policies: &mut PolicySet, sources: &mut Sources, files: &mut Files, diags: &mut Diagnostics) {
    for p in &mut policies.list {
        let PolicyKind::Builtin { schema_file: Some((text, loc)), json_schema, .. } = &mut p.kind else { continue };
        let Some(rel) = text.trim().strip_prefix("$import(").and_then(|r| r.strip_suffix(')')) else {
            diags.error(*loc, "`validator` must name a JSON Schema file of the project")
                .help("write \"validator\": \"$import(./schemas/item.json)\"");
            continue;
        };
        let path = root.join(rel.trim());
        if !path.is_file() {
            diags.error(*loc, format!("schema file `{}` not found", rel.trim()))
                .label(format!("looked for {}", display_name(root, &lexical_normalize(&path))));
            continue;
        }
        let Some(file) = sources.load(&path, files, diags, root) else {
            diags.error(*loc, format!("schema file `{}` cannot be read", rel.trim()));
            continue;
        };
        let Some(node) = sources.get(file).cloned() else { continue };
        let mut value = Bundler::new(sources, files, diags, root, false).bundle(&node, file);
        // Keep the draft the file declares.
        if let (Some(draft), serde_json::Value::Object(map)) = (node.get("$schema").and_then(Node::as_str), &mut value) {
            map.insert("$schema".into(), serde_json::Value::String(draft.to_owned()));
        }
        if let Err(msg) = crate::schema::compile(&value) {
            diags.error(*loc, format!("the schema in `{}` cannot be compiled: {msg}", rel.trim()));
            continue;
        }
        *json_schema = Some(value.to_string());
    }
}

/// `a/b/../c` → `a/c`, without touching the file system (the path may not exist).
fn lexical_normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir if matches!(out.components().next_back(), Some(std::path::Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Looks up the fragment of a `$ref`: a JSON pointer that may be percent-encoded, as URI
/// fragments are (`#/paths/~1users~1%7Bid%7D`).
fn resolve_pointer<'n>(node: &'n Node, fragment: &str) -> Option<&'n Node> {
    node.pointer(fragment).or_else(|| {
        if !fragment.contains('%') {
            return None;
        }
        let bytes = fragment.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'%', Some(v)) => {
                    out.push(v);
                    i += 3;
                }
                (b, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        node.pointer(&String::from_utf8(out).ok()?)
    })
}

fn display_name(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).to_string_lossy().replace('\\', "/")
}

fn at(file: FileId, span: Span) -> Location {
    Location { file, span }
}

fn load_settings(root: &Path, files: &mut Files, diags: &mut Diagnostics) -> Settings {
    let path = root.join("zuplo.jsonc");
    let mut settings = Settings::default();
    if !path.exists() {
        return settings;
    }
    let Some((file, node)) = read_file(root, &path, files, diags) else { return settings };
    if !matches!(node.kind, Kind::Object(_)) {
        diags.error(at(file, node.span), format!("zuplo.jsonc must hold an object, found {}", node.type_name()));
        return settings;
    }
    if let Some(v) = node.get("compatibilityDate") {
        match v.as_str() {
            Some(s) => settings.compatibility_date = Some(s.to_owned()),
            None => {
                diags.error(at(file, v.span), format!("`compatibilityDate` must be a string, found {}", v.type_name()));
            }
        }
    }
    if let Some(v) = node.get("allowDuplicateRoutes") {
        match v.as_bool() {
            Some(b) => settings.allow_duplicate_routes = b,
            None => {
                diags.error(at(file, v.span), format!("`allowDuplicateRoutes` must be true or false, found {}", v.type_name()));
            }
        }
    }
    settings
}

/// Reads `config/policies.json` when present.
fn load_policies(root: &Path, files: &mut Files, diags: &mut Diagnostics) -> PolicySet {
    let path = root.join("config").join("policies.json");
    if !path.exists() {
        return PolicySet::default();
    }
    let Some((file, node)) = read_file(root, &path, files, diags) else { return PolicySet::default() };
    let set = crate::policies::load(root, file, &node, files, diags);
    set.check_cycles(diags);
    set
}

struct Loader<'a> {
    root: &'a Path,
    files: &'a mut Files,
    diags: &'a mut Diagnostics,
    /// External documents already read, by canonical path.
    external: BTreeMap<PathBuf, Option<(FileId, Node)>>,
    /// Which `corsPolicies` entries a route names.
    cors_used: Vec<bool>,
    /// Parsed documents for schema bundling.
    sources: Sources,
    /// Routes whose handler is a Zuplo built-in specgate lacks.
    unsupported_handlers: Vec<UnsupportedHandler>,
}

impl Loader<'_> {
    fn check_document(&mut self, doc: &Document) {
        let file = doc.file;
        let root = &doc.root;
        if !matches!(root.kind, Kind::Object(_)) {
            self.diags.error(at(file, root.span), format!("an OpenAPI document must be an object, found {}", root.type_name()));
            return;
        }
        match root.get("openapi") {
            Some(v) => match v.as_str() {
                Some(s) if s.starts_with("3.0") || s.starts_with("3.1") => {}
                Some(s) => {
                    self.diags.warning(at(file, v.span), format!("OpenAPI version `{s}` is not 3.0 or 3.1; reading it as 3.1"));
                }
                None => {
                    self.diags.error(at(file, v.span), format!("`openapi` must be a version string, found {}", v.type_name()));
                }
            },
            None => {
                if let Some(v) = root.get("swagger") {
                    self.diags.error(at(file, v.span), "Swagger 2.0 documents are not supported")
                        .help("convert the document to OpenAPI 3 first");
                } else {
                    self.diags.warning(at(file, Span { start: root.span.start, end: root.span.start + 1 }), "the document has no `openapi` version field");
                }
            }
        }
        let dir = self.files.get(file).path.parent().map(Path::to_path_buf).unwrap_or_default();
        self.check_refs(root, root, file, &dir, 0);
    }

    /// Every `$ref` must resolve: internal pointers in the same document, relative files
    /// (and pointers into them) on disk.
    fn check_refs(&mut self, node: &Node, doc: &Node, file: FileId, dir: &Path, depth: usize) {
        if depth > 64 {
            return;
        }
        match &node.kind {
            Kind::Object(entries) => {
                for e in entries {
                    if e.key == "$ref" {
                        if let Some(r) = e.value.as_str() {
                            self.check_ref(r, e.value.span, doc, file, dir, depth);
                        }
                    } else {
                        self.check_refs(&e.value, doc, file, dir, depth + 1);
                    }
                }
            }
            Kind::Array(items) => {
                for i in items {
                    self.check_refs(i, doc, file, dir, depth + 1);
                }
            }
            _ => {}
        }
    }

    fn check_ref(&mut self, r: &str, span: Span, doc: &Node, file: FileId, dir: &Path, depth: usize) {
        let (target, fragment) = match r.split_once('#') {
            Some((t, f)) => (t, Some(f)),
            None => (r, None),
        };
        if target.is_empty() {
            let ptr = fragment.unwrap_or("");
            if resolve_pointer(doc, ptr).is_none() {
                self.diags.error(at(file, span), format!("`$ref` `{r}` does not resolve in this document"));
            }
            return;
        }
        if target.contains("://") {
            self.diags.warning(at(file, span), format!("remote `$ref` `{r}` is not checked"));
            return;
        }
        let path = dir.join(target);
        let canonical = match path.canonicalize() {
            Ok(p) => p,
            Err(_) => {
                self.diags.error(at(file, span), format!("`$ref` file `{target}` not found"))
                    .label(format!("looked for {}", display_name(self.root, &lexical_normalize(&path))));
                return;
            }
        };
        if !canonical.is_file() {
            self.diags.error(at(file, span), format!("`$ref` target `{target}` is not a file"));
            return;
        }
        if !self.external.contains_key(&canonical) {
            let loaded = read_file(self.root, &canonical, self.files, self.diags);
            self.external.insert(canonical.clone(), loaded);
            if let Some(Some((ext_file, ext_node))) = self.external.get(&canonical).cloned() {
                let ext_dir = canonical.parent().map(Path::to_path_buf).unwrap_or_default();
                self.check_refs(&ext_node, &ext_node, ext_file, &ext_dir, depth + 1);
            }
        }
        if let (Some(Some((_, ext))), Some(ptr)) = (self.external.get(&canonical), fragment)
            && resolve_pointer(ext, ptr).is_none() {
                self.diags.error(at(file, span), format!("`$ref` `{r}`: `#{ptr}` does not resolve in {target}"));
            }
    }

    fn collect_routes(&mut self, doc: &Document, policies: &PolicySet, used: &mut [bool], routes: &mut Vec<Route>) {
        let file = doc.file;
        let Some(paths) = doc.root.get("paths") else { return };
        let Kind::Object(entries) = &paths.kind else {
            self.diags.error(at(file, paths.span), format!("`paths` must be an object, found {}", paths.type_name()));
            return;
        };
        for entry in entries {
            let item = &entry.value;
            let Kind::Object(ops) = &item.kind else {
                self.diags.error(at(file, item.span), format!("path item must be an object, found {}", item.type_name()));
                continue;
            };
            let mode = self.path_mode(item, file);
            let parsed = self.parse_path(&entry.key, entry.key_span, mode, file);
            for op in ops {
                let lower = op.key.to_ascii_lowercase();
                if !METHODS.contains(&lower.as_str()) {
                    continue;
                }
                let Some(parsed) = parsed.clone() else { continue };
                if let Some(mut route) = self.route(&entry.key, entry.key_span, &op.key, op.key_span, &op.value, mode, parsed, file, policies, used) {
                    self.validation(&mut route, item, &op.value, doc, policies);
                    routes.push(route);
                }
            }
        }
    }

    fn path_mode(&mut self, item: &Node, file: FileId) -> PathMode {
        let Some(x) = item.get("x-zuplo-path") else { return PathMode::OpenApi };
        let Some(mode) = x.get("pathMode") else { return PathMode::OpenApi };
        match mode.as_str() {
            Some("open-api") => PathMode::OpenApi,
            Some("url-pattern") => PathMode::UrlPattern,
            _ => {
                self.diags.error(at(file, mode.span), "`pathMode` must be \"open-api\" or \"url-pattern\"");
                PathMode::OpenApi
            }
        }
    }

    fn parse_path(&mut self, path: &str, key_span: Span, mode: PathMode, file: FileId) -> Option<ParsedPath> {
        let result = match mode {
            PathMode::OpenApi => pattern::parse_open_api(path),
            PathMode::UrlPattern => pattern::parse_url_pattern(path),
        };
        match result {
            Ok(p) => Some(p),
            Err(e) => {
                let span = value_span(&self.files.get(file).text, key_span, path, e.offset, e.len);
                self.diags.error(at(file, span), e.message);
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        path: &str,
        path_span: Span,
        method: &str,
        method_span: Span,
        op: &Node,
        mode: PathMode,
        parsed: ParsedPath,
        file: FileId,
        policies: &PolicySet,
        used: &mut [bool],
    ) -> Option<Route> {
        let Some(x) = op.get("x-zuplo-route") else {
            self.diags.warning(at(file, method_span), format!("{} {path} has no `x-zuplo-route`; it is not routed", method.to_ascii_uppercase()));
            return None;
        };
        if !matches!(x.kind, Kind::Object(_)) {
            self.diags.error(at(file, x.span), format!("`x-zuplo-route` must be an object, found {}", x.type_name()));
            return None;
        }
        for e in x.entries() {
            if !matches!(e.key.as_str(), "handler" | "policies" | "corsPolicy" | "raw" | "version" | "mcp") {
                self.diags.warning(at(file, e.key_span), format!("unknown `x-zuplo-route` key `{}`", e.key));
            }
        }
        let cors_policy = match x.get("corsPolicy") {
            None => None,
            Some(c) => match c.as_str() {
                Some("none") => None,
                Some("anything-goes") => Some("anything-goes".to_owned()),
                Some(name) => match policies.cors_by_name.get(name) {
                    Some(&i) => {
                        self.cors_used[i] = true;
                        Some(name.to_owned())
                    }
                    None => {
                        let defined: Vec<&str> = crate::policies::BUILTIN_CORS
                            .into_iter()
                            .chain(policies.cors.iter().map(|c| c.name.as_str()))
                            .collect();
                        self.diags.error(at(file, c.span), format!("CORS policy `{name}` is not defined in config/policies.json"))
                            .help(format!("defined: {} (add it to `corsPolicies`)", defined.join(", ")));
                        None
                    }
                },
                None => {
                    self.diags.error(at(file, c.span), format!("`corsPolicy` must be a string, found {}", c.type_name()));
                    None
                }
            },
        };
        let (inbound, outbound) = self.route_policies(x, file, policies, used);
        let Some((handler, local_target)) = self.handler(x, file, &parsed) else {
            if let Some(h) = x.get("handler")
                && h.get("module").and_then(Node::as_str) == Some(BUILTIN_MODULE)
                && let Some(e) = h.get("export")
                && let Some(name) = e.as_str()
                && SUPPORTED_HANDLERS.iter().all(|s| *s != name)
            {
                self.unsupported_handlers.push(UnsupportedHandler {
                    route: format!("{} {path}", method.to_ascii_uppercase()),
                    export: name.to_owned(),
                    at: at(file, e.span),
                });
            }
            return None;
        };
        let examples = operation_examples(op);
        Some(Route {
            path: path.to_owned(),
            path_at: at(file, path_span),
            method: method.to_ascii_uppercase(),
            method_at: at(file, method_span),
            operation_id: op.get("operationId").and_then(Node::as_str).map(str::to_owned),
            mode,
            parsed,
            handler,
            cors_policy,
            inbound,
            outbound,
            examples,
            operation: None,
            local_target,
        })
    }

    /// For a route with request-validation-inbound: its parameters and body with bundled,
    /// compiled schemas, and a warning when the enabled checks have nothing to look at.
    fn validation(&mut self, route: &mut Route, path_item: &Node, op: &Node, doc: &Document, policies: &PolicySet) {
        let uses: Vec<&crate::policies::PolicyDef> = route
            .inbound
            .iter()
            .map(|&i| &policies.list[i])
            .filter(|p| matches!(&p.kind, PolicyKind::Builtin { spec, .. } if spec.export == "RequestValidationInboundPolicy"))
            .collect();
        if uses.is_empty() {
            return;
        }
        // Registered once per document: the tree of a large document is costly to copy.
        if self.sources.get(doc.file).is_none() {
            self.sources.insert(doc.file, doc.root.clone());
        }
        let oas30 = doc.root.get("openapi").and_then(Node::as_str).is_some_and(|v| v.starts_with("3.0"));
        let input = OperationInput { path_item, op, file: doc.file, oas30 };
        let operation = crate::schema::operation(&input, &mut self.sources, self.files, self.diags, self.root);
        for p in uses {
            let PolicyKind::Builtin { options, .. } = &p.kind else { continue };
            let options: serde_json::Value = serde_json::from_str(options).unwrap_or_default();
            let enabled = |key: &str| options.get(key).and_then(serde_json::Value::as_str).is_some_and(|v| v != "none");
            let checks = [
                ("validateBody", None),
                ("validateQueryParameters", Some(crate::model::ParamIn::Query)),
                ("validatePathParameters", Some(crate::model::ParamIn::Path)),
                ("validateHeaders", Some(crate::model::ParamIn::Header)),
            ];
            if !checks.iter().any(|(key, location)| enabled(key) && operation.has(*location)) {
                self.diags
                    .warning(route.method_at, format!("policy `{}` validates nothing on {} {}", p.name, route.method, route.path))
                    .help("the checks it enables (validateBody, validateQueryParameters, validatePathParameters, validateHeaders) find no request body or parameters of that kind in this operation");
            }
        }
        route.operation = Some(operation);
    }

    fn route_policies(&mut self, x: &Node, file: FileId, policies: &PolicySet, used: &mut [bool]) -> (Vec<usize>, Vec<usize>) {
        let Some(p) = x.get("policies") else { return (Vec::new(), Vec::new()) };
        if !matches!(p.kind, Kind::Object(_)) {
            // Silently ignoring e.g. `"policies": ["api-key"]` would drop authentication.
            self.diags.error(at(file, p.span), format!("`policies` must be an object with `inbound` and `outbound` lists, found {}", p.type_name()))
                .help(r#"write "policies": { "inbound": ["name", ...] }"#);
            return (Vec::new(), Vec::new());
        }
        let mut chains = [Vec::new(), Vec::new()];
        for (k, (side_name, side)) in [("inbound", Side::Inbound), ("outbound", Side::Outbound)].into_iter().enumerate() {
            let Some(list) = p.get(side_name) else { continue };
            let Kind::Array(items) = &list.kind else {
                self.diags.error(at(file, list.span), format!("`policies.{side_name}` must be an array of policy names, found {}", list.type_name()));
                continue;
            };
            let mut names = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(name) => names.push((name.to_owned(), at(file, item.span))),
                    None => {
                        self.diags.error(at(file, item.span), format!("a policy name must be a string, found {}", item.type_name()));
                    }
                }
            }
            chains[k] = policies.resolve(&names, side, self.diags, used);
        }
        let [inbound, outbound] = chains;
        (inbound, outbound)
    }

    fn handler(&mut self, x: &Node, file: FileId, parsed: &ParsedPath) -> Option<(Handler, Option<LocalTarget>)> {
        let Some(h) = x.get("handler") else {
            self.diags.error(at(file, x.span), "`x-zuplo-route` has no `handler`")
                .help(r#"add e.g. "handler": { "export": "urlForwardHandler", "module": "$import(@zuplo/runtime)", "options": { "baseUrl": "https://..." } }"#);
            return None;
        };
        let export = self.required_str(h, "export", file)?;
        let module = self.required_str(h, "module", file)?;
        if module.1 != BUILTIN_MODULE {
            if module.1.starts_with("$import(") {
                return match crate::modules::resolve(self.root, &module.1) {
                    Ok(m) => Some((Handler::Custom { module: m, export: export.1, at: at(file, module.0) }, None)),
                    Err(e) => {
                        self.diags.error(at(file, module.0), e);
                        None
                    }
                };
            } else {
                self.diags.error(at(file, module.0), format!("unknown handler module `{}`", module.1))
                    .help("built-in handlers come from `$import(@zuplo/runtime)`");
            }
            return None;
        }
        let empty = Node { span: h.span, kind: Kind::Object(Vec::new()) };
        let options = h.get("options").unwrap_or(&empty);
        if !matches!(options.kind, Kind::Object(_)) {
            self.diags.error(at(file, options.span), format!("handler `options` must be an object, found {}", options.type_name()));
            return None;
        }
        let mut opts = Options { node: options, file, known: Vec::new() };
        let mut local = None;
        let handler = match export.1.as_str() {
            "urlForwardHandler" => {
                let upstream = self.upstream_options(&mut opts, parsed);
                let base = match (options.get("baseUrl"), upstream.upstreams.is_empty()) {
                    (Some(b), false) => {
                        self.diags.error(at(file, b.span), "`baseUrl` and `upstreams` exclude each other")
                            .help("list every base URL in `upstreams` (e.g. [\"${env.PRIMARY_URL}\", \"${env.SECONDARY_URL}\"]) and remove `baseUrl`");
                        opts.known.push("baseUrl");
                        None
                    }
                    (None, false) => {
                        opts.known.push("baseUrl");
                        None
                    }
                    (_, true) if options.get("upstreams").is_some() => {
                        // The upstream list was invalid (already reported).
                        opts.known.push("baseUrl");
                        return None;
                    }
                    (_, true) => {
                        let base = self.template_option(&mut opts, "baseUrl", parsed)?;
                        local = self.local_target(&opts, "baseUrl", None);
                        Some(base)
                    }
                };
                let forward_search = self.bool_option(&mut opts, "forwardSearch", true);
                let follow_redirects = self.bool_option(&mut opts, "followRedirects", false);
                opts.known.extend(catalog::UPSTREAM_OPTIONS.iter().map(|o| o.name));
                Handler::Forward { base, forward_search, follow_redirects, upstream }
            }
            "urlRewriteHandler" => {
                let upstream = self.upstream_options(&mut opts, parsed);
                let pattern = self.template_option(&mut opts, "rewritePattern", parsed)?;
                if upstream.upstreams.is_empty() {
                    local = self.local_target(&opts, "rewritePattern", None);
                } else {
                    self.check_path_pattern(options, &pattern, file)?;
                }
                let forward_search = self.bool_option(&mut opts, "forwardSearch", true);
                let follow_redirects = self.bool_option(&mut opts, "followRedirects", false);
                opts.known.extend(catalog::UPSTREAM_OPTIONS.iter().map(|o| o.name));
                Handler::Rewrite { pattern, forward_search, follow_redirects, upstream }
            }
            "redirectHandler" => {
                let location = self.template_option(&mut opts, "location", parsed)?;
                self.local_target(&opts, "location", Some("a redirect sends its location to the client, which cannot reach a local:// gateway"));
                opts.known.push("status");
                let status = match options.get("status") {
                    None => 302,
                    Some(s) => match s.as_u64() {
                        Some(v @ (301 | 302 | 303 | 307 | 308)) => v as u16,
                        _ => {
                            self.diags.error(at(file, s.span), "`status` of redirectHandler must be 301, 302, 303, 307 or 308");
                            302
                        }
                    },
                };
                Handler::Redirect { location, status }
            }
            "webSocketHandler" => {
                let pattern = self.template_option(&mut opts, "rewritePattern", parsed)?;
                self.local_target(&opts, "rewritePattern", Some("webSocketHandler cannot pass a handshake to a local:// gateway; use its ws(s):// or http(s):// URL"));
                Handler::WebSocket { pattern }
            }
            "openApiSpecHandler" => {
                // Zuplo names the document to serve; specgate serves the project's bundled
                // public document (all `config/*.oas.*` files merged, x-zuplo-* removed).
                opts.known.push("openApiFilePath");
                if let Some(v) = options.get("openApiFilePath")
                    && v.as_str().is_none()
                {
                    self.diags.error(at(file, v.span), format!("`openApiFilePath` must be a string, found {}", v.type_name()));
                }
                Handler::OpenApiSpec
            }
            other => {
                let msg = match other {
                    "lambdaHandler" | "mcpServerHandler" | "awsLambdaHandler" => {
                        format!("handler `{other}` is not supported by this version of specgate")
                    }
                    _ => format!("`{other}` is not a handler of $import(@zuplo/runtime)"),
                };
                self.diags.error(at(file, export.0), msg)
                    .help(format!("supported here: {}", SUPPORTED_HANDLERS.join(", ")));
                return None;
            }
        };
        // The catalog (which docs/reference.md is written from) decides what is known; the
        // options read above must be exactly its list.
        // (A unit test keeps SUPPORTED_HANDLERS, the arms above, and catalog::HANDLERS equal.)
        let Some(spec) = catalog::handler(&export.1) else { return Some((handler, local)) };
        debug_assert!(
            {
                let mut read = opts.known.clone();
                let mut listed: Vec<&str> = spec.option_names().collect();
                read.sort_unstable();
                listed.sort_unstable();
                read == listed
            },
            "options read for {} ({:?}) differ from catalog::HANDLERS",
            export.1,
            opts.known
        );
        for e in options.entries() {
            if !spec.accepts(&e.key) {
                self.diags.warning(at(file, e.key_span), format!("unknown option `{}` of {}", e.key, export.1))
                    .help(format!("known options: {}", spec.option_names().collect::<Vec<_>>().join(", ")));
            }
        }
        Some((handler, local))
    }

    /// The gateway named by a literal `local://NAME` at the start of option `key` (a name
    /// made of substitutions is left to run time). Errors for an empty or malformed name, or
    /// with `refused` for a handler that cannot use local:// at all.
    fn local_target(&mut self, opts: &Options<'_>, key: &str, refused: Option<&str>) -> Option<LocalTarget> {
        let v = opts.node.get(key)?;
        let text = v.as_str()?;
        let rest = after_local_scheme(text)?;
        let source = self.files.get(opts.file).text.clone();
        let span_of = |offset: usize, len: usize| at(opts.file, value_span(&source, v.span, text, offset, len));
        if let Some(why) = refused {
            self.diags.error(span_of(0, 8), format!("`{key}` cannot be a local:// URL")).help(why);
            return None;
        }
        let end = rest.find(['/', '?', '#', '$']).unwrap_or(rest.len());
        let name = &rest[..end];
        if rest[end..].starts_with('$') {
            // `local://${env.GATEWAY}` or `local://orders-${env.SUFFIX}`: known at run time only.
            return None;
        }
        if name.is_empty() {
            self.diags.error(span_of(0, 8), "`local://` needs the name of a gateway")
                .help("write local://NAME or local://NAME/path, NAME being a project of this build or a gateway reached through LOCAL_GATEWAY_<NAME>_URL");
            return None;
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
            self.diags.error(span_of(8, name.len()), format!("`{name}` is not a gateway name"))
                .help("a local:// URL names a gateway (letters, digits, `-`), without a port or credentials");
            return None;
        }
        Some(LocalTarget { name: name.to_owned(), at: span_of(8, name.len()) })
    }

    fn required_str(&mut self, node: &Node, key: &str, file: FileId) -> Option<(Span, String)> {
        match node.get(key) {
            None => {
                self.diags.error(at(file, node.span), format!("handler has no `{key}`"));
                None
            }
            Some(v) => match v.as_str() {
                Some(s) => Some((v.span, s.to_owned())),
                None => {
                    self.diags.error(at(file, v.span), format!("handler `{key}` must be a string, found {}", v.type_name()));
                    None
                }
            },
        }
    }

    fn bool_option(&mut self, opts: &mut Options<'_>, key: &'static str, default: bool) -> bool {
        opts.known.push(key);
        match opts.node.get(key) {
            None => default,
            Some(v) => match v.as_bool() {
                Some(b) => b,
                None => {
                    self.diags.error(at(opts.file, v.span), format!("option `{key}` must be true or false, found {}", v.type_name()));
                    default
                }
            },
        }
    }

    fn template_option(&mut self, opts: &mut Options<'_>, key: &'static str, parsed: &ParsedPath) -> Option<template::Template> {
        opts.known.push(key);
        let file = opts.file;
        let Some(v) = opts.node.get(key) else {
            let d = self.diags.error(at(file, opts.node.span), format!("required option `{key}` is missing"));
            if key == "baseUrl" {
                d.help("or list several base URLs in `upstreams`");
            }
            return None;
        };
        self.template_value(v, key, file, parsed)
    }

    /// A template written at `v` (the value of option `key`), its problems reported.
    fn template_value(&mut self, v: &Node, key: &str, file: FileId, parsed: &ParsedPath) -> Option<template::Template> {
        let Some(text) = v.as_str() else {
            self.diags.error(at(file, v.span), format!("option `{key}` must be a string, found {}", v.type_name()));
            return None;
        };
        if text.trim().is_empty() {
            self.diags.error(at(file, v.span), format!("option `{key}` is empty"));
            return None;
        }
        let result = template::parse(text, &parsed.params);
        let source = self.files.get(file).text.clone();
        let span_of = |offset: usize, len: usize| value_span(&source, v.span, text, offset, len);
        for w in &result.warnings {
            let d = self.diags.warning(at(file, span_of(w.offset, w.len)), w.message.clone());
            if let Some(h) = &w.help {
                d.help(h.clone());
            }
        }
        for e in &result.errors {
            let d = self.diags.error(at(file, span_of(e.offset, e.len)), e.message.clone());
            if let Some(h) = &e.help {
                d.help(h.clone());
            }
        }
        result.template
    }
}

/// What follows `local://` (any case) at the start of `text`.
pub(crate) fn after_local_scheme(text: &str) -> Option<&str> {
    text.get(..8).filter(|p| p.eq_ignore_ascii_case("local://")).map(|_| &text[8..])
}

struct Options<'a> {
    node: &'a Node,
    file: FileId,
    known: Vec<&'static str>,
}

/// Where bytes `offset..offset + len` of a string value are written in the source, so that a
/// diagnostic inside a template or path underlines exactly the offending text. Handles quoted
/// JSON/YAML strings (escapes such as `\\d` or `\u0041` included) and plain YAML scalars;
/// falls back to the whole value when the spelling cannot be mapped (e.g. folded YAML).
fn value_span(text: &str, span: Span, value: &str, offset: usize, len: usize) -> Span {
    let Some(map) = source_offsets(text, span, value) else { return span };
    let start = offset.min(value.len());
    let end = offset.saturating_add(len).clamp(start, value.len());
    Span { start: map[start], end: map[end].max(map[start]) }
}

/// For each byte offset of `value` (and its end), the offset in `text` where the character
/// holding it is written; `None` when `text[span]` does not spell `value` in a known way.
fn source_offsets(text: &str, span: Span, value: &str) -> Option<Vec<usize>> {
    let raw = text.get(span.start..span.end)?;
    let quote = raw.chars().next()?;
    if quote != '"' && quote != '\'' {
        // A plain scalar is spelled as it reads.
        return raw.starts_with(value).then(|| (0..=value.len()).map(|i| span.start + i).collect());
    }
    let mut decoded = String::with_capacity(value.len());
    let mut map = Vec::with_capacity(value.len() + 1);
    let mut chars = raw.char_indices().skip(1).peekable();
    let mut closed = false;
    while let Some((i, c)) = chars.next() {
        let ch = match c {
            '\n' | '\r' => return None,
            c if c == quote && quote == '\'' => {
                if chars.peek().map(|&(_, n)| n) == Some('\'') {
                    chars.next();
                    '\''
                } else {
                    closed = true;
                    map.push(span.start + i);
                    break;
                }
            }
            c if c == quote => {
                closed = true;
                map.push(span.start + i);
                break;
            }
            '\\' if quote == '"' => {
                let (_, e) = chars.next()?;
                let hex = |chars: &mut std::iter::Peekable<std::iter::Skip<std::str::CharIndices<'_>>>, n: usize| -> Option<u32> {
                    let mut v = 0u32;
                    for _ in 0..n {
                        v = v * 16 + chars.next()?.1.to_digit(16)?;
                    }
                    Some(v)
                };
                match e {
                    'u' => {
                        let hi = hex(&mut chars, 4)?;
                        if (0xD800..0xDC00).contains(&hi) {
                            if chars.next()?.1 != '\\' || chars.next()?.1 != 'u' {
                                return None;
                            }
                            let lo = hex(&mut chars, 4)?;
                            char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo.checked_sub(0xDC00)? & 0x3FF))?
                        } else {
                            char::from_u32(hi)?
                        }
                    }
                    'x' => char::from_u32(hex(&mut chars, 2)?)?,
                    'U' => char::from_u32(hex(&mut chars, 8)?)?,
                    '"' | '\\' | '/' | ' ' | '\t' => e,
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    '0' => '\0',
                    'a' => '\u{7}',
                    'v' => '\u{b}',
                    'e' => '\u{1b}',
                    'N' => '\u{85}',
                    '_' => '\u{a0}',
                    'L' => '\u{2028}',
                    'P' => '\u{2029}',
                    _ => return None,
                }
            }
            c => c,
        };
        map.extend(std::iter::repeat_n(span.start + i, ch.len_utf8()));
        decoded.push(ch);
    }
    (closed && decoded == value).then_some(map)
}

/// Duplicate routes (same method and path) and routes an earlier one fully shadows.
fn check_route_order(routes: &[Route], settings: &Settings, files: &Files, diags: &mut Diagnostics) {
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, r) in routes.iter().enumerate() {
        let key = (r.method.clone(), r.path.clone());
        if let Some(&first) = seen.get(&key) {
            let f = &routes[first];
            if settings.allow_duplicate_routes {
                diags.warning(r.path_at, format!("{} {} is defined twice; the first definition wins", r.method, r.path))
                    .help(format!("the first definition is at {}", files.position(f.path_at.file, f.path_at.span.start)));
            } else {
                diags.error(r.path_at, format!("duplicate route {} {}", r.method, r.path))
                    .help(format!("it is already defined at {}; set \"allowDuplicateRoutes\": true in zuplo.jsonc to allow this", files.position(f.path_at.file, f.path_at.span.start)))
                    .label("defined again here");
            }
            continue;
        }
        seen.insert(key, i);
        if let Some(earlier) = routes[..i]
            .iter()
            .find(|e| e.method == r.method && e.path != r.path && pattern::covers(&e.parsed, &r.parsed))
        {
            diags.warning(r.method_at, format!("{} {} is never reached: {} {} matches every request it would", r.method, r.path, earlier.method, earlier.path))
                .help("move the more specific route first");
        }
    }
}

fn hash_inputs(files: &Files) -> String {
    let mut sorted: Vec<_> = files.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut h = Sha256::new();
    for f in sorted {
        h.update(f.name.as_bytes());
        h.update([0]);
        h.update(f.text.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The names of the environment variables the project reads, sorted.
pub fn env_vars(project: &Project) -> BTreeSet<String> {
    project
        .routes
        .iter()
        .flat_map(|r| r.handler.templates())
        .flat_map(|t| t.env_vars().into_iter().map(str::to_owned))
        .collect()
}

/// Response examples of an operation: `responses.<code>.content.<type>.example` and
/// `.examples.<name>.value`, in document order.
fn operation_examples(op: &Node) -> Vec<Example> {
    let mut out = Vec::new();
    let Some(responses) = op.get("responses") else { return out };
    for r in responses.entries() {
        let Ok(status) = r.key.parse::<u16>() else { continue };
        let Some(content) = r.value.get("content") else { continue };
        for c in content.entries() {
            let text = |v: &Node| match v.as_str() {
                Some(s) => s.to_owned(),
                None => v.to_value().to_string(),
            };
            if let Some(ex) = c.value.get("example") {
                out.push(Example { status, content_type: c.key.clone(), name: String::new(), body: text(ex) });
            }
            if let Some(exs) = c.value.get("examples") {
                for e in exs.entries() {
                    if let Some(v) = e.value.get("value") {
                        out.push(Example { status, content_type: c.key.clone(), name: e.key.clone(), body: text(v) });
                    }
                }
            }
        }
    }
    out
}

/// Every custom module a route or policy uses must exist and export the function its role
/// needs. Returns the missing modules (for `--stub-missing`); errors are reported as
/// warnings-to-be when stubs are requested, so the caller decides.
fn check_modules(
    root: &Path,
    policies: &PolicySet,
    routes: &[Route],
    files: &mut Files,
    diags: &mut Diagnostics,
    stub_missing: bool,
) -> Vec<(ModuleRef, Vec<(String, Role)>)> {
    // (module, export, role, where) for every use.
    let mut uses: Vec<(ModuleRef, String, Role, Location)> = Vec::new();
    for r in routes {
        if let Handler::Custom { module, export, at } = &r.handler {
            uses.push((module.clone(), export.clone(), Role::Handler, *at));
        }
        for (chain, role) in [(&r.inbound, Role::Inbound), (&r.outbound, Role::Outbound)] {
            for &i in chain {
                match &policies.list[i].kind {
                    PolicyKind::Custom { module, export, module_at, .. } => {
                        uses.push((module.clone(), export.clone(), role, *module_at));
                    }
                    PolicyKind::Builtin { functions, .. } => {
                        for f in functions {
                            uses.push((f.module.clone(), f.export.clone(), f.role, f.at));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    uses.sort_by(|a, b| (&a.0.rel, &a.1, a.2).cmp(&(&b.0.rel, &b.1, b.2)));
    uses.dedup_by(|a, b| a.0.rel == b.0.rel && a.1 == b.1 && a.2 == b.2);
    let mut missing: Vec<(ModuleRef, Vec<(String, Role)>)> = Vec::new();
    let mut texts: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (m, export, role, loc) in uses {
        let text = texts
            .entry(m.rel.clone())
            .or_insert_with(|| std::fs::read_to_string(&m.source).ok())
            .clone();
        match text {
            None => {
                let msg = format!("module `{}` not found (looked for modules/{}.rs)", m.import, m.rel);
                if stub_missing {
                    diags.warning(loc, format!("{msg}; a stub answering 501 is generated"));
                } else {
                    diags.error(loc, msg).help(crate::modules::signature_help(role, &export, &m.rel));
                }
                match missing.iter_mut().find(|(mm, _)| mm.rel == m.rel) {
                    Some((_, exports)) => exports.push((export, role)),
                    None => missing.push((m, vec![(export, role)])),
                }
            }
            Some(t) => {
                if !crate::modules::has_export(&t, &export) {
                    diags.error(loc, format!("modules/{}.rs has no `pub async fn {}`", m.rel, crate::modules::fn_name(&export)))
                        .help(crate::modules::signature_help(role, &export, &m.rel));
                }
            }
        }
    }
    // Register module sources so the input hash covers them.
    for (rel, path) in crate::modules::all_module_files(root) {
        if let Ok(text) = std::fs::read_to_string(&path) {
            files.add(format!("modules/{rel}.rs"), path, text);
        }
    }
    missing
}

/// `modules/runtime.rs` registers hooks: it must define `pub struct Hooks` and
/// `pub fn hooks() -> Hooks`.
fn check_hooks(root: &Path, files: &mut Files, diags: &mut Diagnostics) -> Option<ModuleRef> {
    let m = crate::modules::resolve(root, "$import(./modules/runtime)").ok()?;
    let text = std::fs::read_to_string(&m.source).ok()?;
    let ok_struct = crate::modules::has_struct(&text, "Hooks");
    let ok_fn = regex::Regex::new(r"pub\s+fn\s+hooks\s*\(\s*\)").is_ok_and(|r| r.is_match(&text));
    if !ok_struct || !ok_fn {
        let file = files.iter().position(|f| f.name == "modules/runtime.rs");
        let loc = file.map(|f| Location { file: f, span: Span { start: 0, end: 0 } });
        diags.error(loc, "modules/runtime.rs must define `pub struct Hooks` implementing specgate_runtime::Hooks and `pub fn hooks() -> Hooks`")
            .help("use specgate_runtime::prelude::*;\npub struct Hooks;\npub fn hooks() -> Hooks { Hooks }\nimpl specgate_runtime::Hooks for Hooks { /* override the hooks you need */ }");
        return None;
    }
    Some(m)
}

/// Every environment variable the gateway may read, for `.env.example` and the README:
/// template variables, `$env(X)` in policy options, and `environment("X")` in custom code.
pub fn documented_env_vars(project: &Project) -> BTreeSet<String> {
    let mut out = env_vars(project);
    let dollar = regex::Regex::new(r"\$env\(([A-Za-z_][A-Za-z0-9_]*)\)").ok();
    let call = regex::Regex::new(r#"environment\(\s*"([A-Za-z_][A-Za-z0-9_]*)"\s*\)"#).ok();
    for p in &project.policies.list {
        let text = match &p.kind {
            PolicyKind::Builtin { options, .. } | PolicyKind::Custom { options, .. } => options,
            _ => continue,
        };
        if let Some(re) = &dollar {
            out.extend(re.captures_iter(text).map(|c| c[1].to_owned()));
        }
    }
    for c in &project.policies.cors {
        if let (Some(re), Some(text)) = (&dollar, &c.options) {
            out.extend(re.captures_iter(text).map(|c| c[1].to_owned()));
        }
    }
    for f in project.files.iter().filter(|f| f.name.starts_with("modules/")) {
        if let Some(re) = &call {
            out.extend(re.captures_iter(&f.text).map(|c| c[1].to_owned()));
        }
    }
    out
}
