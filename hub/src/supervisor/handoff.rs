//! The records of a move, on both sides: pausing a function for its last
//! round and continuing it if the move fails, recording that it moved (a
//! forward pointer under the new epoch), and installing, committing or
//! discarding a function that arrives. The protocol itself is in
//! `crate::migration`.

use std::sync::Arc;

use ferry_proto::RECORD_FORMAT_VERSION;
use ferry_proto::internal::v1::{ForwardPointer, FunctionRecord, HandoffOutcome, PendingHandoff};
use ferry_proto::v1::{FunctionSpec, LogEntry};

use super::lifecycle::{Phase, Request};
use super::{Inner, Slot, Supervisor, records};
use crate::error::HubError;
use crate::logs::unix_ms_now;
use crate::runtime::{MemoryWanted, Snapshot, WarmInstance, WarmStart};

/// The log history an arriving function brings, as
/// [`Supervisor::install_arrival`] stores it.
#[derive(Debug, Clone, Copy)]
pub enum ArrivalLogs<'a> {
    /// All of it: replaces whatever this hub kept under the name.
    Whole(&'a [LogEntry]),
    /// What follows the part the move `move_id` stored with
    /// [`Supervisor::import_arrival_logs`].
    Rest { move_id: &'a str, entries: &'a [LogEntry] },
}

/// What a source offers of a function it runs.
#[derive(Debug, Clone)]
pub struct MoveCandidate {
    pub spec: FunctionSpec,
    pub epoch: u64,
    pub starts: u32,
}

/// Keeps a function's checkpoint, and every later one, stored while it
/// lives ([`Supervisor::share_checkpoint_view`]).
pub struct CheckpointPin {
    inner: Arc<Inner>,
    name: String,
}

impl Drop for CheckpointPin {
    fn drop(&mut self) {
        self.inner.pinned_checkpoints().remove(&self.name);
    }
}

/// Holds a function in a move for as long as it lives: if the move ends
/// without being recorded or failed explicitly (an error path, a panic), a
/// function still in its pre-copy rounds runs on here.
pub struct MovingGuard {
    inner: Arc<Inner>,
    name: String,
}

impl Drop for MovingGuard {
    fn drop(&mut self) {
        let mut slots = self.inner.lock_slots();
        if let Some(slot) = slots.get_mut(&self.name)
            && slot.phase == Phase::MovingOut
        {
            let _ = self.inner.decide(&self.name, slot, Request::MoveFailed);
        }
    }
}

impl Supervisor {
    /// Starts moving `name` away: it must run here. The guard ends the move
    /// if nothing else does.
    pub fn begin_move(&self, name: &str) -> Result<(MoveCandidate, MovingGuard), HubError> {
        let mut slots = self.inner.lock_slots();
        let slot = slots.get_mut(name).ok_or_else(|| self.inner.not_found(name))?;
        self.inner.decide(name, slot, Request::MigrateOut)?;
        let candidate = MoveCandidate {
            spec: slot.record.spec.clone().unwrap_or_default(),
            epoch: slot.record.epoch,
            starts: slot.record.starts,
        };
        let guard = MovingGuard {
            inner: Arc::clone(&self.inner),
            name: name.to_owned(),
        };
        Ok((candidate, guard))
    }

    /// A capture for a pre-copy round of the chunks changed since the
    /// previous round of the same move (`wanted`); the function keeps running.
    pub async fn capture_for_round(&self, name: &str, wanted: MemoryWanted) -> Result<Arc<Snapshot>, HubError> {
        self.capture(name, Request::Checkpoint, wanted)
            .await?
            .ok_or_else(|| HubError::Internal(format!("a round of {name:?} asked for no capture")))
    }

