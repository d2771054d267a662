//! Driving one function: it runs on a thread of its own, and when it parks
//! in a long wait (a sleep, a `recv` with nobody calling) its instance and
//! thread are released; the wait happens on the async runtime, holding
//! nothing but the snapshot, and a new thread continues it from there.
//! (Wasmer's `Store` cannot move between threads, so a parked function is
//! restored into a fresh instance rather than handed to another thread.)

use std::sync::Arc;
use std::time::Duration;

use crate::runtime::{
    self, FunctionControl, HostServices, LaunchSpec, MemoryWanted, Outcome, PendingCall, RunEnd, Snapshot,
    SnapshotMemory, WarmStart,
};

use super::Inner;
use super::lifecycle::Request;

/// Runs the function (fresh, or from `snapshot` — in `warm` if an arrival
/// filled one) until it ends, is stopped or is suspended.
pub(super) async fn drive(
    inner: Arc<Inner>,
    module: runtime::GuestModule,
    launch: LaunchSpec,
    control: Arc<FunctionControl>,
    mut snapshot: Option<Arc<Snapshot>>,
    mut warm: Option<WarmStart>,
    generation: u64,
) -> Outcome {
    let launch = Arc::new(launch);
    loop {
        let (inner_for_thread, module_for_thread) = (Arc::clone(&inner), module.clone());
        let (launch_for_thread, control_for_thread) = (Arc::clone(&launch), Arc::clone(&control));
        let warm_start = warm.take().zip(snapshot.clone());
        let run = match warm_start {
            Some((warm, snapshot)) => warm.start(snapshot),
            None => tokio::task::spawn_blocking(move || {
                let services: Arc<dyn HostServices> = inner_for_thread.clone();
                runtime::run_until_parked(
                    inner_for_thread.runtime.engine(),
                    &module_for_thread,
                    &launch_for_thread,
                    control_for_thread,
                    services,
                    snapshot.as_deref(),
                    true,
                )
            }),
        };
        let parked = match run.await {
            Ok(RunEnd::Finished(outcome)) => return outcome,
            Ok(RunEnd::Parked(parked)) => parked,
            Err(error) => return Outcome::Failed(format!("the function's thread failed: {error}")),
        };
        inner.run_event(&launch.name, generation, Request::Park);
        match wait_while_parked(&control, parked).await {
            Ok(continued) => {
                inner.run_event(&launch.name, generation, Request::Unpark);
                snapshot = Some(continued);
            }
            Err(outcome) => return outcome,
        }
    }
}

/// How long the parked call still has to wait, in the function's time.
fn remaining_wait(snapshot: &Snapshot) -> Option<Duration> {
    let now = snapshot.host.monotonic;
    match snapshot.host.pending {
        PendingCall::Sleep { until } | PendingCall::Poll { until } => Some(until.saturating_sub(now)),
        PendingCall::Recv { deadline } => deadline.map(|deadline| deadline.saturating_sub(now)),
        PendingCall::Preempt | PendingCall::SchedYield | PendingCall::Outbound { .. } => Some(Duration::ZERO),
    }
}

/// Waits, holding no thread, until the parked call can go on, answering
/// capture requests from the parked snapshot meanwhile. Returns the snapshot
/// to continue from — its clock advanced by the time spent parked, which the
/// function lived through — or the run's outcome if it ends while parked.
async fn wait_while_parked(control: &FunctionControl, parked: Arc<Snapshot>) -> Result<Arc<Snapshot>, Outcome> {
    let parked_at = tokio::time::Instant::now();
    let deadline = remaining_wait(&parked).map(|remaining| parked_at + remaining);
    let waiting_for_message = matches!(parked.host.pending, PendingCall::Recv { .. });
    let current = |parked: &Snapshot| {
        let mut snapshot = parked.clone();
        snapshot.host.monotonic += parked_at.elapsed();
        snapshot.host.inbox = control.inbox_snapshot();
        snapshot
    };
    loop {
        if control.stop_requested() {
            return Err(Outcome::Stopped);
        }
        if control.capture_requested() {
            let captured = current(&parked);
            let requests = control.take_capture_requests();
            let ending = runtime::capture_outcome(&requests);
            for request in requests {
                // A parked function has no instance to track changes in:
                // a request for changes gets every non-zero chunk.
                let answer =
                    match request.memory {
                        MemoryWanted::Whole => Ok(captured.clone()),
                        MemoryWanted::Changes { chunk_size, .. } => captured
                            .memory
                            .clone()
                            .into_changes(chunk_size)
                            .map(|changes| Snapshot {
                                memory: SnapshotMemory::Changes(changes),
                                ..captured.clone()
                            }),
                    };
                let _ = request.reply.send(answer.map(Arc::new));
            }
            if let Some(outcome) = ending {
                return Err(outcome);
            }
            continue;
        }
        let deadline_passed = deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline);
        if deadline_passed || (waiting_for_message && control.has_message()) {
            let mut continued = current(&parked);
            // The inbox lives on in the control block; the snapshot's copy is
            // only for checkpoints.
            continued.host.inbox.clear();
            return Ok(Arc::new(continued));
        }
        match deadline {
            Some(deadline) => {
                tokio::select! {
                    () = control.changed() => {}
                    () = tokio::time::sleep_until(deadline) => {}
                }
            }
            None => control.changed().await,
        }
    }
}
