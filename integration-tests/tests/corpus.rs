//! Real third-party programs (the corpus: SQLite, Lua, QuickJS, zstd, zlib)
//! on real hub processes, compared byte for byte with the same module run by
//! wasmtime:
//!
//! - run uninterrupted on one hub;
//! - checkpointed 3 times at random moments, each checkpoint followed by
//!   `kill -9` of the hub and a restart;
//! - moved between two hubs 5 times while it runs, the first move right
//!   after deploy to a hub that has never seen (nor compiled) the module.
//!
//! Random points come from a seed that is printed; `FERRY_TEST_SEED`
//! repeats a run.

use std::time::Duration;

use ferry_integration_tests::corpus::{LUA, Program, QUICKJS, SQLITE, ZLIB, ZSTD};
use ferry_integration_tests::moves::{Rng, loopback_pair, migrate, wait_exited};
use ferry_integration_tests::{HubOptions, HubProcess, eventually, expect_success as ok, function_info, wait_ended};
use serde_json::Value;

/// A safety net for a hung test, never a performance assertion.
const PATIENCE: Duration = Duration::from_secs(300);

fn deploy_args<'a>(args: &[&'a str], module: &'a str, name: &'a str) -> Vec<&'a str> {
    let mut deploy = vec!["deploy", module, "--name", name, "--memory-limit", "512MiB", "--"];
    deploy.extend_from_slice(args);
    deploy
}

/// Waits until `name` has printed at least `lines` progress lines.
async fn wait_progress(hub: &HubProcess, program: &Program, name: &str, lines: usize) {
    eventually(&format!("{name} to print {lines} progress lines"), PATIENCE, || async {
        let output = hub.ferry(&["logs", name]);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let printed = text
            .lines()
            .filter(|line| line.starts_with(program.progress_prefix))
            .count();
        (printed >= lines).then_some(())
    })
    .await
    .unwrap();
}

/// Runs `program` on one hub uninterrupted, then again checkpointed at three
/// random moments with `kill -9` and a restart after each; both outputs must
/// be wasmtime's.
async fn survives_checkpoints_and_kills(program: Program) {
    let reference = program.wasmtime_stdout(program.args).unwrap();
    assert!(reference.contains("done checksum"), "{}: {reference}", program.name);
    let module = program.module();
    let module = module.to_str().unwrap();
    let mut hub = HubProcess::start(HubOptions::default().args(["--checkpoint-interval", "0s"]))
        .await
        .unwrap();

    ok(hub.ferry(&deploy_args(program.args, module, "plain-run")));
    let state = wait_ended(&hub, "plain-run", PATIENCE).await.unwrap();
    assert_eq!(state["state"], "exited", "{state}");
    let uninterrupted = ok(hub.ferry(&["logs", "plain-run"]));
    assert!(
        uninterrupted == reference,
        "{}: output on the hub differs from wasmtime's:\n--- hub\n{uninterrupted}\n--- wasmtime\n{reference}",
        program.name
    );

    // The same module again: its compiled artifact is cached now.
    ok(hub.ferry(&deploy_args(program.args, module, "interrupted")));
    let mut random = Rng::new(program.name);
    let mut taken = 0;
    for point in 1..=3 {
        // Spread the checkpoints over the run: after progress line `point`
        // (of more than three), plus a random part of a second.
        wait_progress(&hub, &program, "interrupted", point).await;
        tokio::time::sleep(random.duration(Duration::from_millis(400))).await;
        let output = hub.ferry(&["checkpoint", "interrupted", "--json"]);
        if !output.status.success() {
            break;
        }
        taken += 1;
        hub.kill().unwrap();
        hub.restart().await.unwrap();
    }
    let state = wait_ended(&hub, "interrupted", PATIENCE).await.unwrap();
    assert_eq!(state["state"], "exited", "{state}");
    let interrupted = ok(hub.ferry(&["logs", "interrupted"]));
    eprintln!(
        "{}: {taken} checkpoints, each followed by kill -9 and a restart",
        program.name
    );
    assert_eq!(
        taken, 3,
        "{} ended before its third checkpoint; lengthen its run",
        program.name
    );
    assert!(
        interrupted == reference,
        "{}: output after checkpoints and kills differs from wasmtime's:\n--- hub\n{interrupted}\n--- wasmtime\n{reference}",
        program.name
    );
}

