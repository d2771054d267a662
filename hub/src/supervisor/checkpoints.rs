//! Checkpoint, suspend and resume: capturing a running function through the
//! runtime and making the capture durable in the checkpoint store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_migrator::checkpoint::{CheckpointStore, Fingerprints, PutStats};
use ferry_proto::v1::{CheckpointInfo, CheckpointManifest, DesiredState, FunctionInfo, FunctionState};

use super::{Inner, Supervisor, info};
use crate::checkpoint_codec::{manifest_template, snapshot_from_manifest};
use crate::error::HubError;
use crate::logs::unix_ms_now;
use crate::runtime::{CaptureKind, Snapshot};

/// How long a capture may wait for the function to reach a preemption point
/// or blocking call. Preemption points are microseconds apart, so this only
/// trips on a hung host call.
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(30);
/// Checkpoints kept per function; older ones are garbage-collected.
pub const CHECKPOINTS_KEPT: usize = 2;

/// The previous checkpoint of a function and the fingerprints of its memory,
/// so the next checkpoint hashes and writes only what changed.
pub(super) struct IncrementalBase {
    manifest: CheckpointManifest,
    fingerprints: Fingerprints,
}

fn checkpoint_info(
    manifest: &CheckpointManifest,
    stats: &PutStats,
    capture: Duration,
    persist: Duration,
) -> CheckpointInfo {
    CheckpointInfo {
        sequence: manifest.sequence,
        created_unix_ms: manifest.created_unix_ms,
        memory_bytes: manifest.memory_bytes,
        chunks: stats.chunks,
        zero_chunks: stats.zero_chunks,
        unchanged_chunks: stats.unchanged_chunks,
        new_chunks: stats.new_chunks,
        bytes_written: stats.bytes_written_compressed,
        capture_micros: capture.as_micros() as u64,
        persist_micros: persist.as_micros() as u64,
    }
}

impl Supervisor {
    /// Captures a running function into a durable checkpoint; it keeps running.
    pub async fn checkpoint(&self, name: &str) -> Result<CheckpointInfo, HubError> {
        let started = Instant::now();
        let snapshot = self.capture(name, CaptureKind::Continue).await?;
        let capture = started.elapsed();
        self.inner.persist(name, snapshot, capture).await
    }

    /// Captures a running function, stops it and keeps only its checkpoint.
    pub async fn suspend(&self, name: &str) -> Result<(FunctionInfo, CheckpointInfo), HubError> {
        let started = Instant::now();
        let snapshot = self.capture(name, CaptureKind::Stop).await?;
        let capture = started.elapsed();
        let finished = self.finished_receiver(name);
        if let Some(finished) = finished {
            super::wait_finished(name, finished).await;
        }
        match self.inner.persist(name, Arc::clone(&snapshot), capture).await {
            Ok(checkpoint) => {
                self.inner.set_desired(name, DesiredState::Suspended)?;
                Ok((self.get(name)?, checkpoint))
            }
            Err(error) => {
                // Never lose the function: run it on from the capture we hold.
                tracing::error!(function = %name, error = %ferry_proto::error_chain(&error), "suspend could not persist; resuming from memory");
                self.start_from(name, Some(snapshot)).await?;
                Err(error)
            }
        }
    }

    /// Continues a function that is not running from its latest checkpoint.
    pub async fn resume(&self, name: &str) -> Result<FunctionInfo, HubError> {
        let manifest = self
            .inner
            .checkpoints
            .latest(name)
            .map_err(HubError::Checkpoint)?
            .ok_or_else(|| HubError::NoCheckpoint { name: name.to_owned() })?;
        let snapshot = self.inner.load_snapshot(&manifest).await?;
        self.start_from(name, Some(Arc::new(snapshot))).await?;
        self.get(name)
    }

