//! A captured function: everything needed to continue it in a fresh instance,
//! on this hub or another. WebAssembly-level state only: no native code, no
//! host pointers.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use ferry_migrator::checkpoint::CheckpointStore;
use ferry_migrator::checkpoint::store::BeforeEach;
use ferry_proto::internal::v1::CheckpointManifest;

/// The value of one exported mutable global.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalValue {
    I32(i32),
    I64(i64),
    /// IEEE bits, so NaN payloads survive.
    F32(u32),
    F64(u64),
    V128(u128),
}

/// The host call the guest was in when it was unwound; on rewind the same
/// call is made again and continues from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingCall {
    /// A preemption point.
    Preempt,
    /// `ferry.sleep_ms` until this virtual monotonic time.
    Sleep { until: Duration },
    /// `ferry.recv`, waiting until this virtual time (forever if `None`).
    Recv { deadline: Option<Duration> },
    /// `poll_oneoff` sleeping until this virtual time.
    Poll { until: Duration },
    /// `sched_yield`.
    SchedYield,
    /// `ferry.call` (`ferry.send` when `one_way`) waiting for the outcome of
    /// the message it sent, which a hub keeps as `outcome` until it is
    /// taken (`None`: nothing was kept; the guest hears that it failed).
    Outbound {
        one_way: bool,
        outcome: Option<super::control::ReplyAddress>,
    },
}

/// Host-side state that moves with the function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSnapshot {
    /// Virtual monotonic clock at capture; the restored clock continues from here.
    pub monotonic: Duration,
    /// Messages waiting in the inbox (their reply channels stay behind).
    pub inbox: Vec<Vec<u8>>,
    pub pending: PendingCall,
    /// Sequence number the function's next output entry gets.
    pub log_seq: u64,
    pub cpu: Duration,
    /// A received invocation was waiting for its reply.
    pub has_caller: bool,
    /// Where that reply goes, when its waiter was kept for a move or a
    /// suspend (`None`: the waiter stayed with the run and is gone after a
    /// restore).
    pub caller: Option<super::control::ReplyAddress>,
}

/// A function at rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The guest's linear memory (`memory`): whole, or what changed.
    pub memory: SnapshotMemory,
    /// Asyncify's save area: the unwound call stack (header and frames).
    pub stack: Vec<u8>,
    /// Exported mutable globals by their index in the deployed module.
    pub globals: Vec<(u32, GlobalValue)>,
    pub host: HostSnapshot,
    /// The function's volume and open descriptors (`None`: it has no
    /// directories).
    pub files: Option<super::wasi::volume::SnapshotFiles>,
    /// Set when the function was paused for a move or suspended with only
    /// its changes captured: the rest of its memory, kept until the move
    /// or the suspend's persist ends.
    pub hold: Option<PausedHold>,
}

impl Snapshot {
    /// The whole memory, for a restore: from the snapshot itself, or (for
    /// a paused function) from its hold, which must have been asked with
    /// [`PausedHold::ask_for_memory`] and whose run must have ended.
    pub fn with_whole_memory(&self) -> Result<Snapshot, String> {
        let memory = match (&self.memory, &self.hold) {
            (SnapshotMemory::Whole(_) | SnapshotMemory::Stored(_), _) => return Ok(self.clone()),
            (SnapshotMemory::Changes(changes), _) if changes.complete => changes.to_whole(),
            (SnapshotMemory::Changes(_), Some(hold)) => {
                hold.take_memory().ok_or("the paused function's memory was not kept")?
            }
            (SnapshotMemory::Changes(_), None) => return Err("the snapshot holds only changes".to_owned()),
        };
        Ok(Snapshot {
            memory: SnapshotMemory::Whole(memory),
            hold: None,
            ..self.clone()
        })
    }
}

/// A snapshot's linear memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotMemory {
    Whole(Vec<u8>),
    /// What changed since the previous capture for the same consumer.
    Changes(MemoryChanges),
    /// The memory of a verified checkpoint, still in the store: a restore
    /// reads it chunk by chunk straight into the instance.
    Stored(StoredMemory),
}

/// The memory of a checkpoint in a store ([`SnapshotMemory::Stored`]).
#[derive(Clone)]
pub struct StoredMemory {
    pub store: CheckpointStore,
    pub manifest: Arc<CheckpointManifest>,
}

impl StoredMemory {
    /// Decodes the memory into `memory` (as long as it), each stored chunk
    /// straight into its place, on two threads for a large one, running
    /// `before_each(offset, len)` for each chunk on the thread that decodes
    /// it; returns the offsets of the all-zero chunks, which it leaves as
    /// they were.
    pub fn read_into(&self, memory: &mut [u8], before_each: BeforeEach<'_>) -> Result<Vec<u64>, String> {
        self.store
            .read_memory_into(&self.manifest, memory, before_each)
            .map_err(|error| error.to_string())
    }
}

