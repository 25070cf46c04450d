//! Rust code emission: the route table, the gateway struct, one function per route.
//!
//! Output is built with `quote!`, checked with `syn::parse2` (invalid output is a generator
//! bug caught at once) and printed with prettyplease. Generated code names everything through
//! `::specgate_runtime::...` so nothing collides with names from the spec.

use std::collections::BTreeMap;

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote};

use crate::model::{Handler, Project, Route};
use crate::modules::Role;
use crate::policies::PolicyKind;
use crate::pattern::{Matcher, PartDef, SegDef};
use crate::template::{Expr, Part, Place, Template, UrlPiece};

/// Routes per module of the generated crate. A change to one route recompiles its module (and
/// the small dispatching root) rather than one function per route in a single unit, and no
/// generated function grows with the number of routes beyond a match arm per module.
pub const ROUTES_PER_MODULE: usize = 64;

/// The generated `src/routes.rs` and its modules `src/routes/part_N.rs` as formatted Rust
/// (without the file header): `(path relative to src/, content)`.
pub fn routes_rs(project: &Project) -> Result<Vec<(String, String)>, String> {
    routes_rs_in(project, "")
}

/// The module of route `index`.
fn part_ident(index: usize) -> Ident {
    format_ident!("part_{}", index / ROUTES_PER_MODULE)
}

