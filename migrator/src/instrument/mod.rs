//! Deploy-time rewriting of a guest module.
//!
//! The rewrite makes any wasm32-wasi module *preemptible* and *accountable*
//! without changing its source:
//!
//! - **Preemption points.** A countdown global is decremented at every loop
//!   header and at the entry of every function on a call cycle (see
//!   `recursion`); when it reaches zero the guest calls the
//!   host import `ferry.__preempt`, which decides whether the function goes on
//!   (it returns the next countdown) or stops (it traps). Guests pay one
//!   decrement and a well-predicted branch per point, never a host call per
//!   iteration.
//! - **Memory limit.** Every `memory.grow` of the default memory becomes a call
//!   to `ferry.__memory_grow`, so the host can refuse growth beyond the
//!   function's limit with a precise reason instead of a silent `-1`.
//! - **Exported globals.** Every mutable global is exported as
//!   `__ferry_global_<index>`, so its value can be captured and restored.
//! - **Stack capture.** Ferry's own transform (see [`capture`]) lets the host
//!   unwind the guest from inside a preemption point or a blocking call and
//!   rewind it later, in the same or a fresh instance. It speaks Asyncify's
//!   ABI; a module it declines (exception handling, block parameters, tail
//!   calls that may unwind) goes through Binaryen's Asyncify instead
//!   ([`asyncify`]), slower to build and to run but complete.

mod asyncify;
mod capture;
mod globals;
mod preemption;
mod recursion;

pub use asyncify::{STACK_MEMORY_EXPORT, STACK_MEMORY_PAGES, UNWINDING_IMPORTS};
pub use capture::CaptureStats;
pub use capture::{REWIND_EXPORT_PREFIX, REWIND_IMPORT_MODULE};
pub use globals::GLOBAL_EXPORT_PREFIX;

use thiserror::Error;

/// Bumped whenever the rewrite changes, so that cached compiled artifacts of an
/// older rewrite are never used.
pub const INSTRUMENTATION_VERSION: u32 = 9;

/// Import module of the host functions the rewrite adds.
pub const RESERVED_IMPORT_MODULE: &str = "ferry";
/// `(func (result i32))`: called when the countdown expires; returns the next countdown.
pub const PREEMPT_IMPORT: &str = "__preempt";
/// `(func (param i32) (result i32))`: replaces `memory.grow` on the default memory.
pub const MEMORY_GROW_IMPORT: &str = "__memory_grow";

/// A rewritten module and what the rewrite did.
#[derive(Debug, Clone)]
pub struct InstrumentedModule {
    /// The module to deploy and run.
    pub bytes: Vec<u8>,
    /// The rewind module it needs before a stack can be rewound into it
    /// (see `capture`); `None` when Asyncify made a module that rewinds
    /// by itself.
    pub rewind: Option<Vec<u8>>,
    pub stats: InstrumentStats,
}

/// Counts of what the rewrite inserted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstrumentStats {
    /// Functions that got an entry check (those on a call cycle).
    pub functions: u32,
    /// Loop headers that got a check.
    pub loops: u32,
    /// `memory.grow` instructions routed through the host.
    pub memory_grows: u32,
    /// What the stack-capture transform did; `None` when the module needed
    /// Binaryen's Asyncify instead (see [`capture`]).
    pub capture: Option<CaptureStats>,
}

/// Why a module could not be instrumented.
#[derive(Debug, Error)]
pub enum InstrumentError {
    #[error("not a valid WebAssembly module: {reason}")]
    InvalidModule { reason: String },
    #[error("module already imports the reserved name {module}.{name}")]
    ReservedImport { module: String, name: String },
    #[error("module defines no linear memory; Ferry runs wasm32-wasi modules, which export one")]
    NoMemory,
    #[error("64-bit memories are not supported")]
    Memory64,
    #[error("module has a start section; Ferry runs WASI command modules, which start from `_start`")]
    StartSection,
    #[error("stack-capture transform failed: {reason}")]
    Asyncify { reason: String },
}

/// Rewrites `wasm` as described in the module documentation.
pub fn instrument(wasm: &[u8]) -> Result<InstrumentedModule, InstrumentError> {
    let mut module = walrus::Module::from_buffer(wasm).map_err(|err| InstrumentError::InvalidModule {
        reason: format!("{err:#}"),
    })?;
    for import in module.imports.iter() {
        if import.module == RESERVED_IMPORT_MODULE
            && (import.name == PREEMPT_IMPORT || import.name == MEMORY_GROW_IMPORT)
        {
            return Err(InstrumentError::ReservedImport {
                module: import.module.clone(),
                name: import.name.clone(),
            });
        }
    }
    if module.start.is_some() {
        return Err(InstrumentError::StartSection);
    }
    let mut stats = preemption::insert_preemption_points(&mut module)?;
    globals::export_mutable_globals(&mut module);
    let rewritten = module.emit_wasm();
    let (bytes, rewind) = match capture::apply(&rewritten) {
        Ok(transformed) => {
            stats.capture = Some(transformed.stats);
            (transformed.main, Some(transformed.rewind))
        }
        Err(unsupported) => {
            tracing::info!(reason = %unsupported, "module needs Binaryen's Asyncify for stack capture");
            (asyncify::apply(&rewritten)?, None)
        }
    };
    Ok(InstrumentedModule { bytes, rewind, stats })
}

#[cfg(test)]
mod tests;
