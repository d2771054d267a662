//! `args_*` and `environ_*`: the function's argv and environment.

use wasmer::RuntimeError;

use super::super::abi::{Errno, errno};
use super::Env;
use crate::runtime::guest::{GuestMemory, with_memory};

/// Bytes of a string list in the ABI (each item NUL-terminated), if it fits a `size`.
fn list_bytes(items: &[String]) -> Result<u32, Errno> {
    let bytes: usize = items.iter().map(|item| item.len() + 1).sum();
    u32::try_from(bytes).map_err(|_| Errno::Overflow)
}

fn list_count(items: &[String]) -> Result<u32, Errno> {
    u32::try_from(items.len()).map_err(|_| Errno::Overflow)
}

/// Writes the pointer array at `pointers` and the NUL-terminated strings at
/// `buffer`, after checking both lie inside memory.
fn write_string_list(memory: &GuestMemory<'_>, items: &[String], pointers: u32, buffer: u32) -> Result<(), Errno> {
    memory.check_array(pointers, list_count(items)?, 4)?;
    memory.check(buffer, u64::from(list_bytes(items)?))?;
    // Both ranges are inside memory, so no offset below passes 2^32.
    let mut offset = buffer;
    for (index, item) in items.iter().enumerate() {
        memory.write_u32(pointers + 4 * index as u32, offset)?;
        memory.write_bytes(offset, item.as_bytes())?;
        memory.write_bytes(offset + item.len() as u32, &[0])?;
        offset += item.len() as u32 + 1;
    }
    Ok(())
}

fn write_list_sizes(memory: &GuestMemory<'_>, items: &[String], count_ptr: u32, size_ptr: u32) -> Result<(), Errno> {
    let (count, size) = (list_count(items)?, list_bytes(items)?);
    memory.check(count_ptr, 4)?;
    memory.check(size_ptr, 4)?;
    memory.write_u32(count_ptr, count)?;
    memory.write_u32(size_ptr, size)?;
    Ok(())
}

pub fn args_get(mut env: Env<'_>, argv: i32, argv_buf: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno(write_string_list(memory, &guest.args, argv as u32, argv_buf as u32))
    })
}

pub fn args_sizes_get(mut env: Env<'_>, argc: i32, argv_buf_size: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno(write_list_sizes(memory, &guest.args, argc as u32, argv_buf_size as u32))
    })
}

pub fn environ_get(mut env: Env<'_>, environ: i32, environ_buf: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno(write_string_list(
            memory,
            &guest.environ,
            environ as u32,
            environ_buf as u32,
        ))
    })
}

pub fn environ_sizes_get(mut env: Env<'_>, count: i32, buf_size: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno(write_list_sizes(memory, &guest.environ, count as u32, buf_size as u32))
    })
}
