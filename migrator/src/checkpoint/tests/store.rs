//! Storing, loading, deduplicating, incremental checkpoints and garbage
//! collection.

use std::collections::HashSet;

use super::{PAGE, TEST_CHUNK_SIZE, TempDb, Xorshift, memory, temp_store, template};
use crate::checkpoint::{
    CHECKPOINT_FORMAT_VERSION, CheckpointError, CheckpointStore, ChunkHash, DEFAULT_CHUNK_SIZE, GcStats,
    chunking::{hash_chunk, is_zero_chunk},
};

fn distinct_nonzero_chunks(memory: &[u8], chunk_size: u32) -> HashSet<ChunkHash> {
    memory
        .chunks(chunk_size as usize)
        .filter(|chunk| !is_zero_chunk(chunk))
        .map(hash_chunk)
        .collect()
}

#[test]
fn round_trip_restores_memory_and_manifest_exactly() {
    // (case, pages, chunk size, memory seed)
    let cases: [(&str, usize, u32, u64); 6] = [
        ("no memory", 0, TEST_CHUNK_SIZE, 1),
        ("all zero", 4, TEST_CHUNK_SIZE, 0),
        ("mixed, small chunks", 16, TEST_CHUNK_SIZE, 7),
        ("mixed, one-page chunks", 8, DEFAULT_CHUNK_SIZE, 11),
        ("short last chunk", 3, 40_000, 13),
        ("many chunks, a short last one: read on two threads", 24, 5_000, 19),
    ];
    for (case, pages, chunk_size, seed) in cases {
        let db = TempDb::new();
        let options = crate::checkpoint::CheckpointStoreOptions {
            chunk_size,
            ..Default::default()
        };
        let store = db.open_with(options);
        let image = if seed == 0 {
            vec![0u8; pages * PAGE]
        } else {
            memory(pages, seed)
        };
        let (manifest, _, stats) = store.put(template("fn", 1), &image, None).unwrap();

        assert_eq!(manifest.format_version, CHECKPOINT_FORMAT_VERSION, "{case}");
        assert_eq!(manifest.memory_bytes, image.len() as u64, "{case}");
        assert_eq!(manifest.chunk_size, chunk_size, "{case}");
        assert_eq!(stats.chunks, manifest.chunk_hashes.len() as u64, "{case}");
        let stored = store.get("fn", 1).unwrap().expect(case);
        assert_eq!(stored, manifest, "{case}");
        assert_eq!(store.latest("fn").unwrap().as_ref(), Some(&manifest), "{case}");
        assert_eq!(store.load_memory(&stored).unwrap(), image, "{case}");
        // Read into place (as a restore writes into an instance), by the
        // store that wrote it and by one opened anew: the same bytes, each
        // stored chunk once (in no fixed order: large memories are read on
        // two threads), the all-zero chunks left as they were and named.
        for reader in [store.clone(), db.open_with(options)] {
            reader.verify_memory(&stored).unwrap();
            let mut streamed = vec![0xAAu8; image.len()];
            let handed = std::sync::Mutex::new(std::collections::BTreeSet::new());
            let zero = reader
                .read_memory_into(&stored, &mut streamed, &|offset, len| {
                    assert_eq!(offset % u64::from(chunk_size), 0, "{case}: a chunk's offset");
                    assert_eq!(
                        len as u64,
                        u64::from(chunk_size).min(image.len() as u64 - offset),
                        "{case}"
                    );
                    assert!(
                        handed.lock().unwrap().insert(offset),
                        "{case}: chunk at {offset} read twice"
                    );
                })
                .unwrap();
            let handed = handed.into_inner().unwrap();
            for &offset in &zero {
                assert!(!handed.contains(&offset), "{case}: a zero chunk was read");
                let end = (offset + u64::from(chunk_size)).min(image.len() as u64) as usize;
                assert!(
                    streamed[offset as usize..end].iter().all(|&byte| byte == 0xAA),
                    "{case}"
                );
                streamed[offset as usize..end].fill(0);
            }
            assert_eq!(
                handed.len() + zero.len(),
                stored.chunk_hashes.len(),
                "{case}: every chunk"
            );
            assert!(streamed == image, "{case}: streamed bytes differ");
        }
        let expected = template("fn", 1);
        assert_eq!(
            (&stored.globals, &stored.host, &stored.stack),
            (&expected.globals, &expected.host, &expected.stack)
        );
    }
}

