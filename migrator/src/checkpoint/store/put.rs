//! Writing checkpoints: [`CheckpointStore::put`] from a memory image, and the
//! receiving side of a transfer ([`CheckpointStore::put_chunk`],
//! [`CheckpointStore::import_manifest`]).
//!
//! Order of writes: new chunks first (plain inserts), then one transaction
//! that checks every named chunk is present, increments the reference counts
//! and inserts the manifest, then a flush. A manifest is therefore never
//! visible, before or after a crash, without all of its chunks.

use std::collections::{HashMap, HashSet};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{
    CheckpointStore, checkpoint_key,
    deltas::Delta,
    holders::Holder,
    packs::Appended,
    staged::{Pinned, acquire, read_set, release},
};
use crate::checkpoint::{
    CHECKPOINT_FORMAT_VERSION, CheckpointError, CheckpointManifest, ChunkHash, Fingerprints,
    chunking::{MemoryScan, chunk_count, hash_chunk, scan_memory},
    codec::{ChunkDecoder, ChunkEncoder},
    manifest::{describe, distinct_chunks, encode_manifest, validate_memory_bytes},
    validate_manifest,
};

/// How often a put rewrites chunks that disappeared (collected concurrently)
/// before it gives up.
const COMMIT_ATTEMPTS: usize = 4;

/// What one [`CheckpointStore::put`] did, to measure checkpoint cost:
/// [`PutStats::checkpoint_bytes`] against `nonzero_bytes` (memory in use) or
/// `bytes_hashed` (memory changed since the base).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutStats {
    /// Size of the linear memory.
    pub memory_bytes: u64,
    /// Chunks the memory was cut into.
    pub chunks: u64,
    /// All-zero chunks (elided).
    pub zero_chunks: u64,
    /// Non-zero chunks whose fingerprint matched the base: reused, not read again.
    pub unchanged_chunks: u64,
    /// Chunks hashed with BLAKE3: non-zero, and new or changed since the base.
    pub hashed_chunks: u64,
    /// Chunks written because the store did not hold them yet.
    pub new_chunks: u64,
    /// Bytes in non-zero chunks.
    pub nonzero_bytes: u64,
    /// Bytes hashed with BLAKE3.
    pub bytes_hashed: u64,
    /// Uncompressed size of the chunks written.
    pub bytes_uncompressed_new: u64,
    /// Stored size of the chunks written.
    pub bytes_written_compressed: u64,
    /// Size of the framed manifest.
    pub manifest_bytes: u64,
    /// Of the new chunks, those kept as the pages written over their
    /// earlier version (see `deltas.rs`).
    pub delta_chunks: u64,
}

impl PutStats {
    /// Bytes this checkpoint added to the store: new chunks and the manifest.
    pub fn checkpoint_bytes(&self) -> u64 {
        self.bytes_written_compressed + self.manifest_bytes
    }
}

/// Why a commit transaction did not insert the manifest.
enum CommitAbort {
    Missing(Vec<ChunkHash>),
    Failed(CheckpointError),
}

impl CommitAbort {
    /// The error a caller sees: the first missing chunk, or the failure.
    fn into_error(self, manifest: &CheckpointManifest) -> CheckpointError {
        match self {
            CommitAbort::Failed(error) => error,
            CommitAbort::Missing(missing) => match missing.first() {
                Some(&hash) => CheckpointError::ChunkMissing { hash },
                None => CheckpointError::corrupt(describe(manifest), "a chunk is missing"),
            },
        }
    }
}

impl From<CheckpointError> for CommitAbort {
    fn from(error: CheckpointError) -> Self {
        CommitAbort::Failed(error)
    }
}

impl From<sled::Error> for CommitAbort {
    fn from(error: sled::Error) -> Self {
        CommitAbort::Failed(CheckpointError::Sled(error))
    }
}

