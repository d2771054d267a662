//! The descriptor table of one function: stdio, the preopened directories
//! of its volume and mounts (3, 4, ... in the order of its manifest), and
//! what it opened beneath them.

use std::sync::Arc;

use cap_std::fs::{Dir, File};
use ferry_proto::v1::LogStream;

use super::abi::{
    Errno, FDFLAG_APPEND, FILETYPE_CHARACTER_DEVICE, FILETYPE_DIRECTORY, FILETYPE_REGULAR_FILE,
    RIGHT_FD_FDSTAT_SET_FLAGS, RIGHT_FD_READ, RIGHT_FD_WRITE, RIGHT_POLL_FD_READWRITE, RIGHTS_DIR_READ,
    RIGHTS_DIR_WRITE, RIGHTS_FILE_READ, RIGHTS_FILE_WRITE,
};
use super::files::{Area, PreopenSpec};

/// Most descriptors one function may hold open (`EMFILE` beyond).
pub const MAX_FDS: usize = 1024;

/// A directory the function holds: a preopen, or one it opened beneath.
#[derive(Debug)]
pub struct DirFd {
    pub dir: Dir,
    pub area: Arc<Area>,
    /// The area's own root, announced by `fd_prestat_get`.
    pub preopen: bool,
    /// Beneath the area's root, as opened ("" for the root): how a restore
    /// opens it again in a mount (a volume's entries are found by inode).
    pub path: String,
}

/// A regular file (or other non-directory) the function opened.
#[derive(Debug)]
pub struct FileFd {
    pub file: File,
    pub area: Arc<Area>,
    pub read: bool,
    pub write: bool,
    /// Every write goes to the end (`O_APPEND`, `fd_fdstat_set_flags`).
    pub append: bool,
    /// Beneath the area's root, as opened (see [`DirFd::path`]).
    pub path: String,
    /// The file's inode: what the volume's tracker records changes under.
    pub ino: u64,
}

/// What an open descriptor refers to.
#[derive(Debug)]
pub enum Descriptor {
    /// Always at end of file.
    Stdin,
    /// Kept by the hub as the function's stdout log.
    Stdout,
    /// Kept by the hub as the function's stderr log.
    Stderr,
    Dir(DirFd),
    File(FileFd),
}

impl Descriptor {
    /// `filetype` of `fd_fdstat_get`.
    pub fn filetype(&self) -> u8 {
        match self {
            Descriptor::Dir(_) => FILETYPE_DIRECTORY,
            Descriptor::File(_) => FILETYPE_REGULAR_FILE,
            _ => FILETYPE_CHARACTER_DEVICE,
        }
    }

    /// `fs_rights_base` and `fs_rights_inheriting` of `fd_fdstat_get`: what
    /// the descriptor may really do, so a read-only mount shows no write
    /// right anywhere.
    pub fn rights(&self) -> (u64, u64) {
        match self {
            Descriptor::Dir(dir) if dir.area.writable => (
                RIGHTS_DIR_READ | RIGHTS_DIR_WRITE,
                RIGHTS_DIR_READ | RIGHTS_DIR_WRITE | RIGHTS_FILE_READ | RIGHTS_FILE_WRITE,
            ),
            // The inheriting rights name what a file beneath may ask for:
            // wasi-libc drops any right not in them before `path_open`, so
            // leaving the write rights out would turn `open(O_RDWR)` into a
            // silent read-only open instead of the `EROFS` it gets.
            Descriptor::Dir(_) => (RIGHTS_DIR_READ, RIGHTS_DIR_READ | RIGHTS_FILE_READ | RIGHTS_FILE_WRITE),
            Descriptor::File(file) => {
                let mut rights = RIGHTS_FILE_READ & !RIGHT_FD_READ;
                if file.read {
                    rights |= RIGHT_FD_READ;
                }
                if file.write {
                    rights |= RIGHTS_FILE_WRITE;
                }
                (rights, 0)
            }
            _ => (
                RIGHT_FD_READ | RIGHT_FD_WRITE | RIGHT_FD_FDSTAT_SET_FLAGS | RIGHT_POLL_FD_READWRITE,
                0,
            ),
        }
    }

    /// `fs_flags` of `fd_fdstat_get`.
    pub fn flags(&self) -> u16 {
        match self {
            Descriptor::File(file) if file.append => FDFLAG_APPEND,
            _ => 0,
        }
    }

