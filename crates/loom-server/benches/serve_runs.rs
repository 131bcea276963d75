//! 1,000 concurrent runs through `loom serve` over HTTP with SSE, against the same 1,000 runs in
//! process with one `Agent`, in one program (the machine is shared and noisy: compare the two
//! figures of one invocation, not absolute numbers across invocations).
//!
//! ```text
//! cargo bench -p loom-server --bench serve_runs
//! LOOM_SERVE_RUNS=1000 LOOM_SERVE_ROUNDS=3 LOOM_SERVE_LATENCY_MS=200 cargo bench -p loom-server --bench serve_runs
//! ```
//!
//! Three processes, so that each one's CPU time and peak RSS are its own:
//!
//! - the mock provider (this binary with `LOOM_SERVE_ROLE=mock`): loom-testkit's OpenAI mock
//!   answering every chat completion after `LOOM_SERVE_LATENCY_MS` (200 by default);
//! - the server (this binary with `LOOM_SERVE_ROLE=server`): `loom_server::Server::serve_on` on
//!   127.0.0.1:0, as `loom serve` runs it (multi-thread runtime, API keys in a SQLite database, the
//!   agent on the mock, no journal);
//! - this process: the HTTP client, and the in-process baseline (the same agent, `agent.start`).
//!
//! Each round runs N runs at once in process (time to first event: from `agent.start` to the first
//! event of `run.events()`), then N runs at once through the server: `POST /runs` (bearer key), then
//! `GET /runs/{id}/events` as SSE, followed to the end (the last event must be `run.completed`);
//! time to first event from the start of the POST to the first SSE event; then N runs at once in
//! one request each, `POST /runs/stream` (the run's events as SSE in the answer); then the same
//! one-request form with all N runs multiplexed over one HTTP/2 connection (h2c, as a proxy or a
//! backend service in front of the server sends them). Reported: wall
//! time of the three, the ratios to in-process, p50/p99 time to first event, the server's peak RSS (`VmHWM`) and its CPU time
//! per run (all its threads, from `/proc/PID/task/*/schedstat`), and the in-process CPU per run;
//! the server's read and write system calls per run (`/proc/PID/io`), and this process's CPU per
//! served run (the HTTP client's work, on the same cores).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use loom_agent::model::Model;
use loom_agent::{Agent, RunState};
use loom_server::{AppState, Server};
use loom_testkit::{MockServer, Reply};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU time of a process (all its threads), in nanoseconds, from the scheduler's statistics.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum()
}

/// Read and write system calls of a process so far (`syscr`, `syscw` of `/proc/PID/io`: socket
/// reads and writes included).
fn io_calls(pid: u32) -> (u64, u64) {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field =
        |name: &str| io.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    (field("syscr:"), field("syscw:"))
}

/// A `/proc/PID/status` field in MiB (`VmHWM`: peak RSS; `VmRSS`: now).
fn status_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// The agent both sides run: one model call to the mock, no tools, no journal.
fn agent(mock_url: &str) -> Agent {
    let model = Model::compatible(&format!("{mock_url}/v1"), "gpt-test").api_key("sk-test");
    Agent::builder().instructions("Answer briefly.").model(model).build().unwrap()
}

/// Exits when the parent closes our stdin (it ended, or died): no orphans.
fn exit_with_parent() {
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
}

fn mock_role() {
    exit_with_parent();
    let latency = Duration::from_millis(env_or("LOOM_SERVE_LATENCY_MS", 200));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let mock = MockServer::start().await;
        let body = loom_testkit::wire::openai::completion(Some("It is sunny in Tokyo."), &[], 40, 7);
        mock.always(Reply::json(200, body).delay_first_byte(latency));
        println!("{}", mock.url());
        std::future::pending::<()>().await;
    });
}

fn server_role(mock_url: &str) {
    exit_with_parent();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("loom-serve-runs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite:{}", dir.join("keys.db").display());
    rt.block_on(async move {
        let keys = loom_agent::store::open_api_keys(&db).await.unwrap();
        let (_, key) = loom_server::create_key(keys.as_ref(), "bench").await.unwrap();
        let agents = BTreeMap::from([("bench".to_string(), agent(mock_url))]);
        let server = Server::new(AppState::new(agents, Some(keys), None), Default::default());
        let listener = loom_server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        println!("{} {key}", listener.local_addr().unwrap().port());
        server.serve_on(listener).await.unwrap();
    });
}

fn spawn_role(role: &str, mock_url: Option<&str>) -> (Child, String) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.env("LOOM_SERVE_ROLE", role).stdin(Stdio::piped()).stdout(Stdio::piped());
    if let Some(url) = mock_url {
        cmd.env("LOOM_SERVE_MOCK", url);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    (child, line.trim().to_string())
}

