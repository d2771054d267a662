//! Cluster trust with real hubs: mutual TLS under the cluster's own CA,
//! credentials and their roles, join tokens, and strangers (a CLI or a hub
//! of another cluster) that get nothing.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use ferry_integration_tests::moves::{deploy_guest, migrate, migrate_refused};
use ferry_integration_tests::{HubOptions, HubProcess, eventually, expect_success, stdout_text};

const PATIENCE: Duration = Duration::from_secs(30);
/// README's exit code for "not allowed".
const NOT_ALLOWED: i32 = 11;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `ferry ARGS` against `hub` with `credential` instead of the hub's own.
fn ferry_with(hub: &HubProcess, credential: &Path, args: &[&str]) -> Output {
    hub.ferry_command()
        .env("FERRY_CREDENTIALS", credential)
        .args(args)
        .output()
        .unwrap()
}

fn refused(output: &Output, words: &[&str]) -> String {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(NOT_ALLOWED), "{text}");
    for word in words {
        assert!(text.contains(word), "{word:?} not in {text:?}");
    }
    text
}

async fn found_cluster() -> HubProcess {
    HubProcess::start(HubOptions::default().secure()).await.unwrap()
}

fn token(hub: &HubProcess, args: &[&str]) -> serde_json::Value {
    let mut command = vec!["cluster", "token", "create"];
    command.extend_from_slice(args);
    hub.ferry_json(&command).unwrap()
}

#[tokio::test]
async fn a_cli_without_a_valid_credential_of_the_cluster_is_refused() {
    let hub = found_cluster().await;
    let stranger = found_cluster().await;
    let scratch = tempfile::tempdir().unwrap();

    // No credential anywhere the CLI looks.
    let output = hub
        .ferry_command()
        .env_remove("FERRY_CREDENTIALS")
        .env("HOME", scratch.path())
        .env("XDG_CONFIG_HOME", scratch.path())
        .current_dir(scratch.path())
        .args(["ps"])
        .output()
        .unwrap();
    refused(&output, &["no credential", "--credentials"]);

    // The operator credential of another cluster.
    let output = ferry_with(&hub, &stranger.admin_credential(), &["ps"]);
    refused(&output, &["not of one cluster"]);

    // An expired one.
    let short = scratch.path().join("short.cred");
    expect_success(hub.ferry(&[
        "cluster",
        "credentials",
        "create",
        "brief",
        "--role",
        "operator",
        "--ttl",
        "1s",
        "-o",
        short.to_str().unwrap(),
    ]));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let output = ferry_with(&hub, &short, &["ps"]);
    refused(&output, &["expired"]);

    // A truncated file.
    let whole = std::fs::read_to_string(hub.admin_credential()).unwrap();
    let truncated = scratch.path().join("truncated.cred");
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    let output = ferry_with(&hub, &truncated, &["ps"]);
    refused(&output, &["truncated"]);

    // Plaintext against a TLS hub gets nowhere.
    let output = hub
        .ferry_command()
        .env_remove("FERRY_CREDENTIALS")
        .env("FERRY_INSECURE", "1")
        .args(["ps"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "a plaintext client was served");
    assert!(stderr(&output).contains("drop --insecure"), "{}", stderr(&output));
}

#[tokio::test]
async fn a_viewer_reads_and_cannot_act() {
    let hub = found_cluster().await;
    deploy_guest(&hub, "examples/ticker.wasm", "ticker", &["50"]);
    let scratch = tempfile::tempdir().unwrap();
    let viewer = scratch.path().join("viewer.cred");
    let created = hub
        .ferry_json(&[
            "cluster",
            "credentials",
            "create",
            "dashboard",
            "--role",
            "viewer",
            "-o",
            viewer.to_str().unwrap(),
        ])
        .unwrap();
    assert_eq!(created["role"], "viewer");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&viewer).unwrap().permissions().mode() & 0o777, 0o600);

    for args in [&["ps"][..], &["logs", "ticker"], &["peers"], &["info"], &["events"]] {
        let output = ferry_with(&hub, &viewer, args);
        assert!(output.status.success(), "viewer {args:?}: {}", stderr(&output));
    }
    let module = ferry_integration_tests::guest("examples/ticker.wasm");
    for args in [
        &["deploy", module.to_str().unwrap(), "--name", "other"][..],
        &["stop", "ticker"],
        &["migrate", "ticker", "--to", "anywhere"],
        &["cluster", "token", "create"],
        &[
            "cluster",
            "credentials",
            "create",
            "escalate",
            "--role",
            "operator",
            "-o",
            "/dev/null",
        ],
    ] {
        let output = ferry_with(&hub, &viewer, args);
        refused(&output, &["needs the operator role", "viewer"]);
    }
    assert_eq!(
        ferry_integration_tests::function_info(&hub, "ticker")["state"],
        "running",
        "a refused stop stopped the function"
    );
    // A role beyond what credentials give is refused too.
    let output = hub.ferry(&[
        "cluster",
        "credentials",
        "create",
        "x",
        "--role",
        "hub",
        "-o",
        "/dev/null",
    ]);
    assert!(stderr(&output).contains("join with a token"), "{}", stderr(&output));
}

