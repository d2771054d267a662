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
//! such a call), and normal execution pays:
//!
//! - after each such call, one test of the state (did the callee unwind?);
//! - at the start of each block, loop body or `if` arm that contains one, one
//!   test (are we rewinding?); nothing else, and nothing in code that holds
//!   no resume point.
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

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{
    BlockType, CodeSection, ConstExpr, ExportKind, ExportSection, Function, FunctionSection, GlobalSection, GlobalType,
    Instruction, MemArg, MemorySection, MemoryType, Module, RawSection, TypeSection, ValType,
};
use wasmparser::{Parser, Payload, Validator, WasmFeatures};

use super::asyncify::{STACK_MEMORY_EXPORT, STACK_MEMORY_PAGES};

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

/// Asyncify's states, kept in the `state` global.
const STATE_NORMAL: i32 = 0;
const STATE_UNWINDING: i32 = 1;
const STATE_REWINDING: i32 = 2;

/// Indices of what the transform adds to the module.
#[derive(Debug, Clone, Copy)]
struct Added {
    state_global: u32,
    data_global: u32,
    stack_memory: u32,
}

/// Rewrites `wasm` (already carrying preemption points and exported globals).
pub(super) fn apply(wasm: &[u8]) -> Result<(Vec<u8>, CaptureStats), Unsupported> {
    let unsupported = |what: &str, error: &dyn std::fmt::Display| Unsupported(format!("{what}: {error}"));
    let module = analysis::ModuleInfo::read(wasm).map_err(|error| unsupported("reading the module", &error))?;
    let added = Added {
        state_global: module.global_count,
        data_global: module.global_count + 1,
        stack_memory: module.memory_count,
    };

    // Rewrite every function that may unwind; the others are copied.
    let mut validator = Validator::new_with_features(WasmFeatures::all());
    let mut block_types = BlockTypes::new(module.type_count + 2);
    let mut bodies: Vec<Vec<u8>> = Vec::with_capacity(module.bodies.len());
    let mut stats = CaptureStats::default();
    let mut allocations = Default::default();
    let mut local_index = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|error| unsupported("parsing", &error))?;
        let valid = validator
            .payload(&payload)
            .map_err(|error| unsupported("validating", &error))?;
        if let (Payload::CodeSectionEntry(body), wasmparser::ValidPayload::Func(to_validate, _)) = (&payload, valid) {
            let function_index = module.imported_functions + local_index as u32;
            local_index += 1;
            if !module.may_unwind.contains(&function_index) {
                bodies.push(wasm[body.range()].to_vec());
                continue;
            }
            let func_validator = to_validate.into_validator(allocations);
            let (rewritten, resume_points, returned) =
                function::rewrite(&module, added, &mut block_types, func_validator, body.clone())?;
            allocations = returned;
            stats.functions += 1;
            stats.resume_points += resume_points;
            bodies.push(rewritten);
        }
    }
    let bytes = emit(wasm, &module, added, &block_types, &bodies)?;
    Ok((bytes, stats))
}

/// The multi-value block types the rewrite needs, appended to the type
/// section after the module's own types and the two helper types.
pub(super) struct BlockTypes {
    first_index: u32,
    types: Vec<Vec<ValType>>,
}

impl BlockTypes {
    fn new(first_index: u32) -> BlockTypes {
        BlockTypes {
            first_index,
            types: Vec::new(),
        }
    }

    /// The block type `[] -> results`.
    pub(super) fn results(&mut self, results: &[ValType]) -> BlockType {
        match results {
            [] => BlockType::Empty,
            [single] => BlockType::Result(*single),
            many => {
                let position = match self.types.iter().position(|known| known == many) {
                    Some(position) => position,
                    None => {
                        self.types.push(many.to_vec());
                        self.types.len() - 1
                    }
                };
                BlockType::FunctionType(self.first_index + position as u32)
            }
        }
    }
}

