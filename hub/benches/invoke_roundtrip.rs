//! Invoke round trips per second through a hub (gRPC → supervisor → guest
//! inbox → `echo.wasm` → reply) against a plain tonic service that answers
//! the same `Invoke` call directly, both measured in this process, in
//! alternating rounds, on loopback; and the same hub path over mutual TLS
//! (a second hub in this process, TLS on as users run it). Prints the rates
//! and their ratios.
//!
//! Run: `cargo bench -p ferry-hub --bench invoke_roundtrip`
//! (`-- --rounds N --calls N --concurrency N` to change the workload).

#[allow(dead_code)] // shared by every bench; this one uses a part of it
mod common;

use std::pin::Pin;
use std::time::{Duration, Instant};

use ferry_hub::agent;
use ferry_hub::config::{AgentArgs, AgentConfig, FileConfig};
use ferry_hub::connector::{PeerConnector, Purpose, hub_client};
use ferry_hub::trust::{ClientTls, Credential};
use ferry_proto::v1::hub_client::HubClient;
use ferry_proto::v1::hub_server::{Hub, HubServer};
use ferry_proto::v1::*;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The baseline: answers `Invoke` like echo.wasm does, in the handler.
struct PlainEcho;

type LogStreamResult = Pin<Box<dyn futures::Stream<Item = Result<LogEntry, Status>> + Send>>;
type MigrateStreamResult = std::pin::Pin<Box<dyn futures::Stream<Item = Result<MigrateProgress, Status>> + Send>>;

#[tonic::async_trait]
impl Hub for PlainEcho {
    async fn invoke(&self, request: Request<InvokeRequest>) -> Result<Response<InvokeResponse>, Status> {
        let mut data = b"echo: ".to_vec();
        data.extend_from_slice(&request.into_inner().data);
        Ok(Response::new(InvokeResponse {
            data,
            hub_name: String::new(),
        }))
    }
    async fn get_hub_info(&self, _: Request<GetHubInfoRequest>) -> Result<Response<HubInfo>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn deploy(&self, _: Request<DeployRequest>) -> Result<Response<DeployResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn list_functions(
        &self,
        _: Request<ListFunctionsRequest>,
    ) -> Result<Response<ListFunctionsResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn get_function(&self, _: Request<GetFunctionRequest>) -> Result<Response<FunctionInfo>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    type MigrateStream = MigrateStreamResult;
    async fn migrate(&self, _: Request<MigrateRequest>) -> Result<Response<Self::MigrateStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    type EventsStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<HubEvent, Status>> + Send>>;
    async fn events(&self, _: Request<EventsRequest>) -> Result<Response<Self::EventsStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    type DrainStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<DrainProgress, Status>> + Send>>;
    async fn drain(&self, _: Request<DrainRequest>) -> Result<Response<Self::DrainStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn undrain(&self, _: Request<UndrainRequest>) -> Result<Response<HubInfo>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn issue_credential(
        &self,
        _: Request<IssueCredentialRequest>,
    ) -> Result<Response<IssueCredentialResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn create_join_token(&self, _: Request<CreateJoinTokenRequest>) -> Result<Response<JoinToken>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn list_join_tokens(
        &self,
        _: Request<ListJoinTokensRequest>,
    ) -> Result<Response<ListJoinTokensResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn remove_join_token(
        &self,
        _: Request<RemoveJoinTokenRequest>,
    ) -> Result<Response<RemoveJoinTokenResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn remove_hub(&self, _: Request<RemoveHubRequest>) -> Result<Response<RemoveHubResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    type LogsStream = LogStreamResult;
    async fn logs(&self, _: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn stop(&self, _: Request<StopRequest>) -> Result<Response<FunctionInfo>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn remove(&self, _: Request<RemoveRequest>) -> Result<Response<RemoveResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn list_peers(&self, _: Request<ListPeersRequest>) -> Result<Response<ListPeersResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn checkpoint(&self, _: Request<CheckpointRequest>) -> Result<Response<CheckpointResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn suspend(&self, _: Request<SuspendRequest>) -> Result<Response<SuspendResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn resume(&self, _: Request<ResumeRequest>) -> Result<Response<FunctionInfo>, Status> {
        Err(Status::unimplemented("baseline"))
    }
}

struct Options {
    rounds: usize,
    calls: usize,
    concurrency: usize,
}

fn options() -> Options {
    let mut options = Options {
        rounds: 7,
        calls: 2000,
        concurrency: 1,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        let value = || pair[1].parse().expect("a number");
        match pair[0].as_str() {
            "--rounds" => options.rounds = value(),
            "--calls" => options.calls = value(),
            "--concurrency" => options.concurrency = value(),
            _ => {}
        }
    }
    options
}

/// Calls per second for `calls` invocations spread over `concurrency` tasks.
async fn measure(client: &HubClient<Channel>, name: &str, calls: usize, concurrency: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut client = client.clone();
        let name = name.to_owned();
        let share = calls / concurrency;
        tasks.push(tokio::spawn(async move {
            for index in 0..share {
                let data = format!("ping {index}").into_bytes();
                let reply = client
                    .invoke(InvokeRequest {
                        name: name.clone(),
                        data,
                        timeout_ms: 10_000,
                        ..Default::default()
                    })
                    .await
                    .expect("invoke")
                    .into_inner();
                assert!(reply.data.starts_with(b"echo: ping"));
            }
        }));
    }
    for task in tasks {
        task.await.expect("invoke task");
    }
    calls as f64 / started.elapsed().as_secs_f64()
}

