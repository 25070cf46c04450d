//! The `specgate` command line.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use specgate::federation::ProjectArg;
use specgate::generate::{self, Options};

#[derive(Parser)]
#[command(
    name = "specgate",
    version,
    about = "Generate a compiled API gateway from a Zuplo-style OpenAPI project",
    after_help = "Start with:\n  specgate new my-api            a starter project\n  specgate import api.yaml --upstream https://api.example.com\n  specgate validate my-api       diagnostics with file:line:col (and a porting report)\n  specgate generate my-api --out gw && cargo build --release --manifest-path gw/Cargo.toml\n\nDocumentation: docs/getting-started.md"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the gateway crate of a project, or one crate holding several projects.
    ///
    /// Example: specgate generate specs/multi-backend --out generated/multi-backend
    ///
    /// Several: specgate generate --project edge=specs/federated/edge --project orders=specs/federated/orders --out /tmp/gw
    Generate {
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        target: Target,
    },
    /// Exit 0 when a directory holds exactly what `generate` would write, 1 otherwise.
    ///
    /// Example: specgate check specs/multi-backend --out generated/multi-backend
    Check {
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        target: Target,
    },
    /// Print the diagnostics of a project (or of several, built together) without generating
    /// anything, and for a project that does not port as is (a Zuplo project with TypeScript
    /// modules, built-ins specgate lacks) a porting report: routes that port as is, Rust
    /// modules to write with their signatures, missing built-ins and the routes that use them.
    ///
    /// Example: specgate validate specs/multi-backend
    Validate {
        #[command(flatten)]
        input: Input,
    },
    /// Run a small upstream that echoes each request as JSON (for examples and benchmarks).
    ///
    /// Example: specgate echo --port 9001 --name users
    Echo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Port to listen on.
        #[arg(long, default_value_t = 9001)]
        port: u16,
        /// A name included in every answer (to tell several upstreams apart).
        #[arg(long, default_value = "echo")]
        name: String,
        /// Answer every request with this text instead of the JSON echo.
        #[arg(long)]
        fixed: Option<String>,
    },
    /// Generate, build and run a project's gateway, and again on every change (like `zuplo dev`).
    ///
    /// The last good gateway keeps serving while the project has errors or does not build.
    ///
    /// Example: specgate dev my-project --port 9000 -- API_URL=http://127.0.0.1:8080
    Dev(specgate::dev::DevArgs),
    /// Manage the API keys checked by api-key-inbound (keys file or Redis).
    ///
    /// Example: specgate keys create --consumer acme --expires-in 90d
    Keys(specgate::keys_cli::KeysArgs),
    /// Create a starter project that runs at once (a mock route, a forwarded route with a
    /// rate limit and custom Rust code, the OpenAPI document).
    ///
    /// Example: specgate new my-api && cd my-api && specgate dev .
    New {
        /// The folder to create (must be empty or not exist).
        dir: PathBuf,
        /// Write into a folder that is not empty (files of the starter are overwritten).
        #[arg(long)]
        force: bool,
    },
    /// Turn a plain OpenAPI 3.0/3.1 document (JSON or YAML) into a project whose operations
    /// forward to one upstream. Paths are reordered so literal paths come before templated
    /// ones that would shadow them (the gateway matches in document order).
    #[command(after_help = "Examples:\n  specgate import petstore.yaml --upstream https://petstore.example.com --out petstore\n  specgate import api.github.com.json --upstream https://api.github.com")]
    Import {
        /// The OpenAPI document.
        file: PathBuf,
        /// The upstream base URL every operation forwards to (written to .env as API_URL).
        #[arg(long)]
        upstream: String,
        /// The project folder to write (default: the document's name without extension).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Overwrite an existing project's routes and .env.
        #[arg(long)]
        force: bool,
    },
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  specgate completions bash > ~/.local/share/bash-completion/completions/specgate\n  specgate completions zsh > \"${fpath[1]}/_specgate\"\n  specgate completions fish > ~/.config/fish/completions/specgate.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// List every route: method, path, handler, effective policy chains (composites expanded),
    /// CORS policy and the environment variables it reads, in match order.
    #[command(after_help = "Examples:\n  specgate routes specs/policy-showcase\n  specgate routes specs/policy-showcase --json | jq '.[] | select(.inbound != [])'")]
    Routes {
        /// The project folder.
        project: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show which route a request reaches and why (the gateway's own router and path
    /// normalisation), with its parameters, upstream URL and policy chains.
    #[command(after_help = "Examples:\n  specgate explain specs/path-modes GET /users/42/orders?limit=5\n  specgate explain specs/web-api OPTIONS /notes --json")]
    Explain {
        /// The project folder.
        project: PathBuf,
        /// The request method.
        method: String,
        /// The request path, with an optional query.
        path: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// One project, or several built into one binary.
#[derive(clap::Args)]
struct Input {
    /// The project folder (holds config/*.oas.json and config/policies.json).
    #[arg(required_unless_present = "projects", conflicts_with = "projects")]
    project: Option<PathBuf>,
    /// A project of a build of several projects, as PATH or NAME=PATH (NAME defaults to the
    /// folder's name). Repeat it: every project becomes a gateway of one binary, reachable
    /// from the others as local://NAME.
    #[arg(long = "project", value_name = "[NAME=]PATH")]
    projects: Vec<ProjectArg>,
    /// The project whose gateway listens on HOST/PORT in a build of several (default: the
    /// first --project).
    #[arg(long, value_name = "NAME", requires = "projects")]
    entry: Option<String>,
}

impl Input {
    /// The projects as the command line would name them again.
    fn describe(&self) -> String {
        match &self.project {
            Some(p) => p.display().to_string(),
            None => {
                let mut parts: Vec<String> = self
                    .projects
                    .iter()
                    .map(|p| match &p.name {
                        Some(n) => format!("--project {n}={}", p.path.display()),
                        None => format!("--project {}", p.path.display()),
                    })
                    .collect();
                if let Some(e) = &self.entry {
                    parts.push(format!("--entry {e}"));
                }
                parts.join(" ")
            }
        }
    }
}

#[derive(clap::Args)]
struct Target {
    /// The crate directory (any directory; outside the workspace the crate builds on its own).
    #[arg(long)]
    out: PathBuf,
    /// Crate and binary name (default: the project folder's name).
    #[arg(long)]
    name: Option<String>,
    /// Path of the specgate-runtime crate (default: the one next to this generator's sources).
    #[arg(long)]
    runtime_path: Option<PathBuf>,
    /// Write stubs answering 501 for missing custom modules, so a ported project builds first
    /// and is filled in module by module.
    #[arg(long)]
    stub_missing: bool,
}

impl Target {
    fn options(&self) -> Options {
        Options {
            name: self.name.clone(),
            out: self.out.clone(),
            runtime_path: self.runtime_path.clone(),
            stub_missing: self.stub_missing,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Keys(args) => specgate::keys_cli::main(&args),
        Command::Dev(args) => specgate::dev::main(&args),
        Command::Generate { input, target } => {
            let Some(output) = run_generate(&input, &target.options()) else { return ExitCode::FAILURE };
            match generate::write(&output, &target.out) {
                Ok(()) => {
                    eprintln!("generated {} files into {}", output.files.len(), target.out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: cannot write {}: {e}", target.out.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { input, target } => {
            let Some(output) = run_generate(&input, &target.options()) else { return ExitCode::FAILURE };
            let drift = generate::check(&output, &target.out);
            let project = input.describe();
            if drift.is_clean() {
                eprintln!("{} is up to date with {project}", target.out.display());
                return ExitCode::SUCCESS;
            }
            eprintln!("{} differs from what `specgate generate` writes for {project}:", target.out.display());
            for f in &drift.differing {
                eprintln!("  differs: {f}");
            }
            for f in &drift.missing {
                eprintln!("  missing: {f}");
            }
            for f in &drift.extra {
                eprintln!("  extra:   {f}");
            }
            let name = target.name.as_deref().map(|n| format!(" --name {n}")).unwrap_or_default();
            eprintln!("run: specgate generate {project}{name} --out {}", target.out.display());
            ExitCode::FAILURE
        }
        Command::Validate { input } => {
            let (diags, files, loaded) = match &input.project {
                Some(project) => {
                    let (loaded, diags) = specgate::project::load(project, None);
                    let files = loaded.as_ref().map(|p| p.files.clone()).unwrap_or_default();
                    (diags, files, loaded.into_iter().collect::<Vec<_>>())
                }
                None => {
                    let (federation, diags, files) = specgate::federation::load(&input.projects, input.entry.as_deref(), false);
                    (diags, files, federation.map(|f| f.projects).unwrap_or_default())
                }
            };
            eprint!("{}", diags.render(&files, std::io::stderr().is_terminal()));
            // What a Zuplo project needs before it builds: Rust modules, missing built-ins.
            for p in &loaded {
                let report = specgate::porting::report(p);
                if !report.is_clean() {
                    if loaded.len() > 1 {
                        eprintln!("project `{}`:", p.name);
                    }
                    eprint!("{}", specgate::porting::render(&report));
                }
            }
            if diags.has_errors() {
                ExitCode::FAILURE
            } else {
                let (_, w) = diags.counts();
                if w == 0 {
                    eprintln!("{}: no problems found", input.describe());
                }
                ExitCode::SUCCESS
            }
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            // Into a buffer first: clap_complete panics on a failed write (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "specgate", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Command::New { dir, force } => match specgate::scaffold::new_project(&dir, force) {
            Ok(files) => {
                eprintln!("created {} with {}", dir.display(), files.join(", "));
                eprintln!("next:\n  specgate echo --port 9001 &   # the upstream .env points /echo/* at\n  specgate dev {}\n  curl localhost:8080/hello", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Import { file, upstream, out, force } => {
            let out = out.unwrap_or_else(|| {
                let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "api".into());
                PathBuf::from(stem.trim_end_matches(".oas").trim_end_matches(".openapi").to_owned())
            });
            let opts = specgate::import::ImportOptions { input: file, upstream, out: out.clone(), force };
            match specgate::import::import(&opts) {
                Ok(done) => {
                    eprintln!(
                        "imported {} operation{} on {} path{} into {} ({}); {} kept their x-zuplo-route; {} path{} moved ahead of templated paths that would shadow them",
                        done.forwarded,
                        if done.forwarded == 1 { "" } else { "s" },
                        done.paths,
                        if done.paths == 1 { "" } else { "s" },
                        out.display(),
                        done.files.join(", "),
                        done.kept,
                        done.moved,
                        if done.moved == 1 { "" } else { "s" },
                    );
                    // The imported project must load: show what the generator says about it.
                    let (loaded, diags) = specgate::project::load(&out, None);
                    let files = loaded.map(|p| p.files).unwrap_or_default();
                    eprint!("{}", diags.render(&files, std::io::stderr().is_terminal()));
                    if diags.has_errors() {
                        return ExitCode::FAILURE;
                    }
                    eprintln!("next: specgate dev {}   (or specgate generate {} --out {}/gateway)", out.display(), out.display(), out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Routes { project, json } => {
            let Some(loaded) = load_clean(&project) else { return ExitCode::FAILURE };
            let rows = specgate::inspect::rows(&loaded);
            if json {
                println!("{}", serde_json::to_string_pretty(&specgate::inspect::rows_json(&rows)).unwrap_or_default());
            } else {
                print!("{}", specgate::inspect::render_table(&rows));
            }
            ExitCode::SUCCESS
        }
        Command::Explain { project, method, path, json } => {
            let Some(loaded) = load_clean(&project) else { return ExitCode::FAILURE };
            match specgate::inspect::explain(&loaded, &method, &path) {
                Ok(ex) if json => {
                    println!("{}", serde_json::to_string_pretty(&specgate::inspect::explanation_json(&loaded, &ex)).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(ex) => {
                    print!("{}", specgate::inspect::render_explanation(&loaded, &ex));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Echo { host, port, name, fixed } => {
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(specgate::echo::serve(SocketAddr::new(host, port), name, fixed)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Loads a project for inspection: diagnostics go to stderr; errors stop the command.
fn load_clean(project: &std::path::Path) -> Option<specgate::model::Project> {
    let (loaded, diags) = specgate::project::load(project, None);
    let files = loaded.as_ref().map(|p| p.files.clone()).unwrap_or_default();
    if diags.has_errors() {
        eprint!("{}", diags.render(&files, std::io::stderr().is_terminal()));
        return None;
    }
    loaded
}

fn run_generate(input: &Input, opts: &Options) -> Option<generate::Output> {
    let (output, diags, files) = match &input.project {
        Some(project) => generate::generate(project, opts),
        None => specgate::federation::generate(&input.projects, input.entry.as_deref(), opts),
    };
    let rendered = diags.render(&files.unwrap_or_default(), std::io::stderr().is_terminal());
    eprint!("{rendered}");
    output
}
