//! Invocations the HTTP API keeps track of: asynchronous ones (started
//! with a POST, looked at and cancelled by id) and the answers of requests
//! that carried an `Idempotency-Key`, so that a retried POST runs once.
//!
//! Both are kept for [`KEPT_FOR`](super::KEPT_FOR): an id is asked of the
//! hub that took the POST. An asynchronous invocation that finds its
//! function moving, suspended or starting waits and tries again until its
//! deadline; once its message reached the function it is never sent again.
//!
//! Asynchronous invocations are also kept in the hub's store (written
//! durably before the 202), with their outcome once they have one, so an
//! id answers after a restart of the hub too: with its result, or, for one
//! still running when the hub went down, as failed (`UNAVAILABLE`, saying
//! that the function may have handled it). Its idempotency key keeps
//! naming it, so a retry with that key never runs it a second time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ferry_proto::v1::InvokeRequest;
use ferry_proto::{ErrorCode, ServiceError};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use serde::Serialize;

use super::answers::{self, ErrorBody, Json, Refusal, code_name, failure};
use super::{Asked, Http, KEPT_AT_MOST, KEPT_FOR};
use crate::api::HubApi;
use crate::error::HubError;
use crate::store::Store;
use ferry_proto::internal::v1::{InvocationRecord, invocation_record};

/// How an invocation ended: the reply and the hub it ran on, or the
/// error's kind and text.
pub(super) type Outcome = Result<(Vec<u8>, String), (ErrorCode, String)>;

type Pending = Shared<BoxFuture<'static, Outcome>>;

/// How long a 202 waits for its invocation's record to be on disk.
const FLUSH_PATIENCE: Duration = Duration::from_secs(5);

/// Where an asynchronous invocation is.
#[derive(Debug, Clone)]
enum Progress {
    /// Waiting for its function to take messages (moving, suspended).
    Queued,
    /// Sent; waiting for the reply.
    Running,
    Done(Outcome),
    Cancelled,
}

