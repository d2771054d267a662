//! The checkpoint format and its content-addressed store.
//!
//! A checkpoint is everything needed to resume a function exactly where it
//! stopped: a [`CheckpointManifest`] (protobuf, `ferry/v1/checkpoint.proto`:
//! spec, module hash, epoch, sequence, globals, host state, the Asyncify stack
//! data, the memory size and one hash per memory chunk, the volume's files
//! with their chunk hashes and the open descriptors) plus the chunks of
//! linear memory and of files it names. This module is pure data and sled: it never runs a
//! module and never opens a socket.
//!
//! - [`chunking`]: cutting memory into chunks, all-zero detection, BLAKE3
//!   naming and the [`Fingerprints`] that make the next checkpoint incremental.
//! - [`manifest`]: the framed encoding of a manifest and its validation
//!   ([`decode_manifest`] is a pure function, the place to fuzz).
//! - [`codec`]: the encoding of one chunk at rest and on the wire.
//! - [`store`]: [`CheckpointStore`], chunks stored once with reference counts,
//!   manifests per function and sequence, garbage collection.
//! - [`volume`]: the files part of a manifest (a volume's entries, the open
//!   descriptors) and its validation. File chunks are chunks like memory's:
//!   everything the store counts goes through `distinct_chunks`, which
//!   names both.
//!
//! # Decisions
//!
//! - **Framing.** A manifest at rest and on the wire is `BLAKE3(encoding) ‖
//!   encoding` ([`encode_manifest`]); the framing never changes between format
//!   versions. [`decode_manifest`] checks, in order: the length, the checksum,
//!   the protobuf, `format_version` (any other version is refused with
//!   [`CheckpointError::UnsupportedVersion`] naming both: a reader never
//!   guesses), then the content ([`validate_manifest`]).
//! - **What a valid manifest is.** `spec` with a non-empty name free of NUL
//!   bytes, a non-empty `module_hash`, `memory_bytes` a multiple of 64 KiB (the
//!   wasm page) and at most 4 GiB, `0 < chunk_size ≤ 16 MiB`
//!   ([`MAX_CHUNK_SIZE`], which also bounds what one chunk may decompress to),
//!   exactly `ceil(memory_bytes / chunk_size)` chunk hashes each empty (an
//!   all-zero chunk) or 32 bytes, globals strictly increasing by index each
//!   with a value (a `v128` of 16 bytes), a `host` with a `pending` call
//!   (a checkpoint is always taken inside a host call), and — if it has a
//!   volume — entries strictly increasing by path, each path relative and
//!   normalised and in a directory listed before it, a file with
//!   `ceil(size / chunk_size)` hashes, a symlink with a relative target;
//!   descriptors strictly increasing, each with a kind and (for a file) a
//!   normalised path.
//! - **Chunks.** Memory is cut into `chunk_size` chunks ([`DEFAULT_CHUNK_SIZE`]
//!   = 64 KiB, one wasm page; the last chunk may be shorter). All-zero chunks
//!   are elided (empty hash) and never stored; every other chunk is named by
//!   the BLAKE3 of its uncompressed bytes. At rest a chunk is one codec byte
//!   followed by a zstd frame (level 1: checkpoints sit on the downtime path,
//!   and level 1 already removes most of what memory pages waste) or, when
//!   compression does not pay, the raw bytes ([`encode_chunk`]). The same
//!   bytes travel on the wire, so a chunk is compressed once.
//! - **Verification.** Every read verifies: a manifest by its checksum and
//!   validation, a chunk by decompressing into a buffer of exactly its
//!   expected length (decompression stops at the buffer's end, so a hostile
//!   frame cannot balloon) and comparing the BLAKE3 of the result with its
//!   name. A failure names the chunk (index, hash, function, sequence);
//!   nothing is changed by a read.
//! - **Errors** ([`CheckpointError`], a `ServiceError`): `Corrupt` and
//!   `ChunkMissing` are `DataLoss`; `UnsupportedVersion` is
//!   `FailedPrecondition` (the data may be fine, this build cannot read it);
//!   `InvalidCheckpoint` (a caller's template or memory breaks a rule) and
//!   `BaseMismatch` are `InvalidArgument`; `AlreadyExists` (another manifest
//!   under the same function and sequence) is `AlreadyExists`; sled and zstd
//!   set-up failures are `Internal`.
//! - **Incremental checkpoints.** [`Fingerprints`] hold one XXH3-128 per chunk
//!   (`twox-hash`, which picks AVX2 at run time: ≈ 1.6× the speed of BLAKE3
//!   here, close to one plain read of memory), computed while cutting memory,
//!   and are kept in RAM by the caller from one checkpoint to the next (16
//!   bytes per chunk: 16 KiB for 64 MiB). A chunk whose fingerprint is
//!   unchanged reuses the previous manifest's hash and is neither hashed with
//!   BLAKE3, compressed nor written; every other chunk is. A base whose
//!   chunks were collected meanwhile is harmless: the commit finds them
//!   missing and they are hashed and written again from memory. The
//!   exactness argument: an all-zero chunk
//!   is found by reading it (never by fingerprint), and a changed chunk is
//!   skipped only if its XXH3-128 collides with the old content's, a 2⁻¹²⁸
//!   event for data not built to collide. The hash is seeded with a random
//!   64-bit seed per chain of fingerprints, so a guest cannot precompute
//!   collisions; a guest that still forged one would only make its *own*
//!   restored memory wrong, since the reused chunk is its own earlier
//!   content. Fingerprints are bound to the manifest they were computed with
//!   (a digest of its chunk list): a mismatched pair is refused
//!   ([`CheckpointError::BaseMismatch`]) rather than trusted.
//! - **Checkpoints from changes.** [`CheckpointStore::put_changes`] takes
//!   the chunks a dirty-page tracker reports ([`ChangedMemory`]) and the
//!   previous checkpoint of the same capture chain as base: the base's hash
//!   for every chunk not listed, a BLAKE3 of each listed one. Nothing
//!   unchanged is read. The caller guarantees the base is the checkpoint of
//!   the tracker's previous capture (the hub does, see
//!   `Supervisor::checkpoint`); the store checks what it can (function,
//!   chunk size, a memory that did not shrink, chunk lengths and order).
//! - **Reading.** [`CheckpointStore::read_memory_into`] decodes a
//!   checkpoint's memory chunk by chunk straight into a memory (a restore
//!   writes each chunk into its instance); [`CheckpointStore::load_memory`]
//!   collects it into one image; [`CheckpointStore::verify_memory`] checks
//!   it without keeping it. Each chunk is checked against its hash unless this store
//!   (or a clone) checked it already — wrote it from bytes it hashed, took
//!   it in verified, or verified it at an earlier read; see
//!   `store/trusted.rs` for why that is safe. A store opened anew trusts
//!   nothing, so what a hub finds on disk after a restart is verified.
//! - **Cost.** A checkpoint from changes reads, hashes and writes only the
//!   changed chunks, and its commit changes the counts of the chunks its
//!   function's earlier checkpoints did not name. A `put` with fingerprints
//!   still reads all of memory once (the XXH3 pass). Figures in
//!   BENCHMARKS.md (`--bench checkpoint_store`).
//! - **Store layout** (one `sled::Db` and one pack directory passed in by
//!   the hub, five trees): `checkpoint_chunks` (hash → where the encoded
//!   chunk is in a pack file, see `store/packs.rs`), `checkpoint_chunk_refs`
//!   (hash → u64 big-endian: the number of *holders* of the chunk),
//!   `checkpoints` (`function ‖ 0x00 ‖ sequence u64 big-endian` → framed
//!   manifest), so a prefix scan lists one function's checkpoints in order,
//!   `checkpoint_holders` and `checkpoint_staged`. A holder is a function
//!   (one reference on each chunk any of its checkpoints names, however
//!   many name it), a staged set of a move, or a checkpoint stored before
//!   holders existed (one reference per chunk it names).
//! - **Crash safety.** A put writes new chunks first, then in one sled
//!   transaction checks that every chunk the manifest names is present,
//!   adds the chunks new to the function's holder (one reference each),
//!   inserts the manifest, then flushes
//!   before returning: a returned checkpoint survives `kill -9`, and a manifest
//!   is never visible before its chunks. A failed or interrupted put leaves at
//!   most unreferenced chunks behind; the put removes those it wrote on
//!   failure, and [`CheckpointStore::collect_garbage`] (run at hub start)
//!   removes any left by a crash. Retention and removal release the chunks
//!   that no remaining checkpoint of the function names and delete chunks
//!   that reach zero in the same transaction that deletes the manifest, one
//!   manifest per transaction.
//! - **Concurrency.** Transactions are serializable, so puts, imports,
//!   retention and garbage collection may run concurrently from any threads:
//!   a chunk deleted between a put's writes and its transaction is detected
//!   in the transaction, written again from memory, and the transaction
//!   retried.
//! - **Failure isolation.** A corrupt manifest or chunk fails only the read
//!   that meets it. While a function still has a checkpoint that does not
//!   decode, removing its other checkpoints releases nothing (what the corrupt
//!   one names is unknown); a corrupt checkpoint from before holders leaks
//!   its references when retired (kept, with a warning). Counts are never
//!   guessed, so no other checkpoint can lose a chunk because of one.
//! - **Transfer.** A receiver checks [`CheckpointStore::missing_chunks`] of an
//!   offered manifest, stores each received chunk with
//!   [`CheckpointStore::put_chunk`] (verified against its name before it is
//!   written), and commits with [`CheckpointStore::import_manifest`], which
//!   fails with [`CheckpointError::ChunkMissing`] if a chunk is absent.
//!   Chunks received but not yet named by an imported manifest are
//!   unreferenced: garbage collection may remove them, after which the
//!   receiver asks for them again.

