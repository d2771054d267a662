//! [`CheckpointStore`]: checkpoints in the hub's sled database, memory chunks
//! stored once by hash with reference counts.
//!
//! Trees: `checkpoint_chunks` (hash → encoded chunk), `checkpoint_chunk_refs`
//! (hash → u64 big-endian count of the holders of the chunk),
//! `checkpoints` (`function ‖ 0x00 ‖ sequence u64 big-endian` → framed
//! manifest), `checkpoint_holders` (function → the checkpoints it covers
//! and the chunks they name: one reference per function, not per
//! checkpoint) and `checkpoint_staged` (a move's chunks referenced before
//! it seals). Writing lives in `put.rs` (a whole memory) and `changes.rs`
//! (the changed chunks), holders in `holders.rs`, retention and garbage
//! collection in `gc.rs`, staged arrivals in `staged.rs`.

mod changes;
mod gc;
mod holders;
mod put;
mod staged;

pub use changes::ChangedMemory;
pub use gc::GcStats;
pub use put::PutStats;

use super::{
    CheckpointError, CheckpointManifest, ChunkHash, DEFAULT_CHUNK_SIZE, Fingerprints,
    codec::{ChunkDecoder, DEFAULT_COMPRESSION_LEVEL, verify_chunk},
    manifest::{decode_manifest, describe, distinct_chunks, validate_chunk_size, validate_function_name},
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
}

impl Default for CheckpointStoreOptions {
    fn default() -> Self {
        CheckpointStoreOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
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
    options: CheckpointStoreOptions,
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
    /// Opens (creating if needed) the checkpoint trees of `db` with the
    /// default options.
    pub fn open(db: &sled::Db) -> Result<CheckpointStore, CheckpointError> {
        CheckpointStore::open_with(db, CheckpointStoreOptions::default())
    }

    /// Opens the checkpoint trees of `db`, writing new checkpoints with `options`.
    pub fn open_with(db: &sled::Db, options: CheckpointStoreOptions) -> Result<CheckpointStore, CheckpointError> {
        validate_chunk_size(options.chunk_size)?;
        Ok(CheckpointStore {
            chunks: db.open_tree(CHUNKS_TREE)?,
            refs: db.open_tree(REFS_TREE)?,
            checkpoints: db.open_tree(CHECKPOINTS_TREE)?,
            staged: db.open_tree(STAGED_TREE)?,
            holders: db.open_tree(HOLDERS_TREE)?,
            db: db.clone(),
            options,
        })
    }

    /// The options new checkpoints are written with.
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

    /// The linear memory `manifest` describes, every chunk verified against
    /// its hash after decompression. Changes nothing, whatever it finds.
    pub fn load_memory(&self, manifest: &CheckpointManifest) -> Result<Vec<u8>, CheckpointError> {
        validate_manifest(manifest)?;
        let memory_len = usize::try_from(manifest.memory_bytes).map_err(|_| CheckpointError::InvalidCheckpoint {
            reason: format!(
                "{} bytes of memory do not fit this hub's address space",
                manifest.memory_bytes
            ),
        })?;
        let mut memory = vec![0u8; memory_len];
        let mut decoder = ChunkDecoder::new()?;
        let chunk_slots = memory.chunks_mut(manifest.chunk_size as usize);
        for (index, (entry, slot)) in manifest.chunk_hashes.iter().zip(chunk_slots).enumerate() {
            let Some(hash) = ChunkHash::from_manifest_entry(entry).ok().flatten() else {
                continue;
            };
            let Some(encoded) = self.chunks.get(hash.as_bytes())? else {
                tracing::warn!(checkpoint = %describe(manifest), chunk = index, %hash, "checkpoint chunk missing");
                return Err(CheckpointError::ChunkMissing { hash });
            };
            if let Err(reason) = decoder
                .decode_into(&encoded, slot)
                .and_then(|()| verify_chunk(slot, &hash))
            {
                let what = format!("chunk {index} ({hash}) of {}", describe(manifest));
                tracing::warn!(%what, %reason, "checkpoint chunk does not verify");
                return Err(CheckpointError::corrupt(what, reason));
            }
        }
        Ok(memory)
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

    /// Whether the store holds the chunk.
    pub fn contains_chunk(&self, hash: &ChunkHash) -> Result<bool, CheckpointError> {
        Ok(self.chunks.contains_key(hash.as_bytes())?)
    }

    /// A chunk's content, decoded and verified against its hash, into
    /// `destination` (exactly its length).
    pub fn read_chunk_into(&self, hash: &ChunkHash, destination: &mut [u8]) -> Result<(), CheckpointError> {
        let encoded = self
            .chunks
            .get(hash.as_bytes())?
            .ok_or(CheckpointError::ChunkMissing { hash: *hash })?;
        super::codec::decode_chunk_into(&encoded, hash, destination)
    }

    /// A chunk as stored (codec byte + payload): the form it travels in.
    pub fn encoded_chunk(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>, CheckpointError> {
        Ok(self.chunks.get(hash.as_bytes())?.map(|encoded| encoded.to_vec()))
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

    /// Forces everything written so far to disk.
    pub fn flush(&self) -> Result<(), CheckpointError> {
        self.db.flush()?;
        Ok(())
    }
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
