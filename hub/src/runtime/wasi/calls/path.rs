//! Calls that name a path beneath a directory descriptor: `path_open`,
//! `path_filestat_*`, `path_create_directory`, `path_remove_directory`,
//! `path_unlink_file`, `path_rename`, `path_symlink`, `path_readlink`,
//! `path_link`.
//!
//! Every path goes to cap-std relative to the descriptor's directory, which
//! resolves it beneath that directory or fails (`ENOTCAPABLE`): no call
//! here looks at `..`, `/` or symlink targets itself. Calls that change
//! anything check the area first (`EROFS` in a read-only mount); renames
//! and links between two areas are `EXDEV`, as between two filesystems.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt, OpenOptionsMaybeDirExt, SystemTimeSpec};
use cap_std::fs::{Dir, MetadataExt, OpenOptions, OpenOptionsExt};
use wasmer::RuntimeError;

use super::super::abi::{
    Errno, FDFLAG_APPEND, FDFLAG_DSYNC, FDFLAG_NONBLOCK, FDFLAG_RSYNC, FDFLAG_SYNC, FSTFLAG_ATIM, FSTFLAG_ATIM_NOW,
    FSTFLAG_MTIM, FSTFLAG_MTIM_NOW, LOOKUPFLAG_SYMLINK_FOLLOW, OFLAG_CREAT, OFLAG_DIRECTORY, OFLAG_EXCL, OFLAG_TRUNC,
    RIGHT_FD_ALLOCATE, RIGHT_FD_DATASYNC, RIGHT_FD_FILESTAT_SET_SIZE, RIGHT_FD_READ, RIGHT_FD_READDIR, RIGHT_FD_WRITE,
    errno,
};
use super::super::fds::{Descriptor, DirFd, FileFd};
use super::super::files::{Area, host, read_path};
use super::Env;
use super::file::filestat;
use crate::runtime::guest::{GuestEnv, with_memory};

/// The directory `fd` names and its area.
fn directory(guest: &GuestEnv, fd: i32) -> Result<(&Dir, &Arc<Area>), Errno> {
    let dir = guest.fds.get(fd as u32)?.dir()?;
    Ok((&dir.dir, &dir.area))
}

/// Rights that only a descriptor that writes needs.
const WRITE_RIGHTS: u64 = RIGHT_FD_WRITE | RIGHT_FD_ALLOCATE | RIGHT_FD_FILESTAT_SET_SIZE | RIGHT_FD_DATASYNC;

/// What a `path_open` asks for, from its flags and rights.
struct OpenRequest {
    follow: bool,
    create: bool,
    exclusive: bool,
    truncate: bool,
    directory: bool,
    read: bool,
    write: bool,
    append: bool,
    sync_flags: i32,
}

impl OpenRequest {
    fn parse(dirflags: i32, oflags: i32, rights: i64, fdflags: i32) -> Result<OpenRequest, Errno> {
        let oflags = u16::try_from(oflags).map_err(|_| Errno::Inval)?;
        let fdflags = u16::try_from(fdflags).map_err(|_| Errno::Inval)?;
        if oflags & !(OFLAG_CREAT | OFLAG_DIRECTORY | OFLAG_EXCL | OFLAG_TRUNC) != 0
            || fdflags & !(FDFLAG_APPEND | FDFLAG_DSYNC | FDFLAG_NONBLOCK | FDFLAG_RSYNC | FDFLAG_SYNC) != 0
        {
            return Err(Errno::Inval);
        }
        let rights = rights as u64;
        let mut sync_flags = 0;
        if fdflags & FDFLAG_DSYNC != 0 {
            sync_flags |= libc::O_DSYNC;
        }
        if fdflags & (FDFLAG_SYNC | FDFLAG_RSYNC) != 0 {
            sync_flags |= libc::O_SYNC;
        }
        let request = OpenRequest {
            follow: dirflags as u32 & LOOKUPFLAG_SYMLINK_FOLLOW != 0,
            create: oflags & OFLAG_CREAT != 0,
            exclusive: oflags & OFLAG_EXCL != 0,
            truncate: oflags & OFLAG_TRUNC != 0,
            directory: oflags & OFLAG_DIRECTORY != 0,
            read: rights & (RIGHT_FD_READ | RIGHT_FD_READDIR) != 0,
            write: rights & WRITE_RIGHTS != 0,
            append: fdflags & FDFLAG_APPEND != 0,
            sync_flags,
        };
        if request.directory && (request.create || request.truncate || request.write) {
            return Err(Errno::Inval);
        }
        Ok(request)
    }

