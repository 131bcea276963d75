//! Whole runs against a mock OpenAI server on loopback, measured against a bare reqwest client
//! doing the same HTTP calls, in one run of this program (the machine is shared and noisy: compare
//! the ratios, not the absolute numbers across runs).
//!
//! ```text
//! cargo bench -p loom-agent --bench http_runs
//! LOOM_HTTP_RUNS=2000 cargo bench -p loom-agent --bench http_runs
//! ```
//!
//! A run is two model calls and one tool: the model asks for a tool, the tool answers, the model
//! answers. The mock server runs in its own process (this binary with `LOOM_HTTP_SERVE=1`), so the
//! measured process does client work only. Each scenario runs in a fresh process (for its peak
//! RSS):
//!
//! - `seq`: N runs one after another; process CPU time (user + system, `getrusage`) per run;
//! - `conc:N`: N runs started at once; peak RSS (`VmHWM`) and wall time.
//!
//! Clients: `reqwest` (a bare `reqwest::Client` POSTing the same JSON bodies and parsing the
//! answers: the floor), `loom` (an agent on `Model::compatible`, plain request/response calls),
//! `loom-streamed` (the same agent, streamed calls), and `loom-durable` (plain calls, plus a SQLite
//! journal and session store, a file audit log, a budget, permissions and one hook; a new session
//! per run). `LOOM_HTTP_JOURNAL` replaces the durable client's journal URL (for example a
//! `postgres://…` URL).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Instant;

use loom_agent::governance::{FileAuditLog, Hooks, StandardBudget, StandardPermissions};
use loom_agent::model::Model;
use loom_agent::tool::{FunctionTool, ToolOutput};
use loom_agent::{Agent, RunRequest, RunState};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The mock server (its own process)

const TOOL_CALL: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-test","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"lookup","arguments":"{\"q\":\"weather\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":40,"completion_tokens":8,"total_tokens":48}}"#;
const ANSWER: &str = r#"{"id":"chatcmpl-2","object":"chat.completion","created":1,"model":"gpt-test","choices":[{"index":0,"message":{"role":"assistant","content":"It is sunny in Tokyo."},"finish_reason":"stop"}],"usage":{"prompt_tokens":60,"completion_tokens":7,"total_tokens":67}}"#;

fn sse(answer: bool) -> String {
    let chunks: Vec<String> = if answer {
        vec![
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"It is "}}]}"#.into(),
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"sunny in Tokyo."}}]}"#.into(),
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":60,"completion_tokens":7,"total_tokens":67}}"#.into(),
        ]
    } else {
        vec![
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"lookup","arguments":""}}]}}]}"#.into(),
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"q\":\"weather\"}"}}]}}]}"#.into(),
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":40,"completion_tokens":8,"total_tokens":48}}"#.into(),
        ]
    };
    let mut body = String::new();
    for c in chunks {
        body.push_str("data: ");
        body.push_str(&c);
        body.push_str("\n\n");
    }
    body.push_str("data: [DONE]\n\n");
    body
}

/// One keep-alive connection: each request gets the tool call, or the answer once the
/// conversation holds a tool result.
fn serve_connection(stream: TcpStream) {
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let text = String::from_utf8_lossy(&body);
        let answer = text.contains(r#""role":"tool""#);
        let streamed = text.contains(r#""stream":true"#);
        let (content_type, reply) = match (streamed, answer) {
            (true, a) => ("text/event-stream", sse(a)),
            (false, true) => ("application/json", ANSWER.to_string()),
            (false, false) => ("application/json", TOOL_CALL.to_string()),
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: keep-alive\r\n\r\n",
            reply.len()
        );
        if writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(reply.as_bytes())).is_err() {
            return;
        }
    }
}

