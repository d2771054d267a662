//! Functions that message and call functions on other hubs of a secure
//! cluster (real `ferry agent` processes on loopback, mDNS off): the
//! `deploy/examples` sensor calling the aggregator while the aggregator
//! moves back and forth, and `ferry_send` across hubs.

use std::time::Duration;

use ferry_integration_tests::eventually;
use ferry_integration_tests::moves::{deploy_guest, loopback_pair, migrate, numbered_lines, stdout_of};

const PATIENCE: Duration = Duration::from_secs(90);

/// The sequence numbers of the sensor's answered calls, checking that each
/// answer is the aggregator's count of readings so far: a call delivered
/// twice would put the count ahead of the sequence number, a lost one
/// would leave a gap or a failure line.
fn answered_calls(sensor_output: &str) -> Vec<u64> {
    let failures: Vec<&str> = sensor_output.lines().filter(|line| line.contains("failed")).collect();
    assert!(failures.is_empty(), "calls failed: {failures:?}\n{sensor_output}");
    let mut answered = Vec::new();
    for line in sensor_output.lines().filter(|line| line.starts_with("call ")) {
        // call SEQ -> s1 SEQ count=N sum=S min=A max=B
        let words: Vec<&str> = line.split_whitespace().collect();
        let seq: u64 = words[1].parse().unwrap();
        assert_eq!(words[4], words[1], "answer for another call: {line}");
        assert_eq!(words[5], format!("count={seq}"), "not counted exactly once: {line}");
        answered.push(seq);
    }
    answered
}

/// Fails unless `numbers` go up by one, with at least ten of them.
fn assert_consecutive(numbers: &[u64], what: &str) {
    assert!(numbers.len() >= 10, "{what}: only {numbers:?}");
    if let Some(at) = numbers.windows(2).position(|pair| pair[1] != pair[0] + 1) {
        let around = &numbers[at.saturating_sub(3)..(at + 4).min(numbers.len())];
        panic!("{what}: {} then {} (around: {around:?})", numbers[at], numbers[at + 1]);
    }
}

#[tokio::test]
async fn calls_to_a_function_on_another_hub_are_answered_once_each_in_order_while_it_moves() {
    let hubs = loopback_pair(&["--checkpoint-interval", "0s"], PATIENCE).await.unwrap();
    deploy_guest(&hubs[0], "examples/aggregator.wasm", "aggregator", &[]);
    deploy_guest(
        &hubs[1],
        "examples/sensor.wasm",
        "sensor",
        &["s1", "aggregator", "0", "0"],
    );
    let calls_past = |least: u64| {
        let hub = &hubs[1];
        async move {
            let answered = answered_calls(&stdout_of(hub, "sensor"));
            answered.last().copied().filter(|last| *last >= least)
        }
    };
    let mut last = eventually("the sensor's first calls across hubs", PATIENCE, || calls_past(5))
        .await
        .unwrap();

    // Five moves, to the caller's hub and back, while the caller calls
    // back to back.
    for round in 0..5 {
        let to = if round % 2 == 0 { "hub-1" } else { "hub-0" };
        let summary = migrate(&hubs[0], "aggregator", to).unwrap();
        assert!(summary["epoch"].as_u64() > Some(0), "{summary}");
        last = eventually(&format!("calls to go on after move {}", round + 1), PATIENCE, || {
            calls_past(last + 5)
        })
        .await
        .unwrap();
    }
    // The caller moves too (to where the aggregator is, and back), most
    // likely while it waits for a reply: the reply follows it.
    for to in ["hub-0", "hub-1"] {
        let summary = migrate(&hubs[1], "sensor", to).unwrap();
        assert!(summary["epoch"].as_u64() > Some(0), "{summary}");
        last = eventually(
            &format!("calls to go on after the sensor moved to {to}"),
            PATIENCE,
            || calls_past(last + 5),
        )
        .await
        .unwrap();
    }
    // (The hub keeps a function's last 10,000 output lines: a fast run may
    // have dropped the first ones, so the checks start where the log does.)
    let calls = answered_calls(&stdout_of(&hubs[1], "sensor"));
    assert_consecutive(&calls, "calls answered out of order or not at all");

    // The aggregator (on hub-1 after five moves) read each reading once,
    // in order; its output travelled with it.
    let readings = numbered_lines(&stdout_of(&hubs[0], "aggregator"), "reading s1 ");
    assert_consecutive(&readings, "readings read out of order, twice or not at all");
    assert!(
        readings.last() >= calls.last(),
        "the aggregator's last reading is {:?}, the sensor's last answered call {:?}",
        readings.last(),
        calls.last()
    );
    let info = hubs[1].ferry_json(&["ps"]).unwrap();
    let aggregator = info
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["name"] == "aggregator")
        .unwrap_or_else(|| panic!("aggregator not on hub-1: {info}"));
    assert_eq!(aggregator["forwarded"], false, "{aggregator}");
    eprintln!("{} calls answered across seven moves", calls.len());
}

