//! What a hub keeps for a function that was moved or suspended in the
//! middle of a message, under a number the function's snapshot carries:
//!
//! - **waiters** of invocations it was handling. The waiter (a client's
//!   request, another function's `ferry_call`) stays on the hub it asked;
//!   the function's reply comes back here from wherever the function runs
//!   by then (`Migration.DeliverReply`, or directly when that is this hub).
//! - **outcomes** of messages it sent and was waiting on (`ferry_call`'s
//!   reply, `ferry_send`'s delivery). The outcome arrives here; the
//!   function's replayed call takes it from wherever the function runs by
//!   then (`Migration.TakeOutcome`, or directly).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::runtime::{ReplyTo, Sent};

/// How long an outcome nobody took is kept: its function was removed, or
/// stayed suspended longer than this (its call then fails when it resumes).
const OUTCOME_KEPT_FOR: Duration = Duration::from_secs(3600);

/// Values kept for functions under random numbers.
struct Kept<T> {
    entries: Mutex<HashMap<u64, KeptValue<T>>>,
}

struct KeptValue<T> {
    function: String,
    value: T,
    since: Instant,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept {
            entries: Mutex::default(),
        }
    }
}

impl<T> Kept<T> {
    /// Keeps `value` for `function`; its number. Entries for which `keep`
    /// says false are dropped meanwhile.
    fn keep(&self, function: &str, value: T, keep: impl Fn(&T, Instant) -> bool) -> u64 {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.retain(|_, entry| keep(&entry.value, entry.since));
        // Random: a snapshot from an earlier run of this hub never names a
        // value of this one.
        let number = loop {
            let mut bytes = [0u8; 8];
            if getrandom::fill(&mut bytes).is_err() {
                bytes = (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as u64)
                    .to_le_bytes();
            }
            let number = u64::from_le_bytes(bytes);
            if number != 0 && !entries.contains_key(&number) {
                break number;
            }
        };
        let function = function.to_owned();
        let since = Instant::now();
        entries.insert(number, KeptValue { function, value, since });
        number
    }

    /// Takes value `number` if it is one of `function`'s.
    fn take(&self, function: &str, number: u64) -> Option<T> {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match entries.remove(&number) {
            Some(entry) if entry.function == function => Some(entry.value),
            Some(other) => {
                entries.insert(number, other);
                None
            }
            None => None,
        }
    }
}

/// Waiters of invocations whose function was moved or suspended while it
/// handled them.
#[derive(Default)]
pub(super) struct KeptWaiters {
    waiters: Kept<ReplyTo>,
}

impl KeptWaiters {
    /// Keeps `reply_to`, the waiter of an invocation of `function`; its
    /// number. Waiters that gave up meanwhile are dropped.
    pub(super) fn keep(&self, function: &str, reply_to: ReplyTo) -> u64 {
        self.waiters.keep(function, reply_to, |waiter, _| !waiter.is_closed())
    }

    /// Hands `data` to waiter `number` if it is one of `function`'s and
    /// still waits.
    pub(super) fn deliver(&self, function: &str, number: u64, data: Vec<u8>) -> bool {
        self.waiters
            .take(function, number)
            .is_some_and(|waiter| waiter.send(Ok(data)).is_ok())
    }
}

/// Outcomes of messages sent by functions that were moved or suspended
/// before the outcome came.
#[derive(Default)]
pub(super) struct KeptOutcomes {
    outcomes: Kept<Receiver<Sent>>,
}

impl KeptOutcomes {
    /// Keeps the outcome `function` waits for; its number. Outcomes kept
    /// longer than [`OUTCOME_KEPT_FOR`] are dropped meanwhile.
    pub(super) fn keep(&self, function: &str, outcome: Receiver<Sent>) -> u64 {
        self.outcomes
            .keep(function, outcome, |_, since| since.elapsed() < OUTCOME_KEPT_FOR)
    }

    /// Takes outcome `number` of `function`, once.
    pub(super) fn take(&self, function: &str, number: u64) -> Option<Receiver<Sent>> {
        self.outcomes.take(function, number)
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;

    #[test]
    fn a_kept_waiter_gets_its_functions_reply_once_and_no_other() {
        let kept = KeptWaiters::default();
        let (reply_to, answer) = oneshot::channel();
        let number = kept.keep("f", reply_to);
        assert!(!kept.deliver("g", number, b"wrong".to_vec()));
        assert!(!kept.deliver("f", number.wrapping_add(1), b"wrong".to_vec()));
        assert!(kept.deliver("f", number, b"right".to_vec()));
        assert!(!kept.deliver("f", number, b"again".to_vec()));
        assert_eq!(answer.blocking_recv().unwrap(), Ok(b"right".to_vec()));
    }

    #[test]
    fn waiters_that_gave_up_are_dropped_and_their_replies_go_nowhere() {
        let kept = KeptWaiters::default();
        let (reply_to, answer) = oneshot::channel();
        let number = kept.keep("f", reply_to);
        drop(answer);
        let (other, _waiting) = oneshot::channel();
        kept.keep("f", other);
        assert_eq!(kept.waiters.entries.lock().unwrap().len(), 1);
        assert!(!kept.deliver("f", number, b"late".to_vec()));
    }

    #[test]
    fn a_kept_outcome_is_taken_once_and_only_by_its_function() {
        let kept = KeptOutcomes::default();
        let (outcome, waited) = std::sync::mpsc::channel();
        let number = kept.keep("caller", waited);
        assert!(kept.take("other", number).is_none());
        outcome.send(Ok(b"reply".to_vec())).unwrap();
        let taken = kept.take("caller", number).expect("kept");
        assert_eq!(taken.recv().unwrap(), Ok(b"reply".to_vec()));
        assert!(kept.take("caller", number).is_none());
    }
}
