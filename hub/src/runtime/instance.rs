//! One instance of a prepared module: start it fresh or from a snapshot, run
//! it, and — when it unwinds — capture it and rewind it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_migrator::{GLOBAL_EXPORT_PREFIX, STACK_MEMORY_EXPORT};
use wasmer::{ExternType, FunctionEnv, Global, Instance, Memory, Module, RuntimeError, Store, TypedFunction, Value};

use super::clock::VirtualClock;
use super::control::{Caller, FunctionControl};
use super::cpu::{CpuAccount, CpuGovernor, CpuMeter};
use super::dirty::{DirtyTracker, TrackingMode};
use super::guest::{GuestEnv, GuestStop, HostServices};
use super::imports::build_imports;
use super::rewind::GuestModule;
use super::snapshot::{GlobalValue, Snapshot, SnapshotMemory};
use super::unwind::{AsyncifyHooks, Phase, STACK_DATA};
use super::wasi::fds::FdTable;
use super::wasi::files::PreopenSpec;

mod capture;

const PAGE: u64 = 65_536;

/// How to start a function.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub name: String,
    /// `argv[1..]`; `argv[0]` is the function name.
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs.
    pub environ: Vec<String>,
    pub memory_limit_bytes: u64,
    /// The function's own CPU cap in cores (`ferry deploy --cpus`).
    pub cpu_cap: Option<f64>,
    /// The hub's CPU quota every function charges (none: unlimited).
    pub governor: Option<Arc<CpuGovernor>>,
    /// The directories the function gets (its volume, then its mounts), or
    /// why the hub cannot lay them out (the run fails with it).
    pub preopens: Result<Vec<PreopenSpec>, String>,
}

