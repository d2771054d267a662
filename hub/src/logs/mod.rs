//! Guest output: every write is numbered, broadcast at once to whoever
//! follows the function's logs, and kept in the store (bounded) in batches.
//!
//! Writes are batched per function: an entry is numbered and sent to live
//! followers when it is written, and reaches the store with the entries
//! around it — when [`MAX_PENDING_ENTRIES`] or [`MAX_PENDING_BYTES`] are
//! pending, at the next [`FLUSH_INTERVAL`] tick, or before anything reads the
//! store (history, a follow, a checkpoint's log position, a move). Each
//! function has its own lock; the map of functions is locked only to find
//! one, never across store I/O.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_proto::v1::{LogEntry, LogStream};
use futures::{Stream, StreamExt, stream};
use tokio::sync::broadcast;

use crate::error::HubError;
use crate::store::{LOG_BYTES_KEPT, Store, StoreError};

/// Largest payload of one entry; longer writes are split.
const MAX_ENTRY_BYTES: usize = 64 << 10;
/// Entries a slow follower may lag behind before it is told it missed some.
const FOLLOW_BUFFER: usize = 4096;
/// A function's pending entries are stored once this many wait...
pub const MAX_PENDING_ENTRIES: usize = 64;
/// ...or once they hold this many bytes...
pub const MAX_PENDING_BYTES: usize = 256 << 10;
/// ...or at the latest this long after they were written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

struct FunctionLog {
    next_seq: u64,
    live: broadcast::Sender<LogEntry>,
    /// Numbered and sent to followers, not yet given to the store.
    pending: Vec<LogEntry>,
    pending_bytes: usize,
    /// Output that could not be stored and no stored note reports yet.
    unstored: Unstored,
    /// What the note in `pending` (if any) reports.
    noted: Option<Unstored>,
    /// All output that could not be stored, for `ps`.
    lost_total: Unstored,
    /// Bytes of the function's stored entries, once known (read from the
    /// store at the first flush, kept up to date by every flush after).
    stored_bytes: Option<u64>,
    /// Set once the function's log was removed or replaced: writers that
    /// still hold it must find the current one.
    retired: bool,
}

/// Output the store refused (a full disk): counted and reported, never
/// dropped silently. Its entries keep their sequence numbers, so the
/// stored history shows a gap where they were.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unstored {
    pub entries: u64,
    pub bytes: u64,
}