#[test]
fn zero_chunks_are_elided_and_never_stored() {
    let (_db, store) = temp_store();
    let mut image = vec![0u8; 4 * PAGE];
    image[10] = 1; // chunk 0
    image[5 * 4096 + 7] = 2; // chunk 5
    image[4 * PAGE - 1] = 3; // the last chunk
    let (manifest, _, stats) = store.put(template("sparse", 1), &image, None).unwrap();

    let nonzero: Vec<usize> = manifest
        .chunk_hashes
        .iter()
        .enumerate()
        .filter(|(_, hash)| !hash.is_empty())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(nonzero, vec![0, 5, 63]);
    assert_eq!((stats.chunks, stats.zero_chunks, stats.new_chunks), (64, 61, 3));
    assert_eq!(stats.nonzero_bytes, 3 * 4096);
    assert_eq!(store.stored_chunks(), 3);
    assert!(
        stats.checkpoint_bytes() < 4096,
        "three tiny chunks and a manifest: {stats:?}"
    );
    assert_eq!(store.load_memory(&manifest).unwrap(), image);
}

#[test]
fn identical_memory_of_two_functions_is_stored_once() {
    let (_db, store) = temp_store();
    let image = memory(8, 21);
    let expected_chunks = distinct_nonzero_chunks(&image, TEST_CHUNK_SIZE);

    let (first, _, first_stats) = store.put(template("a", 1), &image, None).unwrap();
    let (second, _, second_stats) = store.put(template("b", 1), &image, None).unwrap();
    assert_eq!(first_stats.new_chunks, expected_chunks.len() as u64);
    assert_eq!(
        second_stats.new_chunks, 0,
        "every chunk of the second is stored already"
    );
    assert_eq!(second_stats.bytes_written_compressed, 0);
    assert_eq!(store.stored_chunks(), expected_chunks.len());
    for hash in &expected_chunks {
        assert_eq!(store.chunk_refcount(hash).unwrap(), 2, "chunk {hash}");
    }

    assert_eq!(
        store.remove_function("a").unwrap(),
        GcStats {
            checkpoints_removed: 1,
            ..GcStats::default()
        }
    );
    assert_eq!(store.get("a", 1).unwrap(), None);
    assert_eq!(store.load_memory(&second).unwrap(), image);
    for hash in &expected_chunks {
        assert_eq!(store.chunk_refcount(hash).unwrap(), 1, "chunk {hash}");
    }

    let stats = store.remove_function("b").unwrap();
    assert_eq!(
        (stats.checkpoints_removed, stats.chunks_freed),
        (1, expected_chunks.len() as u64)
    );
    assert_eq!(store.stored_chunks(), 0);
    assert!(matches!(
        store.load_memory(&first),
        Err(CheckpointError::ChunkMissing { .. })
    ));
}

#[test]
fn retain_frees_exactly_the_chunks_no_kept_checkpoint_names() {
    let (_db, store) = temp_store();
    let images = [memory(4, 31), memory(4, 32), memory(4, 33)];
    let mut manifests = Vec::new();
    for (sequence, image) in (1..).zip(&images) {
        let (manifest, _, _) = store.put(template("f", sequence), image, None).unwrap();
        manifests.push(manifest);
    }
    let chunk_sets: Vec<HashSet<ChunkHash>> = images
        .iter()
        .map(|image| distinct_nonzero_chunks(image, TEST_CHUNK_SIZE))
        .collect();

    let stats = store.retain("f", 2).unwrap();
    let only_in_first: HashSet<_> = chunk_sets[0]
        .difference(&(&chunk_sets[1] | &chunk_sets[2]))
        .copied()
        .collect();
    assert_eq!(stats.checkpoints_removed, 1);
    assert_eq!(stats.chunks_freed, only_in_first.len() as u64);
    let sequences: Vec<u64> = store.list("f").unwrap().iter().map(|entry| entry.sequence).collect();
    assert_eq!(sequences, vec![2, 3]);
    for hash in &only_in_first {
        assert_eq!(store.chunk_refcount(hash).unwrap(), 0);
        assert_eq!(store.encoded_chunk(hash).unwrap(), None);
    }
    assert_eq!(store.load_memory(&manifests[1]).unwrap(), images[1]);
    assert_eq!(store.load_memory(&manifests[2]).unwrap(), images[2]);

    assert_eq!(
        store.retain("f", 2).unwrap(),
        GcStats::default(),
        "nothing more to drop"
    );
    store.retain("f", 0).unwrap();
    assert_eq!(store.stored_chunks(), 0);
    assert_eq!(store.latest("f").unwrap(), None);
}

