//! Writing the rewritten module: the rewritten bodies, and what the
//! transform adds — two helper types and the block types, the four helper
//! functions, the save-area memory, two globals, the exports.

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{
    BlockType, CodeSection, ConstExpr, ExportKind, ExportSection, Function, FunctionSection, GlobalSection, GlobalType,
    Instruction, MemorySection, MemoryType, Module, RawSection, RefType, TableSection, TableType, TypeSection, ValType,
};
use wasmparser::{Parser, Payload};

use super::analysis::ModuleInfo;
use super::rewind::rewind_export_name;
use super::{
    Added, BlockTypes, STACK_MEMORY_EXPORT, STACK_MEMORY_PAGES, STATE_NORMAL, STATE_REWINDING, STATE_UNWINDING,
    Unsupported, stack_memarg,
};

/// Ids of the sections the rewrite extends, in the order the binary format
/// puts them: type, function, table, memory, global, export, code.
const EXTENDED: [u8; 7] = [1, 3, 4, 5, 6, 7, 10];

/// The position of section `id` in the binary format's order (custom
/// sections, which may stand anywhere, are 0).
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
        _ => 0,
    }
}

fn section_id(payload: &Payload<'_>) -> Option<u8> {
    match payload {
        Payload::CodeSectionStart { .. } => Some(10),
        Payload::CodeSectionEntry(_) | Payload::Version { .. } | Payload::End(_) => None,
        other => other.as_section().map(|(id, _)| id),
    }
}

/// Writes the module with the rewritten `bodies` and the additions. Every
/// other section is copied byte for byte.
pub(super) fn emit(
    wasm: &[u8],
    info: &ModuleInfo,
    added: Added,
    block_types: &BlockTypes,
    bodies: &[Vec<u8>],
    twins: u32,
) -> Result<Vec<u8>, Unsupported> {
    let extender = Extender {
        added,
        block_types,
        bodies,
        twins,
        helper_types: (info.type_count, info.type_count + 1),
        first_helper: info.imported_functions + info.bodies.len() as u32,
    };
    let mut out = Module::new();
    // Extended sections not written yet, in order.
    let mut pending: Vec<u8> = EXTENDED.to_vec();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|error| Unsupported(format!("parsing: {error}")))?;
        let Some(id) = section_id(&payload) else {
            continue;
        };
        // Sections the module lacks go before the first one that follows them.
        while let Some(&next) = pending.first()
            && order(id) != 0
            && order(next) < order(id)
        {
            extender.write(&mut out, next, None)?;
            pending.remove(0);
        }
        if let Some(position) = pending.iter().position(|&extended| extended == id) {
            pending.remove(position);
            extender.write(&mut out, id, Some(payload))?;
        } else if let Some((id, range)) = payload.as_section() {
            out.section(&RawSection { id, data: &wasm[range] });
        }
    }
    for id in pending {
        extender.write(&mut out, id, None)?;
    }
    Ok(out.finish())
}

struct Extender<'a> {
    added: Added,
    block_types: &'a BlockTypes,
    bodies: &'a [Vec<u8>],
    /// Number of rewind twins (the size of the twins table).
    twins: u32,
    /// Type indices of `(i32) -> ()` and `() -> ()`.
    helper_types: (u32, u32),
    /// Function index of the first helper.
    first_helper: u32,
}

