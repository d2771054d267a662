//! Chunks kept as the pages written over their earlier version (`deltas.rs`
//! of the store): what `put_changes` keeps, how it loads, and what holds
//! a base.

use super::{TempDb, memory, template};
use crate::checkpoint::{
    ChangedMemory, CheckpointManifest, CheckpointStore, CheckpointStoreOptions, ChunkHash, DEFAULT_CHUNK_SIZE,
    DELTA_PAGE, PutStats, ReceivedPages,
    codec::{decode_chunk_into, encode_chunk},
    hash_chunk,
};

const CHUNK: usize = DEFAULT_CHUNK_SIZE as usize;

/// A store of 64 KiB chunks (16 pages each) in packs of `pack_bytes`.
fn store(db: &TempDb, pack_bytes: u64) -> CheckpointStore {
    db.open_with(CheckpointStoreOptions {
        pack_bytes,
        ..CheckpointStoreOptions::default()
    })
}

/// Flips a byte in each of `pages` of `image`; returns the changed chunks
/// (ascending) and the page numbers.
fn write_pages(image: &mut [u8], pages: &[u32], salt: u8) -> (Vec<u32>, Vec<u32>) {
    for page in pages {
        let at = *page as usize * DELTA_PAGE + usize::from(salt) * 13;
        image[at] = image[at].wrapping_add(salt) ^ 0x5a;
    }
    let mut chunks: Vec<u32> = pages
        .iter()
        .map(|page| page * DELTA_PAGE as u32 / CHUNK as u32)
        .collect();
    chunks.sort_unstable();
    chunks.dedup();
    (chunks, pages.to_vec())
}

/// Stores `image` as checkpoint `sequence` of `f` from the changes since
/// `base`, with the pages written known.
fn put_pages(
    store: &CheckpointStore,
    sequence: u64,
    image: &[u8],
    base: &CheckpointManifest,
    chunks: &[u32],
    pages: &[u32],
) -> (CheckpointManifest, PutStats) {
    put_changes(store, sequence, image, base, chunks, Some(pages))
}

/// [`put_pages`], the pages written known or not.
fn put_changes(
    store: &CheckpointStore,
    sequence: u64,
    image: &[u8],
    base: &CheckpointManifest,
    chunks: &[u32],
    pages: Option<&[u32]>,
) -> (CheckpointManifest, PutStats) {
    let chunks: Vec<(u32, &[u8])> = chunks
        .iter()
        .map(|index| (*index, &image[*index as usize * CHUNK..(*index as usize + 1) * CHUNK]))
        .collect();
    let changes = ChangedMemory {
        memory_bytes: image.len() as u64,
        chunk_size: DEFAULT_CHUNK_SIZE,
        complete: false,
        chunks: &chunks,
        written_pages: pages,
    };
    store.put_changes(template("f", sequence), changes, Some(base)).unwrap()
}

/// `manifest` loads as `image` by the store that wrote it and by one
/// opened anew; with the function removed, nothing is left stored.
fn loads_then_frees_everything(db: &TempDb, store: &CheckpointStore, manifest: &CheckpointManifest, image: &[u8]) {
    assert_eq!(
        store.load_memory(manifest).unwrap(),
        image,
        "by the store that wrote it"
    );
    assert_eq!(
        db.open().load_memory(manifest).unwrap(),
        image,
        "by a store opened anew"
    );
    store.remove_function("f").unwrap();
    assert_eq!(store.stored_chunks(), 0);
}

/// A 1 MiB memory (16 chunks) with no zero chunk, stored in full.
fn first_checkpoint(store: &CheckpointStore) -> (Vec<u8>, CheckpointManifest) {
    let mut image = memory(16, 77);
    for chunk in image.chunks_mut(CHUNK) {
        chunk[0] = 1;
    }
    let (manifest, _, _) = store.put(template("f", 1), &image, None).unwrap();
    (image, manifest)
}

#[test]
fn scattered_pages_are_kept_as_deltas_and_load_as_the_whole_memory() {
    let db = TempDb::new();
    let store = store(&db, CheckpointStoreOptions::default().pack_bytes);
    let (mut image, base) = first_checkpoint(&store);
    // One page in chunks 2, 5 and 9; nine of the sixteen in chunk 11.
    let mut pages = vec![2 * 16 + 3, 5 * 16, 9 * 16 + 15];
    pages.extend((0..9).map(|page| 11 * 16 + page));
    let (chunks, pages) = write_pages(&mut image, &pages, 1);
    let (manifest, stats) = put_pages(&store, 2, &image, &base, &chunks, &pages);

    assert_eq!(stats.new_chunks, 4);
    assert_eq!(
        stats.delta_chunks, 3,
        "chunk 11 had more than half its pages written: kept whole"
    );
    assert_eq!(stats.bytes_uncompressed_new, (3 * DELTA_PAGE + CHUNK) as u64);
    assert_eq!(
        store.load_memory(&manifest).unwrap(),
        image,
        "by the store that wrote it"
    );
    assert_eq!(
        db.open().load_memory(&manifest).unwrap(),
        image,
        "by a store opened anew"
    );
    for index in &chunks[..3] {
        let hash = ChunkHash::from_manifest_entry(&manifest.chunk_hashes[*index as usize])
            .unwrap()
            .unwrap();
        let encoded = store.encoded_chunk(&hash).unwrap().unwrap();
        let mut chunk = vec![0u8; CHUNK];
        decode_chunk_into(&encoded, &hash, &mut chunk).unwrap();
        assert_eq!(chunk, image[*index as usize * CHUNK..(*index as usize + 1) * CHUNK]);
    }
}

