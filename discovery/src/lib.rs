//! Peer discovery for Ferry hubs.
//!
//! Every hub advertises `_ferry._tcp.local.` over mDNS with a TXT record
//! ([`HubAdvert`]: hub id, name, gRPC port, protocol version, cluster id and
//! a coarse load figure), browses for the same service type, and keeps a
//! [`PeerTable`]. mDNS only *suggests* peers: a peer is
//! [`PeerState::Up`] only after a probe answered, through the [`Prober`] the
//! hub supplies. Static peers (`--peer`) are probed the same way, with or
//! without mDNS.
//!
//! # Architecture invariant
//!
//! Discovery knows nothing about wasm, sled or tonic services, and never
//! opens a gRPC connection itself: liveness comes only through [`Prober`],
//! which the hub implements with a gRPC health call.
//!
//! # Code map
//!
//! - `txt`: the advertised record, [`HubAdvert`], parsed defensively.
//! - `table`: [`PeerTable`], the pure peer state machine; no I/O, no clock.
//! - `mdns`: the only module that talks to mdns-sd.
//! - `runtime`: [`Discovery::start`] and the task that ties them together.
//!
//! # Example
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use ferry_discovery::{
//!     Discovery, DiscoveryConfig, HubAdvert, PeerIdentity, ProbeError, Prober,
//! };
//!
//! struct HealthProber;
//!
//! impl Prober for HealthProber {
//!     async fn probe(&self, _addr: SocketAddr) -> Result<PeerIdentity, ProbeError> {
//!         Err(ProbeError::NotServing)
//!     }
//! }
//!
//! # async fn run() -> Result<(), ferry_discovery::DiscoveryError> {
//! let mut config = DiscoveryConfig::new(HubAdvert {
//!     id: "hub-a".into(),
//!     name: "kitchen".into(),
//!     port: 7000,
//!     proto: 1,
//!     cluster: "home".into(),
//!     load: 0,
//! });
//! config.mdns_interfaces = vec!["lo".into()];
//! let discovery = Discovery::start(config, HealthProber)?;
//! discovery.set_load(120);
//! for peer in discovery.peers() {
//!     println!("{} {}", peer.key, peer.state);
//! }
//! discovery.shutdown().await
//! # }
//! ```

mod config;
mod mdns;
mod probe;
mod runtime;
mod table;
mod txt;

pub use config::{
    DEFAULT_DOWN_AFTER, DEFAULT_LOAD_REFRESH_INTERVAL, DEFAULT_PROBE_INTERVAL, DEFAULT_PROBE_TIMEOUT,
    DEFAULT_SLOW_PROBE_INTERVAL, DEFAULT_SUSPECT_AFTER, DiscoveryConfig, DiscoveryError,
};
pub use probe::{PeerIdentity, ProbeError, Prober};
pub use runtime::{Discovery, DiscoveryHandle, PeerSuggester, resolve_static_peers};
pub use table::{
    AdvertOutcome, Compatibility, PeerKey, PeerSnapshot, PeerSource, PeerState, PeerTable, ProbeOutcome, ProbeTarget,
    TableConfig,
};
pub use txt::{
    HubAdvert, ID_MAX_LEN, LOAD_MAX, NAME_MAX_BYTES, NAME_MAX_CHARS, SERVICE_TYPE, TxtError, TxtField, TxtProblem,
    validate_id, validate_load, validate_name,
};
