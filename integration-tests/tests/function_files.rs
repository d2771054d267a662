//! Files on real `ferry agent`s: a function's private volume and the hub
//! resources it mounts, deployed from a manifest or flags. The guests are
//! C programs (`integration-tests/guests/fs_*.c`, SQLite in
//! `integration-tests/corpus/sqlite_file.c`) that exercise every WASI
//! filesystem call, try every way out of their directory, and fill their
//! quota; resources, placement and messaging rules are checked on the
//! hubs' answers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry_integration_tests::moves::loopback_pair_with;
use ferry_integration_tests::{
    HubOptions, HubProcess, eventually, expect_success as ok, guest, stdout_text, ticks_in, wait_ended,
};

const PATIENCE: Duration = Duration::from_secs(120);

/// A directory a hub offers as `samples` (read-only), holding `hello.txt`
/// and an empty directory, and the config file that offers it.
struct Samples {
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn samples(access: &str) -> Samples {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tree")).unwrap();
    std::fs::create_dir(dir.path().join("tree/empty")).unwrap();
    std::fs::write(dir.path().join("tree/hello.txt"), b"hello\n").unwrap();
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "[resources.samples]\npath = {:?}\naccess = {access:?}\n",
            dir.path().join("tree").display().to_string()
        ),
    )
    .unwrap();
    Samples { dir, config }
}

async fn hub_offering(samples: &Samples) -> HubProcess {
    HubProcess::start(HubOptions::default().args(["--config", samples.config.to_str().unwrap()]))
        .await
        .unwrap()
}

fn logs(hub: &HubProcess, name: &str) -> String {
    ok(hub.ferry(&["logs", name]))
}

/// Waits for `name` to end and returns its output, after checking its exit code.
async fn finished(hub: &HubProcess, name: &str, exit_code: i64) -> String {
    let info = wait_ended(hub, name, PATIENCE).await.unwrap();
    let output = logs(hub, name);
    assert_eq!(
        (info["state"].as_str(), info["exit_code"].as_i64()),
        (Some("exited"), Some(exit_code)),
        "{name}: {info}\n{output}\n{}",
        stdout_text(&hub.ferry(&["logs", name, "--events"]))
    );
    output
}

#[tokio::test]
async fn every_filesystem_call_works_in_a_volume_and_every_change_is_refused_in_a_read_only_mount() {
    let samples = samples("ro");
    let hub = hub_offering(&samples).await;
    let info = hub.info().unwrap();
    assert_eq!(info["resources"][0]["name"], "samples", "{info}");
    assert_eq!(info["resources"][0]["access"], "ro", "{info}");
    // Deployed from a manifest, the module named relative to it.
    let manifest_dir = tempfile::tempdir().unwrap();
    std::fs::copy(guest("guests/fs_calls.wasm"), manifest_dir.path().join("fs_calls.wasm")).unwrap();
    let manifest = manifest_dir.path().join("fn.toml");
    std::fs::write(
        &manifest,
        "name = \"calls\"\nmodule = \"fs_calls.wasm\"\nargs = [\"/data\", \"/samples\"]\n\
         [volume]\npath = \"/data\"\nquota = \"64MiB\"\n\
         [[mount]]\nresource = \"samples\"\npath = \"/samples\"\naccess = \"ro\"\n",
    )
    .unwrap();
    ok(hub.ferry(&["deploy", "-f", manifest.to_str().unwrap()]));
    let output = finished(&hub, "calls", 0).await;
    assert!(
        output.contains("preopen fd 3: /data\npreopen fd 4: /samples\n"),
        "{output}"
    );
    assert!(output.contains("failures=0\nfs_calls done"), "{output}");
    for refused in [
        "ro open for write: errno 69",
        "ro open for read-write: errno 69",
        "ro O_TRUNC: errno 69",
    ] {
        assert!(output.contains(refused), "{refused}: {output}");
    }
    assert!(!output.contains("ALLOWED"), "{output}");
    assert_eq!(
        std::fs::read(samples.dir.path().join("tree/hello.txt")).unwrap(),
        b"hello\n"
    );
    let entries: Vec<_> = std::fs::read_dir(samples.dir.path().join("tree")).unwrap().collect();
    assert_eq!(entries.len(), 2, "nothing was added to the read-only resource");
}

