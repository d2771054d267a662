//! The `ferry` command line: `ferry agent` runs a hub; every other command is
//! a gRPC client of one.

mod client;
mod commands;
mod manifest;
mod migrate;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytesize::ByteSize;
use clap::{Parser, Subcommand};

use crate::config::AgentArgs;

pub use client::{ClientError, DEFAULT_HUB, HubTarget, client_tls};

/// Run WebAssembly functions on edge hubs.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, propagate_version = true)]
pub struct Cli {
    /// Hub to talk to, HOST:PORT or a URL [default: 127.0.0.1:7411]
    #[arg(long, global = true, env = "FERRY_HUB")]
    pub hub: Option<String>,
    /// Print JSON instead of tables and text
    #[arg(long, global = true)]
    pub json: bool,
    /// Credential file (key, certificate, cluster CA) [default: ./ferry-data/admin.cred, then ~/.config/ferry/admin.cred]
    #[arg(long, global = true, env = "FERRY_CREDENTIALS", value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// Plaintext, no TLS and no authentication: a client talks to a hub
    /// started with --insecure; `ferry agent --insecure` starts one (loopback
    /// only, unless its config file says `insecure = true` too)
    #[arg(long, global = true, env = "FERRY_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a hub in the foreground
    Agent(AgentArgs),
    /// Store a module on the hub and start it as a named function
    Deploy(DeployArgs),
    /// List functions with their state, CPU time and memory
    Ps {
        /// Only these functions (each found wherever it runs); an unknown
        /// name is an error
        names: Vec<String>,
        /// Every hub's functions, not only this hub's (peers that do not
        /// answer within a second are left out)
        #[arg(long, short = 'a', conflicts_with = "names")]
        all: bool,
    },
    /// Print a function's output
    Logs(LogsArgs),
    /// Stop a function (it stays stopped across hub restarts)
    Stop {
        /// Function name
        name: String,
    },
    /// Take a durable checkpoint of a running function (it keeps running)
    Checkpoint {
        /// Function name
        name: String,
    },
    /// Checkpoint a function and stop it, freeing its memory
    Suspend {
        /// Function name
        name: String,
    },
    /// Continue a function from its latest checkpoint
    Resume {
        /// Function name
        name: String,
    },
    /// Stop and forget a function, its logs and its checkpoints
    Rm {
        /// Function name
        name: String,
    },
    /// Send a message to a function and print its reply
    Invoke(InvokeArgs),
    /// Move a running function to another hub while it runs
    Migrate(MigrateArgs),
    /// Show the hub's identity and versions
    Info,
    /// List the hubs this hub knows of, whether they are alive, and their CPU headroom
    Peers,
    /// Move every movable function off a hub and keep new deploys off it (until `undrain`)
    Drain {
        /// The hub to drain: its name or id, as `ferry peers` lists it (or this hub's)
        #[arg(value_name = "HUB")]
        target: String,
    },
    /// End a drain: the hub takes functions again
    Undrain {
        /// The hub: its name or id
        #[arg(value_name = "HUB")]
        target: String,
    },
    /// Cluster membership and credentials
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// What the hub decided on its own (rebalancing, drains), with reasons
    Events {
        /// Keep printing new events as they happen
        #[arg(short, long)]
        follow: bool,
        /// Only the last N events
        #[arg(long, value_name = "N")]
        tail: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Client credentials (a key, its certificate, the cluster CA: one file)
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Tokens new hubs join with (`ferry agent --join TOKEN --peer HOST:PORT`)
    #[command(subcommand)]
    Token(TokenCommand),
    /// Remove a hub from the cluster: every member refuses it within seconds
    Rm {
        /// The hub's id or name
        #[arg(value_name = "HUB")]
        removed: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a join token and print it (it is shown only now)
    Create {
        /// How long it is valid, e.g. 30m [default: 1h]
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// How many hubs may join with it [default: 1]
        #[arg(long)]
        uses: Option<u32>,
    },
    /// List the join tokens that can still be used
    Ls,
    /// Revoke a join token
    Rm {
        /// The token's id, as `ls` shows it
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Make a key here and have the hub certify it for a role; writes one credential file
    Create(CreateCredentialArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateCredentialArgs {
    /// Who the credential is for (shown in the hub's logs)
    pub name: String,
    /// viewer: ps, logs, peers, info, events; operator: everything a user does
    #[arg(long)]
    pub role: String,
    /// How long it is valid, e.g. 30d [default: 90 days]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// Where to write it (mode 0600) [default: ./NAME.cred]
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// A wasm32-wasi command module (or `module` in the manifest)
    pub file: Option<PathBuf>,
    /// Deployment manifest (TOML keys: name, module, args, env, memory-limit, cpus, priority, pin, volume, mount, messaging); flags override it
    #[arg(short = 'f', long = "manifest", value_name = "FN.TOML")]
    pub manifest: Option<PathBuf>,
    /// Function name (letters, digits, '-', '_', '.'; at most 63)
    #[arg(long)]
    pub name: Option<String>,
    /// The function's own directory, GUEST_PATH[:QUOTA], e.g. /data:256MiB; its files travel with it
    #[arg(long, value_name = "PATH[:QUOTA]", value_parser = manifest::parse_volume)]
    pub volume: Option<ferry_proto::v1::Volume>,
    /// A resource the hub offers, RESOURCE:GUEST_PATH[:ro|rw] (repeatable; default ro)
    #[arg(long = "mount", value_name = "RESOURCE:PATH[:ACCESS]", value_parser = manifest::parse_mount)]
    pub mounts: Vec<ferry_proto::v1::Mount>,
    /// The only functions this one may send to or invoke (repeatable)
    #[arg(long = "send-to", value_name = "FUNCTION")]
    pub send_to: Vec<String>,
    /// The only functions that may invoke or send to this one (repeatable)
    #[arg(long = "invoked-by", value_name = "FUNCTION")]
    pub invoked_by: Vec<String>,
    /// Upper bound of the function's linear memory, e.g. 64MiB [default: the hub's]
    #[arg(long)]
    pub memory_limit: Option<ByteSize>,
    /// Environment variable for the guest, KEY=VALUE (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Replace a function of the same name
    #[arg(long)]
    pub replace: bool,
    /// The most CPU the function may use, in cores, e.g. 0.25 [default: no cap of its own]
    #[arg(long, value_name = "CORES", allow_negative_numbers = true, value_parser = parse_function_cpus)]
    pub cpus: Option<f64>,
    /// Importance under overload, -1000..=1000: the lowest is suspended first [default: 0]
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-1000..=1000))]
    pub priority: Option<i32>,
    /// Never move or suspend this function automatically
    #[arg(long)]
    pub pin: bool,
    /// Arguments passed to the guest (after `--`)
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Function name
    pub name: String,
    /// Keep printing new output as it is written
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N entries
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    /// Also print hub lifecycle events (started, exited, failed, ...)
    #[arg(long)]
    pub events: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("message").required(true).args(["data", "data_file"])))]
