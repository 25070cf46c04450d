#![allow(clippy::unwrap_used)]

use super::*;

fn ok(text: &str, format: Format) -> Node {
    let (node, errors) = parse(text, format);
    assert!(
        errors.is_empty(),
        "unexpected errors for {text:?}: {errors:#?}"
    );
    node.unwrap()
}

fn errs(text: &str, format: Format) -> (Option<Node>, Vec<SyntaxError>) {
    let (node, errors) = parse(text, format);
    assert!(!errors.is_empty(), "expected errors for {text:?}");
    (node, errors)
}

fn slice(text: &str, span: Span) -> &str {
    &text[span.start..span.end]
}

fn pos(text: &str, span: Span) -> (usize, usize) {
    LineIndex::new(text).line_col(span.start)
}

// ---------------------------------------------------------------- positions

#[test]
fn json_nested_value_position() {
    let text = "{\n  \"paths\": {\n    \"/pets\": [1, \"x\"]\n  }\n}\n";
    let root = ok(text, Format::Json);
    let x = root.pointer("/paths/~1pets/1").unwrap();
    assert_eq!(slice(text, x.span), "\"x\"");
    assert_eq!(pos(text, x.span), (3, 18));
    let entry = root.get("paths").unwrap().entry("/pets").unwrap();
    assert_eq!(slice(text, entry.key_span), "\"/pets\"");
    assert_eq!(pos(text, entry.key_span), (3, 5));
    assert_eq!(
        slice(text, root.get("paths").unwrap().span),
        "{\n    \"/pets\": [1, \"x\"]\n  }"
    );
    assert_eq!(root.span, Span::new(0, text.len() - 1));
}

#[test]
fn json_position_with_bom_and_multibyte() {
    let text = "\u{FEFF}{\"ünï\": \"€€\", \"k\": true}";
    let root = ok(text, Format::Json);
    assert_eq!(root.span.start, 3);
    let k = root.get("k").unwrap();
    assert_eq!(slice(text, k.span), "true");
    // Columns count characters and the invisible BOM is not one.
    assert_eq!(pos(text, k.span), (1, 20));
    assert_eq!(pos(text, root.span), (1, 1));
    let (_, errors) = errs("\u{FEFF}\n[1,,]", Format::Json);
    assert_eq!(errors[0].span, Span::new(7, 8));
    assert_eq!(LineIndex::new("\u{FEFF}\n[1,,]").line_col(7), (2, 4));
}

#[test]
fn yaml_nested_value_position() {
    let text = "openapi: 3.1.0\npaths:\n  /pets:\n    get:\n      summary: \"List ü\"\n      tags: [a, bé]\n";
    let root = ok(text, Format::Yaml);
    let tag = root.pointer("/paths/~1pets/get/tags/1").unwrap();
    assert_eq!(tag.as_str(), Some("bé"));
    assert_eq!(slice(text, tag.span), "bé");
    assert_eq!(pos(text, tag.span), (6, 17));
    let summary = root.pointer("/paths/~1pets/get/summary").unwrap();
    assert_eq!(slice(text, summary.span), "\"List ü\"");
    let tags = root.pointer("/paths/~1pets/get/tags").unwrap();
    assert_eq!(slice(text, tags.span), "[a, bé]");
    let get = root.pointer("/paths/~1pets").unwrap().entry("get").unwrap();
    assert_eq!(pos(text, get.key_span), (4, 5));
    assert_eq!(
        slice(text, get.value.span),
        "summary: \"List ü\"\n      tags: [a, bé]"
    );
}

#[test]
fn yaml_position_with_bom_and_multibyte() {
    let text = "\u{FEFF}ключ: значение\ny: |\n  block\n  text\n\nz: 2\n";
    let root = ok(text, Format::Yaml);
    let value = root.get("ключ").unwrap();
    assert_eq!(pos(text, value.span), (1, 7));
    assert_eq!(slice(text, value.span), "значение");
    let block = root.get("y").unwrap();
    assert_eq!(block.as_str(), Some("block\ntext\n"));
    // Block scalar spans cover the content lines (the parser starts them
    // after the `|` header) and stop at the last one.
    assert_eq!(slice(text, block.span), "block\n  text");
    assert_eq!(pos(text, root.get("z").unwrap().span), (6, 4));
}

