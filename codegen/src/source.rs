//! Parses JSON, JSONC and YAML configuration files into one tree that keeps
//! source positions.
//!
//! Every diagnostic the generator prints must name `file:line:col` and show the
//! offending text, and user input is often hand-edited and messy. A
//! `serde_json::Value` forgets where things came from, so config files are read
//! into this module's own [`Node`] tree, where every value and every object key
//! carries the byte range it was read from.
//!
//! The three formats share one tree so that the rest of the generator never
//! needs to know whether an OpenAPI document was written in JSON or YAML.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

mod json;
#[cfg(test)]
mod tests;
mod yaml;

/// The deepest nesting of arrays and objects accepted in any format.
///
/// Parsing is recursive (and so are `Clone`, `Drop` and [`Node::to_value`]),
/// so a limit keeps hostile or broken input from overflowing the stack; real
/// OpenAPI documents stay far below it. One more level is a `nesting too deep`
/// error.
pub const MAX_DEPTH: usize = 255;

/// Byte range into the file's text.
///
/// Offsets always refer to the text exactly as passed to [`parse`] (a leading
/// byte-order mark included), so they can be handed to a diagnostic renderer
/// together with the original file contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// Offset of the first byte.
    pub start: usize,
    /// Offset one past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end` (byte offsets, `end` exclusive).
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// Length in bytes; zero for an empty or inverted span.
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// Whether the span covers no text (e.g. "end of file" positions).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A value read from a config file, with the range of text it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the value is written. Strings include their quotes; arrays and
    /// objects in bracket syntax include the brackets. A YAML alias (`*name`)
    /// gets the alias's span, while the values inside it keep the spans of the
    /// anchored definition they were copied from.
    pub span: Span,
    /// The value itself.
    pub kind: Kind,
}

/// The value of a [`Node`]: the JSON data model, which YAML documents are
/// mapped onto.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `null` (YAML: `null`, `~` or an empty value).
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, kept exactly as `serde_json` would hold it.
    Number(serde_json::Number),
    /// A string with escapes already decoded.
    String(String),
    /// An array / YAML sequence.
    Array(Vec<Node>),
    /// An object / YAML mapping, in document order. Keys are unique: a
    /// duplicate is reported as an error and only the first entry is kept.
    Object(Vec<Entry>),
}

/// One `key: value` pair of an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key as a string (YAML keys such as `200` become `"200"`).
    pub key: String,
    /// Where the key is written (quotes included).
    pub key_span: Span,
    /// The value.
    pub value: Node,
}

/// A syntax problem found while parsing.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    /// The offending text; empty at the end of the file.
    pub span: Span,
    /// What is wrong, e.g. ``expected `,` or `}` after object entry``.
    pub message: String,
    /// A short note to print at the span, e.g. "first defined at line 3".
    pub label: Option<String>,
}

impl SyntaxError {
    fn new(span: Span, message: impl Into<String>, label: Option<String>) -> SyntaxError {
        SyntaxError {
            span,
            message: message.into(),
            label,
        }
    }
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SyntaxError {}

/// The syntax a config file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Strict RFC 8259 JSON (a leading byte-order mark is tolerated).
    Json,
    /// JSON with `//` and `/* */` comments and trailing commas, as used by
    /// `zuplo.jsonc`.
    Jsonc,
    /// A single YAML 1.2 document, typed by the core schema.
    Yaml,
}

impl Format {
    /// Picks the format from a file extension (`.json`, `.jsonc`, `.yaml`,
    /// `.yml`, any case), so callers don't each keep their own table.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "json" => Some(Format::Json),
            "jsonc" => Some(Format::Jsonc),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// Parses `text`. Returns the tree when the document could be read (possibly
/// with errors, e.g. a duplicate key keeps the first value and reports the
/// second) and all errors found.
///
/// When the tree is `None` the error list is never empty. Parsing never panics
/// and stops at the first error it cannot step over; all spans lie within
/// `text` on character boundaries.
pub fn parse(text: &str, format: Format) -> (Option<Node>, Vec<SyntaxError>) {
    match format {
        Format::Json => json::parse(text, false),
        Format::Jsonc => json::parse(text, true),
        Format::Yaml => yaml::parse(text),
    }
}

impl Node {
    /// A node of `kind` written at `span`.
    pub fn new(span: Span, kind: Kind) -> Node {
        Node { span, kind }
    }

    /// The value of `key` if this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|entry| &entry.value)
    }

