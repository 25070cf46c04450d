//! Schemas for request validation: `$ref` bundling into `$defs`, OpenAPI 3.0 → JSON Schema
//! 2020-12 conversion, and the extraction of an operation's parameters and request body.
//!
//! Everything here happens at generation time, so the gateway only compiles self-contained
//! JSON Schema documents at start-up. Each schema is also compiled here with the same
//! `jsonschema` crate, so a schema the runtime could not compile is a generation error with
//! its position.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::diag::{Diagnostics, FileId, Files, Location};
use crate::model::{MediaType, Operation, ParamIn, ParamSchema, Parameter, RequestBody, SimpleSpec};
use crate::source::{Format, Kind, Node};

/// Parsed documents by file id, loaded on first use (the OpenAPI documents themselves and the
/// files their `$ref`s name).
#[derive(Debug, Default)]
pub struct Sources {
    nodes: BTreeMap<FileId, Node>,
}

impl Sources {
    /// Registers a parsed document.
    pub fn insert(&mut self, file: FileId, node: Node) {
        self.nodes.entry(file).or_insert(node);
    }

    /// The file at `path` (parsed from [`Files`] when already read, else read now; syntax
    /// errors of a newly read file are reported).
    pub fn load(&mut self, path: &Path, files: &mut Files, diags: &mut Diagnostics, root: &Path) -> Option<FileId> {
        let canonical = path.canonicalize().ok()?;
        let known = files.iter().position(|f| f.path.canonicalize().ok().as_deref() == Some(canonical.as_path()));
        let file = match known {
            Some(f) => f,
            None => {
                let text = std::fs::read_to_string(&canonical).ok()?;
                let name = canonical.strip_prefix(root).unwrap_or(&canonical).to_string_lossy().replace('\\', "/");
                let id = files.add(name, canonical.clone(), text);
                let (node, errors) = crate::source::parse(&files.get(id).text.clone(), format_of(&canonical));
                for e in errors {
                    diags.error(Location { file: id, span: e.span }, e.message);
                }
                if let Some(n) = node {
                    self.nodes.insert(id, n);
                }
                return self.nodes.contains_key(&id).then_some(id);
            }
        };
        if let std::collections::btree_map::Entry::Vacant(slot) = self.nodes.entry(file) {
            let text = files.get(file).text.clone();
            let (node, _) = crate::source::parse(&text, format_of(&canonical));
            slot.insert(node?);
        }
        Some(file)
    }

    /// A parsed document.
    pub fn get(&self, file: FileId) -> Option<&Node> {
        self.nodes.get(&file)
    }
}

fn format_of(path: &Path) -> Format {
    Format::from_path(path).unwrap_or(Format::Json)
}

/// Resolves `$ref`s of one schema (and the schemas it reaches) into one document.
pub struct Bundler<'a> {
    /// Parsed documents.
    pub sources: &'a mut Sources,
    /// Every file read.
    pub files: &'a mut Files,
    /// Diagnostics.
    pub diags: &'a mut Diagnostics,
    /// The project folder (for file names).
    pub root: &'a Path,
    /// Whether schemas are OpenAPI 3.0 Schema Objects (converted) rather than 2020-12.
    pub oas30: bool,
    defs: Map<String, Value>,
    names: BTreeMap<(FileId, String), String>,
}

impl<'a> Bundler<'a> {
    /// A bundler for one schema document.
    pub fn new(sources: &'a mut Sources, files: &'a mut Files, diags: &'a mut Diagnostics, root: &'a Path, oas30: bool) -> Self {
        Bundler { sources, files, diags, root, oas30, defs: Map::new(), names: BTreeMap::new() }
    }

