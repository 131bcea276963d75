//! Heap per in-flight child run: one parent run whose model calls an agent tool N times in one
//! turn (the calls are concurrency-safe, so all N child runs are in flight at once), each child
//! idle inside its model call.
//!
//! ```text
//! cargo bench -p loom-examples --bench team_memory
//! LOOM_CHILD_RUNS=5000 cargo bench -p loom-examples --bench team_memory
//! ```
//!
//! A counting global allocator tracks the heap. The bench warms up (one parent with one child,
//! cancelled), measures the heap, starts the parent, waits until every child is inside its model
//! call, and measures again: (heap now - before) / N is the heap cost of one in-flight child run,
//! everything included (the child's run task, session, log, seeded messages, model call future;
//! its tool call in the parent: the call in the model's answer, its `tool.call` and
//! `child.started` events, the parent's tool-call future), with the parent's own cost spread over
//! the N children. Then it cancels the parent and checks every child ended cancelled.
//!
//! Lives in `loom-examples` for the same reason as `memory.rs`: a `#[global_allocator]` needs an
//! `unsafe impl`, which loom-agent's targets forbid.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use loom_agent::model::{FnModel, LanguageModel, ModelRequest, ModelStream, ScriptedTurn};
use loom_agent::prelude::*;
use loom_agent::{ModelError, RunRequest};
use serde_json::json;
use tokio::sync::Notify;

// ---------------------------------------------------------------------------------------------
// Counting allocator

struct Counting;

static BYTES: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

/// Live blocks by size (8-byte classes up to 4 KiB, then one class): with `LOOM_CHILD_SIZES=1` the
/// bench prints which block sizes make up a child's heap.
const CLASSES: usize = 513;
static LIVE_BY_SIZE: [AtomicIsize; CLASSES] = [const { AtomicIsize::new(0) }; CLASSES];

/// Bytes live in blocks above 4 KiB (the last class).
static BIG_BYTES: AtomicIsize = AtomicIsize::new(0);

fn class(size: usize) -> usize {
    size.div_ceil(8).min(CLASSES - 1)
}

