//! Stack capture: Binaryen's Asyncify, run through the `wasm-opt` crate.
//!
//! Asyncify rewrites every function that can reach one of the listed
//! imports so that the host can *unwind* the guest from inside such an import
//! (every frame saves its locals and returns) and later *rewind* it (every
//! frame restores its locals and re-enters the call it was in). Its save area
//! lives in a secondary memory of its own, exported as
//! [`STACK_MEMORY_EXPORT`], so it can never alias memory the guest's
//! allocator owns.

use std::io::Write as _;

use walrus::{ExportItem, Module};
use wasm_opt::{Feature, OptimizationOptions, Pass};

use super::{InstrumentError, PREEMPT_IMPORT, RESERVED_IMPORT_MODULE};

/// Export name of the memory holding Asyncify's save area.
pub const STACK_MEMORY_EXPORT: &str = "__ferry_stack";
/// Size of that memory in wasm pages (fixed: Asyncify declares it min = max).
/// 16 MiB: twice the native stack the hub gives a guest (8 MiB), and a saved
/// frame (the function's locals and a call index) is smaller than the native
/// frame it comes from, so a stack that runs always fits. Only the pages a
/// capture writes are ever touched.
pub const STACK_MEMORY_PAGES: u32 = 256;

/// Imports from inside which the host may unwind the guest.
pub const UNWINDING_IMPORTS: &[(&str, &str)] = &[
    (RESERVED_IMPORT_MODULE, PREEMPT_IMPORT),
    (RESERVED_IMPORT_MODULE, "sleep_ms"),
    (RESERVED_IMPORT_MODULE, "recv"),
    // Waiting for a message's outcome: unwound for a capture, the outcome
    // kept by the hub until the call is replayed.
    (RESERVED_IMPORT_MODULE, "call"),
    (RESERVED_IMPORT_MODULE, "send"),
    ("wasi_snapshot_preview1", "poll_oneoff"),
    ("wasi_snapshot_preview1", "sched_yield"),
];

/// Runs Asyncify (and Binaryen's optimizer after it, which removes most of
/// what Asyncify adds on paths that never unwind) over `wasm`.
pub(super) fn apply(wasm: &[u8]) -> Result<Vec<u8>, InstrumentError> {
    let binaryen_error = |what: &str, error: &dyn std::fmt::Display| InstrumentError::Asyncify {
        reason: format!("{what}: {error}"),
    };
    let directory = tempfile::tempdir().map_err(|error| binaryen_error("temporary directory", &error))?;
    let input = directory.path().join("in.wasm");
    let output = directory.path().join("out.wasm");
    std::fs::File::create(&input)
        .and_then(|mut file| file.write_all(wasm))
        .map_err(|error| binaryen_error("writing the module for Binaryen", &error))?;

    let imports = UNWINDING_IMPORTS
        .iter()
        .map(|(module, name)| format!("{module}.{name}"))
        .collect::<Vec<_>>()
        .join(",");
    with_features(OptimizationOptions::new_opt_level_2().add_default_passes(false))
        .add_pass(Pass::Asyncify)
        .set_pass_arg("asyncify-imports", &imports)
        .set_pass_arg("asyncify-in-secondary-memory", "")
        .set_pass_arg("asyncify-secondary-memory-size", &STACK_MEMORY_PAGES.to_string())
        .run(&input, &output)
        .map_err(|error| binaryen_error("Binaryen Asyncify", &error))?;
    // A second run optimizes what Asyncify produced.
    with_features(&mut OptimizationOptions::new_opt_level_2())
        .run(&output, &output)
        .map_err(|error| binaryen_error("Binaryen optimizer", &error))?;
    let bytes = std::fs::read(&output).map_err(|error| binaryen_error("reading Binaryen's output", &error))?;
    export_stack_memory(&bytes)
}

/// The WebAssembly features Binaryen may see in a guest (what clang and
/// Wasmer 7 support by default, plus multi-memory for the stack memory).
fn with_features(options: &mut OptimizationOptions) -> &mut OptimizationOptions {
    for feature in [
        Feature::MutableGlobals,
        Feature::MultiMemory,
        Feature::BulkMemory,
        Feature::SignExt,
        Feature::Simd,
        Feature::TruncSat,
        Feature::Multivalue,
    ] {
        options.enable_feature(feature);
    }
    options.debug_info(false)
}

/// Exports Asyncify's secondary memory so the host can save and restore it.
fn export_stack_memory(wasm: &[u8]) -> Result<Vec<u8>, InstrumentError> {
    let mut module = Module::from_buffer(wasm).map_err(|error| InstrumentError::Asyncify {
        reason: format!("re-reading Binaryen's output: {error:#}"),
    })?;
    let exported_memories: Vec<_> = module
        .exports
        .iter()
        .filter_map(|export| match export.item {
            ExportItem::Memory(memory) => Some(memory),
            _ => None,
        })
        .collect();
    let stack_memory = module
        .memories
        .iter()
        .map(|memory| memory.id())
        .find(|memory| !exported_memories.contains(memory))
        .ok_or_else(|| InstrumentError::Asyncify {
            reason: "Binaryen's output has no Asyncify memory".to_owned(),
        })?;
    module.exports.add(STACK_MEMORY_EXPORT, stack_memory);
    Ok(module.emit_wasm())
}
