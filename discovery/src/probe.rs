//! Liveness probes: the one way discovery learns that a peer is alive.
//!
//! Discovery never opens a connection itself. The hub implements [`Prober`]
//! (with a gRPC health call over TLS); tests implement it in-process.

use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::txt::{self, TxtError, TxtField};

/// Who answered a probe, as the peer itself reports it.
///
/// Unlike a TXT record, this comes over the authenticated probe channel, so
/// the peer table trusts it over what mDNS suggested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Hub id (same rules as [`crate::HubAdvert::id`]).
    pub hub_id: String,
    /// Hub name (same rules as [`crate::HubAdvert::name`]).
    pub hub_name: String,
    /// Cluster id (same rules as [`crate::HubAdvert::cluster`]).
    pub cluster_id: String,
    /// Ferry protocol version the peer speaks.
    pub protocol_version: u32,
    /// Coarse load figure (see [`crate::HubAdvert::load`]).
    pub load: u32,
}

impl PeerIdentity {
    /// Checks the same rules a TXT record must follow.
    pub fn validate(&self) -> Result<(), TxtError> {
        txt::validate_id(TxtField::Id, &self.hub_id)?;
        txt::validate_name(TxtField::Name, &self.hub_name)?;
        txt::validate_id(TxtField::Cluster, &self.cluster_id)?;
        txt::validate_load(self.load)
    }
}

impl From<&crate::HubAdvert> for PeerIdentity {
    fn from(advert: &crate::HubAdvert) -> Self {
        Self {
            hub_id: advert.id.clone(),
            hub_name: advert.name.clone(),
            cluster_id: advert.cluster.clone(),
            protocol_version: advert.proto,
            load: advert.load,
        }
    }
}

/// Why a probe did not confirm a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The probe did not complete in time; discovery produces this itself
    /// when [`crate::DiscoveryConfig::probe_timeout`] runs out.
    #[error("probe timed out after {0:?}")]
    TimedOut(Duration),
    /// The peer answered but said it is not serving.
    #[error("peer is not serving")]
    NotServing,
    /// The probe could not reach the peer or the call failed.
    #[error("probe failed")]
    Failed(#[source] Box<dyn Error + Send + Sync>),
}

impl ProbeError {
    /// Wraps any error as [`ProbeError::Failed`].
    pub fn failed(error: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::Failed(error.into())
    }
}

/// Checks whether a peer at an address is alive, and who it is.
///
/// Discovery calls `probe` concurrently for several peers and bounds every
/// call with its own timeout, so an implementation needs no timeout of its
/// own; it should fail fast on refused connections.
pub trait Prober: Send + Sync + 'static {
    /// Probes the hub listening at `addr` (its gRPC address).
    fn probe(&self, addr: SocketAddr) -> impl Future<Output = Result<PeerIdentity, ProbeError>> + Send;
}
