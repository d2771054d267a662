//! What the benchmarks that run guests on the hub's runtime share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_hub::runtime::{
    FunctionControl, GuestModule, HostServices, LaunchSpec, Outcome, SendOutcome, run_to_completion,
};
use ferry_proto::v1::LogStream;

/// Discards output: the benchmarks measure execution, not logging.
pub struct Discard;

impl HostServices for Discard {
    fn output(&self, _function: &str, _stream: LogStream, _data: &[u8]) {}
    fn send(&self, _from: &str, _to: &str, _data: &[u8]) -> SendOutcome {
        SendOutcome::NoSuchFunction
    }
    fn log_position(&self, _function: &str) -> u64 {
        0
    }
}

/// Runs `module` to completion on the calling thread with `args` (never
/// capturing it, so it needs no rewind module); its run time.
#[allow(dead_code)] // each bench compiles this module; not every one uses it
pub fn run_guest(engine: &wasmer::Engine, module: &wasmer::Module, args: &[&str]) -> Duration {
    run_guest_with(engine, module, args, Vec::new())
}

/// [`run_guest`] with directories (`preopens`).
pub fn run_guest_with(
    engine: &wasmer::Engine,
    module: &wasmer::Module,
    args: &[&str],
    preopens: Vec<ferry_hub::runtime::PreopenSpec>,
) -> Duration {
    let module = GuestModule::standalone(module.clone());
    let launch = LaunchSpec {
        name: "bench".into(),
        args: args.iter().map(|arg| arg.to_string()).collect(),
        environ: Vec::new(),
        memory_limit_bytes: 1 << 30,
        cpu_cap: None,
        // Charged like on a hub (the quota never binds at full capacity).
        governor: Some(std::sync::Arc::new(ferry_hub::runtime::cpu::CpuGovernor::new(
            ferry_hub::runtime::cpu::default_capacity(),
        ))),
        preopens: Ok(preopens),
    };
    let started = Instant::now();
    let outcome = run_to_completion(
        engine,
        &module,
        &launch,
        Arc::new(FunctionControl::default()),
        Arc::new(Discard),
        None,
    );
    let elapsed = started.elapsed();
    assert_eq!(outcome, Outcome::Exited(0), "benchmark guest must succeed");
    elapsed
}

pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}