    /// Whether the open would change anything.
    fn mutates(&self) -> bool {
        self.create || self.truncate || self.write || self.append || self.sync_flags != 0
    }
}

#[allow(clippy::too_many_arguments)]
pub fn path_open(
    mut env: Env<'_>,
    fd: i32,
    dirflags: i32,
    path: i32,
    path_len: i32,
    oflags: i32,
    rights_base: i64,
    _rights_inheriting: i64,
    fdflags: i32,
    opened: i32,
) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno((|| {
            let (dir, area) = directory(guest, fd)?;
            let request = OpenRequest::parse(dirflags, oflags, rights_base, fdflags)?;
            let path = read_path(memory, path as u32, path_len as u32)?;
            let beneath = join_beneath(&guest.fds.get(fd as u32)?.dir()?.path, &path);
            memory.check(opened as u32, 4)?;
            let area = Arc::clone(area);
            if request.mutates() {
                area.check_writable()?;
            }
            let follow = if request.follow {
                FollowSymlinks::Yes
            } else {
                FollowSymlinks::No
            };
            let descriptor = if request.directory {
                let opened = match follow {
                    FollowSymlinks::Yes => dir.open_dir(&path),
                    FollowSymlinks::No => dir.open_dir_nofollow(&path),
                };
                Descriptor::Dir(DirFd {
                    dir: host(opened)?,
                    area,
                    preopen: false,
                    path: beneath,
                })
            } else {
                open_file(dir, &path, beneath, &request, follow, area)?
            };
            let number = guest.fds.insert(descriptor)?;
            Ok(memory.write_u32(opened as u32, number)?)
        })())
    })
}

/// Opens a non-directory (or a directory asked for without
/// `O_DIRECTORY`, which becomes a directory descriptor).
fn open_file(
    dir: &Dir,
    path: &str,
    beneath: String,
    request: &OpenRequest,
    follow: FollowSymlinks,
    area: Arc<Area>,
) -> Result<Descriptor, Errno> {
    let write = request.write || request.append || request.truncate;
    let mut options = OpenOptions::new();
    options
        .read(request.read || !write)
        .write(write && !request.append)
        .append(request.append)
        .create(request.create && !request.exclusive)
        .create_new(request.create && request.exclusive)
        .follow(follow)
        .maybe_dir(!write)
        .custom_flags(request.sync_flags);
    // Truncating through the quota'd volume must learn what it frees.
    let truncate_here = request.truncate && area.used_bytes().is_some();
    options.truncate(request.truncate && !truncate_here);
    let file = host(dir.open_with(path, &options))?;
    let metadata = host(file.metadata())?;
    if metadata.is_dir() {
        if write {
            return Err(Errno::Isdir);
        }
        return Ok(Descriptor::Dir(DirFd {
            dir: Dir::from_std_file(file.into_std()),
            area,
            preopen: false,
            path: beneath,
        }));
    }
    if truncate_here && metadata.len() > 0 {
        host(file.set_len(0))?;
        area.resized(metadata.len(), 0);
        area.changed(metadata.ino(), 0, metadata.len());
    }
    Ok(Descriptor::File(FileFd {
        file,
        area,
        read: request.read || !write,
        write,
        append: request.append,
        path: beneath,
        ino: metadata.ino(),
    }))
}

/// `path` opened beneath the directory at `base` (both beneath an area's
/// root), as one normalised path: what a restore opens again in a mount.
/// Textual: `..` after a symlink may name another file than the open did.
fn join_beneath(base: &str, path: &str) -> String {
    let mut parts: Vec<&str> = base.split('/').filter(|part| !part.is_empty()).collect();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

pub fn path_filestat_get(
    mut env: Env<'_>,
    fd: i32,
    flags: i32,
    path: i32,
    path_len: i32,
    buf: i32,
) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno((|| {
            let path = read_path(memory, path as u32, path_len as u32)?;
            let (dir, _) = directory(guest, fd)?;
            let metadata = if flags as u32 & LOOKUPFLAG_SYMLINK_FOLLOW != 0 {
                host(dir.metadata(&path))?
            } else {
                host(dir.symlink_metadata(&path))?
            };
            Ok(memory.write_bytes(buf as u32, &filestat(&metadata))?)
        })())
    })
}

