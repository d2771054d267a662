//! Helpers for tests that move functions between hubs: `ferry migrate`,
//! where a function runs, its output, and a seeded random source for kill
//! points and pauses (the seed is printed; `FERRY_TEST_SEED` repeats a run).

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{HubProcess, expect_success};

/// Deploys the guest `module` (a path under the guest directories) as
/// `name` on `hub`, with a 256 MiB memory limit (room for the big heaps the
/// move tests use) and `args` for the guest.
pub fn deploy_guest(hub: &HubProcess, module: &str, name: &str, args: &[&str]) {
    let path = crate::guest(module);
    let mut command = vec![
        "deploy",
        path.to_str().expect("guest paths are UTF-8"),
        "--name",
        name,
        "--memory-limit",
        "256MiB",
        "--",
    ];
    command.extend_from_slice(args);
    expect_success(hub.ferry(&command));
}

/// `ferry migrate NAME --to HUB --json` asked of `via`; the summary.
pub fn migrate(via: &HubProcess, name: &str, to: &str) -> anyhow::Result<Value> {
    via.ferry_json(&["migrate", name, "--to", to])
}

/// `ferry migrate` that must fail: its exit code and stderr.
pub fn migrate_refused(via: &HubProcess, name: &str, to: &str) -> (i32, String) {
    let output = via.ferry(&["migrate", name, "--to", to]);
    assert!(
        !output.status.success(),
        "migrate {name} --to {to} succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What `hub` itself says of `name` (`None` if it knows no such function or
/// cannot be asked): its state, and whether the hub answered by forwarding
/// (the function runs elsewhere).
pub fn local_view(hub: &HubProcess, name: &str) -> Option<(String, bool)> {
    let output = hub.ferry(&["ps", "--json"]);
    if !output.status.success() {
        return None;
    }
    let list: Value = serde_json::from_slice(&output.stdout).ok()?;
    let entry = list.as_array()?.iter().find(|entry| entry["name"] == name)?;
    Some((
        entry["state"].as_str().unwrap_or_default().to_owned(),
        entry["forwarded"].as_bool().unwrap_or(false),
    ))
}

/// The hubs among `hubs` on which `name` runs right now (not forwarded).
pub fn running_on(hubs: &[&HubProcess], name: &str) -> Vec<usize> {
    hubs.iter()
        .enumerate()
        .filter(|(_, hub)| matches!(local_view(hub, name), Some((state, false)) if state == "running"))
        .map(|(index, _)| index)
        .collect()
}

/// The function's stdout as one text (asked of any hub: forwarded if needed).
pub fn stdout_of(hub: &HubProcess, name: &str) -> String {
    expect_success(hub.ferry(&["logs", name]))
}

/// The numbers following `prefix` at the start of lines, in order.
pub fn numbered_lines(text: &str, prefix: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|line| line.strip_prefix(prefix))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Fails unless the `round N checksum HEX` lines of `logs` print what an
/// undisturbed `bigheap MIB 0` prints (the model below follows
/// `deploy/examples/bigheap.c`): a run whose memory was restored wrong
/// prints other checksums from then on. Every eighth round and the last
/// are compared (an unoptimized test build hashes 8 MiB in tens of ms).
pub fn check_bigheap_checksums(logs: &str, mib: usize) -> anyhow::Result<()> {
    let printed: std::collections::BTreeMap<usize, u64> = logs
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("round ")?.split_whitespace();
            let round = words.next()?.parse().ok()?;
            let checksum = u64::from_str_radix(words.nth(1)?, 16).ok()?;
            Some((round, checksum))
        })
        .collect();
    let last = printed.keys().next_back().copied().unwrap_or(0);
    let words = mib * 1024 * 1024 / 4;
    let mut heap: Vec<u32> = (0..words)
        .map(|index| (index as u32).wrapping_mul(0x9E37_79B1))
        .collect();
    let mut lcg: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        lcg = lcg
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (lcg >> 32) as u32
    };
    for round in 1..=last {
        for _ in 0..4096 {
            let position = next() as usize % words;
            heap[position] = next();
        }
        let Some(checksum) = printed.get(&round).filter(|_| round % 8 == 0 || round == last) else {
            continue;
        };
        let mut expected = 0xcbf2_9ce4_8422_2325_u64;
        for word in &heap {
            expected = (expected ^ u64::from(*word)).wrapping_mul(0x0100_0000_01b3);
        }
        if *checksum != expected {
            bail!(
                "round {round} printed checksum {checksum:016x}; an undisturbed bigheap {mib} prints {expected:016x}"
            );
        }
    }
    Ok(())
}

