//! One hub per data directory. Two hubs started on the same directory (a
//! command pasted twice, a service manager and a shell) would share one
//! database, one chunk store and one disk reserve. sled locks its own
//! files, but only once it opens them, and the second hub would already
//! have touched the directory by then (given up the first hub's disk
//! reserve, for one). So the hub takes an advisory lock on
//! `DATA_DIR/lock` before anything else there and holds it for its life;
//! the kernel lets go of it when the process ends, `kill -9` included.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

const LOCK_FILE: &str = "lock";

/// Why the data directory could not be taken.
#[derive(Debug, Error)]
pub enum DirLockError {
    #[error(
        "data directory {path} is in use by another hub{holder}; stop it first, or give this one its own --data-dir"
    )]
    InUse { path: PathBuf, holder: String },
    #[error("cannot lock data directory {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The lock on a data directory, held while this value lives.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    dir: PathBuf,
}

impl DataDirLock {
    /// Takes the lock on `dir` (which must exist) without waiting, and
    /// notes this process's id in it for the error another hub would see.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, DirLockError> {
        let io = |source| DirLockError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut noted = String::new();
                let _ = file.read_to_string(&mut noted);
                let holder = match noted.trim().parse::<u32>() {
                    Ok(pid) => format!(" (process {pid})"),
                    Err(_) => String::new(),
                };
                return Err(DirLockError::InUse {
                    path: dir.to_owned(),
                    holder,
                });
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io)?;
        Ok(DataDirLock {
            _file: file,
            dir: dir.to_owned(),
        })
    }

    /// The directory this lock holds.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_held_directory_is_refused_naming_the_holder_and_granted_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path()).unwrap();
        let error = DataDirLock::acquire(dir.path()).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, DirLockError::InUse { .. }), "{text}");
        assert!(text.contains(&format!("(process {})", std::process::id())), "{text}");
        drop(held);
        let again = DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(again.dir(), dir.path());
    }

    #[test]
    fn a_missing_directory_is_an_io_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let error = DataDirLock::acquire(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(error, DirLockError::Io { .. }), "{error}");
    }
}