/// A time of a `path_filestat_set_times` call, as cap-std takes it.
fn time_spec(time: i64, flags: u16, set: u16, now: u16) -> Result<Option<SystemTimeSpec>, Errno> {
    match (flags & set != 0, flags & now != 0) {
        (true, true) => Err(Errno::Inval),
        (true, false) => {
            let time = SystemTime::UNIX_EPOCH + Duration::from_nanos(time as u64);
            Ok(Some(SystemTimeSpec::Absolute(cap_std::time::SystemTime::from_std(
                time,
            ))))
        }
        (false, true) => Ok(Some(SystemTimeSpec::SymbolicNow)),
        (false, false) => Ok(None),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn path_filestat_set_times(
    mut env: Env<'_>,
    fd: i32,
    flags: i32,
    path: i32,
    path_len: i32,
    atim: i64,
    mtim: i64,
    fst_flags: i32,
) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno((|| {
            let fst = u16::try_from(fst_flags).map_err(|_| Errno::Inval)?;
            if fst & !(FSTFLAG_ATIM | FSTFLAG_ATIM_NOW | FSTFLAG_MTIM | FSTFLAG_MTIM_NOW) != 0 {
                return Err(Errno::Inval);
            }
            let atime = time_spec(atim, fst, FSTFLAG_ATIM, FSTFLAG_ATIM_NOW)?;
            let mtime = time_spec(mtim, fst, FSTFLAG_MTIM, FSTFLAG_MTIM_NOW)?;
            let path = read_path(memory, path as u32, path_len as u32)?;
            let (dir, area) = directory(guest, fd)?;
            area.check_writable()?;
            if flags as u32 & LOOKUPFLAG_SYMLINK_FOLLOW != 0 {
                host(dir.set_times(&path, atime, mtime))
            } else {
                host(dir.set_symlink_times(&path, atime, mtime))
            }
        })())
    })
}

/// Runs a call that changes one path beneath `fd`'s directory.
fn change_path(
    env: &mut Env<'_>,
    fd: i32,
    path: i32,
    path_len: i32,
    change: impl FnOnce(&Dir, &Area, &str) -> Result<(), Errno>,
) -> Result<i32, RuntimeError> {
    with_memory(env, |guest, memory| {
        errno((|| {
            let path = read_path(memory, path as u32, path_len as u32)?;
            let (dir, area) = directory(guest, fd)?;
            area.check_writable()?;
            change(dir, area, &path)
        })())
    })
}

pub fn path_create_directory(mut env: Env<'_>, fd: i32, path: i32, path_len: i32) -> Result<i32, RuntimeError> {
    change_path(&mut env, fd, path, path_len, |dir, _, path| host(dir.create_dir(path)))
}

pub fn path_remove_directory(mut env: Env<'_>, fd: i32, path: i32, path_len: i32) -> Result<i32, RuntimeError> {
    change_path(&mut env, fd, path, path_len, |dir, _, path| host(dir.remove_dir(path)))
}

/// Bytes removing the last name of `path` frees: a regular file's size
/// when this is its only link.
fn freed_by_removing(dir: &Dir, path: &str) -> u64 {
    use cap_std::fs::MetadataExt;
    match dir.symlink_metadata(path) {
        Ok(metadata) if metadata.is_file() && metadata.nlink() == 1 => metadata.len(),
        _ => 0,
    }
}

pub fn path_unlink_file(mut env: Env<'_>, fd: i32, path: i32, path_len: i32) -> Result<i32, RuntimeError> {
    change_path(&mut env, fd, path, path_len, |dir, area, path| {
        let freed = freed_by_removing(dir, path);
        host(dir.remove_file(path))?;
        area.resized(freed, 0);
        Ok(())
    })
}

