//! WASI preview1's numbers and memory layouts, as the hub uses them: errno
//! values, rights, file types, clock ids, and the sizes and field offsets
//! of the structs guests pass by pointer.

use super::super::guest::MemoryFault;

/// An error a WASI call returns to the guest (`errno` in the ABI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Errno {
    /// Bad file descriptor.
    Badf = 8,
    /// A pointer or length names memory outside the guest's.
    Fault = 21,
    /// An argument is invalid (unknown clock, too many iovecs or subscriptions).
    Inval = 28,
    /// The call (or something it needs from the host) is not available.
    Nosys = 52,
    /// A value does not fit its type in the ABI.
    Overflow = 61,
    /// The descriptor cannot seek (stdio).
    Spipe = 70,
}

/// `errno::success`.
pub const SUCCESS: i32 = 0;

impl Errno {
    /// The value the guest sees.
    pub fn raw(self) -> i32 {
        self as i32
    }
}

impl From<MemoryFault> for Errno {
    fn from(_: MemoryFault) -> Errno {
        Errno::Fault
    }
}

/// What a call returns to the guest: `errno::success` or the error.
pub fn errno(result: Result<(), Errno>) -> i32 {
    match result {
        Ok(()) => SUCCESS,
        Err(errno) => errno.raw(),
    }
}

pub const CLOCK_REALTIME: u32 = 0;
pub const CLOCK_MONOTONIC: u32 = 1;
pub const CLOCK_PROCESS_CPUTIME: u32 = 2;
pub const CLOCK_THREAD_CPUTIME: u32 = 3;

pub const FILETYPE_CHARACTER_DEVICE: u8 = 2;

pub const RIGHT_FD_READ: u64 = 1 << 1;
pub const RIGHT_FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
pub const RIGHT_FD_WRITE: u64 = 1 << 6;
pub const RIGHT_POLL_FD_READWRITE: u64 = 1 << 27;

/// `fdstat`: filetype u8 @0, flags u16 @2, rights_base u64 @8, rights_inheriting u64 @16.
pub const FDSTAT_SIZE: usize = 24;
pub const FDSTAT_RIGHTS_BASE: usize = 8;

/// `ciovec`/`iovec`: buf u32 @0, buf_len u32 @4.
pub const IOVEC_SIZE: u32 = 8;
/// Most iovecs one `fd_read`/`fd_write` accepts (POSIX `IOV_MAX`, as on
/// Linux and in wasi-libc); more is `EINVAL`.
pub const IOV_MAX: u32 = 1024;

pub const EVENTTYPE_CLOCK: u8 = 0;
pub const EVENTTYPE_FD_READ: u8 = 1;
pub const EVENTTYPE_FD_WRITE: u8 = 2;
pub const SUBCLOCKFLAG_ABSTIME: u16 = 1;
pub const EVENTRWFLAG_HANGUP: u16 = 1;

/// `subscription`: userdata u64 @0, tag u8 @8, then the union @16:
/// clock {id u32 @16, timeout u64 @24, precision u64 @32, flags u16 @40},
/// fd_readwrite {fd u32 @16}.
pub const SUBSCRIPTION_SIZE: u32 = 48;
pub const SUBSCRIPTION_TAG: u32 = 8;
pub const SUBSCRIPTION_CLOCK_ID: u32 = 16;
pub const SUBSCRIPTION_CLOCK_TIMEOUT: u32 = 24;
pub const SUBSCRIPTION_CLOCK_FLAGS: u32 = 40;
pub const SUBSCRIPTION_FD: u32 = 16;

/// `event`: userdata u64 @0, error u16 @8, type u8 @10,
/// fd_readwrite {nbytes u64 @16, flags u16 @24}.
pub const EVENT_SIZE: u32 = 32;
