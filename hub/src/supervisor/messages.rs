//! Messages to functions: invocations from clients, and what functions
//! send to and call of each other. A message to a function this hub does
//! not run goes through the [`Outbound`] the API layer installs, which
//! finds the hub that runs it.

use std::sync::Arc;
use std::time::Duration;

use ferry_proto::{ErrorCode, ServiceError};
use tokio::sync::oneshot;

use super::lifecycle::Phase;
use super::{Supervisor, records};
use crate::error::HubError;
use crate::runtime::{Message, ReplyAddress, Undelivered, Withdrawn};

/// How long an invocation whose function ended waits for that end to be
/// recorded, to say how it ended.
const END_RECORDED_WAIT: Duration = Duration::from_secs(2);

/// A message on its way to a function.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    pub data: Vec<u8>,
    /// The function that sends it; `None` for a client.
    pub from: Option<String>,
    /// Put in the inbox with no reply expected (`ferry_send`).
    pub one_way: bool,
}

/// Delivers messages to functions wherever they run, retrying while they
/// move: the API layer, which knows peers and forwarding.
pub trait Outbound: Send + Sync {
    /// Starts delivering `envelope` to the function `to`; the reply (empty
    /// for a one-way message) or why there is none comes on the channel,
    /// within `timeout`.
    fn deliver(
        &self,
        to: String,
        envelope: Envelope,
        timeout: Duration,
    ) -> std::sync::mpsc::Receiver<crate::runtime::Sent>;

    /// Sends `function`'s reply to a waiter another hub kept (in the
    /// background: the function does not wait).
    fn reply(&self, function: String, to: ReplyAddress, data: Vec<u8>);

    /// Takes the outcome of a message `function` sent, which another hub
    /// kept while the function was captured (waiting for it there first).
    fn take_outcome(&self, function: String, kept: ReplyAddress) -> std::sync::mpsc::Receiver<crate::runtime::Sent>;
}

/// What a guest is told when its message was refused or not answered.
pub fn undelivered(error: &HubError) -> Undelivered {
    let code = match error {
        HubError::Remote { code, .. } => *code,
        HubError::NotRunning { .. } | HubError::NoReply { .. } => return Undelivered::Failed,
        error => error.error_code(),
    };
    match code {
        ErrorCode::NotFound | ErrorCode::InvalidArgument => Undelivered::NoSuchFunction,
        ErrorCode::PermissionDenied => Undelivered::Denied,
        ErrorCode::ResourceExhausted => Undelivered::InboxFull,
        ErrorCode::DeadlineExceeded => Undelivered::TimedOut,
        _ => Undelivered::Failed,
    }
}

impl Supervisor {
    /// Installs what carries messages to other hubs (once).
    pub fn set_outbound(&self, outbound: Arc<dyn Outbound>) {
        let _ = self.inner.outbound.set(outbound);
    }

    /// Hands `function`'s reply to the waiter this hub kept as `number`
    /// when the function moved away or was suspended; false if no such
    /// waiter waits.
    pub fn deliver_reply(&self, function: &str, number: u64, data: Vec<u8>) -> bool {
        self.inner.kept_waiters.deliver(function, number, data)
    }

    /// Takes the outcome of a message `function` sent, which this hub kept
    /// as `number` when the function was moved or suspended before it
    /// came; `None` if no such outcome is kept (taken already, or kept by
    /// an earlier run of this hub).
    pub fn take_outcome(&self, function: &str, number: u64) -> Option<std::sync::mpsc::Receiver<crate::runtime::Sent>> {
        self.inner.kept_outcomes.take(function, number)
    }

    /// Delivers `data` from a client to the function's inbox and waits for
    /// its reply.
    pub async fn invoke(&self, name: &str, data: Vec<u8>, timeout: Option<Duration>) -> Result<Vec<u8>, HubError> {
        let envelope = Envelope {
            data,
            ..Envelope::default()
        };
        self.message(name, envelope, timeout).await
    }

