//! Live migration between two real `ferry agent` processes on loopback
//! (mDNS off, peers given with `--peer`), each figure as a ratio against a
//! baseline or a target measured in this run (the machine is noisy: nothing
//! here asserts a time).
//!
//! 1. Downtime: `hotheap 64 256` (64 MiB of heap whose 256 KiB hot set is
//!    rewritten every 10 ms: the target's case), `hotheap 1 64`, and the worst
//!    case `bigheap 64` (4096 random words over all 64 MiB every 100 ms: no
//!    pre-copy can converge) moved back and forth between the two
//!    hubs; median/min/max downtime against the targets (5 ms and 2 ms) and
//!    against a plain in-process copy of the same memory into freshly
//!    allocated pages (page faults included), measured between the moves.
//!    The downtime is the time the function did not run: from its pause on
//!    the source to its resume on the destination, which happens at the
//!    seal with its effects held until the commit, plus any time it waited
//!    there to show an effect; "effects held" is resume → effects let out.
//! 2. Throughput: the first move of a freshly deployed `hotheap 64 4` (64 MiB,
//!    a 4 KiB hot set: memory that stands still) to a hub that holds none of
//!    its chunks but has the module compiled (`memory_bytes / total_micros`), against a
//!    raw tokio TCP copy of as many bytes on 127.0.0.1 (1 MiB writes, the
//!    reader reads everything), in this process, right after the move.
//! 3. Mutual TLS: the same first move on a plaintext pair (`--insecure`) and
//!    on a TLS pair (the second hub joined the first's cluster), alternating;
//!    the ratio of their rates.
//!
//! Parts 1 and 2 run hubs as users do, with mutual TLS.
//!
//! The hubs are the `ferry` binary of the dev profile (`target/debug/ferry`,
//! or `$FERRY_BIN`): build it first with `cargo build -p ferry-hub --bins`.
//! In that profile the hub, migrator and proto crates and every dependency
//! are optimized (opt-level 2); this process is built in the bench profile.
//!
//! Run: `cargo bench -p ferry-integration-tests --bench migration`
//! (`-- --moves N --trials N` to change the number of moves per function and
//! of throughput trials, `--only downtime|throughput|tls` for one part).

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use ferry_integration_tests::moves::{migrate, running_on, wait_peer_up};
use ferry_integration_tests::{HubOptions, HubProcess, eventually, expect_success, ferry_binary, guest};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Safety net against a hung hub, not a performance requirement.
const PATIENCE: Duration = Duration::from_secs(120);
const MIB: usize = 1 << 20;
const HUB_NAMES: [&str; 2] = ["bench-a", "bench-b"];
/// Plain copies of the memory measured after every move (the baseline).
const COPIES_PER_MOVE: usize = 3;
/// Raw TCP copies per throughput trial; the median is compared.
const RAW_COPIES: usize = 3;
/// How long a function runs on its new hub before it moves again.
const BETWEEN_MOVES: Duration = Duration::from_millis(500);

struct Options {
    moves: usize,
    trials: usize,
    /// `downtime`, `throughput`, or both (the default).
    only: Option<String>,
}

impl Options {
    fn parse() -> anyhow::Result<Options> {
        let mut options = Options {
            moves: 6,
            trials: 3,
            only: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut number = |flag: &str| -> anyhow::Result<usize> {
                args.next()
                    .and_then(|value| value.parse().ok())
                    .filter(|value| *value > 0)
                    .with_context(|| format!("{flag} needs a positive number"))
            };
            match arg.as_str() {
                "--moves" => options.moves = number("--moves")?,
                "--trials" => options.trials = number("--trials")?,
                "--only" => match args.next().as_deref() {
                    Some(part @ ("downtime" | "throughput" | "tls")) => options.only = Some(part.to_owned()),
                    _ => bail!("--only needs downtime, throughput or tls"),
                },
                // `cargo bench` passes `--bench`.
                _ => {}
            }
        }
        Ok(options)
    }
}

/// One function's case in the downtime part.
struct Case {
    name: &'static str,
    /// Example guest and its arguments.
    module: &'static str,
    guest_args: &'static [&'static str],
    mib: usize,
    deploy_args: &'static [&'static str],
    target_ms: f64,
}

