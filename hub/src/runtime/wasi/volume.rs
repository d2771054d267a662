//! A function's files at a capture — its volume's content and its
//! descriptor table — and the descriptor table put back at a restore.
//!
//! The volume is captured at the instant memory is (the guest is stopped in
//! a host call, and no one else writes its volume), incrementally: the hub
//! sees every write, resize and truncation ([`Area::changed`]), so a capture
//! for a consumer (the periodic checkpoints, one move) reads only the
//! chunks of files changed since that consumer's previous capture and takes
//! the hashes of the others from it. A file whose inode the previous capture
//! did not see, or whose change time moved without a recorded change (its
//! times set, a rename), is read whole: never trusted stale.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{Seek, SeekFrom};
use std::sync::Arc;

use cap_fs_ext::DirExt;
use cap_std::fs::{Dir, File, FileExt, MetadataExt, OpenOptions};
use ferry_migrator::checkpoint::volume::{
    FILE_CHUNK_SIZE, OpenDescriptor, VolumeEntry, VolumeState, open_descriptor, volume_entry,
};
use ferry_migrator::checkpoint::{ChunkHash, chunk_count, hash_chunk, is_zero_chunk};

use super::fds::{Descriptor, DirFd, FdTable, FileFd};
use super::files::Area;

/// The granularity at which changes are recorded, in bytes: the chunk of
/// a file.
const TRACK_CHUNK: u64 = FILE_CHUNK_SIZE as u64;

/// What changed in a volume since each consumer's previous capture.
#[derive(Debug, Default)]
pub struct VolumeTracker {
    sets: HashMap<String, TrackedSet>,
}

/// One consumer's view: the files as its previous capture found them, and
/// the tracked chunks changed since, by inode.
#[derive(Debug, Default)]
struct TrackedSet {
    chunk_size: u32,
    files: HashMap<u64, FileRecord>,
    changed: HashMap<u64, BTreeSet<u64>>,
}

#[derive(Debug, Clone)]
struct FileRecord {
    size: u64,
    ctime: (i64, i64),
    hashes: Vec<Option<ChunkHash>>,
}

impl VolumeTracker {
    /// Records that bytes `start..end` of file `ino` changed, for every consumer.
    pub fn changed(&mut self, ino: u64, start: u64, end: u64) {
        for set in self.sets.values_mut() {
            set.changed
                .entry(ino)
                .or_default()
                .extend(start / TRACK_CHUNK..=(end - 1) / TRACK_CHUNK);
        }
    }

    /// Drops a consumer: its next capture reads every file.
    pub fn forget(&mut self, set: &str) {
        self.sets.remove(set);
    }

    /// Starts consumer `to` where consumer `from` is: its first capture
    /// reads only what changed since `from`'s previous one (and takes the
    /// other hashes from it). Nothing if `from` has no view yet.
    pub fn share(&mut self, from: &str, to: &str) {
        if let Some(view) = self.sets.get(from) {
            let view = TrackedSet {
                chunk_size: view.chunk_size,
                files: view.files.clone(),
                changed: view.changed.clone(),
            };
            self.sets.insert(to.to_owned(), view);
        }
    }
}

/// Files smaller than this are not taken by [`start_clean`].
const START_CLEAN_MIN_BYTES: u64 = 8 * FILE_CHUNK_SIZE as u64;

