//! Incremental checkpoint cost against a full one, in the same run.
//!
//! A 64 MiB heap image (¾ non-zero data, ¼ zero pages) is checkpointed in
//! full; then 1 % of it changes and it is checkpointed again on the first.
//! Three incremental kinds, medians of several rounds each, every one a
//! ratio to the full checkpoint of the same round (target ≤ 0.05):
//! - **fingerprints**: the whole memory handed over, the changed chunks
//!   found by comparing fingerprints (`put` with a base);
//! - **changes, contiguous**: what a dirty-page tracker hands over when
//!   1 % of the memory in one stretch was written (`put_changes`);
//! - **changes, scattered**: 1 % of the 4 KiB pages written at random
//!   places, so many more chunks are dirty than pages; measured with
//!   64 KiB chunks (the default) and 16 KiB chunks, and once without
//!   telling the store which pages were written (no deltas).
//!
//! The changed chunks are copied out (what a tracker hands over) before
//! the clock starts, as the full put starts from a memory in hand.
//!
//! Also the load of a checkpoint against a plain copy: by a store opened
//! anew (every chunk verified; and its check alone, `verify_memory`, as a
//! restore after a restart runs it) and by the store that wrote it (trusted),
//! for the fingerprints checkpoint (whole chunks) and the scattered one
//! with pages known (some chunks kept as deltas: two bodies each).
//!
//! Run: `cargo bench --profile dev -p ferry-migrator --bench checkpoint_store`

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ferry_migrator::checkpoint::{
    ChangedMemory, CheckpointStore, CheckpointStoreOptions, DEFAULT_CHUNK_SIZE, PutStats,
};
use ferry_proto::internal::v1::{CheckpointManifest, HostState, PendingCall, pending_call};
use ferry_proto::v1::FunctionSpec;

const MIB: usize = 1 << 20;
const PAGE: usize = 4096;
const ROUNDS: usize = 5;