    /// The entry of `key` (with its key span) if this is an object that has it.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries().iter().find(|entry| entry.key == key)
    }

    /// The entries in document order; empty unless this is an object.
    ///
    /// A slice rather than an `Option` so loops stay simple after the caller
    /// has checked the kind (and reported a mismatch with [`Node::type_name`]).
    pub fn entries(&self) -> &[Entry] {
        match &self.kind {
            Kind::Object(entries) => entries,
            _ => &[],
        }
    }

    /// The elements; empty unless this is an array (see [`Node::entries`]).
    pub fn items(&self) -> &[Node] {
        match &self.kind {
            Kind::Array(items) => items,
            _ => &[],
        }
    }

    /// The text if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value if this is a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self.kind {
            Kind::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value if this is a number that is a non-negative integer fitting in `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match &self.kind {
            Kind::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// The value if this is a number that is an integer fitting in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match &self.kind {
            Kind::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    /// The value of any number as `f64` (possibly rounded).
    pub fn as_f64(&self) -> Option<f64> {
        match &self.kind {
            Kind::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Null)
    }

    /// The kind of value with an article, for messages such as
    /// "expected a string, found an object".
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Number(_) => "a number",
            Kind::String(_) => "a string",
            Kind::Array(_) => "an array",
            Kind::Object(_) => "an object",
        }
    }

    /// Converts to a `serde_json::Value`, keeping object order, for code that
    /// only needs the data (e.g. embedding an example in the generated code).
    pub fn to_value(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Number(n) => Value::Number(n.clone()),
            Kind::String(s) => Value::String(s.clone()),
            Kind::Array(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Kind::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|entry| (entry.key.clone(), entry.value.to_value()))
                    .collect(),
            ),
        }
    }

    /// Looks up an RFC 6901 JSON pointer such as `/components/schemas/Pet`
    /// (`~1` stands for `/`, `~0` for `~`), as used by `$ref`s after the `#`.
    ///
    /// `""` is this node. Returns `None` when the pointer doesn't start with
    /// `/`, contains an invalid `~` escape, uses an array index with leading
    /// zeros or `-`, or names something that doesn't exist. A `#` prefix and
    /// percent-encoding belong to the URI around the pointer and must be
    /// removed by the caller.
    pub fn pointer(&self, json_pointer: &str) -> Option<&Node> {
        if json_pointer.is_empty() {
            return Some(self);
        }
        let rest = json_pointer.strip_prefix('/')?;
        let mut node = self;
        for raw in rest.split('/') {
            let segment = unescape_pointer_segment(raw)?;
            node = match &node.kind {
                Kind::Object(_) => node.get(&segment)?,
                Kind::Array(items) => items.get(parse_array_index(&segment)?)?,
                _ => return None,
            };
        }
        Some(node)
    }
}

/// Decodes `~1` and `~0`; any other `~` makes the pointer invalid (RFC 6901 §3).
fn unescape_pointer_segment(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !raw.contains('~') {
        return Some(std::borrow::Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(std::borrow::Cow::Owned(out))
}

/// RFC 6901 array indexes are `0` or digits without a leading zero.
fn parse_array_index(segment: &str) -> Option<usize> {
    let bytes = segment.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if bytes.len() > 1 && bytes[0] == b'0' {
        return None;
    }
    segment.parse().ok()
}

/// Maps byte offsets to 1-based line and column numbers for diagnostics.
///
/// Columns count characters, not bytes, because that is what editors show. A
/// byte-order mark at the very start is invisible in editors, so it does not
/// count as a column either.
#[derive(Debug, Clone)]
pub struct LineIndex {
    text: String,
    /// Byte offset where each line starts; always begins with 0.
    line_starts: Vec<usize>,
}

impl LineIndex {
    /// Indexes `text` (the same text the spans refer to). The text is copied
    /// so the index can be stored next to the file it describes.
    pub fn new(text: &str) -> LineIndex {
        let mut line_starts = vec![0];
        line_starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex {
            text: text.to_owned(),
            line_starts,
        }
    }

    /// The 1-based `(line, column)` of a byte offset. Offsets past the end
    /// are clamped to the end, and an offset inside a multi-byte character
    /// counts as that character, so any span from anywhere can be shown.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self
            .line_starts
            .get(line.wrapping_sub(1))
            .copied()
            .unwrap_or(0);
        let mut column = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count())
            + 1;
        if start == 0 && offset > 0 && self.text.starts_with('\u{FEFF}') {
            column -= 1;
        }
        (line.max(1), column)
    }

    /// The number of lines (a trailing newline starts one more, empty line).
    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }
}

/// The 1-based line of a byte offset, for labels like "first defined at line 3"
/// (a full [`LineIndex`] isn't worth building for the rare duplicate key).
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Collects object entries and reports duplicate keys, for all formats alike.
#[derive(Default)]
struct ObjectBuilder {
    entries: Vec<Entry>,
    /// Key → entry index; only built for large objects, where a linear scan
    /// per key would make parsing quadratic.
    index: HashMap<String, usize>,
}

impl ObjectBuilder {
    /// Below this many entries a linear scan beats hashing every key.
    const LINEAR_LIMIT: usize = 16;

    fn position(&mut self, key: &str) -> Option<usize> {
        if self.entries.len() < Self::LINEAR_LIMIT {
            return self.entries.iter().position(|e| e.key == key);
        }
        if self.index.is_empty() {
            for (i, entry) in self.entries.iter().enumerate() {
                self.index.insert(entry.key.clone(), i);
            }
        }
        self.index.get(key).copied()
    }

    /// Adds `entry`, or keeps the first one and reports this one as a duplicate.
    fn insert(&mut self, entry: Entry, text: &str, errors: &mut Vec<SyntaxError>) {
        if let Some(first) = self.position(&entry.key) {
            let first_line = line_of(text, self.entries[first].key_span.start);
            errors.push(SyntaxError::new(
                entry.key_span,
                format!("duplicate key {:?}", entry.key),
                Some(format!("first defined at line {first_line}")),
            ));
            return;
        }
        if !self.index.is_empty() {
            self.index.insert(entry.key.clone(), self.entries.len());
        }
        self.entries.push(entry);
    }

    fn finish(self) -> Vec<Entry> {
        self.entries
    }
}

/// The span of the character at `offset` (empty at the end of the text), for
/// errors that point at one offending character.
fn char_span(text: &str, offset: usize) -> Span {
    let mut start = offset.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let len = text[start..].chars().next().map_or(0, char::len_utf8);
    Span::new(start, start + len)
}
