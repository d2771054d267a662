//! The hub's Prometheus metrics: counters and histograms the code paths
//! feed as things happen (invocations, moves, checkpoints), and gauges of
//! the hub's state set just before each scrape. Served at `/metrics` in the
//! OpenMetrics text format ([`crate::http`]).
//!
//! Invariant: labels are bounded: function names of functions that exist,
//! outcomes and states from fixed lists. No invocation ids, addresses or
//! error texts ever become labels.

use std::sync::atomic::AtomicU64;

use ferry_proto::v1::{FunctionInfo, FunctionState, PeerInfo, PeerState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationOutcome {
    Succeeded,
    TimedOut,
    Failed,
}

impl InvocationOutcome {
    fn as_str(self) -> &'static str {
        match self {
            InvocationOutcome::Succeeded => "succeeded",
            InvocationOutcome::TimedOut => "timed_out",
            InvocationOutcome::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvocationLabels {
    function: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabels {
    function: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

type HistogramMaker = fn() -> Histogram;

fn duration_histogram() -> Histogram {
    // 100 µs to ~100 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 11))
}

/// Every metric of one hub.
pub struct HubMetrics {
    registry: Registry,
    invocations: Family<InvocationLabels, Counter>,
    invocation_duration: Family<FunctionLabels, Histogram, HistogramMaker>,
    migrations: Family<OutcomeLabels, Counter>,
    migration_downtime: Histogram,
    checkpoints: Counter,
    checkpoint_bytes: Counter,
    functions: Family<StateLabels, Gauge>,
    cpu_load: Gauge<f64, AtomicU64>,
    peers: Family<StateLabels, Gauge>,
}

impl std::fmt::Debug for HubMetrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("HubMetrics").finish_non_exhaustive()
    }
}

impl Default for HubMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let invocations = Family::<InvocationLabels, Counter>::default();
        registry.register(
            "ferry_function_invocations",
            "Invocations answered by functions on this hub, by function and outcome",
            invocations.clone(),
        );
        let invocation_duration = Family::new_with_constructor(duration_histogram as HistogramMaker);
        registry.register(
            "ferry_function_invocation_duration_seconds",
            "Time from an invocation's arrival on the function's hub to its reply",
            invocation_duration.clone(),
        );
        let migrations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "ferry_migrations",
            "Moves this hub started as their source, by outcome",
            migrations.clone(),
        );
        let migration_downtime = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "ferry_migration_downtime_seconds",
            "Time a moved function was paused: from pause on this hub to running on the destination",
            migration_downtime.clone(),
        );
        let checkpoints = Counter::default();
        registry.register(
            "ferry_checkpoints",
            "Durable checkpoints this hub wrote",
            checkpoints.clone(),
        );
        let checkpoint_bytes = Counter::default();
        registry.register(
            "ferry_checkpoint_bytes",
            "Compressed bytes checkpoints wrote to this hub's store",
            checkpoint_bytes.clone(),
        );
        let functions = Family::<StateLabels, Gauge>::default();
        registry.register(
            "ferry_functions",
            "Functions this hub knows, by state",
            functions.clone(),
        );
        let cpu_load = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "ferry_hub_cpu_load",
            "CPU the hub's functions use over the last second, as a share of the hub's capacity",
            cpu_load.clone(),
        );
        let peers = Family::<StateLabels, Gauge>::default();
        registry.register("ferry_peers", "Peer hubs in the peer table, by state", peers.clone());
        registry.register(
            "ferry_build",
            "The hub's version and its runtime",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("wasmer", crate::runtime::WASMER_VERSION),
            ]),
        );
        HubMetrics {
            registry,
            invocations,
            invocation_duration,
            migrations,
            migration_downtime,
            checkpoints,
            checkpoint_bytes,
            functions,
            cpu_load,
            peers,
        }
    }
}

