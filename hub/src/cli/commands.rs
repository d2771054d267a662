//! Client commands: one request each, output through [`super::output`].

use std::collections::HashMap;
use std::io::Write;

use ferry_proto::v1::{
    CheckpointRequest, DeployRequest, EventsRequest, GetHubInfoRequest, InvokeRequest, Limits, ListFunctionsRequest,
    ListPeersRequest, LogStream, LogsRequest, Placement, RemoveRequest, ResumeRequest, StopRequest, SuspendRequest,
    UndrainRequest,
};
use tokio_stream::StreamExt;

use super::client::{ClientError, connect};
use super::output;
use super::{Command, DeployArgs, InvokeArgs, LogsArgs};

pub async fn run(hub: &str, json: bool, command: Command) -> Result<(), ClientError> {
    match command {
        Command::Agent(_) => Err(ClientError::Usage("`agent` is not a client command".to_owned())),
        Command::Deploy(args) => deploy(hub, json, args).await,
        Command::Ps => ps(hub, json).await,
        Command::Logs(args) => logs(hub, json, args).await,
        Command::Stop { name } => {
            let info = connect(hub).await?.stop(StopRequest { name }).await?.into_inner();
            output::print_function_line(&info, json, "stopped")
        }
        Command::Checkpoint { name } => {
            let response = connect(hub)
                .await?
                .checkpoint(CheckpointRequest { name: name.clone() })
                .await?;
            let info = response.into_inner().checkpoint.unwrap_or_default();
            output::print_checkpoint(&name, &info, json)
        }
        Command::Suspend { name } => {
            let response = connect(hub).await?.suspend(SuspendRequest { name }).await?.into_inner();
            let info = response.function.unwrap_or_default();
            output::print_function_line(&info, json, "suspended")
        }
        Command::Resume { name } => {
            let info = connect(hub).await?.resume(ResumeRequest { name }).await?.into_inner();
            output::print_function_line(&info, json, "resumed")
        }
        Command::Rm { name } => {
            connect(hub).await?.remove(RemoveRequest { name: name.clone() }).await?;
            output::print_message(json, &format!("removed {name}"), serde_json::json!({ "removed": name }))
        }
        Command::Invoke(args) => invoke(hub, json, args).await,
        Command::Migrate(args) => super::migrate::migrate(hub, json, args).await,
        Command::Peers => {
            let peers = connect(hub)
                .await?
                .list_peers(ListPeersRequest {})
                .await?
                .into_inner()
                .peers;
            output::print_peers(&peers, json)
        }
        Command::Drain { target: name } => super::migrate::drain(hub, json, name).await,
        Command::Undrain { target: name } => {
            let info = connect(hub)
                .await?
                .undrain(UndrainRequest { hub: name })
                .await?
                .into_inner();
            output::print_message(
                json,
                &format!("hub {} takes functions again", info.hub_name),
                serde_json::json!({ "undrained": info.hub_name }),
            )
        }
        Command::Events { follow, tail } => events(hub, json, follow, tail.unwrap_or(0)).await,
        Command::Info => {
            let info = connect(hub)
                .await?
                .get_hub_info(GetHubInfoRequest::default())
                .await?
                .into_inner();
            output::print_hub_info(&info, json)
        }
    }
}

fn parse_env(pairs: &[String]) -> Result<HashMap<String, String>, ClientError> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => Err(ClientError::Usage(format!("--env expects KEY=VALUE, got {pair:?}"))),
        })
        .collect()
}

async fn deploy(hub: &str, json: bool, args: DeployArgs) -> Result<(), ClientError> {
    let module = std::fs::read(&args.file).map_err(|source| ClientError::ReadFile {
        path: args.file.display().to_string(),
        source,
    })?;
    let request = DeployRequest {
        name: args.name,
        module,
        args: args.args,
        env: parse_env(&args.env)?,
        limits: Some(Limits {
            memory_limit_bytes: args.memory_limit.map_or(0, |limit| limit.as_u64()),
            cpus: args.cpus.unwrap_or(0.0),
        }),
        replace: args.replace,
        placement: Some(Placement {
            priority: args.priority.unwrap_or(0),
            pinned: args.pin,
        }),
    };
    let response = connect(hub).await?.deploy(request).await?.into_inner();
    output::print_deployed(&response, json)
}

async fn ps(hub: &str, json: bool) -> Result<(), ClientError> {
    let functions = connect(hub)
        .await?
        .list_functions(ListFunctionsRequest {})
        .await?
        .into_inner()
        .functions;
    output::print_functions(&functions, json)
}

async fn logs(hub: &str, json: bool, args: LogsArgs) -> Result<(), ClientError> {
    let mut stream = connect(hub)
        .await?
        .logs(LogsRequest {
            name: args.name,
            follow: args.follow,
            tail: args.tail.unwrap_or(0),
        })
        .await?
        .into_inner();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    while let Some(entry) = stream.next().await {
        let entry = entry?;
        let stream_kind = LogStream::try_from(entry.stream).unwrap_or(LogStream::Unspecified);
        if stream_kind == LogStream::Hub && !args.events {
            continue;
        }
        if json {
            let line = output::log_entry_json(&entry);
            writeln!(stdout.lock(), "{line}")?;
            continue;
        }
        match stream_kind {
            LogStream::Stderr => {
                let mut err = stderr.lock();
                err.write_all(&entry.data)?;
                err.flush()?;
            }
            LogStream::Hub => {
                let mut out = stdout.lock();
                out.write_all(b"[ferry] ")?;
                out.write_all(&entry.data)?;
                out.flush()?;
            }
            _ => {
                let mut out = stdout.lock();
                out.write_all(&entry.data)?;
                out.flush()?;
            }
        }
    }
    Ok(())
}

async fn events(hub: &str, json: bool, follow: bool, tail: u32) -> Result<(), ClientError> {
    let mut stream = connect(hub)
        .await?
        .events(EventsRequest { follow, tail })
        .await?
        .into_inner();
    while let Some(event) = stream.next().await {
        output::print_event(&event?, json)?;
    }
    Ok(())
}

async fn invoke(hub: &str, json: bool, args: InvokeArgs) -> Result<(), ClientError> {
    let request = InvokeRequest {
        name: args.name,
        data: args.data.into_bytes(),
        timeout_ms: args
            .timeout
            .map(|timeout| u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX))
            .unwrap_or(0),
    };
    let reply = connect(hub).await?.invoke(request).await?.into_inner().data;
    if json {
        let text = String::from_utf8_lossy(&reply);
        println!("{}", serde_json::json!({ "reply": text }));
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&reply)?;
    if !reply.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}
