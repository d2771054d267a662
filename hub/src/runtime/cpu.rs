//! CPU for functions: what each one used, what it wanted, and the quota that
//! keeps all of a hub's functions within the cores it may give them.
//!
//! - **Capacity.** A hub gives its functions `ferry agent --cpus N` cores
//!   (fractional allowed). Enforced like a CFS bandwidth quota: in every
//!   [`PERIOD`] the functions together may use `N × PERIOD` of CPU time;
//!   once that is spent, each function that reaches a preemption point waits
//!   for the next period. Which function runs in between is the kernel's
//!   fair scheduler's choice, so runnable functions share the quota evenly.
//!   A function's own cap (`ferry deploy --cpus`) is a second quota of the
//!   same kind. CPU used beyond a quota (a long host call) is carried into
//!   the next period, so the average never exceeds it.
//! - **Usage** is the thread CPU time of the function's run.
//! - **Demand** is time the function was runnable but did not run: throttled
//!   by the hub's quota, plus time its thread waited for a core (the kernel's
//!   run-queue delay, `/proc/thread-self/schedstat`). Time held back by its
//!   own cap is not demand (it asked for that), and a function that sleeps
//!   or waits for messages has none.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Length of one quota period.
pub const PERIOD: Duration = Duration::from_millis(100);

/// How often a function's run-queue delay is read (a small file read).
const RUN_DELAY_EVERY: Duration = Duration::from_millis(100);

/// How often a preemption point charges the CPU used (reading the thread's
/// CPU clock is a system call, about 1.5 µs with the rest of the charge on
/// this machine kind, and preemption points come every 50–100 µs in a
/// busy loop); the ones in between only look for stop and capture requests.
/// A quota may be overdrawn by this much per period, and is paid back in
/// the next (debt is carried over).
pub const CHARGE_EVERY: Duration = Duration::from_millis(1);

/// Most cores a hub or function may be given.
pub const MAX_CPUS: f64 = 1024.0;

/// CPU time of the thread a function runs on. Must be created and read on
/// that thread (the function's own).
#[derive(Debug)]
pub struct CpuMeter {
    thread_time_at_start: Duration,
    base: Duration,
    /// Time the thread spent on the hub's behalf, not the function's.
    excluded: Duration,
}

impl CpuMeter {
    /// Starts metering on the calling thread, continuing from `base`.
    pub fn start(base: Duration) -> CpuMeter {
        CpuMeter {
            thread_time_at_start: cpu_time::ThreadTime::now().as_duration(),
            base,
            excluded: Duration::ZERO,
        }
    }

    pub fn used(&self) -> Duration {
        let now = cpu_time::ThreadTime::now().as_duration();
        (self.base + now.saturating_sub(self.thread_time_at_start)).saturating_sub(self.excluded)
    }

    /// Leaves `spent` of this thread's time out of the function's.
    pub fn exclude(&mut self, spent: Duration) {
        self.excluded += spent;
    }
}

/// A CPU quota of `cores` per [`PERIOD`], charged after the fact. Pure: time
/// is passed in.
#[derive(Debug, Clone)]
pub struct Quota {
    cores: f64,
    period_start: Option<Instant>,
    /// CPU charged in the current period, including debt carried over.
    used: Duration,
}

impl Quota {
    pub fn new(cores: f64) -> Quota {
        Quota {
            cores,
            period_start: None,
            used: Duration::ZERO,
        }
    }

    pub fn cores(&self) -> f64 {
        self.cores
    }

    pub fn set_cores(&mut self, cores: f64) {
        self.cores = cores;
    }

    fn budget(&self) -> Duration {
        PERIOD.mul_f64(self.cores)
    }

    /// Charges `used` CPU at `now`; returns when the next period with budget
    /// left begins if this one's is spent (the caller waits until then).
    pub fn charge(&mut self, used: Duration, now: Instant) -> Option<Instant> {
        let budget = self.budget();
        let start = *self.period_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= PERIOD {
            // Periods went by: each paid off one budget of the debt.
            let periods = (elapsed.as_nanos() / PERIOD.as_nanos()) as u32;
            self.used = self.used.saturating_sub(budget * periods);
            self.period_start = Some(start + PERIOD * periods);
        }
        self.used += used;
        if self.used < budget || budget.is_zero() {
            return None;
        }
        // Wait out this period and as many more as the debt needs.
        let start = self.period_start.unwrap_or(now);
        let periods = (self.used.as_nanos() / budget.as_nanos().max(1)) as u32;
        Some(start + PERIOD * periods.max(1))
    }
}

/// The hub-wide quota every function of the hub charges.
#[derive(Debug)]
pub struct CpuGovernor {
    quota: Mutex<Quota>,
}

impl CpuGovernor {
    pub fn new(cores: f64) -> CpuGovernor {
        CpuGovernor {
            quota: Mutex::new(Quota::new(cores)),
        }
    }

