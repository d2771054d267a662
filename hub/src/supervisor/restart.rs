//! The hub coming back: every stored record loaded, and the functions
//! that were running continued from their latest checkpoint.

use std::sync::Arc;

use super::lifecycle::{self, Effect, Request, RunEnd};
use super::{INSTANTIATE_WAIT, Phase, Slot, Supervisor, name_of, records, run};
use crate::error::HubError;

impl Supervisor {
    /// Loads every stored record and continues the functions that were
    /// running when the hub last stopped (or that the hub had suspended for
    /// load): from their latest checkpoint, or from the beginning of
    /// `_start` if they have none.
    pub async fn restore(&self) -> Result<(), HubError> {
        let stored = self.inner.store.functions()?;
        let mut to_start = Vec::new();
        let mut moved_away = Vec::new();
        {
            let mut slots = self.inner.lock_slots();
            for record in stored {
                let name = name_of(&record).to_owned();
                let phase = records::read_phase(&record);
                if lifecycle::decide(phase, Request::Recover).is_ok_and(|next| next.effect == Effect::StartRun) {
                    to_start.push(name.clone());
                }
                if phase == Phase::Moved && !record.left_behind_dropped {
                    moved_away.push((name.clone(), record.epoch));
                }
                slots.insert(name, Slot::new(record, phase));
            }
        }
        self.sweep_files_left_behind();
        // A crash between a move's record and its clean-up left them.
        for (name, epoch) in moved_away {
            tracing::info!(function = %name, epoch, "looking for state a move left behind");
            self.drop_state_left_behind_later(&name, epoch);
        }
        for name in to_start {
            let resumed = async {
                let _serialized = self.inner.checkpoint_lock.lock().await;
                let latest = crate::store::off_worker(|| self.inner.checkpoints.latest(&name));
                let restored = match latest.map_err(HubError::Checkpoint)? {
                    Some(manifest) => {
                        let snapshot = Arc::new(self.inner.load_snapshot(&manifest).await?);
                        // The record may lag behind the store after a crash.
                        if let Some(slot) = self.inner.lock_slots().get_mut(&name)
                            && slot.record.last_checkpoint < manifest.sequence
                        {
                            slot.record.last_checkpoint = manifest.sequence;
                            slot.record.last_checkpoint_unix_ms = manifest.created_unix_ms;
                        }
                        Some((snapshot, manifest))
                    }
                    None => None,
                };
                let from = if restored.is_some() {
                    "its latest checkpoint"
                } else {
                    "the beginning"
                };
                tracing::info!(function = %name, from, "continuing function after hub restart");
                let prepared = self.inner.prepare_stored(&name).await?;
                match restored {
                    Some((snapshot, manifest)) => {
                        self.inner
                            .decide_and_launch_restored(&name, Request::Recover, &prepared, snapshot, manifest)
                    }
                    None => self.inner.decide_and_launch(&name, Request::Recover, &prepared, None),
                }
            };
            if let Err(error) = resumed.await {
                let reason = ferry_proto::error_chain(&error);
                tracing::warn!(function = %name, %reason, "cannot continue function after hub restart");
                {
                    let mut slots = self.inner.lock_slots();
                    if let Some(slot) = slots.get_mut(&name) {
                        slot.record.failure = format!("could not continue after hub restart: {reason}");
                        // A run's end is never refused.
                        let _ = self.inner.decide(&name, slot, Request::Ended(RunEnd::Failed));
                    }
                }
                if let Err(error) = self.inner.save(&name) {
                    tracing::warn!(function = %name, error = %ferry_proto::error_chain(&error), "could not record the failure");
                }
            }
        }
        Ok(())
    }

    /// Waits (a bounded time) until the run of `name` is instantiated or has
    /// ended, so that what is reported of it is what it does. False when
    /// the run ended without an instance (it failed to instantiate or to
    /// restore; its end is recorded by then).
    pub(super) async fn wait_instantiated(&self, name: &str, launched: run::Launched) -> bool {
        let run::Launched {
            control,
            mut finished,
            generation,
        } = launched;
        let settled = async {
            tokio::select! {
                () = control.instantiated() => {
                    // The run's own report may not be in yet: make it now (it is idempotent).
                    self.inner.run_event(name, generation, Request::Instantiated);
                }
                _ = finished.wait_for(|done| *done) => {}
            }
        };
        if tokio::time::timeout(INSTANTIATE_WAIT, settled).await.is_err() {
            tracing::warn!(function = %name, "function took over {INSTANTIATE_WAIT:?} to instantiate");
            return true;
        }
        // Both may be ready (a run that ends at once): the flag decides.
        control.was_instantiated()
    }
}
