//! Budget stops and cancellation for every multi-agent pattern (a router, a workflow's agent node,
//! a fan-out of agent nodes, a supervisor): a budget limit of the parent reached inside a child
//! stops the child and then the parent, interrupted with the budget's reason; cancelling the
//! parent cancels every child; either way every `child.started` has its `child.finished` with the
//! child's honest state. Also: which limits a parent shares with its children (tokens and tool
//! calls: yes; turns: no).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use loom_agent::governance::StandardBudget;
use loom_agent::message::Usage;
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::team::{Router, Supervisor};
use loom_agent::workflow::{END, Workflow};
use loom_agent::{Agent, AgentBuilder, Event, EventKind, RunErrorKind, RunResult, RunState};
use serde_json::json;

fn usage(input: u64, output: u64) -> Usage {
    Usage { input_tokens: input, output_tokens: output, ..Usage::default() }
}

/// The patterns under test, each a parent agent over the children it is given.
#[derive(Clone, Copy, Debug)]
enum Pattern {
    /// A router that picks the first child.
    Router,
    /// A workflow `prep` → `ask` (an agent node, the first child) → `after`.
    AgentNode,
    /// A workflow whose start fans out to two agent nodes, joined at `after`.
    FanOut,
    /// A supervisor whose coordinator calls two workers in one turn.
    Supervisor,
}

impl Pattern {
    fn children(self) -> usize {
        match self {
            Pattern::Router | Pattern::AgentNode => 1,
            Pattern::FanOut | Pattern::Supervisor => 2,
        }
    }

    /// The parent over `kids`, built on `builder` (which carries the budget, if any), and the
    /// input it starts on.
    fn parent(self, kids: Vec<Agent>, builder: AgentBuilder) -> (Agent, String) {
        let mut kids = kids.into_iter();
        let mut kid = || kids.next().unwrap();
        let state = "[]".to_string();
        let note = |mut s: Vec<String>, answer: String| {
            s.push(answer);
            s
        };
        let after = |mut s: Vec<String>| async move {
            s.push("after".into());
            Ok(s)
        };
        match self {
            Pattern::Router => {
                let model = ScriptedModel::new([
                    ScriptedTurn::text(json!({"agent": "k0"}).to_string()).with_usage(usage(10, 5))
                ])
                .looping();
                let router = Router::new().route("k0", "The first.", kid()).route("k1", "Never.", worker_never());
                (router.build(builder.model(model)).unwrap(), "go".into())
            }
            Pattern::AgentNode => {
                let wf = Workflow::<Vec<String>>::new("one")
                    .node("prep", |s: Vec<String>| async move { Ok(s) })
                    .agent_node("ask", kid(), |_s: &Vec<String>| "task".to_string(), note)
                    .node("after", after)
                    .start("prep")
                    .edge("prep", "ask")
                    .edge("ask", "after")
                    .edge("after", END);
                (wf.into_agent(builder).unwrap().agent().clone(), state)
            }
            Pattern::FanOut => {
                let wf = Workflow::<Vec<String>>::new("two")
                    .node("prep", |s: Vec<String>| async move { Ok(s) })
                    .agent_node("a", kid(), |_s: &Vec<String>| "task a".to_string(), note)
                    .agent_node("b", kid(), |_s: &Vec<String>| "task b".to_string(), note)
                    .node("after", after)
                    .start("prep")
                    .fan_out("prep", ["a", "b"], "after", |base: Vec<String>, _branches| base)
                    .edge("after", END);
                (wf.into_agent(builder).unwrap().agent().clone(), state)
            }
            Pattern::Supervisor => {
                let model = ScriptedModel::new([
                    ScriptedTurn::tool_call("k0", json!({"input": "a"}))
                        .with_tool_call("k1", json!({"input": "b"}))
                        .with_usage(usage(10, 5)),
                    ScriptedTurn::text("combined"),
                ]);
                let team = Supervisor::builder(builder.model(model))
                    .worker("k0", "The first.", kid())
                    .worker("k1", "The second.", kid())
                    .build()
                    .unwrap();
                (team.agent().clone(), "go".into())
            }
        }
    }
}

fn worker_never() -> Agent {
    let (_, model) = scripted([ScriptedTurn::text("never")]);
    Agent::builder().name("never").model(model).build().unwrap()
}

