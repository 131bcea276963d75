//! Memory per in-flight run: 10,000 runs, each in its own session, all idle inside their model call.
//!
//! ```text
//! cargo bench -p loom-examples --bench memory
//! LOOM_MEMORY_RUNS=50000 cargo bench -p loom-examples --bench memory
//! ```
//!
//! A counting global allocator tracks the bytes the program has asked for and not freed. For each
//! scenario, a fresh process (this binary, re-run with `LOOM_MEMORY_SCENARIO` set):
//!
//! 1. builds one agent on a current-thread Tokio runtime and warms it up with one run;
//! 2. starts N runs with `agent.start(RunRequest::new(..).session("user-i"))` (N distinct sessions,
//!    so none waits behind another) and measures the heap before any of them has been polled;
//! 3. lets them run until every one is inside `Model::stream` (the model counts its calls; each
//!    run has then emitted `model.request`, which is checked afterwards), and measures again:
//!    (heap now - baseline) / N is the heap cost of one idle in-flight run, everything included
//!    (run task, session, event log, seeded messages, the model call's future);
//! 4. cancels every run, waits for all to end, drops the handles, and measures what is still held;
//! 5. drops the agent and measures again (this should be back at the baseline).
//!
//! Scenarios: `notify` (a model that awaits a `tokio::sync::Notify` that never fires: the pure
//! framework cost), `sleep` (a `FnModel` answering a `ScriptedTurn` with a one-hour delay, which
//! adds a Tokio timer per run), and `notify-anonymous` (as `notify`, but the runs are started
//! without a session id, as `agent.run("…")` does).
//!
//! Lives in `loom-examples`, not in `loom-agent`, because a `#[global_allocator]` needs an
//! `unsafe impl`, and loom-agent's targets inherit the workspace's `forbid(unsafe_code)`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use loom_agent::model::{FnModel, LanguageModel, ModelRequest, ModelStream, ScriptedTurn};
use loom_agent::prelude::*;
use loom_agent::{ModelError, RunRequest};
use tokio::sync::Notify;

// ---------------------------------------------------------------------------------------------
// Counting allocator

struct Counting;

