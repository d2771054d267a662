//! Damaged checkpoints on disk: each is refused with a clear error when the
//! hub tries to continue from it, and nothing else is harmed — the other
//! function on the hub continues from its own checkpoint, and its stored
//! checkpoints keep working.
//!
//! The damage is done the way a failing disk or a stray tool would: on the
//! hub's sled database while the hub is down.

use std::time::Duration;

use ferry_integration_tests::{HubOptions, HubProcess, eventually, expect_success as ok, function_info, guest};
use ferry_migrator::checkpoint::{decode_manifest, encode_manifest};

const PATIENCE: Duration = Duration::from_secs(60);
const CHECKPOINTS: &str = "checkpoints";
const CHUNKS: &str = "checkpoint_chunks";

/// The key and stored bytes of the newest checkpoint of `name`.
fn latest_checkpoint(db: &sled::Db, name: &str) -> (sled::IVec, Vec<u8>) {
    let mut prefix = name.as_bytes().to_vec();
    prefix.push(0);
    let (key, value) = db
        .open_tree(CHECKPOINTS)
        .unwrap()
        .scan_prefix(prefix)
        .last()
        .expect("a stored checkpoint")
        .unwrap();
    (key, value.to_vec())
}

/// `ferry resume victim` is refused with `exit_code` (README's table).
fn assert_resume_refused(hub: &HubProcess, exit_code: i32) {
    let resume = hub.ferry(&["resume", "victim"]);
    assert_eq!(
        resume.status.code(),
        Some(exit_code),
        "{}",
        String::from_utf8_lossy(&resume.stderr)
    );
}

/// Re-encodes the newest checkpoint of `name` after `change` (with a valid
/// checksum, so only the change itself is wrong).
fn rewrite_latest_manifest(db: &sled::Db, name: &str, change: impl FnOnce(&mut ferry_migrator::CheckpointManifest)) {
    let (key, stored) = latest_checkpoint(db, name);
    let mut manifest = decode_manifest(&stored).unwrap();
    change(&mut manifest);
    db.open_tree(CHECKPOINTS)
        .unwrap()
        .insert(key, encode_manifest(&manifest))
        .unwrap();
}

