//! Checkpoints from the chunks that changed: [`CheckpointStore::put_changes`]
//! builds a manifest from the previous one and the chunks a dirty-page
//! tracker reports, so nothing unchanged is read, hashed or written.

use super::{
    CheckpointStore,
    put::{ChunkSource, ChunkWriter, PutStats},
};
use crate::checkpoint::{
    CheckpointError, CheckpointManifest, ChunkHash,
    chunking::{MemoryScan, hash_chunk, is_zero_chunk},
    manifest::describe,
};

/// The chunks of a linear memory that changed since the base checkpoint, as
/// a dirty-page tracker reports them.
#[derive(Debug, Clone, Copy)]
pub struct ChangedMemory<'a> {
    /// Size of the memory now (never less than the base's: wasm memory
    /// only grows).
    pub memory_bytes: u64,
    /// The chunk size the changes were cut in: the store's.
    pub chunk_size: u32,
    /// Every chunk not listed is zero (no base is needed); otherwise every
    /// chunk not listed is as the base has it, or zero past the base's end.
    pub complete: bool,
    /// `(index, bytes)` of each changed chunk, indexes strictly ascending;
    /// each chunk is `chunk_size` bytes long except the memory's last.
    pub chunks: &'a [(u32, &'a [u8])],
}

impl ChunkSource for ChangedMemory<'_> {
    fn chunk(&self, index: usize) -> Option<&[u8]> {
        let index = u32::try_from(index).ok()?;
        let position = self.chunks.binary_search_by_key(&index, |(at, _)| *at).ok()?;
        self.chunks.get(position).map(|(_, bytes)| *bytes)
    }
}

impl CheckpointStore {
    /// Stores a checkpoint made of `base` (the function's previous
    /// checkpoint, which must still be stored) with `changes` applied, and
    /// returns its manifest and what it cost. Only the changed chunks are
    /// hashed, compressed and written; a complete set of changes needs no
    /// base. When this returns, the checkpoint is on disk. On failure
    /// nothing stored before is changed.
    pub fn put_changes(
        &self,
        manifest_template: CheckpointManifest,
        changes: ChangedMemory<'_>,
        base: Option<&CheckpointManifest>,
    ) -> Result<(CheckpointManifest, PutStats), CheckpointError> {
        if changes.chunk_size != self.options.chunk_size {
            return Err(CheckpointError::InvalidCheckpoint {
                reason: format!(
                    "changes cut in chunks of {} bytes, but the store writes chunks of {}",
                    changes.chunk_size, self.options.chunk_size
                ),
            });
        }
        let mut manifest = self.new_manifest(manifest_template, changes.memory_bytes)?;
        let mut scan = scan_changes(&manifest, &changes, base)?;
        let mut stats = PutStats {
            memory_bytes: changes.memory_bytes,
            chunks: scan.chunk_hashes.len() as u64,
            zero_chunks: scan.zero_chunks,
            unchanged_chunks: scan.unchanged_chunks,
            hashed_chunks: scan.hashed_chunks.len() as u64,
            nonzero_bytes: scan.bytes_fingerprinted,
            bytes_hashed: scan.bytes_hashed,
            ..PutStats::default()
        };
        let mut writer = ChunkWriter::new(self, &changes)?;
        if let Err(error) = writer.write_and_commit(&mut manifest, &mut scan, &mut stats) {
            self.remove_if_unreferenced(&writer.written);
            return Err(error);
        }
        self.db.flush()?;
        tracing::debug!(
            checkpoint = %describe(&manifest),
            chunks = stats.chunks,
            changed_chunks = changes.chunks.len(),
            new_chunks = stats.new_chunks,
            bytes_written = stats.checkpoint_bytes(),
            "checkpoint stored from changes"
        );
        Ok((manifest, stats))
    }
}

/// The chunk list of `manifest` (already sized) from `base` and `changes`:
/// the base's hashes where nothing changed, a BLAKE3 of each changed chunk.
fn scan_changes(
    manifest: &CheckpointManifest,
    changes: &ChangedMemory<'_>,
    base: Option<&CheckpointManifest>,
) -> Result<MemoryScan, CheckpointError> {
    let count = manifest.chunk_hashes.len();
    let mut hashes: Vec<Option<ChunkHash>> = vec![None; count];
    if !changes.complete {
        let base = base.ok_or_else(|| CheckpointError::InvalidCheckpoint {
            reason: "changes since an earlier capture need the checkpoint of that capture as a base".to_owned(),
        })?;
        check_base(manifest, base)?;
        for (index, entry) in base.chunk_hashes.iter().enumerate() {
            let hash = ChunkHash::from_manifest_entry(entry).map_err(|length| {
                CheckpointError::corrupt(describe(base), format!("chunk {index} has a {length}-byte hash"))
            })?;
            if let Some(slot) = hashes.get_mut(index) {
                *slot = hash;
            }
        }
    }
    let mut hashed = Vec::with_capacity(changes.chunks.len());
    let mut bytes_hashed = 0;
    let mut previous: Option<u32> = None;
    for &(index, bytes) in changes.chunks {
        if previous.is_some_and(|previous| previous >= index) {
            return Err(CheckpointError::InvalidCheckpoint {
                reason: format!("changed chunk {index} is out of order"),
            });
        }
        previous = Some(index);
        let expected = chunk_len(changes, u64::from(index));
        let Some(slot) = hashes.get_mut(index as usize) else {
            return Err(CheckpointError::InvalidCheckpoint {
                reason: format!("changed chunk {index} lies past the memory's {count} chunks"),
            });
        };
        if bytes.len() as u64 != expected {
            return Err(CheckpointError::InvalidCheckpoint {
                reason: format!("changed chunk {index} has {} bytes, not {expected}", bytes.len()),
            });
        }
        *slot = if is_zero_chunk(bytes) {
            None
        } else {
            hashed.push(index as usize);
            bytes_hashed += bytes.len() as u64;
            Some(hash_chunk(bytes))
        };
    }
    let nonzero_bytes = hashes
        .iter()
        .enumerate()
        .filter(|(_, hash)| hash.is_some())
        .map(|(index, _)| chunk_len(changes, index as u64))
        .sum();
    Ok(MemoryScan::from_hashes(hashes, hashed, bytes_hashed, nonzero_bytes))
}

/// The length of chunk `index` of the changed memory (the last may be short).
fn chunk_len(changes: &ChangedMemory<'_>, index: u64) -> u64 {
    let chunk_size = u64::from(changes.chunk_size);
    changes.memory_bytes.saturating_sub(index * chunk_size).min(chunk_size)
}

/// Refuses a base that cannot be the previous checkpoint of the same memory.
fn check_base(manifest: &CheckpointManifest, base: &CheckpointManifest) -> Result<(), CheckpointError> {
    let name = |manifest: &CheckpointManifest| manifest.spec.as_ref().map(|spec| spec.name.clone());
    let reason = if name(base) != name(manifest) {
        Some(format!("{} belongs to another function", describe(base)))
    } else if base.chunk_size != manifest.chunk_size {
        Some(format!(
            "{} has chunks of {} bytes, the changes {}",
            describe(base),
            base.chunk_size,
            manifest.chunk_size
        ))
    } else if base.memory_bytes > manifest.memory_bytes {
        Some(format!(
            "{} has {} bytes of memory, more than the {} now",
            describe(base),
            base.memory_bytes,
            manifest.memory_bytes
        ))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CheckpointError::BaseMismatch { reason }),
        None => Ok(()),
    }
}
