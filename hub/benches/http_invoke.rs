//! HTTP invoke round trips per second through a hub (`POST
//! /v1/functions/echo/invoke` → `echo.wasm` → reply) against the same hub's
//! gRPC `Invoke` and against a bare axum handler that answers `echo:
//! <body>` itself, all in this process on loopback, in alternating rounds,
//! at concurrency 1 and 8; and HTTP to `quiet_echo.wasm`, which replies the
//! same without printing a line per message. Prints the rates and their
//! ratios. Then asynchronous invocations (`POST …/invocations`, durable
//! before its 202, then `GET /v1/invocations/{id}/result` every
//! millisecond until it is there) against synchronous HTTP invocations, in
//! alternating rounds of a tenth as many calls.
//!
//! Run: `cargo bench --profile dev -p ferry-hub --bench http_invoke`
//! (`-- --rounds N --calls N` to change the workload).

#[allow(dead_code)] // shared by every bench; this one uses a part of it
mod common;

use std::time::{Duration, Instant};

use axum::body::Bytes;
use ferry_hub::connector::{PeerConnector, Purpose, hub_client};
use ferry_proto::v1::hub_client::HubClient;
use ferry_proto::v1::{DeployRequest, InvokeRequest};
use tonic::transport::Channel;

struct Options {
    rounds: usize,
    calls: usize,
}

fn options() -> Options {
    let mut options = Options { rounds: 7, calls: 2000 };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        let value = || pair[1].parse().expect("a number");
        match pair[0].as_str() {
            "--rounds" => options.rounds = value(),
            "--calls" => options.calls = value(),
            _ => {}
        }
    }
    options
}

/// What one round trip goes through.
#[derive(Clone)]
enum Path {
    Http {
        client: reqwest::Client,
        url: String,
    },
    Grpc(HubClient<Channel>),
    /// `url` is the function's `/invocations`; `base` the hub's `http://…`.
    Async {
        client: reqwest::Client,
        url: String,
        base: String,
    },
}

impl Path {
    async fn call(&mut self, data: Vec<u8>) -> Vec<u8> {
        match self {
            Path::Http { client, url } => client
                .post(url.as_str())
                .body(data)
                .send()
                .await
                .expect("POST")
                .bytes()
                .await
                .expect("a body")
                .to_vec(),
            Path::Async { client, url, base } => {
                let started = client.post(url.as_str()).body(data).send().await.expect("POST");
                assert_eq!(started.status(), reqwest::StatusCode::ACCEPTED);
                let location = started.headers()["location"].to_str().expect("a location").to_owned();
                loop {
                    let result = client
                        .get(format!("{base}{location}/result"))
                        .send()
                        .await
                        .expect("GET");
                    if result.status() == reqwest::StatusCode::OK {
                        break result.bytes().await.expect("a body").to_vec();
                    }
                    // Not a busy loop: the hub runs on this process's runtime.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Path::Grpc(client) => {
                client
                    .invoke(InvokeRequest {
                        name: "echo".into(),
                        data,
                        timeout_ms: 10_000,
                        ..Default::default()
                    })
                    .await
                    .expect("invoke")
                    .into_inner()
                    .data
            }
        }
    }
}

/// Calls per second for `calls` round trips spread over `concurrency` tasks.
async fn measure(path: &Path, calls: usize, concurrency: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut path = path.clone();
        let share = calls / concurrency;
        tasks.push(tokio::spawn(async move {
            for index in 0..share {
                let reply = path.call(format!("ping {index}").into_bytes()).await;
                assert!(reply.starts_with(b"echo: ping"), "{}", String::from_utf8_lossy(&reply));
            }
        }));
    }
    for task in tasks {
        task.await.expect("a calling task");
    }
    calls as f64 / started.elapsed().as_secs_f64()
}

