//! The directories a function was given (its preopens) and the rules every
//! filesystem call applies inside them.
//!
//! Each preopen is an [`Area`]: the function's private volume or a hub
//! resource it mounts. Every guest path is resolved beneath the area's
//! directory by cap-std (`openat2` with `RESOLVE_BENEATH` where the kernel
//! has it, its own component-by-component walk where not): `..`, absolute
//! paths and symlinks that lead out fail with `ENOTCAPABLE`, and nothing
//! here joins or inspects paths by hand. A read-only area refuses every
//! mutating call with `EROFS`; a volume's quota turns writes past it into
//! `ENOSPC` before the hub's disk is touched.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use ferry_migrator::checkpoint::room::{self, DiskRoom};

use super::abi::Errno;
use crate::runtime::guest::GuestMemory;

/// Longest path a call accepts, in bytes (Linux's `PATH_MAX`).
pub const PATH_MAX: u32 = 4096;

/// One directory a function gets as a preopen, as the hub lays it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreopenSpec {
    /// Where the guest sees it (`fd_prestat_dir_name`), e.g. `/data`.
    pub guest_path: String,
    pub host_path: PathBuf,
    pub writable: bool,
    /// Most bytes its regular files may hold together (a volume's quota).
    pub quota_bytes: Option<u64>,
    /// The function's private volume: its content is captured with the
    /// function, so the hub tracks what is written in it.
    pub volume: bool,
}

/// A preopened directory tree and what may be done in it.
#[derive(Debug)]
pub struct Area {
    pub guest_path: String,
    pub writable: bool,
    quota: Option<Quota>,
    /// Room on the data disk, for a volume: its files share the disk with
    /// the hub's database.
    disk: Option<std::sync::Arc<DiskRoom>>,
    root: Dir,
    /// What changed in a volume since each consumer's previous capture.
    tracker: Option<std::sync::Mutex<super::volume::VolumeTracker>>,
}

#[derive(Debug)]
struct Quota {
    limit: u64,
    /// Bytes of regular files, as the hub counted them (recounted from
    /// disk whenever a write would pass the limit).
    used: AtomicU64,
}

impl Area {
    /// Opens the area's directory (the only ambient path ever opened for a
    /// function) and counts what a quota'd area already holds.
    pub fn open(spec: &PreopenSpec) -> io::Result<(Area, Dir)> {
        let root = Dir::open_ambient_dir(&spec.host_path, ambient_authority())?;
        let quota = spec.quota_bytes.map(|limit| Quota {
            limit,
            used: AtomicU64::new(0),
        });
        let area = Area {
            guest_path: spec.guest_path.clone(),
            writable: spec.writable,
            quota,
            disk: spec
                .volume
                .then(|| DiskRoom::shared(&spec.host_path, room::KEEP_FREE_BYTES)),
            root: root.try_clone()?,
            tracker: spec.volume.then(Default::default),
        };
        if let Some(quota) = &area.quota {
            quota.used.store(usage(&area.root)?, Ordering::Relaxed);
        }
        Ok((area, root))
    }

    /// The area's root directory.
    pub fn root(&self) -> &Dir {
        &self.root
    }

    /// Whether this is the function's volume (captured with it).
    pub fn is_volume(&self) -> bool {
        self.tracker.is_some()
    }

    /// Records that bytes `start..end` of file `ino` changed (written,
    /// grown into, cut off), for the next capture of every consumer.
    pub fn changed(&self, ino: u64, start: u64, end: u64) {
        if let Some(tracker) = &self.tracker
            && start < end
        {
            tracker
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .changed(ino, start, end);
        }
    }

