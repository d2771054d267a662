//! Exports every mutable global so the host can read and write it.

use walrus::{GlobalKind, Module};

/// Prefix of the export names; the suffix is the global's index in the
/// module as deployed (before Asyncify adds its own, which need no saving).
pub const GLOBAL_EXPORT_PREFIX: &str = "__ferry_global_";

pub(super) fn export_mutable_globals(module: &mut Module) {
    let mutable: Vec<_> = module
        .globals
        .iter()
        .enumerate()
        .filter(|(_, global)| global.mutable && matches!(global.kind, GlobalKind::Local(_)))
        .map(|(index, global)| (index, global.id()))
        .collect();
    for (index, global) in mutable {
        module.exports.add(&format!("{GLOBAL_EXPORT_PREFIX}{index}"), global);
    }
}
