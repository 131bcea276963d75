//! Signals through the agent: every urgency under every policy, observe → the next run's context,
//! run and interrupt (during a model call and during a tool), dedupe, a signal before its session
//! exists, signals that wait for a process (durable, across a restart: SQLite and PostgreSQL), and
//! tenant isolation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod signal_support;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use loom_agent::model::ScriptedTurn;
use loom_agent::signal::{
    Attention, RuntimeSignal, SessionState, SignalAdapter, SignalStatus, SignalStore, Urgency, UrgencyPolicy,
};
use loom_agent::store::SessionKey;
use loom_agent::tool::{FunctionTool, ToolOutput};
use loom_agent::{Agent, EventKind, RunErrorKind, RunState, SessionConfig};
use serde_json::json;
use signal_support::*;
use tokio::sync::Notify;

const URGENCIES: [Urgency; 4] = [Urgency::Low, Urgency::Normal, Urgency::High, Urgency::Critical];

fn echo_agent() -> Agent {
    Agent::builder().model("echo").build().unwrap()
}

fn with_policy(policy: impl loom_agent::signal::AttentionPolicy) -> Agent {
    Agent::builder().model("echo").attention(policy).build().unwrap()
}

#[tokio::test]
async fn every_urgency_under_every_policy() {
    type Policy = fn(&RuntimeSignal, &SessionState) -> Attention;
    let fixed: [(&str, Option<Attention>, Policy); 5] = [
        ("default", None, |s, st| loom_agent::signal::AttentionPolicy::decide(&UrgencyPolicy, s, st)),
        ("ignore", Some(Attention::Ignore), |_, _| Attention::Ignore),
        ("observe", Some(Attention::Observe), |_, _| Attention::Observe),
        ("run", Some(Attention::Run), |_, _| Attention::Run),
        ("interrupt", Some(Attention::Interrupt), |_, _| Attention::Interrupt),
    ];
    for (name, forced, policy) in fixed {
        let agent = with_policy(policy);
        for urgency in URGENCIES {
            let expected = forced.unwrap_or(match urgency {
                Urgency::Low => Attention::Observe,
                Urgency::Normal | Urgency::High => Attention::Run,
                Urgency::Critical => Attention::Interrupt,
            });
            let sid = format!("{name}-{urgency}");
            let signal = RuntimeSignal::create(format!("{name} {urgency}"), "test", "ping", urgency);
            let receipt = agent.receive(signal.clone(), None, &sid).await.unwrap();
            assert_eq!(receipt.attention, Some(expected), "{name}/{urgency}");
            assert!(!receipt.duplicate);
            let session = agent.session(SessionConfig::new(&sid));
            let stored = session.signals().await.unwrap();
            assert_eq!(stored.len(), 1);
            assert_eq!(stored[0].attention, Some(expected));
            match expected {
                Attention::Ignore | Attention::Observe => {
                    assert!(receipt.run.is_none(), "{name}/{urgency}");
                    let status =
                        if expected == Attention::Ignore { SignalStatus::Handled } else { SignalStatus::Observed };
                    assert_eq!(stored[0].status, status, "{name}/{urgency}");
                }
                Attention::Run | Attention::Interrupt => {
                    let result = within(5, "signal run", receipt.run.unwrap().result()).await;
                    assert_eq!(result.state, RunState::Completed, "{name}/{urgency}");
                    assert!(result.output.contains(&signal.text), "{}", result.output);
                    assert_eq!(result.output, format!("Echo: {}", signal.to_prompt()));
                    let names = types(&result.events);
                    assert_eq!(names[..2], ["run.started", "signal.received"], "{name}/{urgency}");
                    let EventKind::SignalReceived(e) = &result.events[1].kind else { panic!() };
                    assert_eq!((e.signal_id.as_str(), e.attention, e.urgency), (signal.id.as_str(), expected, urgency));
                    assert_eq!(stored[0].status, SignalStatus::Handled);
                    assert_eq!(stored[0].run_id.as_deref(), Some(result.run_id.as_str()));
                    check_log(&result.events, &result.run_id, &sid, RunState::Completed);
                }
            }
        }
    }
}

