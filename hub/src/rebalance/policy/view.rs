//! One observation as the rules see it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{Function, FunctionState, Observation, Peer, Sent, Settings, non_negative, positive, ratio};

/// One observation as the rules see it: this hub's `w`, its clocks, and
/// the destinations it may choose, with what this policy sent counted in.
pub(super) struct View<'a> {
    pub(super) settings: &'a Settings,
    pub(super) observation: &'a Observation,
    pub(super) now: Duration,
    pub(super) capacity: f64,
    /// Measured pressure.
    pub(super) pressure: f64,
    /// This hub's utilization demand.
    pub(super) w: f64,
    /// How long this hub has been hot, once that is the whole window.
    pub(super) hot_for: Option<Duration>,
    /// How long this hub has been cool, once that is the whole window.
    pub(super) cool_for: Option<Duration>,
    pub(super) destinations: Vec<Destination<'a>>,
}

/// A peer that may receive functions.
pub(super) struct Destination<'a> {
    pub(super) peer: &'a Peer,
    pub(super) capacity: f64,
    pub(super) w: f64,
    pub(super) free_memory: u64,
}

impl<'a> View<'a> {
    pub(super) fn new(
        settings: &'a Settings,
        observation: &'a Observation,
        sent: &[Sent],
        hot_for: Option<Duration>,
        cool_for: Option<Duration>,
    ) -> Option<View<'a>> {
        let now = observation.now;
        let capacity = positive(observation.hub.capacity)?;
        // What this policy sent to a peer counts there until it settles.
        let pending = |peer: &str| {
            sent.iter()
                .filter(|sent| sent.until > now && sent.to.as_deref() == Some(peer))
                .fold((0.0, 0_u64), |(want, memory), sent| {
                    (want + sent.want, memory.saturating_add(sent.memory))
                })
        };
        let wants: f64 = observation.functions.iter().map(Function::want).sum();
        // A function resumed here counts until its own figures show it.
        let resumed_here: f64 = sent
            .iter()
            .filter(|sent| sent.until > now && sent.to.is_none())
            .filter(|sent| {
                !observation.functions.iter().any(|function| {
                    function.name == sent.function && function.state == FunctionState::Running && function.want() > 0.0
                })
            })
            .map(|sent| sent.want)
            .sum();
        let w = (wants + non_negative(observation.hub.reserved) + resumed_here) / capacity;
        let mut seen = BTreeSet::new();
        let destinations = observation
            .peers
            .iter()
            .filter(|peer| peer.usable && !peer.draining && peer.id != observation.hub.id)
            .filter(|peer| seen.insert(peer.id.as_str()))
            .filter_map(|peer| {
                let capacity = positive(peer.capacity)?;
                let (want, memory) = pending(&peer.id);
                Some(Destination {
                    peer,
                    capacity,
                    w: (non_negative(peer.usage) + non_negative(peer.demand) + want) / capacity,
                    free_memory: peer.free_memory.saturating_sub(memory),
                })
            })
            .collect();
        Some(View {
            settings,
            observation,
            now,
            capacity,
            pressure: ratio(observation.hub.demand, observation.hub.capacity),
            w,
            hot_for,
            cool_for,
            destinations,
        })
    }

    pub(super) fn function(&self, name: &str) -> Option<&'a Function> {
        self.observation.functions.iter().find(|function| function.name == name)
    }

    pub(super) fn running(&self) -> impl Iterator<Item = &'a Function> {
        self.observation
            .functions
            .iter()
            .filter(|function| function.state == FunctionState::Running)
    }

    /// The highest priority among running functions.
    pub(super) fn top_priority(&self) -> Option<i32> {
        self.running().map(|function| function.priority).max()
    }

    /// Whether `function` arrived here within its cooldown.
    pub(super) fn arrived_within_cooldown(&self, function: &Function) -> bool {
        function
            .arrival
            .as_ref()
            .is_some_and(|arrival| self.now.saturating_sub(arrival.at) < self.settings.cooldown)
    }

    pub(super) fn destination_figures(&self) -> BTreeMap<String, f64> {
        self.destinations
            .iter()
            .map(|destination| (destination.peer.id.clone(), destination.w))
            .collect()
    }
}
