//! Context management: a long session under a small window (scripted model), the summary the next
//! run starts from, and the same against the OpenAI and Anthropic wire formats (mock servers), with
//! every request checked: under the window, every tool call paired with its result.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::*;
use loom_agent::event::EventKind;
use loom_agent::message::{ContentPart, Message};
use loom_agent::model::{FnModel, Model, ScriptedToolCall, ScriptedTurn};
use loom_agent::store::{InMemorySessionStore, SessionKey, SessionStore};
use loom_agent::tool::{FunctionTool, ToolOutput};
use loom_agent::{Agent, RunRequest, RunState, Runtime};
use loom_testkit::{MockServer, Reply};
use serde_json::{Value, json};

const WINDOW: u32 = 2_000;

/// The tokens of a request as a provider without a published tokenizer would be estimated: about
/// four bytes a token, and a few per message.
fn estimate(messages: &[Message]) -> u64 {
    messages
        .iter()
        .map(|m| {
            let text: usize = match m {
                Message::System { content } => content.len(),
                Message::User { content } => content
                    .iter()
                    .map(|p| match p {
                        ContentPart::Text { text } => text.len(),
                        ContentPart::Image { .. } => 4_000,
                    })
                    .sum(),
                Message::Assistant { content, tool_calls, .. } => {
                    content.len() + tool_calls.iter().map(|c| c.name.len() + c.arguments.len() + 12).sum::<usize>()
                }
                Message::Tool { content, name, .. } => content.len() + name.len(),
            };
            text.div_ceil(4) as u64 + 4
        })
        .sum()
}

/// Every assistant tool call is answered right after it, and every tool result answers a call of
/// the assistant message before it; the first message after the system ones is the user's.
fn assert_paired(messages: &[Message]) {
    let first = messages.iter().find(|m| !matches!(m, Message::System { .. }));
    assert!(matches!(first, Some(Message::User { .. })), "first message: {first:?}");
    let mut open: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match m {
            Message::Tool { call_id, .. } => {
                let at = open.iter().position(|id| id == call_id);
                assert!(at.is_some(), "message {i}: tool result {call_id} without its call");
                open.retain(|id| id != call_id);
            }
            other => {
                assert!(open.is_empty(), "message {i} ({}) before the results of {open:?}", other.role());
                if let Message::Assistant { tool_calls, .. } = other {
                    open = tool_calls.iter().map(|c| c.id.clone()).collect();
                }
            }
        }
    }
}

fn lookup_tool() -> FunctionTool {
    FunctionTool::new("lookup", "Looks something up.", json!({"type": "object"}), |_ctx, args| async move {
        let n = args["n"].as_u64().unwrap_or(0);
        Ok(ToolOutput::text(format!("result {n}: {}", "lorem ipsum dolor sit amet ".repeat(12))))
    })
    .read_only()
}

