//! Reading a checkpoint's memory out of the store:
//! [`CheckpointStore::read_memory_into`] (a restore, or a load: every
//! stored chunk decoded straight into its place in the memory, by the
//! thread that reads it; `before_each` runs on that thread first, with
//! which a restore has the chunk's pages allocated) and
//! [`CheckpointStore::verify_memory`] (the check before a restore: each
//! chunk not yet trusted decoded into a buffer of its thread and checked).
//!
//! A memory of many chunks is decoded on two threads: both take groups of
//! chunks from one queue, in memory order, until none is left or a chunk
//! failed anywhere. A raw (incompressible) chunk is read from its pack by
//! one `preadv`, its codec byte apart and its bytes in place, so each byte
//! moves once. Inflating and hashing are most of a load of compressible
//! memory (about 96 ms of zstd for a 64 MiB heap on this project's
//! machine), and a restore or a hub's start-up has the cores to itself
//! meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use super::{CheckpointStore, memory_len};
use crate::checkpoint::chunking::cores;
use crate::checkpoint::codec::{ChunkDecoder, verify_chunk};
use crate::checkpoint::manifest::describe;
use crate::checkpoint::{CheckpointError, CheckpointManifest, ChunkHash};

/// Memories of fewer stored chunks than this are read on one thread.
const PARALLEL_FROM: usize = 64;
/// The two threads take the chunks of a memory in groups of this many, so
/// that each reads the packs in order.
const GROUP: usize = 8;

/// One stored (non-zero) chunk of a checkpoint's memory.
struct StoredChunk {
    index: usize,
    offset: u64,
    len: usize,
    hash: ChunkHash,
}

/// What a reader runs, on the thread that decodes a chunk, before it
/// decodes it: `(offset, len)` of the chunk in the memory. A restore has the
/// chunk's pages allocated there, ahead of the read into them.
pub type BeforeEach<'a> = &'a (dyn Fn(u64, usize) + Sync);

/// A decoding thread's own buffers: its decoder, room for bodies that are
/// not read in place, and a chunk's room for chunks that have no place;
/// and what runs before each chunk.
struct Decoding<'a> {
    decoder: ChunkDecoder,
    scratch: Vec<u8>,
    chunk: Vec<u8>,
    before_each: BeforeEach<'a>,
}

impl<'a> Decoding<'a> {
    fn new(before_each: BeforeEach<'a>) -> Result<Decoding<'a>, CheckpointError> {
        Ok(Decoding {
            decoder: ChunkDecoder::new()?,
            scratch: Vec::new(),
            chunk: Vec::new(),
            before_each,
        })
    }
}

/// The stored chunks of the memory `manifest` describes, in memory order,
/// and the offsets of its all-zero chunks (never stored).
fn stored_chunks(manifest: &CheckpointManifest) -> Result<(Vec<StoredChunk>, Vec<u64>), CheckpointError> {
    let memory_len = memory_len(manifest)? as u64;
    let chunk_size = u64::from(manifest.chunk_size);
    let (mut stored, mut zero) = (Vec::new(), Vec::new());
    for (index, entry) in manifest.chunk_hashes.iter().enumerate() {
        let offset = index as u64 * chunk_size;
        match ChunkHash::from_manifest_entry(entry).ok().flatten() {
            Some(hash) => stored.push(StoredChunk {
                index,
                offset,
                len: chunk_size.min(memory_len - offset) as usize,
                hash,
            }),
            None => zero.push(offset),
        }
    }
    Ok((stored, zero))
}

impl CheckpointStore {
    /// The linear memory `manifest` describes, every chunk checked against
    /// its hash after decompression — except chunks this store already
    /// checked (see `trusted.rs`). Changes nothing, whatever it finds.
    pub fn load_memory(&self, manifest: &CheckpointManifest) -> Result<Vec<u8>, CheckpointError> {
        let mut memory = vec![0u8; memory_len(manifest)?];
        // Zero chunks stay as allocated.
        self.read_memory_into(manifest, &mut memory, &|_, _| {})?;
        Ok(memory)
    }

