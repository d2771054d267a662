//! How many times a move is tried when the link fails under it.
//!
//! A lossy link stalls TCP in retransmission backoff for tens of seconds,
//! and a fresh connection does better than waiting that out; each retry
//! resumes from the chunks the destination already holds. So an attempt
//! that delivered data is progress, not a failure to count: only a run of
//! attempts that delivered nothing (a cut link, a dead peer) ends the
//! move, and a ceiling bounds the whole.

/// Consecutive attempts that delivered nothing after which a move fails.
pub(super) const FRUITLESS_ATTEMPTS: u32 = 3;
/// The most attempts one move makes, however much each delivered.
pub(super) const MOVE_ATTEMPTS: u32 = 12;

/// The attempts of one move so far.
#[derive(Debug)]
pub(super) struct Retries {
    attempts: u32,
    fruitless: u32,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            attempts: 1,
            fruitless: 0,
        }
    }
}

impl Retries {
    /// The attempt under way, counted from 1.
    pub(super) fn attempt(&self) -> u32 {
        self.attempts
    }

    /// The attempt under way failed with its link, the destination having
    /// read `delivered` bytes of it: whether to try again (and count it).
    pub(super) fn retry_after_link_failure(&mut self, delivered: u64) -> bool {
        self.fruitless = if delivered > 0 { 0 } else { self.fruitless + 1 };
        if self.attempts >= MOVE_ATTEMPTS || self.fruitless >= FRUITLESS_ATTEMPTS {
            return false;
        }
        self.attempts += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_that_deliver_data_keep_the_move_going_up_to_the_ceiling() {
        let mut retries = Retries::default();
        let mut tried = 1;
        while retries.retry_after_link_failure(1 << 20) {
            tried += 1;
        }
        assert_eq!(tried, MOVE_ATTEMPTS);
        assert_eq!(retries.attempt(), MOVE_ATTEMPTS);
    }

    #[test]
    fn a_run_of_attempts_that_deliver_nothing_ends_the_move() {
        let mut retries = Retries::default();
        assert!(retries.retry_after_link_failure(1 << 20));
        assert!(retries.retry_after_link_failure(0));
        assert!(retries.retry_after_link_failure(0));
        // The third fruitless attempt in a row is the last.
        assert!(!retries.retry_after_link_failure(0));
        assert_eq!(retries.attempt(), 4);
    }

    #[test]
    fn an_attempt_that_delivers_resets_the_fruitless_run() {
        let mut retries = Retries::default();
        for _ in 0..3 {
            assert!(retries.retry_after_link_failure(0));
            assert!(retries.retry_after_link_failure(0));
            assert!(retries.retry_after_link_failure(4096));
        }
        assert_eq!(retries.attempt(), 10);
    }
}