const CASES: [Case; 3] = [
    // The target's case: 64 MiB of heap, a 256 KiB hot set rewritten every 10 ms.
    Case {
        name: "hot64",
        module: "examples/hotheap.wasm",
        guest_args: &["64", "256", "0"],
        mib: 64,
        deploy_args: &["--memory-limit", "256MiB"],
        target_ms: 5.0,
    },
    Case {
        name: "hot1",
        module: "examples/hotheap.wasm",
        guest_args: &["1", "64", "0"],
        mib: 1,
        deploy_args: &[],
        target_ms: 2.0,
    },
    // The worst case: 4096 random words over all 64 MiB every 100 ms, so
    // every chunk is dirty again by the next round and pre-copy cannot
    // converge.
    Case {
        name: "big64",
        module: "examples/bigheap.wasm",
        guest_args: &["64", "0"],
        mib: 64,
        deploy_args: &["--memory-limit", "256MiB"],
        target_ms: 5.0,
    },
];

fn main() -> anyhow::Result<()> {
    if std::env::var_os("FERRY_BIN").is_none() {
        return ferry_integration_tests::rerun_with_dev_ferry();
    }
    let options = Options::parse()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(options))
}

async fn run(options: Options) -> anyhow::Result<()> {
    let binary = ferry_binary();
    println!(
        "hubs: {} ({}), this process: {} profile",
        binary.display(),
        profile_of(&binary),
        if cfg!(debug_assertions) { "dev" } else { "bench" }
    );
    println!(
        "guests: {}, {}\n",
        guest("examples/hotheap.wasm").display(),
        guest("examples/bigheap.wasm").display()
    );

    let part = |name: &str| options.only.as_deref().is_none_or(|only| only == name);
    let mut downtime_ratios = Vec::new();
    if part("downtime") {
        let hubs = pair(true).await?;
        for case in &CASES {
            downtime_ratios.push(downtime(&hubs, case, options.moves).await?);
        }
    }
    let throughput_ratios = if part("throughput") {
        throughput(options.trials).await?
    } else {
        Vec::new()
    };
    let tls_ratios = if part("tls") {
        tls_cost(options.trials).await?
    } else {
        Vec::new()
    };

    println!("\n## Summary (ratios of this run)\n");
    for (case, ratios) in CASES.iter().zip(&downtime_ratios) {
        println!(
            "{:>7}: median downtime / target {:.1} ms = {:.1} (target met: {}), median downtime / plain copy = {:.1}",
            case.name,
            case.target_ms,
            ratios.0,
            if ratios.0 <= 1.0 { "yes" } else { "no" },
            ratios.1
        );
    }
    if !throughput_ratios.is_empty() {
        let mut sorted = throughput_ratios.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "throughput migration / raw TCP: {} (median {:.3}; target >= 0.8 met: {})",
            throughput_ratios
                .iter()
                .map(|ratio| format!("{ratio:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            median_f64(&sorted),
            if median_f64(&sorted) >= 0.8 { "yes" } else { "no" }
        );
    }
    if !tls_ratios.is_empty() {
        let mut sorted = tls_ratios.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "move throughput with mutual TLS / plaintext: {} (median {:.3}; goal >= 0.85 met: {})",
            tls_ratios
                .iter()
                .map(|ratio| format!("{ratio:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            median_f64(&sorted),
            if median_f64(&sorted) >= 0.85 { "yes" } else { "no" }
        );
    }
    Ok(())
}

fn profile_of(binary: &std::path::Path) -> String {
    match binary
        .parent()
        .and_then(|dir| dir.file_name())
        .and_then(|name| name.to_str())
    {
        Some("debug") => "dev profile: hub, migrator, proto and all dependencies at opt-level 2".to_owned(),
        Some(other) => format!("{other} profile"),
        None => "unknown".to_owned(),
    }
}

/// Two hubs on loopback that know each other by `--peer`, without periodic
/// checkpoints, each seeing the other up. `secure`: as users run them, the
/// second joined the first's cluster and every connection is mutual TLS;
/// else both run `--insecure` (plaintext).
async fn pair(secure: bool) -> anyhow::Result<[HubProcess; 2]> {
    let addresses = [
        ferry_integration_tests::moves::free_loopback_address(),
        ferry_integration_tests::moves::free_loopback_address(),
    ];
    let mut hubs: Vec<HubProcess> = Vec::new();
    for (index, address) in addresses.iter().enumerate() {
        let peer = addresses[1 - index].to_string();
        let options = HubOptions::named(HUB_NAMES[index]).listen(*address);
        let options = match secure {
            false => options.args(["--peer", &peer]),
            true => ferry_integration_tests::moves::in_cluster(options, hubs.first())?.args(["--peer", &peer]),
        };
        hubs.push(HubProcess::start(options.args(["--checkpoint-interval", "0s"])).await?);
    }
    for (index, hub) in hubs.iter().enumerate() {
        wait_peer_up(hub, HUB_NAMES[1 - index], PATIENCE).await?;
    }
    let [a, b]: [HubProcess; 2] = hubs.try_into().map_err(|_| anyhow::anyhow!("two hubs"))?;
    Ok([a, b])
}

/// Deploys `module ARGS` (bigheap or hotheap) as `name` on `hub` and waits
/// until it has filled its heap and finished two rounds of writes.
async fn deploy_heap(
    hub: &HubProcess,
    name: &str,
    module: &str,
    guest_args: &[&str],
    deploy_args: &[&str],
) -> anyhow::Result<()> {
    let path = guest(module);
    let mut command = vec!["deploy", path.to_str().context("guest path")?, "--name", name];
    command.extend_from_slice(deploy_args);
    command.push("--");
    command.extend_from_slice(guest_args);
    expect_success(hub.ferry(&command));
    eventually(&format!("{name} to finish its second round"), PATIENCE, || async {
        let output = hub.ferry(&["logs", name]);
        (output.status.success() && String::from_utf8_lossy(&output.stdout).contains("round 2 checksum")).then_some(())
    })
    .await
}

/// Waits until `name` runs on hub `index` and on no other.
async fn settle(hubs: &[HubProcess; 2], name: &str, index: usize) -> anyhow::Result<()> {
    let all: Vec<&HubProcess> = hubs.iter().collect();
    eventually(
        &format!("{name} to run on {} only", HUB_NAMES[index]),
        PATIENCE,
        || async { (running_on(&all, name) == vec![index]).then_some(()) },
    )
    .await
}

/// A summary field that must be a number.
fn field(summary: &Value, key: &str) -> anyhow::Result<u64> {
    summary[key]
        .as_u64()
        .with_context(|| format!("migrate summary field {key:?} is not a number in {summary}"))
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn median_u64(sorted: &[u64]) -> f64 {
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) as f64 / 2.0
    } else {
        sorted[middle] as f64
    }
}

fn median_f64(sorted: &[f64]) -> f64 {
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

/// Memory that is not all zeros (a copy of zero pages could be cheaper).
fn pattern(bytes: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut memory = vec![0u8; bytes];
    for word in memory.chunks_mut(8) {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
    }
    memory
}

/// A plain copy of `source` into freshly allocated memory: `calloc` hands
/// out untouched pages, so the copy pays their page faults, like a restore.
fn plain_copy(source: &[u8]) -> Duration {
    let started = Instant::now();
    let mut destination = vec![0u8; source.len()];
    destination.copy_from_slice(source);
    let elapsed = started.elapsed();
    std::hint::black_box(&destination);
    elapsed
}

/// Moves one function back and forth; prints every move and the medians.
/// Returns (median downtime / target, median downtime / median plain copy).
async fn downtime(hubs: &[HubProcess; 2], case: &Case, moves: usize) -> anyhow::Result<(f64, f64)> {
    println!(
        "## Downtime: {} {} ({}), {moves} moves between {} and {}\n",
        case.module,
        case.guest_args.join(" "),
        case.name,
        HUB_NAMES[0],
        HUB_NAMES[1]
    );
    deploy_heap(&hubs[0], case.name, case.module, case.guest_args, case.deploy_args).await?;
    let source = pattern(case.mib * MIB);
    let mut copies = Vec::new();
    let mut summaries = Vec::new();
    println!(
        "| move | rounds | memory | offered | dedup | sent | total ms | downtime ms | final round | prepare | start | effects held | rest |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut owner = 0;
    for number in 1..=moves {
        let to = 1 - owner;
        let summary = migrate(&hubs[owner], case.name, HUB_NAMES[to])
            .with_context(|| format!("move {number} of {}", case.name))?;
        ensure!(summary["start_confirmed"] == true, "start not confirmed: {summary}");
        ensure!(summary["to_hub"] == HUB_NAMES[to], "moved elsewhere: {summary}");
        settle(hubs, case.name, to).await?;
        let downtime = field(&summary, "downtime_micros")?;
        let final_round = field(&summary, "final_round_micros")?;
        let prepare = field(&summary, "prepare_micros")?;
        let start = field(&summary, "start_micros")?;
        // A function that ran on the destination from the seal: prepare and
        // start happened beside it, outside the downtime.
        let held = field(&summary, "effects_held_micros")?;
        let inside = if held > 0 {
            final_round
        } else {
            final_round + prepare + start
        };
        println!(
            "| {number} {}→{} | {} | {:.1} MB | {:.1} MB | {:.1} MB | {:.1} MB | {:.1} | **{:.1}** | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            HUB_NAMES[owner],
            HUB_NAMES[to],
            field(&summary, "rounds")?,
            field(&summary, "memory_bytes")? as f64 / 1e6,
            field(&summary, "bytes_offered")? as f64 / 1e6,
            field(&summary, "bytes_deduplicated")? as f64 / 1e6,
            field(&summary, "bytes_sent")? as f64 / 1e6,
            ms(field(&summary, "total_micros")?),
            ms(downtime),
            ms(final_round),
            ms(prepare),
            ms(start),
            ms(held),
            ms(downtime.saturating_sub(inside)),
        );
        summaries.push(summary);
        owner = to;
        // The baseline, measured between the moves while the function runs.
        let pause_started = Instant::now();
        for _ in 0..COPIES_PER_MOVE {
            copies.push(plain_copy(&source).as_micros() as u64);
        }
        tokio::time::sleep(BETWEEN_MOVES.saturating_sub(pause_started.elapsed())).await;
    }
    expect_success(hubs[owner].ferry(&["rm", case.name]));

    let sorted = |key: &str| -> anyhow::Result<Vec<u64>> {
        let mut values = summaries
            .iter()
            .map(|summary| field(summary, key))
            .collect::<anyhow::Result<Vec<u64>>>()?;
        values.sort_unstable();
        Ok(values)
    };
    let downtimes = sorted("downtime_micros")?;
    let median = median_u64(&downtimes) / 1000.0;
    copies.sort_unstable();
    let copy = median_u64(&copies) / 1000.0;
    println!(
        "\ndowntime over {moves} moves: median {median:.1} ms, min {:.1} ms, max {:.1} ms \
         (medians: final round {:.1} ms, prepare {:.1} ms, start {:.1} ms, effects held {:.1} ms)",
        ms(downtimes[0]),
        ms(*downtimes.last().expect("at least one move")),
        median_u64(&sorted("final_round_micros")?) / 1000.0,
        median_u64(&sorted("prepare_micros")?) / 1000.0,
        median_u64(&sorted("start_micros")?) / 1000.0,
        median_u64(&sorted("effects_held_micros")?) / 1000.0,
    );
    println!(
        "plain copy of {} MiB into fresh memory: median {copy:.2} ms, min {:.2} ms ({} copies between the moves)",
        case.mib,
        ms(copies[0]),
        copies.len()
    );
    let ratios = (median / case.target_ms, median / copy);
    println!(
        "ratio median downtime / target {:.1} ms: **{:.1}**; median downtime / plain copy: **{:.1}**\n",
        case.target_ms, ratios.0, ratios.1
    );
    Ok(ratios)
}

/// Copies `bytes` over a fresh TCP connection on 127.0.0.1 between a
/// listener and a client of this process, in 1 MiB writes; the time from
/// connecting until the reader has read the last byte.
async fn raw_tcp_copy(payload: &[u8], bytes: u64) -> anyhow::Result<Duration> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let mut buffer = vec![0u8; MIB];
        let mut received = 0u64;
        loop {
            let read = stream.read(&mut buffer).await?;
            if read == 0 {
                return Ok::<u64, std::io::Error>(received);
            }
            received += read as u64;
        }
    });
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let mut left = bytes;
    while left > 0 {
        let write = left.min(payload.len() as u64) as usize;
        stream.write_all(&payload[..write]).await?;
        left -= write as u64;
    }
    stream.shutdown().await?;
    let received = reader.await??;
    let elapsed = started.elapsed();
    ensure!(received == bytes, "the reader got {received} of {bytes} bytes");
    Ok(elapsed)
}