/// Read and write system calls per run between two readings of [`io_calls`], as `R+W`.
fn per_run_calls(before: (u64, u64), after: (u64, u64), n: usize) -> String {
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / n as f64;
    format!("{:.1}+{:.1}", per(before.0, after.0), per(before.1, after.1))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One side's figures for one round.
struct Figures {
    wall: Duration,
    ttfe: Vec<Duration>,
}

impl Figures {
    fn new(wall: Duration, mut ttfe: Vec<Duration>) -> Self {
        ttfe.sort();
        Figures { wall, ttfe }
    }
}

/// One run in process: time to its first event; panics unless it completed.
async fn in_process_run(agent: Agent, i: usize) -> Duration {
    let started = Instant::now();
    let run = agent.start(format!("What is the weather in Tokyo? ({i})"));
    let mut events = run.events();
    let first = events.next().await.expect("a first event");
    let ttfe = started.elapsed();
    assert_eq!(first.type_name(), "run.started");
    let result = run.result().await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    ttfe
}

/// One run through the server: `POST /runs`, then its SSE stream to the end. Returns the time to
/// the first event; panics unless the stream ends with `run.completed`.
async fn served_run(http: reqwest::Client, base: Arc<str>, key: Arc<str>, i: usize) -> Duration {
    let started = Instant::now();
    let created = http
        .post(format!("{base}/runs"))
        .bearer_auth(&*key)
        .json(&serde_json::json!({"input": format!("What is the weather in Tokyo? ({i})")}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    let run_id = created["run_id"].as_str().unwrap().to_string();
    let response = http
        .get(format!("{base}/runs/{run_id}/events"))
        .bearer_auth(&*key)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    sse_to_end(response, started).await
}

/// One run through the server in one request: `POST /runs/stream`, its SSE stream to the end.
async fn streamed_run(http: reqwest::Client, base: Arc<str>, key: Arc<str>, i: usize) -> Duration {
    let started = Instant::now();
    let response = http
        .post(format!("{base}/runs/stream"))
        .bearer_auth(&*key)
        .json(&serde_json::json!({"input": format!("What is the weather in Tokyo? ({i})")}))
        .send()
        .await
        .unwrap();
    sse_to_end(response, started).await
}

/// Reads an SSE response to its end: the time from `started` to the first event; panics unless
/// the stream starts with `run.started` and ends with `run.completed`.
async fn sse_to_end(response: reqwest::Response, started: Instant) -> Duration {
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut buffer = Vec::new();
    let mut ttfe = None;
    let mut names = Vec::new();
    while let Some(chunk) = body.next().await {
        buffer.extend_from_slice(&chunk.unwrap());
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = buffer.drain(..end + 2).collect();
            let frame = String::from_utf8(frame).unwrap();
            if let Some(name) = frame.lines().find_map(|l| l.strip_prefix("event:")) {
                ttfe.get_or_insert_with(|| started.elapsed());
                names.push(name.trim().to_string());
            }
        }
    }
    assert_eq!(names.first().map(String::as_str), Some("run.started"), "{names:?}");
    assert_eq!(names.last().map(String::as_str), Some("run.completed"), "{names:?}");
    ttfe.unwrap()
}

fn main() {
    match std::env::var("LOOM_SERVE_ROLE").as_deref() {
        Ok("mock") => return mock_role(),
        Ok("server") => return server_role(&std::env::var("LOOM_SERVE_MOCK").unwrap()),
        _ => {}
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing of the kind.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = env_or("LOOM_SERVE_RUNS", 1000) as usize;
    let rounds = env_or("LOOM_SERVE_ROUNDS", 3);
    let latency = env_or("LOOM_SERVE_LATENCY_MS", 200);
    let (mut mock, mock_url) = spawn_role("mock", None);
    let (mut server, line) = spawn_role("server", Some(&mock_url));
    let (port, key) = line.split_once(' ').unwrap();
    let base: Arc<str> = Arc::from(format!("http://127.0.0.1:{port}"));
    let key: Arc<str> = Arc::from(key);
    let server_pid = server.id();
    let me = std::process::id();

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let agent = agent(&mock_url);
        let http = reqwest::Client::builder().tcp_nodelay(true).build().unwrap();
        // The one-request form again, all runs multiplexed over one HTTP/2 connection (h2c), as a
        // proxy or a backend service in front of the server would send them.
        let h2 = reqwest::Client::builder().tcp_nodelay(true).http2_prior_knowledge().build().unwrap();
        // Warm-up: connections, the key cache, allocator arenas.
        for i in 0..20 {
            in_process_run(agent.clone(), i).await;
            served_run(http.clone(), base.clone(), key.clone(), i).await;
            streamed_run(http.clone(), base.clone(), key.clone(), i).await;
            streamed_run(h2.clone(), base.clone(), key.clone(), i).await;
        }
        println!(
            "{n} concurrent runs, mock latency {latency} ms, {rounds} rounds; server RSS after warm-up {:.1} MiB",
            status_mb(server_pid, "VmRSS")
        );
        println!(
            "round | in-process wall ms | served wall ms (POST + GET events) | ratio | served wall ms (POST /runs/stream) \
             | ratio | served wall ms (POST /runs/stream, HTTP/2) | ratio | TTFE p50/p99 in-process ms \
             | TTFE p50/p99 served ms | TTFE p50/p99 stream ms | server CPU µs/run served / stream / HTTP/2 \
             | in-process CPU µs/run | server read+write syscalls/run served / stream / HTTP/2 \
             | client CPU µs/run served / stream / HTTP/2 | server peak RSS MiB | load avg"
        );
        for round in 1..=rounds {
            let cpu = cpu_ns(me);
            let started = Instant::now();
            let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(in_process_run(agent.clone(), i))).collect();
            let mut ttfe = Vec::with_capacity(n);
            for t in tasks {
                ttfe.push(t.await.unwrap());
            }
            let local = Figures::new(started.elapsed(), ttfe);
            let local_cpu = (cpu_ns(me) - cpu) as f64 / n as f64 / 1000.0;

            let (io, client) = (io_calls(server_pid), cpu_ns(me));
            let cpu = cpu_ns(server_pid);
            let started = Instant::now();
            let tasks: Vec<_> =
                (0..n).map(|i| tokio::spawn(served_run(http.clone(), base.clone(), key.clone(), i))).collect();
            let mut ttfe = Vec::with_capacity(n);
            for t in tasks {
                ttfe.push(t.await.unwrap());
            }
            let served = Figures::new(started.elapsed(), ttfe);
            let server_cpu = (cpu_ns(server_pid) - cpu) as f64 / n as f64 / 1000.0;
            let served_calls = per_run_calls(io, io_calls(server_pid), n);
            let served_client = (cpu_ns(me) - client) as f64 / n as f64 / 1000.0;

            let (io, client) = (io_calls(server_pid), cpu_ns(me));
            let cpu = cpu_ns(server_pid);
            let started = Instant::now();
            let tasks: Vec<_> =
                (0..n).map(|i| tokio::spawn(streamed_run(http.clone(), base.clone(), key.clone(), i))).collect();
            let mut ttfe = Vec::with_capacity(n);
            for t in tasks {
                ttfe.push(t.await.unwrap());
            }
            let streamed = Figures::new(started.elapsed(), ttfe);
            let stream_cpu = (cpu_ns(server_pid) - cpu) as f64 / n as f64 / 1000.0;
            let stream_calls = per_run_calls(io, io_calls(server_pid), n);
            let stream_client = (cpu_ns(me) - client) as f64 / n as f64 / 1000.0;

            let (io, client) = (io_calls(server_pid), cpu_ns(me));
            let cpu = cpu_ns(server_pid);
            let started = Instant::now();
            let tasks: Vec<_> =
                (0..n).map(|i| tokio::spawn(streamed_run(h2.clone(), base.clone(), key.clone(), i))).collect();
            let mut ttfe = Vec::with_capacity(n);
            for t in tasks {
                ttfe.push(t.await.unwrap());
            }
            let multiplexed = Figures::new(started.elapsed(), ttfe);
            let h2_cpu = (cpu_ns(server_pid) - cpu) as f64 / n as f64 / 1000.0;
            let h2_calls = per_run_calls(io, io_calls(server_pid), n);
            let h2_client = (cpu_ns(me) - client) as f64 / n as f64 / 1000.0;
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            let load: Vec<&str> = load.split_whitespace().take(3).collect();
            println!(
                "{round} | {:.1} | {:.1} | {:.3} | {:.1} | {:.3} | {:.1} | {:.3} | {:.2} / {:.2} | {:.2} / {:.2} \
                 | {:.2} / {:.2} | {server_cpu:.1} / {stream_cpu:.1} / {h2_cpu:.1} | {local_cpu:.1} \
                 | {served_calls} / {stream_calls} / {h2_calls} | {served_client:.1} / {stream_client:.1} / {h2_client:.1} \
                 | {:.1} | {}",
                ms(local.wall),
                ms(served.wall),
                served.wall.as_secs_f64() / local.wall.as_secs_f64(),
                ms(streamed.wall),
                streamed.wall.as_secs_f64() / local.wall.as_secs_f64(),
                ms(multiplexed.wall),
                multiplexed.wall.as_secs_f64() / local.wall.as_secs_f64(),
                ms(percentile(&local.ttfe, 0.5)),
                ms(percentile(&local.ttfe, 0.99)),
                ms(percentile(&served.ttfe, 0.5)),
                ms(percentile(&served.ttfe, 0.99)),
                ms(percentile(&streamed.ttfe, 0.5)),
                ms(percentile(&streamed.ttfe, 0.99)),
                status_mb(server_pid, "VmHWM"),
                load.join(" "),
            );
        }
    });
    drop(rt);
    for child in [&mut server, &mut mock] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let dir = std::env::temp_dir().join(format!("loom-serve-runs-{server_pid}"));
    std::fs::remove_dir_all(dir).ok();
}
