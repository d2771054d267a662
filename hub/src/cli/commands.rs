//! Client commands: one request each, output through [`super::output`].

use std::collections::HashMap;
use std::io::Write;

use ferry_proto::v1::{
    CheckpointRequest, CreateJoinTokenRequest, EventsRequest, FunctionState, GetFunctionRequest, GetHubInfoRequest,
    InvokeRequest, IssueCredentialRequest, ListFunctionsRequest, ListJoinTokensRequest, ListPeersRequest, LogStream,
    LogsRequest, RemoveHubRequest, RemoveJoinTokenRequest, RemoveRequest, ResumeRequest, StopRequest, SuspendRequest,
    UndrainRequest,
};
use tokio_stream::StreamExt;

use super::client::{ClientError, HubTarget, connect};
use super::output;
use super::{
    ClusterCommand, Command, CreateCredentialArgs, CredentialsCommand, DeployArgs, InvokeArgs, LogsArgs, TokenCommand,
};

pub async fn run(hub: &HubTarget, json: bool, command: Command) -> Result<(), ClientError> {
    match command {
        Command::Agent(_) => Err(ClientError::Usage("`agent` is not a client command".to_owned())),
        Command::Deploy(args) => deploy(hub, json, args).await,
        Command::Cluster(ClusterCommand::Credentials(CredentialsCommand::Create(args))) => {
            create_credential(hub, json, args).await
        }
        Command::Cluster(ClusterCommand::Token(command)) => token(hub, json, command).await,
        Command::Cluster(ClusterCommand::Rm { removed }) => remove_hub(hub, json, removed).await,
        Command::Ps { names, all } => ps(hub, json, names, all).await,
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

pub(super) fn parse_env(pairs: &[String]) -> Result<HashMap<String, String>, ClientError> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => Err(ClientError::Usage(format!("--env expects KEY=VALUE, got {pair:?}"))),
        })
        .collect()
}

async fn deploy(hub: &HubTarget, json: bool, args: DeployArgs) -> Result<(), ClientError> {
    let request = super::manifest::deploy_request(args)?;
    let response = connect(hub).await?.deploy(request).await?.into_inner();
    output::print_deployed(&response, json)
}

async fn ps(hub: &HubTarget, json: bool, names: Vec<String>, all: bool) -> Result<(), ClientError> {
    let mut client = connect(hub).await?;
    if names.is_empty() {
        let functions = client
            .list_functions(ListFunctionsRequest { cluster: all })
            .await?
            .into_inner()
            .functions;
        return output::print_functions(&functions, json);
    }
    // Those found are shown; the first name not found is the error.
    let (mut functions, mut failed) = (Vec::new(), None);
    for name in names {
        match client.get_function(GetFunctionRequest { name }).await {
            Ok(info) => functions.push(info.into_inner()),
            Err(status) => {
                failed.get_or_insert(status);
            }
        }
    }
    if !functions.is_empty() {
        output::print_functions(&functions, json)?;
    }
    match failed {
        Some(status) => Err(status.into()),
        None => Ok(()),
    }
}

