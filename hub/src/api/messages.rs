//! Invocations, and the messages functions send to and call of each
//! other, delivered wherever the function runs and retried while it moves.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ferry_proto::ErrorCode;
use ferry_proto::internal::v1::migration_client::MigrationClient;
use ferry_proto::internal::v1::{DeliverReplyRequest, TakeOutcomeRequest};
use ferry_proto::v1::{InvokeRequest, InvokeResponse};
use tonic::transport::Channel;

use super::{ApiParts, HubApi};
use crate::error::HubError;
use crate::metrics::InvocationOutcome;
use crate::runtime::{ReplyAddress, Sent};
use crate::supervisor::{Envelope, Outbound, undelivered};

/// How long an invocation waits before it tries a function that was
/// moving, suspended or starting again.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// How often a reply to a waiter on another hub is tried, and how long
/// each try may take.
const REPLY_ATTEMPTS: u32 = 5;
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

impl HubApi {
    /// Sends the function a message and waits for its reply (`timeout_ms`
    /// 0: the hub's default), here or where it runs.
    pub async fn invoke(&self, request: InvokeRequest, hops: u32) -> Result<InvokeResponse, HubError> {
        // What a guest could not send either (its sends and replies stop there).
        let limit = crate::runtime::MAX_MESSAGE_BYTES as usize;
        if request.data.len() > limit {
            return Err(HubError::InvalidRequest(format!(
                "the message is {} bytes; a message is at most {limit} bytes (16 MiB)",
                request.data.len()
            )));
        }
        self.forward_or_run(
            request,
            hops,
            async |mut hub, request| hub.invoke(request).await,
            async |request| {
                let timeout = (request.timeout_ms > 0).then(|| Duration::from_millis(u64::from(request.timeout_ms)));
                let started = Instant::now();
                let envelope = Envelope {
                    data: request.data,
                    from: (!request.from_function.is_empty()).then_some(request.from_function),
                    one_way: request.one_way,
                };
                let result = self.supervisor().message(&request.name, envelope, timeout).await;
                let outcome = match &result {
                    Ok(_) => Some(InvocationOutcome::Succeeded),
                    Err(HubError::InvokeTimeout { .. }) => Some(InvocationOutcome::TimedOut),
                    // Only functions that exist get a label.
                    Err(HubError::FunctionNotFound { .. } | HubError::InvalidName { .. }) => None,
                    Err(_) => Some(InvocationOutcome::Failed),
                };
                if let Some(outcome) = outcome {
                    self.supervisor()
                        .metrics()
                        .invocation(&request.name, outcome, started.elapsed());
                }
                Ok(InvokeResponse {
                    data: result?,
                    hub_name: self.supervisor().identity().name.clone(),
                })
            },
        )
        .await
    }

    /// [`invoke`](Self::invoke) within `deadline`, through moves: a
    /// function that is moving, suspended or starting is tried again every
    /// [`RETRY_EVERY`] (after a move, where it went). A message is sent
    /// again only when it was refused or taken back unread, so it reaches
    /// the function at most once. `queued` hears whether the message waits
    /// (true) or is sent (false).
    pub async fn invoke_through_moves(
        &self,
        mut request: InvokeRequest,
        deadline: Duration,
        queued: impl Fn(bool),
    ) -> Result<InvokeResponse, HubError> {
        let until = Instant::now() + deadline;
        // Why the last try was refused: the message is still undelivered.
        let mut refused: Option<HubError> = None;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let (name, timeout_ms) = (request.name.clone(), deadline.as_millis() as u64);
                return Err(match refused {
                    Some(refusal) => HubError::NotTaken {
                        name,
                        timeout_ms,
                        refused: refusal.to_string(),
                    },
                    None => HubError::InvokeTimeout {
                        name,
                        timeout_ms,
                        now: String::new(),
                    },
                });
            }
            queued(false);
            request.timeout_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1);
            match self.invoke(request.clone(), 0).await {
                Err(error) if worth_retrying(&error) => {
                    refused = Some(error);
                    queued(true);
                    tokio::time::sleep(RETRY_EVERY.min(left)).await;
                }
                // The deadline the caller gave, not what was left of it.
                Err(HubError::InvokeTimeout { name, now, .. }) => {
                    return Err(HubError::InvokeTimeout {
                        name,
                        timeout_ms: deadline.as_millis() as u64,
                        now,
                    });
                }
                result => return result,
            }
        }
    }
}

/// Whether an invocation refused with `error` may be sent again: the
/// function did not take it and may take it soon (it is moving, suspended,
/// starting).
pub fn worth_retrying(error: &HubError) -> bool {
    match error {
        HubError::Moving { .. } | HubError::Busy { .. } => true,
        HubError::NotRunning { state, .. } => {
            state.starts_with("suspended") || state.starts_with("being suspended") || state.starts_with("starting")
        }
        HubError::Remote { code, message } => {
            *code == ErrorCode::FailedPrecondition
                && [
                    "is being moved",
                    "(it is suspended",
                    "(it is being suspended",
                    "(it is starting",
                ]
                .iter()
                .any(|words| message.contains(words))
        }
        _ => false,
    }
}

/// The supervisor's [`Outbound`]: a function's message to another
/// function goes through the API, as a client's would, with the sender
/// named.
pub(super) struct Messenger {
    api: Weak<ApiParts>,
    runtime: tokio::runtime::Handle,
}

impl Messenger {
    /// The messenger of `api`, if made inside the tokio runtime. It holds
    /// the API weakly: the supervisor, which holds it, is part of the API.
    pub(super) fn of(api: &HubApi) -> Option<Messenger> {
        Some(Messenger {
            api: Arc::downgrade(&api.inner),
            runtime: tokio::runtime::Handle::try_current().ok()?,
        })
    }
}

