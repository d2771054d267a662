//! A move over a gigabit LAN against a raw TCP copy of the same bytes over
//! the same link, in one run (the machine is noisy: nothing here asserts a
//! time).
//!
//! Two network namespaces on a bridge (`Lan`), each host's `lan0` shaped
//! with `tc qdisc … tbf rate 1gbit` (a real gigabit link: both directions
//! limited). Per trial, on a fresh LAN with fresh hubs (hotheap's memory is
//! deterministic: a hub that took part in an earlier trial would hold its
//! chunks): the destination compiles the module first (a one-round
//! `hotheap 1 4`, not what is measured), the source runs a freshly deployed
//! `hotheap 64 4 0 FILL` (64 MiB written once: memory that stands still),
//! and `ferry migrate` moves it. Two fills: `words`, which no compressor
//! shrinks (the worst case for Ferry: it sends the same bytes as the raw
//! copy plus its own protocol), and `records`, lines of text like the tables
//! and logs real services keep in memory. Then this executable, started in
//! both namespaces, copies as many bytes over a plain TCP connection
//! (1 MiB writes; timed from connect to the receiver's acknowledgement
//! that it read everything), three times; the median is the baseline.
//!
//! Needs root (network namespaces); without it, says so and exits.
//! The hubs are the dev profile's `ferry` (`$FERRY_BIN` or
//! `target/debug/ferry`): build it first with `cargo build -p ferry-hub --bins`.
//!
//! Run: `cargo bench --profile dev -p ferry-integration-tests --bench migration_gigabit`
//! (`-- --trials N`, default 3; `-- --logs` also prints each move's
//! per-round lines from both hubs' logs: capture, hashing, answer, send).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use ferry_integration_tests::moves::{deploy_guest, migrate, running_on, wait_peer_up};
use ferry_integration_tests::{HubOptions, HubProcess, Lan, netns_or_skip};
use serde_json::Value;

/// Safety net against a hung hub, not a performance requirement.
const PATIENCE: Duration = Duration::from_secs(120);
const RAW_COPIES: usize = 3;
const RAW_PORT: u16 = 7499;
const MIB: usize = 1 << 20;
const HOTHEAP: &str = "examples/hotheap.wasm";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--raw-receive") => return raw_receive(args.get(2).context("--raw-receive ADDR")?),
        Some("--raw-send") => {
            let bytes = args.get(3).context("--raw-send ADDR BYTES")?.parse()?;
            return raw_send(args.get(2).context("--raw-send ADDR BYTES")?, bytes);
        }
        _ => {}
    }
    if std::env::var_os("FERRY_BIN").is_none() {
        return ferry_integration_tests::rerun_with_dev_ferry();
    }
    if !netns_or_skip("migration_gigabit") {
        return Ok(());
    }
    let mut trials = 3;
    let logs = args.iter().any(|arg| arg == "--logs");
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        if arg == "--trials" {
            trials = rest
                .next()
                .and_then(|value| value.parse().ok())
                .filter(|value| *value > 0)
                .context("--trials needs a positive number")?;
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(trials, logs))
}