#[test]
fn line_index_edges() {
    let index = LineIndex::new("ab\r\nc€d\n");
    assert_eq!(index.line_col(0), (1, 1));
    assert_eq!(index.line_col(4), (2, 1));
    assert_eq!(index.line_col(8), (2, 3)); // "d", after the 3-byte euro sign
    assert_eq!(index.line_col(6), (2, 2)); // inside "€" counts as "€"
    assert_eq!(index.line_col(10), (3, 1));
    assert_eq!(index.line_col(1000), (3, 1));
    assert_eq!(index.line_count(), 3);
    assert_eq!(LineIndex::new("").line_col(0), (1, 1));
}

// ----------------------------------------------------------- duplicate keys

#[test]
fn duplicate_keys_in_all_formats() {
    let cases = [
        (
            Format::Json,
            "{\n  \"a\": 1,\n  \"b\": 2,\n  \"a\": 3\n}",
            "\"a\"",
        ),
        (
            Format::Jsonc,
            "{\n  // c\n  \"a\": 1, \"b\": 2,\n  \"a\": 3, }",
            "\"a\"",
        ),
        (Format::Yaml, "x: 0\na: 1\nb: 2\na: 3\n", "a"),
    ];
    for (format, text, key_text) in cases {
        let (node, errors) = parse(text, format);
        let node = node.unwrap();
        assert_eq!(errors.len(), 1, "{format:?}: {errors:?}");
        let error = &errors[0];
        assert_eq!(error.message, "duplicate key \"a\"");
        let second = text.rfind(key_text).unwrap();
        assert_eq!(error.span, Span::new(second, second + key_text.len()));
        let first_line = LineIndex::new(text)
            .line_col(text.find(key_text).unwrap())
            .0;
        assert_eq!(
            error.label.as_deref(),
            Some(&*format!("first defined at line {first_line}"))
        );
        assert_eq!(
            node.get("a").unwrap().as_u64(),
            Some(1),
            "{format:?} keeps the first value"
        );
        let keys: Vec<_> = node.entries().iter().map(|e| e.key.as_str()).collect();
        assert!(keys.ends_with(&["a", "b"]), "{keys:?}");
    }
}

#[test]
fn duplicate_keys_in_large_objects_and_yaml_numbers() {
    let body: Vec<String> = (0..40).map(|i| format!("\"k{i}\": {i}")).collect();
    let text = format!("{{{}, \"k30\": 0}}", body.join(", "));
    let (node, errors) = parse(&text, Format::Json);
    assert_eq!(errors.len(), 1);
    assert_eq!(node.unwrap().get("k30").unwrap().as_u64(), Some(30));
    // `200` and `"200"` are the same key once keys are strings.
    let (_, errors) = parse("200: a\n'200': b\n", Format::Yaml);
    assert_eq!(errors[0].message, "duplicate key \"200\"");
}

// --------------------------------------------------------------- JSON / JSONC

#[test]
fn jsonc_comments_and_trailing_commas() {
    let text = "// leading\n{\n  /* block\n     comment */ \"a\": [1, 2, /* x */ 3,],\n  \"b\": \"//not a comment\", // end\n}\n/* trailing */";
    let root = ok(text, Format::Jsonc);
    assert_eq!(
        root.to_value(),
        serde_json::json!({"a": [1, 2, 3], "b": "//not a comment"})
    );
    let (node, errors) = errs(text, Format::Json);
    assert!(node.is_some());
    let messages: Vec<_> = errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "comments are not allowed in JSON",
            "comments are not allowed in JSON",
            "comments are not allowed in JSON",
            "trailing comma is not allowed in JSON",
            "comments are not allowed in JSON",
            "trailing comma is not allowed in JSON",
            "comments are not allowed in JSON",
        ]
    );
    let (_, errors) = errs("{\"a\": 1 /* open", Format::Jsonc);
    assert_eq!(errors[0].message, "unterminated block comment");
    assert_eq!(errors[0].span, Span::new(8, 10));
}

#[test]
fn trailing_comma_rejected_in_json() {
    let text = "{\"a\": [1, 2,],\n \"b\": 1,\n}";
    let (_, errors) = errs(text, Format::Json);
    assert_eq!(errors.len(), 2);
    for (error, comma) in errors.iter().zip([11, 22]) {
        assert_eq!(error.message, "trailing comma is not allowed in JSON");
        assert_eq!(error.span, Span::new(comma, comma + 1));
        assert_eq!(&text[comma..=comma], ",");
    }
    // A comma with nothing before it is not a trailing comma, even in JSONC.
    let (node, errors) = errs("[,]", Format::Jsonc);
    assert!(node.is_none());
    assert_eq!(errors[0].message, "expected a value, found `,`");
}

