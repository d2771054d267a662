//! Instrumentation time of the corpus modules on one thread against every
//! core, in the same process: what a deploy (and a move's destination that
//! has not seen the module) spends before the compile.
//!
//! Each module is instrumented alternately on a one-thread pool and on the
//! default pool (one thread per core), median of `ROUNDS` each; the two
//! results must be the same bytes.
//!
//! Run: `cargo bench --profile dev -p ferry-migrator --bench instrument`

use std::path::Path;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;
const MODULES: &[&str] = &[
    "integration-tests/corpus/sqlite.wasm",
    "integration-tests/corpus/lua.wasm",
    "integration-tests/corpus/quickjs.wasm",
    "integration-tests/corpus/zstd.wasm",
    "integration-tests/corpus/zlib.wasm",
];

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let every_core = rayon::ThreadPoolBuilder::new().build()?;
    println!(
        "instrumentation on one thread against {} threads, median of {ROUNDS}",
        every_core.current_num_threads()
    );
    println!("  module        one thread   every core   every core / one thread");
    for module in MODULES {
        let wasm = std::fs::read(root.join(module))?;
        let (mut alone, mut shared) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let first = one_thread.install(|| ferry_migrator::instrument(&wasm))?;
            alone.push(started.elapsed());
            let started = Instant::now();
            let second = every_core.install(|| ferry_migrator::instrument(&wasm))?;
            shared.push(started.elapsed());
            anyhow::ensure!(
                first.bytes == second.bytes && first.rewind == second.rewind,
                "{module}: the two pools gave different modules"
            );
        }
        let (alone, shared) = (median(alone), median(shared));
        let name = Path::new(module)
            .file_stem()
            .and_then(|stem| stem.to_str())
            .unwrap_or(module);
        println!(
            "  {name:<12} {:>9.1} ms {:>10.1} ms   {:.2}",
            alone.as_secs_f64() * 1e3,
            shared.as_secs_f64() * 1e3,
            shared.as_secs_f64() / alone.as_secs_f64()
        );
    }
    Ok(())
}
