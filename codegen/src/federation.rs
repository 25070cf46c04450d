//! Builds of several projects (`specgate generate --project a --project b`): one crate, one
//! binary, each project's gateway in a module of its own (its routes, policies, CORS, hooks,
//! custom code and variables), every gateway reachable from the others as `local://NAME`
//! without a socket. The entry gateway (the first project, or `--entry NAME`) listens on
//! `HOST`/`PORT`; the others have no listener.
//!
//! Crate layout: `src/main.rs` starts the entry with the others as members;
//! `src/gateways/<module>/` holds a project's `routes.rs` (with its route modules
//! `routes/part_N.rs`) and `modules/` (copied, with `crate::modules::` and
//! `CARGO_MANIFEST_DIR/config/` references adjusted to the new place);
//! `gateways/<name>/` its `openapi.json` and `config/*.json` data files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use askama::Template as _;
use sha2::{Digest, Sha256};

use crate::diag::{Diagnostics, Files};
use crate::generate::{self, Options, Output, RouteRow};
use crate::model::{Handler, Project};
use crate::policies::PolicyKind;

/// One `--project [NAME=]PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectArg {
    /// The gateway's name (default: the folder's name).
    pub name: Option<String>,
    /// The project folder.
    pub path: PathBuf,
}

impl std::str::FromStr for ProjectArg {
    type Err = String;

    /// `PATH` or `NAME=PATH` (a `=` after a `/` belongs to the path).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((name, path)) if !name.contains(['/', '\\']) => {
                if path.is_empty() {
                    return Err(format!("`{s}`: no project folder after `=`"));
                }
                Ok(ProjectArg { name: Some(name.to_owned()), path: PathBuf::from(path) })
            }
            _ if s.is_empty() => Err("empty project argument".to_owned()),
            _ => Ok(ProjectArg { name: None, path: PathBuf::from(s) }),
        }
    }
}

/// Reads a list of the projects of one build: one `[NAME=]PATH` per line (PATH relative to
/// the list's folder), `#` comments, the first project listed being the entry. `specs/` uses
/// it: a folder holding `federation.txt` instead of `config/` is generated as one crate.
pub fn read_list(list: &Path) -> Result<Vec<ProjectArg>, String> {
    let text = std::fs::read_to_string(list).map_err(|e| format!("cannot read {}: {e}", list.display()))?;
    let dir = list.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut arg: ProjectArg = line.parse()?;
        arg.path = dir.join(&arg.path);
        out.push(arg);
    }
    Ok(out)
}

/// The loaded projects of a build, the entry first.
#[derive(Debug)]
pub struct Federation {
    /// Every project, in the order given, the entry moved to the front.
    pub projects: Vec<Project>,
    /// SHA-256 over every project's name and inputs, hex.
    pub input_hash: String,
}

