//! `ferry.send` and `ferry.call`: messages to other functions, on this hub
//! or another, and the wait for their outcome (the inbox took it; the
//! reply came).
//!
//! A capture during that wait (a checkpoint, a move, a suspend) does not
//! wait for the outcome. The hub keeps it under a number
//! ([`HostServices::keep_outcome`](crate::runtime::HostServices::keep_outcome)),
//! the snapshot carries the number, and the replayed call takes the outcome
//! back from wherever the function runs by then. The message is never sent
//! twice: a replayed call only waits.

use std::time::Duration;

use wasmer::RuntimeError;

use super::{Env, MAX_MESSAGE_BYTES, MAX_TARGET_NAME_BYTES, bad_pointer, resumed_wrong_call, stopped};
use crate::runtime::guest::{Delivery, Sent, Undelivered, with_memory};
use crate::runtime::snapshot::PendingCall;
use crate::runtime::unwind::{Entry, begin_unwind, enter};

/// How often a guest waiting for a message's outcome looks whether the hub
/// wants it stopped or captured.
const CONTROL_POLL: Duration = Duration::from_millis(5);

/// Puts a message into another function's inbox, on this hub or another.
/// Both ranges must be in memory; more than [`MAX_MESSAGE_BYTES`] of data
/// is not sent (`FERRY_TOO_BIG`). Returns once the target's inbox took it.
pub fn send(mut env: Env<'_>, name_ptr: i32, name_len: i32, data_ptr: i32, data_len: i32) -> Result<i32, RuntimeError> {
    let delivery = match enter(&mut env)? {
        Entry::Fresh => {
            let (name_ptr, name_len) = (name_ptr as u32, name_len as u32);
            let (data_ptr, data_len) = (data_ptr as u32, data_len as u32);
            with_memory(&mut env, |guest, memory| {
                let fault = |fault| bad_pointer("ferry.send", fault);
                memory.check(name_ptr, u64::from(name_len)).map_err(fault)?;
                memory.check(data_ptr, u64::from(data_len)).map_err(fault)?;
                if name_len > MAX_TARGET_NAME_BYTES {
                    return Ok(Delivery::Done(Err(Undelivered::NoSuchFunction)));
                }
                if data_len > MAX_MESSAGE_BYTES {
                    return Ok(Delivery::Done(Err(Undelivered::TooBig)));
                }
                let name = memory.read_bytes(name_ptr, name_len).map_err(fault)?;
                let target = String::from_utf8_lossy(&name);
                // Read in place: the hub copies the data only into an inbox that takes it.
                memory
                    .with_bytes(data_ptr, data_len, |data| {
                        guest.services.send(&guest.name, &target, data)
                    })
                    .map_err(fault)
            })??
        }
        Entry::Resumed(PendingCall::Outbound { one_way: true, outcome }) => taken_back(&env, outcome),
        Entry::Resumed(other) => return Err(resumed_wrong_call("ferry.send", other)),
    };
    Ok(match wait_for(&mut env, delivery, true)? {
        Some(Ok(_)) => 0,
        Some(Err(undelivered)) => undelivered.code(),
        // Unwound: the guest does not see this result.
        None => 0,
    })
}

/// Sends a message to another function, on this hub or another, and waits
/// for its reply: at most `timeout_ms` (negative: the hub's invoke timeout).
/// The reply's first `reply_cap` bytes are written to `reply_ptr`; the
/// reply's whole length is returned (more than `reply_cap`: cut short).
/// All three ranges must be in memory, checked before anything is sent.
///
/// The function may be captured while it waits (see the module docs): the
/// reply then comes to it wherever it runs on.
#[allow(clippy::too_many_arguments)]
pub fn call(
    mut env: Env<'_>,
    name_ptr: i32,
    name_len: i32,
    data_ptr: i32,
    data_len: i32,
    reply_ptr: i32,
    reply_cap: i32,
    timeout_ms: i64,
) -> Result<i32, RuntimeError> {
    let (reply_ptr, reply_cap) = (reply_ptr as u32, reply_cap as u32);
    let fault = |fault| bad_pointer("ferry.call", fault);
    let delivery = match enter(&mut env)? {
        Entry::Fresh => {
            let (name_ptr, name_len) = (name_ptr as u32, name_len as u32);
            let (data_ptr, data_len) = (data_ptr as u32, data_len as u32);
            with_memory(&mut env, |guest, memory| {
                memory.check(name_ptr, u64::from(name_len)).map_err(fault)?;
                memory.check(data_ptr, u64::from(data_len)).map_err(fault)?;
                memory.check(reply_ptr, u64::from(reply_cap)).map_err(fault)?;
                if name_len > MAX_TARGET_NAME_BYTES {
                    return Ok::<_, RuntimeError>(Delivery::Done(Err(Undelivered::NoSuchFunction)));
                }
                if data_len > MAX_MESSAGE_BYTES {
                    return Ok(Delivery::Done(Err(Undelivered::TooBig)));
                }
                let name = memory.read_bytes(name_ptr, name_len).map_err(fault)?;
                let target = String::from_utf8_lossy(&name);
                let data = memory.read_bytes(data_ptr, data_len).map_err(fault)?;
                let timeout = (timeout_ms >= 0).then(|| Duration::from_millis(timeout_ms as u64));
                Ok(guest.services.call(&guest.name, &target, data, timeout))
            })??
        }
        Entry::Resumed(PendingCall::Outbound {
            one_way: false,
            outcome,
        }) => taken_back(&env, outcome),
        Entry::Resumed(other) => return Err(resumed_wrong_call("ferry.call", other)),
    };
    let reply = match wait_for(&mut env, delivery, false)? {
        Some(Ok(reply)) => reply,
        Some(Err(undelivered)) => return Ok(undelivered.code()),
        None => return Ok(0),
    };
    let kept = reply.len().min(reply_cap as usize);
    // The memory may have changed size meanwhile only by this guest's own
    // doing, which it cannot do while it waits here: the range still holds.
    with_memory(&mut env, |_, memory| memory.write_bytes(reply_ptr, &reply[..kept]))?.map_err(fault)?;
    Ok(i32::try_from(reply.len()).unwrap_or(i32::MAX))
}

/// The outcome a replayed call waits for: the one kept at the capture.
fn taken_back(env: &Env<'_>, outcome: Option<crate::runtime::ReplyAddress>) -> Delivery {
    let guest = env.data();
    match outcome {
        Some(kept) => guest.services.take_outcome(&guest.name, kept),
        None => Delivery::Done(Err(Undelivered::Failed)),
    }
}

/// Waits on the guest's thread for a delivery that travels, answering stop
/// and capture requests meanwhile. `None`: the guest is unwinding for a
/// capture, the outcome kept by the hub.
fn wait_for(env: &mut Env<'_>, delivery: Delivery, one_way: bool) -> Result<Option<Sent>, RuntimeError> {
    let receiver = match delivery {
        Delivery::Done(sent) => return Ok(Some(sent)),
        Delivery::Waiting(receiver) => receiver,
    };
    loop {
        match receiver.recv_timeout(CONTROL_POLL) {
            Ok(sent) => return Ok(Some(sent)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let guest = env.data();
                if guest.control.stop_requested() {
                    return Err(stopped());
                }
                if guest.control.capture_requested() && !guest.postpone_capture() && guest.asyncify.is_some() {
                    let outcome = guest.services.keep_outcome(&guest.name, receiver);
                    begin_unwind(env, PendingCall::Outbound { one_way, outcome })?;
                    return Ok(None);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(Some(Err(Undelivered::Failed))),
        }
    }
}
