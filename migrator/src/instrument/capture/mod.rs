//! Stack capture, Ferry's own transform: makes the guest's call stack
//! *unwindable* from inside a blocking import or a preemption point, and
//! *rewindable* later, in the same or a fresh instance.
//!
//! It speaks the same ABI as Binaryen's Asyncify (the fallback in
//! [`super::asyncify`]): exports `asyncify_start_unwind(ptr)`,
//! `asyncify_stop_unwind()`, `asyncify_start_rewind(ptr)` and
//! `asyncify_stop_rewind()`, and keeps the saved frames in a secondary memory
//! exported as [`STACK_MEMORY_EXPORT`], at `ptr = { current, end }`. The
//! hub's runtime cannot tell the two apart.
//!
//! What it does differently is where the cost lands. Asyncify guards every
//! stretch of code between two calls with a check of its state, in every
//! iteration of every loop that can reach an unwind. Here the only resume
//! points are *calls* that can unwind (the preemption point in every loop is
//! such a call), and normal execution pays one test of the state after each
//! such call (did the callee unwind?) and one at function entry; nothing
//! else.
//!
//! **Two bodies.** Every rewritten function gets two: the *run* body, which
//! normal execution runs (the original code, the unwind tests and the save
//! code), and the *rewind* body, its twin, which also holds the skip blocks
//! and dispatches below. A run body entered in the rewinding state calls its
//! twin and returns what it returns; a rewind body calls the twins of the
//! functions it calls directly, so a rewound stack runs in rewind bodies
//! with one frame per function, and a rewind body entered in the normal
//! state (a call made after the rewind ended) calls its run body. Both save
//! and restore the same frame layout, so either can unwind a frame the
//! other restores. The cost moves from every run to the rest of each frame
//! that was rewound: those frames finish in their rewind bodies (as fast as
//! the one-body transform was) and everything they call runs at full
//! speed.
//!
//! **Two modules.** The twins go to a rewind module of their own (see
//! [`rewind`]), so that a deploy compiles only the run bodies; run bodies
//! hand over to their twins through a table that the rewind module fills
//! when it is instantiated, before the first rewind.
//!
//! **Frames hold what is live.** An unwinding call site saves only the
//! locals live after the call ([`liveness`]) and the operand stack below
//! the call's arguments when the callee is a module function (its rewind
//! restores its parameters from its own frame; the arguments are rebuilt
//! as zeros), so the unwind path keeps nothing alive that normal execution
//! would have let die.
//!
//! **Unwind.** After a call returns in the unwinding state, the function
//! branches to its save code, which stores every local (and the resume
//! point's number) as one frame in the save area and returns.
//!
//! **Rewind.** At entry, a function in the rewinding state pops its frame,
//! restores its locals and *dispatches*: every sequence that contains resume
//! points opens, at its start, one block per *entry* (a resume call, or a
//! nested construct holding resume points) that ends right before that
//! entry; the dispatch branches out of the right block, skipping the code in
//! between. The values the operand stack held at the entry are rebuilt from
//! locals: at every entry, the transform copies the stack of its sequence
//! into locals ("spills"; free after Cranelift's SSA construction), and
//! those locals were saved with the frame.
//!
//! Which functions are rewritten: those that can be on the stack when an
//! unwind starts — every function that can reach an unwinding import, where
//! an indirect call of type T can reach only table or `ref.func` functions
//! of exactly type T. Calls to functions that cannot unwind are not resume
//! points.
//!
//! Modules with constructs this transform does not handle (block parameters,
//! exceptions, tail calls that can unwind, reference-typed values at a
//! resume point) are refused with [`Unsupported`]; the caller then uses
//! Asyncify.

mod analysis;
mod function;
mod liveness;
mod module;
mod rewind;

use std::collections::HashMap;

use rayon::prelude::*;
use wasm_encoder::{BlockType, MemArg, ValType};
use wasmparser::{FuncValidatorAllocations, Parser, Payload, Validator, WasmFeatures};

use super::asyncify::{STACK_MEMORY_EXPORT, STACK_MEMORY_PAGES};
pub use rewind::{REWIND_EXPORT_PREFIX, REWIND_IMPORT_MODULE};

/// Why the transform declined a module (the caller falls back to Asyncify).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// What the transform did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Functions given unwind and rewind code.
    pub functions: u32,
    /// Calls after which a function may unwind.
    pub resume_points: u32,
}

/// Functions the transform adds: `asyncify_{start,stop}_{unwind,rewind}`.
const HELPERS: u32 = 4;

/// Asyncify's states, kept in the `state` global.
const STATE_NORMAL: i32 = 0;
const STATE_UNWINDING: i32 = 1;
const STATE_REWINDING: i32 = 2;

/// Indices of what the transform adds to the module.
#[derive(Debug, Clone, Copy)]
pub(super) struct Added {
    state_global: u32,
    data_global: u32,
    stack_memory: u32,
    /// The table of rewind twins, filled when the rewind module is
    /// instantiated.
    twins_table: u32,
    /// Function index of the first twin (in the rewind module, whose imports
    /// are every function of the main module, in order).
    first_twin: u32,
}

/// What [`apply`] makes: the main module and, apart, the rewind module.
#[derive(Debug)]
pub(super) struct Transformed {
    pub main: Vec<u8>,
    pub rewind: Vec<u8>,
    pub stats: CaptureStats,
}