impl CheckpointStore {
    /// Stores a checkpoint of `memory` and returns its manifest, the
    /// fingerprints for the next incremental checkpoint, and what it cost.
    ///
    /// `manifest_template` carries everything but the memory layout:
    /// `format_version`, `memory_bytes`, `chunk_size` and `chunk_hashes` are
    /// filled in here. With a `base` (the previous manifest and the
    /// fingerprints returned with it) only chunks whose fingerprint changed
    /// are hashed, compressed and written. When this returns, the checkpoint
    /// is on disk. On failure nothing stored before is changed.
    pub fn put(
        &self,
        manifest_template: CheckpointManifest,
        memory: &[u8],
        base: Option<(&CheckpointManifest, &Fingerprints)>,
    ) -> Result<(CheckpointManifest, Fingerprints, PutStats), CheckpointError> {
        let memory_bytes = memory.len() as u64;
        let mut manifest = self.new_manifest(manifest_template, memory_bytes)?;

        let mut scan = scan_memory(memory, manifest.chunk_size, base)?;
        let mut stats = PutStats {
            memory_bytes,
            chunks: scan.chunk_hashes.len() as u64,
            zero_chunks: scan.zero_chunks,
            nonzero_bytes: scan.bytes_fingerprinted,
            ..PutStats::default()
        };
        let source = WholeMemory {
            memory,
            chunk_size: manifest.chunk_size as usize,
        };
        let mut writer = ChunkWriter::new(self, &source)?;
        let committed = writer.write_and_commit(&mut manifest, &mut scan, &mut stats);
        if let Err(error) = committed {
            self.remove_if_unreferenced(&writer.written);
            return Err(error);
        }
        self.db.flush()?;
        stats.unchanged_chunks = scan.unchanged_chunks;
        stats.hashed_chunks = stats.chunks - stats.zero_chunks - stats.unchanged_chunks;
        stats.bytes_hashed = scan.bytes_hashed;
        tracing::debug!(
            checkpoint = %describe(&manifest),
            chunks = stats.chunks,
            zero_chunks = stats.zero_chunks,
            unchanged_chunks = stats.unchanged_chunks,
            new_chunks = stats.new_chunks,
            bytes_written = stats.checkpoint_bytes(),
            "checkpoint stored"
        );
        let fingerprints = scan.into_fingerprints(&manifest);
        Ok((manifest, fingerprints, stats))
    }

    /// `template` with the layout of a memory of `memory_bytes` in this
    /// store's chunks (every chunk zero so far), validated, and refused if
    /// its function already has a checkpoint under that sequence.
    pub(super) fn new_manifest(
        &self,
        template: CheckpointManifest,
        memory_bytes: u64,
    ) -> Result<CheckpointManifest, CheckpointError> {
        let mut manifest = template;
        validate_memory_bytes(memory_bytes)?;
        manifest.format_version = CHECKPOINT_FORMAT_VERSION;
        manifest.memory_bytes = memory_bytes;
        manifest.chunk_size = self.options.chunk_size;
        manifest.chunk_hashes = vec![Vec::new(); chunk_count(memory_bytes, manifest.chunk_size) as usize];
        validate_manifest(&manifest)?;
        if let Some(spec) = &manifest.spec
            && self
                .checkpoints
                .contains_key(checkpoint_key(&spec.name, manifest.sequence))?
        {
            return Err(CheckpointError::AlreadyExists {
                function: spec.name.clone(),
                sequence: manifest.sequence,
            });
        }
        Ok(manifest)
    }

    /// Stores a chunk received from a peer, after checking that it decodes
    /// (to at most [`MAX_CHUNK_SIZE`](crate::checkpoint::MAX_CHUNK_SIZE)
    /// bytes) to content named `hash`. Returns whether it was new. The chunk
    /// stays unreferenced until a manifest naming it is imported.
    pub fn put_chunk(&self, hash: &ChunkHash, encoded: &[u8]) -> Result<bool, CheckpointError> {
        if self.chunks.contains_key(hash.as_bytes())? {
            return Ok(false);
        }
        ChunkDecoder::new()?
            .decode_verified(encoded, hash)
            .map_err(|reason| CheckpointError::corrupt(format!("received chunk {hash}"), reason))?;
        self.insert_body(hash, encoded)?;
        self.trusted.trust([*hash]);
        Ok(true)
    }

    /// Stores chunks whose hashes the caller computed from these very bytes
    /// (the file chunks a capture read from a function's volume), each
    /// encoded, unless the store holds it already. They stay unreferenced
    /// until a manifest naming them is committed. Returns how many were new
    /// and their stored size.
    pub fn put_loose_chunks(&self, chunks: &[(ChunkHash, &[u8])]) -> Result<(u64, u64), CheckpointError> {
        let mut encoder = ChunkEncoder::new(self.options.compression_level)?;
        let (mut new, mut bytes) = (0, 0);
        for (hash, chunk) in chunks {
            if self.chunks.contains_key(hash.as_bytes())? {
                continue;
            }
            let encoded = encoder.encode(chunk)?;
            self.insert_body(hash, &encoded)?;
            self.trusted.trust([*hash]);
            new += 1;
            bytes += encoded.len() as u64;
        }
        Ok((new, bytes))
    }

