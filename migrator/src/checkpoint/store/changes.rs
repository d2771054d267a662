//! Checkpoints from the chunks that changed: [`CheckpointStore::put_changes`]
//! builds a manifest from the previous one and the chunks a dirty-page
//! tracker reports, so nothing unchanged is read, hashed or written.

use std::collections::HashMap;

use super::{
    CheckpointStore,
    deltas::{DELTA_PAGE, DELTA_PAYS_SIXTEENTHS, Delta},
    put::{ChunkSource, ChunkWriter, PreparedDeltas, PutStats},
};
use crate::checkpoint::{
    CheckpointError, CheckpointManifest, ChunkHash,
    chunking::{MemoryScan, hash_chunks, hash_chunks_beside},
    codec::{ChunkEncoder, StreamEncoder},
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
    /// When the tracker knows them: the [`DELTA_PAGE`]-sized pages of the
    /// memory written since the base (page numbers, in any order; pages
    /// outside the changed chunks are ignored). Each changed chunk must
    /// differ from the base's only in its written pages. The store may
    /// then keep a chunk as those pages over the base's version of it.
    pub written_pages: Option<&'a [u32]>,
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
        let hashes = check_changes(&manifest, &changes, base)?;
        let candidates = delta_candidates(&changes, base);
        let bytes: Vec<&[u8]> = changes.chunks.iter().map(|(_, bytes)| *bytes).collect();
        // The deltas are made on a thread of their own while the changed
        // chunks are hashed, which then helps with the hashing.
        let (changed, prepared) = if candidates.is_empty() {
            (hash_chunks(&bytes), PreparedDeltas::new())
        } else {
            let (changed, prepared) = hash_chunks_beside(&bytes, || self.prepare_deltas(candidates, &changes));
            (changed, prepared?)
        };
        let mut scan = scan_of(hashes, &changes, changed);
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
        let mut writer = ChunkWriter::new(self, &changes)?.with_deltas(prepared);
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
            delta_chunks = stats.delta_chunks,
            bytes_written = stats.checkpoint_bytes(),
            "checkpoint stored from changes"
        );
        Ok((manifest, stats))
    }
}

/// Checks `changes` against `manifest` (already sized) and `base`, and
/// returns the chunk list the changes apply to: the base's hashes (none
/// for a complete set), sized to the memory now.
fn check_changes(
    manifest: &CheckpointManifest,
    changes: &ChangedMemory<'_>,
    base: Option<&CheckpointManifest>,
) -> Result<Vec<Option<ChunkHash>>, CheckpointError> {
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
    let mut previous: Option<u32> = None;
    for &(index, bytes) in changes.chunks {
        if previous.is_some_and(|previous| previous >= index) {
            return Err(CheckpointError::InvalidCheckpoint {
                reason: format!("changed chunk {index} is out of order"),
            });
        }
        previous = Some(index);
        if index as usize >= count {
            return Err(CheckpointError::InvalidCheckpoint {
                reason: format!("changed chunk {index} lies past the memory's {count} chunks"),
            });
        }
        let expected = chunk_len(changes, u64::from(index));
        if bytes.len() as u64 != expected {
            return Err(CheckpointError::InvalidCheckpoint {
                reason: format!("changed chunk {index} has {} bytes, not {expected}", bytes.len()),
            });
        }
    }
    Ok(hashes)
}

/// The scan of the memory `changes` describe: `hashes` (the base's) with
/// each changed chunk's entry replaced by `changed` (its BLAKE3, `None`
/// for a zero chunk), in the order of `changes.chunks`.
fn scan_of(
    mut hashes: Vec<Option<ChunkHash>>,
    changes: &ChangedMemory<'_>,
    changed: Vec<Option<ChunkHash>>,
) -> MemoryScan {
    let mut hashed = Vec::with_capacity(changes.chunks.len());
    let mut bytes_hashed = 0;
    for (&(index, bytes), hash) in changes.chunks.iter().zip(changed) {
        if hash.is_some() {
            hashed.push(index as usize);
            bytes_hashed += bytes.len() as u64;
        }
        hashes[index as usize] = hash;
    }
    let nonzero_bytes = hashes
        .iter()
        .enumerate()
        .filter(|(_, hash)| hash.is_some())
        .map(|(index, _)| chunk_len(changes, index as u64))
        .sum();
    MemoryScan::from_hashes(hashes, hashed, bytes_hashed, nonzero_bytes)
}

