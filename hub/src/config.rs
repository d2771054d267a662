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
    /// Cluster this hub belongs to; peers of other clusters are listed, never used [default: default]
    #[arg(long, env = "FERRY_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Join a cluster with a token from `ferry cluster token create` (through the first --peer); ignored once this hub is a member
    #[arg(long, env = "FERRY_JOIN", value_name = "TOKEN")]
    pub join: Option<String>,
    /// Plaintext without authentication (the global `--insecure`; set by
    /// the binary, not a flag of its own)
    #[arg(skip)]
    pub insecure: bool,
    /// Neither advertise nor browse with mDNS (only --peer peers are known)
    #[arg(long, env = "FERRY_NO_MDNS")]
    pub no_mdns: bool,
    /// Network interface mDNS may use, e.g. lo (repeatable) [default: every interface that is up]
    #[arg(
        long = "mdns-interface",
        value_name = "IFACE",
        env = "FERRY_MDNS_INTERFACES",
        value_delimiter = ','
    )]
    pub mdns_interfaces: Vec<String>,
    /// How often running functions are checkpointed, e.g. 30s; 0s turns it off [default: 30s]
    #[arg(long, env = "FERRY_CHECKPOINT_INTERVAL", value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Option<Duration>,
    /// A peer hub to probe without mDNS, HOST:PORT (repeatable)
    #[arg(long = "peer", value_name = "HOST:PORT", env = "FERRY_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// CPU this hub gives its functions, in cores (fractional allowed, e.g. 0.5) [default: the cgroup's CPU quota, else every CPU]
    #[arg(long, value_name = "CORES", env = "FERRY_CPUS", allow_negative_numbers = true, value_parser = parse_cpus)]
    pub cpus: Option<f64>,
    /// Rebalancing on overload: on, recommend (only log what it would do) or off [default: on]
    #[arg(long, value_name = "MODE", env = "FERRY_REBALANCE")]
    pub rebalance: Option<RebalanceMode>,
    /// Serve the HTTP API of an --insecure hub to callers beyond loopback too (a secure hub asks every caller for a credential instead)
    #[arg(long, env = "FERRY_HTTP_REMOTE")]
    pub http_remote: bool,
}

/// What a hub does about sustained overload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RebalanceMode {
    /// Move functions to peers with room; suspend what fits nowhere.
    #[default]
    On,
    /// Decide as `on` would, but only log and report the decisions.
    Recommend,
    /// Do nothing.
    Off,
}

impl RebalanceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RebalanceMode::On => "on",
            RebalanceMode::Recommend => "recommend",
            RebalanceMode::Off => "off",
        }
    }
}

/// `--cpus`: a positive, finite number of cores.
fn parse_cpus(text: &str) -> Result<f64, String> {
    let cores: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of cores (like 0.5 or 2)"))?;
    crate::runtime::cpu::check_cpus(cores)
}

/// The `[rebalance]` table of the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RebalanceFile {
    pub mode: Option<RebalanceMode>,
    /// Pressure (demand / capacity) above which a hub is overloaded.
    pub high_watermark: Option<f64>,
    /// Pressure below which a hub has room to resume what it suspended.
    pub low_watermark: Option<f64>,
    /// How long overload (or room) must last before the hub acts.
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    /// How long a moved function stays where it went.
    #[serde(default, with = "humantime_serde")]
    pub cooldown: Option<Duration>,
}

/// Rebalancing settings after precedence was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RebalanceConfig {
    pub mode: RebalanceMode,
    pub high_watermark: f64,
    pub low_watermark: f64,
    pub window: Duration,
    pub cooldown: Duration,
}