/// Rewrites `wasm` (already carrying preemption points and exported globals).
pub(super) fn apply(wasm: &[u8]) -> Result<Transformed, Unsupported> {
    let unsupported = |what: &str, error: &dyn std::fmt::Display| Unsupported(format!("{what}: {error}"));
    let module = analysis::ModuleInfo::read(wasm).map_err(|error| unsupported("reading the module", &error))?;
    // Every function that may unwind gets a rewind twin, numbered after the
    // module's own functions and the four helpers.
    let first_twin = module.imported_functions + module.bodies.len() as u32 + HELPERS;
    let added = Added {
        state_global: module.global_count,
        data_global: module.global_count + 1,
        stack_memory: module.memory_count,
        twins_table: module.table_count,
        first_twin,
    };

    let mut rewritten_functions: Vec<u32> = module
        .may_unwind
        .iter()
        .copied()
        .filter(|&function| function >= module.imported_functions)
        .collect();
    rewritten_functions.sort_unstable();
    let twins: HashMap<u32, u32> = rewritten_functions.iter().copied().zip(first_twin..).collect();

    // Every function that may unwind is rewritten, the others are copied.
    // Validation of the module runs in order; the functions' own passes on
    // every core: first the plans, then (once the block types of all of
    // them are numbered, in function order) both bodies of each.
    let mut validator = Validator::new_with_features(WasmFeatures::all());
    let mut bodies: Vec<Vec<u8>> = Vec::with_capacity(module.bodies.len());
    let mut to_rewrite = Vec::with_capacity(twins.len());
    let mut local_index = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|error| unsupported("parsing", &error))?;
        let valid = validator
            .payload(&payload)
            .map_err(|error| unsupported("validating", &error))?;
        if let (Payload::CodeSectionEntry(body), wasmparser::ValidPayload::Func(to_validate, _)) = (&payload, valid) {
            let function_index = module.imported_functions + local_index as u32;
            local_index += 1;
            if twins.contains_key(&function_index) {
                to_rewrite.push((bodies.len(), to_validate, body.clone()));
                bodies.push(Vec::new());
            } else {
                bodies.push(wasm[body.range()].to_vec());
            }
        }
    }
    let planned: Vec<Result<(usize, function::Planned<'_>), Unsupported>> = to_rewrite
        .into_par_iter()
        .map_init(
            FuncValidatorAllocations::default,
            |allocations, (slot, to_validate, body)| {
                let validator = to_validate.into_validator(std::mem::take(allocations));
                let (planned, returned) = function::plan_function(&module, added, &twins, validator, &body)?;
                *allocations = returned;
                Ok((slot, planned))
            },
        )
        .collect();
    // The first failure in function order, whichever thread met it first.
    let planned = planned.into_iter().collect::<Result<Vec<_>, _>>()?;
    let mut block_types = BlockTypes::new(module.type_count + 2);
    for (_, function) in &planned {
        function.register_block_types(&mut block_types);
    }
    let rewritten: Vec<Result<function::Rewritten, Unsupported>> = planned
        .par_iter()
        .map(|(_, function)| function.emit(added, &block_types, &twins))
        .collect();
    let mut twin_bodies: Vec<Vec<u8>> = Vec::with_capacity(twins.len());
    let mut stats = CaptureStats::default();
    for ((slot, _), rewritten) in planned.iter().zip(rewritten) {
        let rewritten = rewritten?;
        stats.functions += 1;
        stats.resume_points += rewritten.resume_points;
        bodies[*slot] = rewritten.run;
        twin_bodies.push(rewritten.rewind);
    }
    let twin_types: Vec<u32> = rewritten_functions
        .iter()
        .map(|&function| module.function_types[function as usize])
        .collect();
    let main = module::emit(wasm, &module, added, &block_types, &bodies, twin_types.len() as u32)?;
    let rewind = rewind::emit(&main, added, &twin_types, &twin_bodies)?;
    Ok(Transformed { main, rewind, stats })
}

/// The multi-value block types the rewrite needs, appended to the type
/// section after the module's own types and the two helper types.
pub(super) struct BlockTypes {
    first_index: u32,
    types: Vec<Vec<ValType>>,
}

impl BlockTypes {
    /// Every type added so far, in index order.
    fn all(&self) -> &[Vec<ValType>] {
        &self.types
    }

    fn new(first_index: u32) -> BlockTypes {
        BlockTypes {
            first_index,
            types: Vec::new(),
        }
    }

    /// Adds the block type `[] -> results` if it needs a type of its own
    /// (more than one result) and is not there yet.
    pub(super) fn register(&mut self, results: &[ValType]) {
        if results.len() > 1 && !self.types.iter().any(|known| known == results) {
            self.types.push(results.to_vec());
        }
    }

    /// The block type `[] -> results`; one of more than one result must
    /// have been registered.
    pub(super) fn results(&self, results: &[ValType]) -> Result<BlockType, Unsupported> {
        match results {
            [] => Ok(BlockType::Empty),
            [single] => Ok(BlockType::Result(*single)),
            many => match self.types.iter().position(|known| known == many) {
                Some(position) => Ok(BlockType::FunctionType(self.first_index + position as u32)),
                None => Err(Unsupported(format!("block type {many:?} was not registered"))),
            },
        }
    }
}

/// A memory argument into the save area.
pub(super) fn stack_memarg(added: Added, offset: u64) -> MemArg {
    MemArg {
        offset,
        align: 0,
        memory_index: added.stack_memory,
    }
}

#[cfg(test)]
mod tests;