async fn bare_echo(body: Bytes) -> Vec<u8> {
    let mut reply = b"echo: ".to_vec();
    reply.extend_from_slice(&body);
    reply
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options();
    let (_data_dir, hub) = common::in_process_hub().await?;
    let mut grpc = hub_client(
        PeerConnector::new()
            .connect(&hub.address.to_string(), Purpose::Control)
            .await?,
    );
    let echo = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/echo.wasm"))?;
    grpc.deploy(DeployRequest {
        name: "echo".into(),
        module: echo,
        ..Default::default()
    })
    .await?;
    // The same reply path with nothing else: `echo.wasm` prints a line per
    // message, which the hub stores; the bare handler does not.
    let quiet = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../integration-tests/guests/quiet_echo.wasm"
    ))?;
    grpc.deploy(DeployRequest {
        name: "quiet".into(),
        module: quiet,
        ..Default::default()
    })
    .await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_address = listener.local_addr()?;
    let bare = axum::Router::new().route("/echo", axum::routing::post(bare_echo));
    tokio::spawn(async move { axum::serve(listener, bare).await });

    let client = reqwest::Client::new();
    let sync_and_async = [
        Path::Http {
            client: client.clone(),
            url: format!("http://{}/v1/functions/echo/invoke", hub.address),
        },
        Path::Async {
            client: client.clone(),
            url: format!("http://{}/v1/functions/echo/invocations", hub.address),
            base: format!("http://{}", hub.address),
        },
    ];
    let paths = [
        (
            "bare axum echo handler",
            Path::Http {
                client: client.clone(),
                url: format!("http://{bare_address}/echo"),
            },
        ),
        (
            "hub over HTTP",
            Path::Http {
                client: client.clone(),
                url: format!("http://{}/v1/functions/echo/invoke", hub.address),
            },
        ),
        ("hub over gRPC", Path::Grpc(grpc)),
        (
            "hub over HTTP, quiet",
            Path::Http {
                client,
                url: format!("http://{}/v1/functions/quiet/invoke", hub.address),
            },
        ),
    ];
    for concurrency in [1, 8] {
        for (_, path) in &paths {
            measure(path, 200, concurrency).await;
        }
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
        for _ in 0..options.rounds {
            for (index, (_, path)) in paths.iter().enumerate() {
                rates[index].push(measure(path, options.calls, concurrency).await);
            }
        }
        let medians: Vec<f64> = rates.iter_mut().map(|rates| common::median_rate(rates)).collect();
        println!(
            "invoke round trips, {} rounds x {} calls, concurrency {concurrency}",
            options.rounds, options.calls
        );
        for ((name, _), rate) in paths.iter().zip(&medians) {
            println!(
                "  {name:<24}: {rate:>8.0} calls/s (median), {:>7.1} us per call",
                1e6 / rate * concurrency as f64
            );
        }
        println!("  ratio HTTP hub / bare axum : {:.2}", medians[1] / medians[0]);
        println!("  ratio HTTP hub / gRPC hub  : {:.2}", medians[1] / medians[2]);
        println!(
            "  ratio HTTP hub, quiet echo / bare axum : {:.2}",
            medians[3] / medians[0]
        );
    }
    let calls = (options.calls / 10).max(8);
    for concurrency in [1, 8] {
        let mut rates = [Vec::new(), Vec::new()];
        for _ in 0..options.rounds {
            for (index, path) in sync_and_async.iter().enumerate() {
                rates[index].push(measure(path, calls, concurrency).await);
            }
        }
        let [sync, asynchronous] = rates.map(|mut rates| common::median_rate(&mut rates));
        println!(
            "asynchronous invocations, {} rounds x {calls} calls, concurrency {concurrency}",
            options.rounds
        );
        println!("  synchronous HTTP          : {sync:>8.0} calls/s (median)");
        println!(
            "  POST 202 + GET result     : {asynchronous:>8.0} calls/s (median), {:>7.1} us per call",
            1e6 / asynchronous * concurrency as f64
        );
        println!("  ratio asynchronous / synchronous : {:.2}", asynchronous / sync);
    }
    tokio::time::timeout(Duration::from_secs(10), hub.shutdown()).await??;
    Ok(())
}
