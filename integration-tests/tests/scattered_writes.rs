//! A function that writes words scattered over a big heap dirties a few
//! pages in nearly every chunk: from a move's second round on, those chunks
//! travel as the pages written since the round before, over the version the
//! destination already has (`ferry_migrator::transfer::PageDelta`). What
//! arrives must be exactly the memory the function had.

use std::time::Duration;

use ferry_integration_tests::eventually;
use ferry_integration_tests::moves::{
    check_bigheap_checksums, check_consecutive, deploy_guest, loopback_pair, migrate, numbered_lines, stdout_of,
};

const PATIENCE: Duration = Duration::from_secs(60);
const HEAP_MIB: usize = 96;

#[tokio::test]
async fn a_heap_written_in_scattered_words_moves_as_its_written_pages_and_keeps_every_checksum() {
    let hubs = loopback_pair(&[], PATIENCE).await.unwrap();
    // 4,096 words a round over 96 MiB: about one page in six a round, a
    // few pages in nearly every 64 KiB chunk.
    deploy_guest(
        &hubs[0],
        "examples/bigheap.wasm",
        "scatter",
        &[&HEAP_MIB.to_string(), "0"],
    );
    eventually("the heap to fill and change", PATIENCE, || async {
        (numbered_lines(&stdout_of(&hubs[0], "scatter"), "round ").len() >= 3).then_some(())
    })
    .await
    .unwrap();
    let mut owner = 0;
    let mut left_out = 0;
    for _ in 0..4 {
        let to = format!("hub-{}", 1 - owner);
        let summary = migrate(&hubs[owner], "scatter", &to).unwrap();
        eprintln!("moved to {to}: {summary}");
        left_out += summary["bytes_left_out_by_pages"].as_u64().unwrap_or_default();
        owner = 1 - owner;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        left_out > 0,
        "no move sent a chunk as its written pages: every chunk went whole"
    );
    // A few more rounds where it runs now, each checksum over the whole heap.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let logs = stdout_of(&hubs[owner], "scatter");
    check_consecutive(&numbered_lines(&logs, "round "), "bigheap rounds across four moves").unwrap();
    check_bigheap_checksums(&logs, HEAP_MIB).unwrap();
}
