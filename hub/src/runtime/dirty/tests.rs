//! The tracker on a real Wasmer memory: writes by the guest, by the host
//! (as `fd_read` writes into guest memory) and by `memory.grow` are seen,
//! nothing unwritten is reported, and both modes give the same chunk sets.

use wasmer::{Instance, Memory, Module, Store, TypedFunction, imports};

use super::{DirtyTracker, TrackingMode};

/// 16 KiB chunks: four pages each, sixteen in the guest's first 256 KiB.
const CHUNK: u32 = 16 * 1024;

struct Guest {
    store: Store,
    memory: Memory,
    store_i32: TypedFunction<(i32, i32), ()>,
    grow: TypedFunction<i32, i32>,
}

impl Guest {
    fn new() -> Guest {
        let mut store = Store::default();
        let wasm = wat::parse_str(
            r#"(module
                (memory (export "memory") 4)
                (data (i32.const 100) "hello")
                (func (export "store_i32") (param i32 i32) (i32.store (local.get 0) (local.get 1)))
                (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"#,
        )
        .expect("test module");
        let module = Module::new(&store, wasm).expect("compiled");
        let instance = Instance::new(&mut store, &module, &imports! {}).expect("instance");
        let memory = instance.exports.get_memory("memory").expect("memory").clone();
        let store_i32 = instance
            .exports
            .get_typed_function(&store, "store_i32")
            .expect("store_i32");
        let grow = instance.exports.get_typed_function(&store, "grow").expect("grow");
        Guest {
            store,
            memory,
            store_i32,
            grow,
        }
    }

    fn guest_write(&mut self, address: u32, value: i32) {
        self.store_i32
            .call(&mut self.store, address as i32, value)
            .expect("guest store");
    }

    fn host_write(&self, address: u32, bytes: &[u8]) {
        self.memory
            .view(&self.store)
            .write(u64::from(address), bytes)
            .expect("host write");
    }

    fn grow(&mut self, pages: i32) {
        assert_ne!(self.grow.call(&mut self.store, pages).expect("grow"), -1);
    }

    /// Indexes of the chunks `tracker` reports for `set`, and whether the
    /// capture was complete.
    fn changed(&self, tracker: &mut DirtyTracker, set: &str) -> (Vec<u32>, bool) {
        let view = self.memory.view(&self.store);
        let changes = tracker.capture(&view, set, CHUNK).expect("capture");
        for (index, bytes) in changes.iter() {
            let mut expected = vec![0; bytes.len()];
            view.read(u64::from(index) * u64::from(CHUNK), &mut expected).unwrap();
            assert_eq!(bytes, expected, "chunk {index} holds what memory holds");
        }
        (changes.iter().map(|(index, _)| index).collect(), changes.complete)
    }
}

/// Runs one scenario in `mode` and returns the chunk sets it saw.
fn scenario(mode: TrackingMode) -> Vec<(Vec<u32>, bool)> {
    let mut guest = Guest::new();
    let mut tracker = DirtyTracker::new(mode);
    let mut seen = Vec::new();
    let step = |seen: &mut Vec<_>, guest: &Guest, tracker: &mut DirtyTracker, set: &str| {
        let changed = guest.changed(tracker, set);
        seen.push(changed.clone());
        changed
    };

    // First capture of a set: every non-zero chunk (the data segment).
    assert_eq!(step(&mut seen, &guest, &mut tracker, "move"), (vec![0], true));
    // Nothing written: nothing reported.
    assert_eq!(step(&mut seen, &guest, &mut tracker, "move"), (vec![], false));

    // A guest store and a host write (as fd_read does).
    guest.guest_write(5 * CHUNK + 8, 7);
    guest.host_write(9 * CHUNK + 4000, b"from the host");
    assert_eq!(step(&mut seen, &guest, &mut tracker, "move"), (vec![5, 9], false));

    // A second consumer starts complete and takes nothing from the first.
    assert_eq!(
        step(&mut seen, &guest, &mut tracker, "checkpoints"),
        (vec![0, 5, 9], true)
    );
    guest.guest_write(3 * CHUNK, 1);
    assert_eq!(step(&mut seen, &guest, &mut tracker, "checkpoints"), (vec![3], false));
    guest.guest_write(12 * CHUNK + 100, 2);
    assert_eq!(step(&mut seen, &guest, &mut tracker, "move"), (vec![3, 12], false));
    assert_eq!(step(&mut seen, &guest, &mut tracker, "checkpoints"), (vec![12], false));

    // memory.grow: the new chunks count only once written.
    guest.grow(1);
    assert_eq!(step(&mut seen, &guest, &mut tracker, "move"), (vec![], false));
    guest.grow(1);
    guest.guest_write(4 * 65_536 + 64 * 1024 + 2 * CHUNK, 3);
    assert_eq!(step(&mut seen, &guest, &mut tracker, "move"), (vec![22], false));
    assert_eq!(step(&mut seen, &guest, &mut tracker, "checkpoints"), (vec![22], false));

    // A page written back to zero is reported (its chunk changed).
    guest.guest_write(5 * CHUNK + 8, 0);
    assert_eq!(step(&mut seen, &guest, &mut tracker, "move"), (vec![5], false));

    // A set started clean (its consumer restored this memory from its own
    // checkpoint) reports only what is written afterwards.
    tracker
        .start_clean(&guest.memory.view(&guest.store), "restored", CHUNK)
        .expect("start clean");
    assert_eq!(step(&mut seen, &guest, &mut tracker, "restored"), (vec![], false));
    guest.guest_write(7 * CHUNK + 12, 4);
    guest.host_write(13 * CHUNK, b"read from a file");
    assert_eq!(step(&mut seen, &guest, &mut tracker, "restored"), (vec![7, 13], false));

    // A forgotten set starts over, complete.
    tracker.forget("move");
    assert_eq!(
        step(&mut seen, &guest, &mut tracker, "move"),
        (vec![0, 3, 7, 9, 12, 13, 22], true)
    );
    assert_eq!(tracker.mode(), mode, "the tracker kept its mode");
    seen
}

#[test]
fn write_protection_sees_guest_host_and_grown_writes_and_nothing_else() {
    if let Err(error) = super::WriteWatch::probe() {
        // Allowed only where the kernel lacks it; this machine kind has it.
        panic!("this kernel cannot track writes: {error}");
    }
    scenario(TrackingMode::WriteProtect);
}

#[test]
fn fingerprints_give_the_same_chunk_sets_as_write_protection() {
    let fingerprints = scenario(TrackingMode::Fingerprints);
    if super::WriteWatch::probe().is_ok() {
        assert_eq!(fingerprints, scenario(TrackingMode::WriteProtect));
    }
}

/// A first capture this large copies its second half into room faulted
/// in on another thread: every chunk still holds what memory holds, in
/// order, and the next capture reports only what was written.
fn large_first_capture(mode: TrackingMode) {
    let mut guest = Guest::new();
    guest.grow(196);
    let memory_bytes = guest.memory.view(&guest.store).data_size();
    let chunks = (memory_bytes / u64::from(CHUNK)) as u32;
    assert!(u64::from(chunks) * u64::from(CHUNK) >= super::FAULT_AHEAD_FROM as u64);
    // Every chunk but every seventh gets bytes of its own.
    let written: Vec<u32> = (0..chunks).filter(|chunk| chunk % 7 != 3).collect();
    for chunk in &written {
        guest.host_write(chunk * CHUNK + 16, &chunk.to_le_bytes());
    }
    let mut tracker = DirtyTracker::new(mode);
    let mut expected = written.clone();
    if !expected.contains(&0) {
        expected.insert(0, 0);
    }
    // Chunk 0 holds the data segment too.
    assert_eq!(guest.changed(&mut tracker, "move"), (expected, true));
    guest.guest_write(3 * CHUNK, 9);
    guest.guest_write((chunks - 1) * CHUNK, 9);
    assert_eq!(guest.changed(&mut tracker, "move"), (vec![3, chunks - 1], false));
}

#[test]
fn a_large_first_capture_holds_every_chunk_as_memory_does() {
    large_first_capture(TrackingMode::Fingerprints);
    if super::WriteWatch::probe().is_ok() {
        large_first_capture(TrackingMode::WriteProtect);
    }
}

#[test]
fn write_protection_names_the_pages_written_and_fingerprints_name_none() {
    let view_pages = |guest: &Guest, tracker: &mut DirtyTracker| {
        let view = guest.memory.view(&guest.store);
        tracker
            .capture(&view, "checkpoints", CHUNK)
            .expect("capture")
            .written_pages
    };
    let mut guest = Guest::new();
    let mut tracker = DirtyTracker::new(TrackingMode::WriteProtect);
    assert_eq!(
        view_pages(&guest, &mut tracker),
        None,
        "a first capture lists every chunk"
    );
    guest.guest_write(5 * CHUNK + 8, 7);
    guest.host_write(9 * CHUNK + 4000, b"from the host");
    guest.guest_write(9 * CHUNK + 3 * 4096 + 4, 1);
    let page = |address: u32| address / super::PAGE_BYTES as u32;
    assert_eq!(
        view_pages(&guest, &mut tracker),
        Some(vec![page(5 * CHUNK), page(9 * CHUNK), page(9 * CHUNK) + 3])
    );
    assert_eq!(view_pages(&guest, &mut tracker), Some(vec![]), "nothing written since");

    let mut tracker = DirtyTracker::new(TrackingMode::Fingerprints);
    view_pages(&guest, &mut tracker);
    guest.guest_write(5 * CHUNK + 8, 9);
    assert_eq!(view_pages(&guest, &mut tracker), None);
}
