//! docs/reference.md is exactly what the option catalog says (`UPDATE_SNAPSHOTS=1` rewrites it).

use std::path::Path;

#[test]
fn reference_page_matches_the_catalog() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reference.md");
    let text = specgate::reference::markdown();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &text).expect("write docs/reference.md");
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(on_disk == text, "docs/reference.md differs from the catalog: run UPDATE_SNAPSHOTS=1 cargo test -p specgate --test reference");
    // Every built-in and every one of its options is on the page.
    for b in specgate::catalog::BUILTINS {
        assert!(text.contains(&format!("### {}\n", b.export)), "{}", b.export);
        for o in b.options {
            assert!(text.contains(&format!("| `{}` |", o.name)), "{}.{}", b.export, o.name);
        }
    }
}
