//! A function's files travel with it: SQLite (`integration-tests/corpus/
//! sqlite_file.c`) writing a database in its volume, in batches, on real
//! `ferry agent`s —
//!
//! - checkpointed at ten random moments, each followed by `kill -9` of the
//!   hub and a restart: the hub puts memory *and* files back to the same
//!   checkpoint, so the program (which refuses to start on a database that
//!   already holds rows) carries on as if nothing happened;
//! - moved between two hubs ten times while it writes;
//! - moved while one of the two hubs is killed at a random moment of the
//!   move (source or destination), five times: it ends on exactly one hub,
//!   with the files of the memory it runs with.
//!
//! Both runs must print exactly what an uninterrupted run prints, and the
//! database each leaves must pass `PRAGMA integrity_check` and answer the
//! same queries (checked with the host's own SQLite). Random points come
//! from a seed that is printed; `FERRY_TEST_SEED` repeats a run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferry_integration_tests::moves::{Rng, kill_mid_move, loopback_pair, migrate, wait_exited, wait_peer_up};
use ferry_integration_tests::{
    HubOptions, HubProcess, eventually, expect_success as ok, guest, stdout_text, wait_ended,
};

/// A safety net for a hung test, never a performance assertion.
const PATIENCE: Duration = Duration::from_secs(300);
/// Rows per transaction: each commit creates, syncs and deletes a journal.
const BATCH: &str = "1000";
/// The kill -9 run: 200 batches (about ten seconds on a debug hub).
const SHORT_RUN: &str = "200000";
/// The moving run: 700 batches, long enough for ten moves (400 ran out
/// at the eighth on a quiet hour, once a move lays the volume out before
/// the pause).
const LONG_RUN: &str = "700000";
/// The run hit by kills: 800 batches, long enough for five kills and restarts.
const LONGEST_RUN: &str = "800000";

fn module() -> PathBuf {
    guest("integration-tests/corpus/sqlite_file.wasm")
}

fn deploy(hub: &HubProcess, name: &str, rows: &str) {
    let module = module();
    ok(hub.ferry(&[
        "deploy",
        module.to_str().unwrap(),
        "--name",
        name,
        "--memory-limit",
        "256MiB",
        "--volume",
        "/data:512MiB",
        "--",
        "/data/db.sqlite",
        rows,
        BATCH,
    ]));
}

fn database(hub: &HubProcess, name: &str) -> PathBuf {
    hub.data_dir().join("functions").join(name).join("volume/db.sqlite")
}

/// How many `batch N` lines `name` has printed.
fn batches_printed(hub: &HubProcess, name: &str) -> usize {
    let output = hub.ferry(&["logs", name]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with("batch "))
        .count()
}

async fn wait_batches(hub: &HubProcess, name: &str, batches: usize) {
    eventually(&format!("{name} to commit {batches} batches"), PATIENCE, || async {
        (batches_printed(hub, name) >= batches).then_some(())
    })
    .await
    .unwrap();
}