/// Flips `swap` between a regular file and a symlink to `outside` until
/// `stop` is set.
fn flip(swap: PathBuf, outside: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let (link, file) = (swap.with_extension("link"), swap.with_extension("file"));
        let mut flips = 0;
        while !stop.load(Ordering::Relaxed) {
            let _ = std::fs::remove_file(&link);
            if std::os::unix::fs::symlink(&outside, &link).is_ok() && std::fs::rename(&link, &swap).is_ok() {
                flips += 1;
            }
            if std::fs::write(&file, b"inside\n").is_ok() && std::fs::rename(&file, &swap).is_ok() {
                flips += 1;
            }
        }
        flips
    })
}

#[tokio::test]
async fn no_path_leads_out_of_the_volume_even_while_a_symlink_is_swapped_under_the_call() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, b"OUTSIDE-SECRET\n").unwrap();
    // The volume, laid out before the deploy so the swap exists from the start.
    let volume = hub.data_dir().join("functions/escape/volume");
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::write(volume.join("swap"), b"inside\n").unwrap();
    // Absolute links out, as a hub operator (not the guest) might leave them.
    std::os::unix::fs::symlink(outside.path(), volume.join("planted_dir")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = flip(volume.join("swap"), secret.clone(), Arc::clone(&stop));
    let env = format!("FERRY_OUTSIDE={}", secret.display());
    let module = guest("guests/fs_escape.wasm");
    ok(hub.ferry(&[
        "deploy",
        module.to_str().unwrap(),
        "--name",
        "escape",
        "--volume",
        "/data",
        "--env",
        &env,
        "--",
        "/data",
        "5000",
    ]));
    let output = finished(&hub, "escape", 0).await;
    stop.store(true, Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    eprintln!("{output}\n{flips} flips");
    assert!(output.contains("escapes=0"), "{output}");
    assert!(!output.contains("ESCAPED"), "{output}");
    assert!(output.contains("inside symlink: ok"), "{output}");
    let swap = output.lines().find(|line| line.starts_with("swap: ")).unwrap();
    assert!(swap.ends_with("escaped 0"), "{swap}");
    // Nothing outside was touched: the one file, as it was.
    let names: Vec<_> = std::fs::read_dir(outside.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, ["secret"], "files appeared next to the secret");
    assert_eq!(std::fs::read(&secret).unwrap(), b"OUTSIDE-SECRET\n");
}

#[tokio::test]
async fn a_full_volume_answers_enospc_and_the_hub_and_other_functions_go_on() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    let ticker = guest("examples/ticker.wasm");
    ok(hub.ferry(&["deploy", ticker.to_str().unwrap(), "--name", "ticker", "--", "100"]));
    let module = guest("guests/fs_quota.wasm");
    ok(hub.ferry(&[
        "deploy",
        module.to_str().unwrap(),
        "--name",
        "filler",
        "--volume",
        "/data:1MiB",
        "--",
        "/data",
        "65536",
    ]));
    let output = finished(&hub, "filler", 0).await;
    assert!(output.contains("wrote 1048576 bytes then errno 51\n"), "{output}");
    assert!(output.contains("after delete: ok\nfs_quota done"), "{output}");
    let before = ticks_in(&logs(&hub, "ticker")).len();
    eventually("the ticker to tick on", PATIENCE, || async {
        let ticks = ticks_in(&stdout_text(&hub.ferry(&["logs", "ticker"])));
        assert_eq!(ticks, (1..=ticks.len() as u64).collect::<Vec<_>>(), "ticks in order");
        (ticks.len() > before + 2).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        hub.info().unwrap()["degraded"],
        "",
        "the hub's own disk was never filled"
    );
}

#[tokio::test]
async fn a_redeploy_whose_quota_is_below_what_its_kept_volume_holds_is_refused_and_changes_nothing() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    let writer = guest("guests/volume_writer.wasm");
    let deploy = |quota: &str| {
        let volume = format!("/data:{quota}");
        hub.ferry(&[
            "deploy",
            writer.to_str().unwrap(),
            "--name",
            "writer",
            "--replace",
            "--volume",
            volume.as_str(),
            "--",
            "/data",
            "1",
            "1",
            "64",
            "7",
            "1",
            "10",
        ])
    };
    ok(deploy("2MiB"));
    let output = finished(&hub, "writer", 0).await;
    assert!(output.contains("volume_writer done"), "{output}");
    let refused = deploy("512KiB");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("volume.quota: the volume that \"writer\" keeps across a redeploy holds 1.0 MiB, more than the new quota of 512.0 KiB"),
        "{stderr}"
    );
    // The function is as it was: ended, its output and its files kept.
    let info = hub.ferry_json(&["ps", "writer"]).unwrap();
    assert_eq!(
        (&info[0]["state"], &info[0]["starts"]),
        (&"exited".into(), &1.into()),
        "{info}"
    );
    assert_eq!(logs(&hub, "writer"), output);
    // `ps NAME` shows those it finds and names the one it does not.
    let listed = hub.ferry(&["ps", "writer", "nope"]);
    let (shown, stderr) = (stdout_text(&listed), String::from_utf8_lossy(&listed.stderr));
    assert_eq!(listed.status.code(), Some(3), "{stderr}");
    assert!(
        shown.contains("writer") && stderr.contains("function \"nope\" not found"),
        "{shown}{stderr}"
    );
    let file = hub.data_dir().join("functions/writer/volume/f0");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 1 << 20);
    ok(deploy("2MiB"));
}