    /// Cores this hub gives its functions.
    pub fn capacity(&self) -> f64 {
        self.lock().cores()
    }

    pub fn set_capacity(&self, cores: f64) {
        self.lock().set_cores(cores);
    }

    /// Charges `used` CPU; `Some(until)` if the hub's quota is spent.
    pub fn charge(&self, used: Duration, now: Instant) -> Option<Instant> {
        self.lock().charge(used, now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Quota> {
        self.quota.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The CPU a hub may give its functions when `--cpus` is not set: the
/// cgroup's CPU quota if one is set (cgroup v2 `cpu.max`, or v1
/// `cpu.cfs_quota_us`), else every CPU the process may run on.
pub fn default_capacity() -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    cgroup_quota().map_or(cpus, |quota| quota.min(cpus))
}

fn cgroup_quota() -> Option<f64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    if let Some(max) = read("/sys/fs/cgroup/cpu.max") {
        let mut parts = max.split_whitespace();
        let quota: f64 = parts.next()?.parse().ok()?;
        let period: f64 = parts.next()?.parse().ok()?;
        return (quota > 0.0 && period > 0.0).then_some(quota / period);
    }
    let quota: f64 = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")?.trim().parse().ok()?;
    let period: f64 = read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")?.trim().parse().ok()?;
    (quota > 0.0 && period > 0.0).then_some(quota / period)
}

/// Checks a `--cpus` value: a positive, finite number of cores.
pub fn check_cpus(cores: f64) -> Result<f64, String> {
    if !cores.is_finite() || cores <= 0.0 {
        return Err(format!(
            "must be a positive number of cores (like 0.5 or 2), not {cores}"
        ));
    }
    if cores > MAX_CPUS {
        return Err(format!("at most {MAX_CPUS} cores, not {cores}"));
    }
    Ok(cores)
}

/// One run's CPU accounting, kept on the function's own thread.
#[derive(Debug)]
pub struct CpuAccount {
    /// Thread CPU time charged so far.
    charged: Duration,
    /// The function's own cap, if it has one.
    own: Option<Quota>,
    /// What a move holds it to while it converges, if it does.
    slowed: Option<Quota>,
    last_run_delay: Option<Duration>,
    run_delay_read_at: Instant,
    /// When [`charge`](Self::charge) last ran.
    charged_at: Instant,
}

/// What a preemption point learned from charging the CPU used since the last.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Charge {
    /// Run-queue delay since the last reading (demand).
    pub waited_for_core: Duration,
    /// Wait until then before going on: a quota is spent.
    pub throttle_until: Option<Instant>,
    /// The part of the wait the hub's quota causes, which is demand; time
    /// held back by the function's own cap is not (it asked for that).
    pub hub_throttle_until: Option<Instant>,
}

impl CpuAccount {
    /// Starts accounting for a run whose CPU meter reads `used` now.
    pub fn start(used: Duration, cap_cores: Option<f64>) -> CpuAccount {
        let now = Instant::now();
        CpuAccount {
            charged: used,
            own: cap_cores.map(Quota::new),
            slowed: None,
            last_run_delay: read_run_delay(),
            run_delay_read_at: now,
            charged_at: now,
        }
    }

    /// Whether a preemption point at `now` should charge: [`CHARGE_EVERY`]
    /// passed since the last charge.
    pub fn due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.charged_at) >= CHARGE_EVERY
    }

    /// Charges the CPU used since the last call (`used` is the meter's
    /// reading) to the function's own cap, the cap a move holds it to
    /// (`slowed`, in cores) and the hub's quota.
    pub fn charge(
        &mut self,
        used: Duration,
        (governor, slowed): (Option<&CpuGovernor>, Option<f64>),
        now: Instant,
    ) -> Charge {
        self.charged_at = now;
        let delta = used.saturating_sub(self.charged);
        self.charged = used.max(self.charged);
        let hub_throttle_until = governor.and_then(|governor| governor.charge(delta, now));
        let mut throttle_until = hub_throttle_until;
        match (slowed, &mut self.slowed) {
            (Some(cores), Some(quota)) => quota.set_cores(cores),
            (Some(cores), quota) => *quota = Some(Quota::new(cores)),
            (None, quota) => *quota = None,
        }
        for cap in [self.own.as_mut(), self.slowed.as_mut()].into_iter().flatten() {
            if let Some(until) = cap.charge(delta, now) {
                throttle_until = Some(throttle_until.map_or(until, |other| other.max(until)));
            }
        }
        let mut waited_for_core = Duration::ZERO;
        if now.saturating_duration_since(self.run_delay_read_at) >= RUN_DELAY_EVERY {
            self.run_delay_read_at = now;
            let delay = read_run_delay();
            if let (Some(before), Some(after)) = (self.last_run_delay, delay) {
                waited_for_core = after.saturating_sub(before);
            }
            self.last_run_delay = delay;
        }
        Charge {
            waited_for_core,
            throttle_until,
            hub_throttle_until,
        }
    }
}