/// The host SQLite's word on a database: its integrity check, then what
/// the queries the program ends with return.
fn host_sqlite(database: &Path) -> String {
    let script = "import sqlite3, sys\n\
        db = sqlite3.connect(sys.argv[1])\n\
        print(db.execute('PRAGMA integrity_check').fetchone()[0])\n\
        print(db.execute('SELECT count(*), sum(k), sum(length(v)) FROM t').fetchone())\n\
        print(db.execute('SELECT id, k, v FROM t ORDER BY k, id LIMIT 3').fetchall())\n";
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(database)
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// An uninterrupted run's output and what its database answers.
async fn uninterrupted(hub: &HubProcess, rows: &str) -> (String, String) {
    deploy(hub, "plain-run", rows);
    let state = wait_ended(hub, "plain-run", PATIENCE).await.unwrap();
    assert_eq!(state["exit_code"], 0, "{state}");
    let output = ok(hub.ferry(&["logs", "plain-run"]));
    assert!(
        output.contains("integrity_check: ok") && output.contains("sqlite_file done"),
        "{output}"
    );
    let batches = rows.parse::<usize>().unwrap() / BATCH.parse::<usize>().unwrap();
    assert_eq!(
        output.lines().filter(|line| line.starts_with("batch ")).count(),
        batches
    );
    let answers = host_sqlite(&database(hub, "plain-run"));
    assert!(answers.starts_with("ok\n"), "{answers}");
    (output, answers)
}

#[tokio::test]
async fn sqlite_on_a_volume_survives_ten_checkpoints_each_followed_by_kill_9() {
    let mut hub = HubProcess::start(HubOptions::default().args(["--checkpoint-interval", "0s"]))
        .await
        .unwrap();
    let (reference, reference_answers) = uninterrupted(&hub, SHORT_RUN).await;

    let name = "interrupted";
    deploy(&hub, name, SHORT_RUN);
    let mut random = Rng::new("sqlite on a volume, kill -9");
    let mut taken = 0;
    for point in 1..=10 {
        // Spread over the run: after batch 15 × point, plus a random
        // part of a second (so a checkpoint may fall inside a transaction).
        wait_batches(&hub, name, 15 * point).await;
        tokio::time::sleep(random.duration(Duration::from_millis(300))).await;
        let output = hub.ferry(&["checkpoint", name, "--json"]);
        assert!(
            output.status.success(),
            "checkpoint {point}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        taken += 1;
        // Files written after the checkpoint are on disk; the restart must
        // take them back.
        tokio::time::sleep(random.duration(Duration::from_millis(200))).await;
        hub.kill().unwrap();
        hub.restart().await.unwrap();
    }
    let state = wait_ended(&hub, name, PATIENCE).await.unwrap();
    let output = ok(hub.ferry(&["logs", name]));
    eprintln!("{taken} checkpoints, each followed by kill -9 and a restart");
    assert_eq!(state["exit_code"], 0, "{state}\n{output}");
    assert!(
        output == reference,
        "output after checkpoints and kills differs:\n--- interrupted\n{output}\n--- uninterrupted\n{reference}"
    );
    assert_eq!(host_sqlite(&database(&hub, name)), reference_answers);
}

#[tokio::test]
async fn sqlite_on_a_volume_moves_ten_times_while_it_writes() {
    let hubs = loopback_pair(&["--checkpoint-interval", "0s"], PATIENCE).await.unwrap();
    let (reference, reference_answers) = uninterrupted(&hubs[0], LONG_RUN).await;

    let name = "traveller";
    deploy(&hubs[0], name, LONG_RUN);
    wait_batches(&hubs[0], name, 1).await;
    let mut random = Rng::new("sqlite on a volume, moves");
    let mut volume_bytes = Vec::new();
    for step in 0..10 {
        let (from, to) = (step % 2, 1 - step % 2);
        tokio::time::sleep(random.duration(Duration::from_millis(400))).await;
        let summary = migrate(&hubs[from], name, &format!("hub-{to}"))
            .unwrap_or_else(|error| panic!("move {} failed: {error:#}", step + 1));
        volume_bytes.push((
            summary["bytes_sent"].as_u64().unwrap_or(0),
            summary["downtime_micros"].as_u64().unwrap_or(0),
        ));
        // The hub it left keeps nothing of its files.
        eventually("the volume to leave the source", PATIENCE, || async {
            (!hubs[from].data_dir().join("functions").join(name).exists()).then_some(())
        })
        .await
        .unwrap();
    }
    eprintln!("(bytes sent, downtime in µs) per move: {volume_bytes:?}");
    let last = &hubs[0];
    wait_exited(last, name, PATIENCE).await.unwrap();
    let output = ok(last.ferry(&["logs", name]));
    let printed = output.lines().filter(|line| line.starts_with("batch ")).count();
    assert!(
        output == reference,
        "output after 10 moves differs ({printed} batches):\n--- moved\n{output}\n--- uninterrupted\n{reference}"
    );
    assert_eq!(host_sqlite(&database(last, name)), reference_answers);
}

#[tokio::test]
async fn killing_either_hub_mid_move_never_loses_or_forks_the_database() {
    let mut hubs = loopback_pair(&["--checkpoint-interval", "300ms"], PATIENCE)
        .await
        .unwrap();
    let (reference, reference_answers) = uninterrupted(&hubs[0], LONGEST_RUN).await;

    let name = "hit";
    deploy(&hubs[0], name, LONGEST_RUN);
    wait_batches(&hubs[0], name, 20).await;
    // The first move compiles the module at hub-1; the second, undisturbed,
    // measures how long a move takes: kills land anywhere in 0..1.5 times that.
    migrate(&hubs[0], name, "hub-1").unwrap();
    let started = std::time::Instant::now();
    migrate(&hubs[1], name, "hub-0").unwrap();
    let move_time = started.elapsed();
    eprintln!("an undisturbed move took {move_time:?}");
    let mut random = Rng::new("sqlite on a volume, kills mid-move");
    let mut owner = 0;
    for trial in 0..5 {
        let destination = 1 - owner;
        let victim = if random.below(2) == 0 { owner } else { destination };
        let delay = random.duration(move_time * 3 / 2);
        let (settled_on, reported) = kill_mid_move(&mut hubs, name, owner, victim, delay, PATIENCE).await;
        let role = if victim == owner { "source" } else { "destination" };
        eprintln!(
            "trial {trial}: killed the {role} after {delay:?}: move {}, runs on hub-{settled_on}",
            if reported { "reported" } else { "failed" }
        );
        owner = settled_on;
        for (hub, peer) in [(0, "hub-1"), (1, "hub-0")] {
            wait_peer_up(&hubs[hub], peer, PATIENCE).await.unwrap();
        }
    }
    wait_exited(&hubs[owner], name, PATIENCE).await.unwrap();
    let output = ok(hubs[owner].ferry(&["logs", name]));
    assert!(
        output == reference,
        "output after kills mid-move differs:\n--- hit\n{output}\n--- uninterrupted\n{reference}"
    );
    assert_eq!(host_sqlite(&database(&hubs[owner], name)), reference_answers);
    assert!(
        !hubs[1 - owner].data_dir().join("functions").join(name).exists(),
        "the hub it does not run on keeps no copy of its files"
    );
}

/// BLAKE3 of every file in `name`'s volume on `hub`, by name.
fn volume_digest(hub: &HubProcess, name: &str) -> Vec<(String, String)> {
    let volume = hub.data_dir().join("functions").join(name).join("volume");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&volume)
        .unwrap_or_else(|error| panic!("{}: {error}", volume.display()))
        .map(|entry| {
            let entry = entry.unwrap();
            let bytes = std::fs::read(entry.path()).unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                blake3::hash(&bytes).to_hex().to_string(),
            )
        })
        .collect();
    files.sort();
    files
}

