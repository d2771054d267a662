//! The rewrite of one function that may unwind: find its resume points and
//! the entries of every sequence (first pass, with wasmparser's validator
//! telling the operand stack's types), then emit the function with skip
//! blocks, dispatches, spills, unwind checks and the save/restore code
//! (second pass). See the parent module for the scheme.

use std::collections::HashMap;

use fixedbitset::FixedBitSet;
use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{BlockType, Function, Instruction, MemArg, ValType};
use wasmparser::{FuncValidator, FuncValidatorAllocations, FunctionBody, Operator, ValidatorResources};

use super::analysis::ModuleInfo;
use super::{Added, BlockTypes, STATE_REWINDING, Unsupported};

/// A place in a sequence the rewind can jump to: a resume call, or a nested
/// construct that holds resume points.
#[derive(Debug)]
struct Entry {
    /// Index of the call or of the construct's opening operator.
    position: usize,
    /// The sequence's own operand stack there, bottom first (for a call, its
    /// arguments included).
    types: Vec<ValType>,
    /// The locals the stack is copied into, one per value in `types`.
    spills: Vec<u32>,
    /// Whether each value is saved with the frame; the others (the
    /// arguments of a call to a function of the module, which restores its
    /// parameters from its own frame) are rebuilt as zeros on rewind, so
    /// that they need not stay live across the call.
    saved: Vec<bool>,
    /// The resume points it covers (textual order numbers), `first..=last`.
    first: u32,
    last: u32,
}

/// A function body, a block or loop body, or one arm of an `if`.
#[derive(Debug, Default)]
struct Sequence {
    entries: Vec<Entry>,
}

/// A construct opened in the first pass, waiting for its `end` to know
/// whether it holds resume points.
#[derive(Debug)]
struct Opened {
    parent: usize,
    position: usize,
    types: Vec<ValType>,
    first_resume: u32,
}

#[derive(Debug)]
struct Frame {
    sequence: usize,
    /// Never executed: opened where its parent was unreachable.
    dead: bool,
    opened: Option<Opened>,
}

/// The plan the first pass makes.
struct Plan<'a> {
    operators: Vec<Operator<'a>>,
    sequences: Vec<Sequence>,
    /// Operator index of a `block`/`loop`/`if`/`else` → the sequence it starts.
    starts: HashMap<usize, usize>,
    /// Operator index of a resume call → its number.
    resume: HashMap<usize, u32>,
    /// Types of all locals, parameters first.
    locals: Vec<ValType>,
    /// Local groups as declared (for the new body's header).
    declared: Vec<(u32, ValType)>,
    /// Spill locals: (nesting level, type, ordinal) → local index.
    spill_locals: HashMap<(usize, ValType, usize), u32>,
    /// Resume call → the original locals live right after it (the only ones
    /// its frame saves).
    live_after: HashMap<usize, FixedBitSet>,
    params: u32,
    results: Vec<ValType>,
}

/// Which of a function's two bodies is being written (see the parent
/// module, "Two bodies").
#[derive(Debug, Clone, Copy)]
pub(super) enum Body {
    /// What normal execution runs: unwind tests after resume calls, no skip
    /// blocks, no dispatch. At entry in the rewinding state it hands over to
    /// its rewind twin, through the twins table (the twin lives in the
    /// rewind module), with its own type.
    Run { twin_slot: u32, type_index: u32 },
    /// Skip blocks and dispatches as well. Entered in the normal state (a
    /// call from another rewind body after the rewind ended), it hands over
    /// to its run twin.
    Rewind { run_twin: u32 },
}

fn encoder_type(ty: wasmparser::ValType) -> Result<ValType, Unsupported> {
    match ty {
        wasmparser::ValType::I32 => Ok(ValType::I32),
        wasmparser::ValType::I64 => Ok(ValType::I64),
        wasmparser::ValType::F32 => Ok(ValType::F32),
        wasmparser::ValType::F64 => Ok(ValType::F64),
        wasmparser::ValType::V128 => Ok(ValType::V128),
        wasmparser::ValType::Ref(_) => Err(Unsupported("a reference-typed local or value".to_owned())),
    }
}

/// A function's two rewritten bodies (run, rewind) and its number of
/// resume points.
pub(super) struct Rewritten {
    pub run: Vec<u8>,
    pub rewind: Vec<u8>,
    pub resume_points: u32,
}

