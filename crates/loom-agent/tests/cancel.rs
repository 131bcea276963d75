//! Cancellation: during a model call, during a tool, while queued, by dropping a stream, and by
//! dropping the future of `agent.run` / `session.run`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use loom_agent::model::ScriptedTurn;
use loom_agent::tool::{FunctionTool, ToolOutput};
use loom_agent::{Agent, EventKind, Run, RunErrorKind, RunRequest, RunState, SessionConfig};
use serde_json::json;
use tokio::sync::Notify;

fn gated_agent(gates: &[&str]) -> (Arc<GateModel>, EventOrder, Agent) {
    let model = GateModel::new();
    for g in gates {
        model.gate(g);
    }
    let (model, shared) = share(model);
    let order = EventOrder::default();
    let agent = Agent::builder().model(shared).hook(order.clone()).build().unwrap();
    (model, order, agent)
}

/// Polls `fut` until `ready()` holds; fails if `fut` finishes first.
async fn drive_until<F: std::future::Future + Unpin>(fut: &mut F, ready: impl Fn() -> bool) {
    within(10, "driving the future", async {
        while !ready() {
            tokio::select! {
                biased;
                _ = &mut *fut => panic!("the future finished early"),
                _ = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
        }
    })
    .await;
}

fn first_run_id(order: &EventOrder) -> String {
    order.0.snapshot()[0].split(' ').next().unwrap().to_string()
}

#[tokio::test]
async fn cancel_during_a_model_call_ends_cancelled_at_once() {
    let agent = Agent::builder().model(slow_model(Duration::from_secs(3600))).build().unwrap();
    let run = agent.start("slow");
    wait_for(&run, "model.request").await;
    assert_eq!(run.state(), RunState::Running);
    run.cancel();
    let result = within(5, "cancelled run", run.result()).await;
    assert_eq!(result.state, RunState::Cancelled);
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, RunErrorKind::Cancelled);
    assert_eq!(error.reason, None);
    assert_eq!(types(&result.events), ["run.started", "model.request", "run.cancelled"]);
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Cancelled);
    assert_eq!(run.state(), RunState::Cancelled);
    // agent.run-style waiting reports it as Error::Run.
    assert_eq!(failed_result(run.wait().await.unwrap_err()).state, RunState::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_a_tool_fires_the_tools_cancellation_token() {
    let started = Arc::new(Notify::new());
    let observed = Arc::new(Notify::new());
    let saw_cancel_on_drop = Arc::new(AtomicBool::new(false));
    let (s, o, d) = (started.clone(), observed.clone(), saw_cancel_on_drop.clone());
    let wait = FunctionTool::new("wait", "Waits to be cancelled.", json!({"type": "object"}), move |ctx, _a| {
        let (s, o, d) = (s.clone(), o.clone(), d.clone());
        async move {
            struct Guard(loom_agent::ToolContext, Arc<AtomicBool>);
            impl Drop for Guard {
                fn drop(&mut self) {
                    self.1.store(self.0.is_cancelled(), Ordering::SeqCst);
                }
            }
            let token = ctx.cancellation().clone();
            tokio::spawn(async move {
                token.cancelled().await;
                o.notify_one();
            });
            let _guard = Guard(ctx.clone(), d);
            s.notify_one();
            ctx.cancellation().cancelled().await;
            Ok(ToolOutput::text("stopped"))
        }
    });
    let (_, shared) = scripted([ScriptedTurn::tool_call("wait", json!({})), ScriptedTurn::text("never")]);
    let agent = Agent::builder().model(shared).tool(wait).build().unwrap();
    let run = agent.start("go");
    within(5, "tool start", started.notified()).await;
    run.cancel();
    within(5, "the tool's token fires", observed.notified()).await;
    let result = within(5, "cancelled run", run.result()).await;
    assert_eq!(result.state, RunState::Cancelled);
    assert_eq!(result.error.unwrap().kind, RunErrorKind::Cancelled);
    assert!(saw_cancel_on_drop.load(Ordering::SeqCst), "the tool was dropped after its token fired");
    // Every tool.call gets exactly one tool.result: the call in flight is reported cancelled, and
    // there is no second model call.
    let kinds: Vec<_> = tool_results(&result.events).iter().map(|r| r.error_kind).collect();
    assert_eq!(kinds, [Some(loom_agent::tool::ToolErrorKind::Cancelled)]);
    let names = types(&result.events);
    assert_eq!(names[..4], ["run.started", "model.request", "model.response", "tool.call"]);
    assert_eq!(names.iter().filter(|t| **t == "model.request").count(), 1);
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Cancelled);
}

#[tokio::test]
async fn a_run_cancelled_while_its_tools_run_makes_no_further_model_call() {
    // The tool cancels its own run and returns at once, in the same poll of the run's task: the run
    // must still end cancelled instead of going on to the next model call.
    let slot: Arc<Mutex<Option<Run>>> = Arc::new(Mutex::new(None));
    let s = slot.clone();
    let stop = FunctionTool::new("stop", "Cancels the run.", json!({"type": "object"}), move |ctx, _a| {
        let run = s.lock().unwrap().clone();
        async move {
            run.unwrap().cancel();
            assert!(ctx.is_cancelled(), "the call's token follows the run's");
            Ok(ToolOutput::text("asked to stop"))
        }
    });
    let (model, shared) = scripted([ScriptedTurn::tool_call("stop", json!({})), ScriptedTurn::text("never")]);
    let agent = Agent::builder().model(shared).tool(stop).build().unwrap();
    let run = agent.start("go");
    *slot.lock().unwrap() = Some(run.clone());
    let result = within(5, "run", run.result()).await;
    assert_eq!(result.state, RunState::Cancelled, "{:?}", types(&result.events));
    assert_eq!(result.error.unwrap().kind, RunErrorKind::Cancelled);
    assert_eq!(model.requests().len(), 1, "no model call after cancel()");
    let results = tool_results(&result.events);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].error_kind, Some(loom_agent::tool::ToolErrorKind::Cancelled));
    assert_eq!(results[0].output, "Error: the run was cancelled");
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Cancelled);
}

