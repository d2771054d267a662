//! What the benchmarks that run guests on the hub's runtime share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_hub::runtime::{
    Delivery, FunctionControl, GuestModule, HostServices, LaunchSpec, Outcome, Undelivered, run_to_completion,
};
use ferry_proto::v1::hub_client::HubClient;
use ferry_proto::v1::{LogStream, LogsRequest};
use tokio_stream::StreamExt;

/// Discards output: the benchmarks measure execution, not logging.
pub struct Discard;

impl HostServices for Discard {
    fn output(&self, _function: &str, _stream: LogStream, _data: &[u8]) {}
    fn send(&self, _from: &str, _to: &str, _data: &[u8]) -> Delivery {
        Delivery::Done(Err(Undelivered::NoSuchFunction))
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
    run_guest_timed(engine, module, args, preopens).wall
}

/// What one run of a guest took.
#[allow(dead_code)] // each bench compiles this module; not every one uses it
#[derive(Debug, Clone, Copy)]
pub struct RunTimes {
    pub wall: Duration,
    /// CPU time of the running thread: unlike `wall`, not lengthened by
    /// other processes taking the core away (they still share its caches).
    pub cpu: Duration,
}

/// CPU time the calling thread has used so far.
#[allow(dead_code)] // each bench compiles this module; not every one uses it
pub fn thread_cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given.
    #[allow(unsafe_code)]
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr());
        usage.assume_init()
    };
    let of = |time: libc::timeval| Duration::new(time.tv_sec as u64, time.tv_usec as u32 * 1000);
    of(usage.ru_utime) + of(usage.ru_stime)
}

/// [`run_guest_with`], timed both on the wall and on the thread's CPU.
#[allow(dead_code)] // each bench compiles this module; not every one uses it
pub fn run_guest_timed(
    engine: &wasmer::Engine,
    module: &wasmer::Module,
    args: &[&str],
    preopens: Vec<ferry_hub::runtime::PreopenSpec>,
) -> RunTimes {
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
    let cpu_before = thread_cpu_time();
    let outcome = run_to_completion(
        engine,
        &module,
        &launch,
        Arc::new(FunctionControl::default()),
        Arc::new(Discard),
        None,
    );
    let wall = started.elapsed();
    let cpu = thread_cpu_time().saturating_sub(cpu_before);
    assert_eq!(outcome, Outcome::Exited(0), "benchmark guest must succeed");
    RunTimes { wall, cpu }
}

pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Waits until `name` has printed `needle` (two minutes at most).
#[allow(dead_code)] // each bench compiles this module; not every one uses it
pub async fn wait_for_output(client: &mut HubClient<tonic::transport::Channel>, name: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut stream = client
            .logs(LogsRequest {
                name: name.into(),
                follow: false,
                tail: 0,
                from_seq: 0,
            })
            .await
            .expect("logs")
            .into_inner();
        let mut text = Vec::new();
        while let Some(entry) = stream.next().await {
            text.extend(entry.expect("log entry").data);
        }
        if String::from_utf8_lossy(&text).contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never printed {needle:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A hub in this process on a fresh data directory: loopback, insecure, no
/// mDNS, no periodic checkpoints. Keep the directory as long as the hub.
#[allow(dead_code)] // each bench compiles this module; not every one uses it
pub async fn in_process_hub() -> anyhow::Result<(tempfile::TempDir, ferry_hub::agent::RunningHub)> {
    use ferry_hub::config::{AgentArgs, AgentConfig, FileConfig};
    let data_dir = tempfile::tempdir()?;
    let config = AgentConfig::resolve(
        &AgentArgs {
            data_dir: Some(data_dir.path().to_owned()),
            listen: Some("127.0.0.1:0".parse()?),
            no_mdns: true,
            checkpoint_interval: Some(Duration::ZERO),
            insecure: true,
            ..AgentArgs::default()
        },
        FileConfig::default(),
        None,
    );
    let hub = ferry_hub::agent::start(config).await?;
    Ok((data_dir, hub))
}

/// The median of rates (sorted in place).
#[allow(dead_code)] // each bench compiles this module; not every one uses it
pub fn median_rate(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
