//! The HTTP API of real `ferry agent` processes, used as a shell script or
//! a browser would: invocations (synchronous, asynchronous, idempotent),
//! the read routes, Server-Sent Events, `/metrics` checked by Prometheus'
//! own parser, bad input, and any hub answering for a function on another,
//! also while that function moves.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use ferry_integration_tests::corpus::venv_python;
use ferry_integration_tests::moves::{deploy_guest, free_loopback_address, migrate, stdout_of, wait_peer_up};
use ferry_integration_tests::{HubOptions, HubProcess, eventually, expect_success};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(60);

fn url(hub: &HubProcess, path: &str) -> String {
    format!("http://{}{path}", hub.address())
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .expect("an HTTP client")
}

fn served_by(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("ferry-served-by")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The JSON error body's code, checking the status too.
async fn error_code(response: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status, "{:?}", response.headers());
    let body: Value = response.json().await.expect("a JSON error body");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "an error without a message: {body}");
    body["error"]["code"].as_str().unwrap_or_default().to_owned()
}

/// `POST path` of `hub` with `body`.
async fn response_code_and_text(response: reqwest::Response) -> (StatusCode, String) {
    (response.status(), response.text().await.unwrap())
}

async fn post(client: &reqwest::Client, hub: &HubProcess, path: &str, body: &'static str) -> reqwest::Response {
    client.post(url(hub, path)).body(body).send().await.unwrap()
}

/// `GET path` of `hub`, as JSON.
async fn get_json(client: &reqwest::Client, hub: &HubProcess, path: &str) -> Value {
    let response = client.get(url(hub, path)).send().await.unwrap();
    response.json().await.unwrap()
}

async fn hub_name(client: &reqwest::Client, hub: &HubProcess) -> String {
    let info: Value = get_json(client, hub, "/v1/hub").await;
    info["hubName"].as_str().unwrap().to_owned()
}

/// `/metrics` of `hub`, parsed by prometheus_client's OpenMetrics parser.
async fn scrape(client: &reqwest::Client, hub: &HubProcess) -> anyhow::Result<Vec<Value>> {
    let response = client.get(url(hub, "/metrics")).send().await?;
    anyhow::ensure!(
        response.status() == StatusCode::OK,
        "GET /metrics: {}",
        response.status()
    );
    let text = response.text().await?;
    let python = venv_python().context("the venv of scripts/install-deps")?;
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/parse_metrics.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("stdin").write_all(text.as_bytes())?;
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|sample| sample["name"] == name && labels.iter().all(|(key, value)| sample["labels"][*key] == *value))
        .and_then(|sample| sample["value"].as_f64())
}

/// How many messages echo has printed it got.
fn echo_messages(hub: &HubProcess, name: &str) -> usize {
    stdout_of(hub, name)
        .lines()
        .filter(|line| line.starts_with("got "))
        .count()
}

