//! Running a workflow as a run: [`WorkflowAgent`], and the architecture that walks the graph.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde_json::Value;

use super::{END, Edge, NodeKind, Workflow, WorkflowState};
use crate::agent::{Agent, AgentBuilder, Run, RunRequest};
use crate::architecture::Architecture;
use crate::error::{Error, RunError, RunErrorKind};
use crate::event::{EventKind, WorkflowNodeEvent};
use crate::run::{RunInput, RunResult};
use crate::runtime::RunCx;
use crate::team::{child_answer, run_child};

/// A workflow ready to run: an agent whose architecture walks the graph. Its runs are runs like
/// any other (events, budget, journal, audit, `loom runs`); their input is the initial state as
/// JSON and their answer the final state as JSON.
pub struct WorkflowAgent<S> {
    agent: Agent,
    _state: PhantomData<fn() -> S>,
}

impl<S> Clone for WorkflowAgent<S> {
    fn clone(&self) -> Self {
        WorkflowAgent { agent: self.agent.clone(), _state: PhantomData }
    }
}

impl<S> std::fmt::Debug for WorkflowAgent<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowAgent").field("agent", &self.agent).finish()
    }
}

impl<S: WorkflowState> Workflow<S> {
    /// The agent that runs this workflow, built by `builder` (its journal makes the workflow
    /// durable; its budget and audit log apply). A builder without a model gets `echo` (a
    /// workflow's own steps call no model).
    ///
    /// # Errors
    /// As [`Workflow::build`] and [`AgentBuilder::build`].
    pub fn into_agent(self, builder: AgentBuilder) -> Result<WorkflowAgent<S>, Error> {
        super::graph::check(&self)?;
        let builder = if builder.has_model() { builder } else { builder.model("echo") };
        let builder = builder.max_turns(u32::MAX);
        let agent = builder.architecture(WorkflowArchitecture { workflow: Arc::new(self) }).build()?;
        Ok(WorkflowAgent { agent, _state: PhantomData })
    }
}

impl<S: WorkflowState> WorkflowAgent<S> {
    /// The agent (to stream, list or resume the workflow's runs).
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// Starts a run of the workflow on `state`.
    ///
    /// # Errors
    /// [`Error::Config`] when the state does not serialize.
    pub fn start(&self, state: &S, request: RunRequest) -> Result<Run, Error> {
        let input = serde_json::to_string(state).map_err(|e| Error::Config(format!("the workflow's state: {e}")))?;
        Ok(self.agent.start(RunRequest { input: Some(RunInput::Prompt(input)), ..request }))
    }

    /// Runs the workflow on `state` to the end and returns the final state with the run's result.
    ///
    /// # Errors
    /// [`Error::Run`] when the run does not complete; [`Error::Config`] when a state does not
    /// (de)serialize.
    pub async fn run(&self, state: S) -> Result<(S, RunResult), Error> {
        let run = self.start(&state, RunRequest::default())?;
        let result = run.wait().await?;
        Ok((final_state(&result)?, result))
    }

    /// Continues a workflow run whose process died: completed nodes are not run again.
    ///
    /// # Errors
    /// As [`Agent::resume`], then as [`WorkflowAgent::run`].
    pub async fn resume(&self, run_id: &str) -> Result<(S, RunResult), Error> {
        let run = self.agent.resume(run_id).await?;
        let result = run.wait().await?;
        Ok((final_state(&result)?, result))
    }
}

/// The final state a workflow run answered with.
pub fn final_state<S: WorkflowState>(result: &RunResult) -> Result<S, Error> {
    serde_json::from_str(&result.output).map_err(|e| Error::Config(format!("the workflow's final state: {e}")))
}

struct WorkflowArchitecture<S> {
    workflow: Arc<Workflow<S>>,
}

#[async_trait::async_trait]
impl<S: WorkflowState> Architecture for WorkflowArchitecture<S> {
    fn name(&self) -> &str {
        "workflow"
    }

