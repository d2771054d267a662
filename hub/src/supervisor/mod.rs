//! The supervisor owns every function of this hub: it deploys, starts, stops
//! and removes them, keeps their records durable, routes messages into their
//! inboxes, and restarts what was running when the hub comes back.
//!
//! What may happen to a function is decided in one place, the pure
//! `lifecycle` state machine: every operation locks the table, asks it,
//! updates memory, unlocks, and only then does store I/O (`run::save`).

mod checkpoints;
mod deploy;
mod driver;
mod files;
mod handoff;
mod info;
mod lifecycle;
mod messages;
mod moves;
mod placement;
mod records;
mod replies;
mod restart;
mod run;
mod services;

pub use checkpoints::{CHECKPOINTS_KEPT, open_store as open_checkpoint_store};
pub use handoff::{ArrivalLogs, CheckpointPin, MoveCandidate, MovingGuard};
pub use info::state_name;
pub use lifecycle::{Phase, Suspender};
pub use messages::{Envelope, Outbound, undelivered};
pub use moves::MoveStep;
pub use records::phase_words;

pub use placement::{CpuTotals, FunctionLoad};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ferry_migrator::checkpoint::CheckpointStore;
use ferry_proto::internal::v1::{CheckpointManifest, FunctionRecord};
use ferry_proto::v1::{FunctionInfo, FunctionSpec};
use tokio::sync::watch;

use crate::error::HubError;
use crate::logs::LogHub;
use crate::runtime::{FunctionControl, PreparedModule, Runtime};
use crate::store::Store;
use crate::store::reserve::DiskReserve;
use lifecycle::{Effect, Request, RunEnd};

/// Smallest memory limit a function may ask for: one wasm page.
const MIN_MEMORY_LIMIT: u64 = 64 << 10;
/// Largest: the whole 32-bit address space.
const MAX_MEMORY_LIMIT: u64 = 4 << 30;
/// Range of a function's priority (`ferry deploy --priority`).
pub const MIN_PRIORITY: i32 = -1000;
pub const MAX_PRIORITY: i32 = 1000;
/// Store key of the drain flag (`ferry drain`), kept across restarts.
const DRAINING_KEY: &str = "draining";
/// How long a stop waits for the function to reach a stopping point.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a deploy or an arrival waits for the instance before answering.
const INSTANTIATE_WAIT: Duration = Duration::from_secs(30);
/// How long a hub shutdown waits for each function's final capture.
const SHUTDOWN_CAPTURE: Duration = Duration::from_secs(5);

/// Who this hub is.
#[derive(Debug, Clone)]
pub struct HubIdentity {
    pub id: String,
    pub name: String,
}

/// Settings the supervisor needs.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub default_memory_limit_bytes: u64,
    pub default_invoke_timeout: Duration,
    /// The host directories this hub offers functions.
    pub resources: crate::resources::Resources,
    /// Where function volumes live (`DATA/functions/NAME/volume`).
    pub data_dir: std::path::PathBuf,
}

/// A function instance that is running right now.
struct Running {
    generation: u64,
    control: Arc<FunctionControl>,
    finished: watch::Receiver<bool>,
}

/// One function this hub owns.
struct Slot {
    record: FunctionRecord,
    /// What it is doing; only `lifecycle::decide` changes it.
    phase: Phase,
    /// Its run, from launch until the run has ended (a paused or stopped
    /// run winds down after its phase has moved on).
    running: Option<Running>,
    /// CPU time of the last finished run, for `ps` after it ended.
    last_cpu_micros: u64,
    /// CPU over the last second, from the meter's samples.
    cpu: placement::CpuSample,
    /// When and from which hub it arrived here, if it was moved here.
    arrived: Option<(std::time::Instant, String)>,
    /// The move away under way, for `ps`.
    moving: Option<moves::Underway>,
    /// The move that brought it here, for `ps`.
    last_move: Option<ferry_proto::v1::LastMove>,
    /// Tells this slot from another of the same name made later (a
    /// redeploy, an arrival): a removal stops only the one it found.
    incarnation: u64,
}

impl Slot {
    fn new(record: FunctionRecord, phase: Phase) -> Slot {
        static INCARNATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Slot {
            incarnation: INCARNATIONS.fetch_add(1, Ordering::Relaxed),
            last_cpu_micros: record.last_cpu_micros,
            record,
            phase,
            running: None,
            cpu: placement::CpuSample::default(),
            arrived: None,
            moving: None,
            last_move: None,
        }
    }
}

