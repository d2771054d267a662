//! Test harness: real `ferry agent` processes with temporary data
//! directories, the `ferry` CLI against them, and helpers to wait for a
//! condition without fixed sleeps.
//!
//! Every hub a test starts here listens on loopback only and is killed when
//! its [`HubProcess`] is dropped, also when the test fails.

mod hub;

pub use hub::{HubOptions, HubProcess, ferry_binary};

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// Path of a guest module shipped in the repository, e.g. `examples/ticker.wasm`
/// or `guests/trap.wasm`.
pub fn guest(relative: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = match relative.split_once('/') {
        Some(("examples", file)) => root.join("deploy/examples").join(file),
        Some(("guests", file)) => root.join("integration-tests/guests").join(file),
        _ => root.join(relative),
    };
    assert!(
        path.exists(),
        "guest module {} is missing; run deploy/examples/build.sh",
        path.display()
    );
    path
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what`.
/// The timeout is a safety net for a hung test, not a performance assertion.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
