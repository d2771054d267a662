//! Capturing a function's files: what a capture reads of its volume, and
//! its descriptor table taken down and opened again.

use std::io::Seek;

use ferry_migrator::checkpoint::volume::{open_descriptor, volume_entry};

use super::files::{Files, READ, WRITE};
use crate::runtime::wasi::abi::OFLAG_CREAT;
use crate::runtime::wasi::calls::path::path_unlink_file;
use crate::runtime::wasi::fds::{Descriptor, FdTable};
use crate::runtime::wasi::files::PreopenSpec;
use crate::runtime::wasi::volume::{SnapshotFiles, capture_files, restore_descriptors, start_clean};
use ferry_migrator::checkpoint::volume::FILE_CHUNK_SIZE as CHUNK;

const FILE_BYTES: usize = 3 * CHUNK as usize + 100;

/// A volume (fd 3, with a quota so that writes are counted) holding
/// `db` of [`FILE_BYTES`] non-zero bytes, written from outside.
fn volume_with_a_file() -> Files {
    let files = Files::new(Some(1 << 30));
    let content: Vec<u8> = (0..FILE_BYTES).map(|index| (index % 251) as u8 + 1).collect();
    std::fs::create_dir(files.host("volume/sub")).unwrap();
    std::fs::write(files.host("volume/sub/db"), content).unwrap();
    files
}

fn capture(files: &mut Files, set: &str) -> SnapshotFiles {
    capture_files(&files.test.guest().fds, Some(set))
        .unwrap()
        .expect("the function has directories")
}

#[test]
fn a_capture_reads_only_the_chunks_written_since_the_same_consumer_s_previous_one() {
    let mut files = volume_with_a_file();
    let first = capture(&mut files, "checkpoints");
    assert_eq!(
        first.bytes_read, FILE_BYTES as u64,
        "the first capture reads everything"
    );
    let volume = first.volume.as_ref().unwrap();
    let paths: Vec<_> = volume.entries.iter().map(|entry| entry.path.as_str()).collect();
    assert_eq!(paths, ["sub", "sub/db"]);
    assert_eq!(volume.entries[1].kind, volume_entry::Kind::File as i32);
    assert_eq!(volume.entries[1].chunk_hashes.len(), 4);
    assert_eq!(first.chunks.len(), 4);

    // Ten bytes at the start of the file: one chunk changed.
    let fd = files.open(3, "sub/db", 0, READ | WRITE, 0).unwrap();
    assert_eq!(files.write(fd, b"0123456789"), Ok(10));
    let second = capture(&mut files, "checkpoints");
    assert_eq!(second.bytes_read, u64::from(CHUNK));
    let (before, after) = (
        &volume.entries[1].chunk_hashes,
        &second.volume.as_ref().unwrap().entries[1].chunk_hashes,
    );
    assert_ne!(before[0], after[0]);
    assert_eq!(before[1..], after[1..]);

    // Another consumer has seen nothing yet; this one nothing new.
    assert_eq!(capture(&mut files, "move 1").bytes_read, FILE_BYTES as u64);
    assert_eq!(capture(&mut files, "checkpoints").bytes_read, 0);
}

#[test]
fn a_capture_reads_no_hole_of_a_sparse_file() {
    let mut files = Files::new(Some(1 << 30));
    // 64 MiB apparent, data in its first and last chunks only.
    let sparse = std::fs::File::create(files.host("volume/sparse")).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"start", 0).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"end", (64 << 20) - 3).unwrap();
    drop(sparse);
    let captured = capture(&mut files, "checkpoints");
    let entry = &captured.volume.as_ref().unwrap().entries[0];
    let count = ((64 << 20) / CHUNK) as usize;
    assert_eq!(entry.chunk_hashes.len(), count);
    let with_data: Vec<usize> = (0..count)
        .filter(|&index| !entry.chunk_hashes[index].is_empty())
        .collect();
    assert_eq!(with_data, [0, count - 1], "holes are zero chunks");
    // Only around the data is read (a filesystem's data extents are
    // blocks, not bytes), not the 64 MiB.
    assert!(captured.bytes_read <= 4 * u64::from(CHUNK), "{}", captured.bytes_read);
}

#[test]
fn a_file_changed_behind_the_tracker_s_back_is_read_whole() {
    let mut files = volume_with_a_file();
    capture(&mut files, "checkpoints");
    std::thread::sleep(std::time::Duration::from_millis(10));
    let mut content = std::fs::read(files.host("volume/sub/db")).unwrap();
    content[FILE_BYTES - 1] ^= 0xff;
    std::fs::write(files.host("volume/sub/db"), &content).unwrap();
    assert_eq!(capture(&mut files, "checkpoints").bytes_read, FILE_BYTES as u64);
}

#[test]
fn a_forgotten_consumer_reads_everything_again() {
    let mut files = volume_with_a_file();
    capture(&mut files, "checkpoints");
    files.test.guest().fds.areas()[0]
        .tracker()
        .unwrap()
        .forget("checkpoints");
    assert_eq!(capture(&mut files, "checkpoints").bytes_read, FILE_BYTES as u64);
}

/// [`volume_with_a_file`] plus `big` of [`BIG_FILE_BYTES`], written from outside.
fn volume_with_a_big_file() -> Files {
    let files = volume_with_a_file();
    let content: Vec<u8> = (0..BIG_FILE_BYTES).map(|index| (index % 241) as u8 + 1).collect();
    std::fs::write(files.host("volume/big"), content).unwrap();
    files
}

