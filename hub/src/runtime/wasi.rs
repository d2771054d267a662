//! The hub's own WASI preview1 subset.
//!
//! Implemented here rather than taken from `wasmer-wasix` because every bit of
//! state a guest can observe (clocks, arguments, pending sleeps) must be
//! owned by the hub so it can be captured and moved. Calls outside the subset
//! return `ENOSYS` and are logged once per function.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_proto::v1::LogStream;
use wasmer::{Function, FunctionEnv, FunctionEnvMut, FunctionType, RuntimeError, Store, Type, Value};

use super::control::Wake;
use super::guest::PARK_AFTER;
use super::guest::{GuestEnv, GuestMemory, GuestStop, with_memory};
use super::snapshot::PendingCall;
use super::unwind::{Entry, begin_unwind, enter, park as park_guest};

/// Import module name of WASI preview1.
pub const MODULE: &str = "wasi_snapshot_preview1";

mod errno {
    pub const SUCCESS: i32 = 0;
    pub const BADF: i32 = 8;
    pub const FAULT: i32 = 21;
    pub const INVAL: i32 = 28;
    pub const NOSYS: i32 = 52;
    pub const SPIPE: i32 = 70;
}

const CLOCK_REALTIME: i32 = 0;
const CLOCK_MONOTONIC: i32 = 1;
const CLOCK_PROCESS_CPUTIME: i32 = 2;
const CLOCK_THREAD_CPUTIME: i32 = 3;

const FILETYPE_CHARACTER_DEVICE: u8 = 2;
const RIGHT_FD_READ: u64 = 1 << 1;
const RIGHT_FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
const RIGHT_FD_WRITE: u64 = 1 << 6;
const RIGHT_POLL_FD_READWRITE: u64 = 1 << 27;

const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;
const SUBCLOCKFLAG_ABSTIME: u16 = 1;
const EVENTRWFLAG_HANGUP: u16 = 1;
const SUBSCRIPTION_SIZE: u32 = 48;
const EVENT_SIZE: u32 = 32;

type Env<'a> = FunctionEnvMut<'a, GuestEnv>;

/// The host function implementing `wasi_snapshot_preview1.<name>`, if it is in the subset.
pub fn function(store: &mut Store, env: &FunctionEnv<GuestEnv>, name: &str) -> Option<Function> {
    macro_rules! typed {
        ($f:expr) => {
            Some(Function::new_typed_with_env(store, env, $f))
        };
    }
    match name {
        "args_get" => typed!(args_get),
        "args_sizes_get" => typed!(args_sizes_get),
        "environ_get" => typed!(environ_get),
        "environ_sizes_get" => typed!(environ_sizes_get),
        "clock_res_get" => typed!(clock_res_get),
        "clock_time_get" => typed!(clock_time_get),
        "fd_close" => typed!(fd_close),
        "fd_fdstat_get" => typed!(fd_fdstat_get),
        "fd_prestat_get" => typed!(fd_prestat_get),
        "fd_prestat_dir_name" => typed!(fd_prestat_dir_name),
        "fd_read" => typed!(fd_read),
        "fd_seek" => typed!(fd_seek),
        "fd_write" => typed!(fd_write),
        "poll_oneoff" => typed!(poll_oneoff),
        "proc_exit" => typed!(proc_exit),
        "random_get" => typed!(random_get),
        "sched_yield" => typed!(sched_yield),
        _ => None,
    }
}

/// A stand-in for a WASI call outside the subset: returns `ENOSYS` (or traps
/// if the signature has no errno result) and logs the first use.
pub fn unsupported(store: &mut Store, env: &FunctionEnv<GuestEnv>, name: &str, ty: FunctionType) -> Function {
    let name = name.to_owned();
    Function::new_with_env(store, env, ty.clone(), move |mut env: Env<'_>, _args: &[Value]| {
        let guest = env.data_mut();
        if guest.unsupported_reported.insert(name.clone()) {
            tracing::warn!(function = %guest.name, call = %name, "guest called an unsupported wasi function");
            let line = format!("unsupported WASI call {MODULE}.{name}: returning ENOSYS\n");
            guest.services.output(&guest.name, LogStream::Hub, line.as_bytes());
        }
        match ty.results() {
            [Type::I32] => Ok(vec![Value::I32(errno::NOSYS)]),
            _ => Err(RuntimeError::new(format!("unsupported WASI call {MODULE}.{name}"))),
        }
    })
}

