//! Chunks kept as the pages written on an earlier version of themselves.
//!
//! A periodic checkpoint from a dirty-page tracker knows which 4 KiB pages
//! of each changed chunk were written. When they are few (scattered writes
//! touch a page here and there), compressing and writing the whole chunk
//! costs many times what the pages do. So [`CheckpointStore::put_changes`]
//! may keep such a chunk as a **delta**: the written pages, compressed
//! together, over a **base** — the version of the chunk its base
//! checkpoint names at the same index. The chunk is still named by the
//! BLAKE3 of all its bytes, like every chunk: manifests, transfers and
//! verification do not know deltas exist. (A move may send a chunk as the
//! pages written since its previous round, `transfer::PageDelta`: the
//! destination keeps such a chunk as a delta too,
//! [`CheckpointStore::put_verified_pages`], with its index entries written
//! together, [`CheckpointStore::index_received_pages`].)
//!
//! - A base is always a whole chunk, or zeros (the chunk was all zero at
//!   the base, or past its end). A delta over a chunk that is itself a
//!   delta names that one's base and the pages of both, so reading any
//!   chunk takes at most two bodies. Past half of the chunk's pages, the
//!   whole chunk is stored instead.
//! - A delta holds one reference on its base chunk, taken in the commit
//!   that indexes the delta and released in the transaction that deletes it.
//! - Index value: [`DELTA_TAG`], the pack location (as for a whole chunk),
//!   the base's hash (32 zero bytes for zeros), the chunk's length (u32
//!   big-endian), then one bit per page of the chunk (bit `p % 8` of byte
//!   `p / 8`), the pages kept.
//!
//! [`CheckpointStore::put_changes`]: super::CheckpointStore::put_changes

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::CheckpointStore;
use super::packs::{Appended, DELTA_TAG, LOCATION_LEN, Location};
use super::staged::acquire;
use crate::checkpoint::codec::CODEC_RAW;
use crate::checkpoint::{CheckpointError, ChunkHash};

/// The unit a delta keeps: the page a dirty-page tracker reports.
pub const DELTA_PAGE: usize = 4096;

/// A delta's pages are compressed only where that halves them: a few
/// pages are cheap to write and sync as they are, and zstd took about
/// 13 µs a text-like page on this project's machine (ARCHITECTURE.md).
pub(super) const DELTA_PAYS_SIXTEENTHS: usize = 8;

/// The base a delta over zeros names (no BLAKE3 is all zeros).
const ZEROS_BASE: [u8; 32] = [0; 32];

/// What a delta's body applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Delta {
    /// The whole chunk the pages go over; `None`: zeros.
    pub(super) base: Option<ChunkHash>,
    /// Length of the chunk (and of its base): a multiple of [`DELTA_PAGE`].
    pub(super) chunk_len: usize,
    /// The pages the body holds, ascending, each below
    /// `chunk_len / DELTA_PAGE`.
    pub(super) pages: Vec<u32>,
}

/// Whether `pages` (numbered within a chunk of `chunk_len` bytes) are
/// worth keeping or sending apart from the rest of their chunk: the chunk
/// cuts into whole pages, each lies in it, and there is at least one and
/// at most half of them. Past half, the whole chunk costs hardly more.
pub fn few_pages(chunk_len: usize, pages: &[u32]) -> bool {
    let chunk_pages = chunk_len / DELTA_PAGE;
    chunk_len.is_multiple_of(DELTA_PAGE)
        && pages.iter().all(|page| (*page as usize) < chunk_pages)
        && !pages.is_empty()
        && pages.len() * 2 <= chunk_pages
}

/// `pages` of `chunk` (numbered within it), one after the other.
pub fn gather_pages(chunk: &[u8], pages: &[u32]) -> Vec<u8> {
    let mut gathered = Vec::with_capacity(pages.len() * DELTA_PAGE);
    for page in pages {
        let start = *page as usize * DELTA_PAGE;
        gathered.extend_from_slice(&chunk[start..start + DELTA_PAGE]);
    }
    gathered
}