/// One function's first pass done: what [`Planned::emit`] needs to write
/// its two bodies. Planning needs only the module; emitting needs the block
/// types of every function registered first ([`Planned::register_block_types`]),
/// so that both can run on many functions at once and the module still
/// comes out the same, whatever the order they finished in.
pub(super) struct Planned<'a> {
    plan: Plan<'a>,
    function: u32,
    twin_slot: u32,
    type_index: u32,
}

/// The first pass over one function, whose index is `function` and whose
/// rewind twin is `twins[function]`; `twins` maps every rewritten function
/// to its twin. Returns the validator's allocations for reuse.
pub(super) fn plan_function<'a>(
    module: &ModuleInfo,
    added: Added,
    twins: &HashMap<u32, u32>,
    validator: FuncValidator<ValidatorResources>,
    body: &FunctionBody<'a>,
) -> Result<(Planned<'a>, FuncValidatorAllocations), Unsupported> {
    let function = validator.index();
    let rewind_twin = *twins
        .get(&function)
        .ok_or_else(|| Unsupported(format!("function {function} has no rewind twin")))?;
    let type_index = *module
        .function_types
        .get(function as usize)
        .ok_or_else(|| Unsupported(format!("function {function} has no type")))?;
    let twin_slot = rewind_twin - added.first_twin;
    let (plan, allocations) = plan(module, validator, body)?;
    let planned = Planned {
        plan,
        function,
        twin_slot,
        type_index,
    };
    Ok((planned, allocations))
}

impl Planned<'_> {
    /// Adds the multi-value block types the rewind body uses: sequence by
    /// sequence, each one's entries in the order its skip blocks open.
    pub(super) fn register_block_types(&self, block_types: &mut BlockTypes) {
        for sequence in &self.plan.sequences {
            for entry in sequence.entries.iter().rev() {
                block_types.register(&entry.types);
            }
        }
    }

    /// Writes both bodies.
    pub(super) fn emit(
        &self,
        added: Added,
        block_types: &BlockTypes,
        twins: &HashMap<u32, u32>,
    ) -> Result<Rewritten, Unsupported> {
        let (twin_slot, type_index) = (self.twin_slot, self.type_index);
        Ok(Rewritten {
            run: emit(
                &self.plan,
                added,
                block_types,
                Body::Run { twin_slot, type_index },
                twins,
            )?,
            rewind: emit(
                &self.plan,
                added,
                block_types,
                Body::Rewind {
                    run_twin: self.function,
                },
                twins,
            )?,
            resume_points: self.plan.resume.len() as u32,
        })
    }
}

fn error(what: &str, error: &dyn std::fmt::Display) -> Unsupported {
    Unsupported(format!("{what}: {error}"))
}