impl LaunchSpec {
    /// Whether the function has directories: its open files live in the
    /// instance, so it never parks.
    pub fn has_files(&self) -> bool {
        !matches!(&self.preopens, Ok(preopens) if preopens.is_empty())
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Returned from `_start` (code 0) or called `proc_exit`.
    Exited(i32),
    /// Stopped on request.
    Stopped,
    /// Captured and ended on request; the snapshot went to the requester.
    Suspended,
    /// Captured and ended for a move; the snapshot went to the requester.
    Paused,
    /// Could not start, trapped, or exceeded a limit.
    Failed(String),
}

/// How one call into the guest ended.
enum SliceEnd {
    Finished(Outcome),
    Unwound,
}

/// Asyncify's handles in an instrumented instance.
struct CaptureExports {
    stack: Memory,
    stop_unwind: TypedFunction<(), ()>,
    start_rewind: TypedFunction<i32, ()>,
}

/// A Wasmer instance and its handles. Instances of instrumented modules can
/// be captured; a plain module (used by benchmarks as the baseline) runs
/// the same way but never unwinds.
pub struct LiveInstance {
    store: Store,
    env: FunctionEnv<GuestEnv>,
    memory: Memory,
    capture: Option<CaptureExports>,
    start: TypedFunction<(), ()>,
    globals: Vec<(u32, Global)>,
    /// The main module's instance, which the rewind module (the guest
    /// environment's) links against.
    main: Instance,
    /// The rewind module's instance once the first rewind needed it (kept so
    /// its twins stay alive).
    rewind_instance: Option<Instance>,
    /// What changed in memory, for each consumer that asks for changes.
    dirty: DirtyTracker,
}

/// How long a thread keeps an instance paused for a move before it copies
/// the memory out and ends anyway (the move's own limits end it sooner).
const HOLD_LIMIT: Duration = Duration::from_secs(180);

pub(super) fn initial_memory_bytes(module: &Module) -> u64 {
    module
        .exports()
        .find_map(|export| match export.ty() {
            ExternType::Memory(memory) if export.name() == "memory" => Some(memory.minimum.bytes().0 as u64),
            _ => None,
        })
        .unwrap_or(0)
}

fn global_value(value: &Value) -> Option<GlobalValue> {
    Some(match value {
        Value::I32(v) => GlobalValue::I32(*v),
        Value::I64(v) => GlobalValue::I64(*v),
        Value::F32(v) => GlobalValue::F32(v.to_bits()),
        Value::F64(v) => GlobalValue::F64(v.to_bits()),
        Value::V128(v) => GlobalValue::V128(*v),
        _ => return None,
    })
}

fn wasm_value(value: GlobalValue) -> Value {
    match value {
        GlobalValue::I32(v) => Value::I32(v),
        GlobalValue::I64(v) => Value::I64(v),
        GlobalValue::F32(bits) => Value::F32(f32::from_bits(bits)),
        GlobalValue::F64(bits) => Value::F64(f64::from_bits(bits)),
        GlobalValue::V128(v) => Value::V128(v),
    }
}

impl LiveInstance {
    /// Instantiates `module`; with `snapshot`, puts memory, globals, the saved
    /// stack and host state back so that the next [`run`](Self::run) rewinds
    /// to where the snapshot was taken.
    pub fn new(
        engine: &wasmer::Engine,
        guest_module: &GuestModule,
        launch: &LaunchSpec,
        control: Arc<FunctionControl>,
        services: Arc<dyn HostServices>,
        snapshot: Option<&Snapshot>,
        may_park: bool,
    ) -> Result<LiveInstance, String> {
        let module = &guest_module.main;
        let needed_bytes = snapshot.map_or_else(
            || initial_memory_bytes(module),
            |snapshot| snapshot.memory.memory_bytes(),
        );
        if needed_bytes > launch.memory_limit_bytes {
            return Err(format!(
                "memory limit exceeded: the function needs {needed_bytes} bytes at start, limit is {} bytes",
                launch.memory_limit_bytes
            ));
        }
        let mut fds = FdTable::with_preopens(launch.preopens.as_deref().map_err(Clone::clone)?)?;
        if let Some(files) = snapshot.and_then(|snapshot| snapshot.files.as_ref()) {
            super::wasi::volume::restore_descriptors(&mut fds, &files.descriptors)?;
        }
        let may_park = may_park && !launch.has_files();
        let mut store = Store::new(engine.clone());
        let mut args = vec![launch.name.clone()];
        args.extend(launch.args.iter().cloned());
        let host = snapshot.map(|snapshot| &snapshot.host);
        let env = FunctionEnv::new(
            &mut store,
            GuestEnv {
                name: launch.name.clone(),
                memory: None,
                control,
                services,
                args,
                environ: launch.environ.clone(),
                fds,
                clock: VirtualClock::starting_at(host.map_or(Duration::ZERO, |host| host.monotonic)),
                cpu: CpuMeter::start(host.map_or(Duration::ZERO, |host| host.cpu)),
                cpu_account: CpuAccount::start(host.map_or(Duration::ZERO, |host| host.cpu), launch.cpu_cap),
                governor: launch.governor.clone(),
                memory_limit_bytes: launch.memory_limit_bytes,
                // A waiter kept for a move or a suspend gets the reply.
                caller: host.and_then(|host| host.caller.clone()).map(Caller::Away),
                unsupported_reported: HashSet::new(),
                asyncify: None,
                phase: Phase::Normal,
                pending: host.map(|host| host.pending.clone()),
                may_park,
                parking: false,
                rewind: guest_module.rewind.clone(),
            },
        );
        let imports = build_imports(&mut store, &env, module);
        let instance =
            Instance::new(&mut store, module, &imports).map_err(|error| format!("could not instantiate: {error}"))?;
        let exports = &instance.exports;
        let missing = |what: &str, error: &dyn std::fmt::Display| format!("module has no usable {what}: {error}");
        let memory = exports.get_memory("memory").map_err(|e| missing("memory", &e))?.clone();
        let start = exports
            .get_typed_function(&store, "_start")
            .map_err(|e| missing("`_start`", &e))?;
        let hooks = match exports.get_memory(STACK_MEMORY_EXPORT) {
            Err(_) => None,
            Ok(stack) => {
                let stack = stack.clone();
                let function = |name: &str| -> Result<wasmer::Function, String> {
                    exports.get_function(name).cloned().map_err(|e| missing(name, &e))
                };
                let start_unwind = function("asyncify_start_unwind")?;
                let stop_unwind = function("asyncify_stop_unwind")?;
                let start_rewind = function("asyncify_start_rewind")?;
                let stop_rewind = function("asyncify_stop_rewind")?;
                let typed_error = |name: &str, e: &dyn std::fmt::Display| format!("{name} has the wrong type: {e}");
                Some((
                    AsyncifyHooks {
                        start_unwind: start_unwind
                            .typed(&store)
                            .map_err(|e| typed_error("asyncify_start_unwind", &e))?,
                        stop_rewind: stop_rewind
                            .typed(&store)
                            .map_err(|e| typed_error("asyncify_stop_rewind", &e))?,
                        stack: stack.clone(),
                    },
                    CaptureExports {
                        stack,
                        stop_unwind: stop_unwind
                            .typed(&store)
                            .map_err(|e| typed_error("asyncify_stop_unwind", &e))?,
                        start_rewind: start_rewind
                            .typed(&store)
                            .map_err(|e| typed_error("asyncify_start_rewind", &e))?,
                    },
                ))
            }
        };
        let mut globals: Vec<(u32, Global)> = exports
            .iter()
            .filter_map(|(name, export)| {
                let index = name.strip_prefix(GLOBAL_EXPORT_PREFIX)?.parse().ok()?;
                match export {
                    wasmer::Extern::Global(global) => Some((index, global.clone())),
                    _ => None,
                }
            })
            .collect();
        globals.sort_by_key(|(index, _)| *index);

        let (hooks, capture) = hooks.unzip();
        {
            let guest = env.as_mut(&mut store);
            guest.memory = Some(memory.clone());
            guest.asyncify = hooks;
        }
        let mut live = LiveInstance {
            store,
            env,
            memory,
            capture,
            start,
            globals,
            main: instance.clone(),
            rewind_instance: None,
            dirty: DirtyTracker::new(TrackingMode::of_this_hub()),
        };
        if let Some(snapshot) = snapshot {
            live.restore(snapshot)?;
            live.start_clean_sets(snapshot);
        }
        let bytes = live.memory.view(&live.store).data_size();
        live.env.as_ref(&live.store).control.set_memory_bytes(bytes);
        Ok(live)
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        if let SnapshotMemory::Stored(stored) = &snapshot.memory {
            // Chunk by chunk from the store into the instance: no image of
            // the whole memory in between, and the pages of each chunk
            // allocated by the thread that decodes it.
            let began = Instant::now();
            let initial = self.memory_bytes();
            self.grow_to(stored.manifest.memory_bytes)?;
            let view = self.memory.view(&self.store);
            let prefault = super::prefault::Prefault::new(view.data_ptr() as usize);
            let zero = super::prefault::with_memory_before_its_run(&view, |memory| {
                stored.read_into(memory, &|offset, len| prefault.chunk(offset, len))
            })?;
            // Grown pages are zero already; the module's own may hold its
            // data segments.
            for offset in zero.into_iter().filter(|offset| *offset < initial) {
                let len = u64::from(stored.manifest.chunk_size).min(initial - offset);
                view.write(offset, &vec![0; len as usize])
                    .map_err(|error| format!("cannot write memory at {offset}: {error}"))?;
            }
            tracing::debug!(
                bytes = stored.manifest.memory_bytes,
                micros = began.elapsed().as_micros() as u64,
                "memory restored from the store"
            );
        } else {
            let memory = snapshot.memory.whole()?;
            self.grow_to(memory.len() as u64)?;
            self.write_memory(0, memory)?;
        }
        self.restore_execution(snapshot)
    }