impl Extender<'_> {
    /// Writes extended section `id`: the module's own entries (from
    /// `existing`, when it has the section), then the additions.
    fn write(&self, out: &mut Module, id: u8, existing: Option<Payload<'_>>) -> Result<(), Unsupported> {
        let failed = |what: &str, error: &dyn std::fmt::Display| Unsupported(format!("{what}: {error}"));
        let mut reencoder = RoundtripReencoder;
        match (id, existing) {
            (1, existing) => {
                let mut types = TypeSection::new();
                if let Some(Payload::TypeSection(reader)) = existing {
                    reencoder
                        .parse_type_section(&mut types, reader)
                        .map_err(|error| failed("types", &error))?;
                }
                types.ty().function([ValType::I32], []);
                types.ty().function([], []);
                for results in self.block_types.all() {
                    types.ty().function([], results.iter().copied());
                }
                out.section(&types);
            }
            (3, existing) => {
                let mut functions = FunctionSection::new();
                if let Some(Payload::FunctionSection(reader)) = existing {
                    reencoder
                        .parse_function_section(&mut functions, reader)
                        .map_err(|error| failed("functions", &error))?;
                }
                // In export order: start_unwind, stop_unwind, start_rewind, stop_rewind.
                let (takes_pointer, takes_nothing) = self.helper_types;
                for type_index in [takes_pointer, takes_nothing, takes_pointer, takes_nothing] {
                    functions.function(type_index);
                }
                out.section(&functions);
            }
            (4, existing) => {
                let mut tables = TableSection::new();
                if let Some(Payload::TableSection(reader)) = existing {
                    reencoder
                        .parse_table_section(&mut tables, reader)
                        .map_err(|error| failed("tables", &error))?;
                }
                // No maximum: Wasmer keeps a funcref table whose size is fixed
                // inside the instance, filled from the module's own segments
                // only, and would never see what the rewind module writes.
                tables.table(TableType {
                    element_type: RefType::FUNCREF,
                    table64: false,
                    minimum: u64::from(self.twins),
                    maximum: None,
                    shared: false,
                });
                out.section(&tables);
            }
            (5, existing) => {
                let mut memories = MemorySection::new();
                if let Some(Payload::MemorySection(reader)) = existing {
                    reencoder
                        .parse_memory_section(&mut memories, reader)
                        .map_err(|error| failed("memories", &error))?;
                }
                memories.memory(MemoryType {
                    minimum: u64::from(STACK_MEMORY_PAGES),
                    maximum: Some(u64::from(STACK_MEMORY_PAGES)),
                    memory64: false,
                    shared: false,
                    page_size_log2: None,
                });
                out.section(&memories);
            }
            (6, existing) => {
                let mut globals = GlobalSection::new();
                if let Some(Payload::GlobalSection(reader)) = existing {
                    reencoder
                        .parse_global_section(&mut globals, reader)
                        .map_err(|error| failed("globals", &error))?;
                }
                let mutable_i32 = GlobalType {
                    val_type: ValType::I32,
                    mutable: true,
                    shared: false,
                };
                globals.global(mutable_i32, &ConstExpr::i32_const(STATE_NORMAL)); // state
                globals.global(mutable_i32, &ConstExpr::i32_const(0)); // data
                out.section(&globals);
            }
            (7, existing) => {
                let mut exports = ExportSection::new();
                if let Some(Payload::ExportSection(reader)) = existing {
                    reencoder
                        .parse_export_section(&mut exports, reader)
                        .map_err(|error| failed("exports", &error))?;
                }
                exports.export(STACK_MEMORY_EXPORT, ExportKind::Memory, self.added.stack_memory);
                let names = [
                    "asyncify_start_unwind",
                    "asyncify_stop_unwind",
                    "asyncify_start_rewind",
                    "asyncify_stop_rewind",
                ];
                for (function, name) in (self.first_helper..).zip(names) {
                    exports.export(name, ExportKind::Func, function);
                }
                // Everything, additions included (each is the last of its
                // kind), for the rewind module to import (see `rewind`).
                let added = self.added;
                for (kind, count) in [
                    (ExportKind::Func, added.first_twin),
                    (ExportKind::Table, added.twins_table + 1),
                    (ExportKind::Memory, added.stack_memory + 1),
                    (ExportKind::Global, added.data_global + 1),
                ] {
                    for index in 0..count {
                        exports.export(&rewind_export_name(kind, index), kind, index);
                    }
                }
                out.section(&exports);
            }
            (10, _) => {
                let mut code = CodeSection::new();
                for body in self.bodies {
                    code.raw(body);
                }
                for helper in helper_bodies(self.added) {
                    code.function(&helper);
                }

                out.section(&code);
            }
            (other, _) => return Err(Unsupported(format!("section {other} is not one the rewrite extends"))),
        }
        Ok(())
    }
}

/// `asyncify_start_unwind(ptr)`, `asyncify_stop_unwind()`,
/// `asyncify_start_rewind(ptr)`, `asyncify_stop_rewind()`.
fn helper_bodies(added: Added) -> [Function; 4] {
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
    [start(STATE_UNWINDING), stop_unwind, start(STATE_REWINDING), stop_rewind]
}