impl std::fmt::Debug for StoredMemory {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StoredMemory")
            .field("sequence", &self.manifest.sequence)
            .field("memory_bytes", &self.manifest.memory_bytes)
            .finish_non_exhaustive()
    }
}

impl PartialEq for StoredMemory {
    fn eq(&self, other: &StoredMemory) -> bool {
        Arc::ptr_eq(&self.manifest, &other.manifest) || self.manifest == other.manifest
    }
}

impl Eq for StoredMemory {}

impl SnapshotMemory {
    /// Size of the memory, in bytes.
    pub fn memory_bytes(&self) -> u64 {
        match self {
            SnapshotMemory::Whole(bytes) => bytes.len() as u64,
            SnapshotMemory::Changes(changes) => changes.memory_bytes,
            SnapshotMemory::Stored(stored) => stored.manifest.memory_bytes,
        }
    }

    /// The whole memory, if this is all of it.
    pub fn whole(&self) -> Result<&[u8], String> {
        match self {
            SnapshotMemory::Whole(bytes) => Ok(bytes),
            SnapshotMemory::Changes(_) => Err("the capture holds only the changed chunks".to_owned()),
            SnapshotMemory::Stored(_) => Err("the memory is still in the checkpoint store".to_owned()),
        }
    }

    /// As changes in `chunk_size` chunks: those captured, or every non-zero
    /// chunk of a whole memory (a complete set).
    pub fn into_changes(self, chunk_size: u32) -> Result<MemoryChanges, String> {
        let bytes = match self {
            SnapshotMemory::Changes(changes) => return Ok(changes),
            SnapshotMemory::Whole(bytes) => bytes,
            SnapshotMemory::Stored(stored) => {
                let mut bytes = vec![0; stored.manifest.memory_bytes as usize];
                // Zero chunks stay as allocated.
                stored.read_into(&mut bytes, &|_, _| {})?;
                bytes
            }
        };
        let mut changes = MemoryChanges::new(bytes.len() as u64, chunk_size, true);
        for (index, chunk) in bytes.chunks(chunk_size as usize).enumerate() {
            if !ferry_migrator::checkpoint::is_zero_chunk(chunk) {
                changes.push(index as u32, chunk);
            }
        }
        Ok(changes)
    }
}

/// Chunks of a linear memory, copied out at a capture.
#[derive(Debug, Clone)]
pub struct MemoryChanges {
    pub memory_bytes: u64,
    pub chunk_size: u32,
    /// Every chunk not listed is zero (a consumer's first capture); when
    /// false, every chunk not listed is as the consumer's previous capture
    /// had it.
    pub complete: bool,
    /// Indexes of the chunks held, ascending.
    indexes: Vec<u32>,
    /// Their bytes, one after the other (only the memory's last chunk may
    /// be short).
    data: Vec<u8>,
    /// The bytes of the chunks from position `tail_from` on, when a large
    /// capture continued into a buffer faulted in beside it
    /// ([`MemoryChanges::continue_in`]).
    tail: Vec<u8>,
    tail_from: usize,
    /// When the tracker knows them (write protection, not a first
    /// capture): the 4 KiB pages written since the consumer's previous
    /// capture, so that the store can keep a changed chunk as its pages
    /// written over the previous version.
    pub written_pages: Option<Vec<u32>>,
}

/// Equal when they hold the same chunks, however their bytes are laid out.
impl PartialEq for MemoryChanges {
    fn eq(&self, other: &MemoryChanges) -> bool {
        self.memory_bytes == other.memory_bytes
            && self.chunk_size == other.chunk_size
            && self.complete == other.complete
            && self.indexes == other.indexes
            && self.iter().zip(other.iter()).all(|(ours, theirs)| ours == theirs)
    }
}

impl Eq for MemoryChanges {}

impl MemoryChanges {
    pub fn new(memory_bytes: u64, chunk_size: u32, complete: bool) -> MemoryChanges {
        MemoryChanges {
            memory_bytes,
            chunk_size,
            complete,
            indexes: Vec::new(),
            data: Vec::new(),
            tail: Vec::new(),
            tail_from: usize::MAX,
            written_pages: None,
        }
    }

    /// Room for `chunks` more chunks, so that a large capture is not copied
    /// again as it grows (pages never written cost nothing).
    pub fn reserve_chunks(&mut self, chunks: usize) {
        self.indexes.reserve(chunks);
        self.data.reserve(chunks * self.chunk_size as usize);
    }

    /// The chunks added from now on go into `buffer` (emptied), whose room
    /// was faulted in on another thread while this one copied.
    pub fn continue_in(&mut self, mut buffer: Vec<u8>) {
        debug_assert_eq!(self.tail_from, usize::MAX, "continued once only");
        buffer.clear();
        self.tail = buffer;
        self.tail_from = self.indexes.len();
    }

