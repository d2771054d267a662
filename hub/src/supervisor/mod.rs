//! The supervisor owns every function of this hub: it deploys, starts, stops
//! and removes them, keeps their records durable, routes messages into their
//! inboxes, and restarts what was running when the hub comes back.

mod checkpoints;
mod driver;
mod handoff;
mod info;
mod services;

pub use checkpoints::{CHECKPOINTS_KEPT, open_store as open_checkpoint_store};
pub use handoff::{MoveCandidate, MovingGuard};
pub use info::state_name;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ferry_migrator::checkpoint::CheckpointStore;
use ferry_proto::RECORD_FORMAT_VERSION;
use ferry_proto::v1::{DeployRequest, DesiredState, FunctionInfo, FunctionRecord, FunctionSpec, FunctionState, Limits};
use tokio::sync::{oneshot, watch};

use crate::error::{HubError, validate_function_name};
use crate::logs::{LogHub, unix_ms_now};
use crate::runtime::{self, FunctionControl, LaunchSpec, Message, Outcome, PreparedModule, Runtime, Snapshot};
use crate::store::Store;

/// Smallest memory limit a function may ask for: one wasm page.
const MIN_MEMORY_LIMIT: u64 = 64 << 10;
/// Largest: the whole 32-bit address space.
const MAX_MEMORY_LIMIT: u64 = 4 << 30;
/// How long a stop waits for the function to reach a stopping point.
const STOP_GRACE: Duration = Duration::from_secs(10);
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
    running: Option<Running>,
    /// CPU time of the last finished run, for `ps` after it ended.
    last_cpu_micros: u64,
}

