//! The `specgate` command line.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use specgate::generate::{self, Options};

#[derive(Parser)]
#[command(name = "specgate", version, about = "Generate a compiled API gateway from a Zuplo-style OpenAPI project")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the gateway crate of a project.
    ///
    /// Example: specgate generate specs/multi-backend --out generated/multi-backend
    Generate {
        /// The project folder (holds config/*.oas.json and config/policies.json).
        project: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Exit 0 when a directory holds exactly what `generate` would write, 1 otherwise.
    ///
    /// Example: specgate check specs/multi-backend --out generated/multi-backend
    Check {
        /// The project folder.
        project: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Print the diagnostics of a project without generating anything, and for a project
    /// that does not port as is (a Zuplo project with TypeScript modules, built-ins specgate
    /// lacks) a porting report: routes that port as is, Rust modules to write with their
    /// signatures, missing built-ins and the routes that use them.
    ///
    /// Example: specgate validate specs/multi-backend
    Validate {
        /// The project folder.
        project: PathBuf,
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
    /// Manage the API keys checked by api-key-inbound (keys file or Redis).
    ///
    /// Example: specgate keys create --consumer acme --expires-in 90d
    Keys(specgate::keys_cli::KeysArgs),
    /// List every route: method, path, handler, effective policy chains (composites expanded),
    /// CORS policy and the environment variables it reads, in match order.
    ///
    /// Examples:
    ///   specgate routes specs/policy-showcase
    ///   specgate routes specs/policy-showcase --json | jq '.[] | select(.inbound != [])'
    Routes {
        /// The project folder.
        project: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show which route a request reaches and why (the gateway's own router and path
    /// normalisation), with its parameters, upstream URL and policy chains.
    ///
    /// Examples:
    ///   specgate explain specs/path-modes GET /users/42/orders?limit=5
    ///   specgate explain specs/web-api OPTIONS /notes --json
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
        Command::Generate { project, target } => {
            let Some(output) = run_generate(&project, &target.options()) else { return ExitCode::FAILURE };
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
        Command::Check { project, target } => {
            let Some(output) = run_generate(&project, &target.options()) else { return ExitCode::FAILURE };
            let drift = generate::check(&output, &target.out);
            if drift.is_clean() {
                eprintln!("{} is up to date with {}", target.out.display(), project.display());
                return ExitCode::SUCCESS;
            }
            eprintln!("{} differs from what `specgate generate` writes for {}:", target.out.display(), project.display());
            for f in &drift.differing {
                eprintln!("  differs: {f}");
            }
            for f in &drift.missing {
                eprintln!("  missing: {f}");
            }
            for f in &drift.extra {
                eprintln!("  extra:   {f}");
            }
            eprintln!("run: specgate generate {} --out {}", project.display(), target.out.display());
            ExitCode::FAILURE
        }
        Command::Validate { project } => {
            let (loaded, diags) = specgate::project::load(&project, None);
            let files = loaded.as_ref().map(|p| p.files.clone()).unwrap_or_default();
            eprint!("{}", diags.render(&files, std::io::stderr().is_terminal()));
            // What a Zuplo project needs before it builds: Rust modules, missing built-ins.
            if let Some(p) = &loaded {
                let report = specgate::porting::report(p);
                if !report.is_clean() {
                    eprint!("{}", specgate::porting::render(&report));
                }
            }
            if diags.has_errors() {
                ExitCode::FAILURE
            } else {
                let (_, w) = diags.counts();
                if w == 0 {
                    eprintln!("{}: no problems found", project.display());
                }
                ExitCode::SUCCESS
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

fn run_generate(project: &std::path::Path, opts: &Options) -> Option<generate::Output> {
    let (output, diags, files) = generate::generate(project, opts);
    let rendered = diags.render(&files.unwrap_or_default(), std::io::stderr().is_terminal());
    eprint!("{rendered}");
    output
}
