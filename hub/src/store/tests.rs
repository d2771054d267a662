use ferry_proto::internal::v1::FunctionRecord;
use ferry_proto::v1::{FunctionSpec, LogEntry, LogStream};

use super::*;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

#[test]
fn module_is_stored_under_its_blake3_hash_and_verified_on_read() {
    let (_dir, store) = open();
    let hash = store.put_module(b"\0asm module bytes").unwrap();
    assert_eq!(hash, blake3::hash(b"\0asm module bytes").to_hex().as_str());
    assert_eq!(store.module(&hash).unwrap(), b"\0asm module bytes");
    store.modules.insert(&hash, b"tampered".as_slice()).unwrap();
    assert!(matches!(store.module(&hash), Err(StoreError::Corrupt { .. })));
}

#[test]
fn unknown_module_is_reported_as_missing() {
    let (_dir, store) = open();
    assert!(matches!(store.module("abc"), Err(StoreError::ModuleMissing { .. })));
}

#[test]
fn artifact_that_fails_its_checksum_is_dropped_not_returned() {
    let (_dir, store) = open();
    let key = ArtifactKey {
        module_hash: "m".into(),
        instrumentation_version: 1,
        wasmer_version: "7",
        target: "x86_64".into(),
    };
    store.put_artifact(&key, b"native code").unwrap();
    assert_eq!(
        store.artifact(&key).unwrap().as_deref(),
        Some(b"native code".as_slice())
    );
    let other_target = ArtifactKey {
        target: "aarch64".into(),
        ..key.clone()
    };
    assert_eq!(store.artifact(&other_target).unwrap(), None);
    let encoded = key.encode();
    let mut value = store.artifacts.get(&encoded).unwrap().unwrap().to_vec();
    *value.last_mut().unwrap() ^= 1;
    store.artifacts.insert(&encoded, value).unwrap();
    assert_eq!(store.artifact(&key).unwrap(), None);
    assert!(!store.artifacts.contains_key(&encoded).unwrap());
}

#[test]
fn function_records_survive_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let record = FunctionRecord {
        format_version: ferry_proto::RECORD_FORMAT_VERSION,
        spec: Some(FunctionSpec {
            name: "sensor".into(),
            ..Default::default()
        }),
        starts: 3,
        ..Default::default()
    };
    {
        let store = Store::open(dir.path()).unwrap();
        store.put_function(&record).unwrap();
        store.flush().unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(store.functions().unwrap(), vec![record]);
}

/// Opens a database another handle in this process has just dropped. sled
/// releases its file lock when its flusher thread lets go of the last
/// reference, a moment after the drop, so a failed lock is retried briefly.
fn reopen(path: &std::path::Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(path) {
            Ok(store) => return store,
            Err(StoreError::Sled(sled::Error::Io(error)))
                if error.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => panic!("reopening {}: {error}", path.display()),
        }
    }
}

#[test]
fn record_of_another_format_version_is_refused() {
    let (_dir, store) = open();
    let record = FunctionRecord {
        format_version: 99,
        spec: Some(FunctionSpec::default()),
        ..Default::default()
    };
    store.put_function(&record).unwrap();
    assert!(matches!(store.functions(), Err(StoreError::Corrupt { .. })));
}

fn entry(seq: u64) -> LogEntry {
    LogEntry {
        seq,
        stream: LogStream::Stdout as i32,
        data: format!("line {seq}\n").into_bytes(),
        unix_ms: 0,
    }
}

#[test]
fn logs_keep_only_the_newest_window_and_continue_numbering() {
    let (_dir, store) = open();
    let total = LOG_ENTRIES_KEPT + 5;
    for seq in 0..total {
        store.append_log("a", &entry(seq)).unwrap();
    }
    store.append_log("ab", &entry(0)).unwrap();
    let page = store.read_logs("a", 0).unwrap();
    assert_eq!(page.entries.len() as u64, LOG_ENTRIES_KEPT);
    assert_eq!(page.entries.first().unwrap().seq, 5);
    assert_eq!(page.next_seq, total);
    let tail = store.read_logs("a", 2).unwrap();
    assert_eq!(
        tail.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![total - 2, total - 1]
    );
    store.truncate_logs("a", total - 3).unwrap();
    assert_eq!(store.next_log_seq("a").unwrap(), total - 3);
    assert_eq!(store.read_logs("a", 1).unwrap().entries[0].seq, total - 4);
    store.remove_logs("a").unwrap();
    assert_eq!(store.read_logs("a", 0).unwrap().entries.len(), 0);
    assert_eq!(store.read_logs("ab", 0).unwrap().entries.len(), 1);
}
