//! Multi-agent patterns with scripted models: an agent as a tool (a child run: its id, events,
//! parent link, usage roll-up, budget drawn from the parent, cancel with the parent, nested live
//! events), handoffs, a supervisor with parallel workers, and a router.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use loom_agent::governance::StandardBudget;
use loom_agent::message::{Message, Usage};
use loom_agent::model::{FnModel, ScriptedTurn};
use loom_agent::store::{InMemoryJournal, Journal, RunFilter};
use loom_agent::team::{Handoffs, Router, Supervisor};
use loom_agent::{Agent, Event, EventKind, RunErrorKind, RunRequest, RunState};
use serde_json::json;

fn usage(input: u64, output: u64) -> Usage {
    Usage { input_tokens: input, output_tokens: output, ..Usage::default() }
}

fn children(events: &[Event]) -> Vec<(String, String, Option<RunState>)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ChildStarted(s) => Some((s.child_run_id.clone(), "started".to_string(), None)),
            EventKind::ChildFinished(f) => Some((f.child_run_id.clone(), "finished".to_string(), Some(f.state))),
            _ => None,
        })
        .collect()
}

fn worker(name: &str, answer: &str, delay: Duration) -> Agent {
    let answer = answer.to_string();
    let model = FnModel::new(format!("m-{name}"), move |_req| {
        ScriptedTurn::text(answer.clone()).with_usage(usage(10, 5)).with_delay(delay)
    });
    Agent::builder().name(name).instructions(format!("You are {name}.")).model(model).build().unwrap()
}

#[tokio::test]
async fn an_agent_as_a_tool_runs_as_a_child_run() {
    let journal = Arc::new(InMemoryJournal::new());
    let (child_model, child_shared) = scripted([ScriptedTurn::text("Paris").with_usage(usage(7, 3))]);
    let researcher = Agent::builder()
        .name("researcher")
        .model(child_shared)
        .journal(journal.clone() as Arc<dyn Journal>)
        .build()
        .unwrap();
    let (_, lead_model) = scripted([
        ScriptedTurn::tool_call("research", json!({"input": "capital of France?"})).with_usage(usage(20, 2)),
        ScriptedTurn::text("It is Paris.").with_usage(usage(30, 4)),
    ]);
    let lead = Agent::builder()
        .name("lead")
        .model(lead_model)
        .tool(researcher.as_tool("research", "Researches a question."))
        .journal(journal.clone() as Arc<dyn Journal>)
        .build()
        .unwrap();
    let result =
        within(10, "parent run", lead.run(RunRequest::new("Where is the Louvre?").user("alice"))).await.unwrap();
    assert_eq!(result.output, "It is Paris.");
    let child_id = format!("{}.call_1_0", result.run_id);
    assert_eq!(
        children(&result.events),
        vec![
            (child_id.clone(), "started".into(), None),
            (child_id.clone(), "finished".into(), Some(RunState::Completed))
        ]
    );
    // The child's answer is the tool's result.
    let tool_result = tool_results(&result.events).pop().unwrap();
    assert_eq!(tool_result.output, "Paris");
    // Its usage is rolled up into the parent's.
    assert_eq!(result.usage.input_tokens, 20 + 30 + 7);
    assert_eq!(result.usage.output_tokens, 2 + 4 + 3);
    // The child's own run: its input, its user (the parent's), its parent link.
    let requests = child_model.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(last_user_text(&requests[0].messages), "capital of France?");
    assert_eq!(requests[0].user_id.as_deref(), Some("alice"));
    let stored = journal.load(&child_id).await.unwrap().unwrap();
    assert_eq!(stored.record.parent_run_id.as_deref(), Some(result.run_id.as_str()));
    assert_eq!(stored.record.user_id.as_deref(), Some("alice"));
    assert_eq!(stored.record.architecture.as_deref(), Some("react"));
    assert!(stored.finished);
    let listed = journal.list(&RunFilter { parent_run_id: Some(result.run_id.clone()), ..Default::default() }).await;
    assert_eq!(listed.unwrap().iter().map(|r| r.run_id.clone()).collect::<Vec<_>>(), vec![child_id]);
}

