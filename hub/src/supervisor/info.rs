//! What `ps` shows about a function.

use ferry_proto::v1::{FunctionInfo, FunctionState};

use super::{Inner, Phase, Slot, Suspender, records};

/// Lowercase name of a state, for messages and tables.
pub fn state_name(state: i32) -> &'static str {
    match FunctionState::try_from(state) {
        Ok(FunctionState::Starting) => "starting",
        Ok(FunctionState::Running) => "running",
        Ok(FunctionState::Exited) => "exited",
        Ok(FunctionState::Failed) => "failed",
        Ok(FunctionState::Stopped) => "stopped",
        Ok(FunctionState::Suspended) => "suspended",
        Ok(FunctionState::Moved) => "moved",
        Ok(FunctionState::Arriving) => "arriving",
        Ok(FunctionState::Unspecified) | Err(_) => "unknown",
    }
}

impl Inner {
    pub(super) fn info(&self, slot: &Slot) -> FunctionInfo {
        let record = &slot.record;
        let state = records::shown_state(slot.phase) as i32;
        let unstored = self
            .logs
            .unstored(record.spec.as_ref().map(|spec| spec.name.as_str()).unwrap_or_default());
        let (memory_bytes, cpu_micros) = match &slot.running {
            Some(running) => (running.control.memory_bytes(), running.control.cpu_micros()),
            None => (0, slot.last_cpu_micros),
        };
        // A function that moved away is shown where it went.
        let (hub_id, hub_name) = match &record.moved_to {
            Some(to) if state == FunctionState::Moved as i32 => (to.hub_id.clone(), to.hub_name.clone()),
            _ => (self.identity.id.clone(), self.identity.name.clone()),
        };
        FunctionInfo {
            spec: record.spec.clone(),
            state,
            hub_id,
            hub_name,
            memory_bytes,
            cpu_micros,
            exit_code: record.exit_code,
            failure: record.failure.clone(),
            started_unix_ms: record.started_unix_ms,
            starts: record.starts,
            last_checkpoint: record.last_checkpoint,
            last_checkpoint_unix_ms: record.last_checkpoint_unix_ms,
            epoch: record.epoch,
            forwarded: false,
            unstored_output_entries: unstored.entries,
            cpu_usage: slot.cpu.usage,
            cpu_demand: slot.cpu.demand,
            suspended_for_overload: slot.phase == Phase::Suspended(Suspender::Overload),
            unstored_output_bytes: unstored.bytes,
            moving: slot.moving.as_ref().map(|underway| underway.shown()),
            arrived: slot.last_move.clone(),
        }
    }
}
