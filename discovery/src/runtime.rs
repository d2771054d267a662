//! The discovery runtime: one task that owns the peer table and feeds it
//! mDNS events, probe results and clock ticks.
//!
//! Every timer is a `tokio::time` timer, so tests can pause time.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{Id as TaskId, JoinError, JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, trace, warn};

use crate::config::{DiscoveryConfig, DiscoveryError};
use crate::mdns::{Mdns, MdnsEvent};
use crate::probe::{PeerIdentity, ProbeError, Prober};
use crate::table::{AdvertOutcome, PeerKey, PeerSnapshot, PeerState, PeerTable, ProbeOutcome, TableConfig};
use crate::txt::{HubAdvert, LOAD_MAX};

/// Starts discovery. See [`Discovery::start`].
#[derive(Debug)]
pub struct Discovery;

impl Discovery {
    /// Starts advertising and browsing (unless mDNS is disabled), and probing
    /// peers with `prober`. Must be called inside a tokio runtime.
    pub fn start<P: Prober>(config: DiscoveryConfig, prober: P) -> Result<DiscoveryHandle, DiscoveryError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| DiscoveryError::NoRuntime)?;
        let now = Instant::now();
        let mut table = PeerTable::new(TableConfig {
            own_hub_id: config.local.id.clone(),
            own_cluster_id: config.local.cluster.clone(),
            own_protocol_version: config.local.proto,
            suspect_after: config.suspect_after,
            down_after: config.down_after,
            slow_probe_interval: config.slow_probe_interval,
        });
        for addr in &config.static_peers {
            table.add_static_peer(*addr, now);
        }
        let mdns = if config.mdns_enabled {
            Some(Mdns::start(
                &config.local,
                &config.mdns_interfaces,
                config.advertised_address,
            )?)
        } else {
            info!("mdns disabled, using static peers only");
            None
        };
        let (peers_sender, peers_receiver) = watch::channel(table.peers());
        let (load_sender, load_receiver) = watch::channel(config.local.load);
        let (stop_sender, stop_receiver) = oneshot::channel();
        let (suggest_sender, suggestions) = mpsc::unbounded_channel();
        let actor = Actor {
            table,
            prober: Arc::new(prober),
            mdns,
            local: config.local.clone(),
            load: load_receiver,
            peers: peers_sender,
            probes: JoinSet::new(),
            in_flight: HashMap::new(),
            suggestions,
            config,
        };
        let task = runtime.spawn(actor.run(stop_receiver));
        Ok(DiscoveryHandle {
            peers: peers_receiver,
            load: load_sender,
            suggest: PeerSuggester(suggest_sender),
            stop: stop_sender,
            task,
        })
    }
}

/// Controls a running discovery. Dropping it stops discovery in the
/// background; [`DiscoveryHandle::shutdown`] stops it and waits.
#[derive(Debug)]
pub struct DiscoveryHandle {
    peers: watch::Receiver<Vec<PeerSnapshot>>,
    load: watch::Sender<u32>,
    suggest: PeerSuggester,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Hands discovery an address a peer announced for itself when it probed
/// us, so we probe it back at once instead of waiting for mDNS. Cheap to
/// clone; sending after discovery stopped does nothing.
#[derive(Debug, Clone)]
pub struct PeerSuggester(mpsc::UnboundedSender<SocketAddr>);

impl PeerSuggester {
    /// Suggests `addr` (see [`PeerSource::Learned`](crate::PeerSource::Learned)).
    pub fn suggest(&self, addr: SocketAddr) {
        let _ = self.0.send(addr);
    }
}

impl DiscoveryHandle {
    /// A handle for suggesting peers that introduced themselves.
    pub fn suggester(&self) -> PeerSuggester {
        self.suggest.clone()
    }

    /// The current peer list, sorted by name.
    pub fn peers(&self) -> Vec<PeerSnapshot> {
        self.peers.borrow().clone()
    }

    /// A receiver that sees every change of the peer list (state, load,
    /// addresses, last successful probe).
    pub fn watch_peers(&self) -> watch::Receiver<Vec<PeerSnapshot>> {
        self.peers.clone()
    }

    /// Sets the load figure to advertise; values above [`LOAD_MAX`] are
    /// clamped. The TXT record follows at most once per
    /// [`DiscoveryConfig::load_refresh_interval`].
    pub fn set_load(&self, load: u32) {
        self.load.send_replace(load.min(LOAD_MAX));
    }