    /// Grows the linear memory to `wanted` bytes (whole pages, never less
    /// than it has).
    pub(super) fn grow_to(&mut self, wanted: u64) -> Result<(), String> {
        let current = self.memory.view(&self.store).data_size();
        if !wanted.is_multiple_of(PAGE) || wanted < current {
            return Err(format!(
                "snapshot memory of {wanted} bytes does not fit a module that starts with {current} bytes"
            ));
        }
        if wanted > current {
            let delta = ((wanted - current) / PAGE) as u32;
            self.memory
                .grow(&mut self.store, delta)
                .map_err(|error| format!("cannot grow memory to {wanted} bytes: {error}"))?;
        }
        Ok(())
    }

    /// Writes `bytes` into the linear memory at `offset`.
    pub(super) fn write_memory(&mut self, offset: u64, bytes: &[u8]) -> Result<(), String> {
        self.memory
            .view(&self.store)
            .write(offset, bytes)
            .map_err(|error| format!("cannot write memory: {error}"))
    }

    /// Size of the linear memory.
    pub(super) fn memory_bytes(&self) -> u64 {
        self.memory.view(&self.store).data_size()
    }

    /// Puts a snapshot's execution state — host state, globals, the saved
    /// stack — into an instance whose memory already holds the snapshot's
    /// (written while it arrived), so that the next run rewinds.
    pub(super) fn resume_in_place(&mut self, snapshot: &Snapshot, launch: &LaunchSpec) -> Result<(), String> {
        let (held, wanted) = (self.memory_bytes(), snapshot.memory.memory_bytes());
        if held != wanted {
            return Err(format!(
                "the instance holds {held} bytes of memory, the snapshot {wanted}"
            ));
        }
        let host = &snapshot.host;
        // Its directories are opened again: the volume was laid out from
        // the checkpoint after this instance was made.
        let fds = match &snapshot.files {
            Some(files) => {
                let mut fds = FdTable::with_preopens(launch.preopens.as_deref().map_err(Clone::clone)?)?;
                super::wasi::volume::restore_descriptors(&mut fds, &files.descriptors)?;
                Some(fds)
            }
            None => None,
        };
        {
            let guest = self.env.as_mut(&mut self.store);
            if let Some(fds) = fds {
                guest.fds = fds;
            }
            guest.clock = VirtualClock::starting_at(host.monotonic);
            guest.cpu = CpuMeter::start(host.cpu);
            guest.cpu_account = CpuAccount::start(host.cpu, launch.cpu_cap);
            guest.pending = Some(host.pending.clone());
            guest.caller = host.caller.clone().map(Caller::Away);
        }
        self.restore_execution(snapshot)?;
        let control = Arc::clone(&self.env.as_ref(&self.store).control);
        control.set_memory_bytes(held);
        self.start_clean_sets(snapshot);
        Ok(())
    }

