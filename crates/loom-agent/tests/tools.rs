//! Tool dispatch: concurrency-safe calls run together, others alone and in order, results go back in
//! call order; every kind of bad call becomes an error result and the run goes on; tool context and
//! artifacts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use loom_agent::agent::AgentBuilder;
use loom_agent::event::ToolResultEvent;
use loom_agent::model::ScriptedTurn;
use loom_agent::tool::{FunctionTool, ToolErrorKind, ToolOutput};
use loom_agent::{Agent, EventKind, RunRequest, RunResult, RunState, ToolError};
use serde_json::{Value, json};
use tokio::sync::{Barrier, Notify};

fn empty() -> Value {
    json!({"type": "object"})
}

/// A tool that logs `start:<x>`, sleeps `ms` milliseconds, and logs `end:<x>`.
fn logged(name: &str, log: &Log, safe: bool) -> FunctionTool {
    let log = log.clone();
    let schema = json!({"type": "object", "properties": {"x": {"type": "string"}, "ms": {"type": "integer"}}});
    let tool = FunctionTool::new(name, "Logs its start and end.", schema, move |_c, args| {
        let log = log.clone();
        async move {
            let x = args["x"].as_str().unwrap_or_default().to_string();
            log.push(format!("start:{x}"));
            tokio::time::sleep(Duration::from_millis(args["ms"].as_u64().unwrap_or(0))).await;
            log.push(format!("end:{x}"));
            Ok(ToolOutput::text(format!("did:{x}")))
        }
    });
    if safe { tool.concurrency_safe() } else { tool }
}

/// Runs one turn of tool calls and then a final answer; returns the result, the `tool.result`
/// events and the tool messages the model got back.
async fn one_turn(
    configure: impl FnOnce(AgentBuilder) -> AgentBuilder,
    turn: ScriptedTurn,
) -> (RunResult, Vec<ToolResultEvent>, Vec<(String, String, bool)>) {
    let (model, shared) = scripted([turn, ScriptedTurn::text("recovered")]);
    let agent = configure(Agent::builder().model(shared)).build().unwrap();
    let result = within(30, "run", agent.run("go")).await.unwrap();
    assert_eq!(result.state, RunState::Completed);
    assert_eq!(result.output, "recovered", "the run goes on to its final answer");
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Completed);
    let fed = tool_messages(&model.requests()[1].messages);
    (result.clone(), tool_results(&result.events), fed)
}

/// Asserts a single failed call: the event's kind, the exact message, and what the model got.
fn assert_error(results: &[ToolResultEvent], fed: &[(String, String, bool)], kind: ToolErrorKind, message: &str) {
    assert_eq!(results.len(), 1);
    let r = &results[0];
    assert!(r.is_error);
    assert_eq!(r.error_kind, Some(kind));
    assert_eq!(r.output, message);
    assert_eq!(fed, &[(r.call_id.clone(), message.to_string(), true)]);
}

// ---------------------------------------------------------------------------------------------
// Parallel and sequential dispatch
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_safe_calls_in_one_turn_run_at_the_same_time() {
    // Each call waits at a barrier for all three: run one after another they would never finish.
    let barrier = Arc::new(Barrier::new(3));
    let b = barrier.clone();
    let meet = FunctionTool::new("meet", "Waits for the others.", empty(), move |_c, _a| {
        let b = b.clone();
        async move {
            b.wait().await;
            Ok(ToolOutput::text("met"))
        }
    })
    .concurrency_safe();
    let turn =
        ScriptedTurn::tool_call("meet", json!({})).with_tool_call("meet", json!({})).with_tool_call("meet", json!({}));
    let (_, results, fed) = one_turn(|b| b.tool(meet).tool_timeout(Duration::from_secs(20)), turn).await;
    assert_eq!(results.len(), 3);
    assert!(fed.iter().all(|(_, out, err)| out == "met" && !err), "{fed:?}");
}

