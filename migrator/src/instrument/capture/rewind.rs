//! The rewind module: every rewind twin, in a module of its own, so that a
//! deploy compiles only what normal execution runs. The hub compiles it in
//! the background and instantiates it, against the main module's instance,
//! only when a stack is rewound (a restore, or the rewind that follows a
//! checkpoint).
//!
//! Its index spaces are the main module's, so the twins' bodies need no
//! renumbering: it copies the main module's types, imports every function,
//! table, memory and global of the main module in index order (the main
//! module exports all of them under [`rewind_export_name`]), and defines the
//! twins after the imported functions, where the main module's numbering put
//! them. An active element segment writes the twins into the main module's
//! twins table, through which run bodies hand over.

use std::borrow::Cow;

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{
    CodeSection, ConstExpr, ElementSection, Elements, EntityType, ExportKind, FunctionSection, ImportSection, Module,
    RawSection,
};
use wasmparser::{Parser, Payload, TypeRef};

use super::{Added, Unsupported};

/// The import module name under which the rewind module imports the main
/// module's exports.
pub const REWIND_IMPORT_MODULE: &str = "ferry-main";
/// Prefix of the main module's exports that only the rewind module uses.
pub const REWIND_EXPORT_PREFIX: &str = "__ferry_rewind_";

/// The main module's export name of one of its functions, tables, memories
/// or globals.
pub(super) fn rewind_export_name(kind: ExportKind, index: u32) -> String {
    let kind = match kind {
        ExportKind::Func => "func",
        ExportKind::Table => "table",
        ExportKind::Memory => "memory",
        ExportKind::Global => "global",
        _ => "other",
    };
    format!("{REWIND_EXPORT_PREFIX}{kind}_{index}")
}

/// The rewind module for `main` (the main module as [`super::module::emit`]
/// wrote it), holding the twins of `twin_types` with `twin_bodies`.
pub(super) fn emit(
    main: &[u8],
    added: Added,
    twin_types: &[u32],
    twin_bodies: &[Vec<u8>],
) -> Result<Vec<u8>, Unsupported> {
    let failed = |what: &str, error: &dyn std::fmt::Display| Unsupported(format!("rewind module, {what}: {error}"));
    let mut reencoder = RoundtripReencoder;
    let mut types: Option<RawSection<'_>> = None;
    // Per kind, every entity of the main module in index order.
    let (mut functions, mut tables, mut memories, mut globals) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for payload in Parser::new(0).parse_all(main) {
        let payload = payload.map_err(|error| failed("parsing", &error))?;
        match payload {
            Payload::TypeSection(reader) => {
                types = Some(RawSection {
                    id: 1,
                    data: &main[reader.range()],
                })
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(|error| failed("imports", &error))?;
                    let entity = reencoder
                        .entity_type(import.ty)
                        .map_err(|error| failed("imports", &error))?;
                    match import.ty {
                        TypeRef::Func(_) => functions.push(entity),
                        TypeRef::Table(_) => tables.push(entity),
                        TypeRef::Memory(_) => memories.push(entity),
                        TypeRef::Global(_) => globals.push(entity),
                        _ => {
                            return Err(Unsupported(
                                "an import of a kind the rewind module cannot mirror".to_owned(),
                            ));
                        }
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for type_index in reader {
                    functions.push(EntityType::Function(
                        type_index.map_err(|error| failed("functions", &error))?,
                    ));
                }
            }
            Payload::TableSection(reader) => {
                for table in reader {
                    let table = table.map_err(|error| failed("tables", &error))?;
                    let ty = reencoder
                        .table_type(table.ty)
                        .map_err(|error| failed("tables", &error))?;
                    tables.push(EntityType::Table(ty));
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(|error| failed("memories", &error))?;
                    let ty = reencoder
                        .memory_type(memory)
                        .map_err(|error| failed("memories", &error))?;
                    memories.push(EntityType::Memory(ty));
                }
            }
            Payload::GlobalSection(reader) => {
                for global in reader {
                    let global = global.map_err(|error| failed("globals", &error))?;
                    let ty = reencoder
                        .global_type(global.ty)
                        .map_err(|error| failed("globals", &error))?;
                    globals.push(EntityType::Global(ty));
                }
            }
            _ => {}
        }
    }
    if functions.len() as u32 != added.first_twin {
        return Err(Unsupported(format!(
            "rewind module: the main module has {} functions, the twins start at {}",
            functions.len(),
            added.first_twin
        )));
    }

    let mut out = Module::new();
    if let Some(types) = &types {
        out.section(types);
    }
    let mut imports = ImportSection::new();
    for (kind, entities) in [
        (ExportKind::Func, &functions),
        (ExportKind::Table, &tables),
        (ExportKind::Memory, &memories),
        (ExportKind::Global, &globals),
    ] {
        for (index, entity) in entities.iter().enumerate() {
            imports.import(REWIND_IMPORT_MODULE, &rewind_export_name(kind, index as u32), *entity);
        }
    }
    out.section(&imports);
    let mut function_section = FunctionSection::new();
    for &type_index in twin_types {
        function_section.function(type_index);
    }
    out.section(&function_section);
    let mut elements = ElementSection::new();
    let twins: Vec<u32> = (added.first_twin..).take(twin_types.len()).collect();
    elements.active(
        Some(added.twins_table),
        &ConstExpr::i32_const(0),
        Elements::Functions(Cow::Owned(twins)),
    );
    out.section(&elements);
    let mut code = CodeSection::new();
    for body in twin_bodies {
        code.raw(body);
    }
    out.section(&code);
    Ok(out.finish())
}
