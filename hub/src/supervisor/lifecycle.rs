//! The lifecycle of one function as a pure state machine: its [`Phase`], the
//! [`Request`]s that users, moves, runs and the hub make of it, and
//! [`decide`], which answers each with a [`Transition`] (the next phase and
//! the one thing to do about it) or a [`Refusal`].
//!
//! No I/O, no locks, no proto types: the supervisor locks its table, asks
//! `decide`, stores the next phase, unlocks, and only then acts and writes
//! the record. Every operation on a function goes through here, so two
//! operations can never disagree about what a function is doing — a
//! `resume` cannot start a copy of a function that is arriving or paused for
//! a move, because those phases refuse it.

/// Who suspended a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suspender {
    /// `ferry suspend`: only a user's `resume` continues it.
    User,
    /// The hub, to shed load: the hub continues it when load allows (and
    /// after a hub restart), a user's `resume` too.
    Overload,
}

/// What a function is doing on this hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// A run was asked for; its instance is being prepared or instantiated.
    Starting,
    /// Executing, or blocked in a short host call on its thread.
    Running,
    /// In a long wait (a sleep, a `recv`) with its instance released.
    Parked,
    /// Running while a move copies its memory to another hub.
    MovingOut,
    /// Paused for the last round of a move: not running anywhere until the
    /// move is recorded (it runs there) or fails (it continues here).
    PausedForMove,
    /// Received from another hub; waits for the source to record the move.
    Arriving,
    /// The source recorded the move: restoring into an instance here.
    Warming,
    /// A stop was asked for; the run is winding down.
    Stopping,
    /// Captured for a suspend; the capture is being made durable.
    Suspending(Suspender),
    /// Not running; its latest checkpoint continues it.
    Suspended(Suspender),
    /// The hub is shutting down: captured and stopped, it continues after
    /// the hub's restart.
    ShuttingDown,
    /// Stopped by a user.
    Stopped,
    /// Runs on another hub now; only a forward pointer is left here.
    Moved,
    /// Returned from `_start` or called `proc_exit`.
    Exited,
    /// Trapped, exceeded a limit, or could not start.
    Failed,
}

/// Every phase, for tables and tests.
#[cfg(test)]
pub const PHASES: [Phase; 17] = [
    Phase::Starting,
    Phase::Running,
    Phase::Parked,
    Phase::MovingOut,
    Phase::PausedForMove,
    Phase::Arriving,
    Phase::Warming,
    Phase::Stopping,
    Phase::Suspending(Suspender::User),
    Phase::Suspending(Suspender::Overload),
    Phase::Suspended(Suspender::User),
    Phase::Suspended(Suspender::Overload),
    Phase::ShuttingDown,
    Phase::Stopped,
    Phase::Moved,
    Phase::Exited,
    Phase::Failed,
];

/// How a run ended, as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunEnd {
    Exited,
    Stopped,
    /// Captured and stopped (suspend, shutdown).
    Suspended,
    /// Captured and stopped for the last round of a move.
    Paused,
    Failed,
}

/// Something asked of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    // From users.
    Stop,
    Remove,
    Suspend,
    Resume,
    Checkpoint,
    MigrateOut,
    // From a move, on its source.
    PauseForMove,
    MoveRecorded,
    MoveFailed,
    // From a move, on its destination (the first arrival of a name the hub
    // does not know needs no decision: there is nothing to disagree with).
    Arrive,
    Commit,
    Abort,
    // From the function's run.
    Instantiated,
    Park,
    Unpark,
    Ended(RunEnd),
    // From the supervisor's own follow-up of a capture it asked for.
    /// The capture for a suspend or a pause did not come in time; the run
    /// goes on.
    CaptureAbandoned,
    SuspendPersisted,
    SuspendNotPersisted,
    // From the hub.
    Recover,
    Shutdown,
    OverloadSuspend,
    OverloadResume,
}

/// Every request, for tables and tests.
#[cfg(test)]
pub const REQUESTS: [Request; 27] = [
    Request::Stop,
    Request::Remove,
    Request::Suspend,
    Request::Resume,
    Request::Checkpoint,
    Request::MigrateOut,
    Request::PauseForMove,
    Request::MoveRecorded,
    Request::MoveFailed,
    Request::Arrive,
    Request::Commit,
    Request::Abort,
    Request::Instantiated,
    Request::Park,
    Request::Unpark,
    Request::Ended(RunEnd::Exited),
    Request::Ended(RunEnd::Stopped),
    Request::Ended(RunEnd::Suspended),
    Request::Ended(RunEnd::Paused),
    Request::Ended(RunEnd::Failed),
    Request::CaptureAbandoned,
    Request::SuspendPersisted,
    Request::SuspendNotPersisted,
    Request::Recover,
    Request::Shutdown,
    Request::OverloadSuspend,
    Request::OverloadResume,
];

