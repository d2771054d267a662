//! The `ferry` binary's behaviour without a hub: usage and connection errors.
//! (Also makes `cargo test` build the binary the integration tests run.)

use std::process::Command;

/// `ferry` where no credential can be found: an empty home and working
/// directory, and none of the CLI's variables from this environment.
fn bare_ferry() -> (Command, tempfile::TempDir) {
    let scratch = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command
        .current_dir(scratch.path())
        .env("HOME", scratch.path())
        .env("XDG_CONFIG_HOME", scratch.path())
        .env_remove("FERRY_HUB")
        .env_remove("FERRY_CREDENTIALS")
        .env_remove("FERRY_INSECURE");
    (command, scratch)
}

fn ferry(args: &[&str]) -> std::process::Output {
    let (mut command, _scratch) = bare_ferry();
    command.args(args).output().expect("running ferry")
}

#[test]
fn a_client_without_a_credential_is_refused_with_exit_code_11_and_says_where_it_looked() {
    let output = ferry(&["--hub", "127.0.0.1:1", "ps"]);
    assert_eq!(output.status.code(), Some(11));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("no credential"), "{message}");
    assert!(message.contains("ferry-data/admin.cred"), "{message}");
}

#[test]
fn a_hub_nobody_listens_on_gives_exit_code_5_and_says_what_to_do() {
    // Port 1 on loopback: nothing listens there.
    let output = ferry(&["--insecure", "--hub", "127.0.0.1:1", "ps"]);
    assert_eq!(output.status.code(), Some(5));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("cannot reach hub at http://127.0.0.1:1"), "{message}");
    assert!(message.contains("FERRY_HUB"), "{message}");
}

#[test]
fn the_hub_address_can_come_from_the_environment() {
    let (mut command, _scratch) = bare_ferry();
    let output = command
        .args(["ps"])
        .env("FERRY_HUB", "127.0.0.1:1")
        .env("FERRY_INSECURE", "true")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5));
}

#[test]
fn a_malformed_hub_address_is_a_usage_error() {
    let output = ferry(&["--hub", "http://[::1", "ps"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_bad_env_pair_is_a_usage_error_before_contacting_the_hub() {
    let module = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/echo.wasm");
    let output = ferry(&[
        "--hub",
        "127.0.0.1:1",
        "deploy",
        module,
        "--name",
        "e",
        "--env",
        "NOEQUALS",
    ]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_missing_module_file_is_reported_with_its_path() {
    let output = ferry(&["--hub", "127.0.0.1:1", "deploy", "/nonexistent/x.wasm", "--name", "x"]);
    assert_eq!(output.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/x.wasm"));
}

#[test]
fn an_unknown_key_in_the_agent_config_file_stops_the_agent_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.toml");
    std::fs::write(&config, "colour = \"blue\"\n").unwrap();
    let output = ferry(&["agent", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("is invalid") && message.contains("colour"),
        "{message}"
    );
}
