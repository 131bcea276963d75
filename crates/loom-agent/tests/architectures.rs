//! The architectures' control flow with scripted models: which calls happen, in which order, with
//! which messages and tools; their events and artifacts; budget and max_turns stops; and a
//! resume after the process died mid-run, which replays the journal instead of calling again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use loom_agent::architecture::{ARCHITECTURE_NAMES, PlanExecute, ReWoo, Reflexion, SelfRefine, TreeOfThoughts};
use loom_agent::event::{CritiqueEvent, PlanStepEvent, PlanStepStatus, ThoughtScored};
use loom_agent::governance::StandardBudget;
use loom_agent::message::Message;
use loom_agent::model::{RecordedRequest, ScriptedTurn};
use loom_agent::store::{
    InMemoryJournal, Journal, JournalEntry, JournalRunSummary, JournaledRun, Lease, RunFilter, RunRecord,
};
use loom_agent::tool::{FunctionTool, ToolOutput};
use loom_agent::{Agent, Error, Event, EventKind, RunErrorKind, RunResult, RunState};
use serde_json::{Value, json};

fn text(t: impl Into<String>) -> ScriptedTurn {
    ScriptedTurn::text(t)
}

fn js(v: Value) -> ScriptedTurn {
    ScriptedTurn::text(v.to_string())
}

/// The text of the last message of a request.
fn last(req: &RecordedRequest) -> String {
    req.messages.last().map(Message::text).unwrap_or_default()
}

/// The texts of a request's messages.
fn texts(req: &RecordedRequest) -> Vec<String> {
    req.messages.iter().map(Message::text).collect()
}

fn tool_names(req: &RecordedRequest) -> Vec<String> {
    req.tools.iter().map(|t| t.name.clone()).collect()
}

fn steps(events: &[Event]) -> Vec<(u32, String, PlanStepStatus)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::PlanStep(PlanStepEvent { revision, id, status, .. }) => Some((*revision, id.clone(), *status)),
            _ => None,
        })
        .collect()
}

fn critiques(events: &[Event]) -> Vec<CritiqueEvent> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Critique(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

/// A tool `name` that answers `"<name>:<x>"` and counts how often its body runs.
fn counted(name: &str, runs: Arc<AtomicUsize>) -> FunctionTool {
    let label = name.to_string();
    FunctionTool::new(name, format!("Look up x ({name})."), x_schema(), move |_ctx, args| {
        let (label, runs) = (label.clone(), runs.clone());
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(ToolOutput::text(format!("{label}:{}", args["x"].as_str().unwrap_or_default())))
        }
    })
}

async fn run(agent: &Agent, input: &str) -> RunResult {
    within(10, "the run", agent.start(input).result()).await
}

/// A run's result and the texts of its transcript's messages.
async fn run_full(agent: &Agent, input: &str) -> (RunResult, Vec<String>) {
    let run = agent.start(input);
    let result = within(10, "the run", run.result()).await;
    let messages = run.transcript().messages.iter().map(Message::text).collect();
    (result, messages)
}

// ---------------------------------------------------------------- plan_execute

fn plan_script() -> Vec<ScriptedTurn> {
    vec![
        // The plan: `a` depends on `b`, so `b` runs first.
        js(json!({"steps": [
            {"id": "a", "description": "combine the findings", "depends_on": ["b"]},
            {"id": "b", "description": "look up x", "depends_on": []}
        ]})),
        ScriptedTurn::tool_call("lookup", json!({"x": "x"})),
        text("found lookup:x"),
        text("combined"),
        text("final answer"),
    ]
}

