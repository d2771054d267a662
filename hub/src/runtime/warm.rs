//! A warm instance: a function arriving by a move is instantiated on its
//! own thread while the pre-copy streams, and the arriving memory is written
//! into it as it comes. At the commit it only takes the snapshot's execution
//! state (globals, the saved stack, host state) and rewinds, instead of
//! instantiating and copying the whole memory inside the downtime.
//!
//! The thread that instantiates the instance is the one that runs it
//! (Wasmer's `Store` stays on its thread). Writes are fire-and-forget; if one
//! fails, or the memory does not match the snapshot at the start, the
//! thread starts a fresh instance from the snapshot's whole memory instead,
//! so a warm instance is never less correct than a cold start.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::control::{FunctionControl, Message};
use super::effects::HeldServices;
use super::guest::HostServices;
use super::instance::{LaunchSpec, LiveInstance, Outcome, RunEnd};
use super::rewind::GuestModule;
use super::snapshot::Snapshot;

enum Command {
    /// Grow the memory to this many bytes.
    Grow(u64),
    /// Write bytes at an offset (shared: one chunk may fill several slots).
    Write(u64, Arc<Vec<u8>>),
    /// Run from the snapshot; its memory is what was written. With a
    /// sender, the start is held (see [`WarmInstance::start_held`]): it
    /// hears whether the instance resumed in place, and there is no cold
    /// start instead.
    Start(Arc<Snapshot>, Option<oneshot::Sender<Result<(), String>>>),
}

/// An instance being filled on its own thread until it is started or
/// dropped (dropping it ends the thread and frees the instance).
pub struct WarmInstance {
    commands: mpsc::Sender<Command>,
    control: Arc<FunctionControl>,
    thread: tokio::task::JoinHandle<RunEnd>,
    /// Set when the start could not use the filled instance.
    cold: Arc<AtomicBool>,
}

impl std::fmt::Debug for WarmInstance {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("WarmInstance").finish_non_exhaustive()
    }
}

impl WarmInstance {
    /// Instantiates `module` on a new blocking thread of the current tokio
    /// runtime, with a fresh control the run will keep.
    pub fn spawn(
        engine: wasmer::Engine,
        module: GuestModule,
        launch: LaunchSpec,
        services: Arc<dyn HostServices>,
        may_park: bool,
    ) -> WarmInstance {
        let (commands, received) = mpsc::channel();
        let control = Arc::new(FunctionControl::default());
        let run_control = Arc::clone(&control);
        let cold = Arc::new(AtomicBool::new(false));
        let run_cold = Arc::clone(&cold);
        // Its effects may be held: it may run before its move is committed.
        let services: Arc<dyn HostServices> = Arc::new(HeldServices {
            inner: services,
            control: Arc::clone(&control),
        });
        let thread = tokio::task::spawn_blocking(move || {
            let warm = Warm {
                engine,
                module,
                launch,
                control: run_control,
                services,
                may_park,
                cold: run_cold,
            };
            warm.run(received)
        });
        WarmInstance {
            commands,
            control,
            thread,
            cold,
        }
    }

    /// Becomes true if the start could not use the filled instance and
    /// started a fresh one from the snapshot instead.
    pub fn started_cold(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cold)
    }

    /// The control of the run this instance becomes.
    pub fn control(&self) -> &Arc<FunctionControl> {
        &self.control
    }

    /// Grows the instance's memory to `bytes`.
    pub fn grow_to(&self, bytes: u64) {
        let _ = self.commands.send(Command::Grow(bytes));
    }

    /// Writes `bytes` into the instance's memory at `offset`.
    pub fn write(&self, offset: u64, bytes: Arc<Vec<u8>>) {
        let _ = self.commands.send(Command::Write(offset, bytes));
    }

    /// Runs the function from `snapshot` (whose memory is what was written,
    /// or — if the writes failed — what a fresh instance gets) until it
    /// ends, is suspended or parks.
    pub fn start(self, snapshot: Arc<Snapshot>) -> tokio::task::JoinHandle<RunEnd> {
        if self.commands.send(Command::Start(snapshot, None)).is_err() {
            tracing::warn!("a warm instance's thread ended before its start");
        }
        self.thread
    }

    /// Runs the function from `snapshot` with its effects held: it
    /// computes, but its output is kept and its messages and replies wait
    /// until the gate opens (`control().effects().release()`). Fails — and
    /// the thread ends — if the filled instance cannot resume in place;
    /// there is no cold start here, the caller starts the function the
    /// usual way instead.
    ///
    /// The messages the snapshot's inbox holds are delivered here, before
    /// the run starts (a start at the commit delivers them then).
    pub async fn start_held(self, snapshot: Arc<Snapshot>) -> Result<HeldRun, String> {
        self.control.effects().hold();
        for data in &snapshot.host.inbox {
            let _ = self.control.deliver(Message {
                data: data.clone(),
                reply_to: None,
            });
        }
        let (resumed, answer) = oneshot::channel();
        if self.commands.send(Command::Start(snapshot, Some(resumed))).is_err() {
            return Err("the warm instance's thread ended before its start".to_owned());
        }
        match answer.await {
            Ok(Ok(())) => Ok(HeldRun {
                control: self.control,
                thread: Some(self.thread),
                resumed_at: Instant::now(),
            }),
            Ok(Err(reason)) => Err(reason),
            Err(_) => Err("the warm instance's thread ended before it resumed".to_owned()),
        }
    }
}

