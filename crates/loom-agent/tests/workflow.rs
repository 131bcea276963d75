//! Workflows with scripted models: static and conditional edges, loops bounded by the cap, fan-out
//! with an AND-join, agent nodes as child runs, sub-workflows, typed state, events, Mermaid.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use loom_agent::model::ScriptedTurn;
use loom_agent::store::{InMemoryJournal, Journal, RunFilter};
use loom_agent::workflow::{END, Workflow};
use loom_agent::{Agent, EventKind, RunErrorKind, RunState};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Doc {
    topic: String,
    notes: Vec<String>,
    draft: String,
    rounds: u32,
}

fn nodes(events: &[loom_agent::Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::WorkflowNode(n) => Some((format!("{}#{}", n.node, n.visit), n.status.clone())),
            _ => None,
        })
        .collect()
}

fn review_loop() -> Workflow<Doc> {
    Workflow::new("review")
        .node("revise", |mut d: Doc| async move {
            d.rounds += 1;
            d.draft = format!("{} (rev {})", d.draft, d.rounds);
            Ok(d)
        })
        .start("revise")
        .branch("revise", ["revise", END], |d: &Doc| if d.rounds < 2 { "revise".into() } else { END.into() })
}

#[tokio::test]
async fn a_workflow_walks_its_graph_with_typed_state() {
    let (writer_model, writer_shared) = scripted([ScriptedTurn::text("A draft about rust.")]);
    let writer = Agent::builder().name("writer").model(writer_shared).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let wf = Workflow::<Doc>::new("article")
        .node("outline", |mut d: Doc| async move {
            d.notes.push(format!("outline of {}", d.topic));
            Ok(d)
        })
        .node("facts", |mut d: Doc| async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            d.notes = vec!["facts".into()];
            Ok(d)
        })
        .node("quotes", |mut d: Doc| async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            d.notes = vec!["quotes".into()];
            Ok(d)
        })
        .node("gather", move |d: Doc| {
            log.lock().unwrap().push(d.notes.clone());
            async move { Ok(d) }
        })
        .agent_node(
            "write",
            writer,
            |d: &Doc| format!("Write about {} using {:?}", d.topic, d.notes),
            |mut d, answer| {
                d.draft = answer;
                d
            },
        )
        .workflow_node("review", review_loop().build().unwrap())
        .start("outline")
        .fan_out("outline", ["facts", "quotes"], "gather", |mut base: Doc, branches: Vec<Doc>| {
            for b in branches {
                base.notes.extend(b.notes);
            }
            base
        })
        .edge("gather", "write")
        .edge("write", "review")
        .edge("review", END)
        .build()
        .unwrap();
    let mermaid = wf.to_mermaid();
    assert!(mermaid.starts_with("flowchart TD"));
    assert!(mermaid.contains("n_outline ==> n_facts") && mermaid.contains("n_quotes ==>|join| n_gather"), "{mermaid}");
    assert!(mermaid.contains("n_write(\"write\")") && mermaid.contains("n_review[[\"review\"]]"), "{mermaid}");
    let journal = Arc::new(InMemoryJournal::new());
    let runner = wf.into_agent(Agent::builder().name("article").journal(journal.clone() as Arc<dyn Journal>)).unwrap();
    let began = Instant::now();
    let (doc, result) =
        within(10, "workflow", runner.run(Doc { topic: "rust".into(), ..Doc::default() })).await.unwrap();
    assert!(began.elapsed() < Duration::from_millis(390), "the branches ran in parallel");
    assert_eq!(doc.notes, vec!["outline of rust", "facts", "quotes"]);
    assert_eq!(seen.lock().unwrap().clone(), vec![vec!["outline of rust", "facts", "quotes"]], "AND-join");
    assert_eq!(doc.draft, "A draft about rust. (rev 1) (rev 2)");
    assert_eq!(doc.rounds, 2);
    assert_eq!(
        last_user_text(&writer_model.requests()[0].messages),
        "Write about rust using [\"outline of rust\", \"facts\", \"quotes\"]"
    );
    let completed: Vec<String> =
        nodes(&result.events).into_iter().filter(|(_, s)| s == "completed").map(|(n, _)| n).collect();
    assert_eq!(completed[0], "outline#1");
    assert_eq!(completed[3..], ["gather#1", "write#1", "revise#1", "revise#2", "review#1"]);
    // The agent node ran as a child run of the workflow's run; the run is listed like any run.
    let child = format!("{}.write.1", result.run_id);
    assert!(result.events.iter().any(|e| matches!(&e.kind, EventKind::ChildStarted(s) if s.child_run_id == child)));
    let stored = journal.load(&child).await.unwrap().unwrap();
    assert_eq!(stored.record.parent_run_id.as_deref(), Some(result.run_id.as_str()));
    let listed = journal.list(&RunFilter::default()).await.unwrap();
    assert!(listed.iter().any(|r| r.run_id == result.run_id && r.finished));
    let record = journal.load(&result.run_id).await.unwrap().unwrap().record;
    assert_eq!(record.architecture.as_deref(), Some("workflow"));
}

