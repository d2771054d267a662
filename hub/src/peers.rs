//! The hub's side of discovery: the probe that tells discovery whether a peer
//! is alive and who it is, the load figure it advertises, and the conversion
//! of peer snapshots to the wire format.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_discovery::{
    Compatibility, DiscoveryHandle, PeerIdentity, PeerSnapshot, PeerSource, PeerState, ProbeError, Prober,
};
use ferry_proto::v1::hub_client::HubClient;
use ferry_proto::v1::{self, GetHubInfoRequest, HubInfo, PeerInfo};
use tonic::transport::Channel;

use crate::connector::{PeerConnector, Purpose};
use crate::supervisor::{CpuTotals, Supervisor};
use crate::trust::revocation::{Revocations, SignedList};

/// How often the advertised load figure is recomputed.
const LOAD_INTERVAL: Duration = Duration::from_secs(1);
/// Weight of the newest sample in the load EWMA.
const LOAD_SMOOTHING: f64 = 0.3;
/// Full scale of the load figure: all of the machine's CPUs busy with functions.
pub const LOAD_FULL_SCALE: u32 = 10_000;

/// Probes a peer with `GetHubInfo`: an answer proves it is alive and says
/// who it is. The request introduces this hub, so a peer that has not heard
/// of it yet probes it back at once. Keeps one lazily connected channel per
/// address.
///
/// With TLS the id a peer claims must be the one its certificate names: the
/// first answer from an address is checked at once by a second probe that
/// accepts only the certificate of the claimed hub, and later probes of that
/// address accept only that certificate.
pub struct HubProber {
    own_hub_id: String,
    own_port: u16,
    connector: PeerConnector,
    figures: PeerFigures,
    /// The hub id each address proved to hold (TLS only).
    proven: Mutex<HashMap<SocketAddr, String>>,
}

impl HubProber {
    pub fn new(own_hub_id: String, own_port: u16, connector: PeerConnector, figures: PeerFigures) -> HubProber {
        HubProber {
            own_hub_id,
            own_port,
            connector,
            figures,
            proven: Mutex::default(),
        }
    }

    fn client(&self, addr: SocketAddr, hub_id: Option<&str>) -> Result<HubClient<Channel>, ProbeError> {
        let channel = self
            .connector
            .channel_to(&addr.to_string(), Purpose::Probe, hub_id)
            .map_err(ProbeError::failed)?;
        Ok(HubClient::new(channel))
    }

