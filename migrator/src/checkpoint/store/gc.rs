//! Retention and garbage collection: dropping old checkpoints and the chunks
//! no remaining checkpoint names.
//!
//! Each manifest is removed in its own transaction together with the
//! release of the chunks it alone held (through its function's holder, see
//! `holders.rs`) and the deletion of the chunks that reach zero, so a crash
//! never leaves a count that is too low.

use sled::Transactional;
use sled::transaction::TransactionError;

use super::{
    CheckpointStore, function_prefix,
    holders::uncover,
    staged::{delete_chunk, is_pinned, release},
};
use crate::checkpoint::{
    CheckpointError, ChunkHash,
    manifest::{decode_manifest, distinct_chunks, validate_function_name},
};

/// What a retention, removal or collection freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Manifests deleted.
    pub checkpoints_removed: u64,
    /// Chunks deleted because nothing names them any more.
    pub chunks_freed: u64,
    /// Stored (compressed) bytes of those chunks.
    pub bytes_freed: u64,
    /// Removals that kept chunks referenced because a checkpoint did not
    /// verify (the removed one, from before holders, or one its holder
    /// still covers): what it names cannot be known, so references are
    /// kept (leaked) rather than guessed.
    pub unverifiable_removed: u64,
}

/// What removing one manifest did.
#[derive(Default)]
struct Removal {
    removed: bool,
    chunks_freed: u64,
    bytes_freed: u64,
    unverifiable: Option<String>,
}

impl CheckpointStore {
    /// Keeps the newest `keep` checkpoints of `function`, deletes the older
    /// ones and the chunks only they named, then flushes.
    pub fn retain(&self, function: &str, keep: usize) -> Result<GcStats, CheckpointError> {
        validate_function_name(function)?;
        let keys = self
            .checkpoints
            .scan_prefix(function_prefix(function))
            .keys()
            .collect::<Result<Vec<_>, _>>()?;
        let remove_count = keys.len().saturating_sub(keep);
        let mut stats = GcStats::default();
        for key in keys.iter().take(remove_count) {
            let removal = self.remove_checkpoint(key)?;
            if let Some(reason) = &removal.unverifiable {
                tracing::warn!(
                    function,
                    %reason,
                    "a checkpoint does not verify; the chunks it may name stay referenced"
                );
                stats.unverifiable_removed += 1;
            }
            stats.checkpoints_removed += u64::from(removal.removed);
            stats.chunks_freed += removal.chunks_freed;
            stats.bytes_freed += removal.bytes_freed;
        }
        if stats.checkpoints_removed > 0 {
            self.db.flush()?;
            self.freed(stats.bytes_freed);
            tracing::debug!(
                function,
                keep,
                checkpoints_removed = stats.checkpoints_removed,
                chunks_freed = stats.chunks_freed,
                bytes_freed = stats.bytes_freed,
                "old checkpoints removed"
            );
        }
        Ok(stats)
    }

    /// Deletes every checkpoint of `function` and the chunks only they named.
    pub fn remove_function(&self, function: &str) -> Result<GcStats, CheckpointError> {
        self.retain(function, 0)
    }

    /// Deletes those of `hashes` that no manifest names: the chunks a
    /// transfer received and then did not need (overwritten by a later
    /// round, or the transfer was abandoned).
    pub fn drop_unreferenced(&self, hashes: &[ChunkHash]) -> Result<GcStats, CheckpointError> {
        let mut stats = GcStats::default();
        for hash in hashes {
            if let Some(bytes_freed) = self.remove_chunk_if_unreferenced(hash.as_bytes())? {
                stats.chunks_freed += 1;
                stats.bytes_freed += bytes_freed;
            }
        }
        self.freed(stats.bytes_freed);
        Ok(stats)
    }

    /// Deletes chunks that no manifest names: those left by a put or a
    /// transfer that crashed before its manifest was stored. Safe while puts
    /// run (a put rewrites a chunk collected under it), but it also deletes
    /// chunks a transfer has received and not yet committed, so the hub runs
    /// it at start-up.
    pub fn collect_garbage(&self) -> Result<GcStats, CheckpointError> {
        let mut stats = GcStats::default();
        for key in self.chunks.iter().keys() {
            let key = key?;
            if self.refs.contains_key(&key)? {
                continue;
            }
            if let Some(bytes_freed) = self.remove_chunk_if_unreferenced(&key)? {
                stats.chunks_freed += 1;
                stats.bytes_freed += bytes_freed;
            }
        }
        if stats.chunks_freed > 0 {
            self.db.flush()?;
            self.freed(stats.bytes_freed);
            tracing::info!(
                chunks_freed = stats.chunks_freed,
                bytes_freed = stats.bytes_freed,
                "unreferenced checkpoint chunks collected"
            );
        }
        Ok(stats)
    }