/// The bitmap naming `pages` of a chunk of `chunk_pages` pages: bit
/// `p % 8` of byte `p / 8` for page `p` (each below `chunk_pages`).
pub fn page_bitmap(pages: &[u32], chunk_pages: usize) -> Vec<u8> {
    let mut bitmap = vec![0u8; chunk_pages.div_ceil(8)];
    for page in pages {
        bitmap[*page as usize / 8] |= 1 << (page % 8);
    }
    bitmap
}

/// The pages `bitmap` names ([`page_bitmap`]), ascending.
pub fn bitmap_pages(bitmap: &[u8]) -> Vec<u32> {
    (0..bitmap.len() as u32 * 8)
        .filter(|page| bitmap[*page as usize / 8] & (1 << (page % 8)) != 0)
        .collect()
}

impl Delta {
    /// A delta of `pages` over `base`, if it is worth keeping ([`few_pages`]).
    pub(super) fn worth_keeping(base: Option<ChunkHash>, chunk_len: usize, pages: Vec<u32>) -> Option<Delta> {
        few_pages(chunk_len, &pages).then_some(Delta { base, chunk_len, pages })
    }

    /// The bytes the body holds: the delta's pages of `chunk`, one after
    /// the other.
    pub(super) fn gather(&self, chunk: &[u8]) -> Vec<u8> {
        gather_pages(chunk, &self.pages)
    }

    /// Length of the decoded body.
    pub(super) fn pages_len(&self) -> usize {
        self.pages.len() * DELTA_PAGE
    }

    /// Writes the decoded body `pages` over `chunk` (the base, decoded).
    pub(super) fn apply(&self, pages: &[u8], chunk: &mut [u8]) -> Result<(), String> {
        if chunk.len() != self.chunk_len || pages.len() != self.pages_len() {
            return Err(format!(
                "a delta of {} pages over a {}-byte chunk does not fit {} bytes of pages into {} bytes",
                self.pages.len(),
                self.chunk_len,
                pages.len(),
                chunk.len()
            ));
        }
        for (page, bytes) in self.pages.iter().zip(pages.chunks(DELTA_PAGE)) {
            let start = *page as usize * DELTA_PAGE;
            chunk[start..start + DELTA_PAGE].copy_from_slice(bytes);
        }
        Ok(())
    }

    /// The index value naming this delta, its body at `location`.
    pub(super) fn encode_value(&self, location: &Location) -> Vec<u8> {
        let chunk_pages = self.chunk_len / DELTA_PAGE;
        let mut value = Vec::with_capacity(LOCATION_LEN + 32 + 4 + chunk_pages.div_ceil(8));
        value.extend_from_slice(&location.encode());
        value[0] = DELTA_TAG;
        value.extend_from_slice(self.base.as_ref().map_or(&ZEROS_BASE, |base| base.as_bytes()));
        value.extend_from_slice(&(self.chunk_len as u32).to_be_bytes());
        value.extend_from_slice(&page_bitmap(&self.pages, chunk_pages));
        value
    }

    /// The delta an index value names; `None` for a whole chunk.
    pub(super) fn decode(value: &[u8]) -> Option<Result<Delta, String>> {
        if value.first() != Some(&DELTA_TAG) {
            return None;
        }
        let malformed = || format!("its delta index value is malformed ({} bytes)", value.len());
        let Some((base, rest)) = value
            .get(LOCATION_LEN..)
            .and_then(|rest| rest.split_first_chunk::<32>())
        else {
            return Some(Err(malformed()));
        };
        let Some((chunk_len, bitmap)) = rest.split_first_chunk::<4>() else {
            return Some(Err(malformed()));
        };
        let chunk_len = u32::from_be_bytes(*chunk_len) as usize;
        let chunk_pages = chunk_len / DELTA_PAGE;
        if !chunk_len.is_multiple_of(DELTA_PAGE) || bitmap.len() != chunk_pages.div_ceil(8) {
            return Some(Err(malformed()));
        }
        let pages: Vec<u32> = bitmap_pages(bitmap)
            .into_iter()
            .filter(|page| (*page as usize) < chunk_pages)
            .collect();
        if pages.is_empty() {
            return Some(Err(malformed()));
        }
        Some(Ok(Delta {
            base: (*base != ZEROS_BASE).then_some(ChunkHash(*base)),
            chunk_len,
            pages,
        }))
    }

