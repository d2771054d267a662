//! Tests of the checkpoint store and codec against a temporary sled database.

mod changes;
mod deltas;
mod holders;
mod packs;
mod robustness;
mod staged;
mod store;
mod verification;

use ferry_proto::v1::FunctionSpec;

use super::{
    CheckpointManifest, CheckpointStore, CheckpointStoreOptions, GlobalValue, HostState, InboxMessage, PendingCall,
    codec::DEFAULT_COMPRESSION_LEVEL, global_value, pending_call,
};

/// Small chunks keep the tests fast while still spanning many chunks per page.
const TEST_CHUNK_SIZE: u32 = 4096;
const PAGE: usize = 64 * 1024;

/// Deterministic xorshift, so every run sees the same "random" data.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// `pages` wasm pages of memory, 4 KiB block by block: about 40 % zeros,
/// 30 % compressible (a repeated small pattern), 30 % random bytes.
fn memory(pages: usize, seed: u64) -> Vec<u8> {
    let mut rng = Xorshift(seed | 1);
    let mut bytes = vec![0u8; pages * PAGE];
    for block in bytes.chunks_mut(4096) {
        match rng.below(10) {
            0..=3 => {}
            4..=6 => {
                let pattern = rng.next().to_le_bytes();
                for (index, byte) in block.iter_mut().enumerate() {
                    *byte = pattern[index % 8];
                }
            }
            _ => {
                for byte in block.iter_mut() {
                    *byte = rng.next() as u8;
                }
            }
        }
    }
    bytes
}

/// A manifest template with every kind of field filled in.
fn template(function: &str, sequence: u64) -> CheckpointManifest {
    CheckpointManifest {
        spec: Some(FunctionSpec {
            name: function.to_owned(),
            module_hash: "a1".repeat(32),
            args: vec!["5".to_owned()],
            ..FunctionSpec::default()
        }),
        module_hash: "b2".repeat(32),
        epoch: 3,
        sequence,
        created_unix_ms: 1_700_000_000_000 + sequence,
        globals: vec![
            GlobalValue {
                index: 0,
                value: Some(global_value::Value::I32(65_536)),
            },
            GlobalValue {
                index: 2,
                value: Some(global_value::Value::I64(-7)),
            },
            GlobalValue {
                index: 3,
                value: Some(global_value::Value::F32Bits(0x7fc0_0001)),
            },
            GlobalValue {
                index: 4,
                value: Some(global_value::Value::F64Bits(0x7ff8_0000_0000_0001)),
            },
            GlobalValue {
                index: 9,
                value: Some(global_value::Value::V128(vec![0xee; 16])),
            },
        ],
        host: Some(HostState {
            monotonic_ns: 1_234_567,
            inbox: vec![InboxMessage {
                data: b"hello".to_vec(),
                invocation_id: 42,
            }],
            pending: Some(PendingCall {
                call: Some(pending_call::Call::Recv(pending_call::Recv {
                    buf: 1024,
                    cap: 256,
                    has_deadline: true,
                    deadline_monotonic_ns: 9_999_999,
                })),
            }),
            log_seq: 17,
            cpu_micros: 800,
            has_caller: true,
            caller_invocation_id: 41,
            caller_hub_id: "hub-a".to_owned(),
        }),
        stack: (0..=255u8).cycle().take(700).collect(),
        ..CheckpointManifest::default()
    }
}

/// A temporary database and pack directory, gone when dropped.
struct TempDb {
    db: sled::Db,
    packs: tempfile::TempDir,
}

impl std::ops::Deref for TempDb {
    type Target = sled::Db;

    fn deref(&self) -> &sled::Db {
        &self.db
    }
}

impl TempDb {
    fn new() -> TempDb {
        TempDb {
            db: sled::Config::new().temporary(true).open().unwrap(),
            packs: tempfile::tempdir().unwrap(),
        }
    }

    /// A store on this database, as a hub opens it at start: it trusts
    /// nothing it finds.
    fn open(&self) -> CheckpointStore {
        self.open_with(CheckpointStoreOptions::default())
    }

    fn open_with(&self, options: CheckpointStoreOptions) -> CheckpointStore {
        CheckpointStore::open_with(&self.db, self.packs.path(), options).unwrap()
    }
}

/// A store with small chunks over a temporary database.
fn temp_store() -> (TempDb, CheckpointStore) {
    let db = TempDb::new();
    let store = db.open_with(CheckpointStoreOptions {
        chunk_size: TEST_CHUNK_SIZE,
        compression_level: DEFAULT_COMPRESSION_LEVEL,
        ..CheckpointStoreOptions::default()
    });
    (db, store)
}
