//! What `ps` shows about a function.

use ferry_proto::v1::{FunctionInfo, FunctionState};

use super::{Inner, Slot};

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
        let (state, memory_bytes, cpu_micros) = match &slot.running {
            Some(running) => (
                FunctionState::Running as i32,
                running.control.memory_bytes(),
                running.control.cpu_micros(),
            ),
            None if record.pending_handoff.is_some() => (FunctionState::Arriving as i32, 0, 0),
            None => (record.last_state, 0, slot.last_cpu_micros),
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
        }
    }
}
