//! The framed encoding of a [`CheckpointManifest`] and its validation.
//!
//! Pure functions, no I/O: [`decode_manifest`] is what a fuzz target drives.

use prost::Message;

use crate::instrument::INSTRUMENTATION_VERSION;

use super::{
    CHECKPOINT_FORMAT_VERSION, CheckpointError, CheckpointManifest, ChunkHash, MAX_CHUNK_SIZE, MAX_MEMORY_BYTES,
    WASM_PAGE_SIZE, chunking::chunk_count, global_value,
};

/// Length of the checksum that precedes the encoded manifest.
pub const CHECKSUM_LEN: usize = 32;

const WHAT: &str = "checkpoint manifest";

/// Encodes a manifest as `BLAKE3(protobuf) ‖ protobuf`, the form it has at
/// rest and on the wire. Does not validate: see [`validate_manifest`].
pub fn encode_manifest(manifest: &CheckpointManifest) -> Vec<u8> {
    let encoded = manifest.encode_to_vec();
    let mut framed = Vec::with_capacity(CHECKSUM_LEN + encoded.len());
    framed.extend_from_slice(blake3::hash(&encoded).as_bytes());
    framed.extend_from_slice(&encoded);
    framed
}

/// Decodes and verifies a framed manifest: its checksum, its protobuf, its
/// format version and its content ([`validate_manifest`]).
///
/// Never panics, whatever the input.
pub fn decode_manifest(bytes: &[u8]) -> Result<CheckpointManifest, CheckpointError> {
    let Some((checksum, encoded)) = bytes.split_at_checked(CHECKSUM_LEN) else {
        return Err(CheckpointError::corrupt(
            WHAT,
            format!("{} bytes is shorter than its {CHECKSUM_LEN}-byte checksum", bytes.len()),
        ));
    };
    let actual = blake3::hash(encoded);
    if actual.as_bytes() != checksum {
        return Err(CheckpointError::corrupt(
            WHAT,
            format!("checksum mismatch over {} bytes (truncated or altered)", encoded.len()),
        ));
    }
    let manifest = CheckpointManifest::decode(encoded)
        .map_err(|error| CheckpointError::corrupt(WHAT, format!("not a valid protobuf: {error}")))?;
    match validate_manifest(&manifest) {
        Ok(()) => Ok(manifest),
        Err(CheckpointError::InvalidCheckpoint { reason }) => {
            Err(CheckpointError::corrupt(describe(&manifest), reason))
        }
        Err(other) => Err(other),
    }
}

/// Checks that a manifest is one this build can restore: the format version
/// first ([`CheckpointError::UnsupportedVersion`]), then every structural
/// rule ([`CheckpointError::InvalidCheckpoint`] naming the first broken one).
pub fn validate_manifest(manifest: &CheckpointManifest) -> Result<(), CheckpointError> {
    if manifest.format_version != CHECKPOINT_FORMAT_VERSION {
        return Err(CheckpointError::UnsupportedVersion {
            found: manifest.format_version,
            supported: CHECKPOINT_FORMAT_VERSION,
        });
    }
    let invalid = |reason: String| CheckpointError::InvalidCheckpoint { reason };
    let Some(spec) = &manifest.spec else {
        return Err(invalid("spec is missing".to_owned()));
    };
    validate_function_name(&spec.name)?;
    if manifest.module_hash.is_empty() {
        return Err(invalid("module_hash is empty".to_owned()));
    }
    validate_memory_bytes(manifest.memory_bytes)?;
    validate_chunk_size(manifest.chunk_size)?;
    let expected_chunks = chunk_count(manifest.memory_bytes, manifest.chunk_size);
    if manifest.chunk_hashes.len() as u64 != expected_chunks {
        return Err(invalid(format!(
            "{} chunk hashes for {} bytes of memory in chunks of {} bytes (expected {expected_chunks})",
            manifest.chunk_hashes.len(),
            manifest.memory_bytes,
            manifest.chunk_size
        )));
    }
    for (index, entry) in manifest.chunk_hashes.iter().enumerate() {
        if let Err(length) = ChunkHash::from_manifest_entry(entry) {
            return Err(invalid(format!("chunk hash {index} is {length} bytes, not 0 or 32")));
        }
    }
    validate_globals(manifest)?;
    validate_host(manifest)?;
    super::volume::validate_files(manifest)
}

/// The instrumentation version a manifest or an offer without one (0) was
/// captured under: hubs recorded it from the build after version 9's
/// rewrite on, so one that did not record it ran version 9 (or, before
/// the previous milestone's end, an older one, whose checkpoints no build
/// ever restored safely).
pub const UNRECORDED_INSTRUMENTATION_VERSION: u32 = 9;

