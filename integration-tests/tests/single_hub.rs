//! One real `ferry agent` process per test, driven through the `ferry` CLI the
//! way a user would.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use ferry_integration_tests::{
    HubOptions, HubProcess, eventually, expect_success as ok, guest, stdout_text as stdout, ticks_in,
};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(60);

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn deploy(hub: &HubProcess, module: &str, name: &str, extra: &[&str]) -> Value {
    let path = guest(module);
    let mut args = vec!["deploy", path.to_str().unwrap(), "--name", name, "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(hub.ferry(&args))).unwrap()
}

fn function(hub: &HubProcess, name: &str) -> Value {
    let list: Value = serde_json::from_str(&ok(hub.ferry(&["ps", "--json"]))).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|function| function["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in ps: {list}"))
}

async fn wait_for_state(hub: &HubProcess, name: &str, state: &str) -> Value {
    eventually(&format!("{name} to be {state}"), PATIENCE, || async {
        let info = function(hub, name);
        (info["state"] == state).then_some(info)
    })
    .await
    .unwrap()
}

async fn wait_for_log(hub: &HubProcess, name: &str, needle: &str) -> String {
    eventually(&format!("{needle:?} in the logs of {name}"), PATIENCE, || async {
        let logs = stdout(&hub.ferry(&["logs", name]));
        logs.contains(needle).then_some(logs)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn deployed_function_runs_shows_in_ps_logs_its_output_and_stops() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    let deployed = deploy(&hub, "examples/ticker.wasm", "ticker", &["--", "20"]);
    assert_eq!(deployed["state"], "running");
    assert_eq!(deployed["starts"], 1);

    let logs = wait_for_log(&hub, "ticker", "tick 3 ").await;
    assert!(logs.starts_with("tick 1 "), "{logs}");
    let running = function(&hub, "ticker");
    assert_eq!(running["state"], "running");
    assert!(running["memory_bytes"].as_u64().unwrap() > 0);

    let table = ok(hub.ferry(&["ps"]));
    assert!(table.contains("ticker") && table.contains("running"), "{table}");

    let stopped: Value = serde_json::from_str(&ok(hub.ferry(&["stop", "ticker", "--json"]))).unwrap();
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(function(&hub, "ticker")["state"], "stopped");
}

#[tokio::test]
async fn invoke_delivers_a_message_to_echo_and_prints_its_reply() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    deploy(&hub, "examples/echo.wasm", "echo", &[]);
    assert_eq!(ok(hub.ferry(&["invoke", "echo", "--data", "hello"])), "echo: hello\n");
    let big = "x".repeat(5000);
    let reply = ok(hub.ferry(&["invoke", "echo", "--data", &big]));
    assert_eq!(reply, format!("echo: {big}\n"));
    wait_for_log(&hub, "echo", "got 5000 bytes").await;

    // A message too big for a command line, from a file and from stdin.
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("message");
    let large: String = (0..3_000_000u32).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    std::fs::write(&file, &large).unwrap();
    let reply = ok(hub.ferry(&["invoke", "echo", "--data-file", file.to_str().unwrap()]));
    assert!(reply == format!("echo: {large}\n"), "a reply of {} bytes", reply.len());
    let mut piped = hub
        .ferry_command()
        .args(["invoke", "echo", "--data-file", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    piped.stdin.take().unwrap().write_all(b"from stdin").unwrap();
    let output = piped.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "echo: from stdin\n");
    let missing = hub.ferry(&["invoke", "echo", "--data-file", "/nonexistent/message"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("cannot read /nonexistent/message"),
        "{}",
        stderr(&missing)
    );
    let both = hub.ferry(&["invoke", "echo", "--data", "a", "--data-file", file.to_str().unwrap()]);
    assert!(
        !both.status.success() && stderr(&both).contains("cannot be used with"),
        "{}",
        stderr(&both)
    );

    // 16 MiB is the most a message or a reply holds: a bigger message is
    // refused, and a reply that would be bigger is not cut short (the guest
    // is told, and echo says so instead).
    std::fs::write(&file, vec![b'z'; 16 << 20]).unwrap();
    let reply = ok(hub.ferry(&["invoke", "echo", "--data-file", file.to_str().unwrap()]));
    assert_eq!(reply, "echo: the reply would be over 16 MiB\n");
    std::fs::write(&file, vec![b'z'; (16 << 20) + 1]).unwrap();
    let refused = hub.ferry(&["invoke", "echo", "--data-file", file.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("a message is at most 16777216 bytes"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        ok(hub.ferry(&["invoke", "echo", "--data", "still here"])),
        "echo: still here\n"
    );
}

#[tokio::test]
async fn logs_follow_streams_output_as_it_is_written() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    deploy(&hub, "examples/ticker.wasm", "ticker", &["--", "20"]);
    let mut follower = hub
        .ferry_command()
        .args(["logs", "ticker", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reader = BufReader::new(follower.stdout.take().unwrap());
    // Read to the end (a closed pipe would end the follower early), and
    // say when tick 30 came.
    let (at_30, reached_30) = std::sync::mpsc::channel();
    let reading = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in reader.lines().map_while(Result::ok) {
            if line.starts_with("tick 30 ") {
                let _ = at_30.send(());
            }
            lines.push(line);
        }
        lines
    });
    tokio::task::spawn_blocking(move || reached_30.recv())
        .await
        .unwrap()
        .unwrap();
    // Removed under it, the follow ends saying so.
    ok(hub.ferry(&["rm", "ticker"]));
    let mut lines = reading.await.unwrap();
    lines.truncate(29);
    let ended = follower.wait_with_output().unwrap();
    assert!(ended.status.success(), "{ended:?}");
    let said = String::from_utf8_lossy(&ended.stderr);
    assert!(said.contains("function \"ticker\" was removed"), "{said}");
    let numbers: Vec<u64> = lines
        .iter()
        .map(|line| line.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(numbers, (1..30).collect::<Vec<_>>(), "no gap, no duplicate");
}

#[tokio::test]
async fn logs_follow_of_a_function_that_ends_ends_with_it_saying_how() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    deploy(&hub, "examples/ticker.wasm", "short", &["--", "20", "40"]);
    // Following while it runs: every tick, then the end, by itself.
    let followed = hub
        .ferry_command()
        .args(["logs", "short", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(followed.status.success(), "{followed:?}");
    assert_eq!(ticks_in(&stdout(&followed)), (1..=40).collect::<Vec<_>>());
    assert!(
        stderr(&followed).contains("function \"short\" exited with code 0: nothing more to follow"),
        "{}",
        stderr(&followed)
    );
    // Following one that ended already: its output, then the same end.
    deploy(&hub, "guests/trap.wasm", "trapper", &[]);
    wait_for_state(&hub, "trapper", "failed").await;
    let followed = hub.ferry(&["logs", "trapper", "-f"]);
    assert!(followed.status.success(), "{followed:?}");
    assert!(stdout(&followed).contains("about to trap"), "{}", stdout(&followed));
    assert!(
        stderr(&followed).contains("function \"trapper\" failed: trapped"),
        "{}",
        stderr(&followed)
    );
}

#[tokio::test]
async fn a_client_whose_output_pipe_closed_ends_quietly_without_a_panic() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    deploy(&hub, "examples/echo.wasm", "echo", &[]);
    for command in [&["info"][..], &["ps"], &["peers"]] {
        let mut client = hub
            .ferry_command()
            .args(command)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Nobody reads what it prints (`ferry ps | head -0`).
        drop(client.stdout.take());
        let ended = client.wait_with_output().unwrap();
        assert_eq!(ended.status.code(), Some(0), "{command:?}: {ended:?}");
        assert!(!stderr(&ended).contains("panicked"), "{command:?}: {}", stderr(&ended));
    }
}

#[tokio::test]
async fn restarted_hub_keeps_records_and_continues_what_was_running() {
    let mut hub = HubProcess::start(HubOptions::default()).await.unwrap();
    deploy(&hub, "examples/ticker.wasm", "ticker", &["--", "20"]);
    deploy(&hub, "guests/exit_code.wasm", "exits", &["--", "7"]);
    deploy(&hub, "examples/echo.wasm", "parked", &[]);
    deploy(&hub, "examples/primes.wasm", "counted", &["--", "2000000"]);
    ok(hub.ferry(&["stop", "parked"]));
    wait_for_state(&hub, "exits", "exited").await;
    wait_for_log(&hub, "ticker", "tick 2 ").await;
    let counted_cpu = wait_for_state(&hub, "counted", "exited").await["cpu_micros"].clone();
    assert!(counted_cpu.as_u64().is_some_and(|micros| micros > 0), "{counted_cpu}");

    let status = hub.terminate().unwrap();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    hub.restart().await.unwrap();

    let ticker = function(&hub, "ticker");
    assert_eq!(ticker["state"], "running");
    assert_eq!(ticker["starts"], 2);
    let exits = function(&hub, "exits");
    assert_eq!(
        (
            exits["state"].as_str(),
            exits["exit_code"].as_i64(),
            exits["starts"].as_u64()
        ),
        (Some("exited"), Some(7), Some(1))
    );
    assert_eq!(function(&hub, "parked")["state"], "stopped");
    // An ended function's CPU time is kept too.
    assert_eq!(function(&hub, "counted")["cpu_micros"], counted_cpu);
    // A graceful shutdown checkpoints the ticker: it continues where it
    // stopped, with no tick repeated and none missing.
    let before = ticks_in(&stdout(&hub.ferry(&["logs", "ticker"])));
    let logs = eventually("the restarted ticker to tick on", PATIENCE, || async {
        let logs = stdout(&hub.ferry(&["logs", "ticker"]));
        (ticks_in(&logs).len() > before.len() + 3).then_some(logs)
    })
    .await
    .unwrap();
    let ticks = ticks_in(&logs);
    assert_eq!(ticks, (1..=ticks.len() as u64).collect::<Vec<_>>(), "{logs}");
}

#[tokio::test]
async fn a_second_hub_on_the_same_data_directory_is_refused_and_leaves_the_first_untouched() {
    use std::os::unix::fs::MetadataExt;

    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    deploy(&hub, "examples/ticker.wasm", "ticker", &["--", "20"]);
    wait_for_log(&hub, "ticker", "tick 1 ").await;
    let reserve = hub.data_dir().join("reserve");
    let reserve_before = eventually("the first hub's disk reserve", PATIENCE, || async {
        std::fs::metadata(&reserve)
            .ok()
            .filter(|meta| meta.len() == 16 << 20)
            .map(|meta| (meta.ino(), meta.len()))
    })
    .await
    .unwrap();
    let address_before = std::fs::read_to_string(hub.data_dir().join("hub.addr")).unwrap();

    // The same command pasted twice, with another port.
    let second = std::process::Command::new(ferry_integration_tests::ferry_binary())
        .args([
            "agent",
            "--insecure",
            "--no-mdns",
            "--rebalance",
            "off",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(hub.data_dir())
        .output()
        .unwrap();
    assert!(
        !second.status.success(),
        "a second hub started on a data directory in use"
    );
    let text = stderr(&second);
    let holder = format!("(process {})", hub.pid().unwrap());
    assert!(
        text.contains("is in use by another hub") && text.contains(&holder),
        "{text}"
    );

    // The first hub: its reserve, its address file and its function as they were.
    let reserve_after = std::fs::metadata(&reserve)
        .map(|meta| (meta.ino(), meta.len()))
        .unwrap();
    assert_eq!(
        reserve_after, reserve_before,
        "the second hub touched the first one's disk reserve"
    );
    assert_eq!(
        std::fs::read_to_string(hub.data_dir().join("hub.addr")).unwrap(),
        address_before
    );
    assert_eq!(function(&hub, "ticker")["state"], "running");
    let before = ticks_in(&stdout(&hub.ferry(&["logs", "ticker"]))).len();
    eventually("the first hub's ticker to tick on", PATIENCE, || async {
        (ticks_in(&stdout(&hub.ferry(&["logs", "ticker"]))).len() > before).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn second_deploy_of_a_module_and_a_deploy_after_restart_hit_the_artifact_cache() {
    let mut hub = HubProcess::start(HubOptions::default()).await.unwrap();
    let first = deploy(&hub, "examples/primes.wasm", "primes-a", &[]);
    assert_eq!(first["artifact_cache_hit"], false);
    let second = deploy(&hub, "examples/primes.wasm", "primes-b", &[]);
    assert_eq!(second["artifact_cache_hit"], true);
    assert_eq!(first["module_hash"], second["module_hash"]);
    hub.restart().await.unwrap();
    let third = deploy(&hub, "examples/primes.wasm", "primes-c", &[]);
    assert_eq!(
        third["artifact_cache_hit"], true,
        "the artifact comes from the store after a restart"
    );
    ok(hub.ferry(&["rm", "primes-a"]));
    ok(hub.ferry(&["rm", "primes-b"]));
    ok(hub.ferry(&["rm", "primes-c"]));
}

#[tokio::test]
async fn arguments_and_environment_reach_the_guest() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    deploy(
        &hub,
        "guests/env_args.wasm",
        "envargs",
        &["--env", "COLOUR=blue", "--", "one", "two words"],
    );
    wait_for_state(&hub, "envargs", "exited").await;
    let logs = stdout(&hub.ferry(&["logs", "envargs"]));
    for expected in [
        "arg[0]=envargs",
        "arg[1]=one",
        "arg[2]=two words",
        "env:COLOUR=blue",
        "realtime_positive=yes",
        "getentropy=ok",
    ] {
        assert!(logs.contains(expected), "{expected:?} missing from {logs}");
    }
}

#[tokio::test]
async fn a_file_that_is_not_wasm_is_refused_with_the_parser_reason() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    let path = guest("guests/not_wasm.wasm");
    let output = hub.ferry(&["deploy", path.to_str().unwrap(), "--name", "bad"]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("invalid module") && message.contains("magic"),
        "{message}"
    );
    assert_eq!(ok(hub.ferry(&["ps", "--json"])).trim(), "[]", "nothing was stored");
}

#[tokio::test]
async fn a_module_importing_what_the_hub_lacks_is_refused_by_name() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    let path = guest("guests/unknown_import.wasm");
    let output = hub.ferry(&["deploy", path.to_str().unwrap(), "--name", "bad"]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("env.not_provided_by_ferry"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn a_trapping_guest_fails_with_the_reason_and_others_keep_running() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    deploy(&hub, "examples/ticker.wasm", "ticker", &["--", "20"]);
    deploy(&hub, "guests/trap.wasm", "trap", &[]);
    let failed = wait_for_state(&hub, "trap", "failed").await;
    let reason = failed["failure"].as_str().unwrap();
    assert!(reason.contains("trapped") && reason.contains("unreachable"), "{reason}");
    wait_for_log(&hub, "trap", "about to trap").await;
    let events = stdout(&hub.ferry(&["logs", "trap", "--events"]));
    assert!(events.contains("[ferry] failed: trapped"), "{events}");
    assert_eq!(function(&hub, "ticker")["state"], "running");
    let before = stdout(&hub.ferry(&["logs", "ticker"])).lines().count();
    eventually("the ticker to keep ticking", PATIENCE, || async {
        (stdout(&hub.ferry(&["logs", "ticker"])).lines().count() > before).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_deploy_under_the_modules_initial_memory_is_refused_and_replaces_nothing() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    // bigheap asks for two pages at start: it cannot be instantiated in one.
    let path = guest("examples/bigheap.wasm");
    let module = path.to_str().unwrap();
    let refused = hub.ferry(&["deploy", module, "--name", "tiny", "--memory-limit", "64KiB"]);
    assert_eq!(refused.status.code(), Some(9), "{}", stderr(&refused));
    assert!(
        stderr(&refused)
            .contains("function \"tiny\" needs 131072 bytes of memory at start, above its memory limit of 65536 bytes"),
        "{}",
        stderr(&refused)
    );
    assert!(!ok(hub.ferry(&["ps"])).contains("tiny"), "nothing recorded");
    let huge = hub.ferry(&["deploy", module, "--name", "tiny", "--memory-limit", "100TiB"]);
    assert_eq!(huge.status.code(), Some(4), "{}", stderr(&huge));
    assert!(
        stderr(&huge).contains("memory limit 100.0 TiB is outside 64.0 KiB..=4.0 GiB"),
        "{}",
        stderr(&huge)
    );

    // A redeploy that cannot run leaves the running function as it was:
    // neither a module too big for its limit nor one that is not wasm.
    let echo = deploy(&hub, "examples/echo.wasm", "tiny", &[]);
    let not_wasm = std::env::temp_dir().join(format!("not-wasm-{}.wasm", std::process::id()));
    std::fs::write(&not_wasm, b"not a module").unwrap();
    for (args, code) in [(vec!["--memory-limit", "64KiB"], 9), (vec![], 4)] {
        let source = if code == 4 { not_wasm.to_str().unwrap() } else { module };
        let mut full = vec!["deploy", source, "--name", "tiny", "--replace"];
        full.extend(args);
        let replaced = hub.ferry(&full);
        assert_eq!(replaced.status.code(), Some(code), "{}", stderr(&replaced));
        let now = function(&hub, "tiny");
        assert_eq!(now["state"], "running", "{now}");
        assert_eq!(now["module_hash"], echo["module_hash"], "{now}");
    }
    std::fs::remove_file(&not_wasm).unwrap();
    assert_eq!(ok(hub.ferry(&["invoke", "tiny", "--data", "fine"])), "echo: fine\n");
}

#[tokio::test]
async fn a_guest_exceeding_its_memory_limit_fails_with_the_limit_named() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    deploy(&hub, "guests/memory_hog.wasm", "hog", &["--memory-limit", "8MiB"]);
    let failed = wait_for_state(&hub, "hog", "failed").await;
    let reason = failed["failure"].as_str().unwrap();
    assert!(
        reason.contains("memory limit exceeded") && reason.contains("8388608"),
        "{reason}"
    );
    let logs = stdout(&hub.ferry(&["logs", "hog"]));
    assert!(logs.contains("allocated 1 MiB"), "{logs}");
    assert!(!logs.contains("allocated 9 MiB"), "{logs}");
    // The hub keeps serving.
    deploy(&hub, "examples/echo.wasm", "echo", &[]);
    assert_eq!(
        ok(hub.ferry(&["invoke", "echo", "--data", "still here"])),
        "echo: still here\n"
    );
}

#[tokio::test]
async fn an_unknown_function_name_is_not_found_for_every_command() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    for args in [
        &["logs", "ghost"][..],
        &["stop", "ghost"],
        &["rm", "ghost"],
        &["invoke", "ghost", "--data", "x"],
    ] {
        let output = hub.ferry(args);
        assert_eq!(output.status.code(), Some(3), "{args:?}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("function \"ghost\" not found"),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[tokio::test]
async fn duplicate_and_invalid_names_are_refused_and_replace_redeploys() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    let echo = deploy(&hub, "examples/echo.wasm", "echo", &[]);
    let path = guest("examples/echo.wasm");
    let duplicate = hub.ferry(&["deploy", path.to_str().unwrap(), "--name", "echo"]);
    assert_eq!(duplicate.status.code(), Some(8), "{}", stderr(&duplicate));
    assert!(stderr(&duplicate).contains("--replace"), "{}", stderr(&duplicate));
    let invalid = hub.ferry(&["deploy", path.to_str().unwrap(), "--name", "no/slashes"]);
    assert_eq!(invalid.status.code(), Some(4), "{}", stderr(&invalid));
    let replaced = deploy(&hub, "examples/ticker.wasm", "echo", &["--replace"]);
    assert_eq!(replaced["state"], "running");
    assert_ne!(replaced["module_hash"], echo["module_hash"]);
    assert_eq!(function(&hub, "echo")["module_hash"], replaced["module_hash"]);
}

#[tokio::test]
async fn redeploys_racing_each_other_succeed_or_say_try_again_and_one_runs() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    deploy(&hub, "examples/ticker.wasm", "same", &[]);
    let modules = ["examples/ticker.wasm", "examples/echo.wasm", "examples/bigheap.wasm"];
    for _ in 0..4 {
        let racing: Vec<_> = modules
            .iter()
            .map(|module| {
                hub.ferry_command()
                    .args(["deploy", guest(module).to_str().unwrap(), "--name", "same", "--replace"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for deploy in racing {
            let output = deploy.wait_with_output().unwrap();
            // Never "not found": a function another redeploy removed is gone all the same.
            assert!(
                matches!(output.status.code(), Some(0 | 7)),
                "{:?}: {}",
                output.status,
                stderr(&output)
            );
        }
        assert_eq!(wait_for_state(&hub, "same", "running").await["state"], "running");
    }
}

#[tokio::test]
async fn over_a_mebibyte_of_arguments_is_refused_before_anything_is_recorded() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    let path = guest("examples/ticker.wasm");
    let arg = "x".repeat(1000);
    let mut args = vec!["deploy", path.to_str().unwrap(), "--name", "chatty", "--"];
    args.extend(std::iter::repeat_n(arg.as_str(), 1100));
    let refused = hub.ferry(&args);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("the arguments and environment take 1101100 bytes, over the 1048576"),
        "{}",
        stderr(&refused)
    );
    assert!(!ok(hub.ferry(&["ps"])).contains("chatty"), "nothing recorded");
}

#[tokio::test]
async fn a_suspended_function_says_that_it_took_no_message() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    deploy(&hub, "examples/echo.wasm", "echo", &[]);
    ok(hub.ferry(&["suspend", "echo"]));
    let output = hub.ferry(&["invoke", "echo", "--data", "x", "--timeout", "300ms"]);
    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "function \"echo\" took no message within 300 ms, nothing was delivered: function \"echo\" is not running (it is suspended)"
        ),
        "{}",
        stderr(&output)
    );
    // Resumed, it takes the next message.
    ok(hub.ferry(&["resume", "echo"]));
    let answered = ok(hub.ferry(&["invoke", "echo", "--data", "x"]));
    assert!(answered.contains("echo: x"), "{answered}");
}

/// A caller whose function ends under its call hears how it ended, and a
/// resume with nothing to resume from says how to start it anew.
#[tokio::test]
async fn an_invocation_whose_function_ends_says_how_it_ended() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    deploy(&hub, "guests/ends_on_message.wasm", "svc", &[]);
    assert_eq!(ok(hub.ferry(&["invoke", "svc", "--data", "hi"])).trim(), "hi");
    let trapped = hub.ferry(&["invoke", "svc", "--data", "trap"]);
    assert_eq!(trapped.status.code(), Some(7), "{}", stderr(&trapped));
    assert!(
        stderr(&trapped).contains("function \"svc\" ended before replying: it failed: trapped"),
        "{}",
        stderr(&trapped)
    );
    let resumed = hub.ferry(&["resume", "svc"]);
    assert!(
        stderr(&resumed).contains("--replace` starts it anew"),
        "{}",
        stderr(&resumed)
    );
    deploy(&hub, "guests/ends_on_message.wasm", "svc", &["--replace"]);
    let exited = hub.ferry(&["invoke", "svc", "--data", "exit"]);
    assert_eq!(exited.status.code(), Some(7), "{}", stderr(&exited));
    assert!(
        stderr(&exited).contains("ended before replying: it exited with code 3"),
        "{}",
        stderr(&exited)
    );
}

#[tokio::test]
async fn an_invocation_whose_function_a_user_ends_meanwhile_says_what_the_user_did() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    let slow_echo = guest("guests/slow_echo.wasm");
    let slow_echo = slow_echo.to_str().unwrap();
    let deploy_slow = |extra: &[&str]| {
        let mut args = vec!["deploy", slow_echo, "--name", "slow"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "3000"]);
        ok(hub.ferry(&args));
    };
    let cases: [(&[&str], i32, &str); 4] = [
        (&["rm", "slow"], 7, "ended before replying: it was removed"),
        (&["stop", "slow"], 7, "ended before replying: it was stopped"),
        (
            &["deploy", slow_echo, "--name", "slow", "--replace", "--", "3000"],
            7,
            "ended before replying: it was replaced by a redeploy",
        ),
        (
            &["suspend", "slow"],
            6,
            "did not reply within 2000 ms: it is suspended (it replies once resumed",
        ),
    ];
    for (round, (action, code, says)) in cases.into_iter().enumerate() {
        deploy_slow(&["--replace"]);
        let taken = || stdout(&hub.ferry(&["logs", "slow"])).matches("got 2 bytes").count();
        let before = taken();
        let waiting = hub
            .ferry_command()
            .args(["invoke", "slow", "--data", "hi", "--timeout", "2s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Once it took the message (and works on it for 3 s).
        eventually("slow to take the message", PATIENCE, || async {
            (taken() > before).then_some(())
        })
        .await
        .unwrap();
        ok(hub.ferry(action));
        let output = waiting.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(code), "case {round}: {}", stderr(&output));
        assert!(stderr(&output).contains(says), "case {round}: {}", stderr(&output));
    }
}

#[tokio::test]
async fn invoking_a_function_that_never_replies_times_out_with_a_clear_error() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    deploy(&hub, "examples/ticker.wasm", "ticker", &[]);
    let output = hub.ferry(&["invoke", "ticker", "--data", "x", "--timeout", "300ms"]);
    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("did not reply within 300 ms"),
        "{}",
        stderr(&output)
    );
    // Under a millisecond would mean the hub's default (10 s): refused.
    for timeout in ["0", "1ns"] {
        let output = hub.ferry(&["invoke", "ticker", "--data", "x", "--timeout", timeout]);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(stderr(&output).contains("at least 1ms"), "{}", stderr(&output));
    }

    // A hub killed under a request: said so, and no hint that the hub
    // speaks TLS (it spoke plaintext until it died).
    let mut hub = hub;
    let waiting = hub
        .ferry_command()
        .args(["invoke", "ticker", "--data", "x", "--timeout", "30s"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    hub.kill().unwrap();
    let output = waiting.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("broke before it answered") && !stderr(&output).contains("TLS"),
        "{}",
        stderr(&output)
    );
}

/// Reflection answers in both protocol versions: `v1`, and `v1alpha`, the
/// only one Python's grpcio-reflection, older grpcurl, Postman and Evans speak.
/// It serves the public package only: the hub-to-hub protocol, records and
/// checkpoint format are not offered to clients.
#[tokio::test]
async fn reflection_lists_the_public_hub_service_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    // Over mutual TLS, as users run hubs.
    let hub = HubProcess::start(HubOptions::default().secure()).await.unwrap();
    let channel = hub.channel().await.unwrap();
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(listed)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("v1alpha did not list services");
    };
    let names: Vec<_> = listed.service.iter().map(|service| service.name.as_str()).collect();
    assert!(names.contains(&"ferry.v1.Hub"), "{names:?}");
    assert!(
        !names.iter().any(|name| name.starts_with("ferry.internal")),
        "{names:?}"
    );

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(listed)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("v1 did not list services");
    };
    assert!(listed.service.iter().any(|service| service.name == "ferry.v1.Hub"));
    assert!(
        !listed
            .service
            .iter()
            .any(|service| service.name.starts_with("ferry.internal")),
        "{:?}",
        listed.service
    );

    for symbol in ["ferry.internal.v1.Migration", "ferry.internal.v1.FunctionRecord"] {
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                symbol.to_owned(),
            )),
        };
        let answer = client
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap()
            .into_inner()
            .message()
            .await;
        // tonic-reflection answers an unknown symbol with NOT_FOUND.
        match answer {
            Err(status) => assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}"),
            Ok(answer) => assert!(
                matches!(
                    answer.and_then(|answer| answer.message_response),
                    Some(v1::server_reflection_response::MessageResponse::ErrorResponse(_))
                ),
                "reflection described the internal symbol {symbol}"
            ),
        }
    }
}

