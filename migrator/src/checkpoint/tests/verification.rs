//! Bad input: corrupt chunks, truncated or altered manifests, other format
//! versions, missing chunks. Each is refused with a clear error and leaves
//! every other stored checkpoint loadable.

use std::panic::{AssertUnwindSafe, catch_unwind};

use ferry_proto::{ErrorCode, ServiceError};

use super::{PAGE, TEST_CHUNK_SIZE, TempDb, Xorshift, memory, temp_store, template};
use crate::checkpoint::{
    CHECKPOINT_FORMAT_VERSION, CheckpointError, CheckpointManifest, ChunkHash, GlobalValue, MAX_CHUNK_SIZE,
    MAX_MEMORY_BYTES, decode_manifest, encode_manifest, global_value, manifest::CHECKSUM_LEN, store::checkpoint_key,
    validate_manifest,
};

/// A valid manifest of two pages in 4 KiB chunks, without a store.
fn valid_manifest() -> CheckpointManifest {
    let mut manifest = template("decoded", 9);
    manifest.format_version = CHECKPOINT_FORMAT_VERSION;
    manifest.memory_bytes = 2 * PAGE as u64;
    manifest.chunk_size = TEST_CHUNK_SIZE;
    manifest.chunk_hashes = (0..32u8)
        .map(|index| if index % 3 == 0 { Vec::new() } else { vec![index; 32] })
        .collect();
    manifest
}

fn assert_data_loss(error: &CheckpointError, expected_fragments: &[&str]) {
    assert_eq!(error.error_code(), ErrorCode::DataLoss, "{error}");
    let message = error.to_string();
    for fragment in expected_fragments {
        assert!(message.contains(fragment), "{message:?} does not mention {fragment:?}");
    }
}

#[test]
fn a_flipped_byte_in_a_stored_chunk_is_data_loss_naming_the_chunk() {
    let (db, writer) = temp_store();
    let store = &writer;
    let image_a = memory(4, 201);
    let image_b = memory(4, 202);
    let (a, _, _) = store.put(template("a", 1), &image_a, None).unwrap();
    let (b, _, _) = store.put(template("b", 1), &image_b, None).unwrap();
    let (index, hash) = a
        .chunk_hashes
        .iter()
        .enumerate()
        .find_map(|(index, entry)| {
            let hash = ChunkHash::from_manifest_entry(entry).ok().flatten()?;
            (!b.chunk_hashes.contains(entry)).then_some((index, hash))
        })
        .unwrap();
    let chunks = db.open_tree("checkpoint_chunks").unwrap();
    let original = chunks.get(hash.as_bytes()).unwrap().unwrap().to_vec();

    // (where the flipped byte is)
    let positions = [
        ("codec byte", 0),
        ("middle", original.len() / 2),
        ("last byte", original.len() - 1),
    ];
    for (case, position) in positions {
        let mut damaged = original.clone();
        damaged[position] ^= 0x01;
        chunks.insert(hash.as_bytes(), damaged).unwrap();
        // As a hub finds its store after a restart: nothing trusted yet.
        let store = db.open();

        let error = store.load_memory(&a).unwrap_err();
        assert_data_loss(
            &error,
            &[&format!("chunk {index} ({hash})"), "checkpoint 1 of function a"],
        );
        assert!(matches!(error, CheckpointError::Corrupt { .. }), "{case}: {error:?}");
        // What a restore checks before it commits finds it too.
        let verify = db.open().verify_memory(&a).unwrap_err();
        assert_data_loss(&verify, &[&format!("chunk {index} ({hash})")]);
        assert_eq!(
            store.get("a", 1).unwrap().as_ref(),
            Some(&a),
            "{case}: the manifest itself is intact"
        );
        assert_eq!(
            store.load_memory(&b).unwrap(),
            image_b,
            "{case}: another checkpoint is unharmed"
        );
    }
    chunks.insert(hash.as_bytes(), original).unwrap();
    let store = db.open();
    assert_eq!(store.load_memory(&a).unwrap(), image_a, "nothing else changed");
}