    /// Starts the volume view of a move's dirty set `set` of `name` from
    /// the periodic checkpoints' (see [`FunctionControl::share_volume_view`]),
    /// when that view is the one of the function's latest stored
    /// checkpoint: then every file chunk it does not read again is in this
    /// hub's store. The lock guard keeps checkpoints out (none can change
    /// the view) until the move's capture took it; the pin keeps that
    /// checkpoint (and its chunks) stored, whatever checkpoints follow,
    /// until it is dropped. `None` when there is no such view.
    ///
    /// [`FunctionControl::share_volume_view`]: crate::runtime::FunctionControl::share_volume_view
    pub async fn share_checkpoint_view(
        &self,
        name: &str,
        set: &str,
    ) -> Option<(tokio::sync::MutexGuard<'_, ()>, CheckpointPin)> {
        let one_at_a_time = self.inner.checkpoint_lock.lock().await;
        // The base is there only after a persist that succeeded, and is
        // taken out from a checkpoint's capture to its persist.
        let sequence = self.inner.incremental_base_sequence(name)?;
        let control = self.inner.run_control(name)?;
        control.share_volume_view(super::checkpoints::CHECKPOINT_SET, set);
        self.inner.pinned_checkpoints().insert(name.to_owned(), sequence);
        let pin = CheckpointPin {
            inner: Arc::clone(&self.inner),
            name: name.to_owned(),
        };
        Some((one_at_a_time, pin))
    }

    /// The move that used dirty set `set` of `name` is over: its instance
    /// stops collecting changes for it.
    pub fn forget_dirty_set(&self, name: &str, set: &str) {
        let slots = self.inner.lock_slots();
        if let Some(running) = slots.get(name).and_then(|slot| slot.running.as_ref()) {
            running.control.forget_dirty_set(set);
        }
    }

    /// Captures the function for the last round and ends its run here,
    /// leaving its record as it is. Returns the snapshot and when the pause
    /// was asked for: the function stops at its next preemption point or
    /// blocking call, microseconds later, so the downtime counted from here
    /// errs on the long side and includes copying its memory out.
    pub async fn pause_for_move(
        &self,
        name: &str,
        wanted: MemoryWanted,
    ) -> Result<(Arc<Snapshot>, std::time::Instant), HubError> {
        let asked = std::time::Instant::now();
        let snapshot = self
            .capture(name, Request::PauseForMove, wanted)
            .await?
            .ok_or_else(|| HubError::Internal(format!("the pause of {name:?} asked for no capture")))?;
        // The run keeps the instance (a hold) or winds down while the last round goes out.
        Ok((snapshot, asked))
    }

    /// The move failed before it was recorded: the function continues here,
    /// from the snapshot it was paused in if it was paused.
    pub async fn continue_after_failed_move(&self, name: &str, paused: Option<Arc<Snapshot>>) -> Result<(), HubError> {
        let Some(snapshot) = paused else {
            let mut slots = self.inner.lock_slots();
            let slot = slots.get_mut(name).ok_or_else(|| self.inner.not_found(name))?;
            self.inner.decide(name, slot, Request::MoveFailed)?;
            return Ok(());
        };
        self.inner.logs.event(name, "move failed; continuing here");
        self.run_on_from_capture(name, &snapshot, Request::MoveFailed).await
    }

    /// Durably records that `name` runs on another hub from now on, under
    /// `epoch`; this hub keeps only the forward pointer. Its checkpoints and
    /// logs here are stale from now on: the caller drops them with
    /// [`Supervisor::drop_state_left_behind_later`].
    pub fn record_moved(&self, name: &str, epoch: u64, to: ForwardPointer) -> Result<(), HubError> {
        let previous = {
            let mut slots = self.inner.lock_slots();
            let slot = slots.get_mut(name).ok_or_else(|| self.inner.not_found(name))?;
            let previous = (slot.phase, slot.record.clone());
            self.inner.decide(name, slot, Request::MoveRecorded)?;
            slot.record.epoch = epoch;
            slot.record.moved_to = Some(to);
            slot.record.left_behind_dropped = false;
            previous
        };
        if let Err(error) = self.inner.save_durably(name) {
            // Not recorded: the move fails and the function stays here.
            let mut slots = self.inner.lock_slots();
            if let Some(slot) = slots.get_mut(name) {
                (slot.phase, slot.record) = previous;
            }
            return Err(error);
        }
        Ok(())
    }

