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
//!
//! An arrival lays its volume out while the move is still in pre-copy
//! ([`prelay`], in `volume.arriving`, from each round's entries once their
//! chunks are in), so that its seal — inside the function's downtime —
//! only patches the chunks the last round changed ([`patch_arrival`], while
//! the checkpoint is made durable) and swaps it in ([`swap_in_arrival`]).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ferry_migrator::checkpoint::codec::ChunkDecoder;
use ferry_migrator::checkpoint::volume::{VolumeEntry, VolumeState, volume_entry};
use ferry_migrator::checkpoint::{CheckpointStore, ChunkHash};

use crate::resources::{function_dir, volume_dir};

/// What a layout wrote, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Laid {
    /// Files created or patched.
    pub files: u64,
    /// Bytes of chunks written.
    pub bytes: u64,
}

/// Where an arrival lays its volume out ahead of the seal.
fn arriving_dir(data_dir: &Path, name: &str) -> PathBuf {
    function_dir(data_dir, name).join("volume.arriving")
}

/// Replaces the volume of `name` under `data_dir` by `volume`, every chunk
/// read from `store`. On failure the old
/// volume is untouched and the error names what could not be written.
pub fn lay_out_from_checkpoint(
    store: &CheckpointStore,
    data_dir: &Path,
    name: &str,
    volume: &VolumeState,
) -> Result<Laid, String> {
    let building = function_dir(data_dir, name).join("volume.restoring");
    remove_if_present(&arriving_dir(data_dir, name))
        .map_err(|error| format!("cannot remove an arrival's leftover volume: {error}"))?;
    let laid = build_fresh(store, &building, volume)?;
    swap_in(data_dir, name, &building)?;
    Ok(laid)
}

/// Lays an arriving function's volume out ahead of its seal: `entries` as
/// a pre-copy round found them, patched over what the previous call laid
/// out (`previous`; none: built afresh). Every chunk must be in `store`.
pub fn prelay(
    store: &CheckpointStore,
    data_dir: &Path,
    name: &str,
    previous: Option<&VolumeState>,
    entries: &VolumeState,
) -> Result<Laid, String> {
    let dir = arriving_dir(data_dir, name);
    match previous {
        Some(previous) => apply(store, &dir, previous, entries),
        None => build_fresh(store, &dir, entries),
    }
}

/// Patches what [`prelay`] laid out as `prelaid` to `volume` (the sealed
/// checkpoint's), still beside the function's volume: the seal does it
/// while the checkpoint is made durable. On failure the caller lays the
/// volume out afresh instead.
pub fn patch_arrival(
    store: &CheckpointStore,
    data_dir: &Path,
    name: &str,
    prelaid: &VolumeState,
    volume: &VolumeState,
) -> Result<Laid, String> {
    apply(store, &arriving_dir(data_dir, name), prelaid, volume)
}

/// Puts the volume [`patch_arrival`] finished in place of the function's.
pub fn swap_in_arrival(data_dir: &Path, name: &str) -> Result<(), String> {
    swap_in(data_dir, name, &arriving_dir(data_dir, name))
}

/// `volume` written into `dir`, made anew (a leftover is removed first).
fn build_fresh(store: &CheckpointStore, dir: &Path, volume: &VolumeState) -> Result<Laid, String> {
    remove_if_present(dir).map_err(|error| format!("cannot remove {}: {error}", dir.display()))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    let empty = VolumeState {
        entries: Vec::new(),
        chunk_size: volume.chunk_size,
    };
    apply(store, dir, &empty, volume).inspect_err(|_| {
        let _ = fs::remove_dir_all(dir);
    })
}