/// Checks that a checkpoint (or an offered move) was captured under this
/// build's [`INSTRUMENTATION_VERSION`]: its saved stack and globals are laid
/// out by the rewrite of that version, and rewinding them into another one
/// would resume the function in the wrong place. 0 (not recorded) reads as
/// [`UNRECORDED_INSTRUMENTATION_VERSION`]. Kept apart from
/// [`validate_manifest`] so that a hub still lists, ships and collects
/// checkpoints it cannot restore.
pub fn check_instrumentation(found: u32) -> Result<(), CheckpointError> {
    let found = match found {
        0 => UNRECORDED_INSTRUMENTATION_VERSION,
        recorded => recorded,
    };
    if found == INSTRUMENTATION_VERSION {
        return Ok(());
    }
    Err(CheckpointError::OtherInstrumentation {
        found,
        supported: INSTRUMENTATION_VERSION,
    })
}

/// A function name usable as a store key: non-empty, no NUL byte.
pub(crate) fn validate_function_name(name: &str) -> Result<(), CheckpointError> {
    if name.is_empty() {
        return Err(CheckpointError::InvalidCheckpoint {
            reason: "function name is empty".to_owned(),
        });
    }
    if name.contains('\0') {
        return Err(CheckpointError::InvalidCheckpoint {
            reason: format!("function name {name:?} contains a NUL byte"),
        });
    }
    Ok(())
}

/// A linear memory size: whole wasm pages, at most 4 GiB.
pub(crate) fn validate_memory_bytes(memory_bytes: u64) -> Result<(), CheckpointError> {
    if !memory_bytes.is_multiple_of(WASM_PAGE_SIZE) {
        return Err(CheckpointError::InvalidCheckpoint {
            reason: format!("memory size {memory_bytes} is not a multiple of the {WASM_PAGE_SIZE}-byte wasm page"),
        });
    }
    if memory_bytes > MAX_MEMORY_BYTES {
        return Err(CheckpointError::InvalidCheckpoint {
            reason: format!("memory size {memory_bytes} exceeds the {MAX_MEMORY_BYTES}-byte limit of wasm32"),
        });
    }
    Ok(())
}

/// A chunk size: greater than zero, at most [`MAX_CHUNK_SIZE`].
pub(crate) fn validate_chunk_size(chunk_size: u32) -> Result<(), CheckpointError> {
    if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
        return Err(CheckpointError::InvalidCheckpoint {
            reason: format!("chunk size {chunk_size} is outside 1..={MAX_CHUNK_SIZE}"),
        });
    }
    Ok(())
}

fn validate_globals(manifest: &CheckpointManifest) -> Result<(), CheckpointError> {
    let invalid = |reason: String| CheckpointError::InvalidCheckpoint { reason };
    let mut previous_index: Option<u32> = None;
    for global in &manifest.globals {
        if previous_index.is_some_and(|previous| global.index <= previous) {
            return Err(invalid(format!(
                "global {} is out of order (globals must be strictly increasing by index)",
                global.index
            )));
        }
        previous_index = Some(global.index);
        match &global.value {
            None => return Err(invalid(format!("global {} has no value", global.index))),
            Some(global_value::Value::V128(bytes)) if bytes.len() != 16 => {
                return Err(invalid(format!(
                    "v128 global {} is {} bytes, not 16",
                    global.index,
                    bytes.len()
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn validate_host(manifest: &CheckpointManifest) -> Result<(), CheckpointError> {
    let invalid = |reason: &str| CheckpointError::InvalidCheckpoint {
        reason: reason.to_owned(),
    };
    let Some(host) = &manifest.host else {
        return Err(invalid("host state is missing"));
    };
    let Some(pending) = &host.pending else {
        return Err(invalid(
            "host.pending is missing (a checkpoint is always taken inside a host call)",
        ));
    };
    if pending.call.is_none() {
        return Err(invalid("host.pending names no call"));
    }
    Ok(())
}

/// A digest of a manifest's memory layout and chunk list, which binds
/// [`Fingerprints`](super::Fingerprints) to the manifest they describe.
pub fn chunk_list_digest(manifest: &CheckpointManifest) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"ferry checkpoint chunk list v1");
    hasher.update(&u64::from(manifest.chunk_size).to_le_bytes());
    hasher.update(&manifest.memory_bytes.to_le_bytes());
    hasher.update(&(manifest.chunk_hashes.len() as u64).to_le_bytes());
    for entry in &manifest.chunk_hashes {
        hasher.update(&(entry.len() as u64).to_le_bytes());
        hasher.update(entry);
    }
    *hasher.finalize().as_bytes()
}

/// `checkpoint 7 of function sensor`, for messages.
pub(crate) fn describe(manifest: &CheckpointManifest) -> String {
    let name = manifest.spec.as_ref().map_or("<unnamed>", |spec| spec.name.as_str());
    format!("checkpoint {} of function {name}", manifest.sequence)
}

/// The distinct chunks a (validated) manifest names, memory first then its
/// volume's files, in first-use order.
pub(crate) fn distinct_chunks(manifest: &CheckpointManifest) -> Vec<ChunkHash> {
    let mut seen = std::collections::HashSet::new();
    let files = manifest.volume.iter().flat_map(super::volume::volume_chunks);
    manifest
        .chunk_hashes
        .iter()
        .filter_map(|entry| ChunkHash::from_manifest_entry(entry).ok().flatten())
        .chain(files)
        .filter(|hash| seen.insert(*hash))
        .collect()
}
