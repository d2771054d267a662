//! `random_get`: the host's CSPRNG, written straight into guest memory.

use wasmer::RuntimeError;

use super::super::abi::{Errno, errno};
use super::Env;
use crate::runtime::guest::with_memory;

/// Bytes filled per step. The range is checked whole first; then each step
/// fills this much of the guest's own memory in place, so no host buffer of
/// the requested size ever exists.
pub const RANDOM_CHUNK_BYTES: u32 = 64 << 10;

pub fn random_get(mut env: Env<'_>, buf: i32, len: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |_, memory| {
        errno(
            match memory.fill_in_place(buf as u32, len as u32, RANDOM_CHUNK_BYTES, getrandom::fill) {
                Ok(Ok(())) => Ok(()),
                // No entropy source on this host.
                Ok(Err(_)) => Err(Errno::Nosys),
                Err(fault) => Err(Errno::from(fault)),
            },
        )
    })
}
