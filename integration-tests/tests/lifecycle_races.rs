//! Users doing everything at once to a function that moves: while it is
//! moved back and forth between two real `ferry agent` processes (loopback,
//! mDNS off), `resume`, `stop`, `checkpoint` and `migrate` are asked of
//! both hubs without pause. The function must never run on two hubs at
//! once and its output must have no gap and no duplicate.
//!
//! `FERRY_RACE_MOVES` sets the number of completed moves (20 by default);
//! `FERRY_TEST_SEED` repeats a run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_integration_tests::moves::{Rng, check_bigheap_checksums, check_consecutive, loopback_pair, numbered_lines};
use ferry_integration_tests::{HubProcess, expect_success, guest};
use ferry_proto::v1::hub_client::HubClient;
use ferry_proto::v1::{
    CheckpointRequest, FunctionState, ListFunctionsRequest, MigrateRequest, ResumeRequest, StopRequest, SuspendRequest,
    migrate_progress,
};
use tonic::transport::Channel;

const PATIENCE: Duration = Duration::from_secs(60);
const NAME: &str = "racer";

/// What one hub says of the function: its state, epoch and number of starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct View {
    state: FunctionState,
    epoch: u64,
    starts: u32,
}

impl View {
    fn is_live(self) -> bool {
        matches!(self.state, FunctionState::Running | FunctionState::Starting)
    }
}

/// What the hub itself holds (a hub that forwards for a function that moved
/// away shows the remote view, marked forwarded: that is not its own).
async fn view(client: &mut HubClient<Channel>) -> Option<View> {
    let list = client
        .list_functions(ListFunctionsRequest::default())
        .await
        .ok()?
        .into_inner();
    let info = list
        .functions
        .into_iter()
        .find(|info| info.spec.as_ref().is_some_and(|spec| spec.name == NAME))?;
    if info.forwarded {
        return Some(View {
            state: FunctionState::Moved,
            epoch: info.epoch,
            starts: info.starts,
        });
    }
    Some(View {
        state: info.state(),
        epoch: info.epoch,
        starts: info.starts,
    })
}

/// Moves the function from hub `from` to the hub named `to`; whether the
/// move completed.
async fn migrate(client: &mut HubClient<Channel>, to: &str) -> Result<(), String> {
    let request = MigrateRequest {
        name: NAME.to_owned(),
        to: to.to_owned(),
    };
    let mut events = client
        .migrate(request)
        .await
        .map_err(|status| status.message().to_owned())?
        .into_inner();
    loop {
        match events.message().await {
            Ok(Some(progress)) => {
                if matches!(progress.event, Some(migrate_progress::Event::Summary(_))) {
                    return Ok(());
                }
            }
            Ok(None) => return Err("the progress stream ended without a summary".to_owned()),
            Err(status) => return Err(status.message().to_owned()),
        }
    }
}

/// Outcome counts per request, for the report and to show the races happened.
#[derive(Default)]
struct Tally(BTreeMap<String, u64>);

impl Tally {
    fn count(&mut self, request: &str, result: Result<(), tonic::Status>) {
        let outcome = match result {
            Ok(()) => "ok".to_owned(),
            Err(status) if status.message().contains("being moved") => "refused: moving".to_owned(),
            Err(status) if status.code() == tonic::Code::NotFound => format!("NotFound: {}", status.message()),
            Err(status) => format!("{:?}", status.code()),
        };
        *self.0.entry(format!("{request} {outcome}")).or_default() += 1;
    }
}

/// Asks `resume`, `checkpoint`, `suspend`, `stop` and `migrate` of one hub, at random,
/// until told to stop.
async fn hammer(
    mut client: HubClient<Channel>,
    other_hub: String,
    seed_label: String,
    done: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut rng = Rng::new(&seed_label);
    while !done.load(Ordering::SeqCst) {
        let pick = rng.next_u64() % 100;
        let name = NAME.to_owned();
        let (request, result) = if pick < 30 {
            ("resume", client.resume(ResumeRequest { name }).await.map(|_| ()))
        } else if pick < 60 {
            (
                "checkpoint",
                client.checkpoint(CheckpointRequest { name }).await.map(|_| ()),
            )
        } else if pick < 70 {
            ("suspend", client.suspend(SuspendRequest { name }).await.map(|_| ()))
        } else if pick < 80 {
            ("stop", client.stop(StopRequest { name }).await.map(|_| ()))
        } else {
            let moved = migrate(&mut client, &other_hub).await;
            ("migrate", moved.map_err(tonic::Status::unknown))
        };
        tally.lock().unwrap().count(request, result);
        tokio::time::sleep(Duration::from_millis(rng.next_u64() % 30)).await;
    }
}

/// Polls `first`, `second`, `first` again: the same run live on `first` at
/// both ends (same epoch, same number of starts) while `second` is live in
/// between means two copies ran at once.
async fn two_copies_seen(first: &mut HubClient<Channel>, second: &mut HubClient<Channel>) -> Option<String> {
    let before = view(first).await?;
    let middle = view(second).await?;
    let after = view(first).await?;
    let same_run = before.is_live() && after.is_live() && (before.epoch, before.starts) == (after.epoch, after.starts);
    (same_run && middle.is_live()).then(|| format!("one hub {before:?} .. {after:?}, the other {middle:?}"))
}

async fn watch_for_two_copies(
    mut clients: [HubClient<Channel>; 2],
    done: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
) -> u64 {
    let mut polls = 0;
    while !done.load(Ordering::SeqCst) {
        let [first, second] = &mut clients;
        for violation in [
            two_copies_seen(first, second).await,
            two_copies_seen(second, first).await,
        ]
        .into_iter()
        .flatten()
        {
            seen.lock().unwrap().push(violation);
        }
        polls += 1;
    }
    polls
}

