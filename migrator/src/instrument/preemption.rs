//! The preemption-point and memory-growth rewrite.

use rayon::prelude::*;
use walrus::ir::{BinaryOp, Call, Const, GlobalGet, GlobalSet, IfElse, Instr, InstrSeqId, UnaryOp, Unop, Value};
use walrus::{ConstExpr, FunctionId, GlobalId, InstrLocId, LocalFunction, MemoryId, Module, ValType};

use super::{InstrumentError, InstrumentStats, MEMORY_GROW_IMPORT, PREEMPT_IMPORT, RESERVED_IMPORT_MODULE};

/// Countdown the module starts with; the host refills it from `__preempt`.
const INITIAL_COUNTDOWN: i32 = 10_000;

struct Hooks {
    countdown: GlobalId,
    preempt: FunctionId,
    memory_grow: FunctionId,
    default_memory: MemoryId,
}

pub(super) fn insert_preemption_points(module: &mut Module) -> Result<InstrumentStats, InstrumentError> {
    let default_memory = module.memories.iter().next().ok_or(InstrumentError::NoMemory)?;
    if default_memory.memory64 {
        return Err(InstrumentError::Memory64);
    }
    let default_memory = default_memory.id();
    let preempt_type = module.types.add(&[], &[ValType::I32]);
    let grow_type = module.types.add(&[ValType::I32], &[ValType::I32]);
    let (preempt, _) = module.add_import_func(RESERVED_IMPORT_MODULE, PREEMPT_IMPORT, preempt_type);
    let (memory_grow, _) = module.add_import_func(RESERVED_IMPORT_MODULE, MEMORY_GROW_IMPORT, grow_type);
    let countdown = module.globals.add_local(
        ValType::I32,
        true,
        false,
        ConstExpr::Value(Value::I32(INITIAL_COUNTDOWN)),
    );
    let hooks = Hooks {
        countdown,
        preempt,
        memory_grow,
        default_memory,
    };

    let recursive = super::recursion::recursive_functions(module);
    // Each function on its own, on every core; the counts summed.
    let stats = module
        .funcs
        .par_iter_local_mut()
        .map(|(id, function)| {
            let mut stats = InstrumentStats::default();
            rewrite_function(function, &hooks, recursive.contains(&id), &mut stats);
            stats
        })
        .reduce(InstrumentStats::default, |mut total, each| {
            total.functions += each.functions;
            total.loops += each.loops;
            total.memory_grows += each.memory_grows;
            total
        });
    Ok(stats)
}

fn rewrite_function(function: &mut LocalFunction, hooks: &Hooks, entry_check: bool, stats: &mut InstrumentStats) {
    let entry = function.entry_block();
    let mut loop_bodies = Vec::new();
    let mut all_sequences = Vec::new();
    collect_sequences(function, entry, &mut all_sequences, &mut loop_bodies);

    for &sequence in &all_sequences {
        for (instr, _) in function.block_mut(sequence).instrs.iter_mut() {
            if let Instr::MemoryGrow(grow) = instr
                && grow.memory == hooks.default_memory
            {
                *instr = Instr::Call(Call {
                    func: hooks.memory_grow,
                });
                stats.memory_grows += 1;
            }
        }
    }

    if entry_check {
        prepend_check(function, entry, hooks);
        stats.functions += 1;
    }
    for body in loop_bodies {
        prepend_check(function, body, hooks);
        stats.loops += 1;
    }
}

/// Every instruction sequence reachable from `start`, and which of them are loop bodies.
pub(super) fn collect_sequences(
    function: &LocalFunction,
    start: InstrSeqId,
    all: &mut Vec<InstrSeqId>,
    loops: &mut Vec<InstrSeqId>,
) {
    let mut stack = vec![start];
    while let Some(sequence) = stack.pop() {
        all.push(sequence);
        for (instr, _) in &function.block(sequence).instrs {
            match instr {
                Instr::Block(block) => stack.push(block.seq),
                Instr::Loop(body) => {
                    loops.push(body.seq);
                    stack.push(body.seq);
                }
                Instr::IfElse(branches) => {
                    stack.push(branches.consequent);
                    stack.push(branches.alternative);
                }
                Instr::TryTable(body) => stack.push(body.seq),
                _ => {}
            }
        }
    }
}

/// Inserts `countdown -= 1; if countdown == 0 { countdown = __preempt() }` at the head of `sequence`.
fn prepend_check(function: &mut LocalFunction, sequence: InstrSeqId, hooks: &Hooks) {
    let builder = function.builder_mut();
    let consequent = {
        let mut then_branch = builder.dangling_instr_seq(None);
        then_branch.instr(Call { func: hooks.preempt }).instr(GlobalSet {
            global: hooks.countdown,
        });
        then_branch.id()
    };
    let alternative = builder.dangling_instr_seq(None).id();
    let check = [
        Instr::GlobalGet(GlobalGet {
            global: hooks.countdown,
        }),
        Instr::Const(Const { value: Value::I32(1) }),
        Instr::Binop(walrus::ir::Binop { op: BinaryOp::I32Sub }),
        Instr::GlobalSet(GlobalSet {
            global: hooks.countdown,
        }),
        Instr::GlobalGet(GlobalGet {
            global: hooks.countdown,
        }),
        Instr::Unop(Unop { op: UnaryOp::I32Eqz }),
        Instr::IfElse(IfElse {
            consequent,
            alternative,
        }),
    ];
    let instrs = &mut function.block_mut(sequence).instrs;
    instrs.splice(0..0, check.into_iter().map(|instr| (instr, InstrLocId::default())));
}
