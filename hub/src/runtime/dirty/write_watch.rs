//! The kernel's record of which pages of a range were written: userfaultfd
//! in asynchronous write-protect mode, read and re-armed in one step by the
//! `PAGEMAP_SCAN` ioctl of `/proc/self/pagemap` (Linux 6.7 and later).
//!
//! How it works: the range is registered with a userfaultfd opened with
//! `UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED`. A write to a
//! write-protected page is then resolved by the kernel itself — no signal,
//! no handler thread, about a microsecond — and leaves the page marked
//! written. `PAGEMAP_SCAN` with `PM_SCAN_WP_MATCHING` lists the written pages
//! and protects them again atomically, so nothing written during a scan is
//! lost. Unpopulated pages count as protected, so a write to a page never
//! touched before is reported too; writes by the kernel (a `read()` into the
//! range) are reported like the guest's own.
//!
//! It also has [`populate_for_write`], the `madvise` a restore uses to have
//! the kernel allocate the pages it is about to fill in one call.
//!
//! `unsafe` code here: two syscalls and four ioctls on plain structs, and
//! that `madvise`. It never dereferences the watched range — the addresses
//! are only handed to the kernel — so a wrong address gives an error
//! (`EINVAL`, `EPERM`, `ENOMEM`), never undefined behaviour. Guest memory
//! is read and written through Wasmer's safe views, except by a restore,
//! which decodes into the memory of an instance not yet run
//! (`prefault::with_memory_before_its_run`, the hub's one other use of
//! `unsafe` beside loading compiled artifacts).
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// The page size the kernel tracks writes in.
pub const PAGE_BYTES: usize = 4096;

// linux/userfaultfd.h (the installed headers predate WP_ASYNC).
const UFFD_API: u64 = 0xAA;
const UFFD_USER_MODE_ONLY: libc::c_int = 1;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFDIO: u64 = 0xAA;
const UFFDIO_API_NR: u64 = 0x3F;
const UFFDIO_REGISTER_NR: u64 = 0x00;

// linux/fs.h
const PAGEMAP_SCAN_NR: u64 = 16;
const PAGEMAP_SCAN_TYPE: u64 = b'f' as u64;
const PAGE_IS_WRITTEN: u64 = 1 << 1;
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

/// `_IOWR(type, nr, size)` of asm-generic/ioctl.h.
const fn iowr(kind: u64, nr: u64, size: usize) -> u64 {
    const READ_WRITE: u64 = 3;
    (READ_WRITE << 30) | ((size as u64) << 16) | (kind << 8) | nr
}

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// Why the kernel's write tracking cannot be used or was lost.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{call}: {reason}")]
pub struct WatchError {
    call: &'static str,
    reason: String,
}

fn last_error(call: &'static str) -> WatchError {
    WatchError {
        call,
        reason: std::io::Error::last_os_error().to_string(),
    }
}

/// Written pages of a registered range, as the kernel records them.
pub struct WriteWatch {
    uffd: OwnedFd,
    pagemap: File,
    /// Address of the range's first byte.
    start: usize,
    /// Bytes registered from `start` (a multiple of [`PAGE_BYTES`]).
    registered: usize,
    regions: Vec<PageRegion>,
}

impl WriteWatch {
    /// Whether this process may track writes this way (checked once): a
    /// kernel older than 6.7, or a container that blocks `userfaultfd`,
    /// says no, and the hub falls back to fingerprints.
    pub fn probe() -> Result<(), WatchError> {
        static PROBED: OnceLock<Result<(), WatchError>> = OnceLock::new();
        PROBED.get_or_init(probe_once).clone()
    }