struct Invocation {
    id: String,
    function: String,
    created_unix_ms: u64,
    /// The idempotency key (as the table keys it) that started it.
    key: Option<String>,
    /// BLAKE3 of the request body (`None`: a record kept before it was).
    request_hash: Option<blake3::Hash>,
    progress: Mutex<Progress>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Invocation {
    fn set(&self, progress: Progress) {
        let mut current = self.progress.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A cancelled invocation stays cancelled.
        if !matches!(*current, Progress::Cancelled) {
            *current = progress;
        }
    }

    fn progress(&self) -> Progress {
        self.progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// What the store keeps of it.
    fn record(&self) -> InvocationRecord {
        let outcome = match self.progress() {
            Progress::Queued | Progress::Running => None,
            Progress::Cancelled => Some(invocation_record::Outcome::Cancelled(invocation_record::Cancelled {})),
            Progress::Done(Ok((data, hub_name))) => {
                Some(invocation_record::Outcome::Replied(invocation_record::Replied {
                    data,
                    hub_name,
                }))
            }
            Progress::Done(Err((code, message))) => {
                Some(invocation_record::Outcome::Failed(invocation_record::Failed {
                    code: code.grpc_code() as i32,
                    message,
                }))
            }
        };
        InvocationRecord {
            id: self.id.clone(),
            function: self.function.clone(),
            created_unix_ms: self.created_unix_ms,
            idempotency_key: self.key.clone().unwrap_or_default(),
            outcome,
            request_hash: self
                .request_hash
                .map(|hash| hash.as_bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    /// An invocation as the store kept it. One that had no outcome was
    /// running when the hub went down: it failed then.
    fn from_record(record: InvocationRecord) -> Invocation {
        let progress = match record.outcome {
            Some(invocation_record::Outcome::Cancelled(_)) => Progress::Cancelled,
            Some(invocation_record::Outcome::Replied(replied)) => Progress::Done(Ok((replied.data, replied.hub_name))),
            Some(invocation_record::Outcome::Failed(failed)) => Progress::Done(Err((
                ErrorCode::from_grpc_code(tonic::Code::from_i32(failed.code)),
                failed.message,
            ))),
            None => Progress::Done(Err((
                ErrorCode::Unavailable,
                format!(
                    "the hub restarted before invocation {} of function {:?} finished; the function may have \
                     handled its message, and its reply is lost",
                    record.id, record.function
                ),
            ))),
        };
        Invocation {
            key: (!record.idempotency_key.is_empty()).then_some(record.idempotency_key),
            request_hash: <[u8; 32]>::try_from(record.request_hash.as_slice())
                .ok()
                .map(blake3::Hash::from_bytes),
            id: record.id,
            function: record.function,
            created_unix_ms: record.created_unix_ms,
            progress: Mutex::new(progress),
            task: Mutex::new(None),
        }
    }
}

/// What an idempotency key stands for.
#[derive(Clone)]
enum Keyed {
    /// A synchronous invocation's answer, or the wait for it, and the
    /// hash of its request body.
    Answer(Pending, blake3::Hash),
    /// An asynchronous invocation's id.
    Started(String),
}

/// The refusal of a retry whose body is not the one its key was first used with.
fn other_body(key: &str) -> (ErrorCode, String) {
    (
        ErrorCode::InvalidArgument,
        format!(
            "idempotency key {key:?} was first used with another request body: a retry must send the same body, \
             and another request needs a key of its own"
        ),
    )
}

#[derive(Default)]
struct Table {
    invocations: HashMap<String, Arc<Invocation>>,
    keys: HashMap<String, Keyed>,
    /// Both kinds of entry by age: (when, is a key, id or key).
    ages: VecDeque<(Instant, bool, String)>,
}

impl Table {
    /// Drops entries older than [`KEPT_FOR`] (and the oldest beyond
    /// [`KEPT_AT_MOST`]); the ids of the invocations dropped.
    fn forget_old(&mut self) -> Vec<String> {
        let mut forgotten = Vec::new();
        while let Some((at, _, _)) = self.ages.front() {
            let full = self.invocations.len() + self.keys.len() >= KEPT_AT_MOST;
            if at.elapsed() < KEPT_FOR && !full {
                break;
            }
            let Some((_, key, name)) = self.ages.pop_front() else {
                break;
            };
            if key {
                self.keys.remove(&name);
            } else if let Some(invocation) = self.invocations.remove(&name) {
                if let Some(task) = invocation
                    .task
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .take()
                {
                    task.abort();
                }
                forgotten.push(name);
            }
        }
        forgotten
    }
}

pub(super) struct Invocations {
    api: HubApi,
    table: Mutex<Table>,
}

/// Keeps `invocation`'s record in the store; a failure costs only its
/// survival of a restart, so it is logged, not returned.
fn store_record(store: &Store, invocation: &Invocation) {
    if let Err(error) = store.put_invocation(&invocation.record()) {
        tracing::warn!(id = %invocation.id, %error, "invocation not kept in the store");
    }
}

fn outcome_of(result: Result<ferry_proto::v1::InvokeResponse, HubError>) -> Outcome {
    result
        .map(|reply| (reply.data, reply.hub_name))
        .map_err(|error| (error.error_code(), ferry_proto::error_chain(&error)))
}

impl Invocations {
    /// The invocations of this hub, with those its store kept from
    /// before a restart.
    pub(super) fn new(api: HubApi) -> Invocations {
        let invocations = Invocations {
            api,
            table: Mutex::new(Table::default()),
        };
        invocations.load();
        invocations
    }

    /// Takes back the asynchronous invocations the store kept (their
    /// age is counted from their creation).
    fn load(&self) {
        let store = self.api.store();
        let mut records = match store.invocations() {
            Ok(records) => records,
            Err(error) => {
                tracing::warn!(%error, "kept invocations cannot be read; their ids are forgotten");
                return;
            }
        };
        records.sort_by_key(|record| record.created_unix_ms);
        let now_ms = crate::logs::unix_ms_now();
        let now = Instant::now();
        let mut table = self.table();
        for record in records {
            let age = Duration::from_millis(now_ms.saturating_sub(record.created_unix_ms));
            let since = now.checked_sub(age).filter(|_| age < KEPT_FOR);
            let Some(since) = since else {
                let _ = store.remove_invocation(&record.id);
                continue;
            };
            let unfinished = record.outcome.is_none();
            let invocation = Arc::new(Invocation::from_record(record));
            if unfinished {
                tracing::info!(id = %invocation.id, function = %invocation.function, "invocation was running when the hub went down; failed");
                store_record(store, &invocation);
            }
            if let Some(key) = &invocation.key {
                table.keys.insert(key.clone(), Keyed::Started(invocation.id.clone()));
                table.ages.push_back((since, true, key.clone()));
            }
            table.ages.push_back((since, false, invocation.id.clone()));
            table.invocations.insert(invocation.id.clone(), invocation);
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// [`Table::forget_old`], and the forgotten ones out of the store.
    fn forget_old(&self, table: &mut Table) {
        for id in table.forget_old() {
            if let Err(error) = self.api.store().remove_invocation(&id) {
                tracing::warn!(%id, %error, "forgotten invocation stays in the store");
            }
        }
    }

    /// Makes the records kept so far durable (before a 202 promises an id).
    /// A store that does not answer (a full or failing disk) costs the
    /// caller at most [`FLUSH_PATIENCE`].
    async fn flush(&self) {
        match tokio::time::timeout(FLUSH_PATIENCE, self.api.store().flush_off_runtime()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "accepted invocation not durable; a restart of the hub forgets it")
            }
            Err(_) => tracing::warn!("the store did not make an accepted invocation durable in time"),
        }
    }

    /// Invokes once; with a key, a second request with the same key (for
    /// the same function) gets the first one's answer, waiting for it if
    /// it has not come yet, even when the first caller went away.
    pub(super) async fn invoke_once(&self, key: Option<String>, request: InvokeRequest, deadline: Duration) -> Outcome {
        let Some(key) = key else {
            return outcome_of(self.api.invoke_through_moves(request, deadline, |_| {}).await);
        };
        let (given, key) = (key.clone(), format!("invoke/{}/{key}", request.name));
        let hash = blake3::hash(&request.data);
        let pending = {
            let mut table = self.table();
            self.forget_old(&mut table);
            match table.keys.get(&key) {
                Some(Keyed::Answer(pending, first)) if *first == hash => pending.clone(),
                Some(Keyed::Answer(..)) => return Err(other_body(&given)),
                Some(Keyed::Started(_)) => {
                    return Err((
                        ErrorCode::InvalidArgument,
                        "this idempotency key started an asynchronous invocation".to_owned(),
                    ));
                }
                None => {
                    let api = self.api.clone();
                    let task =
                        tokio::spawn(
                            async move { outcome_of(api.invoke_through_moves(request, deadline, |_| {}).await) },
                        );
                    let pending = async move {
                        task.await.unwrap_or_else(|error| {
                            Err((ErrorCode::Internal, format!("the invocation failed: {error}")))
                        })
                    }
                    .boxed()
                    .shared();
                    table.keys.insert(key.clone(), Keyed::Answer(pending.clone(), hash));
                    table.ages.push_back((Instant::now(), true, key));
                    pending
                }
            }
        };
        pending.await
    }

    /// Starts an asynchronous invocation (or finds the one `key` started).
    fn start(
        &self,
        key: Option<String>,
        request: InvokeRequest,
        deadline: Duration,
    ) -> Result<Arc<Invocation>, Refusal> {
        let mut table = self.table();
        self.forget_old(&mut table);
        let hash = blake3::hash(&request.data);
        let given = key.clone().unwrap_or_default();
        let key = key.map(|key| format!("start/{}/{key}", request.name));
        if let Some(key) = &key {
            match table.keys.get(key) {
                Some(Keyed::Started(id)) => {
                    if let Some(invocation) = table.invocations.get(id) {
                        if invocation.request_hash.is_some_and(|first| first != hash) {
                            let (code, message) = other_body(&given);
                            return Err(Refusal(code, message));
                        }
                        return Ok(Arc::clone(invocation));
                    }
                }
                Some(Keyed::Answer(..)) => {
                    return Err(Refusal(
                        ErrorCode::InvalidArgument,
                        "this idempotency key made a synchronous invocation".to_owned(),
                    ));
                }
                None => {}
            }
        }
        let mut bytes = [0u8; 12];
        getrandom::fill(&mut bytes).map_err(|error| Refusal(ErrorCode::Internal, error.to_string()))?;
        let invocation = Arc::new(Invocation {
            id: hex::encode(bytes),
            function: request.name.clone(),
            created_unix_ms: crate::logs::unix_ms_now(),
            key: key.clone(),
            request_hash: Some(hash),
            progress: Mutex::new(Progress::Queued),
            task: Mutex::new(None),
        });
        store_record(self.api.store(), &invocation);
        let task = tokio::spawn(run(self.api.clone(), Arc::clone(&invocation), request, deadline));
        *invocation.task.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(task.abort_handle());
        let id = invocation.id.clone();
        table.invocations.insert(id.clone(), Arc::clone(&invocation));
        table.ages.push_back((Instant::now(), false, id.clone()));
        if let Some(key) = key {
            table.keys.insert(key.clone(), Keyed::Started(id));
            table.ages.push_back((Instant::now(), true, key));
        }
        Ok(invocation)
    }

    fn get(&self, id: &str) -> Result<Arc<Invocation>, Refusal> {
        self.table().invocations.get(id).cloned().ok_or_else(|| {
            Refusal(
                ErrorCode::NotFound,
                format!(
                    "no invocation {id:?} on this hub (ids are kept for {} s by the hub that took the POST)",
                    KEPT_FOR.as_secs()
                ),
            )
        })
    }
}

/// An asynchronous invocation's task.
async fn run(api: HubApi, invocation: Arc<Invocation>, request: InvokeRequest, deadline: Duration) {
    let outcome = outcome_of(
        api.invoke_through_moves(request, deadline, |queued| {
            invocation.set(if queued { Progress::Queued } else { Progress::Running });
        })
        .await,
    );
    invocation.set(Progress::Done(outcome));
    store_record(api.store(), &invocation);
}

/// What `GET /v1/invocations/{id}` shows.
#[derive(Serialize)]
struct InvocationView {
    id: String,
    function: String,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    state: &'static str,
    created_unix_ms: u64,
    /// The hub the function answered on.
    #[serde(skip_serializing_if = "Option::is_none")]
    hub: Option<String>,
    /// The reply, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<String>,
    /// The reply as text, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    result_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody>,
}

fn view(invocation: &Invocation) -> InvocationView {
    let mut view = InvocationView {
        id: invocation.id.clone(),
        function: invocation.function.clone(),
        state: "queued",
        created_unix_ms: invocation.created_unix_ms,
        hub: None,
        result: None,
        result_text: None,
        error: None,
    };
    match invocation.progress() {
        Progress::Queued => {}
        Progress::Running => view.state = "running",
        Progress::Cancelled => view.state = "cancelled",
        Progress::Done(Ok((data, hub))) => {
            view.state = "succeeded";
            view.hub = Some(hub);
            view.result = Some(base64::engine::general_purpose::STANDARD.encode(&data));
            view.result_text = String::from_utf8(data).ok();
        }
        Progress::Done(Err((code, message))) => {
            view.state = "failed";
            view.error = Some(ErrorBody {
                code: code_name(code),
                message,
            });
        }
    }
    view
}

/// `POST /v1/functions/{name}/invocations`: 202 and where to look.
pub(super) async fn start(State(http): State<Http>, asked: Asked) -> Response {
    // An unknown function is refused at once, not after the deadline.
    let name = asked.request.name.clone();
    if let Err(error) = http
        .api
        .get_function(ferry_proto::v1::GetFunctionRequest { name }, 0)
        .await
    {
        return answers::error(error);
    }
    match http.invocations.start(asked.key, asked.request, asked.deadline) {
        Ok(invocation) => {
            http.invocations.flush().await;
            let location = format!("/v1/invocations/{}", invocation.id);
            (
                StatusCode::ACCEPTED,
                [(header::LOCATION, location)],
                Json(view(&invocation)),
            )
                .into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// `GET /v1/invocations/{id}`.
pub(super) async fn status(State(http): State<Http>, Path(id): Path<String>) -> Response {
    match http.invocations.get(&id) {
        Ok(invocation) => Json(view(&invocation)).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// `GET /v1/invocations/{id}/result`: the reply's bytes once there; 202
/// with the status before.
pub(super) async fn result(State(http): State<Http>, Path(id): Path<String>) -> Response {
    let invocation = match http.invocations.get(&id) {
        Ok(invocation) => invocation,
        Err(refusal) => return refusal.into_response(),
    };
    match invocation.progress() {
        Progress::Done(Ok((data, hub))) => answers::invoked(Ok((data, hub))),
        Progress::Done(Err((code, message))) => failure(code, message),
        Progress::Cancelled => failure(ErrorCode::FailedPrecondition, format!("invocation {id} was cancelled")),
        Progress::Queued | Progress::Running => (StatusCode::ACCEPTED, Json(view(&invocation))).into_response(),
    }
}

/// `DELETE /v1/invocations/{id}`: stops waiting (a message the function
/// already took may still be handled; its reply is dropped).
pub(super) async fn cancel(State(http): State<Http>, Path(id): Path<String>) -> Response {
    let invocation = match http.invocations.get(&id) {
        Ok(invocation) => invocation,
        Err(refusal) => return refusal.into_response(),
    };
    if matches!(invocation.progress(), Progress::Queued | Progress::Running) {
        if let Some(task) = invocation
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        {
            task.abort();
        }
        *invocation
            .progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Progress::Cancelled;
        store_record(http.api.store(), &invocation);
    }
    Json(view(&invocation)).into_response()
}
