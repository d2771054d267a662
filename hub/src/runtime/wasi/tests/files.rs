//! The filesystem calls over real preopened directories: what a guest may
//! do in a read-write volume, what a read-only mount refuses, what never
//! leaves its directory, and the volume's quota.

use std::path::Path;

use super::*;
use crate::runtime::testing::TestGuest;
use crate::runtime::wasi::abi::{
    FDFLAG_APPEND, LOOKUPFLAG_SYMLINK_FOLLOW, OFLAG_CREAT, OFLAG_DIRECTORY, OFLAG_EXCL, OFLAG_TRUNC, RIGHT_FD_READ,
    RIGHT_FD_SEEK, RIGHT_FD_WRITE, RIGHTS_DIR_WRITE, RIGHTS_FILE_WRITE,
};
use crate::runtime::wasi::calls::fd::{
    fd_close, fd_fdstat_get, fd_prestat_dir_name, fd_prestat_get, fd_read, fd_write,
};
use crate::runtime::wasi::calls::file::{fd_filestat_set_size, fd_pread, fd_readdir, fd_renumber};
use crate::runtime::wasi::calls::path::{
    path_create_directory, path_link, path_open, path_readlink, path_remove_directory, path_rename, path_symlink,
    path_unlink_file,
};
use crate::runtime::wasi::fds::FdTable;
use crate::runtime::wasi::files::PreopenSpec;

const PATH: u32 = 0x100;
const PATH2: u32 = 0x500;
const OUT: u32 = 0x80;
const IOVS: u32 = 0x900;
const DATA: u32 = 0x1000;

const EROFS: i32 = Errno::Rofs as i32;
const ENOTCAPABLE: i32 = Errno::Notcapable as i32;
const ENOSPC: i32 = Errno::Nospc as i32;
const EXDEV: i32 = Errno::Xdev as i32;
const EEXIST: i32 = Errno::Exist as i32;
const ENOENT: i32 = Errno::Noent as i32;

/// fd 3: a read-write volume of `quota` bytes at `/data`; fd 4: a read-only
/// mount at `/ro` holding `hello.txt`; and `outside/secret` next to them.
pub(super) struct Files {
    pub(super) test: TestGuest,
    root: tempfile::TempDir,
}

impl Files {
    pub(super) fn new(quota: Option<u64>) -> Files {
        let root = tempfile::tempdir().unwrap();
        for dir in ["volume", "ro", "outside"] {
            std::fs::create_dir(root.path().join(dir)).unwrap();
        }
        std::fs::write(root.path().join("ro/hello.txt"), b"hello\n").unwrap();
        std::fs::write(root.path().join("outside/secret"), b"OUTSIDE-SECRET").unwrap();
        let mut test = TestGuest::with_pages(2);
        test.guest().fds = FdTable::with_preopens(&[
            PreopenSpec {
                guest_path: "/data".to_owned(),
                host_path: root.path().join("volume"),
                writable: true,
                quota_bytes: quota,
                volume: true,
            },
            PreopenSpec {
                guest_path: "/ro".to_owned(),
                host_path: root.path().join("ro"),
                writable: false,
                quota_bytes: None,
                volume: false,
            },
        ])
        .unwrap();
        Files { test, root }
    }

    pub(super) fn host(&self, path: &str) -> std::path::PathBuf {
        self.root.path().join(path)
    }

    /// `path_open` of `path` beneath `dir`; the new fd or the errno.
    pub(super) fn open(&mut self, dir: i32, path: &str, oflags: u16, rights: u64, fdflags: u16) -> Result<i32, i32> {
        self.test.write(PATH, path.as_bytes());
        let result = path_open(
            self.test.env(),
            dir,
            LOOKUPFLAG_SYMLINK_FOLLOW as i32,
            PATH as i32,
            path.len() as i32,
            i32::from(oflags),
            rights as i64,
            0,
            i32::from(fdflags),
            OUT as i32,
        )
        .unwrap();
        if result == OK {
            Ok(self.test.read_u32(OUT) as i32)
        } else {
            Err(result)
        }
    }

    pub(super) fn write(&mut self, fd: i32, data: &[u8]) -> Result<u32, i32> {
        self.test.write(DATA, data);
        self.test.write_iovecs(IOVS, &[(DATA, data.len() as u32)]);
        match fd_write(self.test.env(), fd, IOVS as i32, 1, OUT as i32).unwrap() {
            OK => Ok(self.test.read_u32(OUT)),
            errno => Err(errno),
        }
    }

    fn read_at(&mut self, fd: i32, len: u32, offset: i64) -> Vec<u8> {
        self.test.write_iovecs(IOVS, &[(DATA, len)]);
        assert_eq!(
            fd_pread(self.test.env(), fd, IOVS as i32, 1, offset, OUT as i32).unwrap(),
            OK
        );
        let count = self.test.read_u32(OUT);
        self.test.read(DATA, count)
    }