fn serve() {
    // A backlog of 4,096 (std's `bind` asks for 128): past the backlog, the SYNs of 10,000 clients
    // connecting at once are dropped and each waits 1 s for a retransmission.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    socket.listen(4096).unwrap();
    let listener: TcpListener = socket.into();
    println!("{}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    for stream in listener.incoming().flatten() {
        stream.set_nodelay(true).ok();
        std::thread::Builder::new().stack_size(64 * 1024).spawn(move || serve_connection(stream)).ok();
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements

fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    tv(usage.user_time()) + tv(usage.system_time())
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// With `LOOM_HTTP_SAMPLE` set, a thread samples the open descriptors (connections) and RSS every
/// 2 ms during a `conc:N` scenario: what RSS follows.
struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<String>,
}

impl Sampler {
    fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let rss_mb = || {
                let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
                let pages: f64 = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                pages * 4096.0 / 1048576.0
            };
            let fds = || std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
            let (mut max_fds, mut max_rss, mut fds_at_max_rss, mut ms_at_max_rss) = (0, 0.0f64, 0, 0);
            let started = Instant::now();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let (f, r) = (fds(), rss_mb());
                max_fds = max_fds.max(f);
                if r > max_rss {
                    (max_rss, fds_at_max_rss, ms_at_max_rss) = (r, f, started.elapsed().as_millis());
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            format!(" max_fds={max_fds} fds_at_peak={fds_at_max_rss} peak_at_ms={ms_at_max_rss} end_fds={}", fds())
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> String {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

const SYSTEM: &str = "You are a weather assistant. Use the lookup tool, then answer briefly.";

fn tool_schema() -> Value {
    json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]})
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Value {
    let response = client
        .post(url)
        .bearer_auth("sk-test")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

/// The floor: the same two calls with a bare reqwest client.
async fn reqwest_run(client: &reqwest::Client, url: &str, prompt: &str) {
    let tools = json!([{"type": "function", "function": {"name": "lookup", "description": "Looks it up.", "parameters": tool_schema()}}]);
    let mut messages = vec![json!({"role": "system", "content": SYSTEM}), json!({"role": "user", "content": prompt})];
    let first = post(client, url, &json!({"model": "gpt-test", "messages": messages, "tools": tools})).await;
    let message = first["choices"][0]["message"].clone();
    let call_id = message["tool_calls"][0]["id"].as_str().unwrap().to_string();
    messages.push(message);
    messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": "sunny"}));
    let second = post(client, url, &json!({"model": "gpt-test", "messages": messages, "tools": tools})).await;
    assert!(second["choices"][0]["message"]["content"].as_str().unwrap().contains("sunny"));
}

struct OneHook;

#[async_trait::async_trait]
impl Hooks for OneHook {}

fn agent(client: &str, base: &str, dir: &std::path::Path) -> Agent {
    let model = Model::compatible(base, "gpt-test").api_key("sk-test").streaming(client == "loom-streamed");
    let tool = FunctionTool::new("lookup", "Looks it up.", tool_schema(), |_ctx, _args| async {
        Ok(ToolOutput::text("sunny"))
    });
    let mut builder = Agent::builder().instructions(SYSTEM).model(model).tool(tool);
    if client == "loom-durable" {
        builder = builder
            .journal(
                std::env::var("LOOM_HTTP_JOURNAL")
                    .unwrap_or_else(|_| format!("sqlite:{}", dir.join("loom.db").display())),
            )
            .audit_log(FileAuditLog::open(dir.join("audit.jsonl"), "bench-secret-0123456789").unwrap())
            .budget(StandardBudget::new().max_tokens(1_000_000))
            .permissions(StandardPermissions::new().allow("lookup"))
            .hook(OneHook);
    }
    builder.build().unwrap()
}

async fn loom_run(agent: &Agent, prompt: &str, durable: bool, i: usize) {
    let mut request = RunRequest::new(prompt.to_string());
    if durable {
        request = request.session(format!("bench-{i}")).user("bench");
    }
    let result = agent.start(request).result().await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
}

/// One scenario in this process: prints `client mode value…` as one line.
fn scenario(client: &str, mode: &str, port: u16) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let base = format!("http://127.0.0.1:{port}/v1");
    let url = format!("{base}/chat/completions");
    let dir = std::env::temp_dir().join(format!("loom-http-runs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::builder().tcp_nodelay(true).build().unwrap();
        let agent = agent(client, &base, &dir);
        let one = |i: usize| {
            let (http, url, agent) = (http.clone(), url.clone(), agent.clone());
            let client = client.to_string();
            async move {
                let prompt = format!("What is the weather in Tokyo? ({i})");
                if client == "reqwest" {
                    reqwest_run(&http, &url, &prompt).await;
                } else {
                    loom_run(&agent, &prompt, client == "loom-durable", i).await;
                }
            }
        };
        for i in 0..20 {
            one(1_000_000 + i).await; // warm-up: connections, caches, the database
        }
        if let Some(n) = mode.strip_prefix("conc:") {
            let n: usize = n.parse().unwrap();
            let sampler = std::env::var_os("LOOM_HTTP_SAMPLE").map(|_| Sampler::start());
            let started = Instant::now();
            let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(one(i))).collect();
            for t in tasks {
                t.await.unwrap();
            }
            let wall = started.elapsed().as_secs_f64();
            let sampled = sampler.map(Sampler::finish).unwrap_or_default();
            println!("{client} {mode} peak_rss_mb={:.1} wall_s={wall:.2}{sampled}", peak_rss_mb());
        } else {
            let n: usize = std::env::var("LOOM_HTTP_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
            let (cpu, wall) = (cpu_seconds(), Instant::now());
            for i in 0..n {
                one(i).await;
            }
            let per_run_ms = (cpu_seconds() - cpu) * 1000.0 / n as f64;
            let wall_ms = wall.elapsed().as_secs_f64() * 1000.0 / n as f64;
            println!("{client} seq cpu_ms_per_run={per_run_ms:.3} wall_ms_per_run={wall_ms:.3}");
        }
    });
    drop(runtime);
    std::fs::remove_dir_all(&dir).ok();
}

/// Raises the open-file limit to its hard maximum (10,000 runs hold 10,000 connections).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Waits (at most 30 s) until the mock server's threads for the last scenario's connections have
/// ended: 10,000 runs leave about 14,000 of them, and the next scenario's would otherwise start on
/// top of them (slower, and past `vm.max_map_count` the mock cannot start threads at all).
fn settle(server: u32) {
    let threads = || {
        std::fs::read_to_string(format!("/proc/{server}/status")).ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse::<usize>().ok())
        })
    };
    let started = Instant::now();
    while threads().is_some_and(|n| n > 16) && started.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn main() {
    raise_fd_limit();
    if std::env::var_os("LOOM_HTTP_SERVE").is_some() {
        return serve();
    }
    if let (Ok(client), Ok(mode), Ok(port)) =
        (std::env::var("LOOM_HTTP_CLIENT"), std::env::var("LOOM_HTTP_MODE"), std::env::var("LOOM_HTTP_PORT"))
    {
        return scenario(&client, &mode, port.parse().unwrap());
    }
    // `cargo bench` passes `--bench`; a plain `cargo test` run of benches passes nothing useful.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut server = Command::new(&exe).env("LOOM_HTTP_SERVE", "1").stdout(Stdio::piped()).spawn().unwrap();
    let mut port = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut port).unwrap();
    let port = port.trim().to_string();
    let scenarios = std::env::var("LOOM_HTTP_SCENARIOS").unwrap_or_else(|_| {
        "reqwest:seq loom:seq loom-streamed:seq loom-durable:seq reqwest:conc:1000 loom:conc:1000 \
         reqwest:conc:10000 loom:conc:10000"
            .into()
    });
    for spec in scenarios.split_whitespace() {
        let (client, mode) = spec.split_once(':').unwrap();
        let out = Command::new(&exe)
            .env("LOOM_HTTP_CLIENT", client)
            .env("LOOM_HTTP_MODE", mode)
            .env("LOOM_HTTP_PORT", &port)
            .output()
            .unwrap();
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            eprintln!("{spec} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        settle(server.id());
    }
    let _ = server.kill();
    let _ = server.wait();
}
