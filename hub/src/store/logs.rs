//! Per-function log history: stdout, stderr, guest log lines and hub events,
//! each entry numbered. The newest [`LOG_ENTRIES_KEPT`] entries of a function
//! are kept, and of those no more than [`LOG_BYTES_KEPT`] (the log hub
//! trims by bytes); older ones are dropped as new ones arrive.

use ferry_proto::v1::LogEntry;
use prost::Message;

use super::{Store, StoreError, off_worker};

/// How many entries of one function the store keeps.
pub const LOG_ENTRIES_KEPT: u64 = 10_000;

/// How many bytes of one function's entries (as stored) are kept: a
/// function writing 64 KiB at a time would otherwise keep 640 MiB, fill an
/// edge hub's card, and carry it along with every move.
pub const LOG_BYTES_KEPT: u64 = 8 << 20;

/// What an append did to a function's stored bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogsAppended {
    pub added_bytes: u64,
    /// Bytes of the entries that fell out of the [`LOG_ENTRIES_KEPT`] window.
    pub dropped_bytes: u64,
}

/// Entries read from the store and the next sequence number to expect.
#[derive(Debug, Default)]
pub struct LogPage {
    pub entries: Vec<LogEntry>,
    pub next_seq: u64,
}

fn prefix(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 9);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

fn key(name: &str, seq: u64) -> Vec<u8> {
    let mut key = prefix(name);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

impl Store {
    /// Appends an entry (its `seq` must be the next one) and drops the entry
    /// that falls out of the kept window.
    pub fn append_log(&self, name: &str, entry: &LogEntry) -> Result<LogsAppended, StoreError> {
        off_worker(|| self.append_logs(name, std::slice::from_ref(entry)))
    }

    /// Appends consecutive entries, dropping those that fall out of the
    /// kept window. Plain inserts, not one `sled::Batch`: a batch takes
    /// the tree's exclusive lock, which waits for a flush in progress, and
    /// on a full disk a flush never ends.
    pub fn append_logs(&self, name: &str, entries: &[LogEntry]) -> Result<LogsAppended, StoreError> {
        off_worker(|| {
            let mut appended = LogsAppended::default();
            for entry in entries {
                let value = entry.encode_to_vec();
                appended.added_bytes += value.len() as u64;
                if let Some(replaced) = self.logs.insert(key(name, entry.seq), value)? {
                    appended.dropped_bytes += replaced.len() as u64;
                }
                if let Some(expired) = entry.seq.checked_sub(LOG_ENTRIES_KEPT)
                    && let Some(removed) = self.logs.remove(key(name, expired))?
                {
                    appended.dropped_bytes += removed.len() as u64;
                }
            }
            Ok(appended)
        })
    }

    /// Bytes of the kept entries of `name`, as stored.
    pub fn log_bytes(&self, name: &str) -> Result<u64, StoreError> {
        off_worker(|| {
            let mut bytes = 0;
            for item in self.logs.scan_prefix(prefix(name)).values() {
                bytes += item?.len() as u64;
            }
            Ok(bytes)
        })
    }

    /// Drops the oldest entries of `name` until at least `bytes` are freed,
    /// never the newest entry; returns the bytes freed.
    pub fn drop_oldest_logs(&self, name: &str, bytes: u64) -> Result<u64, StoreError> {
        off_worker(|| {
            let newest = self.logs.scan_prefix(prefix(name)).keys().next_back().transpose()?;
            let mut freed = 0;
            for item in self.logs.scan_prefix(prefix(name)) {
                let (key, value) = item?;
                if freed >= bytes || Some(&key) == newest.as_ref() {
                    break;
                }
                self.logs.remove(&key)?;
                freed += value.len() as u64;
            }
            Ok(freed)
        })
    }

    /// The last `tail` entries (all kept entries when `tail` is 0).
    pub fn read_logs(&self, name: &str, tail: usize) -> Result<LogPage, StoreError> {
        off_worker(|| {
            let mut entries = Vec::new();
            let iter = self.logs.scan_prefix(prefix(name)).rev();
            for item in iter {
                let (_, value) = item?;
                let entry = LogEntry::decode(value.as_ref()).map_err(|error| StoreError::Corrupt {
                    what: format!("log entry of {name:?}"),
                    reason: error.to_string(),
                })?;
                entries.push(entry);
                if tail != 0 && entries.len() == tail {
                    break;
                }
            }
            entries.reverse();
            let next_seq = self.next_log_seq(name)?;
            Ok(LogPage { entries, next_seq })
        })
    }

    /// The kept entries numbered `from_seq` and later, oldest first.
    pub fn read_logs_from(&self, name: &str, from_seq: u64) -> Result<Vec<LogEntry>, StoreError> {
        off_worker(|| {
            self.logs
                .range(key(name, from_seq)..key(name, u64::MAX))
                .values()
                .map(|value| {
                    LogEntry::decode(value?.as_ref()).map_err(|error| StoreError::Corrupt {
                        what: format!("log entry of {name:?}"),
                        reason: error.to_string(),
                    })
                })
                .collect()
        })
    }

    /// The sequence number the next entry of `name` gets.
    pub fn next_log_seq(&self, name: &str) -> Result<u64, StoreError> {
        off_worker(|| {
            let last = self.logs.scan_prefix(prefix(name)).next_back().transpose()?;
            Ok(match last {
                None => 0,
                Some((key, _)) => {
                    let seq_bytes: [u8; 8] = key[key.len() - 8..].try_into().map_err(|_| StoreError::Corrupt {
                        what: format!("log key of {name:?}"),
                        reason: "too short".to_owned(),
                    })?;
                    u64::from_be_bytes(seq_bytes) + 1
                }
            })
        })
    }

    /// Removes the entries numbered `from_seq` and later.
    pub fn truncate_logs(&self, name: &str, from_seq: u64) -> Result<(), StoreError> {
        off_worker(|| {
            let mut batch = sled::Batch::default();
            for item in self.logs.range(key(name, from_seq)..key(name, u64::MAX)).keys() {
                batch.remove(item?);
            }
            batch.remove(key(name, u64::MAX));
            self.logs.apply_batch(batch)?;
            Ok(())
        })
    }

    pub fn remove_logs(&self, name: &str) -> Result<(), StoreError> {
        off_worker(|| {
            let mut batch = sled::Batch::default();
            for item in self.logs.scan_prefix(prefix(name)).keys() {
                batch.remove(item?);
            }
            self.logs.apply_batch(batch)?;
            Ok(())
        })
    }
}