#[tokio::test]
async fn calls_that_are_not_concurrency_safe_run_alone_in_call_order() {
    let log = Log::default();
    let turn = ScriptedTurn::tool_call("step", json!({"x": "0", "ms": 30}))
        .with_tool_call("step", json!({"x": "1", "ms": 10}))
        .with_tool_call("step", json!({"x": "2", "ms": 0}));
    let (_, _, fed) = one_turn(|b| b.tool(logged("step", &log, false)), turn).await;
    assert_eq!(log.snapshot(), ["start:0", "end:0", "start:1", "end:1", "start:2", "end:2"]);
    assert_eq!(fed.iter().map(|f| f.1.as_str()).collect::<Vec<_>>(), ["did:0", "did:1", "did:2"]);
}

#[tokio::test]
async fn a_non_safe_call_splits_safe_neighbours_into_batches() {
    let log = Log::default();
    let turn = ScriptedTurn::tool_call("read", json!({"x": "r0", "ms": 20}))
        .with_tool_call("read", json!({"x": "r1", "ms": 0}))
        .with_tool_call("write", json!({"x": "w2", "ms": 5}))
        .with_tool_call("read", json!({"x": "r3", "ms": 0}));
    one_turn(|b| b.tool(logged("read", &log, true)).tool(logged("write", &log, false)), turn).await;
    let pos = |s: &str| log.position(s);
    // r0 and r1 overlap: r1 starts before r0 ends.
    assert!(pos("start:r1") < pos("end:r0"), "{:?}", log.snapshot());
    // The write runs alone, after both reads and before the last one.
    assert!(pos("end:r0") < pos("start:w2") && pos("end:r1") < pos("start:w2"), "{:?}", log.snapshot());
    assert!(pos("end:w2") < pos("start:r3"), "{:?}", log.snapshot());
}

#[tokio::test]
async fn results_go_back_in_call_order_even_when_they_finish_in_another_order() {
    // `slow` cannot finish before `fast` has: completion order is fast, slow.
    let fast_done = Arc::new(Notify::new());
    let (n1, n2) = (fast_done.clone(), fast_done.clone());
    let slow = FunctionTool::new("slow", "Waits for fast.", empty(), move |_c, _a| {
        let n = n1.clone();
        async move {
            n.notified().await;
            Ok(ToolOutput::text("slow result"))
        }
    })
    .concurrency_safe();
    let fast = FunctionTool::new("fast", "Returns at once.", empty(), move |_c, _a| {
        let n = n2.clone();
        async move {
            n.notify_one();
            Ok(ToolOutput::text("fast result"))
        }
    })
    .concurrency_safe();
    let turn = ScriptedTurn::tool_call("slow", json!({})).with_tool_call("fast", json!({}));
    let (result, results, fed) =
        one_turn(|b| b.tool(slow).tool(fast).tool_timeout(Duration::from_secs(20)), turn).await;
    assert_eq!(
        fed,
        [("call_1_0".into(), "slow result".into(), false), ("call_1_1".into(), "fast result".into(), false)]
    );
    // Events are live: each tool.result is logged when its call finishes.
    assert_eq!(results.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["fast", "slow"]);
    assert_eq!(tool_call_ids(&result.events), ["call_1_0", "call_1_1"]);
}

// ---------------------------------------------------------------------------------------------
// Bad calls become error results and the run goes on
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_tool() {
    let (_, results, fed) =
        one_turn(|b| b.tool(echo_tool("lookup")).tool(echo_tool("find")), ScriptedTurn::tool_call("ghost", json!({})))
            .await;
    assert_error(&results, &fed, ToolErrorKind::NotFound, "Error: unknown tool `ghost`; available tools: lookup, find");
    assert_eq!(results[0].name, "ghost");
}

#[tokio::test]
async fn unknown_tool_with_no_tools_at_all() {
    let (_, results, fed) = one_turn(|b| b, ScriptedTurn::tool_call("ghost", json!({}))).await;
    assert_error(&results, &fed, ToolErrorKind::NotFound, "Error: unknown tool `ghost`; available tools: none");
}