/// Starts consumer `set` of the volume among `fds` as if its previous
/// capture had found `volume`, which the volume was just laid out from (a
/// restore, an arrival): each regular file of 64 KiB or more that `volume`
/// names and that is on disk at the length `volume` gives it is taken with the chunk hashes
/// `volume` lists, by inode and change time as it is now. Anything else is
/// read whole at the set's first capture, as without this. Returns the
/// files taken.
pub fn start_clean(fds: &FdTable, set: &str, volume: &VolumeState) -> Result<usize, String> {
    let Some(area) = fds.areas().iter().find(|area| area.is_volume()) else {
        return Ok(0);
    };
    if volume.chunk_size != FILE_CHUNK_SIZE {
        return Ok(0);
    }
    let mut files = HashMap::new();
    for entry in &volume.entries {
        // A small file costs its first capture about what looking it up
        // here costs the start: it is left to be read then.
        if volume_entry::Kind::try_from(entry.kind) != Ok(volume_entry::Kind::File)
            || entry.size < START_CLEAN_MIN_BYTES
        {
            continue;
        }
        // Not followed: a symlink where the state names a file is not it.
        let Ok(metadata) = area.root().symlink_metadata(&entry.path) else {
            continue;
        };
        if !metadata.is_file() || metadata.len() != entry.size || metadata.nlink() != 1 {
            continue;
        }
        let hashes: Result<Vec<Option<ChunkHash>>, usize> = entry
            .chunk_hashes
            .iter()
            .map(|hash| ChunkHash::from_manifest_entry(hash))
            .collect();
        let Ok(hashes) = hashes else {
            return Err(format!(
                "the volume state lists a malformed chunk hash for {}",
                entry.path
            ));
        };
        if hashes.len() != chunk_count(entry.size, FILE_CHUNK_SIZE) as usize {
            return Err(format!(
                "the volume state lists the wrong number of chunks for {}",
                entry.path
            ));
        }
        files.insert(
            metadata.ino(),
            FileRecord {
                size: entry.size,
                ctime: (metadata.ctime(), metadata.ctime_nsec()),
                hashes,
            },
        );
    }
    let taken = files.len();
    let mut tracker = area.tracker().ok_or("the volume has no tracker")?;
    tracker.sets.insert(
        set.to_owned(),
        TrackedSet {
            chunk_size: FILE_CHUNK_SIZE,
            files,
            changed: HashMap::new(),
        },
    );
    Ok(taken)
}

/// A function's files as one capture found them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SnapshotFiles {
    /// The volume's content (`None`: the function has no volume).
    pub volume: Option<VolumeState>,
    /// Every open descriptor, stdio included.
    pub descriptors: Vec<OpenDescriptor>,
    /// The file chunks this capture read (changed since the consumer's
    /// previous capture), each distinct hash once.
    pub chunks: Vec<(ChunkHash, Arc<[u8]>)>,
    /// Bytes of files read by this capture.
    pub bytes_read: u64,
}

// The protobuf messages compare by value; none holds a float.
impl Eq for SnapshotFiles {}

/// Captures the files of the function whose descriptors are `fds`, for the
/// consumer `set` (`None`: read everything, remember nothing), in chunks of
/// [`FILE_CHUNK_SIZE`]. `None` for a function without directories.
pub fn capture_files(fds: &FdTable, set: Option<&str>) -> Result<Option<SnapshotFiles>, String> {
    let chunk_size = FILE_CHUNK_SIZE;
    if fds.areas().is_empty() {
        return Ok(None);
    }
    let mut files = SnapshotFiles::default();
    let mut paths: HashMap<u64, String> = HashMap::new();
    if let Some(area) = fds.areas().iter().find(|area| area.is_volume()) {
        let mut tracker = area.tracker().ok_or("the volume has no tracker")?;
        let previous = set
            .and_then(|set| tracker.sets.remove(set))
            .filter(|previous| previous.chunk_size == chunk_size);
        let root_ino = area
            .root()
            .dir_metadata()
            .map_err(|error| format!("cannot read the volume's root: {error}"))?
            .ino();
        paths.insert(root_ino, String::new());
        let mut scan = Scan {
            chunk_size: u64::from(chunk_size),
            previous,
            next: HashMap::new(),
            entries: Vec::new(),
            read: HashSet::new(),
            files: &mut files,
            paths: &mut paths,
        };
        scan.walk(area.root(), "")?;
        let Scan { mut entries, next, .. } = scan;
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        if let Some(set) = set {
            tracker.sets.insert(
                set.to_owned(),
                TrackedSet {
                    chunk_size,
                    files: next,
                    changed: HashMap::new(),
                },
            );
        }
        files.volume = Some(VolumeState { entries, chunk_size });
    }
    files.descriptors = capture_descriptors(fds, &paths)?;
    Ok(Some(files))
}

/// A walk of the volume.
struct Scan<'a> {
    chunk_size: u64,
    previous: Option<TrackedSet>,
    next: HashMap<u64, FileRecord>,
    entries: Vec<VolumeEntry>,
    /// Hashes already in `files.chunks`.
    read: HashSet<ChunkHash>,
    files: &'a mut SnapshotFiles,
    /// Inode → a path that names it (for the descriptors).
    paths: &'a mut HashMap<u64, String>,
}

