//! Cutting linear memory into chunks: all-zero detection, BLAKE3 names, and
//! the [`Fingerprints`] that let the next checkpoint hash only what changed.
//!
//! Pure functions, no I/O.

use std::fmt;
use std::hash::{BuildHasher, RandomState};

use twox_hash::XxHash3_128;

use super::{
    CheckpointError, CheckpointManifest, ChunkHash,
    manifest::{chunk_list_digest, validate_chunk_size},
};

/// Number of chunks of `chunk_size` bytes that cover `memory_bytes` (the last
/// one may be shorter); 0 for a chunk size of 0.
pub fn chunk_count(memory_bytes: u64, chunk_size: u32) -> u64 {
    if chunk_size == 0 {
        return 0;
    }
    memory_bytes.div_ceil(u64::from(chunk_size))
}

/// True when every byte is zero. Reads 8-byte words in blocks of 256 bytes
/// and stops at the first block with a set bit.
pub fn is_zero_chunk(bytes: &[u8]) -> bool {
    const WORDS_PER_BLOCK: usize = 32;
    let (words, tail) = bytes.as_chunks::<8>();
    for block in words.chunks(WORDS_PER_BLOCK) {
        let any_bits = block.iter().fold(0u64, |bits, word| bits | u64::from_ne_bytes(*word));
        if any_bits != 0 {
            return false;
        }
    }
    tail.iter().all(|&byte| byte == 0)
}

/// The name of a chunk: the BLAKE3 of its bytes.
pub fn hash_chunk(bytes: &[u8]) -> ChunkHash {
    ChunkHash(*blake3::hash(bytes).as_bytes())
}

/// The cores this process may use, asked once (on Linux the answer reads
/// cgroup files): what decides whether hashing or a load splits its work.
pub(crate) fn cores() -> usize {
    static CORES: std::sync::LazyLock<usize> =
        std::sync::LazyLock::new(|| std::thread::available_parallelism().map_or(1, usize::from));
    *CORES
}

/// Rounds of fewer chunks are hashed on one thread by [`hash_chunks`].
const PARALLEL_FROM: usize = 64;
/// The most threads [`hash_chunks`] uses.
const MAX_THREADS: usize = 4;

/// [`hash_chunk`] of each chunk, `None` for a zero one. Many chunks (a
/// whole memory) are split over the machine's cores: on a move's first
/// round the destination waits for these hashes before it gets any chunk.
pub fn hash_chunks(chunks: &[&[u8]]) -> Vec<Option<ChunkHash>> {
    let hash = |bytes: &&[u8]| (!is_zero_chunk(bytes)).then(|| hash_chunk(bytes));
    let threads = cores().min(MAX_THREADS);
    if threads < 2 || chunks.len() < PARALLEL_FROM {
        return chunks.iter().map(hash).collect();
    }
    let per_thread = chunks.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let others: Vec<_> = chunks
            .chunks(per_thread)
            .skip(1)
            .map(|part| scope.spawn(move || part.iter().map(hash).collect::<Vec<_>>()))
            .collect();
        let mut hashes: Vec<_> = chunks[..per_thread].iter().map(hash).collect();
        for other in others {
            hashes.extend(other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        hashes
    })
}

/// Chunks a thread of [`hash_chunks_beside`] takes at a time.
const BESIDE_GROUP: usize = 8;