/// The first pass.
fn plan<'a>(
    module: &ModuleInfo,
    mut validator: FuncValidator<ValidatorResources>,
    body: &FunctionBody<'a>,
) -> Result<(Plan<'a>, FuncValidatorAllocations), Unsupported> {
    let function_type = module
        .function_types
        .get(validator.index() as usize)
        .and_then(|&type_index| module.signature(type_index))
        .ok_or_else(|| Unsupported("a function without a function type".to_owned()))?;
    let mut locals: Vec<ValType> = function_type
        .params()
        .iter()
        .map(|&ty| encoder_type(ty))
        .collect::<Result<_, _>>()?;
    let results: Vec<ValType> = function_type
        .results()
        .iter()
        .map(|&ty| encoder_type(ty))
        .collect::<Result<_, _>>()?;
    let mut declared = Vec::new();
    let mut locals_reader = body.get_locals_reader().map_err(|e| error("locals", &e))?;
    for _ in 0..locals_reader.get_count() {
        let offset = locals_reader.original_position();
        let (count, ty) = locals_reader.read().map_err(|e| error("locals", &e))?;
        validator
            .define_locals(offset, count, ty)
            .map_err(|e| error("locals", &e))?;
        let ty = encoder_type(ty)?;
        declared.push((count, ty));
        locals.extend(std::iter::repeat_n(ty, count as usize));
    }
    let first_new_local = locals.len() as u32 + 2; // after $k and $cur
    let params = function_type.params().len() as u32;

    let mut plan = Plan {
        operators: Vec::new(),
        sequences: vec![Sequence::default()],
        starts: HashMap::new(),
        resume: HashMap::new(),
        locals,
        declared,
        spill_locals: HashMap::new(),
        live_after: HashMap::new(),
        params,
        results,
    };
    let mut frames = vec![Frame {
        sequence: 0,
        dead: false,
        opened: None,
    }];
    let mut next_resume = 0u32;
    let mut spill_count = 0u32;
    let mut reader = body.get_operators_reader().map_err(|e| error("code", &e))?;
    let mut index = 0usize;
    while !reader.eof() {
        let offset = reader.original_position();
        let operator = reader.read().map_err(|e| error("code", &e))?;
        let unreachable = validator.get_control_frame(0).is_none_or(|frame| frame.unreachable);
        let frame_height = validator.get_control_frame(0).map_or(0, |frame| frame.height);
        let frame = frames.last().expect("the function frame");
        let live = !frame.dead && !unreachable;
        let level = frames.len() - 1;
        match &operator {
            Operator::Block { blockty } | Operator::Loop { blockty } | Operator::If { blockty } => {
                if let wasmparser::BlockType::FuncType(type_index) = blockty
                    && module.signature(*type_index).is_some_and(|ty| !ty.params().is_empty())
                {
                    return Err(Unsupported("a block with parameters".to_owned()));
                }
                let opened = if live {
                    Some(Opened {
                        parent: frame.sequence,
                        position: index,
                        types: stack_types(&validator, frame_height)?,
                        first_resume: next_resume,
                    })
                } else {
                    None
                };
                let dead = !live;
                validator.op(offset, &operator).map_err(|e| error("code", &e))?;
                plan.sequences.push(Sequence::default());
                let sequence = plan.sequences.len() - 1;
                plan.starts.insert(index, sequence);
                frames.push(Frame { sequence, dead, opened });
            }
            Operator::Else => {
                validator.op(offset, &operator).map_err(|e| error("code", &e))?;
                plan.sequences.push(Sequence::default());
                let sequence = plan.sequences.len() - 1;
                plan.starts.insert(index, sequence);
                frames.last_mut().expect("an if frame").sequence = sequence;
            }
            Operator::End => {
                validator.op(offset, &operator).map_err(|e| error("code", &e))?;
                if frames.len() > 1 {
                    let frame = frames.pop().expect("checked");
                    if let Some(opened) = frame.opened
                        && next_resume > opened.first_resume
                    {
                        let parent_level = frames.len() - 1;
                        let spills = spill_locals(
                            &mut plan.spill_locals,
                            parent_level,
                            &opened.types,
                            first_new_local,
                            &mut spill_count,
                        );
                        plan.sequences[opened.parent].entries.push(Entry {
                            position: opened.position,
                            saved: vec![true; opened.types.len()],
                            types: opened.types,
                            spills,
                            first: opened.first_resume,
                            last: next_resume - 1,
                        });
                    }
                }
            }
            Operator::Call { function_index }
            | Operator::CallIndirect {
                type_index: function_index,
                ..
            } => {
                let may_unwind = match &operator {
                    Operator::Call { .. } => module.call_may_unwind(*function_index),
                    _ => module.indirect_call_may_unwind(*function_index),
                };
                if may_unwind && live {
                    let types = stack_types(&validator, frame_height)?;
                    let spills = spill_locals(&mut plan.spill_locals, level, &types, first_new_local, &mut spill_count);
                    let saved = saved_operands(module, &operator, types.len());
                    plan.sequences[frame.sequence].entries.push(Entry {
                        position: index,
                        types,
                        spills,
                        saved,
                        first: next_resume,
                        last: next_resume,
                    });
                    plan.resume.insert(index, next_resume);
                    next_resume += 1;
                }
                validator.op(offset, &operator).map_err(|e| error("code", &e))?;
            }
            Operator::ReturnCall { function_index } if module.call_may_unwind(*function_index) => {
                return Err(Unsupported("a tail call that may unwind".to_owned()));
            }
            Operator::ReturnCallIndirect { type_index, .. } if module.indirect_call_may_unwind(*type_index) => {
                return Err(Unsupported("a tail call that may unwind".to_owned()));
            }
            Operator::MemoryInit { .. }
            | Operator::DataDrop { .. }
            | Operator::TableInit { .. }
            | Operator::ElemDrop { .. }
            | Operator::RefFunc { .. } => {
                // The rewind module cannot name the main module's segments
                // or declare its functions.
                return Err(Unsupported(
                    "a segment instruction or ref.func in a function that may unwind".to_owned(),
                ));
            }
            Operator::Try { .. }
            | Operator::TryTable { .. }
            | Operator::Catch { .. }
            | Operator::CatchAll
            | Operator::Delegate { .. } => {
                return Err(Unsupported("exception handling".to_owned()));
            }
            Operator::BrOnNull { .. }
            | Operator::BrOnNonNull { .. }
            | Operator::BrOnCast { .. }
            | Operator::BrOnCastFail { .. } => {
                return Err(Unsupported("reference branches".to_owned()));
            }
            _ => validator.op(offset, &operator).map_err(|e| error("code", &e))?,
        }
        plan.operators.push(operator);
        index += 1;
    }
    plan.live_after = super::liveness::live_after_calls(&plan.operators, &plan.resume, plan.locals.len());
    Ok((plan, validator.into_allocations()))
}

