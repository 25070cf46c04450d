//! `specgate new`: a starter project that generates, builds and runs at once. Its files are
//! the example project `specs/starter`, so the starter is built and tested with the others.

use std::path::Path;

/// The starter's files: relative path and content.
pub const STARTER: &[(&str, &str)] = &[
    ("config/routes.oas.json", include_str!("../../specs/starter/config/routes.oas.json")),
    ("config/policies.json", include_str!("../../specs/starter/config/policies.json")),
    ("modules/greeting.rs", include_str!("../../specs/starter/modules/greeting.rs")),
    ("zuplo.jsonc", include_str!("../../specs/starter/zuplo.jsonc")),
    (".env", include_str!("../../specs/starter/.env")),
    ("README.md", include_str!("../../specs/starter/README.md")),
    (".gitignore", "/gateway/\n/.specgate/\n"),
];

/// Writes the starter into `dir`, which must not exist or be empty (unless `force`).
/// Returns the files written.
pub fn new_project(dir: &Path, force: bool) -> Result<Vec<&'static str>, String> {
    if !force
        && let Ok(mut entries) = std::fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(format!("{} is not empty; choose a new folder (or --force to write the starter files into it)", dir.display()));
    }
    let mut written = Vec::new();
    for (rel, text) in STARTER {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(*rel);
    }
    Ok(written)
}