    /// The self-contained JSON Schema of `node` (written in `file`): every reachable `$ref`
    /// resolved into `$defs`, converted to 2020-12.
    pub fn bundle(mut self, node: &Node, file: FileId) -> Value {
        let mut root = self.schema(node, file, 0);
        if !self.defs.is_empty() {
            let defs = std::mem::take(&mut self.defs);
            match &mut root {
                Value::Object(map) => {
                    map.insert("$defs".into(), Value::Object(defs));
                }
                Value::Bool(b) => {
                    let mut map = Map::new();
                    if !*b {
                        map.insert("not".into(), Value::Object(Map::new()));
                    }
                    map.insert("$defs".into(), Value::Object(defs));
                    root = Value::Object(map);
                }
                _ => {}
            }
        }
        root
    }

    /// Resolves a `$ref` written in `file` to the node it names.
    pub fn resolve(&mut self, reference: &str, file: FileId) -> Option<(FileId, String, Node)> {
        let (target, fragment) = reference.split_once('#').unwrap_or((reference, ""));
        if target.contains("://") {
            return None;
        }
        let target_file = if target.is_empty() {
            file
        } else {
            let dir = self.files.get(file).path.parent().map(Path::to_path_buf).unwrap_or_default();
            let path: PathBuf = dir.join(target);
            self.sources.load(&path, self.files, self.diags, self.root)?
        };
        let fragment = decode_fragment(fragment);
        let node = self.sources.get(target_file)?.pointer(&fragment)?.clone();
        Some((target_file, fragment, node))
    }

    fn schema(&mut self, node: &Node, file: FileId, depth: usize) -> Value {
        if depth > 200 {
            return Value::Object(Map::new());
        }
        let Kind::Object(entries) = &node.kind else { return node.to_value() };
        if let Some(r) = node.get("$ref").and_then(Node::as_str) {
            let reference = self.reference(r, file, depth);
            if self.oas30 {
                // OpenAPI 3.0: siblings of `$ref` are ignored.
                return reference;
            }
            let mut map = Map::new();
            if let Value::Object(m) = reference {
                map.extend(m);
            }
            for e in entries.iter().filter(|e| e.key != "$ref") {
                if let Some(v) = self.keyword(&e.key, &e.value, file, depth) {
                    map.insert(e.key.clone(), v);
                }
            }
            return Value::Object(map);
        }
        let mut map = Map::new();
        for e in entries {
            if let Some(v) = self.keyword(&e.key, &e.value, file, depth) {
                map.insert(e.key.clone(), v);
            }
        }
        if self.oas30 {
            return convert_30(map);
        }
        Value::Object(map)
    }

    /// A keyword's value with its subschemas bundled; `None` drops the keyword.
    fn keyword(&mut self, key: &str, value: &Node, file: FileId, depth: usize) -> Option<Value> {
        let oas_only = matches!(key, "example" | "xml" | "externalDocs" | "discriminator");
        // `$id`/`$schema` would change how the rewritten `#/$defs/...` references resolve;
        // `$defs`/`definitions` are bundled on demand by the references into them.
        let dropped = matches!(key, "$id" | "$schema" | "$defs" | "definitions") || (key == "id" && value.as_str().is_some());
        if dropped || key.starts_with("x-") || (self.oas30 && oas_only) {
            return None;
        }
        Some(match key {
            "properties" | "patternProperties" | "dependentSchemas" => {
                let mut map = Map::new();
                for e in value.entries() {
                    map.insert(e.key.clone(), self.schema(&e.value, file, depth + 1));
                }
                Value::Object(map)
            }
            "allOf" | "anyOf" | "oneOf" | "prefixItems" => Value::Array(value.items().iter().map(|i| self.schema(i, file, depth + 1)).collect()),
            "items" | "additionalItems" if matches!(value.kind, Kind::Array(_)) => {
                Value::Array(value.items().iter().map(|i| self.schema(i, file, depth + 1)).collect())
            }
            "items" | "additionalProperties" | "not" | "contains" | "propertyNames" | "if" | "then" | "else" | "unevaluatedItems"
            | "unevaluatedProperties" | "additionalItems" => self.schema(value, file, depth + 1),
            _ => value.to_value(),
        })
    }