#[tokio::test]
async fn a_budget_limit_of_the_parent_reached_in_a_child_stops_both_honestly() {
    let budget = StandardBudget::new().max_tokens(100);
    // The child spends 150 tokens on its first call, then wants a second one: the parent's budget
    // (its own 20 plus the child's 150) is past its limit.
    let (child_model, child_shared) = scripted([
        ScriptedTurn::tool_call("echo", json!({"x": "a"})).with_usage(usage(100, 50)),
        ScriptedTurn::text("never"),
    ]);
    let child = Agent::builder().name("spender").model(child_shared).tool(echo_tool("echo")).build().unwrap();
    let (lead_recorder, lead_model) = scripted([
        ScriptedTurn::tool_call("spend", json!({"input": "go"})).with_usage(usage(15, 5)),
        ScriptedTurn::text("never"),
    ]);
    let lead = Agent::builder()
        .name("lead")
        .model(lead_model)
        .budget(budget.clone())
        .tool(child.as_tool("spend", "Spends tokens."))
        .build()
        .unwrap();
    let result = within(10, "parent", lead.start("go").result()).await;
    assert_eq!(result.state, RunState::Interrupted, "{:?}", result.error);
    assert_eq!(result.error.as_ref().unwrap().kind, RunErrorKind::Budget);
    assert_eq!(result.interruption_reason(), Some("budget: max_tokens"));
    let kids = children(&result.events);
    assert_eq!(kids[1].2, Some(RunState::Interrupted), "the child stopped on the parent's budget");
    assert_eq!(child_model.requests().len(), 1, "the child made no call past the limit");
    assert_eq!(lead_recorder.requests().len(), 1, "the parent made no call past the limit");
    assert_eq!(result.usage.total_tokens(), 20 + 150);
    assert_eq!(budget.usage_for(None).total_tokens, 170, "the child's spend is on the parent's account");
}

#[tokio::test]
async fn cancelling_the_parent_cancels_every_child() {
    let slow = |name: &str| Agent::builder().name(name).model(slow_model(Duration::from_secs(30))).build().unwrap();
    let (_, lead_model) =
        scripted([ScriptedTurn::tool_call("a", json!({"input": "1"})).with_tool_call("b", json!({"input": "2"}))]);
    let lead = Agent::builder()
        .model(lead_model)
        .tool(slow("a").as_tool("a", "A."))
        .tool(slow("b").as_tool("b", "B."))
        .build()
        .unwrap();
    let run = lead.start("go");
    let mut nested = run.events_with_children();
    let mut started = 0;
    while let Some(e) = within(10, "children start", nested.next()).await {
        if e.depth == 1 && e.event.type_name() == "model.request" {
            started += 1;
            if started == 2 {
                break;
            }
        }
    }
    let began = Instant::now();
    run.cancel();
    let result = within(10, "cancelled parent", run.result()).await;
    assert!(began.elapsed() < Duration::from_secs(5));
    assert_eq!(result.state, RunState::Cancelled);
    let rest: Vec<_> = within(10, "nested stream ends", nested.collect::<Vec<_>>()).await;
    let child_ends: Vec<_> = rest.iter().filter(|e| e.depth == 1 && e.event.is_terminal()).collect();
    assert_eq!(child_ends.len(), 2, "both children ended");
    assert!(child_ends.iter().all(|e| e.event.type_name() == "run.cancelled"));
    // Every child.started in the parent's log has its child.finished, before the parent's end.
    let kids = children(&result.events);
    assert_eq!(kids.iter().filter(|k| k.1 == "started").count(), 2);
    assert_eq!(kids.iter().filter(|k| k.2 == Some(RunState::Cancelled)).count(), 2);
    let last_child = result.events.iter().rposition(|e| e.type_name() == "child.finished").unwrap();
    assert!(last_child < result.events.len() - 1 && result.events.last().unwrap().type_name() == "run.cancelled");
}

#[tokio::test]
async fn nested_events_carry_each_child_complete_and_in_order() {
    let (_, lead_model) = scripted([
        ScriptedTurn::tool_call("a", json!({"input": "1"})).with_tool_call("b", json!({"input": "2"})),
        ScriptedTurn::text("done"),
    ]);
    let lead = Agent::builder()
        .model(lead_model)
        .tool(worker("a", "A says", Duration::from_millis(20)).as_tool("a", "A."))
        .tool(worker("b", "B says", Duration::from_millis(5)).as_tool("b", "B."))
        .build()
        .unwrap();
    let run = lead.start("go");
    let all: Vec<_> = within(10, "nested", run.events_with_children().collect::<Vec<_>>()).await;
    let result = run.result().await;
    assert_eq!(result.state, RunState::Completed);
    let parent: Vec<&Event> = all.iter().filter(|e| e.depth == 0).map(|e| &e.event).collect();
    assert_eq!(parent.len(), result.events.len(), "every parent event, once");
    for child in ["call_1_0", "call_1_1"] {
        let id = format!("{}.{child}", result.run_id);
        let evs: Vec<&loom_agent::runtime::NestedEvent> = all.iter().filter(|e| *e.event.run_id == *id).collect();
        assert!(!evs.is_empty(), "events of {id}");
        assert!(evs.iter().all(|e| e.depth == 1 && e.parent_run_id.as_deref() == Some(result.run_id.as_str())));
        let seqs: Vec<u64> = evs.iter().map(|e| e.event.seq).collect();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "complete and in order");
        assert_eq!(evs[0].event.type_name(), "run.started");
        assert_eq!(evs.last().unwrap().event.type_name(), "run.completed");
        // The child's start comes after the parent's child.started for it.
        let announced = all
            .iter()
            .position(|e| matches!(&e.event.kind, EventKind::ChildStarted(s) if s.child_run_id == id))
            .unwrap();
        let first = all.iter().position(|e| *e.event.run_id == *id).unwrap();
        assert!(announced < first);
    }
}