#[tokio::test]
async fn plan_execute_plans_then_runs_steps_in_dependency_order_with_tools() {
    let runs = Arc::new(AtomicUsize::new(0));
    let (recorder, model) = scripted(plan_script());
    let agent = Agent::builder()
        .instructions("Be useful.")
        .model(model)
        .tool(counted("lookup", runs.clone()))
        .architecture_name("plan_execute")
        .build()
        .unwrap();
    let result = run(&agent, "research x").await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "final answer");
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let reqs = recorder.requests();
    assert_eq!(reqs.len(), 5);
    // 1. The plan: the conversation plus the planning instruction (with the tools described and
    // the schema as an instruction, as this model has no native structured output), no tools.
    assert_eq!(texts(&reqs[0])[..2], ["Be useful.", "research x"]);
    assert_eq!(reqs[0].messages.len(), 3);
    assert!(last(&reqs[0]).starts_with("Make a plan for the request above"), "{}", last(&reqs[0]));
    assert!(last(&reqs[0]).contains("- lookup: Look up x (lookup)."));
    assert!(last(&reqs[0]).contains("Structured output required") && last(&reqs[0]).contains("Plan"));
    assert!(reqs[0].tools.is_empty());
    // 2-3. Step b (first: a depends on it), with the tools; the plan is not in the conversation.
    assert_eq!(texts(&reqs[1]).len(), 3);
    assert!(last(&reqs[1]).starts_with("Step b of the plan: look up x"), "{}", last(&reqs[1]));
    assert_eq!(tool_names(&reqs[1]), ["lookup"]);
    assert_eq!(tool_messages(&reqs[2].messages), [("call_2_0".to_string(), "lookup:x".to_string(), false)]);
    // 4. Step a, after b's result.
    assert!(last(&reqs[3]).starts_with("Step a of the plan: combine the findings"));
    assert!(texts(&reqs[3]).contains(&"found lookup:x".to_string()));
    // 5. The final answer, without tools.
    assert!(last(&reqs[4]).starts_with("Every step of the plan is done"));
    assert!(reqs[4].tools.is_empty());

    let plan = result
        .events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::PlanCreated(p) => Some(p.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(plan.revision, 1);
    assert_eq!(plan.steps.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(plan.steps[0].depends_on, ["b"]);
    use PlanStepStatus::*;
    assert_eq!(
        steps(&result.events),
        [(1, "b".into(), Started), (1, "b".into(), Completed), (1, "a".into(), Started), (1, "a".into(), Completed)]
    );
    assert_eq!(result.artifacts.len(), 1);
    assert_eq!(result.artifacts[0].id, "plan-1");
    let artifact: Value = serde_json::from_str(&result.artifacts[0].content).unwrap();
    assert_eq!(artifact["steps"][1]["id"], "b");
    // The plan event comes before the first step's model call.
    let t = types(&result.events);
    let created = t.iter().position(|x| *x == "plan.created").unwrap();
    assert_eq!(t.iter().filter(|x| **x == "model.request").count(), 5);
    assert_eq!(t[..created].iter().filter(|x| **x == "model.request").count(), 1);
}

#[tokio::test]
async fn plan_execute_replans_after_a_failed_step_and_an_unusable_plan() {
    let (recorder, model) = scripted([
        js(json!({"steps": [{"id": "1", "description": "fetch the data"}]})),
        text("FAILED: the source is down"),
        text("not a plan at all"),
        js(json!({"steps": [{"id": "2", "description": "use the mirror"}]})),
        text("mirror data"),
        text("done"),
    ]);
    let agent = Agent::builder().model(model).architecture(PlanExecute::new().max_replans(2)).build().unwrap();
    let result = run(&agent, "get the data").await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "done");
    let reqs = recorder.requests();
    assert_eq!(reqs.len(), 6);
    assert!(last(&reqs[1]).contains("reply with `FAILED:`"));
    // The re-plan sees the failure and the conversation with the failed step.
    assert!(
        last(&reqs[2])
            .starts_with("The plan did not work out: step 1 (fetch the data) failed: FAILED: the source is down")
    );
    assert!(texts(&reqs[2]).contains(&"FAILED: the source is down".to_string()));
    // An answer that is no plan counts as a failed plan too.
    assert!(
        last(&reqs[3]).starts_with("The plan did not work out: the plan did not match its schema"),
        "{}",
        last(&reqs[3])
    );
    assert!(last(&reqs[4]).starts_with("Step 2 of the plan: use the mirror"));
    use PlanStepStatus::*;
    assert_eq!(
        steps(&result.events),
        [(1, "1".into(), Started), (1, "1".into(), Failed), (3, "2".into(), Started), (3, "2".into(), Completed)]
    );
    let ids: Vec<&str> = result.artifacts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["plan-1", "plan-3"]);
}