/// Runs a memory-touching body; a fault becomes `EFAULT`.
fn errno_of(result: Result<i32, wasmer::MemoryAccessError>) -> i32 {
    result.unwrap_or(errno::FAULT)
}

fn write_string_list(
    memory: &GuestMemory<'_>,
    items: &[String],
    pointers: u32,
    buffer: u32,
) -> Result<i32, wasmer::MemoryAccessError> {
    let mut offset = buffer;
    for (index, item) in items.iter().enumerate() {
        memory.write_u32(pointers + 4 * index as u32, offset)?;
        memory.write_bytes(offset, item.as_bytes())?;
        memory.write_bytes(offset + item.len() as u32, &[0])?;
        offset += item.len() as u32 + 1;
    }
    Ok(errno::SUCCESS)
}

fn write_list_sizes(
    memory: &GuestMemory<'_>,
    items: &[String],
    count_ptr: u32,
    size_ptr: u32,
) -> Result<i32, wasmer::MemoryAccessError> {
    let size: usize = items.iter().map(|item| item.len() + 1).sum();
    memory.write_u32(count_ptr, items.len() as u32)?;
    memory.write_u32(size_ptr, size as u32)?;
    Ok(errno::SUCCESS)
}

fn args_get(mut env: Env<'_>, argv: i32, argv_buf: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno_of(write_string_list(memory, &guest.args, argv as u32, argv_buf as u32))
    })
}

fn args_sizes_get(mut env: Env<'_>, argc: i32, argv_buf_size: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno_of(write_list_sizes(memory, &guest.args, argc as u32, argv_buf_size as u32))
    })
}

fn environ_get(mut env: Env<'_>, environ: i32, environ_buf: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno_of(write_string_list(
            memory,
            &guest.environ,
            environ as u32,
            environ_buf as u32,
        ))
    })
}

fn environ_sizes_get(mut env: Env<'_>, count: i32, buf_size: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| {
        errno_of(write_list_sizes(memory, &guest.environ, count as u32, buf_size as u32))
    })
}

fn clock_res_get(mut env: Env<'_>, id: i32, resolution: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |_, memory| match id {
        CLOCK_REALTIME | CLOCK_MONOTONIC | CLOCK_PROCESS_CPUTIME | CLOCK_THREAD_CPUTIME => {
            errno_of(memory.write_u64(resolution as u32, 1_000).map(|()| errno::SUCCESS))
        }
        _ => errno::INVAL,
    })
}

/// Nanoseconds on `id` as the guest sees them, or `None` for an unknown clock.
fn clock_now(guest: &GuestEnv, id: i32) -> Option<u64> {
    let now = match id {
        CLOCK_REALTIME => SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(),
        CLOCK_MONOTONIC => guest.clock.now(),
        CLOCK_PROCESS_CPUTIME | CLOCK_THREAD_CPUTIME => guest.cpu.used(),
        _ => return None,
    };
    Some(u64::try_from(now.as_nanos()).unwrap_or(u64::MAX))
}

fn clock_time_get(mut env: Env<'_>, id: i32, _precision: i64, time: i32) -> Result<i32, RuntimeError> {
    with_memory(&mut env, |guest, memory| match clock_now(guest, id) {
        Some(nanos) => errno_of(memory.write_u64(time as u32, nanos).map(|()| errno::SUCCESS)),
        None => errno::INVAL,
    })
}

fn is_stdio(fd: i32) -> bool {
    (0..=2).contains(&fd)
}

fn fd_close(_env: Env<'_>, fd: i32) -> i32 {
    if is_stdio(fd) { errno::SUCCESS } else { errno::BADF }
}

fn fd_fdstat_get(mut env: Env<'_>, fd: i32, stat: i32) -> Result<i32, RuntimeError> {
    if !is_stdio(fd) {
        return Ok(errno::BADF);
    }
    let rights = RIGHT_FD_READ | RIGHT_FD_WRITE | RIGHT_FD_FDSTAT_SET_FLAGS | RIGHT_POLL_FD_READWRITE;
    let mut record = [0u8; 24];
    record[0] = FILETYPE_CHARACTER_DEVICE;
    record[8..16].copy_from_slice(&rights.to_le_bytes());
    with_memory(&mut env, |_, memory| {
        errno_of(memory.write_bytes(stat as u32, &record).map(|()| errno::SUCCESS))
    })
}