    /// A call taking one path beneath `dir`.
    pub(super) fn path_call(
        &mut self,
        call: fn(Env<'_>, i32, i32, i32) -> Result<i32, wasmer::RuntimeError>,
        dir: i32,
        path: &str,
    ) -> i32 {
        self.test.write(PATH, path.as_bytes());
        call(self.test.env(), dir, PATH as i32, path.len() as i32).unwrap()
    }

    /// A call taking two paths (rename, link).
    fn two_paths(&mut self, from: (i32, &str), to: (i32, &str), link: bool) -> i32 {
        self.test.write(PATH, from.1.as_bytes());
        self.test.write(PATH2, to.1.as_bytes());
        let (old, old_len, new, new_len) = (PATH as i32, from.1.len() as i32, PATH2 as i32, to.1.len() as i32);
        if link {
            path_link(self.test.env(), from.0, 0, old, old_len, to.0, new, new_len).unwrap()
        } else {
            path_rename(self.test.env(), from.0, old, old_len, to.0, new, new_len).unwrap()
        }
    }

    fn symlink(&mut self, target: &str, dir: i32, link: &str) -> i32 {
        self.test.write(PATH, target.as_bytes());
        self.test.write(PATH2, link.as_bytes());
        path_symlink(
            self.test.env(),
            PATH as i32,
            target.len() as i32,
            dir,
            PATH2 as i32,
            link.len() as i32,
        )
        .unwrap()
    }
}

pub(super) type Env<'a> = crate::runtime::wasi::calls::Env<'a>;

pub(super) const READ: u64 = RIGHT_FD_READ | RIGHT_FD_SEEK;
pub(super) const WRITE: u64 = RIGHT_FD_WRITE;

#[test]
fn preopens_are_announced_with_their_guest_paths() {
    let mut files = Files::new(None);
    assert_eq!(fd_prestat_get(files.test.env(), 3, OUT as i32).unwrap(), OK);
    assert_eq!(files.test.read_u32(OUT + 4), 5);
    assert_eq!(fd_prestat_dir_name(files.test.env(), 4, DATA as i32, 3).unwrap(), OK);
    assert_eq!(files.test.read(DATA, 3), b"/ro");
    assert_eq!(fd_prestat_get(files.test.env(), 5, OUT as i32).unwrap(), EBADF);
}

#[test]
fn a_file_written_in_the_volume_reads_back_and_lands_on_the_host() {
    let mut files = Files::new(None);
    let fd = files
        .open(3, "notes.txt", OFLAG_CREAT | OFLAG_EXCL, READ | WRITE, 0)
        .unwrap();
    assert_eq!(files.write(fd, b"first line\n"), Ok(11));
    assert_eq!(files.read_at(fd, 5, 6), b"line\n");
    assert_eq!(
        files.open(3, "notes.txt", OFLAG_CREAT | OFLAG_EXCL, WRITE, 0),
        Err(EEXIST)
    );
    let appender = files.open(3, "notes.txt", 0, WRITE, FDFLAG_APPEND).unwrap();
    assert_eq!(files.write(appender, b"second\n"), Ok(7));
    assert_eq!(
        std::fs::read(files.host("volume/notes.txt")).unwrap(),
        b"first line\nsecond\n"
    );
    // Read from the start through fd_read after a renumber.
    let reader = files.open(3, "notes.txt", 0, READ, 0).unwrap();
    assert_eq!(fd_renumber(files.test.env(), reader, appender), OK);
    files.test.write_iovecs(IOVS, &[(DATA, 64)]);
    assert_eq!(
        fd_read(files.test.env(), appender, IOVS as i32, 1, OUT as i32).unwrap(),
        OK
    );
    assert_eq!(files.test.read_u32(OUT), 18);
    assert_eq!(fd_close(files.test.env(), reader), EBADF);
    let truncated = files.open(3, "notes.txt", OFLAG_TRUNC, WRITE, 0).unwrap();
    assert_eq!(std::fs::metadata(files.host("volume/notes.txt")).unwrap().len(), 0);
    assert_eq!(fd_close(files.test.env(), truncated), OK);
}

#[test]
fn directories_can_be_made_listed_renamed_and_removed() {
    let mut files = Files::new(None);
    assert_eq!(files.path_call(path_create_directory, 3, "sub"), OK);
    files.open(3, "sub/a", OFLAG_CREAT, WRITE, 0).unwrap();
    assert_eq!(files.two_paths((3, "sub/a"), (3, "sub/b"), false), OK);
    // A volume takes no hard links (a restore could not bring one back).
    assert_eq!(files.two_paths((3, "sub/b"), (3, "sub/c"), true), Errno::Perm as i32);
    files.open(3, "sub/c", OFLAG_CREAT, WRITE, 0).unwrap();
    let dir = files.open(3, "sub", OFLAG_DIRECTORY, READ, 0).unwrap();
    assert_eq!(
        fd_readdir(files.test.env(), dir, DATA as i32, 4096, 0, OUT as i32).unwrap(),
        OK
    );
    let listing = files.test.read(DATA, files.test.read_u32(OUT));
    // Each entry: next (8 bytes), inode (8), name length (4), type (1),
    // padding (3), then the name. Only the names are compared: the other
    // fields' bytes may spell anything.
    let mut names = Vec::new();
    let mut rest = &listing[..];
    while rest.len() >= 24 {
        let len = u32::from_le_bytes(rest[16..20].try_into().unwrap()) as usize;
        names.push(String::from_utf8_lossy(&rest[24..(24 + len).min(rest.len())]).into_owned());
        rest = &rest[(24 + len).min(rest.len())..];
    }
    names.sort();
    names.retain(|name| name != "." && name != "..");
    assert_eq!(names, ["b", "c"]);
    assert_eq!(files.path_call(path_remove_directory, 3, "sub"), Errno::Notempty as i32);
    assert_eq!(files.path_call(path_unlink_file, 3, "sub/b"), OK);
    assert_eq!(files.path_call(path_unlink_file, 3, "sub/c"), OK);
    assert_eq!(files.path_call(path_remove_directory, 3, "sub"), OK);
    assert!(!files.host("volume/sub").exists());
}

#[test]
fn a_read_only_mount_refuses_every_mutating_call_and_reads() {
    let mut files = Files::new(None);
    let fd = files.open(4, "hello.txt", 0, READ, 0).unwrap();
    assert_eq!(files.read_at(fd, 64, 0), b"hello\n");
    assert_eq!(files.open(4, "hello.txt", 0, WRITE, 0), Err(EROFS));
    assert_eq!(files.open(4, "hello.txt", 0, READ | WRITE, 0), Err(EROFS));
    assert_eq!(files.open(4, "new.txt", OFLAG_CREAT, READ, 0), Err(EROFS));
    assert_eq!(files.open(4, "hello.txt", OFLAG_TRUNC, READ, 0), Err(EROFS));
    assert_eq!(files.open(4, "hello.txt", 0, READ, FDFLAG_APPEND), Err(EROFS));
    assert_eq!(files.path_call(path_create_directory, 4, "d"), EROFS);
    assert_eq!(files.path_call(path_unlink_file, 4, "hello.txt"), EROFS);
    assert_eq!(files.path_call(path_remove_directory, 4, "."), EROFS);
    assert_eq!(files.two_paths((4, "hello.txt"), (4, "moved.txt"), false), EROFS);
    assert_eq!(files.two_paths((4, "hello.txt"), (4, "linked.txt"), true), EROFS);
    assert_eq!(files.symlink("hello.txt", 4, "sym"), EROFS);
    assert_eq!(fd_filestat_set_size(files.test.env(), fd, 0), EROFS);
    // Neither a rename nor a link crosses from one area to another.
    assert_eq!(files.two_paths((4, "hello.txt"), (3, "stolen.txt"), false), EXDEV);
    assert_eq!(std::fs::read(files.host("ro/hello.txt")).unwrap(), b"hello\n");
    // Its rights say so; a file opened in it has no write right.
    assert_eq!(fd_fdstat_get(files.test.env(), 4, DATA as i32).unwrap(), OK);
    assert_eq!(files.test.read_u64(DATA + 8) & RIGHTS_DIR_WRITE, 0);
    assert_eq!(fd_fdstat_get(files.test.env(), fd, DATA as i32).unwrap(), OK);
    assert_eq!(files.test.read_u64(DATA + 8) & RIGHTS_FILE_WRITE, 0);
    assert_eq!(files.test.read_u64(DATA + 8) & RIGHT_FD_READ, RIGHT_FD_READ);
}

fn assert_refused(result: Result<i32, i32>, what: &str) {
    match result {
        Err(errno) => assert!(
            errno == ENOTCAPABLE || errno == ENOENT || errno == Errno::Loop as i32,
            "{what}: {errno}"
        ),
        Ok(fd) => panic!("{what}: opened as fd {fd}"),
    }
}

#[test]
fn no_path_leads_out_of_its_directory() {
    let mut files = Files::new(None);
    assert_refused(files.open(3, "../outside/secret", 0, READ, 0), "..");
    assert_refused(files.open(3, "a/../../outside/secret", 0, READ, 0), "a/../..");
    let absolute = files.host("outside/secret").display().to_string();
    assert_refused(files.open(3, &absolute, 0, READ, 0), "absolute");
    assert_refused(
        files.open(3, "/proc/self/root/etc/passwd", 0, READ, 0),
        "/proc/self/root",
    );
    // Symlinks placed by someone else (the guest can make only relative ones).
    std::os::unix::fs::symlink("../outside/secret", files.host("volume/relative")).unwrap();
    std::os::unix::fs::symlink(files.host("outside"), files.host("volume/absolute")).unwrap();
    std::os::unix::fs::symlink("/proc/self/root", files.host("volume/magic")).unwrap();
    assert_refused(files.open(3, "relative", 0, READ, 0), "relative symlink");
    assert_refused(files.open(3, "absolute/secret", 0, READ, 0), "absolute symlink");
    assert_refused(
        files.open(3, "absolute/", OFLAG_DIRECTORY, READ, 0),
        "symlink with a trailing slash",
    );
    assert_refused(files.open(3, "magic/etc/passwd", 0, READ, 0), "magic link");
    assert_eq!(files.symlink("/etc/passwd", 3, "abs"), Errno::Perm as i32);
    // Rename and link out of the volume.
    files.open(3, "mine", OFLAG_CREAT, WRITE, 0).unwrap();
    assert_ne!(files.two_paths((3, "mine"), (3, "../outside/mine"), false), OK);
    assert_ne!(files.two_paths((3, "mine"), (3, "absolute/mine"), false), OK);
    assert_ne!(files.two_paths((3, "../outside/secret"), (3, "hard"), true), OK);
    assert_ne!(files.two_paths((3, "absolute/secret"), (3, "hard"), true), OK);
    // Not even a link to the symlink itself: a volume takes no hard links
    // (a restore could not bring one back).
    assert_eq!(files.two_paths((3, "relative"), (3, "hard"), true), Errno::Perm as i32);
    assert!(!files.host("volume/hard").exists());
    assert_eq!(std::fs::read(files.host("outside/secret")).unwrap(), b"OUTSIDE-SECRET");
    assert!(!files.host("outside/mine").exists());
    // A relative symlink that stays inside works; readlink shows it.
    assert_eq!(files.symlink("mine", 3, "inside"), OK);
    assert!(files.open(3, "inside", 0, READ, 0).is_ok());
    files.test.write(PATH, b"inside");
    assert_eq!(
        path_readlink(files.test.env(), 3, PATH as i32, 6, DATA as i32, 64, OUT as i32).unwrap(),
        OK
    );
    assert_eq!(files.test.read(DATA, files.test.read_u32(OUT)), b"mine");
}

#[test]
fn a_full_volume_answers_enospc_and_space_comes_back_after_an_unlink() {
    let mut files = Files::new(Some(1000));
    let fd = files.open(3, "big", OFLAG_CREAT, WRITE, 0).unwrap();
    assert_eq!(files.write(fd, &[7; 600]), Ok(600));
    assert_eq!(files.write(fd, &[7; 600]), Ok(400));
    assert_eq!(files.write(fd, &[7; 1]), Err(ENOSPC));
    assert_eq!(fd_filestat_set_size(files.test.env(), fd, 2000), ENOSPC);
    let other = files.open(3, "other", OFLAG_CREAT, WRITE, 0).unwrap();
    assert_eq!(files.write(other, b"x"), Err(ENOSPC));
    assert_eq!(std::fs::metadata(files.host("volume/big")).unwrap().len(), 1000);
    assert_eq!(fd_close(files.test.env(), fd), OK);
    assert_eq!(files.path_call(path_unlink_file, 3, "big"), OK);
    assert_eq!(files.write(other, b"x"), Ok(1));
    assert!(Path::new(&files.host("volume/other")).exists());
}

#[test]
fn a_volume_whose_files_change_under_its_usage_count_is_still_counted() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let root = tempfile::tempdir().unwrap();
    let area = root.path().to_owned();
    std::fs::write(area.join("kept"), vec![0u8; 1000]).unwrap();
    std::fs::create_dir(area.join("sub")).unwrap();
    // Entries come and go as fast as a thread can rename them.
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, area) = (Arc::clone(&stop), area.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::write(area.join("new"), b"x");
                let _ = std::fs::rename(area.join("new"), area.join("moved"));
                let _ = std::fs::create_dir(area.join("sub/dir"));
                let _ = std::fs::remove_file(area.join("moved"));
                let _ = std::fs::remove_dir(area.join("sub/dir"));
            }
        })
    };
    let dir = cap_std::fs::Dir::open_ambient_dir(&area, cap_std::ambient_authority()).unwrap();
    for _ in 0..10_000 {
        let used = crate::runtime::wasi::files::usage(&dir).unwrap();
        assert!((1000..=1001).contains(&used), "{used}");
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
}