#[test]
fn a_delta_over_a_delta_keeps_the_first_base_and_outlives_the_checkpoints_before_it() {
    let db = TempDb::new();
    let store = store(&db, CheckpointStoreOptions::default().pack_bytes);
    let (mut image, first) = first_checkpoint(&store);
    let first_base = ChunkHash::from_manifest_entry(&first.chunk_hashes[4]).unwrap().unwrap();
    let (chunks, pages) = write_pages(&mut image, &[4 * 16 + 1], 2);
    let (second, _) = put_pages(&store, 2, &image, &first, &chunks, &pages);
    let (chunks, pages) = write_pages(&mut image, &[4 * 16 + 7], 3);
    let (third, stats) = put_pages(&store, 3, &image, &second, &chunks, &pages);
    assert_eq!(stats.delta_chunks, 1);

    // Only the newest checkpoint stays: the chunk the first one named at
    // index 4 is gone from every manifest, yet the delta still needs it.
    store.retain("f", 1).unwrap();
    assert_eq!(
        store.chunk_refcount(&first_base).unwrap(),
        1,
        "held by the newest delta only"
    );
    // With the function gone, so are its deltas and their bases.
    loads_then_frees_everything(&db, &store, &third, &image);
}

#[test]
fn deltas_stay_readable_when_their_packs_are_reclaimed() {
    let db = TempDb::new();
    let store = store(&db, 128 * 1024);
    let (mut image, first) = first_checkpoint(&store);
    // A page in each of chunks 0–3 (deltas), most of chunks 4–15 (whole),
    // into the same packs.
    let mut pages: Vec<u32> = (0..4).map(|chunk| chunk * 16 + 5).collect();
    pages.extend((4..16).flat_map(|chunk| (0..9).map(move |page| chunk * 16 + page)));
    let (chunks, pages) = write_pages(&mut image, &pages, 1);
    let (second, stats) = put_pages(&store, 2, &image, &first, &chunks, &pages);
    assert_eq!(stats.delta_chunks, 4);
    // Chunks 4–15 written whole again: the second checkpoint's copies die
    // with it, and the deltas are all that live in their packs.
    let pages: Vec<u32> = (4..16)
        .flat_map(|chunk| (0..9).map(move |page| chunk * 16 + page))
        .collect();
    let (chunks, pages) = write_pages(&mut image, &pages, 2);
    let (third, _) = put_pages(&store, 3, &image, &second, &chunks, &pages);
    store.retain("f", 1).unwrap();
    let before = store.pack_files().unwrap();
    store.reclaim_packs().unwrap();
    assert!(store.pack_files().unwrap() < before, "{before} packs");
    assert_eq!(store.load_memory(&third).unwrap(), image);
    assert_eq!(db.open().load_memory(&third).unwrap(), image);
}

#[test]
fn without_the_pages_written_every_changed_chunk_is_stored_whole() {
    let db = TempDb::new();
    let store = store(&db, CheckpointStoreOptions::default().pack_bytes);
    let (mut image, base) = first_checkpoint(&store);
    let (chunks, _) = write_pages(&mut image, &[3, 40], 4);
    let (manifest, stats) = put_changes(&store, 2, &image, &base, &chunks, None);
    assert_eq!((stats.new_chunks, stats.delta_chunks), (2, 0));
    assert_eq!(store.load_memory(&manifest).unwrap(), image);
}

#[test]
fn a_page_written_in_a_chunk_that_was_zero_is_kept_over_zeros_and_holds_nothing() {
    let db = TempDb::new();
    let store = store(&db, CheckpointStoreOptions::default().pack_bytes);
    let mut image = vec![0u8; 4 * CHUNK];
    image[5] = 1;
    let (base, _, _) = store.put(template("f", 1), &image, None).unwrap();
    assert!(base.chunk_hashes[2].is_empty(), "chunk 2 is zero at the base");
    let (chunks, pages) = write_pages(&mut image, &[2 * 16 + 9], 6);
    let (manifest, stats) = put_pages(&store, 2, &image, &base, &chunks, &pages);
    assert_eq!((stats.new_chunks, stats.delta_chunks), (1, 1));
    loads_then_frees_everything(&db, &store, &manifest, &image);
}

