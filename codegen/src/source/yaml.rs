//! YAML parsing into [`Node`]s, built on the event parser behind `serde-saphyr`.
//!
//! `serde_saphyr::Spanned<T>` was tried first, but through serde's data model
//! it loses too much: collections get no end offset, scalars are typed by
//! serde-saphyr's own inference (`1_000` is an integer, `012` a float, `y` a
//! boolean unless options say otherwise) and the original text of a non-string
//! key is gone. The event stream of `granit-parser` (re-exported by
//! serde-saphyr, so no extra dependency) gives the exact start and end of every
//! node, the scalar style and tags, which is everything needed to type scalars
//! by the YAML 1.2 core schema and to keep spans exact.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{
    ErrorKind, Event, Marker, Options, Parser, ScalarStyle, ScanError, Span as EventSpan,
    StructureStyle, Tag,
};

use super::{Entry, Kind, MAX_DEPTH, Node, ObjectBuilder, Span, SyntaxError, char_span};

/// Marks an error that ends parsing; the error itself is already recorded.
struct Stop;

/// How many nodes aliases may copy in on top of the document's own size.
///
/// Each alias copies its anchored node, so a few lines of nested aliases
/// ("billion laughs") can describe an astronomically large tree; copying stops
/// with an error once this budget (plus one node per byte of input) is spent.
const ALIAS_NODE_BUDGET: usize = 100_000;

/// Parses `text` as a single YAML document.
pub(super) fn parse(text: &str) -> (Option<Node>, Vec<SyntaxError>) {
    let mut builder = Builder {
        text,
        errors: Vec::new(),
        stack: Vec::new(),
        anchors: HashMap::new(),
        alias_budget: ALIAS_NODE_BUDGET.saturating_add(text.len()),
        root: None,
    };
    match builder.run() {
        Ok(()) => {
            // A file with only comments (or nothing) is an empty document,
            // which YAML reads as null; callers then report a type mismatch.
            let bom = if text.starts_with('\u{FEFF}') { 3 } else { 0 };
            let root = builder
                .root
                .take()
                .unwrap_or_else(|| Node::new(Span::new(bom, bom), Kind::Null));
            (Some(root), builder.errors)
        }
        Err(Stop) => (None, builder.errors),
    }
}

/// A collection whose end event hasn't arrived yet.
enum Frame {
    Seq {
        start: usize,
        flow: bool,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: usize,
        flow: bool,
        anchor: usize,
        object: ObjectBuilder,
        key: KeySlot,
    },
}

/// Whether a mapping is waiting for a key or for the value of a read key.
enum KeySlot {
    Empty,
    Key(String, Span),
    /// The key was unusable (a collection) and was reported; its value is dropped.
    Invalid,
}

/// A completed anchored node, kept so aliases can copy it.
struct Anchor {
    node: Node,
    /// Number of nodes in the tree, charged to the alias budget per copy.
    size: usize,
    /// Nesting levels of collections in it, so copies can't exceed [`MAX_DEPTH`].
    height: usize,
}

struct Builder<'a> {
    text: &'a str,
    errors: Vec<SyntaxError>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchor>,
    alias_budget: usize,
    root: Option<Node>,
}