#[tokio::test]
async fn plan_execute_fails_honestly_when_the_replans_run_out() {
    let (recorder, model) = scripted([
        js(json!({"steps": [{"id": "1", "description": "fetch"}]})),
        text("failed - nothing there"),
        js(json!({"steps": [{"id": "1", "description": "fetch", "depends_on": ["9"]}]})),
    ]);
    let agent = Agent::builder().model(model).architecture(PlanExecute::new().max_replans(1)).build().unwrap();
    let result = run(&agent, "get it").await;
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.kind, RunErrorKind::Model);
    assert!(error.message.contains("no plan succeeded after 1 re-plan(s)"), "{}", error.message);
    assert!(error.message.contains("depends on `9`"), "{}", error.message);
    assert_eq!(recorder.requests().len(), 3, "no final call after the failure");
}

// ---------------------------------------------------------------- self_refine and reflexion

#[tokio::test]
async fn self_refine_critiques_and_revises_until_the_critique_passes() {
    let (recorder, model) = scripted([
        text("draft"),
        js(json!({"passed": false, "score": 4, "feedback": "add detail"})),
        text("better"),
        js(json!({"passed": true, "score": 9, "feedback": "good"})),
    ]);
    let agent =
        Agent::builder().model(model).tool(echo_tool("lookup")).architecture_name("self_refine").build().unwrap();
    let (result, kept) = run_full(&agent, "explain x").await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "better");
    let reqs = recorder.requests();
    assert_eq!(reqs.len(), 4);
    assert_eq!(tool_names(&reqs[0]), ["lookup"], "the answer may use tools");
    // The critique sees the answer, offers no tools, asks for the schema.
    assert_eq!(texts(&reqs[1])[..2], ["explain x", "draft"]);
    assert!(last(&reqs[1]).starts_with("Critique the last answer above"));
    assert!(last(&reqs[1]).contains("Structured output required"));
    assert!(reqs[1].tools.is_empty());
    // The revision gets the feedback; the critique itself is not in the conversation.
    assert_eq!(texts(&reqs[2]).len(), 3);
    assert!(last(&reqs[2]).starts_with("Feedback on your answer:\nadd detail\nRevise"));
    assert_eq!(texts(&reqs[3])[..4], ["explain x", "draft", texts(&reqs[2])[2].as_str(), "better"]);
    let c = critiques(&result.events);
    assert_eq!(c.len(), 2);
    assert_eq!((c[0].round, c[0].passed, c[0].score, c[0].feedback.as_str()), (1, false, Some(4.0), "add detail"));
    assert_eq!((c[1].round, c[1].passed), (2, true));
    // The transcript (and the session's history) holds the answers, not the critiques.
    assert!(!kept.iter().any(|m| m.contains("\"passed\"")), "{kept:?}");
    assert_eq!(kept.last().unwrap(), "better");
}

#[tokio::test]
async fn self_refine_stops_after_its_rounds_with_the_last_revision() {
    let (recorder, model) = scripted([
        text("v1"),
        js(json!({"passed": false, "feedback": "no"})),
        text("v2"),
        js(json!({"passed": false, "feedback": "still no"})),
    ]);
    let agent = Agent::builder().model(model).architecture(SelfRefine::new().max_rounds(2)).build().unwrap();
    let result = run(&agent, "q").await;
    assert_eq!(result.output, "v2");
    assert_eq!(recorder.requests().len(), 4);
    let c = critiques(&result.events);
    assert_eq!(c.iter().map(|c| c.passed).collect::<Vec<_>>(), [false, false], "the event says it did not pass");
}

#[tokio::test]
async fn self_refine_fails_on_a_critique_it_cannot_read() {
    let (_, model) = scripted([text("v1"), text("looks fine to me")]);
    let agent = Agent::builder().model(model).architecture_name("self_refine").build().unwrap();
    let result = run(&agent, "q").await;
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.kind, RunErrorKind::Model);
    assert!(error.message.contains("self_refine: the model's critique is not usable"), "{}", error.message);
}

