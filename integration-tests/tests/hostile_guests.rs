//! Guests that attack the host boundary with sizes and pointers outside
//! their memory, on a real `ferry agent`. Each must get the errno a guest
//! expects or be failed with a reason naming the call, the hub's peak
//! resident memory during the run must stay within the guest's memory plus
//! [`SLACK_BYTES`] over what the hub held before the deploy, and a ticker
//! deployed first must tick on, without a gap, through and after it.

use std::time::Duration;

use ferry_integration_tests::{
    HubOptions, HubProcess, eventually, expect_success as ok, guest, stdout_text, ticks_in, wait_ended,
};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(60);

/// What the hub may add to its resident memory, besides the guest's own
/// memory, while it runs a hostile guest: compiling the module, its log
/// entries, the messages it sends (an inbox holds 16 MiB besides its first
/// message), allocator slack.
/// Before the host boundary checked sizes, `random_get(16, 0xFFFFFF00)`
/// alone cost 4 GiB.
const SLACK_BYTES: u64 = 64 << 20;

const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;
const ESPIPE: i32 = 70;

/// A hub with a ticker running on it.
async fn hub_with_bystander() -> HubProcess {
    let hub = HubProcess::start(HubOptions::default()).await.unwrap();
    deploy(&hub, "examples/ticker.wasm", "ticker", &["--", "100"]);
    wait_for_ticks(&hub, 2).await;
    hub
}