#[tokio::test]
async fn a_500_turn_session_stays_under_a_small_window_with_paired_calls_and_a_reused_summary() {
    const RUNS: usize = 25;
    const TURNS_PER_RUN: u64 = 20;
    let requests: Arc<Mutex<Vec<Vec<Message>>>> = Arc::default();
    let summaries = Arc::new(Mutex::new(0usize));
    let per_run: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let model = {
        let (requests, summaries, per_run) = (requests.clone(), summaries.clone(), per_run.clone());
        FnModel::new("small-window", move |request| {
            requests.lock().unwrap().push(request.messages.to_vec());
            if let Some(Message::System { content }) = request.messages.first()
                && content.starts_with("You condense")
            {
                let mut n = summaries.lock().unwrap();
                *n += 1;
                return ScriptedTurn::text(format!(
                    "Summary {n}: looked up items; decided to keep going; open: finish the lookups."
                ));
            }
            let mut runs = per_run.lock().unwrap();
            let done = runs.entry(request.run_id.to_string()).or_default();
            *done += 1;
            if *done < TURNS_PER_RUN {
                ScriptedTurn {
                    text: Some(format!("step {done}")),
                    tool_calls: vec![ScriptedToolCall {
                        id: Some(format!("{}-{done}", request.run_id)),
                        name: "lookup".into(),
                        arguments: json!({"n": *done}),
                    }],
                    ..ScriptedTurn::default()
                }
            } else {
                ScriptedTurn::text(format!("finished {}", request.run_id))
            }
        })
    };
    let store = Arc::new(InMemorySessionStore::new());
    let runtime = Runtime::builder("long").max_turns(64).context_window(WINDOW).build();
    let agent = Agent::builder()
        .instructions("Look things up.")
        .model(model)
        .tool(lookup_tool())
        .session_store(store.clone())
        .runtime(runtime)
        .build()
        .unwrap();
    let mut compacted = 0;
    let mut history_len = 0;
    for run in 0..RUNS {
        let result = agent.run(RunRequest::new(format!("task {run}")).session("long")).await.unwrap();
        assert_eq!(result.state, RunState::Completed);
        assert_eq!(result.turns as u64, TURNS_PER_RUN);
        for e in result.events.iter() {
            if let EventKind::ContextCompacted(c) = &e.kind {
                assert!(c.tokens_after < c.tokens_before, "{c:?}");
                assert!(c.tokens_after <= c.threshold, "{c:?}");
                compacted += 1;
            }
        }
        // The history stays whole: every message of every run.
        let history = store.history(SessionKey::new("long")).await.unwrap();
        assert_eq!(history.len(), history_len + 1 + 2 * (TURNS_PER_RUN as usize - 1) + 1);
        history_len = history.len();
    }
    eprintln!("compactions: {compacted}, summaries: {}", *summaries.lock().unwrap());
    assert!(compacted >= RUNS, "compacted {compacted} times");
    let seen = requests.lock().unwrap().clone();
    assert_eq!(seen.len(), RUNS * TURNS_PER_RUN as usize + *summaries.lock().unwrap());
    for (i, messages) in seen.iter().enumerate() {
        let tokens = estimate(messages);
        assert!(tokens <= u64::from(WINDOW), "request {i} has {tokens} tokens");
        assert_paired(messages);
    }
    // The session keeps the last summary, and the next run starts from it rather than the history.
    let summary = store.summary(SessionKey::new("long")).await.unwrap().expect("a stored summary");
    assert!(summary.covers > 0 && summary.covers <= history_len);
    let before = requests_len(&requests);
    agent.run(RunRequest::new("one more").session("long")).await.unwrap();
    let requests = requests.lock().unwrap().clone();
    let first = &requests[before];
    assert!(first[1].text().contains(&summary.text), "the next run starts from the summary: {:?}", first[1]);
    assert!(first.len() < history_len, "not the whole history");
    assert!(!first.iter().any(|m| m.text() == "task 0"), "the first run's input is summarized");
}

fn requests_len(requests: &Mutex<Vec<Vec<Message>>>) -> usize {
    requests.lock().unwrap().len()
}

#[tokio::test]
async fn under_the_threshold_nothing_is_compacted_and_the_history_is_sent_whole() {
    let (model, shared) = scripted([ScriptedTurn::text("a"), ScriptedTurn::text("b")]);
    let agent = Agent::builder().model(shared).runtime(Runtime::long_running(Vec::<String>::new())).build().unwrap();
    let first = agent.run(RunRequest::new("q1").session("s")).await.unwrap();
    let second = agent.run(RunRequest::new("q2").session("s")).await.unwrap();
    assert!(!first.events.iter().chain(second.events.iter()).any(|e| e.type_name() == "context.compacted"));
    let sent = &model.requests()[1].messages;
    assert_eq!(sent, &vec![Message::user("q1"), Message::assistant("a"), Message::user("q2")]);
}

/// One streamed OpenAI answer with text and a tool call (the text doubles as a summary when the
/// call is a summarizing one). Usage reports no prompt tokens, so the estimate is not recalibrated.
fn openai_step(n: usize) -> Reply {
    use loom_testkit::wire::openai as w;
    Reply::sse(vec![
        w::role(),
        w::text(&format!("Note {n}: looked up item {n}; next, look up item {}.", n + 1)),
        w::tool_call_start(0, &format!("call_{n}"), "lookup"),
        w::tool_call_args(0, &format!("{{\"n\": {n}}}")),
        w::finish("tool_calls"),
        w::usage(0, 0, 5),
        w::done(),
    ])
}

fn anthropic_step(n: usize) -> Reply {
    use loom_testkit::wire::anthropic as w;
    Reply::sse(vec![
        w::message_start(0, 0, 0),
        w::text_start(0),
        w::text_delta(0, &format!("Note {n}: looked up item {n}; next, look up item {}.", n + 1)),
        w::block_stop(0),
        w::tool_use_start(1, &format!("toolu_{n}"), "lookup"),
        w::input_json_delta(1, &format!("{{\"n\": {n}}}")),
        w::block_stop(1),
        w::message_delta("tool_use", 5),
        w::message_stop(),
    ])
}

