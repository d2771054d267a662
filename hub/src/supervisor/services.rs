//! What running guests can ask of the hub: record output, message another
//! function (here or on another hub), call one and wait for its reply.

use std::sync::Arc;
use std::time::Duration;

use ferry_proto::v1::LogStream;

use super::lifecycle::Phase;
use super::{Envelope, Inner};
use crate::runtime::{Delivery, HostServices, ReplyAddress, ReplyTo, Sent, Undelivered};

impl HostServices for Inner {
    fn output(&self, function: &str, stream: LogStream, data: &[u8]) {
        self.logs.append(function, stream, data);
    }

    fn log_position(&self, function: &str) -> u64 {
        self.logs.next_seq(function)
    }

    fn send(&self, from: &str, to: &str, data: &[u8]) -> Delivery {
        let control = {
            let slots = self.lock_slots();
            let rules = |name: &str| {
                slots
                    .get(name)
                    .and_then(|slot| slot.record.spec.as_ref())
                    .and_then(|spec| spec.messaging.as_ref())
            };
            if let Err(rule) = crate::resources::messaging_allowed(from, rules(from), to, rules(to)) {
                drop(slots);
                self.refused(from, to, &rule);
                return Delivery::Done(Err(Undelivered::Denied));
            }
            // A paused run's inbox is already in the snapshot that moves:
            // the message waits for the function where it arrives.
            slots
                .get(to)
                .filter(|slot| slot.phase.is_live() || slot.phase == Phase::MovingOut)
                .and_then(|slot| slot.running.as_ref())
                .map(|running| Arc::clone(&running.control))
        };
        if let Some(control) = control {
            // Copied (up to 16 MiB) outside the lock every function shares.
            return Delivery::Done(match control.deliver_copy(data) {
                Ok(()) => Ok(Vec::new()),
                Err(_) => Err(Undelivered::InboxFull),
            });
        }
        let envelope = Envelope {
            data: data.to_vec(),
            from: Some(from.to_owned()),
            one_way: true,
        };
        self.deliver_outbound(to, envelope, None)
    }

    fn keep_reply(&self, function: &str, reply_to: ReplyTo) -> Option<ReplyAddress> {
        Some(ReplyAddress {
            hub_id: self.identity.id.clone(),
            invocation: self.kept_waiters.keep(function, reply_to),
        })
    }

    fn reply_away(&self, function: &str, to: ReplyAddress, data: Vec<u8>) {
        if to.hub_id == self.identity.id {
            if !self.kept_waiters.deliver(function, to.invocation, data) {
                tracing::debug!(%function, "a reply came after its caller gave up");
            }
            return;
        }
        match self.outbound.get() {
            Some(outbound) => outbound.reply(function.to_owned(), to, data),
            None => tracing::warn!(%function, hub = %to.hub_id, "a reply to another hub cannot be sent"),
        }
    }

    fn keep_outcome(&self, function: &str, outcome: std::sync::mpsc::Receiver<Sent>) -> Option<ReplyAddress> {
        Some(ReplyAddress {
            hub_id: self.identity.id.clone(),
            invocation: self.kept_outcomes.keep(function, outcome),
        })
    }

    fn take_outcome(&self, function: &str, kept: ReplyAddress) -> Delivery {
        if kept.hub_id == self.identity.id {
            return match self.kept_outcomes.take(function, kept.invocation) {
                Some(outcome) => Delivery::Waiting(outcome),
                None => {
                    tracing::debug!(%function, "the outcome of a message is no longer kept");
                    Delivery::Done(Err(Undelivered::Failed))
                }
            };
        }
        match self.outbound.get() {
            Some(outbound) => Delivery::Waiting(outbound.take_outcome(function.to_owned(), kept)),
            None => Delivery::Done(Err(Undelivered::Failed)),
        }
    }

    fn call(&self, from: &str, to: &str, data: Vec<u8>, timeout: Option<Duration>) -> Delivery {
        if from == to {
            // It could only answer once the call gave up: fail it now.
            tracing::debug!(function = %from, "a function called itself");
            return Delivery::Done(Err(Undelivered::Failed));
        }
        {
            let slots = self.lock_slots();
            let rules = slots
                .get(from)
                .and_then(|slot| slot.record.spec.as_ref())
                .and_then(|spec| spec.messaging.as_ref());
            // The callee's rules are checked by the hub that runs it.
            if let Err(rule) = crate::resources::messaging_allowed(from, rules, to, None) {
                drop(slots);
                self.refused(from, to, &rule);
                return Delivery::Done(Err(Undelivered::Denied));
            }
        }
        let envelope = Envelope {
            data,
            from: Some(from.to_owned()),
            one_way: false,
        };
        self.deliver_outbound(to, envelope, timeout)
    }
}

impl Inner {
    fn refused(&self, from: &str, to: &str, rule: &str) {
        tracing::info!(%from, %to, %rule, "message denied");
        self.logs.event(from, &format!("message to {to} denied: {rule}"));
        self.logs.event(to, &format!("message from {from} denied: {rule}"));
    }

    /// Hands a message to the [`Outbound`](super::Outbound): to a function
    /// on another hub, one moving, or (a call) any function.
    fn deliver_outbound(&self, to: &str, envelope: Envelope, timeout: Option<Duration>) -> Delivery {
        let Some(outbound) = self.outbound.get() else {
            tracing::debug!(%to, "message to a function that is not running here");
            return Delivery::Done(Err(Undelivered::NoSuchFunction));
        };
        let timeout = timeout.unwrap_or(self.config.default_invoke_timeout);
        Delivery::Waiting(outbound.deliver(to.to_owned(), envelope, timeout))
    }
}
