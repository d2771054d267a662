//! Capture and restore through real hub processes: a function checkpointed
//! at random points and continued in a *new* hub process (after `kill -9`)
//! must write exactly what an uninterrupted run writes.

use std::time::Duration;

use ferry_integration_tests::{
    HubOptions, HubProcess, eventually, expect_success as ok, function_info, guest, stdout_text as stdout, ticks_in,
    wait_ended,
};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(120);

/// A hub that checkpoints only when asked, so the test decides the points.
async fn manual_hub() -> HubProcess {
    HubProcess::start(HubOptions::default().args(["--checkpoint-interval", "0s"]))
        .await
        .unwrap()
}

async fn wait_until_exited(hub: &HubProcess, name: &str) -> Value {
    wait_ended(hub, name, PATIENCE).await.unwrap()
}

/// Deterministic pseudo-random numbers for the checkpoint points; the seed
/// is printed so a failing run can be repeated with `FERRY_TEST_SEED`.
struct Points(u64);

impl Points {
    fn new(label: &str) -> Points {
        let seed = std::env::var("FERRY_TEST_SEED")
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{label}: checkpoint points from FERRY_TEST_SEED={seed}");
        Points(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// A delay in `0..max`.
    fn delay(&mut self, max: Duration) -> Duration {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let fraction = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        max.mul_f64(fraction)
    }
}

/// Runs `module` once uninterrupted and once checkpointed at `points` random
/// moments, each followed by `kill -9` of the hub and a restart on the same
/// data directory; the two stdouts must be identical.
async fn differential(module: &str, args: &[&str], points: usize, max_gap: Duration) {
    differential_chains(module, args, points, 1, max_gap, Interruption::Kill).await;
}

/// What the checkpoints of [`differential_chains`] wrote.
#[derive(Debug, Default)]
struct Written {
    /// Chunks kept as the pages written over their earlier version.
    delta_chunks: u64,
    new_chunks: u64,
}

/// What ends each chain of checkpoints in [`differential_chains`].
#[derive(Clone, Copy, Debug, PartialEq)]
enum Interruption {
    /// `kill -9` of the hub and a restart on the same data directory.
    Kill,
    /// `ferry suspend` then `ferry resume`; after every second one, a kill
    /// as well (the restart continues from the suspend's checkpoint).
    SuspendAndResume,
}

/// [`differential`] with `chain` checkpoints of the same run before each
/// kill: every checkpoint after the first of a run is written from the
/// chunks changed since the one before, so the kill resumes from the end of
/// a chain of incremental checkpoints.
async fn differential_chains(
    module: &str,
    args: &[&str],
    points: usize,
    chain: usize,
    max_gap: Duration,
    interruption: Interruption,
) -> Written {
    let name = "subject";
    let path = guest(module);
    let mut deploy = vec![
        "deploy",
        path.to_str().unwrap(),
        "--name",
        name,
        "--memory-limit",
        "256MiB",
        "--",
    ];
    deploy.extend_from_slice(args);

    let reference_hub = manual_hub().await;
    ok(reference_hub.ferry(&deploy));
    let reference_state = wait_until_exited(&reference_hub, name).await;
    assert_eq!(reference_state["state"], "exited", "{reference_state}");
    let reference = ok(reference_hub.ferry(&["logs", name]));
    drop(reference_hub);
    assert!(!reference.is_empty(), "{module} printed nothing");

    let mut hub = manual_hub().await;
    ok(hub.ferry(&deploy));
    let mut random = Points::new(module);
    let mut taken = 0;
    let mut written = Written::default();
    'points: for point in 0..points {
        for _ in 0..chain {
            tokio::time::sleep(random.delay(max_gap)).await;
            let output = hub.ferry(&["checkpoint", name, "--json"]);
            if !output.status.success() {
                // The function finished before this point: nothing left to interrupt.
                break 'points;
            }
            let info: Value = serde_json::from_str(&stdout(&output)).unwrap();
            written.delta_chunks += info["delta_chunks"].as_u64().unwrap_or(0);
            written.new_chunks += info["new_chunks"].as_u64().unwrap_or(0);
            taken += 1;
        }
        if interruption == Interruption::SuspendAndResume {
            tokio::time::sleep(random.delay(max_gap)).await;
            if !hub.ferry(&["suspend", name]).status.success() {
                break 'points;
            }
            taken += 1;
            ok(hub.ferry(&["resume", name]));
            if point % 2 == 0 {
                continue;
            }
        }
        hub.kill().unwrap();
        hub.restart().await.unwrap();
    }
    let interrupted_state = wait_until_exited(&hub, name).await;
    assert_eq!(interrupted_state["state"], "exited", "{interrupted_state}");
    let interrupted = ok(hub.ferry(&["logs", name]));
    eprintln!("{module}: {taken} checkpoints, every {chain} followed by {interruption:?}");
    assert!(
        taken > 0,
        "{module} ended before the first checkpoint; lengthen its run"
    );
    assert_eq!(interrupted.len(), reference.len(), "{module}: output lengths differ");
    assert!(
        interrupted == reference,
        "{module}: output differs from the uninterrupted run"
    );
    written
}

#[tokio::test]
async fn cpu_loop_over_a_large_heap_resumes_byte_identical() {
    differential("guests/heap_walk.wasm", &[], 3, Duration::from_millis(700)).await;
}

#[tokio::test]
async fn deep_recursion_with_indirect_calls_resumes_byte_identical() {
    differential("guests/deep_recursion.wasm", &[], 3, Duration::from_millis(700)).await;
}

#[tokio::test]
async fn memory_grown_after_the_first_checkpoint_resumes_byte_identical() {
    differential("guests/grow_later.wasm", &[], 3, Duration::from_millis(700)).await;
}

#[tokio::test]
async fn a_chain_of_incremental_checkpoints_over_a_large_heap_resumes_byte_identical() {
    differential_chains(
        "guests/heap_walk.wasm",
        &[],
        2,
        3,
        Duration::from_millis(300),
        Interruption::Kill,
    )
    .await;
}

#[tokio::test]
async fn a_chain_of_incremental_checkpoints_across_memory_growth_resumes_byte_identical() {
    differential_chains(
        "guests/grow_later.wasm",
        &[],
        2,
        3,
        Duration::from_millis(300),
        Interruption::Kill,
    )
    .await;
}

#[tokio::test]
async fn a_chain_of_checkpoints_of_scattered_pages_resumes_byte_identical() {
    // Most chunks these checkpoints find changed hold a page or two
    // written: the store keeps them as deltas (over the chunk before, over
    // zeros, over a delta's base), and each restart verifies them.
    let written = differential_chains(
        "guests/sparse_writes.wasm",
        &[],
        2,
        3,
        Duration::from_millis(300),
        Interruption::Kill,
    )
    .await;
    eprintln!("{written:?}");
    assert!(written.delta_chunks > 0, "no chunk was kept as a delta: {written:?}");
}

#[tokio::test]
async fn suspends_of_scattered_pages_resume_byte_identical() {
    // Resumes read deltas this hub wrote (trusted), or after a kill found
    // on disk (verified).
    differential_chains(
        "guests/sparse_writes.wasm",
        &[],
        4,
        1,
        Duration::from_millis(300),
        Interruption::SuspendAndResume,
    )
    .await;
}

#[tokio::test]
async fn suspends_written_from_changes_resume_byte_identical() {
    // Each suspend writes only what changed since the checkpoint before it;
    // each resume reads chunks this hub wrote (trusted) or, after a kill,
    // found on disk (verified).
    differential_chains(
        "guests/heap_walk.wasm",
        &[],
        4,
        1,
        Duration::from_millis(300),
        Interruption::SuspendAndResume,
    )
    .await;
}

#[tokio::test]
async fn a_checkpoint_writes_only_the_chunks_written_since_the_previous_one() {
    let mut hub = manual_hub().await;
    let module = guest("examples/hotheap.wasm");
    ok(hub.ferry(&[
        "deploy",
        module.to_str().unwrap(),
        "--name",
        "hot",
        "--memory-limit",
        "256MiB",
        "--",
        "64",
        "256",
    ]));
    eventually("the heap to be filled", PATIENCE, || async {
        stdout(&hub.ferry(&["logs", "hot"])).contains("filled").then_some(())
    })
    .await
    .unwrap();
    let checkpoint = || -> Value { serde_json::from_str(&ok(hub.ferry(&["checkpoint", "hot", "--json"]))).unwrap() };
    let first = checkpoint();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = checkpoint();
    let chunks = second["chunks"].as_u64().unwrap();
    let unchanged = second["unchanged_chunks"].as_u64().unwrap();
    let new = second["new_chunks"].as_u64().unwrap();
    eprintln!("first checkpoint: {first}\nsecond: {second}");
    assert!(chunks >= 1024, "{second}");
    // The hot set is 4 chunks; the stack, allocator and stdio add a few.
    assert!(new <= 32, "the second checkpoint wrote {new} chunks: {second}");
    assert!(
        unchanged + 32 >= chunks - second["zero_chunks"].as_u64().unwrap(),
        "{second}"
    );

    // A hub killed now continues the function from the incremental one.
    hub.kill().unwrap();
    hub.restart().await.unwrap();
    eventually("hot to run again", PATIENCE, || async {
        (function_info(&hub, "hot")["state"] == "running").then_some(())
    })
    .await
    .unwrap();
    let info = function_info(&hub, "hot");
    assert_eq!(info["last_checkpoint"], second["sequence"], "{info}");

    // A run restored from a checkpoint starts from it: its first checkpoint
    // writes only what the run changed — after a restart, and after a
    // suspend (which writes only the changes too) and a resume.
    let checkpoint = || -> Value { serde_json::from_str(&ok(hub.ferry(&["checkpoint", "hot", "--json"]))).unwrap() };
    for after in ["a restart", "a suspend and a resume"] {
        if after != "a restart" {
            ok(hub.ferry(&["suspend", "hot"]));
            ok(hub.ferry(&["resume", "hot"]));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let next = checkpoint();
        eprintln!("checkpoint after {after}: {next}");
        let new = next["new_chunks"].as_u64().unwrap();
        assert!(
            new <= 32,
            "the first checkpoint after {after} wrote {new} chunks: {next}"
        );
        // Nothing else was even read: the run's dirty set started clean.
        let (chunks, zero) = (next["chunks"].as_u64().unwrap(), next["zero_chunks"].as_u64().unwrap());
        assert!(
            next["unchanged_chunks"].as_u64().unwrap() + 32 >= chunks - zero,
            "the first checkpoint after {after} read more than the run changed: {next}"
        );
    }
}

#[tokio::test]
async fn first_malloc_after_the_first_checkpoint_resumes_byte_identical() {
    differential("guests/late_malloc.wasm", &[], 3, Duration::from_millis(600)).await;
}

#[tokio::test]
async fn floating_point_and_i64_state_resumes_byte_identical() {
    differential("guests/float_math.wasm", &[], 3, Duration::from_millis(700)).await;
}

#[tokio::test]
async fn a_sleeper_resumes_byte_identical_and_its_clock_never_goes_back() {
    differential("guests/sleeper.wasm", &[], 3, Duration::from_millis(700)).await;
}

#[tokio::test]
async fn a_killed_hub_continues_its_functions_from_their_last_checkpoint() {
    let mut hub = HubProcess::start(HubOptions::default().args(["--checkpoint-interval", "300ms"]))
        .await
        .unwrap();
    let ticker = guest("examples/ticker.wasm");
    ok(hub.ferry(&["deploy", ticker.to_str().unwrap(), "--name", "ticker", "--", "20"]));
    let checkpointed = eventually("a periodic checkpoint after tick 10", PATIENCE, || async {
        let info = function_info(&hub, "ticker");
        let logs = stdout(&hub.ferry(&["logs", "ticker"]));
        (info["last_checkpoint"].as_u64().unwrap_or(0) > 0 && logs.contains("tick 10 ")).then_some(())
    })
    .await;
    checkpointed.unwrap();
    hub.kill().unwrap();
    hub.restart().await.unwrap();
    // The hub answers while it restores its functions: "starting" first.
    let info = eventually("the ticker to run again", PATIENCE, || async {
        let info = function_info(&hub, "ticker");
        (info["state"] != "starting").then_some(info)
    })
    .await
    .unwrap();
    assert_eq!(info["state"], "running", "{info}");
    let logs = eventually("the ticker to tick on after the restart", PATIENCE, || async {
        let logs = stdout(&hub.ferry(&["logs", "ticker"]));
        (ticks_in(&logs).len() > 25).then_some(logs)
    })
    .await
    .unwrap();
    let ticks = ticks_in(&logs);
    assert_eq!(
        ticks,
        (1..=ticks.len() as u64).collect::<Vec<_>>(),
        "continued from the checkpoint: no tick twice, none missing:\n{logs}"
    );
    let events = stdout(&hub.ferry(&["logs", "ticker", "--events"]));
    assert!(events.contains("resumed from a checkpoint"), "{events}");
}

#[tokio::test]
async fn suspend_frees_the_function_and_resume_continues_it() {
    let hub = manual_hub().await;
    let ticker = guest("examples/ticker.wasm");
    ok(hub.ferry(&["deploy", ticker.to_str().unwrap(), "--name", "ticker", "--", "20"]));
    eventually("tick 5", PATIENCE, || async {
        stdout(&hub.ferry(&["logs", "ticker"]))
            .contains("tick 5 ")
            .then_some(())
    })
    .await
    .unwrap();
    let suspended: Value = serde_json::from_str(&ok(hub.ferry(&["suspend", "ticker", "--json"]))).unwrap();
    assert_eq!(suspended["state"], "suspended");
    assert_eq!(suspended["memory_bytes"], 0);
    let parked = ticks_in(&stdout(&hub.ferry(&["logs", "ticker"]))).len();
    let resumed: Value = serde_json::from_str(&ok(hub.ferry(&["resume", "ticker", "--json"]))).unwrap();
    assert_eq!(resumed["state"], "running");
    let logs = eventually("ticks after the resume", PATIENCE, || async {
        let logs = stdout(&hub.ferry(&["logs", "ticker"]));
        (ticks_in(&logs).len() > parked + 5).then_some(logs)
    })
    .await
    .unwrap();
    let ticks = ticks_in(&logs);
    assert_eq!(ticks, (1..=ticks.len() as u64).collect::<Vec<_>>(), "{logs}");
    let again = hub.ferry(&["resume", "ticker"]);
    assert_eq!(again.status.code(), Some(7), "resuming a running function is refused");
}

#[tokio::test]
async fn a_function_waiting_in_recv_is_captured_and_still_answers() {
    let mut hub = manual_hub().await;
    let echo = guest("examples/echo.wasm");
    ok(hub.ferry(&["deploy", echo.to_str().unwrap(), "--name", "echo"]));
    assert_eq!(ok(hub.ferry(&["invoke", "echo", "--data", "one"])), "echo: one\n");
    ok(hub.ferry(&["checkpoint", "echo"]));
    assert_eq!(ok(hub.ferry(&["invoke", "echo", "--data", "two"])), "echo: two\n");
    hub.kill().unwrap();
    hub.restart().await.unwrap();
    assert_eq!(ok(hub.ferry(&["invoke", "echo", "--data", "three"])), "echo: three\n");
    let logs = stdout(&hub.ferry(&["logs", "echo"]));
    assert_eq!(
        logs, "got 3 bytes\ngot 5 bytes\n",
        "the run after the checkpoint was rolled back and replayed"
    );
}

fn thread_count(hub: &HubProcess) -> usize {
    let pid = hub.pid().expect("hub runs");
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |tasks| tasks.count())
}

#[tokio::test]
async fn idle_functions_waiting_for_messages_hold_no_thread() {
    const FUNCTIONS: usize = 24;
    let hub = manual_hub().await;
    let idle_hub_threads = thread_count(&hub);
    let echo = guest("examples/echo.wasm");
    for index in 0..FUNCTIONS {
        ok(hub.ferry(&["deploy", echo.to_str().unwrap(), "--name", &format!("echo-{index}")]));
    }
    // Once parked, their instances and threads are released (the blocking
    // pool retires idle threads after a few seconds).
    let parked = eventually("idle functions to release their threads", PATIENCE, || async {
        let threads = thread_count(&hub);
        (threads <= idle_hub_threads + 4).then_some(threads)
    })
    .await
    .unwrap();
    eprintln!("{FUNCTIONS} idle functions: hub has {parked} threads, {idle_hub_threads} with none");
    for index in 0..FUNCTIONS {
        let name = format!("echo-{index}");
        assert_eq!(ok(hub.ferry(&["invoke", &name, "--data", "hi"])), "echo: hi\n");
    }
    let info = function_info(&hub, "echo-0");
    assert_eq!(info["state"], "running", "a parked function is still running: {info}");
}
