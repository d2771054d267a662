//! Laying a function's volume out from a checkpoint: whenever a function
//! starts from a checkpoint (a resume, a restart after `kill -9`, an
//! arrival), its files are put back exactly as that checkpoint captured
//! them, so a database never runs ahead of the program that writes it.
//!
//! The volume is built beside the old one (`volume.restoring`) from chunks
//! read and verified from the checkpoint store, then swapped in with two
//! renames; the old one is removed after. A failure before the swap leaves
//! the old volume as it was; a crash anywhere is harmless, because the next
//! start from the checkpoint builds the volume again (leftovers of an
//! earlier attempt are removed first). Nothing is synced: until the
//! function has run from it, the volume is derived data.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ferry_migrator::checkpoint::volume::{VolumeState, volume_entry};
use ferry_migrator::checkpoint::{CheckpointStore, ChunkHash};

use crate::resources::{function_dir, volume_dir};

/// What a layout wrote, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Laid {
    pub files: u64,
    pub bytes: u64,
}

/// Replaces the volume of `name` under `data_dir` by `volume`, every chunk
/// read from `store` (`chunk_size` as in its manifest). On failure the old
/// volume is untouched and the error names what could not be written.
pub fn lay_out_from_checkpoint(
    store: &CheckpointStore,
    data_dir: &Path,
    name: &str,
    volume: &VolumeState,
    chunk_size: u32,
) -> Result<Laid, String> {
    let target = volume_dir(data_dir, name);
    let building = function_dir(data_dir, name).join("volume.restoring");
    let old = function_dir(data_dir, name).join("volume.old");
    for leftover in [&building, &old] {
        remove_if_present(leftover).map_err(|error| format!("cannot remove {}: {error}", leftover.display()))?;
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&building)
        .map_err(|error| format!("cannot create {}: {error}", building.display()))?;
    let laid = match write_entries(store, &building, volume, chunk_size) {
        Ok(laid) => laid,
        Err(error) => {
            let _ = fs::remove_dir_all(&building);
            return Err(error);
        }
    };
    let swapped = (|| {
        if target.exists() {
            fs::rename(&target, &old)?;
        }
        fs::rename(&building, &target)
    })();
    swapped.map_err(|error| format!("cannot put the restored volume in place: {error}"))?;
    if let Err(error) = remove_if_present(&old) {
        tracing::warn!(function = %name, %error, "could not remove the replaced volume");
    }
    Ok(laid)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Writes every entry beneath `root`. The entries are validated (relative,
/// normalised, each in a directory listed before it), so joining them to
/// `root` stays beneath it, and no entry lies under a symlink.
fn write_entries(store: &CheckpointStore, root: &Path, volume: &VolumeState, chunk_size: u32) -> Result<Laid, String> {
    let mut laid = Laid::default();
    let mut buffer = vec![0u8; chunk_size as usize];
    for entry in &volume.entries {
        let path: PathBuf = root.join(&entry.path);
        let failed = |error: &dyn std::fmt::Display| format!("cannot restore {} of the volume: {error}", entry.path);
        match volume_entry::Kind::try_from(entry.kind) {
            Ok(volume_entry::Kind::Directory) => {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&path)
                    .map_err(|error| failed(&error))?;
            }
            Ok(volume_entry::Kind::Symlink) => {
                std::os::unix::fs::symlink(&entry.target, &path).map_err(|error| failed(&error))?;
            }
            Ok(volume_entry::Kind::File) => {
                let file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|error| failed(&error))?;
                write_file(store, &file, entry, chunk_size, &mut buffer).map_err(|error| failed(&error))?;
                if entry.modified_unix_ns > 0 {
                    let modified = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(entry.modified_unix_ns);
                    let _ = file.set_modified(modified);
                }
                laid.files += 1;
                laid.bytes += entry.size;
            }
            _ => return Err(failed(&"it has no kind")),
        }
    }
    Ok(laid)
}