/// OpenAI Chat Completions: every tool call answered by `tool` messages right after it.
fn assert_openai_paired(body: &Value) {
    let messages = body["messages"].as_array().unwrap();
    let mut open: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if m["role"] == "tool" {
            let id = m["tool_call_id"].as_str().unwrap().to_string();
            assert!(open.contains(&id), "message {i}: result {id} without its call");
            open.retain(|x| *x != id);
        } else {
            assert!(open.is_empty(), "message {i} before the results of {open:?}");
            if let Some(calls) = m["tool_calls"].as_array() {
                open = calls.iter().map(|c| c["id"].as_str().unwrap().to_string()).collect();
            }
        }
    }
    assert!(open.is_empty(), "unanswered calls at the end: {open:?}");
}

/// Anthropic Messages: every tool_use answered by a tool_result in the next (user) message, and
/// every tool_result answering a tool_use of the message before; the first message is the user's.
fn assert_anthropic_paired(body: &Value) {
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "user");
    let blocks = |m: &Value, kind: &str, key: &str| -> Vec<String> {
        m["content"]
            .as_array()
            .map(|c| c.iter().filter(|b| b["type"] == kind).map(|b| b[key].as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    for (i, m) in messages.iter().enumerate() {
        let results = blocks(m, "tool_result", "tool_use_id");
        let uses_before = if i > 0 { blocks(&messages[i - 1], "tool_use", "id") } else { Vec::new() };
        let mut results_sorted = results.clone();
        results_sorted.sort();
        let mut uses_sorted = uses_before.clone();
        uses_sorted.sort();
        if !uses_before.is_empty() || !results.is_empty() {
            assert_eq!(results_sorted, uses_sorted, "message {i}: results {results:?} for uses {uses_before:?}");
        }
    }
}

async fn provider_session(
    model: loom_agent::model::SharedModel,
    server: &MockServer,
    steps: usize,
    final_reply: Reply,
) {
    for n in 0..steps {
        server.enqueue(match model.provider() {
            "anthropic" => anthropic_step(n),
            _ => openai_step(n),
        });
    }
    server.always(final_reply);
    let store = Arc::new(InMemorySessionStore::new());
    let runtime = Runtime::builder("long").max_turns(100).context_window(3_000).build();
    let agent = Agent::builder()
        .model(model)
        .tool(lookup_tool())
        .session_store(store.clone())
        .runtime(runtime)
        .build()
        .unwrap();
    let result = agent.run(RunRequest::new("look up everything").session("p")).await.unwrap();
    assert!(result.events.iter().any(|e| e.type_name() == "context.compacted"), "it compacted");
    assert!(store.summary(SessionKey::new("p")).await.unwrap().is_some());
    // The next run starts from the summary.
    agent.run(RunRequest::new("and now?").session("p")).await.unwrap();
}

#[tokio::test]
async fn compaction_against_the_openai_wire_format_keeps_calls_paired_and_under_the_window() {
    use loom_testkit::wire::openai as w;
    let server = MockServer::start().await;
    let model: loom_agent::model::SharedModel = Arc::new(Model::openai("gpt-4o").base_url(server.url()).api_key("k"));
    let final_reply = Reply::sse(vec![w::role(), w::text("all done"), w::finish("stop"), w::usage(0, 0, 2), w::done()]);
    provider_session(model, &server, 30, final_reply).await;
    let counter =
        loom_agent::model::providers::tokens::OpenAiBpe::new(loom_agent::model::providers::tokens::Encoding::O200k);
    use loom_agent::model::TokenCounter;
    let requests = server.requests();
    assert!(requests.len() > 31, "the summarizing calls went to the provider too");
    let mut summarized = 0;
    for (i, r) in requests.iter().enumerate() {
        let body = r.json();
        assert_openai_paired(&body);
        let tokens: usize = body["messages"].as_array().unwrap().iter().map(|m| counter.count(&m.to_string())).sum();
        assert!(tokens <= 3_000, "request {i}: {tokens} tokens of JSON");
        if body["messages"][0]["content"].as_str().is_some_and(|s| s.starts_with("You condense")) {
            summarized += 1;
            assert!(body.get("tools").is_none(), "the summarizer is offered no tools");
        }
    }
    assert!(summarized >= 1);
    let last = requests.last().unwrap().json();
    assert!(last["messages"].to_string().contains("Summary of the earlier conversation"));
}

#[tokio::test]
async fn compaction_against_the_anthropic_wire_format_keeps_calls_paired() {
    use loom_testkit::wire::anthropic as w;
    let server = MockServer::start().await;
    let model: loom_agent::model::SharedModel =
        Arc::new(Model::anthropic("claude-sonnet-4-5").base_url(server.url()).api_key("k"));
    let final_reply = Reply::sse(w::text_stream("all done", 0, 2));
    provider_session(model, &server, 30, final_reply).await;
    let requests = server.requests();
    let mut summarized = 0;
    for r in &requests {
        let body = r.json();
        assert_anthropic_paired(&body);
        if body["system"].to_string().contains("You condense") {
            summarized += 1;
        }
        assert!(body.to_string().len() / 4 <= 3_000 + 500, "about under the window");
    }
    assert!(summarized >= 1);
}

/// A model for the resume test: tool calls until turn 20, then an answer; a summary when asked
/// for one; the call of turn `stall_at` waits 30 s (the process "dies" during it).
fn by_turn(stall_at: Option<u32>, seen: Arc<Mutex<Vec<Vec<Message>>>>) -> FnModel {
    FnModel::new("small-window", move |request| {
        seen.lock().unwrap().push(request.messages.to_vec());
        if let Some(Message::System { content }) = request.messages.first()
            && content.starts_with("You condense")
        {
            return ScriptedTurn::text("Summary: looked up items 1 to n; open: the rest.");
        }
        let turn = request.turn;
        let reply = if turn < 20 {
            ScriptedTurn {
                text: Some(format!("step {turn}")),
                tool_calls: vec![ScriptedToolCall {
                    id: Some(format!("c{turn}")),
                    name: "lookup".into(),
                    arguments: json!({"n": turn}),
                }],
                ..ScriptedTurn::default()
            }
        } else {
            ScriptedTurn::text("finished")
        };
        match stall_at {
            Some(t) if t == turn => reply.with_delay(std::time::Duration::from_secs(30)),
            _ => reply,
        }
    })
}

#[tokio::test]
async fn a_resumed_run_rebuilds_its_compacted_view_from_the_journal_without_summarizing_again() {
    use loom_agent::store::{InMemoryJournal, Journal, JournalEntry};
    use std::time::Duration;
    let journal = Arc::new(InMemoryJournal::new());
    let first = journal.clone();
    let runtime = || Runtime::builder("long").max_turns(64).context_window(WINDOW).build();
    let (run_id, compacted_at, summary) = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let out = rt.block_on(async move {
            // Find where the first compaction happens, then stall the call right after it.
            let probe = Agent::builder()
                .model(by_turn(None, Arc::default()))
                .tool(lookup_tool())
                .runtime(runtime())
                .build()
                .unwrap();
            let probe = probe.run("go").await.unwrap();
            let at = probe
                .events
                .iter()
                .find_map(|e| match &e.kind {
                    EventKind::ContextCompacted(c) => Some(c.turn),
                    _ => None,
                })
                .expect("the probe compacts");
            let agent = Agent::builder()
                .model(by_turn(Some(at + 1), Arc::default()))
                .tool(lookup_tool())
                .journal(first.clone())
                .lease_ttl(Duration::from_millis(100))
                .runtime(runtime())
                .build()
                .unwrap();
            let run = agent.start("go");
            let run_id = run.id().to_string();
            let summary = within(10, "the compaction is journaled", async {
                loop {
                    let entries = first.load(&run_id).await.unwrap().map(|r| r.entries).unwrap_or_default();
                    let found = entries.iter().find_map(|e| match e {
                        JournalEntry::ContextCompacted { compaction, .. } => compaction.summary.clone(),
                        _ => None,
                    });
                    let answered =
                        entries.iter().any(|e| matches!(e, JournalEntry::ModelResult { turn, .. } if *turn == at));
                    if let (Some(summary), true) = (found, answered) {
                        break summary;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            (run_id, at, summary)
        });
        rt.shutdown_background();
        out
    })
    .join()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;

    let requests: Arc<Mutex<Vec<Vec<Message>>>> = Arc::default();
    let recording = by_turn(None, requests.clone());
    let agent = Agent::builder()
        .model(recording)
        .tool(lookup_tool())
        .journal(journal.clone())
        .runtime(runtime())
        .build()
        .unwrap();
    let result = agent.resume(&run_id).await.unwrap().result().await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    let requests = requests.lock().unwrap();
    // The first call the resumed run makes is the stalled one, and it already sees the summary.
    assert!(!requests[0][0].text().starts_with("You condense"), "no summarizing call before it");
    assert!(requests[0].iter().any(|m| m.text().contains(&summary)), "the journaled summary is in the view");
    assert!(requests.iter().all(|r| estimate(r) <= u64::from(WINDOW)));
    requests.iter().for_each(|r| assert_paired(r));
    let compactions: Vec<u32> = result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ContextCompacted(c) => Some(c.turn),
            _ => None,
        })
        .collect();
    assert_eq!(compactions.iter().filter(|t| **t == compacted_at).count(), 1, "{compactions:?}");
}
