//! Reading parameter values as OpenAPI serializes them (style and explode), and coercing text
//! to the JSON types a schema asks for.

use http::HeaderMap;
use serde_json::{Map, Value};

use super::simple::parse_number;
use super::{Parameter, Shape, Style};

/// A parameter's raw value(s) as the request carries them.
#[derive(Debug)]
pub(crate) enum Raw<'a> {
    /// Not sent.
    Missing,
    /// A path or header value (repeated headers joined with `,`).
    One(String),
    /// The values of a query parameter, in order (decoded).
    Many(Vec<&'a str>),
    /// Key/value pairs of an object sent as `deepObject` or an exploded form object.
    Pairs(Vec<(&'a str, &'a str)>),
}

impl<'a> Raw<'a> {
    pub(crate) fn from_path(value: Option<&str>) -> Raw<'a> {
        value.map_or(Raw::Missing, |v| Raw::One(v.to_owned()))
    }

    pub(crate) fn from_headers(headers: &HeaderMap, name: &str) -> Raw<'a> {
        let mut values = headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).peekable();
        if values.peek().is_none() {
            return Raw::Missing;
        }
        Raw::One(values.collect::<Vec<_>>().join(","))
    }

    pub(crate) fn from_query(query: &'a [(String, String)], p: &Parameter, declared: &[&str], object: bool) -> Raw<'a> {
        if p.style == Style::DeepObject {
            let pairs: Vec<(&str, &str)> = query
                .iter()
                .filter_map(|(k, v)| {
                    let key = k.strip_prefix(p.name)?.strip_prefix('[')?.strip_suffix(']')?;
                    Some((key, v.as_str()))
                })
                .collect();
            return if pairs.is_empty() { Raw::Missing } else { Raw::Pairs(pairs) };
        }
        if object && p.style == Style::Form && p.explode {
            let pairs: Vec<(&str, &str)> =
                query.iter().filter(|(k, _)| !declared.contains(&k.as_str())).map(|(k, v)| (k.as_str(), v.as_str())).collect();
            return if pairs.is_empty() { Raw::Missing } else { Raw::Pairs(pairs) };
        }
        let values: Vec<&str> = query.iter().filter(|(k, _)| k == p.name).map(|(_, v)| v.as_str()).collect();
        if values.is_empty() { Raw::Missing } else { Raw::Many(values) }
    }

    pub(crate) fn is_missing(&self) -> bool {
        matches!(self, Raw::Missing)
    }

    /// The value of a single-valued parameter (label and matrix prefixes removed).
    pub(crate) fn single(&self, p: &Parameter) -> Option<String> {
        match self {
            Raw::Missing | Raw::Pairs(_) => None,
            Raw::Many(values) => values.first().map(|v| (*v).to_owned()),
            Raw::One(v) => Some(strip_prefix(v, p).to_owned()),
        }
    }

    /// The items of an array parameter.
    pub(crate) fn list(&self, p: &Parameter) -> Vec<String> {
        let split = |text: &str, sep: char| -> Vec<String> {
            if text.is_empty() { Vec::new() } else { text.split(sep).map(str::to_owned).collect() }
        };
        match self {
            Raw::Missing | Raw::Pairs(_) => Vec::new(),
            Raw::Many(values) => match p.style {
                Style::Form if p.explode => values.iter().map(|v| (*v).to_owned()).collect(),
                Style::SpaceDelimited => split(values.first().copied().unwrap_or(""), ' '),
                Style::PipeDelimited => split(values.first().copied().unwrap_or(""), '|'),
                _ => split(values.first().copied().unwrap_or(""), ','),
            },
            Raw::One(v) => match p.style {
                Style::Label => {
                    let rest = v.strip_prefix('.').unwrap_or(v);
                    split(rest, if p.explode { '.' } else { ',' })
                }
                Style::Matrix if p.explode => v
                    .split(';')
                    .filter_map(|part| part.strip_prefix(p.name)?.strip_prefix('='))
                    .map(str::to_owned)
                    .collect(),
                Style::Matrix => split(strip_prefix(v, p), ','),
                _ => split(v, ',').into_iter().map(|s| s.trim().to_owned()).collect(),
            },
        }
    }

    /// The value as JSON in `shape`, with text coerced to the types `schema` asks for.
    pub(crate) fn to_json(&self, p: &Parameter, shape: Shape, schema: &Value) -> Value {
        match shape {
            Shape::Scalar => self.single(p).map_or(Value::Null, |t| coerce(&t, schema, schema)),
            Shape::Array => {
                let items = resolve(schema.get("items").unwrap_or(&Value::Null), schema);
                Value::Array(self.list(p).iter().map(|t| coerce(t, items, schema)).collect())
            }
            Shape::Object => {
                let pairs: Vec<(String, String)> = match self {
                    Raw::Pairs(pairs) => pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
                    Raw::One(_) | Raw::Many(_) => {
                        let text = self.single(p).unwrap_or_default();
                        if p.explode {
                            text.split(',').filter(|s| !s.is_empty()).map(|kv| {
                                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                                (k.to_owned(), v.to_owned())
                            }).collect()
                        } else {
                            let parts: Vec<&str> = text.split(',').collect();
                            parts.chunks(2).map(|c| (c[0].to_owned(), c.get(1).copied().unwrap_or("").to_owned())).collect()
                        }
                    }
                    Raw::Missing => Vec::new(),
                };
                let resolved = resolve(schema, schema);
                let props = resolved.get("properties");
                let additional = resolved.get("additionalProperties").filter(|v| v.is_object());
                let mut map = Map::new();
                for (k, v) in pairs {
                    let sub = props.and_then(|ps| ps.get(&k)).or(additional).unwrap_or(&Value::Null);
                    map.insert(k, coerce(&v, resolve(sub, schema), schema));
                }
                Value::Object(map)
            }
        }
    }
}

