//! Which chunks of a function's linear memory changed, separately for each
//! consumer (a move's rounds, periodic checkpoints): one never takes
//! another's changes.
//!
//! Two ways to know, chosen once per hub ([`TrackingMode::of_this_hub`]):
//! - **write protection**: the kernel marks the pages written since the
//!   last look ([`write_watch`]); a capture reads only the changed chunks;
//! - **fingerprints**, where the kernel cannot: a capture reads every chunk
//!   in place, through one chunk-sized buffer, and keeps those whose XXH3
//!   differs from the consumer's previous capture.
//!
//! Either way a capture copies out only what changed — never the whole
//! memory — and a consumer's first capture lists every non-zero chunk.

mod write_watch;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use fixedbitset::FixedBitSet;
use twox_hash::XxHash3_128;
use wasmer::MemoryView;

pub use write_watch::{PAGE_BYTES, WriteWatch, populate_for_write};

// The pages a capture names are the pages a checkpoint store's delta keeps.
const _: () = assert!(PAGE_BYTES == ferry_migrator::checkpoint::DELTA_PAGE);

use super::snapshot::MemoryChanges;

/// How a hub learns which parts of memory changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackingMode {
    /// userfaultfd write protection read with `PAGEMAP_SCAN`.
    WriteProtect,
    /// Per-chunk fingerprints, computed at each capture.
    Fingerprints,
}

impl TrackingMode {
    /// The mode this process can use (probed once).
    pub fn of_this_hub() -> TrackingMode {
        match WriteWatch::probe() {
            Ok(()) => TrackingMode::WriteProtect,
            Err(error) => {
                static LOGGED: std::sync::Once = std::sync::Once::new();
                LOGGED.call_once(|| {
                    tracing::warn!(%error, "the kernel cannot track writes; captures compare fingerprints of every chunk");
                });
                TrackingMode::Fingerprints
            }
        }
    }

    /// How `ferry info` names it.
    pub fn describe(self) -> &'static str {
        match self {
            TrackingMode::WriteProtect => "write-protect (userfaultfd + PAGEMAP_SCAN)",
            TrackingMode::Fingerprints => "fingerprints (every chunk read at each capture)",
        }
    }
}

/// One consumer's changes since its previous capture.
struct DirtySet {
    /// Size of the memory at the consumer's previous capture: chunks past
    /// it were zero for the consumer, and are changed only if no longer zero.
    known_bytes: u64,
    changes: SetChanges,
}

enum SetChanges {
    /// Pages written, one bit per [`PAGE_BYTES`].
    Pages(FixedBitSet),
    /// XXH3 of each chunk at the previous capture.
    Fingerprints { chunk_size: u32, values: Vec<u128> },
}

/// The dirty sets of one instance's memory.
pub struct DirtyTracker {
    mode: TrackingMode,
    /// Armed at the first capture that asks for changes.
    watch: Option<WriteWatch>,
    sets: HashMap<String, DirtySet>,
    seed: u64,
    buffer: Vec<u8>,
}

impl DirtyTracker {
    pub fn new(mode: TrackingMode) -> DirtyTracker {
        DirtyTracker {
            mode,
            watch: None,
            sets: HashMap::new(),
            seed: RandomState::new().hash_one(0x6469_7274_7973_6574_u64),
            buffer: Vec::new(),
        }
    }

    /// The mode this tracker works in (write protection falls back to
    /// fingerprints if the kernel refuses it for this memory).
    #[cfg(test)]
    pub fn mode(&self) -> TrackingMode {
        self.mode
    }

    /// Drops the dirty set `key` (its consumer is done).
    pub fn forget(&mut self, key: &str) {
        self.sets.remove(key);
        if self.sets.is_empty() {
            // Nobody asks: stop paying for the first write to each page.
            self.watch = None;
        }
    }

    /// Starts the dirty set `key` with nothing changed: its consumer holds
    /// `view` as it is now (the memory was just restored from the
    /// consumer's own checkpoint), so its first capture reports only what
    /// is written from here on. Replaces a set of the same name.
    pub fn start_clean(&mut self, view: &MemoryView<'_>, key: &str, chunk_size: u32) -> Result<(), String> {
        check_chunk_size(chunk_size)?;
        let memory_bytes = view.data_size();
        self.sets.remove(key);
        if self.mode == TrackingMode::WriteProtect {
            // Arms the watch (or finds it lost, which falls back to fingerprints).
            self.collect(view);
        }
        let changes = match self.mode {
            TrackingMode::WriteProtect => SetChanges::Pages(FixedBitSet::with_capacity(pages_of(memory_bytes))),
            TrackingMode::Fingerprints => {
                let chunk_count = memory_bytes.div_ceil(u64::from(chunk_size));
                let mut values = Vec::with_capacity(chunk_count as usize);
                for index in 0..chunk_count {
                    let offset = index * u64::from(chunk_size);
                    let len = u64::from(chunk_size).min(memory_bytes - offset) as usize;
                    self.buffer.resize(len, 0);
                    view.read(offset, &mut self.buffer)
                        .map_err(|error| format!("cannot read memory at {offset}: {error}"))?;
                    values.push(XxHash3_128::oneshot_with_seed(self.seed, &self.buffer));
                }
                SetChanges::Fingerprints { chunk_size, values }
            }
        };
        self.sets.insert(
            key.to_owned(),
            DirtySet {
                known_bytes: memory_bytes,
                changes,
            },
        );
        Ok(())
    }

