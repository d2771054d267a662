//! Where the arriving memory goes: straight into the warm instance, or,
//! without one, into an image that the start copies into a cold instance.
//!
//! With a warm instance no image is kept: the instance's memory is the only
//! copy in this hub's RAM, and the sealed checkpoint in the store is what a
//! cold start falls back to if the instance turns out unusable.

use std::sync::Arc;

use ferry_migrator::checkpoint::ChunkHash;
use ferry_migrator::checkpoint::codec::ChunkDecoder;
use ferry_migrator::transfer::{PageDelta, TransferError};
use ferry_proto::ErrorCode;

use super::Arrival;
use crate::error::HubError;

/// Chunks kept as deltas are indexed in one transaction per this many.
const PAGES_INDEXED_TOGETHER: usize = 1024;

impl Arrival {
    /// Instantiates the function now, while the rounds stream, so that the
    /// arriving memory goes straight into it and the commit only rewinds.
    /// Without one the start is cold (instantiate, then copy the image).
    pub(super) async fn warm_up(&mut self) {
        let Some(spec) = self.receiver.offer().and_then(|offer| offer.spec.clone()) else {
            return;
        };
        match self.supervisor.warm_instance(&spec).await {
            Ok(warm) => self.warm = Some(warm),
            Err(error) => {
                tracing::info!(function = %spec.name, error = %ferry_proto::error_chain(&error), "no warm instance; the start will be cold");
            }
        }
    }

    /// Grows the memory to `bytes` (memory only grows). A first image is
    /// allocated zeroed, which the kernel does lazily: no 64 MiB memset
    /// before the first round's answer.
    pub(super) fn grow_memory(&mut self, bytes: usize) {
        self.memory_bytes = self.memory_bytes.max(bytes);
        match &self.warm {
            Some(warm) => warm.grow_to(bytes as u64),
            None if self.image.is_empty() => self.image = vec![0; bytes],
            None => self.image.resize(bytes.max(self.image.len()), 0),
        }
    }

    /// Bytes of chunk slot `slot` (the last one may be short).
    pub(super) fn slot_len(&self, slot: u32) -> usize {
        let start = slot as usize * self.chunk_size;
        self.memory_bytes.saturating_sub(start).min(self.chunk_size)
    }

    /// Writes a chunk's bytes into slot `slot`.
    pub(super) fn write_slot(&mut self, slot: u32, bytes: &Arc<Vec<u8>>) {
        let start = slot as usize * self.chunk_size;
        match &self.warm {
            // Shared, not copied: one chunk may fill several slots.
            Some(warm) => warm.write(start as u64, Arc::clone(bytes)),
            None => {
                if let Some(target) = self.image.get_mut(start..start + bytes.len()) {
                    target.copy_from_slice(bytes);
                }
            }
        }
    }

    /// Zeroes slot `slot` (a chunk that became all zero).
    pub(super) fn zero_slot(&mut self, slot: u32) {
        let zeros = Arc::new(vec![0; self.slot_len(slot)]);
        self.write_slot(slot, &zeros);
    }

    /// Takes a chunk that came as the pages written over its previous
    /// version: that version read from the store (every chunk of the
    /// previous round is there, staged), the pages put over it and the
    /// whole checked against its hash, then stored (as those pages where
    /// that pays) and written into its slots.
    pub(super) fn take_pages(&mut self, delta: PageDelta, slots: Vec<u32>) -> Result<(), HubError> {
        let store = self.supervisor.checkpoint_store().clone();
        let mut base = vec![0; delta.chunk_len];
        if let Some(hash) = &delta.base {
            let decoder = self.decoder().map_err(HubError::Checkpoint)?;
            store.read_chunk_with(decoder, hash, &mut base).map_err(|error| {
                HubError::Transfer(TransferError::Unacceptable {
                    code: ErrorCode::Internal,
                    reason: format!(
                        "cannot read chunk {hash}, the previous version of chunk {} that came as pages: {}",
                        delta.hash,
                        ferry_proto::error_chain(&error)
                    ),
                })
            })?;
        }
        let chunk = delta.apply(base).map_err(HubError::Transfer)?;
        if store
            .put_verified_pages(
                &mut self.pages,
                &delta.hash,
                &chunk,
                (delta.base, &delta.pages),
                &delta.encoded,
            )
            .map_err(HubError::Checkpoint)?
        {
            self.received.push(delta.hash);
        }
        let chunk = Arc::new(chunk);
        for slot in slots {
            self.write_slot(slot, &chunk);
        }
        if self.pages.len() >= PAGES_INDEXED_TOGETHER {
            self.index_pages()?;
        }
        Ok(())
    }

    /// The decoder this arrival reads stored chunks with (a zstd context
    /// is a few hundred KiB to set up).
    fn decoder(&mut self) -> Result<&mut ChunkDecoder, ferry_migrator::checkpoint::CheckpointError> {
        match &mut self.decoder {
            Some(decoder) => Ok(decoder),
            none => Ok(none.insert(ChunkDecoder::new()?)),
        }
    }

    /// Indexes the chunks that came as pages and were kept as deltas
    /// (`CheckpointStore::index_received_pages`): before a round is
    /// answered or the seal imported, which look them up, and every
    /// [`PAGES_INDEXED_TOGETHER`] chunks meanwhile.
    pub(super) fn index_pages(&mut self) -> Result<(), HubError> {
        self.supervisor
            .checkpoint_store()
            .index_received_pages(&mut self.pages)
            .map_err(HubError::Checkpoint)
    }

    /// Fills `slots` with the stored chunk `hash`; false if the store cannot
    /// give it (gone, or unreadable), for the caller to ask for it instead.
    pub(super) fn fill_from_store(&mut self, hash: &ChunkHash, slots: &[u32]) -> bool {
        let Some(&first) = slots.first() else {
            return true;
        };
        let mut bytes = vec![0; self.slot_len(first)];
        let store = self.supervisor.checkpoint_store().clone();
        let Ok(decoder) = self.decoder() else {
            return false;
        };
        if store.read_chunk_with(decoder, hash, &mut bytes).is_err() {
            return false;
        }
        let bytes = Arc::new(bytes);
        for slot in slots {
            self.write_slot(*slot, &bytes);
        }
        true
    }
}
