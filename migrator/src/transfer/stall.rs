//! How long a transfer may go without progress before it counts as dead.
//!
//! A cut link and a lossy one look alike for a while. On a link that drops a
//! fifth of its packets, TCP backs off between retransmissions (200 ms,
//! 400 ms, … up to 120 s), so many seconds without a byte are normal there.
//! A fixed silence limit either gives up on such a link every time or takes
//! long to notice a cut on a good one. This limit is judged from the
//! transfer's own history instead:
//!
//! - it starts at `base`, so a healthy link notices a cut in that time;
//! - every stall that ended in progress and lasted at least [`SLOW`] shows
//!   a link that loses packets but still delivers, and doubles the limit;
//! - it is never below [`GROWTH`] times the longest stall that recovered;
//! - it is never above `max` (TCP's own longest backoff).
//!
//! Pure: the caller passes the time, so the rule is tested without waiting.

use std::time::{Duration, Instant};

/// A stall at least this long that then recovers marks the link as lossy.
pub const SLOW: Duration = Duration::from_millis(500);
/// How many times the longest recovered stall the limit is at least.
pub const GROWTH: u32 = 4;

/// The stall limit of one side of one transfer.
#[derive(Debug, Clone)]
pub struct StallLimit {
    base: Duration,
    max: Duration,
    last_progress: Instant,
    longest_recovered: Duration,
    slow_recoveries: u32,
}

impl StallLimit {
    pub fn new(base: Duration, max: Duration, now: Instant) -> StallLimit {
        StallLimit {
            base,
            max: max.max(base),
            last_progress: now,
            longest_recovered: Duration::ZERO,
            slow_recoveries: 0,
        }
    }

    /// Something moved at `now`: a frame was sent or received.
    pub fn progressed(&mut self, now: Instant) {
        self.progressed_waiting_since(now, self.last_progress);
    }

    /// Something moved at `now` for a wait that began at `since`: time this
    /// side spent on its own work before it waited is not a stall.
    pub fn progressed_waiting_since(&mut self, now: Instant, since: Instant) {
        let stall = now.saturating_duration_since(self.last_progress.max(since));
        if stall >= SLOW {
            self.slow_recoveries = self.slow_recoveries.saturating_add(1);
        }
        self.longest_recovered = self.longest_recovered.max(stall);
        self.last_progress = now;
    }

    /// How long the transfer may now go without progress.
    pub fn limit(&self) -> Duration {
        let doubled = self.base.saturating_mul(1 << self.slow_recoveries.min(16));
        let judged = self.longest_recovered.saturating_mul(GROWTH);
        doubled.max(judged).clamp(self.base, self.max)
    }

    /// How long from `now` until the transfer counts as dead.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.remaining_waiting_since(now, self.last_progress)
    }

    /// [`StallLimit::remaining`] for a wait that began at `since`: the
    /// other side is silent only while this side waits for it.
    pub fn remaining_waiting_since(&self, now: Instant, since: Instant) -> Duration {
        (self.last_progress.max(since) + self.limit()).saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(5);
    const MAX: Duration = Duration::from_secs(120);

    fn secs(seconds: f64) -> Duration {
        Duration::from_secs_f64(seconds)
    }

    #[test]
    fn a_healthy_link_keeps_the_base_limit() {
        let start = Instant::now();
        let mut stall = StallLimit::new(BASE, MAX, start);
        for step in 1..=1000 {
            stall.progressed(start + secs(0.01 * f64::from(step)));
        }
        assert_eq!(stall.limit(), BASE);
        assert_eq!(stall.remaining(start + secs(10.0) + BASE), Duration::ZERO);
        assert_eq!(stall.remaining(start + secs(10.0)), BASE);
    }

    #[test]
    fn each_slow_stall_that_recovered_doubles_the_limit_up_to_the_max() {
        let start = Instant::now();
        let mut stall = StallLimit::new(BASE, MAX, start);
        let mut now = start;
        let mut limits = Vec::new();
        for _ in 0..6 {
            now += secs(1.5);
            stall.progressed(now);
            limits.push(stall.limit().as_secs());
        }
        assert_eq!(limits, vec![10, 20, 40, 80, 120, 120]);
    }

    #[test]
    fn a_long_recovered_stall_sets_a_floor_of_growth_times_itself() {
        let start = Instant::now();
        let mut stall = StallLimit::new(BASE, MAX, start);
        stall.progressed(start + secs(4.5));
        // One slow recovery doubles to 10 s; 4 × 4.5 s is more.
        assert_eq!(stall.limit(), secs(18.0));
    }

    #[test]
    fn time_this_side_spent_working_before_it_waited_is_not_a_stall() {
        let start = Instant::now();
        let mut stall = StallLimit::new(BASE, MAX, start);
        // Busy for 7 s (compiling), then waiting from there.
        let waiting = start + secs(7.0);
        assert_eq!(stall.remaining_waiting_since(waiting, waiting), BASE);
        stall.progressed_waiting_since(waiting + secs(0.1), waiting);
        assert_eq!(stall.limit(), BASE, "no slow recovery was seen");
    }

    #[test]
    fn time_without_progress_counts_from_the_last_progress() {
        let start = Instant::now();
        let mut stall = StallLimit::new(BASE, MAX, start);
        stall.progressed(start + secs(0.2));
        assert_eq!(stall.remaining(start + secs(2.2)), secs(3.0));
        assert_eq!(stall.remaining(start + secs(60.0)), Duration::ZERO);
    }
}
