//! The `ferry` calls that take guest memory, on a real Wasmer memory, with
//! well-behaved and hostile arguments.

use std::sync::Arc;

use ferry_proto::v1::LogStream;
use tokio::sync::oneshot;
use wasmer::RuntimeError;

use super::*;
use crate::runtime::testing::TestGuest;
use crate::runtime::{Message, Undelivered};

const TEXT: u32 = 0x1000;

/// The call a trap names when it is a bad pointer, and the reason shown.
fn bad_pointer_call(result: Result<impl std::fmt::Debug, RuntimeError>) -> (&'static str, String) {
    let error = result.expect_err("the call traps");
    match error.downcast_ref::<GuestStop>() {
        Some(stop @ GuestStop::BadPointer { call, .. }) => (call, stop.to_string()),
        other => panic!("expected a bad pointer, got {other:?} ({error})"),
    }
}

/// `(ptr, len)` pairs naming memory outside a one-page guest.
fn outside(end: u32) -> [(u32, u32); 5] {
    [
        (end - 4, 8),
        (end, 1),
        (16, 0xFFFF_FF00),
        (0xFFFF_FFF0, 0x20),
        (u32::MAX, u32::MAX),
    ]
}

#[test]
fn log_writes_one_labelled_line() {
    let mut test = TestGuest::with_pages(1);
    test.write(TEXT, b"hello");
    log(test.env(), 3, TEXT as i32, 5).unwrap();
    log(test.env(), 9, TEXT as i32, 0).unwrap();
    assert_eq!(test.output(LogStream::GuestLog), b"[info] hello\n[log] \n");
}

#[test]
fn a_log_text_longer_than_the_cap_keeps_its_first_64_kib() {
    let mut test = TestGuest::with_pages(4);
    let text: Vec<u8> = (0..150_000u32).map(|index| b'a' + (index % 26) as u8).collect();
    test.write(TEXT, &text);
    log(test.env(), 1, TEXT as i32, text.len() as i32).unwrap();
    let mut expected = b"[error] ".to_vec();
    expected.extend_from_slice(&text[..MAX_LOG_BYTES as usize]);
    expected.push(b'\n');
    assert_eq!(test.output(LogStream::GuestLog), expected);
}

#[test]
fn log_of_memory_outside_the_guest_fails_it_naming_the_call_and_the_range() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    for (ptr, len) in outside(end) {
        let (call, reason) = bad_pointer_call(log(test.env(), 3, ptr as i32, len as i32));
        assert_eq!(call, "ferry.log");
        assert!(reason.contains(&format!("{ptr:#x}")), "{reason}");
    }
    let (_, reason) = bad_pointer_call(log(test.env(), 3, 0xFFFF_FFF0_u32 as i32, 0x20));
    assert_eq!(
        reason,
        "guest passed memory outside its linear memory to ferry.log: \
         32 bytes at 0xfffffff0 wrap past the end of the 32-bit address space"
    );
    assert_eq!(test.output_calls(), 0);
}

#[test]
fn reply_sends_the_bytes_to_the_waiting_caller_once() {
    let mut test = TestGuest::with_pages(1);
    test.write(TEXT, b"pong");
    let (caller, answer) = oneshot::channel();
    test.guest().caller = Some(Caller::Here(caller));
    assert_eq!(reply(test.env(), TEXT as i32, 4).unwrap(), 0);
    assert_eq!(answer.blocking_recv().unwrap(), Ok(b"pong".to_vec()));
    assert_eq!(reply(test.env(), TEXT as i32, 4).unwrap(), FERRY_NO_CALLER);
}

#[test]
fn reply_of_memory_outside_the_guest_fails_it_and_leaves_the_caller_waiting() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    let (caller, _answer) = oneshot::channel();
    test.guest().caller = Some(Caller::Here(caller));
    for (ptr, len) in outside(end) {
        assert_eq!(
            bad_pointer_call(reply(test.env(), ptr as i32, len as i32)).0,
            "ferry.reply"
        );
    }
    assert!(test.guest().caller.is_some());
}

#[test]
fn send_delivers_to_a_known_function_and_refuses_unknown_and_overlong_names() {
    let mut test = TestGuest::with_pages(1);
    test.write(TEXT, b"peer");
    test.write(TEXT + 0x100, b"payload");
    let data = (TEXT + 0x100) as i32;
    assert_eq!(send(test.env(), TEXT as i32, 4, data, 7).unwrap(), 0);
    assert_eq!(
        send(test.env(), TEXT as i32, 3, data, 7).unwrap(),
        Undelivered::NoSuchFunction.code()
    );
    // A name in memory but longer than any function's is never read.
    assert_eq!(
        send(test.env(), 0, 300, data, 7).unwrap(),
        Undelivered::NoSuchFunction.code()
    );
    let sent = test.services.sent.lock().unwrap().clone();
    assert_eq!(sent, [("peer".to_owned(), b"payload".to_vec())]);
}