    fn reference(&mut self, r: &str, file: FileId, depth: usize) -> Value {
        let Some((target, pointer, node)) = self.resolve(r, file) else {
            // Unresolvable references are reported by the document check; validate as any.
            return Value::Object(Map::new());
        };
        if pointer.is_empty() && target == file && depth > 0 {
            return Value::Object([("$ref".to_owned(), Value::String("#".into()))].into_iter().collect());
        }
        let key = (target, pointer.clone());
        let name = match self.names.get(&key) {
            Some(n) => n.clone(),
            None => {
                let base = pointer
                    .rsplit('/')
                    .find(|s| !s.is_empty())
                    .map(str::to_owned)
                    .unwrap_or_else(|| file_stem(&self.files.get(target).path));
                let base: String = base.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
                let mut name = base.clone();
                let mut i = 2;
                while self.names.values().any(|n| *n == name) {
                    name = format!("{base}_{i}");
                    i += 1;
                }
                self.names.insert(key, name.clone());
                let value = self.schema(&node, target, depth + 1);
                self.defs.insert(name.clone(), value);
                name
            }
        };
        Value::Object([("$ref".to_owned(), Value::String(format!("#/$defs/{name}")))].into_iter().collect())
    }
}

fn file_stem(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().split('.').next().unwrap_or("schema").to_owned()).unwrap_or_else(|| "schema".into())
}

/// A `$ref` fragment as a JSON pointer (percent-decoded).
fn decode_fragment(fragment: &str) -> String {
    if !fragment.contains('%') {
        return fragment.to_owned();
    }
    percent_encoding::percent_decode_str(fragment).decode_utf8_lossy().into_owned()
}

/// OpenAPI 3.0 keywords of one Schema Object in their JSON Schema 2020-12 form: `nullable`
/// becomes a `"null"` type (or an `anyOf` with one), boolean `exclusiveMinimum` /
/// `exclusiveMaximum` take the value of `minimum` / `maximum`.
pub fn convert_30(mut map: Map<String, Value>) -> Value {
    for (flag, bound) in [("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")] {
        match map.get(flag) {
            Some(Value::Bool(true)) => {
                match map.remove(bound) {
                    Some(b) => map.insert(flag.into(), b),
                    None => map.remove(flag),
                };
            }
            Some(Value::Bool(false)) => {
                map.remove(flag);
            }
            _ => {}
        }
    }
    match map.remove("nullable") {
        Some(Value::Bool(true)) => {}
        _ => return Value::Object(map),
    }
    if let Some(Value::Array(values)) = map.get_mut("enum")
        && !values.contains(&Value::Null)
    {
        values.push(Value::Null);
    }
    match map.get_mut("type") {
        Some(Value::String(t)) => {
            let t = std::mem::take(t);
            map.insert("type".into(), Value::Array(vec![Value::String(t), Value::String("null".into())]));
            Value::Object(map)
        }
        Some(Value::Array(ts)) => {
            if !ts.contains(&Value::String("null".into())) {
                ts.push(Value::String("null".into()));
            }
            Value::Object(map)
        }
        _ => {
            let null = Value::Object([("type".to_owned(), Value::String("null".into()))].into_iter().collect());
            Value::Object([("anyOf".to_owned(), Value::Array(vec![Value::Object(map), null]))].into_iter().collect())
        }
    }
}

/// Compiles a bundled schema as the runtime will; `Err` carries jsonschema's message.
pub fn compile(schema: &Value) -> Result<(), String> {
    jsonschema::options().should_validate_formats(true).build(schema).map(|_| ()).map_err(|e| e.to_string())
}

/// What the loader needs to extract an operation.
pub struct OperationInput<'n> {
    /// The path item.
    pub path_item: &'n Node,
    /// The operation.
    pub op: &'n Node,
    /// The document's file.
    pub file: FileId,
    /// Whether the document is OpenAPI 3.0.
    pub oas30: bool,
}

