//! State shared between a running function's thread and the rest of the hub:
//! its inbox, the stop request, and live counters.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::effects::EffectGate;
use super::snapshot::Snapshot;

/// How many messages may wait in one inbox before senders are refused.
pub const INBOX_CAPACITY: usize = 1024;

/// Bytes of message data one inbox holds at most, besides the first message
/// (which is always taken, whatever its size): a message that would bring a
/// non-empty inbox past this is refused like one past [`INBOX_CAPACITY`], so
/// a guest sending one buffer again and again cannot multiply it in the hub.
pub const INBOX_BYTES: usize = 16 << 20;

/// What a caller waiting for a reply gets: the reply, or word that its
/// message was taken back before the function saw it (the function is
/// moving: send it again where the function goes on).
pub type Answer = Result<Vec<u8>, Withdrawn>;

/// The reply channel of one invocation.
pub type ReplyTo = oneshot::Sender<Answer>;

/// A message with a caller was taken out of the inbox before the function
/// read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Withdrawn;

/// How long a busy function waits on its CPU for its next message before
/// it sleeps ([`FunctionControl::wait_for_message`]).
const MESSAGE_SPIN: Duration = Duration::from_micros(200);
/// A function is busy when it took a message at most this long ago.
const BUSY_WITHIN: Duration = Duration::from_millis(5);

/// Where the reply to the invocation a function is handling goes.
#[derive(Debug)]
pub enum Caller {
    /// A waiter on this hub.
    Here(ReplyTo),
    /// A waiter kept on a hub (perhaps this one) while the function was
    /// moved or suspended: the reply travels there.
    Away(ReplyAddress),
}

/// An invocation kept waiting on a hub for the reply of a function that
/// was moved or suspended while handling it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyAddress {
    /// The hub the waiter is on.
    pub hub_id: String,
    /// Its number there (random: never one of an earlier run of that hub).
    pub invocation: u64,
}

/// A message waiting in a function's inbox.
#[derive(Debug)]
pub struct Message {
    pub data: Vec<u8>,
    /// Where the reply goes; `None` for fire-and-forget messages.
    pub reply_to: Option<ReplyTo>,
}

/// Why a blocking wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The condition became true.
    Ready,
    /// The deadline passed first.
    TimedOut,
    /// The hub asked the function to stop.
    Stop,
    /// The hub asked for a capture: unwind and come back later.
    Capture,
}

/// What happens to a function after it was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureKind {
    /// Rewind at once and go on (a checkpoint).
    Continue,
    /// End the run (suspend: the snapshot is all that remains).
    Stop,
    /// End the run for a move to another hub: the record stays as it is, and
    /// the hub either hands the snapshot over or continues from it.
    Pause,
}

/// How a run ends after answering `requests` (`None`: it goes on).
pub fn capture_outcome(requests: &[CaptureRequest]) -> Option<super::Outcome> {
    if requests.iter().any(|request| request.kind == CaptureKind::Pause) {
        Some(super::Outcome::Paused)
    } else if requests.iter().any(|request| request.kind == CaptureKind::Stop) {
        Some(super::Outcome::Suspended)
    } else {
        None
    }
}

/// Answer to a capture request: the snapshot, or why there is none.
pub type CaptureResult = Result<Arc<Snapshot>, String>;

/// Which memory a capture copies out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MemoryWanted {
    /// All of it (a checkpoint, a suspend).
    Whole,
    /// The chunks changed since the previous capture for the same dirty
    /// set (every non-zero chunk at its first): a move's rounds.
    Changes { set: String, chunk_size: u32 },
}

/// A pending request to capture the function.
#[derive(Debug)]
pub struct CaptureRequest {
    pub kind: CaptureKind,
    pub memory: MemoryWanted,
    pub reply: oneshot::Sender<CaptureResult>,
}

#[derive(Debug, Default)]
struct Shared {
    inbox: VecDeque<Message>,
    /// Bytes of data in `inbox`.
    inbox_bytes: usize,
    captures: Vec<CaptureRequest>,
    /// When the function last took a message from the inbox.
    last_take: Option<Instant>,
    /// Dirty sets whose consumer is done, dropped at the next capture.
    forgotten_sets: Vec<String>,
    /// Dirty sets (and their chunk sizes) whose consumer holds the memory
    /// the run is restored from: started clean at the restore.
    clean_sets: Vec<(String, u32)>,
    /// Volume views to start from another consumer's, `(from, to)`, at
    /// the next capture.
    shared_views: Vec<(String, String)>,
}