impl Messenger {
    /// Runs `work` with the API on the runtime; the guest's thread waits
    /// for what it sends on the channel returned (a failure when the hub is
    /// shutting down and the API is gone).
    fn answer_with<Work>(&self, work: impl FnOnce(HubApi) -> Work) -> std::sync::mpsc::Receiver<Sent>
    where
        Work: Future<Output = Sent> + Send + 'static,
    {
        let (answer, answered) = std::sync::mpsc::channel();
        match self.api.upgrade() {
            Some(inner) => {
                let work = work(HubApi { inner });
                self.runtime.spawn(async move {
                    let _ = answer.send(work.await);
                });
            }
            None => {
                let _ = answer.send(Err(crate::runtime::Undelivered::Failed));
            }
        }
        answered
    }
}

impl Outbound for Messenger {
    fn deliver(&self, to: String, envelope: Envelope, timeout: Duration) -> std::sync::mpsc::Receiver<Sent> {
        self.answer_with(|api| async move {
            let request = InvokeRequest {
                name: to,
                data: envelope.data,
                timeout_ms: 0,
                from_function: envelope.from.unwrap_or_default(),
                one_way: envelope.one_way,
            };
            let from = request.from_function.clone();
            let to = request.name.clone();
            let result = api.invoke_through_moves(request, timeout, |_| {}).await;
            if let Err(error) = &result {
                tracing::debug!(%from, %to, error = %ferry_proto::error_chain(error), "message not delivered");
            }
            result.map(|reply| reply.data).map_err(|error| undelivered(&error))
        })
    }

    fn take_outcome(&self, function: String, kept: ReplyAddress) -> std::sync::mpsc::Receiver<Sent> {
        self.answer_with(|api| async move {
            api.take_outcome(&function, &kept).await.unwrap_or_else(|reason| {
                tracing::warn!(%function, hub = %kept.hub_id, %reason, "the outcome of a message sent before a move was lost");
                Err(crate::runtime::Undelivered::Failed)
            })
        })
    }

    fn reply(&self, function: String, to: ReplyAddress, data: Vec<u8>) {
        let Some(inner) = self.api.upgrade() else {
            return;
        };
        let api = HubApi { inner };
        self.runtime.spawn(async move {
            if let Err(reason) = api.send_reply(&function, &to, data).await {
                tracing::warn!(%function, hub = %to.hub_id, %reason, "a reply to a waiter on another hub was lost");
            }
        });
    }
}

impl HubApi {
    /// Sends `function`'s reply to the waiter hub `to.hub_id` kept, trying
    /// a few times while that hub cannot be reached.
    async fn send_reply(&self, function: &str, to: &ReplyAddress, data: Vec<u8>) -> Result<(), String> {
        let mut last_error = String::new();
        for attempt in 0..REPLY_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(RETRY_EVERY * (1 << attempt)).await;
            }
            let request = DeliverReplyRequest {
                function: function.to_owned(),
                invocation_id: to.invocation,
                data: data.clone(),
            };
            let asked = async {
                self.client_of(&to.hub_id)?
                    .deliver_reply(request)
                    .await
                    .map_err(|status| status.message().to_owned())
            };
            match tokio::time::timeout(REPLY_TIMEOUT, asked).await {
                Ok(Ok(answer)) => {
                    if !answer.into_inner().delivered {
                        tracing::debug!(%function, hub = %to.hub_id, "a reply came after its caller gave up");
                    }
                    return Ok(());
                }
                Ok(Err(error)) => last_error = error,
                Err(_) => last_error = format!("no answer within {REPLY_TIMEOUT:?}"),
            }
        }
        Err(last_error)
    }

    /// A `Migration` client of the peer `hub_id`.
    fn client_of(&self, hub_id: &str) -> Result<MigrationClient<Channel>, String> {
        let address = self
            .inner
            .peers
            .borrow()
            .iter()
            .find(|peer| peer.id() == Some(hub_id))
            .and_then(|peer| peer.address)
            .ok_or("that hub is not among the peers")?;
        self.inner
            .migration
            .connector
            .migration_client(&address.to_string(), hub_id)
            .map_err(|error| error.to_string())
    }

    /// Takes the outcome of a message `function` sent, which hub
    /// `kept.hub_id` kept (waiting there for it first). Tried again while
    /// that hub cannot be reached, never after it answered: an outcome is
    /// handed over once.
    async fn take_outcome(&self, function: &str, kept: &ReplyAddress) -> Result<Sent, String> {
        let mut last_error = String::new();
        for attempt in 0..REPLY_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(RETRY_EVERY * (1 << attempt)).await;
            }
            let mut client = match self.client_of(&kept.hub_id) {
                Ok(client) => client,
                Err(error) => {
                    last_error = error;
                    continue;
                }
            };
            let request = TakeOutcomeRequest {
                function: function.to_owned(),
                number: kept.invocation,
            };
            // No deadline: the other hub answers when the outcome comes,
            // which the message's own timeout bounds.
            match client.take_outcome(request).await {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    if !answer.found {
                        return Err("that hub no longer keeps it".to_owned());
                    }
                    return Ok(match answer.undelivered {
                        0 => Ok(answer.data),
                        code => Err(crate::runtime::Undelivered::from_code(code)),
                    });
                }
                // Refused before it was handed over (unreachable, not yet
                // connected): nothing was taken, try again.
                Err(status) if status.code() == tonic::Code::Unavailable => last_error = status.message().to_owned(),
                Err(status) => return Err(status.message().to_owned()),
            }
        }
        Err(last_error)
    }
}