/// Fails unless `numbers` is exactly 1, 2, ..., n: no gap, no duplicate.
pub fn check_consecutive(numbers: &[u64], what: &str) -> anyhow::Result<()> {
    for (index, number) in numbers.iter().enumerate() {
        let expected = index as u64 + 1;
        if *number != expected {
            let from = index.saturating_sub(3);
            let to = (index + 3).min(numbers.len());
            bail!(
                "{what}: entry {index} is {number}, expected {expected} (around it: {:?})",
                &numbers[from..to]
            );
        }
    }
    Ok(())
}

/// A loopback address with a port that was free a moment ago, and that
/// this process never handed out before (the kernel may give a port just
/// released again at once: two hubs told the same port fail to start).
pub fn free_loopback_address() -> std::net::SocketAddr {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let address = listener.local_addr().expect("a bound address");
        let mut given = GIVEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if given.insert(address.port()) {
            return address;
        }
    }
}

/// Two hubs on loopback, `hub-0` and `hub-1`, mDNS off, that know each
/// other by `--peer`, on fixed ports (a restart keeps them), each started
/// with `args` too; returns once each sees the other up.
pub async fn loopback_pair(args: &[&str], patience: Duration) -> anyhow::Result<Vec<HubProcess>> {
    loopback_pair_with(args, args, patience).await
}

/// [`loopback_pair`] with arguments of each hub's own.
pub async fn loopback_pair_with(
    founder_args: &[&str],
    member_args: &[&str],
    patience: Duration,
) -> anyhow::Result<Vec<HubProcess>> {
    let addresses = [free_loopback_address(), free_loopback_address()];
    // hub-0 founds the cluster; hub-1 joins it with a token, as users do:
    // every connection between them is mutual TLS.
    let founder = HubProcess::start(
        in_cluster(crate::HubOptions::named("hub-0"), None)?
            .listen(addresses[0])
            .args(["--peer", addresses[1].to_string().as_str()])
            .args(founder_args.iter().copied()),
    )
    .await?;
    let member = HubProcess::start(
        in_cluster(crate::HubOptions::named("hub-1"), Some(&founder))?
            .listen(addresses[1])
            .args(member_args.iter().copied()),
    )
    .await?;
    let hubs = vec![founder, member];
    for (index, hub) in hubs.iter().enumerate() {
        wait_peer_up(hub, &format!("hub-{}", 1 - index), patience).await?;
    }
    Ok(hubs)
}

/// `options` for a member of one cluster, as users build one: with no
/// `founder` the hub founds the cluster (TLS on); else it joins the
/// founder's with a one-use token, and the CLI uses the founder's operator
/// credential with it.
pub fn in_cluster(options: crate::HubOptions, founder: Option<&HubProcess>) -> anyhow::Result<crate::HubOptions> {
    Ok(match founder {
        None => options.secure(),
        Some(founder) => options.joining(&join_token(founder)?, founder.address(), founder.admin_credential()),
    })
}

