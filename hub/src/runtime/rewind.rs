//! A guest's compiled modules: the main module it runs and, when the capture
//! transform made one, the *rewind module* that holds its rewind twins (see
//! `ferry_migrator`'s `instrument::capture`). The rewind module is compiled
//! apart — in the background after a deploy, or when a restore or a
//! checkpoint first needs it — so a deploy waits only for the main module.
//! It is instantiated into a running instance's store, against the main
//! instance's exports, before the first rewind of that instance.

use std::sync::{Arc, Mutex, PoisonError};

use ferry_migrator::{REWIND_EXPORT_PREFIX, REWIND_IMPORT_MODULE};
use wasmer::{Imports, Instance};

/// A compiled guest, ready to instantiate.
#[derive(Clone)]
pub struct GuestModule {
    pub main: wasmer::Module,
    /// `None` when the main module rewinds by itself (Binaryen's Asyncify,
    /// or a plain module that never unwinds).
    pub rewind: Option<Arc<RewindModule>>,
}

impl GuestModule {
    /// Bytes of linear memory the module starts with.
    pub fn initial_memory_bytes(&self) -> u64 {
        super::instance::initial_memory_bytes(&self.main)
    }

    /// A module that needs no rewind module.
    pub fn standalone(main: wasmer::Module) -> GuestModule {
        GuestModule { main, rewind: None }
    }

    /// Whether `main` needs a rewind module before it can rewind.
    pub fn needs_rewind_module(main: &wasmer::Module) -> bool {
        main.exports()
            .any(|export| export.name().starts_with(REWIND_EXPORT_PREFIX))
    }

    /// Blocks until the rewind module (if any) is compiled: for a caller
    /// that is about to restore and must not wait later (a move's
    /// destination, which prepares while the source still runs).
    pub fn ready_to_rewind(&self) -> Result<(), String> {
        match &self.rewind {
            Some(rewind) => rewind.compiled().map(|_| ()),
            None => Ok(()),
        }
    }
}

type Compile = Box<dyn Fn() -> Result<wasmer::Module, String> + Send + Sync>;

enum Compiled {
    NotYet,
    Ready(wasmer::Module),
    /// The last attempt failed (the next use tries again).
    Failed,
}

/// A rewind module, compiled on first use by whichever thread comes first
/// (the others wait for it).
pub struct RewindModule {
    compile: Compile,
    compiled: Mutex<Compiled>,
}

impl RewindModule {
    pub fn new(compile: impl Fn() -> Result<wasmer::Module, String> + Send + Sync + 'static) -> RewindModule {
        RewindModule {
            compile: Box::new(compile),
            compiled: Mutex::new(Compiled::NotYet),
        }
    }

    /// The compiled module; compiles it on the calling thread unless an
    /// earlier attempt succeeded.
    pub fn compiled(&self) -> Result<wasmer::Module, String> {
        let mut compiled = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
        if let Compiled::Ready(module) = &*compiled {
            return Ok(module.clone());
        }
        match (self.compile)() {
            Ok(module) => {
                *compiled = Compiled::Ready(module.clone());
                Ok(module)
            }
            Err(reason) => {
                let reason = format!("the rewind module does not compile: {reason}");
                *compiled = Compiled::Failed;
                Err(reason)
            }
        }
    }

    /// Whether waiting for the compile is over: it finished, or failed (a
    /// rewind then fails with the reason). Never blocks.
    pub fn is_compiled(&self) -> bool {
        self.compiled
            .try_lock()
            .is_ok_and(|compiled| !matches!(*compiled, Compiled::NotYet))
    }

    /// Compiles it on a background thread of its own.
    pub fn compile_in_background(self: &Arc<Self>) {
        let rewind = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("ferry-rewind-compile".to_owned())
            .spawn(move || {
                if let Err(error) = rewind.compiled() {
                    tracing::warn!(%error, "compiling a rewind module in the background failed");
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "could not start compiling a rewind module in the background");
        }
    }

    /// Instantiates the rewind module against `main` (an instance of the
    /// main module in `store`): its element segment fills the main module's
    /// twins table, so run bodies can hand over from then on.
    pub fn instantiate(&self, store: &mut wasmer::Store, main: &Instance) -> Result<Instance, String> {
        let module = self.compiled()?;
        let module = &module;
        let mut imports = Imports::new();
        for import in module.imports() {
            if import.module() != REWIND_IMPORT_MODULE {
                return Err(format!(
                    "the rewind module imports {}.{}, which is not the main module's",
                    import.module(),
                    import.name()
                ));
            }
            let export = main
                .exports
                .get_extern(import.name())
                .ok_or_else(|| format!("the main module does not export {}", import.name()))?;
            imports.define(REWIND_IMPORT_MODULE, import.name(), export.clone());
        }
        Instance::new(store, module, &imports).map_err(|error| format!("cannot instantiate the rewind module: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmer::{Function, FunctionType, Store, Type, Value, imports};

    #[test]
    fn instantiating_the_rewind_module_fills_the_twins_table() {
        let wat = r#"(module
          (memory (export "memory") 1)
          (func $spin (param i32) (result i32)
            (loop $again (br_if $again (local.tee 0 (i32.sub (local.get 0) (i32.const 1)))))
            (local.get 0))
          (func (export "_start") (drop (call $spin (i32.const 5)))))"#;
        let instrumented = ferry_migrator::instrument(&wat::parse_str(wat).unwrap()).unwrap();
        let mut store = Store::default();
        let main = wasmer::Module::new(&store, &instrumented.bytes).unwrap();
        let rewind_bytes = instrumented.rewind.clone().unwrap();
        let engine = store.engine().clone();
        let rewind = RewindModule::new(move || wasmer::Module::new(&engine, &rewind_bytes).map_err(|e| e.to_string()));
        let preempt = Function::new(&mut store, FunctionType::new(vec![], vec![Type::I32]), |_| {
            Ok(vec![Value::I32(1000)])
        });
        let grow = Function::new(&mut store, FunctionType::new(vec![Type::I32], vec![Type::I32]), |_| {
            Ok(vec![Value::I32(-1)])
        });
        let imports = imports! { "ferry" => { "__preempt" => preempt, "__memory_grow" => grow } };
        let instance = Instance::new(&mut store, &main, &imports).unwrap();
        let table = main
            .exports()
            .filter_map(|export| export.name().strip_prefix("__ferry_rewind_table_").map(str::to_owned))
            .max()
            .unwrap();
        let twins = instance
            .exports
            .get_table(&format!("__ferry_rewind_table_{table}"))
            .unwrap()
            .clone();
        assert!(twins.size(&store) > 0);
        assert!(matches!(twins.get(&mut store, 0), Some(Value::FuncRef(None))));
        assert!(!rewind.is_compiled(), "nothing compiled it yet");
        rewind.instantiate(&mut store, &instance).unwrap();
        assert!(rewind.is_compiled());
        assert!(
            matches!(twins.get(&mut store, 0), Some(Value::FuncRef(Some(_)))),
            "{:?}",
            twins.get(&mut store, 0)
        );
    }
}
