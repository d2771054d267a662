//! Runs of a function: deciding a transition under the table's lock,
//! launching a run (the handle under the lock, the store I/O and the thread
//! after it), the run's own reports (instantiated, parked, ended), and the
//! one serialized path by which records reach the store.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferry_proto::internal::v1::CheckpointManifest;
use ferry_proto::v1::FunctionSpec;
use tokio::sync::watch;

use super::lifecycle::{self, Effect, Phase, Request, RunEnd, Transition};
use super::{Inner, Running, Slot, driver, records};
use crate::error::HubError;
use crate::logs::unix_ms_now;
use crate::runtime::{FunctionControl, LaunchSpec, Message, Outcome, PreparedModule, Snapshot, WarmStart};

/// A run whose handle is in the table, to be started once the table is
/// unlocked.
pub(super) struct Launch {
    name: String,
    generation: u64,
    control: Arc<FunctionControl>,
    finished: watch::Sender<bool>,
    spec: LaunchSpec,
    module: crate::runtime::GuestModule,
    snapshot: Option<Arc<Snapshot>>,
    /// An instance that already holds the snapshot's memory (an arrival's).
    warm: Option<WarmStart>,
    starts: u32,
    /// Whether [`Inner::launch`] writes the record; an arrival's commit
    /// writes it after the start instead (see `Supervisor::commit_arrival`).
    record_now: bool,
}

/// A run just launched: what waiting for its instance needs, kept from
/// the launch so that a run that failed and left its slot at once is still
/// seen to have failed.
pub(super) struct Launched {
    pub(super) control: Arc<FunctionControl>,
    pub(super) finished: watch::Receiver<bool>,
    pub(super) generation: u64,
}

impl Inner {
    /// Decides `request` for `slot` (under the caller's lock) and applies the
    /// transition to memory: the phase and the record's durable form. The
    /// caller writes the record with [`Inner::save`] after unlocking.
    pub(super) fn decide(&self, name: &str, slot: &mut Slot, request: Request) -> Result<Transition, HubError> {
        let phase = slot.phase;
        match lifecycle::decide(phase, request) {
            Ok(transition) => {
                if transition.next != phase {
                    tracing::debug!(function = %name, ?request, from = ?phase, to = ?transition.next, "lifecycle transition");
                    slot.phase = transition.next;
                    records::write_phase(&mut slot.record, transition.next);
                }
                Ok(transition)
            }
            Err(refusal) => Err(records::refusal_error(name, slot, request, refusal)),
        }
    }

    /// Whether `request` would be accepted now, without applying it: to
    /// refuse early, before slow reads.
    pub(super) fn check(&self, name: &str, request: Request) -> Result<Transition, HubError> {
        let slots = self.lock_slots();
        let slot = slots.get(name).ok_or_else(|| self.not_found(name))?;
        lifecycle::decide(slot.phase, request).map_err(|refusal| records::refusal_error(name, slot, request, refusal))
    }

    /// Writes the record of `name` as it is now (or its absence) to the
    /// store. Writes are serialized and each takes the latest state, so the
    /// store never steps back to an older record.
    pub(super) fn save(&self, name: &str) -> Result<(), HubError> {
        let _writer = self
            .record_writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let record = self.lock_slots().get(name).map(|slot| slot.record.clone());
        match record {
            Some(record) => self.store.put_function(&record)?,
            None => self.store.remove_function(name)?,
        }
        Ok(())
    }

    /// [`Inner::save`], then waits until the store is on disk.
    pub(super) fn save_durably(&self, name: &str) -> Result<(), HubError> {
        self.save(name)?;
        self.store.flush()?;
        Ok(())
    }