    /// The log stream writes go to, for descriptors that take writes.
    pub fn output(&self) -> Option<LogStream> {
        match self {
            Descriptor::Stdout => Some(LogStream::Stdout),
            Descriptor::Stderr => Some(LogStream::Stderr),
            _ => None,
        }
    }

    /// Whether it is one of the three descriptors every function starts with.
    pub fn is_stdio(&self) -> bool {
        matches!(self, Descriptor::Stdin | Descriptor::Stdout | Descriptor::Stderr)
    }

    /// The directory, or `ENOTDIR` (`EBADF` for stdio).
    pub fn dir(&self) -> Result<&DirFd, Errno> {
        match self {
            Descriptor::Dir(dir) => Ok(dir),
            Descriptor::File(_) => Err(Errno::Notdir),
            _ => Err(Errno::Badf),
        }
    }

    /// The file, or `EISDIR` for a directory (`EBADF` for stdio).
    pub fn file(&self) -> Result<&FileFd, Errno> {
        match self {
            Descriptor::File(file) => Ok(file),
            Descriptor::Dir(_) => Err(Errno::Isdir),
            _ => Err(Errno::Badf),
        }
    }
}

/// Open descriptors by number.
#[derive(Debug)]
pub struct FdTable {
    slots: Vec<Option<Descriptor>>,
    /// Every preopened area in order, open or closed by the guest.
    areas: Vec<Arc<Area>>,
}

impl FdTable {
    /// The table every function starts with: 0, 1 and 2.
    pub fn stdio() -> FdTable {
        FdTable {
            slots: vec![
                Some(Descriptor::Stdin),
                Some(Descriptor::Stdout),
                Some(Descriptor::Stderr),
            ],
            areas: Vec::new(),
        }
    }

    /// The preopened areas, in order (the volume first, if any).
    pub fn areas(&self) -> &[Arc<Area>] {
        &self.areas
    }

