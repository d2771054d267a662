//! The stall limit of one side of a transfer, applied to its waits.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_migrator::transfer::StallLimit;

use super::{STALL_MAX, STALL_TIMEOUT};

/// Judges a transfer's progress (see [`StallLimit`]); cheap to clone, so
/// every task of one side shares it.
#[derive(Clone)]
pub struct Watchdog(Arc<Mutex<StallLimit>>);

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog::starting_at(STALL_TIMEOUT)
    }
}

impl Watchdog {
    /// A watchdog whose limit starts at `base` (at least [`STALL_TIMEOUT`],
    /// at most [`STALL_MAX`]).
    pub fn starting_at(base: Duration) -> Watchdog {
        let base = base.clamp(STALL_TIMEOUT, STALL_MAX);
        Watchdog(Arc::new(Mutex::new(StallLimit::new(base, STALL_MAX, Instant::now()))))
    }

    /// Runs `operation` until it completes (progress) or the transfer has
    /// gone without progress for as long as its history allows; then the
    /// error is the limit that ran out.
    /// Only the time spent waiting counts: this side's own work before the
    /// wait (a capture, a compile) is not the other side's silence.
    pub async fn guard<F: Future>(&self, operation: F) -> Result<F::Output, Duration> {
        let since = Instant::now();
        let mut operation = std::pin::pin!(operation);
        loop {
            let wait = self.lock().remaining_waiting_since(Instant::now(), since);
            if wait.is_zero() {
                return Err(self.lock().limit());
            }
            // Another task's progress meanwhile moves the deadline on.
            if let Ok(output) = tokio::time::timeout(wait, &mut operation).await {
                self.lock().progressed_waiting_since(Instant::now(), since);
                return Ok(output);
            }
        }
    }

    /// Something moved now (noted by a task other than the waiting one).
    pub fn progressed(&self) {
        self.lock().progressed(Instant::now());
    }

    /// The limit now (for waits that also allow the other side's work).
    pub fn limit(&self) -> Duration {
        self.lock().limit()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StallLimit> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
