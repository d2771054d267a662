//! The peer a `migrate` names: a hub of the peer table this hub may move a
//! function to, or the reason it may not.

use ferry_discovery::{Compatibility, PeerSnapshot, PeerState};

use super::HubApi;
use crate::error::HubError;
use crate::migration::Target;

impl HubApi {
    /// The peer `to` names (hub id, name or address), if this hub may move a function there.
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
        let peer = named(to, &peers).map_err(unusable)?;
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
        if let Some(reason) = refusal(peer, &self.inner.cluster_id) {
            return Err(unusable(reason));
        }
        if peer.state == PeerState::Suspect {
            tracing::debug!(peer = to, "moving to a peer that missed its last probes");
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

/// Why a user's move may not go to `peer`, if it may not. A hub that only
/// missed its last probes (suspect) is tried: it answered before, with this
/// cluster's identity, and the move's own connection is a better probe than
/// the one that timed out on a busy hub or a slow link; a move to a hub that
/// is gone fails cleanly and the function runs on where it is. Rebalancing
/// and forwarding still take only usable peers.
fn refusal(peer: &PeerSnapshot, cluster_id: &str) -> Option<String> {
    let known_suspect =
        peer.state == PeerState::Suspect && peer.verified && peer.compatibility == Some(Compatibility::Compatible);
    if peer.is_usable() || known_suspect {
        return None;
    }
    Some(match (peer.state, peer.compatibility) {
        (_, Some(Compatibility::ForeignCluster)) => format!(
            "it belongs to cluster {:?}, this hub to {cluster_id:?}",
            peer.identity
                .as_ref()
                .map(|identity| identity.cluster_id.as_str())
                .unwrap_or_default(),
        ),
        (_, Some(Compatibility::IncompatibleProtocol)) => "it speaks another protocol version".to_owned(),
        (PeerState::Down, _) => "it is down".to_owned(),
        (PeerState::Suspect, _) => "it missed its last probes and was never verified (suspect)".to_owned(),
        _ => "it has not answered a probe yet".to_owned(),
    })
}

/// The peer of `peers` at the address `to` (`HOST:PORT`, as `ferry peers`
/// shows it), if it is one: the usable one, when a hub set up again there
/// left its old entry down.
fn at_address<'a>(to: &str, peers: &'a [PeerSnapshot]) -> Result<&'a PeerSnapshot, String> {
    let unknown = || "no hub of that name, id or address is in the peer table (see `ferry peers`)".to_owned();
    let address: std::net::SocketAddr = to.parse().map_err(|_| unknown())?;
    let there: Vec<&PeerSnapshot> = peers.iter().filter(|peer| peer.address == Some(address)).collect();
    match there.as_slice() {
        [] => Err(unknown()),
        [peer] => Ok(peer),
        several => several
            .iter()
            .find(|peer| peer.is_usable())
            .copied()
            .ok_or_else(|| format!("several hubs were at {address} and none answers now; give the hub id")),
    }
}