/// What a checkpoint of `name` on `hub` read of its volume, and the volume's size.
fn checkpoint_reads(hub: &HubProcess, name: &str) -> (u64, u64) {
    let checkpoint = hub.ferry_json(&["checkpoint", name]).unwrap();
    (
        checkpoint["volume_bytes_read"].as_u64().unwrap_or(0),
        checkpoint["volume_bytes"].as_u64().unwrap_or(0),
    )
}

/// A hub that lays a volume out from a checkpoint (an arrival, a resume)
/// knows what every file holds: the function's next checkpoint reads only
/// what it wrote since, not the whole volume with the function stopped —
/// and what that checkpoint stores lays the same files out again. A move
/// starts from the latest checkpoint's view the same way.
#[tokio::test]
async fn the_first_checkpoint_after_a_move_or_a_resume_reads_none_of_an_unchanged_volume() {
    let hubs = loopback_pair(&["--checkpoint-interval", "0s"], PATIENCE).await.unwrap();
    let writer = guest("guests/volume_writer.wasm");
    let name = "writer";
    // 8 MiB in four files, then a rewrite only after ten minutes.
    ok(hubs[0].ferry(&[
        "deploy",
        writer.to_str().unwrap(),
        "--name",
        name,
        "--volume",
        "/data:64MiB",
        "--",
        "/data",
        "8",
        "4",
        "64",
        "11",
        "1",
        "600000",
    ]));
    eventually("the writer to fill its volume", PATIENCE, || async {
        stdout_text(&hubs[0].ferry(&["logs", name]))
            .contains("filled")
            .then_some(())
    })
    .await
    .unwrap();
    let total = 8 << 20;
    assert_eq!(
        checkpoint_reads(&hubs[0], name),
        (total, total),
        "a first checkpoint reads it all"
    );
    let written = volume_digest(&hubs[0], name);

    // The move starts from that checkpoint's view: nothing to read.
    let moved = migrate(&hubs[0], name, "hub-1").unwrap();
    assert_eq!(moved["volume_bytes_read"].as_u64(), Some(0), "{moved}");
    assert_eq!(volume_digest(&hubs[1], name), written);
    assert_eq!(checkpoint_reads(&hubs[1], name), (0, total), "after the move");

    // Resumed from that checkpoint: the same files, and again nothing to read.
    for round in 0..2 {
        ok(hubs[1].ferry(&["suspend", name]));
        ok(hubs[1].ferry(&["resume", name]));
        assert_eq!(volume_digest(&hubs[1], name), written, "resume {round}");
        assert_eq!(checkpoint_reads(&hubs[1], name), (0, total), "after resume {round}");
    }
    let back = migrate(&hubs[1], name, "hub-0").unwrap();
    assert_eq!(back["volume_bytes_read"].as_u64(), Some(0), "{back}");
    assert_eq!(volume_digest(&hubs[0], name), written);
    let output = stdout_text(&hubs[0].ferry(&["logs", name]));
    assert!(!output.contains("failed"), "{output}");
}