    /// Adds chunk `index` (greater than any added before).
    pub fn push(&mut self, index: u32, bytes: &[u8]) {
        debug_assert!(self.indexes.last().is_none_or(|last| *last < index));
        self.indexes.push(index);
        if self.indexes.len() > self.tail_from {
            self.tail.extend_from_slice(bytes);
        } else {
            self.data.extend_from_slice(bytes);
        }
    }

    /// Number of chunks held.
    pub fn len(&self) -> usize {
        self.indexes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indexes.is_empty()
    }

    /// Bytes of chunk data held.
    pub fn data_bytes(&self) -> u64 {
        (self.data.len() + self.tail.len()) as u64
    }

    /// The chunks held, ascending.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[u8])> {
        let chunk_size = self.chunk_size as usize;
        self.indexes
            .iter()
            .enumerate()
            .map(move |(position, index)| (*index, self.at(position, chunk_size)))
    }

    /// The bytes of chunk `index`, if held.
    pub fn chunk(&self, index: u32) -> Option<&[u8]> {
        let position = self.indexes.binary_search(&index).ok()?;
        Some(self.at(position, self.chunk_size as usize))
    }

    fn at(&self, position: usize, chunk_size: usize) -> &[u8] {
        let (bytes, position) = match position.checked_sub(self.tail_from) {
            Some(in_tail) => (&self.tail, in_tail),
            None => (&self.data, position),
        };
        let start = position * chunk_size;
        &bytes[start..(start + chunk_size).min(bytes.len())]
    }

    /// The whole memory of a complete set.
    fn to_whole(&self) -> Vec<u8> {
        debug_assert!(self.complete);
        let mut memory = vec![0; self.memory_bytes as usize];
        for (index, bytes) in self.iter() {
            let start = index as usize * self.chunk_size as usize;
            memory[start..start + bytes.len()].copy_from_slice(bytes);
        }
        memory
    }
}

/// The rest of the memory of a function paused for a move or suspended,
/// which only its changes were captured for: the run's thread keeps the
/// instance until the move (or the suspend's persist) ends. If it succeeds,
/// every copy of the snapshot is dropped and the thread drops the instance
/// without copying anything; if it fails,
/// [`ask_for_memory`](Self::ask_for_memory) makes the thread copy the whole
/// memory out before it ends, to continue from.
#[derive(Debug, Clone)]
pub struct PausedHold(Arc<HoldShared>);

#[derive(Debug)]
struct HoldShared {
    ask: Mutex<mpsc::Sender<()>>,
    memory: Mutex<Option<Vec<u8>>>,
}

/// The thread's side of a [`PausedHold`].
pub struct HoldKeeper {
    asked: mpsc::Receiver<()>,
    hold: std::sync::Weak<HoldShared>,
}

impl PausedHold {
    pub fn new() -> (PausedHold, HoldKeeper) {
        let (ask, asked) = mpsc::channel();
        let shared = Arc::new(HoldShared {
            ask: Mutex::new(ask),
            memory: Mutex::new(None),
        });
        let keeper = HoldKeeper {
            asked,
            hold: Arc::downgrade(&shared),
        };
        (PausedHold(shared), keeper)
    }

    /// Asks the thread to copy the memory out and end.
    pub fn ask_for_memory(&self) {
        let _ = self
            .0
            .ask
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .send(());
    }

    fn take_memory(&self) -> Option<Vec<u8>> {
        self.0
            .memory
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

impl PartialEq for PausedHold {
    fn eq(&self, other: &PausedHold) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for PausedHold {}

/// What the thread holding a paused instance is told.
pub enum HoldDecision {
    /// Copy the memory out: the function continues here.
    Keep,
    /// Every copy of the snapshot is gone: drop the instance.
    Release,
    /// Nothing yet.
    Wait,
}

impl HoldKeeper {
    /// Waits up to `timeout` for the move's decision.
    pub fn wait(&self, timeout: Duration) -> HoldDecision {
        match self.asked.recv_timeout(timeout) {
            Ok(()) => HoldDecision::Keep,
            Err(mpsc::RecvTimeoutError::Disconnected) => HoldDecision::Release,
            Err(mpsc::RecvTimeoutError::Timeout) if self.hold.strong_count() == 0 => HoldDecision::Release,
            Err(mpsc::RecvTimeoutError::Timeout) => HoldDecision::Wait,
        }
    }

    /// Hands the whole memory over (if anybody still holds the snapshot).
    pub fn keep(&self, memory: Vec<u8>) {
        if let Some(hold) = self.hold.upgrade() {
            *hold.memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(memory);
        }
    }
}
