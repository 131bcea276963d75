//! The added cost of a durable journal per 2-turn run with one tool (ScriptedModel, no network):
//! no journal, the in-memory journal, SQLite at synchronous NORMAL and FULL, and PostgreSQL (when
//! `LOOM_TEST_POSTGRES_URL` is set and the `postgres` feature is on). With a URL journal the same
//! database is also the session store, as `.journal("sqlite:…")` sets it up for users.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use loom_agent::Agent;
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::tool::{FunctionTool, ToolOutput};
use serde_json::json;

fn model() -> ScriptedModel {
    ScriptedModel::new([ScriptedTurn::tool_call("echo_tool", json!({"text": "hi"})), ScriptedTurn::text("done")])
        .looping()
        .without_recording()
}

fn tool() -> FunctionTool {
    FunctionTool::new(
        "echo_tool",
        "Echo the text back.",
        json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
        |_ctx, args| async move { Ok(ToolOutput::text(args["text"].as_str().unwrap_or_default())) },
    )
}

fn agent(journal: Option<&str>) -> Agent {
    let builder = Agent::builder().model(model()).tool(tool());
    match journal {
        Some(url) => builder.journal(url).build().unwrap(),
        None => builder.build().unwrap(),
    }
}

fn journal_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("loom-bench-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cases: Vec<(&str, Option<String>)> = vec![
        ("none", None),
        ("memory", Some("memory".into())),
        ("sqlite_normal", Some(format!("sqlite:{}", dir.join("normal.db").display()))),
        ("sqlite_full", Some(format!("sqlite:{}?synchronous=full", dir.join("full.db").display()))),
        ("sqlite_off", Some(format!("sqlite:{}?synchronous=off", dir.join("off.db").display()))),
    ];
    if cfg!(feature = "postgres")
        && let Ok(url) = std::env::var("LOOM_TEST_POSTGRES_URL")
    {
        cases.push(("postgres", Some(url)));
    }
    let mut group = c.benchmark_group("journal_two_turn_run_one_tool");
    for (name, url) in cases {
        let agent = agent(url.as_deref());
        let result = rt.block_on(agent.run("hello")).unwrap();
        assert_eq!(result.turns, 2);
        if url.is_some() {
            let stored = rt.block_on(agent.journal().unwrap().load(&result.run_id)).unwrap().unwrap();
            assert_eq!(stored.entries.len(), 4, "{name}: two model results, a tool intent and its result");
            assert!(stored.finished);
        }
        // Runs are driven from a task on the runtime, as a server would call them.
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let agent = agent.clone();
                async move {
                    tokio::spawn(async move {
                        let start = std::time::Instant::now();
                        for _ in 0..iters {
                            black_box(agent.run("hello").await.unwrap());
                        }
                        start.elapsed()
                    })
                    .await
                    .unwrap()
                }
            });
        });
    }
    group.finish();
    // The store's own costs: one round trip to its thread (a read), one write transaction.
    let store = loom_agent::store::SqliteStore::open(dir.join("ops.db")).unwrap();
    let lease = loom_agent::store::Lease::new("bench", std::time::Duration::from_secs(60));
    let agent = Agent::builder().model(model()).tool(tool()).journal(store.clone()).build().unwrap();
    let run_id = rt.block_on(agent.run("hello")).unwrap().run_id;
    use loom_agent::store::Journal;
    let mut group = c.benchmark_group("sqlite_store");
    group.bench_function("read_round_trip", |b| {
        b.to_async(&rt).iter(|| async { black_box(store.load("no-such-run").await.unwrap()) });
    });
    group.bench_function("write_transaction", |b| {
        b.to_async(&rt).iter(|| async { black_box(store.renew(&run_id, &lease).await.is_err()) });
    });
    group.finish();
    // `LOOM_BENCH_KEEP=1` keeps the databases, to count what the runs wrote (docs/benchmarks.md).
    if std::env::var_os("LOOM_BENCH_KEEP").is_some() {
        eprintln!("kept {}", dir.display());
    } else {
        std::fs::remove_dir_all(&dir).ok();
    }
}

criterion_group!(benches, journal_overhead);
criterion_main!(benches);
