//! A restore's pages allocated in batches, by the thread that decodes them.
//!
//! Filling a fresh 64 MiB memory from the store, most of the time went not
//! to copying but to the kernel allocating and zeroing each page at its
//! first write: a fault per 4 KiB page, all on the thread that writes into
//! the instance. One `MADV_POPULATE_WRITE` call does the same for a chunk's
//! pages without the faults, and it can run on any thread: the store's
//! reader calls [`Prefault::chunk`] on the thread that decodes a chunk
//! into place, before it reads it, so on a machine with two cores each
//! decoding thread prepares the pages of its own chunks. Only stored chunks are populated:
//! all-zero chunks stay unpopulated, as they would without it.

use std::sync::atomic::{AtomicBool, Ordering};

use wasmer::MemoryView;

use super::dirty::populate_for_write;

/// Runs `write` on the whole linear memory of an instance whose guest has
/// not run yet: a restore fills it from the instance's thread and a helper,
/// chunk by chunk (`CheckpointStore::read_memory_into` hands each thread
/// disjoint parts of it).
#[allow(unsafe_code)]
pub(super) fn with_memory_before_its_run<T>(view: &MemoryView<'_>, write: impl FnOnce(&mut [u8]) -> T) -> T {
    // SAFETY: the slice is the memory's current extent, which nothing
    // resizes or unmaps while `view` borrows the store. No other reference
    // to these bytes is alive while `write` runs: no guest code runs (a
    // restore comes right after instantiation, on the instance's thread,
    // before its first call), host functions run only inside guest calls,
    // and `write` cannot reach `view`'s store.
    let memory = unsafe { view.data_unchecked_mut() };
    write(memory)
}

/// Populates the pages of the chunks of a memory at a fixed address.
pub(super) struct Prefault {
    base: usize,
    /// Set at the first failure (an old kernel, a chunk not page aligned):
    /// the restore's own writes fault the pages in, as before.
    failed: AtomicBool,
}

impl Prefault {
    /// For the memory whose first byte is at `base` (page aligned).
    pub(super) fn new(base: usize) -> Prefault {
        Prefault {
            base,
            failed: AtomicBool::new(false),
        }
    }

    /// Populates `len` bytes at `offset` of the memory, which the caller
    /// is about to write and which lie inside its current size.
    pub(super) fn chunk(&self, offset: u64, len: usize) {
        if self.failed.load(Ordering::Relaxed) {
            return;
        }
        if let Err(error) = populate_for_write(self.base + offset as usize, len)
            && !self.failed.swap(true, Ordering::Relaxed)
        {
            tracing::debug!(%error, "cannot populate a restore's pages ahead of its copy");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populating_pages_changes_no_byte() {
        let mut memory = vec![0u8; 8 << 20];
        // Half of it populated with data, half fresh pages never touched.
        memory[..4 << 20]
            .iter_mut()
            .enumerate()
            .for_each(|(index, byte)| *byte = index as u8);
        let before = memory.clone();
        let aligned = (memory.as_mut_ptr() as usize).next_multiple_of(4096);
        let prefault = Prefault::new(aligned);
        for offset in (0..(8u64 << 20) - 65536).step_by(65536) {
            prefault.chunk(offset, 65536);
        }
        assert!(!prefault.failed.load(Ordering::Relaxed), "populating failed");
        assert!(memory == before, "populating changed what the memory holds");
    }

    #[test]
    fn a_range_that_cannot_be_populated_ends_the_help_quietly() {
        let prefault = Prefault::new(4096 * 3);
        prefault.chunk(0, 65536);
        assert!(prefault.failed.load(Ordering::Relaxed));
        prefault.chunk(65536, 65536);
    }
}