#[tokio::test]
async fn a_handoff_continues_the_session_with_the_other_agent() {
    let store = SharedStore::default();
    let (triage_model, triage_shared) = scripted([ScriptedTurn::tool_call("transfer_to_billing", json!({}))]);
    let triage = Agent::builder().name("triage").model(triage_shared).session_store(store.clone()).build().unwrap();
    let (billing_model, billing_shared) =
        scripted([ScriptedTurn::text("Your refund is on its way."), ScriptedTurn::text("You are welcome.")]);
    let billing = Agent::builder().name("billing").model(billing_shared).session_store(store.clone()).build().unwrap();
    let team = Handoffs::new(triage).agent(billing).build().unwrap();
    let tools: Vec<String> = team.agents()[0].tools().iter().map(|t| t.name.clone()).collect();
    assert_eq!(tools, vec!["transfer_to_billing"]);
    let outcome = within(10, "handoff", team.run(RunRequest::new("Where is my refund?").session("s1"))).await.unwrap();
    assert_eq!(outcome.agent, "billing");
    assert_eq!(outcome.result.output, "Your refund is on its way.");
    assert_eq!(outcome.runs.len(), 2);
    assert_eq!(outcome.runs[0].output, "Transferred to billing");
    assert!(
        outcome.runs[0]
            .events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::Handoff(h) if h.from == "triage" && h.to == "billing"))
    );
    assert_eq!(triage_model.requests().len(), 1, "the handing-over run ends without another model call");
    // The new agent sees the conversation so far.
    let seen: Vec<String> = billing_model.requests()[0].messages.iter().map(Message::text).collect();
    assert!(seen.iter().any(|m| m == "Where is my refund?"), "{seen:?}");
    // The session's next request starts with the agent that answered last.
    let next = team.run(RunRequest::new("Thanks!").session("s1")).await.unwrap();
    assert_eq!(next.agent, "billing");
    assert_eq!(next.result.output, "You are welcome.");
    assert_eq!(triage_model.requests().len(), 1);
}

#[tokio::test]
async fn a_supervisor_runs_independent_workers_in_parallel_and_combines_them() {
    let delay = Duration::from_millis(300);
    let (coordinator_model, coordinator_shared) = scripted([
        ScriptedTurn::tool_call("researcher", json!({"input": "facts"}))
            .with_tool_call("writer", json!({"input": "draft"})),
        ScriptedTurn::text("combined"),
    ]);
    let supervisor = Supervisor::builder(Agent::builder().name("lead").instructions("Lead.").model(coordinator_shared))
        .worker("researcher", "Finds facts.", worker("researcher", "the facts", delay))
        .worker("writer", "Writes.", worker("writer", "the draft", delay))
        .build()
        .unwrap();
    let began = Instant::now();
    let outcome = within(10, "supervisor", supervisor.run("Write about X.")).await.unwrap();
    let took = began.elapsed();
    assert!(took < delay * 2, "the workers ran in parallel ({took:?})");
    assert_eq!(outcome.result.output, "combined");
    let mut names: Vec<&str> = outcome.workers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["researcher", "writer"]);
    assert!(outcome.workers.iter().all(|(_, o)| o.is_completed()));
    // The coordinator knows its workers and reads both results before combining.
    let requests = coordinator_model.requests();
    let system = requests[0].messages[0].text();
    assert!(system.starts_with("Lead.") && system.contains("- researcher: Finds facts."), "{system}");
    let results: Vec<(String, String, bool)> = tool_messages(&requests[1].messages);
    assert_eq!(results.len(), 2);
    assert!(results.iter().any(|(_, content, _)| content == "the facts"));
    assert!(results.iter().any(|(_, content, _)| content == "the draft"));
    assert_eq!(outcome.result.usage.input_tokens, 20, "both workers' usage rolled up");
}

