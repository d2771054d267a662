//! Which locals are live after each resume call: the ones some path from
//! the call's return reads before it writes them. A frame saves only those
//! (and the rewind restores the others to stale values nobody reads), so an
//! unwind path no longer keeps every local alive across every call.
//!
//! A backward data-flow over the function's basic blocks, built from the
//! structured control flow: branches go to the end of a `block` or `if` and
//! to the start of a `loop`; a resume call ends its basic block, so the
//! live-in of the next one is what its frame must hold.

use std::collections::HashMap;

use fixedbitset::FixedBitSet;
use wasmparser::Operator;

/// A straight run of code: its local reads and writes, in order, and where
/// control may go next.
#[derive(Default)]
struct BasicBlock {
    /// `(local, is_write)`, in execution order.
    accesses: Vec<(u32, bool)>,
    successors: Vec<usize>,
}

enum Kind {
    Block,
    Loop { header: usize },
    If { condition: usize, has_else: bool },
}

struct Construct {
    kind: Kind,
    /// The basic block after the construct's `end`.
    after: usize,
}

impl Construct {
    /// Where a branch to this construct's label goes.
    fn target(&self) -> usize {
        match self.kind {
            Kind::Loop { header } => header,
            _ => self.after,
        }
    }
}

struct Graph {
    blocks: Vec<BasicBlock>,
    current: usize,
}

impl Graph {
    fn new_block(&mut self) -> usize {
        self.blocks.push(BasicBlock::default());
        self.blocks.len() - 1
    }

    fn edge(&mut self, from: usize, to: usize) {
        self.blocks[from].successors.push(to);
    }

    /// Ends the current block; the next one is reached from it only if
    /// `falls_through`.
    fn split(&mut self, falls_through: bool) -> usize {
        let next = self.new_block();
        if falls_through {
            self.edge(self.current, next);
        }
        self.current = next;
        next
    }
}