pub struct InvokeArgs {
    /// Function name
    pub name: String,
    /// The message
    #[arg(long)]
    pub data: Option<String>,
    /// The message is this file's bytes (`-`: standard input)
    #[arg(long, value_name = "FILE")]
    pub data_file: Option<std::path::PathBuf>,
    /// How long to wait for the reply, at least 1ms, e.g. 5s [default: the hub's, 10s]
    #[arg(long, value_parser = reply_timeout)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Function name
    pub name: String,
    /// Destination hub: its name, id or address (HOST:PORT), as `ferry peers` lists it
    #[arg(long)]
    pub to: String,
}

/// `deploy --cpus`: a positive, finite number of cores.
fn parse_function_cpus(text: &str) -> Result<f64, String> {
    let cores: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of cores (like 0.25 or 1)"))?;
    crate::runtime::cpu::check_cpus(cores)
}

/// `--timeout` of `ferry invoke`: a duration of at least a millisecond
/// (the request counts in milliseconds, and 0 there means the hub's
/// default: a shorter one would silently wait 10 s).
fn reply_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if timeout < Duration::from_millis(1) {
        return Err("a reply timeout is at least 1ms (leave --timeout out for the hub's default, 10s)".to_owned());
    }
    Ok(timeout)
}

/// Runs a client command and turns its outcome into a process exit code.
pub async fn run_client(cli: Cli) -> ExitCode {
    let address = cli.hub.clone().unwrap_or_else(|| DEFAULT_HUB.to_owned());
    let cli_insecure = cli.insecure;
    let target = HubTarget {
        address,
        credentials: cli.credentials.clone(),
        insecure: cli.insecure,
    };
    match commands::run(&target, cli.json, cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        // `ferry logs x | head` closing the pipe is not an error.
        Err(ClientError::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(ClientError::Hub(status)) if client::connection_broke(&status) => {
            // A hub that died under the request broke the connection too:
            // the TLS hint only if the hub still refuses plaintext now.
            let tls = match cli_insecure && client::refuses_plaintext(&target).await {
                true => {
                    "; or what listens there does not speak plaintext gRPC (--insecure): a hub that uses TLS (drop --insecure and use a credential), or no ferry hub at all"
                }
                false => "",
            };
            eprintln!(
                "error: the connection to the hub broke before it answered ({}): the hub may be shutting down or \
                 restarting, and what was asked may or may not have been done (`ferry ps` shows){tls}",
                status.message()
            );
            // README's table: 5, hub unreachable or unavailable.
            ExitCode::from(5)
        }
        Err(error) => {
            eprintln!("error: {}", error.message());
            ExitCode::from(error.exit_code())
        }
    }
}
