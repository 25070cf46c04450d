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
    /// Print the diagnostics of a project without generating anything.
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
            let files = loaded.map(|p| p.files).unwrap_or_default();
            eprint!("{}", diags.render(&files, std::io::stderr().is_terminal()));
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

fn run_generate(project: &std::path::Path, opts: &Options) -> Option<generate::Output> {
    let (output, diags, files) = generate::generate(project, opts);
    let rendered = diags.render(&files.unwrap_or_default(), std::io::stderr().is_terminal());
    eprint!("{rendered}");
    output
}
