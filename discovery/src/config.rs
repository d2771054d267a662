//! Configuration of the discovery runtime, and its errors.

use std::net::SocketAddr;
use std::time::Duration;

use crate::txt::{HubAdvert, TxtError};

/// Default [`DiscoveryConfig::probe_interval`].
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Default [`DiscoveryConfig::probe_timeout`].
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Default [`DiscoveryConfig::suspect_after`].
pub const DEFAULT_SUSPECT_AFTER: Duration = Duration::from_millis(750);
/// Default [`DiscoveryConfig::down_after`].
pub const DEFAULT_DOWN_AFTER: Duration = Duration::from_secs(2);
/// Default [`DiscoveryConfig::slow_probe_interval`].
pub const DEFAULT_SLOW_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Default [`DiscoveryConfig::load_refresh_interval`].
pub const DEFAULT_LOAD_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// How discovery runs. Build it with [`DiscoveryConfig::new`], which sets
/// every timing to its documented default, then adjust fields.
///
/// With the defaults a peer killed with `kill -9` is down within
/// `down_after` plus one `probe_interval` (about 2.25 s) of its last answer,
/// and a peer that stops gracefully is down as soon as its mDNS goodbye
/// arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// What we advertise. `local.load` is the load advertised at start;
    /// [`crate::DiscoveryHandle::set_load`] changes it later.
    pub local: HubAdvert,
    /// Whether to advertise and browse with mDNS (default `true`). `false`
    /// (`--no-mdns`) leaves only the static peers.
    pub mdns_enabled: bool,
    /// Interfaces mDNS may use, by name (`--mdns-interface`, default empty:
    /// every interface that is up). `["lo"]` keeps every mDNS packet on
    /// loopback. See `NOTES-mdns.md` for what mdns-sd does before the
    /// restriction applies.
    pub mdns_interfaces: Vec<String>,
    /// The address to advertise when the hub listens on one address only
    /// (default `None`: the addresses of the interfaces mDNS uses).
    pub advertised_address: Option<std::net::IpAddr>,
    /// Peers to probe without mDNS (`--peer HOST:PORT`, default none); see
    /// [`crate::resolve_static_peers`] to resolve host names.
    pub static_peers: Vec<SocketAddr>,
    /// How often live peers are probed (default 250 ms).
    pub probe_interval: Duration,
    /// How long one probe may take before it counts as failed (default 500 ms).
    pub probe_timeout: Duration,
    /// An up peer without an answer for this long is suspect (default 750 ms).
    pub suspect_after: Duration,
    /// A peer without an answer for this long is down (default 2 s).
    pub down_after: Duration,
    /// How often down peers are probed (default 1 s).
    pub slow_probe_interval: Duration,
    /// How often the advertised load may change (default 1 s): each change
    /// is a multicast announcement.
    pub load_refresh_interval: Duration,
}

impl DiscoveryConfig {
    /// A configuration advertising `local`, with mDNS on every interface,
    /// no static peers and the default timings.
    pub fn new(local: HubAdvert) -> Self {
        Self {
            local,
            mdns_enabled: true,
            mdns_interfaces: Vec::new(),
            advertised_address: None,
            static_peers: Vec::new(),
            probe_interval: DEFAULT_PROBE_INTERVAL,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            suspect_after: DEFAULT_SUSPECT_AFTER,
            down_after: DEFAULT_DOWN_AFTER,
            slow_probe_interval: DEFAULT_SLOW_PROBE_INTERVAL,
            load_refresh_interval: DEFAULT_LOAD_REFRESH_INTERVAL,
        }
    }

    /// Checks the advert and that the timings make sense together.
    pub fn validate(&self) -> Result<(), DiscoveryError> {
        self.local.validate().map_err(DiscoveryError::InvalidLocalAdvert)?;
        let positive = [
            ("probe_interval", self.probe_interval),
            ("probe_timeout", self.probe_timeout),
            ("suspect_after", self.suspect_after),
            ("slow_probe_interval", self.slow_probe_interval),
            ("load_refresh_interval", self.load_refresh_interval),
        ];
        for (field, value) in positive {
            if value.is_zero() {
                return Err(DiscoveryError::InvalidConfig {
                    field,
                    reason: "must be more than zero",
                });
            }
        }
        if self.down_after <= self.suspect_after {
            return Err(DiscoveryError::InvalidConfig {
                field: "down_after",
                reason: "must be longer than suspect_after",
            });
        }
        if self.mdns_interfaces.iter().any(String::is_empty) {
            return Err(DiscoveryError::InvalidConfig {
                field: "mdns_interfaces",
                reason: "interface names must not be empty",
            });
        }
        Ok(())
    }
}

/// Why discovery could not start or stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// Our own advert breaks the TXT rules.
    #[error("invalid local advert")]
    InvalidLocalAdvert(#[source] TxtError),
    /// A configuration value is unusable.
    #[error("invalid discovery config: `{field}` {reason}")]
    InvalidConfig {
        /// The offending [`DiscoveryConfig`] field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// [`crate::Discovery::start`] was called outside a tokio runtime.
    #[error("discovery must start inside a tokio runtime")]
    NoRuntime,
    /// The mDNS daemon failed.
    #[error("mdns daemon failed")]
    Mdns(#[from] mdns_sd::Error),
    /// A static peer `HOST:PORT` did not resolve.
    #[error("cannot resolve static peer `{spec}`")]
    StaticPeer {
        /// The peer as configured.
        spec: String,
        /// The resolver error.
        #[source]
        source: std::io::Error,
    },
    /// The discovery task panicked or was cancelled.
    #[error("discovery task failed")]
    TaskFailed(#[source] tokio::task::JoinError),
}
