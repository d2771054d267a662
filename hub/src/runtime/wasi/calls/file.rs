//! Calls only files and directories take: positioned I/O, `fd_tell`,
//! `fd_filestat_*`, `fd_readdir`, `fd_sync`/`fd_datasync`, `fd_advise`,
//! `fd_allocate`, `fd_fdstat_set_flags` and `fd_renumber`.

use std::io::Seek;

use cap_std::fs::{Metadata, MetadataExt};
use rustix::fs::{DirEntryExt, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT};
use wasmer::RuntimeError;

use super::super::abi::{
    ADVICE_NOREUSE, DIRENT_SIZE, Errno, FDFLAG_APPEND, FDFLAG_DSYNC, FDFLAG_NONBLOCK, FDFLAG_RSYNC, FDFLAG_SYNC,
    FILESTAT_SIZE, FILETYPE_BLOCK_DEVICE, FILETYPE_CHARACTER_DEVICE, FILETYPE_DIRECTORY, FILETYPE_REGULAR_FILE,
    FILETYPE_SOCKET_STREAM, FILETYPE_SYMBOLIC_LINK, FILETYPE_UNKNOWN, FSTFLAG_ATIM, FSTFLAG_ATIM_NOW, FSTFLAG_MTIM,
    FSTFLAG_MTIM_NOW, errno,
};
use super::super::fds::{Descriptor, FileFd};
use super::super::files::{self, host};
use super::Env;
use super::fd::{Iovec, iovecs, read_file, seekable, write_file};
use crate::runtime::guest::{GuestMemory, with_memory};

/// The I/O of [`positioned`]: `read_file` or `write_file`.
type FileIo = fn(&GuestMemory<'_>, &FileFd, &[Iovec], Option<u64>) -> Result<u64, Errno>;

/// `fd_pread` or `fd_pwrite`: I/O at `offset`, leaving the position be.
fn positioned(
    env: &mut Env<'_>,
    (fd, iovs, iovs_len, offset, count_out): (i32, i32, i32, i64, i32),
    io: FileIo,
) -> Result<i32, RuntimeError> {
    with_memory(env, |guest, memory| {
        errno((|| {
            let file = guest.fds.get(fd as u32)?.file()?;
            let offset = u64::try_from(offset).map_err(|_| Errno::Inval)?;
            let iovecs = iovecs(memory, iovs as u32, iovs_len as u32)?;
            memory.check(count_out as u32, 4)?;
            let count = io(memory, file, &iovecs, Some(offset))?;
            Ok(memory.write_u32(count_out as u32, count as u32)?)
        })())
    })
}

pub fn fd_pread(
    mut env: Env<'_>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    offset: i64,
    nread: i32,
) -> Result<i32, RuntimeError> {
    positioned(&mut env, (fd, iovs, iovs_len, offset, nread), read_file)
}

pub fn fd_pwrite(
    mut env: Env<'_>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    offset: i64,
    nwritten: i32,
) -> Result<i32, RuntimeError> {
    positioned(&mut env, (fd, iovs, iovs_len, offset, nwritten), write_file)
}

pub fn fd_tell(mut env: Env<'_>, fd: i32, offset: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno((|| {
            let file = seekable(guest.fds.get(fd as u32)?)?;
            memory.check(offset as u32, 8)?;
            let position = host((&file.file).stream_position())?;
            Ok(memory.write_u64(offset as u32, position)?)
        })())
    })
}

/// The WASI `filetype` of host metadata.
pub(super) fn filetype(metadata: &Metadata) -> u8 {
    use cap_std::fs::FileTypeExt;
    let file_type = metadata.file_type();
    if file_type.is_file() {
        FILETYPE_REGULAR_FILE
    } else if file_type.is_dir() {
        FILETYPE_DIRECTORY
    } else if file_type.is_symlink() {
        FILETYPE_SYMBOLIC_LINK
    } else if file_type.is_block_device() {
        FILETYPE_BLOCK_DEVICE
    } else if file_type.is_char_device() {
        FILETYPE_CHARACTER_DEVICE
    } else if file_type.is_socket() {
        FILETYPE_SOCKET_STREAM
    } else {
        FILETYPE_UNKNOWN
    }
}