/// Deploys `program` on one hub and moves it to the other right away (the
/// destination has never seen the module), then back and forth four more
/// times while it runs; its output must be wasmtime's.
async fn moves_five_times_while_running(program: Program) {
    let reference = program.wasmtime_stdout(program.long_args).unwrap();
    let hubs = loopback_pair(&["--checkpoint-interval", "0s"], PATIENCE).await.unwrap();
    let module = program.module();
    let name = "traveller";
    ok(hubs[0].ferry(&deploy_args(program.long_args, module.to_str().unwrap(), name)));
    let mut random = Rng::new(program.name);
    let mut moves = Vec::new();
    // While the first move waits for the destination to prepare the
    // module, `ps` on the source shows it under way.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut watcher = Some({
        let (watching, ps) = (std::sync::Arc::clone(&watching), hubs[0].ferry_command());
        std::thread::spawn(move || {
            let mut ps = ps;
            ps.args(["ps", "--json"]).stdin(std::process::Stdio::null());
            let mut seen = None;
            while watching.load(std::sync::atomic::Ordering::SeqCst) && seen.is_none() {
                let listed: Value = ps
                    .output()
                    .ok()
                    .and_then(|output| serde_json::from_slice(&output.stdout).ok())
                    .unwrap_or_default();
                seen = listed
                    .as_array()
                    .and_then(|functions| functions.iter().find(|function| !function["moving"].is_null()))
                    .map(|function| function["moving"].clone());
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    });
    for step in 0..5 {
        let (from, to) = (step % 2, 1 - step % 2);
        if step > 0 {
            tokio::time::sleep(random.duration(Duration::from_millis(300))).await;
        }
        let summary = migrate(&hubs[from], name, &format!("hub-{to}"))
            .unwrap_or_else(|error| panic!("{}: move {} failed: {error:#}", program.name, step + 1));
        if step == 0 {
            watching.store(false, std::sync::atomic::Ordering::SeqCst);
            let seen = watcher.take().unwrap().join().unwrap();
            let seen = seen.unwrap_or_else(|| panic!("{}: ps never showed the first move under way", program.name));
            assert_eq!(seen["to_hub_name"], "hub-1", "{seen}");
            let arrived = function_info(&hubs[1], name)["arrived"].clone();
            assert_eq!(arrived["from_hub_name"], "hub-0", "{arrived}");
            // The destination's figure leaves out the two frames' flights.
            let (seen_there, seen_here) = (
                arrived["downtime_micros"].as_u64().unwrap_or(0),
                summary["downtime_micros"].as_u64().unwrap_or(0),
            );
            assert!(0 < seen_there && seen_there <= seen_here, "{arrived} {summary}");
        }
        moves.push(summary);
    }
    let first = &moves[0];
    assert!(
        first["module_bytes_sent"].as_u64().unwrap_or(0) > 0,
        "the first move must carry the module: {first}"
    );
    assert!(
        first["module_prepare_micros"].as_u64().unwrap_or(0) > 0,
        "the first move must report the destination's module preparation: {first}"
    );
    for summary in &moves[1..] {
        assert_eq!(summary["module_bytes_sent"], 0, "{summary}");
    }
    eprintln!(
        "{}: first move {} ms in all, of which {} ms preparing the module at the destination",
        program.name,
        first["total_micros"].as_u64().unwrap_or(0) / 1000,
        first["module_prepare_micros"].as_u64().unwrap_or(0) / 1000
    );
    wait_exited(&hubs[1], name, PATIENCE).await.unwrap();
    let state = function_info(&hubs[1], name);
    assert_eq!(state["state"], "exited", "{state}");
    let output = ok(hubs[1].ferry(&["logs", name]));
    assert!(
        output == reference,
        "{}: output after 5 moves differs from wasmtime's:\n--- hub\n{output}\n--- wasmtime\n{reference}",
        program.name
    );
}

#[tokio::test]
async fn sqlite_matches_wasmtime_across_checkpoints_and_kills() {
    survives_checkpoints_and_kills(SQLITE).await;
}

#[tokio::test]
async fn lua_matches_wasmtime_across_checkpoints_and_kills() {
    survives_checkpoints_and_kills(LUA).await;
}

#[tokio::test]
async fn quickjs_matches_wasmtime_across_checkpoints_and_kills() {
    survives_checkpoints_and_kills(QUICKJS).await;
}

#[tokio::test]
async fn zstd_matches_wasmtime_across_checkpoints_and_kills() {
    survives_checkpoints_and_kills(ZSTD).await;
}

#[tokio::test]
async fn zlib_matches_wasmtime_across_checkpoints_and_kills() {
    survives_checkpoints_and_kills(ZLIB).await;
}

#[tokio::test]
async fn sqlite_moves_five_times_while_running_from_a_fresh_deploy() {
    moves_five_times_while_running(SQLITE).await;
}

#[tokio::test]
async fn lua_moves_five_times_while_running_from_a_fresh_deploy() {
    moves_five_times_while_running(LUA).await;
}

#[tokio::test]
async fn quickjs_moves_five_times_while_running_from_a_fresh_deploy() {
    moves_five_times_while_running(QUICKJS).await;
}

#[tokio::test]
async fn zstd_moves_five_times_while_running_from_a_fresh_deploy() {
    moves_five_times_while_running(ZSTD).await;
}

#[tokio::test]
async fn zlib_moves_five_times_while_running_from_a_fresh_deploy() {
    moves_five_times_while_running(ZLIB).await;
}