    /// The chunks of `view` that changed since `key`'s previous capture
    /// (every non-zero chunk at its first), copied out.
    pub fn capture(&mut self, view: &MemoryView<'_>, key: &str, chunk_size: u32) -> Result<MemoryChanges, String> {
        check_chunk_size(chunk_size)?;
        let memory_bytes = view.data_size();
        if self.mode == TrackingMode::WriteProtect {
            self.collect(view);
        }
        let chunk_count = memory_bytes.div_ceil(u64::from(chunk_size)) as usize;
        let mut changes = MemoryChanges::new(memory_bytes, chunk_size, false);
        let known_bytes = match self.sets.get_mut(key) {
            None => {
                changes.complete = true;
                let kept = match self.mode {
                    TrackingMode::WriteProtect => SetChanges::Pages(FixedBitSet::with_capacity(pages_of(memory_bytes))),
                    TrackingMode::Fingerprints => SetChanges::Fingerprints {
                        chunk_size,
                        values: Vec::with_capacity(chunk_count),
                    },
                };
                let set = DirtySet {
                    known_bytes: 0,
                    changes: kept,
                };
                self.sets.insert(key.to_owned(), set);
                0
            }
            Some(DirtySet {
                changes: SetChanges::Fingerprints { chunk_size: known, .. },
                ..
            }) if *known != chunk_size => {
                return Err(format!(
                    "dirty set {key:?} keeps {known}-byte chunks, not {chunk_size}-byte ones"
                ));
            }
            Some(set) => set.known_bytes,
        };
        let candidates: Vec<usize> = match &mut self.sets.get_mut(key).expect("inserted above").changes {
            SetChanges::Pages(pages) if !changes.complete => {
                changes.written_pages = Some(pages.ones().map(|page| page as u32).collect());
                let pages_per_chunk = chunk_size as usize / PAGE_BYTES;
                let mut chunks: Vec<usize> = pages.ones().map(|page| page / pages_per_chunk).collect();
                chunks.dedup();
                pages.clear();
                // Chunks past the known end may hold data written before the watch saw them.
                let first_new = known_bytes.div_ceil(u64::from(chunk_size)) as usize;
                chunks.extend(first_new..chunk_count);
                chunks.sort_unstable();
                chunks.dedup();
                chunks.retain(|index| *index < chunk_count);
                chunks
            }
            _ => (0..chunk_count).collect(),
        };
        self.read_chunks(view, &mut changes, &candidates, known_bytes, key)?;
        if let Some(set) = self.sets.get_mut(key) {
            set.known_bytes = memory_bytes;
        }
        Ok(changes)
    }

    /// Reads `candidates` into `changes`. A large capture (a set's first:
    /// the whole memory) copies its first half while another thread faults
    /// in the room for the second: most of such a copy is the kernel
    /// handing out fresh pages, and the function is stopped meanwhile.
    fn read_chunks(
        &mut self,
        view: &MemoryView<'_>,
        changes: &mut MemoryChanges,
        candidates: &[usize],
        known_bytes: u64,
        key: &str,
    ) -> Result<(), String> {
        let chunk_bytes = changes.chunk_size as usize;
        if candidates.len() * chunk_bytes < FAULT_AHEAD_FROM {
            changes.reserve_chunks(candidates.len());
            for index in candidates {
                self.read_chunk(view, changes, *index, known_bytes, key)?;
            }
            return Ok(());
        }
        let (first, second) = candidates.split_at(candidates.len() / 2);
        changes.reserve_chunks(first.len());
        std::thread::scope(|scope| {
            let room = second.len() * chunk_bytes;
            let helper = std::thread::Builder::new()
                .name("ferry-capture-room".to_owned())
                .spawn_scoped(scope, move || faulted_in(room));
            for index in first {
                self.read_chunk(view, changes, *index, known_bytes, key)?;
            }
            match helper.map(|helper| helper.join()) {
                Ok(Ok(buffer)) => changes.continue_in(buffer),
                // No thread, or it failed: the pages fault in as they are copied.
                _ => changes.reserve_chunks(second.len()),
            }
            for index in second {
                self.read_chunk(view, changes, *index, known_bytes, key)?;
            }
            Ok(())
        })
    }