/// A `filestat` record of host metadata.
pub(super) fn filestat(metadata: &Metadata) -> [u8; FILESTAT_SIZE] {
    let nanos = |seconds: i64, nanos: i64| (seconds.max(0) as u64).saturating_mul(1_000_000_000) + nanos.max(0) as u64;
    let mut record = [0u8; FILESTAT_SIZE];
    record[0..8].copy_from_slice(&metadata.dev().to_le_bytes());
    record[8..16].copy_from_slice(&metadata.ino().to_le_bytes());
    record[16] = filetype(metadata);
    record[24..32].copy_from_slice(&metadata.nlink().to_le_bytes());
    record[32..40].copy_from_slice(&metadata.len().to_le_bytes());
    record[40..48].copy_from_slice(&nanos(metadata.atime(), metadata.atime_nsec()).to_le_bytes());
    record[48..56].copy_from_slice(&nanos(metadata.mtime(), metadata.mtime_nsec()).to_le_bytes());
    record[56..64].copy_from_slice(&nanos(metadata.ctime(), metadata.ctime_nsec()).to_le_bytes());
    record
}

pub fn fd_filestat_get(mut env: Env<'_>, fd: i32, buf: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno((|| {
            let metadata = match guest.fds.get(fd as u32)? {
                Descriptor::File(file) => host(file.file.metadata())?,
                Descriptor::Dir(dir) => host(dir.dir.dir_metadata())?,
                _ => {
                    let mut record = [0u8; FILESTAT_SIZE];
                    record[16] = FILETYPE_CHARACTER_DEVICE;
                    return Ok(memory.write_bytes(buf as u32, &record)?);
                }
            };
            Ok(memory.write_bytes(buf as u32, &filestat(&metadata))?)
        })())
    })
}

/// A file opened for writing in a writable area, or the errno.
fn writable_file(descriptor: &Descriptor) -> Result<&FileFd, Errno> {
    let file = descriptor.file()?;
    file.area.check_writable()?;
    if !file.write {
        return Err(Errno::Badf);
    }
    Ok(file)
}

/// Sets the file's size to `size` if the quota lets it grow that far.
fn resize(file: &FileFd, size: u64, only_grow: bool) -> Result<(), Errno> {
    let before = host(file.file.metadata())?.len();
    if only_grow && size <= before {
        return Ok(());
    }
    if size > before && file.area.room_for(before, before, size - before)? < size - before {
        return Err(Errno::Nospc);
    }
    host(file.file.set_len(size))?;
    file.area.resized(before, size);
    file.area.changed(file.ino, before.min(size), before.max(size));
    Ok(())
}

pub fn fd_filestat_set_size(env: Env<'_>, fd: i32, size: i64) -> i32 {
    errno((|| {
        let file = writable_file(env.data().fds.get(fd as u32)?)?;
        resize(file, u64::try_from(size).map_err(|_| Errno::Inval)?, false)
    })())
}

pub fn fd_allocate(env: Env<'_>, fd: i32, offset: i64, len: i64) -> i32 {
    errno((|| {
        let file = writable_file(env.data().fds.get(fd as u32)?)?;
        let (offset, len) = (u64::try_from(offset), u64::try_from(len));
        let end = match (offset, len) {
            (Ok(offset), Ok(len)) if len > 0 => offset.checked_add(len).ok_or(Errno::Fbig)?,
            _ => return Err(Errno::Inval),
        };
        resize(file, end, true)
    })())
}