    /// Best-effort clean-up after a failed put: deletes the chunks it wrote
    /// that no manifest names. A failure here only leaves garbage for
    /// [`CheckpointStore::collect_garbage`].
    pub(super) fn remove_if_unreferenced(&self, hashes: &[ChunkHash]) {
        let (mut bytes_freed, mut failed, mut first_error) = (0, 0, None);
        for hash in hashes {
            match self.remove_chunk_if_unreferenced(hash.as_bytes()) {
                Ok(freed) => bytes_freed += freed.unwrap_or(0),
                Err(error) => {
                    failed += 1;
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(error) = first_error {
            // Once, not per chunk: a failing store fails them all.
            tracing::warn!(chunks = failed, %error, "could not remove the chunks of a failed checkpoint; the next start collects them");
        }
        // A put that failed for want of room gives its bytes back at once
        // (the disk is short: the reclaim runs now).
        self.freed(bytes_freed);
    }

    /// Deletes the chunk if it has no reference count; its stored size if it did.
    fn remove_chunk_if_unreferenced(&self, key: &[u8]) -> Result<Option<u64>, CheckpointError> {
        let result = (&self.refs, &self.chunks).transaction(|(refs, chunks)| {
            if refs.get(key)?.is_some() || is_pinned(key) {
                return Ok(None);
            }
            delete_chunk::<CheckpointError>(refs, chunks, key)
        });
        result.map_err(|error: TransactionError<CheckpointError>| match error {
            TransactionError::Abort(error) => error,
            TransactionError::Storage(error) => CheckpointError::Sled(error),
        })
    }

    /// In one transaction: deletes the manifest under `key` and releases
    /// the chunks no checkpoint names any more — through its function's
    /// holder if it covers the checkpoint, else (a checkpoint from before
    /// holders) one count per chunk it names.
    fn remove_checkpoint(&self, key: &[u8]) -> Result<Removal, CheckpointError> {
        let (function, sequence) = function_and_sequence(key)?;
        let trees = (&self.refs, &self.chunks, &self.checkpoints, &self.holders);
        let result = trees.transaction(|(refs, chunks, checkpoints, holders)| {
            let mut removal = Removal::default();
            let Some(framed) = checkpoints.get(key)? else {
                return Ok(removal);
            };
            match uncover::<CheckpointError>((refs, chunks, checkpoints, holders), &function, sequence)? {
                Some(uncovered) => {
                    removal.chunks_freed = uncovered.chunks_freed;
                    removal.bytes_freed = uncovered.bytes_freed;
                    removal.unverifiable = uncovered.kept_for;
                }
                None => match decode_manifest(&framed) {
                    Err(error) => removal.unverifiable = Some(error.to_string()),
                    Ok(manifest) => {
                        for hash in distinct_chunks(&manifest) {
                            if let Some(bytes) = release::<CheckpointError>(refs, chunks, &hash)? {
                                removal.chunks_freed += 1;
                                removal.bytes_freed += bytes;
                            }
                        }
                    }
                },
            }
            checkpoints.remove(key)?;
            removal.removed = true;
            Ok(removal)
        });
        result.map_err(|error| match error {
            TransactionError::Abort(error) => error,
            TransactionError::Storage(error) => CheckpointError::Sled(error),
        })
    }
}

/// The function and sequence a checkpoint key names.
fn function_and_sequence(key: &[u8]) -> Result<(String, u64), CheckpointError> {
    let malformed = || CheckpointError::corrupt("checkpoint key", format!("{} bytes, malformed", key.len()));
    let (name, sequence) = key.split_last_chunk::<8>().ok_or_else(malformed)?;
    let name = name.strip_suffix(&[0]).ok_or_else(malformed)?;
    Ok((
        String::from_utf8_lossy(name).into_owned(),
        u64::from_be_bytes(*sequence),
    ))
}