/// [`routes_rs`] for a crate whose data files (`openapi.json`) lie in `data_dir` under the
/// crate root (`/gateways/NAME` in a build of several projects, `""` otherwise).
pub fn routes_rs_in(project: &Project, data_dir: &str) -> Result<Vec<(String, String)>, String> {
    let env = EnvFields::new(project);
    let pols = PolicyFields::new(project);
    let route_specs = project.routes.iter().map(route_spec);
    let route_infos = project.routes.iter().enumerate().map(|(i, r)| route_info(i, r));
    let parts_count = project.routes.len().div_ceil(ROUTES_PER_MODULE);
    let mut parts: Vec<RoutesModule> = (0..parts_count).map(|_| RoutesModule::default()).collect();
    for (i, route) in project.routes.iter().enumerate() {
        let (f, arm, stat) = route_fn(i, route, &env, &pols, project, data_dir);
        let part = &mut parts[i / ROUTES_PER_MODULE];
        part.methods.push(f);
        part.arms.push(arm);
        if let Some(s) = stat {
            part.statics.push(s);
        }
    }
    for f in &pols.fields {
        if let Some(r) = f.route {
            parts[r / ROUTES_PER_MODULE].policies.push(f);
        }
    }
    for (ident, r, items) in &pols.example_consts {
        parts[r / ROUTES_PER_MODULE].consts.push(example_const(ident, items));
    }
    for (r, (ident, op)) in &pols.operation_statics {
        parts[r / ROUTES_PER_MODULE].consts.push(operation_static(ident, op));
    }
    let stored: Vec<&(Ident, String)> = env.fields.values().filter(|(_, var)| env.per_request.contains(var)).collect();
    let env_decls = stored.iter().map(|(field, var)| {
        let doc = format!("`{var}`");
        quote! { #[doc = #doc] #field: ::std::sync::Arc<str>, }
    });
    let env_value_decls = env.fields.values().map(|(field, var)| {
        let doc = format!("`{var}`");
        quote! { #[doc = #doc] #field: ::std::sync::Arc<str>, }
    });
    let env_reads = env.fields.values().map(|(field, var)| quote! { #field: env.required(#var), });
    let env_names = stored.iter().map(|(f, _)| quote! { #f: e.#f });
    let name = &project.name;
    let shared_policies: Vec<&PolicyField> = pols.fields.iter().filter(|f| f.route.is_none()).collect();
    let policy_decls = shared_policies.iter().map(|f| {
        let (field, ty, doc) = (&f.field, &f.ty, &f.doc);
        quote! { #[doc = #doc] #field: #ty, }
    });
    let policy_inits = shared_policies.iter().map(|f| {
        let (field, init) = (&f.field, &f.init);
        quote! { let #field = #init; }
    });
    let policy_names = shared_policies.iter().map(|f| {
        let field = &f.field;
        quote! { #field: #field? }
    });
    let cors = cors_fields(project);
    let cors_decls = cors.iter().map(|c| {
        let (field, doc) = (&c.field, &c.doc);
        quote! { #[doc = #doc] #field: ::specgate_runtime::cors::CorsPolicy, }
    });
    let cors_inits = cors.iter().map(|c| {
        let (field, init) = (&c.field, &c.init);
        quote! { let #field = #init; }
    });
    let cors_names = cors.iter().map(|c| {
        let field = &c.field;
        if c.fallible { quote! { #field: #field? } } else { quote! { #field } }
    });
    let ups = UpstreamFields::new(project, &env);
    let pool_decls = ups.pools.iter().map(|(field, _, doc)| quote! { #[doc = #doc] #field: ::std::sync::Arc<::specgate_runtime::upstreams::UpstreamPool>, });
    let pool_inits = ups.pools.iter().map(|(field, init, _)| quote! { let #field = #init; });
    let pool_names: Vec<&Ident> = ups.pools.iter().map(|(f, _, _)| f).collect();
    let route_up_decls = ups.routes.iter().map(|(field, _, doc)| quote! { #[doc = #doc] #field: ::specgate_runtime::upstreams::RouteUpstream, });
    let route_up_inits = ups.routes.iter().map(|(field, init, _)| quote! { let #field = #init; });
    let route_up_names: Vec<&Ident> = ups.routes.iter().map(|(f, _, _)| f).collect();
    // Upstream URLs fixed at start-up, for the readiness check.
    let url_parts: Vec<Ident> =
        parts.iter().enumerate().filter(|(_, p)| p.statics.iter().any(|s| matches!(s.kind, StaticKind::Url))).map(|(k, _)| format_ident!("part_{}", k)).collect();
    let upstreams_fn = if url_parts.is_empty() && pool_names.is_empty() {
        quote! {}
    } else {
        quote! {
            fn upstream_urls(&'static self) -> ::std::vec::Vec<&'static str> {
                let mut urls = ::std::vec::Vec::new();
                #(self.#url_parts.upstream_urls(&mut urls);)*
                #(urls.extend(self.#pool_names.urls());)*
                urls
            }
        }
    };
    let route_upstreams_fn = if route_up_names.is_empty() {
        quote! {}
    } else {
        quote! {
            fn route_upstreams(&'static self) -> ::std::vec::Vec<&'static ::specgate_runtime::upstreams::RouteUpstream> {
                vec![#(&self.#route_up_names),*]
            }
        }
    };
    let cors_fn = if cors.is_empty() {
        quote! {}
    } else {
        let arms = cors.iter().map(|c| {
            let field = &c.field;
            let pats = route_runs(&c.routes).into_iter().map(|(a, b)| if a == b { quote! { #a } } else { quote! { #a..=#b } });
            quote! { #(#pats)|* => Some(&self.#field), }
        });
        quote! {
            fn cors(&'static self, route: usize) -> Option<&'static ::specgate_runtime::cors::CorsPolicy> {
                match route {
                    #(#arms)*
                    _ => None,
                }
            }
        }
    };
    let (hooks_ty, has_hooks, hooks_fn) = match &project.hooks {
        Some(m) => {
            let path: syn::Path = syn::parse_str(&m.rust_path).map_err(|e| e.to_string())?;
            (quote! { #path::Hooks }, true, quote! { #path::hooks() })
        }
        None => (quote! { ::specgate_runtime::hooks::NoHooks }, false, quote! { ::specgate_runtime::hooks::NoHooks }),
    };
    // Only gateways with a WebSocket route need connections that can be upgraded.
    let websockets = if project.routes.iter().any(|r| matches!(r.handler, Handler::WebSocket { .. })) {
        quote! { const WEBSOCKETS: bool = true; }
    } else {
        quote! {}
    };
    let part_idents: Vec<Ident> = (0..parts.len()).map(|k| format_ident!("part_{}", k)).collect();
    // Modules whose routes keep start-up state (URLs, per-route policies).
    let stateful: Vec<(usize, &Ident)> = part_idents.iter().enumerate().filter(|(k, _)| parts[*k].has_state()).collect();
    let part_decls = stateful.iter().map(|&(k, ident)| {
        let doc = format!(" routes {} to {}", k * ROUTES_PER_MODULE, ((k + 1) * ROUTES_PER_MODULE).min(project.routes.len()) - 1);
        quote! { #[doc = #doc] #ident: #ident::Part, }
    });
    let part_inits = stateful.iter().map(|(_, ident)| quote! { let #ident = #ident::Part::configure(env, &e); });
    let part_names = stateful.iter().map(|(_, ident)| quote! { #ident: #ident? });
    let unused_env = if stateful.is_empty() { quote! { let _ = &e; } } else { quote! {} };
    let dispatch = part_idents.iter().enumerate().map(|(k, ident)| {
        let (first, last) = (k * ROUTES_PER_MODULE, ((k + 1) * ROUTES_PER_MODULE).min(project.routes.len()) - 1);
        let handle = format_ident!("handle_{}", ident);
        quote! { #first..=#last => self.#handle(route, req, cx).await, }
    });

    let root = quote! {
        use ::specgate_runtime::context::RouteInfo;
        use ::specgate_runtime::handlers;
        #[allow(unused_imports)]
        use ::specgate_runtime::router::{Part, Pattern, RouteSpec, Seg};
        use ::specgate_runtime::{Context, Problem, Request, Response};

        #(mod #part_idents;)*

        /// The gateway's start-up state: environment values, upstream sets, policies shared
        /// by routes, and the state of each module of routes.
        pub struct Gateway {
            #(#env_decls)*
            #(#pool_decls)*
            #(#route_up_decls)*
            #(#policy_decls)*
            #(#cors_decls)*
            #(#part_decls)*
        }

        /// Environment values read at start-up.
        struct Env {
            #(#env_value_decls)*
        }

        impl ::specgate_runtime::Gateway for Gateway {
            const NAME: &'static str = #name;
            const ROUTES: &'static [RouteSpec] = &[#(#route_specs),*];
            const ROUTE_INFO: &'static [RouteInfo] = &[#(#route_infos),*];
            type Hooks = #hooks_ty;
            const HAS_HOOKS: bool = #has_hooks;
            #websockets

            fn configure(env: &mut ::specgate_runtime::env::Reader<'_>) -> Option<Self> {
                let e = Env { #(#env_reads)* };
                #(#part_inits)*
                #unused_env
                #(#pool_inits)*
                #(#route_up_inits)*
                #(#policy_inits)*
                #(#cors_inits)*
                Some(Gateway { #(#env_names,)* #(#pool_names,)* #(#route_up_names,)* #(#policy_names,)* #(#cors_names,)* #(#part_names,)* })
            }

            fn hooks() -> Self::Hooks {
                #hooks_fn
            }

            #cors_fn

            #upstreams_fn

            #route_upstreams_fn

            async fn handle(&'static self, route: usize, req: Request, cx: &mut Context) -> Response {
                match route {
                    #(#dispatch)*
                    _ => handlers::template_failed(Problem::internal("unknown route"), cx),
                }
            }
        }
    };
    let mut files = vec![("routes.rs".to_owned(), format_file(root)?)];
    for (k, part) in parts.into_iter().enumerate() {
        files.push((format!("routes/part_{k}.rs"), format_file(part_file(k, part, project.routes.len()))?));
    }
    Ok(files)
}

/// What one module of routes holds.
#[derive(Default)]
struct RoutesModule<'p> {
    methods: Vec<TokenStream>,
    arms: Vec<TokenStream>,
    statics: Vec<StaticValue>,
    policies: Vec<&'p PolicyField>,
    consts: Vec<TokenStream>,
}

impl RoutesModule<'_> {
    fn has_state(&self) -> bool {
        !self.statics.is_empty() || !self.policies.is_empty()
    }
}

/// `src/routes/part_K.rs`: the start-up state of routes K·64 to K·64+63, their functions and
/// the dispatch among them.
fn part_file(k: usize, part: RoutesModule<'_>, routes: usize) -> TokenStream {
    let (first, last) = (k * ROUTES_PER_MODULE, ((k + 1) * ROUTES_PER_MODULE).min(routes) - 1);
    let doc = format!(" Routes {first} to {last}: their start-up state and request handling.");
    let struct_doc = format!(" The start-up state of routes {first} to {last}.");
    let static_decls = part.statics.iter().map(|s| {
        let (field, doc) = (&s.field, &s.doc);
        quote! { #[doc = #doc] #field: ::std::string::String, }
    });
    let static_inits = part.statics.iter().map(|s| {
        let (field, body, label) = (&s.field, &s.init, &s.label);
        let check = match s.kind {
            StaticKind::Url => quote! { env.check_upstream_url(#label, &#field); },
            StaticKind::Location => quote! { env.check_header_value(#label, &#field); },
            StaticKind::Path => quote! {},
        };
        quote! { let #field = { #body }; #check }
    });
    let static_names = part.statics.iter().map(|s| s.field.clone());
    let policy_decls = part.policies.iter().map(|f| {
        let (field, ty, doc) = (&f.field, &f.ty, &f.doc);
        quote! { #[doc = #doc] #field: #ty, }
    });
    let policy_inits = part.policies.iter().map(|f| {
        let (field, init) = (&f.field, &f.init);
        quote! { let #field = #init; }
    });
    let policy_names = part.policies.iter().map(|f| {
        let field = &f.field;
        quote! { #field: #field? }
    });
    let url_fields: Vec<&Ident> = part.statics.iter().filter(|s| matches!(s.kind, StaticKind::Url)).map(|s| &s.field).collect();
    let urls_fn = if url_fields.is_empty() {
        quote! {}
    } else {
        quote! {
            /// Upstream URLs fixed at start-up, for the readiness check.
            pub(super) fn upstream_urls(&'static self, urls: &mut ::std::vec::Vec<&'static str>) {
                #(urls.push(self.#url_fields.as_str());)*
            }
        }
    };
    let dispatch = format_ident!("handle_part_{}", k);
    let state = if part.has_state() {
        quote! {
            #[doc = #struct_doc]
            pub(super) struct Part {
                #(#static_decls)*
                #(#policy_decls)*
            }

            impl Part {
                #[allow(unused_variables)]
                pub(super) fn configure(env: &mut ::specgate_runtime::env::Reader<'_>, e: &super::Env) -> Option<Self> {
                    #(#static_inits)*
                    #(#policy_inits)*
                    Some(Part { #(#static_names,)* #(#policy_names,)* })
                }

                #urls_fn
            }
        }
    } else {
        quote! {}
    };
    let dispatch_doc = format!(" Handles a request to one of routes {first} to {last}.");
    let (consts, methods, arms) = (&part.consts, &part.methods, &part.arms);
    quote! {
        #![doc = #doc]

        #[allow(unused_imports)]
        use ::specgate_runtime::handlers::{self, ForwardOptions};
        #[allow(unused_imports)]
        use ::specgate_runtime::template as t;
        #[allow(unused_imports)]
        use ::specgate_runtime::policy::{Inbound as _, Outbound as _};
        use ::specgate_runtime::{Context, Problem, Request, Response};

        use super::Gateway;

        #(#consts)*

        #state

        impl Gateway {
            #[doc = #dispatch_doc]
            pub(super) async fn #dispatch(&'static self, route: usize, req: Request, cx: &mut Context) -> Response {
                match route {
                    #(#arms)*
                    _ => handlers::template_failed(Problem::internal("unknown route"), cx),
                }
            }

            #(#methods)*
        }
    }
}

fn example_const(ident: &Ident, items: &[crate::model::Example]) -> TokenStream {
    let items = items.iter().map(|e| {
        let (status, ct, name, body) = (e.status, &e.content_type, &e.name, &e.body);
        quote! { ::specgate_runtime::policies::MockExample { status: #status, content_type: #ct, name: #name, body: #body } }
    });
    quote! { const #ident: &[::specgate_runtime::policies::MockExample] = &[#(#items),*]; }
}

/// Parses and pretty-prints a token stream as a file.
pub fn format_file(tokens: TokenStream) -> Result<String, String> {
    let parsed: syn::File = syn::parse2(tokens).map_err(|e| format!("generated code does not parse: {e}"))?;
    Ok(prettyplease::unparse(&parsed))
}

/// Environment variables as struct fields, in name order.
struct EnvFields {
    fields: BTreeMap<String, (Ident, String)>,
    /// Variables read by templates rendered per request (kept in the gateway struct); the
    /// others only feed values fixed at start-up.
    per_request: std::collections::BTreeSet<String>,
}

impl EnvFields {
    fn new(project: &Project) -> Self {
        let mut fields = BTreeMap::new();
        let mut used = std::collections::BTreeSet::new();
        for var in crate::project::env_vars(project) {
            let mut base = format!("env_{}", sanitize(&var));
            while !used.insert(base.clone()) {
                base.push('_');
            }
            fields.insert(var.clone(), (Ident::new(&base, Span::call_site()), var));
        }
        let per_request = project
            .routes
            .iter()
            .flat_map(|r| r.handler.templates())
            .filter(|t| !t.is_static())
            .flat_map(|t| t.env_vars().into_iter().map(str::to_owned))
            .collect();
        EnvFields { fields, per_request }
    }

    fn field(&self, var: &str) -> TokenStream {
        match self.fields.get(var) {
            Some((f, _)) => quote! { #f },
            None => quote! { compile_error!("unknown environment variable") },
        }
    }
}

/// The field holding route `index`'s upstream settings.
fn route_upstream_field(index: usize) -> Ident {
    format_ident!("route_{}_upstream", index)
}

/// Upstream sets (one per distinct list, shared by the routes listing it) and the upstream
/// settings of every route that has some: `(field, init, doc)`.
struct UpstreamFields {
    pools: Vec<(Ident, TokenStream, String)>,
    routes: Vec<(Ident, TokenStream, String)>,
}

impl UpstreamFields {
    fn new(project: &Project, env: &EnvFields) -> Self {
        let mut out = UpstreamFields { pools: Vec::new(), routes: Vec::new() };
        let mut by_key: BTreeMap<String, Ident> = BTreeMap::new();
        for (index, route) in project.routes.iter().enumerate() {
            let upstream = match &route.handler {
                Handler::Forward { upstream, .. } | Handler::Rewrite { upstream, .. } if !upstream.is_plain() => upstream,
                _ => continue,
            };
            let label = route_label(route);
            let pool = upstream.pool_key().map(|key| {
                by_key
                    .entry(key)
                    .or_insert_with(|| {
                        let field = format_ident!("pool_{}", out.pools.len());
                        let init = pool_init(upstream, &label, env);
                        let doc = format!("upstreams of {label}");
                        out.pools.push((field.clone(), init, doc));
                        field
                    })
                    .clone()
            });
            let ms = |v: Option<u64>| match v {
                Some(ms) => quote! { Some(::std::time::Duration::from_millis(#ms)) },
                None => quote! { None },
            };
            let (timeout, connect_timeout) = (ms(upstream.timeout_ms), ms(upstream.connect_timeout_ms));
            let retry = match &upstream.retries {
                Some(r) => {
                    let (max, pct, backoff) = (r.max_retries, r.budget_percent, r.backoff_ms);
                    quote! {
                        Some(::specgate_runtime::upstreams::RetrySettings {
                            max_retries: #max,
                            budget_percent: #pct,
                            backoff: ::std::time::Duration::from_millis(#backoff),
                        })
                    }
                }
                None => quote! { None },
            };
            let pool = match pool {
                Some(p) => quote! { Some(::std::sync::Arc::clone(&#p)) },
                None => quote! { None },
            };
            let init = quote! {
                ::specgate_runtime::upstreams::RouteUpstream::new(
                    ::specgate_runtime::upstreams::RouteSettings { timeout: #timeout, connect_timeout: #connect_timeout, retry: #retry },
                    #pool,
                )
            };
            out.routes.push((route_upstream_field(index), init, format!("upstream settings of {label}")));
        }
        out
    }
}

/// Start-up construction of an upstream set: each URL rendered and checked, then the set.
fn pool_init(upstream: &crate::model::UpstreamOptions, label: &str, env: &EnvFields) -> TokenStream {
    let urls: Vec<Ident> = (0..upstream.upstreams.len()).map(|i| format_ident!("url_{}", i)).collect();
    let renders = upstream.upstreams.iter().zip(&urls).enumerate().map(|(i, (u, var))| {
        let render = static_render(&u.url, env);
        let what = format!("upstreams[{i}] of {label}");
        quote! {
            let #var = { #render };
            env.check_upstream_url(#what, &#var);
        }
    });
    let targets = upstream.upstreams.iter().zip(&urls).map(|(u, var)| {
        let weight = u.weight;
        quote! { ::specgate_runtime::upstreams::Target::new(#var, #weight) }
    });
    let ejection = match &upstream.ejection {
        Some(e) => {
            let (n, base, max) = (e.consecutive_failures, e.cooldown_ms, e.max_cooldown_ms);
            quote! {
                Some(::specgate_runtime::upstreams::Ejection {
                    consecutive_failures: #n,
                    cooldown: ::std::time::Duration::from_millis(#base),
                    max_cooldown: ::std::time::Duration::from_millis(#max),
                })
            }
        }
        None => quote! { None },
    };
    let health = match &upstream.health_check {
        Some(h) => {
            let (path, interval, timeout, unhealthy, healthy) = (&h.path, h.interval_ms, h.timeout_ms, h.unhealthy_threshold, h.healthy_threshold);
            quote! {
                Some(::specgate_runtime::upstreams::HealthCheck {
                    path: #path.to_owned(),
                    interval: ::std::time::Duration::from_millis(#interval),
                    timeout: ::std::time::Duration::from_millis(#timeout),
                    unhealthy_threshold: #unhealthy,
                    healthy_threshold: #healthy,
                })
            }
        }
        None => quote! { None },
    };
    quote! {
        {
            #(#renders)*
            let targets = vec![#(#targets),*];
            ::std::sync::Arc::new(::specgate_runtime::upstreams::UpstreamPool::new(#label, targets, #ejection, #health))
        }
    }
}

/// Lower snake case identifier text from anything.
pub fn sanitize(s: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase() && prev_lower {
                out.push('_');
            }
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            out.push(c.to_ascii_lowercase());
        } else {
            if !out.ends_with('_') {
                out.push('_');
            }
            prev_lower = false;
        }
    }
    let trimmed = out.trim_matches('_').to_owned();
    if trimmed.is_empty() { "x".to_owned() } else { trimmed }
}

fn route_spec(route: &Route) -> TokenStream {
    let method = &route.method;
    let params = route.parsed.params.iter().map(|p| p.name.as_str());
    let pattern = match &route.parsed.matcher {
        Matcher::Segments(segs) => {
            let segs = segs.iter().map(|s| match s {
                SegDef::Lit(l) => quote! { Seg::Lit(#l) },
                SegDef::Param => quote! { Seg::Param },
                SegDef::Rest => quote! { Seg::Rest },
                SegDef::Mixed(parts) => {
                    let parts = parts.iter().map(|p| match p {
                        PartDef::Lit(l) => quote! { Part::Lit(#l) },
                        PartDef::Param => quote! { Part::Param },
                    });
                    quote! { Seg::Mixed(&[#(#parts),*]) }
                }
            });
            quote! { Pattern::Segments(&[#(#segs),*]) }
        }
        Matcher::Regex { regex, prefix } => quote! { Pattern::Regex { regex: #regex, prefix: &[#(#prefix),*] } },
    };
    quote! { RouteSpec { method: #method, pattern: #pattern, params: &[#(#params),*] } }
}

fn route_label(route: &Route) -> String {
    route.operation_id.clone().unwrap_or_else(|| format!("{} {}", route.method, route.path))
}

fn route_info(index: usize, route: &Route) -> TokenStream {
    let method = &route.method;
    let path = &route.path;
    let label = route_label(route);
    quote! { RouteInfo { index: #index, method: #method, path: #path, label: #label } }
}

fn route_fn_name(index: usize, route: &Route) -> Ident {
    let base = match &route.operation_id {
        Some(id) => sanitize(id),
        None => sanitize(&format!("{} {}", route.method, route.path)),
    };
    format_ident!("route_{}_{}", index, base)
}

enum StaticKind {
    Url,
    Location,
    /// A path appended to an upstream of a set.
    Path,
}

struct StaticValue {
    field: Ident,
    doc: String,
    label: String,
    init: TokenStream,
    kind: StaticKind,
}

fn route_fn(index: usize, route: &Route, env: &EnvFields, pols: &PolicyFields, project: &Project, data_dir: &str) -> (TokenStream, TokenStream, Option<StaticValue>) {
    let name = route_fn_name(index, route);
    let doc = format!("`{} {}` ({})", route.method, route.path, route.handler.export());
    let part = part_ident(index);
    let label = route_label(route);
    let arm = quote! { #index => self.#name(req, cx).await, };
    let options = |forward_search: bool, follow_redirects: bool| {
        quote! { ForwardOptions { forward_search: #forward_search, follow_redirects: #follow_redirects } }
    };
    let render_or_return = |t: &Template| {
        let render = dynamic_render(t, env);
        quote! {
            match (|| -> ::std::result::Result<::std::string::String, Problem> { #render })() {
                Ok(u) => u,
                Err(p) => return handlers::template_failed(p, cx),
            }
        }
    };
    let mut stat = None;
    let handler = match &route.handler {
        Handler::Forward { base, forward_search, follow_redirects, upstream } => {
            let opts = options(*forward_search, *follow_redirects);
            let via = (!upstream.is_plain()).then(|| route_upstream_field(index));
            match (base, via) {
                (None, Some(via)) => quote! { handlers::url_forward_via(req, cx, "", &self.#via, #opts).await },
                (None, None) => quote! { handlers::template_failed(Problem::internal("no upstream"), cx) },
                (Some(base), via) if base.is_static() => {
                    let field = format_ident!("route_{}_base", index);
                    stat = Some(StaticValue {
                        field: field.clone(),
                        doc: format!("baseUrl of {label}"),
                        label: format!("baseUrl of {label}"),
                        init: static_render(base, env),
                        kind: StaticKind::Url,
                    });
                    match via {
                        Some(via) => quote! { handlers::url_forward_via(req, cx, &self.#part.#field, &self.#via, #opts).await },
                        None => quote! { handlers::url_forward(req, cx, &self.#part.#field, #opts).await },
                    }
                }
                (Some(base), via) => {
                    let r = render_or_return(base);
                    let call = match via {
                        Some(via) => quote! { handlers::url_forward_via(req, cx, &base, &self.#via, #opts).await },
                        None => quote! { handlers::url_forward(req, cx, &base, #opts).await },
                    };
                    quote! {
                        let base = #r;
                        #call
                    }
                }
            }
        }
        Handler::Rewrite { pattern, forward_search, follow_redirects, upstream } => {
            let opts = options(*forward_search, *follow_redirects);
            let via = (!upstream.is_plain()).then(|| route_upstream_field(index));
            let call = |url: TokenStream| match &via {
                Some(via) => quote! { handlers::url_rewrite_via(req, cx, #url, &self.#via, #opts).await },
                None => quote! { handlers::url_rewrite(req, cx, #url, #opts).await },
            };
            if pattern.is_static() {
                // With an upstream set the pattern is a path (checked at generation time).
                let path = !upstream.upstreams.is_empty();
                let field = format_ident!("route_{}_{}", index, if path { "path" } else { "url" });
                stat = Some(StaticValue {
                    field: field.clone(),
                    doc: format!("rewritePattern of {label}"),
                    label: format!("rewritePattern of {label}"),
                    init: static_render(pattern, env),
                    kind: if path { StaticKind::Path } else { StaticKind::Url },
                });
                call(quote! { self.#part.#field.clone() })
            } else {
                let r = render_or_return(pattern);
                let call = call(quote! { url });
                quote! {
                    let url = #r;
                    #call
                }
            }
        }
        Handler::Redirect { location, status } => {
            if location.is_static() {
                let field = format_ident!("route_{}_location", index);
                stat = Some(StaticValue {
                    field: field.clone(),
                    doc: format!("location of {label}"),
                    label: format!("location of {label}"),
                    init: static_render(location, env),
                    kind: StaticKind::Location,
                });
                quote! {
                    drop(req);
                    handlers::redirect(cx, &self.#part.#field, #status)
                }
            } else {
                let r = render_or_return(location);
                quote! {
                    let location = #r;
                    drop(req);
                    handlers::redirect(cx, &location, #status)
                }
            }
        }
        Handler::WebSocket { pattern } => {
            if pattern.is_static() {
                let field = format_ident!("route_{}_url", index);
                stat = Some(StaticValue {
                    field: field.clone(),
                    doc: format!("rewritePattern of {label}"),
                    label: format!("rewritePattern of {label}"),
                    init: static_render(pattern, env),
                    kind: StaticKind::Url,
                });
                quote! { handlers::websocket(req, cx, &self.#part.#field).await }
            } else {
                let r = render_or_return(pattern);
                quote! {
                    let url = #r;
                    handlers::websocket(req, cx, &url).await
                }
            }
        }
        Handler::OpenApiSpec => {
            let document = format!("{data_dir}/openapi.json");
            quote! {
                let _ = &cx;
                handlers::openapi_document(&req, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), #document)))
            }
        }
        Handler::Custom { module, export, .. } => {
            let f = module_fn(&module.rust_path, export);
            let what = format!("{} {}", module.import, export);
            quote! {
                match ::specgate_runtime::policy::guard(#f(req, cx)).await {
                    Ok(out) => ::specgate_runtime::handlers::HandlerOutput::into_handler_response(out, cx),
                    Err(panic) => ::specgate_runtime::policy::panicked(#what, &panic, cx),
                }
            }
        }
    };
    let inbound = route.inbound.iter().map(|&p| inbound_call(p, index, project, pols));
    let outbound: Vec<TokenStream> = route.outbound.iter().map(|&p| outbound_call(p, index, project, pols)).collect();
    let body = if outbound.is_empty() {
        quote! {
            #(#inbound)*
            #handler
        }
    } else {
        // Outbound policies run on every response, so the handler's early returns (template
        // failures) must land here too: the handler runs in its own block.
        quote! {
            #(#inbound)*
            let head = req.head();
            let mut resp: Response = async { #handler }.await;
            #(#outbound)*
            resp
        }
    };
    let f = quote! {
        #[doc = #doc]
        async fn #name(&'static self, req: Request, cx: &mut Context) -> Response {
            #body
        }
    };
    (f, arm, stat)
}

fn module_fn(rust_path: &str, export: &str) -> TokenStream {
    let path: TokenStream = format!("{rust_path}::{}", crate::modules::fn_name(export)).parse().unwrap_or_else(|_| quote! { compile_error!("bad module path") });
    path
}

fn inbound_call(p: usize, route: usize, project: &Project, pols: &PolicyFields) -> TokenStream {
    let def = &project.policies.list[p];
    let name = &def.name;
    let field = pols.field_for(p, route);
    match &def.kind {
        PolicyKind::Custom { module, export, .. } => {
            let f = module_fn(&module.rust_path, export);
            quote! {
                let req = match ::specgate_runtime::policy::guard(#f(req, cx, &self.#field, #name)).await {
                    Ok(out) => match ::specgate_runtime::policy::settle_policy(::specgate_runtime::policy::IntoFlow::into_flow(out, #name, cx), cx, #name) {
                        Ok(r) => r,
                        Err(resp) => return resp,
                    },
                    Err(panic) => return ::specgate_runtime::policy::panicked(#name, &panic, cx),
                };
            }
        }
        _ => quote! {
            let req = match ::specgate_runtime::policy::settle_policy(self.#field.on_request(req, cx).await, cx, #name) {
                Ok(r) => r,
                Err(resp) => return resp,
            };
        },
    }
}

fn outbound_call(p: usize, route: usize, project: &Project, pols: &PolicyFields) -> TokenStream {
    let def = &project.policies.list[p];
    let name = &def.name;
    let field = pols.field_for(p, route);
    match &def.kind {
        PolicyKind::Custom { module, export, .. } => {
            let f = module_fn(&module.rust_path, export);
            quote! {
                resp = match ::specgate_runtime::policy::guard(#f(resp, &head, cx, &self.#field, #name)).await {
                    Ok(out) => ::specgate_runtime::policy::IntoResponseResult::into_response_result(out, #name, cx),
                    Err(panic) => ::specgate_runtime::policy::panicked(#name, &panic, cx),
                };
            }
        }
        _ => quote! { resp = self.#field.on_response(resp, &head, cx).await; },
    }
}

/// Policy instances (and custom options) as fields of the gateway struct.
struct PolicyFields {
    fields: Vec<PolicyField>,
    /// (policy, route) → field; route is `usize::MAX` for instances shared by every route.
    by_use: BTreeMap<(usize, usize), Ident>,
    /// Mock examples of a route: `(const, route, examples)`.
    example_consts: Vec<(Ident, usize, Vec<crate::model::Example>)>,
    /// Route → the static describing its operation for request validation.
    operation_statics: BTreeMap<usize, (Ident, crate::model::Operation)>,
}

struct PolicyField {
    field: Ident,
    /// The route owning this instance (request validation and mocks), `None` when shared.
    route: Option<usize>,
    ty: TokenStream,
    doc: String,
    init: TokenStream,
}

impl PolicyFields {
    fn new(project: &Project) -> Self {
        let mut out = PolicyFields { fields: Vec::new(), by_use: BTreeMap::new(), example_consts: Vec::new(), operation_statics: BTreeMap::new() };
        for (r, route) in project.routes.iter().enumerate() {
            for &p in route.inbound.iter().chain(&route.outbound) {
                let def = &project.policies.list[p];
                let per_route = matches!(&def.kind, PolicyKind::Builtin { spec, .. } if spec.export == "MockApiInboundPolicy" || spec.export == "RequestValidationInboundPolicy");
                let key = (p, if per_route { r } else { usize::MAX });
                if out.by_use.contains_key(&key) {
                    continue;
                }
                let base = format!("p{}_{}", p, sanitize(&def.name));
                let field = if per_route { format_ident!("{}_r{}", base, r) } else { Ident::new(&base, Span::call_site()) };
                let name = &def.name;
                let (ty, init, doc) = match &def.kind {
                    PolicyKind::Builtin { spec, options, functions, json_schema, .. } => {
                        let ty: TokenStream = format!("::specgate_runtime::policies::{}", spec.rust_type).parse().unwrap_or_default();
                        let init = if !functions.is_empty() {
                            // Each function is wrapped as the runtime's boxed closure type, the
                            // policy name captured (user functions take it as an argument).
                            let wire = functions.iter().map(|pf| {
                                let f = module_fn(&pf.module.rust_path, &pf.export);
                                let (method, wrap) = match pf.role {
                                    Role::QuotaDetail => (quote! { with_quota_detail }, quote! { quota_detail_fn }),
                                    Role::QuotaAnchorDate => (quote! { with_anchor_date }, quote! { quota_anchor_fn }),
                                    _ => (quote! { with_identifier }, quote! { rate_limit_identifier }),
                                };
                                quote! {
                                    .#method(::specgate_runtime::policies::#wrap(|req, cx| {
                                        ::std::boxed::Box::pin(#f(req, cx, #name))
                                    }))
                                }
                            });
                            quote! {
                                env.policy::<#ty>(#name, #options).map(|p| p #(#wire)*)
                            }
                        } else if spec.export == "RequestValidationInboundPolicy" {
                            let consts = format_ident!("OPERATION_R{}", r);
                            out.operation_statics.insert(r, (consts.clone(), route.operation.clone().unwrap_or_default()));
                            quote! { env.policy::<#ty>(#name, #options).and_then(|p| env.check(#name, p.with_operation(&#consts))) }
                        } else if let Some(schema) = json_schema {
                            quote! { env.policy::<#ty>(#name, #options).and_then(|p| env.check(#name, p.with_schema(#schema))) }
                        } else if per_route {
                            let consts = format_ident!("EXAMPLES_R{}", r);
                            out.example_consts.push((consts.clone(), r, route.examples.clone()));
                            quote! { env.policy::<#ty>(#name, #options).map(|p| p.with_examples(#consts)) }
                        } else {
                            quote! { env.policy::<#ty>(#name, #options) }
                        };
                        (ty, init, format!("policy `{name}` ({})", spec.export))
                    }
                    PolicyKind::Custom { module, export, options, .. } => {
                        let has_options = std::fs::read_to_string(&module.source)
                            .map(|t| crate::modules::has_struct(&t, &crate::modules::options_type_name(export)))
                            .unwrap_or(false);
                        let ty: TokenStream = if has_options {
                            format!("{}::{}", module.rust_path, crate::modules::options_type_name(export)).parse().unwrap_or_default()
                        } else {
                            quote! { ::specgate_runtime::serde_json::Value }
                        };
                        (quote! { #ty }, quote! { env.options::<#ty>(#name, #options) }, format!("options of policy `{name}` ({} {export})", module.import))
                    }
                    PolicyKind::Composite { .. } | PolicyKind::Invalid => continue,
                };
                out.by_use.insert(key, field.clone());
                out.fields.push(PolicyField { field, route: per_route.then_some(r), ty, doc, init });
            }
        }
        out
    }

    /// The place of the instance route `route` uses, from `self` of the gateway: a field of
    /// the route's module for per-route instances, of the gateway for shared ones.
    fn field_for(&self, policy: usize, route: usize) -> TokenStream {
        if let Some(f) = self.by_use.get(&(policy, route)) {
            let part = part_ident(route);
            return quote! { #part.#f };
        }
        let f = self.by_use.get(&(policy, usize::MAX)).cloned().unwrap_or_else(|| format_ident!("missing_policy_field"));
        quote! { #f }
    }
}

/// A CORS policy as a field of the gateway struct, with the routes that use it.
struct CorsField {
    field: Ident,
    doc: String,
    init: TokenStream,
    /// Whether `init` is an `Option` (built from options that may be invalid at start-up).
    fallible: bool,
    routes: Vec<usize>,
}

/// Ascending route numbers as runs of consecutive numbers (`(first, last)`), for match
/// patterns.
fn route_runs(routes: &[usize]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &r in routes {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == r => *last = r,
            _ => runs.push((r, r)),
        }
    }
    runs
}

/// One field per CORS policy some route uses, in order of first use.
fn cors_fields(project: &Project) -> Vec<CorsField> {
    let mut out: Vec<CorsField> = Vec::new();
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for (r, route) in project.routes.iter().enumerate() {
        let Some(name) = route.cors_policy.as_deref() else { continue };
        if let Some(&i) = by_name.get(name) {
            out[i].routes.push(r);
            continue;
        }
        let field = if name == "anything-goes" {
            CorsField {
                field: format_ident!("cors_anything_goes"),
                doc: "CORS policy `anything-goes`".to_owned(),
                init: quote! { ::specgate_runtime::cors::CorsPolicy::anything_goes() },
                fallible: false,
                routes: vec![r],
            }
        } else {
            let Some(&i) = project.policies.cors_by_name.get(name) else { continue };
            let options = project.policies.cors[i].options.clone().unwrap_or_else(|| "{}".to_owned());
            CorsField {
                field: format_ident!("cors_{}_{}", i, sanitize(name)),
                doc: format!("CORS policy `{name}`"),
                init: quote! { env.policy::<::specgate_runtime::cors::CorsPolicy>(#name, #options) },
                fallible: true,
                routes: vec![r],
            }
        };
        by_name.insert(name, out.len());
        out.push(field);
    }
    out
}

/// The static describing an operation's parameters and body for request validation.
fn operation_static(ident: &Ident, op: &crate::model::Operation) -> TokenStream {
    use crate::model::{ParamIn, ParamSchema};
    let params = op.parameters.iter().map(|p| {
        let name = &p.name;
        let location = match p.location {
            ParamIn::Path => quote! { V::In::Path },
            ParamIn::Query => quote! { V::In::Query },
            ParamIn::Header => quote! { V::In::Header },
        };
        let style = format_ident!("{}", match p.style.as_str() {
            "simple" => "Simple",
            "spaceDelimited" => "SpaceDelimited",
            "pipeDelimited" => "PipeDelimited",
            "deepObject" => "DeepObject",
            "label" => "Label",
            "matrix" => "Matrix",
            _ => "Form",
        });
        let (required, explode) = (p.required, p.explode);
        let schema = match &p.schema {
            ParamSchema::Any => quote! { V::ParamSchema::Any },
            ParamSchema::Simple(s) => {
                let s = simple_tokens(s);
                quote! { V::ParamSchema::Simple(#s) }
            }
            ParamSchema::Array { items, min_items, max_items, unique_items } => {
                let items = simple_tokens(items);
                let (min, max) = (opt_tokens(*min_items), opt_tokens(*max_items));
                quote! { V::ParamSchema::Array { items: #items, min_items: #min, max_items: #max, unique_items: #unique_items } }
            }
            ParamSchema::Json { schema, shape } => {
                let shape = format_ident!("{}", shape);
                quote! { V::ParamSchema::Json { schema: #schema, shape: V::Shape::#shape } }
            }
        };
        quote! { V::Parameter { name: #name, location: #location, required: #required, style: V::Style::#style, explode: #explode, schema: #schema } }
    });
    let body = match &op.body {
        None => quote! { None },
        Some(b) => {
            let required = b.required;
            let content = b.content.iter().map(|m| {
                let media = &m.media_type;
                let schema = match &m.schema {
                    Some(s) => quote! { Some(#s) },
                    None => quote! { None },
                };
                quote! { V::MediaType { media_type: #media, schema: #schema } }
            });
            quote! { Some(V::RequestBody { required: #required, content: &[#(#content),*] }) }
        }
    };
    quote! {
        static #ident: ::specgate_runtime::validation::Operation = {
            use ::specgate_runtime::validation as V;
            V::Operation { parameters: &[#(#params),*], body: #body }
        };
    }
}

fn opt_tokens<T: quote::ToTokens>(v: Option<T>) -> TokenStream {
    match v {
        Some(v) => quote! { Some(#v) },
        None => quote! { None },
    }
}

fn simple_tokens(s: &crate::model::SimpleSpec) -> TokenStream {
    let ty = format_ident!("{}", s.ty);
    let enumeration = &s.enumeration;
    let (minimum, maximum) = (opt_tokens(s.minimum), opt_tokens(s.maximum));
    let (exclusive_minimum, exclusive_maximum) = (opt_tokens(s.exclusive_minimum), opt_tokens(s.exclusive_maximum));
    let multiple_of = opt_tokens(s.multiple_of);
    let (min_length, max_length) = (opt_tokens(s.min_length), opt_tokens(s.max_length));
    let pattern = opt_tokens(s.pattern.as_deref());
    let format = opt_tokens(s.format.as_deref());
    quote! {
        V::Simple {
            ty: V::SimpleType::#ty,
            enumeration: &[#(#enumeration),*],
            minimum: #minimum,
            maximum: #maximum,
            exclusive_minimum: #exclusive_minimum,
            exclusive_maximum: #exclusive_maximum,
            multiple_of: #multiple_of,
            min_length: #min_length,
            max_length: #max_length,
            pattern: #pattern,
            format: #format,
        }
    }
}

/// Start-up rendering of a template made of literals and environment values.
fn static_render(t: &Template, env: &EnvFields) -> TokenStream {
    let pushes = t.parts.iter().map(|p| match p {
        Part::Lit(l) => push_lit(l),
        Part::Expr { expr: Expr::Env(var), .. } => {
            let f = env.field(var);
            quote! { u.push_str(&e.#f); }
        }
        Part::Expr { .. } => quote! { compile_error!("dynamic value in a static template"); },
    });
    quote! {
        let mut u = ::std::string::String::new();
        #(#pushes)*
        u
    }
}

fn push_lit(l: &str) -> TokenStream {
    let mut chars = l.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => quote! { u.push(#c); },
        _ => quote! { u.push_str(#l); },
    }
}

/// Per-request rendering: appends each piece with the encoding its place requires.
fn dynamic_render(t: &Template, env: &EnvFields) -> TokenStream {
    let capacity: usize = t.parts.iter().map(|p| if let Part::Lit(l) = p { l.len() } else { 16 }).sum();
    let pushes = t.parts.iter().map(|p| match p {
        Part::Lit(l) => push_lit(l),
        Part::Expr { expr, place } => push_expr(expr, *place, env),
    });
    quote! {
        let mut u = ::std::string::String::with_capacity(#capacity);
        #(#pushes)*
        Ok(u)
    }
}

fn value_expr(expr: &Expr, env: &EnvFields) -> TokenStream {
    match expr {
        Expr::Param { index, .. } => quote! { req.params.at(#index) },
        Expr::Query(name) => quote! { &t::query(&req, #name) },
        Expr::Header(name) => quote! { t::header(&req, #name) },
        Expr::Env(var) => {
            let f = env.field(var);
            quote! { &self.#f }
        }
        Expr::Custom(key) => quote! { &cx.custom_text(#key) },
        Expr::UserSub => quote! { t::user_sub(&req) },
        Expr::UserData(key) => quote! { &t::user_data(&req, #key) },
        Expr::Url(piece) => match piece {
            UrlPiece::Url => quote! { &t::url(&req, cx) },
            UrlPiece::Host => quote! { &cx.host },
            UrlPiece::Hostname => quote! { cx.hostname() },
            UrlPiece::Pathname => quote! { &cx.pathname },
            UrlPiece::Port => quote! { cx.port() },
            UrlPiece::Search => quote! { &t::search(&req) },
            UrlPiece::Method => quote! { req.method().as_str() },
            UrlPiece::Origin => quote! { &cx.origin() },
            UrlPiece::Protocol => quote! { cx.protocol() },
        },
        Expr::Encode(inner) => {
            let v = value_expr(inner, env);
            quote! { &t::encode_uri_component(#v) }
        }
    }
}

fn push_expr(expr: &Expr, place: Place, env: &EnvFields) -> TokenStream {
    let v = value_expr(expr, env);
    match expr {
        Expr::Encode(_) | Expr::Url(_) => quote! { t::push_url_piece(&mut u, #v); },
        Expr::Env(_) | Expr::Custom(_) => quote! { t::push_trusted(&mut u, #v)?; },
        _ => match place {
            Place::Host => quote! { t::push_host(&mut u, #v)?; },
            Place::Path => match expr {
                Expr::Param { multi_segment: true, .. } => quote! { t::push_path_rest(&mut u, #v)?; },
                _ => quote! { t::push_path_segment(&mut u, #v)?; },
            },
            Place::Query => quote! { t::push_query(&mut u, #v); },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_numbers_group_into_runs() {
        assert_eq!(route_runs(&[0, 2, 3, 4, 7, 8, 10]), [(0, 0), (2, 4), (7, 8), (10, 10)]);
        assert_eq!(route_runs(&[]), []);
    }

    #[test]
    fn sanitizes_identifiers() {
        assert_eq!(sanitize("getUserById"), "get_user_by_id");
        assert_eq!(sanitize("GET /users/{id}"), "get_users_id");
        assert_eq!(sanitize("BASE_URL"), "base_url");
        assert_eq!(sanitize("{}"), "x");
        assert_eq!(sanitize("v2-items.list"), "v2_items_list");
    }
}