#[tokio::test]
async fn reflexion_retries_with_every_lesson_so_far() {
    let runs = Arc::new(AtomicUsize::new(0));
    let (recorder, model) = scripted([
        ScriptedTurn::tool_call("lookup", json!({"x": "1"})),
        text("attempt 1"),
        js(json!({"passed": false, "feedback": "wrong units", "reflection": "check the units"})),
        text("attempt 2"),
        js(json!({"passed": false, "feedback": "too long", "reflection": "be concise"})),
        text("attempt 3"),
        js(json!({"passed": true, "score": 10, "feedback": "right"})),
    ]);
    let agent = Agent::builder()
        .model(model)
        .tool(counted("lookup", runs.clone()))
        .architecture(Reflexion::new().max_trials(3))
        .build()
        .unwrap();
    let result = run(&agent, "convert 1 mile").await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "attempt 3");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let reqs = recorder.requests();
    assert_eq!(reqs.len(), 7);
    assert!(last(&reqs[2]).starts_with("Evaluate the last attempt above"));
    assert!(reqs[2].tools.is_empty());
    assert_eq!(tool_names(&reqs[3]), ["lookup"], "each attempt may use tools");
    assert!(last(&reqs[3]).starts_with(
        "Your attempt did not pass: wrong units\nLessons from your attempts so far:\n1. check the units\nTry"
    ));
    assert!(last(&reqs[5]).contains("1. check the units\n2. be concise\nTry"), "{}", last(&reqs[5]));
    let c = critiques(&result.events);
    assert_eq!(c.iter().map(|c| (c.round, c.passed)).collect::<Vec<_>>(), [(1, false), (2, false), (3, true)]);
}

// ---------------------------------------------------------------- rewoo

#[tokio::test]
async fn rewoo_plans_runs_every_tool_without_the_model_then_solves_once() {
    let runs = Arc::new(AtomicUsize::new(0));
    let (recorder, model) = scripted([
        js(json!({"steps": [
            {"id": "E1", "plan": "find the city", "tool": "lookup", "arguments": {"x": "capital"}},
            {"id": "E2", "plan": "its weather", "tool": "lookup", "arguments": {"x": "weather in #E1"}}
        ]})),
        text("It is sunny."),
    ]);
    let agent =
        Agent::builder().model(model).tool(counted("lookup", runs.clone())).architecture_name("rewoo").build().unwrap();
    let (result, kept) = run_full(&agent, "weather in the capital?").await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "It is sunny.");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let reqs = recorder.requests();
    assert_eq!(reqs.len(), 2, "one plan call, one solve call, nothing in between");
    assert!(last(&reqs[0]).starts_with("Plan how to answer the request above"));
    assert!(last(&reqs[0]).contains("- lookup: Look up x (lookup)."));
    assert!(reqs[0].tools.is_empty() && reqs[1].tools.is_empty());
    let solve = last(&reqs[1]);
    assert!(solve.contains("#E1 = lookup[{\"x\":\"capital\"}]\nEvidence: lookup:capital"), "{solve}");
    assert!(solve.contains("Evidence: lookup:weather in lookup:capital"), "{solve}");
    assert_eq!(texts(&reqs[1]).len(), 2, "the plan is not in the conversation");
    // Tool calls sit between the plan's response and the solve request, with no model call.
    let t = types(&result.events);
    let first_response = t.iter().position(|x| *x == "model.response").unwrap();
    let second_request = t.iter().rposition(|x| *x == "model.request").unwrap();
    let between: Vec<&str> =
        t[first_response..second_request].iter().copied().filter(|x| x.starts_with("tool.")).collect();
    assert_eq!(between, ["tool.call", "tool.result", "tool.call", "tool.result"]);
    assert_eq!(tool_call_ids(&result.events), ["rewoo_1_E1", "rewoo_1_E2"]);
    let results = tool_results(&result.events);
    assert_eq!(results[1].output, "lookup:weather in lookup:capital");
    use PlanStepStatus::*;
    assert_eq!(
        steps(&result.events),
        [
            (1, "E1".into(), Started),
            (1, "E1".into(), Completed),
            (1, "E2".into(), Started),
            (1, "E2".into(), Completed)
        ]
    );
    assert_eq!(result.artifacts[0].id, "plan");
    // The transcript: the request and the answer.
    assert_eq!(kept, ["weather in the capital?", "It is sunny."]);
}

