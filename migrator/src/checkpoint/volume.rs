//! The files part of a checkpoint: a function's volume ([`VolumeState`]) and
//! the descriptors it held open ([`OpenDescriptor`]), and their validation.
//!
//! A volume file is cut into chunks of the volume's own `chunk_size`
//! ([`FILE_CHUNK_SIZE`], smaller than memory's) like memory is into its chunks, named by the BLAKE3 of their bytes (an all-zero chunk, a
//! hole, is elided) and kept in the same store: a chunk shared by memory and
//! a file, or by two files, is stored once. Pure data, no I/O.

use std::collections::HashSet;

pub use ferry_proto::internal::v1::{OpenDescriptor, VolumeEntry, VolumeState, open_descriptor, volume_entry};

use super::{CheckpointError, CheckpointManifest, ChunkHash, chunking::chunk_count};

/// The chunk size of files this build writes: 8 KiB, two pages of SQLite
/// or of most filesystems, so a program rewriting scattered pages makes a
/// checkpoint read and a move send little more than it wrote, while a
/// manifest names few enough chunks (1,024 per 8 MiB of files) to stay
/// cheap to write with every checkpoint (BENCHMARKS.md: 4 KiB made the
/// metadata dominate, 16 KiB and 64 KiB read too much around each page).
pub const FILE_CHUNK_SIZE: u32 = 8 * 1024;

/// Most entries a volume in a checkpoint may hold.
pub const MAX_VOLUME_ENTRIES: usize = 1_000_000;
/// Most bytes the files of a volume in a checkpoint may hold together (1 TiB).
pub const MAX_VOLUME_BYTES: u64 = 1 << 40;
/// Longest path an entry or descriptor may name, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Highest descriptor number a checkpoint may name.
pub const MAX_FD: u32 = 1 << 16;

fn invalid(reason: String) -> CheckpointError {
    CheckpointError::InvalidCheckpoint { reason }
}

/// Checks a path relative to a volume or preopen root: '/'-separated, no
/// empty, "." or ".." component, no NUL, at most [`MAX_PATH_BYTES`].
/// `what` names the path in the error.
pub fn validate_relative_path(path: &str, what: &str) -> Result<(), CheckpointError> {
    if path.is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(invalid(format!(
            "{what} is {} bytes (at most {MAX_PATH_BYTES})",
            path.len()
        )));
    }
    if path.contains('\0') {
        return Err(invalid(format!("{what} {path:?} contains a NUL byte")));
    }
    if path
        .split('/')
        .any(|component| component.is_empty() || component == "." || component == "..")
    {
        return Err(invalid(format!(
            "{what} {path:?} is not a normalised relative path (an empty, \".\" or \"..\" component, or a leading '/')"
        )));
    }
    Ok(())
}

/// Checks the volume and descriptors of a manifest (the rest is checked by
/// `validate_manifest`, which calls this).
pub(crate) fn validate_files(manifest: &CheckpointManifest) -> Result<(), CheckpointError> {
    if let Some(volume) = &manifest.volume {
        validate_volume(volume)?;
    }
    validate_descriptors(&manifest.descriptors)
}

