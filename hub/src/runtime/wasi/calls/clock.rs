//! `clock_res_get` and `clock_time_get`: realtime from the host, monotonic
//! from the function's virtual clock, CPU time from its thread.

use std::time::{SystemTime, UNIX_EPOCH};

use wasmer::RuntimeError;

use super::super::abi::{CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME, CLOCK_REALTIME, CLOCK_THREAD_CPUTIME, Errno, errno};
use super::Env;
use crate::runtime::guest::{GuestEnv, with_memory};

/// Resolution every clock reports: a microsecond.
const RESOLUTION_NANOS: u64 = 1_000;

/// Nanoseconds on clock `id` as the guest sees them, or `None` for an unknown clock.
pub fn clock_now(guest: &GuestEnv, id: u32) -> Option<u64> {
    let now = match id {
        CLOCK_REALTIME => SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(),
        CLOCK_MONOTONIC => guest.clock.now(),
        CLOCK_PROCESS_CPUTIME | CLOCK_THREAD_CPUTIME => guest.cpu.used(),
        _ => return None,
    };
    Some(u64::try_from(now.as_nanos()).unwrap_or(u64::MAX))
}

pub fn clock_res_get(mut env: Env<'_>, id: i32, resolution: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |_, memory| {
        errno(match id as u32 {
            CLOCK_REALTIME | CLOCK_MONOTONIC | CLOCK_PROCESS_CPUTIME | CLOCK_THREAD_CPUTIME => memory
                .write_u64(resolution as u32, RESOLUTION_NANOS)
                .map_err(Errno::from),
            _ => Err(Errno::Inval),
        })
    })
}

pub fn clock_time_get(mut env: Env<'_>, id: i32, _precision: i64, time: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno(match clock_now(guest, id as u32) {
            Some(nanos) => memory.write_u64(time as u32, nanos).map_err(Errno::from),
            None => Err(Errno::Inval),
        })
    })
}