fn fd_prestat_get(_env: Env<'_>, _fd: i32, _buf: i32) -> i32 {
    errno::BADF
}

fn fd_prestat_dir_name(_env: Env<'_>, _fd: i32, _path: i32, _len: i32) -> i32 {
    errno::BADF
}

fn fd_read(mut env: Env<'_>, fd: i32, _iovs: i32, _iovs_len: i32, nread: i32) -> Result<i32, RuntimeError> {
    if fd != 0 {
        return Ok(errno::BADF);
    }
    // stdin is always empty: end of file.
    with_memory(&mut env, |_, memory| {
        errno_of(memory.write_u32(nread as u32, 0).map(|()| errno::SUCCESS))
    })
}

fn fd_seek(_env: Env<'_>, fd: i32, _offset: i64, _whence: i32, _new_offset: i32) -> i32 {
    if is_stdio(fd) { errno::SPIPE } else { errno::BADF }
}

fn fd_write(mut env: Env<'_>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32) -> Result<i32, RuntimeError> {
    let stream = match fd {
        1 => LogStream::Stdout,
        2 => LogStream::Stderr,
        _ => return Ok(errno::BADF),
    };
    with_memory(&mut env, |guest, memory| {
        let result = memory.gather(iovs as u32, iovs_len as u32).and_then(|bytes| {
            guest.services.output(&guest.name, stream, &bytes);
            memory.write_u32(nwritten as u32, bytes.len() as u32)
        });
        errno_of(result.map(|()| errno::SUCCESS))
    })
}

fn proc_exit(_env: Env<'_>, code: i32) -> Result<(), RuntimeError> {
    Err(RuntimeError::user(Box::new(GuestStop::Exit(code))))
}

fn random_get(mut env: Env<'_>, buf: i32, len: i32) -> Result<i32, RuntimeError> {
    let mut bytes = vec![0u8; len as u32 as usize];
    if getrandom::fill(&mut bytes).is_err() {
        return Ok(errno::NOSYS);
    }
    with_memory(&mut env, |_, memory| {
        errno_of(memory.write_bytes(buf as u32, &bytes).map(|()| errno::SUCCESS))
    })
}

fn sched_yield(mut env: Env<'_>) -> Result<i32, RuntimeError> {
    if let Entry::Resumed(_) = enter(&mut env)? {
        return Ok(errno::SUCCESS);
    }
    if env.data().control.stop_requested() {
        return Err(RuntimeError::user(Box::new(GuestStop::Stopped)));
    }
    if env.data().control.capture_requested() {
        begin_unwind(&mut env, PendingCall::SchedYield)?;
    }
    Ok(errno::SUCCESS)
}

/// One decoded `subscription_t`.
struct Subscription {
    userdata: u64,
    kind: SubscriptionKind,
}

enum SubscriptionKind {
    /// Fires when the virtual monotonic clock reaches this time.
    Clock {
        deadline: Duration,
    },
    Fd {
        event_type: u8,
        fd: u32,
    },
    Invalid {
        event_type: u8,
    },
}

fn read_subscriptions(
    guest: &GuestEnv,
    memory: &GuestMemory<'_>,
    ptr: u32,
    count: u32,
) -> Result<Vec<Subscription>, wasmer::MemoryAccessError> {
    let now_virtual = guest.clock.now();
    let mut subscriptions = Vec::with_capacity(count as usize);
    for index in 0..count {
        let base = ptr + index * SUBSCRIPTION_SIZE;
        let userdata = memory.read_u64(base)?;
        let event_type = memory.read_bytes(base + 8, 1)?[0];
        let kind = match event_type {
            EVENTTYPE_CLOCK => {
                let clock_id = memory.read_u32(base + 16)? as i32;
                let timeout = Duration::from_nanos(memory.read_u64(base + 24)?);
                let absolute = memory.read_u16(base + 40)? & SUBCLOCKFLAG_ABSTIME != 0;
                match (absolute, clock_now(guest, clock_id)) {
                    (_, None) => SubscriptionKind::Invalid { event_type },
                    (false, Some(_)) => SubscriptionKind::Clock {
                        deadline: now_virtual + timeout,
                    },
                    (true, Some(now_on_clock)) => {
                        let remaining = timeout.saturating_sub(Duration::from_nanos(now_on_clock));
                        SubscriptionKind::Clock {
                            deadline: now_virtual + remaining,
                        }
                    }
                }
            }
            EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE => SubscriptionKind::Fd {
                event_type,
                fd: memory.read_u32(base + 16)?,
            },
            other => SubscriptionKind::Invalid { event_type: other },
        };
        subscriptions.push(Subscription { userdata, kind });
    }
    Ok(subscriptions)
}

