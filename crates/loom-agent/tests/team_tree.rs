//! Deeper trees and edge cases of the multi-agent patterns: grandchildren (an agent tool whose
//! agent has an agent tool) with nested events, cost roll-up and the ancestors' budget; a child's
//! transcript naming its parent; handoff limits and unknown targets; what a routed agent sees.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use futures::StreamExt;
use loom_agent::governance::StandardBudget;
use loom_agent::message::{Message, Usage};
use loom_agent::model::ScriptedTurn;
use loom_agent::store::{SessionKey, SessionStore};
use loom_agent::team::{HandoffTool, Handoffs, Router};
use loom_agent::{Agent, AgentBuilder, EventKind, RunRequest, RunState};
use serde_json::json;

fn priced(input: u64, output: u64, cost: f64) -> Usage {
    Usage { input_tokens: input, output_tokens: output, cost_usd: cost, ..Usage::default() }
}

/// `lead` → `mid` (as a tool) → `leaf` (as a tool); `leaf` answers on its first call with
/// `leaf_turn`.
fn tree(leaf_turn: ScriptedTurn, store: &SharedStore, lead: AgentBuilder) -> Agent {
    let (_, leaf_model) = scripted([leaf_turn, ScriptedTurn::text("leaf never")]);
    let leaf = Agent::builder()
        .name("leaf")
        .model(leaf_model)
        .tool(echo_tool("echo"))
        .session_store(store.clone())
        .build()
        .unwrap();
    let (_, mid_model) = scripted([
        ScriptedTurn::tool_call("leaf", json!({"input": "deep"})).with_usage(priced(4, 1, 0.02)),
        ScriptedTurn::text("mid done").with_usage(priced(4, 1, 0.02)),
    ]);
    let mid = Agent::builder()
        .name("mid")
        .model(mid_model)
        .tool(leaf.as_tool("leaf", "Goes deeper."))
        .session_store(store.clone())
        .build()
        .unwrap();
    let (_, lead_model) = scripted([
        ScriptedTurn::tool_call("mid", json!({"input": "go on"})).with_usage(priced(10, 2, 0.1)),
        ScriptedTurn::text("lead done").with_usage(priced(10, 2, 0.1)),
    ]);
    lead.name("lead").model(lead_model).tool(mid.as_tool("mid", "Delegates.")).build().unwrap()
}

/// Grandchildren: nested live events at depth 2 under the child, the priced usage of every level
/// rolled up into the parent's `cost_usd`, and each transcript naming its parent.
#[tokio::test]
async fn grandchildren_nest_their_events_and_roll_up_their_cost() {
    let store = SharedStore::default();
    let lead = tree(ScriptedTurn::text("leaf done").with_usage(priced(1, 1, 0.005)), &store, Agent::builder());
    let run = lead.start(RunRequest::new("start").user("ann"));
    let all: Vec<_> = within(10, "nested", run.events_with_children().collect::<Vec<_>>()).await;
    let result = run.result().await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    let mid_id = format!("{}.call_1_0", result.run_id);
    let leaf_id = format!("{mid_id}.call_1_0");
    let of = |id: &str| all.iter().filter(|e| *e.event.run_id == *id).collect::<Vec<_>>();
    let (mid_events, leaf_events) = (of(&mid_id), of(&leaf_id));
    assert!(mid_events.iter().all(|e| e.depth == 1 && e.parent_run_id.as_deref() == Some(result.run_id.as_str())));
    assert!(!leaf_events.is_empty());
    assert!(leaf_events.iter().all(|e| e.depth == 2 && e.parent_run_id.as_deref() == Some(mid_id.as_str())));
    let seqs: Vec<u64> = leaf_events.iter().map(|e| e.event.seq).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "the grandchild's events, complete and in order");
    assert_eq!(leaf_events.last().unwrap().event.type_name(), "run.completed");
    // Cost: lead 0.2 + mid 0.04 + leaf 0.005, all on the lead's account.
    assert!((result.usage.cost_usd - 0.245).abs() < 1e-9, "{}", result.usage.cost_usd);
    assert_eq!(result.usage.input_tokens, 20 + 8 + 1);
    let mid_finished = result
        .events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ChildFinished(f) if f.child_run_id == mid_id => Some(f.usage),
            _ => None,
        })
        .unwrap();
    assert!((mid_finished.cost_usd - 0.045).abs() < 1e-9, "the child's usage includes its own child's");
    // Each transcript names its parent.
    for (id, parent) in [(&leaf_id, &mid_id), (&mid_id, &result.run_id)] {
        let session = of(id)[0].event.session_id.clone();
        let key = SessionKey { user_id: Some("ann"), session_id: &session };
        let transcript = store.get_run(key, id).await.unwrap().unwrap_or_else(|| panic!("transcript of {id}"));
        assert_eq!(transcript.parent_run_id.as_deref(), Some(parent.as_str()), "{id}");
        assert_eq!(transcript.user_id.as_deref(), Some("ann"));
    }
}