#[test]
fn chunks_found_on_disk_are_checked_until_a_load_has_verified_them() {
    let (db, writer) = temp_store();
    let image = memory(4, 203);
    let (manifest, _, _) = writer.put(template("a", 1), &image, None).unwrap();
    let distinct = crate::checkpoint::manifest::distinct_chunks(&manifest).len();
    assert_eq!(writer.trusted_chunks(), distinct, "what a put hashed itself is trusted");

    let restarted = db.open();
    assert_eq!(
        restarted.trusted_chunks(),
        0,
        "a store opened anew trusts nothing on disk"
    );
    restarted.verify_memory(&manifest).unwrap();
    assert_eq!(
        restarted.trusted_chunks(),
        distinct,
        "a verification trusts what it checked"
    );
    let restarted = db.open();
    assert_eq!(restarted.load_memory(&manifest).unwrap(), image);
    assert_eq!(
        restarted.trusted_chunks(),
        distinct,
        "a verified load trusts what it checked"
    );
    assert_eq!(
        restarted.load_memory(&manifest).unwrap(),
        image,
        "a trusted load gives the same bytes"
    );

    // A chunk that arrives from elsewhere is trusted only once it is checked.
    let receiver_db = TempDb::new();
    let receiver = receiver_db.open();
    let hash = ChunkHash::from_manifest_entry(&manifest.chunk_hashes[0])
        .unwrap()
        .unwrap();
    let encoded = writer.encoded_chunk(&hash).unwrap().unwrap();
    let mut forged = encoded.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    assert!(receiver.put_chunk(&hash, &forged).is_err(), "a forged chunk is refused");
    assert_eq!(receiver.trusted_chunks(), 0);
    assert!(receiver.put_chunk(&hash, &encoded).unwrap());
    assert_eq!(receiver.trusted_chunks(), 1);
}

#[test]
fn truncated_manifest_bytes_are_refused() {
    let framed = encode_manifest(&valid_manifest());
    let lengths = [
        0,
        1,
        CHECKSUM_LEN - 1,
        CHECKSUM_LEN,
        CHECKSUM_LEN + 1,
        framed.len() / 2,
        framed.len() - 1,
    ];
    for length in lengths {
        let error = decode_manifest(&framed[..length]).unwrap_err();
        assert_data_loss(&error, &["checkpoint manifest is corrupt"]);
    }
    assert_eq!(decode_manifest(&framed).unwrap(), valid_manifest());
}

#[test]
fn a_truncated_stored_manifest_fails_alone() {
    let (db, store) = temp_store();
    let image = memory(2, 301);
    let (first, _, _) = store.put(template("t", 1), &image, None).unwrap();
    store.put(template("t", 2), &memory(2, 302), None).unwrap();
    let checkpoints = db.open_tree("checkpoints").unwrap();
    let key = checkpoint_key("t", 2);
    let framed = checkpoints.get(&key).unwrap().unwrap();
    checkpoints.insert(&key, &framed[..framed.len() - 3]).unwrap();

    assert_data_loss(
        &store.get("t", 2).unwrap_err(),
        &["stored checkpoint 2 of function t", "checksum"],
    );
    assert_data_loss(&store.latest("t").unwrap_err(), &["stored checkpoint 2 of function t"]);
    let entries = store.list("t").unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].manifest.as_ref().unwrap(), &first);
    assert!(entries[1].manifest.is_err());
    assert_eq!(store.load_memory(&first).unwrap(), image);

    // Retention drops the intact older one but releases nothing while the
    // damaged one, whose chunks are unknown, is kept; dropping the damaged
    // one, the last of its function, releases every chunk the function held.
    let stats = store.retain("t", 1).unwrap();
    assert_eq!(
        (
            stats.checkpoints_removed,
            stats.chunks_freed,
            stats.unverifiable_removed
        ),
        (1, 0, 1)
    );
    assert_eq!(
        store.load_memory(&first).unwrap(),
        image,
        "the chunks stay until the damaged one goes"
    );
    let stats = store.remove_function("t").unwrap();
    assert_eq!((stats.checkpoints_removed, stats.unverifiable_removed), (1, 0));
    assert!(stats.chunks_freed > 0);
    assert_eq!(store.stored_chunks(), 0);
}

