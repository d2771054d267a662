//! The hub's web page in a real headless Chromium (Debian's, installed by
//! `scripts/install-deps`), driven over the DevTools protocol by
//! `python/drive_page.py`: on a three-hub LAN of network namespaces it
//! lists every hub and function, a move picked in its menu happens, and a
//! move started elsewhere shows.
//! Chromium runs inside the first hub's namespace: nothing it sends can
//! leave the LAN the test made.

#![cfg(target_os = "linux")]

use std::time::Duration;

use ferry_integration_tests::corpus::venv_python;
use ferry_integration_tests::moves::{deploy_guest, running_on};
use ferry_integration_tests::{HubOptions, HubProcess, Lan, all_pairs, netns_or_skip, wait_for_peer_states};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(120);

#[tokio::test]
async fn the_web_page_lists_a_three_hub_lan_and_moves_a_function_picked_in_its_menu() {
    if !netns_or_skip("the_web_page_lists_a_three_hub_lan") {
        return;
    }
    let lan = Lan::new(3).unwrap();
    let mut hubs = Vec::new();
    for index in 0..3 {
        // The browser reaches hub-0 from its namespace's LAN address, not
        // from loopback: an insecure hub serves HTTP there only if told to.
        let options = HubOptions::named(format!("hub-{index}")).args(["--cluster-id", "web-page", "--http-remote"]);
        hubs.push(lan.start_hub(index, options).await.unwrap());
    }
    let ids: Vec<String> = hubs.iter().map(|hub| hub.hub_id().unwrap()).collect();
    let observers: Vec<&HubProcess> = hubs.iter().collect();
    wait_for_peer_states(&observers, &all_pairs(&ids), "up", PATIENCE).unwrap();
    deploy_guest(&hubs[1], "examples/ticker.wasm", "ticker", &["100"]);
    deploy_guest(&hubs[0], "examples/echo.wasm", "echo", &[]);

    let screenshot = tempfile::Builder::new().suffix(".png").tempfile().unwrap();
    let python = venv_python().expect("the venv of scripts/install-deps");
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/drive_page.py");
    let output = lan
        .command(0, python)
        .arg(script)
        .arg(format!("http://{}/", lan.hub_address(0)))
        .args(["ticker", "hub-2", "3"])
        .arg(screenshot.path())
        .args(["echo", "hub-1"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "drive_page.py failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        hubs[0].agent_log()
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    let listed_hubs: Vec<&str> = seen["hubs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hub| hub.as_str().unwrap())
        .collect();
    for name in ["hub-0", "hub-1", "hub-2"] {
        assert!(listed_hubs.contains(&name), "{name} not on the page: {seen}");
    }
    let functions = seen["functions"].as_array().unwrap();
    let row = |name: &str| {
        functions
            .iter()
            .find(|row| row[0] == name)
            .unwrap_or_else(|| panic!("{name} not on the page: {seen}"))
            .clone()
    };
    assert_eq!(row("echo")[2], "hub-0", "{seen}");
    assert_eq!(row("ticker")[1], "running", "{seen}");
    assert!(
        seen["moved"]
            .as_str()
            .unwrap()
            .starts_with("moved ticker from hub-1 to hub-2"),
        "{seen}"
    );
    assert_eq!(seen["hub_after"], "hub-2");
    // A move the page did not start shows when it is done, with its downtime.
    assert!(
        seen["moved_elsewhere"]
            .as_str()
            .unwrap()
            .starts_with("moved echo from hub-0 to hub-1: downtime"),
        "{seen}"
    );
    assert_eq!(running_on(&observers, "ticker"), vec![2]);
    let png = std::fs::read(screenshot.path()).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is no PNG");
    // `FERRY_PAGE_SCREENSHOT=docs/web-page.png` keeps it (README's picture).
    if let Some(keep) = std::env::var_os("FERRY_PAGE_SCREENSHOT") {
        let keep = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(keep);
        std::fs::write(keep, png).unwrap();
    }
}
