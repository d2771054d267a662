//! Retention and garbage collection: dropping old checkpoints and the chunks
//! no remaining checkpoint names.
//!
//! Each manifest is removed in its own transaction together with the
//! decrement of its chunks' reference counts and the deletion of the chunks
//! that reach zero, so a crash never leaves a count that is too low.

use sled::Transactional;
use sled::transaction::TransactionError;

use super::{CheckpointStore, function_prefix, staged::release};
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
    /// Deleted manifests that did not verify: the chunks they named cannot
    /// be known, so their references were kept (leaked) rather than guessed.
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
                    "removed a checkpoint that does not verify; the chunks it named stay referenced"
                );
                stats.unverifiable_removed += 1;
            }
            stats.checkpoints_removed += u64::from(removal.removed);
            stats.chunks_freed += removal.chunks_freed;
            stats.bytes_freed += removal.bytes_freed;
        }
        if stats.checkpoints_removed > 0 {
            self.db.flush()?;
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
        for hash in hashes {
            if let Err(error) = self.remove_chunk_if_unreferenced(hash.as_bytes()) {
                tracing::warn!(%hash, %error, "could not remove a chunk of a failed checkpoint");
            }
        }
    }

    /// Deletes the chunk if it has no reference count; its stored size if it did.
    fn remove_chunk_if_unreferenced(&self, key: &[u8]) -> Result<Option<u64>, CheckpointError> {
        let result = (&self.refs, &self.chunks).transaction(|(refs, chunks)| {
            if refs.get(key)?.is_some() {
                return Ok(None);
            }
            Ok(chunks.remove(key)?.map(|bytes| bytes.len() as u64))
        });
        result.map_err(|error: TransactionError<CheckpointError>| match error {
            TransactionError::Abort(error) => error,
            TransactionError::Storage(error) => CheckpointError::Sled(error),
        })
    }

    /// In one transaction: deletes the manifest under `key`, decrements the
    /// counts of the chunks it names and deletes those that reach zero.
    fn remove_checkpoint(&self, key: &[u8]) -> Result<Removal, CheckpointError> {
        let result = (&self.refs, &self.chunks, &self.checkpoints).transaction(|(refs, chunks, checkpoints)| {
            let mut removal = Removal::default();
            let Some(framed) = checkpoints.get(key)? else {
                return Ok(removal);
            };
            match decode_manifest(&framed) {
                Err(error) => removal.unverifiable = Some(error.to_string()),
                Ok(manifest) => {
                    for hash in distinct_chunks(&manifest) {
                        if let Some(bytes) = release::<CheckpointError>(refs, chunks, &hash)? {
                            removal.chunks_freed += 1;
                            removal.bytes_freed += bytes;
                        }
                    }
                }
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
