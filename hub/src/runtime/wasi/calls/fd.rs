//! Calls on descriptors: `fd_close`, `fd_fdstat_get`, `fd_prestat_*`,
//! `fd_read`, `fd_seek`, `fd_write`.

use wasmer::RuntimeError;

use super::super::abi::{Errno, FDSTAT_RIGHTS_BASE, FDSTAT_SIZE, IOV_MAX, IOVEC_SIZE, errno};
use super::Env;
use crate::runtime::guest::{GuestMemory, with_memory};

/// Most bytes one `fd_write` takes: one log entry. A longer write is short
/// (`nwritten` says how much was taken) and libc writes the rest in the
/// next call, as POSIX allows any write to be.
pub const MAX_WRITE_BYTES: u32 = 64 << 10;

/// One `ciovec`: a buffer the guest passed, checked to lie inside memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Iovec {
    ptr: u32,
    len: u32,
}

/// Reads the iovec array of an `fd_read`/`fd_write`: at most [`IOV_MAX`]
/// entries (`EINVAL` beyond, before anything is read), the array and every
/// buffer it names inside memory (`EFAULT` otherwise).
fn iovecs(memory: &GuestMemory<'_>, iovs: u32, count: u32) -> Result<Vec<Iovec>, Errno> {
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
            record[FDSTAT_RIGHTS_BASE..FDSTAT_RIGHTS_BASE + 8].copy_from_slice(&descriptor.rights().to_le_bytes());
            Ok(memory.write_bytes(stat as u32, &record)?)
        }))
    })
}

/// No descriptor is a preopened directory (yet): `EBADF` for every fd.
pub fn fd_prestat_get(_env: Env<'_>, _fd: i32, _buf: i32) -> i32 {
    Errno::Badf.raw()
}

/// No descriptor is a preopened directory (yet): `EBADF` for every fd.
pub fn fd_prestat_dir_name(_env: Env<'_>, _fd: i32, _path: i32, _len: i32) -> i32 {
    Errno::Badf.raw()
}

pub fn fd_read(mut env: Env<'_>, fd: i32, iovs: i32, iovs_len: i32, nread: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno((|| {
            if !guest.fds.get(fd as u32)?.readable() {
                return Err(Errno::Badf);
            }
            iovecs(memory, iovs as u32, iovs_len as u32)?;
            // stdin is always empty: end of file.
            Ok(memory.write_u32(nread as u32, 0)?)
        })())
    })
}

pub fn fd_seek(env: Env<'_>, fd: i32, _offset: i64, _whence: i32, _new_offset: i32) -> i32 {
    errno(match env.data().fds.get(fd as u32) {
        Ok(descriptor) if descriptor.is_stdio() => Err(Errno::Spipe),
        Ok(_) => Err(Errno::Badf),
        Err(error) => Err(error),
    })
}

/// Writes at most [`MAX_WRITE_BYTES`] of what the iovecs hold to the
/// descriptor's log stream and reports the count in `nwritten`. Nothing is
/// written unless every iovec and `nwritten` lie inside memory.
pub fn fd_write(mut env: Env<'_>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno((|| {
            let stream = guest.fds.get(fd as u32)?.output().ok_or(Errno::Badf)?;
            let iovecs = iovecs(memory, iovs as u32, iovs_len as u32)?;
            memory.check(nwritten as u32, 4)?;
            let data = gather(memory, &iovecs, MAX_WRITE_BYTES)?;
            if !data.is_empty() {
                guest.services.output(&guest.name, stream, &data);
            }
            Ok(memory.write_u32(nwritten as u32, data.len() as u32)?)
        })())
    })
}
