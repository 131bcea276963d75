//! What one MCP tool call over stdio costs a client, beyond the server's own time.
//!
//! `cargo bench -p loom-mcp-conformance --bench mcp_stdio_overhead`
//!
//! Three clients call the tool `echo` (`{"message": "hello"}`) of the same stdio server, N times
//! in sequence after a warm-up, in alternating rounds:
//!
//! - **floor**: a minimal client that writes one pre-serialized JSON-RPC line to the server's
//!   stdin and reads one line back — the server's own time plus the pipe round trip, with
//!   (nearly) nothing on the client side;
//! - **loom**: Loom's MCP client as an agent uses it: `loom_mcp::stdio(..)`, the server's tool
//!   called through Loom's `Tool` trait;
//! - **rmcp**: the SDK under loom-mcp alone (rmcp 3.11's child-process transport and
//!   `call_tool`), to show what loom-mcp adds;
//! - **python**: the official Python client (`mcp` on PyPI, `ClientSession` over `stdio_client`),
//!   through `benches/mcp_python/bench_client.py`, when a Python with `mcp` is found
//!   (`LOOM_BENCH_PYTHON`, default `python3`).
//!
//! Reported per call: mean, p50 and p99 wall time, and client-process CPU time (all threads of the
//! client process, not the server's: `CLOCK_PROCESS_CPUTIME_ID` here, `time.process_time_ns` in
//! Python). Overhead = a client's mean wall time − the floor's.
//!
//! The server defaults to `loom-mcp-bench-server` (this crate's minimal stdio server: one
//! `serde_json` parse and one write per call); `LOOM_BENCH_SERVER="node /path/to/dist/index.js
//! stdio"` runs the same bench against another server with an `echo` tool, such as
//! `@modelcontextprotocol/server-everything`. `LOOM_BENCH_N` (2000) and `LOOM_BENCH_ROUNDS` (3)
//! set the size.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cpu_time::ProcessTime;
use loom_core::tool::ToolContext;
use loom_mcp_conformance::scenarios::ConformanceHandler;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::{Map, Value, json};

const WARMUP: usize = 200;

struct Run {
    wall: Vec<Duration>,
    cpu: Duration,
}

#[derive(Default)]
struct Totals {
    wall: Vec<Duration>,
    cpu: Duration,
}

impl Totals {
    fn add(&mut self, run: Run) {
        self.wall.extend(run.wall);
        self.cpu += run.cpu;
    }

    /// (mean, p50, p99, cpu per call) in microseconds.
    fn stats(&self) -> (f64, f64, f64, f64) {
        let mut sorted = self.wall.clone();
        sorted.sort();
        let n = sorted.len().max(1);
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let mean = sorted.iter().map(|d| us(*d)).sum::<f64>() / n as f64;
        let pick = |q: f64| us(sorted[((n as f64 * q) as usize).min(n - 1)]);
        (mean, pick(0.50), pick(0.99), us(self.cpu) / n as f64)
    }
}

fn server_command() -> (String, Vec<String>) {
    match std::env::var("LOOM_BENCH_SERVER") {
        Ok(spec) if !spec.trim().is_empty() => {
            let mut words = spec.split_whitespace().map(str::to_owned);
            let program = words.next().unwrap();
            (program, words.collect())
        }
        _ => (env!("CARGO_BIN_EXE_loom-mcp-bench-server").to_owned(), Vec::new()),
    }
}

/// The floor: pre-serialized JSON-RPC lines written to the server, one line read back per call.
fn floor(n: usize) -> Run {
    let (program, args) = server_command();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "floor", "version": "0"}}});
    writeln!(stdin, "{initialize}").unwrap();
    stdin.flush().unwrap();
    stdout.read_line(&mut line).unwrap();
    writeln!(stdin, r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#).unwrap();
    let call = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"message\":\"hello\"}}}\n";
    let mut one = |line: &mut String| {
        stdin.write_all(call).unwrap();
        stdin.flush().unwrap();
        loop {
            line.clear();
            stdout.read_line(line).unwrap();
            // Skip notifications (a server may log); the answer carries the id.
            if line.contains("\"id\"") {
                break;
            }
        }
        assert!(line.contains("hello"), "unexpected answer: {line}");
    };
    for _ in 0..WARMUP {
        one(&mut line);
    }
    let mut wall = Vec::with_capacity(n);
    let cpu0 = ProcessTime::now();
    for _ in 0..n {
        let t0 = Instant::now();
        one(&mut line);
        wall.push(t0.elapsed());
    }
    let cpu = cpu0.elapsed();
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    Run { wall, cpu }
}