fn strip_prefix<'v>(v: &'v str, p: &Parameter) -> &'v str {
    match p.style {
        Style::Label => v.strip_prefix('.').unwrap_or(v),
        Style::Matrix => v.strip_prefix(';').and_then(|r| r.strip_prefix(p.name)).and_then(|r| r.strip_prefix('=')).unwrap_or(v),
        _ => v,
    }
}

/// Follows an internal `$ref` (`#/$defs/x`) of `root`, a few levels deep.
fn resolve<'s>(schema: &'s Value, root: &'s Value) -> &'s Value {
    let mut s = schema;
    for _ in 0..8 {
        match s.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')).and_then(|p| root.pointer(p)) {
            Some(next) => s = next,
            None => break,
        }
    }
    s
}

/// Text as the JSON value `schema` expects: a number, a boolean, or the text itself.
pub(crate) fn coerce(text: &str, schema: &Value, root: &Value) -> Value {
    let schema = resolve(schema, root);
    let mut types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    // Alternatives declare their types in their branches.
    for key in ["anyOf", "oneOf", "allOf"] {
        for branch in schema.get(key).and_then(Value::as_array).into_iter().flatten() {
            if let Some(t) = resolve(branch, root).get("type").and_then(Value::as_str) {
                types.push(t);
            }
        }
    }
    if types.iter().any(|t| *t == "integer" || *t == "number")
        && let Some(n) = parse_number(text)
    {
        let number = if n.fract() == 0.0 && n.abs() < 9.0e15 {
            serde_json::Number::from(n as i64)
        } else {
            match serde_json::Number::from_f64(n) {
                Some(n) => n,
                None => return Value::String(text.to_owned()),
            }
        };
        return Value::Number(number);
    }
    if types.contains(&"boolean") && (text == "true" || text == "false") {
        return Value::Bool(text == "true");
    }
    if types.contains(&"null") && text == "null" {
        return Value::Null;
    }
    Value::String(text.to_owned())
}
