//! Instruments a module the way a hub does at deploy and writes the result,
//! with what the rewrite did and how long it took.
//!
//! `cargo run --release -p ferry-migrator --example instrument -- IN.wasm OUT.wasm`

use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: instrument IN.wasm OUT.wasm");
    };
    let wasm = std::fs::read(&input)?;
    let started = Instant::now();
    let instrumented = ferry_migrator::instrument(&wasm)?;
    let elapsed = started.elapsed();
    std::fs::write(&output, &instrumented.bytes)?;
    if let Ok(level) = std::env::var("FERRY_EXPERIMENT_OPT") {
        let started = Instant::now();
        let mut options = match level.as_str() {
            "1" => wasm_opt::OptimizationOptions::new_opt_level_1(),
            "3" => wasm_opt::OptimizationOptions::new_opt_level_3(),
            _ => wasm_opt::OptimizationOptions::new_opt_level_2(),
        };
        for feature in [
            wasm_opt::Feature::MutableGlobals,
            wasm_opt::Feature::MultiMemory,
            wasm_opt::Feature::BulkMemory,
            wasm_opt::Feature::SignExt,
            wasm_opt::Feature::Simd,
            wasm_opt::Feature::TruncSat,
            wasm_opt::Feature::Multivalue,
        ] {
            options.enable_feature(feature);
        }
        options.run(&output, &output)?;
        println!("binaryen -O{level}: {:.2} s", started.elapsed().as_secs_f64());
    }
    println!(
        "{input}: {} -> {} bytes ({:.2}x) in {:.2} s; {:?}",
        wasm.len(),
        instrumented.bytes.len(),
        instrumented.bytes.len() as f64 / wasm.len() as f64,
        elapsed.as_secs_f64(),
        instrumented.stats
    );
    Ok(())
}
