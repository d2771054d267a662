//! The host-side state of one running function (the `FunctionEnv` of its
//! Wasmer store) and safe accessors for its linear memory.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::v1::LogStream;
use thiserror::Error;
use wasmer::{FunctionEnvMut, Memory, MemoryView, RuntimeError, WasmSlice};

use super::clock::VirtualClock;
use super::control::{Caller, FunctionControl, ReplyAddress, ReplyTo};
use super::cpu::{CpuAccount, CpuGovernor, CpuMeter};
use super::rewind::RewindModule;
use super::snapshot::PendingCall;
use super::unwind::{AsyncifyHooks, Phase};
use super::wasi::fds::FdTable;

/// What a running function needs from the rest of the hub.
pub trait HostServices: Send + Sync {
    /// Records guest output (stdout, stderr, log lines).
    fn output(&self, function: &str, stream: LogStream, data: &[u8]);
    /// Puts a fire-and-forget message into another function's inbox, on
    /// this hub or another. `data` is the guest's own memory: it is copied
    /// only if an inbox or the network takes it.
    fn send(&self, from: &str, to: &str, data: &[u8]) -> Delivery;
    /// Sends `data` to the function `to`, wherever it runs, and waits (at
    /// most `timeout`, the hub's default when absent) for its reply.
    fn call(&self, from: &str, to: &str, data: Vec<u8>, timeout: Option<Duration>) -> Delivery {
        let _ = (from, to, data, timeout);
        Delivery::Done(Err(Undelivered::NoSuchFunction))
    }
    /// Sequence number the function's next output entry will get.
    fn log_position(&self, function: &str) -> u64;
    /// Keeps the waiter of an invocation `function` is handling while the
    /// function is moved or suspended; `None` if this hub cannot (the
    /// waiter then hears that no reply comes).
    fn keep_reply(&self, function: &str, reply_to: ReplyTo) -> Option<ReplyAddress> {
        let _ = (function, reply_to);
        None
    }
    /// Sends `function`'s reply to a waiter [`keep_reply`](Self::keep_reply)
    /// kept, on this hub or another; the function does not wait for it.
    fn reply_away(&self, function: &str, to: ReplyAddress, data: Vec<u8>) {
        let _ = (function, to, data);
    }
    /// Keeps the outcome of a message `function` sent (`ferry.call`,
    /// `ferry.send`) while the function is captured before it came; its
    /// address. `None` if this hub cannot (the outcome is dropped, and the
    /// replayed call hears that it failed).
    fn keep_outcome(&self, function: &str, outcome: std::sync::mpsc::Receiver<Sent>) -> Option<ReplyAddress> {
        let _ = (function, outcome);
        None
    }
    /// Takes back an outcome [`keep_outcome`](Self::keep_outcome) kept, on
    /// this hub or another, for the replayed call to wait on.
    fn take_outcome(&self, function: &str, kept: ReplyAddress) -> Delivery {
        let _ = (function, kept);
        Delivery::Done(Err(Undelivered::Failed))
    }
}

/// What became of a message: the reply (empty for `ferry.send`), or why
/// there is none.
pub type Sent = Result<Vec<u8>, Undelivered>;

/// A message's fate, known now or later (when it travels to another hub or
/// waits for a reply). The guest's thread waits for the later one.
#[derive(Debug)]
pub enum Delivery {
    Done(Sent),
    Waiting(std::sync::mpsc::Receiver<Sent>),
}

/// `FERRY_TOO_BIG` in ferry.h: more than 16 MiB of data, nothing sent.
pub const FERRY_TOO_BIG: i32 = -7;

/// Why a message was not delivered or answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undelivered {
    NoSuchFunction,
    InboxFull,
    /// A messaging rule of the sender or the receiver forbids it.
    Denied,
    /// The time to deliver or answer it ran out.
    TimedOut,
    /// The target stopped, failed or ended without replying, or its hub
    /// could not be reached.
    Failed,
    /// More than [`MAX_MESSAGE_BYTES`](crate::runtime::MAX_MESSAGE_BYTES)
    /// of data: nothing was sent.
    TooBig,
}

