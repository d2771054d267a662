//! Incremental checkpoint cost against a full one, in the same run.
//!
//! A 64 MiB heap image (¾ non-zero data, ¼ zero pages) is checkpointed in
//! full; then 1 % of its 64 KiB chunks get one byte changed and it is
//! checkpointed again with the previous checkpoint as base. Prints medians
//! of several rounds, their ratio (target ≤ 0.05), the bytes each wrote
//! against the memory in use, and load time against a plain copy.
//!
//! Run: `cargo bench -p ferry-migrator --bench checkpoint_store`

use std::time::{Duration, Instant};

use ferry_migrator::checkpoint::{CheckpointStore, DEFAULT_CHUNK_SIZE};
use ferry_proto::internal::v1::{CheckpointManifest, HostState, PendingCall, pending_call};
use ferry_proto::v1::FunctionSpec;

const MIB: usize = 1 << 20;
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

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    let mut image = heap_image(64 * MIB);
    let chunk = DEFAULT_CHUNK_SIZE as usize;
    let chunks = image.len() / chunk;
    let mut full_times = Vec::new();
    let mut incremental_times = Vec::new();
    let mut load_times = Vec::new();
    let mut copy_times = Vec::new();
    let (mut full_bytes, mut incremental_bytes, mut nonzero, mut changed) = (0, 0, 0, 0);
    for round in 0..ROUNDS {
        let db = sled::Config::new().temporary(true).open().expect("temporary sled");
        let store = CheckpointStore::open(&db).expect("store");
        let started = Instant::now();
        let (base, fingerprints, full) = store.put(template(1), &image, None).expect("full put");
        full_times.push(started.elapsed());
        for step in 0..chunks / 100 {
            let offset = ((step * 97 + round * 13) % chunks) * chunk + step % chunk;
            image[offset] = image[offset].wrapping_add(1);
        }
        let started = Instant::now();
        let (next, _, incremental) = store
            .put(template(2), &image, Some((&base, &fingerprints)))
            .expect("incremental put");
        incremental_times.push(started.elapsed());
        let started = Instant::now();
        let loaded = store.load_memory(&next).expect("load");
        load_times.push(started.elapsed());
        assert!(loaded == image, "the loaded image is the stored one");
        let started = Instant::now();
        let copy = std::hint::black_box(image.clone());
        copy_times.push(started.elapsed());
        drop(copy);
        full_bytes = full.checkpoint_bytes();
        incremental_bytes = incremental.checkpoint_bytes();
        nonzero = full.nonzero_bytes;
        changed = incremental.hashed_chunks * u64::from(DEFAULT_CHUNK_SIZE);
    }
    let (full, incremental) = (median(full_times), median(incremental_times));
    let (load, copy) = (median(load_times), median(copy_times));
    println!("checkpoint of a 64 MiB heap, {ROUNDS} rounds, medians");
    println!(
        "  full checkpoint        : {:>8.2} ms, {:>9} bytes written for {} non-zero bytes ({:.3})",
        ms(full),
        full_bytes,
        nonzero,
        full_bytes as f64 / nonzero as f64
    );
    println!(
        "  1 % dirty, incremental : {:>8.2} ms, {:>9} bytes written for {} changed bytes ({:.3})",
        ms(incremental),
        incremental_bytes,
        changed,
        incremental_bytes as f64 / changed.max(1) as f64
    );
    println!(
        "  ratio incremental/full : {:.3}  (target <= 0.05)",
        incremental.as_secs_f64() / full.as_secs_f64()
    );
    println!(
        "  load (verify + inflate): {:>8.2} ms, plain copy {:.2} ms, ratio {:.1}",
        ms(load),
        ms(copy),
        load.as_secs_f64() / copy.as_secs_f64()
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
