//! A hub whose data disk fills up (a small tmpfs the test mounts, as root;
//! edge devices fill their SD cards): its functions keep running, output it
//! cannot store is counted and reported, checkpoints fail with the reason,
//! a restart on the full disk starts degraded with every function still
//! there, and freeing space brings checkpoints back. And the hub's own
//! writes (checkpoints, a move's chunks) never fill the disk: one that
//! would is refused, saying so, and the hub's database stays healthy.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferry_integration_tests::moves::{free_loopback_address, wait_peer_up};
use ferry_integration_tests::{HubOptions, HubProcess, eventually, expect_success, function_info, guest, ticks_in};
use ferry_migrator::checkpoint::room::available_bytes;

const PATIENCE: Duration = Duration::from_secs(60);
const DISK_MIB: u64 = 128;

/// A tmpfs of `DISK_MIB` mounted on a temporary directory; unmounted on drop.
struct SmallDisk {
    mount_point: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (the test is skipped) when this process may not mount, unless
    /// CI or `FERRY_REQUIRE_NETNS` says privileged tests must run.
    fn mount(mib: u64) -> Option<SmallDisk> {
        let mount_point = tempfile::Builder::new().prefix("ferry-small-disk").tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(mount_point.path())
            .status()
            .is_ok_and(|status| status.success());
        if mounted {
            return Some(SmallDisk { mount_point });
        }
        let required = ["FERRY_REQUIRE_NETNS", "CI"]
            .iter()
            .any(|flag| std::env::var(flag).is_ok_and(|value| !value.is_empty() && value != "0"));
        assert!(
            !required,
            "cannot mount a tmpfs, and privileged tests are required here"
        );
        eprintln!("skipping: cannot mount a tmpfs (run as root)");
        None
    }

    fn path(&self) -> &Path {
        self.mount_point.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.mount_point.path()).status();
    }
}

/// Writes a file until the disk refuses more; returns its path. Called
/// again it tops the disk up: the store frees space of its own (a failed
/// checkpoint's chunks removed, sled compacting), and output that finds a
/// few free bytes is stored after all.
fn fill(disk: &Path) -> PathBuf {
    let path = disk.join("filler");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let block = vec![0x5a_u8; 256 << 10];
    while file.write_all(&block).and_then(|()| file.flush()).is_ok() {}
    path
}

fn info(hub: &HubProcess) -> serde_json::Value {
    hub.ferry_json(&["info"]).unwrap()
}

