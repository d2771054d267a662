//! Process-wide tracing setup.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs to stderr with the given filter (RUST_LOG syntax). An invalid filter
/// falls back to `info` and says so.
pub fn init(filter: &str) {
    let (env_filter, invalid) = match EnvFilter::try_new(filter) {
        Ok(env_filter) => (env_filter, None),
        Err(error) => (EnvFilter::new("info"), Some(error)),
    };
    tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Some(error) = invalid {
        tracing::warn!(%filter, %error, "invalid log filter; using info");
    }
}
