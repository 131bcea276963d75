//! One agent under load: 1,000 concurrent runs across 100 sessions with no cross-talk, concurrent
//! callers, slow and many consumers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use loom_agent::message::{Message, ToolCall};
use loom_agent::model::{FnModel, ScriptedTurn};
use loom_agent::store::SessionKey;
use loom_agent::store::SessionStore;
use loom_agent::{Agent, Run, RunRequest, RunState, RunStream, Session};
use serde_json::json;

/// Turn 1 calls `tag` with the prompt; turn 2 answers with the tool's output. A small delay on
/// some calls interleaves the runs.
fn tagging_model() -> FnModel {
    FnModel::new("tagger", |req| {
        let delay = Duration::from_millis(u64::from(req.turn % 2));
        match req.messages.last() {
            Some(Message::Tool { content, .. }) => ScriptedTurn::text(format!("ans:{content}")).with_delay(delay),
            _ => ScriptedTurn::tool_call("tag", json!({"x": last_user_text(req.messages)})).with_delay(delay),
        }
    })
}

#[test]
fn handles_are_send_sync_and_cheap_to_clone() {
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    fn send<T: Send>() {}
    send_sync_clone::<Agent>();
    send_sync_clone::<Session>();
    send_sync_clone::<Run>();
    send_sync_clone::<loom_agent::Event>();
    send::<RunStream>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_runs_across_a_hundred_sessions_have_no_cross_talk() {
    const SESSIONS: usize = 100;
    const RUNS: usize = 1_000;
    let store = SharedStore::default();
    let agent = Agent::builder()
        .instructions("Tag it.")
        .model(tagging_model())
        .tool(echo_tool("tag").concurrency_safe())
        .session_store(store.clone())
        .build()
        .unwrap();

    let mut runs = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let session = format!("s{}", i % SESSIONS);
        let prompt = format!("p:{session}:{i}");
        // Three users share every session id: each (user, id) is its own conversation.
        let user = format!("u{}", i % 3);
        let run = agent.start(RunRequest::new(prompt.clone()).session(session.clone()).user(user.clone()));
        runs.push((i, (user, session), prompt, run));
    }
    let results = within(60, "1000 runs", futures::future::join_all(runs.iter().map(|(_, _, _, r)| r.result()))).await;

    let mut by_session: HashMap<(String, String), Vec<String>> = HashMap::new();
    for ((i, (user, session), prompt, run), result) in runs.iter().zip(&results) {
        assert_eq!(result.state, RunState::Completed, "run {i}: {:?}", result.error);
        assert_eq!(result.output, format!("ans:tag:{prompt}"), "run {i} got another run's answer");
        assert_eq!(&result.session_id, session);
        assert_eq!(result.run_id, run.id());
        assert_eq!(result.user_id.as_deref(), Some(user.as_str()));
        check_log(&result.events, run.id(), session, RunState::Completed);
        let tool = tool_results(&result.events);
        assert_eq!(tool.len(), 1);
        assert_eq!(tool[0].output, format!("tag:{prompt}"));
        by_session.entry((user.clone(), session.clone())).or_default().push(prompt.clone());
    }
    let run_ids: std::collections::HashSet<&str> = results.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(run_ids.len(), RUNS, "run ids are unique");

    // Every session's history holds exactly its own user's runs, in the order they were started.
    assert_eq!(by_session.len(), SESSIONS * 3);
    for ((user, session), prompts) in &by_session {
        let key = SessionKey::of_user(user, session);
        let history = store.0.history(key).await.unwrap();
        let mut expected = Vec::with_capacity(prompts.len() * 4);
        for p in prompts {
            expected.push(Message::user(p.clone()));
            expected.push(Message::Assistant {
                content: String::new(),
                thinking: vec![],
                tool_calls: vec![ToolCall::new("call_1_0", "tag", &json!({"x": p}))],
            });
            expected.push(Message::tool("call_1_0", "tag", format!("tag:{p}"), false));
            expected.push(Message::assistant(format!("ans:tag:{p}")));
        }
        assert_eq!(history, expected, "history of {session} for {user}");
        let listed = store.0.list_runs(key).await.unwrap();
        assert_eq!(listed.len(), prompts.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_on_cloned_agents_each_get_their_own_answer() {
    let agent = Agent::builder().model(tagging_model()).tool(echo_tool("tag")).build().unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let agent = agent.clone();
            tokio::spawn(async move {
                let prompt = format!("caller {i}");
                let result = agent.run(RunRequest::new(prompt.clone()).user(format!("u{i}"))).await.unwrap();
                assert_eq!(result.output, format!("ans:tag:{prompt}"));
                assert_eq!(result.user_id, Some(format!("u{i}")));
                result.session_id
            })
        })
        .collect();
    let mut sessions = Vec::new();
    for t in tasks {
        sessions.push(within(30, "caller", t).await.unwrap());
    }
    sessions.sort();
    sessions.dedup();
    assert_eq!(sessions.len(), 200, "every anonymous run has its own session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_polling_slows_nothing_and_later_gets_every_event() {
    let agent = Agent::builder().model(tagging_model()).tool(echo_tool("tag")).build().unwrap();
    let slow_run = agent.start("slow one");
    let mut stalled = slow_run.events();
    let first = within(5, "first event", stalled.next()).await.unwrap();
    assert_eq!(first.type_name(), "run.started");
    // Nobody polls `stalled` now. Its own run and 100 others still finish.
    let others: Vec<Run> = (0..100).map(|i| agent.start(format!("other {i}"))).collect();
    for r in &others {
        assert_eq!(within(30, "other run", r.result()).await.state, RunState::Completed);
    }
    let result = within(10, "the stalled consumer's run", slow_run.result()).await;
    assert_eq!(result.output, "ans:tag:slow one");
    let mut all = vec![first];
    all.extend(collect(stalled).await);
    assert_eq!(&all[..], &result.events[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_consumers_of_one_run_all_see_the_same_log() {
    let agent = Agent::builder().model(tagging_model()).tool(echo_tool("tag")).build().unwrap();
    let run = agent.start("shared");
    let consumers: Vec<_> = (0..50).map(|_| tokio::spawn(collect(run.events()))).collect();
    let result = run.result().await;
    for c in consumers {
        let events = within(10, "consumer", c).await.unwrap();
        assert_eq!(&events[..], &result.events[..]);
    }
}