/// A child that spends 150 tokens on its first call and then wants a tool batch and a second call.
fn spender(i: usize) -> (Arc<ScriptedModel>, Agent) {
    let (model, shared) = scripted([
        ScriptedTurn::tool_call("echo", json!({"x": "a"})).with_usage(usage(100, 50)),
        ScriptedTurn::text("never"),
    ]);
    let agent = Agent::builder().name(format!("k{i}")).model(shared).tool(echo_tool("echo")).build().unwrap();
    (model, agent)
}

/// The parent's children as (child run id, state at `child.finished`), checking that each
/// `child.started` has exactly one `child.finished` after it.
fn paired_children(events: &[Event]) -> Vec<(String, RunState)> {
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if let EventKind::ChildStarted(s) = &e.kind {
            let ends: Vec<(usize, RunState)> = events
                .iter()
                .enumerate()
                .filter_map(|(j, f)| match &f.kind {
                    EventKind::ChildFinished(f) if f.child_run_id == s.child_run_id => Some((j, f.state)),
                    _ => None,
                })
                .collect();
            assert_eq!(ends.len(), 1, "one child.finished for {}", s.child_run_id);
            assert!(ends[0].0 > i, "child.finished after child.started");
            out.push((s.child_run_id.clone(), ends[0].1));
        }
    }
    out
}

fn after_ran(result: &RunResult) -> bool {
    result.events.iter().any(|e| matches!(&e.kind, EventKind::WorkflowNode(n) if n.node == "after"))
}

async fn budget_stop(pattern: Pattern) {
    let budget = StandardBudget::new().max_tokens(100);
    let spenders: Vec<_> = (0..pattern.children()).map(spender).collect();
    let kids = spenders.iter().map(|(_, a)| a.clone()).collect();
    let (parent, input) = pattern.parent(kids, Agent::builder().name("parent").budget(budget.clone()));
    let result = within(10, "parent", parent.start(input.as_str()).result()).await;
    assert_eq!(result.state, RunState::Interrupted, "{pattern:?}: {:?}", result.error);
    assert_eq!(result.error.as_ref().unwrap().kind, RunErrorKind::Budget, "{pattern:?}");
    assert_eq!(result.interruption_reason(), Some("budget: max_tokens"), "{pattern:?}");
    let kids = paired_children(&result.events);
    assert_eq!(kids.len(), pattern.children(), "{pattern:?}: {kids:?}");
    assert!(kids.iter().all(|(_, s)| *s == RunState::Interrupted), "{pattern:?}: the children stopped on the budget");
    // Parallel children: the first to spend takes the tree past the limit; the other may then
    // stop before its first call. None makes a call after its own spend.
    let calls: Vec<usize> = spenders.iter().map(|(m, _)| m.requests().len()).collect();
    assert!(calls.iter().all(|n| *n <= 1) && calls.contains(&1), "{pattern:?}: {calls:?}");
    assert!(!after_ran(&result), "{pattern:?}: nothing ran after the stop");
    assert!(budget.usage_for(None).total_tokens >= 150, "{pattern:?}: the children's spend is on the parent's account");
}

async fn cancel_stop(pattern: Pattern) {
    let kids = (0..pattern.children())
        .map(|i| Agent::builder().name(format!("k{i}")).model(slow_model(Duration::from_secs(30))).build().unwrap())
        .collect();
    let (parent, input) = pattern.parent(kids, Agent::builder().name("parent"));
    let run = parent.start(input.as_str());
    let mut nested = run.events_with_children();
    let mut waiting = 0;
    while let Some(e) = within(10, "children start", nested.next()).await {
        if e.depth == 1 && e.event.type_name() == "model.request" {
            waiting += 1;
            if waiting == pattern.children() {
                break;
            }
        }
    }
    run.cancel();
    let result = within(10, "cancelled parent", run.result()).await;
    assert_eq!(result.state, RunState::Cancelled, "{pattern:?}: {:?}", result.error);
    assert_eq!(result.error.as_ref().unwrap().kind, RunErrorKind::Cancelled, "{pattern:?}");
    let rest: Vec<_> = within(10, "nested stream ends", nested.collect::<Vec<_>>()).await;
    let ends: Vec<_> = rest.iter().filter(|e| e.depth == 1 && e.event.is_terminal()).collect();
    assert_eq!(ends.len(), pattern.children(), "{pattern:?}: every child ended");
    assert!(ends.iter().all(|e| e.event.type_name() == "run.cancelled"), "{pattern:?}");
    let kids = paired_children(&result.events);
    assert_eq!(kids.len(), pattern.children(), "{pattern:?}");
    assert!(kids.iter().all(|(_, s)| *s == RunState::Cancelled), "{pattern:?}: {kids:?}");
    assert!(!after_ran(&result), "{pattern:?}");
    assert_eq!(result.events.last().unwrap().type_name(), "run.cancelled");
}