struct Inner {
    identity: HubIdentity,
    config: SupervisorConfig,
    store: Store,
    checkpoints: CheckpointStore,
    /// Previous checkpoint per function, for incremental checkpoints: the
    /// one written from the last capture of the run's checkpoint dirty set.
    incremental: Mutex<HashMap<String, CheckpointManifest>>,
    /// Checkpoints capture and persist one at a time (`Supervisor::checkpoint`).
    checkpoint_lock: tokio::sync::Mutex<()>,
    /// Per function, the oldest checkpoint a move sends file chunks from
    /// (`Supervisor::share_checkpoint_view`): kept until that move's first
    /// round is sent, whatever checkpoints follow it.
    pinned_checkpoints: Mutex<HashMap<String, u64>>,
    /// Which move stored the early log history of an arrival under each
    /// name (`Supervisor::import_arrival_logs`): only that move may add
    /// the rest or drop it, so that a late, discarded transfer never takes
    /// away the history of the next arrival of the same function.
    early_logs: Mutex<HashMap<String, String>>,
    /// Checkpoints are written one at a time.
    persist_lock: tokio::sync::Mutex<()>,
    /// Records are written one at a time, each the latest (`Inner::save`).
    record_writer: Mutex<()>,
    runtime: Arc<Runtime>,
    logs: Arc<LogHub>,
    /// Every function and its phase. Held only to decide and to update
    /// memory: never across store I/O or an await.
    slots: Mutex<HashMap<String, Slot>>,
    generations: AtomicU64,
    shutting_down: AtomicBool,
    /// Room kept on the data disk, and why the hub is degraded if it is.
    reserve: Arc<DiskReserve>,
    /// `ferry drain`: functions move off, new deploys are refused.
    draining: AtomicBool,
    metrics: Arc<crate::metrics::HubMetrics>,
    /// Carries messages to functions this hub does not run (set once by
    /// the API layer; absent, functions reach only this hub's functions).
    outbound: std::sync::OnceLock<Arc<dyn Outbound>>,
    /// Waiters of invocations whose function moved or was suspended.
    kept_waiters: replies::KeptWaiters,
    kept_outcomes: replies::KeptOutcomes,
    /// Why recent slots' runs were ended for good (removed, replaced), by
    /// incarnation (bounded), for callers whose reply their run dropped.
    ended_for_good: Mutex<HashMap<u64, &'static str>>,
}

/// Handle to the supervisor; cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

fn name_of(record: &FunctionRecord) -> &str {
    record.spec.as_ref().map(|spec| spec.name.as_str()).unwrap_or_default()
}

impl Supervisor {
    pub fn new(
        identity: HubIdentity,
        config: SupervisorConfig,
        store: Store,
        checkpoints: CheckpointStore,
        runtime: Arc<Runtime>,
        logs: Arc<LogHub>,
        reserve: Arc<DiskReserve>,
    ) -> Supervisor {
        let draining = store
            .meta(DRAINING_KEY)
            .ok()
            .flatten()
            .is_some_and(|value| value == "1");
        Supervisor {
            inner: Arc::new(Inner {
                identity,
                config,
                store,
                checkpoints,
                incremental: Mutex::new(HashMap::new()),
                checkpoint_lock: tokio::sync::Mutex::new(()),
                pinned_checkpoints: Mutex::new(HashMap::new()),
                early_logs: Mutex::new(HashMap::new()),
                persist_lock: tokio::sync::Mutex::new(()),
                record_writer: Mutex::new(()),
                runtime,
                logs,
                slots: Mutex::new(HashMap::new()),
                generations: AtomicU64::new(0),
                shutting_down: AtomicBool::new(false),
                reserve,
                draining: AtomicBool::new(draining),
                metrics: Arc::new(crate::metrics::HubMetrics::default()),
                outbound: std::sync::OnceLock::new(),
                kept_waiters: replies::KeptWaiters::default(),
                ended_for_good: Mutex::default(),
                kept_outcomes: replies::KeptOutcomes::default(),
            }),
        }
    }

    /// The host directories this hub offers functions.
    pub fn resources(&self) -> &crate::resources::Resources {
        &self.inner.config.resources
    }

    pub fn identity(&self) -> &HubIdentity {
        &self.inner.identity
    }

    pub fn logs(&self) -> &Arc<LogHub> {
        &self.inner.logs
    }

    /// How long an invocation waits for its reply unless told otherwise.
    pub fn invoke_timeout(&self) -> Duration {
        self.inner.config.default_invoke_timeout
    }

    /// The hub's metrics, which the supervisor and moves feed.
    pub fn metrics(&self) -> &Arc<crate::metrics::HubMetrics> {
        &self.inner.metrics
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.runtime
    }