fn template(sequence: u64) -> CheckpointManifest {
    CheckpointManifest {
        spec: Some(FunctionSpec {
            name: "heap".into(),
            module_hash: "bench".into(),
            ..Default::default()
        }),
        module_hash: "bench".into(),
        sequence,
        host: Some(HostState {
            pending: Some(PendingCall {
                call: Some(pending_call::Call::Preempt(pending_call::Preempt {})),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Deterministic heap-like content: text-ish and numeric regions, zero pages.
fn heap_image(bytes: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut image = vec![0u8; bytes];
    for (index, chunk) in image.chunks_mut(DEFAULT_CHUNK_SIZE as usize).enumerate() {
        if index % 4 == 3 {
            continue;
        }
        for byte in chunk.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = (state % 64) as u8 + 32;
        }
    }
    image
}

/// How the 1 % of memory that changes is spread.
#[derive(Clone, Copy)]
enum Dirt {
    /// One stretch of pages.
    Contiguous,
    /// Pages at random places.
    Scattered,
}

/// Writes one byte into 1 % of the pages of `image`; returns the pages.
fn dirty(image: &mut [u8], dirt: Dirt, round: usize) -> BTreeSet<usize> {
    let pages = image.len() / PAGE;
    let count = pages / 100;
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ round as u64;
    let written: BTreeSet<usize> = match dirt {
        Dirt::Contiguous => {
            let first = (round * 977) % (pages - count);
            (first..first + count).collect()
        }
        Dirt::Scattered => {
            let mut written = BTreeSet::new();
            while written.len() < count {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                written.insert((state % pages as u64) as usize);
            }
            written
        }
    };
    for page in &written {
        let offset = page * PAGE + (round * 31) % PAGE;
        image[offset] = image[offset].wrapping_add(1);
    }
    written
}

/// What a tracker hands over for `pages` written: a copy of each chunk
/// holding one of them.
fn changed_chunks(image: &[u8], pages: &BTreeSet<usize>, chunk_size: usize) -> (Vec<u32>, Vec<u8>) {
    let chunks: BTreeSet<usize> = pages.iter().map(|page| page * PAGE / chunk_size).collect();
    let mut data = Vec::with_capacity(chunks.len() * chunk_size);
    for chunk in &chunks {
        data.extend_from_slice(&image[chunk * chunk_size..(chunk + 1) * chunk_size]);
    }
    (chunks.iter().map(|chunk| *chunk as u32).collect(), data)
}

/// One kind of incremental checkpoint measured against a full one.
struct Trial {
    full: Vec<Duration>,
    incremental: Vec<Duration>,
    full_stats: PutStats,
    incremental_stats: PutStats,
    /// Loads of the incremental checkpoint.
    loads: Vec<Loads>,
}

/// Rounds of a full checkpoint then an incremental one of `dirt` (`None`:
/// found by fingerprints) in a store of `chunk_size` chunks.
fn trial(chunk_size: u32, dirt: Option<Dirt>, pages_known: bool) -> Trial {
    let mut trial = Trial {
        full: Vec::new(),
        incremental: Vec::new(),
        full_stats: PutStats::default(),
        incremental_stats: PutStats::default(),
        loads: Vec::new(),
    };
    for round in 0..ROUNDS {
        let mut image = heap_image(64 * MIB);
        let db = sled::Config::new().temporary(true).open().expect("temporary sled");
        let packs = tempfile::tempdir().expect("pack directory");
        let options = CheckpointStoreOptions {
            chunk_size,
            ..Default::default()
        };
        let store = CheckpointStore::open_with(&db, packs.path(), options).expect("store");
        let started = Instant::now();
        let (base, fingerprints, full) = store.put(template(1), &image, None).expect("full put");
        trial.full.push(started.elapsed());
        let pages = dirty(&mut image, dirt.unwrap_or(Dirt::Contiguous), round);
        // What a tracker hands over, taken before the clock starts: the
        // full put is timed from a memory in hand too.
        let (indexes, data) = match dirt {
            Some(_) => changed_chunks(&image, &pages, chunk_size as usize),
            None => (Vec::new(), Vec::new()),
        };
        let chunks: Vec<(u32, &[u8])> = indexes.iter().copied().zip(data.chunks(chunk_size as usize)).collect();
        let written: Vec<u32> = pages.iter().map(|page| *page as u32).collect();
        let started = Instant::now();
        let (next, incremental) = match dirt {
            None => {
                let (next, _, stats) = store
                    .put(template(2), &image, Some((&base, &fingerprints)))
                    .expect("incremental put");
                (next, stats)
            }
            Some(_) => {
                let changes = ChangedMemory {
                    memory_bytes: image.len() as u64,
                    chunk_size,
                    complete: false,
                    chunks: &chunks,
                    written_pages: pages_known.then_some(written.as_slice()),
                };
                store
                    .put_changes(template(2), changes, Some(&base))
                    .expect("put of changes")
            }
        };
        trial.incremental.push(started.elapsed());
        trial.full_stats = full;
        trial.incremental_stats = incremental;
        {
            // As after a restart: a store opened anew checks every chunk,
            // first without keeping any (what a restore does before it
            // commits to a checkpoint), then by loading it.
            let checker = CheckpointStore::open_with(&db, packs.path(), options).expect("store");
            let started = Instant::now();
            checker.verify_memory(&next).expect("check");
            let checked = started.elapsed();
            drop(checker);
            let reopened = CheckpointStore::open_with(&db, packs.path(), options).expect("store");
            let started = Instant::now();
            let loaded = reopened.load_memory(&next).expect("load");
            let verified = started.elapsed();
            assert!(loaded == image, "the loaded image is the stored one");
            drop(loaded);
            // The store that wrote the chunks trusts them.
            let started = Instant::now();
            let loaded = store.load_memory(&next).expect("load");
            let trusted = started.elapsed();
            assert!(loaded == image, "the loaded image is the stored one");
            drop(loaded);
            let started = Instant::now();
            let copy = std::hint::black_box(image.clone());
            trial.loads.push(Loads {
                checked,
                verified,
                trusted,
                copy: started.elapsed(),
            });
            drop(copy);
        }
    }
    trial
}

/// One round's load of the incremental checkpoint, and a plain copy of
/// the same memory.
struct Loads {
    checked: Duration,
    verified: Duration,
    trusted: Duration,
    copy: Duration,
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    let mut loads = Vec::new();
    let kinds: [(&str, u32, Option<Dirt>, bool); 5] = [
        ("fingerprints, 64 KiB chunks", DEFAULT_CHUNK_SIZE, None, false),
        (
            "changes, contiguous, 64 KiB",
            DEFAULT_CHUNK_SIZE,
            Some(Dirt::Contiguous),
            true,
        ),
        (
            "changes, scattered, 64 KiB",
            DEFAULT_CHUNK_SIZE,
            Some(Dirt::Scattered),
            true,
        ),
        (
            "  the same, pages unknown",
            DEFAULT_CHUNK_SIZE,
            Some(Dirt::Scattered),
            false,
        ),
        ("changes, scattered, 16 KiB", 16 * 1024, Some(Dirt::Scattered), true),
    ];
    println!("checkpoint of a 64 MiB heap, 1 % of its pages written, {ROUNDS} rounds, medians");
    for (name, chunk_size, dirt, pages_known) in kinds {
        let trial = trial(chunk_size, dirt, pages_known);
        let (full, incremental) = (median(trial.full), median(trial.incremental));
        loads.push((name, trial.incremental_stats.delta_chunks, trial.loads));
        let stats = trial.incremental_stats;
        println!(
            "  {name:<28}: full {:>7.2} ms ({:>8} bytes), incremental {:>6.2} ms ({:>7} bytes, {} of {} chunks hashed, {} kept as deltas), ratio {:.3} (target <= 0.05)",
            ms(full),
            trial.full_stats.checkpoint_bytes(),
            ms(incremental),
            stats.checkpoint_bytes(),
            stats.hashed_chunks,
            stats.chunks,
            stats.delta_chunks,
            incremental.as_secs_f64() / full.as_secs_f64()
        );
    }
    // The headline load: the fingerprints checkpoint, whole chunks only.
    // Then a checkpoint with deltas, each read as two bodies.
    for (name, deltas, loads) in loads.iter().filter(|(_, deltas, _)| *deltas == 0).take(1).chain(
        loads
            .iter()
            .filter(|(name, deltas, _)| *deltas > 0 && name.contains("scattered, 64")),
    ) {
        let checked = median(loads.iter().map(|loads| loads.checked).collect());
        let verified = median(loads.iter().map(|loads| loads.verified).collect());
        let trusted = median(loads.iter().map(|loads| loads.trusted).collect());
        let copy = median(loads.iter().map(|loads| loads.copy).collect());
        println!(
            "  load of the incremental checkpoint of \"{}\" ({deltas} deltas):",
            name.trim()
        );
        println!(
            "    checked by a store opened anew (verify_memory, nothing kept): {:>8.2} ms",
            ms(checked)
        );
        println!(
            "    by a store opened anew (verify + inflate): {:>8.2} ms, over the copy {:+.2} ms",
            ms(verified),
            ms(verified) - ms(copy)
        );
        println!(
            "    by the store that wrote it (trusted, inflate): {:>8.2} ms, over the copy {:+.2} ms",
            ms(trusted),
            ms(trusted) - ms(copy)
        );
        println!("    plain copy of the same memory: {:>8.2} ms", ms(copy));
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
