//! The figures the policy reads, gathered from the hub: its own (capacity,
//! usage, demand, free memory, drain, reservations), its functions', and
//! its peers' from their probe answers — and the destination's admission,
//! which weighs an automatic move against the same figures.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_discovery::PeerSnapshot;
use ferry_proto::internal::v1::{AutomaticKind, AutomaticMove};

use super::policy::{self, Arrival, FunctionState, Observation, Offer, OfferKind, Peer, Settings, ThisHub};
use crate::api::free_memory_bytes;
use crate::migration::Admission;
use crate::peers::{LoadGauge, PeerFigures};
use crate::supervisor::{Phase, Supervisor, Suspender};

/// How long an admitted arrival keeps its reservation after it started
/// here: the load meter needs two one-second samples of the new run, and
/// peers see them with their next probe.
const SETTLE: Duration = Duration::from_secs(5);

/// Arrivals admitted here, by function: the expected want, and when the
/// reservation lapses (`None`: still arriving).
type Reservations = HashMap<String, (f64, Option<Instant>)>;

/// Where the hub's figures come from.
#[derive(Clone)]
pub struct HubFigures {
    pub supervisor: Supervisor,
    pub gauge: Arc<LoadGauge>,
    pub settings: Settings,
    reservations: Arc<Mutex<Reservations>>,
    /// The policy's clock starts here.
    epoch: Instant,
}