#[test]
fn a_chunk_past_the_end_of_its_base_is_stored_whole() {
    let db = TempDb::new();
    let store = store(&db, CheckpointStoreOptions::default().pack_bytes);
    let mut image = vec![1u8; 2 * CHUNK];
    let (base, _, _) = store.put(template("f", 1), &image, None).unwrap();
    // The memory grew by a chunk; the tracker lists it whole, as it may
    // have missed writes to it.
    image.resize(3 * CHUNK, 0);
    let (chunks, pages) = write_pages(&mut image, &[2 * 16 + 1], 7);
    let (manifest, stats) = put_pages(&store, 2, &image, &base, &chunks, &pages);
    assert_eq!((stats.new_chunks, stats.delta_chunks), (1, 0));
    assert_eq!(store.load_memory(&manifest).unwrap(), image);
}

/// What a transfer's destination does with a chunk that came as `pages`
/// written over `previous` (stored as `base`): the chunk rebuilt, then put.
fn receive_pages(
    store: &CheckpointStore,
    received: &mut ReceivedPages,
    (previous, base): (&[u8], Option<ChunkHash>),
    pages: &[u32],
    salt: u8,
) -> (ChunkHash, Vec<u8>) {
    let mut chunk = previous.to_vec();
    let mut gathered = Vec::new();
    for page in pages {
        let start = *page as usize * DELTA_PAGE;
        chunk[start + 7] ^= salt;
        gathered.extend_from_slice(&chunk[start..start + DELTA_PAGE]);
    }
    let hash = hash_chunk(&chunk);
    let encoded = encode_chunk(&gathered, 1).unwrap();
    assert!(
        store
            .put_verified_pages(received, &hash, &chunk, (base, pages), &encoded)
            .unwrap()
    );
    (hash, chunk)
}

fn read_back(store: &CheckpointStore, hash: &ChunkHash) -> Vec<u8> {
    let mut chunk = vec![0u8; CHUNK];
    store.read_chunk_into(hash, &mut chunk).unwrap();
    chunk
}

#[test]
fn chunks_received_as_pages_are_kept_as_deltas_over_the_previous_version_and_read_back_whole() {
    let db = TempDb::new();
    let store = store(&db, CheckpointStoreOptions::default().pack_bytes);
    let mut first = memory(1, 9);
    first[0] = 1;
    let first_hash = hash_chunk(&first);
    assert!(
        store
            .put_verified_chunk(&first_hash, &encode_chunk(&first, 1).unwrap())
            .unwrap()
    );
    let mut received = ReceivedPages::default();

    let (second_hash, second) = receive_pages(&store, &mut received, (&first, Some(first_hash)), &[1, 4], 3);
    assert_eq!(received.len(), 1);
    assert!(
        !store.contains_chunk(&second_hash).unwrap(),
        "indexed only with the others"
    );
    store.index_received_pages(&mut received).unwrap();
    assert!(received.is_empty());
    assert_eq!(read_back(&store, &second_hash), second);
    assert_eq!(
        store.chunk_refcount(&first_hash).unwrap(),
        1,
        "the delta holds its base"
    );

    // Over a delta: the pages of both, over the whole version.
    let (third_hash, third) = receive_pages(&store, &mut received, (&second, Some(second_hash)), &[4, 9], 5);
    store.index_received_pages(&mut received).unwrap();
    assert_eq!(read_back(&store, &third_hash), third);
    assert_eq!(store.chunk_refcount(&first_hash).unwrap(), 2);

    // More than half of the pages: kept whole, indexed at once.
    let many: Vec<u32> = (0..9).collect();
    let (fourth_hash, fourth) = receive_pages(&store, &mut received, (&third, Some(third_hash)), &many, 7);
    assert!(received.is_empty());
    assert_eq!(read_back(&store, &fourth_hash), fourth);

    // Over zeros (the slot was zero): nothing to hold.
    let zeros = vec![0u8; CHUNK];
    let (fifth_hash, fifth) = receive_pages(&store, &mut received, (&zeros, None), &[0], 1);
    store.index_received_pages(&mut received).unwrap();
    assert_eq!(read_back(&store, &fifth_hash), fifth);
    assert_eq!(read_back(&db.open(), &third_hash), third, "by a store opened anew");

    // Nothing names them: the deltas go, and their hold on the base.
    store
        .drop_unreferenced(&[second_hash, third_hash, fourth_hash, fifth_hash, first_hash])
        .unwrap();
    assert_eq!(store.stored_chunks(), 0);
}

#[test]
fn chunks_received_as_pages_and_never_indexed_leave_nothing_named() {
    let db = TempDb::new();
    let store = store(&db, CheckpointStoreOptions::default().pack_bytes);
    let first = memory(1, 3);
    let first_hash = hash_chunk(&first);
    store
        .put_verified_chunk(&first_hash, &encode_chunk(&first, 1).unwrap())
        .unwrap();
    let mut received = ReceivedPages::default();
    receive_pages(&store, &mut received, (&first, Some(first_hash)), &[2], 9);
    drop(received);
    assert_eq!(store.stored_chunks(), 1);
    assert_eq!(store.chunk_refcount(&first_hash).unwrap(), 0, "no delta holds it");
}
