//! Cost of request body validation per KB: parsing a JSON body and checking it against a
//! realistic order schema (nested objects, arrays, `$ref`s, patterns, formats), for 1 KB,
//! 16 KB and 64 KB bodies.
//!
//! Run with `cargo bench -p specgate-runtime --bench validation`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use specgate_runtime::validation::JsonValidator;

/// An order schema as the generator bundles it (OpenAPI 3.0 converted to 2020-12).
const SCHEMA: &str = r##"{
  "type": "object",
  "required": ["id", "customer", "items", "createdAt"],
  "additionalProperties": false,
  "properties": {
    "id": {"type": "string", "format": "uuid"},
    "customer": {"$ref": "#/$defs/Customer"},
    "createdAt": {"type": "string", "format": "date-time"},
    "note": {"type": ["string", "null"], "maxLength": 500},
    "items": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/Item"}}
  },
  "$defs": {
    "Customer": {
      "type": "object",
      "required": ["email", "name"],
      "properties": {
        "email": {"type": "string", "format": "email"},
        "name": {"type": "string", "minLength": 1, "maxLength": 80},
        "address": {"$ref": "#/$defs/Address"}
      }
    },
    "Address": {
      "type": "object",
      "required": ["street", "city", "country"],
      "properties": {
        "street": {"type": "string"},
        "city": {"type": "string"},
        "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
        "country": {"type": "string", "enum": ["DE", "FR", "US", "GB", "NL"]}
      }
    },
    "Item": {
      "type": "object",
      "required": ["sku", "quantity", "price"],
      "additionalProperties": false,
      "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"},
        "quantity": {"type": "integer", "exclusiveMinimum": 0, "maximum": 1000},
        "price": {"type": "number", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true}
      }
    }
  }
}"##;

/// A valid order of about `kb` kilobytes (items added until the size is reached).
fn order(kb: usize) -> Vec<u8> {
    let head = r#"{"id":"123e4567-e89b-12d3-a456-426614174000","customer":{"email":"ada@example.com","name":"Ada Lovelace","address":{"street":"1 Analytical Way","city":"London","zip":"12345","country":"GB"}},"createdAt":"2024-05-01T10:00:00Z","note":null,"items":["#;
    let mut out = head.to_owned();
    let mut i = 0;
    while out.len() < kb * 1024 - 80 {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(r#"{{"sku":"ABC-{i}","quantity":{},"price":{}.5,"tags":["a","b"]}}"#, i % 100 + 1, i % 50));
        i += 1;
    }
    out.push_str("]}");
    out.into_bytes()
}

fn bench(c: &mut Criterion) {
    let validator = JsonValidator::compile(SCHEMA).unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("validate_json_body");
    for kb in [1usize, 16, 64] {
        let body = order(kb);
        let mut check = Vec::new();
        validator.check_body(&body, &mut check);
        assert!(check.is_empty(), "the benchmark body must be valid: {check:?}");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("parse+validate", format!("{kb}KB")), &body, |b, body| {
            b.iter(|| {
                let mut out = Vec::new();
                validator.check_body(black_box(body), &mut out);
                black_box(out)
            })
        });
        group.bench_with_input(BenchmarkId::new("parse only", format!("{kb}KB")), &body, |b, body| {
            b.iter(|| black_box(serde_json::from_slice::<serde_json::Value>(black_box(body)).is_ok()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
