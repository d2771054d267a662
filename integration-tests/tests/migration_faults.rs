//! Moves that go wrong, between real `ferry agent` processes on loopback
//! (mDNS off, peers given with `--peer`): `kill -9` of the source or the
//! destination at random moments of a move, refused destinations, and a
//! hostile peer speaking the transfer protocol directly.
//!
//! The kill trials check the exactly-once promise: afterwards the function
//! runs on exactly one hub, never on two at once, and its output has no gap
//! and no duplicate. `FERRY_MOVE_TRIALS` sets the number of trials (20 by
//! default); `FERRY_TEST_SEED` repeats a run.

use std::time::{Duration, Instant};

use ferry_integration_tests::moves::{
    Rng, check_consecutive, free_loopback_address, kill_mid_move, loopback_pair, migrate, migrate_refused,
    numbered_lines, running_on, stdout_of, wait_peer_up,
};
use ferry_integration_tests::{HubOptions, HubProcess, eventually, expect_success, guest};
use ferry_migrator::INSTRUMENTATION_VERSION;
use ferry_proto::internal::v1::migration_client::MigrationClient;
use ferry_proto::internal::v1::{
    ChunkData, ChunkRef, DestinationFrame, Offer, Round, SourceFrame, destination_frame, source_frame,
};
use ferry_proto::v1::FunctionSpec;

const PATIENCE: Duration = Duration::from_secs(60);

/// Two hubs that know each other by `--peer`, on fixed ports (a restart
/// keeps them), checkpointing every 200 ms.
async fn pair() -> Vec<HubProcess> {
    loopback_pair(&["--checkpoint-interval", "200ms"], PATIENCE)
        .await
        .unwrap()
}

async fn wait_usable(hub: &HubProcess, peer_name: &str) {
    wait_peer_up(hub, peer_name, PATIENCE).await.unwrap();
}

fn deploy(hub: &HubProcess, module: &str, name: &str, args: &[&str]) {
    let path = guest(module);
    let mut command = vec![
        "deploy",
        path.to_str().unwrap(),
        "--name",
        name,
        "--memory-limit",
        "128MiB",
        "--",
    ];
    command.extend_from_slice(args);
    expect_success(hub.ferry(&command));
}

