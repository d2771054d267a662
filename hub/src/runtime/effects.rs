//! Holding back a function's effects: an arriving function may run before
//! its move is committed, as long as nothing it does can be seen outside
//! it. The gate lives in the function's control; every host service with
//! an effect — output, messages sent, replies, waiters kept — passes it
//! ([`HeldServices`]). While it is held, output is kept in order (up to
//! [`DEFERRED_BYTES`]) and the guest goes on; anything else — and output
//! past that — makes the guest's thread wait there. When the move commits
//! the kept output goes out, in order, and the gate opens; when the move is
//! given up the guest is stopped, the kept output dropped, and every waiter
//! let through with nothing done. Once the move is committed
//! ([`EffectGate::commit`]) what the run kept is the function's own: a stop
//! from then on no longer drops it, and the release still writes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ferry_proto::v1::LogStream;

use super::control::{FunctionControl, ReplyAddress, ReplyTo};
use super::guest::{Delivery, HostServices, Sent, Undelivered};

/// Output bytes a held run may write before it waits for the gate.
pub const DEFERRED_BYTES: usize = 1 << 20;

/// An effect kept until the gate opens.
type Deferred = Box<dyn FnOnce() + Send>;

/// Whether a function's effects may happen now.
#[derive(Debug, Default)]
pub struct EffectGate {
    /// Fast path: false whenever effects go straight through.
    held: AtomicBool,
    state: Mutex<GateState>,
    opened: Condvar,
}

#[derive(Default)]
struct GateState {
    held: bool,
    /// The run is being stopped: waiters give up.
    cancelled: bool,
    /// The move is committed: the run is the function's, and what it kept
    /// goes out at the release even if it is stopped before.
    committed: bool,
    /// When each thread waiting here began to wait.
    waiting: Vec<Instant>,
    /// Effects kept in their order, and the bytes they carry.
    deferred: Vec<Deferred>,
    deferred_bytes: usize,
}

impl std::fmt::Debug for GateState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GateState")
            .field("held", &self.held)
            .field("cancelled", &self.cancelled)
            .field("committed", &self.committed)
            .field("deferred", &self.deferred.len())
            .finish_non_exhaustive()
    }
}

impl EffectGate {
    /// From now on every effect is kept or waits until [`EffectGate::release`].
    pub fn hold(&self) {
        let mut state = self.lock();
        state.held = true;
        self.held.store(true, Ordering::SeqCst);
    }

    /// The move this run arrived by is committed: from now on a stop keeps
    /// what it kept for the release (which the commit always makes).
    pub fn commit(&self) {
        self.lock().committed = true;
    }

    /// Whether effects are held now.
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// Lets the kept effects out, in order, then every other; returns how
    /// long the effects waiting now have waited (the first of them, if
    /// several threads wait). Nothing passes before the kept effects are out.
    /// A run stopped before its commit keeps its gate shut: what it does
    /// on its way out is never seen.
    pub fn release(&self) -> Duration {
        let mut state = self.lock();
        if state.cancelled && !state.committed {
            return Duration::ZERO;
        }
        for effect in std::mem::take(&mut state.deferred) {
            effect();
        }
        state.deferred_bytes = 0;
        state.held = false;
        self.held.store(false, Ordering::SeqCst);
        self.opened.notify_all();
        state.waiting.iter().min().map_or(Duration::ZERO, Instant::elapsed)
    }

    /// Wakes every waiter and makes them give up (the run is stopped).
    /// Before the commit what was kept is dropped; after it, it waits for
    /// the release.
    pub fn cancel(&self) {
        let mut state = self.lock();
        state.cancelled = true;
        if !state.committed {
            state.deferred.clear();
        }
        self.opened.notify_all();
    }

    /// Waits until what the run kept is out, or will never be: the gate
    /// opened, or the run was stopped before its commit.
    pub fn wait_kept_out(&self) {
        if !self.held.load(Ordering::Acquire) {
            return;
        }
        drop(self.wait_while(self.lock(), |state| state.held && (state.committed || !state.cancelled)));
    }

