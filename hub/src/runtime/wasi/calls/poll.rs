//! `poll_oneoff`: clock subscriptions sleep on the function's virtual clock
//! (and may park it); stdio is always ready.

use std::time::Duration;

use wasmer::RuntimeError;

use super::super::abi::{
    EVENT_SIZE, EVENTRWFLAG_HANGUP, EVENTTYPE_CLOCK, EVENTTYPE_FD_READ, EVENTTYPE_FD_WRITE, Errno,
    SUBCLOCKFLAG_ABSTIME, SUBSCRIPTION_CLOCK_FLAGS, SUBSCRIPTION_CLOCK_ID, SUBSCRIPTION_CLOCK_TIMEOUT, SUBSCRIPTION_FD,
    SUBSCRIPTION_SIZE, SUBSCRIPTION_TAG, SUCCESS,
};
use super::super::fds::Descriptor;
use super::Env;
use super::clock::clock_now;
use crate::runtime::guest::{GuestEnv, GuestMemory, MemoryFault, with_memory};
use crate::runtime::snapshot::PendingCall;
use crate::runtime::unwind::{Entry, enter};
use crate::runtime::wait::sleep_until_virtual;

/// Most subscriptions one call takes (`EINVAL` beyond, before anything is
/// read or allocated). wasi-libc's `poll` uses two per descriptor and one
/// for the timeout; the hub has three descriptors.
pub const MAX_SUBSCRIPTIONS: u32 = 4096;

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

/// One event to report: userdata, error, type, fd_readwrite flags.
type Event = (u64, i32, u8, u16);

fn read_subscriptions(
    guest: &GuestEnv,
    memory: &GuestMemory<'_>,
    ptr: u32,
    count: u32,
) -> Result<Vec<Subscription>, MemoryFault> {
    memory.check_array(ptr, count, SUBSCRIPTION_SIZE)?;
    let now_virtual = guest.clock.now();
    let mut subscriptions = Vec::with_capacity(count as usize);
    for index in 0..count {
        // The whole array is inside memory, so no offset passes 2^32.
        let base = ptr + index * SUBSCRIPTION_SIZE;
        let userdata = memory.read_u64(base)?;
        let event_type = memory.read_u8(base + SUBSCRIPTION_TAG)?;
        let kind = match event_type {
            EVENTTYPE_CLOCK => {
                let clock_id = memory.read_u32(base + SUBSCRIPTION_CLOCK_ID)?;
                let timeout = Duration::from_nanos(memory.read_u64(base + SUBSCRIPTION_CLOCK_TIMEOUT)?);
                let absolute = memory.read_u16(base + SUBSCRIPTION_CLOCK_FLAGS)? & SUBCLOCKFLAG_ABSTIME != 0;
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
                fd: memory.read_u32(base + SUBSCRIPTION_FD)?,
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
    (userdata, error, event_type, flags): Event,
) -> Result<(), MemoryFault> {
    let mut event = [0u8; EVENT_SIZE as usize];
    event[0..8].copy_from_slice(&userdata.to_le_bytes());
    event[8..10].copy_from_slice(&(error as u16).to_le_bytes());
    event[10] = event_type;
    event[24..26].copy_from_slice(&flags.to_le_bytes());
    memory.write_bytes(ptr, &event)
}

/// Events that are ready without waiting: stdio and invalid subscriptions.
fn immediate_events(guest: &GuestEnv, subscriptions: &[Subscription]) -> Vec<Event> {
    subscriptions
        .iter()
        .filter_map(|subscription| match subscription.kind {
            SubscriptionKind::Fd { event_type, fd } => Some(match guest.fds.get(fd) {
                Ok(descriptor) => {
                    let flags = if matches!(descriptor, Descriptor::Stdin) {
                        EVENTRWFLAG_HANGUP
                    } else {
                        0
                    };
                    (subscription.userdata, SUCCESS, event_type, flags)
                }
                Err(error) => (subscription.userdata, error.raw(), event_type, 0),
            }),
            SubscriptionKind::Invalid { event_type } => {
                Some((subscription.userdata, Errno::Inval.raw(), event_type, 0))
            }
            SubscriptionKind::Clock { .. } => None,
        })
        .collect()
}

/// `poll_oneoff(in, out, nsubscriptions, nevents)`. Every range is checked
/// first: `in` for `nsubscriptions` subscriptions, `out` for as many events,
/// and `nevents`.
pub fn poll_oneoff(mut env: Env<'_>, input: i32, output: i32, count: i32, nevents: i32) -> Result<i32, RuntimeError> {
    let resumed_until = match enter(&mut env)? {
        Entry::Fresh => None,
        Entry::Resumed(PendingCall::Poll { until }) => Some(until),
        Entry::Resumed(other) => {
            return Err(RuntimeError::new(format!(
                "rewound into poll_oneoff but the saved call was {other:?}"
            )));
        }
    };
    if count <= 0 || count as u32 > MAX_SUBSCRIPTIONS {
        return Ok(Errno::Inval.raw());
    }
    let (input, output, count, nevents) = (input as u32, output as u32, count as u32, nevents as u32);
    let subscriptions = match with_memory(&mut env, |guest, memory| {
        memory.check_array(output, count, EVENT_SIZE)?;
        memory.check(nevents, 4)?;
        read_subscriptions(guest, memory, input, count)
    })? {
        Ok(subscriptions) => subscriptions,
        Err(fault) => return Ok(Errno::from(fault).raw()),
    };

    let immediate = immediate_events(env.data(), &subscriptions);
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
            return Ok(SUCCESS);
        }
        let now = env.data().clock.now();
        subscriptions
            .iter()
            .filter_map(|subscription| match subscription.kind {
                SubscriptionKind::Clock { deadline } if deadline <= now || deadline == earliest => {
                    Some((subscription.userdata, SUCCESS, EVENTTYPE_CLOCK, 0))
                }
                _ => None,
            })
            .collect()
    };

    with_memory(&mut env, |_, memory| {
        let result = (|| {
            // At most one event per subscription: inside the checked `out`.
            for (index, event) in events.iter().enumerate() {
                write_event(memory, output + index as u32 * EVENT_SIZE, *event)?;
            }
            memory.write_u32(nevents, events.len() as u32)
        })();
        match result {
            Ok(()) => SUCCESS,
            Err(fault) => Errno::from(fault).raw(),
        }
    })
}
