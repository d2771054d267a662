//! Checkpoint, suspend and resume: capturing a running function through the
//! runtime and making the capture durable in the checkpoint store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_migrator::checkpoint::{ChangedMemory, CheckpointError, CheckpointStore, ChunkHash, PutStats};
use ferry_proto::internal::v1::CheckpointManifest;
use ferry_proto::v1::{CheckpointInfo, FunctionInfo};
use ferry_proto::{ErrorCode, ServiceError};

use super::lifecycle::{Effect, Phase, Request};
use super::{Inner, Supervisor, records};
use crate::checkpoint_codec::{manifest_template, snapshot_from_manifest};
use crate::error::HubError;
use crate::logs::unix_ms_now;
use crate::runtime::{CaptureKind, FunctionControl, MemoryWanted, Snapshot, SnapshotMemory, StoredMemory};

/// How long a capture may wait for the function to reach a preemption point
/// or blocking call. Preemption points are microseconds apart, so this only
/// trips on a hung host call.
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(30);
/// Checkpoints kept per function; older ones are garbage-collected.
pub const CHECKPOINTS_KEPT: usize = 2;

/// The dirty set periodic and requested checkpoints capture from: each
/// checkpoint reads only the chunks written since the previous one.
pub(super) const CHECKPOINT_SET: &str = "checkpoints";

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
        delta_chunks: stats.delta_chunks,
        bytes_written: stats.bytes_written_compressed,
        capture_micros: capture.as_micros() as u64,
        persist_micros: persist.as_micros() as u64,
        ..CheckpointInfo::default()
    }
}

/// What a checkpoint did with the function's volume.
struct VolumeFigures {
    bytes: u64,
    bytes_read: u64,
    new_chunks: u64,
}

/// A capture of the changes since the previous checkpoint, with its base,
/// taken under `checkpoint_lock` (released when this is dropped).
pub(super) struct ChangesCapture<'a> {
    _one_at_a_time: tokio::sync::MutexGuard<'a, ()>,
    /// `None`: the request needed no capture.
    pub(super) snapshot: Option<Arc<Snapshot>>,
    pub(super) base: Option<CheckpointManifest>,
    pub(super) capture: Duration,
}

impl Supervisor {
    /// Captures a running function into a durable checkpoint; it keeps running.
    ///
    /// The capture copies out only the chunks written since the previous
    /// checkpoint of the same run ([`CHECKPOINT_SET`]), and the store
    /// applies them to that checkpoint. That is exact only if the base is
    /// the checkpoint of the set's previous capture, so: checkpoints
    /// capture one at a time (`checkpoint_lock`, held from the capture to
    /// the persist); the base is taken out before the capture and put back
    /// only by a persist of changes that succeeded; and without a base the
    /// set starts over, which makes the capture list every non-zero chunk.
    /// A new run has a new tracker, whose first capture is complete too.
    pub async fn checkpoint(&self, name: &str) -> Result<CheckpointInfo, HubError> {
        let captured = self.capture_changes(name, Request::Checkpoint).await?;
        let snapshot = captured
            .snapshot
            .ok_or_else(|| HubError::Internal(format!("a checkpoint of {name:?} asked for no capture")))?;
        self.inner
            .persist_from(name, snapshot, captured.capture, captured.base)
            .await
    }