#[tokio::test]
async fn a_message_sent_to_a_function_on_another_hub_arrives_and_an_unknown_name_or_a_call_to_itself_is_refused() {
    let hubs = loopback_pair(&["--checkpoint-interval", "0s"], PATIENCE).await.unwrap();
    deploy_guest(&hubs[0], "examples/echo.wasm", "echo", &[]);
    deploy_guest(&hubs[1], "guests/sender.wasm", "to-echo", &["echo", "5"]);
    deploy_guest(&hubs[1], "guests/sender.wasm", "to-nobody", &["nobody", "1"]);
    for (name, code) in [("to-echo", 0), ("to-nobody", -3)] {
        let output = eventually(&format!("{name} to finish"), PATIENCE, || async {
            let output = stdout_of(&hubs[1], name);
            output.contains("sender done").then_some(output)
        })
        .await
        .unwrap();
        let codes: Vec<&str> = output.lines().filter_map(|line| line.split(" = ").nth(1)).collect();
        assert!(
            !codes.is_empty() && codes.iter().all(|got| *got == code.to_string()),
            "{output}"
        );
    }
    // A call to no function, and one to itself, fail at once with their codes.
    deploy_guest(&hubs[1], "examples/sensor.wasm", "lonely", &["s", "nobody", "1", "0"]);
    deploy_guest(&hubs[1], "examples/sensor.wasm", "selfish", &["s", "selfish", "1", "0"]);
    for (name, code) in [("lonely", -3), ("selfish", -6)] {
        let output = eventually(&format!("{name} to finish"), PATIENCE, || async {
            let output = stdout_of(&hubs[1], name);
            output.contains("done").then_some(output)
        })
        .await
        .unwrap();
        assert_eq!(output, format!("call 1 failed: {code}\ndone\n"));
    }
    let echoed = eventually("echo to get five messages", PATIENCE, || async {
        let output = stdout_of(&hubs[0], "echo");
        (output.matches("got 9 bytes").count() >= 5).then_some(output)
    })
    .await
    .unwrap();
    assert_eq!(echoed.matches("got 9 bytes").count(), 5, "{echoed}");
}

/// `ferry invoke NAME` asked of `hub` in the background; its output.
fn invoke_in_background(
    hub: &ferry_integration_tests::HubProcess,
    name: &str,
    data: &str,
) -> std::thread::JoinHandle<std::process::Output> {
    let mut command = hub.ferry_command();
    command
        .args(["invoke", name, "--data", data, "--timeout", "60s"])
        .stdin(std::process::Stdio::null());
    std::thread::spawn(move || command.output().expect("ferry invoke runs"))
}

#[tokio::test]
async fn a_reply_finds_its_caller_after_the_function_moved_or_was_suspended_in_the_middle_of_the_request() {
    let hubs = loopback_pair(&["--checkpoint-interval", "0s"], PATIENCE).await.unwrap();
    // Three seconds of computing per request: every step below lands in
    // the middle of one.
    deploy_guest(&hubs[0], "guests/slow_echo.wasm", "slow", &["3000"]);
    let requests_read = |hub: usize| stdout_of(&hubs[hub], "slow").matches("got ").count();
    // (asked of, then: move to / suspend and resume)
    let steps = [(1, Some("hub-1")), (1, Some("hub-0")), (0, None)];
    for (round, (asked, moved_to)) in steps.into_iter().enumerate() {
        let data = format!("request-{round}");
        let invocation = invoke_in_background(&hubs[asked], "slow", &data);
        eventually("the request to be read", PATIENCE, || async {
            (requests_read(asked) > round).then_some(())
        })
        .await
        .unwrap();
        match moved_to {
            Some(to) => {
                migrate(&hubs[0], "slow", to).unwrap();
            }
            None => {
                ferry_integration_tests::expect_success(hubs[0].ferry(&["suspend", "slow"]));
                ferry_integration_tests::expect_success(hubs[0].ferry(&["resume", "slow"]));
            }
        }
        let output = tokio::task::spawn_blocking(move || invocation.join().unwrap())
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{data}: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(stdout.trim_end(), format!("echo: {data}"));
    }
    // Each request was read once.
    assert_eq!(requests_read(0), steps.len(), "{}", stdout_of(&hubs[0], "slow"));
}

/// The sensor's output lines from `from_line` on: (answered, failed).
fn calls_since(output: &str, from_line: usize) -> (usize, usize) {
    let lines: Vec<&str> = output.lines().skip(from_line).collect();
    let answered = lines.iter().filter(|line| line.contains(" -> ")).count();
    let failed = lines.iter().filter(|line| line.contains(" failed: ")).count();
    (answered, failed)
}

