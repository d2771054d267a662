//! Tables for people, JSON for scripts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comfy_table::presets::NOTHING;
use comfy_table::{Cell, Table};
use ferry_proto::v1::{DeployResponse, FunctionInfo, FunctionState, HubInfo, LogEntry, LogStream};
use serde_json::{Value, json};

use super::client::ClientError;

fn state_name(state: i32) -> &'static str {
    match FunctionState::try_from(state) {
        Ok(FunctionState::Starting) => "starting",
        Ok(FunctionState::Running) => "running",
        Ok(FunctionState::Exited) => "exited",
        Ok(FunctionState::Failed) => "failed",
        Ok(FunctionState::Stopped) => "stopped",
        _ => "unknown",
    }
}

fn stream_name(stream: i32) -> &'static str {
    match LogStream::try_from(stream) {
        Ok(LogStream::Stdout) => "stdout",
        Ok(LogStream::Stderr) => "stderr",
        Ok(LogStream::GuestLog) => "log",
        Ok(LogStream::Hub) => "hub",
        _ => "unknown",
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
        "hub_id": info.hub_id,
        "hub_name": info.hub_name,
        "module_hash": spec.module_hash,
        "args": spec.args,
        "env": spec.env,
        "memory_limit_bytes": spec.limits.map(|limits| limits.memory_limit_bytes).unwrap_or_default(),
        "memory_bytes": info.memory_bytes,
        "cpu_micros": info.cpu_micros,
        "exit_code": info.exit_code,
        "failure": info.failure,
        "started_unix_ms": info.started_unix_ms,
        "starts": info.starts,
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

fn human_bytes(bytes: u64) -> String {
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
    match FunctionState::try_from(info.state) {
        Ok(FunctionState::Exited) => format!("exit code {}", info.exit_code),
        Ok(FunctionState::Failed) => info.failure.clone(),
        _ => String::new(),
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
        "NAME", "STATE", "HUB", "CPU", "MEMORY", "UPTIME", "STARTS", "MODULE", "NOTE",
    ]);
    for info in functions {
        let module = info
            .spec
            .as_ref()
            .map(|spec| spec.module_hash.as_str())
            .unwrap_or_default();
        table.add_row([
            Cell::new(name_of(info)),
            Cell::new(state_name(info.state)),
            Cell::new(&info.hub_name),
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
            })
        );
        return Ok(());
    }
    println!("hub       {} ({})", info.hub_name, info.hub_id);
    println!("address   {}", info.listen_address);
    println!(
        "functions {} running, {} total",
        info.functions_running, info.functions_total
    );
    println!(
        "version   ferry {} (protocol {}), wasmer {}, {}",
        info.version, info.protocol_version, info.wasmer_version, info.target
    );
    Ok(())
}