    /// Stores a chunk the caller has already decoded and checked against
    /// `hash` (a transfer's receiver does, to fill its memory image).
    /// Returns whether it was new.
    pub fn put_verified_chunk(&self, hash: &ChunkHash, encoded: &[u8]) -> Result<bool, CheckpointError> {
        if self.chunks.contains_key(hash.as_bytes())? {
            return Ok(false);
        }
        self.insert_body(hash, encoded)?;
        self.trusted.trust([*hash]);
        Ok(true)
    }

    /// Stores a manifest whose chunks are all in the store already (received
    /// with [`CheckpointStore::put_chunk`]), then flushes. Importing the same
    /// manifest again is a no-op; another one under the same function and
    /// sequence is refused.
    pub fn import_manifest(&self, manifest: &CheckpointManifest) -> Result<(), CheckpointError> {
        self.import_manifest_unflushed(manifest)?;
        self.flush()
    }

    /// [`CheckpointStore::import_manifest`] without the flush, for a caller
    /// that writes more (a record naming the checkpoint) and flushes once:
    /// sled makes a prefix of its writes durable, so whatever is written
    /// after the manifest is never durable without it.
    pub fn import_manifest_unflushed(&self, manifest: &CheckpointManifest) -> Result<(), CheckpointError> {
        validate_manifest(manifest)?;
        let framed = encode_manifest(manifest);
        self.commit(manifest, &framed)
            .map_err(|abort| abort.into_error(manifest))?;
        tracing::debug!(checkpoint = %describe(manifest), "checkpoint imported");
        Ok(())
    }

    /// Stores a manifest that a move sealed, taking over the references of
    /// the staged set `staged` (see [`CheckpointStore::stage`]): counts
    /// change only for chunks the manifest names and the set did not (+1)
    /// or the set named and the manifest does not (−1), and the set is
    /// gone afterwards. Without a staged set under that name it is
    /// [`CheckpointStore::import_manifest_unflushed`]. Not flushed.
    pub fn import_manifest_staged(&self, manifest: &CheckpointManifest, staged: &str) -> Result<(), CheckpointError> {
        validate_manifest(manifest)?;
        let framed = encode_manifest(manifest);
        self.commit_from(manifest, &framed, Some(staged), &[])
            .map_err(|abort| abort.into_error(manifest))?;
        tracing::debug!(checkpoint = %describe(manifest), staged, "checkpoint imported from a staged set");
        Ok(())
    }

    /// In one transaction: checks every chunk the manifest names is stored,
    /// adds the manifest to its function's holder (a reference on each
    /// chunk new to it) and inserts the manifest.
    fn commit(&self, manifest: &CheckpointManifest, framed: &[u8]) -> Result<(), CommitAbort> {
        self.commit_from(manifest, framed, None, &[])
    }

