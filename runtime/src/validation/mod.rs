//! Request validation against the schemas of an OpenAPI operation.
//!
//! The generator describes each validated operation as const data ([`Operation`]): its
//! parameters with style and explode, and its request body by media type. Schemas were already
//! bundled (every `$ref` resolved into `$defs`) and converted to JSON Schema 2020-12 at
//! generation time. At start-up [`CompiledOperation::compile`] turns that description into
//! checkers once: parameters whose schema is a simple type (or an array of one) are checked
//! by [`Simple`] data and a pre-compiled regex, everything else by a `jsonschema` validator.
//! Nothing is parsed or compiled per request.

mod body;
mod params;
mod simple;

use serde::Serialize;
use serde_json::Value;

pub use body::{Buffered, read_limited};
pub use simple::{Simple, SimpleType};

use crate::Request;

/// Where a parameter is sent, and where a [`Violation`] was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum In {
    /// A path parameter.
    Path,
    /// A query parameter.
    Query,
    /// A header.
    Header,
    /// The request body.
    Body,
}

impl In {
    /// The name OpenAPI uses (`path`, `query`, `header`, `body`).
    pub fn as_str(self) -> &'static str {
        match self {
            In::Path => "path",
            In::Query => "query",
            In::Header => "header",
            In::Body => "body",
        }
    }
}

/// How a parameter value is serialized (OpenAPI `style`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `form` (query default): `a=1&a=2` exploded, `a=1,2` not.
    Form,
    /// `simple` (path and header default): `1,2`.
    Simple,
    /// `spaceDelimited` query arrays: `a=1%202`.
    SpaceDelimited,
    /// `pipeDelimited` query arrays: `a=1|2`.
    PipeDelimited,
    /// `deepObject` query objects: `a[x]=1&a[y]=2`.
    DeepObject,
    /// `label` path values: `.1.2`.
    Label,
    /// `matrix` path values: `;a=1,2`.
    Matrix,
}

/// The schema of a parameter, in the form the checker needs.
#[derive(Debug, Clone, Copy)]
pub enum ParamSchema {
    /// No schema (or an empty one): any value.
    Any,
    /// One value of a simple type.
    Simple(Simple),
    /// An array of simple values.
    Array {
        /// The items.
        items: Simple,
        /// `minItems`.
        min_items: Option<u64>,
        /// `maxItems`.
        max_items: Option<u64>,
        /// `uniqueItems`.
        unique_items: bool,
    },
    /// Anything else: a JSON Schema 2020-12 document (text), checked by `jsonschema` after
    /// the value is parsed in the given shape and coerced by the schema's types.
    Json {
        /// The schema.
        schema: &'static str,
        /// The value's shape.
        shape: Shape,
    },
}

/// The shape of a parameter checked with a full JSON Schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One value.
    Scalar,
    /// An array.
    Array,
    /// An object.
    Object,
}

/// One parameter of an operation.
#[derive(Debug, Clone, Copy)]
pub struct Parameter {
    /// The name (header names in lower case).
    pub name: &'static str,
    /// Where it is sent.
    pub location: In,
    /// Whether it must be present.
    pub required: bool,
    /// Its style.
    pub style: Style,
    /// Its explode flag.
    pub explode: bool,
    /// Its schema.
    pub schema: ParamSchema,
}

/// One media type of a request body.
#[derive(Debug, Clone, Copy)]
pub struct MediaType {
    /// The media type or range as written (`application/json`, `image/*`, `*/*`).
    pub media_type: &'static str,
    /// Its schema as JSON Schema 2020-12 text, if it has one.
    pub schema: Option<&'static str>,
}

/// The request body of an operation.
#[derive(Debug, Clone, Copy)]
pub struct RequestBody {
    /// Whether a body must be sent.
    pub required: bool,
    /// The media types it accepts.
    pub content: &'static [MediaType],
}

/// What the generator knows about an operation's request.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// Path-item and operation parameters (cookies left out).
    pub parameters: &'static [Parameter],
    /// The request body, if the operation declares one.
    pub body: Option<RequestBody>,
}

/// One way a request breaks its operation's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Where: path, query, header or body.
    #[serde(rename = "in")]
    pub location: In,
    /// The parameter's name (not for the body).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A JSON pointer into the body or the parameter's value, when the problem is inside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Violation {
    /// A violation of parameter `name`.
    pub fn param(location: In, name: &str, message: impl Into<String>) -> Self {
        Violation { location, name: Some(name.to_owned()), pointer: None, message: message.into() }
    }

    /// A violation in the body at `pointer`.
    pub fn body(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Violation { location: In::Body, name: None, pointer: Some(pointer.into()), message: message.into() }
    }
}

