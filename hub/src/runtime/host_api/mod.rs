//! The `ferry` import module: the host API guests call (`log`, `sleep_ms`,
//! `recv`, `reply`, `send`, `call`) and the two hooks the instrumentation
//! inserts (`__preempt`, `__memory_grow`).

use std::time::{Duration, Instant};

use ferry_proto::v1::LogStream;
use wasmer::{FunctionEnvMut, RuntimeError};

use super::control::{Caller, Wake};
use super::guest::PARK_AFTER;
use super::guest::{GuestEnv, GuestStop, MemoryFault, with_memory};
use super::snapshot::PendingCall;
use super::unwind::{Entry, begin_unwind, enter, park};
use super::wait::sleep_until_virtual;

mod outbound;
pub use outbound::{call, send};

/// Import module name of the host API.
pub const MODULE: &str = "ferry";

/// Countdown the preemption hook hands back: preemption points between two
/// host decisions. At a few ns per point this bounds the reaction time to a
/// stop request at well under a millisecond of guest compute.
const PREEMPT_INTERVAL: i32 = 10_000;

/// Largest message a guest can receive or send.
pub const MAX_MESSAGE_BYTES: u32 = 16 << 20;

const FERRY_TIMEOUT: i32 = -1;
const FERRY_NO_CALLER: i32 = -2;

/// Most bytes of one `ferry.log` line; the rest of a longer text is dropped.
/// One line is one log entry.
pub const MAX_LOG_BYTES: u32 = 64 << 10;

/// Longest target name `ferry.send` reads; no function name is longer
/// (names have at most 63 bytes), so a longer one is `FERRY_NO_SUCH_FUNCTION`.
const MAX_TARGET_NAME_BYTES: u32 = 256;

type Env<'a> = FunctionEnvMut<'a, GuestEnv>;

/// The `ferry` API has no error code for memory outside the guest's: `log`
/// returns nothing and the codes of `recv`, `reply` and `send` are about
/// messages. A bad pointer or length fails the function with the call and
/// the range named, before anything is read, written or allocated.
fn bad_pointer(call: &'static str, fault: MemoryFault) -> RuntimeError {
    RuntimeError::user(Box::new(GuestStop::BadPointer { call, fault }))
}

fn stopped() -> RuntimeError {
    RuntimeError::user(Box::new(GuestStop::Stopped))
}

/// Writes one line (`[level] text`, at most [`MAX_LOG_BYTES`] of text) to
/// the function's log. The whole range `ptr..ptr + len` must be in memory.
pub fn log(mut env: Env<'_>, level: i32, ptr: i32, len: i32) -> Result<(), RuntimeError> {
    let (ptr, len) = (ptr as u32, len as u32);
    with_memory(&mut env, |guest, memory| {
        memory
            .check(ptr, u64::from(len))
            .map_err(|fault| bad_pointer("ferry.log", fault))?;
        let label = match level {
            1 => "error",
            2 => "warn",
            3 => "info",
            4 => "debug",
            _ => "log",
        };
        let mut line = format!("[{label}] ").into_bytes();
        let prefix = line.len();
        let kept = len.min(MAX_LOG_BYTES) as usize;
        line.resize(prefix + kept, 0);
        memory
            .read_into(ptr, &mut line[prefix..])
            .map_err(|fault| bad_pointer("ferry.log", fault))?;
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        guest.services.output(&guest.name, LogStream::GuestLog, &line);
        Ok(())
    })?
}

fn resumed_wrong_call(call: &str, pending: PendingCall) -> RuntimeError {
    RuntimeError::new(format!("rewound into {call} but the saved call was {pending:?}"))
}

pub fn sleep_ms(mut env: Env<'_>, ms: i64) -> Result<(), RuntimeError> {
    let until = match enter(&mut env)? {
        Entry::Fresh => env.data().clock.now() + Duration::from_millis(ms.max(0) as u64),
        Entry::Resumed(PendingCall::Sleep { until }) => until,
        Entry::Resumed(other) => return Err(resumed_wrong_call("ferry.sleep_ms", other)),
    };
    sleep_until_virtual(&mut env, until, PendingCall::Sleep { until })?;
    Ok(())
}

