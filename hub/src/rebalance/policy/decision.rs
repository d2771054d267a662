//! What the policy decides: each decision carries its numbers, and its
//! `Display` is the reason a person reads in the hub's log and events.

use std::fmt;
use std::time::Duration;

use super::admission::{Offer, OfferKind};
use super::predicted_pressure;

/// One thing for the hub to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Move a running function to a peer.
    Move(Move),
    /// Suspend a running function for overload (checkpoint and stop).
    Suspend(Suspend),
    /// Resume a function suspended for overload, here.
    Resume(Resume),
    /// Move a function suspended for overload to a peer, from its
    /// checkpoint, and resume it there.
    ResumeOn(ResumeOn),
    /// Report that a function cannot be moved anywhere for now; the policy
    /// will not try it again until things change.
    MarkUnbalanceable(Unbalanceable),
}

impl Decision {
    /// The function the decision is about.
    pub fn function(&self) -> &str {
        match self {
            Decision::Move(decided) => &decided.function,
            Decision::Suspend(decided) => &decided.function,
            Decision::Resume(decided) => &decided.function,
            Decision::ResumeOn(decided) => &decided.function,
            Decision::MarkUnbalanceable(decided) => &decided.function,
        }
    }
}

/// Why a function moves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MoveCause {
    /// This hub has been hot this long, at this pressure.
    Overload { pressure: f64, over: Duration },
    /// This hub is draining.
    Draining,
}

/// Move `function` to the peer `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub function: String,
    /// The destination's hub id.
    pub to: String,
    /// The destination's name, for people.
    pub to_name: String,
    pub cause: MoveCause,
    /// The function's want, in cores.
    pub want: f64,
    /// The function's memory size, in bytes.
    pub memory: u64,
    /// This hub's `w` before and after the move.
    pub w_before: f64,
    pub w_after: f64,
    /// The destination's `w` (as this hub sees it) before and after.
    pub to_w_before: f64,
    pub to_w_after: f64,
    /// Estimated cost: copy time plus the expected pause.
    pub cost: Duration,
}

impl Move {
    /// `w` here minus `w` there, before the move.
    pub fn imbalance_before(&self) -> f64 {
        self.w_before - self.to_w_before
    }

    /// The imbalance between the two hubs after the move.
    pub fn imbalance_after(&self) -> f64 {
        (self.w_after - self.to_w_after).abs()
    }

    /// The offer to make to the destination, for its [`admit`](super::admit).
    pub fn offer(&self) -> Offer {
        Offer {
            function: self.function.clone(),
            kind: match self.cause {
                MoveCause::Overload { .. } => OfferKind::Balance,
                MoveCause::Draining => OfferKind::Drain,
            },
            want: self.want,
            memory: self.memory,
            source_w_before: self.w_before,
            source_w_after: self.w_after,
        }
    }
}

/// Suspend `function` for overload.
#[derive(Debug, Clone, PartialEq)]
pub struct Suspend {
    pub function: String,
    pub priority: i32,
    /// The highest priority running here: functions of it keep running.
    pub top_priority: i32,
    /// Measured pressure, hot for `over`.
    pub pressure: f64,
    pub over: Duration,
    /// The function's want, in cores.
    pub want: f64,
    /// Predicted pressure once this and the suspensions before it in the
    /// same decision are done.
    pub pressure_after: f64,
}

/// Why a suspended function resumes here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResumeCause {
    /// Pressure has stayed below the low watermark for `over`, and stays
    /// below the high watermark with the function.
    Cool { low_watermark: f64, over: Duration },
    /// Its priority is at least the highest running here (`None`: nothing
    /// runs), so it would not have been suspended beside them.
    TopPriority { top_running: Option<i32> },
}

/// Resume `function` here.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    pub function: String,
    pub priority: i32,
    pub cause: ResumeCause,
    /// The want it is expected to have, in cores.
    pub want: f64,
    /// This hub's `w` with it.
    pub w_after: f64,
}

/// Resume `function` on the peer `to`, from its checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumeOn {
    pub function: String,
    /// The destination's hub id.
    pub to: String,
    /// The destination's name, for people.
    pub to_name: String,
    pub priority: i32,
    /// The want it is expected to have, in cores.
    pub want: f64,
    /// Its memory size, in bytes.
    pub memory: u64,
    /// This hub's `w` (the function counts nowhere while suspended).
    pub w: f64,
    /// The destination's `w` before and after.
    pub to_w_before: f64,
    pub to_w_after: f64,
    pub cost: Duration,
}