/// Whether `name` can name a gateway: `local://NAME` host, environment variable part and
/// module name. Lower-case ASCII letters, digits and `-`, starting with a letter, at most 63.
pub fn is_gateway_name(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The Rust module of a project's gateway (as an identifier; its folder is the name without
/// `r#`).
pub fn module_name(name: &str) -> String {
    crate::modules::escape_keyword(&module_dir(name))
}

/// The folder of a project's gateway module under `src/gateways/`.
fn module_dir(name: &str) -> String {
    name.replace('-', "_")
}

/// Loads every project and checks what only the whole build can check: names valid and
/// unique, the entry a project of the build, and every literal `local://NAME` naming one of
/// them. Diagnostics name files as `NAME/config/...`.
pub fn load(args: &[ProjectArg], entry: Option<&str>, stub_missing: bool) -> (Option<Federation>, Diagnostics, Files) {
    let mut diags = Diagnostics::default();
    let mut files = Files::default();
    let mut projects = Vec::new();
    if args.is_empty() {
        diags.error(None, "no project given").help("name each project with --project [NAME=]PATH");
        return (None, diags, files);
    }
    for arg in args {
        let (project, d) = crate::project::load_with(&arg.path, arg.name.as_deref(), stub_missing);
        match project {
            Some(p) => {
                let offset = files.append(&p.files, &format!("{}/", p.name));
                diags.extend_shifted(d, offset);
                projects.push((arg, p));
            }
            None => diags.extend(d),
        }
    }
    if projects.len() != args.len() {
        return (None, diags, files);
    }
    let mut seen: BTreeMap<&str, &Path> = BTreeMap::new();
    for (arg, p) in &projects {
        if !is_gateway_name(&p.name) {
            diags.error(None, format!("`{}` ({}) cannot name a gateway of this build", p.name, arg.path.display()))
                .help(format!("names are lower-case letters, digits and `-`, starting with a letter; name it: --project NAME={}", arg.path.display()));
        } else if let Some(first) = seen.insert(&p.name, &arg.path) {
            diags.error(None, format!("two projects are named `{}`: {} and {}", p.name, first.display(), arg.path.display()))
                .help(format!("name one of them: --project OTHER-NAME={}", arg.path.display()));
        }
    }
    let names: Vec<String> = projects.iter().map(|(_, p)| p.name.clone()).collect();
    let entry_index = match entry {
        None => 0,
        Some(e) => match names.iter().position(|n| n == e) {
            Some(i) => i,
            None => {
                diags.error(None, format!("--entry `{e}` is not a project of this build")).help(format!("projects: {}", names.join(", ")));
                0
            }
        },
    };
    let mut offset = 0;
    for (_, p) in &projects {
        for r in &p.routes {
            let Some(t) = &r.local_target else { continue };
            if !names.iter().any(|n| n.eq_ignore_ascii_case(&t.name)) {
                let mut at = t.at;
                at.file += offset;
                diags.error(at, format!("no project of this build is named `{}`", t.name)).label("not a gateway of this build").help(format!(
                    "local:// names one of: {}; a gateway outside the build is reached with ${{env.X}} set to local://NAME and LOCAL_GATEWAY_<NAME>_URL",
                    names.join(", ")
                ));
            }
        }
        offset += p.files.iter().count();
    }
    let mut projects: Vec<Project> = projects.into_iter().map(|(_, p)| p).collect();
    let first = projects.remove(entry_index);
    projects.insert(0, first);
    let mut hasher = Sha256::new();
    for p in &projects {
        hasher.update(p.name.as_bytes());
        hasher.update(b"\n");
        hasher.update(p.input_hash.as_bytes());
        hasher.update(b"\n");
    }
    let input_hash: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    (Some(Federation { projects, input_hash }), diags, files)
}

/// Loads, checks and generates a build of several projects (see [`load`]). The crate is
/// named `opts.name`, else after the entry.
pub fn generate(args: &[ProjectArg], entry: Option<&str>, opts: &Options) -> (Option<Output>, Diagnostics, Option<Files>) {
    let (federation, mut diags, files) = load(args, entry, opts.stub_missing);
    let Some(mut federation) = federation else { return (None, diags, Some(files)) };
    if diags.has_errors() {
        return (None, diags, Some(files));
    }
    match emit_crate(&mut federation, opts) {
        Ok(out) => (Some(out), diags, Some(files)),
        Err(e) => {
            diags.error(None, format!("internal generator error: {e}"));
            (None, diags, Some(files))
        }
    }
}

/// Points every custom module reference of `project` at `root` (`crate::gateways::x::modules`).
fn relocate_modules(project: &mut Project, root: &str) {
    let fix = |path: &mut String| {
        if let Some(rest) = path.strip_prefix("crate::modules") {
            *path = format!("{root}{rest}");
        }
    };
    for r in &mut project.routes {
        if let Handler::Custom { module, .. } = &mut r.handler {
            fix(&mut module.rust_path);
        }
    }
    for p in &mut project.policies.list {
        match &mut p.kind {
            PolicyKind::Custom { module, .. } => fix(&mut module.rust_path),
            PolicyKind::Builtin { functions, .. } => functions.iter_mut().for_each(|f| fix(&mut f.module.rust_path)),
            _ => {}
        }
    }
    if let Some(h) = &mut project.hooks {
        fix(&mut h.rust_path);
    }
    for (m, _) in &mut project.missing_modules {
        fix(&mut m.rust_path);
    }
}

/// A copied module's source adjusted to its place: `crate::modules::` becomes the project's
/// module path, and data files included from `CARGO_MANIFEST_DIR/config/` are found under
/// `gateways/NAME/config/`.
fn relocate_source(text: &str, module_root: &str, data_dir: &str) -> String {
    text.replace("crate::modules::", &format!("{module_root}::"))
        .replace("env!(\"CARGO_MANIFEST_DIR\"), \"/config/", &format!("env!(\"CARGO_MANIFEST_DIR\"), \"{data_dir}/config/"))
}

#[derive(askama::Template)]
#[template(path = "README.federated.md.txt", escape = "none")]
struct Readme<'a> {
    version: &'a str,
    hash: &'a str,
    name: &'a str,
    gateways: &'a [GatewayDoc],
}