    pub fn checkpoint_store(&self) -> &CheckpointStore {
        &self.inner.checkpoints
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Why the hub is degraded (a full data disk), if it is.
    pub fn degraded(&self) -> Option<String> {
        self.inner.reserve.degraded()
    }

    /// Functions of this hub, by name.
    pub fn list(&self) -> Vec<FunctionInfo> {
        let slots = self.inner.lock_slots();
        let mut infos: Vec<_> = slots.values().map(|slot| self.inner.info(slot)).collect();
        infos.sort_by(|a, b| a.spec.as_ref().map(|s| &s.name).cmp(&b.spec.as_ref().map(|s| &s.name)));
        infos
    }

    /// What the function `name` is, as deployed (`None` if this hub has no such function).
    pub fn spec(&self, name: &str) -> Option<FunctionSpec> {
        self.inner
            .lock_slots()
            .get(name)
            .and_then(|slot| slot.record.spec.clone())
    }

    pub fn get(&self, name: &str) -> Result<FunctionInfo, HubError> {
        let slots = self.inner.lock_slots();
        let slot = slots.get(name).ok_or_else(|| self.inner.not_found(name))?;
        Ok(self.inner.info(slot))
    }

    /// The phase of a function, if this hub knows it.
    pub fn phase(&self, name: &str) -> Option<Phase> {
        self.inner.lock_slots().get(name).map(|slot| slot.phase)
    }

    /// Whether a function of that name exists here.
    pub fn contains(&self, name: &str) -> bool {
        self.inner.lock_slots().contains_key(name)
    }

    /// Stops a function and keeps it stopped across hub restarts.
    pub async fn stop(&self, name: &str) -> Result<FunctionInfo, HubError> {
        if let Some(finished) = self.inner.ask_stop(name, Request::Stop)? {
            wait_finished(name, finished).await;
        }
        self.get(name)
    }

    /// Stops (if needed) and forgets a function: its record, checkpoints,
    /// logs and files (its volume).
    pub async fn remove(&self, name: &str) -> Result<(), HubError> {
        self.remove_keeping(name, false).await
    }

    /// [`remove`](Self::remove); with `keep_files`, the volume stays for
    /// the function of the same name that replaces it (`deploy --replace`).
    pub(super) async fn remove_keeping(&self, name: &str, keep_files: bool) -> Result<(), HubError> {
        // A running function is stopped first, then forgotten. Only the one
        // found first: one deployed under the name meanwhile (a redeploy
        // racing this removal) is another function, and is left alone.
        let mut found = None;
        for _ in 0..2 {
            let forget = {
                let mut slots = self.inner.lock_slots();
                let slot = match slots.get_mut(name) {
                    Some(slot) => slot,
                    // Removed by another request meanwhile.
                    None if found.is_some() => return Ok(()),
                    None => return Err(self.inner.not_found(name)),
                };
                if *found.get_or_insert(slot.incarnation) != slot.incarnation {
                    return Ok(());
                }
                let forget =
                    lifecycle::decide(slot.phase, Request::Remove).is_ok_and(|next| next.effect == Effect::Forget);
                let why = if keep_files {
                    "replaced by a redeploy"
                } else {
                    "removed"
                };
                // Said to callers whose reply the ended run drops, before
                // as after the slot goes.
                self.inner.note_ended_for_good(slot.incarnation, why);
                if forget {
                    slots.remove(name);
                }
                forget
            };
            if forget {
                self.inner.save(name)?;
                // No checkpoint of it is written while (or after) its state goes.
                let _serialized = self.inner.persist_lock.lock().await;
                self.drop_local_state(name);
                if !keep_files {
                    self.remove_files(name);
                }
                tracing::info!(function = %name, "function removed");
                return Ok(());
            }
            if let Some(finished) = self.inner.ask_stop_of(name, Request::Remove, found)? {
                wait_finished(name, finished).await;
            }
        }
        Err(HubError::Busy {
            name: name.to_owned(),
            state: "still stopping",
        })
    }

    /// Checkpoints and stops every running function without changing what
    /// it should be after a restart (so the next start continues each one
    /// exactly where it stopped), and flushes the store. A function that
    /// cannot be captured in time is stopped and continues from its last
    /// checkpoint.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let names: Vec<String> = self.inner.lock_slots().keys().cloned().collect();
        for name in &names {
            let captured = tokio::time::timeout(SHUTDOWN_CAPTURE, self.capture_changes(name, Request::Shutdown)).await;
            // (what the pattern leaves in `captured`, the checkpoint lock,
            // is dropped after the persist)
            match captured {
                Ok(Ok(checkpoints::ChangesCapture {
                    snapshot: Some(snapshot),
                    base,
                    ..
                })) => {
                    // A failing disk may block the store: the shutdown goes on.
                    let persist = self.inner.persist_from(name, snapshot, Duration::ZERO, base);
                    let persisted = tokio::time::timeout(SHUTDOWN_CAPTURE, persist).await;
                    match persisted {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => {
                            tracing::error!(function = %name, error = %ferry_proto::error_chain(&error), "could not checkpoint at shutdown");
                        }
                        Err(_) => {
                            tracing::error!(function = %name, "checkpoint at shutdown timed out; the store does not answer")
                        }
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(function = %name, error = %ferry_proto::error_chain(&error), "could not capture at shutdown");
                }
                Err(_) => tracing::warn!(function = %name, "capture at shutdown timed out"),
            }
        }
        let waits: Vec<_> = {
            let slots = self.inner.lock_slots();
            slots
                .iter()
                .filter_map(|(name, slot)| {
                    slot.running.as_ref().map(|running| {
                        running.control.request_stop();
                        (name.clone(), running.finished.clone())
                    })
                })
                .collect()
        };
        for (name, finished) in waits {
            wait_finished(&name, finished).await;
        }
        match tokio::time::timeout(SHUTDOWN_CAPTURE, self.inner.store.flush_off_runtime()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "could not flush the store at shutdown"),
            Err(_) => tracing::error!("the flush at shutdown timed out; the store does not answer"),
        }
    }
}