/// A function that runs with its effects held ([`WarmInstance::start_held`]).
/// Dropped without [`HeldRun::into_run`], it is stopped: nothing it did is
/// seen anywhere.
pub struct HeldRun {
    control: Arc<FunctionControl>,
    thread: Option<tokio::task::JoinHandle<RunEnd>>,
    resumed_at: Instant,
}

impl std::fmt::Debug for HeldRun {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HeldRun")
            .field("resumed_at", &self.resumed_at)
            .finish_non_exhaustive()
    }
}

impl HeldRun {
    /// The control of the run.
    pub fn control(&self) -> &Arc<FunctionControl> {
        &self.control
    }

    /// When the function resumed.
    pub fn resumed_at(&self) -> Instant {
        self.resumed_at
    }

    /// The run's thread, to be driven like any other run. Its effects stay
    /// held until the caller releases the gate (`control().effects()`).
    pub fn into_run(mut self) -> tokio::task::JoinHandle<RunEnd> {
        self.thread.take().expect("a held run has its thread until taken")
    }
}

impl Drop for HeldRun {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.control.request_stop();
        }
    }
}

/// An arrival's instance as the start finds it: filled and waiting, or
/// already running with its effects held.
#[derive(Debug)]
pub enum WarmStart {
    Filled(WarmInstance),
    Held(HeldRun),
}

impl WarmStart {
    /// The control of the run this becomes.
    pub fn control(&self) -> &Arc<FunctionControl> {
        match self {
            WarmStart::Filled(warm) => warm.control(),
            WarmStart::Held(held) => held.control(),
        }
    }

    /// The run: started now from `snapshot`, or the one already going.
    pub fn start(self, snapshot: Arc<Snapshot>) -> tokio::task::JoinHandle<RunEnd> {
        match self {
            WarmStart::Filled(warm) => warm.start(snapshot),
            WarmStart::Held(held) => held.into_run(),
        }
    }
}

/// What the warm thread owns.
struct Warm {
    engine: wasmer::Engine,
    module: GuestModule,
    launch: LaunchSpec,
    control: Arc<FunctionControl>,
    services: Arc<dyn HostServices>,
    may_park: bool,
    cold: Arc<AtomicBool>,
}

