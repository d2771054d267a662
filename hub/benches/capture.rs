//! The cost of making functions capturable, and of capturing them, each as a
//! ratio against a baseline measured in this run.
//!
//! 1. Instrumented vs plain module on the same Wasmer (Cranelift), for four
//!    compute programs: run time, code size, compile time.
//! 2. Through an in-process hub: capture latency (request → snapshot, the
//!    bound on how long a stop or checkpoint waits for a preemption point),
//!    checkpoint bytes vs memory, resume from the store (cached artifact)
//!    vs a plain copy of the same memory, and a suspend of what changed vs
//!    the first suspend of a fresh function.
//!
//! Run: `cargo bench -p ferry-hub --bench capture` (`-- --hub-only`: part 2)

mod common;

use common::{in_process_hub, median, run_guest, wait_for_output};
use std::time::{Duration, Instant};

use ferry_hub::runtime::GUEST_STACK_BYTES;
use ferry_proto::v1::hub_client::HubClient;
use ferry_proto::v1::{CheckpointRequest, DeployRequest, ResumeRequest, SuspendRequest};

const ROUNDS: usize = 3;
/// Suspend-and-resume rounds of the 64 MiB heap (the resume is noisier).
const RESUME_ROUNDS: usize = 7;

fn guest(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).expect("guest module")
}

fn instrumentation_overhead() {
    wasmer::sys::vm::set_stack_size(GUEST_STACK_BYTES);
    let engine = wasmer::Engine::from(wasmer::sys::Cranelift::default());
    let programs: [(&str, &str, &[&str]); 4] = [
        ("primes", "deploy/examples/primes.wasm", &["20000000", "5000000"]),
        ("heap_walk", "integration-tests/guests/heap_walk.wasm", &["24", "10"]),
        (
            "float_math",
            "integration-tests/guests/float_math.wasm",
            &["20", "4000"],
        ),
        (
            "deep_recursion",
            "integration-tests/guests/deep_recursion.wasm",
            &["6000", "12"],
        ),
    ];
    println!(
        "instrumented vs plain module, same Wasmer {} (Cranelift), median of {ROUNDS}",
        wasmer_types::VERSION
    );
    println!(
        "  {:<15} {:>10} {:>10} {:>7}   {:>7}   {:>8}",
        "program", "plain", "instr.", "time", "size", "compile"
    );
    for (name, path, args) in programs {
        let plain_bytes = guest(path);
        let instrumented_bytes = ferry_migrator::instrument(&plain_bytes).expect("instrument").bytes;
        let started = Instant::now();
        let plain = wasmer::Module::new(&engine, &plain_bytes).expect("plain compiles");
        let plain_compile = started.elapsed();
        let started = Instant::now();
        let instrumented = wasmer::Module::new(&engine, &instrumented_bytes).expect("instrumented compiles");
        let instrumented_compile = started.elapsed();
        let (mut plain_times, mut instrumented_times) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            plain_times.push(run_guest(&engine, &plain, args));
            instrumented_times.push(run_guest(&engine, &instrumented, args));
        }
        let (plain_time, instrumented_time) = (median(plain_times), median(instrumented_times));
        println!(
            "  {name:<15} {:>8.0}ms {:>8.0}ms {:>6.2}x   {:>6.2}x   {:>7.2}x",
            plain_time.as_secs_f64() * 1e3,
            instrumented_time.as_secs_f64() * 1e3,
            instrumented_time.as_secs_f64() / plain_time.as_secs_f64(),
            instrumented_bytes.len() as f64 / plain_bytes.len() as f64,
            instrumented_compile.as_secs_f64() / plain_compile.as_secs_f64(),
        );
    }
}