/// Loom's client as an agent uses it: loom-mcp's stdio server, its `echo` tool called through
/// Loom's `Tool` trait (arguments as JSON in, the result turned into a `ToolOutput`), on a
/// multi-threaded tokio runtime.
fn loom(n: usize) -> Run {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (program, args) = server_command();
        let server = loom_mcp::stdio(program, args).name("bench");
        let client = server.connect().await.expect("connect");
        let tools = client.tools().await.expect("tools");
        let echo = tools.iter().find(|t| t.name() == "bench__echo").expect("bench__echo").clone();
        let call = || echo.call(ToolContext::detached("bench", "bench"), json!({"message": "hello"}));
        for _ in 0..WARMUP {
            call().await.expect("echo");
        }
        let mut wall = Vec::with_capacity(n);
        let cpu0 = ProcessTime::now();
        for _ in 0..n {
            let t0 = Instant::now();
            let output = call().await.expect("echo");
            wall.push(t0.elapsed());
            std::hint::black_box(output);
        }
        let cpu = cpu0.elapsed();
        drop(client);
        drop(server);
        Run { wall, cpu }
    })
}

/// rmcp 3.11 alone (the SDK under loom-mcp): a child process transport and `call_tool`.
fn rmcp_direct(n: usize) -> Run {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (program, args) = server_command();
        let mut command = tokio::process::Command::new(program);
        command.args(args).stderr(Stdio::null());
        let transport = TokioChildProcess::new(command).expect("start the server");
        let client = ConformanceHandler.serve(transport).await.expect("initialize");
        let arguments: Map<String, Value> = json!({"message": "hello"}).as_object().cloned().unwrap();
        let call = || {
            let params = CallToolRequestParams::new("echo").with_arguments(arguments.clone());
            client.call_tool(params)
        };
        for _ in 0..WARMUP {
            call().await.expect("echo");
        }
        let mut wall = Vec::with_capacity(n);
        let cpu0 = ProcessTime::now();
        for _ in 0..n {
            let t0 = Instant::now();
            let result = call().await.expect("echo");
            wall.push(t0.elapsed());
            assert_ne!(result.is_error, Some(true));
        }
        let cpu = cpu0.elapsed();
        client.cancel().await.expect("close");
        Run { wall, cpu }
    })
}

fn python_interpreter() -> String {
    std::env::var("LOOM_BENCH_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn python_available() -> bool {
    Command::new(python_interpreter())
        .args(["-c", "import mcp"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The official Python client, through benches/mcp_python/bench_client.py.
fn python(n: usize) -> (String, Run) {
    let (program, args) = server_command();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/mcp_python/bench_client.py");
    let output = Command::new(python_interpreter())
        .arg(script)
        .arg(n.to_string())
        .arg(WARMUP.to_string())
        .arg(program)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run the Python client");
    assert!(output.status.success(), "the Python client failed");
    let report: Value = serde_json::from_slice(&output.stdout).expect("the Python client's JSON");
    let wall =
        report["wall_ns"].as_array().unwrap().iter().map(|v| Duration::from_nanos(v.as_u64().unwrap())).collect();
    let cpu = Duration::from_nanos(report["cpu_ns"].as_u64().unwrap());
    (report["client"].as_str().unwrap_or("python").to_owned(), Run { wall, cpu })
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument that does not name this bench skips it.
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"mcp_stdio_overhead".contains(&a)) {
        return;
    }
    let n = env_usize("LOOM_BENCH_N", 2000);
    let rounds = env_usize("LOOM_BENCH_ROUNDS", 3);
    let with_python = python_available();
    let (program, args) = server_command();
    println!("MCP tool call over stdio: {n} sequential calls x {rounds} rounds (after {WARMUP} warm-up calls each)");
    println!("server: {program} {}", args.join(" "));
    if !with_python {
        println!("python: skipped (no `mcp` module in {}; set LOOM_BENCH_PYTHON)", python_interpreter());
    }

    let mut floor_totals = Totals::default();
    let mut loom_totals = Totals::default();
    let mut rmcp_totals = Totals::default();
    let mut python_totals = Totals::default();
    let mut python_name = String::from("python");
    for _ in 0..rounds {
        floor_totals.add(floor(n));
        loom_totals.add(loom(n));
        rmcp_totals.add(rmcp_direct(n));
        if with_python {
            let (name, run) = python(n);
            python_name = name;
            python_totals.add(run);
        }
    }

    let (floor_mean, ..) = floor_totals.stats();
    println!();
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>12} {:>14}",
        "client", "mean µs", "p50 µs", "p99 µs", "cpu µs/call", "overhead µs"
    );
    let row = |name: &str, totals: &Totals| {
        let (mean, p50, p99, cpu) = totals.stats();
        println!("{name:<22} {mean:>10.1} {p50:>10.1} {p99:>10.1} {cpu:>12.1} {:>14.1}", mean - floor_mean);
        mean - floor_mean
    };
    row("floor (raw JSON-RPC)", &floor_totals);
    let loom_overhead = row("loom (loom-mcp Tool)", &loom_totals);
    row("rmcp 3.11 direct", &rmcp_totals);
    if with_python {
        let python_overhead = row(&python_name, &python_totals);
        println!();
        println!("loom overhead / python overhead = {:.3} (target <= 0.25)", loom_overhead / python_overhead);
    }
}
