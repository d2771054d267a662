//! Tables for people, JSON for scripts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comfy_table::presets::NOTHING;
use comfy_table::{Cell, Table};
use ferry_proto::v1::{
    CheckpointInfo, DeployResponse, FunctionInfo, FunctionState, HubEvent, HubInfo, LogEntry, LogStream,
    PeerCompatibility, PeerInfo, PeerSource, PeerState,
};
use serde_json::{Value, json};

use super::client::ClientError;
use crate::supervisor::state_name;

fn stream_name(stream: i32) -> &'static str {
    match LogStream::try_from(stream) {
        Ok(LogStream::Stdout) => "stdout",
        Ok(LogStream::Stderr) => "stderr",
        Ok(LogStream::GuestLog) => "log",
        Ok(LogStream::Hub) => "hub",
        _ => "unknown",
    }
}

/// The state as `ps` shows it: a suspension for overload is told apart.
fn shown_state(info: &FunctionInfo) -> &'static str {
    if info.suspended_for_overload {
        "suspended (overload)"
    } else {
        state_name(info.state)
    }
}

/// Cores used over the last second, and what the function wanted on top.
fn cores(info: &FunctionInfo) -> String {
    if info.state != FunctionState::Running as i32 {
        return "-".to_owned();
    }
    if info.cpu_demand >= 0.01 {
        format!("{:.2} (+{:.2} waiting)", info.cpu_usage, info.cpu_demand)
    } else {
        format!("{:.2}", info.cpu_usage)
    }
}

fn name_of(info: &FunctionInfo) -> &str {
    info.spec.as_ref().map(|spec| spec.name.as_str()).unwrap_or_default()
}

pub fn function_json(info: &FunctionInfo) -> Value {
    let spec = info.spec.clone().unwrap_or_default();
    json!({
        "name": spec.name,
        "state": state_name(info.state),
        "suspended_for_overload": info.suspended_for_overload,
        "hub_id": info.hub_id,
        "hub_name": info.hub_name,
        "module_hash": spec.module_hash,
        "args": spec.args,
        "env": spec.env,
        "memory_limit_bytes": spec.limits.map(|limits| limits.memory_limit_bytes).unwrap_or_default(),
        "cpus": spec.limits.map(|limits| limits.cpus).unwrap_or_default(),
        "priority": spec.placement.map(|placement| placement.priority).unwrap_or_default(),
        "pinned": spec.placement.is_some_and(|placement| placement.pinned),
        "cpu_usage": info.cpu_usage,
        "cpu_demand": info.cpu_demand,
        "memory_bytes": info.memory_bytes,
        "cpu_micros": info.cpu_micros,
        "exit_code": info.exit_code,
        "failure": info.failure,
        "started_unix_ms": info.started_unix_ms,
        "starts": info.starts,
        "last_checkpoint": info.last_checkpoint,
        "last_checkpoint_unix_ms": info.last_checkpoint_unix_ms,
        "epoch": info.epoch,
        "forwarded": info.forwarded,
        "unstored_output_entries": info.unstored_output_entries,
        "unstored_output_bytes": info.unstored_output_bytes,
        "moving": info.moving.as_ref().map(|moving| json!({
            "to_hub_name": moving.to_hub_name,
            "started_unix_ms": moving.started_unix_ms,
            "rounds": moving.rounds,
            "bytes_sent": moving.bytes_sent,
            "paused": moving.paused,
        })),
        "arrived": info.arrived.as_ref().map(|arrived| json!({
            "from_hub_name": arrived.from_hub_name,
            "arrived_unix_ms": arrived.arrived_unix_ms,
            "downtime_micros": arrived.downtime_micros,
        })),
    })
}

pub fn log_entry_json(entry: &LogEntry) -> Value {
    json!({
        "seq": entry.seq,
        "stream": stream_name(entry.stream),
        "unix_ms": entry.unix_ms,
        "text": String::from_utf8_lossy(&entry.data),
    })
}

