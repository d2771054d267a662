use ferry_proto::v1::LogStream;

use super::*;
use crate::runtime::testing::TestGuest;
use crate::runtime::wasi::abi::{FILETYPE_CHARACTER_DEVICE, IOV_MAX};
use crate::runtime::wasi::calls::fd::{
    MAX_WRITE_BYTES, fd_close, fd_fdstat_get, fd_prestat_dir_name, fd_prestat_get, fd_read, fd_seek, fd_write,
};

const IOVS: u32 = 0x100;
const NWRITTEN: u32 = 0x80;
const DATA: u32 = 0x1000;

fn write_call(test: &mut TestGuest, fd: i32, iovs: u32, count: u32, nwritten: u32) -> i32 {
    fd_write(test.env(), fd, iovs as i32, count as i32, nwritten as i32).unwrap()
}

#[test]
fn fd_write_takes_every_iovec_in_order_into_the_stream_of_the_descriptor() {
    let mut test = TestGuest::with_pages(1);
    test.write(DATA, b"hello world");
    test.write_iovecs(IOVS, &[(DATA, 6), (DATA + 6, 0), (DATA + 6, 5)]);
    assert_eq!(write_call(&mut test, 1, IOVS, 3, NWRITTEN), OK);
    assert_eq!(test.read_u32(NWRITTEN), 11);
    assert_eq!(write_call(&mut test, 2, IOVS, 1, NWRITTEN), OK);
    assert_eq!(test.output(LogStream::Stdout), b"hello world");
    assert_eq!(test.output(LogStream::Stderr), b"hello ");
}

#[test]
fn fd_write_to_stdin_or_an_unknown_descriptor_is_ebadf() {
    let mut test = TestGuest::with_pages(1);
    test.write_iovecs(IOVS, &[(DATA, 4)]);
    for fd in [0, 3, -1, i32::MAX] {
        assert_eq!(write_call(&mut test, fd, IOVS, 1, NWRITTEN), EBADF, "fd {fd}");
    }
    assert_eq!(test.output_calls(), 0);
}

#[test]
fn a_write_longer_than_the_cap_is_short_and_nwritten_says_how_much_was_taken() {
    let mut test = TestGuest::with_pages(4);
    let data: Vec<u8> = (0..200_000u32).map(|index| (index % 251) as u8).collect();
    test.write(DATA, &data);
    test.write_iovecs(IOVS, &[(DATA, 100), (DATA + 100, 199_900)]);
    assert_eq!(write_call(&mut test, 1, IOVS, 2, NWRITTEN), OK);
    assert_eq!(test.read_u32(NWRITTEN), MAX_WRITE_BYTES);
    assert_eq!(test.output(LogStream::Stdout), &data[..MAX_WRITE_BYTES as usize]);
}

#[test]
fn iov_max_iovecs_over_one_large_buffer_write_one_capped_piece() {
    // 1024 iovecs naming the same 1 MiB: 1 GiB asked for, 64 KiB taken.
    let mut test = TestGuest::with_pages(64);
    let buffer = 1 << 20;
    test.write(buffer, &[b'x'; 1 << 20]);
    let iovecs = vec![(buffer, 1 << 20); IOV_MAX as usize];
    test.write_iovecs(IOVS, &iovecs);
    assert_eq!(write_call(&mut test, 1, IOVS, IOV_MAX, NWRITTEN), OK);
    assert_eq!(test.read_u32(NWRITTEN), MAX_WRITE_BYTES);
    assert_eq!(test.output_calls(), 1);
    assert_eq!(test.output(LogStream::Stdout), vec![b'x'; MAX_WRITE_BYTES as usize]);
}

#[test]
fn thousands_of_iovecs_are_einval_and_nothing_is_written() {
    let mut test = TestGuest::with_pages(64);
    let iovecs = vec![(DATA, 1 << 20); 4096];
    test.write_iovecs(IOVS, &iovecs);
    for count in [IOV_MAX + 1, 4096, u32::MAX] {
        assert_eq!(
            write_call(&mut test, 1, IOVS, count, NWRITTEN),
            EINVAL,
            "{count} iovecs"
        );
    }
    assert_eq!(test.output_calls(), 0);
    assert_eq!(test.read_u32(NWRITTEN), 0);
}

#[test]
fn an_iovec_array_outside_memory_is_efault() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    // The last entry would straddle the end, start at it, or wrap past 2^32.
    for (iovs, count) in [(end - 12, 2), (end, 1), (0xFFFF_FFF8, 2), (u32::MAX, 1)] {
        assert_eq!(
            write_call(&mut test, 1, iovs, count, NWRITTEN),
            EFAULT,
            "{iovs:#x} x {count}"
        );
    }
    assert_eq!(test.output_calls(), 0);
}