impl ResumeOn {
    /// The offer to make to the destination, for its [`admit`](super::admit).
    pub fn offer(&self) -> Offer {
        Offer {
            function: self.function.clone(),
            kind: OfferKind::Resume,
            want: self.want,
            memory: self.memory,
            source_w_before: self.w,
            source_w_after: self.w,
        }
    }
}

/// Why a function has nowhere to go.
#[derive(Debug, Clone, PartialEq)]
pub enum Stuck {
    /// No usable, non-draining peer with a capacity.
    NoPeer,
    /// No move shrinks the imbalance enough; the closest was to `peer`.
    NoShrink { peer: String, before: f64, after: f64 },
    /// Every destination that would do costs too much; the cheapest was `peer`.
    TooCostly {
        peer: String,
        cost: Duration,
        max: Duration,
    },
    /// No destination has the memory; the roomiest was `peer`.
    NoMemory { peer: String, needed: u64, free: u64 },
}

/// `function` is marked unbalanceable.
#[derive(Debug, Clone, PartialEq)]
pub struct Unbalanceable {
    pub function: String,
    pub stuck: Stuck,
    /// Measured pressure, hot for `over`.
    pub pressure: f64,
    pub over: Duration,
}

impl fmt::Display for Decision {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Move(decided) => decided.fmt(formatter),
            Decision::Suspend(decided) => decided.fmt(formatter),
            Decision::Resume(decided) => decided.fmt(formatter),
            Decision::ResumeOn(decided) => decided.fmt(formatter),
            Decision::MarkUnbalanceable(decided) => decided.fmt(formatter),
        }
    }
}

impl fmt::Display for Move {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "move {} to {}: ", self.function, self.to_name)?;
        match self.cause {
            MoveCause::Overload { pressure, over } => write!(
                formatter,
                "pressure {pressure:.1} over {}; imbalance {:.1} → {:.1}",
                seconds(over),
                self.imbalance_before(),
                self.imbalance_after()
            )?,
            MoveCause::Draining => write!(
                formatter,
                "this hub is draining; {} at w {:.1} → {:.1}",
                self.to_name, self.to_w_before, self.to_w_after
            )?,
        }
        write!(formatter, "; cost {}", cost(self.cost))
    }
}

impl fmt::Display for Suspend {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "suspend {}: no peer has room; pressure {:.1} over {}; priority {} is the lowest running (top {} keeps running); pressure → {:.1} predicted",
            self.function,
            self.pressure,
            seconds(self.over),
            self.priority,
            self.top_priority,
            self.pressure_after
        )
    }
}

impl fmt::Display for Resume {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "resume {}: ", self.function)?;
        match self.cause {
            ResumeCause::Cool { low_watermark, over } => write!(
                formatter,
                "pressure below {low_watermark:.2} for {}; priority {} first; pressure → {:.1} predicted",
                seconds(over),
                self.priority,
                predicted_pressure(self.w_after)
            ),
            ResumeCause::TopPriority { top_running: None } => {
                write!(formatter, "nothing runs here; priority {} first", self.priority)
            }
            ResumeCause::TopPriority { top_running: Some(top) } => write!(
                formatter,
                "priority {} is not below the top running priority {top}: it shares the hub",
                self.priority
            ),
        }
    }
}

impl fmt::Display for ResumeOn {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "resume {} on {} (from its checkpoint): {} has room (pressure {:.1} with it); priority {} first; cost {}",
            self.function,
            self.to_name,
            self.to_name,
            predicted_pressure(self.to_w_after),
            self.priority,
            cost(self.cost)
        )
    }
}

impl fmt::Display for Stuck {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stuck::NoPeer => formatter.write_str("no usable peer"),
            Stuck::NoShrink { peer, before, after } => write!(
                formatter,
                "no move shrinks the imbalance enough (closest: {peer}, {before:.1} → {after:.1})"
            ),
            Stuck::TooCostly {
                peer,
                cost: estimate,
                max,
            } => write!(
                formatter,
                "every move costs too much (cheapest: {peer}, {} over the {} limit)",
                cost(*estimate),
                cost(*max)
            ),
            Stuck::NoMemory { peer, needed, free } => write!(
                formatter,
                "no peer has {} free (most: {peer}, {})",
                mebibytes(*needed),
                mebibytes(*free)
            ),
        }
    }
}

impl fmt::Display for Unbalanceable {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "unbalanceable {}: {}; pressure {:.1} over {}",
            self.function,
            self.stuck,
            self.pressure,
            seconds(self.over)
        )
    }
}

/// "5 s", "2.5 s".
fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{secs:.0} s")
    } else {
        format!("{secs:.1} s")
    }
}

/// "35 ms", "2.1 s".
fn cost(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

/// "8.0 MiB".
fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
