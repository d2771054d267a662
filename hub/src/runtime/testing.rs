//! A guest environment on a real Wasmer memory, for unit tests of host
//! calls: the calls run exactly as an instance would run them, with the
//! output and messages they produce recorded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_proto::v1::LogStream;
use wasmer::{FunctionEnv, FunctionEnvMut, Memory, MemoryType, Pages, Store};

use super::guest::{Delivery, GuestEnv, HostServices, Sent, Undelivered};

/// Output and messages of a test guest.
#[derive(Default)]
pub struct RecordingServices {
    pub output: Mutex<Vec<(LogStream, Vec<u8>)>>,
    pub sent: Mutex<Vec<(String, Vec<u8>)>>,
    /// Calls to `silent`, never answered while kept here.
    pub silent: Mutex<Vec<std::sync::mpsc::Sender<Sent>>>,
}

impl HostServices for RecordingServices {
    fn output(&self, _function: &str, stream: LogStream, data: &[u8]) {
        self.output.lock().unwrap().push((stream, data.to_vec()));
    }

    fn send(&self, _from: &str, to: &str, data: &[u8]) -> Delivery {
        if to != "peer" {
            return Delivery::Done(Err(Undelivered::NoSuchFunction));
        }
        self.sent.lock().unwrap().push((to.to_owned(), data.to_vec()));
        Delivery::Done(Ok(Vec::new()))
    }

    /// `peer` answers later, on another thread, with the message reversed;
    /// `silent` never answers.
    fn call(&self, _from: &str, to: &str, data: Vec<u8>, _timeout: Option<Duration>) -> Delivery {
        match to {
            "peer" => {
                self.sent.lock().unwrap().push((to.to_owned(), data.clone()));
                let (answer, waiting) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(30));
                    let _ = answer.send(Ok(data.into_iter().rev().collect()));
                });
                Delivery::Waiting(waiting)
            }
            "silent" => {
                let (answer, waiting) = std::sync::mpsc::channel();
                self.silent.lock().unwrap().push(answer);
                Delivery::Waiting(waiting)
            }
            _ => Delivery::Done(Err(Undelivered::NoSuchFunction)),
        }
    }

    /// The number of output writes recorded so far.
    fn log_position(&self, _function: &str) -> u64 {
        self.output.lock().unwrap().len() as u64
    }
}

/// A store, a memory of some pages bound to a guest environment, and the
/// recorded services. `send` delivers to a function named `peer` only.
pub struct TestGuest {
    store: Store,
    env: FunctionEnv<GuestEnv>,
    memory: Memory,
    pub services: Arc<RecordingServices>,
}

impl TestGuest {
    pub fn with_pages(pages: u32) -> TestGuest {
        let mut store = Store::default();
        let memory = Memory::new(&mut store, MemoryType::new(Pages(pages), None, false)).expect("test memory");
        let services = Arc::new(RecordingServices::default());
        let mut guest = GuestEnv::detached();
        guest.name = "test".to_owned();
        guest.memory = Some(memory.clone());
        guest.services = Arc::clone(&services) as Arc<dyn HostServices>;
        guest.args = vec!["test".to_owned(), "one".to_owned()];
        guest.environ = vec!["COLOUR=blue".to_owned()];
        let env = FunctionEnv::new(&mut store, guest);
        TestGuest {
            store,
            env,
            memory,
            services,
        }
    }

    /// What a host call receives as its environment.
    pub fn env(&mut self) -> FunctionEnvMut<'_, GuestEnv> {
        self.env.clone().into_mut(&mut self.store)
    }

    pub fn guest(&mut self) -> &mut GuestEnv {
        self.env.as_mut(&mut self.store)
    }

    /// Size of the memory in bytes.
    pub fn size(&self) -> u32 {
        u32::try_from(self.memory.view(&self.store).data_size()).expect("test memories are below 4 GiB")
    }

    pub fn write(&self, ptr: u32, bytes: &[u8]) {
        self.memory
            .view(&self.store)
            .write(u64::from(ptr), bytes)
            .expect("test write inside memory");
    }

    pub fn write_u32(&self, ptr: u32, value: u32) {
        self.write(ptr, &value.to_le_bytes());
    }

    pub fn write_u64(&self, ptr: u32, value: u64) {
        self.write(ptr, &value.to_le_bytes());
    }

    /// Writes an iovec array at `ptr`.
    pub fn write_iovecs(&self, ptr: u32, iovecs: &[(u32, u32)]) {
        for (index, (buf, len)) in iovecs.iter().enumerate() {
            let entry = ptr + 8 * index as u32;
            self.write_u32(entry, *buf);
            self.write_u32(entry + 4, *len);
        }
    }

    pub fn read(&self, ptr: u32, len: u32) -> Vec<u8> {
        let mut bytes = vec![0; len as usize];
        self.memory
            .view(&self.store)
            .read(u64::from(ptr), &mut bytes)
            .expect("test read inside memory");
        bytes
    }

    pub fn read_u32(&self, ptr: u32) -> u32 {
        u32::from_le_bytes(self.read(ptr, 4).try_into().unwrap())
    }

    pub fn read_u64(&self, ptr: u32) -> u64 {
        u64::from_le_bytes(self.read(ptr, 8).try_into().unwrap())
    }

    /// Everything written to `stream`, concatenated.
    pub fn output(&self, stream: LogStream) -> Vec<u8> {
        self.services
            .output
            .lock()
            .unwrap()
            .iter()
            .filter(|(written_to, _)| *written_to == stream)
            .flat_map(|(_, data)| data.iter().copied())
            .collect()
    }

    /// How many separate outputs were recorded.
    pub fn output_calls(&self) -> usize {
        self.services.output.lock().unwrap().len()
    }
}