#[test]
fn json_syntax_errors_point_at_the_offending_token() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "{\"a\": 1 \"b\": 2}",
            "expected `,` or `}` after object entry",
            "\"b\": 2}",
        ),
        ("[1 2]", "expected `,` or `]` after array element", "2]"),
        ("{\"a\" 1}", "expected `:` after object key", "1}"),
        (
            "{a: 1}",
            "object keys must be double-quoted strings",
            "a: 1}",
        ),
        ("\"abc", "unterminated string", "\"abc"),
        ("[\"abc\n\"]", "unterminated string", "\"abc\n\"]"),
        ("[NaN]", "expected a value, found `NaN`", "NaN]"),
        ("[True]", "expected a value, found `True`", "True]"),
        ("['x']", "strings must use double quotes in JSON", "'x']"),
        (
            "[01]",
            "leading zeros are not allowed in JSON numbers",
            "01]",
        ),
        ("[1.]", "invalid number", "1.]"),
        ("[-]", "invalid number", "-]"),
        ("\"a\\qb\"", "invalid escape sequence `\\q`", "\\qb\""),
        ("\"a\\u12G4\"", "invalid unicode escape", "\\u12G4\""),
        (
            "\"tab\there\"",
            "control character U+0009 must be escaped in a string",
            "\there\"",
        ),
        ("{} x", "unexpected content after the JSON value", "x"),
        ("", "expected a JSON value, found end of file", ""),
        ("[1, {\"a\": ", "expected a value, found end of file", ""),
        ("[1, [2]", "unexpected end of file", ""),
    ];
    for &(text, message, at) in cases {
        let (_, errors) = errs(text, Format::Json);
        assert_eq!(errors[0].message, message, "{text:?}");
        let offset = text.len() - at.len();
        assert_eq!(errors[0].span.start, offset, "{text:?}: {errors:?}");
    }
    let (_, errors) = errs("[1, [2]", Format::Json);
    assert_eq!(
        errors[0].label.as_deref(),
        Some("the `[` on line 1 is never closed")
    );
    let (_, errors) = errs("[True]", Format::Json);
    assert_eq!(
        errors[0].label.as_deref(),
        Some("JSON literals are lowercase: `true`")
    );
}

#[test]
fn surrogate_pairs() {
    let root = ok(
        r#"["\uD83D\uDE00", "\u00e9\u20AC", "\/\b\f\n\r\t\"\\"]"#,
        Format::Json,
    );
    let items = root.items();
    assert_eq!(items[0].as_str(), Some("😀"));
    assert_eq!(items[1].as_str(), Some("é€"));
    assert_eq!(items[2].as_str(), Some("/\u{8}\u{c}\n\r\t\"\\"));
    for (text, at) in [
        (r#""\uD83D""#, 1),
        (r#""\uDE00x""#, 1),
        (r#""a\uD83D\u0041""#, 2),
    ] {
        let (node, errors) = errs(text, Format::Json);
        assert!(
            errors[0].message.starts_with("unpaired surrogate"),
            "{errors:?}"
        );
        assert_eq!(errors[0].span, Span::new(at, at + 6));
        assert!(node.unwrap().as_str().unwrap().contains('\u{FFFD}'));
    }
}

#[test]
fn big_numbers() {
    let text = "[18446744073709551615, -9223372036854775808, 123456789012345678901234567890, 1.5e300, -0.0, 1E2]";
    let root = ok(text, Format::Json);
    let items = root.items();
    assert_eq!(items[0].as_u64(), Some(u64::MAX));
    assert_eq!(items[1].as_i64(), Some(i64::MIN));
    assert_eq!(items[2].as_u64(), None);
    assert_eq!(items[2].as_f64(), Some(1.2345678901234568e29));
    assert_eq!(items[3].as_f64(), Some(1.5e300));
    assert_eq!(items[5].as_f64(), Some(100.0));
    // Same representation as serde_json's own parser.
    assert_eq!(
        root.to_value(),
        serde_json::from_str::<serde_json::Value>(text).unwrap()
    );

    let (node, errors) = errs("[1e400, 2]", Format::Json);
    assert_eq!(errors[0].message, "number out of range");
    assert_eq!(errors[0].span, Span::new(1, 6));
    assert!(node.unwrap().items()[0].is_null());

    let root = ok(
        "a: 18446744073709551616\nb: -12\nc: 0x_1\nd: 0xFF\ne: 0o17\n",
        Format::Yaml,
    );
    assert_eq!(
        root.get("a").unwrap().as_f64(),
        Some(18446744073709551616.0)
    );
    assert_eq!(root.get("b").unwrap().as_i64(), Some(-12));
    assert_eq!(root.get("c").unwrap().as_str(), Some("0x_1"));
    assert_eq!(root.get("d").unwrap().as_u64(), Some(255));
    assert_eq!(root.get("e").unwrap().as_u64(), Some(15));
    let (_, errors) = errs("a: 0x1FFFFFFFFFFFFFFFF\nb: .inf\nc: 1e999\n", Format::Yaml);
    let messages: Vec<_> = errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "number out of range",
            "infinity and NaN cannot be represented in JSON",
            "number out of range"
        ]
    );
}

// ------------------------------------------------------------ tree helpers

#[test]
fn to_value_round_trip() {
    let text = r#"{"z": 1, "a": [true, false, null, 1.5, -3, "s", {}], "m": {"y": {"x": []}}}"#;
    for format in [Format::Json, Format::Jsonc, Format::Yaml] {
        // JSON is (nearly) YAML, so the flow-style text reads the same in all three.
        let root = ok(text, format);
        let value = root.to_value();
        assert_eq!(
            value,
            serde_json::from_str::<serde_json::Value>(text).unwrap(),
            "{format:?}"
        );
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            text.replace(": ", ":").replace(", ", ",")
        );
    }
    let root = ok("b: 1\na:\n  - x\n  - {k: ~}\n", Format::Yaml);
    assert_eq!(
        serde_json::to_string(&root.to_value()).unwrap(),
        r#"{"b":1,"a":["x",{"k":null}]}"#
    );
}

