//! Waiting on the function's virtual clock, shared by `ferry.sleep_ms` and
//! `poll_oneoff`: a short wait on the thread, a long one parks the function.

use std::time::{Duration, Instant};

use wasmer::{FunctionEnvMut, RuntimeError};

use super::control::Wake;
use super::guest::{GuestEnv, GuestStop, PARK_AFTER};
use super::snapshot::PendingCall;
use super::unwind::{begin_unwind, park as park_guest};

type Env<'a> = FunctionEnvMut<'a, GuestEnv>;

/// Blocks the calling guest until its virtual clock reads `deadline`.
/// Traps with [`GuestStop::Stopped`] if the hub stops it first. Returns
/// `false` when the import must return at once because the guest is
/// unwinding: the hub asked for a capture, or the wait is long and the
/// function parks (see `GuestEnv::should_park`).
pub fn sleep_until_virtual(env: &mut Env<'_>, deadline: Duration, pending: PendingCall) -> Result<bool, RuntimeError> {
    let (wake, park) = {
        let (guest, store) = env.data_and_store_mut();
        let memory_bytes = guest.memory.clone().map_or(0, |memory| {
            let view = memory.view(&store);
            guest.publish_counters(&view);
            view.data_size()
        });
        let host_deadline = guest.clock.host_instant_at(deadline);
        let first_wait = host_deadline.min(Instant::now() + PARK_AFTER);
        match guest.control.sleep_until(first_wait) {
            Wake::TimedOut if Instant::now() < host_deadline => {
                let remaining = host_deadline.saturating_duration_since(Instant::now());
                if guest.should_park(Some(remaining), memory_bytes) {
                    (Wake::TimedOut, true)
                } else {
                    (guest.control.sleep_until(host_deadline), false)
                }
            }
            wake => (wake, false),
        }
    };
    match wake {
        Wake::Stop => Err(RuntimeError::user(Box::new(GuestStop::Stopped))),
        Wake::Capture => {
            begin_unwind(env, pending)?;
            Ok(false)
        }
        _ if park => {
            park_guest(env, pending)?;
            Ok(false)
        }
        Wake::Ready | Wake::TimedOut => Ok(true),
    }
}
