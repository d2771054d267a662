//! Reclaiming pack space: a closed pack no index entry names is deleted; the
//! live chunks of a closed pack that is mostly dead are copied into the
//! current pack (when the disk has room for them), so that the next pass
//! deletes it. A reclaim closes the current pack first: on a small hub it
//! may hold every chunk, the dead ones included.
//!
//! Order, for crash safety: the index is scanned, then flushed, and only
//! then is a pack with no entry deleted — a removal that a crash could undo
//! (and with it the manifest that named the chunk) is durable before its
//! body goes. A moved chunk's new body is synced before its index entry is
//! swapped (compare-and-swap: a chunk removed or stored again meanwhile is
//! left alone), and its old pack is deleted by a later pass, after a flush.
//! Reads that looked a chunk up before it moved find their pack gone and
//! look it up again (`CheckpointStore::body`).

use std::collections::{HashMap, HashSet};

use super::{CheckpointStore, Location, ReadFailure};
use crate::checkpoint::CheckpointError;

/// What one [`CheckpointStore::reclaim_packs`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReclaimStats {
    /// Pack files deleted (no chunk in them was named any more).
    pub packs_removed: u64,
    /// Mostly dead packs whose live chunks were copied out.
    pub packs_emptied: u64,
    /// Chunks copied into the current pack.
    pub chunks_moved: u64,
    /// Disk space given back: the sizes of the deleted packs.
    pub bytes_reclaimed: u64,
}

/// The chunks of one closed pack that the index names: key, index value
/// and location.
type LiveChunks = Vec<(sled::IVec, sled::IVec, Location)>;

impl CheckpointStore {
    /// Gives back the space of dead chunk bodies: deletes the closed packs
    /// nothing names and empties those less than half alive (deleted by
    /// the same call). Safe while puts, moves and loads run.
    pub fn reclaim_packs(&self) -> Result<ReclaimStats, CheckpointError> {
        let _one_at_a_time = self.packs.reclaiming();
        let mut stats = ReclaimStats::default();
        // The current pack too: on a small disk it may hold everything.
        self.packs.close_current()?;
        let live = self.remove_dead_packs(&mut stats)?;
        let mut emptied = false;
        for (pack, (size, chunks)) in live {
            let live_bytes: u64 = chunks.iter().map(|(_, _, location)| u64::from(location.len)).sum();
            if live_bytes.saturating_mul(2) >= size {
                continue;
            }
            // The copies must fit beside what the disk keeps free.
            if let Err(error) = self.packs.claim(live_bytes) {
                tracing::debug!(pack, %error, "no room to empty a mostly dead checkpoint pack");
                continue;
            }
            match self.move_chunks(&chunks) {
                Ok(moved) => {
                    stats.chunks_moved += moved;
                    stats.packs_emptied += 1;
                    emptied = true;
                }
                Err(error) => tracing::warn!(pack, %error, "could not empty a mostly dead checkpoint pack"),
            }
        }
        if emptied {
            self.remove_dead_packs(&mut stats)?;
        }
        if stats.packs_removed > 0 || stats.chunks_moved > 0 {
            tracing::debug!(
                packs_removed = stats.packs_removed,
                packs_emptied = stats.packs_emptied,
                chunks_moved = stats.chunks_moved,
                bytes_reclaimed = stats.bytes_reclaimed,
                "checkpoint packs reclaimed"
            );
        }
        Ok(stats)
    }

    /// Deletes the closed packs no index entry names; returns the others
    /// with their sizes and live chunks.
    fn remove_dead_packs(&self, stats: &mut ReclaimStats) -> Result<HashMap<u32, (u64, LiveChunks)>, CheckpointError> {
        let closed = self.packs.closed()?;
        if closed.is_empty() {
            return Ok(HashMap::new());
        }
        let mut live: HashMap<u32, LiveChunks> = HashMap::new();
        for entry in self.chunks.iter() {
            let (key, value) = entry?;
            if let Some(Ok(location)) = Location::decode(&value)
                && closed.contains_key(&location.pack)
            {
                live.entry(location.pack).or_default().push((key, value, location));
            }
        }
        // A removal a crash could undo must not outlive its body.
        self.db.flush()?;
        let dead: HashSet<u32> = closed.keys().filter(|pack| !live.contains_key(pack)).copied().collect();
        self.packs.remove(&dead)?;
        stats.packs_removed += dead.len() as u64;
        stats.bytes_reclaimed += dead.iter().map(|pack| closed[pack]).sum::<u64>();
        Ok(live
            .into_iter()
            .map(|(pack, chunks)| (pack, (closed[&pack], chunks)))
            .collect())
    }

    /// Copies `chunks` into the current pack and points the index at the
    /// copies; returns how many moved.
    fn move_chunks(&self, chunks: &LiveChunks) -> Result<u64, CheckpointError> {
        let mut copies = Vec::with_capacity(chunks.len());
        for (key, value, location) in chunks {
            let bytes = match self.packs.read(location) {
                Ok(bytes) => bytes,
                // Removed, and its pack with it, since the scan.
                Err(ReadFailure::PackGone) => continue,
                Err(ReadFailure::Corrupt(reason)) => {
                    let hash = crate::checkpoint::ChunkHash(key.as_ref().try_into().unwrap_or_default());
                    return Err(CheckpointError::corrupt(format!("chunk {hash}"), reason));
                }
                Err(ReadFailure::Io(error)) => return Err(error),
            };
            copies.push((key, value, self.packs.append_reclaimed(&bytes)?));
        }
        self.packs.sync()?;
        let mut moved = 0;
        for (key, old, copy) in copies {
            let new = copy.location.relocate(old);
            if self.chunks.compare_and_swap(key, Some(old), Some(new))?.is_ok() {
                moved += 1;
            }
        }
        self.db.flush()?;
        Ok(moved)
    }

    /// Counts `bytes` of chunk bodies as dead; once enough are, reclaims
    /// on a thread of its own, off the caller's path (a checkpoint's
    /// retention, the end of a move).
    pub(super) fn freed(&self, bytes: u64) {
        if !self.packs.note_dead(bytes) {
            return;
        }
        let store = self.clone();
        let spawned = std::thread::Builder::new()
            .name("ferry-pack-reclaim".to_owned())
            .spawn(move || {
                if let Err(error) = store.reclaim_packs() {
                    tracing::warn!(%error, "could not reclaim checkpoint packs");
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "could not start reclaiming checkpoint packs");
        }
    }
}