#[test]
fn more_than_16_mib_is_neither_sent_nor_replied_nor_cut_short() {
    // 16 MiB + 1 byte of memory, all of it in range (pages of 64 KiB).
    let mut test = TestGuest::with_pages(257);
    test.write(TEXT, b"peer");
    let big = (MAX_MESSAGE_BYTES + 1) as i32;
    let (caller, answer) = oneshot::channel();
    test.guest().caller = Some(Caller::Here(caller));
    assert_eq!(reply(test.env(), 0, big).unwrap(), Undelivered::TooBig.code());
    assert_eq!(
        send(test.env(), TEXT as i32, 4, 0, big).unwrap(),
        Undelivered::TooBig.code()
    );
    let reply_at = (TEXT + 0x100) as i32;
    assert_eq!(
        call(test.env(), TEXT as i32, 4, 0, big, reply_at, 16, 1000).unwrap(),
        Undelivered::TooBig.code()
    );
    assert!(test.services.sent.lock().unwrap().is_empty());
    // The caller still waits, and takes a reply that fits.
    assert_eq!(reply(test.env(), 0, MAX_MESSAGE_BYTES as i32).unwrap(), 0);
    assert_eq!(
        answer.blocking_recv().unwrap().unwrap().len(),
        MAX_MESSAGE_BYTES as usize
    );
}

#[test]
fn send_with_either_range_outside_the_guest_fails_it_and_sends_nothing() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    test.write(TEXT, b"peer");
    for (ptr, len) in outside(end) {
        let (ptr, len) = (ptr as i32, len as i32);
        assert_eq!(
            bad_pointer_call(send(test.env(), TEXT as i32, 4, ptr, len)).0,
            "ferry.send"
        );
        assert_eq!(
            bad_pointer_call(send(test.env(), ptr, len, TEXT as i32, 4)).0,
            "ferry.send"
        );
    }
    assert!(test.services.sent.lock().unwrap().is_empty());
}

#[test]
fn call_writes_the_reply_it_waited_for_and_returns_its_whole_length() {
    let mut test = TestGuest::with_pages(1);
    test.write(TEXT, b"peer");
    test.write(TEXT + 0x100, b"abc");
    let (name, data, reply) = (TEXT as i32, (TEXT + 0x100) as i32, (TEXT + 0x200) as i32);
    assert_eq!(call(test.env(), name, 4, data, 3, reply, 16, 1000).unwrap(), 3);
    assert_eq!(test.read(TEXT + 0x200, 3), b"cba");
    // A reply longer than the buffer is cut to it; its length says so.
    test.write(TEXT + 0x200, b"....");
    assert_eq!(call(test.env(), name, 4, data, 3, reply, 2, 1000).unwrap(), 3);
    assert_eq!(test.read(TEXT + 0x200, 4), b"cb..");
    assert_eq!(
        call(test.env(), name, 3, data, 3, reply, 16, 1000).unwrap(),
        Undelivered::NoSuchFunction.code()
    );
    assert_eq!(
        call(test.env(), 0, 300, data, 3, reply, 16, 1000).unwrap(),
        Undelivered::NoSuchFunction.code()
    );
    assert_eq!(test.services.sent.lock().unwrap().len(), 2);
}

#[test]
fn call_with_any_range_outside_the_guest_fails_it_and_sends_nothing() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    test.write(TEXT, b"peer");
    let (name, data) = (TEXT as i32, (TEXT + 0x100) as i32);
    for (ptr, len) in outside(end) {
        let (ptr, len) = (ptr as i32, len as i32);
        for result in [
            call(test.env(), ptr, len, data, 1, data, 1, 1000),
            call(test.env(), name, 4, ptr, len, data, 1, 1000),
            call(test.env(), name, 4, data, 1, ptr, len, 1000),
        ] {
            assert_eq!(bad_pointer_call(result).0, "ferry.call");
        }
    }
    assert!(test.services.sent.lock().unwrap().is_empty());
}

#[test]
fn a_function_waiting_for_a_reply_still_stops_when_asked() {
    let mut test = TestGuest::with_pages(1);
    test.write(TEXT, b"silent");
    let control = Arc::clone(&test.guest().control);
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        control.request_stop();
    });
    let result = call(test.env(), TEXT as i32, 6, TEXT as i32, 1, TEXT as i32, 1, -1);
    stopper.join().unwrap();
    let error = result.expect_err("the stop ends the call");
    assert!(
        matches!(error.downcast_ref::<GuestStop>(), Some(GuestStop::Stopped)),
        "{error}"
    );
    // The reply that comes after the stop goes nowhere.
    let answer = test.services.silent.lock().unwrap().pop().unwrap();
    assert!(answer.send(Ok(b"late".to_vec())).is_err());
}

fn deliver(test: &mut TestGuest, data: &[u8]) {
    test.guest()
        .control
        .deliver(Message {
            data: data.to_vec(),
            reply_to: None,
        })
        .unwrap();
}

#[test]
fn recv_copies_a_message_that_fits_and_reports_the_size_of_one_that_does_not() {
    let mut test = TestGuest::with_pages(1);
    deliver(&mut test, b"twelve bytes");
    assert_eq!(recv(test.env(), TEXT as i32, 4, 0).unwrap(), 12);
    assert_eq!(test.read(TEXT, 4), [0; 4]);
    assert_eq!(recv(test.env(), TEXT as i32, 12, 0).unwrap(), 12);
    assert_eq!(test.read(TEXT, 12), b"twelve bytes");
    assert_eq!(recv(test.env(), TEXT as i32, 12, 0).unwrap(), FERRY_TIMEOUT);
}

#[test]
fn recv_into_memory_outside_the_guest_fails_it_and_keeps_the_message() {
    let mut test = TestGuest::with_pages(1);
    let end = test.size();
    deliver(&mut test, b"kept");
    for (ptr, cap) in outside(end) {
        assert_eq!(
            bad_pointer_call(recv(test.env(), ptr as i32, cap as i32, 0)).0,
            "ferry.recv"
        );
    }
    assert_eq!(test.guest().control.peek_message_len(), Some(4));
}