#[tokio::test]
async fn arguments_that_are_not_json() {
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let tool = FunctionTool::new("lookup", "d", x_schema(), move |_c, _a| {
        r.store(true, Ordering::SeqCst);
        async { Ok(ToolOutput::text("ran")) }
    });
    let turn = ScriptedTurn::default().with_raw_tool_call("lookup", "{\"x\": \"a\"");
    let (_, results, fed) = one_turn(|b| b.tool(tool), turn).await;
    let r = &results[0];
    assert_eq!(r.error_kind, Some(ToolErrorKind::InvalidArguments));
    assert!(r.output.starts_with("Error: the arguments for `lookup` are not valid JSON ("), "{}", r.output);
    assert!(r.output.ends_with("); send a JSON object"), "{}", r.output);
    assert_eq!(fed[0], (r.call_id.clone(), r.output.clone(), true));
    assert!(!ran.load(Ordering::SeqCst), "the tool must not run");
}

#[tokio::test]
async fn arguments_that_do_not_match_the_schema() {
    let turn = ScriptedTurn::tool_call("lookup", json!({"x": 5}))
        .with_tool_call("lookup", json!({}))
        .with_tool_call("lookup", json!({"x": "ok", "extra": true}));
    let (_, results, fed) = one_turn(|b| b.tool(echo_tool("lookup")), turn).await;
    assert_eq!(results.len(), 3);
    for r in &results {
        assert_eq!(r.error_kind, Some(ToolErrorKind::InvalidArguments), "{}", r.output);
        assert!(r.output.starts_with("Error: the arguments for `lookup` do not match its schema: "), "{}", r.output);
    }
    assert!(results[0].output.contains("at /x: ") && results[0].output.contains("string"), "{}", results[0].output);
    assert!(results[1].output.contains("\"x\" is a required property"), "{}", results[1].output);
    assert!(results[2].output.contains("extra"), "{}", results[2].output);
    assert!(fed.iter().all(|f| f.2));
}

#[tokio::test]
async fn a_tool_returning_err() {
    let tool = FunctionTool::new("disk", "d", empty(), |_c, _a| async { Err(ToolError::new("disk full")) });
    let (_, results, fed) = one_turn(|b| b.tool(tool), ScriptedTurn::tool_call("disk", json!({}))).await;
    assert_error(&results, &fed, ToolErrorKind::Failed, "Error: disk full");
}

#[tokio::test]
async fn a_tool_returning_an_err_of_its_own_kind_and_a_converted_std_error() {
    let denied = FunctionTool::new("gate", "d", empty(), |_c, _a| async {
        Err(ToolError::with_kind(ToolErrorKind::Denied, "no"))
    });
    let io = FunctionTool::new("io", "d", empty(), |_c, _a| async {
        std::fs::read_to_string("/definitely/not/here")?;
        Ok(ToolOutput::text("read"))
    });
    let turn = ScriptedTurn::tool_call("gate", json!({})).with_tool_call("io", json!({}));
    let (_, results, _) = one_turn(|b| b.tool(denied).tool(io), turn).await;
    assert_eq!(results[0].error_kind, Some(ToolErrorKind::Denied));
    assert_eq!(results[0].output, "Error: no");
    assert_eq!(results[1].error_kind, Some(ToolErrorKind::Failed));
    assert!(results[1].output.contains("No such file"), "{}", results[1].output);
}

