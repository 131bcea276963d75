//! Runs: honest final states, the event log (order, numbering, ids, JSON shape, replay) and results.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::tool::{FunctionTool, ToolOutput};
use loom_agent::{Agent, Error, Event, EventKind, RunErrorKind, RunRequest, RunResult, RunState, SessionConfig, Usage};
use serde_json::json;
use tokio::sync::Semaphore;

const TWO_TURN_TYPES: &[&str] = &[
    "run.started",
    "model.request",
    "model.response",
    "tool.call",
    "tool.result",
    "model.request",
    "model.delta",
    "model.response",
    "run.completed",
];

fn two_turn_agent() -> Agent {
    let (_, model) = scripted([ScriptedTurn::tool_call("lookup", json!({"x": "a"})), ScriptedTurn::text("done")]);
    Agent::builder().instructions("Be brief.").model(model).tool(echo_tool("lookup")).build().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Honest states
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn completed_run_reports_output_turns_usage_and_ends_with_run_completed() {
    let usage = |i, o| Usage { input_tokens: i, output_tokens: o, ..Usage::default() };
    let (_, model) = scripted([
        ScriptedTurn::tool_call("lookup", json!({"x": "a"})).with_usage(usage(10, 2)),
        ScriptedTurn::text("done").with_usage(usage(20, 3)),
    ]);
    let agent = Agent::builder().model(model).tool(echo_tool("lookup")).build().unwrap();
    let result = agent.run(RunRequest::new("go").user("alice")).await.unwrap();
    assert_eq!(result.state, RunState::Completed);
    assert!(result.is_completed());
    assert_eq!(result.output, "done");
    assert_eq!(result.error, None);
    assert_eq!(result.interruption_reason(), None);
    assert_eq!(result.turns, 2);
    assert_eq!(result.user_id.as_deref(), Some("alice"));
    assert_eq!((result.usage.input_tokens, result.usage.output_tokens), (30, 5));
    assert!(result.finished_at >= result.started_at);
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Completed);
    let EventKind::RunCompleted(done) = &result.events.last().unwrap().kind else { panic!("not run.completed") };
    assert_eq!((done.output.as_str(), done.turns, done.usage), ("done", 2, result.usage));
}

#[tokio::test]
async fn max_turns_interrupts_with_reason_and_run_returns_err_with_the_result() {
    let (model_handle, shared) =
        share(ScriptedModel::new([ScriptedTurn::tool_call("lookup", json!({"x": "a"}))]).looping());
    let agent = Agent::builder().model(shared).tool(echo_tool("lookup")).max_turns(3).build().unwrap();
    assert_eq!(agent.max_turns(), 3);

    let err = agent.run("loop forever").await.unwrap_err();
    assert!(matches!(err, Error::Run(_)), "{err:?}");
    let text = err.to_string();
    let result = failed_result(err);
    assert_eq!(result.state, RunState::Interrupted);
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, RunErrorKind::MaxTurns);
    assert_eq!(error.reason.as_deref(), Some("max_turns"));
    assert_eq!(result.interruption_reason(), Some("max_turns"));
    assert!(error.message.contains("max_turns (3)"), "{}", error.message);
    assert!(text.contains(&result.run_id) && text.contains("interrupted"), "{text}");
    assert_eq!(result.turns, 3);
    assert_eq!(model_handle.requests().len(), 3, "exactly max_turns model calls");
    assert_eq!(types(&result.events).iter().filter(|t| **t == "model.request").count(), 3);
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Interrupted);
    let EventKind::RunInterrupted(ended) = &result.events.last().unwrap().kind else { panic!() };
    assert_eq!(ended.error, error);
    assert_eq!(ended.turns, 3);

    // The per-run override wins over the agent's limit.
    let result = failed_result(agent.run(RunRequest::new("again").max_turns(1)).await.unwrap_err());
    assert_eq!(result.state, RunState::Interrupted);
    assert_eq!(result.turns, 1);
    assert_eq!(result.interruption_reason(), Some("max_turns"));
}