impl std::fmt::Debug for HubFigures {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HubFigures")
            .field("hub", &self.supervisor.identity().name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl HubFigures {
    pub fn new(supervisor: Supervisor, gauge: Arc<LoadGauge>, settings: Settings) -> HubFigures {
        HubFigures {
            supervisor,
            gauge,
            settings,
            reservations: Arc::default(),
            epoch: Instant::now(),
        }
    }

    /// `instant` on the policy's clock.
    pub fn since_epoch(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.epoch)
    }

    fn reserved(&self) -> f64 {
        let mut reservations = self
            .reservations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.prune(&mut reservations);
        reservations.values().map(|(want, _)| want).sum()
    }

    /// Drops reservations that lapsed, and those of arrivals that the
    /// hub's own figures show already (counting both would count twice).
    fn prune(&self, reservations: &mut Reservations) {
        let now = Instant::now();
        let measured: Vec<String> = self
            .supervisor
            .function_loads()
            .into_iter()
            .filter(|function| state_of(function.phase) == FunctionState::Running)
            .filter(|function| function.usage + function.demand > 0.0)
            .map(|function| function.name)
            .collect();
        reservations.retain(|function, (_, lapses)| {
            lapses.is_none_or(|lapses| lapses > now) && !(lapses.is_some() && measured.contains(function))
        });
    }

    /// This hub as the policy sees it.
    pub fn this_hub(&self) -> ThisHub {
        self.this_hub_reserving(self.reserved())
    }

    fn this_hub_reserving(&self, reserved: f64) -> ThisHub {
        let cpu = self.gauge.cpu();
        ThisHub {
            id: self.supervisor.identity().id.clone(),
            capacity: self.supervisor.runtime().governor().capacity(),
            usage: cpu.usage,
            demand: cpu.demand,
            reserved,
            free_memory: free_memory_bytes().unwrap_or(u64::MAX),
            draining: self.supervisor.draining(),
        }
    }

    /// Everything the policy sees now.
    pub fn observe(&self, peers: &[PeerSnapshot], figures: &PeerFigures, automatic_in_flight: u32) -> Observation {
        let loads = self.supervisor.function_loads();
        let moving = loads
            .iter()
            .filter(|function| matches!(function.phase, Phase::MovingOut | Phase::PausedForMove))
            .count() as u32;
        let functions: Vec<policy::Function> = loads
            .into_iter()
            .map(|function| policy::Function {
                barred: barred_peers(&function.mounts, peers, figures),
                state: state_of(function.phase),
                // What a function that left, stopped or is suspended used
                // in the last sample is not load here any more.
                usage: if state_of(function.phase) == FunctionState::Running {
                    function.usage
                } else {
                    0.0
                },
                demand: if state_of(function.phase) == FunctionState::Running {
                    function.demand
                } else {
                    0.0
                },
                arrival: function.arrived.as_ref().map(|(at, from)| Arrival {
                    at: self.since_epoch(*at),
                    from: from.clone(),
                }),
                name: function.name,
                cap: function.cpu_cap,
                memory: function.memory_bytes,
                priority: function.priority,
                pinned: function.pinned,
            })
            .collect();
        let peers = peers
            .iter()
            .filter_map(|peer| {
                let id = peer.id()?.to_owned();
                let reported = figures.get(&id);
                Some(Peer {
                    name: peer.name().unwrap_or(&id).to_owned(),
                    usable: peer.is_usable() && reported.is_some() && peer.address.is_some(),
                    capacity: reported.as_ref().map_or(0.0, |info| info.cpu_capacity),
                    usage: reported.as_ref().map_or(0.0, |info| info.cpu_usage),
                    demand: reported.as_ref().map_or(0.0, |info| info.cpu_demand),
                    functions: reported.as_ref().map_or(0, |info| info.functions_running),
                    free_memory: reported.as_ref().map_or(0, |info| info.free_memory_bytes),
                    draining: reported.as_ref().is_some_and(|info| info.draining),
                    throughput: None,
                    lacking: BTreeMap::new(),
                    id,
                })
            })
            .collect();
        Observation {
            now: self.since_epoch(Instant::now()),
            hub: self.this_hub(),
            functions,
            peers,
            moves_in_flight: moving.max(automatic_in_flight),
        }
    }
}

/// The peers (by id) that lack a resource among `mounts` (or grant less
/// access than they ask for), as their last figures say.
fn barred_peers(
    mounts: &[ferry_proto::v1::Mount],
    peers: &[PeerSnapshot],
    figures: &PeerFigures,
) -> std::collections::BTreeSet<String> {
    if mounts.is_empty() {
        return Default::default();
    }
    let spec = ferry_proto::v1::FunctionSpec {
        mounts: mounts.to_vec(),
        ..Default::default()
    };
    peers
        .iter()
        .filter_map(|peer| peer.id())
        .filter(|id| {
            figures
                .get(id)
                .is_none_or(|info| crate::resources::placement_refusal(&spec, &info.resources).is_some())
        })
        .map(str::to_owned)
        .collect()
}

/// A lifecycle phase as placement sees it.
fn state_of(phase: Phase) -> FunctionState {
    match phase {
        Phase::Running | Phase::Parked => FunctionState::Running,
        Phase::Suspended(Suspender::Overload) => FunctionState::SuspendedForOverload,
        Phase::Suspended(Suspender::User) => FunctionState::SuspendedByUser,
        _ => FunctionState::Other,
    }
}

/// The wire form of an offer.
pub fn automatic_move(offer: &Offer) -> AutomaticMove {
    AutomaticMove {
        kind: match offer.kind {
            OfferKind::Balance => AutomaticKind::Balance,
            OfferKind::Drain => AutomaticKind::Drain,
            OfferKind::Resume => AutomaticKind::Resume,
        } as i32,
        want: offer.want,
        memory_bytes: offer.memory,
        source_w_before: offer.source_w_before,
        source_w_after: offer.source_w_after,
    }
}

impl Admission for HubFigures {
    fn admit(&self, function: &str, offer: &AutomaticMove) -> Result<(), String> {
        let kind = match AutomaticKind::try_from(offer.kind) {
            Ok(AutomaticKind::Drain) => OfferKind::Drain,
            Ok(AutomaticKind::Resume) => OfferKind::Resume,
            _ => OfferKind::Balance,
        };
        let offer = Offer {
            function: function.to_owned(),
            kind,
            want: offer.want,
            memory: offer.memory_bytes,
            source_w_before: offer.source_w_before,
            source_w_after: offer.source_w_after,
        };
        // One decision at a time, so a second offer sees the first's reservation.
        let mut reservations = self
            .reservations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.prune(&mut reservations);
        let here = self.this_hub_reserving(reservations.values().map(|(want, _)| want).sum());
        let accepted = policy::admit(&self.settings, &here, &offer).map_err(|refused| refused.to_string())?;
        tracing::info!(function, %accepted, "admitting an automatic move");
        reservations.insert(function.to_owned(), (offer.want, None));
        Ok(())
    }

    fn settle(&self, function: &str, arrived: bool) {
        let mut reservations = self
            .reservations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if arrived {
            if let Some(reservation) = reservations.get_mut(function) {
                reservation.1 = Some(Instant::now() + SETTLE);
            }
        } else {
            reservations.remove(function);
        }
    }
}
