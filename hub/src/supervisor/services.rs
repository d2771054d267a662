//! What running guests can ask of the hub: record output, message another function.

use std::sync::Arc;

use ferry_proto::v1::LogStream;

use super::Inner;
use crate::runtime::{HostServices, SendOutcome};

impl HostServices for Inner {
    fn output(&self, function: &str, stream: LogStream, data: &[u8]) {
        self.logs.append(function, stream, data);
    }

    fn log_position(&self, function: &str) -> u64 {
        self.logs.next_seq(function)
    }

    fn send(&self, from: &str, to: &str, data: &[u8]) -> SendOutcome {
        let control = {
            let slots = self.lock_slots();
            let Some(slot) = slots.get(to) else {
                tracing::debug!(%from, %to, "message to a function that is not running here");
                return SendOutcome::NoSuchFunction;
            };
            let rules = |name: &str| {
                slots
                    .get(name)
                    .and_then(|slot| slot.record.spec.as_ref())
                    .and_then(|spec| spec.messaging.as_ref())
            };
            if let Err(rule) = crate::resources::messaging_allowed(from, rules(from), to, rules(to)) {
                drop(slots);
                tracing::info!(%from, %to, %rule, "message denied");
                self.logs.event(from, &format!("message to {to} denied: {rule}"));
                self.logs.event(to, &format!("message from {from} denied: {rule}"));
                return SendOutcome::Denied;
            }
            let Some(running) = slot.running.as_ref() else {
                tracing::debug!(%from, %to, "message to a function that is not running here");
                return SendOutcome::NoSuchFunction;
            };
            Arc::clone(&running.control)
        };
        // Copied (up to 16 MiB) outside the lock every function shares.
        match control.deliver_copy(data) {
            Ok(()) => SendOutcome::Delivered,
            Err(_) => SendOutcome::InboxFull,
        }
    }
}
