//! The host's half of Asyncify: entering an unwinding import (first call, or
//! the replayed call of a rewind) and starting an unwind from inside one.
//!
//! Asyncify's data structure lives at offset 0 of the stack memory:
//! `{ current: i32, end: i32 }` followed by the saved frames.

use ferry_migrator::STACK_MEMORY_PAGES;
use wasmer::{AsStoreMut, FunctionEnvMut, Memory, RuntimeError, TypedFunction};

use super::guest::GuestEnv;
use super::snapshot::PendingCall;

/// Offset of Asyncify's data structure in the stack memory.
pub const STACK_DATA: u32 = 0;
const STACK_FRAMES_START: u32 = 8;
const STACK_END: u32 = STACK_MEMORY_PAGES * 65_536;

/// Where the guest is with respect to Asyncify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Running normally.
    #[default]
    Normal,
    /// An import started an unwind; `_start` is returning frame by frame.
    Unwinding,
    /// `_start` was called to rewind; the first unwinding import it reaches
    /// is the replayed call.
    Rewinding,
}

/// The Asyncify exports an import needs.
#[derive(Clone)]
pub struct AsyncifyHooks {
    pub start_unwind: TypedFunction<i32, ()>,
    pub stop_rewind: TypedFunction<(), ()>,
    pub stack: Memory,
}

/// How an unwinding import was entered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A new call from the guest.
    Fresh,
    /// The replay of the call the guest was unwound from, with its saved state.
    Resumed(PendingCall),
}

/// Call first in every unwinding import. During a rewind it ends the rewind
/// and hands back the pending call that was saved at the unwind.
pub fn enter(env: &mut FunctionEnvMut<'_, GuestEnv>) -> Result<Entry, RuntimeError> {
    if env.data().phase != Phase::Rewinding {
        return Ok(Entry::Fresh);
    }
    let hooks = env
        .data()
        .asyncify
        .clone()
        .ok_or_else(|| RuntimeError::new("rewinding without Asyncify exports"))?;
    hooks.stop_rewind.call(&mut env.as_store_mut())?;
    let guest = env.data_mut();
    guest.phase = Phase::Normal;
    let pending = guest
        .pending
        .take()
        .ok_or_else(|| RuntimeError::new("rewound without a pending call"))?;
    Ok(Entry::Resumed(pending))
}

/// Starts unwinding the guest from inside the current import. The import
/// must return right after (its result is ignored by the guest).
pub fn begin_unwind(env: &mut FunctionEnvMut<'_, GuestEnv>, pending: PendingCall) -> Result<(), RuntimeError> {
    let hooks = env
        .data()
        .asyncify
        .clone()
        .ok_or_else(|| RuntimeError::new("unwinding without Asyncify exports"))?;
    {
        let (_, store) = env.data_and_store_mut();
        let view = hooks.stack.view(&store);
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&STACK_FRAMES_START.to_le_bytes());
        header[4..].copy_from_slice(&STACK_END.to_le_bytes());
        view.write(u64::from(STACK_DATA), &header)
            .map_err(|error| RuntimeError::new(format!("cannot prepare the stack memory: {error}")))?;
    }
    let guest = env.data_mut();
    guest.pending = Some(pending);
    guest.phase = Phase::Unwinding;
    hooks.start_unwind.call(&mut env.as_store_mut(), STACK_DATA as i32)?;
    Ok(())
}

/// Unwinds the guest so that the hub can park it (see `GuestEnv::should_park`).
pub fn park(env: &mut FunctionEnvMut<'_, GuestEnv>, pending: PendingCall) -> Result<(), RuntimeError> {
    env.data_mut().parking = true;
    begin_unwind(env, pending)
}

/// Bytes of the stack memory in use after an unwind: the header and frames.
pub fn used_stack_bytes(stack_header: &[u8; 8]) -> u32 {
    let current = u32::from_le_bytes(stack_header[..4].try_into().expect("4 bytes"));
    current.clamp(STACK_FRAMES_START, STACK_END)
}