    /// Starts the dirty sets asked for ([`FunctionControl::start_clean_after_restore`])
    /// clean, memory and volume: this instance holds `snapshot`, whose
    /// volume was laid out just before. A set that cannot start clean
    /// starts at its first capture instead, complete.
    fn start_clean_sets(&mut self, snapshot: &Snapshot) {
        let control = Arc::clone(&self.env.as_ref(&self.store).control);
        let view = self.memory.view(&self.store);
        let volume = snapshot.files.as_ref().and_then(|files| files.volume.as_ref());
        for (set, chunk_size) in control.take_clean_sets() {
            if let Err(reason) = self.dirty.start_clean(&view, &set, chunk_size) {
                tracing::warn!(%set, %reason, "cannot start a dirty set clean after the restore");
            }
            if let Some(volume) = volume
                && let Err(reason) = super::wasi::volume::start_clean(&self.env.as_ref(&self.store).fds, &set, volume)
            {
                tracing::warn!(%set, %reason, "cannot start the volume's view clean after the restore");
            }
        }
    }

    /// The saved stack and globals, then the rewind.
    fn restore_execution(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        self.capture_exports()?
            .stack
            .view(&self.store)
            .write(u64::from(STACK_DATA), &snapshot.stack)
            .map_err(|error| format!("cannot write the saved stack: {error}"))?;
        for (index, value) in &snapshot.globals {
            let global = self
                .globals
                .iter()
                .find(|(exported, _)| exported == index)
                .map(|(_, global)| global)
                .ok_or_else(|| format!("snapshot names global {index}, which the module does not export"))?;
            global
                .set(&mut self.store, wasm_value(*value))
                .map_err(|error| format!("cannot set global {index}: {error}"))?;
        }
        self.prepare_rewind()
    }

    fn capture_exports(&self) -> Result<&CaptureExports, String> {
        self.capture
            .as_ref()
            .ok_or_else(|| "the module is not instrumented for capture".to_owned())
    }

    /// Makes the next [`run`](Self::run) rewind to the unwound call.
    fn prepare_rewind(&mut self) -> Result<(), String> {
        self.instantiate_rewind_module()?;
        let start_rewind = self.capture_exports()?.start_rewind.clone();
        self.env.as_mut(&mut self.store).phase = Phase::Rewinding;
        start_rewind
            .call(&mut self.store, STACK_DATA as i32)
            .map_err(|error| format!("cannot start rewinding: {error}"))
    }

    /// Instantiates the rewind module, if the module has one and it is not
    /// instantiated yet (a warm instance does it before its first rewind).
    pub(super) fn instantiate_rewind_module(&mut self) -> Result<(), String> {
        if self.rewind_instance.is_none()
            && let Some(rewind) = self.env.as_ref(&self.store).rewind.clone()
        {
            self.rewind_instance = Some(rewind.instantiate(&mut self.store, &self.main)?);
        }
        Ok(())
    }