    /// This delta with `pages` (of the same chunk) kept too.
    pub(super) fn merged(&self, pages: &[u32]) -> Vec<u32> {
        let mut merged: Vec<u32> = self.pages.iter().chain(pages).copied().collect();
        merged.sort_unstable();
        merged.dedup();
        merged
    }
}

/// Chunks a transfer received as pages and kept as deltas: their bodies
/// are appended, their index entries (each with a reference on its base)
/// wait to be written together by
/// [`CheckpointStore::index_received_pages`] — a sled transaction per chunk
/// cost more than the rest of taking it. Until then the store does not know
/// them; dropped unindexed, they leave only dead bytes in a pack.
#[derive(Default)]
pub struct ReceivedPages {
    deltas: Vec<(ChunkHash, Option<ChunkHash>, Vec<u8>, Appended)>,
}

impl ReceivedPages {
    /// Chunks waiting to be indexed.
    pub fn len(&self) -> usize {
        self.deltas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty()
    }
}

impl CheckpointStore {
    /// Stores a chunk a transfer received as its written `pages` (numbered
    /// within the chunk, ascending) over its previous version `base`
    /// (`None`: zeros), which the caller rebuilt (`chunk`) and checked
    /// against `hash`; `encoded_pages` is the pages as they travelled
    /// (codec byte + payload). Kept as a delta over `base`'s whole version
    /// when that is worth it — the travelled bytes are then the body, as
    /// they are — indexed with the others in `received` later; whole (and
    /// indexed) otherwise. Unreferenced until a manifest or a staged set
    /// names it, like [`CheckpointStore::put_verified_chunk`]. Returns
    /// whether it was new.
    pub fn put_verified_pages(
        &self,
        received: &mut ReceivedPages,
        hash: &ChunkHash,
        chunk: &[u8],
        (base, pages): (Option<ChunkHash>, &[u32]),
        encoded_pages: &[u8],
    ) -> Result<bool, CheckpointError> {
        if self.chunks.contains_key(hash.as_bytes())? {
            return Ok(false);
        }
        let Some(delta) = self.delta_over(base, chunk.len(), pages)? else {
            return self.put_verified_chunk(hash, &raw(chunk));
        };
        // Over a delta, the pages of both go: gathered again.
        let body = if delta.pages == pages {
            encoded_pages.to_vec()
        } else {
            raw(&delta.gather(chunk))
        };
        let appended = self.packs.append(&body)?;
        let value = delta.encode_value(&appended.location);
        received.deltas.push((*hash, delta.base, value, appended));
        Ok(true)
    }

    /// Indexes the chunks `received` holds, each with a reference on its
    /// base, in one transaction. A base that is gone (it cannot be: the
    /// previous round's chunks are staged, and a delta's base is held by
    /// that delta) fails the whole: nothing is indexed.
    pub fn index_received_pages(&self, received: &mut ReceivedPages) -> Result<(), CheckpointError> {
        if received.is_empty() {
            return Ok(());
        }
        let deltas = std::mem::take(&mut received.deltas);
        (&self.refs, &self.chunks)
            .transaction(|(refs, chunks)| {
                for (hash, base, value, _) in &deltas {
                    if chunks.get(hash.as_bytes())?.is_some() {
                        continue;
                    }
                    if let Some(base) = base
                        && !acquire::<CheckpointError>(refs, chunks, base)?
                    {
                        return Err(ConflictableTransactionError::Abort(CheckpointError::ChunkMissing {
                            hash: *base,
                        }));
                    }
                    chunks.insert(hash.as_bytes(), value.as_slice())?;
                }
                Ok(())
            })
            .map_err(|error| match error {
                TransactionError::Abort(error) => error,
                TransactionError::Storage(error) => CheckpointError::from(error),
            })?;
        self.trusted.trust(deltas.iter().map(|(hash, ..)| *hash));
        // (Each pack was kept from reclaiming until the index named it.)
        drop(deltas);
        Ok(())
    }