async fn logs(hub: &HubTarget, json: bool, args: LogsArgs) -> Result<(), ClientError> {
    let name = args.name.clone();
    let mut stream = connect(hub)
        .await?
        .logs(LogsRequest {
            name: args.name,
            follow: args.follow,
            tail: args.tail.unwrap_or(0),
            from_seq: 0,
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
    // A follow ends when the function goes: say so, not just stop.
    if args.follow && !json {
        let asked = connect(hub)
            .await?
            .get_function(GetFunctionRequest { name: name.clone() })
            .await;
        match asked {
            Err(status) if status.code() == tonic::Code::NotFound => {
                eprintln!("function {name:?} was removed: nothing more to follow");
            }
            Ok(info) => {
                let info = info.into_inner();
                match info.state() {
                    FunctionState::Exited => {
                        eprintln!(
                            "function {name:?} exited with code {}: nothing more to follow",
                            info.exit_code
                        )
                    }
                    FunctionState::Failed => eprintln!("function {name:?} failed: {}", info.failure),
                    _ => {}
                }
            }
            Err(_) => {}
        }
    }
    Ok(())
}

async fn events(hub: &HubTarget, json: bool, follow: bool, tail: u32) -> Result<(), ClientError> {
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

async fn invoke(hub: &HubTarget, json: bool, args: InvokeArgs) -> Result<(), ClientError> {
    let data = match (args.data, args.data_file) {
        (Some(data), _) => data.into_bytes(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut data).map_err(|source| {
                ClientError::ReadFile {
                    path: "standard input".to_owned(),
                    source,
                }
            })?;
            data
        }
        (None, Some(path)) => std::fs::read(&path).map_err(|source| ClientError::ReadFile {
            path: path.display().to_string(),
            source,
        })?,
        (None, None) => Vec::new(),
    };
    let request = InvokeRequest {
        name: args.name,
        data,
        timeout_ms: args
            .timeout
            .map(|timeout| u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX))
            .unwrap_or(0),
        ..Default::default()
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

/// `ferry cluster credentials create`: the key is made here and never sent;
/// the hub signs a certificate for it.
async fn create_credential(hub: &HubTarget, json: bool, args: CreateCredentialArgs) -> Result<(), ClientError> {
    let (key_pem, signing_request_pem) =
        crate::trust::authority::new_signing_request(&args.name).map_err(ClientError::Credential)?;
    let response = connect(hub)
        .await?
        .issue_credential(IssueCredentialRequest {
            name: args.name.clone(),
            role: args.role.clone(),
            ttl_seconds: args.ttl.map_or(0, |ttl| ttl.as_secs().max(1)),
            signing_request_pem,
        })
        .await?
        .into_inner();
    let credential = crate::trust::Credential::new(key_pem, response.certificate_pem, response.ca_pem);
    let path = args
        .output
        .unwrap_or_else(|| std::path::PathBuf::from(format!("{}.cred", args.name)));
    credential.write(&path).map_err(ClientError::Credential)?;
    let identity = credential.identity().map_err(ClientError::Credential)?;
    let expires = timestamp(identity.not_after);
    let mut out = std::io::stdout().lock();
    if json {
        let value = serde_json::json!({
            "path": path.display().to_string(),
            "name": identity.name,
            "role": identity.role.as_str(),
            "expires": expires,
        });
        writeln!(out, "{value}")?;
    } else {
        writeln!(
            out,
            "wrote {} ({} credential of {:?}, valid until {expires})",
            path.display(),
            identity.role,
            identity.name
        )?;
    }
    Ok(())
}

/// Seconds since the epoch as RFC 3339 (UTC, whole seconds).
pub(super) fn timestamp(seconds: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// `ferry cluster rm HUB`.
async fn remove_hub(hub: &HubTarget, json: bool, removed: String) -> Result<(), ClientError> {
    let response = connect(hub)
        .await?
        .remove_hub(RemoveHubRequest { hub: removed })
        .await?
        .into_inner();
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "removed": response.hub_id,
                "revocation_list": response.sequence,
                "functions_total": response.functions_total,
            })
        )?;
    } else {
        writeln!(
            out,
            "removed hub {} from the cluster (revocation list {}); members refuse it within seconds",
            response.hub_id, response.sequence
        )?;
        if response.functions_total > 0 {
            eprintln!(
                "warning: hub {} held {} functions when it last reported: they are cut off from the cluster with it \
                 (drain a hub before removing it: `ferry drain HUB`)",
                response.hub_id, response.functions_total
            );
        }
    }
    Ok(())
}

/// `ferry cluster token create|ls|rm`.
async fn token(hub: &HubTarget, json: bool, command: TokenCommand) -> Result<(), ClientError> {
    let mut client = connect(hub).await?;
    let mut out = std::io::stdout().lock();
    let describe = |token: &ferry_proto::v1::JoinToken| {
        serde_json::json!({
            "id": token.id,
            "expires_at": timestamp(token.expires_at),
            "uses_left": token.uses_left,
        })
    };
    match command {
        TokenCommand::Create { ttl, uses } => {
            let token = client
                .create_join_token(CreateJoinTokenRequest {
                    ttl_seconds: ttl.map_or(0, |ttl| ttl.as_secs().max(1)),
                    uses: uses.unwrap_or(1),
                })
                .await?
                .into_inner();
            if json {
                let mut value = describe(&token);
                value["token"] = serde_json::Value::String(token.token.clone());
                writeln!(out, "{value}")?;
            } else {
                writeln!(out, "{}", token.token)?;
                eprintln!(
                    "join token {}: {} use(s), valid until {}; start a hub with: ferry agent --join TOKEN --peer {}",
                    token.id,
                    token.uses_left,
                    timestamp(token.expires_at),
                    hub.address
                );
            }
        }
        TokenCommand::Ls => {
            let tokens = client
                .list_join_tokens(ListJoinTokensRequest {})
                .await?
                .into_inner()
                .tokens;
            if json {
                let list: Vec<_> = tokens.iter().map(describe).collect();
                writeln!(out, "{}", serde_json::Value::Array(list))?;
            } else if tokens.is_empty() {
                writeln!(out, "no join tokens")?;
            } else {
                writeln!(out, "{:<10} {:>9}  EXPIRES", "ID", "USES LEFT")?;
                for token in &tokens {
                    writeln!(
                        out,
                        "{:<10} {:>9}  {}",
                        token.id,
                        token.uses_left,
                        timestamp(token.expires_at)
                    )?;
                }
            }
        }
        TokenCommand::Rm { id } => {
            client
                .remove_join_token(RemoveJoinTokenRequest { id: id.clone() })
                .await?;
            if json {
                writeln!(out, "{}", serde_json::json!({ "removed": id }))?;
            } else {
                writeln!(out, "removed join token {id}")?;
            }
        }
    }
    Ok(())
}