impl Shared {
    /// Whether a message of `bytes` fits: fewer than [`INBOX_CAPACITY`]
    /// messages and, unless the inbox is empty, [`INBOX_BYTES`] with it.
    fn has_room_for(&self, bytes: usize) -> bool {
        let within_bytes = self.inbox.is_empty() || self.inbox_bytes + bytes <= INBOX_BYTES;
        self.inbox.len() < INBOX_CAPACITY && within_bytes
    }
}

/// One per running function instance.
#[derive(Debug, Default)]
pub struct FunctionControl {
    shared: Mutex<Shared>,
    changed: Condvar,
    /// Wakes the async waiter of a parked function.
    parked_wakeup: tokio::sync::Notify,
    stop: AtomicBool,
    capture: AtomicBool,
    cpu_micros: AtomicU64,
    /// The CPU a move holds the function to while it converges, in
    /// thousandths of a core (0: none).
    move_cap_millicores: AtomicU64,
    /// Time the run was runnable but did not run (throttled, or waiting for a core).
    demand_micros: AtomicU64,
    memory_bytes: AtomicU64,
    /// Set once the first instance of this run exists (restored, if from a snapshot).
    instantiated: AtomicBool,
    instantiated_wakeup: tokio::sync::Notify,
    /// Held while an arriving function runs before its move is committed.
    effects: EffectGate,
}

impl FunctionControl {
    /// Asks the function to unwind at its next preemption point or blocking
    /// call so it can be captured; the receiver gets the snapshot.
    pub fn request_capture(&self, kind: CaptureKind, memory: MemoryWanted) -> oneshot::Receiver<CaptureResult> {
        let (reply, receiver) = oneshot::channel();
        let mut shared = self.lock();
        shared.captures.push(CaptureRequest { kind, memory, reply });
        self.capture.store(true, Ordering::SeqCst);
        self.changed.notify_all();
        self.parked_wakeup.notify_one();
        receiver
    }

    pub fn capture_requested(&self) -> bool {
        self.capture.load(Ordering::Relaxed)
    }

    /// Whether every pending capture request continues the run (only
    /// checkpoints: no suspend, stop or move among them).
    pub fn captures_all_continue(&self) -> bool {
        self.lock()
            .captures
            .iter()
            .all(|request| request.kind == CaptureKind::Continue)
    }

    /// Takes every pending capture request (and clears the flag).
    pub fn take_capture_requests(&self) -> Vec<CaptureRequest> {
        let mut shared = self.lock();
        self.capture.store(false, Ordering::SeqCst);
        std::mem::take(&mut shared.captures)
    }

    /// The consumer of dirty set `set` is done with it.
    pub fn forget_dirty_set(&self, set: &str) {
        self.lock().forgotten_sets.push(set.to_owned());
    }

    /// Starts the dirty set `set` clean when the run restores its memory
    /// (its consumer holds that memory already: the checkpoint it is
    /// restored from). Must be asked before the run instantiates.
    pub fn start_clean_after_restore(&self, set: &str, chunk_size: u32) {
        self.lock().clean_sets.push((set.to_owned(), chunk_size));
    }

    /// Dirty sets to start clean after the restore (taken once).
    pub fn take_clean_sets(&self) -> Vec<(String, u32)> {
        std::mem::take(&mut self.lock().clean_sets)
    }

