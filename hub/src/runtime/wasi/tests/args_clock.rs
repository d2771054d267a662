use super::*;
use crate::runtime::testing::TestGuest;
use crate::runtime::wasi::abi::{CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME, CLOCK_REALTIME, CLOCK_THREAD_CPUTIME};
use crate::runtime::wasi::calls::args::{args_get, args_sizes_get, environ_get, environ_sizes_get};
use crate::runtime::wasi::calls::clock::{clock_res_get, clock_time_get};

#[test]
fn args_sizes_get_and_args_get_write_the_arguments_the_function_was_started_with() {
    let mut test = TestGuest::with_pages(1);
    assert_eq!(args_sizes_get(test.env(), 0, 4).unwrap(), OK);
    assert_eq!((test.read_u32(0), test.read_u32(4)), (2, 9));
    assert_eq!(args_get(test.env(), 100, 200).unwrap(), OK);
    assert_eq!((test.read_u32(100), test.read_u32(104)), (200, 205));
    assert_eq!(test.read(200, 9), b"test\0one\0");
}

#[test]
fn environ_sizes_get_and_environ_get_write_the_environment() {
    let mut test = TestGuest::with_pages(1);
    assert_eq!(environ_sizes_get(test.env(), 0, 4).unwrap(), OK);
    assert_eq!((test.read_u32(0), test.read_u32(4)), (1, 12));
    assert_eq!(environ_get(test.env(), 100, 200).unwrap(), OK);
    assert_eq!(test.read_u32(100), 200);
    assert_eq!(test.read(200, 12), b"COLOUR=blue\0");
}

#[test]
fn args_get_with_the_pointer_array_past_the_end_is_efault_and_writes_no_string() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    // Two pointers need 8 bytes; 4 are left.
    assert_eq!(args_get(test.env(), (end - 4) as i32, 200).unwrap(), EFAULT);
    assert_eq!(test.read(200, 9), [0; 9]);
    assert_eq!(test.read(end - 4, 4), [0; 4]);
}

#[test]
fn args_get_and_environ_get_with_a_string_buffer_outside_memory_are_efault_and_write_no_pointer() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    for buffer in [end - 8, end, 0xFFFF_FFFC, u32::MAX] {
        assert_eq!(args_get(test.env(), 100, buffer as i32).unwrap(), EFAULT, "{buffer:#x}");
        assert_eq!(
            environ_get(test.env(), 100, buffer as i32).unwrap(),
            EFAULT,
            "{buffer:#x}"
        );
        assert_eq!(test.read(100, 8), [0; 8]);
    }
}

#[test]
fn sizes_calls_with_either_pointer_outside_memory_are_efault_and_write_neither() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    for (first, second) in [(end - 2, 0), (0, end - 2), (0xFFFF_FFFE, 0), (0, u32::MAX)] {
        test.write_u64(0, u64::MAX);
        assert_eq!(args_sizes_get(test.env(), first as i32, second as i32).unwrap(), EFAULT);
        assert_eq!(
            environ_sizes_get(test.env(), first as i32, second as i32).unwrap(),
            EFAULT
        );
        assert_eq!(test.read_u64(0), u64::MAX, "({first:#x}, {second:#x}) wrote something");
    }
}

#[test]
fn every_clock_has_a_time_and_a_microsecond_resolution() {
    let mut test = TestGuest::with_pages(1);
    for id in [
        CLOCK_REALTIME,
        CLOCK_MONOTONIC,
        CLOCK_PROCESS_CPUTIME,
        CLOCK_THREAD_CPUTIME,
    ] {
        assert_eq!(clock_res_get(test.env(), id as i32, 8).unwrap(), OK);
        assert_eq!(test.read_u64(8), 1_000);
        assert_eq!(clock_time_get(test.env(), id as i32, 0, 16).unwrap(), OK);
    }
    // Realtime is the host's: after 2001-09-09 (10^18 ns since the epoch).
    assert_eq!(clock_time_get(test.env(), CLOCK_REALTIME as i32, 0, 16).unwrap(), OK);
    assert!(test.read_u64(16) > 1_000_000_000_000_000_000);
}

#[test]
fn an_unknown_clock_is_einval_even_with_a_bad_pointer() {
    let mut test = TestGuest::with_pages(1);
    for id in [4, -1, i32::MAX] {
        assert_eq!(clock_res_get(test.env(), id, 8).unwrap(), EINVAL);
        assert_eq!(clock_time_get(test.env(), id, 0, 8).unwrap(), EINVAL);
        assert_eq!(clock_time_get(test.env(), id, 0, -1).unwrap(), EINVAL);
    }
}

#[test]
fn clock_results_outside_memory_are_efault() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    for ptr in [end - 4, end, 0xFFFF_FFFC, u32::MAX] {
        assert_eq!(
            clock_res_get(test.env(), CLOCK_MONOTONIC as i32, ptr as i32).unwrap(),
            EFAULT
        );
        assert_eq!(
            clock_time_get(test.env(), CLOCK_MONOTONIC as i32, 0, ptr as i32).unwrap(),
            EFAULT
        );
    }
    assert_eq!(test.read(end - 4, 4), [0; 4]);
}