    /// [`CheckpointStore::commit`], taking over the references the staged
    /// set `staged` holds (and dropping the set) when there is one, and
    /// first indexing `deltas` (bodies written, not yet named), each with
    /// a reference on its base. A delta whose base is gone is missing.
    fn commit_from(
        &self,
        manifest: &CheckpointManifest,
        framed: &[u8],
        staged: Option<&str>,
        deltas: &[PendingDelta],
    ) -> Result<(), CommitAbort> {
        let Some(spec) = &manifest.spec else {
            return Err(CommitAbort::Failed(CheckpointError::InvalidCheckpoint {
                reason: "spec is missing".to_owned(),
            }));
        };
        let key = checkpoint_key(&spec.name, manifest.sequence);
        let hashes = distinct_chunks(manifest);
        // sled may write the transaction out at any moment: the bodies of
        // the chunks it names must be on disk first.
        self.packs.sync()?;
        let trees = (&self.refs, &self.chunks, &self.checkpoints, &self.staged, &self.holders);
        let result = trees.transaction(|(refs, chunks, checkpoints, staged_tree, holders)| {
            if let Some(existing) = checkpoints.get(&key)? {
                if existing.as_ref() == framed {
                    return Ok(());
                }
                return Err(ConflictableTransactionError::Abort(CommitAbort::Failed(
                    CheckpointError::AlreadyExists {
                        function: spec.name.clone(),
                        sequence: manifest.sequence,
                    },
                )));
            }
            let mut missing = Vec::new();
            for delta in deltas {
                if chunks.get(delta.hash.as_bytes())?.is_some() {
                    continue;
                }
                let based = match &delta.base {
                    Some(base) => acquire::<CommitAbort>(refs, chunks, base)?,
                    None => true,
                };
                if based {
                    chunks.insert(delta.hash.as_bytes(), delta.value.as_slice())?;
                } else {
                    missing.push(delta.hash);
                }
            }
            let mut held = match staged {
                Some(name) => read_set::<CommitAbort>(staged_tree, name.as_bytes())?,
                None => HashSet::new(),
            };
            // Only chunks new to the function's holder change a count; a
            // staged set's reference on one passes to the holder.
            let mut holder = Holder::read::<CommitAbort>(holders, &spec.name)?;
            for hash in hashes.iter().filter(|hash| !holder.chunks.contains(*hash)) {
                if !held.remove(hash) && !acquire::<CommitAbort>(refs, chunks, hash)? {
                    missing.push(*hash);
                }
            }
            if !missing.is_empty() {
                return Err(ConflictableTransactionError::Abort(CommitAbort::Missing(missing)));
            }
            if let Some(name) = staged {
                for hash in &held {
                    release::<CommitAbort>(refs, chunks, hash)?;
                }
                staged_tree.remove(name.as_bytes())?;
            }
            holder.chunks.extend(hashes.iter().copied());
            holder.cover(manifest.sequence);
            holder.write::<CommitAbort>(holders, &spec.name)?;
            checkpoints.insert(key.as_slice(), framed)?;
            Ok(())
        });
        result.map_err(|error| match error {
            TransactionError::Abort(abort) => abort,
            TransactionError::Storage(error) => CommitAbort::from(error),
        })
    }
}

/// Where a put reads the bytes of a chunk: the whole memory, or only the
/// chunks that changed.
pub(super) trait ChunkSource {
    /// The bytes of chunk `index`; `None` if this source does not hold them.
    fn chunk(&self, index: usize) -> Option<&[u8]>;
}

/// A whole memory image, cut into chunks.
struct WholeMemory<'a> {
    memory: &'a [u8],
    chunk_size: usize,
}

impl ChunkSource for WholeMemory<'_> {
    fn chunk(&self, index: usize) -> Option<&[u8]> {
        let start = index.saturating_mul(self.chunk_size).min(self.memory.len());
        let end = start.saturating_add(self.chunk_size).min(self.memory.len());
        self.memory.get(start..end)
    }
}

/// A chunk kept as a delta whose body is written: indexed (with a
/// reference on its base) by the commit.
pub(super) struct PendingDelta {
    hash: ChunkHash,
    base: Option<ChunkHash>,
    /// The index value naming the body and the delta.
    value: Vec<u8>,
    /// Keeps the body's pack from being reclaimed until the commit named it.
    _appended: Appended,
}

/// Changed chunks to keep as deltas, by index: the delta, where its body
/// was appended, and the body's length.
pub(super) type PreparedDeltas = HashMap<usize, (Delta, Appended, u64)>;

/// The state of one put while it writes chunks and commits.
pub(super) struct ChunkWriter<'a> {
    store: &'a CheckpointStore,
    source: &'a dyn ChunkSource,
    encoder: ChunkEncoder,
    /// Chunks this put inserted, to remove again if it fails.
    pub(super) written: Vec<ChunkHash>,
    /// Changed chunks to keep as deltas, by index.
    prepared: PreparedDeltas,
    /// Deltas appended, for the commit to index.
    deltas: Vec<PendingDelta>,
}

impl<'a> ChunkWriter<'a> {
    pub(super) fn new(store: &'a CheckpointStore, source: &'a dyn ChunkSource) -> Result<Self, CheckpointError> {
        Ok(ChunkWriter {
            store,
            source,
            encoder: ChunkEncoder::new(store.options.compression_level)?,
            written: Vec::new(),
            prepared: HashMap::new(),
            deltas: Vec::new(),
        })
    }

    /// This writer, keeping the chunks `prepared` names as those deltas.
    pub(super) fn with_deltas(mut self, prepared: PreparedDeltas) -> Self {
        self.prepared = prepared;
        self
    }