    /// The volume's tracker, locked (`None` for a mount).
    pub fn tracker(&self) -> Option<std::sync::MutexGuard<'_, super::volume::VolumeTracker>> {
        self.tracker
            .as_ref()
            .map(|tracker| tracker.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// `EROFS` unless the area takes changes.
    pub fn check_writable(&self) -> Result<(), Errno> {
        if self.writable { Ok(()) } else { Err(Errno::Rofs) }
    }

    /// Bytes the area's files hold, if it has a quota.
    pub fn used_bytes(&self) -> Option<u64> {
        self.quota.as_ref().map(|quota| quota.used.load(Ordering::Relaxed))
    }

    /// How many of `len` bytes written at `offset` into a file of
    /// `size_before` bytes fit the quota: all of them, the part that
    /// fits, or `ENOSPC` when not one byte more does. A volume's growth is
    /// also `ENOSPC` when it would leave the data disk less than the hub
    /// keeps free for its database.
    pub fn room_for(&self, size_before: u64, offset: u64, len: u64) -> Result<u64, Errno> {
        let fits = self.quota_room_for(size_before, offset, len)?;
        let growth = offset.saturating_add(fits).saturating_sub(size_before);
        if let Some(disk) = &self.disk
            && growth > 0
        {
            disk.claim(growth).map_err(|_| Errno::Nospc)?;
        }
        Ok(fits)
    }

    fn quota_room_for(&self, size_before: u64, offset: u64, len: u64) -> Result<u64, Errno> {
        let Some(quota) = &self.quota else {
            return Ok(len);
        };
        let growth = offset.saturating_add(len).saturating_sub(size_before);
        if growth == 0 {
            return Ok(len);
        }
        let mut used = quota.used.load(Ordering::Relaxed);
        if used.saturating_add(growth) > quota.limit {
            // The count may have drifted (hard links, files removed from
            // outside): recount before refusing.
            used = usage(&self.root).map_err(|error| errno_of(&error))?;
            quota.used.store(used, Ordering::Relaxed);
        }
        let room = quota.limit.saturating_sub(used);
        if growth <= room {
            return Ok(len);
        }
        // Only the part up to the quota: bytes over existing data are
        // free, a hole before `offset` counts.
        match size_before.saturating_add(room).saturating_sub(offset) {
            0 => Err(Errno::Nospc),
            fits => Ok(fits.min(len)),
        }
    }

    /// Records that a file grew from `size_before` to `size_after` bytes
    /// (or shrank, when `size_after` is smaller).
    pub fn resized(&self, size_before: u64, size_after: u64) {
        let Some(quota) = &self.quota else {
            return;
        };
        if size_after >= size_before {
            quota.used.fetch_add(size_after - size_before, Ordering::Relaxed);
        } else {
            let freed = size_before - size_after;
            let _ = quota.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(freed))
            });
        }
    }
}

/// Bytes of the regular files under `dir`, counted once per inode. An
/// entry removed or renamed away between the listing and its look (someone
/// on the host changing the directory meanwhile) is not there to count:
/// that is no error.
pub fn usage(dir: &Dir) -> io::Result<u64> {
    fn gone<T>(result: io::Result<T>) -> io::Result<Option<T>> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut pending = vec![dir.try_clone()?];
    while let Some(dir) = pending.pop() {
        for entry in dir.entries()? {
            let Some(entry) = gone(entry)? else { continue };
            let Some(file_type) = gone(entry.file_type())? else {
                continue;
            };
            if file_type.is_dir() {
                pending.extend(gone(entry.open_dir())?);
            } else if file_type.is_file()
                && let Some(metadata) = gone(entry.metadata())?
                && seen.insert(cap_fs_ext::MetadataExt::ino(&metadata))
            {
                total = total.saturating_add(metadata.len());
            }
        }
    }
    Ok(total)
}

/// The errno a guest expects for a host error. cap-std reports a path that
/// would lead outside the area as `PermissionDenied` without an OS code:
/// that is `ENOTCAPABLE`.
pub fn errno_of(error: &io::Error) -> Errno {
    if let Some(code) = error.raw_os_error() {
        return match code {
            libc::EACCES => Errno::Acces,
            libc::EAGAIN => Errno::Again,
            libc::EBADF => Errno::Badf,
            libc::EBUSY => Errno::Busy,
            libc::EEXIST => Errno::Exist,
            libc::EFBIG => Errno::Fbig,
            libc::EILSEQ => Errno::Ilseq,
            libc::EINTR => Errno::Intr,
            libc::EINVAL => Errno::Inval,
            libc::EISDIR => Errno::Isdir,
            libc::ELOOP => Errno::Loop,
            libc::EMFILE | libc::ENFILE => Errno::Mfile,
            libc::EMLINK => Errno::Mlink,
            libc::ENAMETOOLONG => Errno::Nametoolong,
            libc::ENOENT => Errno::Noent,
            libc::ENOMEM => Errno::Nomem,
            libc::ENOSPC | libc::EDQUOT => Errno::Nospc,
            libc::ENOTDIR => Errno::Notdir,
            libc::ENOTEMPTY => Errno::Notempty,
            libc::EOPNOTSUPP => Errno::Notsup,
            libc::EOVERFLOW => Errno::Overflow,
            libc::EPERM => Errno::Perm,
            libc::EROFS => Errno::Rofs,
            libc::ESPIPE => Errno::Spipe,
            libc::ETXTBSY => Errno::Txtbsy,
            libc::EXDEV => Errno::Xdev,
            _ => Errno::Io,
        };
    }
    match error.kind() {
        io::ErrorKind::NotFound => Errno::Noent,
        io::ErrorKind::PermissionDenied => Errno::Notcapable,
        io::ErrorKind::AlreadyExists => Errno::Exist,
        io::ErrorKind::InvalidInput => Errno::Inval,
        io::ErrorKind::NotADirectory => Errno::Notdir,
        io::ErrorKind::IsADirectory => Errno::Isdir,
        io::ErrorKind::DirectoryNotEmpty => Errno::Notempty,
        io::ErrorKind::StorageFull => Errno::Nospc,
        io::ErrorKind::Unsupported => Errno::Notsup,
        _ => Errno::Io,
    }
}