/// Checks a volume's chunk size and entries (see `validate_manifest`).
pub fn validate_volume(volume: &VolumeState) -> Result<(), CheckpointError> {
    let chunk_size = volume.chunk_size;
    super::manifest::validate_chunk_size(chunk_size)?;
    if volume.entries.len() > MAX_VOLUME_ENTRIES {
        return Err(invalid(format!(
            "the volume holds {} entries (at most {MAX_VOLUME_ENTRIES})",
            volume.entries.len()
        )));
    }
    let mut directories: HashSet<&str> = HashSet::new();
    let mut previous: Option<&str> = None;
    let mut total: u64 = 0;
    for (index, entry) in volume.entries.iter().enumerate() {
        let what = format!("volume entry {index}");
        validate_relative_path(&entry.path, &format!("the path of {what}"))?;
        if previous.is_some_and(|previous| entry.path.as_str() <= previous) {
            return Err(invalid(format!(
                "{what} ({:?}) is out of order (entries are strictly increasing by path)",
                entry.path
            )));
        }
        previous = Some(&entry.path);
        if let Some((parent, _)) = entry.path.rsplit_once('/')
            && !directories.contains(parent)
        {
            return Err(invalid(format!(
                "{what} ({:?}) lies in {parent:?}, which is not a directory listed before it",
                entry.path
            )));
        }
        let kind = volume_entry::Kind::try_from(entry.kind).unwrap_or(volume_entry::Kind::Unspecified);
        let expected_chunks = match kind {
            volume_entry::Kind::File => chunk_count(entry.size, chunk_size),
            _ => 0,
        };
        match kind {
            volume_entry::Kind::Unspecified => {
                return Err(invalid(format!("{what} ({:?}) has no kind", entry.path)));
            }
            volume_entry::Kind::Directory => {
                directories.insert(&entry.path);
            }
            volume_entry::Kind::Symlink => {
                if entry.target.is_empty() || entry.target.starts_with('/') || entry.target.contains('\0') {
                    return Err(invalid(format!(
                        "symlink {:?} has an empty, absolute or NUL-bearing target",
                        entry.path
                    )));
                }
                if entry.target.len() > MAX_PATH_BYTES {
                    return Err(invalid(format!("symlink {:?} has an overlong target", entry.path)));
                }
            }
            volume_entry::Kind::File => {
                total = total.saturating_add(entry.size);
                if total > MAX_VOLUME_BYTES {
                    return Err(invalid(format!(
                        "the volume's files hold more than {MAX_VOLUME_BYTES} bytes"
                    )));
                }
            }
        }
        if kind != volume_entry::Kind::File && entry.size != 0 {
            return Err(invalid(format!(
                "{what} ({:?}) is not a file but has a size",
                entry.path
            )));
        }
        if entry.chunk_hashes.len() as u64 != expected_chunks {
            return Err(invalid(format!(
                "{what} ({:?}) has {} chunk hashes for {} bytes in chunks of {chunk_size} (expected {expected_chunks})",
                entry.path,
                entry.chunk_hashes.len(),
                entry.size
            )));
        }
        for (chunk, hash) in entry.chunk_hashes.iter().enumerate() {
            if let Err(length) = ChunkHash::from_manifest_entry(hash) {
                return Err(invalid(format!(
                    "chunk hash {chunk} of {what} ({:?}) is {length} bytes, not 0 or 32",
                    entry.path
                )));
            }
        }
    }
    Ok(())
}