/// Makes `dir` the volume of `name`: the old one is renamed away, `dir`
/// renamed in, the old one removed.
fn swap_in(data_dir: &Path, name: &str, dir: &Path) -> Result<(), String> {
    let target = volume_dir(data_dir, name);
    let old = function_dir(data_dir, name).join("volume.old");
    remove_if_present(&old).map_err(|error| format!("cannot remove {}: {error}", old.display()))?;
    let swapped = (|| {
        if target.exists() {
            fs::rename(&target, &old)?;
        }
        fs::rename(dir, &target)
    })();
    swapped.map_err(|error| format!("cannot put the restored volume in place: {error}"))?;
    if let Err(error) = remove_if_present(&old) {
        tracing::warn!(function = %name, %error, "could not remove the replaced volume");
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Brings `root`, which holds exactly `old`, to `new`: removes what is gone
/// (or changed kind), creates what is new, and writes of each file only
/// the chunks whose hash or extent changed. The entries are validated
/// (relative, normalised, each in a directory listed before it), so
/// joining them to `root` stays beneath it, and no entry lies under a
/// symlink.
fn apply(store: &CheckpointStore, root: &Path, old: &VolumeState, new: &VolumeState) -> Result<Laid, String> {
    let chunk_size = new.chunk_size;
    if old.chunk_size != chunk_size && !old.entries.is_empty() {
        return Err(format!(
            "the volume laid out is in chunks of {} bytes, the new one in chunks of {chunk_size}",
            old.chunk_size
        ));
    }
    let kind_of = |entry: &VolumeEntry| volume_entry::Kind::try_from(entry.kind).ok();
    let before: HashMap<&str, &VolumeEntry> = old.entries.iter().map(|entry| (entry.path.as_str(), entry)).collect();
    let after: HashMap<&str, &VolumeEntry> = new.entries.iter().map(|entry| (entry.path.as_str(), entry)).collect();
    // Deepest first, so a directory's entries go before it.
    for entry in old.entries.iter().rev() {
        if after
            .get(entry.path.as_str())
            .is_some_and(|kept| kind_of(kept) == kind_of(entry))
        {
            continue;
        }
        let path = root.join(&entry.path);
        let removed = match kind_of(entry) {
            Some(volume_entry::Kind::Directory) => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
        match removed {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                return Err(format!("cannot remove {} of the volume: {error}", entry.path));
            }
            _ => {}
        }
    }
    let mut laid = Laid::default();
    let mut buffer = vec![0u8; chunk_size as usize];
    let mut decoder = ChunkDecoder::new().map_err(|error| error.to_string())?;
    for entry in &new.entries {
        let path: PathBuf = root.join(&entry.path);
        let previous = before
            .get(entry.path.as_str())
            .copied()
            .filter(|previous| kind_of(previous) == kind_of(entry));
        let failed = |error: &dyn std::fmt::Display| format!("cannot restore {} of the volume: {error}", entry.path);
        match kind_of(entry) {
            Some(volume_entry::Kind::Directory) => {
                if previous.is_none() {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&path)
                        .map_err(|error| failed(&error))?;
                }
            }
            Some(volume_entry::Kind::Symlink) => {
                if previous.is_some_and(|previous| previous.target == entry.target) {
                    continue;
                }
                if previous.is_some() {
                    fs::remove_file(&path).map_err(|error| failed(&error))?;
                }
                std::os::unix::fs::symlink(&entry.target, &path).map_err(|error| failed(&error))?;
            }
            Some(volume_entry::Kind::File) => {
                if previous == Some(entry) {
                    continue;
                }
                let mut options = fs::OpenOptions::new();
                options.write(true);
                if previous.is_none() {
                    options.create_new(true).mode(0o600);
                }
                let file = options.open(&path).map_err(|error| failed(&error))?;
                laid.bytes += write_file(store, &mut decoder, &file, entry, previous, chunk_size, &mut buffer)
                    .map_err(|error| failed(&error))?;
                if entry.modified_unix_ns > 0 {
                    let modified = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(entry.modified_unix_ns);
                    let _ = file.set_modified(modified);
                }
                laid.files += 1;
            }
            _ => return Err(failed(&"it has no kind")),
        }
    }
    Ok(laid)
}

/// Writes a file's chunks at their offsets, except those `previous` (the
/// file as it is on disk) holds already with the same extent; a hole where
/// there was data is written as zeros, a hole in a new file stays a hole.
/// Returns the bytes written.
fn write_file(
    store: &CheckpointStore,
    decoder: &mut ChunkDecoder,
    file: &File,
    entry: &VolumeEntry,
    previous: Option<&VolumeEntry>,
    chunk_size: u32,
    buffer: &mut [u8],
) -> Result<u64, String> {
    let chunk_size = u64::from(chunk_size);
    let mut written = 0;
    for (index, hash) in entry.chunk_hashes.iter().enumerate() {
        let start = index as u64 * chunk_size;
        let len = entry.size.saturating_sub(start).min(chunk_size);
        let held = previous.and_then(|previous| {
            let old_len = previous.size.saturating_sub(start).min(chunk_size);
            previous.chunk_hashes.get(index).filter(|_| old_len == len)
        });
        if held == Some(hash) {
            continue;
        }
        let chunk = &mut buffer[..len as usize];
        // The volume shares the disk with the store: it must not fill it.
        let grows = previous.is_none_or(|previous| previous.size < start + len);
        if grows {
            store.claim_room(len).map_err(|error| error.to_string())?;
        }
        match ChunkHash::from_manifest_entry(hash) {
            Ok(Some(hash)) => store
                .read_chunk_with(decoder, &hash, chunk)
                .map_err(|error| error.to_string())?,
            // Zeros over what was there; nothing where nothing was.
            _ if previous.is_some_and(|previous| previous.size > start) => chunk.fill(0),
            _ => continue,
        }
        file.write_all_at(chunk, start).map_err(|error| error.to_string())?;
        written += len;
    }
    file.set_len(entry.size).map_err(|error| error.to_string())?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_migrator::checkpoint::{hash_chunk, is_zero_chunk};

    fn store() -> (tempfile::TempDir, CheckpointStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
        let store = CheckpointStore::open(&db, &dir.path().join("packs")).unwrap();
        (dir, store)
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
            chunk_size: 1024,
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
        let laid = lay_out_from_checkpoint(&store, data, "f", &volume).unwrap();
        // The holes in the middle are not written.
        assert_eq!(
            laid,
            Laid {
                files: 1,
                bytes: 1024 + 10
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
            chunk_size: 1024,
            entries: vec![VolumeEntry {
                path: "gone".to_owned(),
                kind: volume_entry::Kind::File as i32,
                size: 4,
                chunk_hashes: vec![vec![9; 32]],
                ..VolumeEntry::default()
            }],
        };
        let error = lay_out_from_checkpoint(&store, data, "f", &volume).unwrap_err();
        assert!(error.contains("gone") && error.contains("missing"), "{error}");
        assert_eq!(fs::read(current.join("keep")).unwrap(), b"still here");
        assert!(!function_dir(data, "f").join("volume.restoring").exists());
    }

    #[test]
    fn an_arrival_s_prelaid_volume_is_patched_to_the_sealed_one_writing_only_what_changed() {
        let (dir, store) = store();
        let data = dir.path();
        let chunk = |byte: u8| vec![byte; 1024];
        let directory = |path: &str| VolumeEntry {
            path: path.to_owned(),
            kind: volume_entry::Kind::Directory as i32,
            ..VolumeEntry::default()
        };
        let round = VolumeState {
            chunk_size: 1024,
            entries: vec![
                directory("db"),
                file_entry(&store, "db/main", &[chunk(1), chunk(2), chunk(3)].concat(), 1024),
                file_entry(&store, "gone", b"removed before the seal", 1024),
            ],
        };
        let laid = prelay(&store, data, "f", None, &round).unwrap();
        assert_eq!(laid.bytes, 3 * 1024 + 23);
        let sealed = VolumeState {
            chunk_size: 1024,
            entries: vec![
                directory("db"),
                file_entry(
                    &store,
                    "db/main",
                    &[chunk(1), chunk(9), chunk(3), chunk(4)].concat(),
                    1024,
                ),
                directory("new"),
            ],
        };
        let laid = patch_arrival(&store, data, "f", &round, &sealed).unwrap();
        assert!(
            !volume_dir(data, "f").exists(),
            "patched beside the function's volume, not in its place"
        );
        swap_in_arrival(data, "f").unwrap();
        assert_eq!(
            laid,
            Laid {
                files: 1,
                bytes: 2 * 1024
            },
            "only the changed and the new chunk"
        );
        let volume = volume_dir(data, "f");
        assert_eq!(
            fs::read(volume.join("db/main")).unwrap(),
            [chunk(1), chunk(9), chunk(3), chunk(4)].concat()
        );
        assert!(!volume.join("gone").exists() && volume.join("new").is_dir());
        assert!(!function_dir(data, "f").join("volume.arriving").exists());
    }
}