    /// Starts watching `len` bytes at `start` (page aligned). Every page
    /// already populated reads as written until the first [`scan`](Self::scan).
    pub fn new(start: usize, len: usize) -> Result<WriteWatch, WatchError> {
        if !start.is_multiple_of(PAGE_BYTES) || !len.is_multiple_of(PAGE_BYTES) {
            return Err(WatchError {
                call: "register",
                reason: format!("range {start:#x}+{len:#x} is not page aligned"),
            });
        }
        // SAFETY: a plain syscall; the fd it returns is owned below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_userfaultfd,
                libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY,
            )
        };
        if fd < 0 {
            return Err(last_error("userfaultfd"));
        }
        // SAFETY: `fd` is a new descriptor nobody else owns.
        let uffd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
            ioctls: 0,
        };
        let request = iowr(UFFDIO, UFFDIO_API_NR, size_of::<UffdioApi>());
        // SAFETY: the ioctl reads and writes exactly one `UffdioApi`.
        if unsafe { libc::ioctl(uffd.as_raw_fd(), request as _, &mut api) } < 0 {
            return Err(last_error("UFFDIO_API"));
        }
        let pagemap = File::open("/proc/self/pagemap").map_err(|error| WatchError {
            call: "open /proc/self/pagemap",
            reason: error.to_string(),
        })?;
        let mut watch = WriteWatch {
            uffd,
            pagemap,
            start,
            registered: 0,
            regions: vec![PageRegion::default(); 256],
        };
        watch.extend_to(len)?;
        Ok(watch)
    }

    /// Address of the watched range.
    pub fn start(&self) -> usize {
        self.start
    }

    /// Watches the range up to `len` bytes from the start too (after the
    /// memory grew). Pages of the new part written before this call are not
    /// reported: the caller treats the new part as written.
    pub fn extend_to(&mut self, len: usize) -> Result<(), WatchError> {
        if len <= self.registered {
            return Ok(());
        }
        let mut register = UffdioRegister {
            range: UffdioRange {
                start: (self.start + self.registered) as u64,
                len: (len - self.registered) as u64,
            },
            mode: UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        let request = iowr(UFFDIO, UFFDIO_REGISTER_NR, size_of::<UffdioRegister>());
        // SAFETY: the ioctl reads and writes exactly one `UffdioRegister`;
        // the kernel checks the range and refuses one that is not mapped.
        if unsafe { libc::ioctl(self.uffd.as_raw_fd(), request as _, &mut register) } < 0 {
            return Err(last_error("UFFDIO_REGISTER"));
        }
        self.registered = len;
        Ok(())
    }

    /// Calls `written` with the byte range (offsets from the start) of each
    /// run of pages written since the previous scan, and protects them
    /// again in the same step. An error means tracking was lost (e.g. the
    /// range was unmapped): the caller must treat everything as written.
    pub fn scan(&mut self, mut written: impl FnMut(usize, usize)) -> Result<(), WatchError> {
        let end = (self.start + self.registered) as u64;
        let mut from = self.start as u64;
        while from < end {
            let mut arg = PmScanArg {
                size: size_of::<PmScanArg>() as u64,
                flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                start: from,
                end,
                vec: self.regions.as_mut_ptr() as u64,
                vec_len: self.regions.len() as u64,
                category_mask: PAGE_IS_WRITTEN,
                return_mask: PAGE_IS_WRITTEN,
                ..PmScanArg::default()
            };
            let request = iowr(PAGEMAP_SCAN_TYPE, PAGEMAP_SCAN_NR, size_of::<PmScanArg>());
            // SAFETY: the kernel writes at most `vec_len` regions into
            // `self.regions`, which outlives the call, and updates `arg`.
            let found = unsafe { libc::ioctl(self.pagemap.as_raw_fd(), request as _, &mut arg) };
            if found < 0 {
                return Err(last_error("PAGEMAP_SCAN"));
            }
            for region in &self.regions[..found as usize] {
                written(
                    (region.start - self.start as u64) as usize,
                    (region.end - self.start as u64) as usize,
                );
            }
            if arg.walk_end <= from {
                return Err(WatchError {
                    call: "PAGEMAP_SCAN",
                    reason: format!("the scan made no progress at {from:#x}"),
                });
            }
            from = arg.walk_end;
        }
        Ok(())
    }
}

/// Has the kernel allocate the pages of `len` bytes at `start` (page
/// aligned) now, ready to be written, in one call (`MADV_POPULATE_WRITE`,
/// Linux 5.14): a restore that is about to overwrite them then takes no
/// fault per page, and another thread can do this while it copies. What a
/// page holds never changes: a populated page stays as it is, a new one
/// reads as zero, as it would at its first write. Watched pages it
/// populates read as written, like after a write.
pub fn populate_for_write(start: usize, len: usize) -> Result<(), WatchError> {
    // SAFETY: the kernel only maps pages in; it checks the range, and one
    // that is not mapped writable is an error (`ENOMEM`, `EFAULT`).
    if unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) } < 0 {
        return Err(last_error("madvise(MADV_POPULATE_WRITE)"));
    }
    Ok(())
}

/// Watches a page of a fresh mapping, writes it, and checks the scan sees it.
fn probe_once() -> Result<(), WatchError> {
    let len = 4 * PAGE_BYTES;
    // SAFETY: a fresh private anonymous mapping, unmapped below; only its
    // address is used besides the one volatile write.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(last_error("mmap"));
    }
    let result = (|| {
        let mut watch = WriteWatch::new(base as usize, len)?;
        watch.scan(|_, _| {})?;
        // SAFETY: the page is inside the mapping made above.
        unsafe { std::ptr::write_volatile((base as *mut u8).add(PAGE_BYTES), 1) };
        let mut seen = Vec::new();
        watch.scan(|from, to| seen.push((from, to)))?;
        if seen == [(PAGE_BYTES, 2 * PAGE_BYTES)] {
            Ok(())
        } else {
            Err(WatchError {
                call: "probe",
                reason: format!("one page written, the scan reported {seen:?}"),
            })
        }
    })();
    // SAFETY: unmaps exactly the mapping made above; the watch is dropped.
    unsafe { libc::munmap(base, len) };
    result
}