#[tokio::test]
async fn a_full_disk_keeps_functions_running_and_a_restart_starts_degraded() {
    let Some(disk) = SmallDisk::mount(DISK_MIB) else { return };
    let data = disk.path().join("hub");
    let mut hub = HubProcess::start(
        HubOptions::default()
            .data_dir(&data)
            .args(["--checkpoint-interval", "0s"]),
    )
    .await
    .unwrap();
    assert_eq!(info(&hub)["degraded"], "", "{}", info(&hub));
    let ticker = guest("examples/ticker.wasm");
    expect_success(hub.ferry(&["deploy", ticker.to_str().unwrap(), "--name", "ticker", "--", "20"]));
    let heap = guest("examples/bigheap.wasm");
    expect_success(hub.ferry(&["deploy", heap.to_str().unwrap(), "--name", "heap", "--", "8", "0"]));
    // Restarts continue both from a checkpoint, not from the beginning.
    expect_success(hub.ferry(&["checkpoint", "heap"]));
    expect_success(hub.ferry(&["checkpoint", "ticker"]));

    // The disk fills up.
    let filler = fill(disk.path());
    let refused = eventually("a checkpoint refused for lack of space", PATIENCE, || async {
        let output = hub.ferry(&["checkpoint", "heap"]);
        (!output.status.success()).then(|| String::from_utf8_lossy(&output.stderr).into_owned())
    })
    .await
    .unwrap();
    assert!(refused.to_lowercase().contains("space"), "{refused}");
    let degraded = eventually("the hub to say it is degraded", PATIENCE, || async {
        let reason = info(&hub)["degraded"].as_str().unwrap_or_default().to_owned();
        (!reason.is_empty()).then_some(reason)
    })
    .await
    .unwrap();
    assert!(degraded.contains("full"), "{degraded}");
    // The functions run on; what the ticker prints and cannot be stored is counted.
    eventually("unstored output counted", PATIENCE, || async {
        fill(disk.path());
        let ticker = function_info(&hub, "ticker");
        (ticker["state"] == "running" && ticker["unstored_output_entries"].as_u64() > Some(0)).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(function_info(&hub, "heap")["state"], "running");

    // A suspend that cannot be stored is refused, and the function runs on
    // from the memory its run kept while the store tried: a new run from
    // that capture (one more start), not from a checkpoint. What it prints
    // then may or may not find room (the store can reuse space the failed
    // persist gave back), so progress is judged by its CPU time.
    let unstored = |hub: &HubProcess| function_info(hub, "heap")["unstored_output_entries"].as_u64();
    let starts = |heap: &serde_json::Value| heap["starts"].as_u64().unwrap_or(0);
    fill(disk.path());
    let before = unstored(&hub).unwrap_or(0);
    let starts_before = starts(&function_info(&hub, "heap"));
    let suspend = hub.ferry(&["suspend", "heap"]);
    let refused = String::from_utf8_lossy(&suspend.stderr).to_lowercase();
    assert!(!suspend.status.success(), "a suspend on a full disk succeeded");
    assert!(refused.contains("space"), "{refused}");
    let cpu = |heap: &serde_json::Value| heap["cpu_micros"].as_u64().unwrap_or(0);
    let running_at = eventually("heap to run on after its refused suspend", PATIENCE, || async {
        fill(disk.path());
        let heap = function_info(&hub, "heap");
        let went_on = starts(&heap) == starts_before + 1 || unstored(&hub) > Some(before + 2);
        (heap["state"] == "running" && went_on).then(|| cpu(&heap))
    })
    .await
    .unwrap_or_else(|error| panic!("{error}; heap now: {}", function_info(&hub, "heap")));
    eventually("heap to make progress after its refused suspend", PATIENCE, || async {
        let heap = function_info(&hub, "heap");
        (heap["state"] == "running" && cpu(&heap) > running_at + 50_000).then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}; heap now: {}", function_info(&hub, "heap")));
    assert!(
        starts(&function_info(&hub, "heap")) <= starts_before + 1,
        "heap was started more than once after its refused suspend"
    );

    // A restart on the full disk: the hub starts, degraded, with both functions.
    eprintln!("full disk: functions run on, restarting");
    fill(disk.path());
    hub.restart().await.unwrap();
    let reason = info(&hub)["degraded"].as_str().unwrap_or_default().to_owned();
    assert!(!reason.is_empty(), "a hub restarted on a full disk is not degraded");
    for name in ["ticker", "heap"] {
        let state = function_info(&hub, name)["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            ["running", "starting", "failed"].contains(&state.as_str()),
            "{name} is {state} after the restart"
        );
    }

    // Room again. A database that met a write error keeps it until it is
    // reopened: the hub then says so (one reopened on the full disk may
    // have met none, and the hub is healthy at once); after a restart it
    // is healthy and checkpoints work.
    eprintln!("full disk: restarted degraded, freeing space");
    std::fs::remove_file(&filler).unwrap();
    let reason = eventually("the hub to ask for a restart or be healthy", PATIENCE, || async {
        let reason = info(&hub)["degraded"].as_str().unwrap_or_default().to_owned();
        (reason.contains("restart") || reason.is_empty()).then_some(reason)
    })
    .await
    .unwrap();
    eprintln!("full disk: with room again the hub says {reason:?}");
    hub.restart().await.unwrap();
    eventually("the hub to be healthy", PATIENCE, || async {
        (info(&hub)["degraded"] == "").then_some(())
    })
    .await
    .unwrap();
    for name in ["heap", "ticker"] {
        eventually(
            &format!("a checkpoint of {name} after space was freed"),
            PATIENCE,
            || async { hub.ferry(&["checkpoint", name]).status.success().then_some(()) },
        )
        .await
        .unwrap();
    }
    // Output lost while the disk was full was written after the last
    // checkpoint: the restart replays it, so the log has no gap.
    let logs = eventually("ticks after the recovery", PATIENCE, || async {
        let logs = String::from_utf8_lossy(&hub.ferry(&["logs", "ticker"]).stdout).into_owned();
        (ticks_in(&logs).len() > 20).then_some(logs)
    })
    .await
    .unwrap();
    let ticks = ticks_in(&logs);
    assert_eq!(ticks, (1..=ticks.len() as u64).collect::<Vec<_>>(), "{logs}");
    drop(hub);
}

/// Writes a file of `bytes` on `disk`, so that the hub's own writes meet a
/// disk with a known room left; returns its path.
fn fill_leaving(disk: &Path, room: u64) -> PathBuf {
    let path = disk.join("filler");
    let bytes = available_bytes(disk).unwrap().saturating_sub(room);
    let block = vec![0x5a_u8; 1 << 20];
    let mut file = std::fs::File::create(&path).unwrap();
    let mut written = 0;
    while written < bytes {
        let len = (bytes - written).min(block.len() as u64) as usize;
        file.write_all(&block[..len]).unwrap();
        written += len as u64;
    }
    file.sync_all().unwrap();
    path
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn checkpoints_and_moves_that_would_fill_the_disk_are_refused_and_the_hub_stays_healthy() {
    let Some(disk) = SmallDisk::mount(DISK_MIB) else { return };
    let addresses = [free_loopback_address(), free_loopback_address()];
    let small = HubProcess::start(
        HubOptions::named("small")
            .data_dir(disk.path().join("hub"))
            .listen(addresses[0])
            .args(["--checkpoint-interval", "0s", "--peer", &addresses[1].to_string()]),
    )
    .await
    .unwrap();
    let roomy = HubProcess::start(
        HubOptions::named("roomy")
            .listen(addresses[1])
            .args(["--peer", &addresses[0].to_string()]),
    )
    .await
    .unwrap();
    wait_peer_up(&roomy, "small", PATIENCE).await.unwrap();
    // Two functions of 20 and 21 MiB whose memories share no chunk (the
    // heap's writes land by its size), on a disk with room for one
    // checkpoint and the 8 MiB the hub keeps free.
    let heap = guest("examples/bigheap.wasm");
    for (name, mib) in [("first", "20"), ("second", "21")] {
        expect_success(small.ferry(&["deploy", heap.to_str().unwrap(), "--name", name, "--", mib, "0"]));
    }
    let rounds_of = |hub: &HubProcess, name: &str| {
        let logs = String::from_utf8_lossy(&hub.ferry(&["logs", name]).stdout).into_owned();
        logs.lines().filter(|line| line.starts_with("round ")).count()
    };
    for name in ["first", "second"] {
        eventually(&format!("{name} to run a round"), PATIENCE, || async {
            (rounds_of(&small, name) > 0).then_some(())
        })
        .await
        .unwrap();
    }
    let filler = fill_leaving(disk.path(), 36 << 20);
    expect_success(small.ferry(&["checkpoint", "first"]));
    let refused = small.ferry(&["checkpoint", "second"]);
    assert_eq!(refused.status.code(), Some(9), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("no room"), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("free space on the disk"),
        "{}",
        stderr(&refused)
    );

    // Nothing the hub wrote met a full disk: both functions run on, their
    // output is stored, and the hub does not ask for a restart.
    for name in ["first", "second"] {
        let before = rounds_of(&small, name);
        eventually(
            &format!("{name} to run on with its output stored"),
            PATIENCE,
            || async {
                let info = function_info(&small, name);
                (info["state"] == "running"
                    && info["unstored_output_entries"].as_u64() == Some(0)
                    && rounds_of(&small, name) > before + 2)
                    .then_some(())
            },
        )
        .await
        .unwrap_or_else(|error| panic!("{error}: {}", function_info(&small, name)));
    }
    let degraded = info(&small)["degraded"].as_str().unwrap_or_default().to_owned();
    assert!(!degraded.contains("restart"), "{degraded}");

    // A move to the hub without room is refused at once, saying why (not
    // retried as if the link had failed); the function runs on where it was.
    expect_success(roomy.ferry(&["deploy", heap.to_str().unwrap(), "--name", "third", "--", "22", "0"]));
    let moved = roomy.ferry(&["migrate", "third", "--to", "small"]);
    assert_eq!(moved.status.code(), Some(9), "{}", stderr(&moved));
    assert!(stderr(&moved).contains("no room"), "{}", stderr(&moved));
    assert!(!stderr(&moved).contains("attempt 2"), "{}", stderr(&moved));
    assert_eq!(function_info(&roomy, "third")["state"], "running");

    // Room again, as the error advises, by removing a function (its
    // chunks share a pack with everything else on so small a disk): the
    // refused checkpoint succeeds, without a restart.
    expect_success(small.ferry(&["rm", "first"]));
    eventually("a checkpoint of second after first was removed", PATIENCE, || async {
        small.ferry(&["checkpoint", "second"]).status.success().then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}: {} bytes free", available_bytes(disk.path()).unwrap()));
    std::fs::remove_file(&filler).unwrap();
    eventually("the hub to be healthy", PATIENCE, || async {
        (info(&small)["degraded"] == "").then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}: {}", info(&small)));
}