async fn through_a_hub() -> anyhow::Result<()> {
    let (_data_dir, hub) = in_process_hub().await?;
    let mut client = HubClient::connect(format!("http://{}", hub.address)).await?;

    // Capture latency of a CPU-bound function: how long a checkpoint (and so
    // a stop) waits for the next preemption point, plus unwind and copy.
    client
        .deploy(DeployRequest {
            name: "primes".into(),
            module: guest("deploy/examples/primes.wasm"),
            args: vec!["4000000000".into(), "100000000".into()],
            ..Default::default()
        })
        .await?;
    let mut latencies = Vec::new();
    for _ in 0..30 {
        let info = client
            .checkpoint(CheckpointRequest { name: "primes".into() })
            .await?
            .into_inner()
            .checkpoint
            .unwrap_or_default();
        latencies.push(info.capture_micros);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort();
    println!(
        "capture latency of a CPU-bound function over {} checkpoints: median {} us, worst {} us",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );

    // A 64 MiB heap that keeps changing: checkpoint bytes vs memory, then
    // resume from the store vs a plain copy of the same bytes.
    client
        .deploy(DeployRequest {
            name: "bigheap".into(),
            module: guest("deploy/examples/bigheap.wasm"),
            args: vec!["64".into(), "0".into()],
            ..Default::default()
        })
        .await?;
    wait_for_output(&mut client, "bigheap", "round 2 ").await;
    let full = client
        .checkpoint(CheckpointRequest { name: "bigheap".into() })
        .await?
        .into_inner()
        .checkpoint
        .unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let incremental = client
        .checkpoint(CheckpointRequest { name: "bigheap".into() })
        .await?
        .into_inner()
        .checkpoint
        .unwrap_or_default();
    println!(
        "bigheap 64 MiB: memory {} bytes; first checkpoint wrote {} bytes ({:.3} of memory) in {:.1} ms; next one {} bytes ({:.4}) in {:.1} ms, {} of {} chunks unchanged",
        full.memory_bytes,
        full.bytes_written,
        full.bytes_written as f64 / full.memory_bytes as f64,
        full.persist_micros as f64 / 1e3,
        incremental.bytes_written,
        incremental.bytes_written as f64 / incremental.memory_bytes as f64,
        incremental.persist_micros as f64 / 1e3,
        incremental.unchanged_chunks,
        incremental.chunks,
    );
    let mut resume_times = Vec::new();
    let mut copy_times = Vec::new();
    for _ in 0..RESUME_ROUNDS {
        client.suspend(SuspendRequest { name: "bigheap".into() }).await?;
        // The suspend's pack writes reach the disk meanwhile; then the copy
        // and the resume are timed on the same quiet machine.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let memory = vec![7u8; full.memory_bytes as usize];
        let started = Instant::now();
        let copy = std::hint::black_box(memory.clone());
        copy_times.push(started.elapsed());
        drop((memory, copy));
        let started = Instant::now();
        client.resume(ResumeRequest { name: "bigheap".into() }).await?;
        resume_times.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (resume, copy) = (median(resume_times), median(copy_times));
    println!(
        "resume from the store (cached artifact) of {} MiB: {:.1} ms; a plain copy of that memory: {:.1} ms; resume minus copy {:.1} ms",
        full.memory_bytes >> 20,
        resume.as_secs_f64() * 1e3,
        copy.as_secs_f64() * 1e3,
        (resume.saturating_sub(copy)).as_secs_f64() * 1e3,
    );
    suspends_of_changes(&mut client).await?;
    tokio::time::timeout(Duration::from_secs(30), hub.shutdown()).await??;
    Ok(())
}

/// A 64 MiB heap whose writes stay in a 256 KiB hot set: the first suspend
/// of a fresh function (nothing stored: every chunk) against a suspend
/// 300 ms after a resume (only what the resumed run wrote), and the first
/// checkpoint after a resume.
async fn suspends_of_changes(client: &mut HubClient<tonic::transport::Channel>) -> anyhow::Result<()> {
    let mut whole = Vec::new();
    let mut changes = Vec::new();
    let mut checkpoints = Vec::new();
    for round in 0..ROUNDS {
        let name = format!("hot{round}");
        client
            .deploy(DeployRequest {
                name: name.clone(),
                module: guest("deploy/examples/hotheap.wasm"),
                args: vec!["64".into(), "256".into()],
                ..Default::default()
            })
            .await?;
        wait_for_output(client, &name, "filled").await;
        let suspend = |client: &mut HubClient<tonic::transport::Channel>| {
            let name = name.clone();
            let mut client = client.clone();
            async move {
                let started = Instant::now();
                let response = client.suspend(SuspendRequest { name }).await?.into_inner();
                anyhow::Ok((started.elapsed(), response.checkpoint.unwrap_or_default()))
            }
        };
        whole.push(suspend(client).await?);
        client.resume(ResumeRequest { name: name.clone() }).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let checkpoint = client
            .checkpoint(CheckpointRequest { name: name.clone() })
            .await?
            .into_inner()
            .checkpoint
            .unwrap_or_default();
        checkpoints.push(checkpoint);
        tokio::time::sleep(Duration::from_millis(300)).await;
        changes.push(suspend(client).await?);
    }
    let describe = |runs: &[(Duration, ferry_proto::v1::CheckpointInfo)]| {
        let mut sorted = runs.to_vec();
        sorted.sort_by_key(|(time, _)| *time);
        let (time, info) = sorted[sorted.len() / 2];
        (
            time,
            format!(
                "{:.1} ms (capture {:.1} ms, persist {:.1} ms, {} new and {} unchanged of {} chunks)",
                time.as_secs_f64() * 1e3,
                info.capture_micros as f64 / 1e3,
                info.persist_micros as f64 / 1e3,
                info.new_chunks,
                info.unchanged_chunks,
                info.chunks
            ),
        )
    };
    let (whole_time, whole_text) = describe(&whole);
    let (changes_time, changes_text) = describe(&changes);
    println!("hotheap 64 MiB, 256 KiB hot, {ROUNDS} rounds, medians:");
    println!("  first suspend of a fresh function: {whole_text}");
    println!("  suspend 300 ms after a checkpoint of the resumed run: {changes_text}");
    println!(
        "  suspend of changes / first suspend: {:.3}",
        changes_time.as_secs_f64() / whole_time.as_secs_f64()
    );
    checkpoints.sort_by_key(|info| info.capture_micros);
    let middle = &checkpoints[checkpoints.len() / 2];
    println!(
        "  first checkpoint after a resume: capture {:.2} ms, persist {:.1} ms, {} new and {} unchanged of {} chunks",
        middle.capture_micros as f64 / 1e3,
        middle.persist_micros as f64 / 1e3,
        middle.new_chunks,
        middle.unchanged_chunks,
        middle.chunks
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `-- --hub-only` skips the module runs of part 1.
    if std::env::args().all(|arg| arg != "--hub-only") {
        tokio::task::spawn_blocking(instrumentation_overhead).await?;
    }
    through_a_hub().await
}