/// `(count(*), sum(k), integrity_check)` of the SQLite file, read on the host.
fn host_query(database: &Path) -> String {
    let script = "import sqlite3, sys\n\
                  db = sqlite3.connect(sys.argv[1])\n\
                  count, total = db.execute('SELECT count(*), coalesce(sum(k), 0) FROM t').fetchone()\n\
                  check = db.execute('PRAGMA integrity_check').fetchone()[0]\n\
                  print(f'count={count} sum_k={total} integrity={check}')\n";
    let output = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(database)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn sqlite_keeps_its_database_in_its_volume_and_the_file_checks_out_on_the_host() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    let module = guest("integration-tests/corpus/sqlite_file.wasm");
    ok(hub.ferry(&[
        "deploy",
        module.to_str().unwrap(),
        "--name",
        "db",
        "--volume",
        "/data:64MiB",
        "--",
        "/data/db.sqlite",
        "20000",
        "500",
    ]));
    let output = finished(&hub, "db", 0).await;
    assert!(output.contains("batch 40 rows=20000\ncount=20000\n"), "{output}");
    assert!(output.contains("integrity_check: ok\n"), "{output}");
    let sum_k = output.lines().find(|line| line.starts_with("sum_k=")).unwrap();
    let database = hub.data_dir().join("functions/db/volume/db.sqlite");
    assert_eq!(
        host_query(&database),
        format!("count=20000 {sum_k} integrity=ok"),
        "the file the guest wrote"
    );
    // A redeploy keeps the volume (the program refuses to start over on it);
    // a removal deletes it.
    ok(hub.ferry(&[
        "deploy",
        module.to_str().unwrap(),
        "--name",
        "db",
        "--replace",
        "--volume",
        "/data:64MiB",
        "--",
        "/data/db.sqlite",
        "20000",
    ]));
    let output = finished(&hub, "db", 3).await;
    assert!(output.contains("database already holds 20000 rows"), "{output}");
    ok(hub.ferry(&["rm", "db"]));
    assert!(
        !hub.data_dir().join("functions/db").exists(),
        "the volume outlived the function"
    );
}

