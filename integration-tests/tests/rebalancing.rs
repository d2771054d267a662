//! Hubs that overload rebalance on their own: suspending what fits nowhere
//! and resuming it when room appears, `ferry drain`, and a hub killed in the
//! middle of rebalancing. Real `ferry agent` processes on loopback (mDNS
//! off, peers by `--peer`); the three-hub spread over mDNS is in
//! `rebalancing_lan.rs`. Every function's output is compared with an
//! uninterrupted run of the same program.

use std::time::Duration;

use ferry_integration_tests::moves::{free_loopback_address, local_view, loopback_pair, stdout_of, wait_exited};
use ferry_integration_tests::{HubOptions, HubProcess, eventually, expect_success as ok, function_info_or_null, guest};
use serde_json::Value;

/// Safety net for every wait; not a performance requirement.
const PATIENCE: Duration = Duration::from_secs(240);

/// One rebalancing test at a time: they measure CPU on 2 shared cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `primes` arguments: enough work to outlast the rebalancing, with a
/// progress line every so often.
const WORK: [&str; 2] = ["20000000", "1000000"];

fn deploy_primes(hub: &HubProcess, name: &str, extra: &[&str]) {
    deploy_primes_doing(hub, name, extra, &WORK);
}

fn deploy_primes_doing(hub: &HubProcess, name: &str, extra: &[&str], work: &[&str]) {
    let module = guest("examples/primes.wasm");
    let mut args = vec!["deploy", module.to_str().unwrap(), "--name", name];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(work);
    ok(hub.ferry(&args));
}

/// What `primes` prints when nothing interrupts it.
async fn reference_output() -> String {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    deploy_primes(&hub, "reference", &[]);
    wait_exited(&hub, "reference", PATIENCE).await.unwrap();
    stdout_of(&hub, "reference")
}