    async fn run(&self, cx: &mut RunCx) -> Result<String, RunError> {
        let text = cx.input_message().map(crate::message::Message::text).unwrap_or_default();
        let state: S = serde_json::from_str(&text).map_err(|e| {
            RunError::new(
                RunErrorKind::Config,
                format!("workflow `{}`: the input is not its state: {e}", self.workflow.name),
            )
        })?;
        // A resumed run's completed nodes, by key: parallel branches look theirs up concurrently.
        let replay = Mutex::new(cx.take_replayed_steps());
        let walk = Walk { steps: AtomicU32::new(0), cap: self.workflow.max_steps, replay };
        let state = walk.graph(cx, &self.workflow, String::new(), state).await?;
        serde_json::to_string(&state).map_err(|e| RunError::new(RunErrorKind::Node, format!("the final state: {e}")))
    }
}

/// One walk through a workflow (and its sub-workflows): counts node executions against the cap
/// and hands out the journaled outputs of nodes that completed before a crash. Shared by a
/// fan-out's branches, which run concurrently.
struct Walk {
    steps: AtomicU32,
    cap: u32,
    replay: Mutex<HashMap<String, Value>>,
}

impl Walk {
    fn graph<'a, S: WorkflowState>(
        &'a self,
        cx: &'a RunCx,
        wf: &'a Workflow<S>,
        prefix: String,
        mut state: S,
    ) -> BoxFuture<'a, Result<S, RunError>> {
        Box::pin(async move {
            let mut visits: HashMap<&str, u32> = HashMap::new();
            let mut current = wf.start.clone().unwrap_or_else(|| END.to_string());
            while current != END {
                state = self.node(cx, wf, &prefix, &current, &mut visits, state).await?;
                current = match wf.edges.get(current.as_str()) {
                    None => END.to_string(),
                    Some(Edge::To(to)) => to.clone(),
                    Some(Edge::Branch { targets, route }) => {
                        let to = route(&state);
                        if !targets.contains(&to) {
                            return Err(RunError::new(
                                RunErrorKind::Node,
                                format!(
                                    "workflow `{}`: the router after `{current}` chose `{to}`, not one of its targets",
                                    wf.name
                                ),
                            ));
                        }
                        to
                    }
                    Some(Edge::FanOut { branches, join, merge }) => {
                        let done = self.fan_out(cx, wf, &prefix, branches, &mut visits, &state).await?;
                        state = merge(state, done);
                        join.clone()
                    }
                };
            }
            Ok(state)
        })
    }

    /// Runs one node (or takes its journaled output), counting it against the cap.
    async fn node<'w, S: WorkflowState>(
        &self,
        cx: &RunCx,
        wf: &'w Workflow<S>,
        prefix: &str,
        name: &str,
        visits: &mut HashMap<&'w str, u32>,
        state: S,
    ) -> Result<S, RunError> {
        let (key, visit) = self.visit(wf, prefix, name, visits)?;
        if let Some(done) = self.replayed(cx, &key, name, visit)? {
            return Ok(done);
        }
        cx.before_step().await?;
        self.execute(cx, wf, key, name, visit, state).await
    }

    /// Runs a node that has no journaled output: a sub-workflow's nodes one by one, a leaf at
    /// once; then journals its completion.
    async fn execute<S: WorkflowState>(
        &self,
        cx: &RunCx,
        wf: &Workflow<S>,
        key: String,
        name: &str,
        visit: u32,
        state: S,
    ) -> Result<S, RunError> {
        let kind = wf.nodes.get(name).ok_or_else(|| unknown(wf, name))?;
        show(cx, name, "started", visit);
        let out = match kind {
            NodeKind::Sub(sub) => self.graph(cx, sub, format!("{key}/"), state).await,
            leaf => leaf_node(cx, leaf, &key, name, state).await,
        };
        finish(cx, &key, name, visit, out).await
    }

    /// Runs a fan-out's branches concurrently (a sub-workflow branch walks its nodes while the
    /// others run), each on a copy of `state`; branches, and nodes inside sub-workflow branches,
    /// that completed before a crash are not run again. Waits for every branch (AND-join).
    async fn fan_out<'w, S: WorkflowState>(
        &self,
        cx: &RunCx,
        wf: &'w Workflow<S>,
        prefix: &str,
        branches: &'w [String],
        visits: &mut HashMap<&'w str, u32>,
        state: &S,
    ) -> Result<Vec<S>, RunError> {
        let mut done: Vec<Option<S>> = Vec::with_capacity(branches.len());
        let mut todo = Vec::new();
        for name in branches {
            let (key, visit) = self.visit(wf, prefix, name, visits)?;
            match self.replayed(cx, &key, name, visit)? {
                Some(s) => done.push(Some(s)),
                None => {
                    done.push(None);
                    todo.push((done.len() - 1, name.as_str(), key, visit));
                }
            }
        }
        if todo.is_empty() {
            return Ok(done.into_iter().flatten().collect());
        }
        cx.before_step().await?;
        let runs = todo.into_iter().map(|(i, name, key, visit)| async move {
            (i, self.execute(cx, wf, key, name, visit, state.clone()).await)
        });
        for (i, out) in futures::future::join_all(runs).await {
            done[i] = Some(out?);
        }
        Ok(done.into_iter().flatten().collect())
    }

    /// Counts a node execution: its journal key and its visit number.
    fn visit<'w, S>(
        &self,
        wf: &'w Workflow<S>,
        prefix: &str,
        name: &str,
        visits: &mut HashMap<&'w str, u32>,
    ) -> Result<(String, u32), RunError> {
        let steps = self.steps.fetch_add(1, Ordering::Relaxed) + 1;
        if steps > self.cap {
            return Err(RunError::interrupted(
                RunErrorKind::MaxTurns,
                "max_steps",
                format!("the workflow ran {} nodes, its cap (max_steps)", self.cap),
            ));
        }
        let (stored, _) = wf.nodes.get_key_value(name).ok_or_else(|| unknown(wf, name))?;
        let visit = visits.entry(stored.as_str()).or_insert(0);
        *visit += 1;
        Ok((format!("{prefix}{name}.{visit}"), *visit))
    }

    /// The journaled output of a node that completed before a crash.
    fn replayed<S: WorkflowState>(&self, cx: &RunCx, key: &str, name: &str, visit: u32) -> Result<Option<S>, RunError> {
        let value = self.replay.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        let Some(value) = value else { return Ok(None) };
        let state = serde_json::from_value(value)
            .map_err(|e| RunError::new(RunErrorKind::Store, format!("journal: node `{name}`'s state: {e}")))?;
        show(cx, name, "replayed", visit);
        Ok(Some(state))
    }
}