/// A file's chunks at their offsets; holes stay holes.
fn write_file(
    store: &CheckpointStore,
    file: &File,
    entry: &ferry_migrator::checkpoint::volume::VolumeEntry,
    chunk_size: u32,
    buffer: &mut [u8],
) -> Result<(), String> {
    let chunk_size = u64::from(chunk_size);
    for (index, hash) in entry.chunk_hashes.iter().enumerate() {
        let Ok(Some(hash)) = ChunkHash::from_manifest_entry(hash) else {
            continue;
        };
        let start = index as u64 * chunk_size;
        let chunk = &mut buffer[..entry.size.saturating_sub(start).min(chunk_size) as usize];
        store.read_chunk_into(&hash, chunk).map_err(|error| error.to_string())?;
        file.write_all_at(chunk, start).map_err(|error| error.to_string())?;
    }
    file.set_len(entry.size).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_migrator::checkpoint::volume::VolumeEntry;
    use ferry_migrator::checkpoint::{hash_chunk, is_zero_chunk};

    fn store() -> (tempfile::TempDir, CheckpointStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
        (dir, CheckpointStore::open(&db).unwrap())
    }

    fn file_entry(store: &CheckpointStore, path: &str, content: &[u8], chunk_size: usize) -> VolumeEntry {
        let mut chunks = Vec::new();
        for chunk in content.chunks(chunk_size) {
            if is_zero_chunk(chunk) {
                chunks.push(Vec::new());
                continue;
            }
            let hash = hash_chunk(chunk);
            store.put_loose_chunks(&[(hash, chunk)]).unwrap();
            chunks.push(hash.0.to_vec());
        }
        VolumeEntry {
            path: path.to_owned(),
            kind: volume_entry::Kind::File as i32,
            size: content.len() as u64,
            chunk_hashes: chunks,
            ..VolumeEntry::default()
        }
    }

    #[test]
    fn a_volume_is_replaced_by_the_checkpoint_s_files_holes_and_links_included() {
        let (dir, store) = store();
        let data = dir.path();
        let current = volume_dir(data, "f");
        fs::create_dir_all(current.join("db")).unwrap();
        fs::write(current.join("db/main"), b"ran ahead of the checkpoint").unwrap();
        fs::write(current.join("stray"), b"written after the checkpoint").unwrap();
        let mut content = vec![0u8; 3 * 1024 + 10];
        content[..5].copy_from_slice(b"hello");
        content[3 * 1024..].copy_from_slice(b"0123456789");
        let volume = VolumeState {
            entries: vec![
                VolumeEntry {
                    path: "db".to_owned(),
                    kind: volume_entry::Kind::Directory as i32,
                    ..VolumeEntry::default()
                },
                file_entry(&store, "db/main", &content, 1024),
                VolumeEntry {
                    path: "link".to_owned(),
                    kind: volume_entry::Kind::Symlink as i32,
                    target: "db/main".to_owned(),
                    ..VolumeEntry::default()
                },
            ],
        };
        let laid = lay_out_from_checkpoint(&store, data, "f", &volume, 1024).unwrap();
        assert_eq!(
            laid,
            Laid {
                files: 1,
                bytes: content.len() as u64
            }
        );
        assert_eq!(fs::read(current.join("db/main")).unwrap(), content);
        assert_eq!(fs::read(current.join("link")).unwrap(), content);
        assert!(
            !current.join("stray").exists(),
            "what the checkpoint did not hold is gone"
        );
        assert!(!function_dir(data, "f").join("volume.old").exists());
    }

    #[test]
    fn a_missing_chunk_fails_the_layout_and_leaves_the_old_volume_untouched() {
        let (dir, store) = store();
        let data = dir.path();
        let current = volume_dir(data, "f");
        fs::create_dir_all(&current).unwrap();
        fs::write(current.join("keep"), b"still here").unwrap();
        let volume = VolumeState {
            entries: vec![VolumeEntry {
                path: "gone".to_owned(),
                kind: volume_entry::Kind::File as i32,
                size: 4,
                chunk_hashes: vec![vec![9; 32]],
                ..VolumeEntry::default()
            }],
        };
        let error = lay_out_from_checkpoint(&store, data, "f", &volume, 1024).unwrap_err();
        assert!(error.contains("gone") && error.contains("missing"), "{error}");
        assert_eq!(fs::read(current.join("keep")).unwrap(), b"still here");
        assert!(!function_dir(data, "f").join("volume.restoring").exists());
    }
}