    async fn ask(&self, addr: SocketAddr, hub_id: Option<&str>) -> Result<HubInfo, ProbeError> {
        self.client(addr, hub_id)?
            .get_hub_info(GetHubInfoRequest {
                caller_hub_id: self.own_hub_id.clone(),
                caller_port: u32::from(self.own_port),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| ProbeError::failed(status.message().to_owned()))
    }

    /// Asks `addr`, and with TLS makes sure the answer comes from the hub
    /// whose certificate names the id it claims.
    async fn ask_proven(&self, addr: SocketAddr) -> Result<HubInfo, ProbeError> {
        if !self.connector.is_tls() {
            return self.ask(addr, None).await;
        }
        let proven = self.lock_proven().get(&addr).cloned();
        if let Some(id) = proven {
            // A failure forgets the proof: another hub may have taken the
            // address, and the next probe identifies it afresh.
            let info = self.ask(addr, Some(&id)).await.inspect_err(|_| {
                self.lock_proven().remove(&addr);
            })?;
            if info.hub_id == id {
                return Ok(info);
            }
            // Cannot happen with an honest hub: its certificate names `id`.
            self.lock_proven().remove(&addr);
            return Err(ProbeError::failed(format!(
                "claims to be {} but its certificate names {id}",
                info.hub_id
            )));
        }
        let claimed = self.ask(addr, None).await?;
        let info = self.ask(addr, Some(&claimed.hub_id)).await.map_err(|error| {
            ProbeError::failed(format!(
                "claims to be {} but its certificate does not name that hub: {error}",
                claimed.hub_id
            ))
        })?;
        if info.hub_id != claimed.hub_id {
            return Err(ProbeError::failed("answered with two different hub ids".to_owned()));
        }
        self.lock_proven().insert(addr, info.hub_id.clone());
        Ok(info)
    }

    fn lock_proven(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, String>> {
        self.proven.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Prober for HubProber {
    async fn probe(&self, addr: SocketAddr) -> Result<PeerIdentity, ProbeError> {
        let info = self.ask_proven(addr).await?;
        if let Some(revocations) = self.connector.revocations() {
            adopt_revocations(revocations, &info);
            if revocations.is_revoked(&info.hub_id) {
                return Err(ProbeError::failed(format!(
                    "hub {} was removed from the cluster (ferry cluster rm)",
                    info.hub_id
                )));
            }
        }
        self.figures.record(&info);
        Ok(PeerIdentity {
            hub_id: info.hub_id,
            hub_name: info.hub_name,
            cluster_id: info.cluster_id,
            protocol_version: info.protocol_version,
            load: info.load,
        })
    }
}

/// Takes the revocation list a probe answer carries if it is newer than
/// this hub's: how a removal spreads through the cluster.
fn adopt_revocations(revocations: &Revocations, info: &HubInfo) {
    let signed = SignedList {
        list: info.revocation_list.clone(),
        signature: info.revocation_signature.clone(),
    };
    match revocations.adopt(&signed) {
        Ok(true) => tracing::info!(
            from = %info.hub_id,
            sequence = revocations.sequence(),
            "adopted a newer list of hubs removed from the cluster"
        ),
        Ok(false) => {}
        Err(error) => tracing::warn!(from = %info.hub_id, %error, "ignored a revocation list"),
    }
}

/// The load figures this hub reports, shared by the API and discovery.
#[derive(Debug, Default)]
pub struct LoadGauge {
    /// Coarse machine share for the mDNS TXT record, 0..=[`LOAD_FULL_SCALE`].
    load: AtomicU32,
    /// Cores its functions used over the last second (f64 bits).
    cpu_usage: AtomicU64,
    /// Cores' worth of time they were runnable but did not run (f64 bits).
    cpu_demand: AtomicU64,
}

impl LoadGauge {
    pub fn get(&self) -> u32 {
        self.load.load(Ordering::Relaxed)
    }

    /// CPU of all functions over the last second, in cores.
    pub fn cpu(&self) -> CpuTotals {
        CpuTotals {
            usage: f64::from_bits(self.cpu_usage.load(Ordering::Relaxed)),
            demand: f64::from_bits(self.cpu_demand.load(Ordering::Relaxed)),
        }
    }

    fn set_cpu(&self, totals: CpuTotals) {
        self.cpu_usage.store(totals.usage.to_bits(), Ordering::Relaxed);
        self.cpu_demand.store(totals.demand.to_bits(), Ordering::Relaxed);
    }
}

/// Once per [`LOAD_INTERVAL`]: samples every function's CPU (usage and
/// demand, for `ps`, `info` and rebalancing), and recomputes the coarse
/// load — an EWMA of the share of the machine's CPU time that functions
/// used, scaled to [`LOAD_FULL_SCALE`] — for discovery (which rate-limits
/// the TXT refresh).
pub fn spawn_load_meter(
    supervisor: Supervisor,
    discovery: Arc<DiscoveryHandle>,
    gauge: Arc<LoadGauge>,
) -> tokio::task::JoinHandle<()> {
    let cpus = std::thread::available_parallelism()
        .map(|count| count.get())
        .unwrap_or(1) as f64;
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(LOAD_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous_at = tokio::time::Instant::now();
        let mut smoothed = 0.0f64;
        loop {
            interval.tick().await;
            let now = tokio::time::Instant::now();
            let totals = supervisor.sample_cpu(now.duration_since(previous_at));
            gauge.set_cpu(totals);
            // The functions' own rates, each against its run's last
            // sample: a run that starts with CPU time carried over from a
            // checkpoint (a restart, a resume, an arrival) adds none of it.
            let share = totals.usage / cpus;
            smoothed = LOAD_SMOOTHING * share.min(1.0) + (1.0 - LOAD_SMOOTHING) * smoothed;
            let load = (smoothed * f64::from(LOAD_FULL_SCALE)).round() as u32;
            gauge.load.store(load, Ordering::Relaxed);
            discovery.set_load(load);
            previous_at = now;
        }
    })
}

/// A peer as the API reports it.
pub fn peer_info(peer: &PeerSnapshot, figures: Option<&HubInfo>, now: tokio::time::Instant) -> PeerInfo {
    let figures = figures.cloned().unwrap_or_default();
    let state = match peer.state {
        PeerState::Unknown => v1::PeerState::Unknown,
        PeerState::Up => v1::PeerState::Up,
        PeerState::Suspect => v1::PeerState::Suspect,
        PeerState::Down => v1::PeerState::Down,
    };
    let source = match peer.source {
        PeerSource::Mdns => v1::PeerSource::Mdns,
        PeerSource::Static => v1::PeerSource::Static,
        PeerSource::Learned => v1::PeerSource::Learned,
    };
    let compatibility = match peer.compatibility {
        None => v1::PeerCompatibility::Unspecified,
        Some(Compatibility::Compatible) => v1::PeerCompatibility::Compatible,
        Some(Compatibility::ForeignCluster) => v1::PeerCompatibility::ForeignCluster,
        Some(Compatibility::IncompatibleProtocol) => v1::PeerCompatibility::IncompatibleProtocol,
    };
    PeerInfo {
        hub_id: peer.id().unwrap_or_default().to_owned(),
        hub_name: peer.name().unwrap_or_default().to_owned(),
        address: peer.address.map(|address| address.to_string()).unwrap_or_default(),
        state: state as i32,
        load: peer.load().unwrap_or_default(),
        last_seen_ms_ago: peer
            .last_seen
            .map(|seen| now.saturating_duration_since(seen).as_millis() as u64),
        source: source as i32,
        compatibility: compatibility as i32,
        usable: peer.is_usable(),
        cpu_capacity: figures.cpu_capacity,
        cpu_usage: figures.cpu_usage,
        cpu_demand: figures.cpu_demand,
        free_memory_bytes: figures.free_memory_bytes,
        functions_total: figures.functions_total,
        draining: figures.draining,
        removed: false,
    }
}

/// The last figures each peer reported in a probe answer, by hub id: the
/// headroom rebalancing weighs (probes of Up peers come every second).
#[derive(Debug, Clone, Default)]
pub struct PeerFigures(Arc<Mutex<HashMap<String, HubInfo>>>);

impl PeerFigures {
    pub fn get(&self, hub_id: &str) -> Option<HubInfo> {
        self.lock().get(hub_id).cloned()
    }

    fn record(&self, info: &HubInfo) {
        self.lock().insert(info.hub_id.clone(), info.clone());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HubInfo>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
