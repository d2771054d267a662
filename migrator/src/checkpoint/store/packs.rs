//! [`Packs`]: the bodies of stored chunks, appended to pack files in a
//! directory beside the hub's database; the `checkpoint_chunks` tree maps
//! each hash to a [`Location`] in a pack.
//!
//! Why not values in sled: sled 0.34 writes every value this large as a
//! file of its own (its "blobs") and rewrites index leaves as they fill, so
//! storing the 1,024 chunks of a 64 MiB memory cost 130–170 ms of a move,
//! where appending the same bytes to one file takes 20–30 ms (BENCHMARKS.md).
//!
//! Rules, each relied on elsewhere:
//!
//! - **Append only.** A chunk's bytes are written once, at the end of the
//!   *current* pack, and never change; a pack past [`PACK_BYTES`] is synced
//!   and closed, and the next one is started. Each process starts a new
//!   pack, so nothing is ever appended after a tail a crash may have torn.
//! - **Data before the index.** [`Packs::sync`] makes every appended byte
//!   durable (and the directory entry of a new pack); the store calls it
//!   before each transaction that commits a manifest, since sled may flush
//!   its log at any moment. A chunk the index names without a durable body
//!   (a crash before the sync) is unreferenced and swept at start-up.
//! - **Written back as it fills.** Every [`WRITEBACK_BYTES`] appended, the
//!   current pack is handed to a background [`Writeback`], so a sync finds
//!   little left to write; it proves nothing durable (`writeback.rs`).
//! - **Checked on every read.** A location carries the XXH3-64 of the bytes
//!   it points at, so a torn or damaged pack is a [`CheckpointError::Corrupt`]
//!   on the read that meets it, never wrong bytes — the same guarantee
//!   sled's per-record CRC gave, which the trusted-chunk rule relies on.
//! - **Reclaimed whole.** Packs are never rewritten in place. Reclaiming
//!   (`reclaim.rs`) deletes a closed pack that no index entry names, and
//!   copies the live chunks of a mostly dead one into the current pack.
//!   An append is *pending* until its caller has written the index entry;
//!   a pack with pending appends, or the current one, is never reclaimed.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::hash::Hasher;
use std::io::{ErrorKind, IoSliceMut};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};

use twox_hash::XxHash3_64;

use super::writeback::{WRITEBACK_BYTES, Writeback};
use crate::checkpoint::CheckpointError;
use crate::checkpoint::room::{DiskRoom, is_disk_full};

/// A pack takes no more chunks once it holds this many bytes (the default
/// of [`CheckpointStoreOptions::pack_bytes`](super::CheckpointStoreOptions)).
pub(super) const PACK_BYTES: u64 = 64 << 20;

/// First byte of an index value that locates a chunk in a pack. A chunk
/// stored in the index itself (by a hub from before packs) starts with its
/// codec byte, 0 or 1, and is still read.
const LOCATION_TAG: u8 = 0xFF;
/// First byte of an index value that locates a chunk kept as a delta: the
/// location, then what the body applies to (see `deltas.rs`).
pub(super) const DELTA_TAG: u8 = 0xFE;
pub(super) const LOCATION_LEN: usize = 1 + 4 + 8 + 4 + 8;

/// Where a chunk's stored bytes are: a pack, an offset and a length, with
/// the XXH3-64 of those bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Location {
    pub(super) pack: u32,
    pub(super) offset: u64,
    pub(super) len: u32,
    pub(super) check: u64,
}

impl Location {
    /// The index value naming this location.
    pub(super) fn encode(&self) -> [u8; LOCATION_LEN] {
        let mut value = [0u8; LOCATION_LEN];
        value[0] = LOCATION_TAG;
        value[1..5].copy_from_slice(&self.pack.to_be_bytes());
        value[5..13].copy_from_slice(&self.offset.to_be_bytes());
        value[13..17].copy_from_slice(&self.len.to_be_bytes());
        value[17..25].copy_from_slice(&self.check.to_be_bytes());
        value
    }

    /// `value` (an index value naming a location) pointed at this location
    /// instead, with whatever follows the location kept.
    pub(super) fn relocate(&self, value: &[u8]) -> Vec<u8> {
        let mut moved = value.to_vec();
        if let Some(head) = moved.get_mut(1..LOCATION_LEN) {
            head.copy_from_slice(&self.encode()[1..]);
        }
        moved
    }