    /// Reads chunk `index` and adds it to `changes` if it changed for
    /// `key`: in a complete capture, if it is not zero; past the
    /// consumer's known end, if it is not zero; with fingerprints, if its
    /// fingerprint differs; with pages, always (it was written).
    fn read_chunk(
        &mut self,
        view: &MemoryView<'_>,
        changes: &mut MemoryChanges,
        index: usize,
        known_bytes: u64,
        key: &str,
    ) -> Result<(), String> {
        let chunk_size = changes.chunk_size as u64;
        let offset = index as u64 * chunk_size;
        let len = chunk_size.min(changes.memory_bytes - offset) as usize;
        self.buffer.resize(len, 0);
        view.read(offset, &mut self.buffer)
            .map_err(|error| format!("cannot read memory at {offset}: {error}"))?;
        let zero_for_consumer = changes.complete || offset >= known_bytes;
        let mut changed = !(zero_for_consumer && ferry_migrator::checkpoint::is_zero_chunk(&self.buffer));
        if let Some(DirtySet {
            changes: SetChanges::Fingerprints { values, .. },
            ..
        }) = self.sets.get_mut(key)
        {
            let fingerprint = XxHash3_128::oneshot_with_seed(self.seed, &self.buffer);
            match values.get_mut(index) {
                Some(known) if !zero_for_consumer => {
                    changed = *known != fingerprint;
                    *known = fingerprint;
                }
                Some(known) => *known = fingerprint,
                None => {
                    values.resize(index, 0);
                    values.push(fingerprint);
                }
            }
        }
        if changed {
            changes.push(index as u32, &self.buffer);
        }
        Ok(())
    }

    /// Moves what the kernel recorded since the last look into every dirty
    /// set, and arms or re-arms the watch. Whatever cannot be known (the
    /// watch is new, was lost, or the memory grew) counts as written.
    fn collect(&mut self, view: &MemoryView<'_>) {
        let memory_bytes = view.data_size() as usize;
        let start = view.data_ptr() as usize;
        let pages = pages_of(memory_bytes as u64);
        for set in self.sets.values_mut() {
            if let SetChanges::Pages(bits) = &mut set.changes {
                bits.grow(pages);
            }
        }
        if self.watch.as_ref().is_some_and(|watch| watch.start() != start) {
            tracing::warn!("the guest memory moved; every page counts as written");
            self.watch = None;
        }
        let Some(watch) = self.watch.as_mut() else {
            match WriteWatch::new(start, memory_bytes) {
                Ok(mut watch) => {
                    // Everything populated so far reads as written once.
                    let _ = watch.scan(|_, _| {});
                    self.watch = Some(watch);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot watch this memory for writes; comparing fingerprints instead");
                    self.mode = TrackingMode::Fingerprints;
                    // The page sets cannot be continued: their next capture is complete.
                    self.sets.clear();
                    return;
                }
            }
            self.mark_all(0, memory_bytes);
            return;
        };
        let mut written = Vec::new();
        let lost = match watch.extend_to(memory_bytes) {
            Ok(()) => watch.scan(|from, to| written.push((from, to))).err(),
            Err(error) => Some(error),
        };
        if let Some(error) = lost {
            tracing::warn!(%error, "write tracking was lost; every page counts as written");
            self.watch = None;
            self.mark_all(0, memory_bytes);
            return;
        }
        // Writes to grown memory before the watch covered it: every chunk
        // past a set's known end is read at its next capture anyway.
        for (from, to) in written {
            self.mark_all(from, to);
        }
    }

    /// Marks bytes `from..to` written in every page set.
    fn mark_all(&mut self, from: usize, to: usize) {
        let pages = from / PAGE_BYTES..to.div_ceil(PAGE_BYTES);
        for set in self.sets.values_mut() {
            if let SetChanges::Pages(bits) = &mut set.changes {
                bits.grow(pages.end);
                bits.insert_range(pages.clone());
            }
        }
    }
}

fn check_chunk_size(chunk_size: u32) -> Result<(), String> {
    if chunk_size == 0 || !chunk_size.is_multiple_of(PAGE_BYTES as u32) {
        return Err(format!("chunk size {chunk_size} is not a multiple of {PAGE_BYTES}"));
    }
    Ok(())
}

/// Captures of at least this many bytes fault their room in on two threads.
const FAULT_AHEAD_FROM: usize = 8 << 20;

/// An empty buffer with room for `bytes`, every page of it faulted in.
// `vec![0; bytes]` would map zero pages lazily: the writes are the point.
#[allow(clippy::slow_vector_initialization)]
fn faulted_in(bytes: usize) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(bytes);
    buffer.resize(bytes, 0);
    std::hint::black_box(&mut buffer);
    buffer.clear();
    buffer
}

fn pages_of(memory_bytes: u64) -> usize {
    memory_bytes.div_ceil(PAGE_BYTES as u64) as usize
}