struct Inner {
    identity: HubIdentity,
    config: SupervisorConfig,
    store: Store,
    checkpoints: CheckpointStore,
    /// Previous checkpoint per function, for incremental checkpoints.
    incremental: Mutex<HashMap<String, checkpoints::IncrementalBase>>,
    /// Checkpoints are written one at a time.
    persist_lock: tokio::sync::Mutex<()>,
    runtime: Arc<Runtime>,
    logs: Arc<LogHub>,
    slots: Mutex<HashMap<String, Slot>>,
    generations: AtomicU64,
    shutting_down: AtomicBool,
    /// Functions being moved away right now.
    moving: Mutex<HashSet<String>>,
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
    ) -> Supervisor {
        Supervisor {
            inner: Arc::new(Inner {
                identity,
                config,
                store,
                checkpoints,
                incremental: Mutex::new(HashMap::new()),
                persist_lock: tokio::sync::Mutex::new(()),
                runtime,
                logs,
                slots: Mutex::new(HashMap::new()),
                generations: AtomicU64::new(0),
                shutting_down: AtomicBool::new(false),
                moving: Mutex::new(HashSet::new()),
            }),
        }
    }

    pub fn identity(&self) -> &HubIdentity {
        &self.inner.identity
    }

    pub fn logs(&self) -> &Arc<LogHub> {
        &self.inner.logs
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

    /// Loads every stored record and continues the functions that were
    /// running when the hub last stopped: from their latest checkpoint, or
    /// from the beginning of `_start` if they have none.
    pub async fn restore(&self) -> Result<(), HubError> {
        let records = self.inner.store.functions()?;
        let mut to_start = Vec::new();
        {
            let mut slots = self.inner.lock_slots();
            for record in records {
                let name = name_of(&record).to_owned();
                let was_running = record.desired == DesiredState::Running as i32
                    && matches!(
                        FunctionState::try_from(record.last_state),
                        Ok(FunctionState::Running | FunctionState::Starting)
                    );
                if was_running {
                    to_start.push(name.clone());
                }
                slots.insert(
                    name,
                    Slot {
                        record,
                        running: None,
                        last_cpu_micros: 0,
                    },
                );
            }
        }
        for name in to_start {
            let resumed = async {
                let snapshot = match self.inner.checkpoints.latest(&name).map_err(HubError::Checkpoint)? {
                    Some(manifest) => Some(Arc::new(self.inner.load_snapshot(&manifest).await?)),
                    None => None,
                };
                let from = if snapshot.is_some() {
                    "its latest checkpoint"
                } else {
                    "the beginning"
                };
                tracing::info!(function = %name, from, "continuing function after hub restart");
                self.start_from(&name, snapshot).await
            };
            if let Err(error) = resumed.await {
                let reason = ferry_proto::error_chain(&error);
                tracing::warn!(function = %name, %reason, "cannot continue function after hub restart");
                let mut slots = self.inner.lock_slots();
                if let Some(slot) = slots.get_mut(&name) {
                    slot.record.last_state = FunctionState::Failed as i32;
                    slot.record.failure = format!("could not continue after hub restart: {reason}");
                    self.inner.store.put_function(&slot.record)?;
                }
            }
        }
        Ok(())
    }

    /// Stores, prepares and starts a function. Returns it, whether the
    /// compiled artifact was cached, and the preparation time.
    pub async fn deploy(&self, request: DeployRequest) -> Result<(FunctionInfo, PreparedModule), HubError> {
        self.inner.refuse_if_shutting_down()?;
        validate_function_name(&request.name)?;
        if request.module.is_empty() {
            return Err(HubError::InvalidRequest("the module is empty".to_owned()));
        }
        let memory_limit_bytes = match request.limits.as_ref().map(|limits| limits.memory_limit_bytes) {
            None | Some(0) => self.inner.config.default_memory_limit_bytes,
            Some(bytes) if !(MIN_MEMORY_LIMIT..=MAX_MEMORY_LIMIT).contains(&bytes) => {
                return Err(HubError::InvalidRequest(format!(
                    "memory limit {bytes} bytes is outside {MIN_MEMORY_LIMIT}..={MAX_MEMORY_LIMIT}"
                )));
            }
            Some(bytes) => bytes,
        };
        if let Some(pointer) = self.forward_pointer(&request.name) {
            return Err(HubError::MovedAway {
                name: request.name,
                hub: pointer.hub_name,
            });
        }
        if self.inner.lock_slots().contains_key(&request.name) {
            if !request.replace {
                return Err(HubError::FunctionExists { name: request.name });
            }
            self.remove(&request.name).await?;
        }

        let runtime = Arc::clone(&self.inner.runtime);
        let module = request.module;
        let prepared = tokio::task::spawn_blocking(move || runtime.prepare(&module))
            .await
            .map_err(|error| HubError::InvalidRequest(format!("prepare task failed: {error}")))??;

        let mut env: Vec<_> = request.env.into_iter().collect();
        env.sort();
        let record = FunctionRecord {
            format_version: RECORD_FORMAT_VERSION,
            spec: Some(FunctionSpec {
                name: request.name.clone(),
                module_hash: prepared.hash.clone(),
                args: request.args,
                env: env.into_iter().collect(),
                limits: Some(Limits { memory_limit_bytes }),
            }),
            desired: DesiredState::Running as i32,
            last_state: FunctionState::Starting as i32,
            deployed_unix_ms: unix_ms_now(),
            ..Default::default()
        };
        let mut slots = self.inner.lock_slots();
        if slots.contains_key(&request.name) {
            return Err(HubError::FunctionExists { name: request.name });
        }
        let slot = slots.entry(request.name.clone()).or_insert(Slot {
            record,
            running: None,
            last_cpu_micros: 0,
        });
        self.inner
            .logs
            .event(&request.name, &format!("deployed module {}", prepared.hash));
        self.inner.start(slot, &prepared, None)?;
        let info = self.inner.info(slot);
        drop(slots);
        // An acknowledged deploy survives a crash.
        self.inner.store.flush()?;
        Ok((info, prepared))
    }

    /// Functions of this hub, by name.
    pub fn list(&self) -> Vec<FunctionInfo> {
        let slots = self.inner.lock_slots();
        let mut infos: Vec<_> = slots.values().map(|slot| self.inner.info(slot)).collect();
        infos.sort_by(|a, b| a.spec.as_ref().map(|s| &s.name).cmp(&b.spec.as_ref().map(|s| &s.name)));
        infos
    }

    pub fn get(&self, name: &str) -> Result<FunctionInfo, HubError> {
        let slots = self.inner.lock_slots();
        let slot = slots.get(name).ok_or_else(|| self.inner.not_found(name))?;
        Ok(self.inner.info(slot))
    }

    /// CPU time used by this hub's functions, running and finished runs.
    pub fn cpu_micros_total(&self) -> u64 {
        self.inner
            .lock_slots()
            .values()
            .map(|slot| {
                let running = slot
                    .running
                    .as_ref()
                    .map(|running| running.control.cpu_micros())
                    .unwrap_or(0);
                slot.last_cpu_micros + running
            })
            .sum()
    }

    /// Whether a function of that name exists here.
    pub fn contains(&self, name: &str) -> bool {
        self.inner.lock_slots().contains_key(name)
    }

    /// Stops a function and keeps it stopped across hub restarts.
    pub async fn stop(&self, name: &str) -> Result<FunctionInfo, HubError> {
        if self.inner.lock_moving().contains(name) {
            return Err(HubError::Moving { name: name.to_owned() });
        }
        let finished = {
            let mut slots = self.inner.lock_slots();
            let slot = slots.get_mut(name).ok_or_else(|| self.inner.not_found(name))?;
            if slot.record.pending_handoff.is_some() {
                // Arriving: its source still decides where it runs.
                return Err(HubError::Moving { name: name.to_owned() });
            }
            slot.record.desired = DesiredState::Stopped as i32;
            self.inner.store.put_function(&slot.record)?;
            self.inner.store.flush()?;
            slot.running.as_ref().map(|running| {
                running.control.request_stop();
                running.finished.clone()
            })
        };
        if let Some(finished) = finished {
            wait_finished(name, finished).await;
        }
        self.get(name)
    }

    /// Stops (if needed) and forgets a function and its logs.
    pub async fn remove(&self, name: &str) -> Result<(), HubError> {
        self.stop(name).await?;
        self.inner.lock_slots().remove(name);
        self.inner.store.remove_function(name)?;
        self.inner.logs.remove(name)?;
        self.inner
            .checkpoints
            .remove_function(name)
            .map_err(HubError::Checkpoint)?;
        self.inner
            .incremental
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(name);
        tracing::info!(function = %name, "function removed");
        Ok(())
    }

    /// Delivers `data` to the function's inbox and waits for its reply.
    pub async fn invoke(&self, name: &str, data: Vec<u8>, timeout: Option<Duration>) -> Result<Vec<u8>, HubError> {
        let timeout = timeout.unwrap_or(self.inner.config.default_invoke_timeout);
        let (reply_to, reply) = oneshot::channel();
        {
            let slots = self.inner.lock_slots();
            let slot = slots.get(name).ok_or_else(|| self.inner.not_found(name))?;
            let Some(running) = slot.running.as_ref() else {
                return Err(HubError::NotRunning {
                    name: name.to_owned(),
                    state: info::state_name(slot.record.last_state),
                });
            };
            let message = Message {
                data,
                reply_to: Some(reply_to),
            };
            running
                .control
                .deliver(message)
                .map_err(|(_, queued)| HubError::InboxFull {
                    name: name.to_owned(),
                    queued,
                })?;
        }
        match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(data)) => Ok(data),
            Ok(Err(_)) => Err(HubError::NoReply { name: name.to_owned() }),
            Err(_) => Err(HubError::InvokeTimeout {
                name: name.to_owned(),
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }

    /// Checkpoints and stops every running function without changing what
    /// it should be after a restart (so the next start continues each one
    /// exactly where it stopped), and flushes the store. A function that
    /// cannot be captured in time is stopped and continues from its last
    /// checkpoint.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let running: Vec<String> = {
            let slots = self.inner.lock_slots();
            slots
                .iter()
                .filter(|(_, slot)| slot.running.is_some())
                .map(|(name, _)| name.clone())
                .collect()
        };
        for name in &running {
            let captured = tokio::time::timeout(SHUTDOWN_CAPTURE, self.capture(name, runtime::CaptureKind::Stop)).await;
            match captured {
                Ok(Ok(snapshot)) => {
                    if let Err(error) = self.inner.persist(name, snapshot, Duration::ZERO).await {
                        tracing::error!(function = %name, error = %ferry_proto::error_chain(&error), "could not checkpoint at shutdown");
                    }
                }
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
        if let Err(error) = self.inner.store.flush() {
            tracing::error!(%error, "could not flush the store at shutdown");
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

impl Inner {
    fn lock_slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_moving(&self) -> MutexGuard<'_, HashSet<String>> {
        self.moving.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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

    /// Starts the slot's function on its own thread.
    fn start(
        self: &Arc<Self>,
        slot: &mut Slot,
        prepared: &PreparedModule,
        snapshot: Option<Arc<Snapshot>>,
    ) -> Result<(), HubError> {
        let spec = slot.record.spec.clone().unwrap_or_default();
        let name = spec.name.clone();
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let control = Arc::new(FunctionControl::default());
        let (finished_tx, finished) = watch::channel(false);
        let launch = LaunchSpec {
            name: name.clone(),
            args: spec.args.clone(),
            environ: spec.env.iter().map(|(key, value)| format!("{key}={value}")).collect(),
            memory_limit_bytes: spec
                .limits
                .map(|limits| limits.memory_limit_bytes)
                .unwrap_or(self.config.default_memory_limit_bytes),
        };

        slot.record.starts += 1;
        slot.record.last_state = FunctionState::Running as i32;
        slot.record.failure.clear();
        slot.record.exit_code = 0;
        slot.record.started_unix_ms = unix_ms_now();
        self.store.put_function(&slot.record)?;
        slot.running = Some(Running {
            generation,
            control: Arc::clone(&control),
            finished,
        });
        match &snapshot {
            Some(snapshot) => {
                // Output written after the checkpoint belongs to a timeline
                // that no longer exists: the function writes it again.
                self.logs.truncate(&name, snapshot.host.log_seq)?;
                for data in &snapshot.host.inbox {
                    let _ = control.deliver(Message {
                        data: data.clone(),
                        reply_to: None,
                    });
                }
                self.logs.event(
                    &name,
                    &format!("resumed from a checkpoint (start {})", slot.record.starts),
                );
            }
            None => self
                .logs
                .event(&name, &format!("started (start {})", slot.record.starts)),
        }

        let inner = Arc::clone(self);
        let module = prepared.module.clone();
        tokio::spawn(async move {
            let outcome = driver::drive(
                Arc::clone(&inner),
                module,
                launch.clone(),
                Arc::clone(&control),
                snapshot,
            )
            .await;
            inner.finish(&launch.name, generation, &control, outcome);
            let _ = finished_tx.send(true);
        });
        Ok(())
    }

    /// Records how a run ended.
    fn finish(&self, name: &str, generation: u64, control: &FunctionControl, outcome: Outcome) {
        let dropped = control.drain_inbox();
        let mut slots = self.lock_slots();
        let Some(slot) = slots.get_mut(name) else { return };
        if slot.running.as_ref().map(|running| running.generation) != Some(generation) {
            return;
        }
        slot.running = None;
        slot.last_cpu_micros = control.cpu_micros();
        let shutting_down = self.shutting_down.load(Ordering::SeqCst);
        let event = match &outcome {
            Outcome::Exited(code) => {
                slot.record.last_state = FunctionState::Exited as i32;
                slot.record.exit_code = *code;
                format!("exited with code {code}")
            }
            // A hub shutdown leaves the record as running so the next start resumes it.
            Outcome::Stopped if shutting_down => "stopped by hub shutdown".to_owned(),
            Outcome::Stopped => {
                slot.record.last_state = FunctionState::Stopped as i32;
                "stopped".to_owned()
            }
            // Captured for a hub shutdown: still meant to run after the restart.
            Outcome::Suspended if shutting_down => "checkpointed by hub shutdown".to_owned(),
            Outcome::Suspended => {
                slot.record.last_state = FunctionState::Suspended as i32;
                "suspended".to_owned()
            }
            // Paused for a move: the record changes only when the move is recorded.
            Outcome::Paused => "paused for a move".to_owned(),
            Outcome::Failed(reason) => {
                slot.record.last_state = FunctionState::Failed as i32;
                slot.record.failure = reason.clone();
                format!("failed: {reason}")
            }
        };
        tracing::info!(function = %name, outcome = %event, dropped_messages = dropped, "function finished");
        self.logs.event(name, &event);
        if let Err(error) = self.store.put_function(&slot.record) {
            tracing::error!(function = %name, %error, "could not persist function state");
        }
    }
}