/// `ferry deploy -f` of a manifest holding `body` (the module line is
/// added): the failure's exit code and stderr.
fn deploy_manifest_refused(hub: &HubProcess, body: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("fn.toml");
    let module = guest("examples/ticker.wasm");
    std::fs::write(
        &manifest,
        format!("module = {:?}\n{body}", module.display().to_string()),
    )
    .unwrap();
    let output = hub.ferry(&["deploy", "-f", manifest.to_str().unwrap()]);
    assert!(!output.status.success(), "{body} was deployed");
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn bad_manifests_are_refused_with_the_field_named_and_nothing_is_deployed() {
    let samples = samples("ro");
    let hub = hub_offering(&samples).await;
    let cases = [
        ("name = \"a\"\nvolumes = 1\n", "volumes"),
        ("name = \"a\"\n[volume]\npath = \"/data\"\nquota = \"lots\"\n", "quota"),
        ("name = \"a\"\n[volume]\npath = \"data\"\n", "volume.path"),
        ("name = \"a\"\n[volume]\npath = \"/data/../x\"\n", "volume.path"),
        (
            "name = \"a\"\n[[mount]]\nresource = \"nope\"\npath = \"/n\"\n",
            "mount[0].resource",
        ),
        (
            "name = \"a\"\n[[mount]]\nresource = \"samples\"\npath = \"/s\"\naccess = \"rw\"\n",
            "mount[0].access",
        ),
        (
            "name = \"a\"\n[[mount]]\nresource = \"samples\"\npath = \"/s\"\nmode = \"ro\"\n",
            "mode",
        ),
        (
            "name = \"a\"\n[volume]\npath = \"/data\"\n[[mount]]\nresource = \"samples\"\npath = \"/data/s\"\n",
            "mount[0].path",
        ),
        (
            "name = \"a\"\n[messaging]\nsend-to = [\"no spaces\"]\n",
            "messaging.send-to[0]",
        ),
        ("name = \"a\"\n[messaging]\nsend_to = [\"b\"]\n", "send_to"),
    ];
    for (body, field) in cases {
        let (code, stderr) = deploy_manifest_refused(&hub, body);
        assert_eq!(code, 4, "{body}: {stderr}");
        assert!(stderr.contains(field), "{body}: {stderr} does not name {field}");
    }
    let functions = hub.ferry_json(&["ps"]).unwrap();
    assert_eq!(functions.as_array().map(Vec::len), Some(0), "{functions}");
}

#[tokio::test]
async fn a_function_runs_and_moves_only_where_its_resources_are_and_keeps_running_when_refused() {
    let samples = samples("ro");
    let config = samples.config.to_str().unwrap();
    let hubs = loopback_pair_with(&["--config", config], &[], PATIENCE).await.unwrap();
    let ticker = guest("examples/ticker.wasm");
    let ticker = ticker.to_str().unwrap();
    let deploy = [
        "deploy",
        ticker,
        "--name",
        "tick",
        "--mount",
        "samples:/samples",
        "--",
        "100",
    ];
    // hub-1 offers no resource: the deploy is refused there.
    let refused = hubs[1].ferry(&deploy);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("mount[0].resource") && stderr.contains("offers no resource"),
        "{stderr}"
    );
    ok(hubs[0].ferry(&deploy));
    let ticks = |hub: &HubProcess| ticks_in(&logs(hub, "tick")).len();
    eventually("tick to tick", PATIENCE, || async {
        (ticks(&hubs[0]) > 1).then_some(())
    })
    .await
    .unwrap();
    let (code, stderr) = ferry_integration_tests::moves::migrate_refused(&hubs[0], "tick", "hub-1");
    assert_eq!(code, 7, "{stderr}");
    assert!(stderr.contains("offers no resource \"samples\""), "{stderr}");
    // A checkpoint of it is taken; what it mounts belongs to the hub and
    // is never copied into it.
    let checkpoint = hubs[0].ferry_json(&["checkpoint", "tick"]).unwrap();
    assert_eq!(checkpoint["volume_bytes"].as_u64().unwrap_or(0), 0, "{checkpoint}");
    assert_eq!(checkpoint["volume_bytes_read"].as_u64().unwrap_or(0), 0, "{checkpoint}");
    let before = ticks(&hubs[0]);
    eventually("tick to tick on hub-0", PATIENCE, || async {
        (ticks(&hubs[0]) > before + 2).then_some(())
    })
    .await
    .unwrap();
    let info = hubs[0].ferry_json(&["ps"]).unwrap();
    assert_eq!(info[0]["state"], "running", "{info}");
    // A drain of its hub names it at once as one no peer can take, and
    // does not wait for a peer to have room for it.
    let summary = ok(hubs[0].ferry(&["drain", "hub-0", "--json"]));
    let summary: serde_json::Value = serde_json::from_str(summary.lines().last().unwrap()).unwrap();
    assert_eq!(summary["left"], serde_json::json!([]), "{summary}");
    assert_eq!(
        summary["stuck"],
        serde_json::json!(["tick: no peer offers resource \"samples\", which the function mounts"]),
        "{summary}"
    );
    ok(hubs[0].ferry(&["undrain", "hub-0"]));
    assert_eq!(hubs[0].ferry_json(&["ps"]).unwrap()[0]["state"], "running");
}