#[tokio::test(start_paused = true)]
async fn per_run_timeout_interrupts_with_reason_timeout() {
    let agent = Agent::builder().model(slow_model(Duration::from_secs(3600))).build().unwrap();
    let result =
        failed_result(agent.run(RunRequest::new("slow").timeout(Duration::from_millis(250))).await.unwrap_err());
    assert_eq!(result.state, RunState::Interrupted);
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, RunErrorKind::Timeout);
    assert_eq!(error.reason.as_deref(), Some("timeout"));
    assert!(error.message.contains("250 ms"), "{}", error.message);
    assert_eq!(types(&result.events), ["run.started", "model.request", "run.interrupted"]);
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Interrupted);
}

#[tokio::test(start_paused = true)]
async fn builder_timeout_interrupts_and_the_request_can_override_it() {
    let agent =
        Agent::builder().model(slow_model(Duration::from_secs(10))).timeout(Duration::from_secs(1)).build().unwrap();
    let result = failed_result(agent.run("slow").await.unwrap_err());
    assert_eq!(result.state, RunState::Interrupted);
    assert_eq!(result.interruption_reason(), Some("timeout"));
    assert_eq!(result.error.unwrap().kind, RunErrorKind::Timeout);

    // A longer per-run timeout lets the same model finish.
    let result = agent.run(RunRequest::new("slow").timeout(Duration::from_secs(60))).await.unwrap();
    assert_eq!(result.output, "late");
}

#[tokio::test]
async fn model_error_fails_the_run_with_kind_model() {
    let (_, model) = scripted([ScriptedTurn::error("upstream exploded")]);
    let agent = Agent::builder().model(model).build().unwrap();
    let result = failed_result(agent.run("hi").await.unwrap_err());
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, RunErrorKind::Model);
    assert_eq!(error.model_error.as_deref(), Some("transient"));
    assert!(error.message.contains("upstream exploded"), "{}", error.message);
    assert_eq!(error.reason, None, "only interruptions have a reason");
    assert_eq!(result.output, "");
    assert_eq!(types(&result.events), ["run.started", "model.request", "run.failed"]);
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Failed);
}

#[tokio::test]
async fn exhausted_script_fails_with_model_error_unavailable() {
    let (_, model) = scripted([ScriptedTurn::tool_call("lookup", json!({"x": "a"}))]);
    let agent = Agent::builder().model(model).tool(echo_tool("lookup")).build().unwrap();
    let result = failed_result(agent.run("hi").await.unwrap_err());
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.kind, RunErrorKind::Model);
    assert_eq!(error.model_error.as_deref(), Some("unavailable"));
    assert!(error.message.contains("no more turns"), "{}", error.message);
    assert_eq!(result.turns, 2);
}

#[test]
fn building_without_a_model_is_a_config_error_naming_the_accepted_strings() {
    // With the `local` feature and no provider key in the environment, the local model is the
    // default instead (tests/local_model.rs).
    #[cfg(feature = "local")]
    if loom_agent::model::local::provider_key_env().is_none() {
        let agent = Agent::builder().instructions("x").build().unwrap();
        assert_eq!(agent.model().provider(), "local");
        return;
    }
    let err = Agent::builder().instructions("x").build().unwrap_err();
    let Error::Config(message) = &err else { panic!("expected Error::Config, got {err:?}") };
    assert!(message.contains("no model configured"), "{message}");
    assert!(message.contains("\"echo\"") && message.contains("scripted:FILE.json"), "{message}");
}