/// The first move of a freshly deployed 64 MiB function to a fresh hub, then
/// raw TCP copies of as many bytes; `trials` times, each on a new pair of
/// hubs (hotheap is deterministic: a hub that took part in an earlier trial
/// could hold some of its chunks). Returns the ratios migration / raw.
/// The first move of a freshly deployed `hotheap 64 4` to a new pair's
/// other hub (which has the module compiled): the move's summary.
async fn fresh_move(secure: bool) -> anyhow::Result<serde_json::Value> {
    let hubs = pair(secure).await?;
    let name = "fresh64";
    // The destination compiles the module once, before: not what is measured.
    deploy_heap(&hubs[1], "warm", "examples/hotheap.wasm", &["1", "4", "1"], &[])
        .await
        .ok();
    deploy_heap(
        &hubs[0],
        name,
        "examples/hotheap.wasm",
        &["64", "4", "0"],
        CASES[0].deploy_args,
    )
    .await?;
    let summary = migrate(&hubs[0], name, HUB_NAMES[1])?;
    ensure!(summary["start_confirmed"] == true, "start not confirmed: {summary}");
    if field(&summary, "bytes_deduplicated")? != 0 {
        bail!("the destination of a fresh pair held chunks: {summary}");
    }
    settle(&hubs, name, 1).await?;
    Ok(summary)
}

