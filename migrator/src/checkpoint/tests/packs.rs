//! Chunk bodies in pack files: where they are, what a damaged pack does, and
//! how dead space comes back.

use std::os::unix::fs::FileExt;

use super::{TEST_CHUNK_SIZE, TempDb, memory, template};
use crate::checkpoint::{
    CheckpointError, CheckpointStore, CheckpointStoreOptions, ChunkHash, manifest::distinct_chunks,
};

// `memory` seeds are odd: it uses `seed | 1`.

/// Small chunks in small packs, so that a few checkpoints fill several.
fn small_packs(db: &TempDb) -> CheckpointStore {
    db.open_with(CheckpointStoreOptions {
        chunk_size: TEST_CHUNK_SIZE,
        pack_bytes: 32 * 1024,
        ..CheckpointStoreOptions::default()
    })
}

/// Bytes of all the pack files of `db`.
fn packs_bytes(db: &TempDb) -> u64 {
    pack_paths(db)
        .iter()
        .map(|path| std::fs::metadata(path).map_or(0, |metadata| metadata.len()))
        .sum()
}

/// The pack files of `db`, sorted by name.
fn pack_paths(db: &TempDb) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(db.packs.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    paths.sort();
    paths
}

#[test]
fn chunk_bodies_go_to_pack_files_and_the_index_holds_only_their_place() {
    let db = TempDb::new();
    let store = small_packs(&db);
    let image = memory(4, 801);
    let (manifest, _, stats) = store.put(template("packed", 1), &image, None).unwrap();
    let index = db.open_tree("checkpoint_chunks").unwrap();
    for hash in distinct_chunks(&manifest) {
        let value = index.get(hash.as_bytes()).unwrap().unwrap();
        assert_eq!(value.len(), 25, "an index value is a location, not the chunk");
    }
    let on_disk = packs_bytes(&db);
    assert_eq!(
        on_disk, stats.bytes_written_compressed,
        "the packs hold exactly the bodies"
    );
    assert!(store.pack_files().unwrap() > 1, "32 KiB packs filled and rolled");
    assert_eq!(db.open().load_memory(&manifest).unwrap(), image);
}

#[test]
fn a_flipped_byte_in_a_pack_is_data_loss_for_a_trusted_and_a_fresh_store() {
    let db = TempDb::new();
    let writer = small_packs(&db);
    let image = memory(4, 821);
    let (manifest, _, _) = writer.put(template("damaged", 1), &image, None).unwrap();
    let (other, _, _) = writer.put(template("other", 1), &memory(4, 823), None).unwrap();
    // Flip a byte in the middle of the first pack, which holds only
    // chunks of the first checkpoint.
    let first = &pack_paths(&db)[0];
    let file = std::fs::OpenOptions::new().read(true).write(true).open(first).unwrap();
    let middle = file.metadata().unwrap().len() / 2;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, middle).unwrap();
    file.write_all_at(&[byte[0] ^ 0x10], middle).unwrap();

    for (case, store) in [
        ("the writer, which trusts its chunks", writer.clone()),
        ("a store opened anew", db.open()),
    ] {
        let error = store.load_memory(&manifest).unwrap_err();
        assert!(matches!(error, CheckpointError::Corrupt { .. }), "{case}: {error:?}");
        assert!(
            error.to_string().contains("checkpoint 1 of function damaged"),
            "{case}: {error}"
        );
        assert_eq!(
            store.load_memory(&other).unwrap(),
            memory(4, 823),
            "{case}: the other checkpoint is unharmed"
        );
    }
}

#[test]
fn a_damaged_chunk_fails_a_load_and_a_check_on_two_threads_wherever_it_is() {
    // About 150 stored chunks: read on two threads, in groups.
    let image = memory(16, 831);
    for tenths in [1, 3, 5, 7, 9] {
        let db = TempDb::new();
        let writer = db.open_with(CheckpointStoreOptions {
            chunk_size: TEST_CHUNK_SIZE,
            ..CheckpointStoreOptions::default()
        });
        let (manifest, _, _) = writer.put(template("damaged", 1), &image, None).unwrap();
        let pack = &pack_paths(&db)[0];
        let file = std::fs::OpenOptions::new().read(true).write(true).open(pack).unwrap();
        let at = file.metadata().unwrap().len() * tenths / 10;
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 0x10], at).unwrap();
        for (case, store) in [("the writer", writer.clone()), ("a store opened anew", db.open())] {
            let error = store.load_memory(&manifest).unwrap_err();
            assert!(
                matches!(error, CheckpointError::Corrupt { .. }),
                "{case}, {tenths}/10: {error:?}"
            );
        }
        let error = db.open().verify_memory(&manifest).unwrap_err();
        assert!(
            matches!(error, CheckpointError::Corrupt { .. }),
            "{tenths}/10: {error:?}"
        );
    }
}

