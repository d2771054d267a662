//! Captures of an unwound instance: its memory, files, stack and globals
//! made a snapshot for every request waiting, and a paused instance kept
//! until the move or the persist decides.

use std::sync::Arc;
use std::time::Duration;

use super::{HOLD_LIMIT, LiveInstance, Outcome, global_value};
use crate::runtime::control::{Caller, CaptureKind, MemoryWanted};
use crate::runtime::snapshot::{HoldDecision, HoldKeeper, HostSnapshot, PausedHold, Snapshot, SnapshotMemory};
use crate::runtime::unwind::{STACK_DATA, used_stack_bytes};
use crate::runtime::wasi::volume::{SnapshotFiles, capture_files};

impl LiveInstance {
    /// The state of an unwound instance, with its whole memory.
    pub(super) fn snapshot(&mut self) -> Result<Snapshot, String> {
        let memory = self.capture_memory(&MemoryWanted::Whole)?;
        let files = self.capture_files(&MemoryWanted::Whole)?;
        self.snapshot_with(memory, files)
    }

    /// Copies out the memory `wanted`.
    pub(super) fn capture_memory(&mut self, wanted: &MemoryWanted) -> Result<SnapshotMemory, String> {
        let view = self.memory.view(&self.store);
        match wanted {
            MemoryWanted::Whole => view
                .copy_to_vec()
                .map(SnapshotMemory::Whole)
                .map_err(|error| format!("cannot read memory: {error}")),
            MemoryWanted::Changes { set, chunk_size } => {
                self.dirty.capture(&view, set, *chunk_size).map(SnapshotMemory::Changes)
            }
        }
    }

    /// The files of an unwound instance: for the consumer of `wanted`'s
    /// dirty set, only what changed since its previous capture is read.
    pub(super) fn capture_files(&self, wanted: &MemoryWanted) -> Result<Option<SnapshotFiles>, String> {
        let set = match wanted {
            MemoryWanted::Whole => None,
            MemoryWanted::Changes { set, .. } => Some(set.as_str()),
        };
        capture_files(&self.env.as_ref(&self.store).fds, set)
    }

    /// The state of an unwound instance with `memory`.
    pub(super) fn snapshot_with(
        &mut self,
        memory: SnapshotMemory,
        files: Option<SnapshotFiles>,
    ) -> Result<Snapshot, String> {
        let stack_view = self.capture_exports()?.stack.view(&self.store);
        let mut header = [0u8; 8];
        stack_view
            .read(u64::from(STACK_DATA), &mut header)
            .map_err(|error| format!("cannot read the saved stack: {error}"))?;
        let used = used_stack_bytes(&header);
        let mut stack = vec![0u8; used as usize];
        stack_view
            .read(u64::from(STACK_DATA), &mut stack)
            .map_err(|error| format!("cannot read the saved stack: {error}"))?;
        let mut globals = Vec::with_capacity(self.globals.len());
        for (index, global) in &self.globals {
            let value = global.get(&mut self.store);
            let value = global_value(&value).ok_or_else(|| format!("global {index} holds a reference"))?;
            globals.push((*index, value));
        }
        let guest = self.env.as_ref(&self.store);
        let pending = guest.pending.clone().ok_or("unwound without a pending call")?;
        Ok(Snapshot {
            memory,
            stack,
            globals,
            host: HostSnapshot {
                monotonic: guest.clock.now(),
                inbox: guest.control.inbox_snapshot(),
                pending,
                log_seq: guest.services.log_position(&guest.name),
                cpu: guest.cpu.used(),
                has_caller: guest.caller.is_some(),
                caller: match &guest.caller {
                    Some(Caller::Away(address)) => Some(address.clone()),
                    _ => None,
                },
            },
            files,
            hold: None,
        })
    }

