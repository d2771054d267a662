//! Where a function's [`Phase`] meets the proto enums: the durable form of a
//! phase in its record, the phase a record is read back as after a restart,
//! the state `ps` shows, and the error a refusal becomes.

use ferry_proto::v1::FunctionState;

use ferry_proto::internal::v1::{DesiredState, FunctionRecord};

use super::Slot;
use super::lifecycle::{Phase, Refusal, Request, Suspender};
use crate::error::HubError;

/// Writes the durable form of `phase` into `record`: what the function
/// should be after a hub restart (`desired`) and what it was last
/// (`last_state`).
pub(super) fn write_phase(record: &mut FunctionRecord, phase: Phase) {
    let (desired, last_state) = match phase {
        Phase::Starting | Phase::Warming => (DesiredState::Running, FunctionState::Starting),
        // A capture for a suspend that is not yet durable, a pause for a move
        // that is not yet recorded, a hub shutdown: all continue as running
        // after a crash or restart.
        Phase::Running
        | Phase::Parked
        | Phase::MovingOut
        | Phase::PausedForMove
        | Phase::ShuttingDown
        | Phase::Suspending(_) => (DesiredState::Running, FunctionState::Running),
        Phase::Arriving => (DesiredState::Running, FunctionState::Arriving),
        // An acknowledged stop survives a crash before the run has ended.
        Phase::Stopping => (DesiredState::Stopped, FunctionState::Running),
        Phase::Stopped => (DesiredState::Stopped, FunctionState::Stopped),
        Phase::Suspended(Suspender::User) => (DesiredState::Suspended, FunctionState::Suspended),
        // The hub's own suspension ends with the hub: a restart continues it.
        Phase::Suspended(Suspender::Overload) => (DesiredState::Running, FunctionState::Suspended),
        Phase::Moved => (DesiredState::Moved, FunctionState::Moved),
        Phase::Exited => (DesiredState::Running, FunctionState::Exited),
        Phase::Failed => (DesiredState::Running, FunctionState::Failed),
    };
    record.desired = desired as i32;
    record.last_state = last_state as i32;
}

/// The phase a stored record is read back as when the hub starts. Nothing
/// runs yet: `Request::Recover` decides what continues.
pub(super) fn read_phase(record: &FunctionRecord) -> Phase {
    if record.pending_handoff.is_some() {
        return Phase::Arriving;
    }
    let last_state = FunctionState::try_from(record.last_state).unwrap_or(FunctionState::Unspecified);
    match DesiredState::try_from(record.desired).unwrap_or(DesiredState::Unspecified) {
        DesiredState::Moved => Phase::Moved,
        DesiredState::Stopped => Phase::Stopped,
        DesiredState::Suspended => Phase::Suspended(Suspender::User),
        DesiredState::Running | DesiredState::Unspecified => match last_state {
            FunctionState::Running | FunctionState::Starting => Phase::Running,
            FunctionState::Suspended => Phase::Suspended(Suspender::Overload),
            FunctionState::Exited => Phase::Exited,
            FunctionState::Stopped => Phase::Stopped,
            FunctionState::Moved => Phase::Moved,
            FunctionState::Failed | FunctionState::Arriving | FunctionState::Unspecified => Phase::Failed,
        },
    }
}

/// The state `ps` shows for a phase.
pub(super) fn shown_state(phase: Phase) -> FunctionState {
    match phase {
        Phase::Starting | Phase::Warming => FunctionState::Starting,
        Phase::Running
        | Phase::Parked
        | Phase::MovingOut
        | Phase::PausedForMove
        | Phase::Stopping
        | Phase::Suspending(_)
        | Phase::ShuttingDown => FunctionState::Running,
        Phase::Arriving => FunctionState::Arriving,
        Phase::Suspended(_) => FunctionState::Suspended,
        Phase::Stopped => FunctionState::Stopped,
        Phase::Moved => FunctionState::Moved,
        Phase::Exited => FunctionState::Exited,
        Phase::Failed => FunctionState::Failed,
    }
}