// SAFETY: every call is forwarded to `System` unchanged; the counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            BYTES.fetch_add(layout.size() as isize, Relaxed);
            BLOCKS.fetch_add(1, Relaxed);
            LIVE_BY_SIZE[class(layout.size())].fetch_add(1, Relaxed);
            if class(layout.size()) == CLASSES - 1 {
                BIG_BYTES.fetch_add(layout.size() as isize, Relaxed);
            }
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
            LIVE_BY_SIZE[class(layout.size())].fetch_add(1, Relaxed);
            if class(layout.size()) == CLASSES - 1 {
                BIG_BYTES.fetch_add(layout.size() as isize, Relaxed);
            }
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
        LIVE_BY_SIZE[class(layout.size())].fetch_sub(1, Relaxed);
        if class(layout.size()) == CLASSES - 1 {
            BIG_BYTES.fetch_sub(layout.size() as isize, Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            BYTES.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
            LIVE_BY_SIZE[class(layout.size())].fetch_sub(1, Relaxed);
            if class(layout.size()) == CLASSES - 1 {
                BIG_BYTES.fetch_sub(layout.size() as isize, Relaxed);
            }
            LIVE_BY_SIZE[class(new_size)].fetch_add(1, Relaxed);
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

/// Live blocks per size class now, and the bytes in blocks above 4 KiB last.
fn sizes() -> Vec<isize> {
    let mut v: Vec<isize> = LIVE_BY_SIZE.iter().map(|c| c.load(Relaxed)).collect();
    v.push(BIG_BYTES.load(Relaxed));
    v
}

fn heap() -> Heap {
    Heap {
        bytes: BYTES.load(Relaxed),
        blocks: BLOCKS.load(Relaxed),
        calls: ALLOCATIONS.load(Relaxed),
        allocated: ALLOCATED.load(Relaxed),
    }
}

// ---------------------------------------------------------------------------------------------

/// Awaits a `Notify` that is never notified, so the child sits idle inside its model call.
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

/// A parent whose model calls the child tool `n` times in its first turn.
fn parent(n: Arc<AtomicUsize>, child: &Agent) -> Agent {
    let model = FnModel::new("parent", move |_req| {
        let mut turn = ScriptedTurn::text("");
        for i in 0..n.load(Relaxed) {
            turn = turn.with_tool_call("child", json!({"input": format!("task {i}")}));
        }
        turn
    });
    Agent::builder()
        .instructions("You delegate.")
        .model(model)
        .tool(child.as_tool("child", "Does one task."))
        .tool_timeout(Duration::from_secs(3600))
        .build()
        .unwrap()
}

fn main() {
    let n: usize = std::env::var("LOOM_CHILD_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let calls = Arc::new(AtomicUsize::new(0));
        let child = Agent::builder()
            .name("child")
            .instructions("You do one task.")
            .model(Blocked { calls: calls.clone(), release: Arc::new(Notify::new()) })
            .build()
            .unwrap();
        let wanted = Arc::new(AtomicUsize::new(1));
        let agent = parent(wanted.clone(), &child);

        // Warm up: one parent with one child in flight, then cancelled.
        let warm = agent.start(RunRequest::new("warm up"));
        while calls.load(Relaxed) < 1 {
            tokio::task::yield_now().await;
        }
        warm.cancel();
        let _ = warm.result().await;
        drop(warm);
        calls.store(0, Relaxed);
        wanted.store(n, Relaxed);

        let sizes_before = sizes();
        let before = heap();
        let t = Instant::now();
        let run = agent.start(RunRequest::new("Do all the tasks."));
        while calls.load(Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let in_flight = heap();
        let sizes_in_flight = sizes();
        let reach = t.elapsed();
        let per_child = (in_flight.bytes - before.bytes) as f64 / n as f64;
        let blocks = (in_flight.blocks - before.blocks) as f64 / n as f64;
        let calls_per_child = (in_flight.calls - before.calls) as f64 / n as f64;
        let allocated_per_child = (in_flight.allocated - before.allocated) as f64 / n as f64;

        let t = Instant::now();
        run.cancel();
        let result = run.result().await;
        let cancel = t.elapsed();
        assert_eq!(result.state, RunState::Cancelled);
        let ended = result.events.iter().filter(|e| matches!(&e.kind, EventKind::ChildFinished(f) if f.state == RunState::Cancelled)).count();
        assert_eq!(ended, n, "every child ended cancelled with its parent");
        drop(result);
        drop(run);
        tokio::task::yield_now().await;
        let after = heap();
        // Dropping both agents frees their session stores: what is still held then is leaked.
        drop(agent);
        drop(child);
        tokio::task::yield_now().await;
        let dropped = heap();

        println!("in-flight child runs: {n} (one parent, all children idle in their model call)");
        println!("  heap per in-flight child run: {:.0} B ({:.2} KiB), {blocks:.1} blocks", per_child, per_child / 1024.0);
        println!(
            "  allocator calls per child up to that point: {calls_per_child:.1} ({allocated_per_child:.0} B allocated in all)"
        );
        println!("  time to reach {n} children in flight: {reach:?}; cancel all: {cancel:?}");
        println!(
            "  heap after cancel and dropping the run, vs before: {:+} B ({:+.0} B per child)",
            after.bytes - before.bytes,
            (after.bytes - before.bytes) as f64 / n as f64
        );
        println!(
            "  heap after also dropping both agents, vs before: {:+} B ({:+.0} B per child)",
            dropped.bytes - before.bytes,
            (dropped.bytes - before.bytes) as f64 / n as f64
        );
        if std::env::var_os("LOOM_CHILD_SIZES").is_some() {
            // Blocks per child by size class, largest share of bytes first.
            let mut rows: Vec<(usize, f64)> = (0..CLASSES)
                .map(|c| (c, (sizes_in_flight[c] - sizes_before[c]) as f64 / n as f64))
                .filter(|(_, per)| per.abs() >= 0.05)
                .collect();
            rows.sort_by(|a, b| ((b.1 * b.0 as f64).abs()).total_cmp(&(a.1 * a.0 as f64).abs()));
            let big = (sizes_in_flight[CLASSES] - sizes_before[CLASSES]) as f64 / n as f64;
            println!("  live blocks per child by size class (up to N bytes; > 4096: {big:.0} B per child):");
            for (c, per) in rows.iter().take(40) {
                let upto = if *c == CLASSES - 1 { "> 4096".to_string() } else { format!("{:>6}", c * 8) };
                println!("    {upto} B: {per:6.2} blocks ({:7.0} B)", per * (*c * 8) as f64);
            }
        }
    });
}