impl HubMetrics {
    /// An invocation of `function` (which exists here) ended.
    pub fn invocation(&self, function: &str, outcome: InvocationOutcome, took: std::time::Duration) {
        self.invocations
            .get_or_create(&InvocationLabels {
                function: function.to_owned(),
                outcome: outcome.as_str(),
            })
            .inc();
        self.invocation_duration
            .get_or_create(&FunctionLabels {
                function: function.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// A move this hub was the source of ended; `downtime` when it succeeded.
    pub fn migration(&self, downtime: Option<std::time::Duration>) {
        let outcome = if downtime.is_some() { "succeeded" } else { "failed" };
        self.migrations.get_or_create(&OutcomeLabels { outcome }).inc();
        if let Some(downtime) = downtime {
            self.migration_downtime.observe(downtime.as_secs_f64());
        }
    }

    /// A checkpoint became durable, having written `bytes`.
    pub fn checkpoint(&self, bytes: u64) {
        self.checkpoints.inc();
        self.checkpoint_bytes.inc_by(bytes);
    }

    /// The text to scrape, with the gauges set from the hub's state now.
    pub fn render(&self, functions: &[FunctionInfo], cpu_load: f64, peers: &[PeerInfo]) -> String {
        for state in FUNCTION_STATES {
            let count = functions.iter().filter(|function| function.state() == state).count();
            self.functions
                .get_or_create(&StateLabels {
                    state: function_state_label(state),
                })
                .set(count as i64);
        }
        self.cpu_load.set(cpu_load);
        for state in PEER_STATES {
            let count = peers.iter().filter(|peer| peer.state() == state).count();
            self.peers
                .get_or_create(&StateLabels {
                    state: peer_state_label(state),
                })
                .set(count as i64);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

const FUNCTION_STATES: [FunctionState; 8] = [
    FunctionState::Starting,
    FunctionState::Running,
    FunctionState::Exited,
    FunctionState::Failed,
    FunctionState::Stopped,
    FunctionState::Suspended,
    FunctionState::Moved,
    FunctionState::Arriving,
];

fn function_state_label(state: FunctionState) -> &'static str {
    match state {
        FunctionState::Unspecified => "unspecified",
        FunctionState::Starting => "starting",
        FunctionState::Running => "running",
        FunctionState::Exited => "exited",
        FunctionState::Failed => "failed",
        FunctionState::Stopped => "stopped",
        FunctionState::Suspended => "suspended",
        FunctionState::Moved => "moved",
        FunctionState::Arriving => "arriving",
    }
}

const PEER_STATES: [PeerState; 4] = [PeerState::Unknown, PeerState::Up, PeerState::Suspect, PeerState::Down];

fn peer_state_label(state: PeerState) -> &'static str {
    match state {
        PeerState::Unspecified => "unspecified",
        PeerState::Unknown => "unknown",
        PeerState::Up => "up",
        PeerState::Suspect => "suspect",
        PeerState::Down => "down",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_appear_under_their_prometheus_names() {
        let metrics = HubMetrics::default();
        metrics.invocation(
            "echo",
            InvocationOutcome::Succeeded,
            std::time::Duration::from_millis(2),
        );
        metrics.migration(Some(std::time::Duration::from_millis(40)));
        metrics.migration(None);
        metrics.checkpoint(1234);
        let running = FunctionInfo {
            state: FunctionState::Running as i32,
            ..FunctionInfo::default()
        };
        let text = metrics.render(&[running.clone(), running], 0.25, &[]);
        for line in [
            "ferry_function_invocations_total{function=\"echo\",outcome=\"succeeded\"} 1",
            "ferry_function_invocation_duration_seconds_count{function=\"echo\"} 1",
            "ferry_migrations_total{outcome=\"succeeded\"} 1",
            "ferry_migrations_total{outcome=\"failed\"} 1",
            "ferry_migration_downtime_seconds_count 1",
            "ferry_checkpoint_bytes_total 1234",
            "ferry_functions{state=\"running\"} 2",
            "ferry_functions{state=\"stopped\"} 0",
            "ferry_hub_cpu_load 0.25",
            "ferry_peers{state=\"up\"} 0",
        ] {
            assert!(text.lines().any(|got| got == line), "{line:?} missing from\n{text}");
        }
        assert!(text.contains("ferry_build_info{version="), "{text}");
    }
}