impl Builder<'_> {
    fn run(&mut self) -> Result<(), Stop> {
        let mut options = Options::default();
        // Comments carry no data and would only be skipped here.
        options.set_emit_comments(false);
        // Our own limit in `open` gives deep nesting one consistent message
        // and span in every format. The scanner tokenizes ahead of the events
        // (up to the 1024-character simple-key lookahead), so its limits must
        // sit beyond that or they would fire first.
        options.flow_nesting_limit = MAX_DEPTH + 2 * options.simple_key_max_lookahead;
        options.block_nesting_limit = MAX_DEPTH + 2 * options.simple_key_max_lookahead;
        let mut parser = Parser::new_from_str_with_options(self.text, options);
        let mut documents = 0usize;
        while let Some(item) = parser.next_event() {
            let (event, span) = match item {
                Ok(pair) => pair,
                Err(error) => return Err(self.scan_error(&error)),
            };
            match event {
                Event::StreamEnd => break,
                Event::DocumentStart(..) => {
                    documents += 1;
                    if documents > 1 {
                        // The first document was read completely, so keep it.
                        let span = self.raw_span(&span);
                        self.error(
                            span,
                            "a YAML file must contain exactly one document",
                            Some("a second document starts here".into()),
                        );
                        break;
                    }
                }
                Event::Scalar(value, style, anchor, tag) => {
                    self.scalar(value.into_owned(), style, anchor, tag.as_deref(), &span);
                }
                Event::SequenceStart(style, anchor, tag) => {
                    self.open(false, style, anchor, tag.as_deref(), &span)?;
                }
                Event::MappingStart(style, anchor, tag) => {
                    self.open(true, style, anchor, tag.as_deref(), &span)?;
                }
                Event::SequenceEnd | Event::MappingEnd => self.close(&span),
                Event::Alias(id) => self.alias(id, &span)?,
                // Stream/document markers, comments and anchor metadata carry
                // no data of their own.
                _ => {}
            }
        }
        Ok(())
    }

    fn error(&mut self, span: Span, message: impl Into<String>, label: Option<String>) -> Stop {
        self.errors.push(SyntaxError::new(span, message, label));
        Stop
    }

    fn scan_error(&mut self, error: &ScanError) -> Stop {
        let offset = self.offset(error.marker());
        if matches!(error.kind(), ErrorKind::RecursionLimitExceeded) {
            return self.error(char_span(self.text, offset), "nesting too deep", None);
        }
        let mut message = error.info();
        if message.is_empty() {
            message = format!("{:?}", error.kind());
        }
        self.error(char_span(self.text, offset), message, None)
    }

    /// The byte offset of a parser position, always on a character boundary
    /// inside the text.
    fn offset(&self, marker: &Marker) -> usize {
        let mut offset = match marker.byte_offset() {
            Some(offset) => offset,
            // Only streaming inputs lack byte offsets; convert the char index
            // just in case a future parser version stops providing them.
            None => self
                .text
                .char_indices()
                .nth(marker.index())
                .map_or(self.text.len(), |(i, _)| i),
        };
        offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }

    fn raw_span(&self, span: &EventSpan) -> Span {
        let start = self.offset(&span.start);
        let end = self.offset(&span.end).max(start);
        Span::new(start, end)
    }

    /// A scalar's span without the line breaks and indentation that block
    /// scalars (`|`, `>`) include after their last line.
    fn scalar_span(&self, span: &EventSpan) -> Span {
        let Span { start, mut end } = self.raw_span(span);
        while end > start && self.text.as_bytes()[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
        Span::new(start, end)
    }

    fn scalar(
        &mut self,
        value: String,
        style: ScalarStyle,
        anchor: usize,
        tag: Option<&Tag>,
        span: &EventSpan,
    ) {
        let span = self.scalar_span(span);
        let kind = self.resolve(&value, style, tag, span);
        let node = Node::new(span, kind);
        if anchor != 0 {
            self.anchors.insert(
                anchor,
                Anchor {
                    node: node.clone(),
                    size: 1,
                    height: 0,
                },
            );
        }
        // A key keeps its text as written: `200:` is the key "200" and `1.10:`
        // stays "1.10" rather than the number's normalized form.
        self.finish(node, Some(value));
    }

    /// Types a scalar as the YAML 1.2 core schema says: only plain scalars
    /// are resolved; quoted and block scalars are always strings.
    fn resolve(&mut self, text: &str, style: ScalarStyle, tag: Option<&Tag>, span: Span) -> Kind {
        let Some(tag) = tag else {
            return if style == ScalarStyle::Plain {
                self.plain(text, span)
            } else {
                Kind::String(text.to_owned())
            };
        };
        let name = tag.original();
        // `!` is the "non-specific" tag: the scalar is a string.
        if name == "!" {
            return Kind::String(text.to_owned());
        }
        match tag.core_suffix() {
            Some("str") => Kind::String(text.to_owned()),
            Some(wanted @ ("null" | "bool" | "int" | "float")) => {
                let class = classify(text);
                let fits = match wanted {
                    "null" => class == Class::Null,
                    "bool" => matches!(class, Class::Bool(_)),
                    "int" => class == Class::Int,
                    _ => matches!(class, Class::Int | Class::Float),
                };
                if fits {
                    self.plain(text, span)
                } else {
                    self.error(span, format!("{text:?} is not a valid `{name}`"), None);
                    Kind::String(text.to_owned())
                }
            }
            Some(_) => {
                self.error(
                    span,
                    format!("`{name}` cannot be applied to a scalar"),
                    None,
                );
                Kind::String(text.to_owned())
            }
            None => {
                self.unsupported_tag(span, &name);
                self.resolve(text, style, None, span)
            }
        }
    }

    /// Custom tags (`!include`, `!Ref`, ...) have meaning only to other tools;
    /// ignoring them silently could change what a document means.
    fn unsupported_tag(&mut self, span: Span, name: &str) {
        self.error(
            span,
            format!("unsupported YAML tag `{name}`"),
            Some("only the core schema tags (`!!str`, `!!int`, ...) are understood".into()),
        );
    }

    /// Resolves an untagged plain scalar.
    fn plain(&mut self, text: &str, span: Span) -> Kind {
        match classify(text) {
            Class::Null => Kind::Null,
            Class::Bool(b) => Kind::Bool(b),
            Class::Str => Kind::String(text.to_owned()),
            Class::Int => match int_number(text) {
                Some(n) => Kind::Number(n),
                None => self.unrepresentable(text, span, "number out of range"),
            },
            Class::Float => match float_number(text) {
                Some(n) => Kind::Number(n),
                None if text.contains(['i', 'I', 'n', 'N']) => self.unrepresentable(
                    text,
                    span,
                    "infinity and NaN cannot be represented in JSON",
                ),
                None => self.unrepresentable(text, span, "number out of range"),
            },
        }
    }

    /// Reports a number JSON can't hold; the text is kept as a string so the
    /// rest of the document still reads.
    fn unrepresentable(&mut self, text: &str, span: Span, message: &str) -> Kind {
        self.error(
            span,
            message,
            Some(format!("quote it if `{text}` is meant as a string")),
        );
        Kind::String(text.to_owned())
    }

    fn open(
        &mut self,
        is_map: bool,
        style: StructureStyle,
        anchor: usize,
        tag: Option<&Tag>,
        span: &EventSpan,
    ) -> Result<(), Stop> {
        let start = self.offset(&span.start);
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.error(
                char_span(self.text, start),
                "nesting too deep",
                Some(format!(
                    "at most {MAX_DEPTH} nested sequences and mappings are supported"
                )),
            ));
        }
        if let Some(tag) = tag {
            let name = tag.original();
            let wanted = if is_map { "map" } else { "seq" };
            match tag.core_suffix() {
                _ if name == "!" => {}
                Some(suffix) if suffix == wanted => {}
                Some(_) => {
                    let what = if is_map { "a mapping" } else { "a sequence" };
                    let span = char_span(self.text, start);
                    self.error(span, format!("`{name}` cannot be applied to {what}"), None);
                }
                None => self.unsupported_tag(char_span(self.text, start), &name),
            }
        }
        let flow = style == StructureStyle::Flow;
        self.stack.push(if is_map {
            Frame::Map {
                start,
                flow,
                anchor,
                object: ObjectBuilder::default(),
                key: KeySlot::Empty,
            }
        } else {
            Frame::Seq {
                start,
                flow,
                anchor,
                items: Vec::new(),
            }
        });
        Ok(())
    }

    fn close(&mut self, span: &EventSpan) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        // Flow collections end at their bracket; block collections at their
        // last content (the parser's end event sits past trailing comments).
        let bracket_end = self.offset(&span.end);
        let (node, anchor) = match frame {
            Frame::Seq {
                start,
                flow,
                anchor,
                items,
            } => {
                let end = if flow {
                    bracket_end
                } else {
                    items.last().map_or(start, |item| item.span.end)
                };
                let node = Node::new(Span::new(start, end.max(start)), Kind::Array(items));
                (node, anchor)
            }
            Frame::Map {
                start,
                flow,
                anchor,
                object,
                ..
            } => {
                let entries = object.finish();
                let end = if flow {
                    bracket_end
                } else {
                    entries
                        .last()
                        .map_or(start, |e| e.value.span.end.max(e.key_span.end))
                };
                let node = Node::new(Span::new(start, end.max(start)), Kind::Object(entries));
                (node, anchor)
            }
        };
        if anchor != 0 {
            let anchored = Anchor {
                size: count_nodes(&node),
                height: height(&node),
                node: node.clone(),
            };
            self.anchors.insert(anchor, anchored);
        }
        self.finish(node, None);
    }

    /// Expands `*name` by copying the anchored node, within the alias budget
    /// and the nesting limit, so hostile documents end quickly with an error.
    fn alias(&mut self, id: usize, span: &EventSpan) -> Result<(), Stop> {
        let span = self.raw_span(span);
        let depth = self.stack.len();
        let Some(anchor) = self.anchors.get(&id) else {
            // The parser rejects unknown anchors itself, so a missing entry is
            // an anchor whose node is still open: the alias is inside it.
            return Err(self.error(
                span,
                "alias refers to a node that contains it",
                Some("recursive aliases are not supported".into()),
            ));
        };
        if depth + anchor.height > MAX_DEPTH {
            return Err(self.error(
                span,
                "nesting too deep",
                Some(format!(
                    "expanding this alias nests deeper than {MAX_DEPTH} levels"
                )),
            ));
        }
        if anchor.size > self.alias_budget {
            return Err(self.error(
                span,
                "aliases expand to too many nodes",
                Some("the aliases in this document would copy more than the allowed number of values".into()),
            ));
        }
        self.alias_budget -= anchor.size;
        let mut node = anchor.node.clone();
        node.span = span;
        self.finish(node, None);
        Ok(())
    }

    /// Hands a completed node to the collection it belongs to, or makes it the
    /// root. `key_text` is the scalar's text, used when the node is a key.
    fn finish(&mut self, node: Node, key_text: Option<String>) {
        let Builder {
            stack,
            errors,
            text,
            root,
            ..
        } = self;
        match stack.last_mut() {
            None => {
                if root.is_none() {
                    *root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { object, key, .. }) => match std::mem::replace(key, KeySlot::Empty) {
                KeySlot::Empty => {
                    *key = match key_text.or_else(|| scalar_key_text(&node)) {
                        Some(k) => KeySlot::Key(k, node.span),
                        None => {
                            errors.push(SyntaxError::new(
                                node.span,
                                "mapping keys must be scalars",
                                Some(format!("found {} used as a key", node.type_name())),
                            ));
                            KeySlot::Invalid
                        }
                    };
                }
                KeySlot::Key(key, key_span) => object.insert(
                    Entry {
                        key,
                        key_span,
                        value: node,
                    },
                    text,
                    errors,
                ),
                KeySlot::Invalid => {}
            },
        }
    }
}