    /// Stops probing, says goodbye on mDNS, shuts the mDNS daemon down and
    /// waits for all of it.
    pub async fn shutdown(self) -> Result<(), DiscoveryError> {
        let Self { stop, task, .. } = self;
        // The task may be gone already; waiting on it reports why.
        let _ = stop.send(());
        task.await.map_err(DiscoveryError::TaskFailed)
    }
}

/// The result of one probe task.
struct ProbeReport {
    key: PeerKey,
    addr: SocketAddr,
    result: Result<PeerIdentity, ProbeError>,
}

struct Actor<P> {
    table: PeerTable,
    prober: Arc<P>,
    mdns: Option<Mdns>,
    /// What we advertise now (its load follows `load`).
    local: HubAdvert,
    load: watch::Receiver<u32>,
    peers: watch::Sender<Vec<PeerSnapshot>>,
    probes: JoinSet<ProbeReport>,
    /// Peers with a probe under way, by probe task.
    in_flight: HashMap<TaskId, PeerKey>,
    suggestions: mpsc::UnboundedReceiver<SocketAddr>,
    config: DiscoveryConfig,
}

impl<P: Prober> Actor<P> {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut probe_ticks = tokio::time::interval(self.config.probe_interval);
        probe_ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let load_period = self.config.load_refresh_interval;
        let mut load_ticks = tokio::time::interval_at(Instant::now() + load_period, load_period);
        load_ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let advertising = self.mdns.is_some();

        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = probe_ticks.tick() => {
                    let now = Instant::now();
                    self.table.tick(now);
                    self.start_probes(now, None);
                }
                Some(joined) = self.probes.join_next_with_id() => self.finish_probe(joined),
                event = next_mdns_event(&mut self.mdns) => self.apply_mdns_event(event),
                _ = load_ticks.tick(), if advertising => self.refresh_load(),
                Some(addr) = self.suggestions.recv() => {
                    let now = Instant::now();
                    if self.table.add_learned_peer(addr, now) {
                        debug!(%addr, "probing a peer that introduced itself");
                        self.start_probes(now, Some(&PeerKey::Static(addr)));
                    }
                }
            }
            self.publish();
        }

        self.probes.abort_all();
        if let Some(mdns) = self.mdns.take() {
            mdns.shutdown().await;
        }
        info!("discovery stopped");
    }

    /// Probes every due peer (or only `only`) that has no probe under way.
    fn start_probes(&mut self, now: Instant, only: Option<&PeerKey>) {
        let busy: HashSet<PeerKey> = self.in_flight.values().cloned().collect();
        for target in self.table.probe_targets(now) {
            if busy.contains(&target.key) || only.is_some_and(|key| *key != target.key) {
                continue;
            }
            let prober = Arc::clone(&self.prober);
            let timeout = self.config.probe_timeout;
            let key = target.key.clone();
            let addr = target.addr;
            let task = self.probes.spawn(async move {
                let result = match tokio::time::timeout(timeout, prober.probe(addr)).await {
                    Ok(result) => result,
                    Err(_) => Err(ProbeError::TimedOut(timeout)),
                };
                ProbeReport { key, addr, result }
            });
            self.in_flight.insert(task.id(), target.key);
        }
    }

    fn finish_probe(&mut self, joined: Result<(TaskId, ProbeReport), JoinError>) {
        let now = Instant::now();
        let report = match joined {
            Ok((task, report)) => {
                self.in_flight.remove(&task);
                report
            }
            Err(error) => {
                if let Some(key) = self.in_flight.remove(&error.id()) {
                    warn!(peer = %key, error = %error_chain(&error), "probe task failed");
                    self.table.on_probe_failed(&key, now);
                }
                return;
            }
        };
        let ProbeReport { key, addr, result } = report;
        let identity = match result {
            Ok(identity) => identity,
            Err(error) => {
                debug!(peer = %key, %addr, error = %error_chain(&error), "probe failed");
                self.table.on_probe_failed(&key, now);
                return;
            }
        };
        let hub_id = identity.hub_id.clone();
        match self.table.on_probe_ok(&key, addr, identity, now) {
            ProbeOutcome::Confirmed => trace!(peer = %key, %addr, "probe answered"),
            ProbeOutcome::Resolved => {
                info!(%addr, peer_id = %hub_id, "static peer identified");
            }
            ProbeOutcome::OwnAddress => {
                info!(%addr, "static peer is this hub, not probing it again");
            }
            ProbeOutcome::IdentityMismatch { expected, answered } => {
                info!(%addr, %expected, %answered, "another hub answered at a peer address");
            }
            ProbeOutcome::InvalidIdentity(error) => {
                debug!(peer = %key, %addr, %error, "probe answered with an invalid identity");
            }
            ProbeOutcome::UnknownPeer => trace!(peer = %key, "probe answer for a peer no longer listed"),
        }
    }

    fn apply_mdns_event(&mut self, event: MdnsEvent) {
        let now = Instant::now();
        match event {
            MdnsEvent::Advert {
                instance,
                advert,
                addrs,
            } => {
                match self.table.on_advert(&instance, &advert, &addrs, now) {
                    AdvertOutcome::OwnAdvert => {
                        debug!(%instance, "ignoring our own mdns advert");
                        return;
                    }
                    AdvertOutcome::Added => {
                        info!(
                            peer_id = %advert.id,
                            peer_name = %advert.name,
                            %instance,
                            ?addrs,
                            "peer suggested by mdns"
                        );
                    }
                    AdvertOutcome::Updated => {
                        trace!(peer_id = %advert.id, %instance, "mdns advert refreshed");
                    }
                }
                // A new or returning peer is probed at once rather than at the
                // next tick; live peers keep their probe rhythm.
                let key = PeerKey::Id(advert.id);
                if matches!(self.table.state(&key), Some(PeerState::Unknown | PeerState::Down)) {
                    self.start_probes(now, Some(&key));
                }
            }
            MdnsEvent::Removed { instance } => match self.table.on_advert_removed(&instance, now) {
                Some(key) => info!(peer = %key, %instance, "peer said goodbye on mdns"),
                None => trace!(%instance, "mdns goodbye for an unknown instance"),
            },
        }
    }

    /// Re-announces our TXT record if the load changed since the last announcement.
    fn refresh_load(&mut self) {
        let wanted = *self.load.borrow();
        if wanted == self.local.load {
            return;
        }
        self.local.load = wanted;
        if let Some(mdns) = &self.mdns {
            match mdns.republish(&self.local) {
                Ok(()) => trace!(load = wanted, "advertised load refreshed"),
                Err(error) => warn!(error = %error_chain(&error), load = wanted, "cannot refresh advertised load"),
            }
        }
    }

    /// Publishes the peer list if it changed, logging state changes.
    fn publish(&self) {
        let peers = self.table.peers();
        self.peers.send_if_modified(|current| {
            if *current == peers {
                return false;
            }
            log_state_changes(current, &peers);
            *current = peers;
            true
        });
    }
}