impl Undelivered {
    /// Its error code in the `ferry` API (`FERRY_*` in ferry.h).
    pub fn code(self) -> i32 {
        match self {
            Undelivered::TimedOut => -1,
            Undelivered::NoSuchFunction => -3,
            Undelivered::InboxFull => -4,
            Undelivered::Denied => -5,
            Undelivered::Failed => -6,
            Undelivered::TooBig => FERRY_TOO_BIG,
        }
    }

    /// The reason with error code `code` (an unknown code: `Failed`).
    pub fn from_code(code: i32) -> Undelivered {
        [
            Undelivered::TimedOut,
            Undelivered::NoSuchFunction,
            Undelivered::InboxFull,
            Undelivered::Denied,
        ]
        .into_iter()
        .find(|reason| reason.code() == code)
        .unwrap_or(Undelivered::Failed)
    }
}

/// Why a guest stopped running other than by returning from `_start`.
/// Carried through Wasmer as a user error of a trap.
#[derive(Debug, Error)]
pub enum GuestStop {
    #[error("exited with code {0}")]
    Exit(i32),
    #[error("stopped by the hub")]
    Stopped,
    #[error("memory limit exceeded: growing to {requested_bytes} bytes, limit is {limit_bytes} bytes")]
    MemoryLimit { requested_bytes: u64, limit_bytes: u64 },
    #[error("guest passed memory outside its linear memory to {call}: {fault}")]
    BadPointer { call: &'static str, fault: MemoryFault },
}

/// Host-side state of one function instance.
pub struct GuestEnv {
    pub name: String,
    pub memory: Option<Memory>,
    pub control: Arc<FunctionControl>,
    pub services: Arc<dyn HostServices>,
    pub args: Vec<String>,
    pub environ: Vec<String>,
    /// Open descriptors: stdio, preopens, what the guest opened.
    pub fds: FdTable,
    pub clock: VirtualClock,
    pub cpu: CpuMeter,
    /// What this run charged to the quotas, and its own cap.
    pub cpu_account: CpuAccount,
    /// The hub's quota (absent in tests that run a guest alone).
    pub governor: Option<Arc<CpuGovernor>>,
    pub memory_limit_bytes: u64,
    /// Where the reply to the message last returned by `ferry.recv` goes.
    pub caller: Option<Caller>,
    /// Unsupported WASI calls already logged (each is logged once).
    pub unsupported_reported: HashSet<String>,
    /// Asyncify's exports (absent only while type-checking imports).
    pub asyncify: Option<AsyncifyHooks>,
    pub phase: Phase,
    /// The call being unwound from, or to be resumed at the rewind.
    pub pending: Option<PendingCall>,
    /// Whether long waits may park the function: unwind it so the hub can
    /// release the instance and its thread and restore it when it can go on.
    pub may_park: bool,
    /// The current unwind parks the function (rather than capturing it).
    pub parking: bool,
    /// The rewind module a checkpoint's rewind will need: until it is
    /// compiled, preemption points postpone checkpoints (the function runs
    /// on instead of waiting, unwound, for the compile).
    pub rewind: Option<Arc<RewindModule>>,
}

impl GuestEnv {
    /// Whether to let a capture wait for the next preemption point: every
    /// pending request continues the run (so the rewind needs the rewind
    /// module at once) and the rewind module is still being compiled. (A
    /// pause never waits for the function to answer the invocation it is
    /// handling: the reply finds its waiter wherever the function goes.)
    pub fn postpone_capture(&self) -> bool {
        self.rewind.as_ref().is_some_and(|rewind| !rewind.is_compiled()) && self.control.captures_all_continue()
    }