impl Warm {
    fn run(self, commands: mpsc::Receiver<Command>) -> RunEnd {
        let mut live = self
            .instantiate(None)
            .and_then(|mut live| live.instantiate_rewind_module().map(|()| live));
        let mut broken: Option<String> = live.as_ref().err().cloned();
        let (snapshot, held) = loop {
            let Ok(command) = commands.recv() else {
                // Dropped without a start: the arrival was discarded.
                return RunEnd::Finished(Outcome::Stopped);
            };
            let applied = match (&mut live, command) {
                (_, Command::Start(snapshot, held)) => break (snapshot, held),
                (Err(_), _) => Ok(()),
                (Ok(_), _) if broken.is_some() => Ok(()),
                (Ok(_), Command::Grow(bytes)) if bytes > self.launch.memory_limit_bytes => Err(format!(
                    "memory limit exceeded: {bytes} bytes, limit is {} bytes",
                    self.launch.memory_limit_bytes
                )),
                (Ok(live), Command::Grow(bytes)) => live.grow_to(bytes),
                (Ok(live), Command::Write(offset, bytes)) => live.write_memory(offset, &bytes),
            };
            if let Err(reason) = applied {
                tracing::debug!(function = %self.launch.name, %reason, "warm instance unusable; the start will be cold");
                broken = Some(reason);
            }
        };
        let resumed = match live {
            Ok(mut live) if broken.is_none() => live.resume_in_place(&snapshot, &self.launch).map(|()| live),
            _ => Err(broken.unwrap_or_default()),
        };
        let mut live = match (resumed, held) {
            (Ok(live), held) => {
                if let Some(held) = held {
                    let _ = held.send(Ok(()));
                }
                Ok(live)
            }
            (Err(reason), Some(held)) => {
                let _ = held.send(Err(reason));
                return RunEnd::Finished(Outcome::Stopped);
            }
            (Err(reason), None) => {
                self.cold.store(true, Ordering::SeqCst);
                tracing::info!(function = %self.launch.name, %reason, "starting cold instead of from the warm instance");
                self.instantiate(Some(&snapshot))
            }
        };
        if live.is_ok() {
            self.control.mark_instantiated();
        }
        match &mut live {
            Ok(live) => live.run_until_parked(),
            Err(reason) => RunEnd::Finished(Outcome::Failed(reason.clone())),
        }
    }

