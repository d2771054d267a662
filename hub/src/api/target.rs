//! The peer a `migrate` names: a hub of the peer table this hub may move a
//! function to, or the reason it may not.

use ferry_discovery::{Compatibility, PeerSnapshot, PeerState};

use super::HubApi;
use crate::error::HubError;
use crate::migration::Target;

impl HubApi {
    /// The peer `to` names (hub id or name), if this hub may move a function there.
    pub(super) fn resolve_target(&self, to: &str) -> Result<Target, HubError> {
        let unusable = |reason: String| HubError::PeerUnusable {
            hub: to.to_owned(),
            reason,
        };
        let identity = self.supervisor().identity();
        if to == identity.id || to == identity.name {
            return Err(unusable("that is this hub".to_owned()));
        }
        let peers = self.inner.peers.borrow();
        let matches: Vec<&PeerSnapshot> = peers
            .iter()
            .filter(|peer| peer.id() == Some(to) || peer.name() == Some(to))
            .collect();
        let peer = match matches.as_slice() {
            [] => {
                return Err(unusable(
                    "no hub of that name or id is in the peer table (see `ferry peers`)".to_owned(),
                ));
            }
            [peer] => *peer,
            _ => return Err(unusable("several hubs have that name; give the hub id".to_owned())),
        };
        if let Some(hub_id) = peer.id().filter(|hub_id| {
            self.inner
                .revocations
                .as_ref()
                .is_some_and(|revocations| revocations.is_revoked(hub_id))
        }) {
            return Err(unusable(format!(
                "hub {hub_id} was removed from the cluster (ferry cluster rm)"
            )));
        }
        if !peer.is_usable() {
            let reason = match (peer.state, peer.compatibility) {
                (_, Some(Compatibility::ForeignCluster)) => format!(
                    "it belongs to cluster {:?}, this hub to {:?}",
                    peer.identity
                        .as_ref()
                        .map(|identity| identity.cluster_id.as_str())
                        .unwrap_or_default(),
                    self.inner.cluster_id
                ),
                (_, Some(Compatibility::IncompatibleProtocol)) => "it speaks another protocol version".to_owned(),
                (PeerState::Down, _) => "it is down".to_owned(),
                (PeerState::Suspect, _) => "it missed its last probes (suspect)".to_owned(),
                _ => "it has not answered a probe yet".to_owned(),
            };
            return Err(unusable(reason));
        }
        let address = peer
            .address
            .ok_or_else(|| unusable("its address is unknown".to_owned()))?;
        Ok(Target {
            hub_id: peer.id().unwrap_or_default().to_owned(),
            hub_name: peer.name().unwrap_or_default().to_owned(),
            address,
            automatic: None,
        })
    }
}
