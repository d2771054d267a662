//! The guest slowdown from write tracking, as a ratio against the same
//! guest run without it in this process.
//!
//! `heap_walk 24 40` rewrites nodes at random across a 24 MiB heap (every
//! page written on every pass): the worst case for write protection, where
//! the first write to each page after every re-arm faults once. Two runs of
//! the instrumented module, interleaved, each round:
//! - **plain**: no capture, no tracking;
//! - **tracked**: a capture of one dirty set's changes every 100 ms (what
//!   periodic checkpoints and a move's rounds do), which re-arms write
//!   protection on every page written since the previous one.
//!
//! The tracked run also pays for its captures (wait for a preemption
//! point, unwind, copy out the changed chunks, rewind). Their request →
//! reply times are measured and subtracted to estimate what tracking alone
//! costs (the rewind after each reply is not subtracted, so the estimate
//! errs high).
//!
//! Run: `cargo bench --profile dev -p ferry-hub --bench tracking`

// This bench runs guests with captures, not `common::run_guest`.
#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Discard, median};
use ferry_hub::runtime::{
    CaptureKind, FunctionControl, GUEST_STACK_BYTES, GuestModule, LaunchSpec, MemoryWanted, Outcome, RewindModule,
    TrackingMode, run_to_completion,
};

const ROUNDS: usize = 5;
const CAPTURE_EVERY: Duration = Duration::from_millis(100);
const ARGS: [&str; 2] = ["24", "40"];

fn launch() -> LaunchSpec {
    LaunchSpec {
        name: "tracking".into(),
        args: ARGS.iter().map(|arg| arg.to_string()).collect(),
        environ: Vec::new(),
        memory_limit_bytes: 1 << 30,
        cpu_cap: None,
        governor: None,
        preopens: Ok(Vec::new()),
    }
}

/// One run: its duration, and the request → reply times of its captures.
fn run(engine: &wasmer::Engine, module: &GuestModule, capture: bool) -> (Duration, Vec<Duration>) {
    let control = Arc::new(FunctionControl::default());
    let done = Arc::new(AtomicBool::new(false));
    let capturer = capture.then(|| {
        let control = Arc::clone(&control);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let mut pauses = Vec::new();
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(CAPTURE_EVERY);
                let wanted = MemoryWanted::Changes {
                    set: "bench".into(),
                    chunk_size: 64 * 1024,
                };
                let started = Instant::now();
                let reply = control.request_capture(CaptureKind::Continue, wanted);
                match runtime.block_on(reply) {
                    Ok(Ok(_)) => pauses.push(started.elapsed()),
                    _ => break,
                }
            }
            pauses
        })
    });
    let started = Instant::now();
    let outcome = run_to_completion(engine, module, &launch(), Arc::clone(&control), Arc::new(Discard), None);
    let elapsed = started.elapsed();
    done.store(true, Ordering::SeqCst);
    assert_eq!(outcome, Outcome::Exited(0), "the benchmark guest must succeed");
    let pauses = capturer
        .map(|thread| {
            // A request made as the guest ended is never answered: drop it,
            // so that the capturer sees its reply channel close.
            while !thread.is_finished() {
                drop(control.take_capture_requests());
                std::thread::sleep(Duration::from_millis(5));
            }
            thread.join().expect("capturer")
        })
        .unwrap_or_default();
    (elapsed, pauses)
}

fn main() {
    wasmer::sys::vm::set_stack_size(GUEST_STACK_BYTES);
    let engine = wasmer::Engine::from(wasmer::sys::Cranelift::default());
    let path = format!(
        "{}/../integration-tests/guests/heap_walk.wasm",
        env!("CARGO_MANIFEST_DIR")
    );
    let plain = std::fs::read(path).expect("guest module");
    let instrumented = ferry_migrator::instrument(&plain).expect("instrument");
    let main = wasmer::Module::new(&engine, &instrumented.bytes).expect("compiles");
    let rewind = instrumented.rewind.map(|bytes| {
        let engine = engine.clone();
        Arc::new(RewindModule::new(move || {
            wasmer::Module::new(&engine, &bytes).map_err(|error| error.to_string())
        }))
    });
    let module = GuestModule { main, rewind };
    module.ready_to_rewind().expect("rewind module");
    println!(
        "write tracking: heap_walk {} (random writes over a 24 MiB heap), tracking mode {}, {ROUNDS} rounds, medians",
        ARGS.join(" "),
        TrackingMode::of_this_hub().describe()
    );
    let (mut plain_times, mut tracked_times, mut pauses, mut captures) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for _ in 0..ROUNDS {
        plain_times.push(run(&engine, &module, false).0);
        let (time, round_pauses) = run(&engine, &module, true);
        tracked_times.push(time);
        captures = round_pauses.len();
        pauses.extend(round_pauses);
    }
    let (plain, tracked) = (median(plain_times), median(tracked_times));
    let pause = median(pauses.clone());
    let paused = pause * captures as u32;
    println!("  plain                       : {:>8.1} ms", ms(plain));
    println!(
        "  captures every {} ms        : {:>8.1} ms, {:.3}x plain ({captures} captures)",
        CAPTURE_EVERY.as_millis(),
        ms(tracked),
        tracked.as_secs_f64() / plain.as_secs_f64()
    );
    println!(
        "  capture request -> reply    : median {:.2} ms, worst {:.2} ms",
        ms(pause),
        ms(pauses.iter().copied().max().unwrap_or_default())
    );
    println!(
        "  tracking alone (captured run minus its capture waits): {:.3}x plain (goal <= 1.05)",
        (tracked.saturating_sub(paused)).as_secs_f64() / plain.as_secs_f64()
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
