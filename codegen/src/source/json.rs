//! JSON (RFC 8259) and JSONC parsing into [`Node`]s.
//!
//! Hand-written rather than built on `serde_json` because diagnostics need the
//! span of every value and key, duplicate keys must be reported instead of
//! silently overwritten, and JSONC adds comments and trailing commas.

use super::{Entry, Kind, MAX_DEPTH, Node, ObjectBuilder, Span, SyntaxError, char_span, line_of};

/// Marks an error that ends parsing; the error itself is already recorded.
struct Stop;

/// Parses `text` as JSON, or as JSONC when `jsonc` is set.
pub(super) fn parse(text: &str, jsonc: bool) -> (Option<Node>, Vec<SyntaxError>) {
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        // Editors on Windows like to write a BOM; it is not part of the JSON.
        pos: if text.starts_with('\u{FEFF}') { 3 } else { 0 },
        jsonc,
        depth: 0,
        errors: Vec::new(),
    };
    let root = parser.document();
    (root, parser.errors)
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    jsonc: bool,
    /// Arrays/objects currently open.
    depth: usize,
    errors: Vec<SyntaxError>,
}

impl Parser<'_> {
    fn document(&mut self) -> Option<Node> {
        self.skip_ws().ok()?;
        if self.pos >= self.bytes.len() {
            self.error(
                self.eof(),
                "expected a JSON value, found end of file",
                Some("the file contains no value".into()),
            );
            return None;
        }
        let node = self.value().ok()?;
        // The value was read completely; problems after it are reported but
        // do not take the tree away.
        if self.skip_ws().is_ok() && self.pos < self.bytes.len() {
            let (span, found) = self.found();
            self.error(
                span,
                "unexpected content after the JSON value",
                Some(format!("found {found}; a file holds exactly one value")),
            );
        }
        Some(node)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn eof(&self) -> Span {
        Span::new(self.bytes.len(), self.bytes.len())
    }

    fn error(&mut self, span: Span, message: impl Into<String>, label: Option<String>) -> Stop {
        self.errors.push(SyntaxError::new(span, message, label));
        Stop
    }

    /// The span and a description of whatever is at the current position, for
    /// "expected X, found Y" messages: a whole word for things like `NaN` or
    /// `True`, otherwise one character.
    fn found(&self) -> (Span, String) {
        let Some(b) = self.peek() else {
            return (self.eof(), "end of file".into());
        };
        if is_word_byte(b) {
            let end = self.word_end(self.pos);
            let span = Span::new(self.pos, end);
            return (span, format!("`{}`", &self.text[self.pos..end]));
        }
        let span = char_span(self.text, self.pos);
        let c = self.text[span.start..span.end]
            .chars()
            .next()
            .unwrap_or('\0');
        let shown = if c.is_control() {
            format!("U+{:04X}", u32::from(c))
        } else {
            format!("`{c}`")
        };
        (span, shown)
    }

    fn word_end(&self, from: usize) -> usize {
        let mut end = from;
        while self.bytes.get(end).is_some_and(|&b| is_word_byte(b)) {
            end += 1;
        }
        end
    }

    /// Skips whitespace and, in JSONC, comments. In plain JSON a comment is
    /// reported but skipped, since users often paste JSONC into `.json` files
    /// and one message per comment beats stopping at the first.
    fn skip_ws(&mut self) -> Result<(), Stop> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.pos += 1,
                Some(b'/') if matches!(self.bytes.get(self.pos + 1), Some(b'/' | b'*')) => {
                    let start = self.pos;
                    let block = self.bytes[self.pos + 1] == b'*';
                    let end = if block {
                        match self.text[start + 2..].find("*/") {
                            Some(i) => start + 2 + i + 2,
                            None => {
                                return Err(self.error(
                                    Span::new(start, start + 2),
                                    "unterminated block comment",
                                    Some("this comment has no closing `*/`".into()),
                                ));
                            }
                        }
                    } else {
                        self.text[start..]
                            .find('\n')
                            .map_or(self.bytes.len(), |i| start + i)
                    };
                    if !self.jsonc {
                        self.error(
                            Span::new(start, end),
                            "comments are not allowed in JSON",
                            Some("only JSONC files (`.jsonc`) may contain comments".into()),
                        );
                    }
                    self.pos = end;
                }
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self) -> Result<Node, Stop> {
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => {
                let (s, span) = self.string()?;
                Ok(Node::new(span, Kind::String(s)))
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') if self.literal("true") => Ok(self.keyword(4, Kind::Bool(true))),
            Some(b'f') if self.literal("false") => Ok(self.keyword(5, Kind::Bool(false))),
            Some(b'n') if self.literal("null") => Ok(self.keyword(4, Kind::Null)),
            Some(b'\'') => Err(self.error(
                char_span(self.text, self.pos),
                "strings must use double quotes in JSON",
                Some("replace `'` with `\"`".into()),
            )),
            None => Err(self.error(self.eof(), "expected a value, found end of file", None)),
            Some(_) => {
                let (span, found) = self.found();
                let word = &self.text[span.start..span.end];
                let label = ["true", "false", "null"]
                    .into_iter()
                    .find(|lit| word.eq_ignore_ascii_case(lit))
                    .map(|lit| format!("JSON literals are lowercase: `{lit}`"));
                Err(self.error(span, format!("expected a value, found {found}"), label))
            }
        }
    }

    /// Whether the keyword `word` is at the current position as a whole word
    /// (so `nullx` is not `null` followed by garbage).
    fn literal(&self, word: &str) -> bool {
        self.bytes[self.pos..].starts_with(word.as_bytes())
            && !self
                .bytes
                .get(self.pos + word.len())
                .is_some_and(|&b| is_word_byte(b))
    }

    fn keyword(&mut self, len: usize, kind: Kind) -> Node {
        let start = self.pos;
        self.pos += len;
        Node::new(Span::new(start, self.pos), kind)
    }

    fn enter(&mut self) -> Result<(), Stop> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(
                Span::new(self.pos, self.pos + 1),
                "nesting too deep",
                Some(format!(
                    "at most {MAX_DEPTH} nested arrays and objects are supported"
                )),
            ));
        }
        self.depth += 1;
        Ok(())
    }

    /// The error for a file that ends inside the array/object opened at `open`.
    fn unclosed(&mut self, open: usize, bracket: char) -> Stop {
        let line = line_of(self.text, open);
        self.error(
            self.eof(),
            "unexpected end of file",
            Some(format!("the `{bracket}` on line {line} is never closed")),
        )
    }

    /// Reports a trailing comma unless JSONC allows it; parsing continues
    /// either way because the intent is obvious.
    fn trailing_comma(&mut self, comma: Option<Span>) {
        if let Some(comma) = comma
            && !self.jsonc
        {
            self.error(
                comma,
                "trailing comma is not allowed in JSON",
                Some("remove this comma".into()),
            );
        }
    }

    fn object(&mut self) -> Result<Node, Stop> {
        let start = self.pos;
        self.enter()?;
        self.pos += 1;
        let mut object = ObjectBuilder::default();
        // The comma just read, if any, to report it when `}` follows.
        let mut comma: Option<Span> = None;
        self.skip_ws()?;
        loop {
            match self.peek() {
                Some(b'}') => {
                    self.trailing_comma(comma);
                    self.pos += 1;
                    break;
                }
                Some(b'"') => {}
                None => return Err(self.unclosed(start, '{')),
                Some(b) => {
                    let (span, found) = self.found();
                    let (message, label) = if is_word_byte(b) {
                        let word = &self.text[span.start..span.end];
                        (
                            "object keys must be double-quoted strings".to_string(),
                            format!("write `\"{word}\"`"),
                        )
                    } else if comma.is_some() {
                        (
                            "expected a string key after `,`".to_string(),
                            format!("found {found}"),
                        )
                    } else {
                        (
                            "expected a string key or `}`".to_string(),
                            format!("found {found}"),
                        )
                    };
                    return Err(self.error(span, message, Some(label)));
                }
            }
            let (key, key_span) = self.string()?;
            self.skip_ws()?;
            if self.peek() != Some(b':') {
                let (span, found) = self.found();
                return Err(self.error(
                    span,
                    "expected `:` after object key",
                    Some(format!("found {found}")),
                ));
            }
            self.pos += 1;
            self.skip_ws()?;
            let value = self.value()?;
            object.insert(
                Entry {
                    key,
                    key_span,
                    value,
                },
                self.text,
                &mut self.errors,
            );
            self.skip_ws()?;
            match self.peek() {
                Some(b',') => {
                    comma = Some(Span::new(self.pos, self.pos + 1));
                    self.pos += 1;
                    self.skip_ws()?;
                }
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                None => return Err(self.unclosed(start, '{')),
                Some(b) => {
                    let (span, found) = self.found();
                    let label = if b == b'"' {
                        "missing `,` before this key?".to_string()
                    } else {
                        format!("found {found}")
                    };
                    return Err(self.error(
                        span,
                        "expected `,` or `}` after object entry",
                        Some(label),
                    ));
                }
            }
        }
        self.depth -= 1;
        Ok(Node::new(
            Span::new(start, self.pos),
            Kind::Object(object.finish()),
        ))
    }

    fn array(&mut self) -> Result<Node, Stop> {
        let start = self.pos;
        self.enter()?;
        self.pos += 1;
        let mut items = Vec::new();
        let mut comma: Option<Span> = None;
        self.skip_ws()?;
        loop {
            match self.peek() {
                Some(b']') => {
                    self.trailing_comma(comma);
                    self.pos += 1;
                    break;
                }
                None => return Err(self.unclosed(start, '[')),
                Some(_) => {}
            }
            items.push(self.value()?);
            self.skip_ws()?;
            match self.peek() {
                Some(b',') => {
                    comma = Some(Span::new(self.pos, self.pos + 1));
                    self.pos += 1;
                    self.skip_ws()?;
                }
                Some(b']') => {
                    self.pos += 1;
                    break;
                }
                None => return Err(self.unclosed(start, '[')),
                Some(b) => {
                    let (span, found) = self.found();
                    let label = if matches!(b, b'"' | b'{' | b'[' | b'-' | b'0'..=b'9') {
                        "missing `,` before this value?".to_string()
                    } else {
                        format!("found {found}")
                    };
                    return Err(self.error(
                        span,
                        "expected `,` or `]` after array element",
                        Some(label),
                    ));
                }
            }
        }
        self.depth -= 1;
        Ok(Node::new(Span::new(start, self.pos), Kind::Array(items)))
    }

    /// Reads a string at the current `"`; returns it decoded with its span
    /// (quotes included). Bad escapes and raw control characters are reported
    /// and stepped over, since the rest of the string is still readable.
    fn string(&mut self) -> Result<(String, Span), Stop> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let run = self.pos;
            while self
                .bytes
                .get(self.pos)
                .is_some_and(|&b| b != b'"' && b != b'\\' && b >= 0x20)
            {
                self.pos += 1;
            }
            // The run stops at an ASCII byte or the end, so both ends are
            // character boundaries.
            out.push_str(self.text.get(run..self.pos).unwrap_or_default());
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok((out, Span::new(start, self.pos)));
                }
                Some(b'\\') => self.escape(start, &mut out)?,
                None | Some(b'\n' | b'\r') => {
                    return Err(self.error(
                        Span::new(start, start + 1),
                        "unterminated string",
                        Some("this string has no closing `\"`".into()),
                    ));
                }
                Some(c) => {
                    self.error(
                        Span::new(self.pos, self.pos + 1),
                        format!("control character U+{c:04X} must be escaped in a string"),
                        None,
                    );
                    out.push(char::from(c));
                    self.pos += 1;
                }
            }
        }
    }

    /// Decodes the escape at the current `\` of the string opened at `start`.
    fn escape(&mut self, start: usize, out: &mut String) -> Result<(), Stop> {
        let at = self.pos;
        let simple = match self.bytes.get(at + 1) {
            Some(b'"') => Some('"'),
            Some(b'\\') => Some('\\'),
            Some(b'/') => Some('/'),
            Some(b'b') => Some('\u{8}'),
            Some(b'f') => Some('\u{c}'),
            Some(b'n') => Some('\n'),
            Some(b'r') => Some('\r'),
            Some(b't') => Some('\t'),
            Some(b'u') => None,
            None => {
                return Err(self.error(
                    Span::new(start, start + 1),
                    "unterminated string",
                    Some("this string has no closing `\"`".into()),
                ));
            }
            Some(_) => {
                let span = char_span(self.text, at + 1);
                let c = &self.text[span.start..span.end];
                self.error(
                    Span::new(at, span.end),
                    format!("invalid escape sequence `\\{}`", c.escape_debug()),
                    Some(r#"valid escapes are \" \\ \/ \b \f \n \r \t and \uXXXX"#.into()),
                );
                out.push_str(c);
                self.pos = span.end;
                return Ok(());
            }
        };
        if let Some(c) = simple {
            out.push(c);
            self.pos += 2;
            return Ok(());
        }
        let Some(code) = self.hex4(at + 2) else {
            let end = (at + 2..at + 6)
                .find(|&i| !self.bytes.get(i).is_some_and(u8::is_ascii_hexdigit))
                .unwrap_or(at + 6);
            self.error(
                Span::new(at, end),
                "invalid unicode escape",
                Some("`\\u` must be followed by 4 hex digits".into()),
            );
            out.push(char::REPLACEMENT_CHARACTER);
            self.pos = end;
            return Ok(());
        };
        // UTF-16 surrogates only make sense in high/low pairs; a lone one is
        // reported (serde_json would reject the file too) and replaced.
        match code {
            0xD800..=0xDBFF => {
                let low = if self.bytes.get(at + 6..at + 8) == Some(b"\\u") {
                    self.hex4(at + 8)
                        .filter(|low| (0xDC00..=0xDFFF).contains(low))
                } else {
                    None
                };
                if let Some(low) = low {
                    let c = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                    out.push(char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER));
                    self.pos = at + 12;
                } else {
                    self.error(
                        Span::new(at, at + 6),
                        format!("unpaired surrogate `\\u{code:04X}`"),
                        Some(
                            "a high surrogate must be followed by a `\\uDC00`-`\\uDFFF` escape"
                                .into(),
                        ),
                    );
                    out.push(char::REPLACEMENT_CHARACTER);
                    self.pos = at + 6;
                }
            }
            0xDC00..=0xDFFF => {
                self.error(
                    Span::new(at, at + 6),
                    format!("unpaired surrogate `\\u{code:04X}`"),
                    Some("a low surrogate must follow a `\\uD800`-`\\uDBFF` escape".into()),
                );
                out.push(char::REPLACEMENT_CHARACTER);
                self.pos = at + 6;
            }
            _ => {
                out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
                self.pos = at + 6;
            }
        }
        Ok(())
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.bytes.get(at..at + 4)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    }

    fn digits(&mut self) -> bool {
        let from = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos > from
    }

    /// Reads a number per the RFC 8259 grammar, then lets `serde_json` pick
    /// its representation so values match what `serde_json` itself would
    /// produce (integers that overflow 64 bits become `f64`).
    fn number(&mut self) -> Result<Node, Stop> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if self.digits() {
                    return Err(self.error(
                        Span::new(start, self.pos),
                        "leading zeros are not allowed in JSON numbers",
                        None,
                    ));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.bad_number(start, "expected a digit after `-`")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !self.digits() {
                return Err(self.bad_number(start, "expected a digit after `.`"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !self.digits() {
                return Err(self.bad_number(start, "expected a digit in the exponent"));
            }
        }
        let span = Span::new(start, self.pos);
        match serde_json::from_str::<serde_json::Number>(&self.text[start..self.pos]) {
            Ok(n) => Ok(Node::new(span, Kind::Number(n))),
            Err(_) => {
                // Reading can go on: only this value is unusable.
                self.error(
                    span,
                    "number out of range",
                    Some("it does not fit in a 64-bit float".into()),
                );
                Ok(Node::new(span, Kind::Null))
            }
        }
    }

    fn bad_number(&mut self, start: usize, label: &str) -> Stop {
        let end = char_span(self.text, self.pos).end.max(start + 1);
        self.error(Span::new(start, end), "invalid number", Some(label.into()))
    }
}

/// Bytes that make up "words" such as `true`, `NaN` or an unquoted key, so
/// errors can show the whole word.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}