#[test]
fn node_helpers() {
    let root = ok(
        r#"{"s": "x", "b": true, "n": 7, "f": 0.5, "z": null, "a": [], "o": {}}"#,
        Format::Json,
    );
    let names: Vec<_> = root.entries().iter().map(|e| e.value.type_name()).collect();
    assert_eq!(
        names,
        [
            "a string",
            "a boolean",
            "a number",
            "a number",
            "null",
            "an array",
            "an object"
        ]
    );
    assert_eq!(root.get("s").unwrap().as_str(), Some("x"));
    assert_eq!(root.get("b").unwrap().as_bool(), Some(true));
    assert_eq!(root.get("n").unwrap().as_u64(), Some(7));
    assert_eq!(root.get("f").unwrap().as_f64(), Some(0.5));
    assert_eq!(root.get("f").unwrap().as_u64(), None);
    assert!(root.get("z").unwrap().is_null());
    assert!(root.get("missing").is_none());
    assert!(root.get("s").unwrap().get("s").is_none());
    assert!(root.get("a").unwrap().items().is_empty());
    assert!(root.get("o").unwrap().items().is_empty());
    assert_eq!(root.get("o").unwrap().entries().len(), 0);
    assert_eq!(root.entries().len(), 7);
    assert!(root.items().is_empty(), "an object has no items");
    assert_eq!(
        Format::from_path(Path::new("routes.oas.JSON")),
        Some(Format::Json)
    );
    assert_eq!(
        Format::from_path(Path::new("zuplo.jsonc")),
        Some(Format::Jsonc)
    );
    assert_eq!(
        Format::from_path(Path::new("a/openapi.yml")),
        Some(Format::Yaml)
    );
    assert_eq!(Format::from_path(Path::new("README")), None);
}

#[test]
fn pointer_with_escaped_segments() {
    let root = ok(
        r#"{"a/b": {"m~n": [10, {"": 5}]}, "~1": 1, "": {"": 2}}"#,
        Format::Json,
    );
    assert_eq!(root.pointer("").unwrap(), &root);
    assert_eq!(root.pointer("/a~1b/m~0n/0").unwrap().as_u64(), Some(10));
    assert_eq!(root.pointer("/a~1b/m~0n/1/").unwrap().as_u64(), Some(5));
    assert_eq!(root.pointer("/~01").unwrap().as_u64(), Some(1));
    assert_eq!(root.pointer("//").unwrap().as_u64(), Some(2));
    for bad in [
        "a~1b",
        "/a~2b",
        "/a~",
        "/a~1b/m~0n/01",
        "/a~1b/m~0n/-",
        "/a~1b/m~0n/2",
        "/a~1b/m~0n/0/x",
        "#/a~1b",
    ] {
        assert!(root.pointer(bad).is_none(), "{bad}");
    }
}