fn deploy(hub: &HubProcess, module: &str, name: &str, extra: &[&str]) -> Value {
    let path = guest(module);
    let mut args = vec!["deploy", path.to_str().unwrap(), "--name", name, "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(hub.ferry(&args))).unwrap()
}

fn logs(hub: &HubProcess, name: &str) -> String {
    ok(hub.ferry(&["logs", name]))
}

/// Waits until the ticker has printed more than `count` ticks, all of them
/// in order with none missing.
async fn wait_for_ticks(hub: &HubProcess, count: usize) -> usize {
    eventually(&format!("the ticker to pass {count} ticks"), PATIENCE, || async {
        let ticks = ticks_in(&stdout_text(&hub.ferry(&["logs", "ticker"])));
        assert_eq!(ticks, (1..=ticks.len() as u64).collect::<Vec<_>>(), "ticks in order");
        (ticks.len() > count).then_some(ticks.len())
    })
    .await
    .unwrap()
}

/// One hostile run and what the hub's memory did meanwhile.
struct HostileRun {
    /// The function's `ps` entry once it ended.
    info: Value,
    logs: String,
    /// The hub's resident memory right before the deploy, and its peak
    /// from then until the function ended.
    before_bytes: u64,
    peak_bytes: u64,
}

impl HostileRun {
    /// The guest's memory, as it printed it (`memory_bytes=N`).
    fn guest_memory_bytes(&self) -> u64 {
        self.logs
            .lines()
            .filter_map(|line| line.strip_prefix("memory_bytes="))
            .next_back()
            .and_then(|bytes| bytes.parse().ok())
            .unwrap_or_else(|| panic!("no memory_bytes= line in {}", self.logs))
    }

    fn assert_hub_stayed_small(&self, name: &str) {
        let guest = self.guest_memory_bytes();
        let bound = self.before_bytes + guest + SLACK_BYTES;
        eprintln!(
            "{name}: hub resident {} MiB before, peak {} MiB; guest memory {} MiB; bound {} MiB",
            self.before_bytes >> 20,
            self.peak_bytes >> 20,
            guest >> 20,
            bound >> 20
        );
        assert!(
            self.peak_bytes <= bound,
            "{name}: the hub's peak resident memory was {} bytes, above {} before + {guest} of guest memory + {SLACK_BYTES}",
            self.peak_bytes,
            self.before_bytes
        );
    }

    /// Lines of the form `LABEL = VALUE` the guest printed.
    fn results(&self) -> Vec<(&str, &str)> {
        self.logs.lines().filter_map(|line| line.split_once(" = ")).collect()
    }
}

/// Deploys a hostile guest, waits for it to end, and measures the hub's
/// memory over the run; the bystander must have ticked on meanwhile and
/// must keep ticking after.
async fn run_hostile(hub: &HubProcess, module: &str, name: &str, extra: &[&str]) -> HostileRun {
    let ticks_before = wait_for_ticks(hub, 0).await;
    hub.reset_peak_memory().unwrap();
    let before_bytes = hub.resident_memory().unwrap().current_bytes;
    deploy(hub, module, name, extra);
    let info = wait_ended(hub, name, PATIENCE).await.unwrap();
    let peak_bytes = hub.resident_memory().unwrap().peak_bytes;
    let ticks_after = wait_for_ticks(hub, ticks_before + 2).await;
    assert!(ticks_after > ticks_before + 2);
    let ticker = ferry_integration_tests::function_info(hub, "ticker");
    assert_eq!(ticker["state"], "running", "{ticker}");
    HostileRun {
        info,
        logs: logs(hub, name),
        before_bytes,
        peak_bytes,
    }
}

fn assert_exited(run: &HostileRun, code: i64) {
    assert_eq!(
        (run.info["state"].as_str(), run.info["exit_code"].as_i64()),
        (Some("exited"), Some(code)),
        "{}\n{}",
        run.info,
        run.logs
    );
}

#[tokio::test]
async fn random_get_with_huge_lengths_is_efault_and_the_hub_stays_small() {
    let hub = hub_with_bystander().await;
    let run = run_hostile(&hub, "guests/hostile_random.wasm", "random", &[]).await;
    assert_exited(&run, 0);
    let results = run.results();
    let huge: Vec<_> = results
        .iter()
        .filter(|(call, _)| *call == "random_get(16, 0xffffff00)")
        .collect();
    assert_eq!(huge.len(), 6, "{}", run.logs);
    assert!(huge.iter().all(|(_, errno)| *errno == EFAULT.to_string()), "{huge:?}");
    for call in [
        "random_get(end - 8, 16)",
        "random_get(0xfffffff0, 32)",
        "random_get(0, end + 1)",
    ] {
        assert!(results.contains(&(call, "21")), "{call} in {}", run.logs);
    }
    assert!(
        results.contains(&("random_get(buffer, 1 MiB)", "0 random")),
        "{}",
        run.logs
    );
    run.assert_hub_stayed_small("random");
}

#[tokio::test]
async fn thousands_of_iovecs_over_one_buffer_write_capped_pieces_and_the_hub_stays_small() {
    let hub = hub_with_bystander().await;
    let run = run_hostile(&hub, "guests/hostile_writev.wasm", "writev", &[]).await;
    assert_exited(&run, 0);
    let results = run.results();
    let capped = "0 nwritten=65536";
    assert!(
        results.contains(&("fd_write(1, 64 iovecs of 32 MiB)", capped)),
        "{results:?}"
    );
    let iov_max: Vec<_> = results
        .iter()
        .filter(|(call, _)| *call == "fd_write(1, 1024 iovecs of 32 MiB)")
        .collect();
    assert_eq!(iov_max.len(), 8, "{results:?}");
    assert!(iov_max.iter().all(|(_, result)| *result == capped), "{iov_max:?}");
    assert!(
        results.contains(&("fd_write(1, 4096 iovecs of 32 MiB)", "28 nwritten=0")),
        "{results:?}"
    );
    // stdio retried its short writes until all 256 KiB were written.
    assert!(results.contains(&("fwrite(256 KiB)", "262144")), "{results:?}");
    // 9 capped writes of 64 KiB and the 256 KiB: lines of 63 dots.
    let dot_lines = run.logs.lines().filter(|line| *line == ".".repeat(63)).count();
    assert_eq!(dot_lines, (9 * 65_536 + 262_144) / 64);
    run.assert_hub_stayed_small("writev");
}

/// Every line `hostile_wasi` prints, with the errno it must show.
const WASI_EXPECTED: &[(&str, i32)] = &[
    ("args_sizes_get(end - 2, ok)", EFAULT),
    ("args_sizes_get(ok, 0xfffffffc)", EFAULT),
    ("args_get(end - 2, ok)", EFAULT),
    ("args_get(ok, end - 1)", EFAULT),
    ("environ_sizes_get(end, ok)", EFAULT),
    ("environ_get(end - 2, ok)", EFAULT),
    ("environ_get(ok, 0xfffffffc)", EFAULT),
    ("clock_res_get(monotonic, end - 4)", EFAULT),
    ("clock_res_get(99, ok)", EINVAL),
    ("clock_time_get(monotonic, 0xfffffffc)", EFAULT),
    ("clock_time_get(99, ok)", EINVAL),
    ("fd_close(99)", EBADF),
    ("fd_fdstat_get(1, end - 8)", EFAULT),
    ("fd_fdstat_get(99, ok)", EBADF),
    ("fd_prestat_get(3, end)", EFAULT),
    ("fd_prestat_dir_name(3, end, 100)", EFAULT),
    ("fd_seek(1, 0, 0, end)", ESPIPE),
    ("fd_seek(99, 0, 0, ok)", EBADF),
    ("fd_read(0, iovecs at end - 4, 1, ok)", EFAULT),
    ("fd_read(0, iovec past the end, 2, ok)", EFAULT),
    ("fd_read(0, ok, 1025, ok)", EINVAL),
    ("fd_read(0, ok, 1, end)", EFAULT),
    ("fd_read(1, ok, 1, ok)", EBADF),
    ("fd_write(1, iovecs at 0xfffffff8, 2, ok)", EFAULT),
    ("fd_write(1, iovec past the end, 2, ok)", EFAULT),
    ("fd_write(2, ok, 1, end - 2)", EFAULT),
    ("fd_write(1, ok, 1025, ok)", EINVAL),
    ("fd_write(1, ok, -1, ok)", EINVAL),
    ("fd_write(0, ok, 1, ok)", EBADF),
    ("fd_write(1, iovec of 0xffffff00 bytes, 1, ok)", EFAULT),
    ("poll_oneoff(ok, ok, 0, ok)", EINVAL),
    ("poll_oneoff(ok, ok, 100000, ok)", EINVAL),
    ("poll_oneoff(end - 48, ok, 2, ok)", EFAULT),
    ("poll_oneoff(ok, end - 32, 2, ok)", EFAULT),
    ("poll_oneoff(ok, ok, 1, end)", EFAULT),
    ("poll_oneoff(ok, ok, 1, ok)", 0),
    ("random_get(end - 8, 16)", EFAULT),
    ("random_get(16, 0xffffff00)", EFAULT),
    ("sched_yield()", 0),
    ("path_open(3, end, ...)", EFAULT),
    ("sock_accept(3, 0, ok)", ENOSYS),
];

#[tokio::test]
async fn every_wasi_call_answers_memory_outside_the_guest_with_an_errno() {
    let hub = hub_with_bystander().await;
    // fd 3 is the volume's preopen: the filesystem calls get past the fd check.
    let run = run_hostile(
        &hub,
        "guests/hostile_wasi.wasm",
        "wasi",
        &["--env", "HOSTILE=1", "--volume", "/data"],
    )
    .await;
    assert_exited(&run, 7);
    let expected: Vec<(&str, String)> = WASI_EXPECTED
        .iter()
        .map(|(call, errno)| (*call, errno.to_string()))
        .collect();
    let printed: Vec<(&str, String)> = run
        .results()
        .into_iter()
        .map(|(call, errno)| (call, errno.to_owned()))
        .collect();
    assert_eq!(printed, expected, "{}", run.logs);
    assert!(run.logs.ends_with("done\n"), "{}", run.logs);
    let events = ok(hub.ferry(&["logs", "wasi", "--events"]));
    assert!(
        events.contains("unsupported WASI call wasi_snapshot_preview1.sock_accept: returning ENOSYS"),
        "{events}"
    );
    run.assert_hub_stayed_small("wasi");
}

#[tokio::test]
async fn ferry_calls_with_memory_outside_the_guest_fail_it_with_the_call_and_range_named() {
    let hub = hub_with_bystander().await;
    let size_free = |reason: &str| reason.split(" end beyond the ").next().unwrap_or(reason).to_owned();
    for (mode, reason) in [
        (
            "log",
            "guest passed memory outside its linear memory to ferry.log: \
             32 bytes at 0xfffffff0 wrap past the end of the 32-bit address space",
        ),
        (
            "recv",
            "guest passed memory outside its linear memory to ferry.recv: 64 bytes at 0x",
        ),
        (
            "reply",
            "guest passed memory outside its linear memory to ferry.reply: 4294967040 bytes at 0x10",
        ),
        (
            "send",
            "guest passed memory outside its linear memory to ferry.send: 16 bytes at 0x",
        ),
    ] {
        let name = format!("ferry-{mode}");
        let run = run_hostile(&hub, "guests/hostile_ferry.wasm", &name, &["--", mode]).await;
        assert_eq!(run.info["state"], "failed", "{mode}: {}", run.info);
        let failure = run.info["failure"].as_str().unwrap();
        assert!(size_free(failure).starts_with(reason), "{mode}: {failure}");
        assert!(run.logs.contains(&format!("calling ferry.{mode}\n")), "{}", run.logs);
        assert!(!run.logs.contains("returned"), "{}", run.logs);
        let events = ok(hub.ferry(&["logs", &name, "--events"]));
        assert!(
            events.contains("[ferry] failed: guest passed memory outside"),
            "{events}"
        );
        run.assert_hub_stayed_small(&name);
    }
}

#[tokio::test]
async fn a_guest_flooding_its_own_inbox_is_refused_past_the_byte_budget_and_the_hub_stays_small() {
    let hub = hub_with_bystander().await;
    let run = run_hostile(&hub, "guests/hostile_ferry.wasm", "flood", &["--", "flood"]).await;
    assert_exited(&run, 0);
    let results = run.results();
    assert!(results.contains(&("send to a 300-byte name", "-3")), "{results:?}");
    // The first 16 MiB message fills the 16 MiB budget; the rest are refused.
    assert!(
        run.logs
            .contains("send 16 MiB to self x64: delivered=1 inbox_full=63 other=0\n"),
        "{}",
        run.logs
    );
    let log_line = format!("[info] {}", "m".repeat(64 << 10));
    assert!(run.logs.lines().any(|line| line == log_line), "ferry.log kept 64 KiB");
    run.assert_hub_stayed_small("flood");
}
