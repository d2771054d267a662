//! The destination's side of a move (rule 10), and the one test of whether
//! a function fits on a hub that both sides apply (rule 3).

use std::fmt;

use thiserror::Error;

use super::{Settings, ThisHub, non_negative, positive, predicted_pressure};

/// Why a function is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OfferKind {
    /// To even out load: the imbalance must shrink (rule 3).
    Balance,
    /// The source is draining: taken whatever this hub's pressure.
    Drain,
    /// A function suspended for overload, to resume here: this hub must
    /// stay below the high watermark with it.
    Resume,
}

/// A function a peer offers to move here.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub function: String,
    pub kind: OfferKind,
    /// The cores it is expected to want here.
    pub want: f64,
    /// Its memory size, in bytes.
    pub memory: u64,
    /// The source's `w` before and after giving it.
    pub source_w_before: f64,
    pub source_w_after: f64,
}

/// An offer this hub takes. The hub adds the offer's `want` to its
/// reservations until the arrival is measured here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accepted {
    /// This hub's `w` (reservations included) before and after taking it.
    pub w_before: f64,
    pub w_after: f64,
}

/// Why this hub refuses an offer.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Refused {
    #[error("this hub is draining")]
    Draining,
    #[error("this hub has no capacity")]
    NoCapacity,
    #[error("the function needs {needed} bytes of memory, {free} are free")]
    Memory { needed: u64, free: u64 },
    #[error("the imbalance would not shrink: {before:.2} → {after:.2}")]
    WouldNotShrink { before: f64, after: f64 },
    #[error(
        "the imbalance would shrink by less than the margin {margin:.2} ({before:.2} → {after:.2}) and pressure here would be {pressure_after:.2}, over the high watermark"
    )]
    BelowMargin {
        before: f64,
        after: f64,
        margin: f64,
        pressure_after: f64,
    },
    #[error("no room: pressure here would be {pressure_after:.2}, not below the high watermark {high_watermark:.2}")]
    NoRoom { pressure_after: f64, high_watermark: f64 },
}

impl fmt::Display for Accepted {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "accepted: w {:.2} → {:.2}, pressure {:.2} predicted",
            self.w_before,
            self.w_after,
            predicted_pressure(self.w_after)
        )
    }
}

/// How a balancing move fits (rule 3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Fit {
    /// The destination stays below the high watermark with the function.
    pub(super) room: bool,
}

/// Whether moving a function from a hub at `source_before` (`source_after`
/// without it) to one at `destination_before` (`destination_after` with it)
/// is a balancing move: the imbalance shrinks strictly, and by more than
/// the margin unless the destination stays below the high watermark.
pub(super) fn judge(
    settings: &Settings,
    source_before: f64,
    source_after: f64,
    destination_before: f64,
    destination_after: f64,
) -> Result<Fit, Refused> {
    /// Float noise below this is no shrink: a move and its reverse compute
    /// the same two numbers in another order.
    const EPSILON: f64 = 1e-9;
    let before = source_before - destination_before;
    let after = (source_after - destination_after).abs();
    let pressure_after = predicted_pressure(destination_after);
    let room = pressure_after < settings.high_watermark;
    // Written so that a figure that is not a number refuses.
    let shrinks = after < before - EPSILON;
    let shrinks_by_margin = after < before - settings.margin - EPSILON;
    if !shrinks {
        return Err(Refused::WouldNotShrink { before, after });
    }
    if !room && !shrinks_by_margin {
        return Err(Refused::BelowMargin {
            before,
            after,
            margin: settings.margin,
            pressure_after,
        });
    }
    Ok(Fit { room })
}

/// Whether this hub takes `offer`, given its own figures and the
/// reservations of arrivals it accepted already (`here.reserved`). A
/// balancing offer must pass the same test the source applied (rule 3)
/// against this hub's fresher figures; a resume must leave this hub below
/// the high watermark; a drain is taken whenever the memory is there.
pub fn admit(settings: &Settings, here: &ThisHub, offer: &Offer) -> Result<Accepted, Refused> {
    if here.draining {
        return Err(Refused::Draining);
    }
    let capacity = positive(here.capacity).ok_or(Refused::NoCapacity)?;
    if here.free_memory < offer.memory {
        return Err(Refused::Memory {
            needed: offer.memory,
            free: here.free_memory,
        });
    }
    let w_before = (non_negative(here.usage) + non_negative(here.demand) + non_negative(here.reserved)) / capacity;
    let w_after = w_before + non_negative(offer.want) / capacity;
    match offer.kind {
        OfferKind::Drain => {}
        OfferKind::Resume => {
            let pressure_after = predicted_pressure(w_after);
            if pressure_after >= settings.high_watermark {
                return Err(Refused::NoRoom {
                    pressure_after,
                    high_watermark: settings.high_watermark,
                });
            }
        }
        OfferKind::Balance => {
            judge(settings, offer.source_w_before, offer.source_w_after, w_before, w_after)?;
        }
    }
    Ok(Accepted { w_before, w_after })
}