// -------------------------------------------------------------------- YAML

#[test]
fn yaml_response_code_keys() {
    let text = "responses:\n  200:\n    description: OK\n  '404':\n    description: Missing\n  default: {description: x}\n  1.10: odd\n  0x1F: hex\n";
    let root = ok(text, Format::Yaml);
    let responses = root.get("responses").unwrap();
    let keys: Vec<_> = responses.entries().iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["200", "404", "default", "1.10", "0x1F"]);
    let ok_entry = responses.entry("200").unwrap();
    assert_eq!(slice(text, ok_entry.key_span), "200");
    assert_eq!(pos(text, ok_entry.key_span), (2, 3));
    assert_eq!(
        slice(text, responses.entry("404").unwrap().key_span),
        "'404'"
    );
    assert_eq!(
        responses.pointer("/200/description").unwrap().as_str(),
        Some("OK")
    );
}

#[test]
fn yaml_core_schema_typing() {
    let text = "\
- null\n- ~\n-\n- Null\n- true\n- False\n- yes\n- on\n- y\n- 1\n- -2\n- +3\n- 012\n- 1_000\n\
- 0o17\n- 0b101\n- 1.5\n- .5\n- 1.\n- 1e3\n- -1.5E-2\n- \"true\"\n- '1'\n- !!str 5\n- ! 5\n\
- !!int \"7\"\n- !!float 2\n- |\n  1\n- 2001-12-14\n- 1:30\n";
    let root = ok(text, Format::Yaml);
    let expected = serde_json::json!([
        null,
        null,
        null,
        null,
        true,
        false,
        "yes",
        "on",
        "y",
        1,
        -2,
        3,
        12,
        "1_000",
        15,
        "0b101",
        1.5,
        0.5,
        1.0,
        1000.0,
        -0.015,
        "true",
        "1",
        "5",
        "5",
        7,
        2,
        "1\n",
        "2001-12-14",
        "1:30"
    ]);
    assert_eq!(root.to_value(), expected);
    let (_, errors) = errs(
        "a: !!int x\nb: !include other.yaml\nc: !!map x\n",
        Format::Yaml,
    );
    let messages: Vec<_> = errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "\"x\" is not a valid `!!int`",
            "unsupported YAML tag `!include`",
            "`!!map` cannot be applied to a scalar"
        ]
    );
}

#[test]
fn yaml_aliases_expand_and_bombs_stop() {
    let text = "base: &b {type: string, enum: [a, b]}\ncopy: *b\nkey: &k name\n*k : 2\n";
    let root = ok(text, Format::Yaml);
    assert_eq!(
        root.get("copy").unwrap().to_value(),
        root.get("base").unwrap().to_value()
    );
    assert_eq!(slice(text, root.get("copy").unwrap().span), "*b");
    assert_eq!(root.get("name").unwrap().as_u64(), Some(2));

    let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..30 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let started = std::time::Instant::now();
    let (node, errors) = errs(&bomb, Format::Yaml);
    assert!(node.is_none());
    assert_eq!(errors[0].message, "aliases expand to too many nodes");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    let (node, errors) = errs("&a [1, *a]", Format::Yaml);
    assert!(node.is_none());
    assert_eq!(errors[0].message, "alias refers to a node that contains it");

    let (_, errors) = errs("a: *nope\n", Format::Yaml);
    assert_eq!(errors[0].span.start, 3, "{errors:?}");
}

#[test]
fn yaml_syntax_errors_carry_parser_positions() {
    let text = "a: 1\nb: [1, 2\nc: 3\n";
    let (node, errors) = errs(text, Format::Yaml);
    assert!(node.is_none());
    assert!(!errors[0].message.is_empty());
    assert!(errors[0].span.start >= 8, "{errors:?}");

    let (_, errors) = errs("a: \"unterminated\n", Format::Yaml);
    assert!(!errors[0].message.is_empty());

    let text = "a: 1\n---\nb: 2\n";
    let (node, errors) = errs(text, Format::Yaml);
    assert_eq!(
        errors[0].message,
        "a YAML file must contain exactly one document"
    );
    assert_eq!(slice(text, errors[0].span), "---");
    assert_eq!(node.unwrap().get("a").unwrap().as_u64(), Some(1));

    let (_, errors) = errs("? [a, b]\n: 1\nc: 2\n", Format::Yaml);
    assert_eq!(errors[0].message, "mapping keys must be scalars");

    assert!(ok("", Format::Yaml).is_null());
    assert!(ok("# only a comment\n", Format::Yaml).is_null());
}

