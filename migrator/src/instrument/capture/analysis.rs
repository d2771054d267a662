//! Which functions can be on the stack when an unwind starts.
//!
//! A function may unwind if it calls an unwinding import, or a function that
//! may unwind. An indirect call of type T may reach any function whose
//! address the module takes (element segments, `ref.func`) and whose type is
//! exactly T; a `call_indirect` checks the signature, so nothing else can be
//! called through it.

use std::collections::{HashMap, HashSet};

use wasmparser::{ElementItems, ExternalKind, FuncType, Operator, Parser, Payload, TypeRef};

use super::super::asyncify::UNWINDING_IMPORTS;

/// What the rewrite needs to know of the module.
#[derive(Debug, Default)]
pub(super) struct ModuleInfo {
    /// Entries of the type section (recursion groups flattened).
    pub type_count: u32,
    /// The function type of each type index (`None` for non-function types).
    pub types: Vec<Option<FuncType>>,
    pub imported_functions: u32,
    /// Type index of every function, imported ones first.
    pub function_types: Vec<u32>,
    pub global_count: u32,
    pub memory_count: u32,
    pub table_count: u32,
    /// One entry per local function body.
    pub bodies: Vec<()>,
    /// Functions (imports included) that may start or propagate an unwind.
    pub may_unwind: HashSet<u32>,
    /// Function types an indirect call may unwind through.
    pub unwinding_indirect_types: HashSet<FuncType>,
}

impl ModuleInfo {
    pub fn read(wasm: &[u8]) -> Result<ModuleInfo, wasmparser::BinaryReaderError> {
        let mut info = ModuleInfo::default();
        let mut unwinding_imports = HashSet::new();
        let mut address_taken: HashSet<u32> = HashSet::new();
        // Per local function: direct callees and the types it calls indirectly.
        let mut direct: Vec<Vec<u32>> = Vec::new();
        let mut indirect: Vec<Vec<u32>> = Vec::new();
        for payload in Parser::new(0).parse_all(wasm) {
            match payload? {
                Payload::TypeSection(reader) => {
                    for group in reader {
                        for sub_type in group?.into_types() {
                            info.types.push(match &sub_type.composite_type.inner {
                                wasmparser::CompositeInnerType::Func(func) => Some(func.clone()),
                                _ => None,
                            });
                        }
                    }
                    info.type_count = info.types.len() as u32;
                }
                Payload::ImportSection(reader) => {
                    for import in reader.into_imports() {
                        let import = import?;
                        match import.ty {
                            TypeRef::Func(type_index) => {
                                if UNWINDING_IMPORTS
                                    .iter()
                                    .any(|(module, name)| *module == import.module && *name == import.name)
                                {
                                    unwinding_imports.insert(info.imported_functions);
                                }
                                info.function_types.push(type_index);
                                info.imported_functions += 1;
                            }
                            TypeRef::Global(_) => info.global_count += 1,
                            TypeRef::Memory(_) => info.memory_count += 1,
                            TypeRef::Table(_) => info.table_count += 1,
                            _ => {}
                        }
                    }
                }
                Payload::FunctionSection(reader) => {
                    for type_index in reader {
                        info.function_types.push(type_index?);
                    }
                }
                Payload::MemorySection(reader) => info.memory_count += reader.count(),
                Payload::TableSection(reader) => info.table_count += reader.count(),
                Payload::GlobalSection(reader) => info.global_count += reader.count(),
                Payload::ExportSection(reader) => {
                    for export in reader {
                        let export = export?;
                        if export.kind == ExternalKind::Func {
                            // An exported function can reach a table through the host.
                            address_taken.insert(export.index);
                        }
                    }
                }
                Payload::ElementSection(reader) => {
                    for element in reader {
                        match element?.items {
                            ElementItems::Functions(functions) => {
                                for function in functions {
                                    address_taken.insert(function?);
                                }
                            }
                            ElementItems::Expressions(_, expressions) => {
                                for expression in expressions {
                                    for operator in expression?.get_operators_reader() {
                                        if let Operator::RefFunc { function_index } = operator? {
                                            address_taken.insert(function_index);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                Payload::CodeSectionEntry(body) => {
                    info.bodies.push(());
                    let (mut calls, mut calls_indirectly) = (Vec::new(), Vec::new());
                    for operator in body.get_operators_reader()? {
                        match operator? {
                            Operator::Call { function_index } | Operator::ReturnCall { function_index } => {
                                calls.push(function_index)
                            }
                            Operator::CallIndirect { type_index, .. }
                            | Operator::ReturnCallIndirect { type_index, .. } => calls_indirectly.push(type_index),
                            Operator::RefFunc { function_index } => {
                                address_taken.insert(function_index);
                            }
                            _ => {}
                        }
                    }
                    direct.push(calls);
                    indirect.push(calls_indirectly);
                }
                _ => {}
            }
        }
        info.solve(unwinding_imports, &address_taken, &direct, &indirect);
        Ok(info)
    }

    fn func_type(&self, type_index: u32) -> Option<&FuncType> {
        self.types.get(type_index as usize).and_then(Option::as_ref)
    }

    /// Fixpoint: a function may unwind when a callee (direct, or any
    /// same-typed address-taken function for an indirect call) may.
    fn solve(
        &mut self,
        unwinding_imports: HashSet<u32>,
        address_taken: &HashSet<u32>,
        direct: &[Vec<u32>],
        indirect: &[Vec<u32>],
    ) {
        let mut may_unwind = unwinding_imports;
        let mut by_type: HashMap<FuncType, Vec<u32>> = HashMap::new();
        for &function in address_taken {
            if let Some(ty) = self
                .function_types
                .get(function as usize)
                .and_then(|&type_index| self.func_type(type_index))
            {
                by_type.entry(ty.clone()).or_default().push(function);
            }
        }
        let mut unwinding_types: HashSet<FuncType> = HashSet::new();
        loop {
            let mut changed = false;
            for (ty, functions) in &by_type {
                if !unwinding_types.contains(ty) && functions.iter().any(|function| may_unwind.contains(function)) {
                    unwinding_types.insert(ty.clone());
                    changed = true;
                }
            }
            for (local, (calls, indirect_types)) in direct.iter().zip(indirect).enumerate() {
                let function = self.imported_functions + local as u32;
                if may_unwind.contains(&function) {
                    continue;
                }
                let reaches = calls.iter().any(|callee| may_unwind.contains(callee))
                    || indirect_types.iter().any(|&type_index| {
                        self.func_type(type_index)
                            .is_some_and(|ty| unwinding_types.contains(ty))
                    });
                if reaches {
                    may_unwind.insert(function);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        self.may_unwind = may_unwind;
        self.unwinding_indirect_types = unwinding_types;
    }

    /// Whether a call to `function` may unwind.
    pub fn call_may_unwind(&self, function: u32) -> bool {
        self.may_unwind.contains(&function)
    }

    /// Whether a `call_indirect` of type `type_index` may unwind.
    pub fn indirect_call_may_unwind(&self, type_index: u32) -> bool {
        self.func_type(type_index)
            .is_some_and(|ty| self.unwinding_indirect_types.contains(ty))
    }

    /// Parameter and result counts of a function type.
    pub fn signature(&self, type_index: u32) -> Option<&FuncType> {
        self.func_type(type_index)
    }
}