/// Converts a host result for a guest.
pub fn host<T>(result: io::Result<T>) -> Result<T, Errno> {
    result.map_err(|error| errno_of(&error))
}

/// The path a call names: inside memory (`EFAULT`), at most [`PATH_MAX`]
/// bytes (`ENAMETOOLONG`), UTF-8 (`EILSEQ`), without NUL (`EINVAL`), not
/// empty (`ENOENT`). Whether it stays inside its area is cap-std's to say.
pub fn read_path(memory: &GuestMemory<'_>, ptr: u32, len: u32) -> Result<String, Errno> {
    if len > PATH_MAX {
        return Err(Errno::Nametoolong);
    }
    let bytes = memory.read_bytes(ptr, len)?;
    let path = String::from_utf8(bytes).map_err(|_| Errno::Ilseq)?;
    if path.contains('\0') {
        return Err(Errno::Inval);
    }
    if path.is_empty() {
        return Err(Errno::Noent);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(dir: &std::path::Path, quota: Option<u64>) -> Area {
        Area::open(&PreopenSpec {
            guest_path: "/data".to_owned(),
            host_path: dir.to_owned(),
            writable: true,
            quota_bytes: quota,
            volume: false,
        })
        .unwrap()
        .0
    }

    #[test]
    fn a_quota_counts_the_files_already_there_once_per_inode() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1; 1000]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b"), vec![1; 500]).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("sub/a2")).unwrap();
        assert_eq!(area(dir.path(), Some(10_000)).used_bytes(), Some(1500));
        assert_eq!(area(dir.path(), None).used_bytes(), None);
    }

    #[test]
    fn a_write_past_the_quota_gets_the_part_that_fits_then_enospc() {
        let dir = tempfile::tempdir().unwrap();
        let area = area(dir.path(), Some(100));
        let file = dir.path().join("f");
        assert_eq!(area.room_for(0, 0, 60), Ok(60));
        std::fs::write(&file, [1; 60]).unwrap();
        area.resized(0, 60);
        // Overwriting existing bytes is free; growing by 50 fits 40.
        assert_eq!(area.room_for(60, 0, 60), Ok(60));
        assert_eq!(area.room_for(60, 60, 50), Ok(40));
        std::fs::write(&file, [1; 100]).unwrap();
        area.resized(60, 100);
        assert_eq!(area.room_for(100, 100, 1), Err(Errno::Nospc));
        // A write far past the end counts the hole too.
        std::fs::write(&file, []).unwrap();
        area.resized(100, 0);
        assert_eq!(area.room_for(0, 200, 1), Err(Errno::Nospc));
        assert_eq!(area.room_for(0, 90, 20), Ok(10));
    }

    #[test]
    fn a_drifted_count_is_corrected_from_disk_before_refusing() {
        let dir = tempfile::tempdir().unwrap();
        let area = area(dir.path(), Some(100));
        area.resized(0, 100); // counted, never written
        assert_eq!(area.room_for(0, 0, 50), Ok(50));
        assert_eq!(area.used_bytes(), Some(0));
    }

    #[test]
    fn host_errors_map_to_the_errno_a_guest_expects() {
        let escape = io::Error::new(io::ErrorKind::PermissionDenied, "a path led outside of the filesystem");
        assert_eq!(errno_of(&escape), Errno::Notcapable);
        assert_eq!(errno_of(&io::Error::from_raw_os_error(libc::ENOENT)), Errno::Noent);
        assert_eq!(errno_of(&io::Error::from_raw_os_error(libc::EDQUOT)), Errno::Nospc);
        assert_eq!(errno_of(&io::Error::from_raw_os_error(libc::EXDEV)), Errno::Xdev);
        assert_eq!(
            errno_of(&io::Error::from_raw_os_error(libc::ENOTEMPTY)),
            Errno::Notempty
        );
    }
}
