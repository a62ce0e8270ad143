//! The command line: `serve`, `check`, `config example`, and the database commands
//! (`migrate`, `keys`, `usage`) in [`database`].

mod database;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Problems, EXAMPLE};
use crate::server::{shutdown_signal, Server};
use crate::telemetry;

#[derive(Parser)]
#[command(
    name = "proxima",
    version,
    about = "An LLM gateway: one OpenAI-compatible API in front of every provider."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ConfigArg),
    /// Validate a config; print every problem with its location; exit 1 on error.
    Check(ConfigArg),
    /// Config helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Apply the database migrations (`serve` also does at start).
    Migrate(ConfigArg),
    /// Manage virtual keys in the configured database.
    Keys {
        #[command(subcommand)]
        command: database::KeysCommand,
    },
    /// Spend and token report from the usage ledger.
    Usage(database::UsageArgs),
}

#[derive(clap::Args)]
pub(crate) struct ConfigArg {
    /// Config file. Default: $PROXIMA_CONFIG, else ./proxima.toml if present, else the built-in
    /// default (mock provider, plus providers whose API keys are in the environment).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a complete, commented example config.
    Example,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(arg) => serve(arg),
        Command::Check(arg) => check(arg),
        Command::Config {
            command: ConfigCommand::Example,
        } => {
            print!("{EXAMPLE}");
            ExitCode::SUCCESS
        }
        Command::Migrate(arg) => database::migrate(arg),
        Command::Keys { command } => database::keys(command),
        Command::Usage(args) => database::usage(args),
    }
}

/// The config file to use, if any, in order: `--config`, `PROXIMA_CONFIG`, `./proxima.toml`.
fn config_path(arg: ConfigArg) -> Option<PathBuf> {
    arg.config
        .or_else(|| {
            std::env::var_os("PROXIMA_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| {
            Path::new("proxima.toml")
                .exists()
                .then(|| PathBuf::from("proxima.toml"))
        })
}

/// The config and the file it came from (`None`: the built-in default).
pub(crate) fn load(arg: ConfigArg) -> Result<(Config, Option<PathBuf>), Problems> {
    match config_path(arg) {
        Some(path) => Ok((Config::load(&path)?, Some(path))),
        None => Ok((
            Config::builtin_default(&|name| std::env::var(name).ok()),
            None,
        )),
    }
}

fn describe(path: &Option<PathBuf>) -> String {
    path.as_ref().map_or_else(
        || "the built-in default".to_owned(),
        |p| p.display().to_string(),
    )
}

fn check(arg: ConfigArg) -> ExitCode {
    match load(arg) {
        Ok((config, path)) => {
            println!(
                "{} is valid: {} provider(s), {} model(s), {} key(s)",
                describe(&path),
                config.providers.len(),
                config.models.len(),
                config.keys.len()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{problems}");
            eprintln!("{} problem(s) found", problems.0.len());
            ExitCode::FAILURE
        }
    }
}

/// Master keys shorter than this are refused by `serve`: they could be guessed.
const MIN_MASTER_KEY_CHARS: usize = 16;

/// What placeholder secrets in examples and tutorials look like.
const PLACEHOLDERS: [&str; 3] = ["change-me", "changeme", "replace-me"];

/// Credentials `serve` refuses to run with: a master key that is a known placeholder or too
/// short, a static key that is a placeholder. Each says how to fix it.
fn weak_credentials(config: &Config) -> Vec<String> {
    let placeholder = |secret: &str| {
        let secret = secret.to_ascii_lowercase();
        PLACEHOLDERS.iter().any(|p| secret.contains(p))
    };
    let mut weak = Vec::new();
    if let Some(master) = &config.server.master_key {
        let master = master.expose();
        if placeholder(master) {
            weak.push("server.master_key is a placeholder from an example: set PROXIMA_MASTER_KEY (or master_key) to a secret of your own, e.g. `openssl rand -hex 24`".to_owned());
        } else if master.chars().count() < MIN_MASTER_KEY_CHARS {
            weak.push(format!("server.master_key is shorter than {MIN_MASTER_KEY_CHARS} characters: use a long random secret, e.g. `openssl rand -hex 24`"));
        }
    }
    for (name, key) in &config.keys {
        if placeholder(key.key.expose()) {
            weak.push(format!(
                "keys.{name}.key is a placeholder from an example: give it a secret of your own"
            ));
        }
    }
    weak
}

/// Builds the async runtime, or says why it cannot.
pub(crate) fn runtime(builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    let mut builder = builder;
    builder
        .enable_all()
        .build()
        .map_err(|e| eprintln!("proxima: cannot start the async runtime: {e}"))
        .ok()
}

fn serve(arg: ConfigArg) -> ExitCode {
    let (config, path) = match load(arg) {
        Ok(loaded) => loaded,
        Err(problems) => {
            eprintln!("{problems}");
            eprintln!(
                "proxima: not starting: the config has {} problem(s)",
                problems.0.len()
            );
            return ExitCode::FAILURE;
        }
    };
    let weak = weak_credentials(&config);
    if !weak.is_empty() {
        for problem in &weak {
            eprintln!("{}: {problem}", describe(&path));
        }
        eprintln!("proxima: not starting: a known or guessable credential would open the gateway");
        return ExitCode::FAILURE;
    }
    telemetry::init(config.log.format);
    // Worker 0 runs on this thread; `Server::run` starts the others, each on a runtime of its
    // own (see `server::workers`).
    let Some(runtime) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        let models = config.models.len();
        let origin = describe(&path);
        let server = match Server::bind(config, path).await {
            Ok(server) => server.with_workers(crate::worker::count_for_this_process()),
            Err(e) => {
                tracing::error!("not starting: {}", e.message);
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(config = %origin, models, "proxima listening on http://{}", server.local_addr());
        let state = server.state();
        state.gateway().auth.log_access(&state.services().directory);
        match server.run(shutdown_signal()).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("server failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