    /// Decodes the memory `manifest` describes straight into `memory` (as
    /// long as it): each stored chunk checked like
    /// [`CheckpointStore::load_memory`] does and written once, into its
    /// place, by the thread that reads it — many chunks on two threads, both
    /// reading and writing. `before_each(offset, len)` runs on that thread
    /// first. All-zero chunks are not written: their offsets are returned.
    /// On an error `memory` holds some chunks and not others.
    pub fn read_memory_into(
        &self,
        manifest: &CheckpointManifest,
        memory: &mut [u8],
        before_each: BeforeEach<'_>,
    ) -> Result<Vec<u64>, CheckpointError> {
        let len = memory_len(manifest)?;
        if memory.len() != len {
            return Err(CheckpointError::InvalidCheckpoint {
                reason: format!(
                    "{} holds {len} bytes of memory, the instance {}",
                    describe(manifest),
                    memory.len()
                ),
            });
        }
        let (stored, zero) = stored_chunks(manifest)?;
        let mut places: Vec<Option<&mut [u8]>> = memory.chunks_mut(manifest.chunk_size as usize).map(Some).collect();
        let mut work = Vec::with_capacity(stored.len());
        for chunk in &stored {
            let place = places.get_mut(chunk.index).and_then(Option::take).ok_or_else(|| {
                CheckpointError::InvalidCheckpoint {
                    reason: format!(
                        "{} lists chunk {} twice or past its end",
                        describe(manifest),
                        chunk.index
                    ),
                }
            })?;
            work.push((chunk, place));
        }
        self.on_decoding_threads(work, before_each, |(chunk, place), decoding, verified| {
            self.decode_chunk_in_place(manifest, chunk, decoding, place, verified)
        })?;
        Ok(zero)
    }

    /// Checks, without keeping any of it, that the memory `manifest`
    /// describes loads: every chunk is present, and each one this store
    /// has not checked yet decodes to its hash (and is trusted from now
    /// on). What a restore calls before it commits to a checkpoint.
    pub fn verify_memory(&self, manifest: &CheckpointManifest) -> Result<(), CheckpointError> {
        let (stored, _) = stored_chunks(manifest)?;
        let mut unchecked = Vec::new();
        for chunk in stored {
            if !self.trusted.contains(&chunk.hash) {
                unchecked.push(chunk);
            } else if !self.chunks.contains_key(chunk.hash.as_bytes())? {
                let StoredChunk { index, hash, .. } = chunk;
                tracing::warn!(checkpoint = %describe(manifest), chunk = index, %hash, "checkpoint chunk missing");
                return Err(CheckpointError::ChunkMissing { hash });
            }
        }
        let chunk_size = manifest.chunk_size as usize;
        self.on_decoding_threads(unchecked, &|_, _| {}, |chunk, decoding, verified| {
            let mut room = std::mem::take(&mut decoding.chunk);
            room.resize(chunk_size, 0);
            let decoded = self
                .decode_chunk(manifest, &chunk, decoding, &mut room, verified)
                .map(|_| ());
            decoding.chunk = room;
            decoded
        })
    }