/// The access and modification times of a `*_set_times` call.
pub(super) fn time_specs(atim: i64, mtim: i64, flags: i32) -> Result<(Timespec, Timespec), Errno> {
    let flags = u16::try_from(flags).map_err(|_| Errno::Inval)?;
    if flags & !(FSTFLAG_ATIM | FSTFLAG_ATIM_NOW | FSTFLAG_MTIM | FSTFLAG_MTIM_NOW) != 0 {
        return Err(Errno::Inval);
    }
    let one = |time: i64, set: u16, now: u16| -> Result<Timespec, Errno> {
        match (flags & set != 0, flags & now != 0) {
            (true, true) => Err(Errno::Inval),
            (true, false) => {
                let nanos = time as u64;
                Ok(Timespec {
                    tv_sec: (nanos / 1_000_000_000) as i64,
                    tv_nsec: (nanos % 1_000_000_000) as _,
                })
            }
            (false, true) => Ok(Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_NOW as _,
            }),
            (false, false) => Ok(Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_OMIT as _,
            }),
        }
    };
    Ok((
        one(atim, FSTFLAG_ATIM, FSTFLAG_ATIM_NOW)?,
        one(mtim, FSTFLAG_MTIM, FSTFLAG_MTIM_NOW)?,
    ))
}

pub fn fd_filestat_set_times(env: Env<'_>, fd: i32, atim: i64, mtim: i64, flags: i32) -> i32 {
    errno((|| {
        let (last_access, last_modification) = time_specs(atim, mtim, flags)?;
        let times = Timestamps {
            last_access,
            last_modification,
        };
        match env.data().fds.get(fd as u32)? {
            Descriptor::File(file) => {
                file.area.check_writable()?;
                host(rustix::fs::futimens(&file.file, &times).map_err(Into::into))
            }
            Descriptor::Dir(dir) => {
                dir.area.check_writable()?;
                host(rustix::fs::futimens(&dir.dir, &times).map_err(Into::into))
            }
            _ => Err(Errno::Badf),
        }
    })())
}

/// `fd_readdir(fd, buf, buf_len, cookie, bufused)`: entries from the
/// `cookie`-th on (`.` and `..` first, then the directory's own in the
/// host's order), each a `dirent` header and its name, cut off where
/// `buf_len` ends, as the ABI wants.
pub fn fd_readdir(
    mut env: Env<'_>,
    fd: i32,
    buf: i32,
    buf_len: i32,
    cookie: i64,
    bufused: i32,
) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno((|| {
            let dir = guest.fds.get(fd as u32)?.dir()?;
            let (buf, buf_len) = (buf as u32, buf_len as u32);
            memory.check(buf, u64::from(buf_len))?;
            memory.check(bufused as u32, 4)?;
            let own = host(dir.dir.dir_metadata())?;
            let mut entries = vec![
                (own.ino(), FILETYPE_DIRECTORY, ".".to_owned()),
                (0, FILETYPE_DIRECTORY, "..".to_owned()),
            ];
            for entry in host(dir.dir.entries())? {
                let entry = host(entry)?;
                let file_type = host(entry.file_type())?;
                let kind = if file_type.is_dir() {
                    FILETYPE_DIRECTORY
                } else if file_type.is_file() {
                    FILETYPE_REGULAR_FILE
                } else if file_type.is_symlink() {
                    FILETYPE_SYMBOLIC_LINK
                } else {
                    FILETYPE_UNKNOWN
                };
                // A name that is not UTF-8 cannot be given to a WASI guest.
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                entries.push((entry.ino(), kind, name));
            }
            // Grows with the listing, never to what the guest names.
            let mut out = Vec::new();
            let skip = usize::try_from(cookie as u64).unwrap_or(usize::MAX);
            for (index, (ino, kind, name)) in entries.into_iter().enumerate().skip(skip) {
                if out.len() >= buf_len as usize {
                    break;
                }
                let mut header = [0u8; DIRENT_SIZE];
                header[0..8].copy_from_slice(&(index as u64 + 1).to_le_bytes());
                header[8..16].copy_from_slice(&ino.to_le_bytes());
                header[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
                header[20] = kind;
                out.extend_from_slice(&header);
                out.extend_from_slice(name.as_bytes());
            }
            out.truncate(buf_len as usize);
            memory.write_bytes(buf, &out)?;
            Ok(memory.write_u32(bufused as u32, out.len() as u32)?)
        })())
    })
}

