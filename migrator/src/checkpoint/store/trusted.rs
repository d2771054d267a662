//! [`TrustedChunks`]: the chunks this process has already checked against
//! their hash, which a load does not hash again.
//!
//! A chunk is trusted from the moment this process wrote it into the store
//! having computed its hash from its bytes (a checkpoint's put) or checked
//! its bytes against their hash (an arrival), and after a load verified it.
//! Stored chunks never change under their key (the key is the hash of the
//! content and every insert is checked), and every read from a pack checks
//! the bytes against the checksum their location carries, so re-hashing
//! a trusted chunk would only repeat a check already made. Chunks found on disk when the hub starts —
//! after a crash, a restart, or a copy from elsewhere — are not trusted
//! until a load has verified them.
//!
//! Trust is kept in memory only and bounded: past [`TRUSTED_CAPACITY`]
//! hashes the set starts over, which costs verification, never safety. A
//! hash stays trusted after its chunk is deleted: a deleted chunk cannot be
//! read, and one stored again under the same hash is checked again before
//! it is stored.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use crate::checkpoint::ChunkHash;

/// Most hashes trusted at once (≈ 16 GiB of 64 KiB chunks, ≈ 12 MB of set).
const TRUSTED_CAPACITY: usize = 1 << 18;

/// The hashes of chunks this process checked itself. Cheap to clone (the
/// clones share one set).
#[derive(Clone, Default)]
pub(super) struct TrustedChunks {
    hashes: Arc<Mutex<HashSet<ChunkHash>>>,
}

impl TrustedChunks {
    /// Trusts `hashes` from now on.
    pub(super) fn trust(&self, hashes: impl IntoIterator<Item = ChunkHash>) {
        let mut trusted = self.hashes.lock().unwrap_or_else(PoisonError::into_inner);
        for hash in hashes {
            if trusted.len() >= TRUSTED_CAPACITY {
                trusted.clear();
            }
            trusted.insert(hash);
        }
    }

    /// Whether the chunk named `hash` was checked by this process.
    pub(super) fn contains(&self, hash: &ChunkHash) -> bool {
        self.hashes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(hash)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.hashes.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_starts_over_when_it_is_full() {
        let trusted = TrustedChunks::default();
        let hash = |n: usize| {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&(n as u64).to_le_bytes());
            ChunkHash(bytes)
        };
        trusted.trust((0..TRUSTED_CAPACITY).map(hash));
        assert_eq!(trusted.len(), TRUSTED_CAPACITY);
        assert!(trusted.contains(&hash(0)));
        trusted.trust([hash(TRUSTED_CAPACITY)]);
        assert_eq!(trusted.len(), 1);
        assert!(!trusted.contains(&hash(0)));
        assert!(trusted.contains(&hash(TRUSTED_CAPACITY)));
    }
}
