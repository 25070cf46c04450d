//! `docs/reference.md`: every built-in policy and its options, written from the same typed
//! definitions the generator checks projects against (`catalog`), so the page cannot drift
//! from what `specgate validate` accepts. A test compares the checked-in page with this text.

use std::fmt::Write as _;

use crate::catalog::{BUILTINS, Builtin, CORS_FIELDS, NOT_YET, OptSpec, Side};

fn anchor(export: &str) -> String {
    export.to_ascii_lowercase()
}

fn options_table(out: &mut String, options: &[OptSpec]) {
    if options.is_empty() {
        out.push_str("No options.\n\n");
        return;
    }
    out.push_str("| Option | Type | Required | What it does |\n|---|---|---|---|\n");
    for o in options {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            o.name,
            o.ty.describe().replace('|', "\\|"),
            if o.required { "yes" } else { "no" },
            o.doc.replace('|', "\\|")
        );
    }
    out.push('\n');
}

fn policy(out: &mut String, b: &Builtin) {
    let side = if b.side == Side::Inbound { "inbound" } else { "outbound" };
    let _ = writeln!(out, "### {}\n", b.export);
    let _ = writeln!(out, "`policyType`: `{}` · {side} · runtime type `specgate_runtime::policies::{}`\n", b.policy_type, b.rust_type);
    options_table(out, b.options);
    if !b.one_of.is_empty() {
        let _ = writeln!(out, "At least one of: {}.\n", b.one_of.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>().join(", "));
    }
}

/// The page's text.
pub fn markdown() -> String {
    let mut out = String::new();
    out.push_str("<!-- @generated from codegen/src/catalog.rs by codegen/src/reference.rs; do not edit.\n");
    out.push_str("     `UPDATE_SNAPSHOTS=1 cargo test -p specgate --test reference` rewrites it. -->\n\n");
    out.push_str("# Policy reference\n\n");
    out.push_str(
        "Every built-in policy specgate implements, with the options `specgate validate` checks (unknown options \
         are reported with their position; `$env(NAME)` may stand for any string value). A policy is declared in \
         `config/policies.json` with `\"handler\": {\"export\": \"<export>\", \"module\": \"$import(@zuplo/runtime)\", \"options\": {...}}` \
         and named in a route's `x-zuplo-route.policies.inbound` or `.outbound`.\n\n",
    );
    for (title, side) in [("Inbound policies", Side::Inbound), ("Outbound policies", Side::Outbound)] {
        let _ = writeln!(out, "{title}: {}\n", {
            BUILTINS
                .iter()
                .filter(|b| b.side == side)
                .map(|b| format!("[{}](#{})", b.export, anchor(b.export)))
                .collect::<Vec<_>>()
                .join(", ")
        });
    }
    out.push_str("## Composite policies\n\n");
    out.push_str(
        "`CompositeInboundPolicy` and `CompositeOutboundPolicy` take one option, `policies`: an array of policy \
         names run in order in place of the composite (composites may nest; cycles are an error).\n\n",
    );
    for (title, side) in [("Inbound", Side::Inbound), ("Outbound", Side::Outbound)] {
        let _ = writeln!(out, "## {title}\n");
        for b in BUILTINS.iter().filter(|b| b.side == side) {
            policy(&mut out, b);
        }
    }
    out.push_str("## CORS policies\n\n");
    out.push_str(
        "A route's `corsPolicy` is `none` (the default: no CORS headers, the upstream's are removed), \
         `anything-goes`, or the `name` of an entry of `corsPolicies` in `config/policies.json` with these fields:\n\n",
    );
    options_table(&mut out, CORS_FIELDS);
    if !NOT_YET.is_empty() {
        out.push_str("## Not supported yet\n\n");
        out.push_str("These Zuplo built-ins are reported as not supported by `specgate validate` (with the routes that use them in its porting report):\n\n");
        for n in NOT_YET {
            let _ = writeln!(out, "- `{n}`");
        }
        out.push('\n');
    }
    out
}