/// A grandparent's budget reached inside a grandchild stops all three, interrupted.
#[tokio::test]
async fn a_grandparents_budget_stops_the_whole_tree() {
    let store = SharedStore::default();
    let spend = ScriptedTurn::tool_call("echo", json!({"x": "a"})).with_usage(priced(100, 50, 0.0));
    let budget = StandardBudget::new().max_tokens(100);
    let lead = tree(spend, &store, Agent::builder().budget(budget.clone()));
    let run = lead.start("start");
    let all: Vec<_> = within(10, "nested", run.events_with_children().collect::<Vec<_>>()).await;
    let result = run.result().await;
    assert_eq!(result.state, RunState::Interrupted, "{:?}", result.error);
    assert_eq!(result.interruption_reason(), Some("budget: max_tokens"));
    let mut ends: Vec<(u32, &str)> =
        all.iter().filter(|e| e.event.is_terminal()).map(|e| (e.depth, e.event.type_name())).collect();
    ends.sort();
    assert_eq!(ends, vec![(0, "run.interrupted"), (1, "run.interrupted"), (2, "run.interrupted")]);
    assert_eq!(budget.usage_for(None).total_tokens, 12 + 5 + 150, "every level's spend on the lead's account");
}

/// `max_handoffs`: agents that keep handing the conversation back and forth end the request with
/// an error once past the limit, after exactly limit + 1 runs.
#[tokio::test]
async fn handoffs_past_the_limit_end_the_request() {
    let store = SharedStore::default();
    let pinger = |name: &str, to: &str| {
        let (model, shared) = scripted([ScriptedTurn::tool_call(format!("transfer_to_{to}"), json!({}))]);
        let agent = Agent::builder().name(name).model(shared).session_store(store.clone()).build().unwrap();
        (model, agent)
    };
    let ((a_model, a), (b_model, b)) = (pinger("a", "b"), pinger("b", "a"));
    // Each agent's script has one turn: a third visit to either would find it empty.
    let team = Handoffs::new(a).agent(b).max_handoffs(1).build().unwrap();
    let err = within(10, "handoffs", team.run(RunRequest::new("ping"))).await.unwrap_err().to_string();
    assert!(err.contains("more than 1 handoffs"), "{err}");
    assert_eq!((a_model.requests().len(), b_model.requests().len()), (1, 1), "two runs: the entry and one handoff");
}

/// A handoff to an agent that is not in the team ends the request with an error naming it.
#[tokio::test]
async fn a_handoff_to_an_unknown_agent_fails_the_request() {
    let (_, model) = scripted([ScriptedTurn::tool_call("transfer_to_ghost", json!({}))]);
    let entry = Agent::builder().name("entry").model(model).tool(HandoffTool::new("ghost", "Nobody.")).build().unwrap();
    let team = Handoffs::new(entry).build().unwrap();
    let err = within(10, "handoff", team.run(RunRequest::new("hi"))).await.unwrap_err().to_string();
    assert!(err.contains("`ghost`, which is not in the team"), "{err}");
}

/// The routed agent answers the request alone: it gets the request, not the router's session
/// history, which only the classification call sees.
#[tokio::test]
async fn a_routed_agent_sees_the_request_without_the_session_history() {
    let store = SharedStore::default();
    let (routed_model, routed_shared) = scripted([ScriptedTurn::text("first"), ScriptedTurn::text("second")]);
    let routed = Agent::builder().name("only").model(routed_shared).build().unwrap();
    let (classifier, router_model) = scripted([
        ScriptedTurn::text(json!({"agent": "only"}).to_string()),
        ScriptedTurn::text(json!({"agent": "only"}).to_string()),
    ]);
    let router = Router::new()
        .route("only", "Only.", routed)
        .build(Agent::builder().model(router_model).session_store(store.clone()))
        .unwrap();
    router.run(RunRequest::new("earlier question").session("s")).await.unwrap();
    let second = router.run(RunRequest::new("later question").session("s")).await.unwrap();
    assert_eq!(second.output, "second");
    let seen: Vec<String> = routed_model.requests()[1].messages.iter().map(Message::text).collect();
    assert!(seen.iter().any(|m| m == "later question"), "{seen:?}");
    assert!(!seen.iter().any(|m| m.contains("earlier question") || m.contains("first")), "{seen:?}");
    let classified: Vec<String> = classifier.requests()[1].messages.iter().map(Message::text).collect();
    assert!(classified.iter().any(|m| m == "earlier question"), "the classifier sees the history: {classified:?}");
    assert!(classified.iter().any(|m| m == "first"), "with the routed answer: {classified:?}");
    let history = store.history(SessionKey { user_id: None, session_id: "s" }).await.unwrap();
    let history: Vec<String> = history.iter().map(Message::text).collect();
    assert_eq!(history, ["earlier question", "first", "later question", "second"]);
}