/// A hub in this process with `echo` deployed, and a client of it: over
/// mutual TLS with the hub's operator credential, or plaintext (`insecure`).
async fn hub_with_echo(
    data_dir: &std::path::Path,
    insecure: bool,
) -> anyhow::Result<(agent::RunningHub, HubClient<Channel>)> {
    let config = AgentConfig::resolve(
        &AgentArgs {
            data_dir: Some(data_dir.to_owned()),
            listen: Some("127.0.0.1:0".parse()?),
            no_mdns: true,
            insecure,
            ..AgentArgs::default()
        },
        FileConfig::default(),
        None,
    );
    let hub = agent::start(config).await?;
    let connector = match insecure {
        true => PeerConnector::new(),
        false => PeerConnector::with_tls(ClientTls::new(&Credential::read(&data_dir.join("admin.cred"))?)),
    };
    let mut client = hub_client(connector.connect(&hub.address.to_string(), Purpose::Control).await?);
    let echo = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/echo.wasm"))?;
    client
        .deploy(DeployRequest {
            name: "echo".into(),
            module: echo,
            ..Default::default()
        })
        .await?;
    Ok((hub, client))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options();
    let data_dir = tempfile::tempdir()?;
    let (hub, hub_client) = hub_with_echo(&data_dir.path().join("plain"), true).await?;
    let (tls_hub, tls_client) = hub_with_echo(&data_dir.path().join("tls"), false).await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let baseline_address = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(HubServer::new(PlainEcho))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let baseline_client = HubClient::connect(format!("http://{baseline_address}")).await?;

    // Warm both paths up (connections, JIT-ed guest, allocator).
    measure(&hub_client, "echo", 200, options.concurrency).await;
    measure(&baseline_client, "echo", 200, options.concurrency).await;
    measure(&tls_client, "echo", 200, options.concurrency).await;

    let mut through_hub = Vec::new();
    let mut through_tls = Vec::new();
    let mut baseline = Vec::new();
    for _ in 0..options.rounds {
        baseline.push(measure(&baseline_client, "echo", options.calls, options.concurrency).await);
        through_hub.push(measure(&hub_client, "echo", options.calls, options.concurrency).await);
        through_tls.push(measure(&tls_client, "echo", options.calls, options.concurrency).await);
    }
    let hub_rate = common::median_rate(&mut through_hub);
    let tls_rate = common::median_rate(&mut through_tls);
    let baseline_rate = common::median_rate(&mut baseline);
    println!(
        "invoke round trips, {} rounds x {} calls, concurrency {}",
        options.rounds, options.calls, options.concurrency
    );
    println!("  plain tonic echo : {baseline_rate:>9.0} calls/s (median)");
    println!("  through the hub  : {hub_rate:>9.0} calls/s (median)");
    println!("  hub over mTLS    : {tls_rate:>9.0} calls/s (median)");
    println!("  ratio hub/plain  : {:.2}", hub_rate / baseline_rate);
    println!(
        "  ratio mTLS/hub   : {:.2} (the same hub path with and without mutual TLS)",
        tls_rate / hub_rate
    );
    println!(
        "  hub round trip   : {:.1} us, plain: {:.1} us",
        1e6 / hub_rate * options.concurrency as f64,
        1e6 / baseline_rate * options.concurrency as f64
    );
    tokio::time::timeout(Duration::from_secs(10), hub.shutdown()).await??;
    tokio::time::timeout(Duration::from_secs(10), tls_hub.shutdown()).await??;
    Ok(())
}