/// Extracts the parameters and request body of an operation, bundling and compiling their
/// schemas; problems are reported with positions.
pub fn operation(input: &OperationInput<'_>, sources: &mut Sources, files: &mut Files, diags: &mut Diagnostics, root: &Path) -> Operation {
    let file = input.file;
    let mut params: Vec<Parameter> = Vec::new();
    for list in [input.path_item.get("parameters"), input.op.get("parameters")].into_iter().flatten() {
        for item in list.items() {
            let (pfile, pnode) = match item.get("$ref").and_then(Node::as_str) {
                Some(r) => {
                    let mut b = Bundler::new(sources, files, diags, root, input.oas30);
                    match b.resolve(r, file) {
                        Some((f, _, n)) => (f, n),
                        None => continue,
                    }
                }
                None => (file, item.clone()),
            };
            let Some(p) = parameter(&pnode, pfile, input.oas30, sources, files, diags, root) else { continue };
            // Operation parameters override path-item ones with the same name and location.
            params.retain(|q| !(q.name == p.name && q.location == p.location));
            params.push(p);
        }
    }
    let body = input.op.get("requestBody").and_then(|rb| {
        let (bfile, bnode) = match rb.get("$ref").and_then(Node::as_str) {
            Some(r) => {
                let mut b = Bundler::new(sources, files, diags, root, input.oas30);
                let (f, _, n) = b.resolve(r, file)?;
                (f, n)
            }
            None => (file, rb.clone()),
        };
        let mut content = Vec::new();
        for e in bnode.get("content").map(Node::entries).unwrap_or_default() {
            let schema = match e.value.get("schema") {
                Some(s) if !matches!(&s.kind, Kind::Object(entries) if entries.is_empty()) => {
                    let value = Bundler::new(sources, files, diags, root, input.oas30).bundle(s, bfile);
                    if let Err(msg) = compile(&value) {
                        diags.error(Location { file: bfile, span: s.span }, format!("the schema of request body `{}` cannot be compiled: {msg}", e.key));
                    }
                    Some(value.to_string())
                }
                _ => None,
            };
            content.push(MediaType { media_type: e.key.clone(), schema });
        }
        Some(RequestBody { required: bnode.get("required").and_then(Node::as_bool).unwrap_or(false), content })
    });
    Operation { parameters: params, body }
}

fn parameter(node: &Node, file: FileId, oas30: bool, sources: &mut Sources, files: &mut Files, diags: &mut Diagnostics, root: &Path) -> Option<Parameter> {
    let name = node.get("name").and_then(Node::as_str)?;
    let location = match node.get("in").and_then(Node::as_str)? {
        "path" => ParamIn::Path,
        "query" => ParamIn::Query,
        "header" => ParamIn::Header,
        _ => return None,
    };
    // OpenAPI: these header parameters are ignored (they are described elsewhere).
    let name = if location == ParamIn::Header { name.to_ascii_lowercase() } else { name.to_owned() };
    if location == ParamIn::Header && matches!(name.as_str(), "accept" | "content-type" | "authorization") {
        return None;
    }
    let style = node.get("style").and_then(Node::as_str).map(str::to_owned).unwrap_or_else(|| {
        if location == ParamIn::Query { "form".into() } else { "simple".into() }
    });
    let explode = node.get("explode").and_then(Node::as_bool).unwrap_or(style == "form");
    let required = location == ParamIn::Path || node.get("required").and_then(Node::as_bool).unwrap_or(false);
    let at = Location { file, span: node.get("name").map_or(node.span, |n| n.span) };
    let schema = match node.get("schema") {
        None => ParamSchema::Any,
        Some(s) => {
            let value = Bundler::new(sources, files, diags, root, oas30).bundle(s, file);
            if let Err(msg) = compile(&value) {
                diags.error(Location { file, span: s.span }, format!("the schema of parameter `{name}` cannot be compiled: {msg}"));
            }
            classify(&value)
        }
    };
    Some(Parameter { name, location, required, style, explode, schema, at })
}

