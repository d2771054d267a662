//! References held per function: how counts change as a function's
//! checkpoints come and go, next to checkpoints stored before holders.

use super::{memory, temp_store, template};
use crate::checkpoint::{
    CheckpointManifest, CheckpointStore, ChunkHash, manifest::distinct_chunks, store::checkpoint_key,
};

fn chunks_of(manifest: &CheckpointManifest) -> Vec<ChunkHash> {
    distinct_chunks(manifest)
}

#[test]
fn a_function_holds_one_reference_per_chunk_however_many_of_its_checkpoints_name_it() {
    let (_db, store) = temp_store();
    let image = memory(4, 41);
    let (first, _, _) = store.put(template("f", 1), &image, None).unwrap();
    store.put(template("f", 2), &image, None).unwrap();
    store.put(template("f", 3), &image, None).unwrap();
    for hash in chunks_of(&first) {
        assert_eq!(store.chunk_refcount(&hash).unwrap(), 1, "{hash}");
    }
    store.put(template("g", 1), &image, None).unwrap();
    for hash in chunks_of(&first) {
        assert_eq!(
            store.chunk_refcount(&hash).unwrap(),
            2,
            "another function holds it too: {hash}"
        );
    }
    store.retain("f", 1).unwrap();
    for hash in chunks_of(&first) {
        assert_eq!(
            store.chunk_refcount(&hash).unwrap(),
            2,
            "f's last checkpoint still names it: {hash}"
        );
    }
    store.remove_function("g").unwrap();
    store.remove_function("f").unwrap();
    assert_eq!(store.stored_chunks(), 0);
}

/// Stores `manifest` under a new sequence the way a store without holders
/// did: the manifest itself holds one reference per distinct chunk.
fn store_as_before_holders(db: &sled::Db, store: &CheckpointStore, manifest: &CheckpointManifest, sequence: u64) {
    let mut old = manifest.clone();
    old.sequence = sequence;
    let refs = db.open_tree("checkpoint_chunk_refs").unwrap();
    for hash in chunks_of(&old) {
        let count = store.chunk_refcount(&hash).unwrap() + 1;
        refs.insert(hash.as_bytes(), &count.to_be_bytes()).unwrap();
    }
    let name = old.spec.as_ref().unwrap().name.clone();
    db.open_tree("checkpoints")
        .unwrap()
        .insert(
            checkpoint_key(&name, sequence),
            crate::checkpoint::encode_manifest(&old),
        )
        .unwrap();
}

#[test]
fn checkpoints_from_before_holders_keep_and_release_their_own_references() {
    for legacy_first in [true, false] {
        let (db, store) = temp_store();
        let image = memory(4, 43);
        let (covered, _, _) = store.put(template("f", 2), &image, None).unwrap();
        store_as_before_holders(&db, &store, &covered, if legacy_first { 1 } else { 3 });
        for hash in chunks_of(&covered) {
            assert_eq!(store.chunk_refcount(&hash).unwrap(), 2);
        }
        let stats = store.retain("f", 1).unwrap();
        assert_eq!((stats.checkpoints_removed, stats.chunks_freed), (1, 0));
        let kept = store.latest("f").unwrap().unwrap();
        assert_eq!(store.load_memory(&kept).unwrap(), image, "legacy first: {legacy_first}");
        let stats = store.remove_function("f").unwrap();
        assert_eq!(stats.chunks_freed, chunks_of(&covered).len() as u64);
        assert_eq!(store.stored_chunks(), 0, "legacy first: {legacy_first}");
    }
}

#[test]
fn a_checkpoint_from_changes_shares_its_functions_references() {
    let (_db, store) = temp_store();
    let image = memory(4, 47);
    let (base, _, _) = store.put(template("f", 1), &image, None).unwrap();
    let index = base.chunk_hashes.iter().position(|entry| !entry.is_empty()).unwrap();
    let mut next = image.clone();
    next[index * 4096 + 5] ^= 0xff;
    let changed_chunk = [(index as u32, &next[index * 4096..(index + 1) * 4096])];
    let changes = crate::checkpoint::ChangedMemory {
        memory_bytes: next.len() as u64,
        chunk_size: 4096,
        complete: false,
        chunks: &changed_chunk,
        written_pages: None,
    };
    let (second, _) = store.put_changes(template("f", 2), changes, Some(&base)).unwrap();
    for hash in chunks_of(&second) {
        assert_eq!(store.chunk_refcount(&hash).unwrap(), 1, "{hash}");
    }
    let stats = store.retain("f", 1).unwrap();
    assert_eq!(stats.chunks_freed, 1, "only the old content of the changed chunk goes");
    assert_eq!(store.load_memory(&second).unwrap(), next);
}
