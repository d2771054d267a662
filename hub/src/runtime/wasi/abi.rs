//! WASI preview1's numbers and memory layouts, as the hub uses them: errno
//! values, rights, file types, clock ids, and the sizes and field offsets
//! of the structs guests pass by pointer.

use super::super::guest::MemoryFault;

/// An error a WASI call returns to the guest (`errno` in the ABI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Errno {
    /// Permission denied by the host's file modes.
    Acces = 2,
    /// Resource temporarily unavailable.
    Again = 6,
    /// Bad file descriptor.
    Badf = 8,
    /// Device or resource busy.
    Busy = 10,
    /// File exists.
    Exist = 20,
    /// A pointer or length names memory outside the guest's.
    Fault = 21,
    /// File too large.
    Fbig = 22,
    /// Illegal byte sequence (a path that is not UTF-8).
    Ilseq = 25,
    /// Interrupted call.
    Intr = 27,
    /// An argument is invalid (unknown clock, too many iovecs or subscriptions).
    Inval = 28,
    /// I/O error.
    Io = 29,
    /// Is a directory.
    Isdir = 31,
    /// Too many levels of symbolic links (or a symlink where none may be).
    Loop = 32,
    /// Too many open descriptors.
    Mfile = 33,
    /// Too many links.
    Mlink = 34,
    /// File name too long.
    Nametoolong = 37,
    /// No such file or directory.
    Noent = 44,
    /// Not enough memory.
    Nomem = 48,
    /// No space left: the function's volume quota (or the disk) is full.
    Nospc = 51,
    /// The call (or something it needs from the host) is not available.
    Nosys = 52,
    /// Not a directory.
    Notdir = 54,
    /// Directory not empty.
    Notempty = 55,
    /// Not supported.
    Notsup = 58,
    /// A value does not fit its type in the ABI.
    Overflow = 61,
    /// Operation not permitted.
    Perm = 63,
    /// Read-only file system: a mutating call in a read-only mount.
    Rofs = 69,
    /// The descriptor cannot seek (stdio, directories).
    Spipe = 70,
    /// Text file busy.
    Txtbsy = 74,
    /// Cross-device link: a rename or link between two preopens.
    Xdev = 75,
    /// The path leads outside every directory the function was given.
    Notcapable = 76,
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

pub const FILETYPE_UNKNOWN: u8 = 0;
pub const FILETYPE_BLOCK_DEVICE: u8 = 1;
pub const FILETYPE_CHARACTER_DEVICE: u8 = 2;
pub const FILETYPE_DIRECTORY: u8 = 3;
pub const FILETYPE_REGULAR_FILE: u8 = 4;
pub const FILETYPE_SOCKET_STREAM: u8 = 6;
pub const FILETYPE_SYMBOLIC_LINK: u8 = 7;

pub const RIGHT_FD_DATASYNC: u64 = 1 << 0;
pub const RIGHT_FD_READ: u64 = 1 << 1;
pub const RIGHT_FD_SEEK: u64 = 1 << 2;
pub const RIGHT_FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
pub const RIGHT_FD_SYNC: u64 = 1 << 4;
pub const RIGHT_FD_TELL: u64 = 1 << 5;
pub const RIGHT_FD_WRITE: u64 = 1 << 6;
pub const RIGHT_FD_ADVISE: u64 = 1 << 7;
pub const RIGHT_FD_ALLOCATE: u64 = 1 << 8;
pub const RIGHT_PATH_CREATE_DIRECTORY: u64 = 1 << 9;
pub const RIGHT_PATH_CREATE_FILE: u64 = 1 << 10;
pub const RIGHT_PATH_LINK_SOURCE: u64 = 1 << 11;
pub const RIGHT_PATH_LINK_TARGET: u64 = 1 << 12;
pub const RIGHT_PATH_OPEN: u64 = 1 << 13;
pub const RIGHT_FD_READDIR: u64 = 1 << 14;
pub const RIGHT_PATH_READLINK: u64 = 1 << 15;
pub const RIGHT_PATH_RENAME_SOURCE: u64 = 1 << 16;
pub const RIGHT_PATH_RENAME_TARGET: u64 = 1 << 17;
pub const RIGHT_PATH_FILESTAT_GET: u64 = 1 << 18;
pub const RIGHT_PATH_FILESTAT_SET_SIZE: u64 = 1 << 19;
pub const RIGHT_PATH_FILESTAT_SET_TIMES: u64 = 1 << 20;
pub const RIGHT_FD_FILESTAT_GET: u64 = 1 << 21;
pub const RIGHT_FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
pub const RIGHT_FD_FILESTAT_SET_TIMES: u64 = 1 << 23;
pub const RIGHT_PATH_SYMLINK: u64 = 1 << 24;
pub const RIGHT_PATH_REMOVE_DIRECTORY: u64 = 1 << 25;
pub const RIGHT_PATH_UNLINK_FILE: u64 = 1 << 26;
pub const RIGHT_POLL_FD_READWRITE: u64 = 1 << 27;