impl Scan<'_> {
    fn walk(&mut self, dir: &Dir, prefix: &str) -> Result<(), String> {
        let failed = |what: &str, error: std::io::Error| format!("cannot read {what} of the volume: {error}");
        let shown = if prefix.is_empty() { "the root" } else { prefix };
        let mut names = Vec::new();
        for entry in dir.entries().map_err(|error| failed(shown, error))? {
            let entry = entry.map_err(|error| failed(shown, error))?;
            let file_type = entry.file_type().map_err(|error| failed(shown, error))?;
            names.push((entry.file_name(), file_type));
        }
        for (name, file_type) in names {
            let name = name
                .into_string()
                .map_err(|name| format!("the volume holds a name that is not UTF-8: {name:?}"))?;
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            if file_type.is_dir() {
                let sub = dir.open_dir_nofollow(&name).map_err(|error| failed(&path, error))?;
                let ino = sub.dir_metadata().map_err(|error| failed(&path, error))?.ino();
                self.paths.entry(ino).or_insert_with(|| path.clone());
                self.entries.push(VolumeEntry {
                    path: path.clone(),
                    kind: volume_entry::Kind::Directory as i32,
                    ..VolumeEntry::default()
                });
                self.walk(&sub, &path)?;
            } else if file_type.is_symlink() {
                let target = dir.read_link_contents(&name).map_err(|error| failed(&path, error))?;
                let target = target
                    .into_os_string()
                    .into_string()
                    .map_err(|_| format!("symlink {path} has a target that is not UTF-8"))?;
                self.entries.push(VolumeEntry {
                    path,
                    kind: volume_entry::Kind::Symlink as i32,
                    target,
                    ..VolumeEntry::default()
                });
            } else if file_type.is_file() {
                let file = dir.open(&name).map_err(|error| failed(&path, error))?;
                let metadata = file.metadata().map_err(|error| failed(&path, error))?;
                let ino = metadata.ino();
                let size = metadata.len();
                let ctime = (metadata.ctime(), metadata.ctime_nsec());
                self.paths.entry(ino).or_insert_with(|| path.clone());
                let hashes = match self.next.get(&ino) {
                    // Another link to a file read already.
                    Some(record) => record.hashes.clone(),
                    None => {
                        // Fewer bytes allocated than it is long: it has holes.
                        let sparse = metadata.blocks().saturating_mul(512) < size;
                        self.hash_file(&file, &path, (ino, size, ctime), sparse)?
                    }
                };
                let modified_unix_ns = metadata
                    .modified()
                    .ok()
                    .and_then(|time| time.into_std().duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |since| since.as_nanos() as u64);
                self.entries.push(VolumeEntry {
                    path,
                    kind: volume_entry::Kind::File as i32,
                    size,
                    chunk_hashes: hashes
                        .iter()
                        .map(|hash| hash.map(|hash| hash.0.to_vec()).unwrap_or_default())
                        .collect(),
                    modified_unix_ns,
                    ..VolumeEntry::default()
                });
            } else {
                return Err(format!(
                    "the volume holds {path}, which is neither a file, a directory nor a symlink"
                ));
            }
        }
        Ok(())
    }

    /// The chunk hashes of a file: from the previous capture where it
    /// recorded no change, read and hashed where it did.
    fn hash_file(
        &mut self,
        file: &File,
        path: &str,
        (ino, size, ctime): (u64, u64, (i64, i64)),
        sparse: bool,
    ) -> Result<Vec<Option<ChunkHash>>, String> {
        let chunk_size = self.chunk_size;
        let count = chunk_count(size, chunk_size as u32) as usize;
        let base = self.previous.as_ref().and_then(|set| {
            let record = set.files.get(&ino)?;
            match set.changed.get(&ino) {
                // Changed behind the tracker's back: read it whole.
                None if record.ctime != ctime || record.size != size => None,
                changed => Some((record, changed)),
            }
        });
        let mut hashes = Vec::with_capacity(count);
        let mut buffer = vec![0u8; chunk_size as usize];
        // Where the file's data is, as the filesystem says (asked only of
        // a file with holes): a chunk wholly in a hole is all zeros
        // without reading it (a sparse GiB would otherwise be read, with
        // the function stopped).
        let mut data = DataAhead::asking(sparse);
        for index in 0..count as u64 {
            let start = index * chunk_size;
            let end = (start + chunk_size).min(size);
            let reused = base.and_then(|(record, changed)| {
                let untouched = changed.is_none_or(|changed| {
                    changed
                        .range(start / TRACK_CHUNK..=(end - 1) / TRACK_CHUNK)
                        .next()
                        .is_none()
                });
                let same_extent = (start + chunk_size).min(record.size) == end;
                if untouched && same_extent {
                    record.hashes.get(index as usize).copied()
                } else {
                    None
                }
            });
            if let Some(hash) = reused {
                hashes.push(hash);
                continue;
            }
            if !data.any_before(file, start, end) {
                hashes.push(None);
                continue;
            }
            let chunk = &mut buffer[..(end - start) as usize];
            file.read_exact_at(chunk, start)
                .map_err(|error| format!("cannot read {path} of the volume at {start}: {error}"))?;
            self.files.bytes_read += chunk.len() as u64;
            if is_zero_chunk(chunk) {
                hashes.push(None);
                continue;
            }
            let hash = hash_chunk(chunk);
            if self.read.insert(hash) {
                self.files.chunks.push((hash, Arc::from(&chunk[..])));
            }
            hashes.push(Some(hash));
        }
        self.next.insert(
            ino,
            FileRecord {
                size,
                ctime,
                hashes: hashes.clone(),
            },
        );
        Ok(hashes)
    }
}