#[test]
fn one_iovec_naming_memory_outside_is_efault_and_nothing_is_written() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    test.write(DATA, b"valid");
    for bad in [
        (end - 4, 8),
        (end, 1),
        (16, 0xFFFF_FF00),
        (0xFFFF_FF00, 0x200),
        (u32::MAX, u32::MAX),
    ] {
        test.write_iovecs(IOVS, &[(DATA, 5), bad]);
        assert_eq!(write_call(&mut test, 1, IOVS, 2, NWRITTEN), EFAULT, "{bad:?}");
    }
    assert_eq!(test.output_calls(), 0);
}

#[test]
fn nwritten_outside_memory_is_efault_and_nothing_is_written() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    test.write_iovecs(IOVS, &[(DATA, 5)]);
    for nwritten in [end - 2, end, u32::MAX] {
        assert_eq!(write_call(&mut test, 1, IOVS, 1, nwritten), EFAULT);
    }
    assert_eq!(test.output_calls(), 0);
}

#[test]
fn an_empty_write_succeeds_with_nothing_recorded() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    test.write_iovecs(IOVS, &[(end, 0)]);
    test.write_u32(NWRITTEN, 99);
    assert_eq!(write_call(&mut test, 1, IOVS, 1, NWRITTEN), OK);
    assert_eq!(write_call(&mut test, 1, end, 0, NWRITTEN), OK);
    assert_eq!(test.read_u32(NWRITTEN), 0);
    assert_eq!(test.output_calls(), 0);
}

#[test]
fn stdin_reads_end_of_file_and_other_descriptors_are_ebadf() {
    let mut test = TestGuest::with_pages(1);
    test.write_iovecs(IOVS, &[(DATA, 100)]);
    test.write_u32(NWRITTEN, 99);
    assert_eq!(fd_read(test.env(), 0, IOVS as i32, 1, NWRITTEN as i32).unwrap(), OK);
    assert_eq!(test.read_u32(NWRITTEN), 0);
    for fd in [1, 2, 3, -1] {
        assert_eq!(fd_read(test.env(), fd, IOVS as i32, 1, NWRITTEN as i32).unwrap(), EBADF);
    }
}

#[test]
fn fd_read_checks_its_iovecs_and_nread_like_fd_write() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    let read = |test: &mut TestGuest, iovs: u32, count: u32, nread: u32| {
        fd_read(test.env(), 0, iovs as i32, count as i32, nread as i32).unwrap()
    };
    test.write_iovecs(IOVS, &[(DATA, 100), (end - 8, 16)]);
    assert_eq!(read(&mut test, IOVS, 2, NWRITTEN), EFAULT);
    assert_eq!(read(&mut test, end - 4, 1, NWRITTEN), EFAULT);
    assert_eq!(read(&mut test, 0xFFFF_FFF8, 2, NWRITTEN), EFAULT);
    assert_eq!(read(&mut test, IOVS, IOV_MAX + 1, NWRITTEN), EINVAL);
    assert_eq!(read(&mut test, IOVS, 1, end - 2), EFAULT);
    assert_eq!(read(&mut test, IOVS, 1, u32::MAX), EFAULT);
}

#[test]
fn fdstat_of_stdio_is_a_character_device_with_read_and_write_rights() {
    let mut test = TestGuest::with_pages(1);
    for fd in 0..3 {
        assert_eq!(fd_fdstat_get(test.env(), fd, 64).unwrap(), OK);
        assert_eq!(test.read(64, 1), [FILETYPE_CHARACTER_DEVICE]);
        let rights = test.read_u64(72);
        assert_eq!(
            rights & 0b100_0010,
            0b100_0010,
            "fd_read and fd_write rights of fd {fd}"
        );
    }
    assert_eq!(fd_fdstat_get(test.env(), 3, 64).unwrap(), EBADF);
}

#[test]
fn fdstat_outside_memory_is_efault_and_writes_nothing() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    for ptr in [end - 16, end, 0xFFFF_FFF0, u32::MAX] {
        assert_eq!(fd_fdstat_get(test.env(), 1, ptr as i32).unwrap(), EFAULT);
    }
    assert_eq!(test.read(end - 16, 16), [0; 16]);
}

#[test]
fn stdio_cannot_seek_or_be_closed_away_and_has_no_preopened_directories() {
    let mut test = TestGuest::with_pages(1);
    for fd in 0..3 {
        assert_eq!(fd_seek(test.env(), fd, 0, 0, -1).unwrap(), ESPIPE);
        assert_eq!(fd_close(test.env(), fd), OK);
        assert_eq!(fd_prestat_get(test.env(), fd, -1).unwrap(), EBADF);
        assert_eq!(fd_prestat_dir_name(test.env(), fd, -1, -1).unwrap(), EBADF);
    }
    assert_eq!(fd_seek(test.env(), 3, 0, 0, 0).unwrap(), EBADF);
    assert_eq!(fd_close(test.env(), 3), EBADF);
    // Still writable after the close.
    test.write(DATA, b"after");
    test.write_iovecs(IOVS, &[(DATA, 5)]);
    assert_eq!(write_call(&mut test, 1, IOVS, 1, NWRITTEN), OK);
    assert_eq!(test.output(LogStream::Stdout), b"after");
}