/// Which of the `height` values on the stack at a resume call are saved
/// with the frame: all of them at a call of an import (which may read its
/// arguments again when the call is replayed), all but the arguments at a
/// call of a module function (its rewind restores its parameters from its
/// own frame; the table index of an indirect call is kept).
fn saved_operands(module: &ModuleInfo, operator: &Operator<'_>, height: usize) -> Vec<bool> {
    let mut saved = vec![true; height];
    let (params, above) = match operator {
        Operator::Call { function_index } if *function_index >= module.imported_functions => (
            module
                .function_types
                .get(*function_index as usize)
                .and_then(|&ty| module.signature(ty))
                .map_or(0, |ty| ty.params().len()),
            0,
        ),
        Operator::CallIndirect { type_index, .. } => {
            (module.signature(*type_index).map_or(0, |ty| ty.params().len()), 1)
        }
        _ => (0, 0),
    };
    let end = height.saturating_sub(above);
    for value in saved.iter_mut().take(end).skip(end.saturating_sub(params)) {
        *value = false;
    }
    saved
}

/// The operand stack of the current sequence (above `frame_height`), bottom first.
fn stack_types(
    validator: &FuncValidator<ValidatorResources>,
    frame_height: usize,
) -> Result<Vec<ValType>, Unsupported> {
    let height = validator.operand_stack_height() as usize;
    let mut types = Vec::with_capacity(height.saturating_sub(frame_height));
    for depth in (0..height.saturating_sub(frame_height)).rev() {
        match validator.get_operand_type(depth) {
            Some(Some(ty)) => types.push(encoder_type(ty)?),
            _ => return Err(Unsupported("an operand of unknown type at a resume point".to_owned())),
        }
    }
    Ok(types)
}

/// The spill locals for a stack of `types` at nesting `level` (shared by
/// every entry of that level: at most one of them is live at a time).
fn spill_locals(
    assigned: &mut HashMap<(usize, ValType, usize), u32>,
    level: usize,
    types: &[ValType],
    first_new_local: u32,
    count: &mut u32,
) -> Vec<u32> {
    let mut ordinal: HashMap<ValType, usize> = HashMap::new();
    types
        .iter()
        .map(|&ty| {
            let nth = ordinal.entry(ty).or_default();
            let key = (level, ty, *nth);
            *nth += 1;
            *assigned.entry(key).or_insert_with(|| {
                *count += 1;
                first_new_local + *count - 1
            })
        })
        .collect()
}

/// Bytes of a value in the save area.
fn size_of(ty: ValType) -> u64 {
    match ty {
        ValType::I32 | ValType::F32 => 4,
        ValType::I64 | ValType::F64 => 8,
        _ => 16,
    }
}

fn store(ty: ValType, memarg: MemArg) -> Instruction<'static> {
    match ty {
        ValType::I32 => Instruction::I32Store(memarg),
        ValType::I64 => Instruction::I64Store(memarg),
        ValType::F32 => Instruction::F32Store(memarg),
        ValType::F64 => Instruction::F64Store(memarg),
        _ => Instruction::V128Store(memarg),
    }
}

fn load(ty: ValType, memarg: MemArg) -> Instruction<'static> {
    match ty {
        ValType::I32 => Instruction::I32Load(memarg),
        ValType::I64 => Instruction::I64Load(memarg),
        ValType::F32 => Instruction::F32Load(memarg),
        ValType::F64 => Instruction::F64Load(memarg),
        _ => Instruction::V128Load(memarg),
    }
}

fn zero(ty: ValType) -> Instruction<'static> {
    match ty {
        ValType::I32 => Instruction::I32Const(0),
        ValType::I64 => Instruction::I64Const(0),
        ValType::F32 => Instruction::F32Const(0.0f32.into()),
        ValType::F64 => Instruction::F64Const(0.0f64.into()),
        _ => Instruction::V128Const(0),
    }
}