    /// The location an index value names; `None` for a chunk stored inline.
    pub(super) fn decode(value: &[u8]) -> Option<Result<Location, String>> {
        let value = match value.first() {
            Some(&LOCATION_TAG) => value,
            // A delta's value goes on after its location.
            Some(&DELTA_TAG) => value.get(..LOCATION_LEN).unwrap_or(value),
            _ => return None,
        };
        let Ok(value) = <&[u8; LOCATION_LEN]>::try_from(value) else {
            return Some(Err(format!(
                "its location is {} bytes, not {LOCATION_LEN}",
                value.len()
            )));
        };
        let field = |range: std::ops::Range<usize>| &value[range];
        Some(Ok(Location {
            pack: u32::from_be_bytes(field(1..5).try_into().unwrap_or_default()),
            offset: u64::from_be_bytes(field(5..13).try_into().unwrap_or_default()),
            len: u32::from_be_bytes(field(13..17).try_into().unwrap_or_default()),
            check: u64::from_be_bytes(field(17..25).try_into().unwrap_or_default()),
        }))
    }
}

/// The stored size of the chunk an index value names (its location's
/// length, or the inline value's).
pub(super) fn stored_len(value: &[u8]) -> u64 {
    match Location::decode(value) {
        Some(Ok(location)) => u64::from(location.len),
        _ => value.len() as u64,
    }
}

/// Why reading a location failed.
#[derive(Debug)]
pub(super) enum ReadFailure {
    /// The pack file is gone (reclaimed after the location was looked up,
    /// or lost): look the chunk up again.
    PackGone,
    /// The bytes are not there or not the ones written.
    Corrupt(String),
    /// The disk failed.
    Io(CheckpointError),
}

/// The pack directories open in this process: a store opened again on the
/// same directory (a test's "restart", a second handle) shares the first
/// one's writer, so two writers never race for a pack number and a reclaim
/// never takes another handle's current pack for a closed one.
static OPEN_DIRECTORIES: LazyLock<Mutex<HashMap<PathBuf, Weak<Shared>>>> = LazyLock::new(Default::default);

/// The pack files of one directory. Cheap to clone (the clones share them).
#[derive(Clone)]
pub(super) struct Packs {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    /// A pack takes no more chunks past this size; once half as many bytes
    /// of bodies were freed, a reclaim runs.
    pack_bytes: u64,
    /// Appends leave this disk room for the database.
    room: Arc<DiskRoom>,
    writer: Mutex<Writer>,
    /// Open packs, for reads (the current one included).
    open: Mutex<HashMap<u32, Arc<File>>>,
    /// Held while reclaiming: one reclaim at a time.
    reclaim: Mutex<()>,
    /// Bytes of bodies freed since the last reclaim.
    dead: AtomicU64,
    /// Writes the current pack back to disk as it fills.
    writeback: Writeback,
}

struct Writer {
    /// The current pack's number (the next one to create, before the first append).
    pack: u32,
    file: Option<Arc<File>>,
    len: u64,
    /// Every byte of the current pack is durable.
    synced: bool,
    /// The directory entry of the current pack is durable.
    dir_synced: bool,
    /// Bytes appended since the current pack was last written back.
    since_writeback: u64,
    /// Appends whose index entry is not written yet, per pack.
    pending: HashMap<u32, usize>,
}

/// A chunk appended to a pack; reclaiming leaves its pack alone until this
/// is dropped (after the caller wrote the index entry, or gave up).
pub(super) struct Appended {
    pub(super) location: Location,
    packs: Packs,
}

impl Drop for Appended {
    fn drop(&mut self) {
        let mut writer = self.packs.writer();
        if let Some(count) = writer.pending.get_mut(&self.location.pack) {
            *count -= 1;
            if *count == 0 {
                writer.pending.remove(&self.location.pack);
            }
        }
    }
}