/// A compiled JSON Schema validator (format assertions on) for bodies and complex values.
#[derive(Debug, Clone)]
pub struct JsonValidator {
    validator: jsonschema::Validator,
}

impl JsonValidator {
    /// Compiles a JSON Schema given as text. The draft comes from `$schema` (2020-12 when
    /// absent); references must be internal (the generator bundles them).
    pub fn compile(schema: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(schema).map_err(|e| format!("the schema is not JSON: {e}"))?;
        Self::compile_value(&value)
    }

    /// [`JsonValidator::compile`] for a parsed schema.
    pub fn compile_value(schema: &Value) -> Result<Self, String> {
        let draft = match schema.get("$schema").and_then(Value::as_str) {
            Some(s) if s.contains("draft-04") => jsonschema::Draft::Draft4,
            Some(s) if s.contains("draft-06") => jsonschema::Draft::Draft6,
            Some(s) if s.contains("draft-07") => jsonschema::Draft::Draft7,
            Some(s) if s.contains("2019-09") => jsonschema::Draft::Draft201909,
            _ => jsonschema::Draft::Draft202012,
        };
        let validator = jsonschema::options()
            .with_draft(draft)
            .should_validate_formats(true)
            .build(schema)
            .map_err(|e| format!("the schema cannot be compiled: {e}"))?;
        Ok(JsonValidator { validator })
    }

    /// Checks a value; each failure is reported with `make(pointer, message)`.
    pub fn check(&self, instance: &Value, mut make: impl FnMut(String, String) -> Violation, out: &mut Vec<Violation>) {
        for e in self.validator.iter_errors(instance) {
            out.push(make(e.instance_path().as_str().to_owned(), e.to_string()));
        }
    }

    /// Whether the value is valid.
    pub fn is_valid(&self, instance: &Value) -> bool {
        self.validator.is_valid(instance)
    }

    /// Parses a JSON body and checks it; a body that is not JSON is one violation at `""`.
    pub fn check_body(&self, bytes: &[u8], out: &mut Vec<Violation>) {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => self.check(&v, Violation::body, out),
            Err(e) => out.push(Violation::body("", format!("the body is not valid JSON: {e}"))),
        }
    }
}

/// A compiled parameter checker.
#[derive(Debug)]
enum Check {
    Any,
    Simple(simple::Compiled),
    Array { items: simple::Compiled, min_items: Option<u64>, max_items: Option<u64>, unique_items: bool },
    Json { validator: JsonValidator, schema: Box<Value>, shape: Shape },
}

/// A compiled media type of the request body.
#[derive(Debug)]
pub struct CompiledMedia {
    /// The media type or range.
    pub media_type: &'static str,
    /// Its validator, when it has a schema and is JSON.
    pub validator: Option<JsonValidator>,
}

/// An [`Operation`] ready to check requests: built once at start-up.
#[derive(Debug)]
pub struct CompiledOperation {
    params: Vec<(&'static Parameter, Check)>,
    /// Names of the query parameters the operation declares (for exploded form objects).
    query_names: Vec<&'static str>,
    body: Option<(bool, Vec<CompiledMedia>)>,
}

impl CompiledOperation {
    /// Compiles every schema of `op` (regexes and JSON Schema validators).
    pub fn compile(op: &'static Operation) -> Result<Self, String> {
        let mut params = Vec::with_capacity(op.parameters.len());
        for p in op.parameters {
            let what = |e: String| format!("{} parameter `{}`: {e}", p.location.as_str(), p.name);
            let check = match &p.schema {
                ParamSchema::Any => Check::Any,
                ParamSchema::Simple(s) => Check::Simple(simple::Compiled::new(s).map_err(what)?),
                ParamSchema::Array { items, min_items, max_items, unique_items } => Check::Array {
                    items: simple::Compiled::new(items).map_err(what)?,
                    min_items: *min_items,
                    max_items: *max_items,
                    unique_items: *unique_items,
                },
                ParamSchema::Json { schema, shape } => {
                    let value: Value = serde_json::from_str(schema).map_err(|e| what(e.to_string()))?;
                    Check::Json { validator: JsonValidator::compile_value(&value).map_err(what)?, schema: Box::new(value), shape: *shape }
                }
            };
            params.push((p, check));
        }
        let query_names = op.parameters.iter().filter(|p| p.location == In::Query).map(|p| p.name).collect();
        let body = match &op.body {
            None => None,
            Some(b) => {
                let mut content = Vec::with_capacity(b.content.len());
                for m in b.content {
                    let validator = match m.schema {
                        Some(s) if is_json(m.media_type) => {
                            Some(JsonValidator::compile(s).map_err(|e| format!("request body `{}`: {e}", m.media_type))?)
                        }
                        _ => None,
                    };
                    content.push(CompiledMedia { media_type: m.media_type, validator });
                }
                Some((b.required, content))
            }
        };
        Ok(CompiledOperation { params, query_names, body })
    }