/// For every resume call (operator index in `resume`), the locals (of
/// `local_count`) live right after it returns.
pub(super) fn live_after_calls(
    operators: &[Operator<'_>],
    resume: &HashMap<usize, u32>,
    local_count: usize,
) -> HashMap<usize, FixedBitSet> {
    let mut graph = Graph {
        blocks: vec![BasicBlock::default()],
        current: 0,
    };
    let exit = graph.new_block();
    let mut constructs = vec![Construct {
        kind: Kind::Block,
        after: exit,
    }];
    let mut after_call: HashMap<usize, usize> = HashMap::new();
    let target = |constructs: &[Construct], depth: u32| -> Option<usize> {
        constructs
            .len()
            .checked_sub(1 + depth as usize)
            .map(|index| constructs[index].target())
    };
    for (index, operator) in operators.iter().enumerate() {
        match operator {
            Operator::LocalGet { local_index } => graph.blocks[graph.current].accesses.push((*local_index, false)),
            Operator::LocalSet { local_index } | Operator::LocalTee { local_index } => {
                graph.blocks[graph.current].accesses.push((*local_index, true))
            }
            Operator::Block { .. } => {
                let after = graph.new_block();
                constructs.push(Construct {
                    kind: Kind::Block,
                    after,
                });
            }
            Operator::Loop { .. } => {
                let header = graph.split(true);
                let after = graph.new_block();
                constructs.push(Construct {
                    kind: Kind::Loop { header },
                    after,
                });
            }
            Operator::If { .. } => {
                let condition = graph.current;
                let after = graph.new_block();
                graph.split(true);
                constructs.push(Construct {
                    kind: Kind::If {
                        condition,
                        has_else: false,
                    },
                    after,
                });
            }
            Operator::Else => {
                let construct = constructs.last_mut().expect("an if");
                let (after, condition) = match &mut construct.kind {
                    Kind::If { condition, has_else } => {
                        *has_else = true;
                        (construct.after, *condition)
                    }
                    _ => (construct.after, graph.current),
                };
                graph.edge(graph.current, after);
                let arm = graph.split(false);
                graph.edge(condition, arm);
            }
            Operator::End => {
                let construct = constructs.pop().expect("balanced constructs");
                graph.edge(graph.current, construct.after);
                if let Kind::If {
                    condition,
                    has_else: false,
                } = construct.kind
                {
                    graph.edge(condition, construct.after);
                }
                graph.current = construct.after;
                if constructs.is_empty() {
                    break;
                }
            }
            Operator::Br { relative_depth } => {
                if let Some(to) = target(&constructs, *relative_depth) {
                    graph.edge(graph.current, to);
                }
                graph.split(false);
            }
            Operator::BrIf { relative_depth } => {
                if let Some(to) = target(&constructs, *relative_depth) {
                    graph.edge(graph.current, to);
                }
                graph.split(true);
            }
            Operator::BrTable { targets } => {
                let depths = targets
                    .targets()
                    .filter_map(Result::ok)
                    .chain(std::iter::once(targets.default()));
                for depth in depths {
                    if let Some(to) = target(&constructs, depth) {
                        graph.edge(graph.current, to);
                    }
                }
                graph.split(false);
            }
            Operator::Return
            | Operator::Unreachable
            | Operator::ReturnCall { .. }
            | Operator::ReturnCallIndirect { .. } => {
                graph.split(false);
            }
            Operator::Call { .. } | Operator::CallIndirect { .. } if resume.contains_key(&index) => {
                let next = graph.split(true);
                after_call.insert(index, next);
            }
            _ => {}
        }
    }

    // Backward data-flow to a fixpoint: live-in = reads before writes, plus
    // live-out minus writes.
    let count = graph.blocks.len();
    let mut reads = vec![FixedBitSet::with_capacity(local_count); count];
    let mut writes = vec![FixedBitSet::with_capacity(local_count); count];
    for (block, basic) in graph.blocks.iter().enumerate() {
        for &(local, is_write) in basic.accesses.iter().rev() {
            let local = local as usize;
            if local >= local_count {
                continue;
            }
            if is_write {
                writes[block].insert(local);
                reads[block].set(local, false);
            } else {
                reads[block].insert(local);
            }
        }
    }
    let mut live_in = vec![FixedBitSet::with_capacity(local_count); count];
    let mut changed = true;
    let mut scratch = FixedBitSet::with_capacity(local_count);
    while changed {
        changed = false;
        for block in (0..count).rev() {
            scratch.clear();
            for &successor in &graph.blocks[block].successors {
                scratch.union_with(&live_in[successor]);
            }
            scratch.difference_with(&writes[block]);
            scratch.union_with(&reads[block]);
            if scratch != live_in[block] {
                live_in[block].clone_from(&scratch);
                changed = true;
            }
        }
    }
    after_call
        .into_iter()
        .map(|(call, block)| (call, live_in[block].clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use wasmparser::{Parser, Payload};

    use super::*;

    /// Live locals after each call of the module's only function, in
    /// textual order of the calls.
    fn live_after_each_call(source: &str) -> Vec<Vec<usize>> {
        let wasm = wat::parse_str(source).expect("test module parses");
        for payload in Parser::new(0).parse_all(&wasm) {
            if let Payload::CodeSectionEntry(body) = payload.unwrap() {
                let mut locals = body.get_locals_reader().unwrap();
                let mut count = 1; // the one parameter every test function takes
                for _ in 0..locals.get_count() {
                    count += locals.read().unwrap().0 as usize;
                }
                let operators: Vec<Operator<'_>> = body
                    .get_operators_reader()
                    .unwrap()
                    .into_iter()
                    .collect::<Result<_, _>>()
                    .unwrap();
                let calls: HashMap<usize, u32> = operators
                    .iter()
                    .enumerate()
                    .filter(|(_, operator)| matches!(operator, Operator::Call { .. }))
                    .zip(0..)
                    .map(|((index, _), number)| (index, number))
                    .collect();
                let live = live_after_calls(&operators, &calls, count);
                let mut positions: Vec<usize> = calls.keys().copied().collect();
                positions.sort_unstable();
                return positions.iter().map(|call| live[call].ones().collect()).collect();
            }
        }
        panic!("no function in the test module")
    }

    const PRELUDE: &str = r#"(import "ferry" "__preempt" (func $p (result i32)))"#;

    #[test]
    fn a_local_read_after_the_call_is_live_and_one_written_first_is_not() {
        let live = live_after_each_call(&format!(
            r#"(module {PRELUDE}
              (func (param i32) (result i32) (local i32 i32)
                (local.set 1 (i32.const 1))
                (local.set 2 (i32.const 2))
                (drop (call $p))
                (local.set 2 (i32.const 5))
                (i32.add (local.get 1) (local.get 2))))"#
        ));
        assert_eq!(live, vec![vec![1]]);
    }

    #[test]
    fn a_loop_keeps_alive_what_its_next_iteration_reads() {
        // Local 1 is read at the top of the loop, before the call: the back
        // edge makes it live after the call.
        let live = live_after_each_call(&format!(
            r#"(module {PRELUDE}
              (func (param i32) (result i32) (local i32)
                (loop $again
                  (local.set 0 (i32.add (local.get 0) (local.get 1)))
                  (drop (call $p))
                  (br_if $again (local.get 0)))
                (i32.const 0)))"#
        ));
        assert_eq!(live, vec![vec![0, 1]]);
    }

    #[test]
    fn a_read_on_one_branch_only_is_live_and_nothing_is_after_a_return() {
        let live = live_after_each_call(&format!(
            r#"(module {PRELUDE}
              (func (param i32) (result i32) (local i32 i32)
                (drop (call $p))
                (if (local.get 0)
                  (then (local.set 2 (local.get 1)))
                  (else (local.set 2 (i32.const 3))))
                (block $out
                  (br_if $out (local.get 2))
                  (drop (call $p))
                  (return (i32.const 1)))
                (drop (call $p))
                (local.get 1)))"#
        ));
        assert_eq!(live, vec![vec![0, 1], vec![], vec![1]]);
    }

    #[test]
    fn a_br_table_joins_every_target() {
        let live = live_after_each_call(&format!(
            r#"(module {PRELUDE}
              (func (param i32) (result i32) (local i32 i32)
                (block $b
                  (block $a
                    (drop (call $p))
                    (br_table $a $b (local.get 0)))
                  (return (local.get 1)))
                (local.get 2)))"#
        ));
        assert_eq!(live, vec![vec![0, 1, 2]]);
    }
}
