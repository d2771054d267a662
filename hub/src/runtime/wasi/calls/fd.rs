//! Calls every descriptor takes: `fd_close`, `fd_fdstat_get`,
//! `fd_prestat_*`, `fd_read`, `fd_seek`, `fd_write` (stdio, files and
//! directories). Calls only files and directories take are in `file.rs`.

use std::io::{Read, Seek, SeekFrom, Write};

use cap_std::fs::FileExt;
use wasmer::RuntimeError;

use super::super::abi::{
    Errno, FDSTAT_FLAGS, FDSTAT_RIGHTS_BASE, FDSTAT_RIGHTS_INHERITING, FDSTAT_SIZE, IOV_MAX, IOVEC_SIZE, PRESTAT_SIZE,
    WHENCE_CUR, WHENCE_END, WHENCE_SET, errno,
};
use super::super::fds::{Descriptor, FileFd};
use super::super::files::host;
use super::Env;
use crate::runtime::guest::{GuestMemory, with_memory};

/// Most bytes one `fd_write` takes: one log entry. A longer write is short
/// (`nwritten` says how much was taken) and libc writes the rest in the
/// next call, as POSIX allows any write to be.
pub const MAX_WRITE_BYTES: u32 = 64 << 10;

/// Most bytes one read or write of a file moves (a short read or write
/// beyond, which libc continues): the count must fit the ABI's `u32`, and
/// one call should not hold the function's thread for long.
pub const MAX_FILE_IO_BYTES: u64 = 64 << 20;

/// One `ciovec`: a buffer the guest passed, checked to lie inside memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Iovec {
    ptr: u32,
    len: u32,
}

/// Reads the iovec array of an `fd_read`/`fd_write`: at most [`IOV_MAX`]
/// entries (`EINVAL` beyond, before anything is read), the array and every
/// buffer it names inside memory (`EFAULT` otherwise).
pub(super) fn iovecs(memory: &GuestMemory<'_>, iovs: u32, count: u32) -> Result<Vec<Iovec>, Errno> {
    if count > IOV_MAX {
        return Err(Errno::Inval);
    }
    memory.check_array(iovs, count, IOVEC_SIZE)?;
    (0..count)
        .map(|index| {
            let entry = iovs + index * IOVEC_SIZE;
            let iovec = Iovec {
                ptr: memory.read_u32(entry)?,
                len: memory.read_u32(entry + 4)?,
            };
            memory.check(iovec.ptr, u64::from(iovec.len))?;
            Ok(iovec)
        })
        .collect()
}

/// Copies the first `limit` bytes the iovecs name (fewer if they hold
/// less) into one buffer of exactly that size.
fn gather(memory: &GuestMemory<'_>, iovecs: &[Iovec], limit: u32) -> Result<Vec<u8>, Errno> {
    let total: u64 = iovecs.iter().map(|iovec| u64::from(iovec.len)).sum();
    let taken = total.min(u64::from(limit)) as usize;
    let mut gathered = vec![0; taken];
    let mut filled = 0;
    for iovec in iovecs {
        if filled == taken {
            break;
        }
        let part = (iovec.len as usize).min(taken - filled);
        memory.read_into(iovec.ptr, &mut gathered[filled..filled + part])?;
        filled += part;
    }
    Ok(gathered)
}

pub fn fd_close(mut env: Env<'_>, fd: i32) -> i32 {
    errno(env.data_mut().fds.close(fd as u32))
}

pub fn fd_fdstat_get(mut env: Env<'_>, fd: i32, stat: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno(guest.fds.get(fd as u32).and_then(|descriptor| {
            let mut record = [0u8; FDSTAT_SIZE];
            record[0] = descriptor.filetype();
            record[FDSTAT_FLAGS..FDSTAT_FLAGS + 2].copy_from_slice(&descriptor.flags().to_le_bytes());
            let (base, inheriting) = descriptor.rights();
            record[FDSTAT_RIGHTS_BASE..FDSTAT_RIGHTS_BASE + 8].copy_from_slice(&base.to_le_bytes());
            record[FDSTAT_RIGHTS_INHERITING..FDSTAT_RIGHTS_INHERITING + 8].copy_from_slice(&inheriting.to_le_bytes());
            Ok(memory.write_bytes(stat as u32, &record)?)
        }))
    })
}