    /// Dirty sets to drop (taken once).
    pub fn take_forgotten_sets(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().forgotten_sets)
    }

    /// Starts the volume's view for consumer `to` at the next capture from
    /// consumer `from`'s (its files as `from`'s previous capture found
    /// them, and the changes since): `to`'s first capture reads only those
    /// changes. Its memory set starts complete, as always.
    pub fn share_volume_view(&self, from: &str, to: &str) {
        self.lock().shared_views.push((from.to_owned(), to.to_owned()));
    }

    /// Volume views to share (taken once).
    pub fn take_shared_views(&self) -> Vec<(String, String)> {
        std::mem::take(&mut self.lock().shared_views)
    }

    /// Copies of the queued messages, for a snapshot.
    pub fn inbox_snapshot(&self) -> Vec<Vec<u8>> {
        self.lock().inbox.iter().map(|message| message.data.clone()).collect()
    }

    /// Asks the function to stop at its next preemption point or blocking call.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.effects.cancel();
        let _guard = self.lock();
        self.changed.notify_all();
        self.parked_wakeup.notify_one();
    }

    /// Whether the function's effects may happen now (see [`EffectGate`]).
    pub fn effects(&self) -> &EffectGate {
        &self.effects
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Queues a message; gives it back with the number of queued messages
    /// when the inbox is full ([`INBOX_CAPACITY`] messages or [`INBOX_BYTES`]).
    pub fn deliver(&self, message: Message) -> Result<(), (Message, usize)> {
        let mut shared = self.lock();
        if !shared.has_room_for(message.data.len()) {
            return Err((message, shared.inbox.len()));
        }
        self.enqueue(&mut shared, message);
        Ok(())
    }

    /// Queues a fire-and-forget message holding a copy of `data`, made only
    /// if the inbox takes it; else gives back the number of queued messages.
    pub fn deliver_copy(&self, data: &[u8]) -> Result<(), usize> {
        let mut shared = self.lock();
        if !shared.has_room_for(data.len()) {
            return Err(shared.inbox.len());
        }
        let message = Message {
            data: data.to_vec(),
            reply_to: None,
        };
        self.enqueue(&mut shared, message);
        Ok(())
    }

    fn enqueue(&self, shared: &mut Shared, message: Message) {
        shared.inbox_bytes += message.data.len();
        shared.inbox.push_back(message);
        self.changed.notify_all();
        self.parked_wakeup.notify_one();
    }

    /// Waits until the inbox is not empty, `deadline` passes (never when
    /// `None`), or a stop is requested.
    pub fn wait_for_message(&self, deadline: Option<Instant>) -> Wake {
        self.wait(deadline, |shared| !shared.inbox.is_empty())
    }

    /// A function that has just answered a message often gets the next one
    /// within a round trip of its caller: waiting for it a little on the
    /// CPU (yielding it to any other thread that is ready) spares a sleep
    /// and a wake-up, which cost tens of µs each on a virtual machine. Only
    /// a function that took a message within [`BUSY_WITHIN`] spins, for at
    /// most [`MESSAGE_SPIN`]: an idle function sleeps at once. Returns the
    /// CPU time the spin took, which is the hub's, not the function's.
    pub fn spin_for_message(&self, deadline: Option<Instant>) -> Duration {
        let busy = self.lock().last_take.is_some_and(|at| at.elapsed() < BUSY_WITHIN);
        if !busy {
            return Duration::ZERO;
        }
        let cpu_before = cpu_time::ThreadTime::now();
        let until = Instant::now() + MESSAGE_SPIN;
        let until = deadline.map_or(until, |deadline| deadline.min(until));
        while Instant::now() < until {
            if self.stop_requested() || self.capture_requested() {
                break;
            }
            if let Ok(shared) = self.shared.try_lock()
                && !shared.inbox.is_empty()
            {
                break;
            }
            std::thread::yield_now();
        }
        cpu_before.elapsed()
    }

    /// Waits until `deadline` passes or a stop is requested.
    pub fn sleep_until(&self, deadline: Instant) -> Wake {
        match self.wait(Some(deadline), |_| false) {
            Wake::Ready | Wake::TimedOut => Wake::TimedOut,
            other => other,
        }
    }

    /// Waits, holding no thread, until something may have changed for a
    /// parked function: a message, a stop or a capture request.
    pub async fn changed(&self) {
        self.parked_wakeup.notified().await;
    }

    pub fn has_message(&self) -> bool {
        !self.lock().inbox.is_empty()
    }

    /// Length of the first message, if any.
    pub fn peek_message_len(&self) -> Option<usize> {
        self.lock().inbox.front().map(|message| message.data.len())
    }

    pub fn take_message(&self) -> Option<Message> {
        let mut shared = self.lock();
        let message = shared.inbox.pop_front()?;
        shared.inbox_bytes -= message.data.len();
        shared.last_take = Some(Instant::now());
        Some(message)
    }

    /// Takes every queued message that has a caller out of the inbox and
    /// tells each caller so; fire-and-forget messages stay. A function
    /// paused for a move calls this before its last capture: a reply
    /// channel cannot travel, so an invocation is sent again where the
    /// function goes on rather than answered by nobody there.
    pub fn withdraw_invocations(&self) -> usize {
        let mut shared = self.lock();
        let (callers, others): (VecDeque<Message>, VecDeque<Message>) =
            shared.inbox.drain(..).partition(|message| message.reply_to.is_some());
        shared.inbox = others;
        shared.inbox_bytes = shared.inbox.iter().map(|message| message.data.len()).sum();
        drop(shared);
        let withdrawn = callers.len();
        for message in callers {
            if let Some(caller) = message.reply_to {
                let _ = caller.send(Err(Withdrawn));
            }
        }
        withdrawn
    }

    /// Drops every queued message; their senders see the reply channel close.
    pub fn drain_inbox(&self) -> usize {
        let mut shared = self.lock();
        let drained = shared.inbox.len();
        shared.inbox.clear();
        shared.inbox_bytes = 0;
        drained
    }

    /// The run's first instance exists (restored, when it started from a
    /// snapshot): whoever waits for the function to be running again may
    /// go on. A run whose instance could not be made never says so; it
    /// ends instead.
    pub fn mark_instantiated(&self) {
        self.instantiated.store(true, Ordering::SeqCst);
        self.instantiated_wakeup.notify_waiters();
    }

    /// Whether [`FunctionControl::mark_instantiated`] was called.
    pub fn was_instantiated(&self) -> bool {
        self.instantiated.load(Ordering::SeqCst)
    }

    /// Waits until [`FunctionControl::mark_instantiated`].
    pub async fn instantiated(&self) {
        let notified = self.instantiated_wakeup.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.instantiated.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }

    pub fn set_cpu_micros(&self, micros: u64) {
        self.cpu_micros.store(micros, Ordering::Relaxed);
    }

    pub fn cpu_micros(&self) -> u64 {
        self.cpu_micros.load(Ordering::Relaxed)
    }

    /// Holds the function to `cores` while a move converges (`None`: lifts it).
    pub fn set_move_cap(&self, cores: Option<f64>) {
        let millicores = cores.map_or(0, |cores| ((cores * 1000.0).round() as u64).max(1));
        self.move_cap_millicores.store(millicores, Ordering::Relaxed);
    }

    /// What [`set_move_cap`](Self::set_move_cap) set.
    pub fn move_cap(&self) -> Option<f64> {
        match self.move_cap_millicores.load(Ordering::Relaxed) {
            0 => None,
            millicores => Some(millicores as f64 / 1000.0),
        }
    }

    /// Adds time the run was runnable but did not run.
    pub fn add_demand(&self, waited: Duration) {
        if !waited.is_zero() {
            let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
            self.demand_micros.fetch_add(micros, Ordering::Relaxed);
        }
    }

    /// Time this run was runnable but did not run, so far.
    pub fn demand_micros(&self) -> u64 {
        self.demand_micros.load(Ordering::Relaxed)
    }

    pub fn set_memory_bytes(&self, bytes: u64) {
        self.memory_bytes.store(bytes, Ordering::Relaxed);
    }

    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes.load(Ordering::Relaxed)
    }

    fn wait(&self, deadline: Option<Instant>, ready: impl Fn(&Shared) -> bool) -> Wake {
        let mut shared = self.lock();
        loop {
            if self.stop_requested() {
                return Wake::Stop;
            }
            if self.capture_requested() {
                return Wake::Capture;
            }
            if ready(&shared) {
                return Wake::Ready;
            }
            shared = match deadline {
                None => self
                    .changed
                    .wait(shared)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Wake::TimedOut;
                    }
                    self.changed
                        .wait_timeout(shared, deadline - now)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
            };
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn message(data: &[u8]) -> Message {
        Message {
            data: data.to_vec(),
            reply_to: None,
        }
    }

    #[test]
    fn an_idle_function_never_spins_for_its_next_message() {
        let control = FunctionControl::default();
        assert_eq!(control.spin_for_message(None), Duration::ZERO);
        control.deliver(message(b"old")).unwrap();
        control.take_message().unwrap();
        // Busy now: it spins, and a message that comes meanwhile ends it.
        let control = Arc::new(control);
        let sender = {
            let control = Arc::clone(&control);
            std::thread::spawn(move || control.deliver(message(b"next")).unwrap())
        };
        control.spin_for_message(None);
        sender.join().unwrap();
        assert_eq!(control.wait_for_message(None), Wake::Ready);
        assert_eq!(control.take_message().unwrap().data, b"next");
    }

    #[test]
    fn waiting_for_a_message_returns_when_one_is_delivered_from_another_thread() {
        let control = Arc::new(FunctionControl::default());
        let sender = Arc::clone(&control);
        let thread = std::thread::spawn(move || sender.deliver(message(b"hi")).unwrap());
        assert_eq!(control.wait_for_message(None), Wake::Ready);
        thread.join().unwrap();
        assert_eq!(control.take_message().unwrap().data, b"hi");
    }

    #[test]
    fn a_stop_request_interrupts_a_sleep() {
        let control = Arc::new(FunctionControl::default());
        let stopper = Arc::clone(&control);
        let thread = std::thread::spawn(move || stopper.request_stop());
        let far = Instant::now() + Duration::from_secs(3600);
        assert_eq!(control.sleep_until(far), Wake::Stop);
        thread.join().unwrap();
    }

    #[test]
    fn a_wait_with_a_past_deadline_times_out() {
        let control = FunctionControl::default();
        assert_eq!(control.wait_for_message(Some(Instant::now())), Wake::TimedOut);
    }

    #[test]
    fn only_checkpoints_pending_is_what_lets_a_capture_wait() {
        let control = FunctionControl::default();
        let _checkpoint = control.request_capture(CaptureKind::Continue, MemoryWanted::Whole);
        assert!(control.captures_all_continue());
        let _suspend = control.request_capture(CaptureKind::Stop, MemoryWanted::Whole);
        assert!(!control.captures_all_continue());
    }

    #[test]
    fn a_capture_request_interrupts_a_wait_and_is_taken_once() {
        let control = Arc::new(FunctionControl::default());
        let requester = Arc::clone(&control);
        let thread = std::thread::spawn(move || requester.request_capture(CaptureKind::Continue, MemoryWanted::Whole));
        assert_eq!(control.wait_for_message(None), Wake::Capture);
        let _receiver = thread.join().unwrap();
        assert_eq!(control.take_capture_requests().len(), 1);
        assert!(!control.capture_requested());
        assert!(control.take_capture_requests().is_empty());
    }

    #[test]
    fn withdrawing_invocations_tells_their_callers_and_keeps_messages_without_one() {
        let control = FunctionControl::default();
        let (caller, answer) = oneshot::channel();
        control
            .deliver(Message {
                data: b"call".to_vec(),
                reply_to: Some(caller),
            })
            .unwrap();
        control
            .deliver(Message {
                data: b"note".to_vec(),
                reply_to: None,
            })
            .unwrap();
        assert_eq!(control.withdraw_invocations(), 1);
        assert_eq!(answer.blocking_recv().unwrap(), Err(Withdrawn));
        assert_eq!(control.inbox_snapshot(), vec![b"note".to_vec()]);
        assert_eq!(control.peek_message_len(), Some(4));
    }

    #[test]
    fn a_full_inbox_gives_the_message_back() {
        let control = FunctionControl::default();
        for _ in 0..INBOX_CAPACITY {
            control.deliver(message(b"x")).unwrap();
        }
        let (returned, queued) = control.deliver(message(b"overflow")).unwrap_err();
        assert_eq!(returned.data, b"overflow");
        assert_eq!(queued, INBOX_CAPACITY);
        assert_eq!(control.drain_inbox(), INBOX_CAPACITY);
    }

    #[test]
    fn an_inbox_holding_its_byte_budget_refuses_more_and_takes_again_once_read() {
        let control = FunctionControl::default();
        let big = vec![7u8; INBOX_BYTES / 2];
        control.deliver(message(&big)).unwrap();
        control.deliver(message(&big)).unwrap();
        let (returned, queued) = control.deliver(message(b"one byte more")).unwrap_err();
        assert_eq!((returned.data.as_slice(), queued), (&b"one byte more"[..], 2));
        control.take_message().unwrap();
        control.deliver(message(b"one byte more")).unwrap();
        assert_eq!(control.drain_inbox(), 2);
        control.deliver(message(&big)).unwrap();
    }

    #[test]
    fn a_copy_is_delivered_only_where_there_is_room() {
        let control = FunctionControl::default();
        control.deliver_copy(&vec![3u8; INBOX_BYTES]).unwrap();
        assert_eq!(control.deliver_copy(b"x"), Err(1));
        assert_eq!(control.take_message().unwrap().data, vec![3u8; INBOX_BYTES]);
        control.deliver_copy(b"x").unwrap();
        assert!(control.take_message().unwrap().reply_to.is_none());
    }

    #[test]
    fn an_empty_inbox_takes_one_message_larger_than_the_byte_budget() {
        let control = FunctionControl::default();
        control.deliver(message(&vec![1u8; INBOX_BYTES + 1])).unwrap();
        assert!(control.deliver(message(b"x")).is_err());
        assert_eq!(control.take_message().unwrap().data.len(), INBOX_BYTES + 1);
        control.deliver(message(b"x")).unwrap();
    }
}
