//! What running guests can ask of the hub: record output, message another function.

use ferry_proto::v1::LogStream;

use super::Inner;
use crate::runtime::{HostServices, Message, SendOutcome};

impl HostServices for Inner {
    fn output(&self, function: &str, stream: LogStream, data: &[u8]) {
        self.logs.append(function, stream, data);
    }

    fn log_position(&self, function: &str) -> u64 {
        self.logs.next_seq(function)
    }

    fn send(&self, from: &str, to: &str, data: Vec<u8>) -> SendOutcome {
        let slots = self.lock_slots();
        let Some(running) = slots.get(to).and_then(|slot| slot.running.as_ref()) else {
            tracing::debug!(%from, %to, "message to a function that is not running here");
            return SendOutcome::NoSuchFunction;
        };
        match running.control.deliver(Message { data, reply_to: None }) {
            Ok(()) => SendOutcome::Delivered,
            Err(_) => SendOutcome::InboxFull,
        }
    }
}