#[tokio::test]
async fn a_loop_past_the_cap_stops_the_run_interrupted() {
    let wf = Workflow::<u32>::new("forever")
        .node("spin", |n: u32| async move { Ok(n + 1) })
        .start("spin")
        .edge("spin", "spin")
        .max_steps(5);
    let runner = wf.into_agent(Agent::builder()).unwrap();
    let run = runner.start(&0, Default::default()).unwrap();
    let result = within(10, "capped", run.result()).await;
    assert_eq!(result.state, RunState::Interrupted);
    assert_eq!(result.error.unwrap().kind, RunErrorKind::MaxTurns);
    assert_eq!(nodes(&result.events).iter().filter(|(_, s)| s == "completed").count(), 5);
}

#[tokio::test]
async fn a_failing_node_fails_the_run_and_the_graph_is_checked() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let wf = Workflow::<u32>::new("fails")
        .node("ok", move |n: u32| {
            c.fetch_add(1, Ordering::SeqCst);
            async move { Ok(n) }
        })
        .node("bad", |_n: u32| async move { Err("no luck".to_string()) })
        .start("ok")
        .edge("ok", "bad");
    let result = wf.into_agent(Agent::builder()).unwrap().start(&1, Default::default()).unwrap().result().await;
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.kind, RunErrorKind::Node);
    assert!(error.message.contains("node `bad`: no luck"), "{}", error.message);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let unknown = Workflow::<u32>::new("broken").node("a", |n: u32| async move { Ok(n) }).start("a").edge("a", "b");
    assert!(unknown.build().unwrap_err().to_string().contains("`b`, which is not a node"));
    let no_start = Workflow::<u32>::new("broken").node("a", |n: u32| async move { Ok(n) });
    assert!(no_start.build().unwrap_err().to_string().contains("no start node"));
}

#[tokio::test]
async fn a_router_function_that_names_no_target_fails_the_run() {
    let wf =
        Workflow::<u32>::new("r")
            .node("a", |n: u32| async move { Ok(n) })
            .start("a")
            .branch("a", [END], |_n: &u32| "elsewhere".into());
    let result = wf.into_agent(Agent::builder()).unwrap().start(&1, Default::default()).unwrap().result().await;
    assert_eq!(result.state, RunState::Failed);
    assert!(result.error.unwrap().message.contains("chose `elsewhere`"));
}

/// A fan-out's multi-node branches (sub-workflows) run concurrently: each branch's second node
/// waits at a barrier for the other branch's, which a walk that ran one branch after the other
/// would never pass. The AND-join then sees both.
#[tokio::test]
async fn sub_workflow_branches_of_a_fan_out_run_concurrently() {
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let branch = |label: &'static str| {
        let b = barrier.clone();
        Workflow::<Vec<String>>::new(label)
            .node("first", move |mut s: Vec<String>| async move {
                s.push(format!("{label}1"));
                Ok(s)
            })
            .node("second", move |mut s: Vec<String>| {
                let b = b.clone();
                async move {
                    b.wait().await;
                    s.push(format!("{label}2"));
                    Ok(s)
                }
            })
            .start("first")
            .edge("first", "second")
            .edge("second", END)
    };
    let wf = Workflow::<Vec<String>>::new("parallel")
        .node("start", |s: Vec<String>| async move { Ok(s) })
        .workflow_node("x", branch("x"))
        .workflow_node("y", branch("y"))
        .node("join", |mut s: Vec<String>| async move {
            s.push("join".into());
            Ok(s)
        })
        .start("start")
        .fan_out("start", ["x", "y"], "join", |mut base: Vec<String>, branches: Vec<Vec<String>>| {
            for b in branches {
                base.extend(b);
            }
            base
        })
        .edge("join", END);
    let runner = wf.into_agent(Agent::builder()).unwrap();
    let (state, result) = within(10, "the branches meet at the barrier", runner.run(Vec::new())).await.unwrap();
    assert_eq!(state, vec!["x1", "x2", "y1", "y2", "join"]);
    let completed: Vec<String> =
        nodes(&result.events).into_iter().filter(|(_, s)| s == "completed").map(|(n, _)| n).collect();
    assert_eq!(completed.iter().filter(|n| *n == "second#1").count(), 2, "{completed:?}");
    // Both branches were under way before either finished.
    let events = nodes(&result.events);
    let at = |node: &str, status: &str| events.iter().position(|(n, s)| n == node && s == status).unwrap();
    assert!(at("y#1", "started") < at("x#1", "completed"), "{events:?}");
    assert!(at("x#1", "started") < at("y#1", "completed"), "{events:?}");
}