    /// Answers every pending capture request from the (unwound) instance,
    /// one snapshot per kind of memory asked for. Returns the outcome if one
    /// of them ends the run (a suspend, a pause), and the keeper of an
    /// instance whose pause or suspend captured only changes.
    pub(super) fn answer_captures(&mut self) -> (Option<Outcome>, Option<HoldKeeper>) {
        let control = Arc::clone(&self.env.as_ref(&self.store).control);
        for set in control.take_forgotten_sets() {
            self.dirty.forget(&set);
            for area in self.env.as_ref(&self.store).fds.areas() {
                if let Some(mut tracker) = area.tracker() {
                    tracker.forget(&set);
                }
            }
        }
        for (from, to) in control.take_shared_views() {
            for area in self.env.as_ref(&self.store).fds.areas() {
                if let Some(mut tracker) = area.tracker() {
                    tracker.share(&from, &to);
                }
            }
        }
        let requests = control.take_capture_requests();
        let ending = crate::runtime::control::capture_outcome(&requests);
        if matches!(ending, Some(Outcome::Paused | Outcome::Suspended)) {
            self.keep_waiter();
        }
        let mut hold: Option<(PausedHold, HoldKeeper)> = None;
        let mut answered: Vec<(MemoryWanted, Result<Arc<Snapshot>, String>)> = Vec::new();
        let mut failure = None;
        for request in requests {
            let known = answered.iter().find(|(wanted, _)| *wanted == request.memory);
            let snapshot = match known {
                Some((_, snapshot)) => snapshot.clone(),
                None => {
                    let captured = self.capture_memory(&request.memory).and_then(|memory| {
                        let files = self.capture_files(&request.memory)?;
                        self.snapshot_with(memory, files)
                    });
                    let captured = captured.map(|mut snapshot| {
                        // A pause or a suspend that captured only changes
                        // keeps the instance until every copy of its
                        // snapshot is gone (the move or the persist is
                        // done) or the whole memory is asked for.
                        let ends_the_run = matches!(request.kind, CaptureKind::Pause | CaptureKind::Stop)
                            && matches!(ending, Some(Outcome::Paused | Outcome::Suspended));
                        if ends_the_run && matches!(snapshot.memory, SnapshotMemory::Changes(_)) {
                            let (shared, _) = hold.get_or_insert_with(PausedHold::new);
                            snapshot.hold = Some(shared.clone());
                        }
                        Arc::new(snapshot)
                    });
                    answered.push((request.memory.clone(), captured.clone()));
                    captured
                }
            };
            if let Err(reason) = &snapshot {
                failure.get_or_insert_with(|| reason.clone());
            }
            let _ = request.reply.send(snapshot);
        }
        drop(answered);
        // The snapshots hold it now; the thread keeps only the keeper.
        let keeper = hold.map(|(_, keeper)| keeper);
        if let Some(reason) = failure {
            // A pause answered before the failure still keeps its instance
            // until the move decides.
            return (Some(Outcome::Failed(format!("capture failed: {reason}"))), keeper);
        }
        (ending, keeper)
    }

    /// Hands the waiter of the invocation the function is handling to the
    /// hub to keep, so the reply finds it after a move or a resume.
    pub(super) fn keep_waiter(&mut self) {
        let guest = self.env.as_mut(&mut self.store);
        if let Some(Caller::Here(reply_to)) = guest.caller.take() {
            guest.caller = guest.services.keep_reply(&guest.name, reply_to).map(Caller::Away);
        }
    }

    /// Keeps the paused or suspended instance until the move or the
    /// suspend's persist decides: copies the whole memory out if the
    /// function is to continue here (or the hub stops, or the decision
    /// takes too long), and drops it without a copy otherwise.
    pub(super) fn hold_until_decided(&mut self, keeper: HoldKeeper) {
        let control = Arc::clone(&self.env.as_ref(&self.store).control);
        let since = std::time::Instant::now();
        loop {
            let decision = keeper.wait(Duration::from_millis(100));
            let give_up = control.stop_requested() || since.elapsed() > HOLD_LIMIT;
            match decision {
                HoldDecision::Release => return,
                HoldDecision::Wait if !give_up => continue,
                HoldDecision::Keep | HoldDecision::Wait => {
                    match self.memory.view(&self.store).copy_to_vec() {
                        Ok(memory) => keeper.keep(memory),
                        Err(error) => tracing::error!(%error, "cannot copy a paused function's memory out"),
                    }
                    return;
                }
            }
        }
    }
}
