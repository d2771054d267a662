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

    /// The sample after this one, `seconds` later, of run `generation`
    /// whose counters read as given. A run's counters never go back: one
    /// that reads below the last sample (a run launched with CPU time
    /// carried over, which it has not published yet) has used nothing.
    fn next(self, generation: u64, cpu_micros: u64, demand_micros: u64, seconds: f64) -> CpuSample {
        if self.generation != generation {
            return CpuSample {
                generation,
                cpu_micros,
                demand_micros,
                usage: 0.0,
                demand: 0.0,
            };
        }
        let (cpu_micros, demand_micros) = (cpu_micros.max(self.cpu_micros), demand_micros.max(self.demand_micros));
        CpuSample {
            generation,
            cpu_micros,
            demand_micros,
            usage: (cpu_micros - self.cpu_micros) as f64 / 1e6 / seconds,
            demand: (demand_micros - self.demand_micros) as f64 / 1e6 / seconds,
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
            slot.cpu = slot.cpu.next(
                running.generation,
                running.control.cpu_micros(),
                running.control.demand_micros(),
                seconds,
            );
            totals.usage += slot.cpu.usage;
            totals.demand += slot.cpu.demand;
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

#[cfg(test)]
mod tests {
    use super::CpuSample;

    #[test]
    fn a_run_launched_with_cpu_time_carried_over_is_not_shown_using_it_all_at_once() {
        // Launched from a checkpoint after 9 s of CPU; its counter still
        // reads 0 at the first sample (not published yet), then 9.01 s.
        let launched = CpuSample::launched(7, 9_000_000);
        let first = launched.next(7, 0, 0, 1.0);
        assert_eq!(first.usage, 0.0);
        let second = first.next(7, 9_010_000, 0, 1.0);
        assert!((second.usage - 0.01).abs() < 1e-9, "{second:?}");
    }

    #[test]
    fn a_new_run_starts_its_rates_at_its_first_sample() {
        let old_run = CpuSample::launched(1, 0).next(1, 500_000, 100_000, 1.0);
        assert!((old_run.usage - 0.5).abs() < 1e-9 && (old_run.demand - 0.1).abs() < 1e-9);
        let new_run = old_run.next(2, 20_000, 0, 1.0);
        assert_eq!((new_run.usage, new_run.demand), (0.0, 0.0));
        let later = new_run.next(2, 270_000, 0, 0.5);
        assert!((later.usage - 0.5).abs() < 1e-9, "{later:?}");
    }
}