pub fn fd_sync(env: Env<'_>, fd: i32) -> i32 {
    errno(match env.data().fds.get(fd as u32) {
        Ok(Descriptor::File(file)) => host(file.file.sync_all()),
        Ok(Descriptor::Dir(dir)) => sync_dir(&dir.dir),
        Ok(_) => Err(Errno::Inval),
        Err(error) => Err(error),
    })
}

/// Syncs a directory's entries. cap-std holds directories as `O_PATH`
/// descriptors, which cannot be synced: `.` beneath it is opened for
/// reading (it names the directory itself, never anything outside).
fn sync_dir(dir: &cap_std::fs::Dir) -> Result<(), Errno> {
    use rustix::fs::{Mode, OFlags};
    let readable = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|error| files::errno_of(&error.into()))?;
    rustix::fs::fsync(&readable).map_err(|error| files::errno_of(&error.into()))
}

pub fn fd_datasync(env: Env<'_>, fd: i32) -> i32 {
    errno(match env.data().fds.get(fd as u32) {
        Ok(Descriptor::File(file)) if file.write => host(file.file.sync_data()),
        Ok(Descriptor::File(_)) => Err(Errno::Badf),
        Ok(Descriptor::Dir(dir)) => sync_dir(&dir.dir),
        Ok(_) => Err(Errno::Inval),
        Err(error) => Err(error),
    })
}

/// Advice is checked and taken as a hint the hub does not need.
pub fn fd_advise(env: Env<'_>, fd: i32, offset: i64, len: i64, advice: i32) -> i32 {
    errno((|| {
        env.data().fds.get(fd as u32)?.file()?;
        if offset < 0 || len < 0 || !(0..=i32::from(ADVICE_NOREUSE)).contains(&advice) {
            return Err(Errno::Inval);
        }
        Ok(())
    })())
}

/// Only `APPEND` can be changed; `NONBLOCK` is accepted (files never
/// block for long); the sync flags cannot be set after the open.
pub fn fd_fdstat_set_flags(mut env: Env<'_>, fd: i32, flags: i32) -> i32 {
    errno((|| {
        let flags = u16::try_from(flags).map_err(|_| Errno::Inval)?;
        match env.data_mut().fds.get_mut(fd as u32)? {
            Descriptor::File(file) => {
                if flags & (FDFLAG_DSYNC | FDFLAG_RSYNC | FDFLAG_SYNC) != 0 {
                    return Err(Errno::Notsup);
                }
                if flags & !(FDFLAG_APPEND | FDFLAG_NONBLOCK) != 0 {
                    return Err(Errno::Inval);
                }
                let append = flags & FDFLAG_APPEND != 0;
                if append && !file.append {
                    file.area.check_writable()?;
                }
                let mut options = rustix::fs::fcntl_getfl(&file.file).map_err(|_| Errno::Io)?;
                options.set(rustix::fs::OFlags::APPEND, append);
                rustix::fs::fcntl_setfl(&file.file, options).map_err(|_| Errno::Io)?;
                file.append = append;
                Ok(())
            }
            Descriptor::Dir(_) if flags & !FDFLAG_NONBLOCK == 0 => Ok(()),
            Descriptor::Dir(_) => Err(Errno::Notsup),
            // stdio: the flags the hub honours are none; accept nonblock.
            _ if flags & !FDFLAG_NONBLOCK == 0 => Ok(()),
            _ => Err(Errno::Notsup),
        }
    })())
}

pub fn fd_renumber(mut env: Env<'_>, from: i32, to: i32) -> i32 {
    errno(env.data_mut().fds.renumber(from as u32, to as u32))
}