#[test]
fn a_read_into_place_fills_every_stored_chunk_once_and_leaves_zero_chunks_as_they_were() {
    // About 150 stored chunks, a third of them raw (read in place): two threads.
    let image = memory(16, 833);
    let db = TempDb::new();
    let store = db.open_with(CheckpointStoreOptions {
        chunk_size: TEST_CHUNK_SIZE,
        ..CheckpointStoreOptions::default()
    });
    let (manifest, _, _) = store.put(template("prepared", 1), &image, None).unwrap();
    let prepared = std::sync::Mutex::new(Vec::new());
    // What the memory held before: zero chunks keep it, the caller clears them.
    let mut read = vec![0xA5u8; image.len()];
    let zero = store
        .read_memory_into(&manifest, &mut read, &|offset, len| {
            prepared.lock().unwrap().push((offset, len))
        })
        .unwrap();
    let chunks: Vec<(u64, &[u8])> = image
        .chunks(TEST_CHUNK_SIZE as usize)
        .enumerate()
        .map(|(index, chunk)| ((index * TEST_CHUNK_SIZE as usize) as u64, chunk))
        .collect();
    let stored: Vec<(u64, usize)> = chunks
        .iter()
        .filter(|(_, chunk)| chunk.iter().any(|&byte| byte != 0))
        .map(|(offset, chunk)| (*offset, chunk.len()))
        .collect();
    let zero_chunks: Vec<u64> = chunks
        .iter()
        .filter(|(_, chunk)| chunk.iter().all(|&byte| byte == 0))
        .map(|(offset, _)| *offset)
        .collect();
    assert!(stored.len() >= 64, "the read must take the two-thread path");
    assert!(!zero_chunks.is_empty(), "the image must hold zero chunks");
    assert_eq!(zero, zero_chunks);
    for (offset, chunk) in chunks {
        let place = &read[offset as usize..offset as usize + chunk.len()];
        if zero_chunks.contains(&offset) {
            assert!(
                place.iter().all(|&byte| byte == 0xA5),
                "zero chunk at {offset} was written"
            );
        } else {
            assert_eq!(place, chunk, "chunk at {offset}");
        }
    }
    let mut prepared = prepared.into_inner().unwrap();
    prepared.sort_unstable();
    assert_eq!(prepared, stored, "once for each stored chunk, never for a zero one");
    // A memory of another size is refused, not half written.
    let mut short = vec![0u8; image.len() - 4096];
    let error = store.read_memory_into(&manifest, &mut short, &|_, _| {}).unwrap_err();
    assert!(matches!(error, CheckpointError::InvalidCheckpoint { .. }), "{error:?}");
    assert!(short.iter().all(|&byte| byte == 0));
}

