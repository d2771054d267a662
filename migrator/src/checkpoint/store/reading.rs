//! Reading a checkpoint's memory out of the store:
//! [`CheckpointStore::read_memory_into`] (a restore, or a load: every
//! stored chunk decoded straight into its place in the memory, by the
//! thread that reads it; `before_each` runs on that thread first, with
//! which a restore has the chunk's pages allocated),
//! [`CheckpointStore::read_memory`] (chunk by chunk into a sink) and
//! [`CheckpointStore::verify_memory`] (the check before a restore).
//!
//! A memory of many chunks is decoded on two threads. Into place, both
//! take groups of chunks from one queue and write their own chunks: a raw
//! (incompressible) chunk is read from its pack by one `preadv`, its codec
//! byte apart and its bytes in place, so each byte moves once. To a sink,
//! which runs on the caller's thread only, a helper decodes groups ahead
//! into buffers the caller then hands on, and the caller decodes a group
//! itself only when none waits; chunks reach the sink in no fixed order,
//! and a raw chunk is read straight into its decoding buffer. Inflating and hashing are most of a load of
//! compressible memory (about 96 ms of zstd for a 64 MiB heap on this
//! project's machine), and a restore or a hub's start-up has the cores to
//! itself meanwhile.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};

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
/// Decoded groups the helper may hold ahead of the caller (sent a group at
/// a time: one wake-up per group, not per chunk).
const AHEAD: usize = 4;

/// One stored (non-zero) chunk of a checkpoint's memory.
struct StoredChunk {
    index: usize,
    offset: u64,
    len: usize,
    hash: ChunkHash,
}

/// A group of chunks the helper decoded, with their bytes (each chunk in
/// its slot, at a multiple of the chunk size).
type Decoded<'a> = Result<(&'a [StoredChunk], Vec<u8>), CheckpointError>;

/// Where decoded chunks go, on the caller's thread.
type Sink<'a, E> = dyn FnMut(&StoredChunk, &[u8]) -> Result<(), E> + 'a;

/// What a reader runs, on the thread that decodes a chunk, before it
/// decodes it: `(offset, len)` of the chunk in the memory. A restore has the
/// chunk's pages allocated there, ahead of the read into them.
pub type BeforeEach<'a> = &'a (dyn Fn(u64, usize) + Sync);

/// A decoding thread's own buffers: its decoder, and room for bodies that
/// are not read in place; and what runs before each chunk.
struct Decoding<'a> {
    decoder: ChunkDecoder,
    scratch: Vec<u8>,
    before_each: BeforeEach<'a>,
}