fn events(hub: &HubProcess) -> Vec<Value> {
    ok(hub.ferry(&["events", "--json"]))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn events_of_kind(hub: &HubProcess, kind: &str) -> Vec<Value> {
    events(hub).into_iter().filter(|event| event["kind"] == kind).collect()
}

fn suspended_for_overload(hub: &HubProcess, name: &str) -> bool {
    function_info_or_null(hub, name)["suspended_for_overload"] == true
}

/// Half a core, six CPU-bound functions of three priorities: the hub
/// suspends the four below the top priority (never a top one), resumes the
/// priority-1 pair before the priority-0 pair as room appears, and every
/// function prints exactly what an uninterrupted run prints.
#[tokio::test]
async fn a_lone_hub_suspends_its_lowest_priorities_and_resumes_them_highest_first() {
    let _serial = SERIAL.lock().await;
    let expected = reference_output().await;
    let hub = HubProcess::start(HubOptions::default().args(["--cpus", "0.5", "--rebalance", "on"]))
        .await
        .unwrap();
    let functions = [
        ("p2a", "2"),
        ("p2b", "2"),
        ("p1a", "1"),
        ("p1b", "1"),
        ("p0a", "0"),
        ("p0b", "0"),
    ];
    for (name, priority) in functions {
        deploy_primes(&hub, name, &["--priority", priority]);
    }
    eventually("the four lower priorities to be suspended", PATIENCE, || async {
        ["p1a", "p1b", "p0a", "p0b"]
            .iter()
            .all(|name| suspended_for_overload(&hub, name))
            .then_some(())
    })
    .await
    .unwrap();
    for name in ["p2a", "p2b"] {
        assert!(
            !suspended_for_overload(&hub, name),
            "{}",
            function_info_or_null(&hub, name)
        );
    }
    let table = ok(hub.ferry(&["ps"]));
    assert!(table.contains("suspended (overload)"), "{table}");

    for (name, _) in functions {
        wait_exited(&hub, name, PATIENCE).await.unwrap();
        assert_eq!(stdout_of(&hub, name), expected, "output of {name}");
    }
    let resumed: Vec<String> = events_of_kind(&hub, "resumed")
        .iter()
        .map(|event| event["function"].as_str().unwrap().to_owned())
        .collect();
    let position = |name: &str| resumed.iter().position(|resumed| resumed == name);
    for high in ["p1a", "p1b"] {
        for low in ["p0a", "p0b"] {
            assert!(position(high) < position(low), "resumed in this order: {resumed:?}");
        }
    }
    assert!(
        events_of_kind(&hub, "suspended")
            .iter()
            .all(|event| event["function"].as_str().is_some_and(|name| !name.starts_with("p2")))
    );
}

/// `--rebalance recommend` says what it would do and does nothing.
#[tokio::test]
async fn a_hub_that_only_recommends_records_its_decisions_and_suspends_nothing() {
    let _serial = SERIAL.lock().await;
    let hub = HubProcess::start(HubOptions::default().args(["--cpus", "0.5", "--rebalance", "recommend"]))
        .await
        .unwrap();
    // Ten times the usual work: the overload must outlast the policy's
    // window on a busy machine (nothing here waits for the end).
    for (name, priority) in [("r1", "1"), ("r0", "0")] {
        deploy_primes_doing(&hub, name, &["--priority", priority], &["200000000", "1000000"]);
    }
    let recommended = eventually("a recommendation to suspend r0", PATIENCE, || async {
        events_of_kind(&hub, "recommend").into_iter().find(|event| {
            event["text"]
                .as_str()
                .is_some_and(|text| text.starts_with("would suspend r0"))
        })
    })
    .await
    .unwrap();
    assert_eq!(recommended["function"], "r0", "{recommended}");
    assert!(events_of_kind(&hub, "suspended").is_empty());
    assert!(!suspended_for_overload(&hub, "r0"));
    assert_eq!(hub.info().unwrap()["rebalance"], "recommend");
}

/// The same lone hub, but a roomy hub joins while four functions are
/// suspended for overload: they are resumed there (moved from where their
/// checkpoints left off), without anyone redeploying, and every function
/// prints what an uninterrupted run prints.
#[tokio::test]
async fn suspended_functions_resume_on_a_hub_that_joins_later() {
    let _serial = SERIAL.lock().await;
    let expected = reference_output().await;
    let small_address = free_loopback_address();
    let small = HubProcess::start(HubOptions::named("small").listen(small_address).args([
        "--cpus",
        "0.5",
        "--rebalance",
        "on",
    ]))
    .await
    .unwrap();
    let functions = [
        ("j2a", "2"),
        ("j2b", "2"),
        ("j1a", "1"),
        ("j1b", "1"),
        ("j0a", "0"),
        ("j0b", "0"),
    ];
    for (name, priority) in functions {
        deploy_primes(&small, name, &["--priority", priority]);
    }
    eventually("the four lower priorities to be suspended", PATIENCE, || async {
        ["j1a", "j1b", "j0a", "j0b"]
            .iter()
            .all(|name| suspended_for_overload(&small, name))
            .then_some(())
    })
    .await
    .unwrap();
    // A big hub (eight cores for functions) joins: it knows the small hub, which learns of
    // it from its first probe.
    let roomy = HubProcess::start(HubOptions::named("roomy").args([
        "--cpus",
        "8",
        "--rebalance",
        "on",
        "--peer",
        &small_address.to_string(),
    ]))
    .await
    .unwrap();
    let resumed_there = eventually("a suspended function to resume on the new hub", PATIENCE, || async {
        let here: Vec<String> = ["j1a", "j1b", "j0a", "j0b"]
            .iter()
            .filter(|name| run_here(&roomy, name).is_some())
            .map(|name| name.to_string())
            .collect();
        (!here.is_empty()).then_some(here)
    })
    .await
    .unwrap();
    assert!(
        events_of_kind(&small, "resumed").iter().any(
            |event| event["peer"] == "roomy" && resumed_there.iter().any(|name| event["function"] == name.as_str())
        ),
        "{:?}",
        events(&small)
    );
    for (name, _) in functions {
        wait_exited(&small, name, PATIENCE).await.unwrap();
        assert_eq!(stdout_of(&small, name), expected, "output of {name}");
    }
}

/// `ferry drain` moves every movable function to the peer (whatever the
/// rebalancing mode), leaves the pinned one, refuses new deploys until
/// `undrain`, and the moved functions print what they would have.
#[tokio::test]
async fn drain_moves_every_movable_function_off_and_undrain_ends_it() {
    let _serial = SERIAL.lock().await;
    let expected = reference_output().await;
    // Half a core keeps the four busy long enough to be moved.
    let hubs = loopback_pair(&["--cpus", "0.5"], PATIENCE).await.unwrap();
    for name in ["d1", "d2", "d3"] {
        deploy_primes(&hubs[0], name, &[]);
    }
    deploy_primes(&hubs[0], "stays", &["--pin"]);
    let summary: Value =
        serde_json::from_str(ok(hubs[0].ferry(&["drain", "hub-0", "--json"])).lines().last().unwrap()).unwrap();
    assert_eq!(summary["moved"], 3, "{summary}");
    assert_eq!(summary["pinned"], serde_json::json!(["stays"]), "{summary}");
    assert_eq!(summary["left"], serde_json::json!([]), "{summary}");
    for name in ["d1", "d2", "d3"] {
        let info = function_info_or_null(&hubs[1], name);
        assert_eq!(info["hub_name"], "hub-1", "{info}");
    }
    assert_eq!(function_info_or_null(&hubs[0], "stays")["hub_name"], "hub-0");
    // Nor does a move by hand bring one back while it drains.
    let back = hubs[1].ferry(&["migrate", "d1", "--to", "hub-0"]);
    let said = String::from_utf8_lossy(&back.stderr).into_owned();
    assert!(
        !back.status.success() && said.contains("hub hub-0 is draining"),
        "{said}"
    );
    assert_eq!(function_info_or_null(&hubs[1], "d1")["hub_name"], "hub-1");
    let module = guest("examples/primes.wasm");
    let refused = hubs[0].ferry(&["deploy", module.to_str().unwrap(), "--name", "new"]);
    assert_eq!(refused.status.code(), Some(7));
    // Asked through the other hub: the drain of a peer is forwarded to it.
    ok(hubs[1].ferry(&["undrain", "hub-0"]));
    ok(hubs[0].ferry(&["deploy", module.to_str().unwrap(), "--name", "new", "--", "1000", "0"]));
    for name in ["d1", "d2", "d3", "stays"] {
        wait_exited(&hubs[0], name, PATIENCE).await.unwrap();
        assert_eq!(stdout_of(&hubs[0], name), expected, "output of {name}");
    }
}

/// What `hub` itself runs of `name`: the run's (epoch, starts), if it is
/// running there (not forwarded).
fn run_here(hub: &HubProcess, name: &str) -> Option<(u64, u64)> {
    let output = hub.ferry(&["ps", "--json"]);
    let list: Value = serde_json::from_slice(&output.stdout).ok()?;
    let entry = list.as_array()?.iter().find(|entry| entry["name"] == name)?;
    (entry["state"] == "running" && entry["forwarded"] == false).then(|| {
        (
            entry["epoch"].as_u64().unwrap_or(0),
            entry["starts"].as_u64().unwrap_or(0),
        )
    })
}

/// Polls `first`, `second`, `first`: the same run live on `first` at both
/// ends while `second` runs it in between means two copies at once (a
/// move between two polls is not).
fn two_copies(first: &HubProcess, second: &HubProcess, name: &str) -> bool {
    let Some(before) = run_here(first, name) else {
        return false;
    };
    if run_here(second, name).is_none() {
        return false;
    }
    run_here(first, name) == Some(before)
}

/// A hub killed with SIGKILL while it rebalances onto its peer: after it
/// restarts, every function runs on exactly one hub and prints what an
/// uninterrupted run prints — nothing lost, nothing twice.
#[tokio::test]
async fn a_hub_killed_while_rebalancing_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().await;
    let expected = reference_output().await;
    let mut hubs = loopback_pair(
        &["--cpus", "0.5", "--rebalance", "on", "--checkpoint-interval", "1s"],
        PATIENCE,
    )
    .await
    .unwrap();
    let names: Vec<String> = (0..4).map(|index| format!("k{index}")).collect();
    for name in &names {
        deploy_primes(&hubs[0], name, &[]);
    }
    // The first automatic move starts once the overload has lasted the
    // window (5 s); kill the source while moves are under way.
    eventually("a function to start moving", PATIENCE, || async {
        let views: Vec<Value> = names.iter().map(|name| function_info_or_null(&hubs[0], name)).collect();
        views
            .iter()
            .any(|view| view["hub_name"] == "hub-1" || view["state"] == "moved")
            .then_some(())
    })
    .await
    .unwrap();
    hubs[0].kill().unwrap();
    hubs[0].restart().await.unwrap();

    // Until every function has ended, none runs on both hubs at any poll.
    eventually("every function to end", PATIENCE, || async {
        for name in &names {
            assert!(
                !two_copies(&hubs[0], &hubs[1], name),
                "{name} runs on both hubs at once"
            );
            assert!(
                !two_copies(&hubs[1], &hubs[0], name),
                "{name} runs on both hubs at once"
            );
        }
        names
            .iter()
            .all(|name| function_info_or_null(&hubs[0], name)["state"] == "exited")
            .then_some(())
    })
    .await
    .unwrap();
    for name in &names {
        // It ended on one hub; the other, if it knows it, points there.
        let owners: Vec<usize> = (0..2)
            .filter(|index| matches!(local_view(&hubs[*index], name), Some((state, false)) if state == "exited"))
            .collect();
        assert_eq!(owners.len(), 1, "{name} ended on hubs {owners:?}");
        assert_eq!(stdout_of(&hubs[0], name), expected, "output of {name}");
    }
}