static BYTES: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            BYTES.fetch_add(layout.size() as isize, Relaxed);
            BLOCKS.fetch_add(1, Relaxed);
            ALLOCATIONS.fetch_add(1, Relaxed);
            ALLOCATED.fetch_add(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            BYTES.fetch_add(layout.size() as isize, Relaxed);
            BLOCKS.fetch_add(1, Relaxed);
            ALLOCATIONS.fetch_add(1, Relaxed);
            ALLOCATED.fetch_add(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) };
        BYTES.fetch_sub(layout.size() as isize, Relaxed);
        BLOCKS.fetch_sub(1, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            BYTES.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
            ALLOCATIONS.fetch_add(1, Relaxed);
            ALLOCATED.fetch_add(new_size.saturating_sub(layout.size()), Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap bytes and blocks currently allocated, and allocator calls and bytes allocated so far.
#[derive(Clone, Copy)]
struct Heap {
    bytes: isize,
    blocks: isize,
    calls: usize,
    allocated: usize,
}

fn heap() -> Heap {
    Heap {
        bytes: BYTES.load(Relaxed),
        blocks: BLOCKS.load(Relaxed),
        calls: ALLOCATIONS.load(Relaxed),
        allocated: ALLOCATED.load(Relaxed),
    }
}

/// VmRSS from /proc/self/status, in KiB.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_trim() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: glibc's malloc_trim has no preconditions.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_trim() {}

// ---------------------------------------------------------------------------------------------
// Models that never answer

/// Awaits a `Notify` that is never notified, so the run sits idle inside its model call.
struct Blocked {
    calls: Arc<AtomicUsize>,
    release: Arc<Notify>,
}

#[async_trait::async_trait]
impl LanguageModel for Blocked {
    fn name(&self) -> &str {
        "blocked"
    }

    async fn stream(&self, _request: &ModelRequest<'_>) -> Result<ModelStream, ModelError> {
        self.calls.fetch_add(1, Relaxed);
        self.release.notified().await;
        Err(ModelError::Unavailable("released".into()))
    }
}

fn agent_for(scenario: &str, calls: Arc<AtomicUsize>) -> Agent {
    let builder = Agent::builder().instructions("You are a helpful assistant.");
    let builder = match scenario {
        "notify" => builder.model(Blocked { calls, release: Arc::new(Notify::new()) }),
        "sleep" => builder.model(FnModel::new("sleepy", move |_request| {
            calls.fetch_add(1, Relaxed);
            ScriptedTurn::text("too late").with_delay(Duration::from_secs(3600))
        })),
        other => panic!("unknown scenario {other}"),
    };
    builder.build().unwrap()
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let n: usize = std::env::var("LOOM_MEMORY_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    match std::env::var("LOOM_MEMORY_SCENARIO") {
        Ok(scenario) if scenario == "complete" => complete_runs(n),
        Ok(scenario) => measure(&scenario, n),
        Err(_) => {
            // One fresh process per scenario, so RSS numbers do not carry over.
            let exe = std::env::current_exe().unwrap();
            for scenario in ["notify", "sleep", "notify-anonymous", "complete"] {
                let status = Command::new(&exe).env("LOOM_MEMORY_SCENARIO", scenario).status().unwrap();
                assert!(status.success(), "scenario {scenario} failed");
            }
        }
    }
}

fn measure(scenario: &str, n: usize) {
    // `…-anonymous`: runs without a session id (each gets a fresh anonymous session).
    let anonymous = scenario.ends_with("-anonymous");
    let model = scenario.trim_end_matches("-anonymous").to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let calls = Arc::new(AtomicUsize::new(0));
        let agent = agent_for(&model, calls.clone());

        // Warm up: one run to the model call and back, so lazily built state is not counted.
        let warm = agent.start(RunRequest::new("hello").session("warm-up"));
        while calls.load(Relaxed) < 1 {
            tokio::task::yield_now().await;
        }
        warm.cancel();
        let _ = warm.result().await;
        drop(warm);
        calls.store(0, Relaxed);

        let mut runs: Vec<Run> = Vec::with_capacity(n);
        let sessions: Vec<String> = (0..n).map(|i| format!("user-{i}")).collect();
        let base = heap();
        let rss_base = rss_kib();

        let t = Instant::now();
        for id in sessions {
            let request = RunRequest::new("What's the weather in Tokyo?");
            runs.push(agent.start(if anonymous { request } else { request.session(id) }));
        }
        let started = heap();
        let start_time = t.elapsed();

        while calls.load(Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let in_flight = heap();
        let rss_in_flight = rss_kib();
        let reach_time = t.elapsed();

        // Check (after measuring: this allocates) that every run is running and has emitted
        // model.request as its last event.
        let all_waiting = runs.iter().all(|r| {
            r.state() == RunState::Running
                && r.transcript().events.last().is_some_and(|e| matches!(e.kind, EventKind::ModelRequest(_)))
        });
        assert!(all_waiting, "not every run is idle in its model call");

        let t = Instant::now();
        for r in &runs {
            r.cancel();
        }
        let mut cancelled = 0usize;
        for r in &runs {
            if r.result().await.state == RunState::Cancelled {
                cancelled += 1;
            }
        }
        let cancel_time = t.elapsed();
        drop(runs);
        tokio::task::yield_now().await;
        let after_cancel = heap();
        let rss_after_cancel = rss_kib();

        drop(agent);
        tokio::task::yield_now().await;
        let after_drop = heap();
        let rss_after_drop = rss_kib();
        malloc_trim();
        let rss_after_trim = rss_kib();

        let per = |h: Heap| (h.bytes - base.bytes) as f64 / n as f64;
        let blocks = |h: Heap| (h.blocks - base.blocks) as f64 / n as f64;
        let kib = |b: isize| b as f64 / 1024.0;
        let rss = |r: Option<u64>| r.map(|v| format!("{:.1} MiB", v as f64 / 1024.0)).unwrap_or_else(|| "n/a".into());
        let rss_delta = |r: Option<u64>| match (r, rss_base) {
            (Some(a), Some(b)) => format!("{:+.1} MiB", (a as f64 - b as f64) / 1024.0),
            _ => "n/a".into(),
        };

        let sessions = if anonymous { "anonymous sessions" } else { "named sessions `user-i`" };
        println!("== scenario `{scenario}`: {n} runs in flight, one session each ({sessions}), current-thread runtime ==");
        println!("baseline heap        {:>10.1} KiB   RSS {}", kib(base.bytes), rss(rss_base));
        println!(
            "started, not polled  {:>+10.1} KiB   {:>7.0} B/run  {:>5.1} blocks/run   ({:.1} ms to start all)",
            kib(started.bytes - base.bytes),
            per(started),
            blocks(started),
            start_time.as_secs_f64() * 1e3
        );
        println!(
            "idle in model call   {:>+10.1} KiB   {:>7.0} B/run  {:>5.1} blocks/run   RSS {} ({})   ({:.1} ms until all reached the model)",
            kib(in_flight.bytes - base.bytes),
            per(in_flight),
            blocks(in_flight),
            rss(rss_in_flight),
            rss_delta(rss_in_flight),
            reach_time.as_secs_f64() * 1e3
        );
        println!(
            "  allocator calls per run from start to the model call: {:.1}",
            (in_flight.calls - base.calls) as f64 / n as f64
        );
        println!(
            "cancelled {cancelled}/{n}       {:>+10.1} KiB   {:>7.0} B/run still held (session store: transcripts, history; session registry)   RSS {}   ({:.1} ms)",
            kib(after_cancel.bytes - base.bytes),
            per(after_cancel),
            rss(rss_after_cancel),
            cancel_time.as_secs_f64() * 1e3
        );
        println!(
            "agent dropped        {:>+10.1} KiB   {:>7.0} B/run   RSS {} ({}), after malloc_trim {} ({})",
            kib(after_drop.bytes - base.bytes),
            per(after_drop),
            rss(rss_after_drop),
            rss_delta(rss_after_drop),
            rss(rss_after_trim),
            rss_delta(rss_after_trim)
        );
        let target = 10.0 * 1024.0;
        println!(
            "target: < 10 KiB heap per idle in-flight run -> {:.2} KiB: {}",
            per(in_flight) / 1024.0,
            if per(in_flight) < target { "met" } else { "NOT met" }
        );
        println!();
    });
}

/// Echo the text back.
#[tool(read_only, concurrency_safe)]
async fn echo_tool(text: String) -> Result<String, ToolError> {
    Ok(text)
}

/// Allocations of complete 2-turn runs with one tool (the `run` criterion benchmark's workload),
/// before and after the default session store is full (10,000 sessions).
fn complete_runs(n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let model = loom_agent::model::ScriptedModel::new([
            ScriptedTurn::tool_call("echo_tool", serde_json::json!({"text": "hi"})),
            ScriptedTurn::text("done"),
        ])
        .looping()
        .without_recording();
        let agent = Agent::builder().model(model).tool(echo_tool).build().unwrap();
        agent.run("hello").await.unwrap();

        println!("== complete 2-turn runs with one tool (agent.run), current-thread runtime ==");
        let batch = 1_000.min(n);
        let mut done = 1usize;
        let report = |label: &str, before: Heap, after: Heap, runs: usize, elapsed: Duration| {
            println!(
                "{label:<34} {:>6.1} allocator calls/run  {:>7.0} B allocated/run  {:>+6.0} B/run kept  {:>5.1} µs/run",
                (after.calls - before.calls) as f64 / runs as f64,
                (after.allocated - before.allocated) as f64 / runs as f64,
                (after.bytes - before.bytes) as f64 / runs as f64,
                elapsed.as_secs_f64() * 1e6 / runs as f64
            );
        };
        let before = heap();
        let t = Instant::now();
        for _ in 0..batch {
            agent.run("hello").await.unwrap();
        }
        report("store filling (runs 2..1001)", before, heap(), batch, t.elapsed());
        done += batch;
        // Fill the store (10,000 sessions) so the next runs pay for its eviction.
        while done < 12_000 {
            agent.run("hello").await.unwrap();
            done += 1;
        }
        let before = heap();
        let t = Instant::now();
        for _ in 0..n {
            agent.run("hello").await.unwrap();
        }
        report(&format!("store full (runs 12001..{})", 12_000 + n), before, heap(), n, t.elapsed());
        println!("(\"kept\": what the session store retains per run: each anonymous run's transcript and history)");
        println!();
    });
}
