//! A live agent: `add_tool`, `remove_tool` and `add_hook` on a built agent (and its clones) take
//! effect for runs that start afterwards; a run in flight keeps the tools and hooks it started
//! with; concurrent changes are never lost, while runs go on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use loom_agent::governance::{HookAction, Hooks, Scope};
use loom_agent::message::Message;
use loom_agent::model::{FnModel, ModelRequest, ScriptedTurn};
use loom_agent::run::RunInput;
use loom_agent::{Agent, Error, RunState};
use serde_json::json;

fn names(agent: &Agent) -> Vec<String> {
    agent.tools().iter().map(|t| t.name.clone()).collect()
}

#[tokio::test]
async fn tools_added_and_removed_apply_to_later_runs_on_every_clone() {
    let (recorder, model) = scripted([
        ScriptedTurn::text("one"),
        ScriptedTurn::tool_call("b", json!({"x": "1"})),
        ScriptedTurn::text("two"),
        ScriptedTurn::text("three"),
    ]);
    let agent = Agent::builder().model(model).tool(echo_tool("a")).build().unwrap();
    let clone = agent.clone();
    agent.run("first").await.unwrap();
    clone.add_tool(echo_tool("b")).unwrap();
    assert_eq!(names(&agent), ["a", "b"], "a clone shares the change");
    let second = agent.run("second").await.unwrap();
    assert_eq!(tool_results(&second.events)[0].output, "b:1");
    assert!(agent.remove_tool("a").unwrap());
    assert!(!agent.remove_tool("a").unwrap(), "already gone");
    agent.run("third").await.unwrap();
    let offered: Vec<Vec<String>> =
        recorder.requests().iter().map(|r| r.tools.iter().map(|t| t.name.clone()).collect()).collect();
    assert_eq!(offered, [vec!["a"], vec!["a", "b"], vec!["a", "b"], vec!["b"]]);
}

#[tokio::test]
async fn bad_tools_are_refused_and_change_nothing() {
    let agent = Agent::builder().model("echo").tool(echo_tool("a")).build().unwrap();
    let Err(Error::Config(message)) = agent.add_tool(echo_tool("a")) else { panic!("a duplicate name is refused") };
    assert!(message.contains("two tools are named `a`"), "{message}");
    assert!(matches!(agent.add_tool(echo_tool("bad name")), Err(Error::Config(_))));
    assert_eq!(names(&agent), ["a"]);
}

/// A model whose answers depend on what the run offers: it calls `late` when offered, and
/// otherwise answers with the offered tools' names. The first call of each run waits `delay`.
fn tool_aware_model(delay: Duration) -> FnModel {
    FnModel::new("aware", move |req: &ModelRequest<'_>| {
        let offered: Vec<&str> = req.tools.iter().map(|t| t.name.as_str()).collect();
        let answered = req.messages.iter().any(|m| matches!(m, Message::Tool { .. }));
        if answered {
            return ScriptedTurn::text(format!("done with {}", offered.join(",")));
        }
        let turn = if offered.contains(&"late") {
            ScriptedTurn::tool_call("late", json!({"x": "y"}))
        } else {
            ScriptedTurn::tool_call("early", json!({"x": "y"}))
        };
        if req.turn == 1 { turn.with_delay(delay) } else { turn }
    })
}

#[tokio::test]
async fn a_run_in_flight_keeps_the_tools_and_hooks_it_started_with() {
    let (_, model) = share(tool_aware_model(Duration::from_millis(300)));
    let agent = Agent::builder().model(model).tool(echo_tool("early")).build().unwrap();
    let calls = Log::default();
    let in_flight = agent.start("go");
    // The run is waiting for its first answer when the tools and hooks change.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(agent.remove_tool("early").unwrap());
    agent.add_tool(echo_tool("late")).unwrap();
    agent.add_hook(Recording(calls.clone()));
    let old = within(10, "the run in flight", in_flight.result()).await;
    assert_eq!(old.state, RunState::Completed, "{:?}", old.error);
    // It called `early`, which it still had, and was offered only `early` on its second turn too.
    assert_eq!(tool_results(&old.events)[0].output, "early:y");
    assert_eq!(old.output, "done with early");
    assert!(calls.snapshot().is_empty(), "the hook added mid-run does not see that run");
    let new = agent.run("go again").await.unwrap();
    assert_eq!(tool_results(&new.events)[0].output, "late:y");
    assert_eq!(new.output, "done with late");
    assert_eq!(calls.snapshot(), ["before_run go again", "before_tool late"]);
}

#[derive(Clone)]
struct Recording(Log);

#[async_trait::async_trait]
impl Hooks for Recording {
    async fn before_run(&self, _scope: &Scope, input: &RunInput) -> HookAction {
        self.0.push(format!("before_run {}", input.summary()));
        HookAction::Continue
    }