fn write_event(
    memory: &GuestMemory<'_>,
    ptr: u32,
    userdata: u64,
    error: i32,
    event_type: u8,
    flags: u16,
) -> Result<(), wasmer::MemoryAccessError> {
    let mut event = [0u8; EVENT_SIZE as usize];
    event[0..8].copy_from_slice(&userdata.to_le_bytes());
    event[8..10].copy_from_slice(&(error as u16).to_le_bytes());
    event[10] = event_type;
    event[24..26].copy_from_slice(&flags.to_le_bytes());
    memory.write_bytes(ptr, &event)
}

fn poll_oneoff(mut env: Env<'_>, input: i32, output: i32, count: i32, nevents: i32) -> Result<i32, RuntimeError> {
    let resumed_until = match enter(&mut env)? {
        Entry::Fresh => None,
        Entry::Resumed(PendingCall::Poll { until }) => Some(until),
        Entry::Resumed(other) => {
            return Err(RuntimeError::new(format!(
                "rewound into poll_oneoff but the saved call was {other:?}"
            )));
        }
    };
    if count <= 0 {
        return Ok(errno::INVAL);
    }
    let (input, output, count, nevents) = (input as u32, output as u32, count as u32, nevents as u32);
    let subscriptions = match with_memory(&mut env, |guest, memory| {
        read_subscriptions(guest, memory, input, count)
    })? {
        Ok(subscriptions) => subscriptions,
        Err(_) => return Ok(errno::FAULT),
    };

    // Events that are ready without waiting: stdio and invalid subscriptions.
    let immediate: Vec<(u64, i32, u8, u16)> = subscriptions
        .iter()
        .filter_map(|subscription| match subscription.kind {
            SubscriptionKind::Fd { event_type, fd } if fd <= 2 => {
                let flags = if fd == 0 { EVENTRWFLAG_HANGUP } else { 0 };
                Some((subscription.userdata, errno::SUCCESS, event_type, flags))
            }
            SubscriptionKind::Fd { event_type, .. } => Some((subscription.userdata, errno::BADF, event_type, 0)),
            SubscriptionKind::Invalid { event_type } => Some((subscription.userdata, errno::INVAL, event_type, 0)),
            SubscriptionKind::Clock { .. } => None,
        })
        .collect();

    let events = if !immediate.is_empty() {
        immediate
    } else {
        let earliest = subscriptions
            .iter()
            .filter_map(|subscription| match subscription.kind {
                SubscriptionKind::Clock { deadline } => Some(deadline),
                _ => None,
            })
            .min()
            .unwrap_or_default();
        // A replayed call re-reads relative timeouts from a later "now"; the
        // deadline saved at the unwind is the one that counts.
        let until = resumed_until.unwrap_or(earliest);
        if !sleep_until_virtual(&mut env, until, PendingCall::Poll { until })? {
            return Ok(errno::SUCCESS);
        }
        let now = env.data().clock.now();
        subscriptions
            .iter()
            .filter_map(|subscription| match subscription.kind {
                SubscriptionKind::Clock { deadline } if deadline <= now || deadline == earliest => {
                    Some((subscription.userdata, errno::SUCCESS, EVENTTYPE_CLOCK, 0))
                }
                _ => None,
            })
            .collect()
    };

    with_memory(&mut env, |_, memory| {
        let result = (|| {
            for (index, (userdata, error, event_type, flags)) in events.iter().enumerate() {
                write_event(
                    memory,
                    output + index as u32 * EVENT_SIZE,
                    *userdata,
                    *error,
                    *event_type,
                    *flags,
                )?;
            }
            memory.write_u32(nevents, events.len() as u32)
        })();
        errno_of(result.map(|()| errno::SUCCESS))
    })
}

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
