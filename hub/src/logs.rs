//! Guest output: every write is numbered, kept in the store (bounded), and
//! broadcast to whoever follows the function's logs right now.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_proto::v1::{LogEntry, LogStream};
use tokio::sync::broadcast;

use crate::store::{Store, StoreError};

/// Largest payload of one entry; longer writes are split.
const MAX_ENTRY_BYTES: usize = 64 << 10;
/// Entries a slow follower may lag behind before it is told it missed some.
const FOLLOW_BUFFER: usize = 4096;

struct FunctionLog {
    next_seq: u64,
    live: broadcast::Sender<LogEntry>,
    /// Output that could not be stored since the last stored entry.
    unstored: Unstored,
    /// All output that could not be stored, for `ps`.
    lost_total: Unstored,
}

/// Output the store refused (a full disk): counted and reported, never
/// dropped silently. Its entries keep their sequence numbers, so the
/// stored history shows a gap where they were.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unstored {
    pub entries: u64,
    pub bytes: u64,
}

/// Everything guests wrote, per function.
pub struct LogHub {
    store: Store,
    functions: Mutex<HashMap<String, FunctionLog>>,
}

/// A function's history plus, when following, the live entries after it.
pub struct LogSubscription {
    pub history: Vec<LogEntry>,
    pub live: Option<broadcast::Receiver<LogEntry>>,
}

pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or_default()
}

impl LogHub {
    pub fn new(store: Store) -> LogHub {
        LogHub {
            store,
            functions: Mutex::new(HashMap::new()),
        }
    }

    fn with_log<R>(&self, name: &str, f: impl FnOnce(&mut FunctionLog) -> R) -> Result<R, StoreError> {
        let mut functions = self.functions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !functions.contains_key(name) {
            let next_seq = self.store.next_log_seq(name)?;
            let (live, _) = broadcast::channel(FOLLOW_BUFFER);
            functions.insert(
                name.to_owned(),
                FunctionLog {
                    next_seq,
                    live,
                    unstored: Unstored::default(),
                    lost_total: Unstored::default(),
                },
            );
        }
        let log = functions.get_mut(name).expect("inserted above");
        Ok(f(log))
    }

    /// Records output of `name`. A store failure is never passed to the
    /// guest: the output still reaches live followers, is counted as
    /// unstored, and once the store takes entries again an event in the log
    /// says how much is missing.
    pub fn append(&self, name: &str, stream: LogStream, data: &[u8]) {
        let result = self.with_log(name, |log| {
            for piece in data.chunks(MAX_ENTRY_BYTES) {
                self.append_entry(name, log, stream, piece);
            }
        });
        if let Err(error) = result {
            tracing::warn!(function = %name, %error, "could not record guest output");
        }
    }

    fn append_entry(&self, name: &str, log: &mut FunctionLog, stream: LogStream, piece: &[u8]) {
        if log.unstored.entries > 0 {
            let missing = log.unstored;
            let note = format!(
                "{} output entries ({} bytes) before this line could not be stored (the disk was full or failing)\n",
                missing.entries, missing.bytes
            );
            if self.store_entry(name, log, LogStream::Hub, note.as_bytes()).is_ok() {
                tracing::info!(function = %name, entries = missing.entries, bytes = missing.bytes, "guest output is stored again");
                log.unstored = Unstored::default();
            }
        }
        if let Err(error) = self.store_entry(name, log, stream, piece) {
            if log.unstored.entries == 0 {
                tracing::warn!(function = %name, %error, "cannot store guest output; counting what is lost");
            }
            log.unstored.entries += 1;
            log.unstored.bytes += piece.len() as u64;
            log.lost_total.entries += 1;
            log.lost_total.bytes += piece.len() as u64;
        }
    }

    /// Stores one entry under the next sequence number and sends it to live
    /// followers; the number is used up even if the store refuses it.
    fn store_entry(&self, name: &str, log: &mut FunctionLog, stream: LogStream, data: &[u8]) -> Result<(), StoreError> {
        let entry = LogEntry {
            seq: log.next_seq,
            stream: stream as i32,
            data: data.to_vec(),
            unix_ms: unix_ms_now(),
        };
        log.next_seq += 1;
        let stored = self.store.append_log(name, &entry);
        // Nobody following is fine.
        let _ = log.live.send(entry);
        stored
    }

    /// Output of `name` the store could not take, since this hub started.
    pub fn unstored(&self, name: &str) -> Unstored {
        let functions = self.functions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        functions.get(name).map(|log| log.lost_total).unwrap_or_default()
    }

    /// The sequence number the next entry of `name` gets (0 if unknown).
    pub fn next_seq(&self, name: &str) -> u64 {
        self.with_log(name, |log| log.next_seq).unwrap_or_else(|error| {
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
            let live = follow.then(|| log.live.subscribe());
            let page = self.store.read_logs(name, tail)?;
            Ok(LogSubscription {
                history: page.entries,
                live,
            })
        })?
    }

    /// Forgets entries from `seq` on (they belong to a run that was rolled
    /// back to a checkpoint); the next entry gets `seq`.
    pub fn truncate(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        self.with_log(name, |log| {
            if seq < log.next_seq {
                self.store.truncate_logs(name, seq)?;
                log.next_seq = seq;
            }
            Ok(())
        })?
    }

    /// Every kept entry of `name`, oldest first (what moves with a function).
    pub fn history(&self, name: &str) -> Result<Vec<LogEntry>, StoreError> {
        Ok(self.store.read_logs(name, 0)?.entries)
    }

    /// Replaces the history of `name` with `entries` (received with the
    /// function from another hub), keeping their sequence numbers.
    pub fn import(&self, name: &str, entries: &[LogEntry]) -> Result<(), StoreError> {
        let mut functions = self.functions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        functions.remove(name);
        self.store.remove_logs(name)?;
        for entry in entries {
            self.store.append_log(name, entry)?;
        }
        Ok(())
    }

    /// Ends every live follower (at hub shutdown).
    pub fn close_all(&self) {
        self.functions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    /// Forgets a function's logs.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        self.functions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(name);
        self.store.remove_logs(name)
    }
}