#[tokio::test]
async fn a_budget_stop_inside_a_routed_agent_stops_the_router() {
    budget_stop(Pattern::Router).await;
}

#[tokio::test]
async fn a_budget_stop_inside_an_agent_node_stops_the_workflow() {
    budget_stop(Pattern::AgentNode).await;
}

#[tokio::test]
async fn a_budget_stop_inside_fanned_out_agent_nodes_stops_the_workflow() {
    budget_stop(Pattern::FanOut).await;
}

#[tokio::test]
async fn a_budget_stop_inside_parallel_workers_stops_the_supervisor() {
    budget_stop(Pattern::Supervisor).await;
}

#[tokio::test]
async fn cancelling_a_router_cancels_its_routed_agent() {
    cancel_stop(Pattern::Router).await;
}

#[tokio::test]
async fn cancelling_a_workflow_cancels_its_agent_node() {
    cancel_stop(Pattern::AgentNode).await;
}

#[tokio::test]
async fn cancelling_a_workflow_cancels_every_fanned_out_agent_node() {
    cancel_stop(Pattern::FanOut).await;
}

#[tokio::test]
async fn cancelling_a_supervisor_cancels_every_worker() {
    cancel_stop(Pattern::Supervisor).await;
}

/// A child that makes `turns` model calls: a tool batch of `batch` echo calls per turn but the
/// last.
fn busy_child(turns: usize, batch: usize) -> (Arc<ScriptedModel>, Agent) {
    let mut script = Vec::new();
    for t in 0..turns - 1 {
        let mut turn = ScriptedTurn::tool_call("echo", json!({"x": format!("{t}.0")}));
        for c in 1..batch {
            turn = turn.with_tool_call("echo", json!({"x": format!("{t}.{c}")}));
        }
        script.push(turn);
    }
    script.push(ScriptedTurn::text("child done"));
    let (model, shared) = scripted(script);
    (model, Agent::builder().name("child").model(shared).tool(echo_tool("echo")).build().unwrap())
}

fn lead(child: &Agent, builder: AgentBuilder) -> Agent {
    let (_, model) =
        scripted([ScriptedTurn::tool_call("delegate", json!({"input": "work"})), ScriptedTurn::text("lead done")]);
    builder.model(model).tool(child.as_tool("delegate", "Delegates.")).build().unwrap()
}

/// A parent's turn limits count its own model calls: a child's turns do not use them up.
#[tokio::test]
async fn a_parents_turn_limits_count_only_its_own_turns() {
    let (child_model, child) = busy_child(4, 1);
    let budget = StandardBudget::new().max_turns(2);
    let parent = lead(&child, Agent::builder().max_turns(2).budget(budget));
    let result = within(10, "parent", parent.start("go").result()).await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "lead done");
    assert_eq!(result.turns, 2);
    assert_eq!(child_model.requests().len(), 4, "the child's 4 turns are its own");
}

/// A parent's tool-call budget is shared with its children: the child's calls count toward it,
/// and the child stops when the tree reaches it.
#[tokio::test]
async fn a_parents_tool_call_budget_counts_its_childrens_calls() {
    let (child_model, child) = busy_child(3, 2);
    let parent = lead(&child, Agent::builder().budget(StandardBudget::new().max_tool_calls(3)));
    let result = within(10, "parent", parent.start("go").result()).await;
    // The parent's call (1) and the child's first batch (2) reach the limit of 3: the child's next
    // check stops it, then the parent's.
    assert_eq!(result.state, RunState::Interrupted, "{:?}", result.error);
    assert_eq!(result.interruption_reason(), Some("budget: max_tool_calls"));
    assert_eq!(child_model.requests().len(), 1, "the child stopped before its second call");
    assert_eq!(paired_children(&result.events)[0].1, RunState::Interrupted);
}
