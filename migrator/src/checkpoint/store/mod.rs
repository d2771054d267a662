//! [`CheckpointStore`]: checkpoints in the hub's sled database, memory chunks
//! stored once by hash with reference counts.
//!
//! Trees: `checkpoint_chunks` (hash → where the encoded chunk is: a
//! location in a pack file, see `packs.rs`, and for a chunk kept as the
//! pages written over an earlier one, what they apply to, see `deltas.rs`), `checkpoint_chunk_refs`
//! (hash → u64 big-endian count of the holders of the chunk),
//! `checkpoints` (`function ‖ 0x00 ‖ sequence u64 big-endian` → framed
//! manifest), `checkpoint_holders` (function → the checkpoints it covers
//! and the chunks they name: one reference per function, not per
//! checkpoint) and `checkpoint_staged` (a move's chunks referenced before
//! it seals). Writing lives in `put.rs` (a whole memory) and `changes.rs`
//! (the changed chunks), holders in `holders.rs`, retention and garbage
//! collection in `gc.rs`, staged arrivals in `staged.rs`, chunk bodies in
//! `packs.rs` and their reclaiming in `reclaim.rs`.

mod changes;
mod deltas;
mod gc;
mod holders;
mod packs;
mod put;
mod reading;
mod reclaim;
mod staged;
mod trusted;
mod writeback;

use std::path::Path;

use deltas::Delta;
use packs::{Location, Packs, ReadFailure};
pub use reclaim::ReclaimStats;

pub use changes::ChangedMemory;
pub use deltas::{DELTA_PAGE, ReceivedPages, bitmap_pages, few_pages, gather_pages, page_bitmap};
pub use gc::GcStats;
pub use put::PutStats;
pub use reading::BeforeEach;

use trusted::TrustedChunks;

use super::{
    CheckpointError, CheckpointManifest, ChunkHash, DEFAULT_CHUNK_SIZE, Fingerprints,
    codec::{ChunkDecoder, DEFAULT_COMPRESSION_LEVEL},
    manifest::{decode_manifest, distinct_chunks, validate_chunk_size, validate_function_name},
    validate_manifest,
};

const CHUNKS_TREE: &str = "checkpoint_chunks";
const REFS_TREE: &str = "checkpoint_chunk_refs";
const CHECKPOINTS_TREE: &str = "checkpoints";
const STAGED_TREE: &str = "checkpoint_staged";
const HOLDERS_TREE: &str = "checkpoint_holders";

/// How a [`CheckpointStore`] writes new checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointStoreOptions {
    /// Chunk size of new checkpoints (reading accepts any valid size).
    pub chunk_size: u32,
    /// zstd level of new chunks.
    pub compression_level: i32,
    /// A pack file takes no more chunks past this size (the first store
    /// to open a directory in a process sets it for every handle).
    pub pack_bytes: u64,
    /// Chunk bodies are not written when they would leave less than this
    /// free on the disk ([`super::room`]; set by the first store to open a
    /// directory, like `pack_bytes`).
    pub keep_free_bytes: u64,
}

impl Default for CheckpointStoreOptions {
    fn default() -> Self {
        CheckpointStoreOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            pack_bytes: packs::PACK_BYTES,
            keep_free_bytes: super::room::KEEP_FREE_BYTES,
        }
    }
}

/// One stored checkpoint of a function as [`CheckpointStore::list`] sees it:
/// its sequence (from the key) and its manifest, or why it does not verify.
#[derive(Debug)]
pub struct CheckpointEntry {
    pub sequence: u64,
    pub manifest: Result<CheckpointManifest, CheckpointError>,
}