#[tokio::test]
async fn http_invokes_reads_and_refuses_bad_input_with_clear_errors() {
    let hub = HubProcess::start(HubOptions::named("web")).await.unwrap();
    deploy_guest(&hub, "examples/echo.wasm", "echo", &[]);
    deploy_guest(&hub, "guests/sleeper.wasm", "sleeper", &["100000", "1000"]);
    let client = http();

    // Synchronous: bytes in, the reply's bytes out, named by the hub.
    let response = post(&client, &hub, "/v1/functions/echo/invoke", "hello").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(served_by(&response), "web");
    assert_eq!(response.text().await.unwrap(), "echo: hello");

    // The read routes, in the protobuf JSON mapping.
    let functions: Value = get_json(&client, &hub, "/v1/functions").await;
    let names: Vec<&str> = functions["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|function| function["spec"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{functions}");
    assert!(names.contains(&"echo") && names.contains(&"sleeper"), "{functions}");
    let echo: Value = get_json(&client, &hub, "/v1/functions/echo").await;
    assert_eq!(echo["state"], "FUNCTION_STATE_RUNNING", "{echo}");
    assert_eq!(echo["hubName"], "web");
    let logs: Value = get_json(&client, &hub, "/v1/functions/echo/logs").await;
    assert!(
        logs["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["stream"] == "stdout" && entry["text"] == "got 5 bytes\n"),
        "{logs}"
    );
    let peers: Value = get_json(&client, &hub, "/v1/peers").await;
    assert!(peers.is_object(), "{peers}");

    // Bad input: each a precise status and a JSON error.
    let unknown = post(&client, &hub, "/v1/functions/nope/invoke", "x").await;
    assert_eq!(error_code(unknown, StatusCode::NOT_FOUND).await, "NOT_FOUND");
    let odd_name = post(&client, &hub, "/v1/functions/a%20b%2F..%00/invoke", "x").await;
    assert_eq!(error_code(odd_name, StatusCode::BAD_REQUEST).await, "INVALID_ARGUMENT");
    let bad_deadline = client
        .post(url(&hub, "/v1/functions/echo/invoke"))
        .header("ferry-timeout-ms", "soon")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(bad_deadline, StatusCode::BAD_REQUEST).await,
        "INVALID_ARGUMENT"
    );
    // A body over the limit is refused from its declared length, and read
    // off the connection first, so the client sees the 413 and not a reset.
    let too_large = http()
        .post(url(&hub, "/v1/functions/echo/invoke"))
        .body(vec![b'x'; 17 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(too_large, StatusCode::PAYLOAD_TOO_LARGE).await,
        "PAYLOAD_TOO_LARGE"
    );
    // A client that asks before sending (curl does, for a large body) is
    // refused before it sends any of it.
    let mut asking = std::net::TcpStream::connect(hub.address()).unwrap();
    asking.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        asking,
        "POST /v1/functions/echo/invoke HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        17 << 20
    )
    .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = std::io::Read::read(&mut asking, &mut buffer).unwrap();
        assert_ne!(
            read,
            0,
            "the hub closed without an answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buffer[..read]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    drop(asking);
    let no_route = client.get(url(&hub, "/v2/anything")).send().await.unwrap();
    assert_eq!(error_code(no_route, StatusCode::NOT_FOUND).await, "NOT_FOUND");
    let wrong_method = client.put(url(&hub, "/v1/functions")).send().await.unwrap();
    assert!(
        wrong_method.headers().contains_key("allow"),
        "{:?}",
        wrong_method.headers()
    );
    assert_eq!(
        error_code(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await,
        "INVALID_ARGUMENT"
    );
    // A query string that does not parse: the JSON error, not plain text.
    let bad_query = client
        .get(url(&hub, "/v1/functions/sleeper/logs?tail=many"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(bad_query, StatusCode::BAD_REQUEST).await, "INVALID_ARGUMENT");
    // A function that never reads its inbox: 504 when the deadline passes.
    let no_reply = post(&client, &hub, "/v1/functions/sleeper/invoke?timeout_ms=300", "x").await;
    assert_eq!(
        error_code(no_reply, StatusCode::GATEWAY_TIMEOUT).await,
        "DEADLINE_EXCEEDED"
    );

    // A slow client holds a half-sent request; everyone else is served.
    let mut slow = std::net::TcpStream::connect(hub.address()).unwrap();
    slow.write_all(b"POST /v1/functions/echo/invoke HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        .unwrap();
    let meanwhile = post(&client, &hub, "/v1/functions/echo/invoke", "meanwhile").await;
    assert_eq!(meanwhile.text().await.unwrap(), "echo: meanwhile");
    drop(slow);

    // Asynchronous: 202 and a Location to poll, then the result.
    let started = post(&client, &hub, "/v1/functions/echo/invocations", "later").await;
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/v1/invocations/"), "{location}");
    let done = eventually("the asynchronous invocation to succeed", PATIENCE, || async {
        let status: Value = http().get(url(&hub, &location)).send().await.ok()?.json().await.ok()?;
        (status["state"] == "succeeded").then_some(status)
    })
    .await
    .unwrap();
    assert_eq!(done["result_text"], "echo: later", "{done}");
    assert_eq!(done["hub"], "web");
    let result = client
        .get(url(&hub, &format!("{location}/result")))
        .send()
        .await
        .unwrap();
    assert_eq!(result.text().await.unwrap(), "echo: later");
    // One that waits is cancelled.
    let waiting = post(&client, &hub, "/v1/functions/sleeper/invocations?timeout_ms=60000", "x").await;
    let waiting = waiting.headers()["location"].to_str().unwrap().to_owned();
    let cancelled: Value = client
        .delete(url(&hub, &waiting))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let unknown_id = client.get(url(&hub, "/v1/invocations/0123")).send().await.unwrap();
    assert_eq!(error_code(unknown_id, StatusCode::NOT_FOUND).await, "NOT_FOUND");
    let async_unknown = client
        .post(url(&hub, "/v1/functions/nope/invocations"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(async_unknown, StatusCode::NOT_FOUND).await, "NOT_FOUND");

    // An idempotent retry runs once.
    let before = echo_messages(&hub, "echo");
    for _ in 0..3 {
        let response = client
            .post(url(&hub, "/v1/functions/echo/invoke"))
            .header("idempotency-key", "order-17")
            .body("once")
            .send()
            .await
            .unwrap();
        assert_eq!(response.text().await.unwrap(), "echo: once");
    }
    eventually("echo to print its message", PATIENCE, || async {
        (echo_messages(&hub, "echo") > before).then_some(())
    })
    .await
    .unwrap();
    // Another message after the retries: once it is printed, anything the
    // retries sent would have been printed before it.
    let marker = post(&client, &hub, "/v1/functions/echo/invoke", "marker").await;
    assert_eq!(marker.text().await.unwrap(), "echo: marker");
    eventually("echo to print the marker", PATIENCE, || async {
        (echo_messages(&hub, "echo") >= before + 2).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(echo_messages(&hub, "echo"), before + 2, "a retried POST ran twice");
    // The same key with another body is another request: refused, not
    // answered with the first one's reply, and not run.
    let reused = client
        .post(url(&hub, "/v1/functions/echo/invoke"))
        .header("idempotency-key", "order-17")
        .body("twice")
        .send()
        .await
        .unwrap();
    assert_eq!(response_code_and_text(reused).await.0, StatusCode::BAD_REQUEST);

    // Metrics, through Prometheus' parser; each moved by what happened.
    expect_success(hub.ferry(&["checkpoint", "echo"]));
    let samples = scrape(&client, &hub).await.unwrap();
    let succeeded = sample(
        &samples,
        "ferry_function_invocations_total",
        &[("function", "echo"), ("outcome", "succeeded")],
    );
    assert!(succeeded.unwrap_or_default() >= 5.0, "{succeeded:?}");
    let timed_out = sample(
        &samples,
        "ferry_function_invocations_total",
        &[("function", "sleeper"), ("outcome", "timed_out")],
    );
    assert!(timed_out.unwrap_or_default() >= 1.0, "{timed_out:?}");
    assert!(
        sample(
            &samples,
            "ferry_function_invocation_duration_seconds_count",
            &[("function", "echo")]
        )
        .unwrap_or_default()
            >= 5.0
    );
    assert_eq!(sample(&samples, "ferry_functions", &[("state", "running")]), Some(2.0));
    assert_eq!(sample(&samples, "ferry_functions", &[("state", "stopped")]), Some(0.0));
    assert!(sample(&samples, "ferry_checkpoints_total", &[]).unwrap_or_default() >= 1.0);
    assert!(sample(&samples, "ferry_checkpoint_bytes_total", &[]).unwrap_or_default() > 0.0);
    assert!(sample(&samples, "ferry_hub_cpu_load", &[]).is_some());
    assert!(sample(&samples, "ferry_peers", &[("state", "up")]).is_some());
    assert!(sample(&samples, "ferry_migrations_total", &[("outcome", "succeeded")]).is_none());
    assert_eq!(sample(&samples, "ferry_build_info", &[]), Some(1.0));
    // No unbounded labels: an unknown function invoked leaves none.
    assert!(
        !samples.iter().any(|sample| sample["labels"]["function"] == "nope"),
        "an unknown name became a label"
    );

    // Deploy, suspend, resume and remove over HTTP; a malformed deploy is a 400.
    let malformed = client
        .post(url(&hub, "/v1/functions"))
        .body("{\"name\": \"x\", \"module\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(malformed, StatusCode::BAD_REQUEST).await, "INVALID_ARGUMENT");
    let not_base64 = client
        .post(url(&hub, "/v1/functions"))
        .body(r#"{"name": "x", "module": "not base64!"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(not_base64, StatusCode::BAD_REQUEST).await,
        "INVALID_ARGUMENT"
    );
    let module = std::fs::read(ferry_integration_tests::guest("examples/echo.wasm")).unwrap();
    let deploy =
        serde_json::json!({ "name": "echo2", "module": base64::engine::general_purpose::STANDARD.encode(&module) });
    let deployed = client
        .post(url(&hub, "/v1/functions"))
        .json(&deploy)
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), StatusCode::CREATED);
    let deployed: Value = deployed.json().await.unwrap();
    assert_eq!(deployed["function"]["state"], "FUNCTION_STATE_RUNNING", "{deployed}");
    let suspended: Value = client
        .post(url(&hub, "/v1/functions/echo2/suspend"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        suspended["function"]["state"], "FUNCTION_STATE_SUSPENDED",
        "{suspended}"
    );
    // An invocation waits for a suspended function until its deadline.
    let waited = post(&client, &hub, "/v1/functions/echo2/invoke?timeout_ms=300", "x").await;
    assert_eq!(
        error_code(waited, StatusCode::GATEWAY_TIMEOUT).await,
        "DEADLINE_EXCEEDED"
    );
    let resumed = client
        .post(url(&hub, "/v1/functions/echo2/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), StatusCode::OK);
    let response = post(&client, &hub, "/v1/functions/echo2/invoke", "back").await;
    assert_eq!(response.text().await.unwrap(), "echo: back");
    let removed = client.delete(url(&hub, "/v1/functions/echo2")).send().await.unwrap();
    assert_eq!(removed.status(), StatusCode::OK);
    let nowhere = client
        .post(url(&hub, "/v1/functions/echo/migrate"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(nowhere, StatusCode::BAD_REQUEST).await, "INVALID_ARGUMENT");

    // gRPC still answers on the same port.
    expect_success(hub.ferry(&["ps"]));
}

/// Two insecure hubs on loopback that know each other by `--peer`.
async fn two_hubs() -> Vec<HubProcess> {
    let addresses = [free_loopback_address(), free_loopback_address()];
    let mut hubs = Vec::new();
    for (index, address) in addresses.iter().enumerate() {
        let other = addresses[1 - index].to_string();
        let options = HubOptions::named(format!("hub-{index}"))
            .listen(*address)
            .args(["--peer", other.as_str()]);
        hubs.push(HubProcess::start(options).await.unwrap());
    }
    for (index, hub) in hubs.iter().enumerate() {
        wait_peer_up(hub, &format!("hub-{}", 1 - index), PATIENCE)
            .await
            .unwrap();
    }
    hubs
}

#[tokio::test]
async fn any_hub_answers_for_a_function_and_invocations_span_its_moves() {
    let hubs = two_hubs().await;
    // A service that works 10 ms per request: with four callers, a move
    // finds it answering one with more waiting in its inbox.
    deploy_guest(&hubs[0], "guests/slow_echo.wasm", "echo", &["10"]);
    let client = http();

    // Asked of the hub that never heard of it: found on its peer.
    let response = post(&client, &hubs[1], "/v1/functions/echo/invoke", "there").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(served_by(&response), "hub-0");
    assert_eq!(response.text().await.unwrap(), "echo: there");
    let info: Value = get_json(&client, &hubs[1], "/v1/functions/echo").await;
    assert_eq!(info["hubName"], "hub-0", "{info}");
    assert_eq!(info["forwarded"], true, "{info}");
    assert_eq!(hub_name(&client, &hubs[1]).await, "hub-1");

    // Callers through both hubs, each sending numbered messages one after
    // another (and now and then one asynchronously), while the function
    // moves back and forth.
    let moving = Arc::new(AtomicBool::new(true));
    let callers: Vec<_> = (0..4)
        .map(|index| {
            let base = url(&hubs[index % 2], "");
            let moving = Arc::clone(&moving);
            tokio::spawn(async move {
                let client = http();
                let mut answered = 0u64;
                let mut asynchronous = Vec::new();
                while moving.load(Ordering::SeqCst) || answered < 20 {
                    let body = format!("c{index}-{answered}");
                    let response = client
                        .post(format!("{base}/v1/functions/echo/invoke?timeout_ms=30000"))
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    let status = response.status();
                    let text = response.text().await.unwrap();
                    assert_eq!(status, StatusCode::OK, "{body}: {text}");
                    assert_eq!(text, format!("echo: {body}"));
                    if answered.is_multiple_of(10) {
                        let started = client
                            .post(format!("{base}/v1/functions/echo/invocations?timeout_ms=30000"))
                            .body(format!("a{index}-{answered}"))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(started.status(), StatusCode::ACCEPTED);
                        asynchronous.push(started.headers()["location"].to_str().unwrap().to_owned());
                    }
                    answered += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (answered, asynchronous, base)
            })
        })
        .collect();

    for round in 0..4 {
        let to = if round % 2 == 0 { "hub-1" } else { "hub-0" };
        let summary = migrate(&hubs[0], "echo", to).unwrap();
        assert!(summary["epoch"].as_u64() > Some(0), "{summary}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    moving.store(false, Ordering::SeqCst);

    // One message went to the function before the callers started.
    let mut sent = 1;
    for caller in callers {
        let (answered, asynchronous, base) = caller.await.unwrap();
        sent += answered as usize + asynchronous.len();
        for location in asynchronous {
            let done = eventually("an asynchronous invocation to end", PATIENCE, || async {
                let status: Value = http()
                    .get(format!("{base}{location}"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (status["state"] == "succeeded" || status["state"] == "failed").then_some(status)
            })
            .await
            .unwrap();
            assert_eq!(done["state"], "succeeded", "{location}: {done}");
            assert!(done["result_text"].as_str().unwrap().starts_with("echo: a"), "{done}");
        }
    }

    // Every message reached the function exactly once: its output (which
    // travels with it, back on hub-0 after four moves) counts them.
    eventually("echo to have printed every message", PATIENCE, || async {
        (echo_messages(&hubs[0], "echo") >= sent).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(echo_messages(&hubs[0], "echo"), sent, "a message was lost or ran twice");
    eprintln!("{sent} messages through four moves");

    // A log follower through hub-1 sees what the function writes on hub-0.
    let mut events = client
        .get(url(&hubs[1], "/v1/functions/echo/logs?follow=1&tail=1"))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let response = post(&client, &hubs[0], "/v1/functions/echo/invoke", "followed").await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut seen = String::new();
    let mut read_until = async |needle: &str, seen: &mut String| {
        tokio::time::timeout(PATIENCE, async {
            while let Some(Ok(chunk)) = events.next().await {
                seen.push_str(&String::from_utf8_lossy(&chunk));
                if seen.contains(needle) {
                    break;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} through hub-1: {seen}"));
        assert!(
            seen.contains(needle),
            "the stream through hub-1 ended before {needle:?}: {seen}"
        );
    };
    read_until("got 8 bytes", &mut seen).await;
    assert!(seen.contains("event: log"), "{seen}");

    // The sources counted their moves and downtimes.
    let mut moves = 0.0;
    for hub in &hubs {
        let samples = scrape(&client, hub).await.unwrap();
        moves += sample(&samples, "ferry_migrations_total", &[("outcome", "succeeded")]).unwrap_or_default();
        let downtimes = sample(&samples, "ferry_migration_downtime_seconds_count", &[]).unwrap_or_default();
        let counted = sample(&samples, "ferry_migrations_total", &[("outcome", "succeeded")]).unwrap_or_default();
        assert_eq!(downtimes, counted);
    }
    assert_eq!(moves, 4.0);

    // The same follower across two more moves: onto hub-1 (the hub it
    // asked, which streamed from hub-0 until then) and back.
    for (to, data, needle) in [
        ("hub-1", "moved once", "got 10 bytes"),
        ("hub-0", "moved twice", "got 11 bytes"),
    ] {
        let summary = migrate(&hubs[0], "echo", to).unwrap();
        assert_eq!(summary["start_confirmed"], true, "{summary}");
        let response = post(&client, &hubs[0], "/v1/functions/echo/invoke", data).await;
        assert_eq!(response.status(), StatusCode::OK);
        read_until(needle, &mut seen).await;
    }
    // One stream, no entry twice (each log event carries its seq).
    let seqs: Vec<u64> = seen
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|entry| entry["seq"].as_u64())
        .collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
    // A follower from the start gets the first entry too (numbered 0).
    let mut from_start = client
        .get(url(&hubs[1], "/v1/functions/echo/logs?follow=1"))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let mut first = String::new();
    tokio::time::timeout(PATIENCE, async {
        while let Some(Ok(chunk)) = from_start.next().await {
            first.push_str(&String::from_utf8_lossy(&chunk));
            if first.lines().any(|line| line.starts_with("data: ")) {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no first entry: {first}"));
    let entry: Value =
        serde_json::from_str(first.lines().find_map(|line| line.strip_prefix("data: ")).unwrap()).unwrap();
    assert_eq!(entry["seq"], 0, "{first}");
}

/// `curl` over mutual TLS to a secure hub, as README shows it; the status
/// code and the body.
fn curl(hub: &HubProcess, credential: Option<&std::path::Path>, extra: &[&str], path: &str) -> (u16, String) {
    let port = hub.address().port();
    let ca = hub.data_dir().join("tls/ca.crt");
    let mut command = Command::new("curl");
    command
        .args(["-sS", "-D", "-", "--cacert"])
        .arg(&ca)
        .arg("--connect-to")
        .arg(format!("hub.ferry:{port}:127.0.0.1:{port}"));
    if let Some(credential) = credential {
        command.arg("--cert").arg(credential);
    }
    let output = command
        .args(extra)
        .arg(format!("https://hub.ferry:{port}{path}"))
        .output()
        .expect("curl (scripts/install-deps installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no status from curl {extra:?} {path}: {text} {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    (status, body.to_owned())
}

#[tokio::test]
async fn a_secure_hub_serves_http_to_cluster_credentials_by_their_roles() {
    let hub = HubProcess::start(HubOptions::named("safe").secure()).await.unwrap();
    deploy_guest(&hub, "examples/echo.wasm", "echo", &[]);
    let admin = hub.admin_credential();
    let viewer = hub.data_dir().join("viewer.cred");
    expect_success(hub.ferry(&[
        "cluster",
        "credentials",
        "create",
        "watcher",
        "--role",
        "viewer",
        "-o",
        viewer.to_str().unwrap(),
    ]));

    let (status, body) = curl(&hub, Some(&admin), &["-d", "hi"], "/v1/functions/echo/invoke");
    assert_eq!((status, body.as_str()), (200, "echo: hi"));
    let (status, body) = curl(&hub, Some(&admin), &["--http1.1"], "/v1/functions/echo");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"hubName\":\"safe\""), "{body}");
    let (status, body) = curl(&hub, None, &[], "/v1/functions");
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("UNAUTHENTICATED") && body.contains("credential"),
        "{body}"
    );
    let (status, body) = curl(&hub, Some(&viewer), &[], "/v1/functions");
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl(&hub, Some(&viewer), &["-d", "hi"], "/v1/functions/echo/invoke");
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("PERMISSION_DENIED") && body.contains("operator role"),
        "{body}"
    );
}

/// Asynchronous invocations outlive a restart of the hub that took them: a
/// finished one keeps its result, one still running when the hub went down
/// reads as failed (its function may have handled it), and its idempotency
/// key still names it, so a retry does not run it again.
#[tokio::test]
async fn asynchronous_invocations_answer_by_id_after_the_hub_restarts() {
    let mut hub = HubProcess::start(HubOptions::named("web").listen(free_loopback_address()))
        .await
        .unwrap();
    deploy_guest(&hub, "examples/echo.wasm", "echo", &[]);
    deploy_guest(&hub, "guests/slow_echo.wasm", "slow", &["5000"]);
    let client = http();
    let location = |response: &reqwest::Response| response.headers()["location"].to_str().unwrap().to_owned();
    // The restarted hub keeps its address.
    let base = format!("http://{}", hub.address());
    let status = |location: String| {
        let client = client.clone();
        let url = format!("{base}{location}");
        async move { client.get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };

    let finished = location(&post(&client, &hub, "/v1/functions/echo/invocations", "before").await);
    eventually("the first invocation to succeed", PATIENCE, || async {
        (status(finished.clone()).await["state"] == "succeeded").then_some(())
    })
    .await
    .unwrap();
    let keyed = || {
        client
            .post(format!("{base}/v1/functions/slow/invocations?timeout_ms=60000"))
            .header("idempotency-key", "once")
            .body("x")
            .send()
    };
    // Many accepted at once: each 202 waits for its record to be on disk.
    let many = futures::future::join_all((0..16).map(|_| {
        let client = client.clone();
        let url = format!("{base}/v1/functions/echo/invocations");
        async move {
            client
                .post(url)
                .body("many")
                .send()
                .await
                .map(|response| response.status())
        }
    }));
    let statuses = tokio::time::timeout(PATIENCE, many)
        .await
        .expect("16 asynchronous POSTs answered");
    assert!(
        statuses.iter().all(|status| matches!(status, Ok(StatusCode::ACCEPTED))),
        "{statuses:?}"
    );
    let started = keyed().await.unwrap();
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let running = location(&started);
    eventually("slow to take the message", PATIENCE, || async {
        stdout_of(&hub, "slow").contains("got 1 bytes").then_some(())
    })
    .await
    .unwrap();

    hub.terminate().unwrap();
    hub.restart().await.unwrap();

    let after = status(finished).await;
    assert_eq!(after["state"], "succeeded", "{after}");
    assert_eq!(after["result_text"], "echo: before", "{after}");
    let cut = status(running.clone()).await;
    assert_eq!(cut["state"], "failed", "{cut}");
    assert_eq!(cut["error"]["code"], "UNAVAILABLE", "{cut}");
    let message = cut["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the hub restarted") && message.contains("may have handled"),
        "{message}"
    );
    let retried = keyed().await.unwrap();
    assert_eq!(location(&retried), running, "the key still names the first invocation");
    // Another body under that key, after the restart too: refused.
    let reused = client
        .post(format!("{base}/v1/functions/slow/invocations?timeout_ms=60000"))
        .header("idempotency-key", "once")
        .body("another")
        .send()
        .await
        .unwrap();
    let (code, text) = response_code_and_text(reused).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("first used with another request body"), "{text}");
    let unknown_id = client.get(url(&hub, "/v1/invocations/0123")).send().await.unwrap();
    assert_eq!(error_code(unknown_id, StatusCode::NOT_FOUND).await, "NOT_FOUND");
    assert_eq!(
        stdout_of(&hub, "slow").matches("got 1 bytes").count(),
        1,
        "the retry was not delivered"
    );
}