#[tokio::test]
async fn rewoo_tool_calls_go_through_permissions_and_the_budget() {
    // A denied tool is an error the solver reads; the run goes on.
    let (recorder, model) = scripted([
        js(json!({"steps": [{"id": "E1", "plan": "delete", "tool": "rm", "arguments": {"x": "a"}}]})),
        text("could not delete"),
    ]);
    let rm = FunctionTool::new("rm", "Delete x.", x_schema(), |_ctx, _args| async { Ok(ToolOutput::text("gone")) })
        .destructive();
    let agent = Agent::builder().model(model).tool(rm).architecture(ReWoo::new()).build().unwrap();
    let result = run(&agent, "delete a").await;
    assert_eq!(result.state, RunState::Completed);
    assert!(tool_results(&result.events)[0].is_error);
    assert!(last(&recorder.requests()[1]).contains("Evidence: Error:"), "{}", last(&recorder.requests()[1]));
    assert_eq!(steps(&result.events)[1].2, PlanStepStatus::Failed);

    // The budget counts the architecture's tool calls: the second one stops the run.
    let runs = Arc::new(AtomicUsize::new(0));
    let (recorder, model) = scripted([
        js(json!({"steps": [
            {"id": "E1", "plan": "a", "tool": "lookup", "arguments": {"x": "a"}},
            {"id": "E2", "plan": "b", "tool": "lookup", "arguments": {"x": "b"}}
        ]})),
        text("never"),
    ]);
    let agent = Agent::builder()
        .model(model)
        .tool(counted("lookup", runs.clone()))
        .budget(StandardBudget::new().max_tool_calls(1))
        .architecture_name("rewoo")
        .build()
        .unwrap();
    let result = run(&agent, "both").await;
    assert_eq!(result.state, RunState::Interrupted);
    assert_eq!(result.error.unwrap().kind, RunErrorKind::Budget);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(recorder.requests().len(), 1, "no solve call after the budget stop");
}

#[tokio::test]
async fn rewoo_refuses_a_plan_that_uses_a_later_result() {
    let (recorder, model) = scripted([js(json!({"steps": [
        {"id": "E1", "plan": "a", "tool": "lookup", "arguments": {"x": "#E2"}},
        {"id": "E2", "plan": "b", "tool": "lookup", "arguments": {"x": "b"}}
    ]}))]);
    let agent = Agent::builder().model(model).tool(echo_tool("lookup")).architecture_name("rewoo").build().unwrap();
    let result = run(&agent, "q").await;
    assert_eq!(result.state, RunState::Failed);
    assert!(result.error.unwrap().message.contains("uses #E2, which is not an earlier step"));
    assert_eq!(recorder.requests().len(), 1);
    assert!(tool_results(&result.events).is_empty());
}

// ---------------------------------------------------------------- tree_of_thoughts

