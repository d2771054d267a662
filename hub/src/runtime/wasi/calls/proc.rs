//! `proc_exit` and `sched_yield`.

use wasmer::RuntimeError;

use super::super::abi::SUCCESS;
use super::Env;
use crate::runtime::guest::GuestStop;
use crate::runtime::snapshot::PendingCall;
use crate::runtime::unwind::{Entry, begin_unwind, enter};

pub fn proc_exit(_env: Env<'_>, code: i32) -> Result<(), RuntimeError> {
    Err(RuntimeError::user(Box::new(GuestStop::Exit(code))))
}

/// A point where the hub may stop or capture the function.
pub fn sched_yield(mut env: Env<'_>) -> Result<i32, RuntimeError> {
    if let Entry::Resumed(_) = enter(&mut env)? {
        return Ok(SUCCESS);
    }
    if env.data().control.stop_requested() {
        return Err(RuntimeError::user(Box::new(GuestStop::Stopped)));
    }
    if env.data().control.capture_requested() {
        begin_unwind(&mut env, PendingCall::SchedYield)?;
    }
    Ok(SUCCESS)
}