#[tokio::test]
async fn a_tool_that_panics() {
    let s = FunctionTool::new("boom", "d", empty(), |_c, _a| async { panic!("kaboom") });
    let f = FunctionTool::new("boom2", "d", empty(), |_c, a| async move { panic!("bad value {}", a) });
    let turn = ScriptedTurn::tool_call("boom", json!({})).with_tool_call("boom2", json!({"v": 1}));
    let (_, results, fed) = one_turn(|b| b.tool(s).tool(f), turn).await;
    assert_eq!(results[0].error_kind, Some(ToolErrorKind::Panicked));
    assert_eq!(results[0].output, "Error: `boom` panicked: kaboom");
    assert_eq!(results[1].error_kind, Some(ToolErrorKind::Panicked));
    assert_eq!(results[1].output, r#"Error: `boom2` panicked: bad value {"v":1}"#);
    assert!(fed.iter().all(|f| f.2));
}

#[tokio::test(start_paused = true)]
async fn a_tool_that_times_out_its_own_timeout_winning() {
    let cancelled = Arc::new(AtomicBool::new(false));
    let c = cancelled.clone();
    let sleepy = FunctionTool::new("sleepy", "d", empty(), move |ctx, _a| {
        let token = ctx.cancellation().clone();
        let c = c.clone();
        // A watcher outside the call sees the call's token fire when it times out.
        tokio::spawn(async move {
            token.cancelled().await;
            c.store(true, Ordering::SeqCst);
        });
        async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(ToolOutput::text("late"))
        }
    })
    .timeout(Duration::from_millis(50));
    let (_, results, fed) = one_turn(
        |b| b.tool(sleepy).tool_timeout(Duration::from_secs(600)),
        ScriptedTurn::tool_call("sleepy", json!({})),
    )
    .await;
    assert_error(&results, &fed, ToolErrorKind::Timeout, "Error: `sleepy` did not finish within 50 ms");
    tokio::task::yield_now().await;
    assert!(cancelled.load(Ordering::SeqCst), "the tool's cancellation token fires on timeout");
}

#[tokio::test(start_paused = true)]
async fn the_agent_tool_timeout_applies_when_the_tool_sets_none() {
    let sleepy = FunctionTool::new("sleepy", "d", empty(), |_c, _a| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(ToolOutput::text("late"))
    });
    let (_, results, fed) =
        one_turn(|b| b.tool(sleepy).tool_timeout(Duration::from_secs(2)), ScriptedTurn::tool_call("sleepy", json!({})))
            .await;
    assert_error(&results, &fed, ToolErrorKind::Timeout, "Error: `sleepy` did not finish within 2000 ms");
}

#[tokio::test]
async fn output_over_the_limit_is_truncated_with_a_note() {
    let big = FunctionTool::new("big", "d", empty(), |_c, _a| async { Ok(ToolOutput::text("0123456789".repeat(5))) });
    let small = FunctionTool::new("small", "d", empty(), |_c, _a| async { Ok(ToolOutput::text("0123456789012345")) });
    let bad = FunctionTool::new("bad", "d", empty(), |_c, _a| async { Err(ToolError::new("x".repeat(40))) });
    let turn =
        ScriptedTurn::tool_call("big", json!({})).with_tool_call("small", json!({})).with_tool_call("bad", json!({}));
    let (_, results, fed) = one_turn(|b| b.tool(big).tool(small).tool(bad).tool_output_limit(16), turn).await;
    let note = "0123456789012345\n[output truncated: 16 of 50 bytes shown]";
    assert_eq!((results[0].output.as_str(), results[0].truncated, results[0].is_error), (note, true, false));
    assert_eq!(fed[0], ("call_1_0".into(), note.into(), false));
    // Exactly at the limit: untouched.
    assert_eq!((results[1].output.as_str(), results[1].truncated), ("0123456789012345", false));
    // Error text is capped too.
    assert!(results[2].truncated && results[2].is_error);
    assert_eq!(results[2].output, "Error: xxxxxxxxx\n[output truncated: 16 of 47 bytes shown]");
}