#[tokio::test]
async fn a_token_joins_one_hub_and_its_members_move_functions_over_tls() {
    let founder = found_cluster().await;
    let issued = token(&founder, &["--uses", "1", "--ttl", "10m"]);
    let token_text = issued["token"].as_str().unwrap().to_owned();
    let member =
        HubProcess::start(HubOptions::default().joining(&token_text, founder.address(), founder.admin_credential()))
            .await
            .unwrap();
    let member_id = member.hub_id().unwrap();
    let founder_id = founder.hub_id().unwrap();
    // Each sees the other Up, over mutual TLS.
    for (observer, peer) in [(&founder, &member_id), (&member, &founder_id)] {
        eventually("the peers to see each other up", PATIENCE, || async {
            observer
                .peers()
                .ok()?
                .iter()
                .any(|listed| listed.id == *peer && listed.is_up())
                .then_some(())
        })
        .await
        .unwrap();
    }
    deploy_guest(&founder, "examples/bigheap.wasm", "heap", &["4", "0"]);
    let summary = migrate(&founder, "heap", &member_id).unwrap();
    assert!(summary["epoch"].as_u64() > Some(0), "{summary}");
    eventually("heap to run on the member", PATIENCE, || async {
        (ferry_integration_tests::function_info(&member, "heap")["state"] == "running").then_some(())
    })
    .await
    .unwrap();

    // Used up: a second hub with the same token does not start.
    let again =
        HubProcess::start(HubOptions::default().joining(&token_text, founder.address(), founder.admin_credential()))
            .await
            .err()
            .expect("a used-up token let a second hub join")
            .to_string();
    assert!(again.contains("unknown, revoked or used up"), "{again}");

    // Revoked before use.
    let revoked = token(&founder, &[]);
    expect_success(founder.ferry(&["cluster", "token", "rm", revoked["id"].as_str().unwrap()]));
    let refused = HubProcess::start(HubOptions::default().joining(
        revoked["token"].as_str().unwrap(),
        founder.address(),
        founder.admin_credential(),
    ))
    .await
    .err()
    .expect("a revoked token let a hub join")
    .to_string();
    assert!(refused.contains("unknown, revoked or used up"), "{refused}");

    // Expired.
    let brief = token(&founder, &["--ttl", "1s"]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = HubProcess::start(HubOptions::default().joining(
        brief["token"].as_str().unwrap(),
        founder.address(),
        founder.admin_credential(),
    ))
    .await
    .err()
    .expect("an expired token let a hub join")
    .to_string();
    assert!(expired.contains("expired"), "{expired}");

    // Garbage.
    let garbage = HubProcess::start(HubOptions::default().joining(
        "ferry-join.nonsense",
        founder.address(),
        founder.admin_credential(),
    ))
    .await
    .err()
    .expect("a garbage token was taken")
    .to_string();
    assert!(garbage.contains("not a join token"), "{garbage}");
}

/// A token whose CA fingerprint is not the server's: the joiner stops at
/// the handshake, and its secret is neither redeemed by a real member nor
/// seen by a listener that records everything it receives.
#[tokio::test]
async fn a_token_for_another_ca_never_reveals_its_secret() {
    let founder = found_cluster().await;
    let stranger = found_cluster().await;
    let issued = token(&stranger, &["--uses", "1"]);
    let token_text = issued["token"].as_str().unwrap().to_owned();
    let secret = token_text.rsplit('.').next().unwrap().to_owned();

    // A member of another cluster: refused before anything is sent.
    let refused =
        HubProcess::start(HubOptions::default().joining(&token_text, founder.address(), founder.admin_credential()))
            .await
            .err()
            .expect("joined through a hub of another CA")
            .to_string();
    assert!(
        refused.contains("not a member of the cluster the token names"),
        "{refused}"
    );

    // A listener that records every byte.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let recorder = std::thread::spawn(move || {
        let mut received = Vec::new();
        listener.set_nonblocking(false).unwrap();
        if let Ok((mut stream, _)) = listener.accept() {
            stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut buffer = [0u8; 4096];
            while let Ok(read) = stream.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                received.extend_from_slice(&buffer[..read]);
            }
        }
        received
    });
    let refused = HubProcess::start(HubOptions::default().joining(&token_text, address, founder.admin_credential()))
        .await
        .err()
        .expect("joined through a recording listener")
        .to_string();
    assert!(refused.contains("cannot join"), "{refused}");
    let received = recorder.join().unwrap();
    assert!(!received.is_empty(), "the joiner never connected to the recorder");
    let text = String::from_utf8_lossy(&received);
    assert!(!text.contains(&secret), "the secret reached a stranger");

    // The real token is untouched on its own cluster.
    let listed = stranger.ferry_json(&["cluster", "token", "ls"]).unwrap();
    assert_eq!(listed[0]["uses_left"], 1, "{listed}");
}

