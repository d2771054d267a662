//! What rebalancing and `ferry info` need to know about this hub's
//! functions: their CPU over the last second, priorities and pins, where
//! they came from — and the drain flag.

use std::time::{Duration, Instant};

use super::{DRAINING_KEY, Phase, Supervisor, name_of};
use crate::error::HubError;

/// A function's CPU counters at the meter's last sample, and the rates
/// since the one before.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuSample {
    generation: u64,
    cpu_micros: u64,
    demand_micros: u64,
    /// Cores used over the last interval.
    pub usage: f64,
    /// Cores' worth of time it was runnable but did not run.
    pub demand: f64,
}

impl CpuSample {
    /// The baseline of a run launched now, whose CPU meter starts at
    /// `cpu_micros` (carried over from its snapshot).
    pub fn launched(generation: u64, cpu_micros: u64) -> CpuSample {
        CpuSample {
            generation,
            cpu_micros,
            ..CpuSample::default()
        }
    }
}

/// CPU of all functions together, in cores.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CpuTotals {
    pub usage: f64,
    pub demand: f64,
}

/// One function as rebalancing sees it.
#[derive(Debug, Clone)]
pub struct FunctionLoad {
    pub name: String,
    pub phase: Phase,
    pub usage: f64,
    pub demand: f64,
    /// Its own CPU cap in cores, if it has one.
    pub cpu_cap: Option<f64>,
    pub memory_bytes: u64,
    pub priority: i32,
    pub pinned: bool,
    /// The hub resources it mounts: it runs only where they exist.
    pub mounts: Vec<ferry_proto::v1::Mount>,
    /// When and from which hub (id) it was moved here.
    pub arrived: Option<(Instant, String)>,
}

impl Supervisor {
    /// Takes a CPU sample of every running function, `elapsed` after the
    /// last: updates what `ps` shows and returns the totals.
    pub fn sample_cpu(&self, elapsed: Duration) -> CpuTotals {
        let seconds = elapsed.as_secs_f64().max(1e-3);
        let mut totals = CpuTotals::default();
        for slot in self.inner.lock_slots().values_mut() {
            let Some(running) = slot.running.as_ref() else {
                slot.cpu = CpuSample::default();
                continue;
            };
            let cpu_micros = running.control.cpu_micros();
            let demand_micros = running.control.demand_micros();
            let (usage, demand) = if slot.cpu.generation == running.generation {
                (
                    cpu_micros.saturating_sub(slot.cpu.cpu_micros) as f64 / 1e6 / seconds,
                    demand_micros.saturating_sub(slot.cpu.demand_micros) as f64 / 1e6 / seconds,
                )
            } else {
                (0.0, 0.0)
            };
            slot.cpu = CpuSample {
                generation: running.generation,
                cpu_micros,
                demand_micros,
                usage,
                demand,
            };
            totals.usage += usage;
            totals.demand += demand;
        }
        totals
    }

    /// Every function of this hub with its CPU, size and placement settings.
    pub fn function_loads(&self) -> Vec<FunctionLoad> {
        let slots = self.inner.lock_slots();
        let mut loads: Vec<FunctionLoad> = slots
            .values()
            .map(|slot| {
                let spec = slot.record.spec.as_ref();
                let placement = spec.and_then(|spec| spec.placement).unwrap_or_default();
                FunctionLoad {
                    name: name_of(&slot.record).to_owned(),
                    phase: slot.phase,
                    usage: slot.cpu.usage,
                    demand: slot.cpu.demand,
                    cpu_cap: spec
                        .and_then(|spec| spec.limits)
                        .map(|limits| limits.cpus)
                        .filter(|cpus| *cpus > 0.0),
                    memory_bytes: slot
                        .running
                        .as_ref()
                        .map_or(0, |running| running.control.memory_bytes()),
                    priority: placement.priority,
                    pinned: placement.pinned,
                    mounts: spec.map(|spec| spec.mounts.clone()).unwrap_or_default(),
                    arrived: slot.arrived.clone(),
                }
            })
            .collect();
        loads.sort_by(|a, b| a.name.cmp(&b.name));
        loads
    }

    /// Whether `ferry drain` is in effect here.
    pub fn draining(&self) -> bool {
        self.inner.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Starts or ends a drain; kept across restarts.
    pub fn set_draining(&self, on: bool) -> Result<(), HubError> {
        self.inner.store.set_meta(DRAINING_KEY, if on { "1" } else { "0" })?;
        self.inner.draining.store(on, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}
