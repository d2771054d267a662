//! Automatic rebalancing (issue 11): which function to move, suspend or
//! resume, and where, so that no hub stays overloaded while a peer has room.
//!
//! [`policy`] decides (pure); [`figures`] gathers what it reads (this hub's
//! CPU and memory, its functions, its peers' probe answers) and answers a
//! peer's automatic offer (admission, with reservations); [`run`] asks the
//! policy once a second and carries the decisions out (a move, a suspend
//! for overload, a resume) through the supervisor and `migration`, like a
//! user would, recording each as an event.
//!
//! # Measurements
//!
//! The policy is fed these figures, all in cores (fractions allowed):
//!
//! - A hub's **capacity** `C`: the cores it may use (`ferry agent --cpus`,
//!   e.g. 0.5).
//! - Per function, over the last second: **usage** `u`, the cores it used,
//!   and **demand** `d`, the cores' worth of time it was runnable but not
//!   running — throttled by the hub's CPU quota or waiting for a core (time
//!   held back by the function's own `--cpus` cap is not demand).
//! - A function's **want** = `min(u + d, cap)`, where `cap` is its own
//!   `--cpus` cap, else 1.0 (a wasm function is single-threaded): a CPU-bound
//!   function wants ≈ 1.0 wherever it runs, a sleeping one ≈ 0.
//! - A hub's **usage** Σu and **demand** Σd over its functions; its **load**
//!   = Σu / C (at most about 1) and its **pressure** = Σd / C.
//! - A hub's **utilization demand** `w` = (Σwant + reserved) / C, where
//!   `reserved` is the want of arrivals it accepted that are not measured
//!   yet: an idle hub has w ≈ 0, one CPU-bound function on a 0.5-core hub
//!   has w = 2. A hub computes its own from its functions (its admission
//!   from its totals); a peer's comes
//!   from the figures it advertises, (Σu + Σd) / C, which is the same as
//!   long as no function is held back by its own cap.
//!
//! The watermarks apply to the measured **pressure**: a hub is *hot* while
//! pressure > high watermark (default 0.25), *cool* while pressure < low
//! watermark (default 0.05). Placement compares `w`, and predicts a hub's
//! pressure from it as `max(0, w − 1)`: wants beyond the capacity wait.
//! The **imbalance** between a source and a destination is
//! `w_source − w_destination`; a move of a function wanting `x` changes it
//! to `|(w_source − x / C_source) − (w_destination + x / C_destination)|`.

pub mod figures;
pub mod policy;
pub mod run;
