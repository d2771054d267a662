//! `ferry migrate`: a progress bar while chunks stream, then a summary.

use std::time::Duration;

use ferry_proto::v1::{DrainRequest, MigrateRequest, MigrateSummary, drain_progress, migrate_progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tokio_stream::StreamExt;

use super::MigrateArgs;
use super::client::{ClientError, HubTarget, connect};
use super::output::human_bytes;

pub async fn migrate(hub: &HubTarget, json: bool, args: MigrateArgs) -> Result<(), ClientError> {
    let mut events = connect(hub)
        .await?
        .migrate(MigrateRequest {
            name: args.name.clone(),
            to: args.to.clone(),
        })
        .await?
        .into_inner();
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>9} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut summary = None;
    while let Some(event) = events.next().await {
        match event?.event {
            Some(migrate_progress::Event::Round(round)) => {
                bar.set_prefix(if round.last {
                    "last round".to_owned()
                } else {
                    format!("round {}", round.number)
                });
                bar.set_length(round.bytes_to_send);
                bar.set_position(0);
            }
            Some(migrate_progress::Event::RoundBytesSent(sent)) => bar.set_position(sent),
            Some(migrate_progress::Event::ModulePreparingMicros(elapsed)) => {
                bar.set_prefix(format!("destination compiling the module ({})", seconds(elapsed)));
                bar.tick();
            }
            // On stderr even with --json or without a terminal, where the
            // bar is hidden.
            Some(migrate_progress::Event::Retrying(retry)) => bar.suspend(|| {
                eprintln!(
                    "the link failed under the move ({}; {} delivered); attempt {} on a fresh connection sends only what the destination lacks",
                    retry.reason,
                    human_bytes(retry.delivered_bytes),
                    retry.attempt
                )
            }),
            Some(migrate_progress::Event::Summary(done)) => summary = Some(done),
            None => {}
        }
    }
    bar.finish_and_clear();
    let summary = summary.ok_or_else(|| ClientError::Usage("the hub ended the move without a summary".to_owned()))?;
    print_summary(&summary, json);
    Ok(())
}

fn seconds(micros: u64) -> String {
    format!("{:.1} s", Duration::from_micros(micros).as_secs_f64())
}

fn millis(micros: u64) -> String {
    format!("{:.1} ms", Duration::from_micros(micros).as_secs_f64() * 1000.0)
}