/// A move sends the files its first round did not read from the
/// checkpoint it started from. Here the first round waits seconds for its
/// answer (the destination compiles SQLite) while SQLite rewrites pages
/// all over its database and the user takes three checkpoints: the hub
/// keeps two, but must not drop the move's one, nor its chunks, before
/// they are sent.
#[tokio::test]
async fn a_move_sends_files_from_its_checkpoint_while_newer_checkpoints_are_written() {
    let hubs = loopback_pair(&["--checkpoint-interval", "0s"], PATIENCE).await.unwrap();
    let name = "busy-database";
    deploy(&hubs[0], name, LONG_RUN);
    wait_batches(&hubs[0], name, 60).await;
    ok(hubs[0].ferry(&["checkpoint", name]));
    let moved = std::thread::scope(|scope| {
        let moving = scope.spawn(|| migrate(&hubs[0], name, "hub-1"));
        std::thread::sleep(Duration::from_millis(800));
        for _ in 0..3 {
            ok(hubs[0].ferry(&["checkpoint", name]));
        }
        moving.join().unwrap()
    })
    .unwrap_or_else(|error| panic!("the move failed: {error:#}"));
    assert!(moved["module_prepare_micros"].as_u64().unwrap_or(0) > 0, "{moved}");
    let log = hubs[0].agent_log();
    assert!(
        log.contains("first round read only the files changed since the latest checkpoint"),
        "the move did not start from the checkpoint's view:\n{log}"
    );
    let batches = batches_printed(&hubs[1], name);
    wait_batches(&hubs[1], name, batches + 5).await;
    let output = ok(hubs[1].ferry(&["logs", name]));
    assert!(!output.contains("sqlite error"), "{output}");
}
