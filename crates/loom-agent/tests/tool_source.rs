//! Capabilities whose tools change (`Capability::tool_source`, what MCP servers use): the run
//! offers the source's current tools from the next model turn after a change, loads once per
//! change (not per turn or run), fails the run when the first load fails, and keeps the earlier
//! tools when a later load fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use common::*;
use loom_agent::capability::{Capability, ToolSource};
use loom_agent::model::ScriptedTurn;
use loom_agent::tool::{FunctionTool, Tool, ToolOutput};
use loom_agent::{Agent, RunErrorKind, RunState};
use serde_json::json;

#[derive(Default)]
struct Source {
    generation: AtomicU64,
    fail: AtomicBool,
    loads: AtomicUsize,
}

#[async_trait::async_trait]
impl ToolSource for Source {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Tools `t0` … `tN` for generation N.
    async fn load(&self) -> Result<Vec<Arc<dyn Tool>>, String> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err("boom".to_string());
        }
        let n = self.generation();
        Ok((0..=n)
            .map(|i| {
                Arc::new(
                    FunctionTool::new(
                        format!("t{i}"),
                        "A tool.",
                        json!({"type": "object"}),
                        move |_c, _a| async move { Ok(ToolOutput::text(format!("t{i} ran"))) },
                    )
                    .read_only(),
                ) as Arc<dyn Tool>
            })
            .collect())
    }
}

/// A fixed tool `bump` that moves the source's generation, and the source.
struct Changing(Arc<Source>);

impl Capability for Changing {
    fn name(&self) -> &str {
        "changing"
    }

    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        let source = self.0.clone();
        vec![Arc::new(FunctionTool::new("bump", "Adds a tool.", json!({"type": "object"}), move |_c, _a| {
            let source = source.clone();
            async move {
                source.generation.fetch_add(1, Ordering::AcqRel);
                Ok(ToolOutput::text("bumped"))
            }
        }))]
    }

    fn tool_source(&self) -> Option<Arc<dyn ToolSource>> {
        Some(self.0.clone())
    }
}

fn names(tools: &[loom_agent::tool::ToolSpec]) -> Vec<String> {
    tools.iter().map(|t| t.name.clone()).collect()
}

#[tokio::test]
async fn a_change_is_offered_from_the_next_turn_and_loaded_once() {
    let source = Arc::new(Source::default());
    let (model, shared) = scripted([
        ScriptedTurn::tool_call("bump", json!({})),
        ScriptedTurn::tool_call("t1", json!({})),
        ScriptedTurn::text("done"),
        ScriptedTurn::text("again"),
    ]);
    let agent = Agent::builder().model(shared).capability(Changing(source.clone())).build().unwrap();
    assert_eq!(names(&agent.tools()), ["bump"], "only the fixed tools are known at build time");
    let result = within(10, "run", agent.run("go")).await.unwrap();
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    let results = tool_results(&result.events);
    assert_eq!(results[1].output, "t1 ran");
    let requests = model.requests();
    assert_eq!(names(&requests[0].tools), ["bump", "t0"]);
    assert_eq!(names(&requests[1].tools), ["bump", "t0", "t1"]);
    assert_eq!(names(&requests[2].tools), ["bump", "t0", "t1"]);
    assert_eq!(source.loads.load(Ordering::SeqCst), 2, "one load at the start, one after the change");

    // Another run with nothing changed: no load.
    let result = within(10, "run", agent.run("again")).await.unwrap();
    assert_eq!(result.state, RunState::Completed);
    assert_eq!(source.loads.load(Ordering::SeqCst), 2);
    assert_eq!(names(&agent.current_tools().await.unwrap()), ["bump", "t0", "t1"]);
}

#[tokio::test]
async fn a_failed_later_load_keeps_the_earlier_tools() {
    let source = Arc::new(Source::default());
    let (model, shared) = scripted([
        ScriptedTurn::tool_call("bump", json!({})),
        ScriptedTurn::tool_call("t0", json!({})),
        ScriptedTurn::text("done"),
    ]);
    let agent = Agent::builder().model(shared).capability(Changing(source.clone())).build().unwrap();
    let warm = agent.current_tools().await.unwrap();
    assert_eq!(names(&warm), ["bump", "t0"]);
    source.fail.store(true, Ordering::SeqCst);
    let result = within(10, "run", agent.run("go")).await.unwrap();
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(tool_results(&result.events)[1].output, "t0 ran");
    let requests = model.requests();
    assert_eq!(names(&requests[1].tools), ["bump", "t0"], "the earlier tools stay");
    assert_eq!(names(&requests[2].tools), ["bump", "t0"]);
    // Loaded at warm-up, tried once after the bump, not again on the third turn.
    assert_eq!(source.loads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_first_load_that_fails_fails_the_run_before_the_model_is_called() {
    let source = Arc::new(Source::default());
    source.fail.store(true, Ordering::SeqCst);
    let (model, shared) = scripted([ScriptedTurn::text("unreachable")]);
    let agent = Agent::builder().model(shared).capability(Changing(source)).build().unwrap();
    let result = failed_result(within(10, "run", agent.run("go")).await.unwrap_err());
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.kind, RunErrorKind::Config);
    assert_eq!(error.message, "configuration error: the tools of `changing` could not be loaded: boom");
    assert!(model.requests().is_empty());
    let err = agent.current_tools().await.unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
}

#[tokio::test]
async fn colliding_names_from_a_source_fail_the_run() {
    struct Clash;
    impl Capability for Clash {
        fn name(&self) -> &str {
            "clash"
        }
        fn tools(&self) -> Vec<Arc<dyn Tool>> {
            vec![Arc::new(FunctionTool::new("t0", "fixed", json!({"type": "object"}), |_c, _a| async {
                Ok(ToolOutput::text("fixed"))
            }))]
        }
        fn tool_source(&self) -> Option<Arc<dyn ToolSource>> {
            Some(Arc::new(Source::default()))
        }
    }
    let (_, shared) = scripted([ScriptedTurn::text("unreachable")]);
    let agent = Agent::builder().model(shared).capability(Clash).build().unwrap();
    let result = failed_result(within(10, "run", agent.run("go")).await.unwrap_err());
    let error = result.error.unwrap();
    assert_eq!(error.kind, RunErrorKind::Config);
    assert!(error.message.contains("two tools are named `t0`"), "{}", error.message);
}

#[tokio::test]
async fn without_sources_the_current_tools_are_the_fixed_ones() {
    let (_, shared) = scripted([ScriptedTurn::text("x")]);
    let tool = FunctionTool::new("only", "x", json!({"type": "object"}), |_c, _a| async { Ok(ToolOutput::text("x")) });
    let agent = Agent::builder().model(shared).tool(tool).build().unwrap();
    assert_eq!(names(&agent.current_tools().await.unwrap()), names(&agent.tools()));
}