#[tokio::test]
async fn tree_of_thoughts_expands_scores_prunes_and_answers_along_the_best_line() {
    let (recorder, model) = scripted([
        js(json!({"thoughts": ["A", "B", "C"]})),
        js(json!({"scores": [3, 7]})),
        js(json!({"thoughts": ["B1", "B2"]})),
        js(json!({"scores": [9, 5]})),
        text("answer via B1"),
    ]);
    let agent = Agent::builder()
        .model(model)
        .tool(echo_tool("lookup"))
        .architecture(TreeOfThoughts::new().breadth(1).depth(2).branching(2))
        .build()
        .unwrap();
    let result = run(&agent, "solve it").await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "answer via B1");
    let reqs = recorder.requests();
    assert_eq!(reqs.len(), 5);
    assert!(reqs.iter().all(|r| r.tools.is_empty()), "a search offers no tools");
    assert!(last(&reqs[0]).starts_with("Think about the request above. Propose up to 2 different first steps"));
    // Only two of the three thoughts are taken (branching 2).
    assert!(last(&reqs[1]).contains("Candidate 1:\n1. A\n\nCandidate 2:\n1. B"), "{}", last(&reqs[1]));
    assert!(!last(&reqs[1]).contains("Candidate 3"));
    // Breadth 1: only B is expanded.
    assert!(last(&reqs[2]).contains("The reasoning so far:\n1. B\nPropose up to 2"), "{}", last(&reqs[2]));
    assert!(last(&reqs[3]).contains("Candidate 1:\n1. B\n2. B1\n\nCandidate 2:\n1. B\n2. B2"));
    assert!(
        last(&reqs[4])
            .starts_with("The most promising line of reasoning for the request above:\n1. B\n2. B1\nFollow it")
    );
    // Each call sees the request only, never the other calls' answers.
    assert!(reqs.iter().all(|r| r.messages.len() == 2));
    let scored: Vec<ThoughtScored> = result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ThoughtScored(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    type Row<'a> = (u32, &'a str, Option<&'a str>, &'a str, f64, bool);
    let view: Vec<Row<'_>> = scored
        .iter()
        .map(|t| (t.depth, t.id.as_str(), t.parent.as_deref(), t.thought.as_str(), t.score, t.kept))
        .collect();
    assert_eq!(
        view,
        [
            (1, "1", None, "A", 3.0, false),
            (1, "2", None, "B", 7.0, true),
            (2, "2.1", Some("2"), "B1", 9.0, true),
            (2, "2.2", Some("2"), "B2", 5.0, false)
        ]
    );
}

#[tokio::test]
async fn tree_of_thoughts_stops_at_max_turns_and_on_bad_scores() {
    let (recorder, model) = scripted([js(json!({"thoughts": ["A", "B"]})), js(json!({"scores": [1, 2]}))]);
    let agent = Agent::builder().model(model).max_turns(2).architecture_name("tree_of_thoughts").build().unwrap();
    let result = run(&agent, "q").await;
    assert_eq!(result.state, RunState::Interrupted);
    assert_eq!(result.error.unwrap().kind, RunErrorKind::MaxTurns);
    assert_eq!(recorder.requests().len(), 2);

    let (_, model) = scripted([js(json!({"thoughts": ["A", "B"]})), js(json!({"scores": [1]}))]);
    let agent = Agent::builder().model(model).architecture_name("tree_of_thoughts").build().unwrap();
    let result = run(&agent, "q").await;
    assert_eq!(result.state, RunState::Failed);
    assert!(result.error.unwrap().message.contains("1 scores for 2 candidates"));
}

// ---------------------------------------------------------------- every architecture

#[tokio::test]
async fn every_named_architecture_stops_at_the_budget_before_an_extra_model_call() {
    for name in ARCHITECTURE_NAMES {
        // Enough answers for any of them; the budget allows two model calls.
        let (recorder, model) = scripted([
            js(
                json!({"steps": [{"id": "E1", "plan": "p", "tool": "lookup", "arguments": {"x": "a"}, "description": "d"}],
                      "passed": false, "feedback": "f", "reflection": "r", "thoughts": ["t"], "scores": [1]}),
            ),
            js(
                json!({"steps": [{"id": "E1", "plan": "p", "tool": "lookup", "arguments": {"x": "a"}, "description": "d"}],
                      "passed": false, "feedback": "f", "reflection": "r", "thoughts": ["t"], "scores": [1]}),
            ),
        ]);
        let agent = Agent::builder()
            .model(model.clone())
            .tool(echo_tool("lookup"))
            .budget(StandardBudget::new().max_turns(2))
            .architecture_name(name)
            .build()
            .unwrap();
        let result = run(&agent, "q").await;
        if *name == "react" || *name == "rewoo" {
            // Two calls are enough for these to answer.
            assert_eq!(result.state, RunState::Completed, "{name}: {:?}", result.error);
        } else {
            assert_eq!(result.state, RunState::Interrupted, "{name}: {:?}", result.error);
            assert_eq!(result.error.unwrap().kind, RunErrorKind::Budget, "{name}");
            assert_eq!(types(&result.events).iter().filter(|t| **t == "budget.exceeded").count(), 1, "{name}");
        }
        assert!(recorder.requests().len() <= 2, "{name}");
    }
}