#[test]
fn unknown_or_empty_model_strings_are_config_errors_listing_accepted_strings() {
    for spec in ["gtp-4", "llama3", "nosuchprovider:model", "", "   "] {
        let err = Agent::builder().model(spec).build().unwrap_err();
        let Error::Config(message) = &err else { panic!("expected Error::Config, got {err:?}") };
        assert!(message.contains("accepted") && message.contains("\"echo\""), "{spec:?}: {message}");
        assert!(message.contains("scripted:FILE.json"), "{message}");
    }
    let err = Agent::builder().model("gtp-4").build().unwrap_err();
    assert!(err.to_string().contains("\"gtp-4\""), "{err}");
    // Provider strings resolve without any network or key at build time.
    for known in ["gpt-4o", "o3", "claude-sonnet-4-5", "gemini-2.5-flash", "ollama:qwen3", "openai-responses:gpt-5.1"] {
        assert!(Agent::builder().model(known).build().is_ok(), "{known}");
    }
    // Known strings work, case- and space-insensitively.
    assert!(Agent::builder().model(" ECHO ").build().is_ok());
    let missing = Agent::builder().model("scripted:/definitely/not/here.json").build().unwrap_err();
    assert!(matches!(missing, Error::Io { .. }), "{missing:?}");
}

#[test]
fn invalid_tool_sets_are_config_errors() {
    let dup = Agent::builder().model("echo").tool(echo_tool("same")).tool(echo_tool("same")).build().unwrap_err();
    assert!(matches!(&dup, Error::Config(m) if m.contains("`same`")), "{dup:?}");
    let bad = Agent::builder().model("echo").tool(echo_tool("has space")).build().unwrap_err();
    assert!(matches!(&bad, Error::Config(m) if m.contains("invalid")), "{bad:?}");
    let schema = FunctionTool::new("t", "d", json!("not an object"), |_c, _a| async { Ok(ToolOutput::text("")) });
    let err = Agent::builder().model("echo").tool(schema).build().unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains("JSON object")), "{err:?}");
    let arch = Agent::builder().model("echo").architecture_name("tree-of-thought").build().unwrap_err();
    assert!(matches!(&arch, Error::Config(m) if m.contains("react")), "{arch:?}");
}

#[tokio::test]
async fn run_outside_a_tokio_runtime_fails_with_a_terminal_event() {
    let agent = Agent::builder().model("echo").build().unwrap();
    let run = std::thread::spawn(move || agent.start("hi")).join().unwrap();
    let result = run.result().await;
    assert_eq!(result.state, RunState::Failed);
    assert_eq!(result.error.as_ref().unwrap().kind, RunErrorKind::Config);
    assert!(result.error.as_ref().unwrap().message.contains("Tokio runtime"));
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Failed);
}

// ---------------------------------------------------------------------------------------------
// Event order, numbering and ids
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn agent_run_events_have_the_exact_order_for_a_two_turn_tool_run() {
    let result = two_turn_agent().run("go").await.unwrap();
    assert_eq!(types(&result.events), TWO_TURN_TYPES);
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Completed);
}

#[tokio::test]
async fn agent_stream_yields_the_same_order_live_and_its_result_matches() {
    let stream = two_turn_agent().stream("go");
    let run = stream.run().clone();
    let events = collect(stream).await;
    assert_eq!(types(&events), TWO_TURN_TYPES);
    let result = run.result().await;
    assert_eq!(&events[..], &result.events[..]);
    check_log(&events, run.id(), run.session_id(), RunState::Completed);
}

#[tokio::test]
async fn session_start_events_yield_the_same_order() {
    let agent = two_turn_agent();
    let session = agent.session(SessionConfig::new("ordered"));
    let run = session.start("go");
    assert_eq!(run.session_id(), "ordered");
    let events = collect(run.events()).await;
    assert_eq!(types(&events), TWO_TURN_TYPES);
    check_log(&events, run.id(), "ordered", RunState::Completed);
}

