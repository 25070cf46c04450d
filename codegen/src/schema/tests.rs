use serde_json::{Value, json};

use super::*;
use crate::source::parse;

/// Registers `text` as `doc.json` in a fresh folder (with `extra` files beside it) and bundles
/// the schema at `pointer`.
fn bundle_at(text: &str, pointer: &str, oas30: bool, extra: &[(&str, &str)]) -> Value {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("specgate-schema-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
    std::fs::create_dir_all(dir.join("schemas")).unwrap_or_else(|e| panic!("{e}"));
    for (name, content) in extra {
        std::fs::write(dir.join(name), content).unwrap_or_else(|e| panic!("{e}"));
    }
    let path = dir.join("doc.json");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    let mut files = Files::default();
    let mut diags = Diagnostics::default();
    let mut sources = Sources::default();
    let file = files.add("doc.json".into(), path, text.to_owned());
    let node = parse(text, Format::Json).0.unwrap_or_else(|| panic!("parse"));
    sources.insert(file, node.clone());
    let schema = node.pointer(pointer).unwrap_or_else(|| panic!("no {pointer}")).clone();
    let out = Bundler::new(&mut sources, &mut files, &mut diags, &dir, oas30).bundle(&schema, file);
    assert!(!diags.has_errors(), "{diags:?}");
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn doc(version: &str, schema: &Value) -> String {
    json!({
        "openapi": version,
        "components": {"schemas": {
            "Pet": {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}, "x-internal": true},
            "Node": {"type": "object", "properties": {"child": {"$ref": "#/components/schemas/Node"}}, "additionalProperties": false},
        }},
        "s": schema,
    })
    .to_string()
}

#[test]
fn both_versions_validate_as_their_spec_says() {
    // (version, schema, instance, valid)
    let table: Vec<(&str, Value, Value, bool)> = vec![
        ("3.0.3", json!({"type": "string", "nullable": true}), json!(null), true),
        ("3.0.3", json!({"type": "string"}), json!(null), false),
        ("3.0.3", json!({"type": "string", "enum": ["a"], "nullable": true}), json!(null), true),
        ("3.0.3", json!({"type": "string", "enum": ["a"], "nullable": true}), json!("b"), false),
        ("3.0.3", json!({"allOf": [{"$ref": "#/components/schemas/Pet"}], "nullable": true}), json!(null), true),
        ("3.0.3", json!({"allOf": [{"$ref": "#/components/schemas/Pet"}], "nullable": true}), json!({}), false),
        ("3.0.3", json!({"type": "integer", "minimum": 5, "exclusiveMinimum": true}), json!(5), false),
        ("3.0.3", json!({"type": "integer", "minimum": 5, "exclusiveMinimum": true}), json!(6), true),
        ("3.0.3", json!({"type": "integer", "maximum": 5, "exclusiveMaximum": true}), json!(5), false),
        ("3.0.3", json!({"type": "integer", "minimum": 5, "exclusiveMinimum": false}), json!(5), true),
        ("3.0.3", json!({"type": "object", "properties": {"example": {"type": "integer"}}, "example": {"example": "x"}, "x-note": 1}), json!({"example": "s"}), false),
        ("3.0.3", json!({"$ref": "#/components/schemas/Pet", "description": "siblings ignored"}), json!({"id": 1}), true),
        ("3.0.3", json!({"$ref": "#/components/schemas/Pet"}), json!({}), false),
        ("3.0.3", json!({"$ref": "#/components/schemas/Node"}), json!({"child": {"child": {}}}), true),
        ("3.0.3", json!({"$ref": "#/components/schemas/Node"}), json!({"child": {"child": 5}}), false),
        ("3.0.3", json!({"type": "string", "format": "date"}), json!("2024-13-01"), false),
        ("3.1.0", json!({"type": ["string", "null"]}), json!(null), true),
        ("3.1.0", json!({"type": "integer", "exclusiveMinimum": 5}), json!(5), false),
        ("3.1.0", json!({"type": "integer", "exclusiveMinimum": 5}), json!(6), true),
        ("3.1.0", json!({"$ref": "#/components/schemas/Pet", "properties": {"id": {"maximum": 3}}}), json!({"id": 4}), false),
        ("3.1.0", json!({"const": 3}), json!(3), true),
        ("3.1.0", json!({"prefixItems": [{"type": "integer"}], "items": false}), json!([1, 2]), false),
        ("3.1.0", json!({"type": "object", "properties": {"n": {"type": "string"}}, "examples": [{"n": 1}]}), json!({"n": "x"}), true),
        ("3.1.0", json!({"$ref": "#/components/schemas/Node"}), json!({"child": {"other": 1}}), false),
    ];
    for (version, schema, instance, valid) in table {
        let bundled = bundle_at(&doc(version, &schema), "/s", version.starts_with("3.0"), &[]);
        let validator = jsonschema::options().should_validate_formats(true).build(&bundled).unwrap_or_else(|e| panic!("{schema}: {e}"));
        assert_eq!(validator.is_valid(&instance), valid, "{version} {schema} with {instance}; bundled {bundled}");
    }
}

#[test]
fn external_files_and_their_own_refs_are_bundled() {
    let pet = r##"{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "required": ["tag"], "properties": {"tag": {"$ref": "#/definitions/Tag"}}, "definitions": {"Tag": {"type": "string", "minLength": 2}}}"##;
    let text = json!({"openapi": "3.0.0", "s": {"type": "array", "items": {"$ref": "./schemas/pet.json"}}}).to_string();
    let bundled = bundle_at(&text, "/s", true, &[("schemas/pet.json", pet)]);
    assert_eq!(bundled["items"]["$ref"], "#/$defs/pet");
    assert_eq!(bundled["$defs"]["pet"]["properties"]["tag"]["$ref"], "#/$defs/Tag");
    let v = jsonschema::validator_for(&bundled).unwrap_or_else(|e| panic!("{e}"));
    assert!(v.is_valid(&json!([{"tag": "ab"}])));
    assert!(!v.is_valid(&json!([{"tag": "a"}])));
}

#[test]
fn conversion_keeps_numeric_exclusive_bounds() {
    let converted = convert_30(json!({"exclusiveMinimum": 3, "minimum": 1}).as_object().cloned().unwrap_or_default());
    assert_eq!(converted, json!({"exclusiveMinimum": 3, "minimum": 1}));
    let converted = convert_30(json!({"exclusiveMaximum": true}).as_object().cloned().unwrap_or_default());
    assert_eq!(converted, json!({}));
}

#[test]
fn simple_parameter_schemas_become_const_data() {
    let ParamSchema::Simple(s) = classify(&json!({"type": "integer", "minimum": 1, "maximum": 100, "description": "page"})) else { panic!("simple") };
    assert_eq!((s.ty, s.minimum, s.maximum), ("Integer", Some(1.0), Some(100.0)));
    let ParamSchema::Array { items, max_items, .. } = classify(&json!({"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 3})) else { panic!("array") };
    assert_eq!((items.enumeration.clone(), max_items), (vec!["a".to_owned(), "b".to_owned()], Some(3)));
    assert_eq!(classify(&json!({})), ParamSchema::Any);
    assert!(matches!(classify(&json!({"type": "object", "properties": {}})), ParamSchema::Json { shape: "Object", .. }));
    // Look-ahead is beyond the `regex` crate: jsonschema checks it.
    assert!(matches!(classify(&json!({"type": "string", "pattern": "^(?!x)"})), ParamSchema::Json { shape: "Scalar", .. }));
    // A 3.0 nullable type became a type array: not simple.
    assert!(matches!(classify(&json!({"type": ["integer", "null"]})), ParamSchema::Json { .. }));
}