/// Stops the log flusher thread when told to (or when the log hub is gone).
#[derive(Debug)]
pub struct LogFlusher {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl LogFlusher {
    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Everything guests wrote, per function.
pub struct LogHub {
    store: Store,
    functions: Mutex<HashMap<String, Arc<Mutex<FunctionLog>>>>,
}

/// A function's history plus, when following, the live entries after it.
pub struct LogSubscription {
    pub history: Vec<LogEntry>,
    pub live: Option<broadcast::Receiver<LogEntry>>,
}

impl LogSubscription {
    /// The history, then every live entry after it, each once and in order;
    /// ends with [`HubError::LogFollowerLagged`] if the reader falls so far
    /// behind that entries were dropped.
    pub fn into_stream(self, name: String) -> impl Stream<Item = Result<LogEntry, HubError>> + Send + 'static {
        let last_seq = self.history.last().map(|entry| entry.seq);
        let history = stream::iter(self.history.into_iter().map(Ok));
        let live = stream::unfold((self.live, last_seq), move |(live, mut last_seq)| {
            let name = name.clone();
            async move {
                let mut live = live?;
                loop {
                    match live.recv().await {
                        Ok(entry) if last_seq.is_some_and(|last| entry.seq <= last) => {}
                        Ok(entry) => {
                            last_seq = Some(entry.seq);
                            return Some((Ok(entry), (Some(live), last_seq)));
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            let lagged = HubError::LogFollowerLagged { name, missed };
                            return Some((Err(lagged), (None, last_seq)));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        history.chain(live)
    }
}

pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or_default()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LogHub {
    pub fn new(store: Store) -> LogHub {
        LogHub {
            store,
            functions: Mutex::new(HashMap::new()),
        }
    }

    /// The log of `name`, created (numbered after what the store holds) on
    /// first use. The store is read outside the map's lock.
    fn log_of(&self, name: &str) -> Result<Arc<Mutex<FunctionLog>>, StoreError> {
        if let Some(log) = lock(&self.functions).get(name) {
            return Ok(Arc::clone(log));
        }
        let next_seq = self.store.next_log_seq(name)?;
        let (live, _) = broadcast::channel(FOLLOW_BUFFER);
        let fresh = Arc::new(Mutex::new(FunctionLog {
            next_seq,
            live,
            pending: Vec::new(),
            pending_bytes: 0,
            unstored: Unstored::default(),
            noted: None,
            lost_total: Unstored::default(),
            stored_bytes: None,
            retired: false,
        }));
        Ok(Arc::clone(
            lock(&self.functions).entry(name.to_owned()).or_insert(fresh),
        ))
    }

    /// Runs `f` on the current log of `name`, holding only that log's lock.
    fn with_log<R>(&self, name: &str, mut f: impl FnMut(&mut FunctionLog) -> R) -> Result<R, StoreError> {
        loop {
            let log = self.log_of(name)?;
            let mut log = lock(&log);
            if !log.retired {
                return Ok(f(&mut log));
            }
        }
    }

    /// Records output of `name`. A store failure is never passed to the
    /// guest: the output still reaches live followers, is counted as
    /// unstored, and once the store takes entries again an entry in the log
    /// says how much is missing.
    pub fn append(&self, name: &str, stream: LogStream, data: &[u8]) {
        let result = self.with_log(name, |log| {
            for piece in data.chunks(MAX_ENTRY_BYTES) {
                if log.unstored.entries > 0 && log.noted.is_none() {
                    let missing = log.unstored;
                    let note = format!(
                        "{} output entries ({} bytes) before this line could not be stored (the disk was full or failing)\n",
                        missing.entries, missing.bytes
                    );
                    push_entry(log, LogStream::Hub, note.as_bytes());
                    log.noted = Some(missing);
                }
                push_entry(log, stream, piece);
            }
            if log.pending.len() >= MAX_PENDING_ENTRIES || log.pending_bytes >= MAX_PENDING_BYTES {
                self.flush_log(name, log);
            }
        });
        if let Err(error) = result {
            tracing::warn!(function = %name, %error, "could not record guest output");
        }
    }

    /// Gives the pending entries of one function to the store in one batch.
    fn flush_log(&self, name: &str, log: &mut FunctionLog) {
        if log.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut log.pending);
        let bytes = std::mem::take(&mut log.pending_bytes) as u64;
        let noted = log.noted.take();
        match self.store.append_logs(name, &batch) {
            Ok(appended) => {
                log.stored_bytes = self.keep_within_budget(name, log.stored_bytes, appended);
                if let Some(noted) = noted {
                    tracing::info!(function = %name, entries = noted.entries, bytes = noted.bytes, "guest output is stored again");
                    log.unstored.entries -= noted.entries;
                    log.unstored.bytes -= noted.bytes;
                }
            }
            Err(error) => {
                if log.unstored.entries == 0 {
                    tracing::warn!(function = %name, %error, "cannot store guest output; counting what is lost");
                }
                let lost = Unstored {
                    entries: batch.len() as u64,
                    bytes,
                };
                for total in [&mut log.unstored, &mut log.lost_total] {
                    total.entries += lost.entries;
                    total.bytes += lost.bytes;
                }
            }
        }
    }

    /// The stored bytes of `name` after an append, with its oldest entries
    /// dropped past [`LOG_BYTES_KEPT`]; `None` when the store could not say.
    fn keep_within_budget(&self, name: &str, known: Option<u64>, appended: crate::store::LogsAppended) -> Option<u64> {
        let bytes = match known {
            Some(bytes) => (bytes + appended.added_bytes).saturating_sub(appended.dropped_bytes),
            None => self.store.log_bytes(name).ok()?,
        };
        if bytes <= LOG_BYTES_KEPT {
            return Some(bytes);
        }
        match self.store.drop_oldest_logs(name, bytes - LOG_BYTES_KEPT) {
            Ok(freed) => Some(bytes - freed),
            Err(error) => {
                tracing::warn!(function = %name, %error, "cannot drop old output");
                None
            }
        }
    }

    /// Stores every function's pending output (the [`FLUSH_INTERVAL`] tick
    /// and shutdown).
    pub fn flush_all(&self) {
        let logs: Vec<(String, Arc<Mutex<FunctionLog>>)> = lock(&self.functions)
            .iter()
            .map(|(name, log)| (name.clone(), Arc::clone(log)))
            .collect();
        for (name, log) in logs {
            let mut log = lock(&log);
            if !log.retired {
                self.flush_log(&name, &mut log);
            }
        }
    }

    /// Stores pending output every [`FLUSH_INTERVAL`] on a thread of its
    /// own (never on the async runtime: a store write can block for as
    /// long as the disk is full), until the returned handle is stopped.
    pub fn spawn_flusher(self: &Arc<Self>) -> LogFlusher {
        let logs = Arc::downgrade(self);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("ferry-log-flush".to_owned())
            .spawn(move || {
                while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(FLUSH_INTERVAL);
                    match logs.upgrade() {
                        Some(logs) => logs.flush_all(),
                        None => return,
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the log flusher; output is stored when a batch fills or is read");
        }
        LogFlusher { stop }
    }

    /// Output of `name` the store could not take, since this hub started.
    pub fn unstored(&self, name: &str) -> Unstored {
        lock(&self.functions)
            .get(name)
            .map(|log| lock(log).lost_total)
            .unwrap_or_default()
    }

    /// The sequence number the next entry of `name` gets (0 if unknown).
    /// Everything before it has been given to the store: a checkpoint that
    /// records this position never points past unstored output.
    pub fn next_seq(&self, name: &str) -> u64 {
        self.with_log(name, |log| {
            self.flush_log(name, log);
            log.next_seq
        })
        .unwrap_or_else(|error| {
            tracing::warn!(function = %name, %error, "cannot read the log position");
            0
        })
    }

    /// A hub lifecycle event in the function's log.
    pub fn event(&self, name: &str, text: &str) {
        self.append(name, LogStream::Hub, format!("{text}\n").as_bytes());
    }

    /// History (last `tail` entries, all when 0) and, if `follow`, a receiver
    /// of every entry after it, without gap or overlap.
    pub fn subscribe(&self, name: &str, tail: usize, follow: bool) -> Result<LogSubscription, StoreError> {
        self.with_log(name, |log| {
            self.flush_log(name, log);
            let live = follow.then(|| log.live.subscribe());
            let page = self.store.read_logs(name, tail)?;
            Ok(LogSubscription {
                history: page.entries,
                live,
            })
        })?
    }

    /// [`LogHub::subscribe`] from entry `from_seq` on: the whole history
    /// from there.
    pub fn subscribe_from(&self, name: &str, from_seq: u64, follow: bool) -> Result<LogSubscription, StoreError> {
        self.with_log(name, |log| {
            self.flush_log(name, log);
            let live = follow.then(|| log.live.subscribe());
            let history = self.store.read_logs_from(name, from_seq)?;
            Ok(LogSubscription { history, live })
        })?
    }

    /// Forgets entries from `seq` on (they belong to a run that was rolled
    /// back to a checkpoint); the next entry gets `seq`.
    pub fn truncate(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        self.with_log(name, |log| {
            self.flush_log(name, log);
            if seq < log.next_seq {
                log.stored_bytes = None;
                self.store.truncate_logs(name, seq)?;
                tracing::debug!(function = %name, from_seq = seq, dropped = log.next_seq - seq, "output after the checkpoint dropped");
                log.next_seq = seq;
            }
            Ok(())
        })?
    }

    /// Every kept entry of `name`, oldest first (what moves with a function).
    pub fn history(&self, name: &str) -> Result<Vec<LogEntry>, StoreError> {
        self.with_log(name, |log| {
            self.flush_log(name, log);
            Ok(self.store.read_logs(name, 0)?.entries)
        })?
    }

    /// The kept entries of `name` numbered `from_seq` and later, oldest
    /// first (what a move sends at the pause, after the history it sent
    /// while the function still ran).
    pub fn history_from(&self, name: &str, from_seq: u64) -> Result<Vec<LogEntry>, StoreError> {
        self.with_log(name, |log| {
            self.flush_log(name, log);
            self.store.read_logs_from(name, from_seq)
        })?
    }

    /// Retires the current log of `name` (its pending output is dropped)
    /// and runs `f` while no writer can reach a log of `name`.
    fn retire<R>(&self, name: &str, f: impl FnOnce() -> R) -> R {
        let old = lock(&self.functions).remove(name);
        let _held = old.as_ref().map(|log| {
            let mut held = lock(log);
            held.retired = true;
            held.pending.clear();
            held
        });
        f()
    }

    /// Replaces the history of `name` with `entries` (received with the
    /// function from another hub), keeping their sequence numbers.
    pub fn import(&self, name: &str, entries: &[LogEntry]) -> Result<(), StoreError> {
        self.retire(name, || {
            self.store.remove_logs(name)?;
            self.store.append_logs(name, entries).map(drop)
        })
    }

    /// Adds `entries` (received with the function after an earlier
    /// [`Logs::import`] of its history) to the history of `name`, keeping
    /// their sequence numbers.
    pub fn import_more(&self, name: &str, entries: &[LogEntry]) -> Result<(), StoreError> {
        self.retire(name, || self.store.append_logs(name, entries).map(drop))
    }

    /// Stores what is pending and ends every live follower (at hub shutdown).
    pub fn close_all(&self) {
        self.flush_all();
        lock(&self.functions).clear();
    }

    /// Forgets a function's logs.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        self.retire(name, || self.store.remove_logs(name))
    }
}

/// Numbers an entry and sends it to live followers; it waits in `pending`
/// for the store. The number is used up even if the store refuses it.
fn push_entry(log: &mut FunctionLog, stream: LogStream, data: &[u8]) {
    let entry = LogEntry {
        seq: log.next_seq,
        stream: stream as i32,
        data: data.to_vec(),
        unix_ms: unix_ms_now(),
    };
    log.next_seq += 1;
    log.pending_bytes += entry.data.len();
    // Nobody following is fine.
    let _ = log.live.send(entry.clone());
    log.pending.push(entry);
}

#[cfg(test)]
mod tests;
