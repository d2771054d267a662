//! Staged arrivals: the chunks a move has brought so far, referenced before
//! the move seals, so that the checkpoint the seal imports costs one
//! reference-count change per chunk of the *last* round, not per chunk of
//! the memory.
//!
//! A staged set (`checkpoint_staged`: name → the distinct hashes, 32 bytes
//! each) holds one reference on each chunk it names, exactly like a stored
//! manifest. [`CheckpointStore::stage`] replaces a set (counts change only
//! for the difference), [`CheckpointStore::import_manifest_staged`] turns it
//! into a checkpoint in one transaction, and [`CheckpointStore::unstage`]
//! drops it (a transfer that ended without a seal). A hub drops every staged
//! set at start-up: an arrival that was not sealed before a crash is gone.

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex, PoisonError};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use super::{CheckpointStore, decode_refcount, deltas::Delta, packs::stored_len};
use crate::checkpoint::{CheckpointError, ChunkHash};

impl CheckpointStore {
    /// Makes `hashes` (an image's slots; `None` for zeros) the staged set
    /// `name`, changing reference counts only for chunks that enter or
    /// leave it. Every chunk that enters must be stored already; if one is
    /// not, nothing changes and the first missing hash is the error.
    pub fn stage(&self, name: &str, hashes: &[Option<ChunkHash>]) -> Result<(), CheckpointError> {
        let wanted = distinct(hashes.iter().flatten().copied());
        let encoded = encode_set(&wanted);
        let result = (&self.refs, &self.chunks, &self.staged).transaction(|(refs, chunks, staged)| {
            let held = read_set(staged, name.as_bytes())?;
            for hash in wanted.iter().filter(|hash| !held.contains(*hash)) {
                if !acquire(refs, chunks, hash)? {
                    return Err(ConflictableTransactionError::Abort(CheckpointError::ChunkMissing {
                        hash: *hash,
                    }));
                }
            }
            for hash in held.iter().filter(|hash| !wanted.contains(*hash)) {
                release(refs, chunks, hash)?;
            }
            staged.insert(name.as_bytes(), encoded.as_slice())?;
            Ok(())
        });
        result.map_err(flatten)
    }

    /// Drops the staged set `name` and the chunks only it named; nothing
    /// if there is no such set.
    pub fn unstage(&self, name: &str) -> Result<(), CheckpointError> {
        let result = (&self.refs, &self.chunks, &self.staged).transaction(|(refs, chunks, staged)| {
            let held = read_set(staged, name.as_bytes())?;
            let mut freed = 0;
            for hash in &held {
                freed += release(refs, chunks, hash)?.unwrap_or(0);
            }
            staged.remove(name.as_bytes())?;
            Ok(freed)
        });
        self.freed(result.map_err(flatten)?);
        Ok(())
    }

    /// Drops every staged set (at start-up: no transfer is running), then
    /// returns how many there were.
    pub fn unstage_all(&self) -> Result<usize, CheckpointError> {
        let names = self.staged.iter().keys().collect::<Result<Vec<_>, _>>()?;
        for name in &names {
            self.unstage(&String::from_utf8_lossy(name))?;
        }
        Ok(names.len())
    }

    /// Keeps what a transfer brought after it failed, for a retry to
    /// start from: the staged set `from` (if any) and the stored chunks
    /// among `extra` become the set `into`, and `from` is dropped. Returns
    /// how many distinct chunks `into` holds.
    pub fn hold(&self, from: Option<&str>, into: &str, extra: &[ChunkHash]) -> Result<usize, CheckpointError> {
        let mut held: Vec<ChunkHash> = match from {
            Some(from) => match self.staged.get(from.as_bytes())? {
                Some(value) => decode_set(from.as_bytes(), &value)?,
                None => Vec::new(),
            },
            None => Vec::new(),
        };
        for hash in extra {
            if self.contains_chunk(hash)? {
                held.push(*hash);
            }
        }
        let held = distinct(held);
        let slots: Vec<Option<ChunkHash>> = held.iter().copied().map(Some).collect();
        self.stage(into, &slots)?;
        if let Some(from) = from {
            self.unstage(from)?;
        }
        Ok(held.len())
    }

    /// Drops every staged set whose name starts with `prefix` except
    /// `keep`; returns how many it dropped.
    pub fn unstage_prefixed(&self, prefix: &str, keep: Option<&str>) -> Result<usize, CheckpointError> {
        let names = self.staged_sets()?;
        let mut dropped = 0;
        for name in names
            .iter()
            .filter(|name| name.starts_with(prefix) && Some(name.as_str()) != keep)
        {
            self.unstage(name)?;
            dropped += 1;
        }
        Ok(dropped)
    }

    /// The names of the staged sets.
    pub fn staged_sets(&self) -> Result<Vec<String>, CheckpointError> {
        self.staged
            .iter()
            .keys()
            .map(|name| Ok(String::from_utf8_lossy(&name?).into_owned()))
            .collect()
    }
}

/// The distinct hashes of `hashes`, in first-seen order.
pub(super) fn distinct(hashes: impl IntoIterator<Item = ChunkHash>) -> Vec<ChunkHash> {
    let mut seen = HashSet::new();
    hashes.into_iter().filter(|hash| seen.insert(*hash)).collect()
}

fn encode_set(hashes: &[ChunkHash]) -> Vec<u8> {
    hashes.iter().flat_map(|hash| hash.0).collect()
}

