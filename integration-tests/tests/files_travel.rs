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
use ferry_integration_tests::{HubOptions, HubProcess, eventually, expect_success as ok, guest, wait_ended};

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