    /// Every open descriptor with its number.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Descriptor)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(fd, slot)| slot.as_ref().map(|descriptor| (fd as u32, descriptor)))
    }

    /// Replaces the table with exactly `slots` (a restore), keeping the areas.
    pub fn replace_slots(&mut self, slots: Vec<Option<Descriptor>>) {
        self.slots = slots;
    }

    /// Stdio and one preopen per directory, 3 onwards, in order. Fails with
    /// the area that cannot be opened.
    pub fn with_preopens(preopens: &[PreopenSpec]) -> Result<FdTable, String> {
        let mut table = FdTable::stdio();
        for spec in preopens {
            let (area, dir) = Area::open(spec).map_err(|error| {
                format!(
                    "cannot open {} (for {}): {error}",
                    spec.host_path.display(),
                    spec.guest_path
                )
            })?;
            let area = Arc::new(area);
            table.areas.push(Arc::clone(&area));
            table.slots.push(Some(Descriptor::Dir(DirFd {
                dir,
                area,
                preopen: true,
                path: String::new(),
            })));
        }
        Ok(table)
    }

    /// The descriptor `fd` names (`fd` as the guest passed it, so a negative
    /// `i32` is a large number here), or `EBADF`.
    pub fn get(&self, fd: u32) -> Result<&Descriptor, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|index| self.slots.get(index))
            .and_then(Option::as_ref)
            .ok_or(Errno::Badf)
    }

    /// [`get`](Self::get), to change the descriptor.
    pub fn get_mut(&mut self, fd: u32) -> Result<&mut Descriptor, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|index| self.slots.get_mut(index))
            .and_then(Option::as_mut)
            .ok_or(Errno::Badf)
    }

    /// Puts `descriptor` in the lowest free slot; `EMFILE` when
    /// [`MAX_FDS`] are open.
    pub fn insert(&mut self, descriptor: Descriptor) -> Result<u32, Errno> {
        let index = match self.slots.iter().position(Option::is_none) {
            Some(index) => index,
            None if self.slots.len() < MAX_FDS => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return Err(Errno::Mfile),
        };
        self.slots[index] = Some(descriptor);
        Ok(index as u32)
    }

    /// Closes `fd`. Closing stdio succeeds and leaves it open, so a guest
    /// that closes stdout can still be heard.
    pub fn close(&mut self, fd: u32) -> Result<(), Errno> {
        if !self.get(fd)?.is_stdio() {
            self.slots[fd as usize] = None;
        }
        Ok(())
    }

    /// `fd_renumber`: `from` takes the number `to`, whose descriptor is
    /// closed; both must be open. Stdio cannot be replaced or moved.
    pub fn renumber(&mut self, from: u32, to: u32) -> Result<(), Errno> {
        if self.get(from)?.is_stdio() || self.get(to)?.is_stdio() {
            return Err(Errno::Notsup);
        }
        if from != to {
            let moved = self.slots[from as usize].take();
            self.slots[to as usize] = moved;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stdio_table_resolves_0_1_and_2_and_nothing_else() {
        let table = FdTable::stdio();
        assert!(matches!(table.get(0), Ok(Descriptor::Stdin)));
        assert!(matches!(table.get(1), Ok(Descriptor::Stdout)));
        assert!(matches!(table.get(2), Ok(Descriptor::Stderr)));
        for fd in [3, 1000, u32::MAX, -1i32 as u32] {
            assert_eq!(table.get(fd).err(), Some(Errno::Badf), "fd {fd}");
        }
    }

    #[test]
    fn only_stdout_and_stderr_take_writes() {
        let table = FdTable::stdio();
        let outputs: Vec<_> = (0..3).map(|fd| table.get(fd).unwrap().output()).collect();
        assert_eq!(outputs, [None, Some(LogStream::Stdout), Some(LogStream::Stderr)]);
    }

    fn preopen(dir: &std::path::Path, writable: bool) -> PreopenSpec {
        PreopenSpec {
            guest_path: "/data".to_owned(),
            host_path: dir.to_owned(),
            writable,
            quota_bytes: None,
            volume: false,
        }
    }

    #[test]
    fn preopens_take_3_onwards_and_a_read_only_one_shows_no_right_to_change_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        let table = FdTable::with_preopens(&[preopen(dir.path(), true), preopen(dir.path(), false)]).unwrap();
        let (rw_base, rw_inheriting) = table.get(3).unwrap().rights();
        let (ro_base, ro_inheriting) = table.get(4).unwrap().rights();
        assert_ne!(rw_base & RIGHTS_DIR_WRITE, 0);
        assert_ne!(rw_inheriting & RIGHT_FD_WRITE, 0);
        assert_eq!(ro_base & crate::runtime::wasi::abi::RIGHTS_MUTATING, 0);
        assert_eq!(ro_inheriting & RIGHTS_DIR_WRITE & !RIGHTS_FILE_WRITE, 0);
        assert!(table.get(5).is_err());
    }

    #[test]
    fn a_missing_preopen_directory_is_named() {
        let error = FdTable::with_preopens(&[preopen(std::path::Path::new("/nonexistent/ferry"), true)]).unwrap_err();
        assert!(
            error.contains("/nonexistent/ferry") && error.contains("/data"),
            "{error}"
        );
    }

    #[test]
    fn the_table_holds_at_most_max_fds_and_reuses_the_lowest_free_slot() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = FdTable::with_preopens(&[preopen(dir.path(), true)]).unwrap();
        let open = |table: &FdTable| {
            let Descriptor::Dir(preopen) = table.get(3).unwrap() else {
                unreachable!()
            };
            Descriptor::Dir(DirFd {
                dir: preopen.dir.try_clone().unwrap(),
                area: Arc::clone(&preopen.area),
                preopen: false,
                path: String::new(),
            })
        };
        while table.slots.len() < MAX_FDS {
            let descriptor = open(&table);
            table.insert(descriptor).unwrap();
        }
        let descriptor = open(&table);
        assert_eq!(table.insert(descriptor).err(), Some(Errno::Mfile));
        table.close(10).unwrap();
        let descriptor = open(&table);
        assert_eq!(table.insert(descriptor), Ok(10));
        assert_eq!(table.renumber(10, 1).err(), Some(Errno::Notsup));
        table.renumber(10, 11).unwrap();
        assert!(table.get(10).is_err() && table.get(11).is_ok());
    }

    #[test]
    fn closing_stdio_succeeds_and_keeps_it_open_and_closing_an_unknown_fd_is_ebadf() {
        let mut table = FdTable::stdio();
        assert_eq!(table.close(1), Ok(()));
        assert!(matches!(table.get(1), Ok(Descriptor::Stdout)));
        assert_eq!(table.close(7), Err(Errno::Badf));
    }
}