/// A phase in words, for messages.
pub fn phase_words(phase: Phase) -> &'static str {
    match phase {
        Phase::Starting => "starting",
        Phase::Running => "running",
        Phase::Parked => "running (parked in a long wait)",
        Phase::MovingOut => "moving to another hub",
        Phase::PausedForMove => "paused for a move",
        Phase::Arriving => "arriving from another hub",
        Phase::Warming => "starting after a move",
        Phase::Stopping => "stopping",
        Phase::Suspending(_) => "being suspended",
        Phase::Suspended(Suspender::User) => "suspended",
        Phase::Suspended(Suspender::Overload) => "suspended by the hub for load",
        Phase::ShuttingDown => "stopping for a hub shutdown",
        Phase::Stopped => "stopped",
        Phase::Moved => "moved",
        Phase::Exited => "exited",
        Phase::Failed => "failed",
    }
}

/// The error a user sees for a refusal of `request` by the function `name`
/// in `slot`.
pub(super) fn refusal_error(name: &str, slot: &Slot, request: Request, refusal: Refusal) -> HubError {
    let phase = slot.phase;
    let moved_to = slot.record.moved_to.as_ref().map(|to| to.hub_name.as_str());
    let name = name.to_owned();
    match refusal {
        Refusal::Moving => HubError::Moving { name },
        Refusal::MovedAway => HubError::MovedAway {
            name,
            hub: moved_to.unwrap_or("another hub").to_owned(),
        },
        Refusal::AlreadyRunning => HubError::AlreadyRunning { name },
        Refusal::NotRunning if request == Request::MigrateOut => HubError::NotMovable {
            hint: match phase {
                Phase::Exited => String::new(),
                _ => format!("; `ferry resume {name}` continues it on this hub, from where it can be moved"),
            },
            name,
            state: phase_words(phase),
        },
        Refusal::NotRunning => HubError::NotRunning {
            name,
            state: phase_words(phase),
        },
        Refusal::Completed => HubError::Completed { name },
        Refusal::Busy => HubError::Busy {
            name,
            state: phase_words(phase),
        },
        Refusal::ShuttingDown => HubError::ShuttingDown,
        Refusal::Exists => HubError::FunctionExists { name },
        Refusal::Superseded => HubError::Internal(format!(
            "{request:?} does not apply to function {name:?}, which is {}",
            phase_words(phase)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::lifecycle::PHASES;

    /// After a crash every phase reads back as one that recovers to the
    /// same intent: running ones run again, stopped ones stay stopped.
    #[test]
    fn every_phase_reads_back_as_what_a_restart_should_continue() {
        for phase in PHASES {
            let mut record = FunctionRecord::default();
            write_phase(&mut record, phase);
            if phase == Phase::Arriving {
                record.pending_handoff = Some(Default::default());
            }
            let read = read_phase(&record);
            let expected = match phase {
                Phase::Starting
                | Phase::Warming
                | Phase::Running
                | Phase::Parked
                | Phase::MovingOut
                | Phase::PausedForMove
                | Phase::ShuttingDown
                | Phase::Suspending(_) => Phase::Running,
                Phase::Stopping => Phase::Stopped,
                other => other,
            };
            assert_eq!(read, expected, "{phase:?}");
        }
    }

    #[test]
    fn a_move_of_a_function_that_does_not_run_says_what_to_do() {
        let refused = |phase| {
            let slot = Slot::new(FunctionRecord::default(), phase);
            refusal_error("sf", &slot, Request::MigrateOut, Refusal::NotRunning).to_string()
        };
        assert_eq!(
            refused(Phase::Suspended(crate::supervisor::lifecycle::Suspender::User)),
            "function \"sf\" is suspended: only a running function moves; `ferry resume sf` continues it on this hub, from where it can be moved"
        );
        assert_eq!(
            refused(Phase::Exited),
            "function \"sf\" is exited: only a running function moves"
        );
    }
}
