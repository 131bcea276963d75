//! Property tests over random scripts (text turns, tool-call turns with good and bad calls, model
//! errors): the live log equals the replayed log equals the result's; seq is contiguous; exactly one
//! terminal event, last; every tool.call has exactly one tool.result; the final state and turn count
//! are the ones the script implies; session history never holds a dangling tool call.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use loom_agent::store::SessionKey;
use std::collections::HashMap;

use common::*;
use loom_agent::message::Message;
use loom_agent::model::{ScriptedTurn, SharedModel};
use loom_agent::store::SessionStore;
use loom_agent::tool::{FunctionTool, ToolErrorKind, ToolOutput};
use loom_agent::{Agent, EventKind, RunRequest, RunState, SessionConfig, ToolError};
use proptest::prelude::*;
use serde_json::json;

#[derive(Clone, Debug)]
enum Call {
    /// A concurrency-safe tool.
    Safe(String),
    /// A tool that runs alone.
    Alone(String),
    /// A tool that returns an error.
    Fails,
    /// A tool that creates an artifact.
    Artifact,
    /// A tool nobody registered.
    Unknown,
    /// Arguments that are not JSON.
    Malformed,
    /// Arguments that do not fit the schema.
    WrongType,
}

#[derive(Clone, Debug)]
enum Turn {
    Text(String, bool),
    Calls(Vec<Call>),
    Error,
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        "[a-z]{0,6}".prop_map(Call::Safe),
        "[a-z]{0,6}".prop_map(Call::Alone),
        Just(Call::Fails),
        Just(Call::Artifact),
        Just(Call::Unknown),
        Just(Call::Malformed),
        Just(Call::WrongType),
    ]
}

fn turn() -> impl Strategy<Value = Turn> {
    prop_oneof![
        2 => ("[a-z ]{0,24}", any::<bool>()).prop_map(|(t, s)| Turn::Text(t, s)),
        5 => proptest::collection::vec(call(), 0..4).prop_map(Turn::Calls),
        1 => Just(Turn::Error),
    ]
}

fn script() -> impl Strategy<Value = Vec<Turn>> {
    proptest::collection::vec(turn(), 1..7)
}

fn scripted_turn(turn: &Turn) -> ScriptedTurn {
    match turn {
        Turn::Text(t, streamed) => {
            let t = ScriptedTurn::text(t.clone());
            if *streamed { t.streamed() } else { t }
        }
        Turn::Error => ScriptedTurn::error("flaky"),
        Turn::Calls(calls) => calls.iter().fold(ScriptedTurn::default(), |t, c| match c {
            Call::Safe(x) => t.with_tool_call("safe", json!({"x": x})),
            Call::Alone(x) => t.with_tool_call("alone", json!({"x": x})),
            Call::Fails => t.with_tool_call("fails", json!({})),
            Call::Artifact => t.with_tool_call("artifact", json!({})),
            Call::Unknown => t.with_tool_call("ghost", json!({})),
            Call::Malformed => t.with_raw_tool_call("safe", "{\"x\": "),
            Call::WrongType => t.with_tool_call("alone", json!({"x": 7})),
        }),
    }
}

fn expected_kind(call: &Call) -> Option<ToolErrorKind> {
    match call {
        Call::Safe(_) | Call::Alone(_) | Call::Artifact => None,
        Call::Fails => Some(ToolErrorKind::Failed),
        Call::Unknown => Some(ToolErrorKind::NotFound),
        Call::Malformed | Call::WrongType => Some(ToolErrorKind::InvalidArguments),
    }
}

/// What the script implies: the final state, the model calls made, and the output.
fn simulate(script: &[Turn], max_turns: u32) -> (RunState, u32, String) {
    let mut i = 0usize;
    loop {
        if i as u32 >= max_turns {
            return (RunState::Interrupted, max_turns, String::new());
        }
        match script.get(i) {
            None | Some(Turn::Error) => return (RunState::Failed, i as u32 + 1, String::new()),
            Some(Turn::Text(t, _)) => return (RunState::Completed, i as u32 + 1, t.clone()),
            Some(Turn::Calls(calls)) if calls.is_empty() => return (RunState::Completed, i as u32 + 1, String::new()),
            Some(Turn::Calls(_)) => i += 1,
        }
    }
}

