//! References held per function: a function's checkpoints share one
//! reference on each chunk any of them names, so that a new checkpoint
//! changes counts only for the chunks its predecessors did not name.
//!
//! A *holder* (`checkpoint_holders`: function name → record) lists the
//! sequences of the function's checkpoints it covers and the distinct
//! chunks they name; it holds one reference on each of those chunks, like a
//! staged set. Invariant: every chunk a covered checkpoint names is in its
//! function's holder, and so has a count of at least one.
//!
//! - A commit adds the manifest's sequence and its chunks that are new to
//!   the holder (one reference each); a checkpoint that shares all but 1 %
//!   of its chunks with the previous one changes 1 % of the counts.
//! - Removing a covered checkpoint recomputes the union of the chunks the
//!   holder's remaining checkpoints name (read in the same transaction) and
//!   releases the rest. If one of the remaining checkpoints does not
//!   decode, the holder keeps every chunk: what it names is unknown.
//! - A checkpoint stored before holders existed is not covered: it holds a
//!   reference per chunk itself, and its removal releases them, as before.

use std::collections::HashSet;

use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::{
    checkpoint_key,
    staged::{distinct, release},
};
use crate::checkpoint::{
    CheckpointError, ChunkHash,
    manifest::{decode_manifest, distinct_chunks},
};

/// One function's holder: the checkpoints it covers and the chunks it holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Holder {
    /// Sequences of the covered checkpoints, ascending.
    pub(super) sequences: Vec<u64>,
    /// The distinct chunks they name.
    pub(super) chunks: HashSet<ChunkHash>,
}

impl Holder {
    /// `sequence count (u32 BE) ‖ sequences (u64 BE each) ‖ hashes (32 bytes each)`.
    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(4 + self.sequences.len() * 8 + self.chunks.len() * 32);
        bytes.extend_from_slice(&(self.sequences.len() as u32).to_be_bytes());
        for sequence in &self.sequences {
            bytes.extend_from_slice(&sequence.to_be_bytes());
        }
        for hash in &self.chunks {
            bytes.extend_from_slice(hash.as_bytes());
        }
        bytes
    }

    fn decode(function: &str, bytes: &[u8]) -> Result<Holder, CheckpointError> {
        let corrupt = |reason: String| CheckpointError::corrupt(format!("chunk holder of function {function}"), reason);
        let (count, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt(format!("{} bytes, too short", bytes.len())))?;
        let count = u32::from_be_bytes(*count) as usize;
        let sequences_len = count
            .checked_mul(8)
            .filter(|len| *len <= rest.len())
            .ok_or_else(|| corrupt(format!("{count} sequences do not fit in {} bytes", rest.len())))?;
        let (sequences, hashes) = rest.split_at(sequences_len);
        if !hashes.len().is_multiple_of(32) {
            return Err(corrupt(format!(
                "{} bytes of hashes, not a multiple of 32",
                hashes.len()
            )));
        }
        Ok(Holder {
            sequences: sequences
                .chunks_exact(8)
                .filter_map(|bytes| <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes))
                .collect(),
            chunks: hashes
                .chunks_exact(32)
                .filter_map(|bytes| <[u8; 32]>::try_from(bytes).ok().map(ChunkHash))
                .collect(),
        })
    }

    /// Inside a transaction: the holder of `function` (empty if none).
    pub(super) fn read<E: From<CheckpointError>>(
        holders: &TransactionalTree,
        function: &str,
    ) -> Result<Holder, ConflictableTransactionError<E>> {
        match holders.get(function.as_bytes())? {
            None => Ok(Holder::default()),
            Some(bytes) => {
                Holder::decode(function, &bytes).map_err(|error| ConflictableTransactionError::Abort(E::from(error)))
            }
        }
    }

    /// Inside a transaction: stores the holder, or deletes it once it
    /// covers nothing.
    pub(super) fn write<E>(
        &self,
        holders: &TransactionalTree,
        function: &str,
    ) -> Result<(), ConflictableTransactionError<E>> {
        if self.sequences.is_empty() {
            holders.remove(function.as_bytes())?;
        } else {
            holders.insert(function.as_bytes(), self.encode())?;
        }
        Ok(())
    }

    /// Adds `sequence` to the covered checkpoints.
    pub(super) fn cover(&mut self, sequence: u64) {
        if let Err(position) = self.sequences.binary_search(&sequence) {
            self.sequences.insert(position, sequence);
        }
    }
}

/// What removing one covered checkpoint released.
#[derive(Debug, Default)]
pub(super) struct Uncovered {
    pub(super) chunks_freed: u64,
    pub(super) bytes_freed: u64,
    /// A remaining checkpoint that does not decode: the holder kept every
    /// chunk.
    pub(super) kept_for: Option<String>,
}

/// Inside a transaction: stops covering checkpoint `sequence` of
/// `function` (whose manifest the caller deletes) and releases the chunks
/// none of the remaining covered checkpoints names. `None` if the holder
/// does not cover it (a checkpoint from before holders).
pub(super) fn uncover<E: From<CheckpointError>>(
    trees: (
        &TransactionalTree,
        &TransactionalTree,
        &TransactionalTree,
        &TransactionalTree,
    ),
    function: &str,
    sequence: u64,
) -> Result<Option<Uncovered>, ConflictableTransactionError<E>> {
    let (refs, chunks, checkpoints, holders) = trees;
    let mut holder = Holder::read::<E>(holders, function)?;
    let Ok(position) = holder.sequences.binary_search(&sequence) else {
        return Ok(None);
    };
    holder.sequences.remove(position);
    let mut uncovered = Uncovered::default();
    let mut named = HashSet::new();
    for remaining in &holder.sequences {
        let Some(framed) = checkpoints.get(checkpoint_key(function, *remaining))? else {
            // Deleted without uncovering (cannot happen through this
            // store): it names nothing any more.
            continue;
        };
        match decode_manifest(&framed) {
            Ok(manifest) => named.extend(distinct_chunks(&manifest)),
            Err(error) => {
                uncovered.kept_for = Some(format!("checkpoint {remaining} does not decode: {error}"));
                break;
            }
        }
    }
    if uncovered.kept_for.is_none() {
        let released: Vec<ChunkHash> = distinct(holder.chunks.iter().filter(|hash| !named.contains(*hash)).copied());
        for hash in &released {
            if let Some(bytes) = release::<E>(refs, chunks, hash)? {
                uncovered.chunks_freed += 1;
                uncovered.bytes_freed += bytes;
            }
        }
        holder.chunks = named;
    }
    holder.write::<E>(holders, function)?;
    Ok(Some(uncovered))
}
