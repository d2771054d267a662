//! The hub's WebAssembly runtime: Wasmer with Cranelift, the compiled-artifact
//! cache, the host functions a guest may import, and running one instance.

mod clock;
mod control;
pub mod cpu;
mod dirty;
mod effects;
mod guest;
mod host_api;
mod imports;
mod instance;
mod prefault;
mod registry;
mod rewind;
mod snapshot;
#[cfg(test)]
mod testing;
mod unwind;
mod wait;
mod warm;
mod wasi;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_migrator::{INSTRUMENTATION_VERSION, InstrumentError};
use ferry_proto::{ErrorCode, ServiceError};
use thiserror::Error;
use wasmer::Engine;
use wasmer::sys::{Cranelift, NativeEngineExt};

use crate::store::{ArtifactKey, Store, StoreError};

pub use control::{
    Answer, Caller, CaptureKind, CaptureResult, FunctionControl, INBOX_CAPACITY, MemoryWanted, Message, ReplyAddress,
    ReplyTo, Withdrawn, capture_outcome,
};
pub use dirty::TrackingMode;
pub use guest::{Delivery, HostServices, Sent, Undelivered};
pub use host_api::MAX_MESSAGE_BYTES;
pub use instance::{LaunchSpec, Outcome, RunEnd, run_to_completion, run_until_parked};
pub use rewind::{GuestModule, RewindModule};
pub use snapshot::{GlobalValue, HostSnapshot, MemoryChanges, PendingCall, Snapshot, SnapshotMemory, StoredMemory};
pub use warm::{HeldRun, WarmInstance, WarmStart};
pub use wasi::files::{PreopenSpec, usage as volume_usage};
pub use wasi::volume::{SnapshotFiles, check_descriptors};

/// Native stack a guest runs on.
pub const GUEST_STACK_BYTES: usize = 8 << 20;

/// Version of the Wasmer the hub is built with; part of every artifact key.
pub const WASMER_VERSION: &str = wasmer_types::VERSION;

