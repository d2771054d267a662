//! What `ps` and the web page show of moves: the one under way from this
//! hub (updated by the move as it goes) and the one that brought a
//! function here.

use std::time::Duration;

use ferry_proto::v1::{LastMove, MoveUnderway};

use super::Supervisor;
use crate::logs::unix_ms_now;

/// A step of a move from this hub.
#[derive(Debug, Clone, Copy)]
pub enum MoveStep<'a> {
    Began {
        to_hub_name: &'a str,
    },
    /// Round `number` is planned; `last`: the function is paused.
    Round {
        number: u32,
        last: bool,
    },
    /// Bytes sent in the current round so far.
    RoundBytes(u64),
    Ended,
}

/// A move under way, with the bytes of the rounds before the current one.
#[derive(Debug, Clone, Default)]
pub(super) struct Underway {
    shown: MoveUnderway,
    earlier_rounds_bytes: u64,
}

impl Underway {
    pub(super) fn shown(&self) -> MoveUnderway {
        self.shown.clone()
    }
}

impl Supervisor {
    /// Notes how the move of `name` from this hub goes.
    pub fn note_move(&self, name: &str, step: MoveStep<'_>) {
        let mut slots = self.inner.lock_slots();
        let Some(slot) = slots.get_mut(name) else {
            return;
        };
        match step {
            MoveStep::Began { to_hub_name } => {
                slot.moving = Some(Underway {
                    shown: MoveUnderway {
                        to_hub_name: to_hub_name.to_owned(),
                        started_unix_ms: unix_ms_now(),
                        ..MoveUnderway::default()
                    },
                    earlier_rounds_bytes: 0,
                });
            }
            MoveStep::Round { number, last } => {
                if let Some(underway) = slot.moving.as_mut() {
                    underway.earlier_rounds_bytes = underway.shown.bytes_sent;
                    underway.shown.rounds = number;
                    underway.shown.paused = last;
                }
            }
            MoveStep::RoundBytes(bytes) => {
                if let Some(underway) = slot.moving.as_mut() {
                    underway.shown.bytes_sent = underway.earlier_rounds_bytes + bytes;
                }
            }
            MoveStep::Ended => slot.moving = None,
        }
    }

    /// The CPU time `name`'s run here has used, if it runs.
    pub fn cpu_used(&self, name: &str) -> Option<Duration> {
        let slots = self.inner.lock_slots();
        let running = slots.get(name)?.running.as_ref()?;
        Some(Duration::from_micros(running.control.cpu_micros()))
    }

    /// Holds `name` to `cores` while its move converges (`None`: lifts
    /// it). Runtime only: a run started anew (here after a failed move,
    /// there after a move, after a restart) is not held.
    pub fn slow_for_move(&self, name: &str, cores: Option<f64>) {
        let slots = self.inner.lock_slots();
        if let Some(running) = slots.get(name).and_then(|slot| slot.running.as_ref()) {
            running.control.set_move_cap(cores);
        }
    }

    /// The function that arrived here from `from_hub_name` runs: it did
    /// not run for `downtime`.
    pub fn note_arrival_downtime(&self, name: &str, downtime: Duration) {
        if let Some(slot) = self.inner.lock_slots().get_mut(name)
            && let Some(arrived) = slot.last_move.as_mut()
        {
            arrived.downtime_micros = u64::try_from(downtime.as_micros()).unwrap_or(u64::MAX);
        }
    }
}

/// What an arrival shows until it runs.
pub(super) fn arrival_from(from_hub_name: &str) -> LastMove {
    LastMove {
        from_hub_name: from_hub_name.to_owned(),
        arrived_unix_ms: unix_ms_now(),
        downtime_micros: 0,
    }
}