    /// Waits on the gate's condition variable while `waiting` holds.
    fn wait_while<'a>(
        &'a self,
        state: std::sync::MutexGuard<'a, GateState>,
        mut waiting: impl FnMut(&GateState) -> bool,
    ) -> std::sync::MutexGuard<'a, GateState> {
        self.opened
            .wait_while(state, |state| waiting(state))
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `effect` (of `bytes`) until the gate opens, if it is held and
    /// has room; else does it now, after waiting like [`EffectGate::pass`]
    /// when held. A stopped run's effect is dropped.
    pub fn defer(&self, bytes: usize, effect: impl FnOnce() + Send + 'static) {
        {
            let mut state = self.lock();
            if state.held && state.cancelled && !state.committed {
                return;
            }
            if !state.held {
                drop(state);
                effect();
                return;
            }
            if state.deferred_bytes + bytes <= DEFERRED_BYTES {
                state.deferred_bytes += bytes;
                state.deferred.push(Box::new(effect));
                return;
            }
        }
        if self.pass() {
            effect();
        }
    }

    /// Waits while the gate is held. True: the effect may happen; false:
    /// the run is being stopped and the effect must not happen.
    pub fn pass(&self) -> bool {
        if !self.held.load(Ordering::Acquire) {
            return true;
        }
        let began = Instant::now();
        let mut state = self.lock();
        state.waiting.push(began);
        let mut state = self.wait_while(state, |state| state.held && !state.cancelled);
        if let Some(at) = state.waiting.iter().position(|waiting| *waiting == began) {
            state.waiting.swap_remove(at);
        }
        // Stopped while it waited: what was held is never let out, even if
        // the gate was opened meanwhile.
        !state.held && !state.cancelled
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The hub's services as a function whose effects may be held sees them.
pub struct HeldServices {
    pub inner: Arc<dyn HostServices>,
    pub control: Arc<FunctionControl>,
}

impl HeldServices {
    fn pass(&self) -> bool {
        self.control.effects().pass()
    }
}

impl HostServices for HeldServices {
    fn output(&self, function: &str, stream: LogStream, data: &[u8]) {
        let gate = self.control.effects();
        if !gate.is_held() {
            return self.inner.output(function, stream, data);
        }
        // Kept, not waited for: the function goes on computing.
        let (inner, function, data) = (Arc::clone(&self.inner), function.to_owned(), data.to_vec());
        gate.defer(data.len(), move || inner.output(&function, stream, &data));
    }

    fn send(&self, from: &str, to: &str, data: &[u8]) -> Delivery {
        if !self.pass() {
            return Delivery::Done(Err(Undelivered::Failed));
        }
        self.inner.send(from, to, data)
    }

    fn call(&self, from: &str, to: &str, data: Vec<u8>, timeout: Option<Duration>) -> Delivery {
        if !self.pass() {
            return Delivery::Done(Err(Undelivered::Failed));
        }
        self.inner.call(from, to, data, timeout)
    }

    /// A checkpoint taken while output is kept must not point before it:
    /// restored, the function would not write it again, and the log would
    /// lose it. So the position waits for the kept output to be written
    /// (at the commit's release, even if the run was stopped after the
    /// commit) or dropped (a stop before the commit drops the run too).
    fn log_position(&self, function: &str) -> u64 {
        self.control.effects().wait_kept_out();
        self.inner.log_position(function)
    }

    fn keep_reply(&self, function: &str, reply_to: ReplyTo) -> Option<ReplyAddress> {
        if !self.pass() {
            return None;
        }
        self.inner.keep_reply(function, reply_to)
    }

    fn reply_away(&self, function: &str, to: ReplyAddress, data: Vec<u8>) {
        if self.pass() {
            self.inner.reply_away(function, to, data);
        }
    }

    fn keep_outcome(&self, function: &str, outcome: std::sync::mpsc::Receiver<Sent>) -> Option<ReplyAddress> {
        if !self.pass() {
            return None;
        }
        self.inner.keep_outcome(function, outcome)
    }

    fn take_outcome(&self, function: &str, kept: ReplyAddress) -> Delivery {
        if !self.pass() {
            return Delivery::Done(Err(Undelivered::Failed));
        }
        self.inner.take_outcome(function, kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::testing::RecordingServices;

    fn held() -> (Arc<FunctionControl>, Arc<RecordingServices>, Arc<HeldServices>) {
        let control = Arc::new(FunctionControl::default());
        let recording = Arc::new(RecordingServices::default());
        let services = Arc::new(HeldServices {
            inner: Arc::clone(&recording) as Arc<dyn HostServices>,
            control: Arc::clone(&control),
        });
        (control, recording, services)
    }

    #[test]
    fn output_goes_straight_through_an_open_gate() {
        let (_control, recording, services) = held();
        services.output("f", LogStream::Stdout, b"line\n");
        assert_eq!(recording.output.lock().unwrap().len(), 1);
    }

    #[test]
    fn output_is_kept_in_order_while_held_and_goes_out_before_anything_after() {
        let (control, recording, services) = held();
        control.effects().hold();
        services.output("f", LogStream::Stdout, b"a\n");
        services.output("f", LogStream::Stderr, b"b\n");
        assert!(
            recording.output.lock().unwrap().is_empty(),
            "nothing may be seen while held"
        );
        control.effects().release();
        services.output("f", LogStream::Stdout, b"c\n");
        let lines: Vec<Vec<u8>> = recording
            .output
            .lock()
            .unwrap()
            .iter()
            .map(|(_, data)| data.clone())
            .collect();
        assert_eq!(lines, [b"a\n".to_vec(), b"b\n".to_vec(), b"c\n".to_vec()]);
    }

    #[test]
    fn a_message_waits_while_the_gate_is_held_and_goes_once_it_opens() {
        let (control, recording, services) = held();
        control.effects().hold();
        let sender = std::thread::spawn(move || services.send("f", "peer", b"hello"));
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            recording.sent.lock().unwrap().is_empty(),
            "nothing may be seen while held"
        );
        let waited = control.effects().release();
        assert!(matches!(sender.join().unwrap(), Delivery::Done(Ok(_))));
        assert_eq!(recording.sent.lock().unwrap().len(), 1);
        assert!(waited >= Duration::from_millis(40), "waited {waited:?}");
    }

    #[test]
    fn output_past_the_kept_limit_waits_for_the_gate() {
        let (control, recording, services) = held();
        control.effects().hold();
        let writer = std::thread::spawn(move || {
            services.output("f", LogStream::Stdout, &vec![b'x'; DEFERRED_BYTES]);
            services.output("f", LogStream::Stdout, b"one more\n");
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!writer.is_finished(), "the second line waits");
        let waited = control.effects().release();
        writer.join().unwrap();
        assert_eq!(recording.output.lock().unwrap().len(), 2);
        assert!(waited >= Duration::from_millis(40), "waited {waited:?}");
    }

    /// A held run kept one line; `before_asking` runs, then its log
    /// position is asked on another thread: it must wait for the release,
    /// and count the line.
    fn position_waits_for_the_release_and_counts_the_kept_line(before_asking: impl FnOnce(&FunctionControl)) {
        let (control, recording, services) = held();
        control.effects().hold();
        services.output("f", LogStream::Stdout, b"round 12\n");
        before_asking(&control);
        let position = std::thread::spawn(move || services.log_position("f"));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!position.is_finished(), "the position waits for the release");
        control.effects().release();
        assert_eq!(position.join().unwrap(), 1, "the kept line is before the position");
        assert_eq!(recording.output.lock().unwrap().len(), 1);
    }

    #[test]
    fn the_log_position_of_a_held_run_counts_its_kept_output() {
        position_waits_for_the_release_and_counts_the_kept_line(|_| {});
    }

    #[test]
    fn a_stop_after_the_commit_keeps_the_output_for_the_release() {
        position_waits_for_the_release_and_counts_the_kept_line(|control| {
            control.effects().commit();
            control.request_stop();
        });
    }

    #[test]
    fn a_stop_while_held_lets_the_guest_go_with_nothing_done() {
        let (control, recording, services) = held();
        control.effects().hold();
        let sender = std::thread::spawn(move || {
            let sent = services.send("f", "peer", b"hello");
            services.output("f", LogStream::Stdout, b"line\n");
            sent
        });
        std::thread::sleep(Duration::from_millis(20));
        control.request_stop();
        control.effects().release();
        let sent = sender.join().unwrap();
        assert!(matches!(sent, Delivery::Done(Err(Undelivered::Failed))));
        assert_eq!(recording.output.lock().unwrap().len(), 0);
        assert!(recording.sent.lock().unwrap().is_empty());
    }
}
