//! Failed puts and concurrent writers: no stored checkpoint ever loses a
//! chunk, and a failed put leaves nothing behind.

use std::sync::atomic::{AtomicBool, Ordering};

use super::{Xorshift, memory, temp_store, template};
use crate::checkpoint::{CheckpointError, ChunkHash};

#[test]
fn a_failed_put_removes_the_chunks_it_wrote_and_harms_nothing() {
    let (db, store) = temp_store();
    let image = memory(4, 601);
    let (stored, _, _) = store.put(template("stored", 1), &image, None).unwrap();
    let chunks_before = store.stored_chunks();

    // Damage the reference count of one chunk of the stored checkpoint, so
    // that the commit of any checkpoint naming that chunk fails.
    let (damaged_index, damaged) = stored
        .chunk_hashes
        .iter()
        .enumerate()
        .find_map(|(index, entry)| Some((index, ChunkHash::from_manifest_entry(entry).ok().flatten()?)))
        .unwrap();
    let refs = db.open_tree("checkpoint_chunk_refs").unwrap();
    let original_count = refs.insert(damaged.as_bytes(), &[1u8, 2, 3][..]).unwrap().unwrap();

    // New content in every chunk but the damaged one.
    let mut changed = image.clone();
    for chunk in (0..changed.len() / 4096).filter(|&chunk| chunk != damaged_index) {
        changed[chunk * 4096] = changed[chunk * 4096].wrapping_add(1);
    }
    let result = store.put(template("failing", 1), &changed, None);
    assert!(
        matches!(&result, Err(CheckpointError::Corrupt { what, .. }) if what.contains("reference count")),
        "{result:?}"
    );
    assert_eq!(
        store.stored_chunks(),
        chunks_before,
        "the failed put left no chunk behind"
    );
    assert_eq!(store.get("failing", 1).unwrap(), None);

    refs.insert(damaged.as_bytes(), original_count).unwrap();
    assert_eq!(store.load_memory(&stored).unwrap(), image);
}

#[test]
fn concurrent_puts_and_collection_never_leave_a_checkpoint_without_its_chunks() {
    let (_db, store) = temp_store();
    let shared = memory(4, 701);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // A collector that keeps deleting another function's checkpoints,
        // which share most chunks with the writer's, and sweeping garbage.
        let collector = scope.spawn(|| {
            let mut sequence = 0;
            while !stop.load(Ordering::Relaxed) {
                sequence += 1;
                store.put(template("other", sequence), &shared, None).unwrap();
                store.remove_function("other").unwrap();
                store.collect_garbage().unwrap();
            }
        });
        // A failed assertion below must stop the collector, or the scope
        // would wait for it forever.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        let mut rng = Xorshift(702);
        let mut image = shared.clone();
        let mut base = None;
        for sequence in 1..=40 {
            let chunk = rng.below(image.len() / 4096);
            image[chunk * 4096] ^= 0xa5;
            let base_ref = base.as_ref().map(|(manifest, fingerprints)| (manifest, fingerprints));
            let (manifest, fingerprints, _) = store.put(template("writer", sequence), &image, base_ref).unwrap();
            assert_eq!(store.load_memory(&manifest).unwrap(), image, "checkpoint {sequence}");
            store.retain("writer", 2).unwrap();
            base = Some((manifest, fingerprints));
        }
        stop.store(true, Ordering::Relaxed);
        collector.join().unwrap();
    });
    let entries = store.list("writer").unwrap();
    assert_eq!(entries.len(), 2);
    for entry in entries {
        store.load_memory(&entry.manifest.unwrap()).unwrap();
    }
    store.remove_function("writer").unwrap();
    store.remove_function("other").unwrap();
    store.collect_garbage().unwrap();
    assert_eq!(store.stored_chunks(), 0, "every count went back to zero");
}