/// The guest path of a preopened directory; `EBADF` for any other fd, which
/// is how wasi-libc learns where the preopens end.
fn preopen_name(descriptor: &Descriptor) -> Result<&str, Errno> {
    match descriptor {
        Descriptor::Dir(dir) if dir.preopen => Ok(&dir.area.guest_path),
        _ => Err(Errno::Badf),
    }
}

pub fn fd_prestat_get(mut env: Env<'_>, fd: i32, buf: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno((|| {
            let name = preopen_name(guest.fds.get(fd as u32)?)?;
            let mut record = [0u8; PRESTAT_SIZE];
            record[4..8].copy_from_slice(&(name.len() as u32).to_le_bytes());
            Ok(memory.write_bytes(buf as u32, &record)?)
        })())
    })
}

pub fn fd_prestat_dir_name(mut env: Env<'_>, fd: i32, path: i32, len: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno((|| {
            let name = preopen_name(guest.fds.get(fd as u32)?)?;
            if (len as u32 as usize) < name.len() {
                return Err(Errno::Nametoolong);
            }
            Ok(memory.write_bytes(path as u32, name.as_bytes())?)
        })())
    })
}

/// Reads from `file` into the iovecs in place (no host buffer), from the
/// file's position or, with `at`, from that offset; stops at the first
/// short read. Returns the bytes read.
pub(super) fn read_file(
    memory: &GuestMemory<'_>,
    file: &FileFd,
    iovecs: &[Iovec],
    at: Option<u64>,
) -> Result<u64, Errno> {
    if !file.read {
        return Err(Errno::Badf);
    }
    let mut total = 0u64;
    for iovec in iovecs {
        let len = u64::from(iovec.len).min(MAX_FILE_IO_BYTES - total) as u32;
        if len == 0 && total == MAX_FILE_IO_BYTES {
            break;
        }
        let mut short = false;
        let filled = memory.fill_in_place(iovec.ptr, len, len.max(1), |buffer| {
            let mut done = 0;
            while done < buffer.len() {
                let count = match at {
                    Some(offset) => file.file.read_at(&mut buffer[done..], offset + total + done as u64),
                    None => (&file.file).read(&mut buffer[done..]),
                };
                match count {
                    Ok(0) => break,
                    Ok(count) => done += count,
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(error) => {
                        if done == 0 && total == 0 {
                            return Err(error);
                        }
                        break;
                    }
                }
            }
            total += done as u64;
            short = done < buffer.len();
            Ok(())
        })?;
        host(filled)?;
        if short {
            break;
        }
    }
    Ok(total)
}

/// Writes what the iovecs hold to `file` (at its position, its end in
/// append mode, or `at`), as much as the area's quota lets through:
/// `ENOSPC` if not one byte fits. Returns the bytes written.
pub(super) fn write_file(
    memory: &GuestMemory<'_>,
    file: &FileFd,
    iovecs: &[Iovec],
    at: Option<u64>,
) -> Result<u64, Errno> {
    if !file.write {
        return Err(Errno::Badf);
    }
    file.area.check_writable()?;
    let wanted: u64 = iovecs
        .iter()
        .map(|iovec| u64::from(iovec.len))
        .sum::<u64>()
        .min(MAX_FILE_IO_BYTES);
    // Where the bytes land decides how much the quota lets through.
    let placement = match file.area.used_bytes() {
        None => None,
        Some(_) => {
            let size = host(file.file.metadata())?.len();
            let offset = match at {
                Some(offset) => offset,
                None if file.append => size,
                None => host((&file.file).stream_position())?,
            };
            Some((size, offset))
        }
    };
    let allowed = match placement {
        Some((size, offset)) => file.area.room_for(size, offset, wanted)?,
        None => wanted,
    };
    let mut written = 0u64;
    for iovec in iovecs {
        if written == allowed {
            break;
        }
        let part = u64::from(iovec.len).min(allowed - written) as u32;
        let count = memory.with_bytes(iovec.ptr, part, |bytes| match at {
            // pwrite on an O_APPEND file appends on Linux; WASI says the
            // offset wins, and only a file opened without append gets here
            // with `at` in practice.
            Some(offset) => file.file.write_at(bytes, offset + written),
            None => (&file.file).write(bytes),
        })?;
        match count {
            Ok(count) => {
                written += count as u64;
                if count < part as usize {
                    break;
                }
            }
            Err(error) if written == 0 => return Err(super::super::files::errno_of(&error)),
            Err(_) => break,
        }
    }
    if let Some((size, offset)) = placement {
        file.area.resized(size, size.max(offset + written));
        // What was written, and the hole a write past the end left.
        file.area.changed(file.ino, offset.min(size), offset + written);
    }
    Ok(written)
}