    /// Puts a run's handle into the slot (under the caller's lock); the
    /// run starts with [`Inner::launch`] once the lock is released.
    pub(super) fn prepare_launch(
        &self,
        slot: &mut Slot,
        prepared: &PreparedModule,
        snapshot: Option<Arc<Snapshot>>,
        warm: Option<WarmStart>,
    ) -> Launch {
        debug_assert!(
            matches!(slot.phase, Phase::Starting | Phase::Warming),
            "{:?}",
            slot.phase
        );
        let spec = slot.record.spec.clone().unwrap_or_default();
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        // A warm instance was made with the control its run keeps.
        let control = warm.as_ref().map_or_else(
            || Arc::new(FunctionControl::default()),
            |warm| Arc::clone(warm.control()),
        );
        let (finished_tx, finished) = watch::channel(false);
        slot.record.starts += 1;
        slot.record.failure.clear();
        slot.record.exit_code = 0;
        slot.record.started_unix_ms = unix_ms_now();
        // The meter's next sample measures the run from here, not from zero.
        let cpu_base = snapshot
            .as_ref()
            .map_or(0, |snapshot| snapshot.host.cpu.as_micros() as u64);
        slot.cpu = super::placement::CpuSample::launched(generation, cpu_base);
        // The run publishes its counter at its first preemption point or
        // host call; until then it reads as the time carried over, not 0
        // (a meter sample in between took 0 as its base, and the next one
        // showed the whole history as one second's use).
        if control.cpu_micros() < cpu_base {
            control.set_cpu_micros(cpu_base);
        }
        slot.running = Some(Running {
            generation,
            control: Arc::clone(&control),
            finished,
        });
        Launch {
            name: spec.name.clone(),
            generation,
            control,
            finished: finished_tx,
            spec: self.launch_spec(&spec),
            module: prepared.module.clone(),
            snapshot,
            warm,
            starts: slot.record.starts,
            record_now: true,
        }
    }

    /// How a run of `spec` is started on this hub: its arguments and
    /// environment, its limits (the hub's defaults where it sets none).
    pub(super) fn launch_spec(&self, spec: &FunctionSpec) -> LaunchSpec {
        LaunchSpec {
            name: spec.name.clone(),
            args: spec.args.clone(),
            environ: spec.env.iter().map(|(key, value)| format!("{key}={value}")).collect(),
            memory_limit_bytes: spec
                .limits
                .map(|limits| limits.memory_limit_bytes)
                .filter(|bytes| *bytes > 0)
                .unwrap_or(self.config.default_memory_limit_bytes),
            cpu_cap: spec.limits.map(|limits| limits.cpus).filter(|cpus| *cpus > 0.0),
            governor: Some(Arc::clone(self.runtime.governor())),
            preopens: crate::resources::preopens(spec, &self.config.resources, &self.config.data_dir),
        }
    }