/// A place a dispatch can branch to: the end of a skip block (open around
/// the dispatch), for the resume points up to `last`.
#[derive(Debug, Clone)]
struct Target {
    label: u32,
    last: u32,
    /// Spill locals, and whether each was saved (or is rebuilt as a zero).
    spills: Vec<(u32, bool)>,
}

/// A sequence being emitted.
struct Open {
    sequence: usize,
    next_entry: usize,
}

/// The second pass: the function's new body.
struct Emitter<'p> {
    plan: &'p Plan<'p>,
    added: Added,
    version: Body,
    /// Every rewritten function's rewind twin: a rewind body's direct calls
    /// go to twins, so that a rewound stack has one frame per function.
    twins: &'p HashMap<u32, u32>,
    out: Function,
    /// Open labels, the function's own included.
    labels: u32,
    /// Label index of every open original frame.
    original: Vec<u32>,
    open: Vec<Open>,
    /// Local holding the resume point's number.
    k_local: u32,
    /// Local holding the frame's address during save and restore.
    cur_local: u32,
    /// Every local saved in a frame, with its offset.
    frame: Vec<(u32, ValType, u64)>,
    frame_size: u64,
    /// Spill local → its type and offset in the frame.
    spill_slots: HashMap<u32, (ValType, u64)>,
    /// Resume point → the spill locals its frame must hold.
    chains: HashMap<u32, Vec<u32>>,
    /// Targets of an enclosing sequence that left its dispatch to the
    /// sequence opened next (see [`Emitter::delegates`]).
    inherited: Vec<Target>,
    /// Operator index at which each sequence starts.
    sequence_starts: HashMap<usize, usize>,
}

const UNWIND_LABEL: u32 = 1;

fn emit(
    plan: &Plan<'_>,
    added: Added,
    block_types: &BlockTypes,
    version: Body,
    twins: &HashMap<u32, u32>,
) -> Result<Vec<u8>, Unsupported> {
    let k_local = plan.locals.len() as u32;
    let cur_local = k_local + 1;
    let mut spills: Vec<(u32, ValType)> = plan
        .spill_locals
        .iter()
        .map(|(&(_, ty, _), &local)| (local, ty))
        .collect();
    spills.sort_by_key(|(local, _)| *local);
    let mut local_groups = plan.declared.clone();
    local_groups.push((2, ValType::I32));
    local_groups.extend(spills.iter().map(|&(_, ty)| (1, ty)));

    // Frame: every original local and the resume point's number (saved by
    // the shared save code), then one slot per spill local (saved by the
    // unwinding call site, only those of the entries that lead to it).
    let mut frame = Vec::new();
    let mut offset = 0u64;
    let saved = plan
        .locals
        .iter()
        .copied()
        .enumerate()
        .map(|(index, ty)| (index as u32, ty))
        .chain(std::iter::once((k_local, ValType::I32)));
    for (local, ty) in saved {
        frame.push((local, ty, offset));
        offset += size_of(ty);
    }
    let mut spill_slots = HashMap::new();
    for &(local, ty) in &spills {
        spill_slots.insert(local, (ty, offset));
        offset += size_of(ty);
    }
    // The spill locals each resume point's frame needs: those of every
    // entry that contains it, at every level.
    let mut chains: HashMap<u32, Vec<u32>> = HashMap::new();
    for sequence in &plan.sequences {
        for entry in &sequence.entries {
            if entry.spills.is_empty() {
                continue;
            }
            let saved = entry.spills.iter().zip(&entry.saved).filter(|(_, saved)| **saved);
            for resume in entry.first..=entry.last {
                chains
                    .entry(resume)
                    .or_default()
                    .extend(saved.clone().map(|(spill, _)| *spill));
            }
        }
    }
    let mut emitter = Emitter {
        plan,
        added,
        version,
        twins,
        out: Function::new(local_groups),
        labels: 1,
        original: vec![0],
        open: Vec::new(),
        k_local,
        cur_local,
        frame,
        frame_size: offset,
        spill_slots,
        chains,
        inherited: Vec::new(),
        sequence_starts: plan
            .starts
            .iter()
            .map(|(&operator, &sequence)| (sequence, operator + 1))
            .collect(),
    };
    emitter.body(block_types)?;
    Ok(emitter.out.into_raw_body())
}