#[tokio::test]
async fn a_queued_run_cancelled_before_it_starts_never_runs_and_keeps_its_place() {
    let (model, _, agent) = gated_agent(&["A"]);
    let session = agent.session(SessionConfig::new("q"));
    let a = session.start("A");
    let b = session.start("B");
    let c = session.start("C");
    wait_for(&a, "model.request").await;
    b.cancel();
    let b_result = within(5, "cancelled while queued", b.result()).await;
    assert_eq!(b_result.state, RunState::Cancelled);
    assert_eq!(types(&b_result.events), ["run.cancelled"]);
    let EventKind::RunCancelled(ended) = &b_result.events[0].kind else { panic!() };
    assert_eq!(ended.error.message, "the run was cancelled before it started");
    assert_eq!(b_result.turns, 0);
    check_log(&b_result.events, b.id(), "q", RunState::Cancelled);

    // C still waits for A, though B (between them) has ended.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(a.state(), RunState::Running);
    assert_eq!(c.state(), RunState::Queued);
    model.open("A");
    assert_eq!(within(10, "c", c.wait()).await.unwrap().output, "ans:C");
    assert_eq!(model.log.snapshot(), ["start:A", "end:A", "start:C", "end:C"]);
}

#[tokio::test]
async fn dropping_a_run_stream_mid_run_cancels_the_run() {
    let (_, _, agent) = gated_agent(&["x"]);
    let mut stream = agent.stream("x");
    let run = stream.run().clone();
    while let Some(e) = stream.next().await {
        if e.type_name() == "model.request" {
            break;
        }
    }
    drop(stream);
    let result = within(5, "cancelled by drop", run.result()).await;
    assert_eq!(result.state, RunState::Cancelled);
    assert_eq!(types(&result.events), ["run.started", "model.request", "run.cancelled"]);
}

#[tokio::test]
async fn a_detached_stream_or_one_awaited_for_its_result_keeps_the_run_going() {
    let (model, _, agent) = gated_agent(&["x", "y"]);
    let run = agent.stream("x").detach();
    wait_for(&run, "model.request").await;
    model.open("x");
    assert_eq!(within(5, "detached", run.result()).await.state, RunState::Completed);

    let stream = agent.stream("y");
    let run = stream.run().clone();
    let result = tokio::spawn(stream.result());
    wait_for(&run, "model.request").await;
    model.open("y");
    assert_eq!(within(5, "result", result).await.unwrap().output, "ans:y");
}

#[tokio::test]
async fn dropping_the_future_of_agent_run_cancels_the_run() {
    let (model, order, agent) = gated_agent(&["x"]);
    let mut fut = Box::pin(agent.run(RunRequest::new("x").session("dropped")));
    drive_until(&mut fut, || model.log.snapshot().contains(&"start:x".to_string())).await;
    drop(fut);
    let session = agent.session(SessionConfig::new("dropped"));
    let run = session.get_run(&first_run_id(&order)).await.unwrap().expect("the run is known");
    let result = within(5, "cancelled by drop", run.result()).await;
    assert_eq!(result.state, RunState::Cancelled);
    // The session goes on without it.
    let next = session.run("y").await.unwrap();
    assert_eq!(next.output, "ans:y");
}

#[tokio::test]
async fn dropping_the_future_of_session_run_cancels_the_run() {
    let (model, order, agent) = gated_agent(&["x"]);
    let session = agent.session(SessionConfig::new("dropped-too"));
    let mut fut = Box::pin(session.run("x"));
    drive_until(&mut fut, || model.log.snapshot().contains(&"start:x".to_string())).await;
    drop(fut);
    let run = session.get_run(&first_run_id(&order)).await.unwrap().expect("the run is known");
    let result = within(5, "cancelled by drop", run.result()).await;
    assert_eq!(result.state, RunState::Cancelled);
}

#[tokio::test]
async fn a_timeout_around_agent_run_cancels_the_run_it_abandons() {
    let (model, order, agent) = gated_agent(&["x"]);
    let outcome = tokio::time::timeout(Duration::from_millis(50), agent.run(RunRequest::new("x").session("t"))).await;
    assert!(outcome.is_err());
    let run = agent.session(SessionConfig::new("t")).get_run(&first_run_id(&order)).await.unwrap().unwrap();
    assert_eq!(within(5, "cancelled", run.result()).await.state, RunState::Cancelled);
    assert_eq!(model.log.snapshot(), ["start:x"]);
}

#[tokio::test]
async fn cancelling_a_finished_run_changes_nothing() {
    let agent = Agent::builder().model("echo").build().unwrap();
    let run = agent.start("hi");
    let before = run.result().await;
    run.cancel();
    let after = run.result().await;
    assert_eq!(before, after);
    assert_eq!(after.state, RunState::Completed);
    assert_eq!(collect(run.events()).await, before.events.to_vec());
}