/// The stretch of a file that holds data at or after some offset, as
/// `SEEK_DATA` and `SEEK_HOLE` tell it: looked up again only when a chunk
/// starts past its end (a dense file: twice in all).
struct DataAhead {
    /// `start..end` of the data; `None`: not asked yet, or the filesystem
    /// cannot say (everything is read).
    extent: Option<(u64, u64)>,
    asked: bool,
}

impl DataAhead {
    /// One that asks the filesystem, or (`ask` false: a dense file) one
    /// that says everything may hold data.
    fn asking(ask: bool) -> DataAhead {
        DataAhead {
            extent: None,
            asked: !ask,
        }
    }

    /// Whether `file` may hold data in `start..end`: false only when the
    /// filesystem says the range lies in a hole.
    fn any_before(&mut self, file: &File, start: u64, end: u64) -> bool {
        use rustix::fs::{SeekFrom, seek};
        let stale = match self.extent {
            None => !self.asked,
            Some((_, extent_end)) => start >= extent_end,
        };
        if stale {
            self.asked = true;
            self.extent = match seek(file, SeekFrom::Data(start)) {
                Ok(data) => seek(file, SeekFrom::Hole(data)).ok().map(|hole| (data, hole)),
                // No data at or after `start`.
                Err(rustix::io::Errno::NXIO) => Some((u64::MAX, u64::MAX)),
                // No hole support: read everything.
                Err(_) => None,
            };
        }
        self.extent.is_none_or(|(data, _)| data < end)
    }
}

/// The descriptor table, each directory or file of the volume named by a
/// path the scan found for its inode (`paths`), one of a mount by the path
/// it was opened with.
fn capture_descriptors(fds: &FdTable, paths: &HashMap<u64, String>) -> Result<Vec<OpenDescriptor>, String> {
    let area_index = |area: &Arc<Area>| {
        fds.areas()
            .iter()
            .position(|known| Arc::ptr_eq(known, area))
            .unwrap_or_default() as u32
    };
    let volume_path = |fd: u32, ino: u64, what: &str| {
        paths.get(&ino).cloned().ok_or_else(|| {
            format!("descriptor {fd} is a {what} removed from the volume while open, which a capture cannot keep")
        })
    };
    let mut descriptors = Vec::new();
    for (fd, descriptor) in fds.iter() {
        let mut captured = OpenDescriptor {
            fd,
            ..OpenDescriptor::default()
        };
        let kind = match descriptor {
            Descriptor::Stdin => open_descriptor::Kind::Stdin,
            Descriptor::Stdout => open_descriptor::Kind::Stdout,
            Descriptor::Stderr => open_descriptor::Kind::Stderr,
            Descriptor::Dir(dir) => {
                captured.preopen = area_index(&dir.area);
                if dir.preopen {
                    open_descriptor::Kind::Preopen
                } else {
                    captured.path = if dir.area.is_volume() {
                        let ino = dir
                            .dir
                            .dir_metadata()
                            .map_err(|error| format!("cannot read descriptor {fd}: {error}"))?
                            .ino();
                        volume_path(fd, ino, "directory")?
                    } else {
                        dir.path.clone()
                    };
                    open_descriptor::Kind::Directory
                }
            }
            Descriptor::File(file) => {
                captured.preopen = area_index(&file.area);
                captured.path = if file.area.is_volume() {
                    volume_path(fd, file.ino, "file")?
                } else {
                    file.path.clone()
                };
                captured.read = file.read;
                captured.write = file.write;
                captured.append = file.append;
                captured.position = (&file.file)
                    .stream_position()
                    .map_err(|error| format!("cannot read the offset of descriptor {fd}: {error}"))?;
                open_descriptor::Kind::File
            }
        };
        captured.kind = kind as i32;
        descriptors.push(captured);
    }
    Ok(descriptors)
}

