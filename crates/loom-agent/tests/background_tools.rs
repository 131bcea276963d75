//! Background tools: a tool answers `ToolOutput::pending(handle)`, the journaled run suspends
//! durably, and `Agent::complete_tool` (another process, after a restart) or a `tool.result`
//! signal continues it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod signal_support;

use common::*;
use loom_agent::model::ScriptedTurn;
use loom_agent::signal::RuntimeSignal;
use loom_agent::store::JournalEntry;
use loom_agent::tool::{FunctionTool, ToolOutput};
use loom_agent::{Agent, EventKind, RunErrorKind, RunState, SessionConfig};
use serde_json::json;
use signal_support::*;

fn render_tool() -> FunctionTool {
    FunctionTool::new("render", "Renders a video in the background.", json!({"type": "object"}), |_ctx, _a| async {
        Ok(ToolOutput::pending("job-42"))
    })
}

fn agent(url: &str, turns: Vec<ScriptedTurn>) -> (std::sync::Arc<loom_agent::model::ScriptedModel>, Agent) {
    let (model, shared) = scripted(turns);
    let agent = Agent::builder().model(shared).tool(render_tool()).journal(url).build().unwrap();
    (model, agent)
}

/// Starts a run whose tool goes to the background; returns (run id, call id).
async fn suspended_run(url: &str, session: &str, user: Option<&str>) -> (String, String) {
    let (_, agent) = agent(url, vec![ScriptedTurn::tool_call("render", json!({})), ScriptedTurn::text("unused")]);
    let mut config = SessionConfig::new(session);
    config.user_id = user.map(str::to_string);
    let result = within(10, "run", agent.session(config).start("make the video").result()).await;
    assert_eq!(result.state, RunState::Suspended, "{:?}", types(&result.events));
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, RunErrorKind::ToolPending);
    assert_eq!(error.reason.as_deref(), Some("tool_pending"));
    assert!(error.message.contains("job-42"), "{}", error.message);
    assert!(tool_results(&result.events).is_empty(), "no result yet for the background call");
    let stored = agent.journal().unwrap().load(&result.run_id).await.unwrap().unwrap();
    assert!(!stored.finished);
    let call_id = stored
        .entries
        .iter()
        .find_map(|e| match e {
            JournalEntry::ToolPending { call_id, handle, .. } if handle == "job-42" => Some(call_id.clone()),
            _ => None,
        })
        .expect("a tool_pending entry");
    (result.run_id, call_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_tool_suspends_and_complete_tool_continues_in_another_process() {
    for db in durable_backends().await {
        let name = db.name();
        let url = db.url().unwrap();
        let session = format!("bg-{}", unique());
        let (run_id, call_id) = suspended_run(&url, &session, None).await;
        // Another process: a new agent on the same database, with only the second turn scripted.
        let (model, agent) = agent(&url, vec![ScriptedTurn::text("the video is at out.mp4")]);
        assert!(agent.complete_tool(&run_id, "call_unknown", "x").await.is_err(), "{name}");
        let run = agent.complete_tool(&run_id, &call_id, "rendered: out.mp4").await.unwrap();
        let result = within(10, "continued run", run.result()).await;
        assert_eq!(result.state, RunState::Completed, "{name}: {:?}", result.error);
        assert_eq!(result.output, "the video is at out.mp4");
        let requests = model.requests();
        assert_eq!(requests.len(), 1, "{name}: the first model call was not sent again");
        let tool_messages = tool_messages(&requests[0].messages);
        assert_eq!(tool_messages, [(call_id.clone(), "rendered: out.mp4".to_string(), false)], "{name}");
        let results = tool_results(&result.events);
        assert_eq!(results.len(), 1, "{name}");
        assert_eq!(results[0].output, "rendered: out.mp4");
        assert!(matches!(result.events.last().unwrap().kind, EventKind::RunCompleted(_)));
        // It is finished now: a second completion is refused.
        assert!(agent.complete_tool(&run_id, &call_id, "again").await.is_err(), "{name}");
        eprintln!("{name}: ok");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_result_signal_continues_the_run_and_failures_reach_the_model() {
    let db = Db::Sqlite(temp_db());
    let url = db.url().unwrap();
    let (run_id, call_id) = suspended_run(&url, "bg-signal", Some("ana")).await;
    let (model, agent) = agent(&url, vec![ScriptedTurn::text("sorry, the render failed")]);
    // Another user's session of the same id cannot deliver it.
    let bob = agent.session(SessionConfig::new("bg-signal").user("bob"));
    let stolen = bob.receive(RuntimeSignal::tool_result(&run_id, &call_id, "fake", false), None).await;
    assert!(matches!(stolen, Err(loom_agent::Error::RunNotFound(_))), "{stolen:?}");
    let ana = agent.session(SessionConfig::new("bg-signal").user("ana"));
    let signal = RuntimeSignal::tool_result(&run_id, &call_id, "out of disk", true);
    let receipt = ana.receive(signal.clone(), None).await.unwrap();
    let result = within(10, "continued run", receipt.run.unwrap().result()).await;
    assert_eq!(result.state, RunState::Completed);
    let messages = tool_messages(&model.requests()[0].messages);
    assert_eq!(messages, [(call_id.clone(), "Error: out of disk".to_string(), true)]);
    // The same result twice is a duplicate signal.
    assert!(ana.receive(signal, None).await.unwrap().duplicate);
}

#[tokio::test]
async fn without_a_journal_the_model_hears_that_pending_needs_one() {
    let (model, shared) = scripted([ScriptedTurn::tool_call("render", json!({})), ScriptedTurn::text("ok")]);
    let agent = Agent::builder().model(shared).tool(render_tool()).build().unwrap();
    let result = agent.run("make the video").await.unwrap();
    assert_eq!(result.output, "ok");
    let messages = tool_messages(&model.requests()[1].messages);
    assert!(messages[0].2, "an error result");
    assert!(messages[0].1.contains("needs a journal"), "{}", messages[0].1);
}