    async fn before_tool(
        &self,
        _scope: &Scope,
        call: &loom_agent::ToolCall,
        _args: &serde_json::Value,
    ) -> loom_agent::governance::ToolHookAction {
        self.0.push(format!("before_tool {}", call.name));
        loom_agent::governance::ToolHookAction::Continue
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_while_runs_are_in_flight_are_all_kept() {
    // Each run answers with the tools it was offered on its first turn and on its second: they
    // must be the same set, whatever changed in between.
    let (_, model) = share(FnModel::new("offer", |req: &ModelRequest<'_>| {
        let offered: Vec<String> = req.tools.iter().map(|t| t.name.clone()).collect();
        if req.turn == 1 {
            ScriptedTurn::tool_call("base", json!({"x": offered.join(",")})).with_delay(Duration::from_millis(2))
        } else {
            ScriptedTurn::text(offered.join(","))
        }
    }));
    let agent = Agent::builder().model(model).tool(echo_tool("base")).build().unwrap();
    let hooks_seen = Arc::new(AtomicUsize::new(0));
    let mut runs = Vec::new();
    let mut changers = Vec::new();
    for w in 0..4 {
        let agent = agent.clone();
        changers.push(tokio::spawn(async move {
            for i in 0..25 {
                let name = format!("t{w}_{i}");
                agent.add_tool(echo_tool(&name)).unwrap();
                tokio::task::yield_now().await;
                if i % 2 == 1 {
                    assert!(agent.remove_tool(&name).unwrap());
                }
            }
        }));
    }
    for _ in 0..4 {
        let agent = agent.clone();
        let hooks_seen = hooks_seen.clone();
        changers.push(tokio::spawn(async move {
            for _ in 0..10 {
                agent.add_hook(Counting(hooks_seen.clone()));
                tokio::task::yield_now().await;
            }
        }));
    }
    for _ in 0..40 {
        let agent = agent.clone();
        runs.push(tokio::spawn(async move { agent.run("which tools?").await.unwrap() }));
    }
    for c in changers {
        within(20, "the changes", c).await.unwrap();
    }
    for r in runs {
        let result = within(20, "a run", r).await.unwrap();
        let first_turn = tool_results(&result.events)[0].output.trim_start_matches("base:").to_string();
        assert_eq!(result.output, first_turn, "a run's tools do not change while it runs");
    }
    // Every change is kept: 4 × 25 added, 4 × 12 removed, the 40 hooks are all there.
    let mut expected: Vec<String> = vec!["base".into()];
    for w in 0..4 {
        for i in (0..25).filter(|i| i % 2 == 0) {
            expected.push(format!("t{w}_{i}"));
        }
    }
    let mut got = names(&agent);
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    hooks_seen.store(0, Ordering::SeqCst);
    agent.run("count the hooks").await.unwrap();
    assert_eq!(hooks_seen.load(Ordering::SeqCst), 40);
}

struct Counting(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl Hooks for Counting {
    async fn before_run(&self, _scope: &Scope, _input: &RunInput) -> HookAction {
        self.0.fetch_add(1, Ordering::SeqCst);
        HookAction::Continue
    }
}

/// A tool source (as an MCP server is) with one tool, counting its loads.
struct OneTool(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl loom_agent::capability::ToolSource for OneTool {
    fn generation(&self) -> u64 {
        1
    }

    async fn load(&self) -> Result<Vec<Arc<dyn loom_agent::Tool>>, String> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(vec![Arc::new(echo_tool("served"))])
    }
}

struct Server(Arc<AtomicUsize>);

impl loom_agent::capability::Capability for Server {
    fn name(&self) -> &str {
        "server"
    }

    fn tools(&self) -> Vec<Arc<dyn loom_agent::Tool>> {
        Vec::new()
    }

    fn tool_source(&self) -> Option<Arc<dyn loom_agent::capability::ToolSource>> {
        Some(Arc::new(OneTool(self.0.clone())))
    }
}

#[tokio::test]
async fn tools_added_next_to_a_tool_source_join_its_tools_without_reloading_it() {
    let loads = Arc::new(AtomicUsize::new(0));
    let (recorder, model) = scripted([ScriptedTurn::text("one"), ScriptedTurn::text("two")]);
    let agent =
        Agent::builder().model(model).tool(echo_tool("fixed")).capability(Server(loads.clone())).build().unwrap();
    agent.run("first").await.unwrap();
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    agent.add_tool(echo_tool("added")).unwrap();
    // A name the source already serves is refused.
    assert!(matches!(agent.add_tool(echo_tool("served")), Err(Error::Config(_))));
    agent.run("second").await.unwrap();
    assert_eq!(loads.load(Ordering::SeqCst), 1, "the source's tools were kept, not loaded again");
    let offered: Vec<Vec<String>> =
        recorder.requests().iter().map(|r| r.tools.iter().map(|t| t.name.clone()).collect()).collect();
    assert_eq!(offered, [vec!["fixed", "served"], vec!["fixed", "added", "served"]]);
    let current: Vec<String> = agent.current_tools().await.unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(current, ["fixed", "added", "served"]);
}