#[tokio::test]
async fn a_caller_runs_on_while_its_callee_is_removed_or_its_hub_killed_and_calls_again_once_it_is_back() {
    let mut hubs = loopback_pair(&["--checkpoint-interval", "0s"], PATIENCE).await.unwrap();
    deploy_guest(&hubs[0], "examples/aggregator.wasm", "aggregator", &[]);
    deploy_guest(
        &hubs[1],
        "examples/sensor.wasm",
        "sensor",
        &["s1", "aggregator", "0", "20"],
    );
    let sensor = |hubs: &Vec<ferry_integration_tests::HubProcess>| stdout_of(&hubs[1], "sensor");
    let lines_now = |hubs: &Vec<ferry_integration_tests::HubProcess>| sensor(hubs).lines().count();
    eventually("the first answered calls", PATIENCE, || async {
        (calls_since(&sensor(&hubs), 0).0 >= 3).then_some(())
    })
    .await
    .unwrap();

    // Removed while it is being called: calls fail, the caller goes on.
    let mark = lines_now(&hubs);
    ferry_integration_tests::expect_success(hubs[0].ferry(&["rm", "aggregator"]));
    eventually("calls to a removed function to fail", PATIENCE, || async {
        (calls_since(&sensor(&hubs), mark).1 >= 3).then_some(())
    })
    .await
    .unwrap();
    let mark = lines_now(&hubs);
    deploy_guest(&hubs[0], "examples/aggregator.wasm", "aggregator", &[]);
    eventually("calls to the redeployed aggregator", PATIENCE, || async {
        (calls_since(&sensor(&hubs), mark).0 >= 3).then_some(())
    })
    .await
    .unwrap();

    // Its hub killed: calls fail while it is down and go on once it is back.
    hubs[0].kill().unwrap();
    let mark = lines_now(&hubs);
    eventually("calls to a dead hub to fail", PATIENCE, || async {
        (calls_since(&sensor(&hubs), mark).1 >= 2).then_some(())
    })
    .await
    .unwrap();
    hubs[0].restart().await.unwrap();
    let mark = lines_now(&hubs);
    eventually("calls to go on after the restart", PATIENCE, || async {
        (calls_since(&sensor(&hubs), mark).0 >= 3).then_some(())
    })
    .await
    .unwrap();
    let info = ferry_integration_tests::function_info(&hubs[1], "sensor");
    assert_eq!(info["state"], "running", "{info}");
    // Every failure was one of the documented codes.
    let output = sensor(&hubs);
    for line in output.lines().filter(|line| line.contains(" failed: ")) {
        let code = line.rsplit(' ').next().unwrap();
        assert!(["-1", "-3", "-6"].contains(&code), "{line}");
    }
}

#[tokio::test]
async fn a_caller_moved_or_suspended_while_it_waits_for_a_reply_goes_at_once_and_still_gets_the_reply() {
    let hubs = loopback_pair(&["--checkpoint-interval", "0s"], PATIENCE).await.unwrap();
    // Six seconds per request (the sensor's calls wait up to ten): each
    // step below lands while the caller waits for a reply.
    deploy_guest(&hubs[0], "guests/slow_echo.wasm", "slow", &["6000"]);
    deploy_guest(&hubs[1], "examples/sensor.wasm", "caller", &["c", "slow", "3", "0"]);
    let requests_read = || stdout_of(&hubs[0], "slow").matches("got ").count();
    // (runs on before the step, then: moved to / suspended and resumed)
    let steps = [(1, Some("hub-0")), (0, None), (0, Some("hub-1"))];
    for (round, (runs_on, moved_to)) in steps.into_iter().enumerate() {
        eventually("the call to be read", PATIENCE, || async {
            (requests_read() > round).then_some(())
        })
        .await
        .unwrap();
        match moved_to {
            Some(to) => {
                migrate(&hubs[runs_on], "caller", to).unwrap();
            }
            None => {
                ferry_integration_tests::expect_success(hubs[runs_on].ferry(&["suspend", "caller"]));
                ferry_integration_tests::expect_success(hubs[runs_on].ferry(&["resume", "caller"]));
            }
        }
        // The move or suspend did not wait for the reply: the call is
        // still unanswered (it has seconds to go).
        let seq = round + 1;
        let output = stdout_of(&hubs[1], "caller");
        assert!(
            !output.contains(&format!("call {seq} ")),
            "call {seq} ended before the step was done:\n{output}"
        );
    }
    let output = eventually("the caller to finish", PATIENCE, || async {
        let output = stdout_of(&hubs[1], "caller");
        output.contains("done").then_some(output)
    })
    .await
    .unwrap();
    // Each call answered once, with its own reply, nothing failed.
    let answered = answered_replies(&output);
    assert_eq!(answered, [1, 2, 3], "{output}");
    assert_eq!(requests_read(), 3, "{}", stdout_of(&hubs[0], "slow"));
    let info = ferry_integration_tests::function_info(&hubs[1], "caller");
    assert_eq!(info["hub_name"], "hub-1", "{info}");
}

/// The sequence numbers of the calls `slow_echo` answered, each with the
/// echo of its own message (`call SEQ -> echo: NAME SEQ READING`).
fn answered_replies(output: &str) -> Vec<u64> {
    assert!(!output.contains("failed"), "a call failed:\n{output}");
    output
        .lines()
        .filter(|line| line.starts_with("call "))
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(words[3], "echo:", "{line}");
            assert_eq!(words[5], words[1], "the reply to another call: {line}");
            words[1].parse().unwrap()
        })
        .collect()
}