#[tokio::test]
async fn a_router_picks_one_agent_with_one_classification_call() {
    let (router_model, router_shared) =
        scripted([ScriptedTurn::text(json!({"agent": "billing", "reason": "a refund"}).to_string())]);
    let (billing_model, billing_shared) = scripted([ScriptedTurn::text("Refund sent.")]);
    let (support_model, support_shared) = scripted([ScriptedTurn::text("never")]);
    let router = Router::new()
        .route(
            "billing",
            "Invoices and refunds.",
            Agent::builder().name("billing").model(billing_shared).build().unwrap(),
        )
        .route("support", "Everything else.", Agent::builder().name("support").model(support_shared).build().unwrap())
        .build(Agent::builder().name("front").model(router_shared))
        .unwrap();
    let result = within(10, "router", router.run("I want my money back.")).await.unwrap();
    assert_eq!(result.output, "Refund sent.");
    assert_eq!(router_model.requests().len(), 1);
    let prompt = router_model.requests()[0].messages.iter().map(Message::text).collect::<Vec<_>>().join("\n");
    assert!(prompt.contains("- billing: Invoices and refunds.") && prompt.contains("I want my money back."));
    assert!(router_model.requests()[0].tools.is_empty());
    assert_eq!(last_user_text(&billing_model.requests()[0].messages), "I want my money back.");
    assert!(support_model.requests().is_empty());
    let kids = children(&result.events);
    assert_eq!(kids[0].0, format!("{}.route", result.run_id));
    assert_eq!(kids[1].2, Some(RunState::Completed));
}

#[tokio::test]
async fn a_router_whose_model_names_no_route_fails() {
    let (_, router_shared) = scripted([ScriptedTurn::text(json!({"agent": "nobody"}).to_string())]);
    let router = Router::new()
        .route("only", "Only.", worker("only", "x", Duration::ZERO))
        .build(Agent::builder().model(router_shared))
        .unwrap();
    let result = router.start("hi").result().await;
    assert_eq!(result.state, RunState::Failed);
    assert!(children(&result.events).is_empty());
}

/// Schema step 6: a journal written before child runs gains `loom_runs.parent_run_id`, filled from
/// each record (none has a parent before version 6; a record that names one is listed under it).
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_version_4_sqlite_journal_migrates_to_parent_run_ids() {
    use loom_agent::store::{Lease, RunRecord, SqliteStore};
    let dir = std::env::temp_dir().join(format!("loom-team-migrate-{}", loom_agent::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("loom.db");
    let lease = Lease::for_this_process(Duration::from_secs(60));
    let record = |id: &str, parent: Option<&str>| RunRecord {
        run_id: id.into(),
        session_id: "s".into(),
        user_id: None,
        input: loom_agent::RunInput::Prompt("hi".into()),
        context: Default::default(),
        metadata: Default::default(),
        seeds: vec![Message::user("hi")],
        history_base: 0,
        history_start: None,
        summary_covers: 0,
        max_turns: 4,
        timeout_ms: None,
        output_schema: None,
        started_at: chrono::Utc::now(),
        model: None,
        parent_run_id: parent.map(str::to_string),
        architecture: None,
    };
    {
        let store = SqliteStore::open(&db).unwrap();
        store.begin(&record("run_a", None), &lease, &[]).await.unwrap();
        store.begin(&record("run_a.call_1", Some("run_a")), &lease, &[]).await.unwrap();
    }
    // Back to version 4: the column and its index gone, as a journal written before this version.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "DROP INDEX loom_runs_by_parent; ALTER TABLE loom_runs DROP COLUMN parent_run_id;
         DROP TABLE IF EXISTS loom_signals; DROP TABLE IF EXISTS loom_schedules;
         DROP TABLE IF EXISTS loom_schedule_fires; DROP TABLE IF EXISTS loom_api_keys; PRAGMA user_version = 4;",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&db).unwrap();
    let version: i64 =
        rusqlite::Connection::open(&db).unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert!(version >= 6, "migrated to {version}");
    let kids = store.list(&RunFilter { parent_run_id: Some("run_a".into()), ..Default::default() }).await.unwrap();
    assert_eq!(kids.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), vec!["run_a.call_1"]);
    let all = store.list(&RunFilter::default()).await.unwrap();
    assert_eq!(all.iter().find(|r| r.run_id == "run_a").unwrap().parent_run_id, None);
    std::fs::remove_dir_all(&dir).ok();
}