pub fn fd_read(mut env: Env<'_>, fd: i32, iovs: i32, iovs_len: i32, nread: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno((|| {
            let descriptor = guest.fds.get(fd as u32)?;
            match descriptor {
                Descriptor::Stdout | Descriptor::Stderr => return Err(Errno::Badf),
                Descriptor::Dir(_) => return Err(Errno::Isdir),
                _ => {}
            }
            let iovecs = iovecs(memory, iovs as u32, iovs_len as u32)?;
            memory.check(nread as u32, 4)?;
            let count = match descriptor {
                // stdin is always empty: end of file.
                Descriptor::Stdin => 0,
                Descriptor::File(file) => read_file(memory, file, &iovecs, None)?,
                Descriptor::Dir(_) => return Err(Errno::Isdir),
                Descriptor::Stdout | Descriptor::Stderr => return Err(Errno::Badf),
            };
            Ok(memory.write_u32(nread as u32, count as u32)?)
        })())
    })
}

pub fn fd_seek(mut env: Env<'_>, fd: i32, offset: i64, whence: i32, new_offset: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno((|| {
            let file = seekable(guest.fds.get(fd as u32)?)?;
            memory.check(new_offset as u32, 8)?;
            let from = match u8::try_from(whence).map_err(|_| Errno::Inval)? {
                WHENCE_SET => SeekFrom::Start(u64::try_from(offset).map_err(|_| Errno::Inval)?),
                WHENCE_CUR => SeekFrom::Current(offset),
                WHENCE_END => SeekFrom::End(offset),
                _ => return Err(Errno::Inval),
            };
            let position = guest_seek(&file.file, from)?;
            Ok(memory.write_u64(new_offset as u32, position)?)
        })())
    })
}

/// The file of a seek or tell: stdio cannot seek (`ESPIPE`), a directory
/// is no file to seek in (`EBADF`).
pub(super) fn seekable(descriptor: &Descriptor) -> Result<&FileFd, Errno> {
    match descriptor {
        Descriptor::File(file) => Ok(file),
        Descriptor::Dir(_) => Err(Errno::Badf),
        _ => Err(Errno::Spipe),
    }
}

fn guest_seek(file: &cap_std::fs::File, from: SeekFrom) -> Result<u64, Errno> {
    host({
        let mut file = file;
        file.seek(from)
    })
}

/// Writes to a file, or at most [`MAX_WRITE_BYTES`] of what the iovecs
/// hold to the descriptor's log stream, and reports the count in
/// `nwritten`. Nothing is written unless every iovec and `nwritten` lie
/// inside memory.
pub fn fd_write(mut env: Env<'_>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno((|| {
            let descriptor = guest.fds.get(fd as u32)?;
            match descriptor {
                Descriptor::Stdin => return Err(Errno::Badf),
                Descriptor::Dir(_) => return Err(Errno::Isdir),
                _ => {}
            }
            let iovecs = iovecs(memory, iovs as u32, iovs_len as u32)?;
            memory.check(nwritten as u32, 4)?;
            let count = match descriptor {
                Descriptor::File(file) => write_file(memory, file, &iovecs, None)?,
                Descriptor::Dir(_) => return Err(Errno::Isdir),
                other => {
                    let stream = other.output().ok_or(Errno::Badf)?;
                    let data = gather(memory, &iovecs, MAX_WRITE_BYTES)?;
                    if !data.is_empty() {
                        guest.services.output(&guest.name, stream, &data);
                    }
                    data.len() as u64
                }
            };
            Ok(memory.write_u32(nwritten as u32, count as u32)?)
        })())
    })
}