impl Default for RebalanceConfig {
    fn default() -> Self {
        RebalanceConfig {
            mode: RebalanceMode::On,
            high_watermark: 0.25,
            low_watermark: 0.05,
            window: Duration::from_secs(5),
            cooldown: Duration::from_secs(60),
        }
    }
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
    pub cluster_id: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub checkpoint_interval: Option<Duration>,
    pub mdns: Option<bool>,
    pub mdns_interfaces: Option<Vec<String>>,
    pub peers: Option<Vec<String>>,
    pub cpus: Option<f64>,
    pub rebalance: Option<RebalanceFile>,
    /// Confirms `--insecure` for a hub that listens beyond loopback.
    pub insecure: Option<bool>,
    /// The HTTP API of an insecure hub answers callers beyond loopback.
    pub http_remote: Option<bool>,
    /// How long the hub certificates this hub signs are valid (a hub that
    /// holds the cluster CA key); members renew theirs when a third is left.
    #[serde(default, with = "humantime_serde")]
    pub hub_certificate_lifetime: Option<Duration>,
    /// Host directories functions may mount, by name.
    pub resources: Option<crate::resources::Resources>,
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
    pub cluster_id: String,
    /// Zero: no periodic checkpoints.
    pub checkpoint_interval: Duration,
    pub mdns: bool,
    /// Empty: every interface that is up.
    pub mdns_interfaces: Vec<String>,
    /// `HOST:PORT` of static peers.
    pub peers: Vec<String>,
    /// Cores for functions; `None`: the cgroup quota or every CPU.
    pub cpus: Option<f64>,
    pub rebalance: RebalanceConfig,
    /// Plaintext and no authentication (`--insecure`).
    pub insecure: bool,
    /// `--join`: the token this hub joins a cluster with.
    pub join: Option<crate::trust::tokens::ParsedToken>,
    /// The config file says `insecure = true` too.
    pub insecure_confirmed: bool,
    /// How long the hub certificates this hub signs are valid.
    pub hub_certificate_lifetime: Duration,
    /// Host directories functions may mount (`[resources.NAME]`).
    pub resources: crate::resources::Resources,
    /// An insecure hub's HTTP API answers callers beyond loopback.
    pub http_remote: bool,
}

/// How often running functions are checkpointed unless configured otherwise.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(30);

/// The shortest hub certificate lifetime a signer may be set to.
pub const MIN_HUB_CERTIFICATE_LIFETIME: Duration = Duration::from_secs(10);

/// Cluster id of a hub started without `--cluster-id`.
pub const DEFAULT_CLUSTER_ID: &str = "default";

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
    #[error("invalid setting {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("invalid setting {key}: {reason}")]
    InvalidResource { key: String, reason: String },
}