/// Which hub the function is live on, if exactly one.
async fn live_on(clients: &mut [HubClient<Channel>; 2]) -> Option<usize> {
    let mut live = Vec::new();
    for (index, client) in clients.iter_mut().enumerate() {
        if view(client).await.is_some_and(View::is_live) {
            live.push(index);
        }
    }
    (live.len() == 1).then(|| live[0])
}

/// Resumes the function wherever it is stopped, until it is live somewhere.
async fn ensure_live(hubs: &[HubProcess], clients: &mut [HubClient<Channel>; 2]) -> usize {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(index) = live_on(clients).await {
            return index;
        }
        for client in clients.iter_mut() {
            let _ = client.resume(ResumeRequest { name: NAME.to_owned() }).await;
        }
        if Instant::now() > deadline {
            let views = [view(&mut clients[0]).await, view(&mut clients[1]).await];
            panic!(
                "{NAME} is not live on exactly one hub: {views:?}\n--- hub-0 ---\n{}\n--- hub-1 ---\n{}",
                hubs[0].agent_log(),
                hubs[1].agent_log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn user_commands_racing_moves_never_run_a_function_twice_nor_lose_output() {
    let moves_wanted: usize = std::env::var("FERRY_RACE_MOVES")
        .ok()
        .and_then(|moves| moves.parse().ok())
        .unwrap_or(20);
    let hubs = loopback_pair(&["--checkpoint-interval", "300ms"], PATIENCE)
        .await
        .unwrap();
    let module = guest("examples/bigheap.wasm");
    expect_success(hubs[0].ferry(&[
        "deploy",
        module.to_str().unwrap(),
        "--name",
        NAME,
        "--memory-limit",
        "64MiB",
        "--",
        "8",
        "0",
    ]));
    let names = ["hub-0".to_owned(), "hub-1".to_owned()];
    let mut clients = [hubs[0].client().await.unwrap(), hubs[1].client().await.unwrap()];
    // `resume` continues from a checkpoint: a stop must never find none.
    expect_success(hubs[0].ferry(&["checkpoint", NAME]));

    let done = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hammers: Vec<_> = (0..2)
        .map(|index| {
            tokio::spawn(hammer(
                clients[index].clone(),
                names[1 - index].clone(),
                format!("hammer on hub-{index}"),
                Arc::clone(&done),
                Arc::clone(&tally),
            ))
        })
        .collect();
    let watcher = tokio::spawn(watch_for_two_copies(
        [clients[0].clone(), clients[1].clone()],
        Arc::clone(&done),
        Arc::clone(&seen),
    ));

    // Every completed move, the test's own and the hammers', raises the
    // function's epoch by one.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut moves = 0;
    let mut failed_moves: BTreeMap<String, u64> = BTreeMap::new();
    while moves < moves_wanted as u64 {
        assert!(
            Instant::now() < deadline,
            "only {moves} of {moves_wanted} moves completed; failures: {failed_moves:#?}\n--- hub-0 ---\n{}\n--- hub-1 ---\n{}",
            hubs[0].agent_log(),
            hubs[1].agent_log()
        );
        let from = ensure_live(&hubs, &mut clients).await;
        if let Err(reason) = migrate(&mut clients[from], &names[1 - from]).await {
            *failed_moves.entry(reason).or_default() += 1;
        }
        for client in clients.iter_mut() {
            if let Some(seen) = view(client).await {
                moves = moves.max(seen.epoch);
            }
        }
    }
    done.store(true, Ordering::SeqCst);
    for hammer in hammers {
        hammer.await.unwrap();
    }
    let polls = watcher.await.unwrap();

    let live = ensure_live(&hubs, &mut clients).await;
    // Let it print a few more rounds where it settled.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logs = expect_success(hubs[live].ferry(&["logs", NAME]));
    let rounds = numbered_lines(&logs, "round ");

    let tally = std::mem::take(&mut tally.lock().unwrap().0);
    eprintln!("{moves} moves; failed by the test: {failed_moves:#?}; {polls} sandwich polls; requests: {tally:#?}");
    let violations = seen.lock().unwrap().clone();
    assert!(violations.is_empty(), "{NAME} ran on two hubs at once: {violations:#?}");
    assert!(rounds.len() > 10, "too few rounds printed: {logs}");
    if let Err(error) = check_consecutive(&rounds, "bigheap rounds while users raced moves") {
        // Every entry with its number and time, the hub's events included,
        // to lay beside the agents' logs.
        let entries = hubs[live].ferry(&["logs", NAME, "--events", "--json"]);
        panic!(
            "{error:#}\n--- the log with events ---\n{}\n--- hub-0 ---\n{}\n--- hub-1 ---\n{}",
            String::from_utf8_lossy(&entries.stdout),
            hubs[0].agent_log(),
            hubs[1].agent_log()
        );
    }
    // And its memory came through every restore intact.
    check_bigheap_checksums(&logs, 8).unwrap();
    // The races happened: requests met the function in the middle of a move.
    let met_a_move: u64 = tally
        .iter()
        .filter(|(key, _)| key.ends_with("refused: moving"))
        .map(|(_, count)| count)
        .sum();
    assert!(met_a_move > 0, "no request met a move: {tally:#?}");

    // One id names each move in both hubs' logs.
    let source_log = hubs[0].agent_log();
    let move_id = source_log
        .lines()
        .filter(|line| line.contains("function moved "))
        .find_map(|line| line.split("move_id=").nth(1)?.split([' ', '}', ':']).next())
        .expect("a move logged with its id on hub-0");
    assert!(
        hubs[1].agent_log().contains(&format!("move_id={move_id}")),
        "move {move_id} of hub-0 is not in hub-1's log"
    );
}