/// Failures of preparing or starting a module.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("invalid module: {0}")]
    Instrument(#[from] InstrumentError),
    #[error("invalid module: {reason}")]
    InvalidModule { reason: String },
    #[error("module imports {module}.{name} ({kind}), which the hub does not provide")]
    UnsupportedImport {
        module: String,
        name: String,
        kind: &'static str,
    },
    #[error("module imports {module}.{name} with type {found}, but the hub provides {expected}")]
    ImportSignature {
        module: String,
        name: String,
        expected: String,
        found: String,
    },
    #[error("{reason}")]
    RewindModule { reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError for RuntimeError {
    fn error_code(&self) -> ErrorCode {
        match self {
            RuntimeError::Instrument(_)
            | RuntimeError::InvalidModule { .. }
            | RuntimeError::UnsupportedImport { .. }
            | RuntimeError::ImportSignature { .. } => ErrorCode::InvalidArgument,
            RuntimeError::RewindModule { .. } => ErrorCode::Internal,
            RuntimeError::Store(error) => error.error_code(),
        }
    }
}

/// A module ready to instantiate.
#[derive(Clone)]
pub struct PreparedModule {
    pub hash: String,
    pub module: GuestModule,
    /// The compiled artifact came from a cache (memory or store).
    pub cache_hit: bool,
    /// Time spent preparing it.
    pub prepare_time: Duration,
}

impl PreparedModule {
    /// Waits until the rewind module is compiled as well: for a hub about
    /// to restore the function, which must not wait for it later.
    pub fn ready_to_rewind(self) -> Result<PreparedModule, RuntimeError> {
        self.module
            .ready_to_rewind()
            .map_err(|reason| RuntimeError::RewindModule { reason })?;
        Ok(self)
    }
}

/// Compiles modules once per hub and keeps them for every later start.
pub struct Runtime {
    engine: Engine,
    store: Store,
    target: String,
    compiled: Mutex<HashMap<String, GuestModule>>,
    /// The CPU quota all functions of the hub share.
    governor: Arc<cpu::CpuGovernor>,
}

impl Runtime {
    pub fn new(store: Store) -> Arc<Runtime> {
        // Guests run on stacks Wasmer allocates; instrumented frames are
        // larger than plain ones, so give deep recursion room. Asyncify's
        // save area (STACK_MEMORY_PAGES) is sized to hold a full stack of this.
        wasmer::sys::vm::set_stack_size(GUEST_STACK_BYTES);
        let engine = Engine::from(Cranelift::default());
        let target = engine.target().triple().to_string();
        Arc::new(Runtime {
            engine,
            store,
            target,
            compiled: Mutex::new(HashMap::new()),
            governor: Arc::new(cpu::CpuGovernor::new(cpu::default_capacity())),
        })
    }

    /// The CPU quota every function of this hub charges.
    pub fn governor(&self) -> &Arc<cpu::CpuGovernor> {
        &self.governor
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The target triple compiled artifacts are built for.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Stores `original`, then instruments, checks and compiles it — or takes
    /// the compiled artifact from the cache. Blocking: call off the async runtime.
    pub fn prepare(&self, original: &[u8]) -> Result<PreparedModule, RuntimeError> {
        let started = Instant::now();
        let hash = self.store.put_module(original)?;
        if let Some(module) = self.cached(&hash) {
            return Ok(PreparedModule {
                hash,
                module,
                cache_hit: true,
                prepare_time: started.elapsed(),
            });
        }
        let key = self.artifact_key(&hash);
        if let Some(main) = load_artifact(&self.engine, &self.store, &key)? {
            let rewind = GuestModule::needs_rewind_module(&main).then(|| self.rewind_module(&hash, None));
            let module = GuestModule { main, rewind };
            self.remember(&hash, &module);
            return Ok(PreparedModule {
                hash,
                module,
                cache_hit: true,
                prepare_time: started.elapsed(),
            });
        }
        let instrumented = ferry_migrator::instrument(original)?;
        let main =
            wasmer::Module::new(&self.engine, &instrumented.bytes).map_err(|error| RuntimeError::InvalidModule {
                reason: error.to_string(),
            })?;
        imports::check_module(&self.engine, &main)?;
        let rewind = instrumented.rewind.map(|bytes| self.rewind_module(&hash, Some(bytes)));
        match main.serialize() {
            Ok(artifact) => match self.store.put_artifact(&key, &artifact) {
                // A cache only: the deploy goes on, compiled again next start.
                Err(StoreError::NoRoom(no_room)) => {
                    tracing::warn!(module = %hash, error = %no_room, "compiled module not cached: no room on the data disk")
                }
                stored => stored?,
            },
            Err(error) => {
                tracing::warn!(module = %hash, %error, "could not serialize a compiled module; it will be compiled again next time")
            }
        }
        let module = GuestModule { main, rewind };
        self.remember(&hash, &module);
        tracing::info!(
            module = %hash,
            functions = instrumented.stats.functions,
            loops = instrumented.stats.loops,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "module instrumented and compiled"
        );
        Ok(PreparedModule {
            hash,
            module,
            cache_hit: false,
            prepare_time: started.elapsed(),
        })
    }

    /// Prepares a module that is already in the store, by hash.
    pub fn prepare_stored(&self, hash: &str) -> Result<PreparedModule, RuntimeError> {
        if let Some(prepared) = self.prepared_in_memory(hash) {
            return Ok(prepared);
        }
        let original = self.store.module(hash)?;
        self.prepare(&original)
    }

    /// The module `hash` if it is compiled and in memory: no I/O, no
    /// waiting, for callers on the async runtime.
    pub fn prepared_in_memory(&self, hash: &str) -> Option<PreparedModule> {
        self.cached(hash).map(|module| PreparedModule {
            hash: hash.to_owned(),
            module,
            cache_hit: true,
            prepare_time: Duration::ZERO,
        })
    }

    fn artifact_key(&self, hash: &str) -> ArtifactKey {
        ArtifactKey {
            module_hash: hash.to_owned(),
            instrumentation_version: INSTRUMENTATION_VERSION,
            wasmer_version: WASMER_VERSION,
            target: self.target.clone(),
        }
    }

    /// The rewind module of the module `hash`, compiled on first use (and
    /// started in the background now): from its cached artifact, from
    /// `bytes`, or from instrumenting the stored module again.
    fn rewind_module(&self, hash: &str, bytes: Option<Vec<u8>>) -> Arc<RewindModule> {
        let (engine, store, hash) = (self.engine.clone(), self.store.clone(), hash.to_owned());
        let key = self.artifact_key(&format!("{hash}+rewind"));
        let bytes = Mutex::new(bytes);
        let rewind = Arc::new(RewindModule::new(move || {
            if let Some(module) = load_artifact(&engine, &store, &key).map_err(|error| error.to_string())? {
                return Ok(module);
            }
            let bytes = bytes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
            let bytes = match bytes {
                Some(bytes) => bytes,
                None => {
                    let original = store.module(&hash).map_err(|error| error.to_string())?;
                    let instrumented = ferry_migrator::instrument(&original).map_err(|error| error.to_string())?;
                    instrumented
                        .rewind
                        .ok_or_else(|| "the module has no rewind module".to_owned())?
                }
            };
            let started = Instant::now();
            let module = wasmer::Module::new(&engine, &bytes).map_err(|error| error.to_string())?;
            match module.serialize() {
                Ok(artifact) => {
                    if let Err(error) = store.put_artifact(&key, &artifact) {
                        tracing::warn!(module = %hash, %error, "could not cache a compiled rewind module");
                    }
                }
                Err(error) => tracing::warn!(module = %hash, %error, "could not serialize a compiled rewind module"),
            }
            tracing::info!(module = %hash, elapsed_ms = started.elapsed().as_millis() as u64, "rewind module compiled");
            Ok(module)
        }));
        rewind.compile_in_background();
        rewind
    }

    fn cached(&self, hash: &str) -> Option<GuestModule> {
        self.compiled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(hash)
            .cloned()
    }

    fn remember(&self, hash: &str, module: &GuestModule) {
        self.compiled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(hash.to_owned(), module.clone());
    }
}

/// A compiled artifact from the store, or `None` when absent or unusable.
#[allow(unsafe_code)]
fn load_artifact(engine: &Engine, store: &Store, key: &ArtifactKey) -> Result<Option<wasmer::Module>, RuntimeError> {
    let Some(artifact) = store.artifact(key)? else {
        return Ok(None);
    };
    // SAFETY: the artifact was serialized by a hub with this exact Wasmer
    // version, target and instrumentation (all part of the key), it was
    // never received from a peer, and the store verified its checksum.
    match unsafe { wasmer::Module::deserialize(engine, artifact) } {
        Ok(module) => Ok(Some(module)),
        Err(error) => {
            tracing::warn!(module = %key.module_hash, %error, "cached artifact does not load; compiling again");
            Ok(None)
        }
    }
}