#[test]
fn incremental_put_with_one_percent_dirty_writes_only_the_dirty_chunks() {
    let (_db, store) = temp_store();
    // 25 pages of 4 KiB chunks = 400 chunks; make every chunk non-zero.
    let mut image = memory(25, 41);
    for chunk in image.chunks_mut(4096) {
        chunk[0] |= 1;
    }
    let (base, fingerprints, full) = store.put(template("inc", 1), &image, None).unwrap();
    assert_eq!((full.chunks, full.hashed_chunks, full.unchanged_chunks), (400, 400, 0));

    let mut rng = Xorshift(99);
    let mut dirty = HashSet::new();
    while dirty.len() < 4 {
        dirty.insert(rng.below(400));
    }
    for &chunk in &dirty {
        image[chunk * 4096 + rng.below(4096)] ^= 0x5a;
    }
    let (next, next_fingerprints, stats) = store
        .put(template("inc", 2), &image, Some((&base, &fingerprints)))
        .unwrap();
    assert_eq!(stats.hashed_chunks, 4);
    assert_eq!(stats.unchanged_chunks, 396);
    assert_eq!(stats.new_chunks, 4);
    assert_eq!(stats.bytes_hashed, 4 * 4096);
    assert_eq!(stats.bytes_uncompressed_new, 4 * 4096);
    assert!(
        stats.checkpoint_bytes() * 10 < full.checkpoint_bytes(),
        "{stats:?} vs {full:?}"
    );
    for (index, (old, new)) in base.chunk_hashes.iter().zip(&next.chunk_hashes).enumerate() {
        assert_eq!(old != new, dirty.contains(&index), "chunk {index}");
    }
    assert_eq!(store.load_memory(&next).unwrap(), image);

    // The chain goes on from the new fingerprints, and a chunk may become zero.
    image[..4096].fill(0);
    let (last, _, stats) = store
        .put(template("inc", 3), &image, Some((&next, &next_fingerprints)))
        .unwrap();
    assert_eq!((stats.zero_chunks, stats.hashed_chunks, stats.new_chunks), (1, 0, 0));
    assert!(last.chunk_hashes[0].is_empty());
    assert_eq!(store.load_memory(&last).unwrap(), image);
}

#[test]
fn incremental_put_after_memory_growth_hashes_the_new_pages() {
    let (_db, store) = temp_store();
    let mut image = memory(2, 51);
    let (base, fingerprints, _) = store.put(template("grow", 1), &image, None).unwrap();
    image.extend(memory(1, 52));
    let (next, _, stats) = store
        .put(template("grow", 2), &image, Some((&base, &fingerprints)))
        .unwrap();
    let nonzero_in_new_page = image[2 * PAGE..]
        .chunks(4096)
        .filter(|chunk| !is_zero_chunk(chunk))
        .count();
    assert_eq!(stats.hashed_chunks, nonzero_in_new_page as u64);
    assert_eq!(stats.chunks, 48);
    assert_eq!(store.load_memory(&next).unwrap(), image);
}

#[test]
fn restored_memory_fingerprints_make_the_next_checkpoint_incremental() {
    let (_db, store) = temp_store();
    let mut image = memory(8, 61);
    let (manifest, _, _) = store.put(template("moved", 1), &image, None).unwrap();
    let (restored, fingerprints) = store.load_memory_with_fingerprints(&manifest).unwrap();
    assert_eq!(restored, image);
    image[3 * 4096 + 5] ^= 0xff;
    let (_, _, stats) = store
        .put(template("moved", 2), &image, Some((&manifest, &fingerprints)))
        .unwrap();
    assert_eq!(stats.hashed_chunks, 1);
}

