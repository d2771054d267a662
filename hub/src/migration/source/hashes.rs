//! The hashes of a round: the previous round's, with the chunks this
//! round captured hashed again (BLAKE3, once: the destination verifies).

use std::sync::Arc;

use ferry_migrator::checkpoint::{ChunkHash, chunk_count, hash_chunk, is_zero_chunk};
use ferry_migrator::transfer::TransferError;

use super::local;
use crate::runtime::{MemoryChanges, Snapshot, SnapshotMemory};

/// The hash of every chunk of the memory after a round's capture: `base`
/// (the previous round's) with the captured chunks hashed again, or — for a
/// complete capture — the captured chunks alone. Only the captured chunks
/// are read.
pub(super) async fn hash_changes(
    snapshot: Arc<Snapshot>,
    chunk_size: u32,
    base: Option<Vec<Option<ChunkHash>>>,
) -> Result<Vec<Option<ChunkHash>>, TransferError> {
    tokio::task::spawn_blocking(move || {
        let changes = match &snapshot.memory {
            SnapshotMemory::Changes(changes) => changes,
            SnapshotMemory::Whole(_) | SnapshotMemory::Stored(_) => {
                return Err("the round captured the whole memory, not its changes".to_owned());
            }
        };
        round_hashes(changes, chunk_size, base)
    })
    .await
    .map_err(|error| local(format!("hashing failed: {error}")))?
    .map_err(|reason| local(format!("cannot hash the round: {reason}")))
}

fn round_hashes(
    changes: &MemoryChanges,
    chunk_size: u32,
    base: Option<Vec<Option<ChunkHash>>>,
) -> Result<Vec<Option<ChunkHash>>, String> {
    if changes.chunk_size != chunk_size {
        return Err(format!(
            "captured {}-byte chunks, the move uses {chunk_size}",
            changes.chunk_size
        ));
    }
    let count = chunk_count(changes.memory_bytes, chunk_size) as usize;
    let mut hashes = match base {
        Some(base) if !changes.complete => base,
        None if !changes.complete => return Err("the first round captured only changes".to_owned()),
        _ => Vec::new(),
    };
    // Memory only grows; new chunks start as zero.
    hashes.resize(count, None);
    for (index, bytes) in changes.iter() {
        let slot = hashes
            .get_mut(index as usize)
            .ok_or_else(|| format!("chunk {index} is beyond the memory's end"))?;
        *slot = (!is_zero_chunk(bytes)).then(|| hash_chunk(bytes));
    }
    Ok(hashes)
}