pub mod chunking;
pub mod codec;
mod error;
pub mod manifest;
pub mod room;
pub mod store;
pub mod volume;

#[cfg(test)]
mod tests;

use std::fmt;

pub use chunking::{Fingerprints, MemoryScan, chunk_count, hash_chunk, hash_chunks, is_zero_chunk, scan_memory};
pub use codec::{decode_chunk_into, encode_chunk};
pub use error::CheckpointError;
pub use ferry_proto::internal::v1::{
    CheckpointManifest, GlobalValue, HostState, InboxMessage, PendingCall, global_value, pending_call,
};
pub use manifest::{check_instrumentation, chunk_list_digest, decode_manifest, encode_manifest, validate_manifest};
pub use store::{
    ChangedMemory, CheckpointEntry, CheckpointStore, CheckpointStoreOptions, DELTA_PAGE, GcStats, PutStats,
    ReceivedPages,
};

/// Version of the manifest format written by this build; any other is refused.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 1;

/// Chunk size of new checkpoints unless the store is configured otherwise:
/// one wasm page.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;

/// Largest chunk size a manifest may declare; also bounds what one stored
/// chunk may decompress to.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;

/// Size of a WebAssembly page; `memory_bytes` is always a multiple of it.
pub const WASM_PAGE_SIZE: u64 = 64 * 1024;

/// Largest linear memory a 32-bit wasm module can have (65,536 pages).
pub const MAX_MEMORY_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// The BLAKE3 hash that names a memory chunk (of its uncompressed bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkHash(pub [u8; 32]);

impl ChunkHash {
    /// The hash as stored in a manifest: `None` for an empty entry (an
    /// all-zero chunk), an error for any length other than 0 or 32.
    pub fn from_manifest_entry(entry: &[u8]) -> Result<Option<ChunkHash>, usize> {
        match entry.len() {
            0 => Ok(None),
            32 => {
                let mut bytes = [0u8; 32];
                bytes.copy_from_slice(entry);
                Ok(Some(ChunkHash(bytes)))
            }
            other => Err(other),
        }
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ChunkHash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(formatter, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ChunkHash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "ChunkHash({self})")
    }
}