/// What mutual TLS costs a move: the same fresh 64 MiB move on a plaintext
/// pair and on a TLS pair, alternating; the ratio of their rates
/// (`memory / total`) per trial.
async fn tls_cost(trials: usize) -> anyhow::Result<Vec<f64>> {
    println!("## Mutual TLS: first move of a fresh hotheap 64 MiB, TLS pair vs plaintext pair\n");
    println!(
        "| trial | plaintext total ms | TLS total ms | TLS downtime ms (plaintext) | ratio TLS/plaintext throughput |"
    );
    println!("|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for trial in 1..=trials {
        let plain = fresh_move(false)
            .await
            .with_context(|| format!("plaintext trial {trial}"))?;
        let tls = fresh_move(true).await.with_context(|| format!("TLS trial {trial}"))?;
        let rate = |summary: &serde_json::Value| -> anyhow::Result<f64> {
            Ok(field(summary, "memory_bytes")? as f64 / field(summary, "total_micros")? as f64)
        };
        let ratio = rate(&tls)? / rate(&plain)?;
        println!(
            "| {trial} | {:.1} | {:.1} | {:.1} ({:.1}) | **{ratio:.3}** |",
            ms(field(&plain, "total_micros")?),
            ms(field(&tls, "total_micros")?),
            ms(field(&tls, "downtime_micros")?),
            ms(field(&plain, "downtime_micros")?),
        );
        ratios.push(ratio);
    }
    Ok(ratios)
}