/// Rights of a regular file opened for reading.
pub const RIGHTS_FILE_READ: u64 = RIGHT_FD_READ
    | RIGHT_FD_SEEK
    | RIGHT_FD_TELL
    | RIGHT_FD_ADVISE
    | RIGHT_FD_FILESTAT_GET
    | RIGHT_FD_FDSTAT_SET_FLAGS
    | RIGHT_FD_SYNC
    | RIGHT_POLL_FD_READWRITE;
/// Rights writing adds to a regular file.
pub const RIGHTS_FILE_WRITE: u64 =
    RIGHT_FD_DATASYNC | RIGHT_FD_WRITE | RIGHT_FD_ALLOCATE | RIGHT_FD_FILESTAT_SET_SIZE | RIGHT_FD_FILESTAT_SET_TIMES;
/// Rights that change a file or a directory's entries.
#[cfg(test)]
pub const RIGHTS_MUTATING: u64 = RIGHTS_DIR_WRITE | RIGHTS_FILE_WRITE;
/// Rights of a directory in a read-only mount.
pub const RIGHTS_DIR_READ: u64 = RIGHT_PATH_OPEN
    | RIGHT_FD_READDIR
    | RIGHT_PATH_READLINK
    | RIGHT_PATH_FILESTAT_GET
    | RIGHT_FD_FILESTAT_GET
    | RIGHT_FD_FDSTAT_SET_FLAGS
    | RIGHT_FD_SYNC;
/// Rights a read-write mount adds to a directory.
pub const RIGHTS_DIR_WRITE: u64 = RIGHT_FD_DATASYNC
    | RIGHT_PATH_CREATE_DIRECTORY
    | RIGHT_PATH_CREATE_FILE
    | RIGHT_PATH_LINK_SOURCE
    | RIGHT_PATH_LINK_TARGET
    | RIGHT_PATH_RENAME_SOURCE
    | RIGHT_PATH_RENAME_TARGET
    | RIGHT_PATH_FILESTAT_SET_SIZE
    | RIGHT_PATH_FILESTAT_SET_TIMES
    | RIGHT_FD_FILESTAT_SET_TIMES
    | RIGHT_PATH_SYMLINK
    | RIGHT_PATH_REMOVE_DIRECTORY
    | RIGHT_PATH_UNLINK_FILE;

pub const LOOKUPFLAG_SYMLINK_FOLLOW: u32 = 1;
pub const OFLAG_CREAT: u16 = 1;
pub const OFLAG_DIRECTORY: u16 = 2;
pub const OFLAG_EXCL: u16 = 4;
pub const OFLAG_TRUNC: u16 = 8;
pub const FDFLAG_APPEND: u16 = 1;
pub const FDFLAG_DSYNC: u16 = 2;
pub const FDFLAG_NONBLOCK: u16 = 4;
pub const FDFLAG_RSYNC: u16 = 8;
pub const FDFLAG_SYNC: u16 = 16;
pub const FSTFLAG_ATIM: u16 = 1;
pub const FSTFLAG_ATIM_NOW: u16 = 2;
pub const FSTFLAG_MTIM: u16 = 4;
pub const FSTFLAG_MTIM_NOW: u16 = 8;
pub const WHENCE_SET: u8 = 0;
pub const WHENCE_CUR: u8 = 1;
pub const WHENCE_END: u8 = 2;
pub const ADVICE_NOREUSE: u8 = 5;

/// `filestat`: dev u64 @0, ino u64 @8, filetype u8 @16, nlink u64 @24,
/// size u64 @32, atim u64 @40, mtim u64 @48, ctim u64 @56.
pub const FILESTAT_SIZE: usize = 64;
/// `dirent` header: next u64 @0, ino u64 @8, namlen u32 @16, type u8 @20;
/// the name follows.
pub const DIRENT_SIZE: usize = 24;
/// `prestat`: tag u8 @0 (0: a directory), name length u32 @4.
pub const PRESTAT_SIZE: usize = 8;

/// `fdstat`: filetype u8 @0, flags u16 @2, rights_base u64 @8, rights_inheriting u64 @16.
pub const FDSTAT_SIZE: usize = 24;
pub const FDSTAT_FLAGS: usize = 2;
pub const FDSTAT_RIGHTS_BASE: usize = 8;
pub const FDSTAT_RIGHTS_INHERITING: usize = 16;

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
