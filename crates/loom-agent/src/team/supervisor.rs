//! [`Supervisor`]: a coordinator agent that delegates tasks to named workers (each one a child
//! run, independent ones in parallel) and combines their results.

use super::child::ChildOutcome;
use crate::agent::{Agent, AgentBuilder, RunRequest};
use crate::error::Error;
use crate::event::EventKind;
use crate::run::RunResult;

/// A coordinator that delegates to named workers. Each worker is offered to the coordinator's
/// model as a tool (see [`crate::team::AgentTool`]); calls of one turn run in parallel, so
/// independent tasks proceed at once; the coordinator combines what they return into its answer.
///
/// The coordinator's run is a run like any other (events, budget, journal, audit): every worker
/// call is a child run (`child.started` / `child.finished` in its log, `parent_run_id` on the
/// child's record), and a resumed coordinator does not run a finished worker again.
///
/// ```
/// use loom_agent::prelude::*;
/// use loom_agent::team::Supervisor;
///
/// let writer = Agent::builder().name("writer").model("echo").build()?;
/// let supervisor = Supervisor::builder(Agent::builder().name("lead").model("echo"))
///     .worker("writer", "Writes prose on a topic.", writer)
///     .build()?;
/// assert_eq!(supervisor.workers(), ["writer"]);
/// # Ok::<(), loom_agent::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Supervisor {
    agent: Agent,
    workers: Vec<String>,
}

/// Builds a [`Supervisor`] from the coordinator's builder and its workers.
pub struct SupervisorBuilder {
    coordinator: AgentBuilder,
    workers: Vec<(String, String, Agent)>,
}

/// What a supervisor's run returns: the coordinator's result and each worker call's outcome, in
/// the order they finished.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SupervisorOutcome {
    /// The coordinator's run.
    pub result: RunResult,
    /// Each worker call: (worker, outcome).
    pub workers: Vec<(String, ChildOutcome)>,
}

impl Supervisor {
    /// Starts building a supervisor whose coordinator is built by `coordinator`.
    pub fn builder(coordinator: AgentBuilder) -> SupervisorBuilder {
        SupervisorBuilder { coordinator, workers: Vec::new() }
    }

    /// The coordinator agent (to stream, start, resume its runs).
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The workers' names.
    pub fn workers(&self) -> &[String] {
        &self.workers
    }

    /// Runs the coordinator to the end.
    ///
    /// # Errors
    /// [`Error::Run`] when the coordinator's run does not complete (a worker stopped by the
    /// budget stops it too, interrupted).
    pub async fn run(&self, request: impl Into<RunRequest>) -> Result<SupervisorOutcome, Error> {
        let result = self.agent.run(request).await?;
        Ok(outcome(result))
    }
}

/// The coordinator's result with its workers' outcomes, read from its `child.finished` events.
pub(crate) fn outcome(result: RunResult) -> SupervisorOutcome {
    let workers = result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ChildFinished(f) => Some((
                f.agent.clone(),
                ChildOutcome {
                    run_id: f.child_run_id.clone(),
                    state: f.state,
                    output: String::new(),
                    parsed: None,
                    error: None,
                    usage: f.usage,
                    turns: f.turns,
                    replayed: false,
                },
            )),
            _ => None,
        })
        .collect();
    SupervisorOutcome { result, workers }
}

impl SupervisorBuilder {
    /// Adds a worker: the coordinator calls it by `name` with a task; `description` tells the
    /// coordinator what it is good at.
    pub fn worker(mut self, name: impl Into<String>, description: impl Into<String>, agent: Agent) -> Self {
        self.workers.push((name.into(), description.into(), agent));
        self
    }

    /// Builds the coordinator: its instructions gain the list of workers and how to delegate,
    /// its tools one per worker.
    ///
    /// # Errors
    /// [`Error::Config`] without workers, or as [`AgentBuilder::build`].
    pub fn build(self) -> Result<Supervisor, Error> {
        if self.workers.is_empty() {
            return Err(Error::Config("a supervisor needs at least one worker".into()));
        }
        let mut directive = String::from(
            "You coordinate these workers. Delegate each task to the worker suited to it by calling its tool with \
             the task; call several in the same turn when their tasks are independent (they run in parallel). \
             When you have their results, combine them into the final answer.\nWorkers:",
        );
        for (name, description, _) in &self.workers {
            directive.push_str(&format!("\n- {name}: {description}"));
        }
        let mut coordinator = self.coordinator.append_instructions(&directive);
        let mut names = Vec::new();
        for (name, description, agent) in self.workers {
            coordinator = coordinator.tool(agent.as_tool(name.clone(), description));
            names.push(name);
        }
        Ok(Supervisor { agent: coordinator.build()?, workers: names })
    }
}

impl std::fmt::Debug for SupervisorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.workers.iter().map(|w| w.0.as_str()).collect();
        f.debug_struct("SupervisorBuilder").field("workers", &names).finish_non_exhaustive()
    }
}