/// The two directories of a rename or link, which must be in one area.
fn same_area(guest: &GuestEnv, from: i32, to: i32) -> Result<(&Dir, &Dir, &Arc<Area>), Errno> {
    let (from_dir, from_area) = directory(guest, from)?;
    let (to_dir, to_area) = directory(guest, to)?;
    if !Arc::ptr_eq(from_area, to_area) {
        return Err(Errno::Xdev);
    }
    from_area.check_writable()?;
    Ok((from_dir, to_dir, from_area))
}

/// Runs a rename or link: two paths, beneath two directories of one area.
#[allow(clippy::too_many_arguments)]
fn between_two_paths(
    env: &mut Env<'_>,
    from_fd: i32,
    old_path: i32,
    old_len: i32,
    to_fd: i32,
    new_path: i32,
    new_len: i32,
    change: impl FnOnce(&Dir, &str, &Dir, &str, &Area) -> Result<(), Errno>,
) -> Result<i32, RuntimeError> {
    with_memory(env, |guest, memory| {
        errno((|| {
            let old_path = read_path(memory, old_path as u32, old_len as u32)?;
            let new_path = read_path(memory, new_path as u32, new_len as u32)?;
            let (from, to, area) = same_area(guest, from_fd, to_fd)?;
            change(from, &old_path, to, &new_path, area)
        })())
    })
}

pub fn path_rename(
    mut env: Env<'_>,
    fd: i32,
    old_path: i32,
    old_len: i32,
    new_fd: i32,
    new_path: i32,
    new_len: i32,
) -> Result<i32, RuntimeError> {
    between_two_paths(
        &mut env,
        fd,
        old_path,
        old_len,
        new_fd,
        new_path,
        new_len,
        |from, old, to, new, area| {
            let freed = freed_by_removing(to, new);
            host(from.rename(old, to, new))?;
            area.resized(freed, 0);
            Ok(())
        },
    )
}

/// `path_link`. The source's last component is never followed: a link to
/// a symlink links the symlink, which leads nowhere outside either. In a
/// volume it is `EPERM`, as on a filesystem without hard links: a
/// checkpoint keeps a volume's files by name, and a restore would bring
/// two names of one file back as two files (a write through one no longer
/// seen through the other), so a move would change what the program sees.
#[allow(clippy::too_many_arguments)]
pub fn path_link(
    mut env: Env<'_>,
    old_fd: i32,
    _old_flags: i32,
    old_path: i32,
    old_len: i32,
    new_fd: i32,
    new_path: i32,
    new_len: i32,
) -> Result<i32, RuntimeError> {
    between_two_paths(
        &mut env,
        old_fd,
        old_path,
        old_len,
        new_fd,
        new_path,
        new_len,
        |from, old, to, new, area| {
            if area.is_volume() {
                return Err(Errno::Perm);
            }
            host(from.hard_link(old, to, new))
        },
    )
}

/// `path_symlink(old_path, old_len, fd, new_path, new_len)`: only relative
/// targets (an absolute one could never be followed inside the area).
pub fn path_symlink(
    mut env: Env<'_>,
    old_path: i32,
    old_len: i32,
    fd: i32,
    new_path: i32,
    new_len: i32,
) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno((|| {
            let target = read_path(memory, old_path as u32, old_len as u32)?;
            let link = read_path(memory, new_path as u32, new_len as u32)?;
            let (dir, area) = directory(guest, fd)?;
            area.check_writable()?;
            if target.starts_with('/') {
                return Err(Errno::Perm);
            }
            host(dir.symlink(&target, &link))
        })())
    })
}

pub fn path_readlink(
    mut env: Env<'_>,
    fd: i32,
    path: i32,
    path_len: i32,
    buf: i32,
    buf_len: i32,
    bufused: i32,
) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno((|| {
            let path = read_path(memory, path as u32, path_len as u32)?;
            memory.check(buf as u32, u64::from(buf_len as u32))?;
            memory.check(bufused as u32, 4)?;
            let (dir, _) = directory(guest, fd)?;
            let target = host(dir.read_link(&path))?;
            let target = target.to_str().ok_or(Errno::Ilseq)?.as_bytes();
            let count = target.len().min(buf_len as u32 as usize);
            memory.write_bytes(buf as u32, &target[..count])?;
            Ok(memory.write_u32(bufused as u32, count as u32)?)
        })())
    })
}
