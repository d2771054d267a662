//! The records of a move, on both sides: pausing a function for its last
//! round and continuing it if the move fails, recording that it moved (a
//! forward pointer under the new epoch), and installing, committing or
//! discarding a function that arrives. The protocol itself is in
//! `crate::migration`.

use std::sync::Arc;

use ferry_proto::RECORD_FORMAT_VERSION;
use ferry_proto::v1::{
    DesiredState, ForwardPointer, FunctionRecord, FunctionSpec, FunctionState, HandoffOutcome, LogEntry, PendingHandoff,
};

use super::{Inner, Slot, Supervisor, info};
use crate::error::HubError;
use crate::logs::unix_ms_now;
use crate::runtime::{CaptureKind, Snapshot};

/// What a source offers of a function it runs.
#[derive(Debug, Clone)]
pub struct MoveCandidate {
    pub spec: FunctionSpec,
    pub epoch: u64,
    pub starts: u32,
}

/// Marks a function as moving for as long as it lives.
pub struct MovingGuard {
    inner: Arc<Inner>,
    name: String,
}

impl Drop for MovingGuard {
    fn drop(&mut self) {
        self.inner.lock_moving().remove(&self.name);
    }
}

impl Supervisor {
    /// Starts moving `name` away: it must run here. The guard keeps other
    /// moves, stops and removals of it away until dropped.
    pub fn begin_move(&self, name: &str) -> Result<(MoveCandidate, MovingGuard), HubError> {
        let slots = self.inner.lock_slots();
        let slot = slots.get(name).ok_or_else(|| self.inner.not_found(name))?;
        if slot.running.is_none() {
            return Err(HubError::NotRunning {
                name: name.to_owned(),
                state: info::state_name(self.inner.info(slot).state),
            });
        }
        if !self.inner.lock_moving().insert(name.to_owned()) {
            return Err(HubError::Moving { name: name.to_owned() });
        }
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

    /// A capture for a pre-copy round; the function keeps running.
    pub async fn capture_for_round(&self, name: &str) -> Result<Arc<Snapshot>, HubError> {
        self.capture(name, CaptureKind::Continue).await
    }

    /// Captures the function for the last round and ends its run here,
    /// leaving its record as it is. Returns the snapshot and when the pause
    /// was asked for: the function stops at its next preemption point or
    /// blocking call, microseconds later, so the downtime counted from here
    /// errs on the long side and includes copying its memory out.
    pub async fn pause_for_move(&self, name: &str) -> Result<(Arc<Snapshot>, std::time::Instant), HubError> {
        let asked = std::time::Instant::now();
        let snapshot = self.capture(name, CaptureKind::Pause).await?;
        // The run winds down (its instance is dropped) while the last round goes out.
        Ok((snapshot, asked))
    }

    /// The move failed before it was recorded: the function continues here
    /// from the snapshot it was paused in.
    pub async fn continue_after_failed_move(&self, name: &str, snapshot: Arc<Snapshot>) -> Result<(), HubError> {
        // The paused run may still be winding down.
        if let Some(finished) = self.finished_receiver(name) {
            super::wait_finished(name, finished).await;
        }
        self.inner.logs.event(name, "move failed; continuing here");
        self.start_from(name, Some(snapshot)).await
    }

    /// Durably records that `name` runs on another hub from now on, under
    /// `epoch`; this hub keeps only the forward pointer. Its checkpoints and
    /// logs here are stale from now on and are dropped.
    pub fn record_moved(&self, name: &str, epoch: u64, to: ForwardPointer) -> Result<(), HubError> {
        {
            let mut slots = self.inner.lock_slots();
            let slot = slots.get_mut(name).ok_or_else(|| self.inner.not_found(name))?;
            slot.record.desired = DesiredState::Moved as i32;
            slot.record.last_state = FunctionState::Moved as i32;
            slot.record.epoch = epoch;
            slot.record.moved_to = Some(to);
            self.inner.store.put_function(&slot.record)?;
        }
        self.inner.store.flush()?;
        // Not on the downtime path: the checkpoints and logs here are stale now.
        let supervisor = self.clone();
        let owned = name.to_owned();
        tokio::task::spawn_blocking(move || supervisor.drop_local_state(&owned));
        Ok(())
    }

    /// Log history of a function, oldest first.
    pub fn log_history(&self, name: &str) -> Result<Vec<LogEntry>, HubError> {
        Ok(self.inner.logs.history(name)?)
    }

    /// Where a function that moved away runs now.
    pub fn forward_pointer(&self, name: &str) -> Option<ForwardPointer> {
        let slots = self.inner.lock_slots();
        let record = &slots.get(name)?.record;
        (record.desired == DesiredState::Moved as i32)
            .then(|| record.moved_to.clone())
            .flatten()
    }

    /// Forgets the forward pointer of a function that moved away (after it
    /// was removed where it runs).
    pub fn forget(&self, name: &str) -> Result<(), HubError> {
        let removed = {
            let mut slots = self.inner.lock_slots();
            match slots.get(name) {
                Some(slot) if slot.record.desired == DesiredState::Moved as i32 => slots.remove(name).is_some(),
                _ => false,
            }
        };
        if removed {
            self.inner.store.remove_function(name)?;
            self.drop_local_state(name);
        }
        Ok(())
    }

    /// Every function that moved away, with its pointer.
    pub fn forward_pointers(&self) -> Vec<(String, ForwardPointer)> {
        let slots = self.inner.lock_slots();
        let mut pointers: Vec<_> = slots
            .iter()
            .filter(|(_, slot)| slot.record.desired == DesiredState::Moved as i32)
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
                if slot.record.desired == DesiredState::Moved as i32
                    && slot.record.epoch == epoch
                    && slot.record.moved_to.as_ref().map(|to| to.hub_id.as_str()) == Some(destination) =>
            {
                HandoffOutcome::Committed
            }
            _ if self.inner.lock_moving().contains(name) => HandoffOutcome::Pending,
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
            slots.get(name).map(|slot| slot.record.clone())
        };
        match known {
            None => {
                self.drop_local_state(name);
                Ok(())
            }
            Some(record) if record.desired == DesiredState::Moved as i32 => {
                if epoch < record.epoch {
                    return Err(HubError::StaleEpoch {
                        name: name.to_owned(),
                        offered: epoch,
                        known: record.epoch,
                    });
                }
                Ok(())
            }
            Some(record) if record.pending_handoff.is_some() => Err(HubError::Moving { name: name.to_owned() }),
            Some(_) => Err(HubError::FunctionExists { name: name.to_owned() }),
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
        logs: &[LogEntry],
    ) -> Result<(), HubError> {
        let name = spec.name.clone();
        self.inner.logs.import(&name, logs)?;
        let record = FunctionRecord {
            format_version: RECORD_FORMAT_VERSION,
            spec: Some(spec),
            desired: DesiredState::Running as i32,
            last_state: FunctionState::Arriving as i32,
            starts,
            deployed_unix_ms: unix_ms_now(),
            last_checkpoint: sequence,
            last_checkpoint_unix_ms: unix_ms_now(),
            epoch,
            pending_handoff: Some(source),
            ..Default::default()
        };
        self.inner.store.put_function(&record)?;
        self.inner.store.flush()?;
        self.inner.lock_slots().insert(
            name,
            Slot {
                record,
                running: None,
                last_cpu_micros: 0,
            },
        );
        Ok(())
    }

    /// The source committed: the function runs here from `snapshot` (the
    /// received image) or, after a restart, from its stored checkpoint.
    pub async fn commit_arrival(&self, name: &str, snapshot: Option<Arc<Snapshot>>) -> Result<(), HubError> {
        let source = {
            let mut slots = self.inner.lock_slots();
            let slot = slots.get_mut(name).ok_or_else(|| self.inner.not_found(name))?;
            let Some(source) = slot.record.pending_handoff.take() else {
                return Ok(());
            };
            slot.record.last_state = FunctionState::Starting as i32;
            self.inner.store.put_function(&slot.record)?;
            source
        };
        let snapshot = match snapshot {
            Some(snapshot) => snapshot,
            None => {
                let manifest = self
                    .inner
                    .checkpoints
                    .latest(name)
                    .map_err(HubError::Checkpoint)?
                    .ok_or_else(|| HubError::NoCheckpoint { name: name.to_owned() })?;
                Arc::new(self.inner.load_snapshot(&manifest).await?)
            }
        };
        self.start_from(name, Some(snapshot)).await?;
        // Running means restored into an instance, not just a thread started.
        let control = {
            let slots = self.inner.lock_slots();
            slots
                .get(name)
                .and_then(|slot| slot.running.as_ref())
                .map(|running| Arc::clone(&running.control))
        };
        if let Some(control) = control
            && tokio::time::timeout(std::time::Duration::from_secs(30), control.instantiated())
                .await
                .is_err()
        {
            tracing::warn!(function = %name, "arrived function took over 30 s to instantiate");
        }
        self.inner.logs.event(
            name,
            &format!(
                "moved here from hub {} (epoch {})",
                source.source_hub_name,
                self.get(name)?.epoch
            ),
        );
        self.inner.store.flush()?;
        Ok(())
    }

    /// The source kept the function: forget what arrived, and point at the
    /// source instead.
    pub fn discard_arrival(&self, name: &str, source_epoch: u64) -> Result<(), HubError> {
        let mut slots = self.inner.lock_slots();
        let Some(slot) = slots.get_mut(name) else { return Ok(()) };
        let Some(source) = slot.record.pending_handoff.take() else {
            return Ok(());
        };
        slot.record.desired = DesiredState::Moved as i32;
        slot.record.last_state = FunctionState::Moved as i32;
        slot.record.epoch = source_epoch;
        slot.record.moved_to = Some(ForwardPointer {
            hub_id: source.source_hub_id,
            hub_name: source.source_hub_name,
            address: source.source_address,
        });
        self.inner.store.put_function(&slot.record)?;
        drop(slots);
        self.inner.store.flush()?;
        self.drop_local_state(name);
        Ok(())
    }

    /// Received functions that wait for their source's word, with it.
    pub fn pending_arrivals(&self) -> Vec<(String, u64, PendingHandoff)> {
        let slots = self.inner.lock_slots();
        slots
            .iter()
            .filter_map(|(name, slot)| {
                slot.record
                    .pending_handoff
                    .clone()
                    .map(|source| (name.clone(), slot.record.epoch, source))
            })
            .collect()
    }

    /// Drops checkpoints, logs and the incremental base of `name` here.
    fn drop_local_state(&self, name: &str) {
        if let Err(error) = self.inner.checkpoints.remove_function(name) {
            tracing::warn!(function = %name, %error, "could not drop stale checkpoints");
        }
        if let Err(error) = self.inner.logs.remove(name) {
            tracing::warn!(function = %name, %error, "could not drop stale logs");
        }
        self.inner
            .incremental
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(name);
    }
}