/// The list given on the command line (or environment), else the file's.
fn non_empty_or(from_args: &[String], from_file: Option<Vec<String>>) -> Vec<String> {
    if from_args.is_empty() {
        from_file.unwrap_or_default()
    } else {
        from_args.to_vec()
    }
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
            cluster_id: args
                .cluster_id
                .clone()
                .or(file.cluster_id)
                .unwrap_or_else(|| DEFAULT_CLUSTER_ID.to_owned()),
            checkpoint_interval: args
                .checkpoint_interval
                .or(file.checkpoint_interval)
                .unwrap_or(DEFAULT_CHECKPOINT_INTERVAL),
            mdns: !args.no_mdns && file.mdns.unwrap_or(true),
            mdns_interfaces: non_empty_or(&args.mdns_interfaces, file.mdns_interfaces),
            peers: non_empty_or(&args.peers, file.peers),
            cpus: args.cpus.or(file.cpus),
            insecure: args.insecure,
            join: None,
            insecure_confirmed: file.insecure.unwrap_or(false),
            hub_certificate_lifetime: file
                .hub_certificate_lifetime
                .unwrap_or(crate::trust::setup::HUB_CERTIFICATE_LIFETIME),
            resources: file.resources.unwrap_or_default(),
            http_remote: args.http_remote || file.http_remote.unwrap_or(false),
            rebalance: {
                let table = file.rebalance.unwrap_or_default();
                let defaults = RebalanceConfig::default();
                RebalanceConfig {
                    mode: args.rebalance.or(table.mode).unwrap_or(defaults.mode),
                    high_watermark: table.high_watermark.unwrap_or(defaults.high_watermark),
                    low_watermark: table.low_watermark.unwrap_or(defaults.low_watermark),
                    window: table.window.unwrap_or(defaults.window),
                    cooldown: table.cooldown.unwrap_or(defaults.cooldown),
                }
            },
        }
    }

    /// Checks what the types do not: numbers in range, watermarks in order.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.hub_certificate_lifetime < MIN_HUB_CERTIFICATE_LIFETIME {
            return Err(ConfigError::Invalid {
                key: "hub-certificate-lifetime",
                reason: format!(
                    "at least {} (members renew when a third is left)",
                    humantime::format_duration(MIN_HUB_CERTIFICATE_LIFETIME)
                ),
            });
        }
        if self.join.is_some() && self.peers.is_empty() {
            return Err(ConfigError::Invalid {
                key: "join",
                reason: "--join needs --peer HOST:PORT: the member (holding the cluster CA key) to join through"
                    .to_owned(),
            });
        }
        if self.join.is_some() && self.insecure {
            return Err(ConfigError::Invalid {
                key: "join",
                reason: "--join and --insecure exclude each other".to_owned(),
            });
        }
        if self.insecure && !self.listen.ip().is_loopback() && !self.insecure_confirmed {
            return Err(ConfigError::Invalid {
                key: "insecure",
                reason: format!(
                    "--insecure on {} would let anyone on the network deploy, read and move functions; \
                     to mean it, also put `insecure = true` in the config file",
                    self.listen
                ),
            });
        }
        crate::resources::validate_resources(&self.resources, &self.data_dir)
            .map_err(|(key, reason)| ConfigError::InvalidResource { key, reason })?;
        if let Some(cpus) = self.cpus {
            crate::runtime::cpu::check_cpus(cpus).map_err(|reason| ConfigError::Invalid { key: "cpus", reason })?;
        }
        let rebalance = &self.rebalance;
        for (key, value) in [
            ("rebalance.high-watermark", rebalance.high_watermark),
            ("rebalance.low-watermark", rebalance.low_watermark),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("must be a number of at least 0, not {value}"),
                });
            }
        }
        if rebalance.low_watermark >= rebalance.high_watermark {
            return Err(ConfigError::Invalid {
                key: "rebalance.low-watermark",
                reason: format!(
                    "must be below the high watermark ({} ≥ {})",
                    rebalance.low_watermark, rebalance.high_watermark
                ),
            });
        }
        if rebalance.window.is_zero() {
            return Err(ConfigError::Invalid {
                key: "rebalance.window",
                reason: "must be longer than 0s".to_owned(),
            });
        }
        Ok(())
    }

    /// Reads the config file named by the flags (if any) and resolves.
    pub fn from_args(args: &AgentArgs) -> Result<AgentConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let mut config = AgentConfig::resolve(args, file, std::env::var("RUST_LOG").ok());
        if let Some(token) = &args.join {
            config.join = Some(
                token
                    .parse()
                    .map_err(|reason| ConfigError::Invalid { key: "join", reason })?,
            );
        }
        config.validate()?;
        Ok(config)
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
                cluster_id: "default".to_owned(),
                checkpoint_interval: Duration::from_secs(30),
                mdns: true,
                mdns_interfaces: Vec::new(),
                peers: Vec::new(),
                cpus: None,
                rebalance: RebalanceConfig::default(),
                insecure: false,
                join: None,
                insecure_confirmed: false,
                hub_certificate_lifetime: Duration::from_secs(30 * 24 * 3600),
                resources: Default::default(),
                http_remote: false,
            }
        );
    }

    #[test]
    fn resources_come_from_the_config_file_and_are_checked() {
        let outside = tempfile::tempdir().unwrap();
        let offered = file(&format!(
            "[resources.samples]\npath = {:?}\naccess = \"ro\"\n",
            outside.path().display().to_string()
        ));
        let config = AgentConfig::resolve(&AgentArgs::default(), offered, None);
        assert_eq!(config.resources["samples"].access, crate::resources::Access::Ro);
        config.validate().unwrap();
        let refused = AgentConfig::resolve(
            &AgentArgs::default(),
            file("[resources.kernel]\npath = \"/proc\"\naccess = \"ro\"\n"),
            None,
        )
        .validate()
        .unwrap_err();
        assert!(
            refused.to_string().contains("resources.kernel") && refused.to_string().contains("/proc"),
            "{refused}"
        );
        let mistyped: Result<FileConfig, _> = toml::from_str("[resources.x]\npath = \"/srv\"\naccess = \"rwx\"\n");
        assert!(mistyped.is_err());
    }

    #[test]
    fn insecure_beyond_loopback_needs_the_config_file_to_say_so_too() {
        let args = AgentArgs {
            insecure: true,
            listen: Some("0.0.0.0:7411".parse().unwrap()),
            ..AgentArgs::default()
        };
        let refused = AgentConfig::resolve(&args, FileConfig::default(), None)
            .validate()
            .unwrap_err();
        assert!(refused.to_string().contains("insecure = true"), "{refused}");
        AgentConfig::resolve(&args, file("insecure = true"), None)
            .validate()
            .unwrap();
        let loopback = AgentArgs {
            insecure: true,
            ..AgentArgs::default()
        };
        AgentConfig::resolve(&loopback, FileConfig::default(), None)
            .validate()
            .unwrap();
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
                cluster-id = "farm"
                mdns = false
                mdns-interfaces = ["eth1"]
                peers = ["10.0.0.2:7411"]
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
        assert_eq!(config.cluster_id, "farm");
        assert!(!config.mdns);
        assert_eq!(config.mdns_interfaces, ["eth1"]);
        assert_eq!(config.peers, ["10.0.0.2:7411"]);
    }

    #[test]
    fn flags_and_environment_override_the_file() {
        let args = AgentArgs {
            name: Some("from-flag".to_owned()),
            listen: Some("127.0.0.1:1".parse().unwrap()),
            no_mdns: true,
            peers: vec!["127.0.0.1:2".to_owned()],
            ..AgentArgs::default()
        };
        let config = AgentConfig::resolve(
            &args,
            file(
                "name = \"from-file\"\nlisten = \"0.0.0.0:9000\"\nlog = \"debug\"\nmdns = true\npeers = [\"10.0.0.2:7411\"]",
            ),
            Some("warn".to_owned()),
        );
        assert!(!config.mdns, "--no-mdns beats the file");
        assert_eq!(config.peers, ["127.0.0.1:2"]);
        assert_eq!(config.name.as_deref(), Some("from-flag"));
        assert_eq!(config.listen, "127.0.0.1:1".parse::<SocketAddr>().unwrap());
        assert_eq!(config.log, "warn", "RUST_LOG is environment and beats the file");
    }

    #[test]
    fn cpus_and_rebalancing_come_from_flags_over_the_file() {
        let text = "cpus = 1.5\n[rebalance]\nmode = \"recommend\"\nhigh-watermark = 0.5\nwindow = \"10s\"";
        let config = AgentConfig::resolve(&AgentArgs::default(), file(text), None);
        assert_eq!(config.cpus, Some(1.5));
        assert_eq!(config.rebalance.mode, RebalanceMode::Recommend);
        assert_eq!(config.rebalance.high_watermark, 0.5);
        assert_eq!(config.rebalance.window, Duration::from_secs(10));
        assert_eq!(config.rebalance.cooldown, Duration::from_secs(60));
        let args = AgentArgs {
            cpus: Some(0.5),
            rebalance: Some(RebalanceMode::Off),
            ..AgentArgs::default()
        };
        let config = AgentConfig::resolve(&args, file(text), None);
        assert_eq!(config.cpus, Some(0.5));
        assert_eq!(config.rebalance.mode, RebalanceMode::Off);
    }

    #[test]
    fn bad_cpus_and_watermarks_are_refused_with_the_setting_named() {
        for bad in ["0", "-1", "abc", "nan", "inf"] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_cpus("0.25"), Ok(0.25));
        for (text, key) in [
            ("cpus = 0.0", "cpus"),
            ("cpus = -2.0", "cpus"),
            (
                "[rebalance]\nlow-watermark = 0.5\nhigh-watermark = 0.2",
                "rebalance.low-watermark",
            ),
            ("[rebalance]\nwindow = \"0s\"", "rebalance.window"),
        ] {
            let config = AgentConfig::resolve(&AgentArgs::default(), file(text), None);
            match config.validate() {
                Err(ConfigError::Invalid { key: named, .. }) => assert_eq!(named, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_keys_in_the_file_are_an_error() {
        assert!(toml::from_str::<FileConfig>("colour = \"blue\"").is_err());
    }
}
