//! An in-process fake of the LAN as probes see it: which hub answers at
//! which address.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_discovery::{DiscoveryHandle, HubAdvert, PeerIdentity, PeerSnapshot, ProbeError, Prober};

/// Guards every wait so a broken test fails instead of hanging. It is not
/// a timing requirement: with real time nothing comes close to it.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// How a fake hub reacts to a probe.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Answers with this identity.
    Answer(PeerIdentity),
    /// Refuses the connection, as a killed hub's port does.
    Refuse,
    /// Never answers, as a frozen or unreachable hub.
    Hang,
}

/// The fake LAN, shared by every prober cloned from it.
#[derive(Debug, Clone, Default)]
pub struct FakeLan {
    hubs: Arc<Mutex<HashMap<SocketAddr, Behaviour>>>,
}

impl FakeLan {
    pub fn set(&self, addr: SocketAddr, behaviour: Behaviour) {
        self.hubs.lock().expect("fake lan lock").insert(addr, behaviour);
    }

    pub fn answer(&self, addr: SocketAddr, advert: &HubAdvert) {
        self.set(addr, Behaviour::Answer(PeerIdentity::from(advert)));
    }

    fn behaviour(&self, addr: SocketAddr) -> Behaviour {
        self.hubs
            .lock()
            .expect("fake lan lock")
            .get(&addr)
            .cloned()
            .unwrap_or(Behaviour::Refuse)
    }
}

impl Prober for FakeLan {
    fn probe(&self, addr: SocketAddr) -> impl Future<Output = Result<PeerIdentity, ProbeError>> + Send {
        let behaviour = self.behaviour(addr);
        async move {
            match behaviour {
                Behaviour::Answer(identity) => Ok(identity),
                Behaviour::Refuse => Err(ProbeError::failed("connection refused")),
                Behaviour::Hang => std::future::pending().await,
            }
        }
    }
}

/// A prober that never reaches anyone.
#[derive(Debug, Clone, Copy)]
pub struct Unreachable;

impl Prober for Unreachable {
    async fn probe(&self, _addr: SocketAddr) -> Result<PeerIdentity, ProbeError> {
        Err(ProbeError::failed("connection refused"))
    }
}

pub fn advert(id: &str, name: &str, port: u16) -> HubAdvert {
    HubAdvert {
        id: id.into(),
        name: name.into(),
        port,
        proto: 1,
        cluster: "lab".into(),
        load: 0,
    }
}

/// Waits until the peer list satisfies `condition`, and returns it.
pub async fn wait_for_peers(
    handle: &DiscoveryHandle,
    what: &str,
    condition: impl Fn(&[PeerSnapshot]) -> bool,
) -> Vec<PeerSnapshot> {
    let mut peers = handle.watch_peers();
    let waited = tokio::time::timeout(HANG_GUARD, peers.wait_for(|peers| condition(peers))).await;
    match waited {
        Ok(Ok(peers)) => peers.clone(),
        Ok(Err(_)) => panic!("discovery stopped while waiting for {what}"),
        Err(_) => panic!("never saw {what}; last peers: {:#?}", handle.peers()),
    }
}

/// The peer with hub id `id`, if listed.
pub fn peer<'a>(peers: &'a [PeerSnapshot], id: &str) -> Option<&'a PeerSnapshot> {
    peers.iter().find(|peer| peer.id() == Some(id))
}
