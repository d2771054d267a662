//! How the policy is tuned.

use std::time::Duration;

use thiserror::Error;

use super::positive;

/// The throughput [`Settings::default`] assumes of a link nobody measured:
/// 50 MB/s.
pub const DEFAULT_THROUGHPUT: f64 = 50_000_000.0;

/// How the policy is tuned. [`Settings::default`] holds the documented
/// defaults; [`Settings::check`] says whether a set makes sense.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Pressure above this (sustained for `window`) makes a hub hot.
    pub high_watermark: f64,
    /// Pressure below this (sustained for `window`) makes a hub cool.
    pub low_watermark: f64,
    /// How long pressure must stay past a watermark before the policy acts.
    pub window: Duration,
    /// A function that arrived (or was sent) less than this ago is not
    /// moved again, and never back to where it came from.
    pub cooldown: Duration,
    /// How much (in `w` units) a move must shrink the imbalance by when its
    /// destination ends above the high watermark.
    pub margin: f64,
    /// Moves estimated to cost more than this are not made.
    pub max_move_cost: Duration,
    /// Bytes per second assumed of a link with no measured throughput.
    pub assumed_throughput: f64,
    /// The pause a move is expected to cost on top of the copy.
    pub expected_pause: Duration,
    /// How long after a move (or resume) this policy decided stops being in
    /// flight its destination's figures are assumed not to show it yet.
    pub settle: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            high_watermark: 0.25,
            low_watermark: 0.05,
            window: Duration::from_secs(5),
            cooldown: Duration::from_secs(60),
            margin: 0.25,
            max_move_cost: Duration::from_secs(10),
            assumed_throughput: DEFAULT_THROUGHPUT,
            expected_pause: Duration::from_millis(50),
            settle: Duration::from_secs(3),
        }
    }
}

/// Why a [`Settings`] cannot be used.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SettingsError {
    #[error("the watermarks must satisfy 0 <= low < high, got low {low} and high {high}")]
    Watermarks { low: f64, high: f64 },
    #[error("the imbalance margin must be a non-negative number, got {0}")]
    Margin(f64),
    #[error("the assumed throughput must be a positive number of bytes per second, got {0}")]
    Throughput(f64),
}

impl Settings {
    /// Whether these settings make sense (the hub's configuration checks
    /// them before building a [`Policy`](super::Policy)).
    pub fn check(&self) -> Result<(), SettingsError> {
        let (low, high) = (self.low_watermark, self.high_watermark);
        if !(low.is_finite() && high.is_finite() && 0.0 <= low && low < high) {
            return Err(SettingsError::Watermarks { low, high });
        }
        if !(self.margin.is_finite() && self.margin >= 0.0) {
            return Err(SettingsError::Margin(self.margin));
        }
        if positive(self.assumed_throughput).is_none() {
            return Err(SettingsError::Throughput(self.assumed_throughput));
        }
        Ok(())
    }
}