    /// The delta to keep for a chunk whose `pages` were written over
    /// `base`: over `base` if it is whole, over its base if it is a delta
    /// (with the pages of both); `None` when the base is gone or the delta
    /// would not be worth keeping.
    fn delta_over(
        &self,
        base: Option<ChunkHash>,
        chunk_len: usize,
        pages: &[u32],
    ) -> Result<Option<Delta>, CheckpointError> {
        let (over, pages) = match base {
            None => (None, pages.to_vec()),
            Some(base) => match self.chunks.get(base.as_bytes())? {
                None => return Ok(None),
                Some(value) => match Delta::decode(&value) {
                    None => (Some(base), pages.to_vec()),
                    Some(Ok(earlier)) if earlier.chunk_len == chunk_len => (earlier.base, earlier.merged(pages)),
                    Some(_) => return Ok(None),
                },
            },
        };
        Ok(Delta::worth_keeping(over, chunk_len, pages))
    }
}

/// `bytes` encoded raw (codec byte + the bytes).
fn raw(bytes: &[u8]) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(bytes.len() + 1);
    encoded.push(CODEC_RAW);
    encoded.extend_from_slice(bytes);
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location() -> Location {
        Location {
            pack: 7,
            offset: 1 << 33,
            len: 4321,
            check: 0xdead_beef,
        }
    }

    #[test]
    fn a_delta_value_round_trips_and_still_names_its_location() {
        let delta = Delta::worth_keeping(Some(ChunkHash([9; 32])), 16 * DELTA_PAGE, vec![0, 3, 15]).unwrap();
        let value = delta.encode_value(&location());
        assert_eq!(Delta::decode(&value), Some(Ok(delta)));
        let over_zeros = Delta::worth_keeping(None, 16 * DELTA_PAGE, vec![4]).unwrap();
        assert_eq!(
            Delta::decode(&over_zeros.encode_value(&location())),
            Some(Ok(over_zeros))
        );
        assert_eq!(Location::decode(&value), Some(Ok(location())));
        assert_eq!(Delta::decode(&location().encode()), None);
    }

    #[test]
    fn a_delta_of_more_than_half_the_pages_or_of_a_ragged_chunk_is_not_kept() {
        let base = Some(ChunkHash([1; 32]));
        assert!(Delta::worth_keeping(base, 16 * DELTA_PAGE, (0..8).collect()).is_some());
        assert!(Delta::worth_keeping(base, 16 * DELTA_PAGE, (0..9).collect()).is_none());
        assert!(Delta::worth_keeping(base, 16 * DELTA_PAGE + 1, vec![0]).is_none());
        assert!(Delta::worth_keeping(base, 16 * DELTA_PAGE, vec![16]).is_none());
        assert!(Delta::worth_keeping(base, 16 * DELTA_PAGE, Vec::new()).is_none());
    }

    #[test]
    fn a_truncated_delta_value_is_malformed() {
        let delta = Delta::worth_keeping(Some(ChunkHash([9; 32])), 16 * DELTA_PAGE, vec![2]).unwrap();
        let value = delta.encode_value(&location());
        for len in [LOCATION_LEN, LOCATION_LEN + 32, value.len() - 1] {
            assert!(matches!(Delta::decode(&value[..len]), Some(Err(_))), "{len} bytes");
        }
    }

    #[test]
    fn applying_the_gathered_pages_over_the_base_gives_the_chunk() {
        let base: Vec<u8> = (0..16 * DELTA_PAGE).map(|at| (at % 251) as u8).collect();
        let mut chunk = base.clone();
        chunk[3 * DELTA_PAGE + 5] ^= 0xFF;
        chunk[12 * DELTA_PAGE] ^= 0x0F;
        let delta = Delta::worth_keeping(None, chunk.len(), vec![3, 12]).unwrap();
        let mut rebuilt = base.clone();
        delta.apply(&delta.gather(&chunk), &mut rebuilt).unwrap();
        assert_eq!(rebuilt, chunk);
        assert!(delta.apply(&delta.gather(&chunk)[1..], &mut rebuilt).is_err());
    }
}