#[test]
fn fingerprints_of_another_manifest_are_refused_as_a_base() {
    let (_db, store) = temp_store();
    let (first, first_fingerprints, _) = store.put(template("x", 1), &memory(2, 71), None).unwrap();
    let (second, _, _) = store.put(template("x", 2), &memory(2, 72), None).unwrap();
    let result = store.put(template("x", 3), &memory(2, 73), Some((&second, &first_fingerprints)));
    assert!(
        matches!(result, Err(CheckpointError::BaseMismatch { .. })),
        "{result:?}"
    );
    assert_eq!(store.list("x").unwrap().len(), 2);
    assert_eq!(store.load_memory(&first).unwrap(), memory(2, 71));
}

#[test]
fn a_base_whose_chunks_were_collected_still_gives_a_complete_checkpoint() {
    let (_db, store) = temp_store();
    let image = memory(4, 81);
    let (base, fingerprints, _) = store.put(template("gone", 1), &image, None).unwrap();
    store.remove_function("gone").unwrap();
    assert_eq!(store.stored_chunks(), 0);
    let (next, _, stats) = store
        .put(template("gone", 2), &image, Some((&base, &fingerprints)))
        .unwrap();
    assert_eq!(
        stats.new_chunks,
        distinct_nonzero_chunks(&image, TEST_CHUNK_SIZE).len() as u64
    );
    assert_eq!(store.load_memory(&next).unwrap(), image);
}

#[test]
fn a_sequence_is_stored_once_and_a_second_put_changes_nothing() {
    let (_db, store) = temp_store();
    let (manifest, _, _) = store.put(template("dup", 1), &memory(2, 91), None).unwrap();
    let chunks_before = store.stored_chunks();
    let result = store.put(template("dup", 1), &memory(2, 92), None);
    assert!(
        matches!(result, Err(CheckpointError::AlreadyExists { sequence: 1, .. })),
        "{result:?}"
    );
    assert_eq!(store.stored_chunks(), chunks_before);
    assert_eq!(store.get("dup", 1).unwrap(), Some(manifest));
}

#[test]
fn invalid_puts_are_refused_before_anything_is_written() {
    let (_db, store) = temp_store();
    let mut no_spec = template("f", 1);
    no_spec.spec = None;
    let mut no_pending = template("f", 1);
    if let Some(host) = no_pending.host.as_mut() {
        host.pending = None;
    }
    let cases = [
        ("memory not whole pages", template("f", 1), vec![1u8; PAGE + 1]),
        ("no spec", no_spec, memory(1, 1)),
        ("no pending call", no_pending, memory(1, 1)),
        ("NUL in the name", template("a\0b", 1), memory(1, 1)),
    ];
    for (case, manifest, image) in cases {
        let result = store.put(manifest, &image, None);
        assert!(
            matches!(result, Err(CheckpointError::InvalidCheckpoint { .. })),
            "{case}: {result:?}"
        );
    }
    assert_eq!(store.stored_chunks(), 0);
}

#[test]
fn latest_is_the_highest_sequence_and_list_is_ordered() {
    let (_db, store) = temp_store();
    for sequence in [5u64, 1, 300, 2] {
        store
            .put(template("order", sequence), &memory(1, sequence), None)
            .unwrap();
    }
    store.put(template("order-b", 1000), &memory(1, 1), None).unwrap();
    let sequences: Vec<u64> = store
        .list("order")
        .unwrap()
        .iter()
        .map(|entry| entry.sequence)
        .collect();
    assert_eq!(sequences, vec![1, 2, 5, 300]);
    assert_eq!(
        store.latest("order").unwrap().map(|manifest| manifest.sequence),
        Some(300)
    );
    assert_eq!(store.get("order", 4).unwrap(), None);
    assert_eq!(store.latest("nobody").unwrap(), None);
}

/// Opens a database another handle in this process has just dropped. sled
/// releases its file lock when its flusher thread lets go of the last
/// reference, a moment after the drop, so a failed lock is retried briefly.
fn reopen(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => panic!("reopening {}: {error}", path.display()),
        }
    }
}

#[test]
fn a_returned_checkpoint_survives_reopening_the_database() {
    let directory = tempfile::tempdir().unwrap();
    let image = memory(4, 101);
    let manifest = {
        let db = sled::open(directory.path()).unwrap();
        let store = CheckpointStore::open(&db, &directory.path().join("packs")).unwrap();
        let (manifest, _, _) = store.put(template("durable", 1), &image, None).unwrap();
        manifest
    };
    let db = reopen(directory.path());
    let store = CheckpointStore::open(&db, &directory.path().join("packs")).unwrap();
    assert_eq!(store.latest("durable").unwrap(), Some(manifest.clone()));
    assert_eq!(store.load_memory(&manifest).unwrap(), image);
}