fn print_summary(summary: &MigrateSummary, json: bool) {
    if json {
        println!(
            "{}",
            json!({
                "function": summary.function,
                "from_hub": summary.from_hub,
                "to_hub": summary.to_hub,
                "epoch": summary.epoch,
                "rounds": summary.rounds,
                "memory_bytes": summary.memory_bytes,
                "bytes_offered": summary.bytes_offered,
                "bytes_deduplicated": summary.bytes_deduplicated,
                "bytes_sent": summary.bytes_sent,
                "module_bytes_sent": summary.module_bytes_sent,
                "total_micros": summary.total_micros,
                "downtime_micros": summary.downtime_micros,
                "final_round_micros": summary.final_round_micros,
                "prepare_micros": summary.prepare_micros,
                "start_micros": summary.start_micros,
                "start_confirmed": summary.start_confirmed,
                "module_prepare_micros": summary.module_prepare_micros,
                "attempts": summary.attempts,
                "effects_held_micros": summary.effects_held_micros,
                "volume_bytes_read": summary.volume_bytes_read,
                "bytes_left_out_by_pages": summary.bytes_left_out_by_pages,
                "slowed_to_cores": summary.slowed_to_cores,
            })
        );
        return;
    }
    println!(
        "moved {} from {} to {} (epoch {})",
        summary.function, summary.from_hub, summary.to_hub, summary.epoch
    );
    let compressed_away = (summary.bytes_offered - summary.bytes_deduplicated)
        .saturating_sub(summary.bytes_sent)
        .saturating_sub(summary.bytes_left_out_by_pages);
    println!(
        "  rounds {}, memory {}, sent {} ({} saved by dedup, {} by compression{}){}{}",
        summary.rounds,
        human_bytes(summary.memory_bytes),
        human_bytes(summary.bytes_sent),
        human_bytes(summary.bytes_deduplicated),
        human_bytes(compressed_away),
        if summary.bytes_left_out_by_pages > 0 {
            format!(", {} as written pages", human_bytes(summary.bytes_left_out_by_pages))
        } else {
            String::new()
        },
        if summary.module_bytes_sent > 0 {
            format!(", module {}", human_bytes(summary.module_bytes_sent))
        } else {
            String::new()
        },
        if summary.volume_bytes_read > 0 {
            format!(", files read {}", human_bytes(summary.volume_bytes_read))
        } else {
            String::new()
        }
    );
    if summary.effects_held_micros > 0 {
        // It ran on the destination from the seal; persist and commit ran beside it.
        println!(
            "  total {}, downtime {} (last round {}); it ran on {} during the persist and commit, its output and messages held {}",
            millis(summary.total_micros),
            millis(summary.downtime_micros),
            millis(summary.final_round_micros),
            summary.to_hub,
            millis(summary.effects_held_micros)
        );
    } else {
        println!(
            "  total {}, downtime {} (last round {}, persist {}, start {})",
            millis(summary.total_micros),
            millis(summary.downtime_micros),
            millis(summary.final_round_micros),
            millis(summary.prepare_micros),
            millis(summary.start_micros)
        );
    }
    if summary.slowed_to_cores > 0.0 {
        println!(
            "  it wrote memory as fast as the rounds sent it: held to {:.3} cores for its last rounds",
            summary.slowed_to_cores
        );
    }
    if summary.module_prepare_micros > 0 {
        println!(
            "  the destination instrumented and compiled the module in {} (while the function ran here)",
            millis(summary.module_prepare_micros)
        );
    }
    if summary.attempts > 1 {
        println!(
            "  the link failed under the move; it took {} attempts (each sent only what the destination lacked)",
            summary.attempts
        );
    }
    if !summary.start_confirmed {
        println!(
            "  the destination did not confirm the start; it starts the function when it hears the move committed"
        );
    }
}

/// `ferry drain HUB`: each function that leaves, then a summary.
pub async fn drain(hub: &HubTarget, json: bool, name: String) -> Result<(), ClientError> {
    let mut progress = connect(hub)
        .await?
        .drain(DrainRequest { hub: name })
        .await?
        .into_inner();
    let mut summary = None;
    while let Some(item) = progress.next().await {
        match item?.progress {
            Some(drain_progress::Progress::Moved(event)) => super::output::print_event(&event, json)?,
            Some(drain_progress::Progress::Summary(done)) => summary = Some(done),
            None => {}
        }
    }
    let summary = summary.ok_or_else(|| ClientError::Usage("the hub ended the drain without a summary".to_owned()))?;
    if json {
        println!(
            "{}",
            json!({
                "hub_name": summary.hub_name,
                "moved": summary.moved,
                "failed": summary.failed,
                "left": summary.left,
                "pinned": summary.pinned,
                "stuck": summary.stuck,
                "duration_ms": summary.duration_ms,
                "no_peer_up": summary.no_peer_up,
                "not_running": summary.not_running,
            })
        );
        return Ok(());
    }
    println!(
        "drained {}: {} moved, {} failed in {:.1} s; new deploys are refused until `ferry undrain {}`",
        summary.hub_name,
        summary.moved,
        summary.failed,
        summary.duration_ms as f64 / 1000.0,
        summary.hub_name
    );
    if !summary.left.is_empty() && summary.no_peer_up {
        println!(
            "  still there: {} — no peer takes functions now (none is up, or every one is draining); {} stays draining and moves them off when one does (`ferry events` shows each move)",
            summary.left.join(", "),
            summary.hub_name
        );
    } else if !summary.left.is_empty() {
        println!("  still there (no peer had room in time): {}", summary.left.join(", "));
    }
    if !summary.pinned.is_empty() {
        println!("  pinned, not moved: {}", summary.pinned.join(", "));
    }
    for stuck in &summary.stuck {
        println!("  no peer can take it: {stuck}");
    }
    if !summary.not_running.is_empty() {
        println!(
            "  not running, so not moved: {1} (they stay on {0} until resumed, when the drain moves them off, or removed)",
            summary.hub_name,
            summary.not_running.join(", ")
        );
    }
    Ok(())
}