impl Packs {
    /// Opens (creating) the pack directory `dir`, or shares it if this
    /// process has it open already. Appends go to a pack of their own.
    pub(super) fn open(dir: &Path, pack_bytes: u64, keep_free_bytes: u64) -> Result<Packs, CheckpointError> {
        std::fs::create_dir_all(dir).map_err(|source| pack_error(dir, source))?;
        let dir = dir.canonicalize().map_err(|source| pack_error(dir, source))?;
        let mut open = OPEN_DIRECTORIES.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|_, shared| shared.strong_count() > 0);
        if let Some(shared) = open.get(&dir).and_then(Weak::upgrade) {
            return Ok(Packs { shared });
        }
        let next = list_packs(&dir)?.into_iter().max().map_or(1, |last| last + 1);
        let packs = Packs {
            shared: Arc::new(Shared {
                dir: dir.clone(),
                pack_bytes: pack_bytes.max(1),
                room: DiskRoom::shared(&dir, keep_free_bytes),
                writer: Mutex::new(Writer {
                    pack: next,
                    file: None,
                    len: 0,
                    synced: true,
                    dir_synced: true,
                    since_writeback: 0,
                    pending: HashMap::new(),
                }),
                open: Mutex::new(HashMap::new()),
                reclaim: Mutex::new(()),
                dead: AtomicU64::new(0),
                writeback: Writeback::default(),
            }),
        };
        open.insert(dir, Arc::downgrade(&packs.shared));
        Ok(packs)
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.shared.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open_packs(&self) -> MutexGuard<'_, HashMap<u32, Arc<File>>> {
        self.shared.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn path(&self, pack: u32) -> PathBuf {
        self.shared.dir.join(pack_name(pack))
    }

    /// Appends `bytes` to the current pack (starting the next one if this
    /// one is full). Not durable until [`Packs::sync`].
    pub(super) fn append(&self, bytes: &[u8]) -> Result<Appended, CheckpointError> {
        one_appended(self.write(&[bytes], true)?)
    }

    /// Appends a body a reclaim copies out of a pack it is about to remove:
    /// not refused on a nearly full disk, since it is how room comes back.
    pub(super) fn append_reclaimed(&self, bytes: &[u8]) -> Result<Appended, CheckpointError> {
        one_appended(self.write(&[bytes], false)?)
    }

    /// Appends each of `bodies`, one after the other in the same pack, in
    /// one write (starting the next pack if this one cannot take them
    /// all). Not durable until [`Packs::sync`]. Refused with
    /// [`CheckpointError::NoRoom`] when the disk has no room for them.
    pub(super) fn append_all(&self, bodies: &[&[u8]]) -> Result<Vec<Appended>, CheckpointError> {
        self.write(bodies, true)
    }

    fn write(&self, bodies: &[&[u8]], claim: bool) -> Result<Vec<Appended>, CheckpointError> {
        if bodies.is_empty() {
            return Ok(Vec::new());
        }
        let lens = bodies
            .iter()
            .map(|bytes| {
                u32::try_from(bytes.len())
                    .map_err(|_| CheckpointError::corrupt("a chunk to store", format!("{} bytes", bytes.len())))
            })
            .collect::<Result<Vec<u32>, _>>()?;
        let total: u64 = lens.iter().map(|len| u64::from(*len)).sum();
        if claim {
            self.shared.room.claim(total)?;
        }
        let mut writer = self.writer();
        if writer.file.is_none() || writer.len + total > self.shared.pack_bytes && writer.len > 0 {
            self.start_next(&mut writer)?;
        }
        let (Some(file), pack, offset) = (writer.file.clone(), writer.pack, writer.len) else {
            return Err(pack_error(&self.path(writer.pack), ErrorKind::NotFound.into()));
        };
        let written = match bodies {
            [one] => file.write_all_at(one, offset),
            many => file.write_all_at(&many.concat(), offset),
        };
        written.map_err(|source| match is_disk_full(&source) {
            true => CheckpointError::NoRoom(self.shared.room.ran_out(total)),
            false => pack_error(&self.path(pack), source),
        })?;
        writer.len += total;
        writer.synced = false;
        writer.since_writeback += total;
        if writer.since_writeback >= WRITEBACK_BYTES {
            writer.since_writeback = 0;
            self.shared.writeback.request(file);
        }
        *writer.pending.entry(pack).or_default() += bodies.len();
        drop(writer);
        let mut at = offset;
        Ok(bodies
            .iter()
            .zip(lens)
            .map(|(bytes, len)| {
                let location = Location {
                    pack,
                    offset: at,
                    len,
                    check: XxHash3_64::oneshot(bytes),
                };
                at += u64::from(len);
                Appended {
                    location,
                    packs: self.clone(),
                }
            })
            .collect())
    }