#[tokio::test]
async fn killing_the_source_or_the_destination_mid_move_never_loses_or_duplicates_the_function() {
    let trials: usize = std::env::var("FERRY_MOVE_TRIALS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(20);
    let mut hubs = pair().await;
    let mut rng = Rng::new("kill trials");
    // 24 MiB of changing heap: a move takes long enough to be hit mid-way.
    deploy(&hubs[0], "examples/bigheap.wasm", "heap", &["24", "0"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One undisturbed move measures how long a move takes; kills land
    // anywhere in 0..1.5 times that.
    let started = Instant::now();
    let summary = migrate(&hubs[0], "heap", "hub-1").unwrap();
    let move_time = started.elapsed();
    eprintln!("an undisturbed move took {move_time:?}: {summary}");
    let mut owner = 1;
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for trial in 0..trials {
        let destination = 1 - owner;
        let victim = if rng.below(2) == 0 { owner } else { destination };
        let delay = rng.duration(move_time * 3 / 2);
        let (settled_on, reported) = kill_mid_move(&mut hubs, "heap", owner, victim, delay, PATIENCE).await;
        let moved = if reported { "move reported" } else { "move failed" };
        let role = if victim == owner { "source" } else { "destination" };
        eprintln!("trial {trial}: killed the {role} after {delay:?}: {moved}, runs on hub-{settled_on}");
        *outcomes
            .entry(format!(
                "{role} killed, {moved}, ends on the {}",
                if settled_on == owner { "source" } else { "destination" }
            ))
            .or_default() += 1;
        owner = settled_on;
        wait_usable(&hubs[0], "hub-1").await;
        wait_usable(&hubs[1], "hub-0").await;
    }
    eprintln!("outcomes: {outcomes:#?}");
    // Let it print a few more rounds where it runs now, then check the history.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rounds = numbered_lines(&stdout_of(&hubs[owner], "heap"), "round ");
    check_consecutive(&rounds, "bigheap rounds across the kill trials").unwrap();
    eprintln!("{} rounds, consecutive", rounds.len());
}

/// The destination runs a moved function from the seal, its output held
/// until the move is committed: a function that prints every millisecond
/// has output kept back on every move, and that output must still have no
/// gap and no duplicate.
#[tokio::test]
async fn a_function_printing_every_millisecond_moves_with_its_output_held_not_lost_or_doubled() {
    let hubs = pair().await;
    wait_usable(&hubs[0], "hub-1").await;
    deploy(&hubs[0], "examples/ticker.wasm", "fast", &["1"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 0..6 {
        let (via, to) = if round % 2 == 0 { (0, "hub-1") } else { (1, "hub-0") };
        let summary = migrate(&hubs[via], "fast", to).unwrap();
        eprintln!(
            "move {round}: downtime {} µs, effects held {} µs",
            summary["downtime_micros"], summary["effects_held_micros"]
        );
        assert!(
            summary["effects_held_micros"].as_u64().unwrap_or(0) > 0,
            "the function ran on {to} before the commit: {summary}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all: Vec<&HubProcess> = hubs.iter().collect();
    assert_eq!(running_on(&all, "fast"), vec![0]);
    let ticks = numbered_lines(&stdout_of(&hubs[0], "fast"), "tick ");
    check_consecutive(&ticks, "ticks across six moves").unwrap();
    assert!(ticks.len() > 500, "{} ticks", ticks.len());
}

/// A function that writes 64 KiB at a time keeps only the newest 8 MiB of
/// its output on its hub (not 10,000 entries of 64 KiB, 640 MiB), and a
/// move carries no more than that.
#[tokio::test]
async fn a_function_writing_big_blocks_keeps_8_mib_of_output_and_moves_only_that() {
    const KEPT: usize = 8 << 20;
    let hubs = pair().await;
    wait_usable(&hubs[0], "hub-1").await;
    // 400 blocks of 64 KiB: 25 MiB.
    deploy(&hubs[0], "guests/chatty.wasm", "chatty", &["400", "64"]);
    eventually("chatty to tick", PATIENCE, || async {
        stdout_of(&hubs[0], "chatty").contains("tick 3\n").then_some(())
    })
    .await
    .unwrap();
    let kept = |output: &str, at: &str| {
        assert!(
            output.len() <= KEPT && output.len() > KEPT - (256 << 10),
            "{} bytes of output kept on {at}",
            output.len()
        );
        assert!(output.contains("block 400 ."), "the newest block is kept on {at}");
        assert!(!output.contains("block 1 ."), "the first block is dropped on {at}");
    };
    kept(&stdout_of(&hubs[0], "chatty"), "hub-0");
    let summary = migrate(&hubs[0], "chatty", "hub-1").unwrap();
    eprintln!("moved: downtime {} µs", summary["downtime_micros"]);
    let moved = stdout_of(&hubs[1], "chatty");
    kept(&moved, "hub-1");
    let ticks = numbered_lines(&moved, "tick ");
    check_consecutive(&ticks, "ticks across the move").unwrap();
}

#[tokio::test]
async fn moves_to_an_unknown_down_or_foreign_hub_are_refused_and_the_function_keeps_running() {
    let mut hubs = pair().await;
    // Joined to the same CA, but configured for another cluster id (a hub
    // of another CA never gets past the handshake: `cluster_trust`).
    let foreign = HubProcess::start(
        ferry_integration_tests::moves::in_cluster(
            HubOptions::named("foreign").args(["--cluster-id", "elsewhere", "--peer", &hubs[0].address().to_string()]),
            Some(&hubs[0]),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    deploy(&hubs[0], "examples/ticker.wasm", "tick", &["50"]);
    wait_usable(&foreign, "hub-0").await;
    eventually("hub-0 to know the foreign hub", PATIENCE, || async {
        hubs[0]
            .peers()
            .ok()?
            .iter()
            .any(|peer| peer.name == "foreign")
            .then_some(())
    })
    .await
    .unwrap();

    let (code, message) = migrate_refused(&hubs[0], "tick", "nowhere");
    eprintln!("unknown hub: exit {code}: {}", message.trim());
    assert!(message.contains("no hub of that name, id or address"), "{message}");
    let (_, message) = migrate_refused(&hubs[0], "tick", "foreign");
    eprintln!("foreign cluster: {}", message.trim());
    assert!(message.contains("belongs to cluster \"elsewhere\""), "{message}");
    let (_, message) = migrate_refused(&hubs[0], "tick", "hub-0");
    assert!(
        message.contains("cannot move to hub hub-0: function \"tick\" runs there already"),
        "{message}"
    );
    let (_, message) = migrate_refused(&hubs[0], "ghost", "hub-1");
    assert!(message.contains("not found"), "{message}");

    hubs[1].kill().unwrap();
    eventually("hub-1 to be down", PATIENCE, || async {
        hubs[0]
            .peers()
            .ok()?
            .iter()
            .any(|peer| peer.name == "hub-1" && peer.is_down())
            .then_some(())
    })
    .await
    .unwrap();
    let (_, message) = migrate_refused(&hubs[0], "tick", "hub-1");
    eprintln!("down hub: {}", message.trim());
    assert!(message.contains("it is down"), "{message}");

    let all: Vec<&HubProcess> = hubs[..1].iter().collect();
    assert_eq!(running_on(&all, "tick"), vec![0]);
    let ticks = numbered_lines(&stdout_of(&hubs[0], "tick"), "tick ");
    check_consecutive(&ticks, "ticks after refused moves").unwrap();
    assert!(ticks.len() > 3);
}

fn frame(frame: source_frame::Frame) -> SourceFrame {
    SourceFrame { frame: Some(frame) }
}

/// Opens a transfer to `hub` as a hostile source would, offering a function
/// named `name` of module `module_hash`; returns the frame sender and the
/// answers.
async fn hostile_source(
    hub: &HubProcess,
    name: &str,
    module_hash: &str,
    instrumentation_version: u32,
) -> (
    tokio::sync::mpsc::Sender<SourceFrame>,
    tonic::Streaming<DestinationFrame>,
) {
    let mut client = MigrationClient::connect(format!("http://{}", hub.address()))
        .await
        .unwrap();
    let (sender, frames) = tokio::sync::mpsc::channel(16);
    sender
        .send(frame(source_frame::Frame::Offer(Offer {
            protocol_version: ferry_proto::PROTOCOL_VERSION,
            cluster_id: "default".to_owned(),
            source_hub_id: "hub-hostile".to_owned(),
            source_hub_name: "hostile".to_owned(),
            source_address: "127.0.0.1:9".to_owned(),
            spec: Some(FunctionSpec {
                name: name.to_owned(),
                module_hash: module_hash.to_owned(),
                ..Default::default()
            }),
            epoch: 0,
            chunk_size: 64 * 1024,
            starts: 1,
            move_id: "hostile-move".to_owned(),
            automatic: None,
            stall_limit_millis: 0,
            instrumentation_version,
        })))
        .await
        .unwrap();
    let answers = client
        .transfer(tokio_stream::wrappers::ReceiverStream::new(frames))
        .await
        .unwrap()
        .into_inner();
    (sender, answers)
}

/// The destination's next answer; progress reports are skipped, as a
/// source does.
async fn answer(answers: &mut tonic::Streaming<DestinationFrame>) -> destination_frame::Frame {
    loop {
        let frame = tokio::time::timeout(PATIENCE, answers.message())
            .await
            .expect("an answer")
            .expect("a frame, not a stream error")
            .expect("a frame, not the end")
            .frame
            .expect("a non-empty frame");
        if !matches!(frame, destination_frame::Frame::Received(_)) {
            return frame;
        }
    }
}

fn round_of_one_chunk(hash: [u8; 32]) -> SourceFrame {
    frame(source_frame::Frame::Round(Round {
        number: 1,
        last: true,
        memory_bytes: 64 * 1024,
        changed: vec![ChunkRef {
            index: 0,
            hash: hash.to_vec(),
        }],
        volume_chunks: vec![],
        volume: None,
    }))
}

/// The hub refused with `code` and a message containing `needle`.
fn assert_refused(frame: destination_frame::Frame, code: &str, needle: &str) {
    match frame {
        destination_frame::Frame::Refuse(refuse) => {
            eprintln!("refused ({}): {}", refuse.code, refuse.reason);
            assert_eq!(refuse.code, code, "{}", refuse.reason);
            assert!(refuse.reason.contains(needle), "{}", refuse.reason);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_hostile_source_gets_clear_refusals_and_leaves_nothing_behind() {
    let hub = HubProcess::start(HubOptions::named("target")).await.unwrap();
    deploy(&hub, "examples/ticker.wasm", "bystander", &["50"]);
    let module = std::fs::read(guest("examples/ticker.wasm")).unwrap();
    let known_module = blake3_hex(&module);
    let page = vec![7u8; 64 * 1024];
    let page_hash = *blake3::hash(&page).as_bytes();

    // A chunk whose bytes do not match its hash.
    let (sender, mut answers) = hostile_source(&hub, "forged", &known_module, INSTRUMENTATION_VERSION).await;
    assert!(matches!(
        answer(&mut answers).await,
        destination_frame::Frame::Accept(_)
    ));
    sender.send(round_of_one_chunk(page_hash)).await.unwrap();
    assert!(matches!(answer(&mut answers).await, destination_frame::Frame::Need(_)));
    let forged = vec![8u8; 64 * 1024];
    let mut encoded = vec![0u8];
    encoded.extend_from_slice(&forged);
    sender
        .send(frame(source_frame::Frame::Chunk(ChunkData {
            hash: page_hash.to_vec(),
            encoded,
            ..Default::default()
        })))
        .await
        .unwrap();
    assert_refused(answer(&mut answers).await, "DataLoss", "does not match its hash");

    // A stream that ends before the chunks it announced.
    let (sender, mut answers) = hostile_source(&hub, "truncated", &known_module, INSTRUMENTATION_VERSION).await;
    assert!(matches!(
        answer(&mut answers).await,
        destination_frame::Frame::Accept(_)
    ));
    sender.send(round_of_one_chunk(page_hash)).await.unwrap();
    assert!(matches!(answer(&mut answers).await, destination_frame::Frame::Need(_)));
    drop(sender);
    assert!(
        answers.message().await.map(|frame| frame.is_none()).unwrap_or(true),
        "the stream just ends"
    );

    // An offer of a module the hub does not have, which never comes.
    let unknown = blake3_hex(b"no such module");
    let (sender, mut answers) = hostile_source(&hub, "unknown-module", &unknown, INSTRUMENTATION_VERSION).await;
    match answer(&mut answers).await {
        destination_frame::Frame::Accept(accept) => assert!(accept.need_module),
        other => panic!("expected an accept, got {other:?}"),
    }
    sender
        .send(frame(source_frame::Frame::Round(Round {
            number: 1,
            last: true,
            memory_bytes: 64 * 1024,
            changed: vec![],
            volume_chunks: vec![],
            volume: None,
        })))
        .await
        .unwrap();
    assert!(matches!(answer(&mut answers).await, destination_frame::Frame::Need(_)));
    sender
        .send(frame(source_frame::Frame::Seal(ferry_proto::internal::v1::Seal {
            manifest: None,
        })))
        .await
        .unwrap();
    assert_refused(
        answer(&mut answers).await,
        "FailedPrecondition",
        "is unknown here and the source did not send it",
    );

    // An offer for a name that runs here already.
    let (_sender, mut answers) = hostile_source(&hub, "bystander", &known_module, INSTRUMENTATION_VERSION).await;
    assert_refused(
        answer(&mut answers).await,
        "AlreadyExists",
        "runs another function named \"bystander\" (names are per hub)",
    );

    // A function captured by a hub of another instrumentation version: its
    // saved stack would not fit this hub's rewrite of the module.
    let (_sender, mut answers) = hostile_source(
        &hub,
        "other-instrumentation",
        &known_module,
        INSTRUMENTATION_VERSION + 1,
    )
    .await;
    assert_refused(
        answer(&mut answers).await,
        "FailedPrecondition",
        &format!(
            "captured under instrumentation version {} and this hub restores version {INSTRUMENTATION_VERSION} only",
            INSTRUMENTATION_VERSION + 1
        ),
    );

    // Nothing of the hostile transfers is left, and the bystander runs on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let list = expect_success(hub.ferry(&["ps"]));
    for name in ["forged", "truncated", "unknown-module", "other-instrumentation"] {
        assert!(!list.contains(name), "{name} left a record: {list}");
    }
    assert_eq!(running_on(&[&hub], "bystander"), vec![0]);
    let ticks = numbered_lines(&stdout_of(&hub, "bystander"), "tick ");
    check_consecutive(&ticks, "bystander ticks").unwrap();
}

fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[tokio::test]
async fn every_hub_forwards_requests_to_where_a_moved_function_runs() {
    let hubs = pair().await;
    deploy(&hubs[0], "examples/echo.wasm", "echo", &[]);
    let summary = migrate(&hubs[0], "echo", "hub-1").unwrap();
    assert_eq!(summary["start_confirmed"], true);
    // Asked of the old hub: invoke, ps, logs reach the new one.
    let reply = expect_success(hubs[0].ferry(&["invoke", "echo", "--data", "hello"]));
    assert!(reply.contains("hello"), "{reply}");
    let info = ferry_integration_tests::function_info(&hubs[0], "echo");
    assert_eq!(info["hub_name"], "hub-1", "{info}");
    assert_eq!(info["forwarded"], true, "{info}");
    let events = expect_success(hubs[0].ferry(&["logs", "echo", "--events"]));
    assert!(
        events.contains("deployed module") && events.contains("moved here from hub hub-0"),
        "{events}"
    );
    // Stop through the old hub, then remove: both reach the new hub.
    let stopped = expect_success(hubs[0].ferry(&["stop", "echo"]));
    assert!(stopped.contains("stopped"), "{stopped}");
    assert_eq!(
        ferry_integration_tests::function_info(&hubs[1], "echo")["state"],
        "stopped"
    );
    expect_success(hubs[0].ferry(&["rm", "echo"]));
    for hub in &hubs {
        assert_eq!(
            ferry_integration_tests::function_info(hub, "echo"),
            serde_json::Value::Null
        );
    }
}

/// A hub restarted on another port is reached there: the hub a function
/// left learns the new address from the restarted hub's probes, and its
/// forward pointer follows it.
#[tokio::test]
async fn a_hub_restarted_on_another_port_is_reached_there_through_the_hub_a_function_left() {
    let mut hubs = pair().await;
    deploy(&hubs[0], "examples/echo.wasm", "echo", &[]);
    migrate(&hubs[0], "echo", "hub-1").unwrap();
    hubs[1].restart_on(free_loopback_address()).await.unwrap();
    let reply = eventually("hub-0 to reach echo on hub-1's new port", PATIENCE, || async {
        let output = hubs[0].ferry(&["invoke", "echo", "--data", "again"]);
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    })
    .await
    .unwrap();
    assert!(reply.contains("again"), "{reply}");
    let info = ferry_integration_tests::function_info(&hubs[0], "echo");
    assert_eq!(info["state"], "running", "{info}");
    assert_eq!(info["forwarded"], true, "{info}");
}

/// `logs -f` through the hub a function left, and the hub it runs on is
/// killed: the follower ends saying which hub went away (exit 5), not with
/// the transport's own words.
#[tokio::test]
async fn a_follower_through_another_hub_says_which_hub_went_away() {
    use std::io::{BufRead, BufReader};
    let mut hubs = pair().await;
    deploy(&hubs[0], "examples/ticker.wasm", "ticker", &["50"]);
    migrate(&hubs[0], "ticker", "hub-1").unwrap();
    let mut follower = hubs[0]
        .ferry_command()
        .args(["logs", "-f", "ticker"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("tick "));
    hubs[1].kill().unwrap();
    let ended = follower.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&ended.stderr);
    assert_eq!(ended.status.code(), Some(5), "{said}");
    assert!(said.contains("the stream from hub hub-1"), "{said}");
}

/// A name one hub never heard of: "not found" (exit 3) when every peer
/// answered; when a peer did not, the answer names it and says the
/// function may be there (exit 5), so a script does not deploy a second one.
#[tokio::test]
async fn a_function_asked_of_a_hub_whose_peer_is_down_may_be_there_and_says_so() {
    let mut hubs = pair().await;
    deploy(&hubs[1], "examples/echo.wasm", "echo", &[]);
    let unknown = hubs[0].ferry(&["invoke", "nothing", "--data", "x"]);
    assert_eq!(
        unknown.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let reply = expect_success(hubs[0].ferry(&["invoke", "echo", "--data", "x"]));
    assert!(reply.contains("echo: x"), "{reply}");
    hubs[1].kill().unwrap();
    for command in [
        &["invoke", "echo", "--data", "x"][..],
        &["logs", "echo"],
        &["stop", "echo"],
    ] {
        let asked = hubs[0].ferry(command);
        let said = String::from_utf8_lossy(&asked.stderr);
        assert_eq!(asked.status.code(), Some(5), "{command:?}: {said}");
        assert!(
            said.contains("hub-1 (") && said.contains("may run it"),
            "{command:?}: {said}"
        );
    }
}

#[tokio::test]
async fn ps_on_the_hub_a_function_left_says_why_it_cannot_show_it() {
    let mut hubs = pair().await;
    deploy(&hubs[0], "examples/echo.wasm", "echo", &[]);
    migrate(&hubs[0], "echo", "hub-1").unwrap();
    hubs[1].kill().unwrap();
    let shown = expect_success(hubs[0].ferry(&["ps", "echo"]));
    assert!(shown.contains("moved; hub hub-1 does not answer"), "{shown}");
    let info = ferry_integration_tests::function_info(&hubs[0], "echo");
    assert_eq!(
        (&info["state"], &info["failure"]),
        (&"moved".into(), &"hub hub-1 does not answer".into()),
        "{info}"
    );
}

/// `rm` through the hub a function left, once the hub it moved to no
/// longer has it (removed there, or that hub lost its data): the pointer is
/// what is left, and it goes; the name is free there again.
#[tokio::test]
async fn rm_through_the_hub_a_function_left_removes_a_pointer_to_nothing() {
    let hubs = pair().await;
    deploy(&hubs[0], "examples/echo.wasm", "echo", &[]);
    migrate(&hubs[0], "echo", "hub-1").unwrap();
    expect_success(hubs[1].ferry(&["rm", "echo"]));
    // No `ps` on hub-0 in between: it would find the pointer stale itself.
    let removed = hubs[0].ferry(&["rm", "echo"]);
    assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    deploy(&hubs[0], "examples/echo.wasm", "echo", &[]);
    let reply = expect_success(hubs[0].ferry(&["invoke", "echo", "--data", "anew"]));
    assert!(reply.contains("anew"), "{reply}");
}

#[tokio::test]
async fn a_function_removed_where_it_moved_to_is_gone_from_the_hub_it_left_too() {
    let hubs = pair().await;
    deploy(&hubs[0], "examples/echo.wasm", "echo", &[]);
    let summary = migrate(&hubs[0], "echo", "hub-1").unwrap();
    assert_eq!(summary["start_confirmed"], true, "{summary}");
    assert_eq!(
        ferry_integration_tests::function_info(&hubs[0], "echo")["forwarded"],
        true
    );
    // Removed where it runs now, not through the hub it left.
    expect_success(hubs[1].ferry(&["rm", "echo"]));
    for hub in &hubs {
        assert_eq!(
            ferry_integration_tests::function_info(hub, "echo"),
            serde_json::Value::Null,
            "{}",
            expect_success(hub.ferry(&["ps"]))
        );
    }
    let logs = hubs[0].ferry(&["logs", "echo"]);
    assert!(!logs.status.success());
    assert!(String::from_utf8_lossy(&logs.stderr).contains("not found"), "{logs:?}");
    // The name is free on the hub it left.
    deploy(&hubs[0], "examples/echo.wasm", "echo", &[]);
    let reply = expect_success(hubs[0].ferry(&["invoke", "echo", "--data", "again"]));
    assert!(reply.contains("again"), "{reply}");
    assert_eq!(
        ferry_integration_tests::function_info(&hubs[0], "echo")["hub_name"],
        "hub-0"
    );
}

#[tokio::test]
async fn the_hub_a_function_left_frees_its_name_once_removed_and_forwards_a_redeploy() {
    let hubs = pair().await;
    deploy(&hubs[0], "examples/echo.wasm", "echo", &[]);
    migrate(&hubs[0], "echo", "hub-1").unwrap();
    expect_success(hubs[1].ferry(&["rm", "echo"]));
    // Nothing asked hub-0 about it since: its pointer is stale, not the name.
    deploy(&hubs[0], "examples/echo.wasm", "echo", &[]);
    assert_eq!(
        ferry_integration_tests::function_info(&hubs[0], "echo")["hub_name"],
        "hub-0"
    );
    // A pointer to a function that is still there keeps the name taken,
    // and a redeploy through the hub it left replaces it where it runs.
    migrate(&hubs[0], "echo", "hub-1").unwrap();
    let path = ferry_integration_tests::guest("examples/echo.wasm");
    let refused = hubs[0].ferry(&["deploy", path.to_str().unwrap(), "--name", "echo"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(8), "{stderr}");
    assert!(stderr.contains("runs on hub hub-1 now: `deploy --replace`"), "{stderr}");
    let echo_hash = ferry_integration_tests::function_info(&hubs[1], "echo")["module_hash"].clone();
    let quiet = ferry_integration_tests::guest("guests/quiet_echo.wasm");
    let replaced = expect_success(hubs[0].ferry(&["deploy", quiet.to_str().unwrap(), "--name", "echo", "--replace"]));
    assert!(replaced.contains("deployed echo on hub-1"), "{replaced}");
    let info = ferry_integration_tests::function_info(&hubs[1], "echo");
    assert_eq!(
        (&info["hub_name"], &info["starts"]),
        (&"hub-1".into(), &1.into()),
        "{info}"
    );
    assert_ne!(info["module_hash"], echo_hash, "the module was replaced: {info}");
}

#[tokio::test]
async fn a_restart_looks_for_the_state_a_move_left_behind_only_until_it_is_gone() {
    let mut hubs = pair().await;
    // Ticks and checkpoints every 200 ms: the source keeps checkpoints and logs.
    deploy(&hubs[0], "examples/bigheap.wasm", "heap", &["4", "0"]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let summary = migrate(&hubs[0], "heap", "hub-1").unwrap();
    assert_eq!(summary["start_confirmed"], true, "{summary}");
    let source = &hubs[0];
    eventually("the source to drop what the function left behind", PATIENCE, || async {
        source
            .agent_log()
            .contains("dropped the state the function left behind")
            .then_some(())
    })
    .await
    .unwrap();
    let before = hubs[0].agent_log().len();
    hubs[0].restart().await.unwrap();
    hubs[0].restart().await.unwrap();
    let restarts = hubs[0].agent_log()[before..].to_owned();
    assert!(
        !restarts.contains("looking for state a move left behind"),
        "a restart looked again for state already dropped:\n{restarts}"
    );
    // The forward pointer is still there, and the function runs on.
    let info = ferry_integration_tests::function_info(&hubs[0], "heap");
    assert_eq!(info["hub_name"], "hub-1", "{info}");
    let rounds = numbered_lines(&stdout_of(&hubs[1], "heap"), "round ");
    check_consecutive(&rounds, "bigheap rounds across the move").unwrap();
}