    fn instantiate(&self, snapshot: Option<&Snapshot>) -> Result<LiveInstance, String> {
        LiveInstance::new(
            &self.engine,
            &self.module,
            &self.launch,
            Arc::clone(&self.control),
            Arc::clone(&self.services),
            snapshot,
            self.may_park,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ferry_proto::v1::LogStream;

    use super::*;
    use crate::runtime::testing::RecordingServices;
    use crate::runtime::{CaptureKind, MemoryWanted, Runtime, run_to_completion, run_until_parked};

    const HEAP_WALK: &[u8] = include_bytes!("../../../integration-tests/guests/heap_walk.wasm");
    /// Long enough (≈ 1 s) to be paused part-way.
    const ARGS: [&str; 2] = ["4", "200"];

    fn launch() -> LaunchSpec {
        LaunchSpec {
            name: "walk".to_owned(),
            args: ARGS.iter().map(|arg| (*arg).to_owned()).collect(),
            environ: Vec::new(),
            memory_limit_bytes: 256 << 20,
            cpu_cap: None,
            governor: None,
            preopens: Ok(Vec::new()),
        }
    }

    fn stdout(services: &RecordingServices) -> String {
        let output = services.output.lock().unwrap();
        let bytes: Vec<u8> = output
            .iter()
            .filter(|(stream, _)| *stream == LogStream::Stdout)
            .flat_map(|(_, data)| data.iter().copied())
            .collect();
        String::from_utf8(bytes).unwrap()
    }

    /// The module, its whole output run without a stop, and a snapshot
    /// taken part-way with the output written before it.
    async fn paused_heap_walk() -> (Arc<Runtime>, GuestModule, String, Arc<Snapshot>, String) {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(crate::store::Store::open(dir.path()).unwrap());
        let module = runtime.prepare(HEAP_WALK).unwrap().ready_to_rewind().unwrap().module;
        let engine = runtime.engine().clone();

        let whole = Arc::new(RecordingServices::default());
        let (engine_for, module_for, services) = (engine.clone(), module.clone(), Arc::clone(&whole));
        let outcome = tokio::task::spawn_blocking(move || {
            run_to_completion(&engine_for, &module_for, &launch(), Arc::default(), services, None)
        })
        .await
        .unwrap();
        assert_eq!(outcome, Outcome::Exited(0));

        let before = Arc::new(RecordingServices::default());
        let control = Arc::new(FunctionControl::default());
        let (engine_for, module_for, services, run_control) = (
            engine.clone(),
            module.clone(),
            Arc::clone(&before),
            Arc::clone(&control),
        );
        let run = tokio::task::spawn_blocking(move || {
            run_until_parked(&engine_for, &module_for, &launch(), run_control, services, None, false)
        });
        control.instantiated().await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        let capture = control.request_capture(CaptureKind::Stop, MemoryWanted::Whole);
        let snapshot = tokio::time::timeout(Duration::from_secs(30), capture)
            .await
            .expect("the guest unwinds for the capture (it ended first?)")
            .unwrap()
            .unwrap();
        assert!(matches!(run.await.unwrap(), RunEnd::Finished(Outcome::Suspended)));
        (runtime, module, stdout(&whole), snapshot, stdout(&before))
    }

    /// A warm instance of `module` that records what it is given to do.
    fn spawn_warm(runtime: &Runtime, module: &GuestModule) -> (WarmInstance, Arc<RecordingServices>) {
        let services = Arc::new(RecordingServices::default());
        let warm = WarmInstance::spawn(
            runtime.engine().clone(),
            module.clone(),
            launch(),
            Arc::clone(&services) as Arc<dyn HostServices>,
            false,
        );
        (warm, services)
    }

    /// Starts a warm instance from `snapshot` after `fill` wrote into it;
    /// returns how it ended and what it printed.
    async fn warm_run(
        runtime: &Runtime,
        module: &GuestModule,
        snapshot: &Arc<Snapshot>,
        fill: impl FnOnce(&WarmInstance),
    ) -> (RunEnd, String, bool) {
        let (warm, services) = spawn_warm(runtime, module);
        fill(&warm);
        let cold = warm.started_cold();
        let end = warm.start(Arc::clone(snapshot)).await.unwrap();
        (end, stdout(&services), cold.load(Ordering::SeqCst))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_warm_instance_filled_chunk_by_chunk_continues_exactly_like_a_cold_restore() {
        let (runtime, module, whole, snapshot, before) = paused_heap_walk().await;
        let memory = snapshot.memory.whole().unwrap().to_vec();
        assert!(memory.len() > 4 << 20, "the heap is in the snapshot");
        let (end, after, cold) = warm_run(&runtime, &module, &snapshot, |warm| {
            warm.grow_to(memory.len() as u64);
            for (index, chunk) in memory.chunks(64 << 10).enumerate().rev() {
                // In any order, as slots arrive; zero chunks need no write.
                if chunk.iter().any(|byte| *byte != 0) {
                    warm.write((index * (64 << 10)) as u64, Arc::new(chunk.to_vec()));
                }
            }
        })
        .await;
        assert!(matches!(end, RunEnd::Finished(Outcome::Exited(0))), "{end:?}");
        assert!(!cold, "it ran in the instance it filled");
        assert!(!before.is_empty() && !after.is_empty(), "paused part-way");
        assert_eq!(format!("{before}{after}"), whole);
    }

    /// A warm instance filled with `snapshot`'s memory, its services, and
    /// its run started held.
    async fn held_heap_walk(
        runtime: &Runtime,
        module: &GuestModule,
        snapshot: &Arc<Snapshot>,
    ) -> (HeldRun, Arc<RecordingServices>) {
        let (warm, services) = spawn_warm(runtime, module);
        let memory = snapshot.memory.whole().unwrap();
        warm.grow_to(memory.len() as u64);
        for (index, chunk) in memory.chunks(64 << 10).enumerate() {
            warm.write((index * (64 << 10)) as u64, Arc::new(chunk.to_vec()));
        }
        let held = warm.start_held(Arc::clone(snapshot)).await.expect("resumed in place");
        (held, services)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_started_held_shows_nothing_until_released_then_continues_exactly() {
        let (runtime, module, whole, snapshot, before) = paused_heap_walk().await;
        let (held, services) = held_heap_walk(&runtime, &module, &snapshot).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(stdout(&services), "", "nothing is seen while its effects are held");
        let control = Arc::clone(held.control());
        let run = held.into_run();
        control.effects().release();
        let end = run.await.unwrap();
        assert!(matches!(end, RunEnd::Finished(Outcome::Exited(0))), "{end:?}");
        assert_eq!(format!("{before}{}", stdout(&services)), whole);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_started_held_and_given_up_stops_with_nothing_seen() {
        let (runtime, module, _whole, snapshot, _before) = paused_heap_walk().await;
        let (held, services) = held_heap_walk(&runtime, &module, &snapshot).await;
        let control = Arc::clone(held.control());
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        assert!(control.stop_requested(), "a held run dropped is stopped");
        // Opening the gate after the stop lets nothing out either.
        control.effects().release();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(stdout(&services), "");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_warm_instance_whose_writes_failed_starts_cold_from_the_snapshot() {
        let (runtime, module, whole, snapshot, before) = paused_heap_walk().await;
        let bytes = snapshot.memory.memory_bytes();
        type Fill = Box<dyn FnOnce(&WarmInstance)>;
        let cases: [(&str, Fill); 3] = [
            (
                "a write past the end",
                Box::new(move |warm| warm.write(bytes, Arc::new(vec![1; 16]))),
            ),
            ("memory never grown", Box::new(|_| {})),
            ("above the memory limit", Box::new(|warm| warm.grow_to(1 << 30))),
        ];
        for (case, fill) in cases {
            let (end, after, cold) = warm_run(&runtime, &module, &snapshot, fill).await;
            assert!(cold, "{case}: started from the snapshot instead");
            assert!(matches!(end, RunEnd::Finished(Outcome::Exited(0))), "{case}: {end:?}");
            assert_eq!(format!("{before}{after}"), whole, "{case}");
        }
    }

    /// `snapshot` put into a temporary checkpoint store: the store's
    /// database and packs (kept alive by the caller), the store that wrote
    /// it and the manifest.
    fn stored_checkpoint(
        snapshot: &Snapshot,
    ) -> (
        sled::Db,
        tempfile::TempDir,
        ferry_migrator::checkpoint::CheckpointStore,
        ferry_proto::internal::v1::CheckpointManifest,
    ) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let packs = tempfile::tempdir().unwrap();
        let spec = ferry_proto::v1::FunctionSpec {
            name: "walk".to_owned(),
            module_hash: blake3::hash(HEAP_WALK).to_hex().to_string(),
            ..Default::default()
        };
        let template = crate::checkpoint_codec::manifest_template(snapshot, spec, 0, 1, 0);
        let writer = ferry_migrator::checkpoint::CheckpointStore::open(&db, packs.path()).unwrap();
        let (manifest, _, _) = writer.put(template, snapshot.memory.whole().unwrap(), None).unwrap();
        (db, packs, writer, manifest)
    }

    /// What an arrival hands its warm instance: the memory is only in the
    /// instance and in the checkpoint store, so a warm instance that turned
    /// out unusable starts cold from the stored checkpoint.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_warm_instance_whose_writes_failed_starts_cold_from_the_stored_checkpoint() {
        let (runtime, module, whole, snapshot, before) = paused_heap_walk().await;
        let (_db, _packs, store, manifest) = stored_checkpoint(&snapshot);
        let stored = Arc::new(Snapshot {
            memory: crate::runtime::SnapshotMemory::Stored(crate::runtime::StoredMemory {
                store,
                manifest: Arc::new(manifest),
            }),
            ..(*snapshot).clone()
        });
        let bytes = stored.memory.memory_bytes();
        let (end, after, cold) = warm_run(&runtime, &module, &stored, move |warm| {
            warm.grow_to(bytes);
            warm.write(bytes, Arc::new(vec![1; 16]));
        })
        .await;
        assert!(cold, "started from the stored checkpoint instead");
        assert!(matches!(end, RunEnd::Finished(Outcome::Exited(0))), "{end:?}");
        assert_eq!(format!("{before}{after}"), whole);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restore_from_the_store_writes_each_chunk_into_the_instance_and_continues_exactly() {
        let (runtime, module, whole, snapshot, before) = paused_heap_walk().await;
        // Written by this store (trusted) and read by one opened anew (verified).
        let (db, packs, writer, manifest) = stored_checkpoint(&snapshot);
        for store in [
            writer.clone(),
            ferry_migrator::checkpoint::CheckpointStore::open(&db, packs.path()).unwrap(),
        ] {
            store.verify_memory(&manifest).unwrap();
            let stored = Arc::new(Snapshot {
                memory: crate::runtime::SnapshotMemory::Stored(crate::runtime::StoredMemory {
                    store,
                    manifest: Arc::new(manifest.clone()),
                }),
                ..(*snapshot).clone()
            });
            let services = Arc::new(RecordingServices::default());
            let (engine, module, run_services) = (runtime.engine().clone(), module.clone(), Arc::clone(&services));
            let end = tokio::task::spawn_blocking(move || {
                run_until_parked(
                    &engine,
                    &module,
                    &launch(),
                    Arc::default(),
                    run_services,
                    Some(&stored),
                    false,
                )
            })
            .await
            .unwrap();
            assert!(matches!(end, RunEnd::Finished(Outcome::Exited(0))), "{end:?}");
            assert_eq!(format!("{before}{}", stdout(&services)), whole);
        }
    }
}