fn agent(model: SharedModel, store: SharedStore) -> Agent {
    let fails = FunctionTool::new("fails", "Fails.", json!({"type": "object"}), |_c, _a| async {
        Err(ToolError::new("it failed"))
    });
    let artifact =
        FunctionTool::new("artifact", "Makes an artifact.", json!({"type": "object"}), |ctx, _a| async move {
            ctx.create_artifact("a.txt", "text/plain", "content");
            Ok(ToolOutput::text("made"))
        })
        .concurrency_safe();
    Agent::builder()
        .instructions("Props.")
        .model(model)
        .tool(echo_tool("safe").concurrency_safe())
        .tool(echo_tool("alone"))
        .tool(fails)
        .tool(artifact)
        .session_store(store)
        .build()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Every tool message answers a call of the assistant message before it, each call is answered
/// exactly once, and no call is left unanswered.
fn assert_history_consistent(history: &[Message]) {
    let mut pending: Vec<String> = Vec::new();
    for (i, m) in history.iter().enumerate() {
        match m {
            Message::Tool { call_id, .. } => {
                let pos = pending.iter().position(|p| p == call_id);
                assert!(pos.is_some(), "message {i}: a tool result without its call: {history:?}");
                pending.remove(pos.unwrap());
            }
            other => {
                assert!(pending.is_empty(), "message {i}: calls {pending:?} left unanswered: {history:?}");
                if let Message::Assistant { tool_calls, .. } = other {
                    pending = tool_calls.iter().map(|c| c.id.clone()).collect();
                }
            }
        }
    }
    assert!(pending.is_empty(), "the history ends with unanswered calls {pending:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn live_replayed_and_result_logs_agree_and_hold_the_invariants(script in script(), max_turns in 1u32..8) {
        let rt = runtime();
        rt.block_on(async {
            let (_, model) = scripted(script.iter().map(scripted_turn));
            let agent = agent(model, SharedStore::default());
            let run = agent.start(RunRequest::new("go").max_turns(max_turns));
            let live = tokio::spawn(collect(run.events()));
            let result = within(20, "run", run.result()).await;
            let live = within(20, "live consumer", live).await.unwrap();
            let replay = collect(run.events()).await;

            assert_eq!(&live[..], &result.events[..], "live != result");
            assert_eq!(&replay[..], &result.events[..], "replay != result");
            check_log(&result.events, &result.run_id, &result.session_id, result.state);

            let (state, turns, output) = simulate(&script, max_turns);
            assert_eq!(result.state, state, "{:?}", types(&result.events));
            assert_eq!(result.turns, turns);
            if state == RunState::Completed {
                assert_eq!(result.output, output);
            }
            let requests = types(&result.events).iter().filter(|t| **t == "model.request").count();
            assert_eq!(requests as u32, turns);

            // Every tool.call has exactly one tool.result with the same id and the expected kind.
            let calls = tool_call_ids(&result.events);
            let results = tool_results(&result.events);
            let mut by_id: HashMap<String, usize> = HashMap::new();
            for r in &results {
                *by_id.entry(r.call_id.clone()).or_default() += 1;
            }
            assert_eq!(results.len(), calls.len());
            for id in &calls {
                assert_eq!(by_id.get(id), Some(&1), "call {id}: {:?}", types(&result.events));
            }
            for r in &results {
                let (turn, index) = r.call_id.strip_prefix("call_").unwrap().split_once('_').unwrap();
                let Turn::Calls(script_calls) = &script[turn.parse::<usize>().unwrap() - 1] else { panic!() };
                let call = &script_calls[index.parse::<usize>().unwrap()];
                assert_eq!(r.error_kind, expected_kind(call), "{call:?}: {}", r.output);
                assert_eq!(r.is_error, r.error_kind.is_some());
            }
            // Each tool.result comes after its tool.call.
            for r in &results {
                let call_at = result.events.iter().position(|e| matches!(&e.kind, EventKind::ToolCall(c) if c.call.id == r.call_id)).unwrap();
                let result_at = result.events.iter().position(|e| matches!(&e.kind, EventKind::ToolResult(x) if x.call_id == r.call_id)).unwrap();
                assert!(call_at < result_at);
            }
            let artifacts = results.iter().filter(|r| r.name == "artifact").count();
            assert_eq!(result.artifacts.len(), artifacts);
        });
    }

    #[test]
    fn session_history_never_holds_a_dangling_tool_call(
        scripts in proptest::collection::vec((script(), 1u32..5), 1..4)
    ) {
        let rt = runtime();
        rt.block_on(async {
            let store = SharedStore::default();
            let all: Vec<ScriptedTurn> = scripts.iter().flat_map(|(s, _)| s.iter().map(scripted_turn)).collect();
            let (model, shared) = scripted(all);
            let agent = agent(shared, store.clone());
            let session = agent.session(SessionConfig::new("props"));
            let mut completed_or_interrupted = 0;
            for (i, (_, max_turns)) in scripts.iter().enumerate() {
                let result = within(20, "run", session.start(RunRequest::new(format!("prompt {i}")).max_turns(*max_turns)).result()).await;
                if matches!(result.state, RunState::Completed | RunState::Interrupted) {
                    completed_or_interrupted += 1;
                }
            }
            let history = store.0.history(SessionKey::new("props")).await.unwrap();
            assert_history_consistent(&history);
            // Each kept run contributed its prompt, once, in order.
            let prompts: Vec<String> = history.iter().filter(|m| matches!(m, Message::User { .. })).map(Message::text).collect();
            assert_eq!(prompts.len(), completed_or_interrupted);
            let mut sorted = prompts.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), prompts.len());
            // The model saw the instructions exactly once in every request.
            for r in model.requests() {
                assert_eq!(r.messages.iter().filter(|m| matches!(m, Message::System { .. })).count(), 1);
                assert_eq!(r.messages[0], Message::system("Props."));
            }
        });
    }
}