    /// Whether a blocking call that still has `remaining` to wait (or no
    /// deadline) should park the function instead of holding its thread.
    /// Parking costs a copy of the memory out and back in, so a larger
    /// memory needs a longer wait to be worth it; a function holding an
    /// unanswered invocation never parks (its reply channel lives here),
    /// nor does one whose effects are held (the parked snapshot's log
    /// position would not count the output kept for the commit).
    pub fn should_park(&self, remaining: Option<Duration>, memory_bytes: u64) -> bool {
        if !self.may_park || self.caller.is_some() || self.control.effects().is_held() {
            return false;
        }
        // About 256 MiB copied per second, both ways, with a floor.
        let worth_it = PARK_AFTER.max(Duration::from_micros(memory_bytes / 128));
        remaining.is_none_or(|remaining| remaining >= worth_it)
    }
}

/// How long a blocking call waits on its thread before it considers parking.
pub const PARK_AFTER: Duration = Duration::from_millis(200);

impl GuestEnv {
    /// Publishes CPU time and memory size for `ferry ps`.
    pub fn publish_counters(&self, view: &MemoryView<'_>) {
        self.publish_counters_at(view, self.cpu.used());
    }

    /// [`publish_counters`](Self::publish_counters) with the CPU meter read already.
    pub fn publish_counters_at(&self, view: &MemoryView<'_>, cpu_used: Duration) {
        self.control
            .set_cpu_micros(u64::try_from(cpu_used.as_micros()).unwrap_or(u64::MAX));
        self.control.set_memory_bytes(view.data_size());
    }
}

/// A guest-supplied pointer and length that do not lie inside the guest's
/// linear memory. Found before anything is read, written or allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MemoryFault {
    #[error("{len} bytes at {ptr:#x} wrap past the end of the 32-bit address space")]
    Wraps { ptr: u32, len: u64 },
    #[error("{len} bytes at {ptr:#x} end beyond the {memory_bytes} bytes of memory")]
    OutOfBounds { ptr: u32, len: u64, memory_bytes: u64 },
}

/// Bounds-checked little-endian access to a guest's linear memory. Every
/// access checks `ptr + len` (in 64 bits, so a range that wraps past 2^32
/// is caught) against the memory's size before it touches anything, and
/// nothing here allocates more than the caller asked for after that check.
pub struct GuestMemory<'a> {
    view: MemoryView<'a>,
}