#[tokio::test]
async fn a_move_to_a_hub_missing_a_file_the_function_holds_open_is_refused_and_it_runs_on() {
    // Both hubs offer `samples`; only hub-0's holds hello.txt.
    let (here, there) = (samples("ro"), samples("ro"));
    std::fs::remove_file(there.dir.path().join("tree/hello.txt")).unwrap();
    let (here_config, there_config) = (here.config.to_str().unwrap(), there.config.to_str().unwrap());
    let hubs = loopback_pair_with(&["--config", here_config], &["--config", there_config], PATIENCE)
        .await
        .unwrap();
    let holds_open = guest("guests/holds_open.wasm");
    ok(hubs[0].ferry(&[
        "deploy",
        holds_open.to_str().unwrap(),
        "--name",
        "reader",
        "--mount",
        "samples:/samples",
        "--",
        "/samples/hello.txt",
        "50",
    ]));
    let ticks = |hub: &HubProcess| ticks_in(&logs(hub, "reader"));
    eventually("reader to tick", PATIENCE, || async {
        (ticks(&hubs[0]).len() > 2).then_some(())
    })
    .await
    .unwrap();
    let (code, stderr) = ferry_integration_tests::moves::migrate_refused(&hubs[0], "reader", "hub-1");
    assert_eq!(code, 7, "{stderr}");
    assert!(
        stderr.contains("the function continues on hub hub-0")
            && stderr.contains("cannot run on hub hub-1")
            && stderr.contains("\"/samples/hello.txt\"")
            && stderr.contains("No such file"),
        "{stderr}"
    );
    // It goes on where it was, reading through the same descriptor; the
    // hub that refused it keeps nothing of it.
    let before = ticks(&hubs[0]).len();
    eventually("reader to tick on hub-0", PATIENCE, || async {
        (ticks(&hubs[0]).len() > before + 2).then_some(())
    })
    .await
    .unwrap();
    let info = hubs[0].ferry_json(&["ps"]).unwrap();
    assert_eq!(
        (&info[0]["state"], &info[0]["hub_name"]),
        (&"running".into(), &"hub-0".into()),
        "{info}"
    );
    let output = logs(&hubs[0], "reader");
    assert!(
        output
            .lines()
            .filter(|line| line.starts_with("tick "))
            .all(|line| line.ends_with(" hello")),
        "{output}"
    );
    let seen = ticks(&hubs[0]);
    assert_eq!(seen, (1..=seen.len() as u64).collect::<Vec<_>>(), "{output}");
    let there_functions = hubs[1].data_dir().join("functions");
    let left: Vec<_> = std::fs::read_dir(&there_functions).map_or_else(|_| Vec::new(), |dir| dir.flatten().collect());
    assert!(left.is_empty(), "{left:?}");
    // `ps --all` through the hub that refused it lists it where it runs.
    let everywhere = hubs[1].ferry_json(&["ps", "--all"]).unwrap();
    let listed: Vec<_> = everywhere
        .as_array()
        .unwrap()
        .iter()
        .map(|function| {
            (
                function["name"].as_str(),
                function["hub_name"].as_str(),
                function["state"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [(Some("reader"), Some("hub-0"), Some("running"))],
        "{everywhere}"
    );
    // With the file there too, the same move goes through.
    std::fs::write(there.dir.path().join("tree/hello.txt"), b"hello\n").unwrap();
    ok(hubs[0].ferry(&["migrate", "reader", "--to", "hub-1"]));
    let before = ticks(&hubs[1]).len();
    eventually("reader to tick on hub-1", PATIENCE, || async {
        (ticks(&hubs[1]).len() > before + 2).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn messaging_rules_deny_what_they_do_not_name_with_an_error_and_an_event() {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    let echo = guest("examples/echo.wasm");
    let sender = guest("guests/sender.wasm");
    let (echo, sender) = (echo.to_str().unwrap(), sender.to_str().unwrap());
    ok(hub.ferry(&["deploy", echo, "--name", "echo", "--invoked-by", "gateway"]));
    for name in ["gateway", "intruder"] {
        ok(hub.ferry(&["deploy", sender, "--name", name, "--", "echo", "2"]));
    }
    ok(hub.ferry(&[
        "deploy",
        sender,
        "--name",
        "chatty",
        "--send-to",
        "nobody",
        "--",
        "echo",
        "1",
    ]));
    let gateway = finished(&hub, "gateway", 0).await;
    assert!(
        gateway.contains("send 1 to echo = 0\nsend 2 to echo = 0\n"),
        "{gateway}"
    );
    let intruder = finished(&hub, "intruder", 0).await;
    assert!(
        intruder.contains("send 1 to echo = -5\nsend 2 to echo = -5\n"),
        "{intruder}"
    );
    let chatty = finished(&hub, "chatty", 0).await;
    assert!(chatty.contains("send 1 to echo = -5\n"), "{chatty}");
    // A client is not one of the named functions either.
    let invoked = hub.ferry(&["invoke", "echo", "--data", "hi"]);
    let stderr = String::from_utf8_lossy(&invoked.stderr);
    assert_eq!(invoked.status.code(), Some(11), "{stderr}");
    assert!(stderr.contains("messaging.invoked-by"), "{stderr}");
    let events = ok(hub.ferry(&["logs", "echo", "--events"]));
    assert!(events.contains("message from intruder denied"), "{events}");
    assert!(events.contains("invocation denied"), "{events}");
    let chatty_events = ok(hub.ferry(&["logs", "chatty", "--events"]));
    assert!(chatty_events.contains("messaging.send-to"), "{chatty_events}");
    // echo got exactly the gateway's two messages.
    assert_eq!(logs(&hub, "echo").matches("got ").count(), 2, "{}", logs(&hub, "echo"));
}

#[tokio::test]
async fn a_function_with_files_resumes_with_its_files_after_a_hub_restart_or_a_kill() {
    let mut hub = HubProcess::start(HubOptions::default()).await.unwrap();
    let ticker = guest("examples/ticker.wasm");
    ok(hub.ferry(&[
        "deploy",
        ticker.to_str().unwrap(),
        "--name",
        "t",
        "--volume",
        "/data",
        "--",
        "100",
    ]));
    let marker = hub.data_dir().join("functions/t/volume/kept.txt");
    std::fs::write(&marker, b"kept\n").unwrap();
    for restart in ["terminate", "kill -9"] {
        let before = eventually("t to run", PATIENCE, || async {
            let info = ferry_integration_tests::function_info_or_null(&hub, "t");
            (info["state"] == "running").then(|| info["started_unix_ms"].as_u64().unwrap_or(0))
        })
        .await
        .unwrap();
        match restart {
            "terminate" => hub.terminate().map(drop).unwrap(),
            _ => hub.kill().unwrap(),
        }
        hub.restart().await.unwrap();
        // (A kill may take the last start's record with it: the start
        // count says less than the start time.)
        let info = eventually(&format!("t to run again after {restart}"), PATIENCE, || async {
            let info = ferry_integration_tests::function_info_or_null(&hub, "t");
            let started = info["started_unix_ms"].as_u64().unwrap_or(0);
            (info["state"] == "running" && started > before).then_some(info)
        })
        .await
        .unwrap();
        eprintln!("after {restart}: {info}");
        assert_eq!(
            std::fs::read(&marker).unwrap(),
            b"kept\n",
            "the volume survived {restart}"
        );
    }
}