/// A one-use join token made by `hub` (which must hold the cluster CA).
pub fn join_token(hub: &HubProcess) -> anyhow::Result<String> {
    let created = hub.ferry_json(&["cluster", "token", "create"])?;
    created["token"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no token in {created}"))
}

/// Waits until `hub` lists the peer named `peer_name` as up.
pub async fn wait_peer_up(hub: &HubProcess, peer_name: &str, patience: Duration) -> anyhow::Result<()> {
    crate::eventually(&format!("{peer_name} to be up"), patience, || async {
        hub.peers()
            .ok()?
            .iter()
            .any(|peer| peer.name == peer_name && peer.is_up())
            .then_some(())
    })
    .await
}

/// Waits until `name` has exited (asked of `hub`, forwarded if needed).
pub async fn wait_exited(hub: &HubProcess, name: &str, patience: Duration) -> anyhow::Result<()> {
    crate::eventually(&format!("{name} to exit"), patience, || async {
        crate::function_info_or_null(hub, name)["state"]
            .as_str()
            .filter(|state| *state == "exited")
            .map(|_| ())
    })
    .await
    .with_context(|| format!("last seen: {}", crate::function_info_or_null(hub, name)))
}

/// A small seeded generator (SplitMix64); prints its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(label: &str) -> Rng {
        let seed = std::env::var("FERRY_TEST_SEED")
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|elapsed| elapsed.as_nanos() as u64)
                    .unwrap_or(7)
            });
        eprintln!("{label}: FERRY_TEST_SEED={seed}");
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// A duration uniform in `0..max`.
    pub fn duration(&mut self, max: Duration) -> Duration {
        Duration::from_micros(self.below(max.as_micros() as u64))
    }
}

/// Waits until `name` runs on exactly one of `hubs` and no hub holds an
/// uncommitted copy; returns that hub's index. Fails at once if it ever
/// runs on two.
pub async fn settle(hubs: &[HubProcess], name: &str, patience: Duration) -> usize {
    let all: Vec<&HubProcess> = hubs.iter().collect();
    let deadline = std::time::Instant::now() + patience;
    loop {
        let running = running_on(&all, name);
        assert!(running.len() <= 1, "{name} runs on hubs {running:?} at once");
        let arriving = hubs
            .iter()
            .any(|hub| matches!(local_view(hub, name), Some((state, _)) if state == "arriving"));
        if running.len() == 1 && !arriving {
            return running[0];
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} did not settle: running on {running:?}, arriving {arriving}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One trial of a move hit by a crash: moves `name` from `hubs[owner]` to
/// the other hub and, `delay` later, kills `hubs[victim]` (`kill -9`) and
/// restarts it. Returns the hub it runs on once settled and whether the
/// move was reported done; a reported move whose destination was killed
/// must end there (asserted).
pub async fn kill_mid_move(
    hubs: &mut [HubProcess],
    name: &str,
    owner: usize,
    victim: usize,
    delay: Duration,
    patience: Duration,
) -> (usize, bool) {
    let destination = 1 - owner;
    let mut command = hubs[owner].ferry_command();
    let name_owned = name.to_owned();
    let mover = std::thread::spawn(move || {
        command
            .args(["migrate", &name_owned, "--to", &format!("hub-{destination}"), "--json"])
            .output()
            .unwrap()
    });
    tokio::time::sleep(delay).await;
    hubs[victim].kill().unwrap();
    let output = mover.join().unwrap();
    hubs[victim].restart().await.unwrap();
    let settled_on = settle(hubs, name, patience).await;
    let reported = output.status.success();
    if reported && victim == destination {
        assert_eq!(settled_on, destination, "a reported move ends on the destination");
    }
    (settled_on, reported)
}

#[cfg(test)]
mod tests {
    use super::check_bigheap_checksums;

    #[test]
    fn a_wrong_bigheap_checksum_is_caught_and_unchecked_rounds_pass() {
        let wrong = "heap 1 MiB filled\nround 7 checksum 0123456789abcdef\nround 8 checksum 0123456789abcdef\n";
        let error = check_bigheap_checksums(wrong, 1).unwrap_err().to_string();
        assert!(error.contains("round 8 printed checksum 0123456789abcdef"), "{error}");
        // Round 7 alone is the last round printed, so it is compared too.
        assert!(check_bigheap_checksums("round 7 checksum 0123456789abcdef\n", 1).is_err());
        assert!(check_bigheap_checksums("no rounds yet\n", 1).is_ok());
    }
}
