//! `docs/reference.md`: every built-in handler and policy with its options, written from the same typed
//! definitions the generator checks projects against (`catalog`), so the page cannot drift
//! from what `specgate validate` accepts. A test compares the checked-in page with this text.

use std::fmt::Write as _;

use crate::catalog::{BUILTINS, Builtin, CORS_FIELDS, HANDLERS, HandlerOpt, HandlerSpec, NOT_YET, OptSpec, Side, UPSTREAM_OPTIONS};

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

fn handler_options_table(out: &mut String, options: &[HandlerOpt]) {
    out.push_str("| Option | Type | Default | What it does |\n|---|---|---|---|\n");
    for o in options {
        let _ = writeln!(out, "| `{}` | {} | {} | {} |", o.name, o.ty.replace('|', "\\|"), o.default.replace('|', "\\|"), o.doc.replace('|', "\\|"));
    }
    out.push('\n');
}

fn handler(out: &mut String, h: &HandlerSpec) {
    let _ = writeln!(out, "### {}\n", h.export);
    let _ = writeln!(out, "{}\n", h.summary);
    handler_options_table(out, h.options);
    if h.upstream_options {
        out.push_str("Also the [upstream options](#upstream-options).\n\n");
    }
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
    out.push_str("# Handler and policy reference\n\n");
    out.push_str(
        "Every built-in handler and policy specgate implements, with the options `specgate validate` checks. \
         Unknown options are reported with their position.\n\n",
    );
    out.push_str("## Handlers\n\n");
    out.push_str(
        "A route's handler is `x-zuplo-route.handler`: `{\"export\": \"<export>\", \"module\": \"$import(@zuplo/runtime)\", \"options\": {...}}` \
         (or a custom handler from `$import(./modules/...)`). Template strings are JavaScript-style template literals \
         compiled at generation time: `${params.x}`, `${query.x}`, `${headers.get(\"x\")}`, `${env.X}`, `${context.custom.x}`, \
         `${request.user.sub}`, `${url}`, `${host}`, `${pathname}`, `${search}`, `${method}`, `encodeURIComponent(...)`, and \
         the others listed in the README.\n\n",
    );
    for h in HANDLERS {
        handler(&mut out, h);
    }
    out.push_str("### Upstream options\n\n");
    out.push_str(
        "specgate extensions taken by `urlForwardHandler` and `urlRewriteHandler`. A route that sets none of them \
         takes the plain forward path and pays nothing for them.\n\n",
    );
    handler_options_table(&mut out, UPSTREAM_OPTIONS);
    out.push_str("## Policies\n\n");
    out.push_str(
        "`$env(NAME)` may stand for any string value of a policy option. A policy is declared in \
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