/// The one thing the supervisor does after a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    Nothing,
    /// Start a run: from the snapshot at hand, else the latest checkpoint.
    StartRun,
    /// Ask the run to stop at its next stopping point.
    AskStop,
    /// Capture the run; it keeps running.
    CaptureAndContinue,
    /// Capture the run and stop it (suspend, shutdown).
    CaptureAndStop,
    /// Capture the run and stop it for the last round of a move.
    CaptureAndPause,
    /// Forget the function: record, checkpoints, logs.
    Forget,
}

/// An accepted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub next: Phase,
    pub effect: Effect,
}

/// Why a request is refused in a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A move of it is under way; try again when it is over.
    Moving,
    /// It runs on another hub.
    MovedAway,
    /// It runs (or is starting) already.
    AlreadyRunning,
    /// The request needs a running function.
    NotRunning,
    /// It ran to its end: there is nothing left to continue.
    Completed,
    /// It is stopping or being suspended; try again when that is over.
    Busy,
    /// The hub is shutting down.
    ShuttingDown,
    /// A function of that name lives here (an arrival).
    Exists,
    /// A follow-up that does not fit the phase: another operation got
    /// there first (a suspend's persist after the function was stopped).
    Superseded,
}

fn to(next: Phase, effect: Effect) -> Result<Transition, Refusal> {
    Ok(Transition { next, effect })
}

fn stay(phase: Phase) -> Result<Transition, Refusal> {
    to(phase, Effect::Nothing)
}

impl Phase {
    /// A run of it exists or is about to.
    pub fn is_live(self) -> bool {
        matches!(self, Phase::Starting | Phase::Warming | Phase::Running | Phase::Parked)
    }

    /// Why this phase refuses a user's request that needs a quiet function,
    /// if it does for a reason every such request shares.
    fn common_refusal(self) -> Option<Refusal> {
        match self {
            Phase::MovingOut | Phase::PausedForMove | Phase::Arriving => Some(Refusal::Moving),
            Phase::Moved => Some(Refusal::MovedAway),
            Phase::Stopping | Phase::Suspending(_) => Some(Refusal::Busy),
            Phase::ShuttingDown => Some(Refusal::ShuttingDown),
            _ => None,
        }
    }
}

