//! The hashes of a round: the previous round's, with the chunks this
//! round captured hashed again (BLAKE3, once: the destination verifies).

use std::sync::Arc;

use ferry_migrator::checkpoint::{ChunkHash, chunk_count, hash_chunks};
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
    let (indexes, bytes): (Vec<u32>, Vec<&[u8]>) = changes.iter().unzip();
    for (index, hash) in indexes.iter().zip(hash_chunks(&bytes)) {
        let slot = hashes
            .get_mut(*index as usize)
            .ok_or_else(|| format!("chunk {index} is beyond the memory's end"))?;
        *slot = hash;
    }
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use ferry_migrator::checkpoint::hash_chunk;

    use super::*;

    const CHUNK: u32 = 4096;

    /// A first round of `count` chunks, every third one zero.
    fn complete_round(count: u32) -> MemoryChanges {
        let mut changes = MemoryChanges::new(u64::from(count * CHUNK), CHUNK, true);
        for index in 0..count {
            let byte = if index % 3 == 0 { 0 } else { index as u8 };
            changes.push(index, &vec![byte; CHUNK as usize]);
        }
        changes
    }

    #[test]
    fn a_large_round_hashes_every_chunk_in_its_slot_on_several_threads() {
        let count = 64 * 3 + 5;
        let hashes = round_hashes(&complete_round(count), CHUNK, None).unwrap();
        assert_eq!(hashes.len(), count as usize);
        for (index, hash) in hashes.iter().enumerate() {
            let bytes = vec![if index % 3 == 0 { 0 } else { index as u8 }; CHUNK as usize];
            let expected = (index % 3 != 0).then(|| hash_chunk(&bytes));
            assert_eq!(*hash, expected, "chunk {index}");
        }
    }

    #[test]
    fn a_later_round_keeps_the_hashes_of_chunks_it_did_not_capture() {
        let first = round_hashes(&complete_round(8), CHUNK, None).unwrap();
        let mut changes = MemoryChanges::new(u64::from(10 * CHUNK), CHUNK, false);
        changes.push(4, &[7; CHUNK as usize]);
        changes.push(9, &[9; CHUNK as usize]);
        let next = round_hashes(&changes, CHUNK, Some(first.clone())).unwrap();
        assert_eq!(next.len(), 10);
        assert_eq!(next[..4], first[..4]);
        assert_eq!(next[4], Some(hash_chunk(&[7; CHUNK as usize])));
        assert_eq!(next[5..8], first[5..8]);
        assert_eq!(next[8], None, "a chunk the memory grew by starts as zero");
        assert_eq!(next[9], Some(hash_chunk(&[9; CHUNK as usize])));
    }
}