/// Writes the module with the rewritten bodies and the added types, globals,
/// memory, helper functions and exports.
fn emit(
    wasm: &[u8],
    info: &analysis::ModuleInfo,
    added: Added,
    block_types: &BlockTypes,
    bodies: &[Vec<u8>],
) -> Result<Vec<u8>, Unsupported> {
    let unsupported = |what: &str, error: &dyn std::fmt::Display| Unsupported(format!("{what}: {error}"));
    let mut reencoder = RoundtripReencoder;
    let mut out = Module::new();
    let helper_types = (info.type_count, info.type_count + 1); // (i32) -> (), () -> ()
    let first_helper = info.imported_functions + info.bodies.len() as u32;
    let mut wrote = Wrote::default();

    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|error| unsupported("parsing", &error))?;
        let id = section_id(&payload);
        if let Some(id) = id {
            add_missing_before(&mut out, id, &mut wrote, info, added, helper_types, first_helper);
        }
        match payload {
            Payload::TypeSection(reader) => {
                let mut types = TypeSection::new();
                reencoder
                    .parse_type_section(&mut types, reader)
                    .map_err(|error| unsupported("types", &error))?;
                append_types(&mut types, block_types);
                out.section(&types);
                wrote.types = true;
            }
            Payload::FunctionSection(reader) => {
                let mut functions = FunctionSection::new();
                reencoder
                    .parse_function_section(&mut functions, reader)
                    .map_err(|error| unsupported("functions", &error))?;
                append_functions(&mut functions, helper_types);
                out.section(&functions);
                wrote.functions = true;
            }
            Payload::MemorySection(reader) => {
                let mut memories = MemorySection::new();
                reencoder
                    .parse_memory_section(&mut memories, reader)
                    .map_err(|error| unsupported("memories", &error))?;
                append_memory(&mut memories);
                out.section(&memories);
                wrote.memories = true;
            }
            Payload::GlobalSection(reader) => {
                let mut globals = GlobalSection::new();
                reencoder
                    .parse_global_section(&mut globals, reader)
                    .map_err(|error| unsupported("globals", &error))?;
                append_globals(&mut globals);
                out.section(&globals);
                wrote.globals = true;
            }
            Payload::ExportSection(reader) => {
                let mut exports = ExportSection::new();
                reencoder
                    .parse_export_section(&mut exports, reader)
                    .map_err(|error| unsupported("exports", &error))?;
                append_exports(&mut exports, added, first_helper);
                out.section(&exports);
                wrote.exports = true;
            }
            Payload::CodeSectionStart { .. } => {
                let mut code = CodeSection::new();
                for body in bodies {
                    code.raw(body);
                }
                append_helper_bodies(&mut code, added);
                out.section(&code);
                wrote.code = true;
            }
            Payload::CodeSectionEntry(_) => {}
            Payload::Version { .. } | Payload::End(_) => {}
            other => {
                if let Some((id, range)) = other.as_section() {
                    out.section(&RawSection { id, data: &wasm[range] });
                }
            }
        }
    }
    add_missing_before(&mut out, u8::MAX, &mut wrote, info, added, helper_types, first_helper);
    Ok(out.finish())
}

/// Which of the sections the rewrite extends were written.
#[derive(Debug, Default)]
struct Wrote {
    types: bool,
    functions: bool,
    memories: bool,
    globals: bool,
    exports: bool,
    code: bool,
}

/// The order sections appear in (the binary format fixes it).
fn order(id: u8) -> u8 {
    match id {
        1 => 1,   // type
        2 => 2,   // import
        3 => 3,   // function
        4 => 4,   // table
        5 => 5,   // memory
        13 => 6,  // tag
        6 => 7,   // global
        7 => 8,   // export
        8 => 9,   // start
        9 => 10,  // element
        12 => 11, // data count
        10 => 12, // code
        11 => 13, // data
        _ => 0,   // custom: anywhere
    }
}

fn section_id(payload: &Payload<'_>) -> Option<u8> {
    match payload {
        Payload::CodeSectionStart { .. } => Some(10),
        Payload::CodeSectionEntry(_) | Payload::Version { .. } | Payload::End(_) => None,
        other => other.as_section().map(|(id, _)| id),
    }
}

/// Writes the extended sections the module lacks, before the section `next`
/// (`u8::MAX`: at the end).
fn add_missing_before(
    out: &mut Module,
    next: u8,
    wrote: &mut Wrote,
    info: &analysis::ModuleInfo,
    added: Added,
    helper_types: (u32, u32),
    first_helper: u32,
) {
    let next_order = if next == u8::MAX { u8::MAX } else { order(next) };
    if next_order == 0 {
        return;
    }
    let _ = info;
    if !wrote.types && next_order > order(1) {
        let mut types = TypeSection::new();
        append_types(&mut types, &BlockTypes::new(0));
        out.section(&types);
        wrote.types = true;
    }
    if !wrote.functions && next_order > order(3) {
        let mut functions = FunctionSection::new();
        append_functions(&mut functions, helper_types);
        out.section(&functions);
        wrote.functions = true;
    }
    if !wrote.memories && next_order > order(5) {
        let mut memories = MemorySection::new();
        append_memory(&mut memories);
        out.section(&memories);
        wrote.memories = true;
    }
    if !wrote.globals && next_order > order(6) {
        let mut globals = GlobalSection::new();
        append_globals(&mut globals);
        out.section(&globals);
        wrote.globals = true;
    }
    if !wrote.exports && next_order > order(7) {
        let mut exports = ExportSection::new();
        append_exports(&mut exports, added, first_helper);
        out.section(&exports);
        wrote.exports = true;
    }
    if !wrote.code && next_order > order(10) {
        let mut code = CodeSection::new();
        append_helper_bodies(&mut code, added);
        out.section(&code);
        wrote.code = true;
    }
}