const BIG_FILE_BYTES: usize = 9 * CHUNK as usize + 100;

#[test]
fn a_view_started_from_the_state_the_volume_was_laid_out_from_reads_only_later_writes() {
    let mut files = volume_with_a_big_file();
    let laid_out = capture(&mut files, "first").volume.unwrap();
    let taken = start_clean(&files.test.guest().fds, "restored", &laid_out).unwrap();
    assert_eq!(taken, 1, "the big file; the small one is read at the first capture");
    assert_eq!(capture(&mut files, "restored").bytes_read, FILE_BYTES as u64);
    let fd = files.open(3, "big", 0, READ | WRITE, 0).unwrap();
    assert_eq!(files.write(fd, b"0123456789"), Ok(10));
    assert_eq!(capture(&mut files, "restored").bytes_read, u64::from(CHUNK));
    let fd = files.open(3, "sub/db", 0, READ | WRITE, 0).unwrap();
    assert_eq!(files.write(fd, b"0123456789"), Ok(10));
    let after = capture(&mut files, "restored");
    assert_eq!(after.bytes_read, u64::from(CHUNK));
    // The same hashes a consumer that reads everything finds.
    assert_eq!(after.volume, capture(&mut files, "whole").volume);
}

#[test]
fn a_view_is_not_started_from_a_state_the_file_on_disk_does_not_match_in_length() {
    let mut files = volume_with_a_big_file();
    let mut laid_out = capture(&mut files, "first").volume.unwrap();
    assert_eq!(laid_out.entries[0].path, "big");
    laid_out.entries[0].size += 1;
    assert_eq!(start_clean(&files.test.guest().fds, "restored", &laid_out).unwrap(), 0);
    assert_eq!(
        capture(&mut files, "restored").bytes_read,
        (FILE_BYTES + BIG_FILE_BYTES) as u64
    );
    // A malformed hash is an error, not a silent guess.
    laid_out.entries[0].size -= 1;
    laid_out.entries[0].chunk_hashes[0] = vec![1, 2, 3];
    assert!(start_clean(&files.test.guest().fds, "other", &laid_out).is_err());
}

#[test]
fn a_shared_view_reads_only_what_changed_since_the_view_it_started_from() {
    let mut files = volume_with_a_file();
    capture(&mut files, "checkpoints");
    let fd = files.open(3, "sub/db", 0, READ | WRITE, 0).unwrap();
    assert_eq!(files.write(fd, b"0123456789"), Ok(10));
    files.test.guest().fds.areas()[0]
        .tracker()
        .unwrap()
        .share("checkpoints", "move 1");
    let moved = capture(&mut files, "move 1");
    assert_eq!(moved.bytes_read, u64::from(CHUNK));
    assert_eq!(moved.volume, capture(&mut files, "whole").volume);
    // The view it started from still has the write to read.
    assert_eq!(capture(&mut files, "checkpoints").bytes_read, u64::from(CHUNK));
}

#[test]
fn open_descriptors_are_captured_and_opened_again_at_their_numbers_and_offsets() {
    let mut files = volume_with_a_file();
    let writer = files.open(3, "sub/db", 0, READ | WRITE, 0).unwrap();
    assert_eq!(files.write(writer, b"abc"), Ok(3));
    let reader = files.open(4, "hello.txt", 0, READ, 0).unwrap();
    let captured = capture(&mut files, "checkpoints");
    let file = captured.descriptors.iter().find(|d| d.fd == writer as u32).unwrap();
    assert_eq!(
        (file.kind, file.path.as_str(), file.position, file.write),
        (open_descriptor::Kind::File as i32, "sub/db", 3, true)
    );
    let mount = captured.descriptors.iter().find(|d| d.fd == reader as u32).unwrap();
    assert_eq!(
        (mount.preopen, mount.path.as_str(), mount.write),
        (1, "hello.txt", false)
    );

    // A new instance of the function: the same preopens, then the table.
    let preopens = [
        PreopenSpec {
            guest_path: "/data".to_owned(),
            host_path: files.host("volume"),
            writable: true,
            quota_bytes: Some(1 << 30),
            volume: true,
        },
        PreopenSpec {
            guest_path: "/ro".to_owned(),
            host_path: files.host("ro"),
            writable: false,
            quota_bytes: None,
            volume: false,
        },
    ];
    let mut table = FdTable::with_preopens(&preopens).unwrap();
    restore_descriptors(&mut table, &captured.descriptors).unwrap();
    let Ok(Descriptor::File(restored)) = table.get(writer as u32) else {
        panic!("fd {writer} is not a file");
    };
    assert_eq!((&restored.file).stream_position().unwrap(), 3);
    assert!(restored.write && restored.read);
    assert!(matches!(table.get(3), Ok(Descriptor::Dir(dir)) if dir.preopen));
    assert!(matches!(table.get(reader as u32), Ok(Descriptor::File(file)) if !file.write));
}

#[test]
fn a_file_removed_while_open_fails_the_capture_naming_its_descriptor() {
    let mut files = volume_with_a_file();
    let fd = files.open(3, "scratch", OFLAG_CREAT, READ | WRITE, 0).unwrap();
    assert_eq!(files.path_call(path_unlink_file, 3, "scratch"), 0);
    let error = capture_files(&files.test.guest().fds, Some("checkpoints")).unwrap_err();
    assert!(error.contains(&format!("descriptor {fd}")), "{error}");
}