#[derive(askama::Template)]
#[template(path = "env.example.federated.txt", escape = "none")]
struct EnvExample<'a> {
    version: &'a str,
    name: &'a str,
    gateways: &'a [GatewayDoc],
}

struct GatewayDoc {
    name: String,
    entry: bool,
    /// `NAME__` of its scoped variables.
    scope: String,
    env_vars: Vec<String>,
    routes: Vec<RouteRow>,
}

fn emit_crate(federation: &mut Federation, opts: &Options) -> Result<Output, String> {
    let version = env!("CARGO_PKG_VERSION");
    let hash = federation.input_hash.clone();
    let names: Vec<String> = federation.projects.iter().map(|p| p.name.clone()).collect();
    let label = names.join(", ");
    let name = generate::crate_name(opts.name.as_deref().unwrap_or(&names[0]));
    let mut files = BTreeMap::new();
    generate::package_files(&mut files, &label, &hash, &name, opts)?;
    let header = format!(
        "// @generated by specgate {version} from the projects {} (inputs sha256 {hash}).\n\
         // Do not edit by hand: change the projects and run `specgate generate` again.\n\n",
        names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
    );

    let mut docs = Vec::new();
    let mut decls = String::new();
    for (i, project) in federation.projects.iter_mut().enumerate() {
        let module = module_name(&project.name);
        let dir = module_dir(&project.name);
        let module_root = format!("crate::gateways::{module}::modules");
        let data_dir = format!("/gateways/{}", project.name);
        relocate_modules(project, &module_root);
        let project = &*project;
        let own_header = format!(
            "// @generated by specgate {version} from the project `{}` (inputs sha256 {}).\n\
             // Do not edit by hand: change the project and run `specgate generate` again.\n\n",
            project.name, project.input_hash
        );
        let relocate = |text: &str| relocate_source(text, &module_root, &data_dir);
        let modules = generate::module_files(project, &format!("src/gateways/{dir}/modules"), Some(&relocate));
        let mods = if modules.is_empty() { "" } else { "pub mod modules;\n" };
        for (rel, content) in modules {
            files.insert(rel, content.into_bytes());
        }
        for (rel, content) in generate::config_data_files(project) {
            files.insert(format!("gateways/{}/{rel}", project.name), content);
        }
        let role = if i == 0 { "listens on HOST/PORT" } else { "has no listener" };
        let mod_rs = format!(
            "{own_header}//! The gateway `{}` (`local://{}`; it {role}).\n\n{mods}mod routes;\n\npub use routes::Gateway;\n",
            project.name, project.name
        );
        files.insert(format!("src/gateways/{dir}/mod.rs"), mod_rs.into_bytes());
        for (rel, routes) in crate::emit::routes_rs_in(project, &data_dir)? {
            files.insert(format!("src/gateways/{dir}/{rel}"), format!("{own_header}{routes}").into_bytes());
        }
        let public = generate::public_document(project);
        let mut doc = serde_json::to_string_pretty(&public).map_err(|e| e.to_string())?;
        doc.push('\n');
        files.insert(format!("gateways/{}/openapi.json", project.name), doc.into_bytes());
        decls.push_str(&format!("pub mod {module};\n"));
        docs.push(GatewayDoc {
            name: project.name.clone(),
            entry: i == 0,
            scope: format!("{}__", env_name(&project.name)),
            env_vars: crate::project::documented_env_vars(project).into_iter().collect(),
            routes: project.routes.iter().map(generate::route_row).collect(),
        });
    }
    files.insert(
        "src/gateways/mod.rs".to_owned(),
        format!("{header}//! One module per project of this build.\n\n{decls}").into_bytes(),
    );
    let entry = module_name(&names[0]);
    let members: String = names[1..]
        .iter()
        .map(|n| format!("        ::specgate_runtime::server::member::<gateways::{}::Gateway>(),\n", module_name(n)))
        .collect();
    let main = format!(
        "{header}//! Gateway `{name}`, generated by specgate from the projects {label}.\n//!\n\
         //! Run with `cargo run --release` (set `PORT`, `HOST` and the variables of `.env.example`).\n\
         //! `{}` listens; every gateway reaches the others as `local://NAME`, in process.\n\n\
         mod gateways;\n\nfn main() -> std::process::ExitCode {{\n    \
         ::specgate_runtime::server::run_federated::<gateways::{entry}::Gateway>(&[\n{members}    ])\n}}\n",
        names[0]
    );
    files.insert("src/main.rs".to_owned(), main.into_bytes());

    let env_example = EnvExample { version, name: &name, gateways: &docs };
    files.insert(".env.example".to_owned(), env_example.render().map_err(|e| e.to_string())?.into_bytes());
    let readme = Readme { version, hash: &hash, name: &name, gateways: &docs };
    files.insert("README.md".to_owned(), readme.render().map_err(|e| e.to_string())?.into_bytes());
    Ok(Output { files })
}