#[tokio::test]
async fn a_hub_of_another_cluster_is_never_up_and_receives_nothing() {
    let member = found_cluster().await;
    let stranger = HubProcess::start(
        HubOptions::default()
            .secure()
            .args(["--peer", &member.address().to_string()]),
    )
    .await
    .unwrap();
    deploy_guest(&member, "examples/ticker.wasm", "ticker", &["50"]);
    deploy_guest(&stranger, "examples/ticker.wasm", "intruder", &["50"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stranger_id = stranger.hub_id().unwrap();
    let member_peers = stdout_text(&member.ferry(&["peers", "--json"]));
    assert!(
        member
            .peers()
            .unwrap()
            .iter()
            .all(|peer| !(peer.id == stranger_id && peer.is_up())),
        "{member_peers}"
    );
    assert!(
        stranger.peers().unwrap().iter().all(|peer| !peer.is_up()),
        "{}",
        stdout_text(&stranger.ferry(&["peers", "--json"]))
    );
    // The stranger probed the member with its certificate and was refused
    // in the handshake: the member never lists it, never moves to it, and
    // the stranger cannot move into the member.
    let (_, reason) = migrate_refused(&member, "ticker", &stranger_id);
    assert!(reason.contains(&stranger_id), "{reason}");
    let member_id = member.hub_id().unwrap();
    let (_, reason) = migrate_refused(&stranger, "intruder", &member_id);
    assert!(!reason.is_empty());
    assert!(
        ferry_integration_tests::function_info_or_null(&member, "intruder").is_null(),
        "the member took a function from a stranger"
    );
    assert!(
        ferry_integration_tests::function_info_or_null(&stranger, "ticker").is_null(),
        "the stranger knows the function"
    );
    assert_eq!(
        ferry_integration_tests::function_info(&member, "ticker")["state"],
        "running"
    );
}