fn append_types(types: &mut TypeSection, block_types: &BlockTypes) {
    types.ty().function([ValType::I32], []);
    types.ty().function([], []);
    for results in &block_types.types {
        types.ty().function([], results.iter().copied());
    }
}

/// The four helpers, in export order: start_unwind, stop_unwind,
/// start_rewind, stop_rewind.
fn append_functions(functions: &mut FunctionSection, (takes_pointer, takes_nothing): (u32, u32)) {
    functions.function(takes_pointer);
    functions.function(takes_nothing);
    functions.function(takes_pointer);
    functions.function(takes_nothing);
}

fn append_memory(memories: &mut MemorySection) {
    memories.memory(MemoryType {
        minimum: u64::from(STACK_MEMORY_PAGES),
        maximum: Some(u64::from(STACK_MEMORY_PAGES)),
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
}

fn append_globals(globals: &mut GlobalSection) {
    let mutable_i32 = GlobalType {
        val_type: ValType::I32,
        mutable: true,
        shared: false,
    };
    globals.global(mutable_i32, &ConstExpr::i32_const(STATE_NORMAL));
    globals.global(mutable_i32, &ConstExpr::i32_const(0));
}

fn append_exports(exports: &mut ExportSection, added: Added, first_helper: u32) {
    exports.export(STACK_MEMORY_EXPORT, ExportKind::Memory, added.stack_memory);
    for (offset, name) in [
        "asyncify_start_unwind",
        "asyncify_stop_unwind",
        "asyncify_start_rewind",
        "asyncify_stop_rewind",
    ]
    .iter()
    .enumerate()
    {
        exports.export(name, ExportKind::Func, first_helper + offset as u32);
    }
}

/// `asyncify_start_unwind(ptr)`, `asyncify_stop_unwind()`,
/// `asyncify_start_rewind(ptr)`, `asyncify_stop_rewind()`.
fn append_helper_bodies(code: &mut CodeSection, added: Added) {
    let start = |state: i32| {
        let mut function = Function::new([]);
        function
            .instruction(&Instruction::LocalGet(0))
            .instruction(&Instruction::GlobalSet(added.data_global))
            .instruction(&Instruction::I32Const(state))
            .instruction(&Instruction::GlobalSet(added.state_global))
            .instruction(&Instruction::End);
        function
    };
    let stop_unwind = {
        let mut function = Function::new([]);
        // A save area written past its end must never go unnoticed.
        let current = stack_memarg(added, 0);
        let end = stack_memarg(added, 4);
        function
            .instruction(&Instruction::I32Const(STATE_NORMAL))
            .instruction(&Instruction::GlobalSet(added.state_global))
            .instruction(&Instruction::GlobalGet(added.data_global))
            .instruction(&Instruction::I32Load(current))
            .instruction(&Instruction::GlobalGet(added.data_global))
            .instruction(&Instruction::I32Load(end))
            .instruction(&Instruction::I32GtU)
            .instruction(&Instruction::If(BlockType::Empty))
            .instruction(&Instruction::Unreachable)
            .instruction(&Instruction::End)
            .instruction(&Instruction::End);
        function
    };
    let stop_rewind = {
        let mut function = Function::new([]);
        function
            .instruction(&Instruction::I32Const(STATE_NORMAL))
            .instruction(&Instruction::GlobalSet(added.state_global))
            .instruction(&Instruction::End);
        function
    };
    code.function(&start(STATE_UNWINDING));
    code.function(&stop_unwind);
    code.function(&start(STATE_REWINDING));
    code.function(&stop_rewind);
}

/// A memory argument into the save area.
fn stack_memarg(added: Added, offset: u64) -> MemArg {
    MemArg {
        offset,
        align: 0,
        memory_index: added.stack_memory,
    }
}

#[cfg(test)]
mod tests;