    /// Decides `request` (a checkpoint, a suspend, the hub's shutdown) and
    /// captures the chunks of `name` written since its previous checkpoint,
    /// with that checkpoint as the base of the store's write (see
    /// [`Supervisor::checkpoint`] for why this is exact). The returned
    /// guard keeps other checkpoints out until the persist is done.
    pub(super) async fn capture_changes(&self, name: &str, request: Request) -> Result<ChangesCapture<'_>, HubError> {
        let one_at_a_time = self.inner.checkpoint_lock.lock().await;
        let base = self.inner.take_incremental_base(name);
        if base.is_none()
            && let Some(control) = self.inner.run_control(name)
        {
            control.forget_dirty_set(CHECKPOINT_SET);
        }
        let started = Instant::now();
        let wanted = MemoryWanted::Changes {
            set: CHECKPOINT_SET.to_owned(),
            chunk_size: self.inner.checkpoints.options().chunk_size,
        };
        let snapshot = self.capture(name, request, wanted).await?;
        Ok(ChangesCapture {
            _one_at_a_time: one_at_a_time,
            snapshot,
            base,
            capture: started.elapsed(),
        })
    }

    /// Captures a running function, stops it and keeps only its checkpoint.
    ///
    /// Like a checkpoint, the suspend writes only the chunks written since
    /// the previous one. Its run keeps the instance (a hold) until the
    /// persist is done: if the persist fails, the whole memory is copied
    /// out of it and the function runs on from there.
    pub async fn suspend(&self, name: &str) -> Result<(FunctionInfo, CheckpointInfo), HubError> {
        self.suspend_as(name, Request::Suspend).await
    }

    /// Suspends a function to shed load: like [`Supervisor::suspend`], but
    /// the hub continues it by itself ([`Supervisor::resume_after_overload`],
    /// or its next start).
    pub async fn suspend_for_overload(&self, name: &str) -> Result<(FunctionInfo, CheckpointInfo), HubError> {
        self.suspend_as(name, Request::OverloadSuspend).await
    }

    async fn suspend_as(&self, name: &str, request: Request) -> Result<(FunctionInfo, CheckpointInfo), HubError> {
        let captured = self.capture_changes(name, request).await?;
        let Some(snapshot) = captured.snapshot else {
            // Already suspended by the hub: the user's suspend only takes it over.
            self.inner.save_durably(name)?;
            let info = self.get(name)?;
            let latest = CheckpointInfo {
                sequence: info.last_checkpoint,
                created_unix_ms: info.last_checkpoint_unix_ms,
                ..Default::default()
            };
            return Ok((info, latest));
        };
        let persisted = self
            .inner
            .persist_from(name, Arc::clone(&snapshot), captured.capture, captured.base)
            .await;
        match persisted {
            Ok(checkpoint) => {
                // The last copy of the snapshot: the run drops its instance.
                drop(snapshot);
                if let Some(finished) = self.finished_receiver(name) {
                    super::wait_finished(name, finished).await;
                }
                {
                    let mut slots = self.inner.lock_slots();
                    let slot = slots.get_mut(name).ok_or_else(|| self.inner.not_found(name))?;
                    self.inner.decide(name, slot, Request::SuspendPersisted)?;
                }
                self.inner.save_durably(name)?;
                Ok((self.get(name)?, checkpoint))
            }
            Err(error) => {
                // Never lose the function: run it on from the capture we hold.
                tracing::error!(function = %name, error = %ferry_proto::error_chain(&error), "suspend could not persist; resuming from memory");
                self.run_on_from_capture(name, &snapshot, Request::SuspendNotPersisted)
                    .await?;
                Err(error)
            }
        }
    }

    /// Continues `name` here from `snapshot`, the capture that ended its
    /// run (a suspend or a move's pause), deciding `request`: a run that
    /// kept its instance for it (a hold) copies the whole memory out first.
    pub(super) async fn run_on_from_capture(
        &self,
        name: &str,
        snapshot: &Snapshot,
        request: Request,
    ) -> Result<(), HubError> {
        if let Some(hold) = &snapshot.hold {
            hold.ask_for_memory();
        }
        // The run may still be winding down.
        if let Some(finished) = self.finished_receiver(name) {
            super::wait_finished(name, finished).await;
        }
        let snapshot = Arc::new(snapshot.with_whole_memory().map_err(|reason| HubError::CaptureFailed {
            name: name.to_owned(),
            reason,
        })?);
        let prepared = self.inner.prepare_stored(name).await?;
        self.inner.decide_and_launch(name, request, &prepared, Some(snapshot))?;
        Ok(())
    }

    /// Continues a function that is not running from its latest checkpoint.
    pub async fn resume(&self, name: &str) -> Result<FunctionInfo, HubError> {
        self.start_from_checkpoint(name, Request::Resume).await?;
        self.get(name)
    }

    /// Continues a function the hub suspended for load.
    pub async fn resume_after_overload(&self, name: &str) -> Result<FunctionInfo, HubError> {
        self.start_from_checkpoint(name, Request::OverloadResume).await?;
        self.get(name)
    }

    async fn start_from_checkpoint(&self, name: &str, request: Request) -> Result<(), HubError> {
        // Refuse early, before reading a checkpoint for nothing.
        self.inner.check(name, request)?;
        let launched = {
            // The latest checkpoint stays the latest until the run has it as its base.
            let _serialized = self.inner.checkpoint_lock.lock().await;
            // Again under the lock: a start that won the race for it may run
            // the function now, and loading lays its volume out.
            self.inner.check(name, request)?;
            let manifest = self.inner.latest_checkpoint(name)?;
            let snapshot = Arc::new(self.inner.load_snapshot(&manifest).await?);
            let prepared = self.inner.prepare_stored(name).await?;
            self.inner
                .decide_and_launch_restored(name, request, &prepared, snapshot, manifest)?
        };
        let Some(launched) = launched else {
            return Ok(());
        };
        if !self.wait_instantiated(name, launched).await {
            // Restoring failed (a chunk damaged on disk since this hub
            // checked it, a memory over the limit): the caller hears why,
            // rather than "running" from a run that is over.
            let reason = self
                .get(name)
                .ok()
                .map(|info| info.failure)
                .filter(|failure| !failure.is_empty())
                .unwrap_or_else(|| "the run ended before it was restored".to_owned());
            return Err(HubError::CheckpointUnusable {
                name: name.to_owned(),
                reason,
            });
        }
        Ok(())
    }

    /// Checkpoints every running function every `interval` (the first after
    /// one interval), one function at a time.
    pub fn spawn_periodic_checkpoints(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let supervisor = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Functions whose last periodic checkpoint failed (not skipped).
            let mut failing = std::collections::HashSet::new();
            loop {
                ticks.tick().await;
                let running: Vec<String> = {
                    let slots = supervisor.inner.lock_slots();
                    slots
                        .iter()
                        .filter(|(_, slot)| slot.phase.is_live())
                        .map(|(name, _)| name.clone())
                        .collect()
                };
                failing.retain(|name| running.contains(name));
                for name in running {
                    match supervisor.checkpoint(&name).await {
                        Ok(_) if failing.remove(&name) => {
                            tracing::info!(function = %name, "periodic checkpoints are written again");
                        }
                        Ok(_) => {}
                        // The function is busy (moving, stopping): not a failure.
                        Err(error)
                            if matches!(
                                error.error_code(),
                                ErrorCode::FailedPrecondition | ErrorCode::Aborted | ErrorCode::NotFound
                            ) =>
                        {
                            tracing::debug!(function = %name, error = %ferry_proto::error_chain(&error), "periodic checkpoint skipped");
                        }
                        // Said once until one is written again: every interval would flood the log.
                        Err(error) if failing.insert(name.clone()) => {
                            tracing::warn!(function = %name, error = %ferry_proto::error_chain(&error), "periodic checkpoint failed; the function runs on, and a restart would continue it from its last checkpoint");
                        }
                        Err(error) => {
                            tracing::debug!(function = %name, error = %ferry_proto::error_chain(&error), "periodic checkpoint failed again");
                        }
                    }
                }
            }
        })
    }

    /// Decides `request` and, if its effect is a capture, asks the run for
    /// it and waits. `None`: the request needed no capture. A capture that
    /// does not come in time is abandoned: the run goes on.
    pub(super) async fn capture(
        &self,
        name: &str,
        request: Request,
        memory: MemoryWanted,
    ) -> Result<Option<Arc<Snapshot>>, HubError> {
        let (receiver, generation) = {
            let mut slots = self.inner.lock_slots();
            let slot = slots.get_mut(name).ok_or_else(|| self.inner.not_found(name))?;
            let transition = self.inner.decide(name, slot, request)?;
            let kind = match transition.effect {
                Effect::CaptureAndContinue => CaptureKind::Continue,
                Effect::CaptureAndStop => CaptureKind::Stop,
                Effect::CaptureAndPause => CaptureKind::Pause,
                _ => return Ok(None),
            };
            let Some(running) = slot.running.as_ref() else {
                return Err(HubError::Internal(format!(
                    "function {name:?} is {} but has no run to capture",
                    records::phase_words(slot.phase)
                )));
            };
            if matches!(kind, CaptureKind::Pause | CaptureKind::Stop) {
                // No new invocation gets in from here on (the phase says
                // moving, suspending or shutting down); those waiting
                // unread are taken back and their callers told so, to
                // send them again where and when the function takes
                // messages. Left in the inbox, they would travel in the
                // snapshot without their callers and be handled after the
                // resume while the callers heard "ended before replying".
                let withdrawn = running.control.withdraw_invocations();
                if withdrawn > 0 {
                    tracing::debug!(function = %name, withdrawn, phase = records::phase_words(slot.phase), "invocations withdrawn unread");
                }
            }
            (running.control.request_capture(kind, memory), running.generation)
        };
        let failed = |reason: String| HubError::CaptureFailed {
            name: name.to_owned(),
            reason,
        };
        let result = match tokio::time::timeout(CAPTURE_TIMEOUT, receiver).await {
            Ok(Ok(Ok(snapshot))) => return Ok(Some(snapshot)),
            Ok(Ok(Err(reason))) => Err(failed(reason)),
            Ok(Err(_)) => Err(failed("the function ended first".to_owned())),
            Err(_) => Err(failed(format!(
                "it did not reach a capture point within {CAPTURE_TIMEOUT:?}"
            ))),
        };
        self.inner.run_event(name, generation, Request::CaptureAbandoned);
        result
    }

    pub(super) fn finished_receiver(&self, name: &str) -> Option<tokio::sync::watch::Receiver<bool>> {
        let slots = self.inner.lock_slots();
        slots
            .get(name)
            .and_then(|slot| slot.running.as_ref())
            .map(|running| running.finished.clone())
    }
}

