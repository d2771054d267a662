//! The `ferry` binary: `ferry agent` runs a hub, every other subcommand talks to one.

use std::process::ExitCode;

use clap::Parser;
use ferry_hub::cli::{Cli, Command};
use ferry_hub::config::AgentConfig;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Agent(_)) {
        quiet_on_closed_stdout();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Agent(mut args) => {
            args.insecure = cli.insecure;
            let code = runtime.block_on(run_agent(args));
            // The hub has flushed what it could. Exit without waiting for
            // blocking threads or destructors: on a full or failing disk the
            // database's own flush can block forever.
            std::process::exit(code)
        }
        _ => runtime.block_on(ferry_hub::cli::run_client(cli)),
    }
}

async fn run_agent(args: ferry_hub::config::AgentArgs) -> i32 {
    let config = match AgentConfig::from_args(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {}", ferry_proto::error_chain(&error));
            return 2;
        }
    };
    ferry_hub::telemetry::init(&config.log);
    match ferry_hub::agent::run(config).await {
        Ok(()) => 0,
        Err(error) => {
            let message = anyhow::Error::from(error);
            tracing::error!(error = format!("{message:#}"), "hub failed");
            eprintln!("error: {message:#}");
            1
        }
    }
}

/// A client whose output pipe closed (`ferry ps | head -1`) ends quietly
/// with success, as `ferry logs` does, instead of panicking in `println!`.
/// (Not by putting SIGPIPE back to its default: a write to a socket the hub
/// closed would then kill the CLI without a word.)
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}