/// A function or agent node.
async fn leaf_node<S: WorkflowState>(
    cx: &RunCx,
    kind: &NodeKind<S>,
    key: &str,
    name: &str,
    state: S,
) -> Result<S, RunError> {
    match kind {
        NodeKind::Func(f) => {
            f(state).await.map_err(|e| RunError::new(RunErrorKind::Node, format!("node `{name}`: {e}")))
        }
        NodeKind::Agent { agent, prompt, apply } => {
            let request = Box::new(RunRequest::new(prompt(&state)));
            let outcome = run_child(agent, Some(cx.link()), cx.cancellation(), Some(key), name, request).await;
            Ok(apply(state, child_answer(name, outcome)?))
        }
        NodeKind::Sub(_) => Err(RunError::new(RunErrorKind::Internal, "a sub-workflow is not a leaf")),
    }
}

/// Journals a node's completion (a journal boundary) and announces how it ended.
async fn finish<S: WorkflowState>(
    cx: &RunCx,
    key: &str,
    name: &str,
    visit: u32,
    out: Result<S, RunError>,
) -> Result<S, RunError> {
    match out {
        Ok(state) => {
            let value: Value = serde_json::to_value(&state)
                .map_err(|e| RunError::new(RunErrorKind::Node, format!("node `{name}`'s state: {e}")))?;
            show(cx, name, "completed", visit);
            cx.complete_step(key, &value).await?;
            Ok(state)
        }
        Err(e) => {
            show(cx, name, "failed", visit);
            Err(e)
        }
    }
}

fn show(cx: &RunCx, node: &str, status: &str, visit: u32) {
    cx.emit(EventKind::WorkflowNode(WorkflowNodeEvent { node: node.to_string(), status: status.to_string(), visit }));
}

fn unknown<S>(wf: &Workflow<S>, name: &str) -> RunError {
    RunError::new(RunErrorKind::Node, format!("workflow `{}`: no node `{name}`", wf.name))
}
