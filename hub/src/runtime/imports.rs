//! Which imports a guest may have, and the import object that satisfies them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::v1::LogStream;
use wasmer::{ExternType, FunctionEnv, Imports, Module, Store};

use super::clock::VirtualClock;
use super::control::FunctionControl;
use super::cpu::{CpuAccount, CpuMeter};
use super::guest::{Delivery, GuestEnv, HostServices, Undelivered};
use super::registry::{Resolution, resolve};
use super::unwind::Phase;
use super::wasi::fds::FdTable;
use super::{RuntimeError, wasi};

fn kind_name(ty: &ExternType) -> &'static str {
    match ty {
        ExternType::Function(_) => "function",
        ExternType::Global(_) => "global",
        ExternType::Table(_) => "table",
        ExternType::Memory(_) => "memory",
        ExternType::Tag(_) => "tag",
    }
}

/// Checks that the hub can run `module`: it exports `_start` and `memory`, and
/// every import is one the hub provides with the type the hub provides.
pub fn check_module(engine: &wasmer::Engine, module: &Module) -> Result<(), RuntimeError> {
    let exports: Vec<_> = module.exports().collect();
    let start = exports.iter().find(|export| export.name() == "_start");
    match start.map(|export| export.ty()) {
        Some(ExternType::Function(ty)) if ty.params().is_empty() && ty.results().is_empty() => {}
        Some(_) => {
            return Err(RuntimeError::InvalidModule {
                reason: "its `_start` export is not a function without parameters and results".to_owned(),
            });
        }
        None => {
            return Err(RuntimeError::InvalidModule {
                reason: "it exports no `_start` function (Ferry runs WASI command modules)".to_owned(),
            });
        }
    }
    if !exports
        .iter()
        .any(|export| export.name() == "memory" && matches!(export.ty(), ExternType::Memory(_)))
    {
        return Err(RuntimeError::InvalidModule {
            reason: "it exports no memory named `memory`".to_owned(),
        });
    }

    let mut scratch = Store::new(engine.clone());
    let env = FunctionEnv::new(&mut scratch, GuestEnv::detached());
    for import in module.imports() {
        let ExternType::Function(found) = import.ty() else {
            return Err(RuntimeError::UnsupportedImport {
                module: import.module().to_owned(),
                name: import.name().to_owned(),
                kind: kind_name(import.ty()),
            });
        };
        match resolve(import.module(), import.name()) {
            Resolution::Provided(host) => {
                let expected = host.function(&mut scratch, &env).ty(&scratch);
                if &expected != found {
                    return Err(RuntimeError::ImportSignature {
                        module: import.module().to_owned(),
                        name: import.name().to_owned(),
                        expected: expected.to_string(),
                        found: found.to_string(),
                    });
                }
            }
            // Any other WASI call is answered with ENOSYS.
            Resolution::Unsupported => {}
            Resolution::Refused => {
                return Err(RuntimeError::UnsupportedImport {
                    module: import.module().to_owned(),
                    name: import.name().to_owned(),
                    kind: "function",
                });
            }
        }
    }
    Ok(())
}

/// The import object for one instance of a module that passed [`check_module`].
pub fn build_imports(store: &mut Store, env: &FunctionEnv<GuestEnv>, module: &Module) -> Imports {
    let mut imports = Imports::new();
    for import in module.imports() {
        let ExternType::Function(ty) = import.ty() else {
            continue;
        };
        let function = match resolve(import.module(), import.name()) {
            Resolution::Provided(host) => host.function(store, env),
            // check_module refused every other import: only WASI stand-ins remain.
            Resolution::Unsupported | Resolution::Refused => wasi::unsupported(store, env, import.name(), ty.clone()),
        };
        imports.define(import.module(), import.name(), function);
    }
    imports
}

/// Services of a guest environment that is never run (used to type-check imports).
struct DetachedServices;

impl HostServices for DetachedServices {
    fn output(&self, _function: &str, _stream: LogStream, _data: &[u8]) {}

    fn send(&self, _from: &str, _to: &str, _data: &[u8]) -> Delivery {
        Delivery::Done(Err(Undelivered::NoSuchFunction))
    }

    fn log_position(&self, _function: &str) -> u64 {
        0
    }
}

impl GuestEnv {
    /// An environment bound to nothing, for type-checking imports.
    pub(super) fn detached() -> GuestEnv {
        GuestEnv {
            name: String::new(),
            memory: None,
            control: Arc::new(FunctionControl::default()),
            services: Arc::new(DetachedServices),
            args: Vec::new(),
            environ: Vec::new(),
            fds: FdTable::stdio(),
            clock: VirtualClock::starting_at(Duration::ZERO),
            cpu: CpuMeter::start(Duration::ZERO),
            cpu_account: CpuAccount::start(Duration::ZERO, None),
            governor: None,
            memory_limit_bytes: 0,
            caller: None,
            unsupported_reported: HashSet::new(),
            asyncify: None,
            phase: Phase::Normal,
            pending: None,
            may_park: false,
            parking: false,
            rewind: None,
        }
    }
}