    /// Whether the operation has parameters in `location`.
    pub fn has_params(&self, location: In) -> bool {
        self.params.iter().any(|(p, _)| p.location == location)
    }

    /// The body: whether it is required and its media types.
    pub fn body(&self) -> Option<(bool, &[CompiledMedia])> {
        self.body.as_ref().map(|(r, c)| (*r, c.as_slice()))
    }

    /// Checks the parameters in `location` of `req`.
    pub fn check_params(&self, req: &Request, location: In, out: &mut Vec<Violation>) {
        let query = match location {
            In::Query => crate::request::query_pairs(req.uri().query().unwrap_or("")),
            _ => Vec::new(),
        };
        for (p, check) in self.params.iter().filter(|(p, _)| p.location == location) {
            let raw = match location {
                In::Path => params::Raw::from_path(req.params.get(p.name)),
                In::Header => params::Raw::from_headers(req.headers(), p.name),
                In::Query => params::Raw::from_query(&query, p, &self.query_names, check.is_object()),
                In::Body => params::Raw::Missing,
            };
            if raw.is_missing() {
                if p.required {
                    out.push(Violation::param(location, p.name, format!("the required {} parameter `{}` is missing", location.as_str(), p.name)));
                }
                continue;
            }
            check.run(p, raw, out);
        }
    }

    /// Finds the media type of the body that accepts `content_type` (exact, then `type/*`,
    /// then `*/*`); parameters of the content type are ignored.
    pub fn media_for(&self, content_type: &str) -> Option<&CompiledMedia> {
        let (_, content) = self.body.as_ref()?;
        media_for(content, content_type)
    }
}

/// Finds the entry of `content` that accepts `content_type`.
pub fn media_for<'a>(content: &'a [CompiledMedia], content_type: &str) -> Option<&'a CompiledMedia> {
    let wanted = essence(content_type);
    let main = wanted.split('/').next().unwrap_or("");
    content
        .iter()
        .find(|m| essence(m.media_type) == wanted)
        .or_else(|| content.iter().find(|m| {
            let e = essence(m.media_type);
            e.strip_suffix("/*").is_some_and(|t| t == main)
        }))
        .or_else(|| content.iter().find(|m| essence(m.media_type) == "*/*"))
}

/// The media type without parameters, lower-cased.
pub fn essence(media_type: &str) -> String {
    media_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Whether a media type carries JSON (`application/json`, `*/*+json`).
pub fn is_json(media_type: &str) -> bool {
    let e = essence(media_type);
    e == "application/json" || e.ends_with("+json") || e == "*/*" || e == "application/*"
}

impl Check {
    fn is_object(&self) -> bool {
        matches!(self, Check::Json { shape: Shape::Object, .. })
    }

    fn run(&self, p: &Parameter, raw: params::Raw<'_>, out: &mut Vec<Violation>) {
        let loc = p.location;
        match self {
            Check::Any => {}
            Check::Simple(s) => {
                let Some(text) = raw.single(p) else { return };
                if let Err(m) = s.check(&text) {
                    out.push(Violation::param(loc, p.name, m));
                }
            }
            Check::Array { items, min_items, max_items, unique_items } => {
                let values = raw.list(p);
                if let Some(min) = min_items
                    && (values.len() as u64) < *min
                {
                    out.push(Violation::param(loc, p.name, format!("has {} items, fewer than the minimum of {min}", values.len())));
                }
                if let Some(max) = max_items
                    && (values.len() as u64) > *max
                {
                    out.push(Violation::param(loc, p.name, format!("has {} items, more than the maximum of {max}", values.len())));
                }
                if *unique_items {
                    let mut seen = std::collections::HashSet::new();
                    if let Some(dup) = values.iter().find(|v| !seen.insert(v.as_str())) {
                        out.push(Violation::param(loc, p.name, format!("has non-unique items ({dup:?} twice)")));
                    }
                }
                for (i, v) in values.iter().enumerate() {
                    if let Err(m) = items.check(v) {
                        out.push(Violation { location: loc, name: Some(p.name.to_owned()), pointer: Some(format!("/{i}")), message: m });
                    }
                }
            }
            Check::Json { validator, schema, shape } => {
                let value = raw.to_json(p, *shape, schema);
                validator.check(
                    &value,
                    |pointer, message| Violation {
                        location: loc,
                        name: Some(p.name.to_owned()),
                        pointer: (!pointer.is_empty()).then_some(pointer),
                        message,
                    },
                    out,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