#[tokio::test]
async fn every_bad_call_in_one_turn_still_gets_its_own_result() {
    let fail = FunctionTool::new("fail", "d", empty(), |_c, _a| async { Err(ToolError::new("nope")) });
    let turn = ScriptedTurn::tool_call("ghost", json!({}))
        .with_raw_tool_call("lookup", "not json")
        .with_tool_call("lookup", json!({"x": 1}))
        .with_tool_call("fail", json!({}))
        .with_tool_call("lookup", json!({"x": "fine"}));
    let (result, results, fed) = one_turn(|b| b.tool(echo_tool("lookup")).tool(fail), turn).await;
    let kinds: Vec<Option<ToolErrorKind>> = results.iter().map(|r| r.error_kind).collect();
    assert_eq!(
        kinds,
        [
            Some(ToolErrorKind::NotFound),
            Some(ToolErrorKind::InvalidArguments),
            Some(ToolErrorKind::InvalidArguments),
            Some(ToolErrorKind::Failed),
            None
        ]
    );
    assert_eq!(fed.iter().map(|f| f.0.clone()).collect::<Vec<_>>(), tool_call_ids(&result.events));
    assert_eq!(fed[4], ("call_1_4".into(), "lookup:fine".into(), false));
}

// ---------------------------------------------------------------------------------------------
// Tool context and artifacts
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tool_context_carries_run_session_user_and_call_ids() {
    let seen = Log::default();
    let s = seen.clone();
    let who = FunctionTool::new("who", "d", empty(), move |ctx, _a| {
        s.push(format!("{}|{}|{}|{}", ctx.run_id(), ctx.session_id(), ctx.user_id().unwrap_or("-"), ctx.call_id()));
        async { Ok(ToolOutput::text("ok")) }
    });
    let (_, shared) = scripted([ScriptedTurn::tool_call("who", json!({})), ScriptedTurn::text("done")]);
    let agent = Agent::builder().model(shared).tool(who).build().unwrap();
    let result = agent.run(RunRequest::new("go").user("alice").session("s-ctx")).await.unwrap();
    assert_eq!(seen.snapshot(), [format!("{}|s-ctx|alice|call_1_0", result.run_id)]);
}

#[tokio::test]
async fn artifacts_appear_on_the_run_the_result_and_as_events() {
    let report = FunctionTool::new("report", "d", empty(), |ctx, _a| async move {
        let a = ctx.create_artifact("report.md", "text/markdown", "# Findings");
        Ok(ToolOutput::text(format!("created {}", a.id)))
    });
    let (_, shared) = scripted([ScriptedTurn::tool_call("report", json!({})), ScriptedTurn::text("done")]);
    let agent = Agent::builder().model(shared).tool(report).build().unwrap();
    let run = agent.start("go");
    let result = run.result().await;
    assert_eq!(result.artifacts.len(), 1);
    let artifact = &result.artifacts[0];
    assert_eq!(
        (artifact.name.as_str(), artifact.media_type.as_str(), artifact.content.as_str()),
        ("report.md", "text/markdown", "# Findings")
    );
    assert_eq!(artifact.call_id.as_deref(), Some("call_1_0"));
    assert!(artifact.id.starts_with("art_"));
    assert_eq!(run.artifacts(), result.artifacts);
    assert_eq!(run.transcript().artifacts, result.artifacts);
    let created: Vec<_> = result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ArtifactCreated(a) => Some(a.artifact.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(created, result.artifacts);
    assert_eq!(
        types(&result.events)[..6],
        ["run.started", "model.request", "model.response", "tool.call", "artifact.created", "tool.result"]
    );
    assert_eq!(tool_results(&result.events)[0].output, format!("created {}", artifact.id));
}

#[tokio::test]
async fn a_detached_context_records_artifacts_nowhere() {
    let ctx = loom_agent::ToolContext::detached("run_x", "sess_x").with_user("bob");
    assert_eq!(
        (ctx.run_id(), ctx.session_id(), ctx.user_id(), ctx.call_id()),
        ("run_x", "sess_x", Some("bob"), "call_0")
    );
    let a = ctx.create_artifact("n", "text/plain", "c");
    assert_eq!(a.call_id.as_deref(), Some("call_0"));
    assert!(!ctx.is_cancelled());
}