pub fn human_bytes(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

fn human_cpu(micros: u64) -> String {
    let duration = Duration::from_micros(micros);
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

fn uptime(info: &FunctionInfo) -> String {
    if info.state != FunctionState::Running as i32 || info.started_unix_ms == 0 {
        return "-".to_owned();
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let started = Duration::from_millis(info.started_unix_ms);
    let seconds = now.saturating_sub(started).as_secs();
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

fn note(info: &FunctionInfo) -> String {
    let state_note = match FunctionState::try_from(info.state) {
        Ok(FunctionState::Exited) => format!("exit code {}", info.exit_code),
        Ok(FunctionState::Failed) => info.failure.clone(),
        Ok(FunctionState::Moved) if !info.failure.is_empty() => format!("moved; {}", info.failure),
        Ok(FunctionState::Moved) => "moved; its hub does not answer".to_owned(),
        Ok(FunctionState::Arriving) => "waiting for its source to commit the move".to_owned(),
        _ => match &info.moving {
            Some(moving) => format!(
                "moving to {}: round {}, {} sent",
                moving.to_hub_name,
                moving.rounds,
                human_bytes(moving.bytes_sent)
            ),
            None => String::new(),
        },
    };
    if info.unstored_output_entries == 0 {
        return state_note;
    }
    let lost = format!(
        "{} of output not stored (disk full?)",
        human_bytes(info.unstored_output_bytes)
    );
    if state_note.is_empty() {
        lost
    } else {
        format!("{state_note}; {lost}")
    }
}

pub fn print_functions(functions: &[FunctionInfo], json: bool) -> Result<(), ClientError> {
    if json {
        let list: Vec<_> = functions.iter().map(function_json).collect();
        println!("{}", Value::Array(list));
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(NOTHING);
    table.set_header([
        "NAME", "STATE", "HUB", "CORES", "CPU", "MEMORY", "UPTIME", "STARTS", "MODULE", "NOTE",
    ]);
    for info in functions {
        let module = info
            .spec
            .as_ref()
            .map(|spec| spec.module_hash.as_str())
            .unwrap_or_default();
        table.add_row([
            Cell::new(name_of(info)),
            Cell::new(shown_state(info)),
            Cell::new(&info.hub_name),
            Cell::new(cores(info)),
            Cell::new(human_cpu(info.cpu_micros)),
            Cell::new(human_bytes(info.memory_bytes)),
            Cell::new(uptime(info)),
            Cell::new(info.starts),
            Cell::new(&module[..module.len().min(12)]),
            Cell::new(note(info)),
        ]);
    }
    println!("{table}");
    Ok(())
}

pub fn print_deployed(response: &DeployResponse, json: bool) -> Result<(), ClientError> {
    let info = response.function.clone().unwrap_or_default();
    if json {
        let mut value = function_json(&info);
        value["artifact_cache_hit"] = json!(response.artifact_cache_hit);
        value["prepare_micros"] = json!(response.prepare_micros);
        println!("{value}");
        return Ok(());
    }
    let module = info
        .spec
        .as_ref()
        .map(|spec| spec.module_hash.as_str())
        .unwrap_or_default();
    let how = if response.artifact_cache_hit {
        "compiled artifact from cache".to_owned()
    } else {
        format!("instrumented and compiled in {} ms", response.prepare_micros / 1000)
    };
    println!(
        "deployed {} on {} (module {}, {how})",
        name_of(&info),
        info.hub_name,
        &module[..module.len().min(12)]
    );
    // The deploy answers once the run is instantiated or over: one that
    // could not even be instantiated says why here, not only in `ps`.
    if info.state == FunctionState::Failed as i32 && !info.failure.is_empty() {
        println!("it failed as it started: {}", info.failure);
    }
    Ok(())
}

pub fn print_function_line(info: &FunctionInfo, json: bool, verb: &str) -> Result<(), ClientError> {
    if json {
        println!("{}", function_json(info));
    } else {
        println!("{verb} {} ({})", name_of(info), state_name(info.state));
    }
    Ok(())
}

pub fn print_message(json: bool, text: &str, value: Value) -> Result<(), ClientError> {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
    Ok(())
}

pub fn print_hub_info(info: &HubInfo, json: bool) -> Result<(), ClientError> {
    if json {
        println!(
            "{}",
            json!({
                "hub_id": info.hub_id,
                "hub_name": info.hub_name,
                "version": info.version,
                "protocol_version": info.protocol_version,
                "listen_address": info.listen_address,
                "functions_running": info.functions_running,
                "functions_total": info.functions_total,
                "wasmer_version": info.wasmer_version,
                "target": info.target,
                "cluster_id": info.cluster_id,
                "load": info.load,
                "degraded": info.degraded,
                "cpu_capacity": info.cpu_capacity,
                "cpu_usage": info.cpu_usage,
                "cpu_demand": info.cpu_demand,
                "cpu_load": ratio(info.cpu_usage, info.cpu_capacity),
                "cpu_pressure": ratio(info.cpu_demand, info.cpu_capacity),
                "free_memory_bytes": info.free_memory_bytes,
                "draining": info.draining,
                "rebalance": info.rebalance,
                "dirty_tracking": info.dirty_tracking,
                "instrumentation_version": info.instrumentation_version,
                "resources": info.resources.iter().map(|resource| json!({
                    "name": resource.name,
                    "path": resource.path,
                    "access": resource.access,
                })).collect::<Vec<_>>(),
            })
        );
        return Ok(());
    }
    println!("hub       {} ({})", info.hub_name, info.hub_id);
    println!("address   {}", info.listen_address);
    println!("cluster   {}", info.cluster_id);
    if !info.degraded.is_empty() {
        println!("DEGRADED  {}", info.degraded);
    }
    println!(
        "cpu       {:.2} cores for functions; using {:.2} (load {:.2}), wanting {:.2} more (pressure {:.2})",
        info.cpu_capacity,
        info.cpu_usage,
        ratio(info.cpu_usage, info.cpu_capacity),
        info.cpu_demand,
        ratio(info.cpu_demand, info.cpu_capacity),
    );
    println!("memory    {} free", human_bytes(info.free_memory_bytes));
    let drain = if info.draining {
        "; DRAINING (no new functions)"
    } else {
        ""
    };
    println!("rebalance {}{drain}", info.rebalance);
    println!("tracking  {}", info.dirty_tracking);
    println!(
        "functions {} running, {} total",
        info.functions_running, info.functions_total
    );
    println!(
        "version   ferry {} (protocol {}, instrumentation {}), wasmer {}, {}",
        info.version, info.protocol_version, info.instrumentation_version, info.wasmer_version, info.target
    );
    if info.resources.is_empty() {
        println!("resources none (`[resources.NAME]` in the config file offers a host directory)");
    }
    for resource in &info.resources {
        println!("resource  {} {} ({})", resource.name, resource.path, resource.access);
    }
    Ok(())
}

fn peer_state_name(state: i32) -> &'static str {
    match PeerState::try_from(state) {
        Ok(PeerState::Up) => "up",
        Ok(PeerState::Suspect) => "suspect",
        Ok(PeerState::Down) => "down",
        _ => "unknown",
    }
}

fn compatibility_name(compatibility: i32) -> Option<&'static str> {
    match PeerCompatibility::try_from(compatibility) {
        Ok(PeerCompatibility::Compatible) => Some("compatible"),
        Ok(PeerCompatibility::ForeignCluster) => Some("foreign-cluster"),
        Ok(PeerCompatibility::IncompatibleProtocol) => Some("incompatible-protocol"),
        _ => None,
    }
}

pub fn peer_json(peer: &PeerInfo) -> Value {
    let source = match PeerSource::try_from(peer.source) {
        Ok(PeerSource::Static) => "static",
        Ok(PeerSource::Learned) => "learned",
        _ => "mdns",
    };
    json!({
        "id": peer.hub_id,
        "name": peer.hub_name,
        "address": peer.address,
        "state": peer_state_name(peer.state),
        "load": peer.load,
        "last_seen_ms_ago": peer.last_seen_ms_ago,
        "source": source,
        "compatibility": compatibility_name(peer.compatibility),
        "usable": peer.usable,
        "cpu_capacity": peer.cpu_capacity,
        "cpu_usage": peer.cpu_usage,
        "cpu_demand": peer.cpu_demand,
        "cpu_load": ratio(peer.cpu_usage, peer.cpu_capacity),
        "cpu_pressure": ratio(peer.cpu_demand, peer.cpu_capacity),
        "free_memory_bytes": peer.free_memory_bytes,
        "functions_total": peer.functions_total,
        "draining": peer.draining,
        "removed": peer.removed,
    })
}

pub fn print_peers(peers: &[PeerInfo], json: bool) -> Result<(), ClientError> {
    if json {
        println!("{}", Value::Array(peers.iter().map(peer_json).collect()));
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(NOTHING);
    table.set_header([
        "ID",
        "NAME",
        "ADDRESS",
        "STATE",
        "CPUS",
        "LOAD",
        "PRESSURE",
        "FUNCTIONS",
        "LAST SEEN",
        "NOTE",
    ]);
    for peer in peers {
        let last_seen = match peer.last_seen_ms_ago {
            Some(ms) if ms < 1000 => format!("{ms} ms ago"),
            Some(ms) => format!("{} ago", humantime::format_duration(Duration::from_secs(ms / 1000))),
            None => "never".to_owned(),
        };
        let mut note = match compatibility_name(peer.compatibility) {
            Some("compatible") | None => String::new(),
            Some(other) => format!("{other}: not used"),
        };
        if peer.removed {
            note = "removed from the cluster: not used".to_owned();
        }
        if peer.draining {
            note = if note.is_empty() {
                "draining".to_owned()
            } else {
                format!("{note}; draining")
            };
        }
        table.add_row([
            Cell::new(&peer.hub_id),
            Cell::new(&peer.hub_name),
            Cell::new(&peer.address),
            Cell::new(peer_state_name(peer.state)),
            Cell::new(format!("{:.2}", peer.cpu_capacity)),
            Cell::new(format!("{:.2}", ratio(peer.cpu_usage, peer.cpu_capacity))),
            Cell::new(format!("{:.2}", ratio(peer.cpu_demand, peer.cpu_capacity))),
            Cell::new(peer.functions_total),
            Cell::new(last_seen),
            Cell::new(note),
        ]);
    }
    println!("{table}");
    Ok(())
}

pub fn event_json(event: &HubEvent) -> Value {
    json!({
        "seq": event.seq,
        "unix_ms": event.unix_ms,
        "kind": event.kind,
        "function": event.function,
        "peer": event.peer,
        "text": event.text,
    })
}

/// One event per line: local time, kind, the decision and its reason.
pub fn print_event(event: &HubEvent, json: bool) -> Result<(), ClientError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", event_json(event))?;
    } else {
        let at = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(event.unix_ms));
        writeln!(out, "{at}  {:<13} {}", event.kind, event.text)?;
    }
    out.flush()?;
    Ok(())
}

pub fn print_checkpoint(name: &str, info: &CheckpointInfo, json: bool) -> Result<(), ClientError> {
    if json {
        println!(
            "{}",
            json!({
                "name": name,
                "sequence": info.sequence,
                "created_unix_ms": info.created_unix_ms,
                "memory_bytes": info.memory_bytes,
                "chunks": info.chunks,
                "zero_chunks": info.zero_chunks,
                "unchanged_chunks": info.unchanged_chunks,
                "new_chunks": info.new_chunks,
                "delta_chunks": info.delta_chunks,
                "bytes_written": info.bytes_written,
                "capture_micros": info.capture_micros,
                "persist_micros": info.persist_micros,
                "volume_bytes": info.volume_bytes,
                "volume_bytes_read": info.volume_bytes_read,
                "volume_new_chunks": info.volume_new_chunks,
            })
        );
        return Ok(());
    }
    let deltas = if info.delta_chunks > 0 {
        format!(", {} of them as the pages written", info.delta_chunks)
    } else {
        String::new()
    };
    println!(
        "checkpoint {} of {name}: {} memory, {} chunks ({} zero, {} unchanged, {} new{deltas}), {} written; captured in {:.1} ms, durable after {:.1} ms",
        info.sequence,
        human_bytes(info.memory_bytes),
        info.chunks,
        info.zero_chunks,
        info.unchanged_chunks,
        info.new_chunks,
        human_bytes(info.bytes_written),
        info.capture_micros as f64 / 1000.0,
        info.persist_micros as f64 / 1000.0,
    );
    if info.volume_bytes > 0 {
        println!(
            "volume: {} in files, {} read (written since the previous checkpoint), {} new chunks",
            human_bytes(info.volume_bytes),
            human_bytes(info.volume_bytes_read),
            info.volume_new_chunks,
        );
    }
    Ok(())
}

/// `part / whole`, 0 when there is no whole.
fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}