/// The checkpoints of a hub, in three trees of the hub's sled database.
/// Cheap to clone; safe to use from many threads at once.
#[derive(Clone)]
pub struct CheckpointStore {
    db: sled::Db,
    chunks: sled::Tree,
    refs: sled::Tree,
    checkpoints: sled::Tree,
    staged: sled::Tree,
    holders: sled::Tree,
    /// The bodies of the chunks the `chunks` tree locates.
    packs: Packs,
    options: CheckpointStoreOptions,
    /// Chunks this store (and its clones) checked itself: loads skip
    /// their hash. A store opened anew trusts nothing.
    trusted: TrustedChunks,
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CheckpointStore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl CheckpointStore {
    /// Opens (creating if needed) the checkpoint trees of `db` and the pack
    /// directory `packs` (chunk bodies) with the default options.
    pub fn open(db: &sled::Db, packs: &Path) -> Result<CheckpointStore, CheckpointError> {
        CheckpointStore::open_with(db, packs, CheckpointStoreOptions::default())
    }

    /// Opens the checkpoint trees of `db` and the pack directory `packs`,
    /// writing new checkpoints with `options`. One store per `db` and
    /// directory at a time (clone it to share).
    pub fn open_with(
        db: &sled::Db,
        packs: &Path,
        options: CheckpointStoreOptions,
    ) -> Result<CheckpointStore, CheckpointError> {
        validate_chunk_size(options.chunk_size)?;
        Ok(CheckpointStore {
            packs: Packs::open(packs, options.pack_bytes, options.keep_free_bytes)?,
            chunks: db.open_tree(CHUNKS_TREE)?,
            refs: db.open_tree(REFS_TREE)?,
            checkpoints: db.open_tree(CHECKPOINTS_TREE)?,
            staged: db.open_tree(STAGED_TREE)?,
            holders: db.open_tree(HOLDERS_TREE)?,
            db: db.clone(),
            options,
            trusted: TrustedChunks::default(),
        })
    }

    /// The options new checkpoints are written with.
    /// Claims room on the store's disk for `bytes` the caller is about to
    /// write beside it (a volume laid out from a checkpoint): refused with
    /// [`CheckpointError::NoRoom`] like a chunk that would not fit.
    pub fn claim_room(&self, bytes: u64) -> Result<(), CheckpointError> {
        self.packs.claim(bytes)
    }

    pub fn options(&self) -> CheckpointStoreOptions {
        self.options
    }

    /// Checkpoint `sequence` of `function`, verified; `None` if there is none.
    pub fn get(&self, function: &str, sequence: u64) -> Result<Option<CheckpointManifest>, CheckpointError> {
        validate_function_name(function)?;
        let key = checkpoint_key(function, sequence);
        match self.checkpoints.get(&key)? {
            None => Ok(None),
            Some(framed) => decode_stored(function, sequence, &framed).map(Some),
        }
    }

    /// The newest checkpoint of `function`, verified; `None` if it has none.
    /// A newest checkpoint that does not verify is an error, not skipped:
    /// use [`CheckpointStore::list`] to fall back to an older one.
    pub fn latest(&self, function: &str) -> Result<Option<CheckpointManifest>, CheckpointError> {
        validate_function_name(function)?;
        let Some(entry) = self.checkpoints.scan_prefix(function_prefix(function)).next_back() else {
            return Ok(None);
        };
        let (key, framed) = entry?;
        let sequence = sequence_from_key(&key)?;
        decode_stored(function, sequence, &framed).map(Some)
    }

    /// Every checkpoint of `function`, oldest first, each verified on its own:
    /// one that does not verify does not hide the others.
    pub fn list(&self, function: &str) -> Result<Vec<CheckpointEntry>, CheckpointError> {
        validate_function_name(function)?;
        let mut entries = Vec::new();
        for entry in self.checkpoints.scan_prefix(function_prefix(function)) {
            let (key, framed) = entry?;
            let sequence = sequence_from_key(&key)?;
            entries.push(CheckpointEntry {
                sequence,
                manifest: decode_stored(function, sequence, &framed),
            });
        }
        Ok(entries)
    }

    /// [`CheckpointStore::load_memory`] and the [`Fingerprints`] of the
    /// result, so that the restored function's next checkpoint is
    /// incremental.
    pub fn load_memory_with_fingerprints(
        &self,
        manifest: &CheckpointManifest,
    ) -> Result<(Vec<u8>, Fingerprints), CheckpointError> {
        let memory = self.load_memory(manifest)?;
        let fingerprints = Fingerprints::compute(manifest, &memory)?;
        Ok((memory, fingerprints))
    }

    /// The distinct chunks `manifest` names that the store lacks: what a
    /// receiver asks the sender for.
    pub fn missing_chunks(&self, manifest: &CheckpointManifest) -> Result<Vec<ChunkHash>, CheckpointError> {
        let mut missing = Vec::new();
        for hash in distinct_chunks(manifest) {
            if !self.chunks.contains_key(hash.as_bytes())? {
                missing.push(hash);
            }
        }
        Ok(missing)
    }

    /// Makes every chunk body stored so far durable. A commit syncs them
    /// itself; a caller that syncs first, while it does other work, finds
    /// the commit's share shorter (and sled's lock, which a commit holds
    /// and every read takes, held for less).
    pub fn sync_chunks(&self) -> Result<(), CheckpointError> {
        self.packs.sync()
    }

    /// Whether the store holds the chunk.
    pub fn contains_chunk(&self, hash: &ChunkHash) -> Result<bool, CheckpointError> {
        Ok(self.chunks.contains_key(hash.as_bytes())?)
    }

    /// A chunk's content, decoded and checked against its hash (unless
    /// this store checked it already), into `destination` (exactly its
    /// length).
    pub fn read_chunk_into(&self, hash: &ChunkHash, destination: &mut [u8]) -> Result<(), CheckpointError> {
        self.read_chunk_with(&mut ChunkDecoder::new()?, hash, destination)
    }

    /// [`read_chunk_into`](Self::read_chunk_into) with the caller's
    /// decoder: a reader of many chunks makes one (a zstd context is a
    /// few hundred KiB to set up) and reuses it.
    pub fn read_chunk_with(
        &self,
        decoder: &mut ChunkDecoder,
        hash: &ChunkHash,
        destination: &mut [u8],
    ) -> Result<(), CheckpointError> {
        self.decode_into(hash, decoder, destination)?;
        if !self.trusted.contains(hash) {
            super::codec::verify_chunk(destination, hash)
                .map_err(|reason| CheckpointError::corrupt(format!("chunk {hash}"), reason))?;
            self.trusted.trust([*hash]);
        }
        Ok(())
    }

    /// A chunk as it travels (codec byte + payload): its stored body, or
    /// for a chunk kept as a delta, the whole chunk encoded anew.
    pub fn encoded_chunk(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>, CheckpointError> {
        let Some((body, delta)) = self.body(hash)? else {
            return Ok(None);
        };
        let Some(delta) = delta else {
            return Ok(Some(body.to_vec()));
        };
        let mut chunk = vec![0u8; delta.chunk_len];
        self.decode_into(hash, &mut ChunkDecoder::new()?, &mut chunk)?;
        super::codec::ChunkEncoder::new(self.options.compression_level)?
            .encode(&chunk)
            .map(Some)
    }

    /// Decodes chunk `hash` into `destination` (exactly its length): its
    /// body, or for a delta the base's body (or zeros) with the delta's
    /// pages over it. Not checked against the hash. A chunk the store lacks is
    /// [`CheckpointError::ChunkMissing`]; a body that does not decode, or
    /// a delta whose base is gone, is corrupt.
    fn decode_into(
        &self,
        hash: &ChunkHash,
        decoder: &mut ChunkDecoder,
        destination: &mut [u8],
    ) -> Result<(), CheckpointError> {
        let corrupt = |reason: String| CheckpointError::corrupt(format!("chunk {hash}"), reason);
        let (body, delta) = self.body(hash)?.ok_or(CheckpointError::ChunkMissing { hash: *hash })?;
        let Some(delta) = delta else {
            return decoder.decode_into(&body, destination).map_err(corrupt);
        };
        match delta.base {
            None => destination.fill(0),
            Some(base) => {
                let body = match self.body(&base)? {
                    Some((body, None)) => body,
                    Some((_, Some(_))) => return Err(corrupt(format!("its base {base} is a delta itself"))),
                    None => return Err(corrupt(format!("its base {base} is not stored"))),
                };
                decoder
                    .decode_into(&body, destination)
                    .map_err(|reason| corrupt(format!("its base {base}: {reason}")))?;
            }
        }
        let mut pages = vec![0u8; delta.pages_len()];
        decoder.decode_into(&body, &mut pages).map_err(corrupt)?;
        delta.apply(&pages, destination).map_err(corrupt)
    }

    /// [`CheckpointStore::decode_into`] straight into `destination` (the
    /// chunk's place in a restored memory, or a decoding buffer): a raw
    /// chunk's body is read from its pack with its codec byte apart and its
    /// bytes in place, so each byte moves once; other bodies go through
    /// `scratch`.
    pub(super) fn decode_in_place(
        &self,
        hash: &ChunkHash,
        decoder: &mut ChunkDecoder,
        scratch: &mut Vec<u8>,
        destination: &mut [u8],
    ) -> Result<(), CheckpointError> {
        let corrupt = |reason: String| CheckpointError::corrupt(format!("chunk {hash}"), reason);
        /// Where `read_located` left a chunk's body.
        enum Read {
            /// A chunk and a byte: the byte in `codec`, the rest in `destination`.
            Split,
            /// Another packed body, in `scratch[..len]`.
            InScratch(usize),
            /// A delta or an inline body: not read yet.
            Elsewhere,
        }
        let mut codec = [0u8; 1];
        let read = self.read_located(hash, |located| {
            let Located::Packed(location, None) = located else {
                return Ok(Read::Elsewhere);
            };
            let len = location.len as usize;
            if len == destination.len() + 1 {
                self.packs.read_split_into(&location, &mut codec, destination)?;
                return Ok(Read::Split);
            }
            if scratch.len() < len {
                scratch.resize(len, 0);
            }
            self.packs.read_into(&location, &mut scratch[..len])?;
            Ok(Read::InScratch(len))
        })?;
        match read.ok_or(CheckpointError::ChunkMissing { hash: *hash })? {
            Read::Elsewhere => self.decode_into(hash, decoder, destination),
            Read::Split if codec[0] == super::codec::CODEC_RAW => Ok(()),
            Read::Split => {
                // A frame exactly a chunk and a byte long: decode it from the side.
                scratch.clear();
                scratch.extend_from_slice(&codec);
                scratch.extend_from_slice(destination);
                decoder.decode_into(scratch, destination).map_err(corrupt)
            }
            Read::InScratch(len) => decoder.decode_into(&scratch[..len], destination).map_err(corrupt),
        }
    }

    /// The stored (encoded) bytes of a chunk, and what they apply to when
    /// the chunk is kept as a delta: read from its pack and checked against
    /// the location's checksum, or the inline value of a chunk stored
    /// before packs. `None` if the store does not hold it.
    fn body(&self, hash: &ChunkHash) -> Result<Option<(Body, Option<Delta>)>, CheckpointError> {
        self.read_located(hash, |located| match located {
            Located::Inline(value) => Ok((Body::Inline(value), None)),
            Located::Packed(location, delta) => Ok((Body::Packed(self.packs.read(&location)?), delta)),
        })
    }

    /// Looks chunk `hash` up in the index and hands `read` where its body
    /// is; `None` if the store does not hold it. A pack reclaimed between
    /// the lookup and the read moved the chunk: `read` is tried once more
    /// after a second lookup finds where to.
    fn read_located<T>(
        &self,
        hash: &ChunkHash,
        mut read: impl FnMut(Located) -> Result<T, ReadFailure>,
    ) -> Result<Option<T>, CheckpointError> {
        let corrupt = |reason: String| CheckpointError::corrupt(format!("chunk {hash}"), reason);
        for _ in 0..2 {
            let Some(value) = self.chunks.get(hash.as_bytes())? else {
                return Ok(None);
            };
            let located = match Location::decode(&value) {
                None => Located::Inline(value),
                Some(Err(reason)) => return Err(corrupt(reason)),
                Some(Ok(location)) => Located::Packed(location, Delta::decode(&value).transpose().map_err(corrupt)?),
            };
            match read(located) {
                Ok(read) => return Ok(Some(read)),
                Err(ReadFailure::PackGone) => continue,
                Err(ReadFailure::Corrupt(reason)) => return Err(corrupt(reason)),
                Err(ReadFailure::Io(error)) => return Err(error),
            }
        }
        Err(corrupt("its pack file is gone".to_owned()))
    }

    /// Stores `encoded` as the body of chunk `hash` (in the current pack)
    /// and names it in the index. Not durable until a flush, and not
    /// referenced until a manifest names it.
    fn insert_body(&self, hash: &ChunkHash, encoded: &[u8]) -> Result<(), CheckpointError> {
        let appended = self.packs.append(encoded)?;
        self.chunks.insert(hash.as_bytes(), &appended.location.encode())?;
        Ok(())
    }

    /// How many holders hold the chunk: functions whose checkpoints name
    /// it, staged sets, and checkpoints stored before holders (0 if it is
    /// unknown).
    pub fn chunk_refcount(&self, hash: &ChunkHash) -> Result<u64, CheckpointError> {
        match self.refs.get(hash.as_bytes())? {
            None => Ok(0),
            Some(value) => decode_refcount(hash, &value),
        }
    }

    /// Number of chunks stored, referenced or not (walks the tree).
    pub fn stored_chunks(&self) -> usize {
        self.chunks.len()
    }

    /// Number of pack files holding chunk bodies (dead ones included until
    /// they are reclaimed).
    pub fn pack_files(&self) -> Result<usize, CheckpointError> {
        self.packs.count()
    }

    /// How many chunks this store trusts (for tests).
    #[cfg(test)]
    pub(crate) fn trusted_chunks(&self) -> usize {
        self.trusted.len()
    }

    /// Forces everything written so far to disk: the packs, then the database.
    pub fn flush(&self) -> Result<(), CheckpointError> {
        self.packs.sync()?;
        self.db.flush()?;
        Ok(())
    }
}

/// Where the index says a chunk's body is.
enum Located {
    /// In the index itself (a hub from before packs).
    Inline(sled::IVec),
    /// In a pack; with what it applies to when the chunk is kept as a delta.
    Packed(Location, Option<Delta>),
}

/// A chunk's stored bytes.
enum Body {
    /// Stored in the index by a hub from before packs.
    Inline(sled::IVec),
    /// Read from a pack.
    Packed(Vec<u8>),
}

impl std::ops::Deref for Body {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Body::Inline(bytes) => bytes,
            Body::Packed(bytes) => bytes,
        }
    }
}

