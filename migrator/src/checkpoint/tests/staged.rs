//! Staged arrivals: the references a move holds before it seals, taken over
//! by the checkpoint the seal imports.

use std::collections::HashSet;

use super::{TEST_CHUNK_SIZE, Xorshift, memory, temp_store, template};
use crate::checkpoint::{CheckpointError, CheckpointManifest, CheckpointStore, ChunkHash};

fn slots(manifest: &CheckpointManifest) -> Vec<Option<ChunkHash>> {
    manifest
        .chunk_hashes
        .iter()
        .map(|entry| ChunkHash::from_manifest_entry(entry).unwrap())
        .collect()
}

fn distinct(manifest: &CheckpointManifest) -> HashSet<ChunkHash> {
    slots(manifest).into_iter().flatten().collect()
}

/// Sends the chunks of `manifest` that `to` lacks, as a transfer does.
fn send_chunks(from: &CheckpointStore, to: &CheckpointStore, manifest: &CheckpointManifest) {
    for hash in to.missing_chunks(manifest).unwrap() {
        let encoded = from.encoded_chunk(&hash).unwrap().unwrap();
        to.put_chunk(&hash, &encoded).unwrap();
    }
}

/// The first `count` chunks of `image` that are not all zeros.
fn nonzero_chunks(image: &[u8], count: usize) -> Vec<usize> {
    image
        .chunks(TEST_CHUNK_SIZE as usize)
        .enumerate()
        .filter(|(_, chunk)| chunk.iter().any(|byte| *byte != 0))
        .map(|(index, _)| index)
        .take(count)
        .collect()
}

/// `image` with the given chunks overwritten by fresh random bytes.
fn rewrite_chunks(image: &[u8], chunks: &[usize], seed: u64) -> Vec<u8> {
    let mut rng = Xorshift(seed);
    let mut next = image.to_vec();
    for &index in chunks {
        let start = index * TEST_CHUNK_SIZE as usize;
        for byte in &mut next[start..start + TEST_CHUNK_SIZE as usize] {
            *byte = rng.next() as u8;
        }
    }
    next
}

#[test]
fn a_sealed_move_takes_over_its_staged_references_and_frees_what_the_last_round_replaced() {
    let (_source_db, source) = temp_store();
    let (_destination_db, destination) = temp_store();
    let first = memory(4, 601);
    let second = rewrite_chunks(&first, &nonzero_chunks(&first, 4), 602);
    let (round1, _, _) = source.put(template("moving", 1), &first, None).unwrap();
    let (round2, _, _) = source.put(template("moving", 2), &second, None).unwrap();
    // Another function here shares the first page's chunks.
    let (other, _, _) = destination
        .put(template("other", 1), &first[..64 * 1024], None)
        .unwrap();
    let shared = distinct(&other);
    let count = |hash: &ChunkHash| destination.chunk_refcount(hash).unwrap();

    send_chunks(&source, &destination, &round1);
    destination.stage("moving 1", &slots(&round1)).unwrap();
    for hash in distinct(&round1) {
        assert_eq!(count(&hash), 1 + u64::from(shared.contains(&hash)), "{hash}");
    }

    send_chunks(&source, &destination, &round2);
    destination.stage("moving 1", &slots(&round2)).unwrap();
    let replaced: Vec<ChunkHash> = distinct(&round1).difference(&distinct(&round2)).copied().collect();
    assert_eq!(replaced.len(), 4);
    for hash in &replaced {
        let kept = shared.contains(hash);
        assert_eq!(count(hash), u64::from(kept), "{hash}");
        assert_eq!(destination.contains_chunk(hash).unwrap(), kept, "{hash}");
    }
    for hash in distinct(&round2) {
        assert_eq!(count(&hash), 1 + u64::from(shared.contains(&hash)), "{hash}");
    }

    destination.import_manifest_staged(&round2, "moving 1").unwrap();
    assert!(
        destination.staged_sets().unwrap().is_empty(),
        "the seal consumed the set"
    );
    for hash in distinct(&round2) {
        assert_eq!(count(&hash), 1 + u64::from(shared.contains(&hash)), "{hash}");
    }
    assert_eq!(destination.load_memory(&round2).unwrap(), second);

    destination.remove_function("other").unwrap();
    assert_eq!(destination.load_memory(&round2).unwrap(), second);
    destination.remove_function("moving").unwrap();
    assert_eq!(destination.stored_chunks(), 0, "nothing leaked");
}

#[test]
fn a_seal_that_differs_from_the_staged_set_counts_the_difference() {
    let (_source_db, source) = temp_store();
    let (_destination_db, destination) = temp_store();
    let first = memory(4, 611);
    let last = rewrite_chunks(&first, &nonzero_chunks(&first, 2), 612);
    let (round1, _, _) = source.put(template("moving", 1), &first, None).unwrap();
    let (sealed, _, _) = source.put(template("moving", 2), &last, None).unwrap();
    send_chunks(&source, &destination, &round1);
    destination.stage("moving 1", &slots(&round1)).unwrap();
    // The last round's chunks arrive but are never staged.
    send_chunks(&source, &destination, &sealed);
    destination.import_manifest_staged(&sealed, "moving 1").unwrap();

    for hash in distinct(&sealed) {
        assert_eq!(destination.chunk_refcount(&hash).unwrap(), 1, "{hash}");
    }
    for hash in distinct(&round1).difference(&distinct(&sealed)) {
        assert!(!destination.contains_chunk(hash).unwrap(), "{hash} is freed");
    }
    destination.remove_function("moving").unwrap();
    assert_eq!(destination.stored_chunks(), 0);
}