    /// Runs `decode` on each item of `work`, in groups of [`GROUP`] taken
    /// in order from one queue: on the caller's thread and, for many
    /// items, a helper's, each with its own [`Decoding`]. Stops at the
    /// first failure anywhere and returns it. The chunks checked are
    /// trusted afterwards, even when a later one failed.
    fn on_decoding_threads<W: Send>(
        &self,
        work: Vec<W>,
        before_each: BeforeEach<'_>,
        decode: impl Fn(W, &mut Decoding<'_>, &mut Vec<ChunkHash>) -> Result<(), CheckpointError> + Sync,
    ) -> Result<(), CheckpointError> {
        let two_threads = work.len() >= PARALLEL_FROM && cores() >= 2;
        let mut groups = Vec::with_capacity(work.len().div_ceil(GROUP));
        let mut work = work.into_iter().peekable();
        while work.peek().is_some() {
            groups.push(work.by_ref().take(GROUP).collect::<Vec<_>>());
        }
        let queue = Mutex::new(groups.into_iter());
        let stop = AtomicBool::new(false);
        // Takes groups until none is left or an item failed anywhere.
        let take_groups = |verified: &mut Vec<ChunkHash>| -> Result<(), CheckpointError> {
            let mut decoding = Decoding::new(before_each)?;
            while !stop.load(Ordering::Relaxed) {
                let Some(group) = queue.lock().unwrap_or_else(PoisonError::into_inner).next() else {
                    break;
                };
                for item in group {
                    if let Err(error) = decode(item, &mut decoding, verified) {
                        stop.store(true, Ordering::Relaxed);
                        return Err(error);
                    }
                }
            }
            Ok(())
        };
        let mut verified = Vec::new();
        let result = if two_threads {
            std::thread::scope(|scope| {
                let helper = scope.spawn(|| {
                    let mut verified = Vec::new();
                    let result = take_groups(&mut verified);
                    (result, verified)
                });
                let own = take_groups(&mut verified);
                let (helper_result, helper_verified) =
                    helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                verified.extend(helper_verified);
                own.and(helper_result)
            })
        } else {
            take_groups(&mut verified)
        };
        self.trusted.trust(verified);
        result
    }

    /// `chunk` of `manifest` decoded into `slot` (at least a chunk long)
    /// and — unless this store trusts it — checked against its hash (and
    /// noted in `verified`): the chunk's bytes, the start of `slot`.
    fn decode_chunk<'s>(
        &self,
        manifest: &CheckpointManifest,
        chunk: &StoredChunk,
        decoding: &mut Decoding<'_>,
        slot: &'s mut [u8],
        verified: &mut Vec<ChunkHash>,
    ) -> Result<&'s [u8], CheckpointError> {
        let StoredChunk {
            ref hash, len, offset, ..
        } = *chunk;
        (decoding.before_each)(offset, len);
        let slot = &mut slot[..len];
        let decoded = self.decode_in_place(hash, &mut decoding.decoder, &mut decoding.scratch, slot);
        let bytes = &*slot;
        self.check_decoded(manifest, chunk, decoded, bytes, verified)?;
        Ok(bytes)
    }

    /// [`CheckpointStore::decode_chunk`] straight into `place`, the chunk's
    /// bytes in the memory being restored.
    fn decode_chunk_in_place(
        &self,
        manifest: &CheckpointManifest,
        chunk: &StoredChunk,
        decoding: &mut Decoding<'_>,
        place: &mut [u8],
        verified: &mut Vec<ChunkHash>,
    ) -> Result<(), CheckpointError> {
        (decoding.before_each)(chunk.offset, chunk.len);
        let decoded = self.decode_in_place(&chunk.hash, &mut decoding.decoder, &mut decoding.scratch, place);
        self.check_decoded(manifest, chunk, decoded, place, verified)
    }

    /// What `decoded` (the outcome of decoding `chunk` into `bytes`) means:
    /// a missing or damaged body, or `bytes` checked against the chunk's
    /// hash unless this store trusts it (and noted in `verified`). Each
    /// failure is logged with the checkpoint it belongs to.
    fn check_decoded(
        &self,
        manifest: &CheckpointManifest,
        chunk: &StoredChunk,
        decoded: Result<(), CheckpointError>,
        bytes: &[u8],
        verified: &mut Vec<ChunkHash>,
    ) -> Result<(), CheckpointError> {
        let StoredChunk { index, ref hash, .. } = *chunk;
        let what = || format!("chunk {index} ({hash}) of {}", describe(manifest));
        match decoded {
            Ok(()) => {}
            Err(CheckpointError::ChunkMissing { hash }) => {
                tracing::warn!(checkpoint = %describe(manifest), chunk = index, %hash, "checkpoint chunk missing");
                return Err(CheckpointError::ChunkMissing { hash });
            }
            Err(CheckpointError::Corrupt { reason, .. }) => {
                tracing::warn!(what = %what(), %reason, "checkpoint chunk does not verify");
                return Err(CheckpointError::corrupt(what(), reason));
            }
            Err(error) => return Err(error),
        }
        let trusted = self.trusted.contains(hash);
        if let Err(reason) = if trusted { Ok(()) } else { verify_chunk(bytes, hash) } {
            tracing::warn!(what = %what(), %reason, "checkpoint chunk does not verify");
            return Err(CheckpointError::corrupt(what(), reason));
        }
        if !trusted {
            verified.push(*hash);
        }
        Ok(())
    }
}