pub fn recv(mut env: Env<'_>, buf: i32, cap: i32, timeout_ms: i64) -> Result<i32, RuntimeError> {
    let deadline = match enter(&mut env)? {
        Entry::Fresh => (timeout_ms >= 0).then(|| env.data().clock.now() + Duration::from_millis(timeout_ms as u64)),
        Entry::Resumed(PendingCall::Recv { deadline }) => deadline,
        Entry::Resumed(other) => return Err(resumed_wrong_call("ferry.recv", other)),
    };
    let (buf, cap) = (buf as u32, cap as u32);
    // The buffer the guest offers must be its own before it waits: a message
    // taken from the inbox is never lost to a bad pointer.
    with_memory(&mut env, |_, memory| memory.check(buf, u64::from(cap)))?
        .map_err(|fault| bad_pointer("ferry.recv", fault))?;
    let (wake, should_park) = {
        let (guest, store) = env.data_and_store_mut();
        let memory_bytes = guest.memory.clone().map_or(0, |memory| {
            let view = memory.view(&store);
            guest.publish_counters(&view);
            view.data_size()
        });
        let host_deadline = deadline.map(|deadline| guest.clock.host_instant_at(deadline));
        let short = Instant::now() + PARK_AFTER;
        let first_wait = host_deadline.map_or(short, |deadline| deadline.min(short));
        let spun = guest.control.spin_for_message(Some(first_wait));
        guest.cpu.exclude(spun);
        match guest.control.wait_for_message(Some(first_wait)) {
            Wake::TimedOut if host_deadline.is_none_or(|deadline| Instant::now() < deadline) => {
                let remaining = host_deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
                if guest.should_park(remaining, memory_bytes) {
                    (Wake::TimedOut, true)
                } else {
                    (guest.control.wait_for_message(host_deadline), false)
                }
            }
            wake => (wake, false),
        }
    };
    match wake {
        Wake::Stop => return Err(stopped()),
        Wake::Capture => {
            begin_unwind(&mut env, PendingCall::Recv { deadline })?;
            return Ok(0);
        }
        _ if should_park => {
            park(&mut env, PendingCall::Recv { deadline })?;
            return Ok(0);
        }
        Wake::TimedOut => return Ok(FERRY_TIMEOUT),
        Wake::Ready => {}
    }
    with_memory(&mut env, |guest, memory| {
        let Some(len) = guest.control.peek_message_len() else {
            return Ok(FERRY_TIMEOUT);
        };
        if len > cap as usize {
            return Ok(i32::try_from(len).unwrap_or(i32::MAX));
        }
        let message = guest
            .control
            .take_message()
            .expect("the recv-ing thread is the only consumer");
        memory
            .write_bytes(buf, &message.data)
            .map_err(|fault| bad_pointer("ferry.recv", fault))?;
        guest.caller = message.reply_to.map(Caller::Here);
        Ok(len as i32)
    })?
}

/// Answers the message last received. The whole range `ptr..ptr + len`
/// must be in memory. More than [`MAX_MESSAGE_BYTES`] is not sent
/// (`FERRY_TOO_BIG`): the message still waits for its reply.
pub fn reply(mut env: Env<'_>, ptr: i32, len: i32) -> Result<i32, RuntimeError> {
    let (ptr, len) = (ptr as u32, len as u32);
    with_memory(&mut env, |guest, memory| {
        memory
            .check(ptr, u64::from(len))
            .map_err(|fault| bad_pointer("ferry.reply", fault))?;
        if len > MAX_MESSAGE_BYTES {
            return Ok(crate::runtime::guest::FERRY_TOO_BIG);
        }
        let data = memory
            .read_bytes(ptr, len)
            .map_err(|fault| bad_pointer("ferry.reply", fault))?;
        match guest.caller.take() {
            // The caller may have given up waiting; that is not the guest's problem.
            Some(Caller::Here(caller)) => {
                let _ = caller.send(Ok(data));
                Ok(0)
            }
            Some(Caller::Away(address)) => {
                guest.services.reply_away(&guest.name, address, data);
                Ok(0)
            }
            None => Ok(FERRY_NO_CALLER),
        }
    })?
}

pub fn preempt(mut env: Env<'_>) -> Result<i32, RuntimeError> {
    if let Entry::Resumed(_) = enter(&mut env)? {
        return Ok(PREEMPT_INTERVAL);
    }
    let guest = env.data_mut();
    if guest.control.stop_requested() {
        return Err(stopped());
    }
    let now = Instant::now();
    // Most points only look for a request: charging reads the thread's CPU
    // clock, a system call.
    if !guest.cpu_account.due(now) && !guest.control.capture_requested() {
        return Ok(PREEMPT_INTERVAL);
    }
    let cpu_used = guest.cpu.used();
    let slowed = guest.control.move_cap();
    let charge = guest
        .cpu_account
        .charge(cpu_used, (guest.governor.as_deref(), slowed), now);
    guest.control.add_demand(charge.waited_for_core);
    if let Some(until) = charge.throttle_until {
        // A quota is spent: wait for the next period, still answering stop
        // and capture requests at once.
        let wake = guest.control.sleep_until(until);
        if let Some(hub_until) = charge.hub_throttle_until {
            guest
                .control
                .add_demand(now.elapsed().min(hub_until.saturating_duration_since(now)));
        }
        if wake == Wake::Stop {
            return Err(stopped());
        }
    }
    let capture = {
        let (guest, store) = env.data_and_store_mut();
        if let Some(memory) = guest.memory.clone() {
            guest.publish_counters_at(&memory.view(&store), cpu_used);
        }
        // A checkpoint waits for a preemption point after the rewind module
        // is compiled, rather than holding the function unwound meanwhile.
        guest.control.capture_requested() && !guest.postpone_capture()
    };
    if capture {
        begin_unwind(&mut env, PendingCall::Preempt)?;
        return Ok(0);
    }
    Ok(PREEMPT_INTERVAL)
}

pub fn memory_grow(mut env: Env<'_>, delta_pages: i32) -> Result<i32, RuntimeError> {
    let (guest, mut store) = env.data_and_store_mut();
    let Some(memory) = guest.memory.clone() else {
        return Err(RuntimeError::new("memory.grow before the module's memory was bound"));
    };
    let current_bytes = memory.view(&store).data_size();
    let requested_bytes = current_bytes + u64::from(delta_pages as u32) * u64::from(wasmer::WASM_PAGE_SIZE as u32);
    if requested_bytes > guest.memory_limit_bytes {
        return Err(RuntimeError::user(Box::new(GuestStop::MemoryLimit {
            requested_bytes,
            limit_bytes: guest.memory_limit_bytes,
        })));
    }
    let result = match memory.grow(&mut store, delta_pages as u32) {
        Ok(previous) => previous.0 as i32,
        Err(_) => -1,
    };
    guest.control.set_memory_bytes(memory.view(&store).data_size());
    Ok(result)
}

#[cfg(test)]
mod tests;