async fn throughput(trials: usize) -> anyhow::Result<Vec<f64>> {
    println!("## Throughput: first move of a fresh hotheap 64 MiB (4 KiB hot) vs a raw TCP copy on 127.0.0.1\n");
    println!(
        "| trial | memory | rounds | sent (all rounds) | total ms | migration MB/s (memory/total) | raw TCP ms (median of {RAW_COPIES}) | raw MB/s | ratio migration/raw | sent/total MB/s, ratio to raw |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let payload = pattern(MIB);
    let mut ratios = Vec::new();
    for trial in 1..=trials {
        let summary = fresh_move(true).await.with_context(|| format!("trial {trial}"))?;
        let memory = field(&summary, "memory_bytes")?;
        let total = field(&summary, "total_micros")?;
        let migration = memory as f64 / total as f64;
        let mut raw = Vec::new();
        for _ in 0..RAW_COPIES {
            raw.push(raw_tcp_copy(&payload, memory).await?.as_micros() as u64);
        }
        raw.sort_unstable();
        let raw_micros = median_u64(&raw);
        let raw_rate = memory as f64 / raw_micros;
        let ratio = migration / raw_rate;
        // Not the figure the target is about: every pre-copy round resends
        // what the function rewrote, so the wire carries more than the memory.
        let sent = field(&summary, "bytes_sent")?;
        let wire = sent as f64 / total as f64;
        println!(
            "| {trial} | {:.1} MB | {} | {:.1} MB | {:.1} | {migration:.0} | {:.1} | {raw_rate:.0} | **{ratio:.3}** | {wire:.0}, {:.3} |",
            memory as f64 / 1e6,
            field(&summary, "rounds")?,
            sent as f64 / 1e6,
            ms(total),
            raw_micros / 1000.0,
            wire / raw_rate,
        );
        ratios.push(ratio);
    }
    Ok(ratios)
}