#[tokio::test]
async fn observed_signals_are_the_next_runs_context_once() {
    let (model, shared) = scripted([ScriptedTurn::text("first"), ScriptedTurn::text("second")]);
    let agent = Agent::builder().model(shared).build().unwrap();
    let session = agent.session(SessionConfig::new("obs"));
    let low = RuntimeSignal::create("the disk is 80% full", "monitor", "disk", Urgency::Low);
    let receipt = session.receive(low.clone(), None).await.unwrap();
    assert_eq!(receipt.attention, Some(Attention::Observe));
    let result = session.run("status?").await.unwrap();
    let request = &model.requests()[0].messages;
    let context = request.iter().map(|m| m.text()).find(|t| t.contains("disk is 80% full")).expect("in context");
    assert!(context.contains("[signal from monitor, disk, low]"), "{context}");
    assert_eq!(request.last().unwrap().text(), "status?", "the input stays last");
    let names = types(&result.events);
    assert!(names.contains(&"signal.handled"), "{names:?}");
    let stored = session.signals().await.unwrap();
    assert_eq!(stored[0].status, SignalStatus::Handled);
    assert_eq!(stored[0].run_id.as_deref(), Some(result.run_id.as_str()));
    // The next run does not see it again, and the history holds no copy of it.
    session.run("again").await.unwrap();
    let second = &model.requests()[1].messages;
    assert_eq!(second.iter().filter(|m| m.text().contains("disk is 80% full")).count(), 0);
}

#[tokio::test]
async fn a_run_signal_queues_behind_the_running_run() {
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let hold = FunctionTool::new("hold", "Waits.", json!({"type": "object"}), move |_ctx, _a| {
        let g = g.clone();
        async move {
            g.notified().await;
            Ok(ToolOutput::text("released"))
        }
    });
    let (_, shared) = scripted([
        ScriptedTurn::tool_call("hold", json!({})),
        ScriptedTurn::text("first done"),
        ScriptedTurn::text("signal done"),
    ]);
    let agent = Agent::builder().model(shared).tool(hold).build().unwrap();
    let session = agent.session(SessionConfig::new("queue"));
    let first = session.start("work");
    wait_for(&first, "tool.call").await;
    let receipt = session.receive(RuntimeSignal::new("new ticket"), None).await.unwrap();
    assert_eq!(receipt.attention, Some(Attention::Run));
    assert!(receipt.interrupted.is_empty());
    let queued = receipt.run.unwrap();
    assert_eq!(queued.state(), RunState::Queued);
    gate.notify_one();
    assert_eq!(within(5, "first", first.result()).await.output, "first done");
    assert_eq!(within(5, "queued", queued.result()).await.output, "signal done");
}

