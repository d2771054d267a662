//! A captured function: everything needed to continue it in a fresh instance,
//! on this hub or another. WebAssembly-level state only: no native code, no
//! host pointers.

use std::time::Duration;

/// The value of one exported mutable global.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalValue {
    I32(i32),
    I64(i64),
    /// IEEE bits, so NaN payloads survive.
    F32(u32),
    F64(u64),
    V128(u128),
}

/// The host call the guest was in when it was unwound; on rewind the same
/// call is made again and continues from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingCall {
    /// A preemption point.
    Preempt,
    /// `ferry.sleep_ms` until this virtual monotonic time.
    Sleep { until: Duration },
    /// `ferry.recv`, waiting until this virtual time (forever if `None`).
    Recv { deadline: Option<Duration> },
    /// `poll_oneoff` sleeping until this virtual time.
    Poll { until: Duration },
    /// `sched_yield`.
    SchedYield,
}

/// Host-side state that moves with the function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSnapshot {
    /// Virtual monotonic clock at capture; the restored clock continues from here.
    pub monotonic: Duration,
    /// Messages waiting in the inbox (their reply channels stay behind).
    pub inbox: Vec<Vec<u8>>,
    pub pending: PendingCall,
    /// Sequence number the function's next output entry gets.
    pub log_seq: u64,
    pub cpu: Duration,
    /// A received invocation was waiting for its reply.
    pub has_caller: bool,
}

/// A function at rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The guest's linear memory (`memory`), whole.
    pub memory: Vec<u8>,
    /// Asyncify's save area: the unwound call stack (header and frames).
    pub stack: Vec<u8>,
    /// Exported mutable globals by their index in the deployed module.
    pub globals: Vec<(u32, GlobalValue)>,
    pub host: HostSnapshot,
}