impl Inner {
    /// The newest stored checkpoint of `name`; an error if it has none.
    pub(super) fn latest_checkpoint(&self, name: &str) -> Result<CheckpointManifest, HubError> {
        crate::store::off_worker(|| self.checkpoints.latest(name))
            .map_err(HubError::Checkpoint)?
            .ok_or_else(|| HubError::NoCheckpoint { name: name.to_owned() })
    }

    /// The base of the next incremental checkpoint of `name`, taken out.
    fn take_incremental_base(&self, name: &str) -> Option<CheckpointManifest> {
        self.incremental
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(name)
    }

    /// The sequence of the base of `name`'s next incremental checkpoint.
    pub(super) fn incremental_base_sequence(&self, name: &str) -> Option<u64> {
        self.incremental
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .map(|manifest| manifest.sequence)
    }

    /// Checkpoints moves send chunks from ([`CheckpointPin`](super::CheckpointPin)).
    pub(super) fn pinned_checkpoints(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u64>> {
        self.pinned_checkpoints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `manifest` the base of the next incremental checkpoint of `name`.
    pub(super) fn set_incremental_base(&self, name: &str, manifest: CheckpointManifest) {
        self.incremental
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(name.to_owned(), manifest);
    }

    /// The control block of the current run of `name`, if it runs.
    pub(super) fn run_control(&self, name: &str) -> Option<Arc<FunctionControl>> {
        let slots = self.lock_slots();
        slots
            .get(name)
            .and_then(|slot| slot.running.as_ref())
            .map(|running| Arc::clone(&running.control))
    }

    /// Writes a capture to the checkpoint store and records it: a whole
    /// memory, or the changes since `base` (the checkpoint of the dirty
    /// set's previous capture; none if the capture is complete). A persist
    /// of changes that succeeds makes its checkpoint the next base.
    pub(super) async fn persist_from(
        self: &Arc<Self>,
        name: &str,
        snapshot: Arc<Snapshot>,
        capture: Duration,
        base: Option<CheckpointManifest>,
    ) -> Result<CheckpointInfo, HubError> {
        let _serialized = self.persist_lock.lock().await;
        let started = Instant::now();
        let (spec, recorded, epoch) = {
            let slots = self.lock_slots();
            let slot = slots.get(name).ok_or_else(|| self.not_found(name))?;
            // Captured before it moved away (or before an arrival replaced
            // it): a checkpoint written now would be stale from the start.
            match slot.phase {
                Phase::Moved => {
                    return Err(HubError::MovedAway {
                        name: name.to_owned(),
                        hub: slot
                            .record
                            .moved_to
                            .as_ref()
                            .map(|to| to.hub_name.clone())
                            .unwrap_or_default(),
                    });
                }
                Phase::Arriving => return Err(HubError::Moving { name: name.to_owned() }),
                _ => {}
            }
            (
                slot.record.spec.clone().unwrap_or_default(),
                slot.record.last_checkpoint,
                slot.record.epoch,
            )
        };
        // The store is the authority: the record may lag behind it after a crash.
        let stored = crate::store::off_worker(|| self.checkpoints.list(name))
            .map_err(HubError::Checkpoint)?
            .last()
            .map_or(0, |entry| entry.sequence);
        let sequence = recorded.max(stored) + 1;
        let template = manifest_template(&snapshot, spec, epoch, sequence, unix_ms_now());
        let store = self.checkpoints.clone();
        let owned_name = name.to_owned();
        let pinned = self.pinned_checkpoints().get(name).copied();
        let of_changes = matches!(snapshot.memory, SnapshotMemory::Changes(_));
        let result = tokio::task::spawn_blocking(move || {
            // The files' chunks first: the commit below checks every chunk
            // the manifest names is stored.
            let file_chunks: Vec<(ChunkHash, &[u8])> = snapshot
                .files
                .iter()
                .flat_map(|files| files.chunks.iter())
                .map(|(hash, bytes)| (*hash, &bytes[..]))
                .collect();
            let (volume_new_chunks, volume_bytes_written) = store.put_loose_chunks(&file_chunks)?;
            let put = match &snapshot.memory {
                SnapshotMemory::Whole(memory) => store
                    .put(template, memory, None)
                    .map(|(manifest, _, stats)| (manifest, stats)),
                // Captures hold their memory; only a restore's snapshot is stored.
                SnapshotMemory::Stored(stored) => Err(CheckpointError::InvalidCheckpoint {
                    reason: format!("the snapshot is stored checkpoint {} already", stored.manifest.sequence),
                }),
                SnapshotMemory::Changes(changes) => {
                    let chunks: Vec<(u32, &[u8])> = changes.iter().collect();
                    let changed = ChangedMemory {
                        memory_bytes: changes.memory_bytes,
                        chunk_size: changes.chunk_size,
                        complete: changes.complete,
                        chunks: &chunks,
                        written_pages: changes.written_pages.as_deref(),
                    };
                    store.put_changes(template, changed, base.as_ref())
                }
            }?;
            let (manifest, mut stats) = put;
            // A move may be sending chunks of a pinned checkpoint.
            let kept = pinned.map_or(CHECKPOINTS_KEPT, |since| {
                CHECKPOINTS_KEPT.max(manifest.sequence.saturating_sub(since) as usize + 1)
            });
            store.retain(&owned_name, kept)?;
            stats.bytes_written_compressed += volume_bytes_written;
            let files = snapshot.files.as_ref();
            let volume = VolumeFigures {
                bytes: manifest
                    .volume
                    .iter()
                    .flat_map(|volume| volume.entries.iter())
                    .map(|entry| entry.size)
                    .sum(),
                bytes_read: files.map_or(0, |files| files.bytes_read),
                new_chunks: volume_new_chunks,
            };
            Ok::<_, ferry_migrator::checkpoint::CheckpointError>((manifest, stats, volume))
        })
        .await
        .map_err(|error| HubError::Internal(format!("persist task failed: {error}")))?;
        let (manifest, stats, volume) = result.map_err(HubError::Checkpoint)?;
        let persist = started.elapsed();
        let mut info = checkpoint_info(&manifest, &stats, capture, persist);
        info.volume_bytes = volume.bytes;
        info.volume_bytes_read = volume.bytes_read;
        info.volume_new_chunks = volume.new_chunks;
        self.metrics.checkpoint(info.bytes_written);
        {
            let mut slots = self.lock_slots();
            if let Some(slot) = slots.get_mut(name) {
                slot.record.last_checkpoint = manifest.sequence;
                slot.record.last_checkpoint_unix_ms = manifest.created_unix_ms;
            }
        }
        self.save(name)?;
        if of_changes {
            self.set_incremental_base(name, manifest);
        }
        tracing::info!(
            function = %name,
            sequence = info.sequence,
            memory_bytes = info.memory_bytes,
            new_chunks = info.new_chunks,
            capture_us = info.capture_micros,
            persist_us = info.persist_micros,
            volume_bytes = info.volume_bytes,
            volume_bytes_read = info.volume_bytes_read,
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
        ferry_migrator::checkpoint::check_instrumentation(manifest.instrumentation_version)
            .map_err(HubError::Checkpoint)?;
        // Verified now (only chunks this hub has not checked yet), read into
        // the instance at its restore.
        let store = self.checkpoints.clone();
        let owned = Arc::new(manifest.clone());
        let verified = Arc::clone(&owned);
        tokio::task::spawn_blocking(move || store.verify_memory(&verified))
            .await
            .map_err(|error| HubError::Internal(format!("load task failed: {error}")))?
            .map_err(HubError::Checkpoint)?;
        self.lay_out_volume(manifest).await?;
        let memory = SnapshotMemory::Stored(StoredMemory {
            store: self.checkpoints.clone(),
            manifest: owned,
        });
        snapshot_from_manifest(manifest, memory).map_err(unusable)
    }

    /// Puts the function's volume back as `manifest` captured it (see
    /// `volume_layout`), off the async runtime. Only for a function that
    /// does not run: it is about to start from this checkpoint.
    pub(crate) async fn lay_out_volume(&self, manifest: &CheckpointManifest) -> Result<(), HubError> {
        let Some(volume) = manifest.volume.clone() else {
            return Ok(());
        };
        let name = manifest.spec.as_ref().map(|spec| spec.name.clone()).unwrap_or_default();
        let (store, data_dir) = (self.checkpoints.clone(), self.config.data_dir.clone());
        let owned = name.clone();
        let started = Instant::now();
        let laid = tokio::task::spawn_blocking(move || {
            crate::volume_layout::lay_out_from_checkpoint(&store, &data_dir, &owned, &volume)
        })
        .await
        .map_err(|error| HubError::Internal(format!("volume layout task failed: {error}")))?
        .map_err(|reason| HubError::CheckpointUnusable {
            name: name.clone(),
            reason: format!("checkpoint {}: {reason}", manifest.sequence),
        })?;
        tracing::info!(
            function = %name,
            sequence = manifest.sequence,
            files = laid.files,
            bytes = laid.bytes,
            elapsed_us = started.elapsed().as_micros() as u64,
            "volume restored from the checkpoint"
        );
        Ok(())
    }
}

/// Opens the checkpoint store in the hub's database, with chunk bodies in
/// the pack directory `packs`. Staged sets of arrivals that never sealed
/// are dropped, then chunks no checkpoint names (left by a crash during a
/// put or a transfer) are swept and the packs only they filled deleted.
pub fn open_store(db: &sled::Db, packs: &std::path::Path) -> Result<CheckpointStore, HubError> {
    let store = CheckpointStore::open(db, packs).map_err(HubError::Checkpoint)?;
    // No transfer runs yet: what arrivals staged before a stop is theirs no more.
    match store.unstage_all() {
        Ok(0) => {}
        Ok(sets) => tracing::info!(sets, "dropped the staged chunks of arrivals that never sealed"),
        Err(error) => tracing::warn!(%error, "could not drop the staged chunks of unsealed arrivals"),
    }
    // A sweep that cannot write (a full disk) waits for the next start.
    let swept = match store.collect_garbage() {
        Ok(swept) => swept,
        Err(error) => {
            tracing::warn!(%error, "could not sweep unreferenced checkpoint chunks");
            return Ok(store);
        }
    };
    if swept.chunks_freed > 0 {
        tracing::info!(
            chunks = swept.chunks_freed,
            bytes = swept.bytes_freed,
            "swept unreferenced checkpoint chunks"
        );
    }
    match store.reclaim_packs() {
        Ok(reclaimed) if reclaimed.packs_removed > 0 => tracing::info!(
            packs = reclaimed.packs_removed,
            bytes = reclaimed.bytes_reclaimed,
            "deleted checkpoint packs no chunk is in any more"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not reclaim checkpoint packs"),
    }
    Ok(store)
}
