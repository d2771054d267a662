use super::*;
use crate::runtime::testing::TestGuest;
use crate::runtime::wasi::abi::{
    CLOCK_MONOTONIC, EVENT_SIZE, EVENTRWFLAG_HANGUP, EVENTTYPE_CLOCK, EVENTTYPE_FD_READ, EVENTTYPE_FD_WRITE,
    SUBSCRIPTION_SIZE,
};
use crate::runtime::wasi::calls::poll::{MAX_SUBSCRIPTIONS, poll_oneoff};

const IN: u32 = 0x1000;
const OUT: u32 = 0x4000;
const NEVENTS: u32 = 0x80;

/// One decoded event: userdata, error, type, flags.
type Event = (u64, u16, u8, u16);

fn clock_subscription(test: &TestGuest, index: u32, userdata: u64, clock: u32, timeout_nanos: u64) {
    let base = IN + index * SUBSCRIPTION_SIZE;
    test.write_u64(base, userdata);
    test.write(base + 8, &[EVENTTYPE_CLOCK]);
    test.write_u32(base + 16, clock);
    test.write_u64(base + 24, timeout_nanos);
}

fn fd_subscription(test: &TestGuest, index: u32, userdata: u64, event_type: u8, fd: u32) {
    let base = IN + index * SUBSCRIPTION_SIZE;
    test.write_u64(base, userdata);
    test.write(base + 8, &[event_type]);
    test.write_u32(base + 16, fd);
}

fn poll(test: &mut TestGuest, input: u32, output: u32, count: u32, nevents: u32) -> i32 {
    poll_oneoff(test.env(), input as i32, output as i32, count as i32, nevents as i32).unwrap()
}

fn events(test: &TestGuest) -> Vec<Event> {
    (0..test.read_u32(NEVENTS))
        .map(|index| {
            let base = OUT + index * EVENT_SIZE;
            let error = u16::from_le_bytes(test.read(base + 8, 2).try_into().unwrap());
            let flags = u16::from_le_bytes(test.read(base + 24, 2).try_into().unwrap());
            (test.read_u64(base), error, test.read(base + 10, 1)[0], flags)
        })
        .collect()
}

#[test]
fn a_clock_subscription_that_has_expired_fires_at_once() {
    let mut test = TestGuest::with_pages(1);
    clock_subscription(&test, 0, 42, CLOCK_MONOTONIC, 0);
    assert_eq!(poll(&mut test, IN, OUT, 1, NEVENTS), OK);
    assert_eq!(events(&test), [(42, 0, EVENTTYPE_CLOCK, 0)]);
}

#[test]
fn stdio_is_ready_at_once_stdin_hung_up_and_other_subscriptions_report_their_error() {
    let mut test = TestGuest::with_pages(1);
    fd_subscription(&test, 0, 1, EVENTTYPE_FD_READ, 0);
    fd_subscription(&test, 1, 2, EVENTTYPE_FD_WRITE, 1);
    fd_subscription(&test, 2, 3, EVENTTYPE_FD_WRITE, 9);
    clock_subscription(&test, 3, 4, 77, 0);
    fd_subscription(&test, 4, 5, 200, 0);
    // A clock that has not expired does not hold the ready ones back.
    clock_subscription(&test, 5, 6, CLOCK_MONOTONIC, u64::MAX);
    assert_eq!(poll(&mut test, IN, OUT, 6, NEVENTS), OK);
    assert_eq!(
        events(&test),
        [
            (1, 0, EVENTTYPE_FD_READ, EVENTRWFLAG_HANGUP),
            (2, 0, EVENTTYPE_FD_WRITE, 0),
            (3, EBADF as u16, EVENTTYPE_FD_WRITE, 0),
            (4, EINVAL as u16, EVENTTYPE_CLOCK, 0),
            (5, EINVAL as u16, 200, 0),
        ]
    );
}

#[test]
fn no_subscriptions_or_more_than_the_limit_is_einval_before_reading_anything() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    for count in [0, MAX_SUBSCRIPTIONS + 1, u32::MAX, i32::MAX as u32] {
        // Even with every pointer outside memory: the count is checked first.
        assert_eq!(poll(&mut test, end, end, count, end), EINVAL, "{count} subscriptions");
    }
}

#[test]
fn a_subscription_array_outside_memory_is_efault() {
    let mut test = TestGuest::with_pages(4);
    let end = test.size();
    // The event arrays fit (at 0, 128 KiB for the most subscriptions); the subscriptions do not.
    let out = 0x100;
    for (input, count) in [
        (end - SUBSCRIPTION_SIZE, 2),
        (end, 1),
        (0xFFFF_FFF0, 1),
        (128 << 10, MAX_SUBSCRIPTIONS),
    ] {
        assert_eq!(poll(&mut test, input, out, count, 0), EFAULT, "{count} at {input:#x}");
    }
}

#[test]
fn an_event_array_too_small_for_every_subscription_is_efault_and_nothing_is_written() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    clock_subscription(&test, 0, 1, CLOCK_MONOTONIC, 0);
    clock_subscription(&test, 1, 2, CLOCK_MONOTONIC, u64::MAX);
    // Room for one event, not for two (though only one would fire).
    for output in [end - EVENT_SIZE, end, 0xFFFF_FFE0, u32::MAX] {
        assert_eq!(poll(&mut test, IN, output, 2, NEVENTS), EFAULT, "out at {output:#x}");
    }
    assert_eq!(test.read(end - EVENT_SIZE, EVENT_SIZE), vec![0; EVENT_SIZE as usize]);
    assert_eq!(test.read_u32(NEVENTS), 0);
}

#[test]
fn nevents_outside_memory_is_efault() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    clock_subscription(&test, 0, 1, CLOCK_MONOTONIC, 0);
    for nevents in [end - 2, end, u32::MAX] {
        assert_eq!(poll(&mut test, IN, OUT, 1, nevents), EFAULT);
    }
    assert_eq!(test.read(OUT, EVENT_SIZE), vec![0; EVENT_SIZE as usize]);
}

#[test]
fn the_most_subscriptions_allowed_are_all_read() {
    let mut test = TestGuest::with_pages(8);
    for index in 0..MAX_SUBSCRIPTIONS {
        fd_subscription(&test, index, u64::from(index), EVENTTYPE_FD_WRITE, 1);
    }
    let out = IN + MAX_SUBSCRIPTIONS * SUBSCRIPTION_SIZE;
    assert_eq!(poll(&mut test, IN, out, MAX_SUBSCRIPTIONS, NEVENTS), OK);
    assert_eq!(test.read_u32(NEVENTS), MAX_SUBSCRIPTIONS);
    let last = out + (MAX_SUBSCRIPTIONS - 1) * EVENT_SIZE;
    assert_eq!(test.read_u64(last), u64::from(MAX_SUBSCRIPTIONS - 1));
}