    /// Drops, in the background, the checkpoints and logs that `name` left
    /// here when it moved away under `epoch` (stale since
    /// [`Supervisor::record_moved`]). The source calls it once the
    /// destination has answered the commit, so that the work stays off the
    /// downtime. A checkpoint being written now finishes first (and one
    /// waiting for the lock then sees the function moved and writes
    /// nothing).
    pub fn drop_state_left_behind_later(&self, name: &str, epoch: u64) {
        let supervisor = self.clone();
        let owned = name.to_owned();
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let _serialized = inner.persist_lock.lock().await;
            let _ = tokio::task::spawn_blocking(move || supervisor.drop_state_left_behind(&owned, epoch)).await;
        });
    }

    /// [`Supervisor::drop_local_state`] for a function that moved away under
    /// `epoch`, unless it is coming back meanwhile: then what is here is
    /// the arrival's (its early log history, soon its checkpoint). Holds
    /// the early-log lock so that an arrival cannot store its history
    /// between the check and the drop.
    fn drop_state_left_behind(&self, name: &str, epoch: u64) {
        let owners = self.lock_early_logs();
        let away_under_epoch = |slot: &Slot| slot.phase == Phase::Moved && slot.record.epoch == epoch;
        let still_away = self.inner.lock_slots().get(name).is_some_and(away_under_epoch);
        if !still_away || owners.contains_key(name) {
            tracing::debug!(function = %name, "the function is coming back; its state here is kept");
            return;
        }
        // Both run, whatever the first finds.
        let state_dropped = self.drop_local_state(name);
        let files_removed = self.remove_files(name);
        // The pointer itself may have been removed meanwhile (`ferry rm`).
        let marked = state_dropped && files_removed && {
            let mut slots = self.inner.lock_slots();
            match slots.get_mut(name).filter(|slot| away_under_epoch(slot)) {
                Some(slot) => {
                    slot.record.left_behind_dropped = true;
                    true
                }
                None => false,
            }
        };
        // Not flushed: a mark lost in a crash only makes the next start
        // look again, and find nothing.
        if !marked {
            return;
        }
        match self.inner.save(name) {
            Ok(()) => tracing::debug!(function = %name, epoch, "dropped the state the function left behind"),
            Err(error) => tracing::warn!(function = %name, %error, "could not mark the state left behind as dropped"),
        }
    }

    /// An instance of the module of `spec`, made on its own thread, for an
    /// arriving function's memory to be written into while it arrives (see
    /// [`WarmInstance`]). The module must be stored.
    pub async fn warm_instance(&self, spec: &FunctionSpec) -> Result<WarmInstance, HubError> {
        let runtime = Arc::clone(&self.inner.runtime);
        let hash = spec.module_hash.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            runtime
                .prepare_stored(&hash)
                .and_then(crate::runtime::PreparedModule::ready_to_rewind)
        })
        .await
        .map_err(|error| HubError::Internal(format!("prepare task failed: {error}")))??;
        let services: Arc<dyn crate::runtime::HostServices> = self.inner.clone();
        Ok(WarmInstance::spawn(
            self.inner.runtime.engine().clone(),
            prepared.module,
            self.inner.launch_spec(spec),
            services,
            true,
        ))
    }

    /// Log history of a function, oldest first.
    pub fn log_history(&self, name: &str) -> Result<Vec<LogEntry>, HubError> {
        Ok(self.inner.logs.history(name)?)
    }

    /// Log entries of a function numbered `from_seq` and later, oldest first.
    pub fn log_history_from(&self, name: &str, from_seq: u64) -> Result<Vec<LogEntry>, HubError> {
        Ok(self.inner.logs.history_from(name, from_seq)?)
    }

    /// Stores the log history that the move `move_id` brought before its
    /// rounds, replacing whatever this hub kept under the name (stale: the
    /// function does not run here), so that the seal only adds the rest.
    pub fn import_arrival_logs(&self, name: &str, move_id: &str, entries: &[LogEntry]) -> Result<(), HubError> {
        crate::error::validate_function_name(name)?;
        let mut owners = self.lock_early_logs();
        if self.runs_here(name) {
            return Err(HubError::Internal(format!(
                "function {name:?} lives on this hub; its log is not replaced"
            )));
        }
        self.inner.logs.import(name, entries)?;
        owners.insert(name.to_owned(), move_id.to_owned());
        Ok(())
    }

    /// Drops the logs that the move `move_id` stored with
    /// [`Supervisor::import_arrival_logs`] for an arrival that was then
    /// discarded; nothing if another arrival has replaced them since or a
    /// function of that name lives here meanwhile.
    pub fn drop_arrival_logs(&self, name: &str, move_id: &str) {
        let mut owners = self.lock_early_logs();
        if owners.get(name).map(String::as_str) != Some(move_id) {
            return;
        }
        owners.remove(name);
        if !self.runs_here(name)
            && let Err(error) = self.inner.logs.remove(name)
        {
            tracing::warn!(function = %name, %error, "could not drop the logs of a discarded arrival");
        }
    }

    /// Whether a function of that name lives here (not only a forward
    /// pointer).
    fn runs_here(&self, name: &str) -> bool {
        let slots = self.inner.lock_slots();
        slots.get(name).is_some_and(|slot| slot.phase != Phase::Moved)
    }

    fn lock_early_logs(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, String>> {
        self.inner
            .early_logs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where a function that moved away runs now.
    pub fn forward_pointer(&self, name: &str) -> Option<ForwardPointer> {
        let slots = self.inner.lock_slots();
        let slot = slots.get(name)?;
        (slot.phase == Phase::Moved)
            .then(|| slot.record.moved_to.clone())
            .flatten()
    }

    /// Forgets the forward pointer of a function that moved away (after it
    /// was removed where it runs).
    pub fn forget(&self, name: &str) -> Result<(), HubError> {
        let removed = {
            let mut slots = self.inner.lock_slots();
            match slots.get(name) {
                Some(slot) if slot.phase == Phase::Moved => slots.remove(name).is_some(),
                _ => false,
            }
        };
        if removed {
            self.inner.save(name)?;
            self.drop_local_state(name);
        }
        Ok(())
    }

    /// Every function that moved away, with its pointer.
    pub fn forward_pointers(&self) -> Vec<(String, ForwardPointer)> {
        let slots = self.inner.lock_slots();
        let mut pointers: Vec<_> = slots
            .iter()
            .filter(|(_, slot)| slot.phase == Phase::Moved)
            .filter_map(|(name, slot)| slot.record.moved_to.clone().map(|to| (name.clone(), to)))
            .collect();
        pointers.sort_by(|a, b| a.0.cmp(&b.0));
        pointers
    }

    /// How the handoff of `name` to hub `destination` under `epoch` ended,
    /// as this hub (its source) knows it: committed if exactly that move is
    /// recorded, pending while a move of it is under way here, aborted
    /// otherwise — a crash loses every unrecorded move.
    pub fn handoff_outcome(&self, name: &str, epoch: u64, destination: &str) -> HandoffOutcome {
        // Under the slots lock: a move cannot be recorded meanwhile.
        let slots = self.inner.lock_slots();
        match slots.get(name) {
            Some(slot)
                if slot.phase == Phase::Moved
                    && slot.record.epoch == epoch
                    && slot.record.moved_to.as_ref().map(|to| to.hub_id.as_str()) == Some(destination) =>
            {
                HandoffOutcome::Committed
            }
            Some(slot) if matches!(slot.phase, Phase::MovingOut | Phase::PausedForMove) => HandoffOutcome::Pending,
            _ => HandoffOutcome::Aborted,
        }
    }

    /// May a function `name` now running under `epoch` on another hub come
    /// here? Only if this hub does not run it, and knows of no later epoch.
    /// Leftovers of an arrival that crashed before it was recorded are dropped.
    pub fn check_arrival(&self, name: &str, epoch: u64) -> Result<(), HubError> {
        crate::error::validate_function_name(name)?;
        self.inner.refuse_if_shutting_down()?;
        let known = {
            let slots = self.inner.lock_slots();
            slots.get(name).map(|slot| (slot.phase, slot.record.epoch))
        };
        match known {
            None => {
                self.drop_local_state(name);
                Ok(())
            }
            Some((Phase::Moved, known_epoch)) if epoch < known_epoch => Err(HubError::StaleEpoch {
                name: name.to_owned(),
                offered: epoch,
                known: known_epoch,
            }),
            Some(_) => self.inner.check(name, Request::Arrive).map(|_| ()),
        }
    }

    /// Records a received function whose checkpoint `sequence` is stored:
    /// it waits here for its source's commit, and does not run.
    pub fn install_arrival(
        &self,
        spec: FunctionSpec,
        epoch: u64,
        starts: u32,
        sequence: u64,
        source: PendingHandoff,
        logs: ArrivalLogs<'_>,
    ) -> Result<(), HubError> {
        let name = spec.name.clone();
        let source_hub_id = source.source_hub_id.clone();
        let last_move = super::moves::arrival_from(&source.source_hub_name);
        {
            let mut owners = self.lock_early_logs();
            match logs {
                ArrivalLogs::Whole(entries) => self.inner.logs.import(&name, entries)?,
                ArrivalLogs::Rest { move_id, entries } => {
                    if owners.get(&name).map(String::as_str) != Some(move_id) {
                        return Err(HubError::Internal(format!(
                            "the early log history of function {name:?} was replaced by another arrival"
                        )));
                    }
                    self.inner.logs.import_more(&name, entries)?;
                }
            }
            owners.remove(&name);
        }
        // A base left from an earlier stay here describes another run.
        self.inner
            .incremental
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&name);
        let mut record = FunctionRecord {
            format_version: RECORD_FORMAT_VERSION,
            spec: Some(spec),
            starts,
            deployed_unix_ms: unix_ms_now(),
            last_checkpoint: sequence,
            last_checkpoint_unix_ms: unix_ms_now(),
            epoch,
            pending_handoff: Some(source),
            ..Default::default()
        };
        records::write_phase(&mut record, Phase::Arriving);
        let mut arriving = Slot::new(record, Phase::Arriving);
        arriving.last_move = Some(last_move);
        arriving.arrived = Some((std::time::Instant::now(), source_hub_id));
        let previous = {
            let mut slots = self.inner.lock_slots();
            if let Some(slot) = slots.get_mut(&name) {
                // Known here only as moved away: the pointer gives way to the arrival.
                self.inner.decide(&name, slot, Request::Arrive)?;
            }
            slots.insert(name.clone(), arriving)
        };
        if let Err(error) = self.inner.save_durably(&name) {
            let mut slots = self.inner.lock_slots();
            match previous {
                Some(previous) => slots.insert(name, previous),
                None => slots.remove(&name),
            };
            return Err(error);
        }
        Ok(())
    }

    /// The source committed: the function runs here from `snapshot` (the
    /// received image, in `warm` if the arrival filled an instance; `sealed`
    /// is the stored checkpoint it is, when known) or, after a restart,
    /// from its stored checkpoint. Either way its first checkpoint here
    /// writes only what it changed since that checkpoint.
    pub async fn commit_arrival(
        &self,
        name: &str,
        snapshot: Option<Arc<Snapshot>>,
        (warm, sealed): (Option<WarmStart>, Option<ferry_proto::internal::v1::CheckpointManifest>),
    ) -> Result<(), HubError> {
        let source = {
            let slots = self.inner.lock_slots();
            let slot = slots.get(name).ok_or_else(|| self.inner.not_found(name))?;
            match (&slot.record.pending_handoff, slot.phase) {
                (Some(source), Phase::Arriving) => source.clone(),
                // Committed before (the stream and a resolver may both say so).
                _ => return Ok(()),
            }
        };
        let (snapshot, sealed) = match snapshot {
            Some(snapshot) => (snapshot, sealed),
            None => {
                let manifest = self.inner.latest_checkpoint(name)?;
                (Arc::new(self.inner.load_snapshot(&manifest).await?), Some(manifest))
            }
        };
        let prepared = self.inner.prepare_stored(name).await?;
        let Some(launched) =
            self.inner
                .decide_and_launch_warm(name, Request::Commit, &prepared, Some(snapshot), (warm, sealed))?
        else {
            return Ok(());
        };
        // Running means restored into an instance, not just a thread started.
        self.wait_instantiated(name, launched).await;
        // Nothing from here fails: the caller opens the held run's gate
        // after this returns, and a committed run's gate must open.
        let epoch = self.get(name).map(|info| info.epoch).unwrap_or_default();
        self.inner.logs.event(
            name,
            &format!("moved here from hub {} (epoch {epoch})", source.source_hub_name),
        );
        // Not inside the downtime (a write into the store can wait
        // milliseconds for one being flushed): until the record is written
        // and on disk a restart finds the arrival still pending, asks the
        // source, and starts it from the sealed checkpoint, as recovery
        // would after the flush. A save writes the record as it is then, so
        // one written later by the run is never overwritten by an older one.
        let (inner, store, function) = (Arc::clone(&self.inner), self.inner.store.clone(), name.to_owned());
        tokio::task::spawn_blocking(move || {
            if let Err(error) = inner.save(&function) {
                tracing::warn!(function = %function, error = %ferry_proto::error_chain(&error), "could not record the start");
            }
            if let Err(error) = store.flush() {
                tracing::warn!(%error, "could not flush the record of a started arrival");
            }
        });
        Ok(())
    }

    /// The source kept the function: forget what arrived, and point at the
    /// source instead.
    pub fn discard_arrival(&self, name: &str, source_epoch: u64) -> Result<(), HubError> {
        {
            let mut slots = self.inner.lock_slots();
            let Some(slot) = slots.get_mut(name) else { return Ok(()) };
            if slot.phase != Phase::Arriving {
                return Ok(());
            }
            let Some(source) = slot.record.pending_handoff.take() else {
                return Ok(());
            };
            self.inner.decide(name, slot, Request::Abort)?;
            slot.record.epoch = source_epoch;
            slot.record.moved_to = Some(ForwardPointer {
                hub_id: source.source_hub_id,
                hub_name: source.source_hub_name,
                address: source.source_address,
            });
        }
        self.inner.save_durably(name)?;
        self.drop_local_state(name);
        // A volume laid out at the seal: the function runs on at the source.
        self.remove_files(name);
        Ok(())
    }

    /// Received functions that wait for their source's word, with it.
    pub fn pending_arrivals(&self) -> Vec<(String, u64, PendingHandoff)> {
        let slots = self.inner.lock_slots();
        slots
            .iter()
            .filter(|(_, slot)| slot.phase == Phase::Arriving)
            .filter_map(|(name, slot)| {
                slot.record
                    .pending_handoff
                    .clone()
                    .map(|source| (name.clone(), slot.record.epoch, source))
            })
            .collect()
    }

    /// Drops checkpoints, logs and the incremental base of `name` here;
    /// false when some of it could not be dropped (logged).
    pub(super) fn drop_local_state(&self, name: &str) -> bool {
        let mut dropped = true;
        if let Err(error) = crate::store::off_worker(|| self.inner.checkpoints.remove_function(name)) {
            tracing::warn!(function = %name, %error, "could not drop stale checkpoints");
            dropped = false;
        }
        if let Err(error) = self.inner.logs.remove(name) {
            tracing::warn!(function = %name, %error, "could not drop stale logs");
            dropped = false;
        }
        self.inner
            .incremental
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(name);
        dropped
    }
}