/// Keywords a simple schema may carry besides its checks (annotations).
const ANNOTATIONS: &[&str] = &["description", "title", "default", "examples", "deprecated", "readOnly", "writeOnly", "$comment"];

/// Sorts a bundled parameter schema into what the runtime checks from const data (simple
/// types and arrays of them) and what it hands to `jsonschema`.
pub fn classify(schema: &Value) -> ParamSchema {
    let Some(map) = schema.as_object() else {
        return if schema == &Value::Bool(true) { ParamSchema::Any } else { ParamSchema::Json { schema: schema.to_string(), shape: "Scalar" } };
    };
    if map.keys().all(|k| ANNOTATIONS.contains(&k.as_str())) {
        return ParamSchema::Any;
    }
    if let Some(s) = simple(map) {
        return ParamSchema::Simple(s);
    }
    if map.get("type").and_then(Value::as_str) == Some("array")
        && map.keys().all(|k| ANNOTATIONS.contains(&k.as_str()) || matches!(k.as_str(), "type" | "items" | "minItems" | "maxItems" | "uniqueItems"))
        && let Some(items) = map.get("items").and_then(Value::as_object).and_then(simple)
    {
        return ParamSchema::Array {
            items,
            min_items: map.get("minItems").and_then(Value::as_u64),
            max_items: map.get("maxItems").and_then(Value::as_u64),
            unique_items: map.get("uniqueItems").and_then(Value::as_bool).unwrap_or(false),
        };
    }
    let ty = match map.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or(""),
        _ => "",
    };
    let shape = match ty {
        "object" => "Object",
        "array" => "Array",
        _ => "Scalar",
    };
    ParamSchema::Json { schema: schema.to_string(), shape }
}

fn simple(map: &Map<String, Value>) -> Option<SimpleSpec> {
    const CHECKS: &[&str] = &[
        "type", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "pattern", "format",
    ];
    if !map.keys().all(|k| CHECKS.contains(&k.as_str()) || ANNOTATIONS.contains(&k.as_str())) {
        return None;
    }
    let ty = match map.get("type")?.as_str()? {
        "string" => "String",
        "integer" => "Integer",
        "number" => "Number",
        "boolean" => "Boolean",
        _ => return None,
    };
    let mut enumeration = Vec::new();
    if let Some(values) = map.get("enum") {
        for v in values.as_array()? {
            match (ty, v) {
                ("String", Value::String(s)) => enumeration.push(s.clone()),
                ("Integer" | "Number", Value::Number(n)) => enumeration.push(n.to_string()),
                ("Boolean", Value::Bool(b)) => enumeration.push(b.to_string()),
                _ => return None,
            }
        }
    }
    let num = |k: &str| -> Result<Option<f64>, ()> {
        match map.get(k) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or(()),
        }
    };
    let pattern = match map.get("pattern") {
        None => None,
        Some(Value::String(p)) if regex::Regex::new(p).is_ok() => Some(p.clone()),
        // Patterns the `regex` crate cannot run (look-around) go to jsonschema.
        Some(_) => return None,
    };
    Some(SimpleSpec {
        ty,
        enumeration,
        minimum: num("minimum").ok()?,
        maximum: num("maximum").ok()?,
        exclusive_minimum: num("exclusiveMinimum").ok()?,
        exclusive_maximum: num("exclusiveMaximum").ok()?,
        multiple_of: num("multipleOf").ok()?,
        min_length: map.get("minLength").and_then(Value::as_u64),
        max_length: map.get("maxLength").and_then(Value::as_u64),
        pattern,
        format: map.get("format").and_then(Value::as_str).map(str::to_owned),
    })
}

#[cfg(test)]
mod tests;
