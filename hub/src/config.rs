//! `ferry agent` settings and where they come from.
//!
//! One precedence, documented in the README: command-line flags over
//! environment variables (`FERRY_*`) over the TOML file given with
//! `--config` over embedded defaults. With no flags at all the agent runs on
//! the defaults below.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use thiserror::Error;

/// Port a hub listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7411;
/// Data directory of a hub started without `--data-dir`.
pub const DEFAULT_DATA_DIR: &str = "ferry-data";
/// Memory limit of a function deployed without `--memory-limit`.
pub const DEFAULT_MEMORY_LIMIT: ByteSize = ByteSize::mib(256);
/// How long `invoke` waits for a reply unless the request says otherwise.
pub const DEFAULT_INVOKE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT))
}

/// Flags of `ferry agent`; each also reads a `FERRY_*` environment variable.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct AgentArgs {
    /// Human name of this hub [default: <hostname>-<first 4 characters of the hub id>]
    #[arg(long, env = "FERRY_NAME")]
    pub name: Option<String>,
    /// Where the hub keeps its store [default: ./ferry-data]
    #[arg(long, env = "FERRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the gRPC server [default: 127.0.0.1:7411]; port 0 picks a free port
    #[arg(long, env = "FERRY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// TOML file with settings (flags and environment override it)
    #[arg(long, env = "FERRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log filter, RUST_LOG syntax [default: info; RUST_LOG is honoured too]
    #[arg(long, env = "FERRY_LOG")]
    pub log: Option<String>,
    /// Memory limit of functions deployed without one [default: 256 MiB]
    #[arg(long, env = "FERRY_DEFAULT_MEMORY_LIMIT")]
    pub default_memory_limit: Option<ByteSize>,
}

/// The `--config` file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub name: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub log: Option<String>,
    pub default_memory_limit: Option<ByteSize>,
    #[serde(default, with = "humantime_serde")]
    pub invoke_timeout: Option<Duration>,
}

/// Settings after precedence was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// `None`: the name stored in the data directory, or a generated one.
    pub name: Option<String>,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub log: String,
    pub default_memory_limit: ByteSize,
    pub invoke_timeout: Duration,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is invalid")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

impl AgentConfig {
    /// Applies the precedence: `args` (flags, then environment, as clap
    /// resolved them) over `file` over defaults. `rust_log` is the value of
    /// `RUST_LOG`, which counts as environment for the log filter.
    pub fn resolve(args: &AgentArgs, file: FileConfig, rust_log: Option<String>) -> AgentConfig {
        AgentConfig {
            name: args.name.clone().or(file.name),
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen: args.listen.or(file.listen).unwrap_or_else(default_listen),
            log: args
                .log
                .clone()
                .or(rust_log)
                .or(file.log)
                .unwrap_or_else(|| "info".to_owned()),
            default_memory_limit: args
                .default_memory_limit
                .or(file.default_memory_limit)
                .unwrap_or(DEFAULT_MEMORY_LIMIT),
            invoke_timeout: file.invoke_timeout.unwrap_or(DEFAULT_INVOKE_TIMEOUT),
        }
    }

    /// Reads the config file named by the flags (if any) and resolves.
    pub fn from_args(args: &AgentArgs) -> Result<AgentConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Ok(AgentConfig::resolve(args, file, std::env::var("RUST_LOG").ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn no_flags_and_no_file_gives_the_embedded_defaults() {
        let config = AgentConfig::resolve(&AgentArgs::default(), FileConfig::default(), None);
        assert_eq!(
            config,
            AgentConfig {
                name: None,
                data_dir: PathBuf::from("ferry-data"),
                listen: "127.0.0.1:7411".parse().unwrap(),
                log: "info".to_owned(),
                default_memory_limit: ByteSize::mib(256),
                invoke_timeout: Duration::from_secs(10),
            }
        );
    }

    #[test]
    fn file_values_override_defaults() {
        let config = AgentConfig::resolve(
            &AgentArgs::default(),
            file(
                r#"
                name = "from-file"
                data-dir = "/var/lib/ferry"
                listen = "0.0.0.0:9000"
                log = "debug"
                default-memory-limit = "64 MiB"
                invoke-timeout = "3s"
                "#,
            ),
            None,
        );
        assert_eq!(config.name.as_deref(), Some("from-file"));
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/ferry"));
        assert_eq!(config.listen, "0.0.0.0:9000".parse::<SocketAddr>().unwrap());
        assert_eq!(config.log, "debug");
        assert_eq!(config.default_memory_limit, ByteSize::mib(64));
        assert_eq!(config.invoke_timeout, Duration::from_secs(3));
    }

    #[test]
    fn flags_and_environment_override_the_file() {
        let args = AgentArgs {
            name: Some("from-flag".to_owned()),
            listen: Some("127.0.0.1:1".parse().unwrap()),
            ..AgentArgs::default()
        };
        let config = AgentConfig::resolve(
            &args,
            file("name = \"from-file\"\nlisten = \"0.0.0.0:9000\"\nlog = \"debug\""),
            Some("warn".to_owned()),
        );
        assert_eq!(config.name.as_deref(), Some("from-flag"));
        assert_eq!(config.listen, "127.0.0.1:1".parse::<SocketAddr>().unwrap());
        assert_eq!(config.log, "warn", "RUST_LOG is environment and beats the file");
    }

    #[test]
    fn unknown_keys_in_the_file_are_an_error() {
        assert!(toml::from_str::<FileConfig>("colour = \"blue\"").is_err());
    }
}