#[test]
fn a_seal_without_a_staged_set_counts_every_chunk_as_an_import_does() {
    let (_source_db, source) = temp_store();
    let (_destination_db, destination) = temp_store();
    let (manifest, _, _) = source.put(template("moving", 1), &memory(4, 621), None).unwrap();
    send_chunks(&source, &destination, &manifest);
    destination.import_manifest_staged(&manifest, "never staged").unwrap();
    for hash in distinct(&manifest) {
        assert_eq!(destination.chunk_refcount(&hash).unwrap(), 1);
    }
    assert_eq!(destination.load_memory(&manifest).unwrap(), memory(4, 621));
}

#[test]
fn staging_a_chunk_the_store_lacks_is_chunk_missing_and_changes_nothing() {
    let (_source_db, source) = temp_store();
    let (_destination_db, destination) = temp_store();
    let first = memory(4, 631);
    let (round1, _, _) = source.put(template("moving", 1), &first, None).unwrap();
    let (round2, _, _) = source
        .put(
            template("moving", 2),
            &rewrite_chunks(&first, &nonzero_chunks(&first, 1), 632),
            None,
        )
        .unwrap();
    send_chunks(&source, &destination, &round1);
    destination.stage("moving 1", &slots(&round1)).unwrap();

    let error = destination.stage("moving 1", &slots(&round2)).unwrap_err();
    let new: Vec<ChunkHash> = distinct(&round2).difference(&distinct(&round1)).copied().collect();
    assert!(
        matches!(&error, CheckpointError::ChunkMissing { hash } if new.contains(hash)),
        "{error:?}"
    );
    for hash in distinct(&round1) {
        assert_eq!(destination.chunk_refcount(&hash).unwrap(), 1, "the first stage stands");
    }
    let error = destination.import_manifest_staged(&round2, "moving 1").unwrap_err();
    assert!(matches!(error, CheckpointError::ChunkMissing { .. }), "{error:?}");
    assert_eq!(destination.staged_sets().unwrap(), vec!["moving 1".to_owned()]);
    assert_eq!(destination.get("moving", 2).unwrap(), None);
}

#[test]
fn unstaging_frees_exactly_what_only_the_staged_sets_named() {
    let (_source_db, source) = temp_store();
    let (_destination_db, destination) = temp_store();
    let image = memory(4, 641);
    let (moving, _, _) = source.put(template("moving", 1), &image, None).unwrap();
    let (kept, _, _) = destination.put(template("kept", 1), &image[..64 * 1024], None).unwrap();
    send_chunks(&source, &destination, &moving);
    destination.stage("moving 1", &slots(&moving)).unwrap();
    destination.stage("moving 2", &slots(&moving)[..8]).unwrap();

    destination.unstage("moving 1").unwrap();
    destination.unstage("moving 1").unwrap();
    assert_eq!(destination.staged_sets().unwrap(), vec!["moving 2".to_owned()]);
    assert_eq!(destination.unstage_all().unwrap(), 1);
    assert!(destination.staged_sets().unwrap().is_empty());

    let left: HashSet<ChunkHash> = distinct(&kept);
    assert_eq!(
        destination.stored_chunks(),
        left.len(),
        "only the kept function's chunks remain"
    );
    assert_eq!(destination.load_memory(&kept).unwrap(), image[..64 * 1024]);
}

#[test]
fn a_held_transfer_keeps_its_staged_and_received_chunks_until_the_hold_is_dropped() {
    let (_source_db, source) = temp_store();
    let (_destination_db, destination) = temp_store();
    let image = memory(4, 651);
    let (moving, _, _) = source.put(template("moving", 1), &image, None).unwrap();
    send_chunks(&source, &destination, &moving);
    let all = slots(&moving);
    // Earlier rounds were staged; the rest arrived in the round that failed.
    destination.stage("moving m1", &all[..8]).unwrap();
    let received: Vec<ChunkHash> = all[8..].iter().flatten().copied().collect();
    let missing = ChunkHash([7; 32]);
    let mut extra = received.clone();
    extra.push(missing);

    let held = destination.hold(Some("moving m1"), "held moving m1", &extra).unwrap();
    assert_eq!(
        held,
        distinct(&moving).len(),
        "every stored chunk is held, the absent one is not"
    );
    assert_eq!(destination.staged_sets().unwrap(), vec!["held moving m1".to_owned()]);
    // A sweep keeps them: a retry finds them all.
    destination.collect_garbage().unwrap();
    assert!(destination.missing_chunks(&moving).unwrap().is_empty());

    // A later hold of the same function replaces the earlier one.
    destination.hold(None, "held moving m2", &received).unwrap();
    assert_eq!(
        destination
            .unstage_prefixed("held moving ", Some("held moving m2"))
            .unwrap(),
        1
    );
    assert_eq!(destination.staged_sets().unwrap(), vec!["held moving m2".to_owned()]);
    assert_eq!(destination.unstage_prefixed("held moving ", None).unwrap(), 1);
    assert_eq!(destination.stored_chunks(), 0, "nothing else named them");
}
