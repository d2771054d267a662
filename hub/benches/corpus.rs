//! Real programs (the corpus in `integration-tests/corpus/`) on Ferry against
//! wasmtime, every figure a ratio against a baseline measured in this run:
//!
//! - run time of the instrumented module on Ferry's runtime / the same `.wasm`
//!   on wasmtime (the PyPI package, `integration-tests/python/run_wasmtime.py`);
//! - instrumented / plain module on Ferry's Wasmer (Cranelift);
//! - deploy (instrument + compile) / wasmtime's compile of the same `.wasm`,
//!   with the instrumentation and the compile shown apart;
//! - the compile of the rewind module, which a hub does in the background
//!   after a deploy (not part of the deploy; needed before the first
//!   checkpoint or restore, and by a move's destination before the seal).
//!
//! `sqlite_file` writes its database into a directory of its own (a fresh
//! one each run, on the same disk for both runtimes): a volume on Ferry,
//! `--dir` on wasmtime.
//!
//! Run: `cargo bench -p ferry-hub --bench corpus` (`-- --rounds N` for the
//! median of N runs, default 3; `-- PROGRAM...` for some programs only).
//! Needs the venv that `scripts/install-deps` makes (`FERRY_VENV`).

mod common;

use common::{median, run_guest_timed};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_hub::runtime::{GUEST_STACK_BYTES, PreopenSpec};

/// Longer runs than the integration tests use: a few seconds each on wasmtime.
const PROGRAMS: [(&str, &[&str]); 6] = [
    ("sqlite", &["30", "12000"]),
    ("sqlite_file", &["/data/db.sqlite", "40000"]),
    ("lua", &["24", "200000"]),
    ("quickjs", &["16", "60000"]),
    ("zstd", &["24", "8"]),
    ("zlib", &["12", "8"]),
];

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// wasmtime's compile and run of `module`, timed inside its Python process.
fn run_on_wasmtime(python: &Path, module: &Path, args: &[&str], data: Option<&Path>) -> (Duration, Duration) {
    let mut command = Command::new(python);
    command
        .arg(repository().join("integration-tests/python/run_wasmtime.py"))
        .arg("--time");
    if let Some(data) = data {
        command.arg("--dir").arg(format!("{}::/data", data.display()));
    }
    let output = command
        .arg(module)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run_wasmtime.py");
    assert!(
        output.status.success(),
        "wasmtime failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let timing: serde_json::Value = stderr
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .expect("a timing line from run_wasmtime.py");
    let millis = |key: &str| Duration::from_secs_f64(timing[key].as_f64().expect("a number") / 1e3);
    (millis("compile_ms"), millis("run_ms"))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn main() {
    let mut rounds = 3;
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => rounds = args.next().and_then(|n| n.parse().ok()).expect("--rounds N"),
            "--bench" => {}
            other => only.push(other.to_owned()),
        }
    }
    let venv = std::env::var_os("FERRY_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/ferry-venv")))
        .expect("FERRY_VENV or HOME");
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no venv at {}: run scripts/install-deps",
        venv.display()
    );

    wasmer::sys::vm::set_stack_size(GUEST_STACK_BYTES);
    let engine = wasmer::Engine::from(wasmer::sys::Cranelift::default());
    println!(
        "corpus on Ferry (Wasmer {}, Cranelift) against wasmtime, median of {rounds} runs, one after the other",
        wasmer_types::VERSION
    );
    println!(
        "  {:<11} {:>9} {:>9} {:>9} | {:>8} {:>8} {:>8} | {:>9} {:>9} {:>9} {:>9} | {:>8} | {:>9}",
        "program",
        "wasmtime",
        "plain",
        "instr.",
        "instr/wt",
        "instr/pl",
        "cpu i/p",
        "wt-comp",
        "instrum.",
        "compile",
        "deploy",
        "dep/wt",
        "rewind"
    );
    for (name, args) in PROGRAMS {
        if !only.is_empty() && !only.iter().any(|wanted| wanted == name) {
            continue;
        }
        let path = repository().join(format!("integration-tests/corpus/{name}.wasm"));
        let plain_bytes = std::fs::read(&path).expect("corpus module (deploy/examples/build.sh)");

        let started = Instant::now();
        let instrumented_module = ferry_migrator::instrument(&plain_bytes).expect("instrument");
        let instrumenting = started.elapsed();
        let started = Instant::now();
        let instrumented = wasmer::Module::new(&engine, &instrumented_module.bytes).expect("instrumented compiles");
        let compiling = started.elapsed();
        // Compiled in the background after a deploy, needed before a rewind.
        let started = Instant::now();
        if let Some(rewind) = &instrumented_module.rewind {
            wasmer::Module::new(&engine, rewind).expect("rewind module compiles");
        }
        let rewind_compiling = started.elapsed();
        let plain = wasmer::Module::new(&engine, &plain_bytes).expect("plain compiles");

        let (mut wasmtime_runs, mut wasmtime_compiles) = (Vec::new(), Vec::new());
        let (mut plain_runs, mut instrumented_runs) = (Vec::new(), Vec::new());
        let (mut plain_cpu, mut instrumented_cpu) = (Vec::new(), Vec::new());
        // A fresh directory for each run of a program that writes files.
        let volume = || {
            (name == "sqlite_file").then(|| tempfile::tempdir_in(std::env::temp_dir()).expect("a temporary directory"))
        };
        let preopens = |dir: &Option<tempfile::TempDir>| {
            dir.iter()
                .map(|dir| PreopenSpec {
                    guest_path: "/data".to_owned(),
                    host_path: dir.path().to_owned(),
                    writable: true,
                    quota_bytes: Some(1 << 30),
                    // As on a hub: every write is tracked for the checkpoints.
                    volume: true,
                })
                .collect::<Vec<_>>()
        };
        for _ in 0..rounds {
            let dir = volume();
            let (compile, run) = run_on_wasmtime(&python, &path, args, dir.as_ref().map(|dir| dir.path()));
            wasmtime_compiles.push(compile);
            wasmtime_runs.push(run);
            let dir = volume();
            let times = run_guest_timed(&engine, &plain, args, preopens(&dir));
            plain_runs.push(times.wall);
            plain_cpu.push(times.cpu);
            let dir = volume();
            let times = run_guest_timed(&engine, &instrumented, args, preopens(&dir));
            instrumented_runs.push(times.wall);
            instrumented_cpu.push(times.cpu);
        }
        let wasmtime_run = median(wasmtime_runs);
        let wasmtime_compile = median(wasmtime_compiles);
        let plain_run = median(plain_runs);
        let instrumented_run = median(instrumented_runs);
        let cpu_ratio = median(instrumented_cpu).as_secs_f64() / median(plain_cpu).as_secs_f64();
        let deploy = instrumenting + compiling;
        println!(
            "  {name:<11} {:>7.0}ms {:>7.0}ms {:>7.0}ms | {:>7.2}x {:>7.2}x {:>7.2}x | {:>7.0}ms {:>7.0}ms {:>7.0}ms {:>7.0}ms | {:>7.2}x | {:>7.0}ms",
            ms(wasmtime_run),
            ms(plain_run),
            ms(instrumented_run),
            instrumented_run.as_secs_f64() / wasmtime_run.as_secs_f64(),
            instrumented_run.as_secs_f64() / plain_run.as_secs_f64(),
            cpu_ratio,
            ms(wasmtime_compile),
            ms(instrumenting),
            ms(compiling),
            ms(deploy),
            deploy.as_secs_f64() / wasmtime_compile.as_secs_f64(),
            ms(rewind_compiling),
        );
    }
}