/// The staged set under `name` (empty if there is none).
pub(super) fn read_set<E: From<CheckpointError>>(
    staged: &TransactionalTree,
    name: &[u8],
) -> Result<HashSet<ChunkHash>, ConflictableTransactionError<E>> {
    match staged.get(name)? {
        None => Ok(HashSet::new()),
        Some(value) => decode_set(name, &value)
            .map(|hashes| hashes.into_iter().collect())
            .map_err(|error| ConflictableTransactionError::Abort(E::from(error))),
    }
}

/// A staged set's stored value: hashes one after the other.
fn decode_set(name: &[u8], value: &[u8]) -> Result<Vec<ChunkHash>, CheckpointError> {
    if !value.len().is_multiple_of(32) {
        let what = format!("staged set {}", String::from_utf8_lossy(name));
        return Err(CheckpointError::corrupt(
            what,
            format!("{} bytes, not a multiple of 32", value.len()),
        ));
    }
    Ok(value
        .chunks_exact(32)
        .filter_map(|bytes| <[u8; 32]>::try_from(bytes).ok().map(ChunkHash))
        .collect())
}

/// Inside a transaction: one more reference to `hash`. False if the chunk
/// is not stored (and then nothing changed).
pub(super) fn acquire<E: From<CheckpointError>>(
    refs: &TransactionalTree,
    chunks: &TransactionalTree,
    hash: &ChunkHash,
) -> Result<bool, ConflictableTransactionError<E>> {
    let count = match refs.get(hash.as_bytes())? {
        Some(value) => decode_refcount(hash, &value)
            .map_err(|error| ConflictableTransactionError::Abort(E::from(error)))?
            .saturating_add(1),
        None if chunks.get(hash.as_bytes())?.is_some() => 1,
        None => return Ok(false),
    };
    refs.insert(hash.as_bytes(), &count.to_be_bytes())?;
    Ok(true)
}

/// Chunks a put of this process writes again after they vanished under
/// it (their last holder went between the put's writes and its commit):
/// a release or sweep leaves them stored (unreferenced, for the put's
/// next commit or a later sweep), so a retried commit cannot lose them
/// again. Process-wide, by hash: a pin only ever delays a deletion.
static PINNED: LazyLock<Mutex<HashMap<ChunkHash, usize>>> = LazyLock::new(Default::default);

/// Chunks pinned until this is dropped.
pub(super) struct Pinned(Vec<ChunkHash>);

impl Pinned {
    pub(super) fn new(hashes: impl IntoIterator<Item = ChunkHash>) -> Pinned {
        let hashes: Vec<ChunkHash> = hashes.into_iter().collect();
        let mut pinned = PINNED.lock().unwrap_or_else(PoisonError::into_inner);
        for hash in &hashes {
            *pinned.entry(*hash).or_default() += 1;
        }
        Pinned(hashes)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let mut pinned = PINNED.lock().unwrap_or_else(PoisonError::into_inner);
        for hash in &self.0 {
            if let Some(count) = pinned.get_mut(hash) {
                *count -= 1;
                if *count == 0 {
                    pinned.remove(hash);
                }
            }
        }
    }
}

/// Whether a put relies on the chunk staying stored.
pub(super) fn is_pinned(hash: &[u8]) -> bool {
    let Ok(hash) = <[u8; 32]>::try_from(hash) else {
        return false;
    };
    PINNED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains_key(&ChunkHash(hash))
}

/// Inside a transaction: one reference fewer to `hash`; the chunk is
/// deleted when none is left (unless pinned). Returns the stored bytes
/// freed, if it was.
pub(super) fn release<E: From<CheckpointError>>(
    refs: &TransactionalTree,
    chunks: &TransactionalTree,
    hash: &ChunkHash,
) -> Result<Option<u64>, ConflictableTransactionError<E>> {
    let Some(value) = refs.get(hash.as_bytes())? else {
        return Ok(None);
    };
    let count = decode_refcount(hash, &value).map_err(|error| ConflictableTransactionError::Abort(E::from(error)))?;
    if count > 1 {
        refs.insert(hash.as_bytes(), &(count - 1).to_be_bytes())?;
        return Ok(None);
    }
    refs.remove(hash.as_bytes())?;
    if is_pinned(hash.as_bytes()) {
        return Ok(None);
    }
    delete_chunk(refs, chunks, hash.as_bytes())
}

/// Inside a transaction: deletes the index entry of chunk `hash`; for a
/// delta, its reference on its base goes with it. Returns the stored bytes
/// freed (the base's too, if it went), if the chunk was there. The base of
/// a delta whose value does not decode stays referenced (leaked, not
/// guessed).
pub(super) fn delete_chunk<E: From<CheckpointError>>(
    refs: &TransactionalTree,
    chunks: &TransactionalTree,
    hash: &[u8],
) -> Result<Option<u64>, ConflictableTransactionError<E>> {
    let Some(value) = chunks.remove(hash)? else {
        return Ok(None);
    };
    let mut freed = stored_len(&value);
    if let Some(Ok(Delta { base: Some(base), .. })) = Delta::decode(&value) {
        freed += release::<E>(refs, chunks, &base)?.unwrap_or(0);
    }
    Ok(Some(freed))
}

fn flatten(error: TransactionError<CheckpointError>) -> CheckpointError {
    match error {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(error) => CheckpointError::Sled(error),
    }
}
