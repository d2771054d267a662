//! A memory chunk sent as the pages written since the previous round.
//!
//! A function that writes a word here and there (a hash table, a heap of
//! small objects) dirties a few 4 KiB pages in many 64 KiB chunks: sent
//! whole, each round carries sixteen times what was written. From the
//! second round on, the source knows the pages written since the previous
//! round's capture (write-protection tracking), and the destination holds
//! that round's version of every slot. So a chunk may travel as its
//! written pages alone, with the slot whose previous version they go over
//! ([`ChunkData::delta_slot`](ferry_proto::internal::v1::ChunkData)). The
//! chunk is still named by the BLAKE3 of all its bytes: the destination
//! puts the pages over its copy of the previous version and checks the
//! result against that hash, like every chunk it receives.

use crate::checkpoint::store::{bitmap_pages, few_pages, page_bitmap};
use crate::checkpoint::{ChunkHash, DELTA_PAGE};

use super::TransferError;

/// The pages of a chunk of `chunk_len` bytes worth sending instead of the
/// whole chunk, from `pages` (page numbers within the chunk, ascending,
/// distinct), with the bitmap that names them; `None` when the whole chunk
/// should go. The store's rule ([`few_pages`]): past half, the whole chunk
/// costs hardly more, and the destination need not read its previous
/// version.
pub fn worth_sending(chunk_len: usize, pages: &[u32]) -> Option<Vec<u8>> {
    few_pages(chunk_len, pages).then(|| page_bitmap(pages, chunk_len / DELTA_PAGE))
}

/// A chunk received as pages: what the hub needs to rebuild it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageDelta {
    /// The chunk's BLAKE3 (of all its bytes).
    pub hash: ChunkHash,
    /// The chunk the previous round left in the delta's slot, which the
    /// pages go over: the hub reads it from its store (`None`: zeros).
    pub base: Option<ChunkHash>,
    /// Length of the chunk (and of its base).
    pub chunk_len: usize,
    /// The pages carried, ascending, numbered within the chunk.
    pub pages: Vec<u32>,
    /// Their bytes, one after the other.
    pub bytes: Vec<u8>,
    /// The same as they travelled (codec byte + payload): what the store
    /// may keep as the chunk's delta body.
    pub encoded: Vec<u8>,
}

impl PageDelta {
    /// Checks a delta frame's page bitmap against a chunk of `chunk_len`
    /// bytes, and returns the pages it names.
    pub(super) fn pages(bitmap: &[u8], chunk_len: usize) -> Result<Vec<u32>, String> {
        if !chunk_len.is_multiple_of(DELTA_PAGE) {
            return Err(format!("a chunk of {chunk_len} bytes does not cut into 4 KiB pages"));
        }
        let chunk_pages = chunk_len / DELTA_PAGE;
        if bitmap.len() != chunk_pages.div_ceil(8) {
            return Err(format!(
                "a page bitmap of {} bytes for a chunk of {chunk_pages} pages",
                bitmap.len()
            ));
        }
        let pages = bitmap_pages(bitmap);
        match pages.last() {
            None => Err("a page delta without pages".to_owned()),
            Some(last) if *last as usize >= chunk_pages => {
                Err(format!("page {last} is beyond the chunk's {chunk_pages} pages"))
            }
            Some(_) => Ok(pages),
        }
    }

    /// The chunk: the pages put over `base` (its previous version, as the
    /// hub read it), checked against the chunk's hash.
    pub fn apply(&self, mut base: Vec<u8>) -> Result<Vec<u8>, TransferError> {
        let mismatch = |reason: String| TransferError::ChunkMismatch {
            hash: self.hash,
            reason,
        };
        if base.len() != self.chunk_len {
            return Err(mismatch(format!(
                "its previous version has {} bytes, not {}",
                base.len(),
                self.chunk_len
            )));
        }
        for (page, bytes) in self.pages.iter().zip(self.bytes.chunks_exact(DELTA_PAGE)) {
            let at = *page as usize * DELTA_PAGE;
            base[at..at + DELTA_PAGE].copy_from_slice(bytes);
        }
        crate::checkpoint::codec::verify_chunk(&base, &self.hash)
            .map_err(|reason| mismatch(format!("{reason} (its pages over the previous version)")))?;
        Ok(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: usize = 64 * 1024;

    #[test]
    fn a_few_pages_are_worth_sending_and_half_of_them_is_the_limit() {
        assert_eq!(worth_sending(CHUNK, &[0, 9]), Some(vec![0b0000_0001, 0b0000_0010]));
        assert!(worth_sending(CHUNK, &(0..8).collect::<Vec<_>>()).is_some());
        assert_eq!(worth_sending(CHUNK, &(0..9).collect::<Vec<_>>()), None);
        assert_eq!(worth_sending(CHUNK, &[]), None);
        assert_eq!(worth_sending(CHUNK, &[16]), None, "beyond the chunk");
        assert_eq!(worth_sending(CHUNK - 100, &[0]), None, "not whole pages");
    }

    #[test]
    fn a_bitmap_names_its_pages_and_a_wrong_one_is_refused() {
        let bitmap = worth_sending(CHUNK, &[1, 7, 15]).unwrap();
        assert_eq!(PageDelta::pages(&bitmap, CHUNK).unwrap(), vec![1, 7, 15]);
        assert!(PageDelta::pages(&[0, 0], CHUNK).unwrap_err().contains("without pages"));
        assert!(PageDelta::pages(&[1], CHUNK).unwrap_err().contains("bitmap of 1 bytes"));
        assert!(
            PageDelta::pages(&[0b1000_0000], 6 * DELTA_PAGE)
                .unwrap_err()
                .contains("beyond")
        );
        assert!(PageDelta::pages(&[1], 100).unwrap_err().contains("4 KiB pages"));
    }

    #[test]
    fn pages_over_the_previous_version_rebuild_the_chunk_or_say_it_does_not_match() {
        let previous: Vec<u8> = (0..CHUNK).map(|at| (at % 251) as u8).collect();
        let mut chunk = previous.clone();
        chunk[3 * DELTA_PAGE + 5] = 0xAB;
        chunk[12 * DELTA_PAGE] = 0xCD;
        let mut bytes = chunk[3 * DELTA_PAGE..4 * DELTA_PAGE].to_vec();
        bytes.extend_from_slice(&chunk[12 * DELTA_PAGE..13 * DELTA_PAGE]);
        let delta = PageDelta {
            hash: crate::checkpoint::hash_chunk(&chunk),
            base: Some(crate::checkpoint::hash_chunk(&previous)),
            chunk_len: CHUNK,
            pages: vec![3, 12],
            bytes,
            encoded: Vec::new(),
        };
        assert_eq!(delta.apply(previous.clone()).unwrap(), chunk);
        let mut other = previous.clone();
        other[0] ^= 1;
        let error = delta.apply(other).unwrap_err();
        assert!(matches!(error, TransferError::ChunkMismatch { .. }), "{error}");
        assert!(delta.apply(previous[..DELTA_PAGE].to_vec()).is_err());
    }
}