/// An error and its sources, `outer: inner: ...`, for logs.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn next_mdns_event(mdns: &mut Option<Mdns>) -> MdnsEvent {
    match mdns {
        Some(mdns) => mdns.next_event().await,
        None => std::future::pending().await,
    }
}

fn log_state_changes(before: &[PeerSnapshot], after: &[PeerSnapshot]) {
    for peer in after {
        let previous = before.iter().find(|old| old.key == peer.key);
        let from = previous.map(|old| old.state);
        if from == Some(peer.state) {
            continue;
        }
        info!(
            peer = %peer.key,
            peer_name = peer.name().unwrap_or("-"),
            address = ?peer.address,
            from = from.map_or("unlisted", |state| state.as_str()),
            to = peer.state.as_str(),
            "peer state changed"
        );
    }
}

/// Resolves `HOST:PORT` specifications (`--peer`) to socket addresses, in
/// order and without duplicates. A host with several addresses gives all
/// of them; the peer table merges them once they answer with one hub id.
pub async fn resolve_static_peers<S: AsRef<str>>(specs: &[S]) -> Result<Vec<SocketAddr>, DiscoveryError> {
    let mut resolved = Vec::new();
    for spec in specs {
        let spec = spec.as_ref();
        let addrs = tokio::net::lookup_host(spec)
            .await
            .map_err(|source| DiscoveryError::StaticPeer {
                spec: spec.to_owned(),
                source,
            })?;
        for addr in addrs {
            if !resolved.contains(&addr) {
                resolved.push(addr);
            }
        }
    }
    Ok(resolved)
}