#[test]
fn a_manifest_of_another_format_version_is_refused_naming_both_versions() {
    let (db, store) = temp_store();
    let image = memory(2, 401);
    let (current, _, _) = store.put(template("v", 1), &image, None).unwrap();
    let checkpoints = db.open_tree("checkpoints").unwrap();
    for found in [0, CHECKPOINT_FORMAT_VERSION + 1, u32::MAX] {
        let mut manifest = valid_manifest();
        manifest.format_version = found;
        let expected = format!("version {found} is not supported (this hub reads version {CHECKPOINT_FORMAT_VERSION})");

        let error = decode_manifest(&encode_manifest(&manifest)).unwrap_err();
        assert!(
            matches!(error, CheckpointError::UnsupportedVersion { found: f, supported } if f == found && supported == CHECKPOINT_FORMAT_VERSION),
            "{error:?}"
        );
        assert!(error.to_string().contains(&expected), "{error}");
        assert_eq!(error.error_code(), ErrorCode::FailedPrecondition);

        manifest.spec = template("v", 2).spec;
        manifest.sequence = 2;
        checkpoints
            .insert(checkpoint_key("v", 2), encode_manifest(&manifest))
            .unwrap();
        let error = store.latest("v").unwrap_err();
        assert!(error.to_string().contains(&expected), "{error}");
        assert_eq!(store.get("v", 1).unwrap().as_ref(), Some(&current));
        assert_eq!(store.load_memory(&current).unwrap(), image);
    }
}

#[test]
fn a_manifest_naming_an_absent_chunk_is_chunk_missing() {
    let (source_db, source) = temp_store();
    let (_destination_db, destination) = temp_store();
    let image = memory(4, 501);
    let (manifest, _, _) = source.put(template("moving", 1), &image, None).unwrap();

    let missing = destination.missing_chunks(&manifest).unwrap();
    assert!(!missing.is_empty());
    let error = destination.import_manifest(&manifest).unwrap_err();
    assert!(
        matches!(&error, CheckpointError::ChunkMissing { hash } if missing.contains(hash)),
        "{error:?}"
    );
    assert_data_loss(&error, &["is missing from the checkpoint store"]);
    assert_eq!(destination.get("moving", 1).unwrap(), None, "nothing was stored");
    assert!(matches!(
        destination.load_memory(&manifest),
        Err(CheckpointError::ChunkMissing { .. })
    ));

    // A damaged chunk in transit is refused; the real ones complete the import.
    let first = missing[0];
    let mut damaged = source.encoded_chunk(&first).unwrap().unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x80;
    assert_data_loss(
        &destination.put_chunk(&first, &damaged).unwrap_err(),
        &[&format!("received chunk {first}")],
    );
    for hash in &missing {
        let encoded = source.encoded_chunk(hash).unwrap().unwrap();
        assert!(destination.put_chunk(hash, &encoded).unwrap());
    }
    destination.import_manifest(&manifest).unwrap();
    destination.import_manifest(&manifest).unwrap();
    assert_eq!(
        destination.chunk_refcount(&first).unwrap(),
        1,
        "a repeated import counts once"
    );
    assert_eq!(destination.load_memory(&manifest).unwrap(), image);

    // A chunk that vanishes from under a stored manifest.
    source_db
        .open_tree("checkpoint_chunks")
        .unwrap()
        .remove(first.as_bytes())
        .unwrap();
    let error = source.load_memory(&manifest).unwrap_err();
    assert!(
        matches!(error, CheckpointError::ChunkMissing { hash } if hash == first),
        "{error:?}"
    );
    // Trusted or not, a restore's check looks it up.
    let error = source.verify_memory(&manifest).unwrap_err();
    assert!(
        matches!(error, CheckpointError::ChunkMissing { hash } if hash == first),
        "{error:?}"
    );
}

#[test]
fn invalid_manifests_are_refused_with_the_broken_rule() {
    type Mutation = fn(&mut CheckpointManifest);
    let cases: [(&str, Mutation); 16] = [
        ("spec is missing", |m| m.spec = None),
        ("function name is empty", |m| m.spec.as_mut().unwrap().name.clear()),
        ("module_hash is empty", |m| m.module_hash.clear()),
        ("not a multiple of the 65536-byte wasm page", |m| m.memory_bytes = 1000),
        ("exceeds the 4294967296-byte limit", |m| {
            m.memory_bytes = MAX_MEMORY_BYTES + PAGE as u64
        }),
        ("chunk size 0 is outside", |m| m.chunk_size = 0),
        ("chunk size 16777217 is outside", |m| m.chunk_size = MAX_CHUNK_SIZE + 1),
        ("31 chunk hashes", |m| {
            m.chunk_hashes.pop();
        }),
        ("chunk hash 4 is 31 bytes", |m| m.chunk_hashes[4].truncate(31)),
        ("global 0 is out of order", |m| m.globals.swap(0, 1)),
        ("global 2 is out of order", |m| m.globals[2].index = 2),
        ("global 3 has no value", |m| m.globals[2].value = None),
        ("v128 global 9 is 15 bytes", |m| {
            m.globals[4].value = Some(global_value::Value::V128(vec![0; 15]))
        }),
        ("host state is missing", |m| m.host = None),
        ("host.pending is missing", |m| m.host.as_mut().unwrap().pending = None),
        ("host.pending names no call", |m| {
            m.host.as_mut().unwrap().pending.as_mut().unwrap().call = None
        }),
    ];
    for (expected, mutate) in cases {
        let mut manifest = valid_manifest();
        mutate(&mut manifest);
        let error = validate_manifest(&manifest).unwrap_err();
        assert!(
            matches!(&error, CheckpointError::InvalidCheckpoint { reason } if reason.contains(expected)),
            "{expected}: {error:?}"
        );
        assert_data_loss(&decode_manifest(&encode_manifest(&manifest)).unwrap_err(), &[expected]);
    }
}