    /// Checkpoints every running function every `interval` (the first after
    /// one interval), one function at a time.
    pub fn spawn_periodic_checkpoints(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let supervisor = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let running: Vec<String> = {
                    let slots = supervisor.inner.lock_slots();
                    slots
                        .iter()
                        .filter(|(_, slot)| slot.running.is_some())
                        .map(|(name, _)| name.clone())
                        .collect()
                };
                for name in running {
                    if let Err(error) = supervisor.checkpoint(&name).await {
                        tracing::debug!(function = %name, error = %ferry_proto::error_chain(&error), "periodic checkpoint skipped");
                    }
                }
            }
        })
    }

    /// Asks the function for a capture and waits for it.
    pub(super) async fn capture(&self, name: &str, kind: CaptureKind) -> Result<Arc<Snapshot>, HubError> {
        let receiver = {
            let slots = self.inner.lock_slots();
            let slot = slots.get(name).ok_or_else(|| self.inner.not_found(name))?;
            let running = slot.running.as_ref().ok_or_else(|| HubError::NotRunning {
                name: name.to_owned(),
                state: info::state_name(slot.record.last_state),
            })?;
            running.control.request_capture(kind)
        };
        match tokio::time::timeout(CAPTURE_TIMEOUT, receiver).await {
            Ok(Ok(Ok(snapshot))) => Ok(snapshot),
            Ok(Ok(Err(reason))) => Err(HubError::CaptureFailed {
                name: name.to_owned(),
                reason,
            }),
            Ok(Err(_)) => Err(HubError::CaptureFailed {
                name: name.to_owned(),
                reason: "the function ended first".to_owned(),
            }),
            Err(_) => Err(HubError::CaptureFailed {
                name: name.to_owned(),
                reason: format!("it did not reach a capture point within {CAPTURE_TIMEOUT:?}"),
            }),
        }
    }

    pub(super) fn finished_receiver(&self, name: &str) -> Option<tokio::sync::watch::Receiver<bool>> {
        let slots = self.inner.lock_slots();
        slots
            .get(name)
            .and_then(|slot| slot.running.as_ref())
            .map(|running| running.finished.clone())
    }

    /// Starts a function that is not running, from `snapshot` or from the beginning.
    pub(super) async fn start_from(&self, name: &str, snapshot: Option<Arc<Snapshot>>) -> Result<(), HubError> {
        let module_hash = {
            let slots = self.inner.lock_slots();
            let slot = slots.get(name).ok_or_else(|| self.inner.not_found(name))?;
            if slot.running.is_some() {
                return Err(HubError::AlreadyRunning { name: name.to_owned() });
            }
            slot.record.spec.clone().unwrap_or_default().module_hash
        };
        let runtime = Arc::clone(&self.inner.runtime);
        let prepared = tokio::task::spawn_blocking(move || runtime.prepare_stored(&module_hash))
            .await
            .map_err(|error| HubError::InvalidRequest(format!("prepare task failed: {error}")))??;
        let mut slots = self.inner.lock_slots();
        let slot = slots.get_mut(name).ok_or_else(|| self.inner.not_found(name))?;
        if slot.running.is_some() {
            return Err(HubError::AlreadyRunning { name: name.to_owned() });
        }
        slot.record.desired = DesiredState::Running as i32;
        self.inner.start(slot, &prepared, snapshot)
    }
}

impl Inner {
    fn set_desired(&self, name: &str, desired: DesiredState) -> Result<(), HubError> {
        let mut slots = self.lock_slots();
        let slot = slots.get_mut(name).ok_or_else(|| self.not_found(name))?;
        slot.record.desired = desired as i32;
        if desired == DesiredState::Suspended {
            slot.record.last_state = FunctionState::Suspended as i32;
        }
        self.store.put_function(&slot.record)?;
        self.store.flush()?;
        Ok(())
    }