#[tokio::test]
async fn architectures_by_name_and_unknown_names() {
    for name in ARCHITECTURE_NAMES {
        let agent = Agent::builder().model("echo").architecture_name(name).build().unwrap();
        assert!(format!("{agent:?}").contains(&format!("architecture: \"{name}\"")), "{agent:?}");
    }
    let agent = Agent::builder().model("echo").architecture_name(" Plan_Execute ").build().unwrap();
    assert!(format!("{agent:?}").contains("plan_execute"));
    let Err(Error::Config(message)) = Agent::builder().model("echo").architecture_name("chain_of_doom").build() else {
        panic!("an unknown architecture must fail the build")
    };
    assert!(message.contains("unknown architecture `chain_of_doom`"), "{message}");
    assert!(message.contains("react, plan_execute, reflexion, self_refine, rewoo, tree_of_thoughts"), "{message}");
}

// ---------------------------------------------------------------- resume

/// A journal whose process "dies" once `entries` entries are appended: that append and every
/// journal call after it never return, as with a killed process.
struct DiesAfter {
    inner: Arc<InMemoryJournal>,
    entries: usize,
    appended: AtomicUsize,
    dead: AtomicBool,
}

impl DiesAfter {
    fn new(inner: Arc<InMemoryJournal>, entries: usize) -> Self {
        DiesAfter { inner, entries, appended: AtomicUsize::new(0), dead: AtomicBool::new(false) }
    }