/// Runs `victim` (ticker) and `bystander` (echo), checkpoints both, kills
/// the hub, applies `damage` to the victim's newest checkpoint, restarts
/// the hub, and returns it with the victim's failure reason.
async fn damaged_victim(damage: impl FnOnce(&sled::Db, &str)) -> (HubProcess, String) {
    let mut hub = HubProcess::start(HubOptions::default().args(["--checkpoint-interval", "0s"]))
        .await
        .unwrap();
    let ticker = guest("examples/ticker.wasm");
    let echo = guest("examples/echo.wasm");
    ok(hub.ferry(&["deploy", ticker.to_str().unwrap(), "--name", "victim", "--", "20"]));
    ok(hub.ferry(&["deploy", echo.to_str().unwrap(), "--name", "bystander"]));
    assert_eq!(
        ok(hub.ferry(&["invoke", "bystander", "--data", "before"])),
        "echo: before\n"
    );
    eventually("victim to tick", PATIENCE, || async {
        ok(hub.ferry(&["logs", "victim"])).contains("tick 3 ").then_some(())
    })
    .await
    .unwrap();
    ok(hub.ferry(&["checkpoint", "victim"]));
    ok(hub.ferry(&["checkpoint", "bystander"]));
    hub.kill().unwrap();
    {
        let db = sled::open(hub.data_dir().join("db")).unwrap();
        damage(&db, "victim");
        db.flush().unwrap();
    }
    hub.restart().await.unwrap();
    let victim = eventually("the victim to be refused", PATIENCE, || async {
        let victim = function_info(&hub, "victim");
        (victim["state"] == "failed").then_some(victim)
    })
    .await
    .unwrap();
    let reason = victim["failure"].as_str().unwrap().to_owned();

    // Nothing else is harmed: the bystander continued from its checkpoint
    // and still answers, and its checkpoints still work.
    // Recovery restarts it from its checkpoint: `starting` until instantiated.
    eventually("the bystander to run again", PATIENCE, || async {
        (function_info(&hub, "bystander")["state"] == "running").then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        ok(hub.ferry(&["invoke", "bystander", "--data", "after"])),
        "echo: after\n"
    );
    ok(hub.ferry(&["checkpoint", "bystander"]));
    (hub, reason)
}

#[tokio::test]
async fn a_flipped_byte_in_a_memory_chunk_is_refused_and_harms_nothing_else() {
    let (hub, reason) = damaged_victim(|db, name| {
        let (_, stored) = latest_checkpoint(db, name);
        let manifest = decode_manifest(&stored).unwrap();
        let chunks = db.open_tree(CHUNKS).unwrap();
        let victim_only = manifest
            .chunk_hashes
            .iter()
            .filter(|hash| !hash.is_empty())
            .find(|hash| chunks.get(hash.as_slice()).unwrap().is_some())
            .expect("a stored chunk");
        let mut bytes = chunks.get(victim_only.as_slice()).unwrap().unwrap().to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        chunks.insert(victim_only.as_slice(), bytes).unwrap();
    })
    .await;
    assert!(reason.contains("chunk") && reason.contains("victim"), "{reason}");
    assert_resume_refused(&hub, 10);
}

#[tokio::test]
async fn a_truncated_manifest_is_refused_and_harms_nothing_else() {
    let (hub, reason) = damaged_victim(|db, name| {
        let (key, stored) = latest_checkpoint(db, name);
        db.open_tree(CHECKPOINTS)
            .unwrap()
            .insert(key, &stored[..stored.len() / 2])
            .unwrap();
    })
    .await;
    assert!(reason.contains("corrupt") || reason.contains("checksum"), "{reason}");
    assert_resume_refused(&hub, 10);
}

#[tokio::test]
async fn a_manifest_naming_a_module_the_store_lacks_is_refused() {
    let (hub, reason) = damaged_victim(|db, name| {
        rewrite_latest_manifest(db, name, |manifest| manifest.module_hash = "0".repeat(64));
    })
    .await;
    assert!(
        reason.contains(&"0".repeat(64)) && reason.contains("not in the store"),
        "{reason}"
    );
    assert_resume_refused(&hub, 10);
}

#[tokio::test]
async fn a_checkpoint_of_an_older_format_version_is_refused_naming_both_versions() {
    let (hub, reason) = damaged_victim(|db, name| {
        rewrite_latest_manifest(db, name, |manifest| manifest.format_version = 0);
    })
    .await;
    assert!(reason.contains("version 0") && reason.contains('1'), "{reason}");
    assert_resume_refused(&hub, 7);
}

#[tokio::test]
async fn a_checkpoint_captured_under_another_instrumentation_version_is_refused_naming_both() {
    let other = ferry_migrator::INSTRUMENTATION_VERSION - 1;
    let (hub, reason) = damaged_victim(|db, name| {
        rewrite_latest_manifest(db, name, |manifest| manifest.instrumentation_version = other);
    })
    .await;
    let expected = format!(
        "captured under instrumentation version {other} and this hub restores version {} only",
        ferry_migrator::INSTRUMENTATION_VERSION
    );
    assert!(reason.contains(&expected), "{reason}");
    assert_resume_refused(&hub, 7);
}

/// A chunk damaged on disk after this hub wrote it (and so trusts it) is
/// found by the restore itself, not the check before it: `ferry resume`
/// fails with the chunk and the reason, instead of answering "running" for
/// a run that is already over, and nothing else is harmed.
#[tokio::test]
async fn a_chunk_damaged_under_a_running_hub_fails_the_resume_with_the_reason_and_harms_nothing_else() {
    let hub = HubProcess::start(HubOptions::default().args(["--checkpoint-interval", "0s"]))
        .await
        .unwrap();
    let heap = guest("examples/bigheap.wasm");
    let echo = guest("examples/echo.wasm");
    ok(hub.ferry(&["deploy", echo.to_str().unwrap(), "--name", "bystander"]));
    // 8 MiB that no compressor shrinks: read on two threads, in place.
    ok(hub.ferry(&["deploy", heap.to_str().unwrap(), "--name", "victim", "--", "8", "0"]));
    eventually("the victim to finish a round", PATIENCE, || async {
        ok(hub.ferry(&["logs", "victim"])).contains("round 1 ").then_some(())
    })
    .await
    .unwrap();
    ok(hub.ferry(&["suspend", "victim"]));
    // Only the victim has written chunks: the newest large pack is its.
    let packs = hub.data_dir().join("chunks");
    let pack = std::fs::read_dir(&packs)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.metadata().unwrap().len() > 4 << 20)
        .max()
        .expect("a pack holding the victim's memory");
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&pack).unwrap();
        let middle = file.metadata().unwrap().len() / 2;
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, middle).unwrap();
        file.write_all_at(&[byte[0] ^ 0x10], middle).unwrap();
    }

    let resume = hub.ferry(&["resume", "victim"]);
    let stderr = String::from_utf8_lossy(&resume.stderr);
    assert_eq!(resume.status.code(), Some(10), "{stderr}");
    assert!(
        stderr.contains("victim") && stderr.contains("is corrupt") && stderr.contains("checksum"),
        "{stderr}"
    );
    let victim = function_info(&hub, "victim");
    assert_eq!(victim["state"], "failed", "{victim}");
    assert!(victim["failure"].as_str().unwrap().contains("is corrupt"), "{victim}");

    assert_eq!(
        ok(hub.ferry(&["invoke", "bystander", "--data", "after"])),
        "echo: after\n"
    );
    ok(hub.ferry(&["checkpoint", "bystander"]));
}