#[test]
fn the_largest_memory_and_chunk_size_are_valid() {
    let mut manifest = valid_manifest();
    manifest.memory_bytes = MAX_MEMORY_BYTES;
    manifest.chunk_size = MAX_CHUNK_SIZE;
    manifest.chunk_hashes = vec![Vec::new(); 256];
    manifest.globals.push(GlobalValue {
        index: u32::MAX,
        value: Some(global_value::Value::I32(0)),
    });
    assert_eq!(decode_manifest(&encode_manifest(&manifest)).unwrap(), manifest);
}

#[test]
fn the_decoder_never_panics_on_truncated_or_altered_input() {
    let framed = encode_manifest(&valid_manifest());
    let body_len = framed.len() - CHECKSUM_LEN;
    let mut rng = Xorshift(0x00de_c0de);
    for iteration in 0..4000 {
        let mut body = framed[CHECKSUM_LEN..].to_vec();
        let mode = iteration % 4;
        let input = match mode {
            0 => framed[..rng.below(framed.len())].to_vec(),
            1 => {
                let mut bytes = framed.clone();
                for _ in 0..=rng.below(4) {
                    let position = rng.below(bytes.len());
                    bytes[position] ^= 1 << rng.below(8);
                }
                bytes
            }
            // With a valid checksum, so that the protobuf decoder and the
            // validation see the damage.
            2 => {
                for _ in 0..=rng.below(4) {
                    let position = rng.below(body_len);
                    body[position] ^= 1 << rng.below(8);
                }
                with_checksum(&body)
            }
            _ => {
                body.truncate(rng.below(body_len));
                with_checksum(&body)
            }
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| decode_manifest(&input)));
        let Ok(result) = outcome else {
            panic!("decode_manifest panicked on iteration {iteration}: {input:02x?}");
        };
        match (mode, result) {
            (0 | 1, result) if input != framed => assert!(result.is_err(), "iteration {iteration} was accepted"),
            (_, Ok(manifest)) => validate_manifest(&manifest).unwrap(),
            (_, Err(error)) => {
                let code = error.error_code();
                assert!(
                    matches!(code, ErrorCode::DataLoss | ErrorCode::FailedPrecondition),
                    "{error:?}"
                );
            }
        }
    }
}

fn with_checksum(body: &[u8]) -> Vec<u8> {
    let mut framed = blake3::hash(body).as_bytes().to_vec();
    framed.extend_from_slice(body);
    framed
}

#[test]
fn every_error_maps_to_its_service_code() {
    let hash = ChunkHash([0; 32]);
    let cases = [
        (CheckpointError::corrupt("x", "y"), ErrorCode::DataLoss),
        (CheckpointError::ChunkMissing { hash }, ErrorCode::DataLoss),
        (
            CheckpointError::UnsupportedVersion { found: 0, supported: 1 },
            ErrorCode::FailedPrecondition,
        ),
        (
            CheckpointError::InvalidCheckpoint { reason: String::new() },
            ErrorCode::InvalidArgument,
        ),
        (
            CheckpointError::BaseMismatch { reason: String::new() },
            ErrorCode::InvalidArgument,
        ),
        (
            CheckpointError::AlreadyExists {
                function: "f".to_owned(),
                sequence: 1,
            },
            ErrorCode::AlreadyExists,
        ),
        (
            CheckpointError::Sled(sled::Error::Unsupported("x".to_owned())),
            ErrorCode::Internal,
        ),
    ];
    for (error, code) in cases {
        assert_eq!(error.error_code(), code, "{error}");
    }
}