    async fn alive(&self) {
        if self.dead.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait::async_trait]
impl Journal for DiesAfter {
    async fn begin(&self, record: &RunRecord, lease: &Lease, events: &[Event]) -> Result<(), Error> {
        self.alive().await;
        self.inner.begin(record, lease, events).await
    }
    async fn append(&self, run_id: &str, lease: &Lease, entry: &JournalEntry, events: &[Event]) -> Result<(), Error> {
        self.alive().await;
        self.inner.append(run_id, lease, entry, events).await?;
        if self.appended.fetch_add(1, Ordering::SeqCst) + 1 >= self.entries {
            self.dead.store(true, Ordering::SeqCst);
            self.alive().await;
        }
        Ok(())
    }
    async fn end(&self, run_id: &str, lease: &Lease, state: RunState, events: &[Event]) -> Result<(), Error> {
        self.alive().await;
        self.inner.end(run_id, lease, state, events).await
    }
    async fn acquire(&self, run_id: &str, lease: &Lease) -> Result<u64, Error> {
        self.alive().await;
        self.inner.acquire(run_id, lease).await
    }
    async fn renew(&self, run_id: &str, lease: &Lease) -> Result<(), Error> {
        self.alive().await;
        self.inner.renew(run_id, lease).await
    }
    async fn decide(&self, run_id: &str, entry: &JournalEntry) -> Result<(), Error> {
        self.alive().await;
        self.inner.decide(run_id, entry).await
    }
    async fn load(&self, run_id: &str) -> Result<Option<JournaledRun>, Error> {
        self.inner.load(run_id).await
    }
    async fn list(&self, filter: &RunFilter) -> Result<Vec<JournalRunSummary>, Error> {
        self.inner.list(filter).await
    }
}

/// Runs `script` under `architecture` on a journal that dies after `entries` entries, resumes it
/// in a "new process" with a model holding only `rest`, and returns the resumed result, the
/// second model's requests, how often the tool body ran in all, and an uninterrupted run's
/// result for comparison.
async fn die_and_resume(
    architecture: &str,
    script: Vec<ScriptedTurn>,
    entries: usize,
    rest: Vec<ScriptedTurn>,
) -> (RunResult, Vec<RecordedRequest>, usize, (RunResult, Vec<String>)) {
    let runs = Arc::new(AtomicUsize::new(0));
    let inner = Arc::new(InMemoryJournal::new());
    let (_, model) = scripted(script.clone());
    let first = Agent::builder()
        .model(model)
        .tool(counted("lookup", runs.clone()))
        .architecture_name(architecture)
        .journal(DiesAfter::new(inner.clone(), entries))
        .lease_ttl(Duration::from_millis(200))
        .build()
        .unwrap();
    let stuck = first.start("research x");
    let run_id = stuck.id().to_string();
    within(10, "the journal dies", async {
        loop {
            if inner.load(&run_id).await.unwrap().is_some_and(|r| r.entries.len() >= entries) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let (recorder, model) = scripted(rest);
    let second = Agent::builder()
        .model(model)
        .tool(counted("lookup", runs.clone()))
        .architecture_name(architecture)
        .journal(loom_agent::store::JournalSlot { journal: inner.clone(), session_store: None })
        .build()
        .unwrap();
    let resumed = within(10, "resume", async {
        loop {
            match second.resume(&run_id).await {
                Err(Error::LeaseHeld { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
                other => return other.unwrap(),
            }
        }
    })
    .await;
    let result = within(10, "the resumed run", resumed.result()).await;
    drop(stuck);
    let (_, model) = scripted(script);
    let fresh =
        Agent::builder().model(model).tool(echo_tool("lookup")).architecture_name(architecture).build().unwrap();
    let uninterrupted = run_full(&fresh, "research x").await;
    (result, recorder.requests(), runs.load(Ordering::SeqCst), uninterrupted)
}

#[tokio::test]
async fn plan_execute_resumes_without_calling_the_model_or_the_tool_again() {
    // Entries: the plan, step b's tool call, its intent and result, step b's answer: the process
    // dies after step b is done.
    let script = plan_script();
    let rest = script[3..].to_vec();
    let (result, reqs, runs, (uninterrupted, kept)) = die_and_resume("plan_execute", script, 5, rest).await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "final answer");
    assert_eq!(runs, 1, "the step's tool ran once in all");
    assert_eq!(reqs.len(), 2, "only step a and the final answer were asked for");
    assert!(last(&reqs[0]).starts_with("Step a of the plan"), "{}", last(&reqs[0]));
    // The resumed run's conversation and events are an uninterrupted run's.
    assert_eq!(texts(&reqs[0])[..], kept[..texts(&reqs[0]).len()]);
    assert_eq!(types(&result.events), types(&uninterrupted.events));
    assert_eq!(steps(&result.events), steps(&uninterrupted.events));
    assert_eq!(result.artifacts.len(), 1, "the plan artifact once, not twice");
    assert_eq!(result.artifacts, uninterrupted.artifacts);
}

#[tokio::test]
async fn rewoo_resumes_after_its_first_tool_without_running_it_again() {
    let script = vec![
        js(json!({"steps": [
            {"id": "E1", "plan": "a", "tool": "lookup", "arguments": {"x": "a"}},
            {"id": "E2", "plan": "b", "tool": "lookup", "arguments": {"x": "#E1"}}
        ]})),
        text("solved"),
    ];
    // Entries: the plan, E1's intent and result.
    let (result, reqs, runs, (uninterrupted, _)) =
        die_and_resume("rewoo", script.clone(), 3, script[1..].to_vec()).await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "solved");
    assert_eq!(runs, 2, "E1 ran once (before the crash), E2 once (after)");
    assert_eq!(reqs.len(), 1, "only the solve call");
    assert!(last(&reqs[0]).contains("Evidence: lookup:lookup:a"));
    assert_eq!(types(&result.events), types(&uninterrupted.events));
    assert_eq!(tool_call_ids(&result.events), ["rewoo_1_E1", "rewoo_1_E2"]);
}

#[tokio::test]
async fn self_refine_resumes_mid_critique_loop() {
    let script = vec![
        text("draft"),
        js(json!({"passed": false, "feedback": "more"})),
        text("better"),
        js(json!({"passed": true, "feedback": "ok"})),
    ];
    // Dies after the first critique.
    let (result, reqs, _, (uninterrupted, _)) =
        die_and_resume("self_refine", script.clone(), 2, script[2..].to_vec()).await;
    assert_eq!(result.output, "better");
    assert_eq!(reqs.len(), 2);
    assert!(last(&reqs[0]).starts_with("Feedback on your answer:\nmore"));
    assert_eq!(types(&result.events), types(&uninterrupted.events));
    assert_eq!(critiques(&result.events), critiques(&uninterrupted.events));
}