/// The key string of an aliased scalar used as a key.
fn scalar_key_text(node: &Node) -> Option<String> {
    match &node.kind {
        Kind::Null => Some("null".into()),
        Kind::Bool(b) => Some(b.to_string()),
        Kind::Number(n) => Some(n.to_string()),
        Kind::String(s) => Some(s.clone()),
        Kind::Array(_) | Kind::Object(_) => None,
    }
}

fn count_nodes(node: &Node) -> usize {
    match &node.kind {
        Kind::Array(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Kind::Object(entries) => 1 + entries.iter().map(|e| count_nodes(&e.value)).sum::<usize>(),
        _ => 1,
    }
}

fn height(node: &Node) -> usize {
    match &node.kind {
        Kind::Array(items) => 1 + items.iter().map(height).max().unwrap_or(0),
        Kind::Object(entries) => 1 + entries.iter().map(|e| height(&e.value)).max().unwrap_or(0),
        _ => 0,
    }
}

/// What a plain scalar means under the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Null,
    Bool(bool),
    Int,
    Float,
    Str,
}

/// Classifies a plain scalar by the core schema's regular expressions
/// (YAML 1.2.2 §10.3.2). Notably `yes`/`on`, `1_000` and `0b1` are strings.
fn classify(text: &str) -> Class {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Class::Null,
        "true" | "True" | "TRUE" => return Class::Bool(true),
        "false" | "False" | "FALSE" => return Class::Bool(false),
        _ => {}
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    if is_digits(unsigned) {
        return Class::Int;
    }
    if let Some(oct) = text.strip_prefix("0o")
        && !oct.is_empty()
        && oct.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Class::Int;
    }
    if let Some(hex) = text.strip_prefix("0x")
        && !hex.is_empty()
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Class::Int;
    }
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") || matches!(text, ".nan" | ".NaN" | ".NAN") {
        return Class::Float;
    }
    if is_core_float(unsigned) {
        return Class::Float;
    }
    Class::Str
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?` (sign already removed).
fn is_core_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => is_digits(frac),
        Some((int, frac)) => is_digits(int) && (frac.is_empty() || is_digits(frac)),
        None => is_digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| is_digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

/// Converts a core-schema integer. Decimal integers beyond 64 bits become
/// `f64`, as in JSON; octal and hex ones that overflow are out of range.
fn int_number(text: &str) -> Option<serde_json::Number> {
    if let Some(hex) = text.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).ok().map(Into::into);
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return u64::from_str_radix(oct, 8).ok().map(Into::into);
    }
    let digits = text.strip_prefix('+').unwrap_or(text);
    let exact = if digits.starts_with('-') {
        digits.parse::<i64>().ok().map(Into::into)
    } else {
        digits.parse::<u64>().ok().map(Into::into)
    };
    exact.or_else(|| float_number(digits))
}

/// Converts a core-schema float; `None` for values JSON can't hold (infinity,
/// NaN, overflow).
fn float_number(text: &str) -> Option<serde_json::Number> {
    let value: f64 = text.parse().ok()?;
    serde_json::Number::from_f64(value).filter(|_| value.is_finite())
}
