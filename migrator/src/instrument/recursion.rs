//! Which functions need a preemption point at their entry.
//!
//! A function without loops can only run long by calling itself again,
//! directly or through other functions (recursion). Every loop gets a
//! preemption point anyway, so an entry check is needed only in functions on
//! a call cycle. Leaving it out of the rest keeps small leaf helpers (math,
//! string routines) free of both the check and Asyncify's instrumentation,
//! which is where most of the cost of capturability goes.
//!
//! Indirect calls are resolved conservatively: a function that makes one may
//! call any function that can appear in a table or is taken by `ref.func`.

use std::collections::{HashMap, HashSet};

use walrus::ir::Instr;
use walrus::{ConstExpr, ElementItems, FunctionId, LocalFunction, Module};

use super::preemption::collect_sequences;

/// Local functions that are part of a call cycle.
pub(super) fn recursive_functions(module: &Module) -> HashSet<FunctionId> {
    let mut indirect_targets: HashSet<FunctionId> = HashSet::new();
    for element in module.elements.iter() {
        match &element.items {
            ElementItems::Functions(functions) => indirect_targets.extend(functions.iter().copied()),
            ElementItems::Expressions(_, expressions) => {
                indirect_targets.extend(expressions.iter().filter_map(|expression| match expression {
                    ConstExpr::RefFunc(function) => Some(*function),
                    _ => None,
                }))
            }
        }
    }
    let mut calls: HashMap<FunctionId, Vec<FunctionId>> = HashMap::new();
    let mut calls_indirectly: HashSet<FunctionId> = HashSet::new();
    for (id, function) in module.funcs.iter_local() {
        let (direct, indirect, taken) = callees(function);
        calls.insert(id, direct);
        if indirect {
            calls_indirectly.insert(id);
        }
        indirect_targets.extend(taken);
    }
    let local: HashSet<FunctionId> = calls.keys().copied().collect();
    let indirect_targets: Vec<FunctionId> = indirect_targets.into_iter().filter(|id| local.contains(id)).collect();
    for caller in &calls_indirectly {
        if let Some(edges) = calls.get_mut(caller) {
            edges.extend(indirect_targets.iter().copied());
        }
    }
    for edges in calls.values_mut() {
        edges.retain(|callee| local.contains(callee));
    }
    on_cycles(&calls)
}

/// Direct callees, whether the function calls indirectly, and functions it takes by reference.
fn callees(function: &LocalFunction) -> (Vec<FunctionId>, bool, Vec<FunctionId>) {
    let mut sequences = Vec::new();
    let mut loops = Vec::new();
    collect_sequences(function, function.entry_block(), &mut sequences, &mut loops);
    let (mut direct, mut indirect, mut taken) = (Vec::new(), false, Vec::new());
    for sequence in sequences {
        for (instr, _) in &function.block(sequence).instrs {
            match instr {
                Instr::Call(call) => direct.push(call.func),
                Instr::ReturnCall(call) => direct.push(call.func),
                Instr::CallIndirect(_) | Instr::ReturnCallIndirect(_) => indirect = true,
                Instr::RefFunc(reference) => taken.push(reference.func),
                _ => {}
            }
        }
    }
    (direct, indirect, taken)
}

/// Nodes on a cycle (a strongly connected component of more than one node,
/// or a node with an edge to itself), by Tarjan's algorithm, iteratively.
fn on_cycles(graph: &HashMap<FunctionId, Vec<FunctionId>>) -> HashSet<FunctionId> {
    let mut index_of: HashMap<FunctionId, usize> = HashMap::new();
    let mut low: HashMap<FunctionId, usize> = HashMap::new();
    let mut on_stack: HashSet<FunctionId> = HashSet::new();
    let mut stack: Vec<FunctionId> = Vec::new();
    let mut result = HashSet::new();
    let mut next_index = 0;
    let mut roots: Vec<FunctionId> = graph.keys().copied().collect();
    roots.sort_by_key(|id| id.index());
    for root in roots {
        if index_of.contains_key(&root) {
            continue;
        }
        // (node, position of the next edge to visit)
        let mut work: Vec<(FunctionId, usize)> = vec![(root, 0)];
        while let Some(&mut (node, ref mut edge)) = work.last_mut() {
            if *edge == 0 && !index_of.contains_key(&node) {
                index_of.insert(node, next_index);
                low.insert(node, next_index);
                next_index += 1;
                stack.push(node);
                on_stack.insert(node);
            }
            let edges = &graph[&node];
            if let Some(&next) = edges.get(*edge) {
                *edge += 1;
                if !index_of.contains_key(&next) {
                    work.push((next, 0));
                } else if on_stack.contains(&next) {
                    let lowest = low[&node].min(index_of[&next]);
                    low.insert(node, lowest);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                let lowest = low[&parent].min(low[&node]);
                low.insert(parent, lowest);
            }
            if low[&node] == index_of[&node] {
                let mut component = Vec::new();
                while let Some(member) = stack.pop() {
                    on_stack.remove(&member);
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                if component.len() > 1 || edges.contains(&node) {
                    result.extend(component);
                }
            }
        }
    }
    result
}