    pub(super) fn write_and_commit(
        &mut self,
        manifest: &mut CheckpointManifest,
        scan: &mut MemoryScan,
        stats: &mut PutStats,
    ) -> Result<(), CheckpointError> {
        let mut handled = HashSet::new();
        for &index in &scan.hashed_chunks {
            let Some(Some(hash)) = scan.chunk_hashes.get(index).copied() else {
                continue;
            };
            if handled.insert(hash) && !self.store.chunks.contains_key(hash.as_bytes())? {
                self.write_chunk(index, hash, stats)?;
            }
        }
        // Once a chunk vanished, every chunk the put names stays stored
        // until it returns: a retry then loses none.
        let mut pinned = None;
        for attempt in 1..=COMMIT_ATTEMPTS {
            manifest.chunk_hashes = scan.manifest_entries();
            let framed = encode_manifest(manifest);
            match self.store.commit_from(manifest, &framed, None, &self.deltas) {
                Ok(()) => {
                    stats.manifest_bytes = framed.len() as u64;
                    return Ok(());
                }
                Err(CommitAbort::Failed(error)) => return Err(error),
                Err(CommitAbort::Missing(missing)) => {
                    tracing::debug!(
                        checkpoint = %describe(manifest),
                        missing = missing.len(),
                        attempt,
                        "chunks vanished before the commit; writing them again"
                    );
                    pinned.get_or_insert_with(|| Pinned::new(distinct_chunks(manifest)));
                    self.rewrite_missing(&missing, scan, stats)?;
                }
            }
        }
        Err(CheckpointError::corrupt(
            describe(manifest),
            format!("its chunks kept disappearing during {COMMIT_ATTEMPTS} commit attempts"),
        ))
    }

    /// Hashes again, from the source, every chunk whose hash the store lacks
    /// (collected since the scan, or reused from a base whose chunk is gone)
    /// and writes it. A missing chunk the source does not hold (one the
    /// base named and that did not change, or one of the volume's files)
    /// fails the put with [`CheckpointError::ChunkMissing`].
    fn rewrite_missing(
        &mut self,
        missing: &[ChunkHash],
        scan: &mut MemoryScan,
        stats: &mut PutStats,
    ) -> Result<(), CheckpointError> {
        let mut missing: HashSet<ChunkHash> = missing.iter().copied().collect();
        // A delta whose base went is written whole, like every chunk
        // written again.
        self.deltas.retain(|delta| !missing.contains(&delta.hash));
        self.prepared.clear();
        let mut rewritten = HashSet::new();
        let mut found = HashSet::new();
        for index in 0..scan.chunk_hashes.len() {
            let Some(Some(old_hash)) = scan.chunk_hashes.get(index).copied() else {
                continue;
            };
            if !missing.contains(&old_hash) {
                continue;
            }
            found.insert(old_hash);
            let chunk = self.chunk(index, old_hash)?;
            let hash = hash_chunk(chunk);
            scan.rehashed(index, hash, chunk.len() as u64);
            if rewritten.insert(hash) {
                self.write_chunk(index, hash, stats)?;
            }
        }
        // A chunk of the volume's files is not in memory: the caller stored
        // it (loose) and it is gone, or it never was.
        missing.retain(|hash| !found.contains(hash));
        match missing.into_iter().next() {
            Some(hash) => Err(CheckpointError::ChunkMissing { hash }),
            None => Ok(()),
        }
    }

    /// Chunk `index` from the source, named `hash` for the error if the
    /// source does not hold it.
    fn chunk(&self, index: usize, hash: ChunkHash) -> Result<&'a [u8], CheckpointError> {
        self.source.chunk(index).ok_or(CheckpointError::ChunkMissing { hash })
    }

    fn write_chunk(&mut self, index: usize, hash: ChunkHash, stats: &mut PutStats) -> Result<(), CheckpointError> {
        if let Some((delta, appended, body_len)) = self.prepared.remove(&index) {
            self.store.trusted.trust([hash]);
            stats.new_chunks += 1;
            stats.delta_chunks += 1;
            stats.bytes_uncompressed_new += delta.pages_len() as u64;
            stats.bytes_written_compressed += body_len;
            self.deltas.push(PendingDelta {
                hash,
                base: delta.base,
                value: delta.encode_value(&appended.location),
                _appended: appended,
            });
            return Ok(());
        }
        let chunk = self.chunk(index, hash)?;
        let encoded = self.encoder.encode(chunk)?;
        self.store.insert_body(&hash, &encoded)?;
        self.store.trusted.trust([hash]);
        self.written.push(hash);
        stats.new_chunks += 1;
        stats.bytes_uncompressed_new += chunk.len() as u64;
        stats.bytes_written_compressed += encoded.len() as u64;
        Ok(())
    }
}
