//! Checkpoints from the chunks a dirty-page tracker reports
//! ([`CheckpointStore::put_changes`]).

use super::{PAGE, TEST_CHUNK_SIZE, memory, temp_store, template};
use crate::checkpoint::{ChangedMemory, CheckpointError, chunking::is_zero_chunk};

/// Every non-zero chunk of `image`, as a tracker's first capture lists them.
fn all_chunks(image: &[u8]) -> Vec<(u32, &[u8])> {
    image
        .chunks(TEST_CHUNK_SIZE as usize)
        .enumerate()
        .filter(|(_, chunk)| !is_zero_chunk(chunk))
        .map(|(index, chunk)| (index as u32, chunk))
        .collect()
}

/// The chunks of `image` at `indexes`.
fn some_chunks<'a>(image: &'a [u8], indexes: &[u32]) -> Vec<(u32, &'a [u8])> {
    let size = TEST_CHUNK_SIZE as usize;
    indexes
        .iter()
        .map(|&index| (index, &image[index as usize * size..(index as usize + 1) * size]))
        .collect()
}

fn changed<'a>(image: &[u8], complete: bool, chunks: &'a [(u32, &'a [u8])]) -> ChangedMemory<'a> {
    ChangedMemory {
        memory_bytes: image.len() as u64,
        chunk_size: TEST_CHUNK_SIZE,
        complete,
        chunks,
        written_pages: None,
    }
}

#[test]
fn a_complete_set_of_changes_stores_the_same_checkpoint_as_the_whole_memory() {
    let (_db, store) = temp_store();
    let image = memory(8, 21);
    let (whole, _, _) = store.put(template("whole", 1), &image, None).unwrap();
    let chunks = all_chunks(&image);
    let (from_changes, stats) = store
        .put_changes(template("changes", 1), changed(&image, true, &chunks), None)
        .unwrap();

    assert_eq!(from_changes.chunk_hashes, whole.chunk_hashes);
    assert_eq!(store.load_memory(&from_changes).unwrap(), image);
    assert_eq!(stats.new_chunks, 0, "every chunk was stored by the whole put already");
    assert_eq!(stats.hashed_chunks, chunks.len() as u64);
    assert_eq!(stats.unchanged_chunks, 0);
}

#[test]
fn changes_on_a_base_restore_the_new_memory_and_write_only_what_changed() {
    let (_db, store) = temp_store();
    let before = memory(8, 5);
    let chunks = all_chunks(&before);
    let (base, _) = store
        .put_changes(template("fn", 1), changed(&before, true, &chunks), None)
        .unwrap();

    // Rewrite chunk 3, zero chunk 7, and grow by two pages with one chunk
    // written in the new range.
    let mut after = before.clone();
    let size = TEST_CHUNK_SIZE as usize;
    after[3 * size..4 * size].fill(0xa5);
    after[7 * size..8 * size].fill(0);
    after.resize(before.len() + 2 * PAGE, 0);
    let grown_chunk = before.len() / size + 5;
    after[grown_chunk * size + 17] = 9;
    let dirty = some_chunks(&after, &[3, 7, grown_chunk as u32]);
    let (manifest, stats) = store
        .put_changes(template("fn", 2), changed(&after, false, &dirty), Some(&base))
        .unwrap();

    assert_eq!(store.load_memory(&manifest).unwrap(), after);
    assert_eq!(stats.hashed_chunks, 2, "chunk 7 became zero: nothing to hash");
    assert_eq!(stats.new_chunks, 2);
    assert_eq!(stats.chunks, (after.len() / size) as u64);
    let nonzero = manifest.chunk_hashes.iter().filter(|entry| !entry.is_empty()).count() as u64;
    assert_eq!(stats.unchanged_chunks, nonzero - 2);
}

#[test]
fn changes_that_do_not_fit_their_base_are_refused_and_store_nothing() {
    let (_db, store) = temp_store();
    let image = memory(4, 9);
    let chunks = all_chunks(&image);
    let (base, _) = store
        .put_changes(template("fn", 1), changed(&image, true, &chunks), None)
        .unwrap();
    let (other, _) = store
        .put_changes(template("other", 1), changed(&image, true, &chunks), None)
        .unwrap();
    let size = TEST_CHUNK_SIZE as usize;
    let short = [(1u32, &image[size..2 * size - 1])];
    let unordered = some_chunks(&image, &[2, 1]);
    let past_end = [(image.len() as u32 / TEST_CHUNK_SIZE, &image[..size])];
    let smaller = &image[..image.len() - PAGE];

    let cases: [(&str, ChangedMemory<'_>, Option<&_>, &str); 6] = [
        ("no base", changed(&image, false, &[]), None, "InvalidCheckpoint"),
        (
            "another function's base",
            changed(&image, false, &[]),
            Some(&other),
            "BaseMismatch",
        ),
        (
            "a memory smaller than its base",
            changed(smaller, false, &[]),
            Some(&base),
            "BaseMismatch",
        ),
        (
            "a short chunk",
            changed(&image, false, &short),
            Some(&base),
            "InvalidCheckpoint",
        ),
        (
            "chunks out of order",
            changed(&image, false, &unordered),
            Some(&base),
            "InvalidCheckpoint",
        ),
        (
            "a chunk past the end",
            changed(&image, false, &past_end),
            Some(&base),
            "InvalidCheckpoint",
        ),
    ];
    for (case, changes, base, expected) in cases {
        let error = store.put_changes(template("fn", 2), changes, base).expect_err(case);
        let kind = match error {
            CheckpointError::InvalidCheckpoint { .. } => "InvalidCheckpoint",
            CheckpointError::BaseMismatch { .. } => "BaseMismatch",
            _ => "another error",
        };
        assert_eq!(kind, expected, "{case}: {error}");
        assert_eq!(
            store.latest("fn").unwrap().map(|manifest| manifest.sequence),
            Some(1),
            "{case}"
        );
    }
    assert_eq!(store.load_memory(&base).unwrap(), image);
}