/// The memory size `manifest` names, once the manifest is valid.
fn memory_len(manifest: &CheckpointManifest) -> Result<usize, CheckpointError> {
    validate_manifest(manifest)?;
    usize::try_from(manifest.memory_bytes).map_err(|_| CheckpointError::InvalidCheckpoint {
        reason: format!(
            "{} bytes of memory do not fit this hub's address space",
            manifest.memory_bytes
        ),
    })
}

/// Decodes a stored manifest and checks it is the one its key names.
fn decode_stored(function: &str, sequence: u64, framed: &[u8]) -> Result<CheckpointManifest, CheckpointError> {
    let what = || format!("stored checkpoint {sequence} of function {function}");
    let manifest = decode_manifest(framed).map_err(|error| match error {
        CheckpointError::Corrupt { reason, .. } => CheckpointError::corrupt(what(), reason),
        other => other,
    })?;
    let stored_name = manifest.spec.as_ref().map_or("", |spec| spec.name.as_str());
    if stored_name != function || manifest.sequence != sequence {
        return Err(CheckpointError::corrupt(
            what(),
            format!("it holds checkpoint {} of function {stored_name}", manifest.sequence),
        ));
    }
    Ok(manifest)
}

/// `function ‖ 0x00`: the prefix of every key of the function.
fn function_prefix(function: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(function.len() + 1);
    prefix.extend_from_slice(function.as_bytes());
    prefix.push(0);
    prefix
}

/// `function ‖ 0x00 ‖ sequence (u64 big-endian)`, so keys sort by sequence.
pub(crate) fn checkpoint_key(function: &str, sequence: u64) -> Vec<u8> {
    let mut key = function_prefix(function);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

fn sequence_from_key(key: &[u8]) -> Result<u64, CheckpointError> {
    key.last_chunk::<8>()
        .map(|bytes| u64::from_be_bytes(*bytes))
        .ok_or_else(|| CheckpointError::corrupt("checkpoint key", format!("{} bytes, too short", key.len())))
}

fn decode_refcount(hash: &ChunkHash, value: &[u8]) -> Result<u64, CheckpointError> {
    <[u8; 8]>::try_from(value)
        .map(u64::from_be_bytes)
        .map_err(|_| CheckpointError::corrupt(format!("reference count of chunk {hash}"), "not 8 bytes"))
}