#[tokio::test]
async fn text_before_tool_calls_and_streamed_text_give_one_delta_per_piece() {
    let mut first = ScriptedTurn::tool_call("lookup", json!({"x": "a"})).with_thinking("hmm");
    first.text = Some("Let me check.".into());
    let (_, model) = scripted([first, ScriptedTurn::text("all three words").streamed()]);
    let agent = Agent::builder().model(model).tool(echo_tool("lookup")).build().unwrap();
    let result = agent.run("go").await.unwrap();
    assert_eq!(
        types(&result.events),
        [
            "run.started",
            "model.request",
            "model.delta",
            "model.delta",
            "model.response",
            "tool.call",
            "tool.result",
            "model.request",
            "model.delta",
            "model.delta",
            "model.delta",
            "model.response",
            "run.completed",
        ]
    );
    let deltas: Vec<(u32, String, String)> = result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ModelDelta(d) => {
                Some((d.turn, serde_json::to_value(d.kind).unwrap().as_str().unwrap().to_string(), d.text.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        deltas,
        [
            (1, "thinking".into(), "hmm".into()),
            (1, "text".into(), "Let me check.".into()),
            (2, "text".into(), "all ".into()),
            (2, "text".into(), "three ".into()),
            (2, "text".into(), "words".into()),
        ]
    );
    assert_eq!(result.output, "all three words");
}

#[tokio::test]
async fn event_payloads_carry_turns_models_and_calls() {
    let result = two_turn_agent().run(RunRequest::new("go").user("bob")).await.unwrap();
    let e = &result.events;
    let EventKind::RunStarted(started) = &e[0].kind else { panic!() };
    assert_eq!(started.user_id.as_deref(), Some("bob"));
    assert_eq!(started.model, "scripted");
    assert_eq!(started.input, loom_agent::RunInput::Prompt("go".into()));
    let EventKind::ModelRequest(req) = &e[1].kind else { panic!() };
    assert_eq!((req.turn, req.model.as_str(), req.messages, req.tools), (1, "scripted", 2, 1));
    let EventKind::ModelResponse(resp) = &e[2].kind else { panic!() };
    assert_eq!(resp.turn, 1);
    assert_eq!(resp.tool_calls.len(), 1);
    let EventKind::ToolCall(call) = &e[3].kind else { panic!() };
    assert_eq!(call.call, resp.tool_calls[0]);
    assert_eq!(call.call.arguments, r#"{"x":"a"}"#);
    let EventKind::ToolResult(res) = &e[4].kind else { panic!() };
    assert_eq!(
        (res.call_id.as_str(), res.name.as_str(), res.output.as_str()),
        (call.call.id.as_str(), "lookup", "lookup:a")
    );
    assert!(!res.is_error && res.error_kind.is_none() && !res.truncated);
    let EventKind::ModelRequest(req2) = &e[5].kind else { panic!() };
    assert_eq!((req2.turn, req2.messages), (2, 4));
}

// ---------------------------------------------------------------------------------------------
// JSON shape
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn events_serialize_as_type_run_id_session_id_seq_at_payload_and_round_trip() {
    let result = two_turn_agent().run("go").await.unwrap();
    for event in result.events.iter() {
        let v = serde_json::to_value(event).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["at", "payload", "run_id", "seq", "session_id", "type"]);
        assert_eq!(v["type"], event.type_name());
        assert_eq!(v["run_id"], result.run_id.as_str());
        assert_eq!(v["session_id"], result.session_id.as_str());
        assert_eq!(v["seq"], event.seq);
        assert!(v["at"].is_string());
        assert!(v["payload"].is_object());
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(&back, event);
    }
    // The whole log round-trips as text too.
    let text = serde_json::to_string(&result.events).unwrap();
    let back: Vec<Event> = serde_json::from_str(&text).unwrap();
    assert_eq!(&back[..], &result.events[..]);
    // Payload shapes of the two most consumed events.
    let tool_result = serde_json::to_value(&result.events[4]).unwrap();
    assert_eq!(tool_result["payload"]["output"], "lookup:a");
    assert_eq!(tool_result["payload"]["is_error"], false);
    assert_eq!(tool_result["payload"]["name"], "lookup");
    assert!(tool_result["payload"].get("error_kind").is_none());
    let completed = serde_json::to_value(result.events.last().unwrap()).unwrap();
    assert_eq!(completed["payload"]["output"], "done");
    assert_eq!(completed["payload"]["turns"], 2);
    // Unknown types are rejected, not silently dropped.
    let mut bad = serde_json::to_value(&result.events[0]).unwrap();
    bad["type"] = json!("run.exploded");
    assert!(serde_json::from_value::<Event>(bad).is_err());
}

#[tokio::test]
async fn failed_run_events_round_trip_with_their_error() {
    let (_, model) = scripted([ScriptedTurn::error("boom")]);
    let agent = Agent::builder().model(model).build().unwrap();
    let result = failed_result(agent.run("hi").await.unwrap_err());
    let last = serde_json::to_value(result.events.last().unwrap()).unwrap();
    assert_eq!(last["type"], "run.failed");
    assert_eq!(last["payload"]["error"]["kind"], "model");
    assert_eq!(last["payload"]["error"]["model_error"], "transient");
    let back: Event = serde_json::from_value(last).unwrap();
    assert_eq!(&back, result.events.last().unwrap());
}

#[test]
fn states_and_error_kinds_serialize_lower_case() {
    let states = [
        (RunState::Queued, "queued"),
        (RunState::Running, "running"),
        (RunState::Completed, "completed"),
        (RunState::Failed, "failed"),
        (RunState::Cancelled, "cancelled"),
        (RunState::Interrupted, "interrupted"),
    ];
    for (state, name) in states {
        assert_eq!(serde_json::to_value(state).unwrap(), json!(name));
        assert_eq!(serde_json::from_value::<RunState>(json!(name)).unwrap(), state);
        assert_eq!(state.to_string(), name);
        assert_eq!(state.as_str(), name);
        assert_eq!(state.is_terminal(), !matches!(state, RunState::Queued | RunState::Running));
    }
    assert_eq!(serde_json::to_value(RunErrorKind::MaxTurns).unwrap(), json!("max_turns"));
    assert_eq!(serde_json::to_value(RunErrorKind::OutputValidation).unwrap(), json!("output_validation"));
}

#[tokio::test]
async fn run_result_round_trips_through_json() {
    let result = two_turn_agent().run("go").await.unwrap();
    let v = serde_json::to_value(&result).unwrap();
    assert_eq!(v["state"], "completed");
    let back: RunResult = serde_json::from_value(v).unwrap();
    assert_eq!(back, result);
}

// ---------------------------------------------------------------------------------------------
// Replay: events() any number of times, before, during and after the run
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn events_called_before_during_and_after_the_run_yield_identical_logs() {
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let wait = FunctionTool::new("wait", "Waits for the test.", json!({"type": "object"}), move |_ctx, _args| {
        let g = g.clone();
        async move {
            let _permit = g.acquire().await.unwrap();
            Ok(ToolOutput::text("released"))
        }
    });
    let (_, model) = scripted([ScriptedTurn::tool_call("wait", json!({})), ScriptedTurn::text("done").streamed()]);
    let agent = Agent::builder().model(model).tool(wait).build().unwrap();

    // current_thread runtime: the run cannot begin before this task yields.
    let run = agent.start("go");
    assert_eq!(run.state(), RunState::Queued);
    let before = tokio::spawn(collect(run.events()));
    let before_twice = run.events();

    let call = wait_for(&run, "tool.call").await;
    assert_eq!(run.state(), RunState::Running);
    let during = run.events();
    let mut during_partial = run.events();
    let first = during_partial.next().await.unwrap();
    assert_eq!(first.type_name(), "run.started");
    assert_eq!(call.seq, 3);
    gate.add_permits(1);

    let result = within(10, "run", run.result()).await;
    let after = collect(run.events()).await;
    let before = before.await.unwrap();
    let during = collect(during).await;
    let mut partial = vec![first];
    partial.extend(collect(during_partial).await);
    let before_twice = collect(before_twice).await;

    assert_eq!(types(&after), TWO_TURN_TYPES);
    for (name, log) in
        [("before", &before), ("during", &during), ("partial", &partial), ("before_twice", &before_twice)]
    {
        assert_eq!(log, &after, "{name} differs");
    }
    assert_eq!(&after[..], &result.events[..]);
    // A run handle's transcript carries the same log once finished.
    assert_eq!(&run.transcript().events[..], &after[..]);
    check_log(&after, run.id(), run.session_id(), RunState::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_consumers_on_another_thread_see_the_result_events() {
    let model = ScriptedModel::new([ScriptedTurn::tool_call("lookup", json!({"x": "a"})), ScriptedTurn::text("done")]);
    let agent = Agent::builder().model(model.looping()).tool(echo_tool("lookup")).build().unwrap();
    for _ in 0..20 {
        let run = agent.start("go");
        let live = tokio::spawn(collect(run.events()));
        let result = run.result().await;
        let live = within(10, "live consumer", live).await.unwrap();
        assert_eq!(&live[..], &result.events[..]);
        assert_eq!(types(&live), TWO_TURN_TYPES);
        check_log(&live, &result.run_id, &result.session_id, RunState::Completed);
    }
}

struct BreaksMidStream;

#[async_trait::async_trait]
impl loom_agent::LanguageModel for BreaksMidStream {
    fn name(&self) -> &str {
        "breaks"
    }
    async fn stream(
        &self,
        _request: &loom_agent::model::ModelRequest<'_>,
    ) -> Result<loom_agent::model::ModelStream, loom_agent::ModelError> {
        use loom_agent::model::ModelChunk;
        let chunks = vec![
            Ok(ModelChunk::Text("partial ".into())),
            Err(loom_agent::ModelError::RateLimited { message: "slow down".into(), retry_after: None }),
            Ok(ModelChunk::Text("never".into())),
        ];
        Ok(Box::pin(futures::stream::iter(chunks)))
    }
}

#[tokio::test]
async fn a_model_error_mid_stream_fails_the_run_after_the_deltas_already_sent() {
    let agent = Agent::builder().model(BreaksMidStream).build().unwrap();
    let result = failed_result(agent.run("hi").await.unwrap_err());
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, RunErrorKind::Model);
    assert_eq!(error.model_error.as_deref(), Some("rate_limited"));
    assert!(error.message.contains("slow down"), "{}", error.message);
    assert_eq!(types(&result.events), ["run.started", "model.request", "model.delta", "run.failed"]);
    assert_eq!(result.output, "", "a partial answer is not an output");
}

struct NamelessCall;

#[async_trait::async_trait]
impl loom_agent::LanguageModel for NamelessCall {
    fn name(&self) -> &str {
        "nameless"
    }
    async fn stream(
        &self,
        _request: &loom_agent::model::ModelRequest<'_>,
    ) -> Result<loom_agent::model::ModelStream, loom_agent::ModelError> {
        let chunk = loom_agent::model::ModelChunk::ToolCallDelta {
            index: 0,
            id: Some("c".into()),
            name: None,
            arguments: "{}".into(),
        };
        Ok(Box::pin(futures::stream::iter([Ok(chunk)])))
    }
}

#[tokio::test]
async fn a_malformed_model_response_fails_with_a_protocol_error() {
    let agent = Agent::builder().model(NamelessCall).build().unwrap();
    let result = failed_result(agent.run("hi").await.unwrap_err());
    assert_eq!(result.state, RunState::Failed);
    assert_eq!(result.error.unwrap().model_error.as_deref(), Some("protocol"));
}
