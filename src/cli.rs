//! The command line: `serve`, `check`, `demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Parser)]
#[command(name = "payroute", version, about = "Smart-routing payment proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// Path of routes.toml.
        #[arg(long, default_value = "routes.toml")]
        config: PathBuf,
    },
    /// Validate a config: exit 0 with a summary, or 1 with every error.
    Check { file: PathBuf },
    /// The embedded showcase: mock acquirers, the proxy, traffic, a live table.
    Demo {
        /// How long the traffic runs, in seconds.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
}

/// Entry point of the `payroute` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Check { file } => check(&file),
        Command::Serve { config } => runtime().block_on(serve(config)),
        Command::Demo { seconds } => runtime().block_on(crate::demo::run(std::time::Duration::from_secs(seconds))),
    }
}

/// The main runtime (see `runtime`: payments run on the worker threads).
fn runtime() -> tokio::runtime::Runtime {
    match crate::runtime::main_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("payroute: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}

fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn check(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            for w in config.warnings() {
                eprintln!("{}: warning: {w}", file.display());
            }
            println!("{}: ok: {}", file.display(), config.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn serve(path: PathBuf) -> ExitCode {
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("payroute: cannot read {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let config = match Config::parse(&text, &path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("payroute: invalid config: {e}");
            for line in e.lines().iter().skip(1) {
                eprintln!("{line}");
            }
            return ExitCode::FAILURE;
        }
    };
    let summary = config.summary();
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let running = match crate::serve::start(config, text, Some(path)).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("payroute: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        "payroute ready listen={} admin={} ({summary})",
        running.payments,
        running.admin
    );
    wait_for_termination().await;
    running.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_termination() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