    /// Starts a run prepared by [`Inner::prepare_launch`], on its own thread.
    /// Store failures are logged, not returned: the run goes on, and its
    /// record is written again at its next transition.
    pub(super) fn launch(self: &Arc<Self>, launch: Launch) -> Launched {
        let Launch {
            name,
            generation,
            control,
            finished,
            spec,
            module,
            snapshot,
            warm,
            starts,
            record_now,
        } = launch;
        if record_now && let Err(error) = self.save(&name) {
            tracing::warn!(function = %name, error = %ferry_proto::error_chain(&error), "could not record the start");
        }
        match &snapshot {
            Some(snapshot) => {
                // Output written after the checkpoint belongs to a timeline
                // that no longer exists: the function writes it again.
                if let Err(error) = self.logs.truncate(&name, snapshot.host.log_seq) {
                    tracing::warn!(function = %name, %error, "could not drop output written after the checkpoint");
                }
                // A run started held got its inbox when it started.
                let inbox = match &warm {
                    Some(WarmStart::Held(_)) => &[][..],
                    _ => &snapshot.host.inbox[..],
                };
                for data in inbox {
                    let _ = control.deliver(Message {
                        data: data.clone(),
                        reply_to: None,
                    });
                }
                self.logs
                    .event(&name, &format!("resumed from a checkpoint (start {starts})"));
            }
            None => self.logs.event(&name, &format!("started (start {starts})")),
        }
        let launched = Launched {
            control: Arc::clone(&control),
            finished: finished.subscribe(),
            generation,
        };
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let drive = driver::drive(
                Arc::clone(&inner),
                module,
                spec,
                Arc::clone(&control),
                snapshot,
                warm,
                generation,
            );
            tokio::pin!(drive);
            let outcome = tokio::select! {
                outcome = &mut drive => outcome,
                () = control.instantiated() => {
                    inner.run_event(&name, generation, Request::Instantiated);
                    drive.await
                }
            };
            // Off the runtime's threads: the record is written to the
            // store, which on a full disk can block forever; with every
            // worker of the runtime stuck there, the hub (its shutdown
            // included) would stop answering.
            let recorded = tokio::task::spawn_blocking({
                let (inner, name, control) = (Arc::clone(&inner), name.clone(), Arc::clone(&control));
                move || {
                    // A run that arrived held and was stopped before its
                    // gate opened: the move was committed, so what it kept is
                    // the function's output. It goes to the log before the
                    // end is recorded, so that a resume's rewind comes after
                    // it (the destination's own release then finds nothing).
                    control.effects().release();
                    inner.finish(&name, generation, &control, outcome)
                }
            });
            if let Err(error) = recorded.await {
                tracing::error!(function = %name, %error, "recording the end of a run failed");
            }
            let _ = finished.send(true);
        });
        launched
    }

    /// A report from the run `generation` of `name` (instantiated, parked,
    /// continued); reports of an earlier run are ignored.
    pub(super) fn run_event(&self, name: &str, generation: u64, request: Request) {
        let changed = {
            let mut slots = self.lock_slots();
            let Some(slot) = slots.get_mut(name) else { return };
            if slot.running.as_ref().map(|running| running.generation) != Some(generation) {
                return;
            }
            let before = slot.phase;
            self.decide(name, slot, request)
                .is_ok_and(|transition| transition.next != before)
        };
        if changed
            && request == Request::Instantiated
            && let Err(error) = self.save(name)
        {
            tracing::warn!(function = %name, error = %ferry_proto::error_chain(&error), "could not record the start");
        }
    }

    /// Records how a run ended.
    pub(super) fn finish(&self, name: &str, generation: u64, control: &FunctionControl, outcome: Outcome) {
        let dropped = control.drain_inbox();
        let event = {
            let mut slots = self.lock_slots();
            let Some(slot) = slots.get_mut(name) else { return };
            if slot.running.as_ref().map(|running| running.generation) != Some(generation) {
                return;
            }
            slot.running = None;
            slot.last_cpu_micros = control.cpu_micros();
            slot.record.last_cpu_micros = slot.last_cpu_micros;
            let shutting_down = slot.phase == Phase::ShuttingDown;
            let (end, event) = match &outcome {
                Outcome::Exited(code) => {
                    slot.record.exit_code = *code;
                    (RunEnd::Exited, format!("exited with code {code}"))
                }
                Outcome::Stopped if shutting_down => (RunEnd::Stopped, "stopped by hub shutdown".to_owned()),
                Outcome::Stopped => (RunEnd::Stopped, "stopped".to_owned()),
                Outcome::Suspended if shutting_down => (RunEnd::Suspended, "checkpointed by hub shutdown".to_owned()),
                Outcome::Suspended => (RunEnd::Suspended, "suspended".to_owned()),
                Outcome::Paused => (RunEnd::Paused, "paused for a move".to_owned()),
                Outcome::Failed(reason) => {
                    slot.record.failure = reason.clone();
                    (RunEnd::Failed, format!("failed: {reason}"))
                }
            };
            // A run's end is never refused.
            let _ = self.decide(name, slot, Request::Ended(end));
            event
        };
        tracing::info!(function = %name, outcome = %event, dropped_messages = dropped, "function finished");
        self.logs.event(name, &event);
        if let Err(error) = self.save(name) {
            tracing::error!(function = %name, error = %ferry_proto::error_chain(&error), "could not persist function state");
        }
    }

    /// Decides `request` (one whose effect is [`Effect::StartRun`]) and
    /// launches the run from `snapshot`. Returns the run that started, if
    /// one did: an accepted request may have nothing left to start (a
    /// second commit).
    pub(super) fn decide_and_launch(
        self: &Arc<Self>,
        name: &str,
        request: Request,
        prepared: &PreparedModule,
        snapshot: Option<Arc<Snapshot>>,
    ) -> Result<Option<Launched>, HubError> {
        self.decide_and_launch_warm(name, request, prepared, snapshot, (None, None))
    }

    /// [`Inner::decide_and_launch`] from the stored checkpoint `manifest`,
    /// whose memory `snapshot` holds: the run's checkpoint dirty set starts
    /// clean after the restore and `manifest` becomes the base of the next
    /// checkpoint, so the run's first checkpoint (or suspend) writes only
    /// what the run changed. The caller holds `checkpoint_lock` from
    /// reading the latest checkpoint until here, so no persist of an
    /// earlier run can replace the base in between.
    pub(super) fn decide_and_launch_restored(
        self: &Arc<Self>,
        name: &str,
        request: Request,
        prepared: &PreparedModule,
        snapshot: Arc<Snapshot>,
        manifest: CheckpointManifest,
    ) -> Result<Option<Launched>, HubError> {
        let Some(launch) = self.decide_launch(name, request, prepared, Some(snapshot), None)? else {
            return Ok(None);
        };
        let chunk_size = self.checkpoints.options().chunk_size;
        if manifest.chunk_size == chunk_size {
            launch
                .control
                .start_clean_after_restore(super::checkpoints::CHECKPOINT_SET, chunk_size);
            self.set_incremental_base(name, manifest);
        }
        Ok(Some(self.launch(launch)))
    }

    /// [`Inner::decide_and_launch`] into `warm`, an instance that holds the
    /// snapshot's memory already, when there is one. With `stored`, the
    /// stored checkpoint the snapshot is (an arrival's sealed one), the run
    /// starts its checkpoint dirty set clean from it, as
    /// [`Inner::decide_and_launch_restored`] does — unless the warm run
    /// started before this (held): it has changed what it holds since.
    pub(super) fn decide_and_launch_warm(
        self: &Arc<Self>,
        name: &str,
        request: Request,
        prepared: &PreparedModule,
        snapshot: Option<Arc<Snapshot>>,
        (warm, stored): (Option<WarmStart>, Option<CheckpointManifest>),
    ) -> Result<Option<Launched>, HubError> {
        let ran_already = matches!(warm, Some(WarmStart::Held(_)));
        let Some(launch) = self.decide_launch(name, request, prepared, snapshot, warm)? else {
            return Ok(None);
        };
        let chunk_size = self.checkpoints.options().chunk_size;
        if let Some(manifest) = stored.filter(|manifest| !ran_already && manifest.chunk_size == chunk_size) {
            launch
                .control
                .start_clean_after_restore(super::checkpoints::CHECKPOINT_SET, chunk_size);
            self.set_incremental_base(name, manifest);
        }
        Ok(Some(self.launch(launch)))
    }

    /// Decides `request` and prepares the run it starts; `None` if the
    /// accepted request has nothing to start.
    fn decide_launch(
        &self,
        name: &str,
        request: Request,
        prepared: &PreparedModule,
        snapshot: Option<Arc<Snapshot>>,
        warm: Option<WarmStart>,
    ) -> Result<Option<Launch>, HubError> {
        let mut slots = self.lock_slots();
        let slot = slots.get_mut(name).ok_or_else(|| self.not_found(name))?;
        let transition = self.decide(name, slot, request)?;
        if transition.effect != Effect::StartRun {
            return Ok(None);
        }
        if request == Request::Commit {
            slot.record.pending_handoff = None;
            // Running from here on: what the held run kept is the function's
            // output, and a stop must not drop it (the destination's release
            // follows this commit whatever happens to the run).
            if let Some(WarmStart::Held(held)) = &warm {
                held.control().effects().commit();
            }
        }
        let mut launch = self.prepare_launch(slot, prepared, snapshot, warm);
        launch.record_now = request != Request::Commit;
        Ok(Some(launch))
    }
}