    /// Starts writing the current pack's appended bytes to disk on the
    /// writeback thread, without waiting: a head start for the next
    /// [`Packs::sync`].
    pub(super) fn write_back_soon(&self) {
        let mut writer = self.writer();
        if let (Some(file), false) = (&writer.file, writer.synced) {
            self.shared.writeback.request(Arc::clone(file));
            writer.since_writeback = 0;
        }
    }

    /// Closes the current pack (durably) and creates the next.
    fn start_next(&self, writer: &mut Writer) -> Result<(), CheckpointError> {
        if let Some(file) = &writer.file {
            if !writer.synced {
                file.sync_data()
                    .map_err(|source| pack_error(&self.path(writer.pack), source))?;
                writer.synced = true;
            }
            writer.pack += 1;
        }
        let path = self.path(writer.pack);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| pack_error(&path, source))?;
        let file = Arc::new(file);
        self.open_packs().insert(writer.pack, file.clone());
        writer.file = Some(file);
        writer.len = 0;
        writer.synced = false;
        writer.dir_synced = false;
        writer.since_writeback = 0;
        Ok(())
    }

    /// Makes every byte appended so far durable, and the current pack's
    /// directory entry.
    pub(super) fn sync(&self) -> Result<(), CheckpointError> {
        let mut writer = self.writer();
        if let (Some(file), false) = (&writer.file, writer.synced) {
            file.sync_data()
                .map_err(|source| pack_error(&self.path(writer.pack), source))?;
            writer.synced = true;
            writer.since_writeback = 0;
        }
        if !writer.dir_synced {
            File::open(&self.shared.dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|source| pack_error(&self.shared.dir, source))?;
            writer.dir_synced = true;
        }
        Ok(())
    }

    /// The bytes at `location`, checked against its XXH3.
    pub(super) fn read(&self, location: &Location) -> Result<Vec<u8>, ReadFailure> {
        let mut bytes = vec![0u8; location.len as usize];
        self.read_into(location, &mut bytes)?;
        Ok(bytes)
    }

    /// [`Packs::read`] into `bytes`, which is exactly the location's length
    /// ([`Packs::read_split_into`] with nothing apart).
    pub(super) fn read_into(&self, location: &Location, bytes: &mut [u8]) -> Result<(), ReadFailure> {
        self.read_split_into(location, &mut [], bytes)
    }

    /// [`Packs::read_into`] with the body split in two: its first
    /// `head.len()` bytes into `head`, the rest into `rest`, in one
    /// `preadv` — a raw chunk's codec byte apart, its bytes straight into
    /// their place in a restored memory.
    pub(super) fn read_split_into(
        &self,
        location: &Location,
        head: &mut [u8],
        rest: &mut [u8],
    ) -> Result<(), ReadFailure> {
        debug_assert_eq!(head.len() + rest.len(), location.len as usize);
        let file = self.reader(location.pack)?;
        let io = |source: std::io::Error| ReadFailure::Io(pack_error(&self.path(location.pack), source));
        let ended = || {
            ReadFailure::Corrupt(format!(
                "pack {} ends before its bytes {}..{}",
                location.pack,
                location.offset,
                location.offset + u64::from(location.len)
            ))
        };
        let mut done = loop {
            let mut slices = [IoSliceMut::new(head), IoSliceMut::new(rest)];
            match rustix::io::preadv(&*file, &mut slices, location.offset) {
                Ok(read) => break read,
                Err(rustix::io::Errno::INTR) => continue,
                Err(error) => return Err(io(error.into())),
            }
        };
        // A short read (rare for a regular file): the rest one part at a time.
        let total = head.len() + rest.len();
        while done < total {
            let (part, at) = if done < head.len() {
                (&mut head[done..], done)
            } else {
                (&mut rest[done - head.len()..], done)
            };
            match file.read_at(part, location.offset + at as u64) {
                Ok(0) => return Err(ended()),
                Ok(read) => done += read,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(io(error)),
            }
        }
        let mut check = XxHash3_64::new();
        check.write(head);
        check.write(rest);
        if check.finish() != location.check {
            return Err(ReadFailure::Corrupt(format!(
                "its bytes in pack {} at {} do not match their checksum",
                location.pack, location.offset
            )));
        }
        Ok(())
    }

    fn reader(&self, pack: u32) -> Result<Arc<File>, ReadFailure> {
        if let Some(file) = self.open_packs().get(&pack) {
            return Ok(file.clone());
        }
        let path = self.path(pack);
        match File::open(&path) {
            Ok(file) => {
                let file = Arc::new(file);
                self.open_packs().entry(pack).or_insert(file.clone());
                Ok(file)
            }
            Err(error) if error.kind() == ErrorKind::NotFound => Err(ReadFailure::PackGone),
            Err(source) => Err(ReadFailure::Io(pack_error(&path, source))),
        }
    }

    /// The packs reclaiming may look at, with their sizes: every closed
    /// pack without pending appends. No index entry naming one of them
    /// can appear from now on (appends go to the current pack only).
    pub(super) fn closed(&self) -> Result<HashMap<u32, u64>, CheckpointError> {
        let writer = self.writer();
        let mut closed = HashMap::new();
        for pack in list_packs(&self.shared.dir)? {
            if pack >= writer.pack || writer.pending.contains_key(&pack) {
                continue;
            }
            let path = self.path(pack);
            let size = std::fs::metadata(&path)
                .map_err(|source| pack_error(&path, source))?
                .len();
            closed.insert(pack, size);
        }
        Ok(closed)
    }

    /// Held by a reclaim from start to end.
    pub(super) fn reclaiming(&self) -> MutexGuard<'_, ()> {
        self.shared.reclaim.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `bytes` of bodies as freed; true (and the count starts over)
    /// once enough were freed for a reclaim to pay — or at once when the
    /// disk is short of room (less than a pack over what bulk writes leave
    /// free): a user who removes functions to make room gets it back.
    pub(super) fn note_dead(&self, bytes: u64) -> bool {
        let due = self.shared.pack_bytes / 2;
        let dead = self.shared.dead.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let short = bytes > 0 && self.shared.room.is_short_of(self.shared.pack_bytes);
        (dead >= due || short) && self.shared.dead.swap(0, Ordering::Relaxed) > 0
    }

    /// Claims room on the packs' disk for `bytes` about to be written
    /// unclaimed (live bodies a reclaim copies) or beside the packs.
    pub(super) fn claim(&self, bytes: u64) -> Result<(), CheckpointError> {
        Ok(self.shared.room.claim(bytes)?)
    }

    /// Closes the current pack if it holds anything, so that a reclaim can
    /// take it like any other (its appends go on in the next one).
    pub(super) fn close_current(&self) -> Result<(), CheckpointError> {
        let mut writer = self.writer();
        if writer.file.is_some() && writer.len > 0 {
            self.start_next(&mut writer)?;
        }
        Ok(())
    }

    /// Deletes closed packs.
    pub(super) fn remove(&self, packs: &HashSet<u32>) -> Result<(), CheckpointError> {
        for &pack in packs {
            self.open_packs().remove(&pack);
            let path = self.path(pack);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::NotFound => {}
                Err(source) => return Err(pack_error(&path, source)),
            }
        }
        Ok(())
    }

    /// The number of pack files.
    pub(super) fn count(&self) -> Result<usize, CheckpointError> {
        Ok(list_packs(&self.shared.dir)?.len())
    }
}

fn pack_name(pack: u32) -> String {
    format!("pack-{pack:08}")
}

/// The numbers of the packs in `dir`; other files are ignored.
fn list_packs(dir: &Path) -> Result<Vec<u32>, CheckpointError> {
    let entries = std::fs::read_dir(dir).map_err(|source| pack_error(dir, source))?;
    let mut packs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| pack_error(dir, source))?;
        let name = entry.file_name();
        if let Some(pack) = name
            .to_str()
            .and_then(|name| name.strip_prefix("pack-"))
            .and_then(|number| number.parse::<u32>().ok())
        {
            packs.push(pack);
        }
    }
    Ok(packs)
}

fn one_appended(mut appended: Vec<Appended>) -> Result<Appended, CheckpointError> {
    appended
        .pop()
        .ok_or_else(|| CheckpointError::corrupt("a chunk to store", "nothing was appended"))
}

fn pack_error(path: &Path, source: std::io::Error) -> CheckpointError {
    CheckpointError::Pack {
        path: path.to_owned(),
        source,
    }
}