/// [`hash_chunks`] of `chunks`, and `job` run meanwhile on a thread of its
/// own that then helps with the hashing: every core busy until both are
/// done, whichever is longer. The threads take groups of chunks from a
/// shared counter. Few chunks: the job, then the hashing, on the caller's
/// thread.
pub(crate) fn hash_chunks_beside<T: Send>(
    chunks: &[&[u8]],
    job: impl FnOnce() -> T + Send,
) -> (Vec<Option<ChunkHash>>, T) {
    let threads = cores().min(MAX_THREADS);
    if threads < 2 || chunks.len() < PARALLEL_FROM {
        let done = job();
        return (hash_chunks(chunks), done);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let take = || {
        let mut hashed = Vec::new();
        loop {
            let first = next.fetch_add(BESIDE_GROUP, std::sync::atomic::Ordering::Relaxed);
            let Some(group) = chunks.get(first..(first + BESIDE_GROUP).min(chunks.len())) else {
                break;
            };
            if group.is_empty() {
                break;
            }
            for (at, bytes) in group.iter().enumerate() {
                hashed.push((first + at, (!is_zero_chunk(bytes)).then(|| hash_chunk(bytes))));
            }
        }
        hashed
    };
    std::thread::scope(|scope| {
        let job = scope.spawn(|| (job(), take()));
        let helpers: Vec<_> = (2..threads).map(|_| scope.spawn(take)).collect();
        let mut hashes = vec![None; chunks.len()];
        let mut place = |hashed: Vec<(usize, Option<ChunkHash>)>| {
            for (at, hash) in hashed {
                hashes[at] = hash;
            }
        };
        place(take());
        for helper in helpers {
            place(helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        let (done, hashed) = job.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        place(hashed);
        (hashes, done)
    })
}

/// One fast 128-bit hash (seeded XXH3-128) per chunk of the memory of one
/// checkpoint, kept in RAM by the caller until the next checkpoint of the
/// same function.
///
/// Passed back with the manifest it was computed for, it lets the next
/// checkpoint reuse the hash of every chunk whose fingerprint did not change
/// instead of hashing, compressing and writing it again. It is bound to that
/// manifest's chunk list: paired with another manifest it is refused.
#[derive(Clone)]
pub struct Fingerprints {
    seed: u64,
    chunk_size: u32,
    manifest_digest: [u8; 32],
    /// One per chunk; meaningless (0) where the manifest entry is empty.
    values: Vec<u128>,
}

impl Fingerprints {
    /// Fingerprints of `memory`, which must be the memory `manifest`
    /// describes (e.g. what [`CheckpointStore::load_memory`] returned for
    /// it), so that a restored function's first checkpoint is incremental.
    ///
    /// [`CheckpointStore::load_memory`]: super::CheckpointStore::load_memory
    pub fn compute(manifest: &CheckpointManifest, memory: &[u8]) -> Result<Fingerprints, CheckpointError> {
        validate_chunk_size(manifest.chunk_size)?;
        if memory.len() as u64 != manifest.memory_bytes {
            return Err(CheckpointError::BaseMismatch {
                reason: format!(
                    "memory is {} bytes, the manifest says {}",
                    memory.len(),
                    manifest.memory_bytes
                ),
            });
        }
        let chunks = memory.chunks(manifest.chunk_size as usize);
        if chunks.len() != manifest.chunk_hashes.len() {
            return Err(CheckpointError::BaseMismatch {
                reason: format!(
                    "{} chunks, the manifest names {}",
                    chunks.len(),
                    manifest.chunk_hashes.len()
                ),
            });
        }
        let seed = random_seed();
        let values = chunks
            .zip(&manifest.chunk_hashes)
            .map(|(chunk, entry)| {
                if entry.is_empty() {
                    0
                } else {
                    XxHash3_128::oneshot_with_seed(seed, chunk)
                }
            })
            .collect();
        Ok(Fingerprints {
            seed,
            chunk_size: manifest.chunk_size,
            manifest_digest: chunk_list_digest(manifest),
            values,
        })
    }

    /// Number of chunks covered.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when the memory had no chunk (zero pages).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The chunk size the fingerprints were computed with.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// True when these fingerprints were computed for `manifest`.
    pub fn describes(&self, manifest: &CheckpointManifest) -> bool {
        self.chunk_size == manifest.chunk_size && self.manifest_digest == chunk_list_digest(manifest)
    }
}

impl fmt::Debug for Fingerprints {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Fingerprints")
            .field("chunk_size", &self.chunk_size)
            .field("chunks", &self.values.len())
            .finish_non_exhaustive()
    }
}

/// A random seed, so that a guest cannot precompute fingerprint collisions.
fn random_seed() -> u64 {
    RandomState::new().hash_one(0x6665_7272_795f_6670_u64)
}

/// The result of cutting one memory image into chunks.
#[derive(Debug, Clone)]
pub struct MemoryScan {
    /// One entry per chunk: `None` for an all-zero chunk.
    pub chunk_hashes: Vec<Option<ChunkHash>>,
    /// Chunks whose BLAKE3 was computed by this scan (not zero, and new or
    /// changed since the base): the only ones that may need writing.
    pub hashed_chunks: Vec<usize>,
    /// All-zero chunks.
    pub zero_chunks: u64,
    /// Non-zero chunks whose fingerprint matched the base: their hash was
    /// reused without reading them again.
    pub unchanged_chunks: u64,
    /// Bytes fed to BLAKE3.
    pub bytes_hashed: u64,
    /// Bytes fed to XXH3 (every non-zero chunk).
    pub bytes_fingerprinted: u64,
    seed: u64,
    fingerprint_values: Vec<u128>,
}

impl MemoryScan {
    /// The chunk hashes as manifest entries (empty for a zero chunk).
    pub fn manifest_entries(&self) -> Vec<Vec<u8>> {
        self.chunk_hashes
            .iter()
            .map(|hash| hash.map(|hash| hash.0.to_vec()).unwrap_or_default())
            .collect()
    }

    /// A scan made from known hashes (a checkpoint from changes):
    /// `hashed_chunks` lists the non-zero chunks whose BLAKE3 was computed,
    /// ascending; it has no fingerprints.
    pub(crate) fn from_hashes(
        chunk_hashes: Vec<Option<ChunkHash>>,
        hashed_chunks: Vec<usize>,
        bytes_hashed: u64,
        nonzero_bytes: u64,
    ) -> MemoryScan {
        let zero_chunks = chunk_hashes.iter().filter(|hash| hash.is_none()).count() as u64;
        let nonzero_chunks = chunk_hashes.len() as u64 - zero_chunks;
        MemoryScan {
            unchanged_chunks: nonzero_chunks.saturating_sub(hashed_chunks.len() as u64),
            chunk_hashes,
            hashed_chunks,
            zero_chunks,
            bytes_hashed,
            bytes_fingerprinted: nonzero_bytes,
            seed: 0,
            fingerprint_values: Vec::new(),
        }
    }

    /// Replaces the hash of chunk `index` after it was hashed again, e.g.
    /// because the store lacked the chunk the base named.
    pub(crate) fn rehashed(&mut self, index: usize, hash: ChunkHash, chunk_len: u64) {
        if let Some(entry) = self.chunk_hashes.get_mut(index) {
            *entry = Some(hash);
        }
        self.bytes_hashed += chunk_len;
        if let Err(position) = self.hashed_chunks.binary_search(&index) {
            self.hashed_chunks.insert(position, index);
            self.unchanged_chunks = self.unchanged_chunks.saturating_sub(1);
        }
    }

    /// The fingerprints of the scanned memory, bound to `manifest`, the
    /// manifest whose chunk list is [`MemoryScan::manifest_entries`].
    pub fn into_fingerprints(self, manifest: &CheckpointManifest) -> Fingerprints {
        debug_assert_eq!(manifest.chunk_hashes, self.manifest_entries());
        Fingerprints {
            seed: self.seed,
            chunk_size: manifest.chunk_size,
            manifest_digest: chunk_list_digest(manifest),
            values: self.fingerprint_values,
        }
    }
}

/// Cuts `memory` into chunks of `chunk_size` bytes, detects the all-zero ones
/// and names the others by BLAKE3 — except, given a `base` (the previous
/// checkpoint's manifest and the fingerprints computed with it), the chunks
/// whose fingerprint is unchanged: those reuse the base's hash.
///
/// A base with another chunk size is ignored (the scan is then full); a base
/// whose fingerprints do not describe its manifest is refused.
pub fn scan_memory(
    memory: &[u8],
    chunk_size: u32,
    base: Option<(&CheckpointManifest, &Fingerprints)>,
) -> Result<MemoryScan, CheckpointError> {
    validate_chunk_size(chunk_size)?;
    let base = match base {
        Some((manifest, fingerprints)) => {
            if !fingerprints.describes(manifest) {
                return Err(CheckpointError::BaseMismatch {
                    reason: format!(
                        "the fingerprints were not computed for {}",
                        super::manifest::describe(manifest)
                    ),
                });
            }
            if manifest.chunk_size == chunk_size {
                Some((manifest, fingerprints))
            } else {
                tracing::debug!(
                    base_chunk_size = manifest.chunk_size,
                    chunk_size,
                    "base has another chunk size; scanning all chunks"
                );
                None
            }
        }
        None => None,
    };
    let seed = base.map_or_else(random_seed, |(_, fingerprints)| fingerprints.seed);
    let chunks = memory.chunks(chunk_size as usize);
    let mut scan = MemoryScan {
        chunk_hashes: Vec::with_capacity(chunks.len()),
        hashed_chunks: Vec::new(),
        zero_chunks: 0,
        unchanged_chunks: 0,
        bytes_hashed: 0,
        bytes_fingerprinted: 0,
        seed,
        fingerprint_values: Vec::with_capacity(chunks.len()),
    };
    for (index, chunk) in chunks.enumerate() {
        if is_zero_chunk(chunk) {
            scan.chunk_hashes.push(None);
            scan.fingerprint_values.push(0);
            scan.zero_chunks += 1;
            continue;
        }
        let fingerprint = XxHash3_128::oneshot_with_seed(seed, chunk);
        scan.fingerprint_values.push(fingerprint);
        scan.bytes_fingerprinted += chunk.len() as u64;
        if let Some(base_hash) = base.and_then(|base| reusable_hash(base, index, fingerprint)) {
            scan.chunk_hashes.push(Some(base_hash));
            scan.unchanged_chunks += 1;
            continue;
        }
        scan.chunk_hashes.push(Some(hash_chunk(chunk)));
        scan.hashed_chunks.push(index);
        scan.bytes_hashed += chunk.len() as u64;
    }
    Ok(scan)
}

/// The base's hash of chunk `index` if the chunk was not zero there and its
/// fingerprint is unchanged.
fn reusable_hash(
    (manifest, fingerprints): (&CheckpointManifest, &Fingerprints),
    index: usize,
    fingerprint: u128,
) -> Option<ChunkHash> {
    let base_fingerprint = *fingerprints.values.get(index)?;
    if base_fingerprint != fingerprint {
        return None;
    }
    ChunkHash::from_manifest_entry(manifest.chunk_hashes.get(index)?)
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection_finds_a_single_set_bit_anywhere() {
        for length in [0usize, 1, 7, 8, 9, 255, 256, 257, 4096, 4099] {
            let zeros = vec![0u8; length];
            assert!(is_zero_chunk(&zeros), "{length} zero bytes");
            for position in [0, length / 2, length.saturating_sub(1)] {
                if position >= length {
                    continue;
                }
                let mut one_bit = zeros.clone();
                one_bit[position] = 0x80;
                assert!(!is_zero_chunk(&one_bit), "bit at {position} of {length}");
            }
        }
    }

    #[test]
    fn chunk_count_rounds_up_for_a_short_last_chunk() {
        let cases = [
            (0, 4096, 0),
            (4096, 4096, 1),
            (4097, 4096, 2),
            (65536, 65536, 1),
            (65536, 3000, 22),
            (1, 0, 0),
        ];
        for (memory_bytes, chunk_size, expected) in cases {
            assert_eq!(
                chunk_count(memory_bytes, chunk_size),
                expected,
                "{memory_bytes} / {chunk_size}"
            );
        }
    }

    #[test]
    fn scan_without_base_hashes_every_non_zero_chunk() -> Result<(), CheckpointError> {
        let mut memory = vec![0u8; 10 * 1000];
        memory[0] = 1;
        memory[5500] = 2;
        memory[9999] = 3;
        let scan = scan_memory(&memory, 1000, None)?;
        assert_eq!(scan.chunk_hashes.len(), 10);
        assert_eq!(scan.hashed_chunks, vec![0, 5, 9]);
        assert_eq!(scan.zero_chunks, 7);
        assert_eq!(scan.unchanged_chunks, 0);
        assert_eq!(scan.bytes_hashed, 3000);
        assert_eq!(scan.chunk_hashes[5], Some(hash_chunk(&memory[5000..6000])));
        Ok(())
    }

    #[test]
    fn hashing_beside_a_job_gives_what_hashing_alone_does_and_the_job_s_result() {
        for count in [0usize, 1, 7, 8, 9, 100] {
            let chunks: Vec<Vec<u8>> = (0..count)
                .map(|index| {
                    if index % 3 == 0 {
                        vec![0; 512]
                    } else {
                        vec![index as u8; 512]
                    }
                })
                .collect();
            let chunks: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let (hashes, done) = hash_chunks_beside(&chunks, || count * 2);
            assert_eq!(hashes, hash_chunks(&chunks), "{count} chunks");
            assert_eq!(done, count * 2);
        }
    }
}
