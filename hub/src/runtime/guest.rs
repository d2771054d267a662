//! The host-side state of one running function (the `FunctionEnv` of its
//! Wasmer store) and safe accessors for its linear memory.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::v1::LogStream;
use thiserror::Error;
use tokio::sync::oneshot;
use wasmer::{FunctionEnvMut, Memory, MemoryAccessError, MemoryView, RuntimeError};

use super::clock::VirtualClock;
use super::control::FunctionControl;
use super::snapshot::PendingCall;
use super::unwind::{AsyncifyHooks, Phase};

/// What a running function needs from the rest of the hub.
pub trait HostServices: Send + Sync {
    /// Records guest output (stdout, stderr, log lines).
    fn output(&self, function: &str, stream: LogStream, data: &[u8]);
    /// Puts a fire-and-forget message into another function's inbox.
    fn send(&self, from: &str, to: &str, data: Vec<u8>) -> SendOutcome;
    /// Sequence number the function's next output entry will get.
    fn log_position(&self, function: &str) -> u64;
}

/// Result of [`HostServices::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Delivered,
    NoSuchFunction,
    InboxFull,
}

/// Why a guest stopped running other than by returning from `_start`.
/// Carried through Wasmer as a user error of a trap.
#[derive(Debug, Error)]
pub enum GuestStop {
    #[error("exited with code {0}")]
    Exit(i32),
    #[error("stopped by the hub")]
    Stopped,
    #[error("memory limit exceeded: growing to {requested_bytes} bytes, limit is {limit_bytes} bytes")]
    MemoryLimit { requested_bytes: u64, limit_bytes: u64 },
    #[error("guest passed memory outside its linear memory to {call}")]
    BadPointer { call: &'static str },
}

/// CPU time of the thread a function runs on. Must be created and read on
/// that thread (the function's own).
#[derive(Debug)]
pub struct CpuMeter {
    thread_time_at_start: Duration,
    base: Duration,
}

impl CpuMeter {
    /// Starts metering on the calling thread, continuing from `base`.
    pub fn start(base: Duration) -> CpuMeter {
        CpuMeter {
            thread_time_at_start: cpu_time::ThreadTime::now().as_duration(),
            base,
        }
    }

    pub fn used(&self) -> Duration {
        let now = cpu_time::ThreadTime::now().as_duration();
        self.base + now.saturating_sub(self.thread_time_at_start)
    }
}

/// Host-side state of one function instance.
pub struct GuestEnv {
    pub name: String,
    pub memory: Option<Memory>,
    pub control: Arc<FunctionControl>,
    pub services: Arc<dyn HostServices>,
    pub args: Vec<String>,
    pub environ: Vec<String>,
    pub clock: VirtualClock,
    pub cpu: CpuMeter,
    pub memory_limit_bytes: u64,
    /// Reply channel of the message last returned by `ferry.recv`.
    pub caller: Option<oneshot::Sender<Vec<u8>>>,
    /// Unsupported WASI calls already logged (each is logged once).
    pub unsupported_reported: HashSet<String>,
    /// Asyncify's exports (absent only while type-checking imports).
    pub asyncify: Option<AsyncifyHooks>,
    pub phase: Phase,
    /// The call being unwound from, or to be resumed at the rewind.
    pub pending: Option<PendingCall>,
    /// Whether long waits may park the function: unwind it so the hub can
    /// release the instance and its thread and restore it when it can go on.
    pub may_park: bool,
    /// The current unwind parks the function (rather than capturing it).
    pub parking: bool,
}

impl GuestEnv {
    /// Whether a blocking call that still has `remaining` to wait (or no
    /// deadline) should park the function instead of holding its thread.
    /// Parking costs a copy of the memory out and back in, so a larger
    /// memory needs a longer wait to be worth it; a function holding an
    /// unanswered invocation never parks (its reply channel lives here).
    pub fn should_park(&self, remaining: Option<Duration>, memory_bytes: u64) -> bool {
        if !self.may_park || self.caller.is_some() {
            return false;
        }
        // About 256 MiB copied per second, both ways, with a floor.
        let worth_it = PARK_AFTER.max(Duration::from_micros(memory_bytes / 128));
        remaining.is_none_or(|remaining| remaining >= worth_it)
    }
}

/// How long a blocking call waits on its thread before it considers parking.
pub const PARK_AFTER: Duration = Duration::from_millis(200);

impl GuestEnv {
    /// Publishes CPU time and memory size for `ferry ps`.
    pub fn publish_counters(&self, view: &MemoryView<'_>) {
        self.control
            .set_cpu_micros(u64::try_from(self.cpu.used().as_micros()).unwrap_or(u64::MAX));
        self.control.set_memory_bytes(view.data_size());
    }
}

/// Bounds-checked little-endian access to a guest's linear memory.
pub struct GuestMemory<'a> {
    view: MemoryView<'a>,
}

impl<'a> GuestMemory<'a> {
    pub fn new(view: MemoryView<'a>) -> GuestMemory<'a> {
        GuestMemory { view }
    }

    pub fn read_bytes(&self, ptr: u32, len: u32) -> Result<Vec<u8>, MemoryAccessError> {
        let mut buffer = vec![0; len as usize];
        self.view.read(u64::from(ptr), &mut buffer)?;
        Ok(buffer)
    }

    pub fn read_u32(&self, ptr: u32) -> Result<u32, MemoryAccessError> {
        let mut bytes = [0; 4];
        self.view.read(u64::from(ptr), &mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    pub fn read_u64(&self, ptr: u32) -> Result<u64, MemoryAccessError> {
        let mut bytes = [0; 8];
        self.view.read(u64::from(ptr), &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    pub fn read_u16(&self, ptr: u32) -> Result<u16, MemoryAccessError> {
        let mut bytes = [0; 2];
        self.view.read(u64::from(ptr), &mut bytes)?;
        Ok(u16::from_le_bytes(bytes))
    }

    pub fn write_bytes(&self, ptr: u32, bytes: &[u8]) -> Result<(), MemoryAccessError> {
        self.view.write(u64::from(ptr), bytes)
    }

    pub fn write_u32(&self, ptr: u32, value: u32) -> Result<(), MemoryAccessError> {
        self.write_bytes(ptr, &value.to_le_bytes())
    }

    pub fn write_u64(&self, ptr: u32, value: u64) -> Result<(), MemoryAccessError> {
        self.write_bytes(ptr, &value.to_le_bytes())
    }

    /// Gathers the buffers of a WASI iovec array.
    pub fn gather(&self, iovs: u32, count: u32) -> Result<Vec<u8>, MemoryAccessError> {
        let mut gathered = Vec::new();
        for index in 0..count {
            let entry = iovs.checked_add(index * 8).ok_or(MemoryAccessError::HeapOutOfBounds)?;
            let buf = self.read_u32(entry)?;
            let len = self.read_u32(entry + 4)?;
            gathered.extend(self.read_bytes(buf, len)?);
        }
        Ok(gathered)
    }
}

/// Runs `f` with the guest state and a view of its memory. A host call made
/// before the memory is bound (from a module's start section) is an error.
pub fn with_memory<R>(
    env: &mut FunctionEnvMut<'_, GuestEnv>,
    f: impl FnOnce(&mut GuestEnv, &GuestMemory<'_>) -> R,
) -> Result<R, RuntimeError> {
    let (guest, store) = env.data_and_store_mut();
    let memory = guest
        .memory
        .clone()
        .ok_or_else(|| RuntimeError::new("host call before the module's memory was bound"))?;
    let view = memory.view(&store);
    Ok(f(guest, &GuestMemory::new(view)))
}