    /// Calls `_start` (which rewinds if a rewind was prepared) until the guest
    /// ends or unwinds.
    fn run(&mut self) -> SliceEnd {
        let result = self.start.call(&mut self.store);
        let phase = self.env.as_ref(&self.store).phase;
        {
            let view = self.memory.view(&self.store);
            self.env.as_ref(&self.store).publish_counters(&view);
        }
        match result {
            Ok(()) if phase == Phase::Unwinding => match self
                .capture
                .as_ref()
                .map(|capture| capture.stop_unwind.clone())
                .ok_or_else(|| RuntimeError::new("unwound without Asyncify"))
                .and_then(|stop_unwind| stop_unwind.call(&mut self.store))
            {
                Ok(()) => {
                    self.env.as_mut(&mut self.store).phase = Phase::Normal;
                    SliceEnd::Unwound
                }
                Err(error) => SliceEnd::Finished(Outcome::Failed(format!("unwinding failed: {}", error.message()))),
            },
            Ok(()) => SliceEnd::Finished(Outcome::Exited(0)),
            Err(error) => SliceEnd::Finished(match error.downcast_ref::<GuestStop>() {
                Some(GuestStop::Exit(code)) => Outcome::Exited(*code),
                Some(GuestStop::Stopped) => Outcome::Stopped,
                Some(stop) => Outcome::Failed(stop.to_string()),
                None => Outcome::Failed(format!("trapped: {}", error.message())),
            }),
        }
    }

    /// Runs the function until it ends, is suspended, or parks in a long
    /// wait (then the snapshot to continue from is returned), answering
    /// capture requests on the way (each costs one unwind and one rewind).
    pub fn run_until_parked(&mut self) -> RunEnd {
        loop {
            match self.run() {
                SliceEnd::Finished(outcome) => {
                    let control = Arc::clone(&self.env.as_ref(&self.store).control);
                    for request in control.take_capture_requests() {
                        let _ = request
                            .reply
                            .send(Err(format!("the function ended first ({outcome:?})")));
                    }
                    return RunEnd::Finished(outcome);
                }
                SliceEnd::Unwound => {
                    if std::mem::take(&mut self.env.as_mut(&mut self.store).parking) {
                        return match self.snapshot() {
                            Ok(snapshot) => RunEnd::Parked(Arc::new(snapshot)),
                            Err(reason) => RunEnd::Finished(Outcome::Failed(format!("parking failed: {reason}"))),
                        };
                    }
                    let (ending, keeper) = self.answer_captures();
                    if let Some(outcome) = ending {
                        if let Some(keeper) = keeper {
                            self.hold_until_decided(keeper);
                        }
                        return RunEnd::Finished(outcome);
                    }
                    if let Err(reason) = self.prepare_rewind() {
                        return RunEnd::Finished(Outcome::Failed(reason));
                    }
                }
            }
        }
    }
}

/// How a run of an instance on one thread ended.
#[derive(Debug)]
pub enum RunEnd {
    Finished(Outcome),
    /// The function waits in `snapshot.host.pending` for longer than it is
    /// worth holding an instance and a thread: continue it from the snapshot
    /// when the wait is over.
    Parked(Arc<Snapshot>),
}

/// Instantiates `module` (fresh or from `snapshot`) and runs it on the
/// calling thread until it ends, is suspended or — with `may_park` — parks.
pub fn run_until_parked(
    engine: &wasmer::Engine,
    module: &GuestModule,
    launch: &LaunchSpec,
    control: Arc<FunctionControl>,
    services: Arc<dyn HostServices>,
    snapshot: Option<&Snapshot>,
    may_park: bool,
) -> RunEnd {
    let instance = LiveInstance::new(
        engine,
        module,
        launch,
        Arc::clone(&control),
        services,
        snapshot,
        may_park,
    );
    match instance {
        Ok(mut live) => {
            control.mark_instantiated();
            live.run_until_parked()
        }
        Err(reason) => RunEnd::Finished(Outcome::Failed(reason)),
    }
}

/// Instantiates and runs a function on the calling thread until it ends
/// (never parking: it holds the thread throughout).
pub fn run_to_completion(
    engine: &wasmer::Engine,
    module: &GuestModule,
    launch: &LaunchSpec,
    control: Arc<FunctionControl>,
    services: Arc<dyn HostServices>,
    snapshot: Option<&Snapshot>,
) -> Outcome {
    match run_until_parked(engine, module, launch, control, services, snapshot, false) {
        RunEnd::Finished(outcome) => outcome,
        RunEnd::Parked(_) => Outcome::Failed("parked although parking was off".to_owned()),
    }
}