/// The changed chunks that may be kept as deltas: those with pages
/// written known and of the same length at the base; each with the chunk
/// the base names at its index (`None`: zeros) and the pages written
/// (numbered within the chunk). Not a chunk past the base's end: a tracker
/// may have missed writes to memory that grew since (it lists such chunks
/// whole).
fn delta_candidates(
    changes: &ChangedMemory<'_>,
    base: Option<&CheckpointManifest>,
) -> Vec<(usize, Option<ChunkHash>, Vec<u32>)> {
    let (Some(written), Some(base), false) = (changes.written_pages, base, changes.complete) else {
        return Vec::new();
    };
    let chunk_size = changes.chunk_size as usize;
    if !chunk_size.is_multiple_of(DELTA_PAGE) {
        return Vec::new();
    }
    let pages_per_chunk = (chunk_size / DELTA_PAGE) as u32;
    let mut pages: HashMap<usize, Vec<u32>> = HashMap::new();
    for page in written {
        pages
            .entry((page / pages_per_chunk) as usize)
            .or_default()
            .push(page % pages_per_chunk);
    }
    let mut candidates = Vec::new();
    for &(index, bytes) in changes.chunks {
        let index = index as usize;
        let Some(written) = pages.remove(&index) else {
            continue;
        };
        if chunk_len_in(base.memory_bytes, changes.chunk_size, index as u64) != bytes.len() as u64 {
            continue;
        }
        let previous = base
            .chunk_hashes
            .get(index)
            .and_then(|entry| ChunkHash::from_manifest_entry(entry).ok().flatten());
        candidates.push((index, previous, written));
    }
    candidates
}

impl CheckpointStore {
    /// The deltas worth keeping among `candidates` (see
    /// [`delta_candidates`]), each with its body appended to a pack: the
    /// pages gathered from `changes`, compressed where that halves them.
    /// Over a chunk that is a delta itself, a delta names that one's base
    /// and the pages of both. A body appended for a chunk the put then
    /// finds stored already is never indexed (dead bytes in its pack).
    fn prepare_deltas(
        &self,
        candidates: Vec<(usize, Option<ChunkHash>, Vec<u32>)>,
        changes: &ChangedMemory<'_>,
    ) -> Result<PreparedDeltas, CheckpointError> {
        let mut encoder = StreamEncoder::paying_below(self.options.compression_level, DELTA_PAYS_SIXTEENTHS)?;
        let mut sparse = ChunkEncoder::new(self.options.compression_level)?;
        let mut deltas = Vec::with_capacity(candidates.len());
        let mut bodies = Vec::with_capacity(candidates.len());
        for (index, previous, mut pages) in candidates {
            let over = match previous {
                None => None,
                Some(previous) => {
                    let Some(value) = self.chunks.get(previous.as_bytes())? else {
                        continue;
                    };
                    match Delta::decode(&value) {
                        None => Some(previous),
                        Some(Ok(earlier)) => {
                            pages = earlier.merged(&pages);
                            earlier.base
                        }
                        Some(Err(_)) => continue,
                    }
                }
            };
            pages.sort_unstable();
            pages.dedup();
            let Some(chunk) = changes.chunk(index) else {
                continue;
            };
            if let Some(delta) = Delta::worth_keeping(over, chunk.len(), pages) {
                let pages = delta.gather(chunk);
                // Mostly zeros (fresh pages of a heap) always shrinks.
                let encoded = if mostly_zeros(&pages) {
                    sparse.encode(&pages)?
                } else {
                    encoder.encode(&pages)?
                };
                bodies.push(encoded);
                deltas.push((index, delta));
            }
        }
        // Appended now, in one write, and on their way to disk while the
        // chunks are hashed: the commit's sync finds them written.
        let body_refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let appended = self.packs.append_all(&body_refs)?;
        self.packs.write_back_soon();
        let prepared = deltas
            .into_iter()
            .zip(appended)
            .zip(&bodies)
            .map(|(((index, delta), appended), body)| (index, (delta, appended, body.len() as u64)))
            .collect();
        Ok(prepared)
    }
}

/// Whether at least half of the 8-byte words of `bytes` are zero.
fn mostly_zeros(bytes: &[u8]) -> bool {
    let words = bytes.chunks_exact(8);
    let zero = words.clone().filter(|word| *word == [0u8; 8]).count();
    zero * 2 >= words.len()
}

/// The length of chunk `index` of the changed memory (the last may be short).
fn chunk_len(changes: &ChangedMemory<'_>, index: u64) -> u64 {
    chunk_len_in(changes.memory_bytes, changes.chunk_size, index)
}

/// The length of chunk `index` of a memory of `memory_bytes` cut in
/// `chunk_size` chunks (0 past its end).
fn chunk_len_in(memory_bytes: u64, chunk_size: u32, index: u64) -> u64 {
    let chunk_size = u64::from(chunk_size);
    memory_bytes.saturating_sub(index * chunk_size).min(chunk_size)
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
