//! The framework's own cost of a run: a 2-turn ReAct run with one tool against a scripted model
//! (no network, no sleeping), run to the end with `agent.run` and with `agent.stream`, on a
//! current-thread and on a multi-thread Tokio runtime; plus micro-benchmarks of pieces every run
//! or every event pays for.
//!
//! ```text
//! cargo bench -p loom-agent --bench run -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! See docs/benchmarks.md for results and the targets they are held to.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use futures::StreamExt;
use loom_agent::event::{ModelRequestEvent, ToolResultEvent};
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::output::extract_json;
use loom_agent::prelude::*;
use loom_agent::store::{InMemorySessionStore, RunSummary, SessionKey, SessionRecord, SessionStore};
use loom_agent::tool::FunctionTool;
use loom_agent::{Message, Transcript};
use serde_json::json;
use tokio::runtime::Runtime;

/// Echo the text back.
#[tool(read_only, concurrency_safe)]
async fn echo_tool(text: String) -> Result<String, ToolError> {
    Ok(text)
}

/// A session store that keeps nothing: to tell the loop's own cost from the default store's.
struct NullStore;

#[async_trait::async_trait]
impl SessionStore for NullStore {
    async fn open_session(&self, record: &SessionRecord) -> Result<SessionRecord, loom_agent::Error> {
        Ok(record.clone())
    }
    async fn history(&self, _session_id: SessionKey<'_>) -> Result<Vec<Message>, loom_agent::Error> {
        Ok(Vec::new())
    }
    async fn get_session(&self, _session_id: SessionKey<'_>) -> Result<Option<SessionRecord>, loom_agent::Error> {
        Ok(None)
    }
    async fn append_history(&self, _: SessionKey<'_>, _: &str, _messages: &[Message]) -> Result<(), loom_agent::Error> {
        Ok(())
    }
    async fn save_run(&self, _transcript: Arc<Transcript>) -> Result<(), loom_agent::Error> {
        Ok(())
    }
    async fn get_run(
        &self,
        _session_id: SessionKey<'_>,
        _run_id: &str,
    ) -> Result<Option<Arc<Transcript>>, loom_agent::Error> {
        Ok(None)
    }
    async fn list_runs(&self, _session_id: SessionKey<'_>) -> Result<Vec<RunSummary>, loom_agent::Error> {
        Ok(Vec::new())
    }
    async fn close_session(&self, _session_id: SessionKey<'_>) -> Result<(), loom_agent::Error> {
        Ok(())
    }
}

/// The script: a tool call, then an answer, forever; nothing recorded.
fn model() -> ScriptedModel {
    ScriptedModel::new([ScriptedTurn::tool_call("echo_tool", json!({"text": "hi"})), ScriptedTurn::text("done")])
        .looping()
        .without_recording()
}

/// The agent under test: the script and one trivial tool, with the default (in-memory) session store.
fn agent_with(tool: impl loom_agent::tool::IntoTool) -> Agent {
    Agent::builder().model(model()).tool(tool).build().unwrap()
}

fn macro_agent() -> Agent {
    agent_with(echo_tool)
}

fn null_store_agent() -> Agent {
    Agent::builder().model(model()).tool(echo_tool).session_store(NullStore).build().unwrap()
}

/// The default store, but holding at most 100 sessions: evictions are as frequent per run but
/// small and cache-hot.
fn small_store_agent() -> Agent {
    Agent::builder()
        .model(model())
        .tool(echo_tool)
        .session_store(InMemorySessionStore::with_capacity(100))
        .build()
        .unwrap()
}

fn function_tool_agent() -> Agent {
    let tool = FunctionTool::new(
        "echo_tool",
        "Echo the text back.",
        json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
        |_ctx, args| async move { Ok(ToolOutput::text(args["text"].as_str().unwrap_or_default())) },
    )
    .read_only()
    .concurrency_safe();
    agent_with(tool)
}

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn multi_thread() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

/// Checks once, outside the timing, that a run really is two turns with one tool call.
fn check(rt: &Runtime, agent: &Agent) {
    let result = rt.block_on(agent.run("hello")).unwrap();
    assert_eq!(result.output, "done");
    assert_eq!(result.turns, 2);
    assert!(result.events.iter().any(|e| matches!(&e.kind, EventKind::ToolResult(r) if r.output == "hi")));
}

