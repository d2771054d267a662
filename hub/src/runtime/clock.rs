//! The function's virtual monotonic clock.
//!
//! A guest reads monotonic time from this clock, never from the host's
//! directly, so that its time can be carried across a restore: the clock
//! starts at a given offset and advances with real time from there, and it
//! never goes backwards.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct VirtualClock {
    origin: Instant,
    offset: Duration,
}

impl VirtualClock {
    /// A clock that reads `offset` now.
    pub fn starting_at(offset: Duration) -> VirtualClock {
        VirtualClock {
            origin: Instant::now(),
            offset,
        }
    }

    /// Current monotonic time of the function.
    pub fn now(&self) -> Duration {
        self.offset + self.origin.elapsed()
    }

    /// The host instant at which the virtual clock reads `virtual_time`.
    pub fn host_instant_at(&self, virtual_time: Duration) -> Instant {
        match virtual_time.checked_sub(self.offset) {
            Some(since_origin) => self.origin + since_origin,
            None => self.origin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_starts_at_its_offset_and_never_goes_backwards() {
        let clock = VirtualClock::starting_at(Duration::from_secs(100));
        let first = clock.now();
        let second = clock.now();
        assert!(first >= Duration::from_secs(100));
        assert!(second >= first);
    }

    #[test]
    fn a_virtual_time_before_the_origin_maps_to_the_origin() {
        let clock = VirtualClock::starting_at(Duration::from_secs(100));
        assert_eq!(clock.host_instant_at(Duration::from_secs(1)), clock.origin);
        assert_eq!(
            clock.host_instant_at(Duration::from_secs(101)),
            clock.origin + Duration::from_secs(1)
        );
    }
}