/// Time the calling thread spent runnable but waiting for a core, if the
/// kernel reports it.
fn read_run_delay() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = stat.split_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn time_spent_for_the_hub_is_left_out_of_the_functions_cpu() {
        let mut meter = CpuMeter::start(Duration::from_secs(5));
        meter.exclude(Duration::from_secs(3));
        let used = meter.used();
        assert!(
            used >= Duration::from_secs(2) && used < Duration::from_secs(5),
            "{used:?}"
        );
    }

    #[test]
    fn a_quota_lets_its_budget_through_and_then_waits_for_the_next_period() {
        let t0 = Instant::now();
        let mut quota = Quota::new(0.5);
        assert_eq!(quota.charge(20 * MS, t0), None);
        assert_eq!(quota.charge(20 * MS, t0 + 10 * MS), None);
        assert_eq!(quota.charge(10 * MS, t0 + 20 * MS), Some(t0 + PERIOD));
        // A new period starts with a fresh budget.
        assert_eq!(quota.charge(10 * MS, t0 + PERIOD), None);
    }

    #[test]
    fn cpu_used_beyond_the_budget_is_paid_off_in_later_periods() {
        let t0 = Instant::now();
        let mut quota = Quota::new(0.5);
        // 120 ms at once (a long host call): two and a half budgets.
        assert_eq!(quota.charge(120 * MS, t0), Some(t0 + 2 * PERIOD));
        // Two periods later 20 ms of debt remain; 30 ms more spend the budget.
        assert_eq!(quota.charge(MS, t0 + 2 * PERIOD), None);
        assert_eq!(quota.charge(29 * MS, t0 + 2 * PERIOD + MS), Some(t0 + 3 * PERIOD));
    }

    #[test]
    fn over_many_periods_the_average_stays_within_the_quota() {
        let t0 = Instant::now();
        let mut quota = Quota::new(0.25);
        let mut now = t0;
        let mut used = Duration::ZERO;
        while now < t0 + 100 * PERIOD {
            used += MS;
            now = quota.charge(MS, now).unwrap_or(now + MS);
        }
        let rate = used.as_secs_f64() / now.duration_since(t0).as_secs_f64();
        assert!((0.24..=0.26).contains(&rate), "{rate}");
    }

    #[test]
    fn a_function_under_its_own_cap_waits_even_when_the_hub_has_room() {
        let t0 = Instant::now();
        let governor = CpuGovernor::new(2.0);
        let mut account = CpuAccount::start(Duration::ZERO, Some(0.1));
        assert_eq!(account.charge(5 * MS, (Some(&governor), None), t0).throttle_until, None);
        assert_eq!(
            account.charge(10 * MS, (Some(&governor), None), t0 + MS).throttle_until,
            Some(t0 + PERIOD)
        );
    }

    #[test]
    fn a_function_a_move_slows_down_waits_and_runs_freely_once_the_move_lifts_it() {
        let t0 = Instant::now();
        let mut account = CpuAccount::start(Duration::ZERO, None);
        // (Each charge takes the meter's reading: what it adds is the use.)
        assert_eq!(account.charge(30 * MS, (None, None), t0).throttle_until, None);
        // Held to a tenth of a core: 10 ms a period, so 45 ms more take four.
        let slowed = account.charge(75 * MS, (None, Some(0.1)), t0 + MS);
        assert_eq!(slowed.throttle_until, Some(t0 + MS + 4 * PERIOD));
        assert_eq!(slowed.hub_throttle_until, None, "not demand: the move asked for it");
        // Lifted: twice that goes through.
        assert_eq!(account.charge(165 * MS, (None, None), t0 + 2 * MS).throttle_until, None);
    }

    #[test]
    fn a_charge_is_due_once_charge_every_passed_since_the_last() {
        let mut account = CpuAccount::start(Duration::ZERO, None);
        let t0 = account.charged_at;
        assert!(!account.due(t0));
        assert!(!account.due(t0 + CHARGE_EVERY / 2));
        assert!(account.due(t0 + CHARGE_EVERY));
        account.charge(MS, (None, None), t0 + CHARGE_EVERY);
        assert!(!account.due(t0 + CHARGE_EVERY + CHARGE_EVERY / 2));
        assert!(account.due(t0 + 2 * CHARGE_EVERY));
    }

    #[test]
    fn cpus_must_be_a_positive_finite_number_of_cores() {
        assert_eq!(check_cpus(0.5), Ok(0.5));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 5000.0] {
            assert!(check_cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_capacity_is_at_least_a_fraction_of_a_core() {
        let cores = default_capacity();
        assert!(cores > 0.0 && cores <= MAX_CPUS, "{cores}");
    }
}