    /// Writes a capture to the checkpoint store (incrementally when the
    /// previous checkpoint's fingerprints are at hand) and records it.
    pub(super) async fn persist(
        self: &Arc<Self>,
        name: &str,
        snapshot: Arc<Snapshot>,
        capture: Duration,
    ) -> Result<CheckpointInfo, HubError> {
        let _serialized = self.persist_lock.lock().await;
        let started = Instant::now();
        let (spec, recorded, epoch) = {
            let slots = self.lock_slots();
            let slot = slots.get(name).ok_or_else(|| self.not_found(name))?;
            (
                slot.record.spec.clone().unwrap_or_default(),
                slot.record.last_checkpoint,
                slot.record.epoch,
            )
        };
        // The store is the authority: the record may lag behind it after a crash.
        let stored = self
            .checkpoints
            .list(name)
            .map_err(HubError::Checkpoint)?
            .last()
            .map_or(0, |entry| entry.sequence);
        let sequence = recorded.max(stored) + 1;
        let base = self
            .incremental
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(name);
        let template = manifest_template(&snapshot, spec, epoch, sequence, unix_ms_now());
        let store = self.checkpoints.clone();
        let owned_name = name.to_owned();
        let result = tokio::task::spawn_blocking(move || {
            let base_ref = base.as_ref().map(|base| (&base.manifest, &base.fingerprints));
            let put = store.put(template, &snapshot.memory, base_ref)?;
            store.retain(&owned_name, CHECKPOINTS_KEPT)?;
            Ok::<_, ferry_migrator::checkpoint::CheckpointError>(put)
        })
        .await
        .map_err(|error| HubError::InvalidRequest(format!("persist task failed: {error}")))?;
        let (manifest, fingerprints, stats) = result.map_err(HubError::Checkpoint)?;
        let persist = started.elapsed();
        let info = checkpoint_info(&manifest, &stats, capture, persist);
        {
            let mut slots = self.lock_slots();
            if let Some(slot) = slots.get_mut(name) {
                slot.record.last_checkpoint = manifest.sequence;
                slot.record.last_checkpoint_unix_ms = manifest.created_unix_ms;
                self.store.put_function(&slot.record)?;
            }
        }
        self.incremental
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(name.to_owned(), IncrementalBase { manifest, fingerprints });
        tracing::info!(
            function = %name,
            sequence = info.sequence,
            memory_bytes = info.memory_bytes,
            new_chunks = info.new_chunks,
            capture_us = info.capture_micros,
            persist_us = info.persist_micros,
            "checkpoint written"
        );
        Ok(info)
    }

    /// Loads and verifies a checkpoint's memory, off the async runtime.
    pub(super) async fn load_snapshot(&self, manifest: &CheckpointManifest) -> Result<Snapshot, HubError> {
        let name = manifest.spec.as_ref().map(|spec| spec.name.clone()).unwrap_or_default();
        let unusable = |reason: String| HubError::CheckpointUnusable {
            name: name.clone(),
            reason,
        };
        let expected_module = {
            let slots = self.lock_slots();
            slots
                .get(&name)
                .and_then(|slot| slot.record.spec.as_ref())
                .map(|spec| spec.module_hash.clone())
                .unwrap_or_default()
        };
        if let Err(error) = self.store.module(&manifest.module_hash) {
            return Err(unusable(format!(
                "checkpoint {} needs module {}: {error}",
                manifest.sequence, manifest.module_hash
            )));
        }
        if manifest.module_hash != expected_module {
            return Err(unusable(format!(
                "it is a checkpoint of module {}, but the function runs module {expected_module}",
                manifest.module_hash
            )));
        }
        let store = self.checkpoints.clone();
        let owned = manifest.clone();
        let memory = tokio::task::spawn_blocking(move || store.load_memory(&owned))
            .await
            .map_err(|error| HubError::InvalidRequest(format!("load task failed: {error}")))?
            .map_err(HubError::Checkpoint)?;
        snapshot_from_manifest(manifest, memory).map_err(unusable)
    }
}

/// Opens the checkpoint store in the hub's database.
/// Chunks no checkpoint names (left by a crash during a put) are swept.
pub fn open_store(db: &sled::Db) -> Result<CheckpointStore, HubError> {
    let store = CheckpointStore::open(db).map_err(HubError::Checkpoint)?;
    let swept = store.collect_garbage().map_err(HubError::Checkpoint)?;
    if swept.chunks_freed > 0 {
        tracing::info!(
            chunks = swept.chunks_freed,
            bytes = swept.bytes_freed,
            "swept unreferenced checkpoint chunks"
        );
    }
    Ok(store)
}