impl<'a> Decoding<'a> {
    fn new(before_each: BeforeEach<'a>) -> Result<Decoding<'a>, CheckpointError> {
        Ok(Decoding {
            decoder: ChunkDecoder::new()?,
            scratch: Vec::new(),
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

    /// Streams the memory `manifest` describes chunk by chunk into
    /// `sink(offset, chunk)`, on the caller's thread and in no fixed order:
    /// each chunk decoded and checked like [`CheckpointStore::load_memory`]
    /// does, `None` for an all-zero chunk. A few chunk-sized buffers, no
    /// image of the whole memory.
    pub fn read_memory<E: From<CheckpointError>>(
        &self,
        manifest: &CheckpointManifest,
        mut sink: impl FnMut(u64, Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        let (stored, zero) = stored_chunks(manifest)?;
        for offset in zero {
            sink(offset, None)?;
        }
        self.decode_chunks(manifest, &stored, &|_, _| {}, |chunk, bytes| {
            sink(chunk.offset, Some(bytes))
        })
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
        let two_threads = work.len() >= PARALLEL_FROM && cores() >= 2;
        let mut groups = Vec::with_capacity(work.len().div_ceil(GROUP));
        let mut work = work.into_iter().peekable();
        while work.peek().is_some() {
            groups.push(work.by_ref().take(GROUP).collect::<Vec<_>>());
        }
        let queue = Mutex::new(groups.into_iter());
        let stop = AtomicBool::new(false);
        // Takes groups until none is left or a chunk failed anywhere.
        let decode = |verified: &mut Vec<ChunkHash>| -> Result<(), CheckpointError> {
            let mut decoding = Decoding::new(before_each)?;
            while !stop.load(Ordering::Relaxed) {
                let Some(group) = queue.lock().unwrap_or_else(PoisonError::into_inner).next() else {
                    break;
                };
                for (chunk, place) in group {
                    if let Err(error) = self.decode_chunk_in_place(manifest, chunk, &mut decoding, place, verified) {
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
                    let result = decode(&mut verified);
                    (result, verified)
                });
                let own = decode(&mut verified);
                let (helper_result, helper_verified) =
                    helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                verified.extend(helper_verified);
                own.and(helper_result)
            })
        } else {
            decode(&mut verified)
        };
        self.trusted.trust(verified);
        result.map(|()| zero)
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
        self.decode_chunks(manifest, &unchecked, &|_, _| {}, |_, _| Ok::<(), CheckpointError>(()))
    }

    /// Decodes (and, unless trusted, checks) each of `chunks` and hands it
    /// to `each` on the caller's thread; many chunks on two threads. The
    /// chunks checked are trusted afterwards, even when a later one fails.
    fn decode_chunks<E: From<CheckpointError>>(
        &self,
        manifest: &CheckpointManifest,
        chunks: &[StoredChunk],
        before_each: BeforeEach<'_>,
        mut each: impl FnMut(&StoredChunk, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let two_threads = chunks.len() >= PARALLEL_FROM && cores() >= 2;
        let mut verified = Vec::new();
        let result = if two_threads {
            self.decode_on_two_threads(manifest, chunks, before_each, &mut verified, &mut each)
        } else {
            let mut buffer = vec![0u8; manifest.chunk_size as usize];
            let mut decoding = Decoding::new(before_each)?;
            chunks.iter().try_for_each(|chunk| {
                let bytes = self.decode_chunk(manifest, chunk, &mut decoding, &mut buffer, &mut verified)?;
                each(chunk, bytes)
            })
        };
        self.trusted.trust(verified);
        result
    }

    /// [`CheckpointStore::decode_chunks`] with a helper thread. Both take
    /// the next group of chunks from a shared counter; the helper decodes
    /// its groups into spare buffers and sends them over, the caller hands
    /// those on first and decodes a group itself only when none wait. So
    /// when handing on is the slow part the helper decodes nearly all, and
    /// when decoding is, both do.
    fn decode_on_two_threads<E: From<CheckpointError>>(
        &self,
        manifest: &CheckpointManifest,
        chunks: &[StoredChunk],
        before_each: BeforeEach<'_>,
        verified: &mut Vec<ChunkHash>,
        each: &mut impl FnMut(&StoredChunk, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let stride = manifest.chunk_size as usize;
        let groups: Vec<&[StoredChunk]> = chunks.chunks(GROUP).collect();
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let (decoded, from_helper) = mpsc::sync_channel::<Decoded<'_>>(AHEAD);
            let (give_back, spare) = mpsc::channel::<Vec<u8>>();
            let (next, stop, groups) = (&next, &stop, &groups);
            let helper = scope.spawn(move || {
                let mut verified = Vec::new();
                let mut decoding = match Decoding::new(before_each) {
                    Ok(decoding) => decoding,
                    Err(error) => {
                        let _ = decoded.send(Err(error));
                        return verified;
                    }
                };
                while let Some(&group) = groups.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut buffer = spare.try_recv().unwrap_or_else(|_| vec![0u8; GROUP * stride]);
                    let outcome = group
                        .iter()
                        .zip(buffer.chunks_mut(stride))
                        .try_for_each(|(chunk, slot)| {
                            self.decode_chunk(manifest, chunk, &mut decoding, slot, &mut verified)
                                .map(|_| ())
                        });
                    let failed = outcome.is_err();
                    if decoded.send(outcome.map(|()| (group, buffer))).is_err() || failed {
                        break;
                    }
                }
                verified
            });
            let hand_on = |message: Decoded<'_>, each: &mut Sink<'_, E>| {
                let (group, buffer) = message?;
                for (chunk, slot) in group.iter().zip(buffer.chunks(stride)) {
                    each(chunk, &slot[..chunk.len])?;
                }
                let _ = give_back.send(buffer);
                Ok::<(), E>(())
            };
            let mut buffer = vec![0u8; stride];
            let mut decoding = Decoding::new(before_each)?;
            let mut own = || -> Result<(), E> {
                loop {
                    while let Ok(message) = from_helper.try_recv() {
                        hand_on(message, each)?;
                    }
                    let Some(group) = groups.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    for chunk in group.iter() {
                        let bytes = self.decode_chunk(manifest, chunk, &mut decoding, &mut buffer, verified)?;
                        each(chunk, bytes)?;
                    }
                }
                // The helper's last groups: it hangs up when it has sent them
                // (or why it stopped).
                while let Ok(message) = from_helper.recv() {
                    hand_on(message, each)?;
                }
                Ok(())
            };
            let result = own();
            // A failure here stops the helper; dropping the receiver frees
            // it from a full channel.
            stop.store(true, Ordering::Relaxed);
            drop(from_helper);
            let helper_verified = helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            verified.extend(helper_verified);
            result
        })
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