/// The peer of `peers` that `to` names: the one whose hub id it is, else the
/// only one of that name, else — when several share the name — the only one
/// of them that is usable if the others are down. A hub set up again under
/// its old name (a new data directory) has a new id, and the old one stays in
/// the table, down: the name means the one that is there. A hub that only
/// missed a probe (suspect) may be another one that is meant, so then, as
/// whenever it is not clear, the error lists them.
fn named<'a>(to: &str, peers: &'a [PeerSnapshot]) -> Result<&'a PeerSnapshot, String> {
    if let Some(peer) = peers.iter().find(|peer| peer.id() == Some(to)) {
        return Ok(peer);
    }
    let same_name: Vec<&PeerSnapshot> = peers.iter().filter(|peer| peer.name() == Some(to)).collect();
    match same_name.as_slice() {
        [] => at_address(to, peers),
        [peer] => Ok(peer),
        several => {
            let usable: Vec<&&PeerSnapshot> = several.iter().filter(|peer| peer.is_usable()).collect();
            let others_down = several
                .iter()
                .all(|peer| peer.is_usable() || peer.state == PeerState::Down);
            if let ([peer], true) = (usable.as_slice(), others_down) {
                return Ok(peer);
            }
            let listed: Vec<String> = several
                .iter()
                .map(|peer| format!("{} ({})", peer.id().unwrap_or("id unknown"), peer.state))
                .collect();
            Err(format!(
                "several hubs have that name: {}; give the hub id",
                listed.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use ferry_discovery::{PeerIdentity, PeerKey, PeerSource};

    use super::*;

    fn peer(id: &str, name: &str, state: PeerState) -> PeerSnapshot {
        PeerSnapshot {
            key: PeerKey::Id(id.to_owned()),
            identity: Some(PeerIdentity {
                hub_id: id.to_owned(),
                hub_name: name.to_owned(),
                cluster_id: "c".to_owned(),
                protocol_version: 1,
                load: 0,
            }),
            verified: true,
            compatibility: Some(Compatibility::Compatible),
            addresses: Vec::new(),
            address: None,
            source: PeerSource::Static,
            state,
            last_seen: None,
        }
    }

    fn id_of(result: Result<&PeerSnapshot, String>) -> Result<&str, String> {
        result.map(|peer| peer.id().unwrap_or_default())
    }

    #[test]
    fn a_move_goes_to_a_known_hub_that_missed_probes_but_not_to_one_down_or_unverified() {
        assert_eq!(refusal(&peer("one", "edge", PeerState::Up), "c"), None);
        assert_eq!(refusal(&peer("one", "edge", PeerState::Suspect), "c"), None);
        assert_eq!(
            refusal(&peer("one", "edge", PeerState::Down), "c").as_deref(),
            Some("it is down")
        );
        let unverified = PeerSnapshot {
            verified: false,
            ..peer("one", "edge", PeerState::Suspect)
        };
        assert!(refusal(&unverified, "c").unwrap().contains("never verified"));
        let foreign = PeerSnapshot {
            compatibility: Some(Compatibility::ForeignCluster),
            ..peer("one", "edge", PeerState::Suspect)
        };
        assert!(refusal(&foreign, "c").unwrap().contains("belongs to cluster"));
    }

    #[test]
    fn a_name_shared_with_a_hub_that_is_down_means_the_one_that_is_up() {
        let peers = [peer("old", "edge", PeerState::Down), peer("new", "edge", PeerState::Up)];
        assert_eq!(id_of(named("edge", &peers)), Ok("new"));
        assert_eq!(id_of(named("old", &peers)), Ok("old"));
    }

    #[test]
    fn a_name_two_usable_hubs_share_is_refused_with_their_ids() {
        let peers = [
            peer("one", "edge", PeerState::Up),
            peer("two", "edge", PeerState::Up),
            peer("three", "edge", PeerState::Down),
        ];
        let error = named("edge", &peers).unwrap_err();
        assert!(error.contains("one (up), two (up), three (down)"), "{error}");
        assert!(error.ends_with("give the hub id"), "{error}");
        assert_eq!(id_of(named("two", &peers)), Ok("two"));
    }

    #[test]
    fn a_name_shared_with_a_suspect_hub_is_refused_rather_than_guessed() {
        let peers = [
            peer("one", "edge", PeerState::Up),
            peer("two", "edge", PeerState::Suspect),
        ];
        assert!(named("edge", &peers).unwrap_err().contains("one (up), two (suspect)"));
    }

    #[test]
    fn a_name_no_usable_hub_has_is_refused_rather_than_guessed() {
        let peers = [
            peer("one", "edge", PeerState::Down),
            peer("two", "edge", PeerState::Suspect),
        ];
        assert!(named("edge", &peers).unwrap_err().contains("one (down), two (suspect)"));
        assert!(named("nowhere", &peers).unwrap_err().contains("no hub of that name"));
    }

    #[test]
    fn an_address_names_the_hub_there_and_the_one_that_answers_when_two_were() {
        let at = |id, state, address: &str| PeerSnapshot {
            address: Some(address.parse().unwrap()),
            ..peer(id, id, state)
        };
        let peers = [
            at("old", PeerState::Down, "10.0.0.2:7411"),
            at("new", PeerState::Up, "10.0.0.2:7411"),
            at("other", PeerState::Up, "10.0.0.3:7411"),
        ];
        assert_eq!(id_of(named("10.0.0.3:7411", &peers)), Ok("other"));
        assert_eq!(id_of(named("10.0.0.2:7411", &peers)), Ok("new"));
        let error = named("10.0.0.9:7411", &peers).unwrap_err();
        assert!(error.contains("no hub of that name, id or address"), "{error}");
        let gone = [
            at("old", PeerState::Down, "10.0.0.2:7411"),
            at("older", PeerState::Down, "10.0.0.2:7411"),
        ];
        assert!(named("10.0.0.2:7411", &gone).unwrap_err().contains("none answers now"));
    }
}