fn validate_descriptors(descriptors: &[OpenDescriptor]) -> Result<(), CheckpointError> {
    let mut previous: Option<u32> = None;
    for descriptor in descriptors {
        let what = format!("descriptor {}", descriptor.fd);
        if previous.is_some_and(|previous| descriptor.fd <= previous) {
            return Err(invalid(format!(
                "{what} is out of order (descriptors are strictly increasing)"
            )));
        }
        previous = Some(descriptor.fd);
        if descriptor.fd > MAX_FD {
            return Err(invalid(format!("{what} is above {MAX_FD}")));
        }
        let kind = open_descriptor::Kind::try_from(descriptor.kind).unwrap_or(open_descriptor::Kind::Unspecified);
        match kind {
            open_descriptor::Kind::Unspecified => return Err(invalid(format!("{what} has no kind"))),
            // A directory's empty path is its area's root opened again.
            open_descriptor::Kind::Directory if descriptor.path.is_empty() => {}
            open_descriptor::Kind::Directory | open_descriptor::Kind::File => {
                validate_relative_path(&descriptor.path, &format!("the path of {what}"))?;
            }
            _ if !descriptor.path.is_empty() => {
                return Err(invalid(format!("{what} is stdio or a preopen but names a path")));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The hashes a volume's files name (holes left out), with repeats.
pub fn volume_chunks(volume: &VolumeState) -> impl Iterator<Item = ChunkHash> + '_ {
    volume
        .entries
        .iter()
        .flat_map(|entry| entry.chunk_hashes.iter())
        .filter_map(|entry| ChunkHash::from_manifest_entry(entry).ok().flatten())
}

/// The distinct chunks a volume's files name, each with its length (a
/// file's last chunk may be short), in first-use order.
pub fn volume_chunk_lengths(volume: &VolumeState) -> Vec<(ChunkHash, u32)> {
    let chunk_size = volume.chunk_size;
    let mut seen = HashSet::new();
    let mut chunks = Vec::new();
    for entry in &volume.entries {
        for (index, hash) in entry.chunk_hashes.iter().enumerate() {
            let Ok(Some(hash)) = ChunkHash::from_manifest_entry(hash) else {
                continue;
            };
            let start = index as u64 * u64::from(chunk_size);
            let len = entry.size.saturating_sub(start).min(u64::from(chunk_size)) as u32;
            if seen.insert(hash) {
                chunks.push((hash, len));
            }
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, hashes: Vec<Vec<u8>>) -> VolumeEntry {
        VolumeEntry {
            path: path.to_owned(),
            kind: volume_entry::Kind::File as i32,
            size,
            chunk_hashes: hashes,
            ..VolumeEntry::default()
        }
    }

    fn directory(path: &str) -> VolumeEntry {
        VolumeEntry {
            path: path.to_owned(),
            kind: volume_entry::Kind::Directory as i32,
            ..VolumeEntry::default()
        }
    }

    fn checked(entries: Vec<VolumeEntry>) -> Result<(), CheckpointError> {
        validate_volume(&VolumeState {
            entries,
            chunk_size: 1024,
        })
    }

    #[test]
    fn a_volume_with_directories_before_their_files_and_one_hash_per_chunk_is_valid() {
        let entries = vec![
            directory("db"),
            file("db/main.sqlite", 2048, vec![vec![7; 32], Vec::new()]),
            file("notes", 0, Vec::new()),
        ];
        assert!(checked(entries).is_ok());
    }

    #[test]
    fn paths_that_leave_the_root_or_are_not_normalised_are_refused() {
        for path in ["/etc/passwd", "../x", "a/../b", "a//b", "./a", "a/", "", "a\0b"] {
            let error = checked(vec![file(path, 0, Vec::new())]).unwrap_err();
            assert!(matches!(error, CheckpointError::InvalidCheckpoint { .. }), "{path:?}");
        }
    }

    #[test]
    fn an_entry_in_a_directory_not_listed_before_it_is_refused() {
        let error = checked(vec![file("db/main", 0, Vec::new())]).unwrap_err();
        assert!(
            error.to_string().contains("not a directory listed before it"),
            "{error}"
        );
        let error = checked(vec![directory("b"), directory("a")]).unwrap_err();
        assert!(error.to_string().contains("out of order"), "{error}");
    }

    #[test]
    fn a_file_with_the_wrong_number_of_chunk_hashes_is_refused() {
        let error = checked(vec![file("f", 1025, vec![vec![1; 32]])]).unwrap_err();
        assert!(error.to_string().contains("expected 2"), "{error}");
        let error = checked(vec![file("f", 10, vec![vec![1; 31]])]).unwrap_err();
        assert!(error.to_string().contains("31 bytes"), "{error}");
    }

    #[test]
    fn an_absolute_symlink_target_is_refused() {
        let link = VolumeEntry {
            path: "l".to_owned(),
            kind: volume_entry::Kind::Symlink as i32,
            target: "/etc".to_owned(),
            ..VolumeEntry::default()
        };
        assert!(checked(vec![link]).is_err());
    }

    #[test]
    fn descriptors_must_increase_and_name_normalised_paths() {
        let descriptor = |fd, kind: open_descriptor::Kind, path: &str| OpenDescriptor {
            fd,
            kind: kind as i32,
            path: path.to_owned(),
            ..OpenDescriptor::default()
        };
        assert!(
            validate_descriptors(&[
                descriptor(3, open_descriptor::Kind::Preopen, ""),
                descriptor(4, open_descriptor::Kind::File, "db/main")
            ])
            .is_ok()
        );
        assert!(validate_descriptors(&[descriptor(4, open_descriptor::Kind::File, "../x")]).is_err());
        assert!(
            validate_descriptors(&[
                descriptor(5, open_descriptor::Kind::Stdin, ""),
                descriptor(5, open_descriptor::Kind::Stdout, "")
            ])
            .is_err()
        );
        assert!(validate_descriptors(&[descriptor(3, open_descriptor::Kind::Preopen, "x")]).is_err());
    }
}