// ------------------------------------------------------------ limits & fuzz

#[test]
fn nesting_limit_in_all_formats() {
    let deep_ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    let hostile = "[".repeat(100_000);
    for format in [Format::Json, Format::Jsonc, Format::Yaml] {
        ok(&deep_ok, format);
        for text in [&too_deep, &hostile] {
            let (node, errors) = errs(text, format);
            assert!(node.is_none());
            assert_eq!(errors[0].message, "nesting too deep", "{format:?}");
            assert_eq!(
                errors[0].span,
                Span::new(MAX_DEPTH, MAX_DEPTH + 1),
                "{format:?}"
            );
        }
    }
    let mut block = String::new();
    for i in 0..=MAX_DEPTH {
        block.push_str(&" ".repeat(i));
        block.push_str("k:\n");
    }
    let (_, errors) = errs(&block, Format::Yaml);
    assert_eq!(errors[0].message, "nesting too deep");
    // Aliases can't be used to nest deeper than the limit either.
    let chain: String = (1..300)
        .map(|i| format!("a{i}: &a{i} [*a{}]\n", i - 1))
        .collect();
    let (_, errors) = errs(&format!("a0: &a0 []\n{chain}"), Format::Yaml);
    assert_eq!(errors[0].message, "nesting too deep");
}

/// A tiny deterministic PRNG (xorshift64*), so fuzzing needs no extra crate
/// and failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Spans must be slicable, so callers can always show the offending text.
fn check_spans(text: &str, node: &Node) {
    assert!(
        text.get(node.span.start..node.span.end).is_some(),
        "bad span {:?} in {text:?}",
        node.span
    );
    match &node.kind {
        Kind::Array(items) => items.iter().for_each(|item| check_spans(text, item)),
        Kind::Object(entries) => {
            for entry in entries {
                assert!(text.get(entry.key_span.start..entry.key_span.end).is_some());
                check_spans(text, &entry.value);
            }
        }
        _ => {}
    }
}

#[test]
fn fuzz_never_panics() {
    const SEEDS: &[&str] = &[
        "{\"openapi\": \"3.1.0\", \"paths\": {\"/a/{id}\": {\"get\": {\"responses\": {\"200\": {\"$ref\": \"#/x~1y\"}}}}}}",
        "// c\n{\"a\": [1, 2.5e-3, -0, true, null, \"\\uD83D\\uDE00\\n\"], /* b */ \"b\": {},}",
        "openapi: 3.1.0\npaths:\n  /a:\n    get:\n      responses:\n        200: {description: ok}\n",
        "a: &x [1, 'two', \"th\\u00e9\"]\nb: *x\nc: |\n  lit\n  eral\nd: >-\n  fold\n? complex\n: ~\n",
        "- !!str 1\n- [a, {b: c}]\n- \"é€😀\"\n--- \n...\n",
    ];
    const ALPHABET: &[u8] = b"{}[],:\"'\\/*-+.#&!|>?~ \n\t0123456789eEtrufalsn\xc3\xa9uDE8\r%@`";
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let formats = [Format::Json, Format::Jsonc, Format::Yaml];
    let mut runs = 0;
    for round in 0..3000 {
        let bytes: Vec<u8> = if round % 3 == 0 {
            // Pure noise from the characters that matter to the parsers.
            let len = rng.below(60);
            (0..len)
                .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                .collect()
        } else {
            // A real document with a few random edits: the interesting
            // inputs are mostly-valid ones.
            let mut bytes = SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len() + 1);
                match rng.below(4) {
                    0 => bytes.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    2 if at < bytes.len() => bytes[at] = ALPHABET[rng.below(ALPHABET.len())],
                    _ => bytes.truncate(at),
                }
            }
            bytes
        };
        let text = String::from_utf8_lossy(&bytes);
        for format in formats {
            let (node, errors) = parse(&text, format);
            runs += 1;
            assert!(node.is_some() || !errors.is_empty(), "{format:?} {text:?}");
            for error in &errors {
                assert!(
                    text.get(error.span.start..error.span.end).is_some(),
                    "{format:?} {text:?} {error:?}"
                );
                assert!(!error.message.is_empty());
            }
            if let Some(node) = node {
                check_spans(&text, &node);
                node.to_value();
            }
        }
    }
    assert_eq!(runs, 9000);
}