/// Rebuilds the descriptor table from a capture's: every number as it was,
/// each directory and file opened again beneath its area (whose content
/// the hub restored first) at its offset.
pub fn restore_descriptors(fds: &mut FdTable, descriptors: &[OpenDescriptor]) -> Result<(), String> {
    let Some(last) = descriptors.last() else {
        return Ok(());
    };
    let mut slots: Vec<Option<Descriptor>> = Vec::new();
    slots.resize_with(last.fd as usize + 1, || None);
    for descriptor in descriptors {
        let fd = descriptor.fd;
        // Named as the guest sees it: the area's path, then the file's.
        let shown = match fds.areas().get(descriptor.preopen as usize) {
            Some(area) if descriptor.path.is_empty() => area.guest_path.clone(),
            Some(area) => format!("{}/{}", area.guest_path.trim_end_matches('/'), descriptor.path),
            None => descriptor.path.clone(),
        };
        let failed = |error: std::io::Error| format!("cannot open descriptor {fd} ({shown:?}) again: {error}");
        let kind = open_descriptor::Kind::try_from(descriptor.kind).unwrap_or(open_descriptor::Kind::Unspecified);
        let area = || {
            fds.areas().get(descriptor.preopen as usize).cloned().ok_or_else(|| {
                format!(
                    "descriptor {fd} lies under preopen {}, which this function does not have",
                    descriptor.preopen
                )
            })
        };
        let restored = match kind {
            open_descriptor::Kind::Stdin => Descriptor::Stdin,
            open_descriptor::Kind::Stdout => Descriptor::Stdout,
            open_descriptor::Kind::Stderr => Descriptor::Stderr,
            open_descriptor::Kind::Preopen | open_descriptor::Kind::Directory => {
                let area = area()?;
                let dir = if descriptor.path.is_empty() {
                    area.root().try_clone()
                } else {
                    area.root().open_dir(&descriptor.path)
                }
                .map_err(failed)?;
                Descriptor::Dir(DirFd {
                    dir,
                    preopen: kind == open_descriptor::Kind::Preopen,
                    path: descriptor.path.clone(),
                    area,
                })
            }
            open_descriptor::Kind::File => {
                let area = area()?;
                let write = descriptor.write && area.writable;
                let mut options = OpenOptions::new();
                options
                    .read(descriptor.read)
                    .write(write && !descriptor.append)
                    .append(write && descriptor.append);
                let mut file = area.root().open_with(&descriptor.path, &options).map_err(failed)?;
                file.seek(SeekFrom::Start(descriptor.position)).map_err(failed)?;
                let ino = file.metadata().map_err(failed)?.ino();
                Descriptor::File(FileFd {
                    file,
                    area,
                    read: descriptor.read,
                    write,
                    append: descriptor.append,
                    path: descriptor.path.clone(),
                    ino,
                })
            }
            open_descriptor::Kind::Unspecified => return Err(format!("descriptor {fd} has no kind")),
        };
        slots[fd as usize] = Some(restored);
    }
    fds.replace_slots(slots);
    Ok(())
}

/// Whether a capture's descriptor table can be opened again here, over
/// `preopens` (the volume laid out from that capture, the mounts of this
/// hub): what a restore would do, dropped at once. A destination asks this
/// before it takes a function, so that a file missing here refuses the move
/// instead of failing the function after it.
pub fn check_descriptors(preopens: &[super::files::PreopenSpec], descriptors: &[OpenDescriptor]) -> Result<(), String> {
    let mut fds = FdTable::with_preopens(preopens)?;
    restore_descriptors(&mut fds, descriptors)
}