#[test]
fn garbage_collection_removes_only_unreferenced_chunks() {
    let (_db, store) = temp_store();
    let image = memory(2, 111);
    let (manifest, _, _) = store.put(template("kept", 1), &image, None).unwrap();
    let stored = store.stored_chunks();
    let orphan = vec![9u8; 4096];
    let orphan_hash = hash_chunk(&orphan);
    let encoded = crate::checkpoint::encode_chunk(&orphan, 1).unwrap();
    assert!(store.put_chunk(&orphan_hash, &encoded).unwrap());
    assert!(!store.put_chunk(&orphan_hash, &encoded).unwrap(), "already stored");

    let stats = store.collect_garbage().unwrap();
    assert_eq!((stats.chunks_freed, stats.bytes_freed), (1, encoded.len() as u64));
    assert_eq!(store.stored_chunks(), stored);
    assert_eq!(store.load_memory(&manifest).unwrap(), image);
}

/// `template` with a volume of one file made of `chunks` (each stored
/// loose first, as the hub does before it commits a checkpoint).
fn with_volume(
    store: &CheckpointStore,
    function: &str,
    sequence: u64,
    chunks: &[&[u8]],
) -> crate::checkpoint::CheckpointManifest {
    use crate::checkpoint::volume::{VolumeEntry, VolumeState, volume_entry};
    let loose: Vec<(ChunkHash, &[u8])> = chunks.iter().map(|chunk| (hash_chunk(chunk), *chunk)).collect();
    store.put_loose_chunks(&loose).unwrap();
    let mut manifest = template(function, sequence);
    manifest.volume = Some(VolumeState {
        chunk_size: TEST_CHUNK_SIZE,
        entries: vec![VolumeEntry {
            path: "db".to_owned(),
            kind: volume_entry::Kind::File as i32,
            size: chunks.iter().map(|chunk| chunk.len() as u64).sum(),
            chunk_hashes: loose.iter().map(|(hash, _)| hash.0.to_vec()).collect(),
            ..VolumeEntry::default()
        }],
    });
    manifest
}

#[test]
fn volume_chunks_are_held_released_and_shared_like_memory_chunks() {
    let (_db, store) = temp_store();
    let image = memory(1, 5);
    let (page, tail) = (vec![3u8; TEST_CHUNK_SIZE as usize], vec![4u8; 10]);
    let first = with_volume(&store, "fn", 1, &[&page, &tail]);
    let (first, _, _) = store.put(first, &image, None).unwrap();
    assert_eq!(store.chunk_refcount(&hash_chunk(&tail)).unwrap(), 1);
    // A second checkpoint rewrote the tail; the first is retired.
    let new_tail = vec![5u8; 20];
    let second = with_volume(&store, "fn", 2, &[&page, &new_tail]);
    store.put(second, &image, None).unwrap();
    store.retain("fn", 1).unwrap();
    assert!(
        !store.contains_chunk(&hash_chunk(&tail)).unwrap(),
        "no kept checkpoint names it"
    );
    assert_eq!(store.chunk_refcount(&hash_chunk(&page)).unwrap(), 1);
    // A receiver asks for the volume chunks it lacks too.
    let (_other_db, other) = temp_store();
    let missing: HashSet<ChunkHash> = other.missing_chunks(&first).unwrap().into_iter().collect();
    assert!(missing.contains(&hash_chunk(&page)) && missing.contains(&hash_chunk(&tail)));
}

#[test]
fn a_checkpoint_naming_a_volume_chunk_the_store_lacks_is_refused() {
    let (_db, store) = temp_store();
    let mut manifest = with_volume(&store, "fn", 1, &[&[6u8; 100]]);
    manifest.volume.as_mut().unwrap().entries[0].chunk_hashes[0] = vec![9; 32];
    let error = store.put(manifest, &memory(1, 6), None).unwrap_err();
    assert!(matches!(error, CheckpointError::ChunkMissing { .. }), "{error}");
    assert!(store.get("fn", 1).unwrap().is_none());
}