fn two_turn_run_one_tool(c: &mut Criterion) {
    let mut group = c.benchmark_group("two_turn_run_one_tool");
    for (name, rt) in [("current_thread", current_thread()), ("multi_thread", multi_thread())] {
        let agent = macro_agent();
        check(&rt, &agent);
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async { black_box(agent.run("hello").await.unwrap()) });
        });
    }
    // On a multi-thread runtime, `block_on` drives the bench from a thread outside the runtime, so
    // every run pays two cross-thread wake-ups (to a worker and back). A server calls `agent.run`
    // from a task already on a worker: measured here by running the whole batch inside one task.
    let rt = multi_thread();
    let agent = macro_agent();
    check(&rt, &agent);
    group.bench_function("multi_thread_from_worker", |b| {
        b.iter_custom(|iters| {
            let agent = agent.clone();
            rt.block_on(async move {
                let task = tokio::spawn(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(agent.run("hello").await.unwrap());
                    }
                    start.elapsed()
                });
                task.await.unwrap()
            })
        });
    });
    // Variants on a current-thread runtime: a closure-based tool instead of `#[tool]`; a session
    // store that keeps nothing (the loop alone, without persistence); the default store capped at
    // 100 sessions instead of 10,000.
    for (name, agent) in [
        ("current_thread_function_tool", function_tool_agent()),
        ("current_thread_null_store", null_store_agent()),
        ("current_thread_store_100_sessions", small_store_agent()),
    ] {
        let rt = current_thread();
        check(&rt, &agent);
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async { black_box(agent.run("hello").await.unwrap()) });
        });
    }
    group.finish();
}

fn stream_two_turn_run(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream_two_turn_run");
    for (name, rt) in [("current_thread", current_thread()), ("multi_thread", multi_thread())] {
        let agent = macro_agent();
        check(&rt, &agent);
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let mut stream = agent.stream("hello");
                let mut n = 0usize;
                while let Some(event) = stream.next().await {
                    black_box(&event);
                    n += 1;
                }
                assert!(n >= 9);
                n
            });
        });
    }
    group.finish();
}

fn sample_event(kind: EventKind) -> Event {
    Event {
        run_id: Arc::from("run_01JZ0000000000000000000000"),
        session_id: Arc::from("sess_01JZ00000000000000000000"),
        seq: 3,
        at: Utc::now(),
        kind,
    }
}

fn micro(c: &mut Criterion) {
    let mut group = c.benchmark_group("micro");

    // Pieces of `emit` (which is crate-private): the timestamp and the event value itself.
    group.bench_function("utc_now", |b| b.iter(|| black_box(Utc::now())));
    let small = sample_event(EventKind::ModelRequest(ModelRequestEvent {
        turn: 1,
        model: "scripted".into(),
        messages: 3,
        tools: 1,
    }));
    let result = sample_event(EventKind::ToolResult(ToolResultEvent {
        turn: 1,
        call_id: "call_1_0".into(),
        name: "echo_tool".into(),
        output: "hi".into(),
        is_error: false,
        error_kind: None,
        truncated: false,
        duration_ms: 0,
    }));
    group.bench_function("event_clone_model_request", |b| b.iter(|| black_box(small.clone())));
    group
        .bench_function("event_to_json_tool_result", |b| b.iter(|| black_box(serde_json::to_string(&result).unwrap())));
    group.bench_function("new_id", |b| b.iter(|| black_box(loom_agent::new_id("run"))));

    // Structured output extraction.
    let plain = r#"{"city": "Tokyo", "temperature_c": 22.5, "conditions": "sunny"}"#;
    let fenced = "Here is the weather:\n\n```json\n{\"city\": \"Tokyo\", \"temperature_c\": 22.5, \"conditions\": \"sunny\"}\n```\nAnything else?";
    let prose = "The answer is {\"city\": \"Tokyo\", \"temperature_c\": 22.5, \"conditions\": \"sunny\"} as asked.";
    assert!(extract_json(plain).is_some() && extract_json(fenced).is_some() && extract_json(prose).is_some());
    group.bench_function("extract_json_plain", |b| b.iter(|| black_box(extract_json(black_box(plain)))));
    group.bench_function("extract_json_fenced", |b| b.iter(|| black_box(extract_json(black_box(fenced)))));
    group.bench_function("extract_json_prose", |b| b.iter(|| black_box(extract_json(black_box(prose)))));

    // Building an agent (compiles tool schemas); not per run, but a cost users see.
    group.bench_function("agent_build_one_tool", |b| b.iter(|| black_box(macro_agent())));
    group.finish();
}

criterion_group!(benches, two_turn_run_one_tool, stream_two_turn_run, micro);
criterion_main!(benches);