#[test]
fn a_truncated_pack_is_data_loss_not_a_panic() {
    let db = TempDb::new();
    let store = small_packs(&db);
    let (manifest, _, _) = store.put(template("torn", 1), &memory(4, 804), None).unwrap();
    let last = pack_paths(&db).pop().unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    file.set_len(file.metadata().unwrap().len() / 2).unwrap();
    let error = db.open().verify_memory(&manifest).unwrap_err();
    assert!(matches!(error, CheckpointError::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains("ends before"), "{error}");
}

#[test]
fn a_chunk_stored_in_the_index_by_an_older_hub_is_still_read() {
    let db = TempDb::new();
    let store = db.open();
    let image = memory(2, 805);
    let (manifest, _, _) = store.put(template("old", 1), &image, None).unwrap();
    let index = db.open_tree("checkpoint_chunks").unwrap();
    for hash in distinct_chunks(&manifest) {
        let encoded = store.encoded_chunk(&hash).unwrap().unwrap();
        index.insert(hash.as_bytes(), encoded).unwrap();
    }
    let restarted = db.open();
    assert_eq!(restarted.load_memory(&manifest).unwrap(), image);
    restarted.remove_function("old").unwrap();
    assert_eq!(
        restarted.stored_chunks(),
        0,
        "inline chunks are released like packed ones"
    );
}

#[test]
fn reclaiming_deletes_packs_nothing_names_and_keeps_every_live_chunk() {
    let db = TempDb::new();
    let store = small_packs(&db);
    let (_, _, _) = store.put(template("gone", 1), &memory(4, 825), None).unwrap();
    let kept_image = memory(4, 827);
    let (kept, _, _) = store.put(template("kept", 1), &kept_image, None).unwrap();
    let before = store.pack_files().unwrap();

    // The removal frees more than half a pack, which starts a reclaim by
    // itself; the explicit one finds whatever is left.
    store.remove_function("gone").unwrap();
    store.reclaim_packs().unwrap();
    let after = store.pack_files().unwrap();
    assert!(after < before, "{after} packs of {before} left");
    assert_eq!(db.open().load_memory(&kept).unwrap(), kept_image);
    assert_eq!(
        store.reclaim_packs().unwrap().packs_removed,
        0,
        "a second pass finds nothing more"
    );
}

#[test]
fn a_mostly_dead_pack_is_emptied_into_the_current_one_and_deleted() {
    let db = TempDb::new();
    let store = small_packs(&db);
    // Interleave two functions' chunks in the same packs: one small live
    // chunk per pack, the rest dead once `bulk` goes.
    let mut live = Vec::new();
    for sequence in 1..=6u64 {
        let bulk = memory(2, 901 + 2 * sequence);
        store.put(template("bulk", sequence), &bulk, None).unwrap();
        let small: Vec<u8> = (0..TEST_CHUNK_SIZE as usize)
            .map(|index| (index as u64 * 31 + sequence * 7) as u8 ^ (index >> 5) as u8)
            .collect();
        let mut image = vec![0u8; 64 * 1024];
        image[..small.len()].copy_from_slice(&small);
        let (manifest, _, _) = store
            .put(template(&format!("live{sequence}"), 1), &image, None)
            .unwrap();
        live.push((manifest, image));
    }
    let before = store.pack_files().unwrap();
    assert!(before >= 6, "{before} packs");
    // Every closed pack holds a live chunk: none can go unless it is
    // emptied first (by the reclaim the removal starts, or this one).
    store.remove_function("bulk").unwrap();
    store.reclaim_packs().unwrap();
    let after = store.pack_files().unwrap();
    assert!(after <= 2, "{after} packs of {before} left");
    for (manifest, image) in &live {
        assert_eq!(
            &store.load_memory(manifest).unwrap(),
            image,
            "the writer reads the moved chunk"
        );
        assert_eq!(
            &db.open().load_memory(manifest).unwrap(),
            image,
            "so does a store opened anew"
        );
    }
    for (manifest, _) in &live {
        let hash: ChunkHash = distinct_chunks(manifest)[0];
        assert_eq!(store.chunk_refcount(&hash).unwrap(), 1);
    }
}

#[test]
fn removing_everything_leaves_no_pack_but_the_current_one() {
    let db = TempDb::new();
    let store = small_packs(&db);
    for sequence in 1..=3 {
        store
            .put(template("all", sequence), &memory(4, 841 + 2 * sequence), None)
            .unwrap();
    }
    store.remove_function("all").unwrap();
    store.reclaim_packs().unwrap();
    assert_eq!(store.stored_chunks(), 0);
    assert!(
        store.pack_files().unwrap() <= 1,
        "{} packs",
        store.pack_files().unwrap()
    );
}

#[test]
fn removing_a_function_gives_its_bytes_back_even_from_the_pack_still_being_written() {
    // Default packs (64 MiB): everything stays in the current pack, as on
    // a small hub, where a user removes functions to make room.
    let db = TempDb::new();
    let store = db.open();
    let kept_image = memory(4, 851);
    let (kept, _, _) = store.put(template("kept", 1), &kept_image, None).unwrap();
    store.put(template("gone", 1), &memory(64, 853), None).unwrap();
    let before = packs_bytes(&db);
    store.remove_function("gone").unwrap();
    store.reclaim_packs().unwrap();
    let after = packs_bytes(&db);
    assert!(after * 4 < before, "{after} bytes of {before} left");
    assert_eq!(db.open().load_memory(&kept).unwrap(), kept_image);
}

#[test]
fn a_put_refused_for_room_partway_gives_what_it_wrote_back() {
    let db = TempDb::new();
    // A margin that leaves 1 MiB to write: the put runs out partway.
    let available = crate::checkpoint::room::available_bytes(db.packs.path()).unwrap();
    let store = db.open_with(CheckpointStoreOptions {
        keep_free_bytes: available.saturating_sub(1 << 20),
        ..CheckpointStoreOptions::default()
    });
    let refused = store.put(template("big", 1), &memory(256, 861), None).unwrap_err();
    assert!(matches!(refused, CheckpointError::NoRoom(_)), "{refused}");
    // Its chunks are removed and, the disk being short, their pack is
    // reclaimed at once (on a thread of its own).
    let on_disk = || packs_bytes(&db);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while on_disk() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(on_disk(), 0, "{} bytes left in packs", on_disk());
    assert_eq!(store.stored_chunks(), 0);
}