impl Emitter<'_> {
    fn instr(&mut self, instruction: &Instruction<'_>) {
        self.out.instruction(instruction);
    }

    fn memarg(&self, offset: u64) -> MemArg {
        MemArg {
            offset,
            align: 0,
            memory_index: self.added.stack_memory,
        }
    }

    fn depth_to(&self, label: u32) -> u32 {
        self.labels - 1 - label
    }

    fn remap(&self, relative_depth: u32) -> Result<u32, Unsupported> {
        let target = self
            .original
            .len()
            .checked_sub(1 + relative_depth as usize)
            .ok_or_else(|| Unsupported("a branch out of the function".to_owned()))?;
        Ok(self.depth_to(self.original[target]))
    }

    fn body(&mut self, block_types: &BlockTypes) -> Result<(), Unsupported> {
        self.hand_over();
        self.instr(&Instruction::Block(BlockType::Empty)); // the unwind label
        self.labels += 1;
        self.open_sequence(0, true, block_types)?;
        let plan = self.plan;
        for (index, operator) in plan.operators.iter().enumerate() {
            self.close_entry_at(index);
            match operator {
                Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. } => {
                    self.reencoded(operator)?;
                    self.labels += 1;
                    self.original.push(self.labels - 1);
                    let sequence = plan.starts[&index];
                    self.open_sequence(sequence, false, block_types)?;
                }
                Operator::Else => {
                    self.end_sequence()?;
                    self.instr(&Instruction::Else);
                    let sequence = plan.starts[&index];
                    self.open_sequence(sequence, false, block_types)?;
                }
                Operator::End => {
                    self.end_sequence()?;
                    if self.original.len() == 1 {
                        self.function_end();
                    } else {
                        self.instr(&Instruction::End);
                        self.labels -= 1;
                        self.original.pop();
                    }
                }
                Operator::Br { relative_depth } => {
                    let depth = self.remap(*relative_depth)?;
                    self.instr(&Instruction::Br(depth));
                }
                Operator::BrIf { relative_depth } => {
                    let depth = self.remap(*relative_depth)?;
                    self.instr(&Instruction::BrIf(depth));
                }
                Operator::BrTable { targets } => {
                    let mut depths = Vec::with_capacity(targets.len() as usize);
                    for target in targets.targets() {
                        depths.push(self.remap(target.map_err(|e| error("br_table", &e))?)?);
                    }
                    let default = self.remap(targets.default())?;
                    self.instr(&Instruction::BrTable(depths.into(), default));
                }
                Operator::Call { function_index } => {
                    match (self.version, self.twins.get(function_index)) {
                        (Body::Rewind { .. }, Some(&twin)) => self.instr(&Instruction::Call(twin)),
                        _ => self.reencoded(operator)?,
                    }
                    if let Some(&resume) = plan.resume.get(&index) {
                        self.unwind_check(index, resume);
                    }
                }
                Operator::CallIndirect { .. } => {
                    self.reencoded(operator)?;
                    if let Some(&resume) = plan.resume.get(&index) {
                        self.unwind_check(index, resume);
                    }
                }
                _ => self.reencoded(operator)?,
            }
        }
        Ok(())
    }

    /// At entry: a run body in the rewinding state, or a rewind body in the
    /// normal state, calls its twin with its arguments and returns what the
    /// twin returns. (A twin that unwinds saved its own frame: this one only
    /// passes the dummy results on.)
    fn hand_over(&mut self) {
        self.instr(&Instruction::GlobalGet(self.added.state_global));
        if let Body::Rewind { .. } = self.version {
            self.instr(&Instruction::I32Eqz);
        }
        self.instr(&Instruction::If(BlockType::Empty));
        for param in 0..self.plan.params {
            self.instr(&Instruction::LocalGet(param));
        }
        match self.version {
            Body::Run { twin_slot, type_index } => {
                self.instr(&Instruction::I32Const(twin_slot as i32));
                self.instr(&Instruction::CallIndirect {
                    type_index,
                    table_index: self.added.twins_table,
                });
            }
            Body::Rewind { run_twin } => self.instr(&Instruction::Call(run_twin)),
        }
        self.instr(&Instruction::Return);
        self.instr(&Instruction::End);
    }

    fn reencoded(&mut self, operator: &Operator<'_>) -> Result<(), Unsupported> {
        let instruction = RoundtripReencoder
            .instruction(operator.clone())
            .map_err(|e| error("re-encoding", &e))?;
        self.instr(&instruction);
        Ok(())
    }

    /// Opens a sequence: one skip block per entry (the first entry's
    /// innermost), then the dispatch a rewind takes.
    fn open_sequence(
        &mut self,
        sequence: usize,
        function_body: bool,
        block_types: &BlockTypes,
    ) -> Result<(), Unsupported> {
        self.open.push(Open {
            sequence,
            next_entry: 0,
        });
        if matches!(self.version, Body::Run { .. }) {
            return Ok(());
        }
        let inherited = std::mem::take(&mut self.inherited);
        let entries = &self.plan.sequences[sequence].entries;
        if entries.is_empty() && inherited.is_empty() {
            return Ok(());
        }
        // Skip block of entry i has label index `first_skip + (count - 1 - i)`.
        let first_skip = self.labels;
        for entry in entries.iter().rev() {
            let block_type = block_types.results(&entry.types)?;
            self.instr(&Instruction::Block(block_type));
            self.labels += 1;
        }
        let count = entries.len() as u32;
        let mut targets: Vec<Target> = entries
            .iter()
            .enumerate()
            .map(|(position, entry)| Target {
                label: first_skip + (count - 1 - position as u32),
                last: entry.last,
                spills: entry.spills.iter().copied().zip(entry.saved.iter().copied()).collect(),
            })
            .collect();
        targets.extend(inherited);
        if !function_body && self.delegates(sequence) {
            self.inherited = targets.split_off(1);
            return Ok(());
        }
        self.instr(&Instruction::GlobalGet(self.added.state_global));
        self.instr(&Instruction::If(BlockType::Empty));
        self.labels += 1;
        if function_body {
            self.restore_frame();
        }
        for target in &targets {
            self.instr(&Instruction::LocalGet(self.k_local));
            self.instr(&Instruction::I32Const(target.last as i32));
            self.instr(&Instruction::I32LeU);
            self.instr(&Instruction::If(BlockType::Empty));
            self.labels += 1;
            // The stack values were saved by the unwinding call site; the
            // frame's address is in `cur` for the whole rewind of this function.
            for &(spill, saved) in &target.spills {
                let (ty, offset) = self.spill_slots[&spill];
                if saved {
                    self.instr(&Instruction::LocalGet(self.cur_local));
                    self.instr(&load(ty, self.memarg(offset)));
                } else {
                    self.instr(&zero(ty));
                }
            }
            self.instr(&Instruction::Br(self.depth_to(target.label)));
            self.instr(&Instruction::End);
            self.labels -= 1;
        }
        self.instr(&Instruction::Unreachable);
        self.instr(&Instruction::End);
        self.labels -= 1;
        Ok(())
    }

    /// Whether `sequence` leaves its dispatch to its first construct: when
    /// that block or loop is the sequence's very first operator and the
    /// stack is empty there, falling into it is the way to its resume
    /// points, and its dispatch (which the sequence's skip blocks enclose)
    /// can branch to the sequence's other entries. A chain of nested blocks
    /// (how a `switch` compiles) then costs one check, not one per block.
    fn delegates(&self, sequence: usize) -> bool {
        let Some(first) = self.plan.sequences[sequence].entries.first() else {
            return false;
        };
        self.sequence_starts.get(&sequence) == Some(&first.position)
            && first.types.is_empty()
            && matches!(
                self.plan.operators[first.position],
                Operator::Block { .. } | Operator::Loop { .. }
            )
    }

    /// At an entry's position: ends its skip block and copies the stack of
    /// the sequence into the entry's spill locals (and back).
    fn close_entry_at(&mut self, index: usize) {
        let Some(open) = self.open.last() else {
            return;
        };
        let Some(entry) = self.plan.sequences[open.sequence].entries.get(open.next_entry) else {
            return;
        };
        if entry.position != index {
            return;
        }
        if matches!(self.version, Body::Rewind { .. }) {
            self.instr(&Instruction::End);
            self.labels -= 1;
        }
        for &spill in entry.spills.iter().rev() {
            self.instr(&Instruction::LocalSet(spill));
        }
        for &spill in &entry.spills {
            self.instr(&Instruction::LocalGet(spill));
        }
        self.open.last_mut().expect("checked").next_entry += 1;
    }

    fn end_sequence(&mut self) -> Result<(), Unsupported> {
        let open = self
            .open
            .pop()
            .ok_or_else(|| Unsupported("unbalanced sequences".to_owned()))?;
        if open.next_entry != self.plan.sequences[open.sequence].entries.len() {
            return Err(Unsupported("an entry was not reached".to_owned()));
        }
        Ok(())
    }

    /// After a call that may unwind: if it did, save the locals live after
    /// the call and the stack values its rewind needs (they are live only
    /// here), note where, and go finish the frame.
    fn unwind_check(&mut self, call: usize, resume: u32) {
        self.instr(&Instruction::GlobalGet(self.added.state_global));
        self.instr(&Instruction::If(BlockType::Empty));
        self.labels += 1;
        self.frame_address_checked();
        let plan = self.plan;
        if let Some(live) = plan.live_after.get(&call) {
            for local in live.ones() {
                let (local, ty, offset) = self.frame[local];
                self.instr(&Instruction::LocalGet(self.cur_local));
                self.instr(&Instruction::LocalGet(local));
                self.instr(&store(ty, self.memarg(offset)));
            }
        }
        if let Some(chain) = self.chains.get(&resume).cloned() {
            for spill in chain {
                let (ty, offset) = self.spill_slots[&spill];
                self.instr(&Instruction::LocalGet(self.cur_local));
                self.instr(&Instruction::LocalGet(spill));
                self.instr(&store(ty, self.memarg(offset)));
            }
        }
        self.instr(&Instruction::I32Const(resume as i32));
        self.instr(&Instruction::LocalSet(self.k_local));
        self.instr(&Instruction::Br(self.depth_to(UNWIND_LABEL)));
        self.instr(&Instruction::End);
        self.labels -= 1;
    }

    /// The body's end: return normally; after the unwind label (`cur` set
    /// by the unwinding call site), store the resume point's number, push
    /// the frame and return dummy results.
    fn function_end(&mut self) {
        self.instr(&Instruction::Return);
        self.instr(&Instruction::End); // the unwind label
        self.labels -= 1;
        let (local, ty, offset) = *self.frame.last().expect("the resume point's slot");
        debug_assert_eq!(local, self.k_local);
        self.instr(&Instruction::LocalGet(self.cur_local));
        self.instr(&Instruction::LocalGet(local));
        self.instr(&store(ty, self.memarg(offset)));
        self.instr(&Instruction::GlobalGet(self.added.data_global));
        self.instr(&Instruction::LocalGet(self.cur_local));
        self.instr(&Instruction::I32Const(self.frame_size as i32));
        self.instr(&Instruction::I32Add);
        self.instr(&Instruction::I32Store(self.memarg(0)));
        for index in 0..self.plan.results.len() {
            self.instr(&zero(self.plan.results[index]));
        }
        self.instr(&Instruction::End);
    }

    /// `cur` = the save area's current position, where this function's frame
    /// goes; traps before anything is written past the end of the area.
    fn frame_address_checked(&mut self) {
        self.instr(&Instruction::GlobalGet(self.added.data_global));
        self.instr(&Instruction::I32Load(self.memarg(0)));
        self.instr(&Instruction::LocalSet(self.cur_local));
        self.instr(&Instruction::LocalGet(self.cur_local));
        self.instr(&Instruction::I32Const(self.frame_size as i32));
        self.instr(&Instruction::I32Add);
        self.instr(&Instruction::GlobalGet(self.added.data_global));
        self.instr(&Instruction::I32Load(self.memarg(4)));
        self.instr(&Instruction::I32GtU);
        self.instr(&Instruction::If(BlockType::Empty));
        self.instr(&Instruction::Unreachable);
        self.instr(&Instruction::End);
    }

    /// Rewinding into this function: pop its frame and restore its locals.
    fn restore_frame(&mut self) {
        debug_assert_eq!(STATE_REWINDING, 2);
        self.instr(&Instruction::GlobalGet(self.added.data_global));
        self.instr(&Instruction::I32Load(self.memarg(0)));
        self.instr(&Instruction::I32Const(self.frame_size as i32));
        self.instr(&Instruction::I32Sub);
        self.instr(&Instruction::LocalSet(self.cur_local));
        self.instr(&Instruction::GlobalGet(self.added.data_global));
        self.instr(&Instruction::LocalGet(self.cur_local));
        self.instr(&Instruction::I32Store(self.memarg(0)));
        for index in 0..self.frame.len() {
            let (local, ty, offset) = self.frame[index];
            self.instr(&Instruction::LocalGet(self.cur_local));
            self.instr(&load(ty, self.memarg(offset)));
            self.instr(&Instruction::LocalSet(local));
        }
    }
}
