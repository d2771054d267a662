//! The cost of checkpointing a function's files, as a ratio against a
//! baseline measured in this run: through an in-process hub, a function
//! with 64 MiB of volume files (8 files of incompressible bytes) is
//! checkpointed right after it filled them — its first checkpoint, which
//! reads, hashes, compresses and writes everything (the baseline) — and
//! again after it rewrote 1 % of the bytes, which reads only what was
//! written since. Twice: with the 1 % rewritten as 64 KiB pieces (one
//! checkpoint chunk each) and as scattered 4 KiB pages (a database's
//! pattern: each page makes its whole 64 KiB chunk be read).
//!
//! Run: `cargo bench --profile dev -p ferry-hub --bench volume`

mod common;

use std::time::Duration;

use common::{in_process_hub, median, wait_for_output};
use ferry_proto::v1::hub_client::HubClient;
use ferry_proto::v1::{CheckpointInfo, CheckpointRequest, DeployRequest, RemoveRequest, Volume};
use tonic::transport::Channel;

const ROUNDS: u64 = 3;
const VOLUME_MIB: u64 = 64;

fn guest(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).expect("guest module")
}

fn cost(info: &CheckpointInfo) -> Duration {
    Duration::from_micros(info.capture_micros + info.persist_micros)
}

async fn checkpoint(client: &mut HubClient<Channel>, name: &str) -> anyhow::Result<CheckpointInfo> {
    Ok(client
        .checkpoint(CheckpointRequest { name: name.into() })
        .await?
        .into_inner()
        .checkpoint
        .unwrap_or_default())
}

/// (first checkpoint, checkpoint after 1 % was rewritten) per round.
async fn measure(
    client: &mut HubClient<Channel>,
    piece_kib: u64,
) -> anyhow::Result<Vec<(CheckpointInfo, CheckpointInfo)>> {
    let mut runs = Vec::new();
    for round in 0..ROUNDS {
        let name = format!("volume-{piece_kib}k-{round}");
        client
            .deploy(DeployRequest {
                name: name.clone(),
                module: guest("integration-tests/guests/volume_writer.wasm"),
                args: [
                    "/data".to_owned(),
                    VOLUME_MIB.to_string(),
                    "8".to_owned(),
                    piece_kib.to_string(),
                    (round + 100 * piece_kib).to_string(),
                ]
                .into(),
                volume: Some(Volume {
                    path: "/data".into(),
                    quota_bytes: 256 << 20,
                }),
                ..Default::default()
            })
            .await?;
        wait_for_output(client, &name, "filled\n").await;
        let full = checkpoint(client, &name).await?;
        wait_for_output(client, &name, "wrote 1\n").await;
        let incremental = checkpoint(client, &name).await?;
        client.remove(RemoveRequest { name: name.clone() }).await?;
        runs.push((full, incremental));
    }
    Ok(runs)
}

fn report(piece_kib: u64, runs: &[(CheckpointInfo, CheckpointInfo)]) {
    let full = median(runs.iter().map(|(full, _)| cost(full)).collect());
    let incremental = median(runs.iter().map(|(_, incremental)| cost(incremental)).collect());
    let (first, next) = &runs[runs.len() / 2];
    println!("64 MiB volume, 1 % rewritten as {piece_kib} KiB pieces, median of {ROUNDS}:");
    println!(
        "  first checkpoint (everything): {:.1} ms, {} MiB of files read, {} new volume chunks, {:.1} MiB written",
        full.as_secs_f64() * 1e3,
        first.volume_bytes_read >> 20,
        first.volume_new_chunks,
        first.bytes_written as f64 / (1 << 20) as f64
    );
    println!(
        "  after 1 % rewritten: {:.1} ms, {:.2} MiB of files read, {} new volume chunks, {:.2} MiB written",
        incremental.as_secs_f64() * 1e3,
        next.volume_bytes_read as f64 / (1 << 20) as f64,
        next.volume_new_chunks,
        next.bytes_written as f64 / (1 << 20) as f64
    );
    println!(
        "  ratio (after 1 % / first): time {:.3}, bytes read {:.3}",
        incremental.as_secs_f64() / full.as_secs_f64(),
        next.volume_bytes_read as f64 / first.volume_bytes_read.max(1) as f64
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (_data_dir, hub) = in_process_hub().await?;
    let mut client = HubClient::connect(format!("http://{}", hub.address)).await?;
    for piece_kib in [64, 4] {
        let runs = measure(&mut client, piece_kib).await?;
        report(piece_kib, &runs);
    }
    tokio::time::timeout(Duration::from_secs(30), hub.shutdown()).await??;
    Ok(())
}