async fn run(trials: usize, logs: bool) -> anyhow::Result<()> {
    println!("## A first move of a fresh hotheap 64 MiB over a 1 Gbit/s link vs a raw TCP copy of as many bytes\n");
    println!(
        "| fill | trial | memory | sent | rounds | move ms | raw copy ms (median of {RAW_COPIES}) | **move / raw** | move MB/s | raw MB/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut medians = Vec::new();
    for fill in FILLS {
        medians.push((fill, trials_of(fill, trials, logs).await?));
    }
    println!();
    for (fill, median) in medians {
        println!(
            "{fill:>7}: move time / raw copy time over 1 Gbit/s, median {median:.2} (target <= 1.0 met: {})",
            if median <= 1.0 { "yes" } else { "no" }
        );
    }
    Ok(())
}

/// hotheap's fills: incompressible words, then text records.
const FILLS: [&str; 2] = ["words", "records"];

/// `trials` moves of a `fill` heap, each on a fresh LAN; the median ratio.
/// With `logs`, each move's round lines from both hubs follow its row.
async fn trials_of(fill: &str, trials: usize, logs: bool) -> anyhow::Result<f64> {
    let mut ratios = Vec::new();
    for trial in 1..=trials {
        let lan = Lan::new(2)?;
        for host in 0..2 {
            shape(&lan, host)?;
        }
        let hubs = start_hubs(&lan).await?;
        deploy_guest(&hubs[1], HOTHEAP, "warm", &["1", "4", "1"]);
        deploy_guest(&hubs[0], HOTHEAP, "fresh64", &["64", "4", "0", fill]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let summary = migrate(&hubs[0], "fresh64", "hub-1").with_context(|| format!("trial {trial}"))?;
        ensure!(summary["start_confirmed"] == true, "start not confirmed: {summary}");
        ensure!(
            field(&summary, "bytes_deduplicated")? == 0,
            "a fresh hub held chunks: {summary}"
        );
        let all: Vec<&HubProcess> = hubs.iter().collect();
        ensure!(
            running_on(&all, "fresh64") == vec![1],
            "fresh64 is not running on hub-1"
        );
        let memory = field(&summary, "memory_bytes")?;
        let total = field(&summary, "total_micros")?;
        let mut raw = Vec::new();
        for _ in 0..RAW_COPIES {
            raw.push(raw_copy(&lan, memory)?);
        }
        raw.sort_unstable();
        let raw_micros = raw[RAW_COPIES / 2];
        let ratio = total as f64 / raw_micros as f64;
        println!(
            "| {fill} | {trial} | {:.1} MB | {:.1} MB | {} | {:.1} | {:.1} | **{ratio:.2}** | {:.0} | {:.0} |",
            memory as f64 / 1e6,
            field(&summary, "bytes_sent")? as f64 / 1e6,
            field(&summary, "rounds")?,
            total as f64 / 1000.0,
            raw_micros as f64 / 1000.0,
            memory as f64 / total as f64,
            memory as f64 / raw_micros as f64,
        );
        ratios.push(ratio);
        if logs {
            print_round_lines(&hubs);
        }
    }
    ratios.sort_by(f64::total_cmp);
    Ok(ratios[ratios.len() / 2])
}

/// The moves' per-round debug lines of each hub, without their timestamp
/// and span.
fn print_round_lines(hubs: &[HubProcess]) {
    for (index, hub) in hubs.iter().enumerate() {
        let log = hub.agent_log();
        let rounds = log
            .lines()
            .filter(|line| line.contains("round sent") || line.contains("round answered"));
        for line in rounds {
            println!(
                "    hub-{index}: {}",
                line.split_once("}: ").map_or(line, |(_, rest)| rest)
            );
        }
    }
}

/// Limits what host `index` sends to 1 Gbit/s.
fn shape(lan: &Lan, index: usize) -> anyhow::Result<()> {
    let output = lan.host(index).run(
        "tc",
        &[
            "qdisc", "replace", "dev", "lan0", "root", "tbf", "rate", "1gbit", "burst", "256kb", "latency", "50ms",
        ],
    )?;
    ensure!(
        output.status.success(),
        "tc: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

async fn start_hubs(lan: &Lan) -> anyhow::Result<Vec<HubProcess>> {
    let mut hubs = Vec::new();
    for index in 0..2 {
        let options = HubOptions::named(format!("hub-{index}")).args([
            "--cluster-id",
            "gigabit-bench",
            "--checkpoint-interval",
            "0s",
            "--rebalance",
            "off",
        ]);
        // As users run them: hub-1 joins hub-0's cluster, mutual TLS.
        let options = ferry_integration_tests::moves::in_cluster(options, hubs.first())?;
        hubs.push(lan.start_hub(index, options).await?);
    }
    for (index, hub) in hubs.iter().enumerate() {
        wait_peer_up(hub, &format!("hub-{}", 1 - index), PATIENCE).await?;
    }
    Ok(hubs)
}

fn field(summary: &Value, name: &str) -> anyhow::Result<u64> {
    summary[name]
        .as_u64()
        .with_context(|| format!("{name} missing in {summary}"))
}

/// One raw copy of `bytes` from host 0 to host 1, in µs: this executable
/// receives in host 1's namespace and sends from host 0's.
fn raw_copy(lan: &Lan, bytes: u64) -> anyhow::Result<u64> {
    let exe = std::env::current_exe()?;
    let address = format!("{}:{RAW_PORT}", lan.host_ip(1));
    let mut receiver = lan
        .command(1, &exe)
        .args(["--raw-receive", &address])
        .stdout(Stdio::piped())
        .spawn()?;
    // The receiver says when it listens.
    let mut ready = [0u8; 1];
    receiver
        .stdout
        .as_mut()
        .context("receiver stdout")?
        .read_exact(&mut ready)?;
    let sent = lan
        .command(0, &exe)
        .args(["--raw-send", &address, &bytes.to_string()])
        .output()?;
    let received = receiver.wait()?;
    ensure!(
        sent.status.success() && received.success(),
        "raw copy failed: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    String::from_utf8(sent.stdout)?
        .trim()
        .parse()
        .context("the sender's time")
}

fn raw_receive(address: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(address)?;
    print!("l");
    std::io::stdout().flush()?;
    let (mut stream, _) = listener.accept()?;
    let mut buffer = vec![0u8; MIB];
    loop {
        match stream.read(&mut buffer)? {
            0 => break,
            _ => continue,
        }
    }
    stream.write_all(b"k")?;
    Ok(())
}

fn raw_send(address: &str, bytes: u64) -> anyhow::Result<()> {
    let payload: Vec<u8> = (0..MIB as u32)
        .map(|index| (index.wrapping_mul(0x9E37_79B1) >> 24) as u8)
        .collect();
    let started = Instant::now();
    let mut stream = TcpStream::connect(address)?;
    let mut left = bytes;
    while left > 0 {
        let part = left.min(MIB as u64) as usize;
        stream.write_all(&payload[..part])?;
        left -= part as u64;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut ack = [0u8; 1];
    stream.read_exact(&mut ack)?;
    if ack != *b"k" {
        bail!("the receiver did not acknowledge");
    }
    println!("{}", started.elapsed().as_micros());
    Ok(())
}
