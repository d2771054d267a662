use super::*;

fn hub() -> (tempfile::TempDir, Store, LogHub) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store.clone(), LogHub::new(store))
}

fn stored(store: &Store, name: &str) -> Vec<u64> {
    store
        .read_logs(name, 0)
        .unwrap()
        .entries
        .iter()
        .map(|entry| entry.seq)
        .collect()
}

#[test]
fn output_waits_for_a_batch_but_every_read_sees_it() {
    let (_dir, store, logs) = hub();
    for line in ["a\n", "b\n", "c\n"] {
        logs.append("f", LogStream::Stdout, line.as_bytes());
    }
    assert_eq!(stored(&store, "f"), Vec::<u64>::new(), "a few lines wait for the batch");
    let history = logs.subscribe("f", 0, false).unwrap().history;
    let seqs: Vec<u64> = history.iter().map(|entry| entry.seq).collect();
    assert_eq!(seqs, [0, 1, 2]);
    assert_eq!(stored(&store, "f"), [0, 1, 2]);
}

#[test]
fn a_full_batch_is_stored_without_waiting_for_the_tick() {
    let (_dir, store, logs) = hub();
    for _ in 0..MAX_PENDING_ENTRIES {
        logs.append("f", LogStream::Stdout, b"line\n");
    }
    assert_eq!(stored(&store, "f").len(), MAX_PENDING_ENTRIES);
}

#[test]
fn the_log_position_a_checkpoint_records_covers_only_stored_output() {
    let (_dir, store, logs) = hub();
    logs.append("f", LogStream::Stdout, b"one\n");
    logs.append("f", LogStream::Stderr, b"two\n");
    assert_eq!(logs.next_seq("f"), 2);
    assert_eq!(stored(&store, "f"), [0, 1]);
}

#[test]
fn flushing_all_stores_every_function_and_a_new_log_hub_numbers_on_from_the_store() {
    let (dir, store, logs) = hub();
    logs.append("f", LogStream::Stdout, b"f0\n");
    logs.append("g", LogStream::Stdout, b"g0\n");
    logs.flush_all();
    assert_eq!(stored(&store, "f"), [0]);
    assert_eq!(stored(&store, "g"), [0]);
    drop(logs);
    let logs = LogHub::new(store);
    logs.append("f", LogStream::Stdout, b"f1\n");
    assert_eq!(logs.next_seq("f"), 2);
    drop(dir);
}

#[test]
fn a_truncated_log_numbers_from_the_checkpoint_again() {
    let (_dir, store, logs) = hub();
    for _ in 0..5 {
        logs.append("f", LogStream::Stdout, b"x\n");
    }
    logs.truncate("f", 2).unwrap();
    assert_eq!(stored(&store, "f"), [0, 1]);
    logs.append("f", LogStream::Stdout, b"again\n");
    assert_eq!(logs.history("f").unwrap().last().unwrap().seq, 2);
}

#[test]
fn an_imported_history_replaces_pending_output() {
    let (_dir, store, logs) = hub();
    logs.append("f", LogStream::Stdout, b"local, never stored\n");
    let imported: Vec<LogEntry> = (0..3)
        .map(|seq| LogEntry {
            seq,
            stream: LogStream::Stdout as i32,
            data: format!("moved {seq}\n").into_bytes(),
            unix_ms: 0,
        })
        .collect();
    logs.import("f", &imported).unwrap();
    logs.flush_all();
    assert_eq!(stored(&store, "f"), [0, 1, 2]);
    assert_eq!(logs.history("f").unwrap()[0].data, b"moved 0\n");
    logs.append("f", LogStream::Stdout, b"next\n");
    assert_eq!(logs.next_seq("f"), 4);
}

#[test]
fn a_history_imported_in_two_parts_equals_the_source_history() {
    let (_dir, store, logs) = hub();
    let entry = |seq: u64| LogEntry {
        seq,
        stream: LogStream::Stdout as i32,
        data: format!("line {seq}\n").into_bytes(),
        unix_ms: 0,
    };
    let source: Vec<LogEntry> = (0..5).map(entry).collect();
    assert!(logs.history_from("f", 0).unwrap().is_empty());
    logs.import("f", &source[..3]).unwrap();
    assert_eq!(logs.history_from("f", 1).unwrap(), source[1..3]);
    logs.import_more("f", &source[3..]).unwrap();
    assert_eq!(stored(&store, "f"), [0, 1, 2, 3, 4]);
    assert_eq!(logs.history("f").unwrap(), source);
    assert_eq!(logs.history_from("f", 4).unwrap(), source[4..]);
    assert!(logs.history_from("f", 5).unwrap().is_empty());
    logs.append("f", LogStream::Stdout, b"next\n");
    assert_eq!(logs.next_seq("f"), 6, "numbering continues after the last part");
}

#[tokio::test]
async fn a_follower_gets_the_history_then_live_entries_each_once() {
    let (_dir, _store, logs) = hub();
    logs.append("f", LogStream::Stdout, b"before\n");
    let subscription = logs.subscribe("f", 0, true).unwrap();
    logs.append("f", LogStream::Stdout, b"after\n");
    let mut entries = Box::pin(subscription.into_stream("f".to_owned()));
    let first = entries.next().await.unwrap().unwrap();
    let second = entries.next().await.unwrap().unwrap();
    assert_eq!((first.seq, first.data.as_slice()), (0, b"before\n".as_slice()));
    assert_eq!((second.seq, second.data.as_slice()), (1, b"after\n".as_slice()));
}

#[tokio::test]
async fn a_follower_that_falls_too_far_behind_is_told_how_much_it_missed() {
    let (_dir, _store, logs) = hub();
    let subscription = logs.subscribe("f", 0, true).unwrap();
    for _ in 0..FOLLOW_BUFFER + 10 {
        logs.append("f", LogStream::Stdout, b"x\n");
    }
    let results: Vec<_> = subscription.into_stream("f".to_owned()).collect().await;
    let Some(Err(HubError::LogFollowerLagged { missed, .. })) = results.last() else {
        panic!("the stream did not end with a lag error");
    };
    assert_eq!(*missed, 10);
}

#[test]
fn big_writes_keep_only_the_newest_bytes_within_the_budget() {
    let (_dir, store, logs) = hub();
    let piece = vec![b'x'; MAX_ENTRY_BYTES];
    // Three budgets' worth, in 64 KiB entries: far under the entry window.
    let written = 3 * LOG_BYTES_KEPT as usize / MAX_ENTRY_BYTES;
    for _ in 0..written {
        logs.append("f", LogStream::Stdout, &piece);
    }
    logs.flush_all();
    let kept = stored(&store, "f");
    let bytes = store.log_bytes("f").unwrap();
    assert!(bytes <= LOG_BYTES_KEPT, "{bytes} bytes kept");
    assert!(
        bytes > LOG_BYTES_KEPT - 2 * MAX_ENTRY_BYTES as u64,
        "{bytes} bytes kept"
    );
    // The newest, consecutive up to the last written.
    assert_eq!(*kept.last().unwrap(), written as u64 - 1);
    assert!(kept.windows(2).all(|pair| pair[1] == pair[0] + 1), "{kept:?}");

    // A rewind, then more: the count is read again and the budget holds.
    logs.truncate("f", written as u64 - 10).unwrap();
    for _ in 0..written {
        logs.append("f", LogStream::Stdout, &piece);
    }
    logs.flush_all();
    assert!(store.log_bytes("f").unwrap() <= LOG_BYTES_KEPT);
    assert_eq!(*stored(&store, "f").last().unwrap(), 2 * written as u64 - 11);
}