/// What `request` does to a function in `phase`.
pub fn decide(phase: Phase, request: Request) -> Result<Transition, Refusal> {
    use Phase::*;
    match request {
        Request::Stop => match phase {
            _ if phase.is_live() => to(Stopping, Effect::AskStop),
            Stopping => to(Stopping, Effect::AskStop),
            Suspended(_) => stay(Stopped),
            Stopped | Exited | Failed => stay(phase),
            _ => Err(phase.common_refusal().unwrap_or(Refusal::Busy)),
        },
        Request::Remove => match phase {
            _ if phase.is_live() => to(Stopping, Effect::AskStop),
            Stopping => to(Stopping, Effect::AskStop),
            Stopped | Exited | Failed | Suspended(_) | Moved => to(phase, Effect::Forget),
            _ => Err(phase.common_refusal().unwrap_or(Refusal::Busy)),
        },
        Request::Suspend => match phase {
            _ if phase.is_live() => to(Suspending(Suspender::User), Effect::CaptureAndStop),
            // A user takes over a suspension the hub made: only they resume it now.
            Suspended(Suspender::Overload) => stay(Suspended(Suspender::User)),
            Suspended(Suspender::User) | Stopped | Exited | Failed => Err(Refusal::NotRunning),
            _ => Err(phase.common_refusal().unwrap_or(Refusal::Busy)),
        },
        Request::Resume => match phase {
            Stopped | Failed | Suspended(_) => to(Starting, Effect::StartRun),
            // Its latest checkpoint lies before the end: continuing from it
            // would do the rest of the run, and its effects, a second time.
            Exited => Err(Refusal::Completed),
            _ if phase.is_live() => Err(Refusal::AlreadyRunning),
            _ => Err(phase.common_refusal().unwrap_or(Refusal::Busy)),
        },
        Request::Checkpoint => match phase {
            _ if phase.is_live() => to(phase, Effect::CaptureAndContinue),
            MovingOut => to(MovingOut, Effect::CaptureAndContinue),
            Stopped | Exited | Failed | Suspended(_) => Err(Refusal::NotRunning),
            _ => Err(phase.common_refusal().unwrap_or(Refusal::Busy)),
        },
        Request::MigrateOut => match phase {
            _ if phase.is_live() => stay(MovingOut),
            Stopped | Exited | Failed | Suspended(_) => Err(Refusal::NotRunning),
            _ => Err(phase.common_refusal().unwrap_or(Refusal::Busy)),
        },
        Request::PauseForMove => match phase {
            MovingOut => to(PausedForMove, Effect::CaptureAndPause),
            ShuttingDown => Err(Refusal::ShuttingDown),
            // The function ended during the pre-copy rounds.
            _ => Err(Refusal::NotRunning),
        },
        Request::MoveRecorded => match phase {
            PausedForMove => stay(Moved),
            _ => Err(Refusal::Superseded),
        },
        Request::MoveFailed => match phase {
            // Failed before the pause: it never stopped running.
            MovingOut => stay(Running),
            PausedForMove => to(Starting, Effect::StartRun),
            // It ended or the hub shut down meanwhile: nothing to continue.
            _ => stay(phase),
        },
        Request::Arrive => match phase {
            Moved => stay(Arriving),
            Arriving => Err(Refusal::Moving),
            ShuttingDown => Err(Refusal::ShuttingDown),
            _ => Err(Refusal::Exists),
        },
        Request::Commit => match phase {
            Arriving => to(Warming, Effect::StartRun),
            // Committed before (the stream and a resolver may both say so).
            _ => stay(phase),
        },
        Request::Abort => match phase {
            Arriving => stay(Moved),
            _ => stay(phase),
        },
        Request::Instantiated => match phase {
            Starting | Warming => stay(Running),
            _ => stay(phase),
        },
        Request::Park => match phase {
            Running => stay(Parked),
            _ => stay(phase),
        },
        Request::Unpark => match phase {
            Parked => stay(Running),
            _ => stay(phase),
        },
        Request::Ended(end) => Ok(Transition {
            next: after_run(phase, end),
            effect: Effect::Nothing,
        }),
        Request::CaptureAbandoned => match phase {
            Suspending(_) => stay(Running),
            PausedForMove => stay(MovingOut),
            _ => stay(phase),
        },
        Request::SuspendPersisted => match phase {
            Suspending(by) => stay(Suspended(by)),
            _ => Err(Refusal::Superseded),
        },
        Request::SuspendNotPersisted => match phase {
            // Never lose the function: it runs on from the capture at hand.
            Suspending(_) => to(Starting, Effect::StartRun),
            _ => Err(Refusal::Superseded),
        },
        Request::Recover => match phase {
            // It ran when the hub stopped, or the hub had suspended it for load.
            Running | Parked | Starting | Warming | MovingOut | PausedForMove | ShuttingDown => {
                to(Starting, Effect::StartRun)
            }
            Suspended(Suspender::Overload) | Suspending(Suspender::Overload) => to(Starting, Effect::StartRun),
            _ => stay(phase),
        },
        Request::Shutdown => match phase {
            _ if phase.is_live() => to(ShuttingDown, Effect::CaptureAndStop),
            MovingOut => to(ShuttingDown, Effect::CaptureAndStop),
            _ => stay(phase),
        },
        Request::OverloadSuspend => match phase {
            Running | Parked => to(Suspending(Suspender::Overload), Effect::CaptureAndStop),
            Starting | Warming => Err(Refusal::Busy),
            Stopped | Exited | Failed | Suspended(_) => Err(Refusal::NotRunning),
            _ => Err(phase.common_refusal().unwrap_or(Refusal::Busy)),
        },
        Request::OverloadResume => match phase {
            Suspended(Suspender::Overload) => to(Starting, Effect::StartRun),
            // A user stopped or suspended it since: theirs to continue.
            Stopped | Exited | Failed | Suspended(Suspender::User) => Err(Refusal::NotRunning),
            _ if phase.is_live() => Err(Refusal::AlreadyRunning),
            _ => Err(phase.common_refusal().unwrap_or(Refusal::Busy)),
        },
    }
}

/// The phase after a run ended with `end` while the function was in `phase`.
fn after_run(phase: Phase, end: RunEnd) -> Phase {
    use Phase::*;
    match (phase, end) {
        // Its record stays as running: the hub's next start continues it.
        (ShuttingDown, _) => ShuttingDown,
        // The paused run winds down while the move goes on or after it.
        (PausedForMove | Moved, RunEnd::Paused) => phase,
        (Moved, _) => Moved,
        // Captured for a suspend: the persist decides.
        (Suspending(_), RunEnd::Suspended) => phase,
        // Nothing runs in these phases; a stale report changes nothing.
        (Arriving | Stopped | Suspended(_), _) => phase,
        (_, RunEnd::Exited) => Exited,
        (_, RunEnd::Failed) => Failed,
        (_, RunEnd::Stopped | RunEnd::Suspended | RunEnd::Paused) => Stopped,
    }
}

#[cfg(test)]
mod tests;