pub(super) async fn wait_finished(name: &str, mut finished: watch::Receiver<bool>) {
    if tokio::time::timeout(STOP_GRACE, finished.wait_for(|done| *done))
        .await
        .is_err()
    {
        tracing::warn!(function = %name, "function did not stop within the grace period");
    }
}

/// How many slots' reasons for ending are kept (callers asking are a
/// moment behind the removal).
const ENDINGS_KEPT: usize = 256;

impl Inner {
    /// Keeps why the run of slot `incarnation` is ended for good, for
    /// callers whose reply it drops.
    fn note_ended_for_good(&self, incarnation: u64, why: &'static str) {
        let mut endings = self
            .ended_for_good
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if endings.len() >= ENDINGS_KEPT {
            let oldest = endings.keys().min().copied();
            oldest.map(|oldest| endings.remove(&oldest));
        }
        endings.insert(incarnation, why);
    }

    /// Why the run of slot `incarnation` was ended for good, if it was lately.
    fn ended_for_good(&self, incarnation: u64) -> Option<&'static str> {
        let endings = self
            .ended_for_good
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        endings.get(&incarnation).copied()
    }

    fn lock_slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn not_found(&self, name: &str) -> HubError {
        HubError::FunctionNotFound {
            name: name.to_owned(),
            hub: self.identity.name.clone(),
        }
    }

    fn refuse_if_shutting_down(&self) -> Result<(), HubError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(HubError::ShuttingDown);
        }
        Ok(())
    }

    /// Decides a stop or a removal, asks the run to stop, records the stop
    /// durably, and returns what to wait on while a run winds down.
    fn ask_stop(&self, name: &str, request: Request) -> Result<Option<watch::Receiver<bool>>, HubError> {
        self.ask_stop_of(name, request, None)
    }

    /// [`Inner::ask_stop`] of the slot `incarnation` only, if given: none
    /// if the name now holds another.
    fn ask_stop_of(
        &self,
        name: &str,
        request: Request,
        incarnation: Option<u64>,
    ) -> Result<Option<watch::Receiver<bool>>, HubError> {
        let finished = {
            let mut slots = self.lock_slots();
            let slot = slots.get_mut(name).ok_or_else(|| self.not_found(name))?;
            if incarnation.is_some_and(|incarnation| incarnation != slot.incarnation) {
                return Ok(None);
            }
            let transition = self.decide(name, slot, request)?;
            match (&slot.running, transition.effect) {
                (Some(running), Effect::AskStop) => {
                    running.control.request_stop();
                    Some(running.finished.clone())
                }
                (None, Effect::AskStop) => {
                    // No run left to wind down.
                    let _ = self.decide(name, slot, Request::Ended(RunEnd::Stopped));
                    None
                }
                _ => None,
            }
        };
        // An acknowledged stop survives a crash.
        self.save_durably(name)?;
        Ok(finished)
    }

    /// Prepares the stored module of `name` (from the artifact cache when it can).
    async fn prepare_stored(&self, name: &str) -> Result<PreparedModule, HubError> {
        let module_hash = {
            let slots = self.lock_slots();
            let slot = slots.get(name).ok_or_else(|| self.not_found(name))?;
            slot.record.spec.clone().unwrap_or_default().module_hash
        };
        // The usual case inside a move's downtime: no hop to a blocking
        // thread, which a busy machine can delay by milliseconds.
        if let Some(prepared) = self.runtime.prepared_in_memory(&module_hash) {
            return Ok(prepared);
        }
        let runtime = Arc::clone(&self.runtime);
        let prepared = tokio::task::spawn_blocking(move || runtime.prepare_stored(&module_hash))
            .await
            .map_err(|error| HubError::Internal(format!("prepare task failed: {error}")))??;
        Ok(prepared)
    }
}