/// As the runtime writes a gateway name in variable names (`orders-v2` → `ORDERS_V2`).
fn env_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_arguments() {
        let p = |s: &str| s.parse::<ProjectArg>();
        assert_eq!(p("specs/a"), Ok(ProjectArg { name: None, path: "specs/a".into() }));
        assert_eq!(p("edge=specs/a"), Ok(ProjectArg { name: Some("edge".into()), path: "specs/a".into() }));
        assert_eq!(p("specs/x=y"), Ok(ProjectArg { name: None, path: "specs/x=y".into() }));
        assert!(p("edge=").is_err());
    }

    #[test]
    fn gateway_names() {
        assert!(is_gateway_name("orders"));
        assert!(is_gateway_name("my-api-main-2s93j2"));
        for bad in ["", "Orders", "9lives", "a_b", "a.b", "end-", &"a".repeat(64)] {
            assert!(!is_gateway_name(bad), "{bad}");
        }
        assert_eq!(module_name("orders-v2"), "orders_v2");
        assert_eq!(module_name("match"), "r#match");
    }

    #[test]
    fn copied_sources_find_their_new_place() {
        let src = "use crate::modules::util;\nlet x = include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/config/customers.json\"));\n";
        let out = relocate_source(src, "crate::gateways::edge::modules", "/gateways/edge");
        assert!(out.contains("use crate::gateways::edge::modules::util;"), "{out}");
        assert!(out.contains("\"/gateways/edge/config/customers.json\""), "{out}");
    }
}