/// Starts `ferry invoke NAME --data DATA` without waiting for it.
fn invoke_in_background(hub: &HubProcess, name: &str, data: &str) -> std::process::Child {
    hub.ferry_command()
        .args(["invoke", name, "--data", data, "--timeout", "60s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the ferry CLI")
}

/// A suspend (or a hub shutdown) that finds invocations waiting unread in
/// the function's inbox takes them back and tells their callers, rather
/// than carrying them off in the snapshot without their callers: a
/// retrying caller's invocation is answered after the resume, and none is
/// handled while its caller hears that it failed.
#[tokio::test]
async fn invocations_waiting_in_the_inbox_of_a_suspended_function_are_answered_after_its_resume_and_handled_once() {
    let mut hub = HubProcess::start(HubOptions::default().args(["--checkpoint-interval", "0s"]))
        .await
        .unwrap();
    deploy(&hub, "guests/slow_echo.wasm", "slow", &["--", "1000"]);

    // One message in hand, three waiting, when the suspend comes.
    let callers: Vec<_> = (0..4)
        .map(|index| invoke_in_background(&hub, "slow", &format!("m{index}")))
        .collect();
    wait_for_log(&hub, "slow", "got 2 bytes").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok(hub.ferry(&["suspend", "slow"]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok(hub.ferry(&["resume", "slow"]));
    for (index, caller) in callers.into_iter().enumerate() {
        let output = caller.wait_with_output().unwrap();
        assert_eq!(ok(output), format!("echo: m{index}\n"));
    }
    let logs = stdout(&hub.ferry(&["logs", "slow"]));
    assert_eq!(logs.matches("got 2 bytes").count(), 4, "each handled once: {logs}");

    // A graceful shutdown: the callers of the two waiting unread hear that
    // the hub is shutting down, and the function, continued after the
    // restart, does not handle them behind their backs.
    let callers: Vec<_> = (0..3)
        .map(|index| invoke_in_background(&hub, "slow", &format!("late{index}")))
        .collect();
    wait_for_log(&hub, "slow", "got 5 bytes").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.terminate().unwrap();
    let (refused, cut): (Vec<_>, Vec<_>) = callers
        .into_iter()
        .map(|caller| caller.wait_with_output().unwrap())
        .partition(|output| stderr(output).contains("stopping for a hub shutdown"));
    assert_eq!(refused.len(), 2, "the two unread invocations were refused");
    // The caller of the one in hand loses its hub: "unavailable", and told
    // that its invocation may or may not have been handled.
    let cut = &cut[0];
    assert_eq!(cut.status.code(), Some(5), "{}", stderr(cut));
    assert!(stderr(cut).contains("may or may not"), "{}", stderr(cut));
    hub.restart().await.unwrap();
    wait_for_state(&hub, "slow", "running").await;
    // The message in hand at the shutdown finishes (1 s of work); nothing
    // else arrives.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let logs = stdout(&hub.ferry(&["logs", "slow"]));
    assert_eq!(logs.matches("got 5 bytes").count(), 1, "{logs}");
    assert_eq!(ok(hub.ferry(&["invoke", "slow", "--data", "x"])), "echo: x\n");
}
