//! The framework's own cost of multi-agent runs against scripted models (no network, no
//! sleeping), next to a single 2-turn run measured in the same bench:
//!
//! - `single_two_turn_run`: one agent, a tool call then an answer (the baseline);
//! - `supervisor_three_parallel_workers`: a coordinator (2 turns: three worker calls in one turn,
//!   then the answer) and three workers (1 turn each), each worker a child run; 4 agents involved;
//! - `workflow_ten_nodes`: ten function nodes in a chain, each a journal step (no journal here);
//! - `workflow_agent_nodes`: three agent nodes in a chain (three child runs); 4 runs involved.
//!
//! ```text
//! cargo bench -p loom-agent --bench team -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! The target: at most 5× the single run's cost per agent involved. Heap per in-flight child run
//! is measured by `cargo bench -p loom-examples --bench team_memory` (it needs a counting global
//! allocator, which loom-agent's targets cannot have).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use loom_agent::team::Supervisor;
use loom_agent::workflow::{END, Workflow};
use serde_json::json;
use tokio::runtime::Runtime;

/// Echo the text back.
#[tool(read_only, concurrency_safe)]
async fn echo_tool(text: String) -> Result<String, ToolError> {
    Ok(text)
}

fn rt() -> Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn single() -> Agent {
    let model =
        ScriptedModel::new([ScriptedTurn::tool_call("echo_tool", json!({"text": "hi"})), ScriptedTurn::text("done")])
            .looping()
            .without_recording();
    Agent::builder().model(model).tool(echo_tool).build().unwrap()
}

fn supervisor() -> Supervisor {
    let coordinator = ScriptedModel::new([
        ScriptedTurn::tool_call("w1", json!({"input": "a"}))
            .with_tool_call("w2", json!({"input": "b"}))
            .with_tool_call("w3", json!({"input": "c"})),
        ScriptedTurn::text("combined"),
    ])
    .looping()
    .without_recording();
    let worker = |name: &str| {
        let model = ScriptedModel::new([ScriptedTurn::text(format!("{name} done"))]).looping().without_recording();
        Agent::builder().name(name).model(model).build().unwrap()
    };
    Supervisor::builder(Agent::builder().name("lead").model(coordinator))
        .worker("w1", "One.", worker("w1"))
        .worker("w2", "Two.", worker("w2"))
        .worker("w3", "Three.", worker("w3"))
        .build()
        .unwrap()
}

fn ten_nodes() -> loom_agent::workflow::WorkflowAgent<u64> {
    let mut wf = Workflow::<u64>::new("ten").start("n0");
    for i in 0..10 {
        wf = wf.node(format!("n{i}"), |n: u64| async move { Ok(n + 1) });
        let next = if i == 9 { END.to_string() } else { format!("n{}", i + 1) };
        wf = wf.edge(format!("n{i}"), next);
    }
    wf.into_agent(Agent::builder()).unwrap()
}

fn agent_nodes() -> loom_agent::workflow::WorkflowAgent<u64> {
    let mut wf = Workflow::<u64>::new("agents").start("a0");
    for i in 0..3 {
        let model = ScriptedModel::new([ScriptedTurn::text("ok")]).looping().without_recording();
        let agent = Agent::builder().name(format!("a{i}")).model(model).build().unwrap();
        wf = wf.agent_node(format!("a{i}"), agent, |n: &u64| n.to_string(), |n, _| n + 1);
        let next = if i == 2 { END.to_string() } else { format!("a{}", i + 1) };
        wf = wf.edge(format!("a{i}"), next);
    }
    wf.into_agent(Agent::builder()).unwrap()
}

fn team(c: &mut Criterion) {
    let rt = rt();
    let mut group = c.benchmark_group("team");
    let agent = single();
    assert_eq!(rt.block_on(agent.run("hello")).unwrap().output, "done");
    group.bench_function("single_two_turn_run", |b| {
        b.to_async(&rt).iter(|| async { black_box(agent.run("hello").await.unwrap()) });
    });
    let sup = supervisor();
    let outcome = rt.block_on(sup.run("go")).unwrap();
    assert_eq!(outcome.result.output, "combined");
    assert_eq!(outcome.workers.len(), 3);
    group.bench_function("supervisor_three_parallel_workers", |b| {
        b.to_async(&rt).iter(|| async { black_box(sup.run("go").await.unwrap()) });
    });
    let wf = ten_nodes();
    assert_eq!(rt.block_on(wf.run(0)).unwrap().0, 10);
    group.bench_function("workflow_ten_nodes", |b| {
        b.to_async(&rt).iter(|| async { black_box(wf.run(0).await.unwrap()) });
    });
    let wf = agent_nodes();
    assert_eq!(rt.block_on(wf.run(0)).unwrap().0, 3);
    group.bench_function("workflow_agent_nodes", |b| {
        b.to_async(&rt).iter(|| async { black_box(wf.run(0).await.unwrap()) });
    });
    group.finish();
}

criterion_group!(benches, team);
criterion_main!(benches);
