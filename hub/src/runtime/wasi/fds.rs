//! The descriptor table of one function. Today it holds stdio only; files
//! and preopened directories join [`Descriptor`] with the filesystem calls,
//! and the calls that take an fd already resolve it here.

use ferry_proto::v1::LogStream;

use super::abi::{
    Errno, FILETYPE_CHARACTER_DEVICE, RIGHT_FD_FDSTAT_SET_FLAGS, RIGHT_FD_READ, RIGHT_FD_WRITE, RIGHT_POLL_FD_READWRITE,
};

/// What an open descriptor refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Descriptor {
    /// Always at end of file.
    Stdin,
    /// Kept by the hub as the function's stdout log.
    Stdout,
    /// Kept by the hub as the function's stderr log.
    Stderr,
}

impl Descriptor {
    /// `filetype` of `fd_fdstat_get`.
    pub fn filetype(self) -> u8 {
        FILETYPE_CHARACTER_DEVICE
    }

    /// `fs_rights_base` of `fd_fdstat_get`.
    pub fn rights(self) -> u64 {
        RIGHT_FD_READ | RIGHT_FD_WRITE | RIGHT_FD_FDSTAT_SET_FLAGS | RIGHT_POLL_FD_READWRITE
    }

    /// The log stream writes go to, for descriptors that take writes.
    pub fn output(self) -> Option<LogStream> {
        match self {
            Descriptor::Stdin => None,
            Descriptor::Stdout => Some(LogStream::Stdout),
            Descriptor::Stderr => Some(LogStream::Stderr),
        }
    }

    /// Whether `fd_read` reads it.
    pub fn readable(self) -> bool {
        self == Descriptor::Stdin
    }

    /// Whether it is one of the three descriptors every function starts with.
    pub fn is_stdio(self) -> bool {
        matches!(self, Descriptor::Stdin | Descriptor::Stdout | Descriptor::Stderr)
    }
}

/// Open descriptors by number.
#[derive(Debug, Clone)]
pub struct FdTable {
    slots: Vec<Option<Descriptor>>,
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
        }
    }

    /// The descriptor `fd` names (`fd` as the guest passed it, so a negative
    /// `i32` is a large number here), or `EBADF`.
    pub fn get(&self, fd: u32) -> Result<Descriptor, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|index| self.slots.get(index).copied().flatten())
            .ok_or(Errno::Badf)
    }

    /// Closes `fd`. Closing stdio succeeds and leaves it open, so a guest
    /// that closes stdout can still be heard.
    pub fn close(&mut self, fd: u32) -> Result<(), Errno> {
        let descriptor = self.get(fd)?;
        if !descriptor.is_stdio() {
            self.slots[fd as usize] = None;
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
        assert_eq!(table.get(0), Ok(Descriptor::Stdin));
        assert_eq!(table.get(1), Ok(Descriptor::Stdout));
        assert_eq!(table.get(2), Ok(Descriptor::Stderr));
        for fd in [3, 1000, u32::MAX, -1i32 as u32] {
            assert_eq!(table.get(fd), Err(Errno::Badf), "fd {fd}");
        }
    }

    #[test]
    fn only_stdout_and_stderr_take_writes_and_only_stdin_reads() {
        let table = FdTable::stdio();
        let outputs: Vec<_> = (0..3).map(|fd| table.get(fd).unwrap().output()).collect();
        assert_eq!(outputs, [None, Some(LogStream::Stdout), Some(LogStream::Stderr)]);
        let readable: Vec<_> = (0..3).map(|fd| table.get(fd).unwrap().readable()).collect();
        assert_eq!(readable, [true, false, false]);
    }

    #[test]
    fn closing_stdio_succeeds_and_keeps_it_open_and_closing_an_unknown_fd_is_ebadf() {
        let mut table = FdTable::stdio();
        assert_eq!(table.close(1), Ok(()));
        assert_eq!(table.get(1), Ok(Descriptor::Stdout));
        assert_eq!(table.close(7), Err(Errno::Badf));
    }
}
