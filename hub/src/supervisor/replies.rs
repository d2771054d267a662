//! Waiters of invocations whose function was moved or suspended while it
//! handled them. The waiter (a client's request, another function's
//! `ferry_call`) stays on the hub it asked; the function's snapshot carries
//! the waiter's number, and its reply comes back here from wherever the
//! function runs by then (`Migration.DeliverReply`, or directly when that
//! is this hub).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::runtime::ReplyTo;

#[derive(Default)]
pub(super) struct KeptWaiters {
    waiters: Mutex<HashMap<u64, (String, ReplyTo)>>,
}

impl KeptWaiters {
    /// Keeps `reply_to`, the waiter of an invocation of `function`; its
    /// number. Waiters that gave up meanwhile are dropped.
    pub(super) fn keep(&self, function: &str, reply_to: ReplyTo) -> u64 {
        let mut waiters = self.waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        waiters.retain(|_, (_, waiter)| !waiter.is_closed());
        // Random: a snapshot from an earlier run of this hub never names a
        // waiter of this one.
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
            if number != 0 && !waiters.contains_key(&number) {
                break number;
            }
        };
        waiters.insert(number, (function.to_owned(), reply_to));
        number
    }

    /// Hands `data` to waiter `number` if it is one of `function`'s and
    /// still waits.
    pub(super) fn deliver(&self, function: &str, number: u64, data: Vec<u8>) -> bool {
        let mut waiters = self.waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match waiters.remove(&number) {
            Some((owner, waiter)) if owner == function => waiter.send(Ok(data)).is_ok(),
            Some(other) => {
                waiters.insert(number, other);
                false
            }
            None => false,
        }
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
        assert_eq!(kept.waiters.lock().unwrap().len(), 1);
        assert!(!kept.deliver("f", number, b"late".to_vec()));
    }
}
