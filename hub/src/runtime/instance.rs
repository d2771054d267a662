//! Running one instance of a prepared module to its end on the calling thread.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use wasmer::{ExternType, FunctionEnv, Instance, Module, Store, TypedFunction};

use super::clock::VirtualClock;
use super::control::FunctionControl;
use super::guest::{CpuMeter, GuestEnv, GuestStop, HostServices};
use super::imports::build_imports;

/// How to start a function.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub name: String,
    /// `argv[1..]`; `argv[0]` is the function name.
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs.
    pub environ: Vec<String>,
    pub memory_limit_bytes: u64,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Returned from `_start` (code 0) or called `proc_exit`.
    Exited(i32),
    /// Stopped on request.
    Stopped,
    /// Could not start, trapped, or exceeded a limit.
    Failed(String),
}

fn initial_memory_bytes(module: &Module) -> u64 {
    module
        .exports()
        .find_map(|export| match export.ty() {
            ExternType::Memory(memory) if export.name() == "memory" => Some(memory.minimum.bytes().0 as u64),
            _ => None,
        })
        .unwrap_or(0)
}

/// Instantiates `module` and runs its `_start` until it returns, exits, traps
/// or is stopped through `control`. Blocks the calling thread throughout.
pub fn run_to_completion(
    engine: &wasmer::Engine,
    module: &Module,
    launch: &LaunchSpec,
    control: Arc<FunctionControl>,
    services: Arc<dyn HostServices>,
) -> Outcome {
    let initial_bytes = initial_memory_bytes(module);
    if initial_bytes > launch.memory_limit_bytes {
        return Outcome::Failed(format!(
            "memory limit exceeded: the module needs {initial_bytes} bytes at start, limit is {} bytes",
            launch.memory_limit_bytes
        ));
    }
    let mut store = Store::new(engine.clone());
    let mut args = vec![launch.name.clone()];
    args.extend(launch.args.iter().cloned());
    let env = FunctionEnv::new(
        &mut store,
        GuestEnv {
            name: launch.name.clone(),
            memory: None,
            control: Arc::clone(&control),
            services,
            args,
            environ: launch.environ.clone(),
            clock: VirtualClock::starting_at(Duration::ZERO),
            cpu: CpuMeter::start(Duration::ZERO),
            memory_limit_bytes: launch.memory_limit_bytes,
            caller: None,
            unsupported_reported: HashSet::new(),
        },
    );
    let imports = build_imports(&mut store, &env, module);
    let instance = match Instance::new(&mut store, module, &imports) {
        Ok(instance) => instance,
        Err(error) => return Outcome::Failed(format!("could not instantiate: {error}")),
    };
    let memory = match instance.exports.get_memory("memory") {
        Ok(memory) => memory.clone(),
        Err(error) => return Outcome::Failed(format!("module has no usable memory: {error}")),
    };
    control.set_memory_bytes(memory.view(&store).data_size());
    env.as_mut(&mut store).memory = Some(memory.clone());
    let start: TypedFunction<(), ()> = match instance.exports.get_typed_function(&store, "_start") {
        Ok(start) => start,
        Err(error) => return Outcome::Failed(format!("module has no usable `_start`: {error}")),
    };

    let result = start.call(&mut store);
    let guest = env.as_ref(&store);
    guest.publish_counters(&memory.view(&store));
    match result {
        Ok(()) => Outcome::Exited(0),
        Err(error) => match error.downcast_ref::<GuestStop>() {
            Some(GuestStop::Exit(code)) => Outcome::Exited(*code),
            Some(GuestStop::Stopped) => Outcome::Stopped,
            Some(stop) => Outcome::Failed(stop.to_string()),
            None => Outcome::Failed(format!("trapped: {}", error.message())),
        },
    }
}
