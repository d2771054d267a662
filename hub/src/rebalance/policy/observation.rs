//! What the policy is fed: one hub's figures, its functions and its peers
//! at one moment.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{non_negative, positive};

/// Everything the policy sees at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Now, as a duration since the caller's epoch (monotonic).
    pub now: Duration,
    /// This hub's figures.
    pub hub: ThisHub,
    /// This hub's functions, in any order.
    pub functions: Vec<Function>,
    /// Every peer this hub knows of, usable or not.
    pub peers: Vec<Peer>,
    /// Moves out of this hub under way, a user's or the policy's — counted
    /// from the moment one is decided, before the next observation.
    pub moves_in_flight: u32,
}

/// This hub's own figures, measured over the last second.
#[derive(Debug, Clone, PartialEq)]
pub struct ThisHub {
    pub id: String,
    /// Cores this hub may use.
    pub capacity: f64,
    /// Cores its functions used.
    pub usage: f64,
    /// Cores' worth of time its functions were runnable but not running.
    pub demand: f64,
    /// Expected want of arrivals it accepted that are not measured yet.
    pub reserved: f64,
    /// Memory free for functions, in bytes.
    pub free_memory: u64,
    /// Draining: every function is to leave (before maintenance, say).
    pub draining: bool,
}

/// What a function is doing, as far as placement cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FunctionState {
    /// Running (or parked in a long wait).
    Running,
    /// Suspended by the hub to shed load: the policy may resume it.
    SuspendedForOverload,
    /// Suspended by a user: only a user resumes it.
    SuspendedByUser,
    /// Starting, moving, stopping, stopped, ended: left alone.
    Other,
}

/// One function of this hub.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    /// Cores used over the last second.
    pub usage: f64,
    /// Cores' worth of runnable-but-not-running time over the last second.
    pub demand: f64,
    /// Its own `--cpus` cap, if any.
    pub cap: Option<f64>,
    /// Its memory size in bytes.
    pub memory: u64,
    /// Higher is more important.
    pub priority: i32,
    /// Never moved or suspended by the policy.
    pub pinned: bool,
    /// Hubs (by id) it cannot run on: they lack a resource it mounts.
    pub barred: std::collections::BTreeSet<String>,
    pub state: FunctionState,
    /// When it last arrived on this hub and from where, if it ever did.
    pub arrival: Option<Arrival>,
}

/// A function's last arrival on this hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// When, on the observation's clock.
    pub at: Duration,
    /// The hub id it came from.
    pub from: String,
}

/// A peer as this hub last heard of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    pub id: String,
    pub name: String,
    /// Up, verified, same cluster and compatible protocol. Anything else
    /// (down, suspect, foreign cluster…) is never a destination.
    pub usable: bool,
    /// Cores it may use.
    pub capacity: f64,
    /// Cores its functions used.
    pub usage: f64,
    /// Cores' worth of runnable-but-not-running time of its functions.
    pub demand: f64,
    /// How many functions it runs.
    pub functions: u32,
    /// Memory free for functions, in bytes.
    pub free_memory: u64,
    pub draining: bool,
    /// Measured throughput of the link to it, in bytes per second.
    pub throughput: Option<f64>,
    /// Bytes of a function's state it would lack, by function name (it may
    /// hold chunks of an earlier checkpoint); a function not listed lacks
    /// its whole memory.
    pub lacking: BTreeMap<String, u64>,
}

impl Function {
    /// `min(usage + demand, cap)`, cap 1.0 unless the function has its own.
    pub fn want(&self) -> f64 {
        let cap = self.cap.and_then(positive).unwrap_or(1.0);
        (non_negative(self.usage) + non_negative(self.demand)).min(cap)
    }
}

/// The predicted pressure of a hub whose utilization demand is `w`: what
/// does not fit in its capacity waits.
pub fn predicted_pressure(w: f64) -> f64 {
    (w - 1.0).max(0.0)
}