impl<'a> GuestMemory<'a> {
    pub fn new(view: MemoryView<'a>) -> GuestMemory<'a> {
        GuestMemory { view }
    }

    /// Size of the memory in bytes.
    pub fn size(&self) -> u64 {
        self.view.data_size()
    }

    /// Checks that `len` bytes at `ptr` lie inside the memory.
    pub fn check(&self, ptr: u32, len: u64) -> Result<(), MemoryFault> {
        let end = u64::from(ptr) + len;
        if end > 1 << 32 {
            return Err(MemoryFault::Wraps { ptr, len });
        }
        let memory_bytes = self.size();
        if end > memory_bytes {
            return Err(MemoryFault::OutOfBounds { ptr, len, memory_bytes });
        }
        Ok(())
    }

    /// Checks that an array of `count` elements of `element_bytes` each at
    /// `ptr` lies inside the memory.
    pub fn check_array(&self, ptr: u32, count: u32, element_bytes: u32) -> Result<(), MemoryFault> {
        self.check(ptr, u64::from(count) * u64::from(element_bytes))
    }

    /// Fills `buffer` from the memory at `ptr`.
    pub fn read_into(&self, ptr: u32, buffer: &mut [u8]) -> Result<(), MemoryFault> {
        let len = buffer.len() as u64;
        self.check(ptr, len)?;
        self.view.read(u64::from(ptr), buffer).map_err(|_| self.fault(ptr, len))
    }

    /// Copies `len` bytes at `ptr` out of the memory; the range is checked
    /// before the buffer is allocated.
    pub fn read_bytes(&self, ptr: u32, len: u32) -> Result<Vec<u8>, MemoryFault> {
        self.check(ptr, u64::from(len))?;
        let mut buffer = vec![0; len as usize];
        self.read_into(ptr, &mut buffer)?;
        Ok(buffer)
    }

    pub fn read_u8(&self, ptr: u32) -> Result<u8, MemoryFault> {
        let mut bytes = [0; 1];
        self.read_into(ptr, &mut bytes)?;
        Ok(bytes[0])
    }

    pub fn read_u16(&self, ptr: u32) -> Result<u16, MemoryFault> {
        let mut bytes = [0; 2];
        self.read_into(ptr, &mut bytes)?;
        Ok(u16::from_le_bytes(bytes))
    }

    pub fn read_u32(&self, ptr: u32) -> Result<u32, MemoryFault> {
        let mut bytes = [0; 4];
        self.read_into(ptr, &mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    pub fn read_u64(&self, ptr: u32) -> Result<u64, MemoryFault> {
        let mut bytes = [0; 8];
        self.read_into(ptr, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    pub fn write_bytes(&self, ptr: u32, bytes: &[u8]) -> Result<(), MemoryFault> {
        let len = bytes.len() as u64;
        self.check(ptr, len)?;
        self.view.write(u64::from(ptr), bytes).map_err(|_| self.fault(ptr, len))
    }

    pub fn write_u32(&self, ptr: u32, value: u32) -> Result<(), MemoryFault> {
        self.write_bytes(ptr, &value.to_le_bytes())
    }

    pub fn write_u64(&self, ptr: u32, value: u64) -> Result<(), MemoryFault> {
        self.write_bytes(ptr, &value.to_le_bytes())
    }

    /// Hands `use_bytes` the guest's own bytes `ptr..ptr + len`, read in
    /// place: nothing of the guest's size is copied.
    pub fn with_bytes<R>(&self, ptr: u32, len: u32, use_bytes: impl FnOnce(&[u8]) -> R) -> Result<R, MemoryFault> {
        self.check(ptr, u64::from(len))?;
        let slice = WasmSlice::<u8>::new(&self.view, u64::from(ptr), u64::from(len))
            .map_err(|_| self.fault(ptr, u64::from(len)))?;
        let access = slice.access().map_err(|_| self.fault(ptr, u64::from(len)))?;
        Ok(use_bytes(access.as_ref()))
    }

    /// Hands `fill` the guest's own bytes `ptr..ptr + len` to write in place,
    /// `chunk_bytes` at a time, so that no host buffer of the guest's size
    /// ever exists. Stops at the first chunk `fill` fails on.
    pub fn fill_in_place<E>(
        &self,
        ptr: u32,
        len: u32,
        chunk_bytes: u32,
        mut fill: impl FnMut(&mut [u8]) -> Result<(), E>,
    ) -> Result<Result<(), E>, MemoryFault> {
        debug_assert!(chunk_bytes > 0, "chunks hold at least one byte");
        self.check(ptr, u64::from(len))?;
        let mut done = 0u32;
        while done < len {
            let this = (len - done).min(chunk_bytes);
            let start = ptr + done;
            let slice = WasmSlice::<u8>::new(&self.view, u64::from(start), u64::from(this))
                .map_err(|_| self.fault(start, u64::from(this)))?;
            let mut access = slice.access().map_err(|_| self.fault(start, u64::from(this)))?;
            if let Err(error) = fill(access.as_mut()) {
                return Ok(Err(error));
            }
            done += this;
        }
        Ok(Ok(()))
    }

    /// The fault of an access the memory refused although [`check`] passed
    /// (it cannot shrink, so this only names the range).
    ///
    /// [`check`]: GuestMemory::check
    fn fault(&self, ptr: u32, len: u64) -> MemoryFault {
        self.check(ptr, len).err().unwrap_or(MemoryFault::OutOfBounds {
            ptr,
            len,
            memory_bytes: self.size(),
        })
    }
}

/// Runs `f` with the guest state and a view of its memory. A host call made
/// before the memory is bound (from a module's start section) is an error.
pub fn with_memory<R>(
    env: &mut FunctionEnvMut<'_, GuestEnv>,
    f: impl FnOnce(&mut GuestEnv, &GuestMemory<'_>) -> R,
) -> Result<R, RuntimeError> {
    let (guest, store) = env.data_and_store_mut();
    let memory = guest
        .memory
        .clone()
        .ok_or_else(|| RuntimeError::new("host call before the module's memory was bound"))?;
    let view = memory.view(&store);
    Ok(f(guest, &GuestMemory::new(view)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::testing::TestGuest;

    const PAGE: u32 = 65_536;

    fn with_guest_memory<R>(pages: u32, f: impl FnOnce(&GuestMemory<'_>) -> R) -> R {
        let mut test = TestGuest::with_pages(pages);
        with_memory(&mut test.env(), |_, memory| f(memory)).unwrap()
    }

    #[test]
    fn a_range_ending_exactly_at_the_end_of_memory_is_inside() {
        with_guest_memory(1, |memory| {
            assert_eq!(memory.check(PAGE - 4, 4), Ok(()));
            assert_eq!(memory.check(PAGE, 0), Ok(()));
            assert_eq!(memory.check(0, u64::from(PAGE)), Ok(()));
        });
    }

    #[test]
    fn a_range_one_byte_past_the_end_is_out_of_bounds_with_the_sizes_named() {
        with_guest_memory(1, |memory| {
            let fault = memory.check(PAGE - 3, 4).unwrap_err();
            assert_eq!(
                fault,
                MemoryFault::OutOfBounds {
                    ptr: PAGE - 3,
                    len: 4,
                    memory_bytes: u64::from(PAGE)
                }
            );
            assert_eq!(
                fault.to_string(),
                "4 bytes at 0xfffd end beyond the 65536 bytes of memory"
            );
        });
    }

    #[test]
    fn a_range_wrapping_past_4_gib_is_caught_as_a_wrap() {
        with_guest_memory(1, |memory| {
            assert_eq!(
                memory.check(0xFFFF_FF00, 0x100 + 16),
                Err(MemoryFault::Wraps {
                    ptr: 0xFFFF_FF00,
                    len: 0x110
                })
            );
            assert_eq!(
                memory.check(16, 0xFFFF_FFF0 + 1),
                Err(MemoryFault::Wraps {
                    ptr: 16,
                    len: 0xFFFF_FFF1
                })
            );
        });
    }

    #[test]
    fn an_array_length_is_counted_in_64_bits() {
        with_guest_memory(1, |memory| {
            // 0x2000_0001 elements of 8 bytes: 2^32 + 8 bytes, which a u32 product would wrap to 8.
            assert!(matches!(
                memory.check_array(0, 0x2000_0001, 8),
                Err(MemoryFault::Wraps { len: 0x1_0000_0008, .. })
            ));
        });
    }

    #[test]
    fn reading_a_huge_length_fails_before_allocating_it() {
        with_guest_memory(1, |memory| {
            // A 4 GiB allocation would abort the test process.
            assert!(memory.read_bytes(0, u32::MAX).is_err());
            assert!(memory.read_bytes(PAGE - 1, 2).is_err());
            assert_eq!(memory.read_bytes(PAGE - 2, 2).unwrap(), [0, 0]);
        });
    }

    #[test]
    fn a_failed_write_leaves_memory_untouched() {
        let mut test = TestGuest::with_pages(1);
        let fault = with_memory(&mut test.env(), |_, memory| memory.write_bytes(PAGE - 2, &[9; 4])).unwrap();
        assert!(fault.is_err());
        assert_eq!(test.read(PAGE - 2, 2), [0, 0]);
    }

    #[test]
    fn filling_in_place_covers_the_whole_range_in_chunks_and_nothing_around_it() {
        let mut test = TestGuest::with_pages(2);
        let mut chunks = Vec::new();
        let result = with_memory(&mut test.env(), |_, memory| {
            memory.fill_in_place(10, 100_000, 40_000, |bytes| {
                chunks.push(bytes.len());
                bytes.fill(0xAB);
                Ok::<(), ()>(())
            })
        })
        .unwrap();
        assert_eq!(result, Ok(Ok(())));
        assert_eq!(chunks, [40_000, 40_000, 20_000]);
        assert_eq!(test.read(9, 1), [0]);
        assert!(test.read(10, 100_000).iter().all(|byte| *byte == 0xAB));
        assert_eq!(test.read(100_010, 1), [0]);
    }

    #[test]
    fn filling_a_range_outside_memory_calls_nothing() {
        let mut test = TestGuest::with_pages(1);
        let mut calls = 0;
        let result = with_memory(&mut test.env(), |_, memory| {
            memory.fill_in_place(16, 0xFFFF_FF00, 65_536, |_| {
                calls += 1;
                Ok::<(), ()>(())
            })
        })
        .unwrap();
        assert!(matches!(result, Err(MemoryFault::OutOfBounds { .. })));
        assert_eq!(calls, 0);
    }
}