    /// Delivers a message to the function's inbox and waits for its reply
    /// (a one-way message: only until the inbox took it, replying empty).
    pub async fn message(
        &self,
        name: &str,
        envelope: Envelope,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, HubError> {
        let timeout = timeout.unwrap_or(self.inner.config.default_invoke_timeout);
        let (reply_to, reply) = oneshot::channel();
        // Which slot took the message: a redeploy or an arrival is another.
        let incarnation = {
            let slots = self.inner.lock_slots();
            let slot = slots.get(name).ok_or_else(|| self.inner.not_found(name))?;
            let rules = slot.record.spec.as_ref().and_then(|spec| spec.messaging.as_ref());
            let refusal = match &envelope.from {
                Some(from) => crate::resources::messaging_allowed(from, None, name, rules).err(),
                // A client is no function: a list of invokers leaves it out.
                None => rules.filter(|rules| rules.restrict_invoked_by).map(|rules| {
                    format!(
                        "function {name:?} may be invoked only by the functions {:?} (messaging.invoked-by), not by a client",
                        rules.invoked_by
                    )
                }),
            };
            if let Some(rule) = refusal {
                drop(slots);
                self.inner.logs.event(name, &format!("invocation denied: {rule}"));
                return Err(HubError::MessagingDenied { rule });
            }
            // A paused run's inbox is already in the snapshot that moves.
            let accepts = slot.phase.is_live() || slot.phase == Phase::MovingOut;
            let Some(running) = slot.running.as_ref().filter(|_| accepts) else {
                return Err(match slot.phase {
                    Phase::PausedForMove | Phase::Arriving => HubError::Moving { name: name.to_owned() },
                    phase => HubError::NotRunning {
                        name: name.to_owned(),
                        state: records::phase_words(phase),
                    },
                });
            };
            let message = Message {
                data: envelope.data,
                reply_to: (!envelope.one_way).then_some(reply_to),
            };
            running
                .control
                .deliver(message)
                .map_err(|(_, queued)| HubError::InboxFull {
                    name: name.to_owned(),
                    queued,
                })?;
            slot.incarnation
        };
        if envelope.one_way {
            return Ok(Vec::new());
        }
        match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(Ok(data))) => Ok(data),
            // Taken back unread for a move or a suspend: the caller may
            // send it again.
            Ok(Ok(Err(Withdrawn))) => Err(self.withdrawn_error(name)),
            Ok(Err(_)) => Err(self.no_reply_error(name, incarnation).await),
            Err(_) => Err(HubError::InvokeTimeout {
                name: name.to_owned(),
                timeout_ms: timeout.as_millis() as u64,
                now: self.not_replying_because(name),
            }),
        }
    }

    /// Why a function that took a message has not replied, when it was
    /// suspended while it handled it (the call is in its checkpoint: it
    /// replies once resumed, to a caller still waiting); empty otherwise.
    /// (A stop ends the run, and its caller hears that at once.)
    fn not_replying_because(&self, name: &str) -> String {
        let phase = self.inner.lock_slots().get(name).map(|slot| slot.phase);
        match phase {
            Some(phase @ (Phase::Suspending(_) | Phase::Suspended(_))) => {
                format!(
                    ": it is {} (it replies once resumed, if the caller still waits)",
                    records::phase_words(phase)
                )
            }
            _ => String::new(),
        }
    }

    /// What the caller of an invocation whose function ended before it
    /// replied hears: how it ended, once that is recorded (a moment after
    /// the run dropped the reply).
    async fn no_reply_error(&self, name: &str, incarnation: u64) -> HubError {
        if let Some(mut finished) = self.finished_receiver(name) {
            let _ = tokio::time::timeout(END_RECORDED_WAIT, finished.wait_for(|done| *done)).await;
        }
        let ended = match (
            self.inner.ended_for_good(incarnation),
            self.inner.lock_slots().get(name),
        ) {
            (Some(why), _) => format!(": it was {why}"),
            (None, Some(slot)) if slot.incarnation == incarnation => match slot.phase {
                Phase::Failed => format!(": it failed: {}", slot.record.failure),
                Phase::Exited => format!(": it exited with code {}", slot.record.exit_code),
                Phase::Stopping | Phase::Stopped => ": it was stopped".to_owned(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        HubError::NoReply {
            name: name.to_owned(),
            ended,
        }
    }

    /// What the caller of an invocation taken back unread hears: the
    /// function's state now, in words that tell a retrying caller
    /// ([`crate::api::worth_retrying`]) whether to send it again.
    fn withdrawn_error(&self, name: &str) -> HubError {
        let phase = self.inner.lock_slots().get(name).map(|slot| slot.phase);
        match phase {
            Some(phase @ (Phase::Suspending(_) | Phase::Suspended(_) | Phase::ShuttingDown)) => HubError::NotRunning {
                name: name.to_owned(),
                state: records::phase_words(phase),
            },
            // Moving or moved away. Also a function running again after a
            // move or a suspend that failed: its callers retry and reach it.
            _ => HubError::Moving { name: name.to_owned() },
        }
    }
}