#[tokio::test]
async fn interrupt_during_a_model_call_cancels_with_the_signal_as_reason() {
    let agent = Agent::builder().model(slow_model(Duration::from_secs(3600))).build().unwrap();
    let session = agent.session(SessionConfig::new("int-model"));
    let running = session.start("long job");
    wait_for(&running, "model.request").await;
    let critical = RuntimeSignal::create("prod is down", "pager", "alert", Urgency::Critical);
    let receipt = session.receive(critical.clone(), None).await.unwrap();
    assert_eq!(receipt.attention, Some(Attention::Interrupt));
    assert_eq!(receipt.interrupted, [running.id().to_string()]);
    let result = within(5, "interrupted", running.result()).await;
    assert_eq!(result.state, RunState::Cancelled);
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, RunErrorKind::Cancelled);
    assert_eq!(error.reason.as_deref(), Some(format!("signal: {}", critical.id).as_str()));
    assert!(error.message.contains("prod is down"), "{}", error.message);
    check_log(&result.events, &result.run_id, "int-model", RunState::Cancelled);
    // The signal's own run started after it (and is itself stuck on the slow model: cancel it).
    let next = receipt.run.unwrap();
    wait_for(&next, "model.request").await;
    next.cancel();
    let next = within(5, "signal run", next.result()).await;
    assert_eq!(types(&next.events)[..2], ["run.started", "signal.received"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_during_a_tool_cancels_it_and_runs_the_signal() {
    let started = Arc::new(Notify::new());
    let s = started.clone();
    let wait = FunctionTool::new("wait", "Waits to be cancelled.", json!({"type": "object"}), move |ctx, _a| {
        let s = s.clone();
        async move {
            s.notify_one();
            ctx.cancellation().cancelled().await;
            Ok(ToolOutput::text("stopped"))
        }
    });
    let (model, shared) =
        scripted([ScriptedTurn::tool_call("wait", json!({})), ScriptedTurn::text("handled the alert")]);
    let agent = Agent::builder().model(shared).tool(wait).build().unwrap();
    let session = agent.session(SessionConfig::new("int-tool"));
    let running = session.start("long job");
    within(5, "tool start", started.notified()).await;
    let receipt = session
        .receive(RuntimeSignal::create("stop everything", "ops", "alert", Urgency::Critical), None)
        .await
        .unwrap();
    let cancelled = within(5, "interrupted", running.result()).await;
    assert_eq!(cancelled.state, RunState::Cancelled);
    assert!(cancelled.error.unwrap().reason.unwrap().starts_with("signal: "));
    let results = tool_results(&cancelled.events);
    assert_eq!(results.len(), 1, "the call in flight got its result");
    let next = within(5, "signal run", receipt.run.unwrap().result()).await;
    assert_eq!(next.state, RunState::Completed);
    assert_eq!(next.output, "handled the alert");
    assert_eq!(model.requests().len(), 2);
}

#[tokio::test]
async fn duplicates_are_dropped() {
    let agent = echo_agent();
    let first = agent.receive(RuntimeSignal::new("deploy 1.2").dedupe_key("deploy-1.2"), None, "dup").await.unwrap();
    let again = agent.receive(RuntimeSignal::new("deploy 1.2 (retry)").dedupe_key("deploy-1.2"), None, "dup").await;
    let again = again.unwrap();
    assert!(again.duplicate && again.run.is_none() && again.attention.is_none());
    within(5, "run", first.run.unwrap().result()).await;
    let session = agent.session(SessionConfig::new("dup"));
    assert_eq!(session.signals().await.unwrap().len(), 1);
    assert_eq!(session.list_runs().await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_adapter_maps_raw_events() {
    let agent = echo_agent();
    let slack = SignalAdapter::new("slack", "message", |e| {
        format!("{}: {}", e["user"].as_str().unwrap_or("?"), e["text"].as_str().unwrap_or(""))
    })
    .dedupe_key(|e| e["ts"].as_str().map(str::to_string));
    let event = json!({"user": "ana", "text": "can you summarize #ops?", "ts": "1.0"});
    let receipt = agent.receive(event.clone(), Some(&slack), "slack-ops").await.unwrap();
    let result = within(5, "run", receipt.run.unwrap().result()).await;
    assert_eq!(result.output, "Echo: [signal from slack, message, normal] ana: can you summarize #ops?");
    assert!(agent.receive(event.clone(), Some(&slack), "slack-ops").await.unwrap().duplicate);
    // A raw event needs an adapter.
    assert!(matches!(agent.receive(event, None, "slack-ops").await, Err(loom_agent::Error::Config(_))));
}

#[tokio::test]
async fn a_signal_before_the_session_exists_creates_it() {
    let agent = echo_agent();
    assert!(agent.session_store().get_session(SessionKey::new("brand-new")).await.unwrap().is_none());
    let receipt = agent.receive("hello from nowhere", None, "brand-new").await.unwrap();
    let result = within(5, "run", receipt.run.unwrap().result()).await;
    assert_eq!(result.session_id, "brand-new");
    assert!(agent.session_store().get_session(SessionKey::new("brand-new")).await.unwrap().is_some());
    let runs = agent.session(SessionConfig::new("brand-new")).list_runs().await.unwrap();
    assert_eq!(runs.len(), 1);
}

#[tokio::test]
async fn another_users_session_of_the_same_id_never_sees_the_signal() {
    let (model, shared) = scripted([ScriptedTurn::text("bob's answer")]);
    let agent = Agent::builder().model(shared).build().unwrap();
    let alice = agent.session(SessionConfig::new("shared-id").user("alice"));
    let bob = agent.session(SessionConfig::new("shared-id").user("bob"));
    let nobody = agent.session(SessionConfig::new("shared-id"));
    let secret = RuntimeSignal::create("alice's secret", "mail", "message", Urgency::Low).dedupe_key("k");
    alice.receive(secret, None).await.unwrap();
    assert!(bob.signals().await.unwrap().is_empty());
    assert!(nobody.signals().await.unwrap().is_empty());
    // The same dedupe key is free in bob's session.
    let b = bob.receive(RuntimeSignal::create("bob's", "mail", "message", Urgency::Low).dedupe_key("k"), None);
    assert!(!b.await.unwrap().duplicate);
    bob.run("hi").await.unwrap();
    let seen: Vec<String> = model.requests()[0].messages.iter().map(|m| m.text()).collect();
    assert!(seen.iter().all(|t| !t.contains("alice's secret")), "{seen:?}");
    assert!(seen.iter().any(|t| t.contains("bob's")), "{seen:?}");
    assert_eq!(alice.signals().await.unwrap()[0].status, SignalStatus::Observed, "still waiting for alice's run");
}

/// A signal stored while no process is up (as `loom signal` does) is handled when the next process
/// opens the session; an observed one reaches the next process's run. SQLite and PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_signals_survive_a_restart() {
    for db in durable_backends().await {
        let name = db.name();
        let url = db.url().unwrap();
        let sid = format!("durable-{}", unique());
        let key = SessionKey::of_user("ana", &sid);
        {
            // "Process 1": an agent receives a low signal (observed), then goes away. Its session
            // is opened without the background sweep: a sweep still running when the pending
            // signal below is stored would handle it here, with this process's model (a race
            // seen under a loaded CI machine), and this test is about the next process.
            let agent = Agent::builder().model("echo").journal(url.as_str()).build().unwrap();
            let session = agent.session_without_sweep(SessionConfig::new(&sid).user("ana"));
            let r = session.receive(RuntimeSignal::create("noted", "cli", "note", Urgency::Low), None).await;
            assert_eq!(r.unwrap().attention, Some(Attention::Observe), "{name}");
            // And a pending one is stored directly, as `loom signal` does with no process up.
            let store = db.open().await;
            store.append(key, &RuntimeSignal::new("do the thing").dedupe_key("once"), None).await.unwrap();
        }
        // "Process 2": opening the session handles the pending signal (a run), whose context has
        // the observed one.
        let (model, shared) = scripted([ScriptedTurn::text("done")]);
        let agent = Agent::builder().model(shared).journal(url.as_str()).build().unwrap();
        let session = agent.session(SessionConfig::new(&sid).user("ana"));
        let handled = within(10, "the pending signal is handled", async {
            loop {
                let all = session.signals().await.unwrap();
                if all.iter().all(|s| s.status == SignalStatus::Handled) && all.len() == 2 {
                    return all;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let run_id = handled[1].run_id.clone().unwrap();
        assert_eq!(handled[0].run_id.as_deref(), Some(run_id.as_str()), "{name}: the run saw the observed signal");
        let run = within(10, "run", async {
            loop {
                if let Some(run) = session.get_run(&run_id).await.unwrap() {
                    let result = run.result().await;
                    if result.state.is_terminal() {
                        return result;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert_eq!(run.state, RunState::Completed, "{name}");
        let request: Vec<String> = model.requests()[0].messages.iter().map(|m| m.text()).collect();
        assert!(request.iter().any(|t| t.contains("noted")), "{name}: {request:?}");
        assert!(request.last().unwrap().contains("do the thing"), "{name}");
        // A second store handle (a third process) sees the same: nothing pending, dedupe kept.
        let store = db.open().await;
        assert!(store.pending(key, chrono::Utc::now().timestamp_millis()).await.unwrap().is_empty(), "{name}");
        assert!(!store.append(key, &RuntimeSignal::new("again").dedupe_key("once"), None).await.unwrap(), "{name}");
        eprintln!("{name}: ok");
    }
}
