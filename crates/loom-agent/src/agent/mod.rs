//! The agent layer: [`Agent`] (a configured loop driver), [`Session`] (a conversation), and [`Run`]
//! (one execution, with its live event log).

mod background;
mod builder;
mod driver;
mod input;
mod knowledge;
mod live;
mod memory;
mod profile;
mod queue;
mod run;
mod schedule;
mod session;
mod signals;
mod worker;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

pub use crate::run::{Artifact, KnowledgeItem, RunContext, RunInput, RunResult, RunState, RuntimeTask, Transcript};
pub use builder::AgentBuilder;
pub use input::RunRequest;
pub use profile::{ApprovalRule, ContextPolicy, CriteriaGate, Runtime, RuntimeBuilder};
pub use queue::{QueueReport, QueueWorker, prune_periodically, queued_request};
pub use run::{EventStream, Run, RunStream};
use session::SessionInner;
pub use session::{Session, SessionConfig};
pub use signals::Receipt;
pub use worker::{Worker, WorkerReport};

use crate::architecture::{Architecture, ReAct};
use crate::capability::Capability;
use crate::error::Error;
use crate::governance::Approval;
use crate::governance::{
    ApprovalHandler, AuditLog, Budget, DefaultPermissions, Guardrail, Hooks, Permissions, RateLimiter,
};
use crate::model::{Generation, IntoModel, SharedModel};
use crate::output::OutputSchema;
use crate::runtime::{Guardrails, HookSet, Limits, Live, Policies, RunEnv, Stores};
use crate::store::{
    InMemorySessionStore, IntoJournal, Journal, JournalEntry, JournalRunSummary, JournalSlot, Lease, RunFilter,
    SessionStore,
};
use crate::telemetry::Telemetry;
use crate::tool::{DynamicTools, IntoTool, Tool, ToolRegistry, ToolSpec};

/// A configured loop driver: instructions, a model, tools, and the policies around them.
///
/// An `Agent` is a value: cheap to clone (one `Arc`), `Send + Sync`, with no per-run state. One
/// agent serves any number of concurrent runs, sessions and users.
///
/// ```
/// use loom_agent::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), loom_agent::Error> {
/// let agent = Agent::builder().instructions("Be brief.").model("echo").build()?;
/// let result = agent.run("hello").await?;
/// assert_eq!(result.output, "Echo: hello");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Agent {
    pub(crate) inner: Arc<AgentInner>,
}

pub(crate) struct AgentInner {
    /// What every run consults (the runtime layer reads nothing else).
    pub(crate) env: Arc<RunEnv>,
    pub(crate) architecture: Arc<dyn Architecture>,
    pub(crate) runtime: Runtime,
    pub(crate) max_turns: u32,
    pub(crate) timeout: Option<Duration>,
    pub(crate) output_schema: Option<OutputSchema>,
    pub(crate) sessions: Mutex<HashMap<session::SessionId, Weak<SessionInner>>>,
    /// The application's handle on memory.
    pub(crate) memory: crate::memory::MemoryHandle,
    /// The knowledge sources, if any.
    pub(crate) knowledge: Option<Arc<crate::knowledge::Knowledge>>,
    /// What a session does with a signal.
    pub(crate) attention: Arc<dyn crate::signal::AttentionPolicy>,
    /// Whether the signal store outlives this process (then a session opened here handles the
    /// signals that arrived while no process was up).
    pub(crate) signals_durable: bool,
}

impl Agent {
    /// Starts building an agent.
    pub fn builder() -> AgentBuilder {
        AgentBuilder::default()
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.inner.env.name
    }

    /// The full instructions sent as the system message: the agent's instructions, the
    /// capabilities' instructions and the runtime profile's criteria.
    pub fn instructions(&self) -> &str {
        &self.inner.env.instructions
    }

    /// The model.
    pub fn model(&self) -> &SharedModel {
        &self.inner.env.model
    }

    /// The tools offered to the model now (a run offers those it started with). With
    /// capabilities whose tools change (MCP servers), these are only the fixed ones;
    /// [`Agent::current_tools`] loads the rest.
    pub fn tools(&self) -> Arc<[ToolSpec]> {
        self.inner.env.live.load().tools.specs().clone()
    }

    /// The tools a run would offer now, loading the tool sources (connecting to MCP servers)
    /// when they have not been loaded or have changed.
    ///
    /// # Errors
    /// A source that cannot be loaded the first time (a server that does not answer), or tools
    /// whose names collide, are [`Error::Config`].
    pub async fn current_tools(&self) -> Result<Vec<ToolSpec>, Error> {
        let live = self.inner.env.live.load_full();
        match &live.dynamic_tools {
            None => Ok(live.tools.specs().to_vec()),
            Some(dynamic) => Ok(dynamic.current().await?.registry.specs().to_vec()),
        }
    }

    /// The runtime profile.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// The turn limit.
    pub fn max_turns(&self) -> u32 {
        self.inner.max_turns
    }

    /// The agent's memory: facts, recall, working blocks, forgetting and export per user, and
    /// [`flush`](crate::memory::MemoryHandle::flush) for the background fact extractions.
    pub fn memory(&self) -> crate::memory::MemoryHandle {
        self.inner.memory.clone()
    }

    /// Runs to the end. `Ok` when the run completed; otherwise [`Error::Run`] carrying the full
    /// [`RunResult`]. Dropping the returned future cancels the run.
    ///
    /// Without a session id the run starts a new session (its id is in the result, so a later run
    /// can continue it); with one, it continues that session after the session's earlier runs.
    /// Sessions belong to the request's user: the same session id from two users names two
    /// sessions, and neither sees the other's history.
    pub async fn run(&self, request: impl Into<RunRequest>) -> Result<RunResult, Error> {
        let run = self.start(request);
        let mut guard = CancelOnDrop(Some(run.clone()));
        let result = run.result().await;
        guard.0 = None;
        result.into_completed()
    }

    /// Runs with an output schema made from `T` and returns the validated, typed answer.
    pub async fn run_typed<T>(&self, request: impl Into<RunRequest>) -> Result<T, Error>
    where
        T: schemars::JsonSchema + serde::de::DeserializeOwned + 'static,
    {
        let request = request.into().output_schema(OutputSchema::of::<T>()?);
        self.run(request).await?.parse()
    }

    /// Starts a run in the background and streams its events live. Dropping the stream before the
    /// run ends cancels it.
    pub fn stream(&self, request: impl Into<RunRequest>) -> RunStream {
        RunStream::new(self.start(request))
    }

    /// Starts a run in the background and returns its handle at once.
    pub fn start(&self, request: impl Into<RunRequest>) -> Run {
        let request = request.into();
        match &request.session_id {
            Some(id) => {
                let config =
                    SessionConfig { id: Some(id.clone()), user_id: request.user_id.clone(), ..Default::default() };
                self.session(config).start(request)
            }
            None => Session::anonymous(self.clone(), request.user_id.as_deref()).start(request),
        }
    }

    /// A session: the same id (and user) returns the same live session (merging metadata); no id
    /// makes a new one. The session belongs to [`SessionConfig::user_id`], or to no user.
    pub fn session(&self, config: SessionConfig) -> Session {
        Session::open(self, config)
    }

    /// [`Agent::session`] for a process that executes no runs of it (a server whose runs go
    /// through the queue): a session new to this process does not handle its waiting signals
    /// here (that would start runs here; a worker handles them).
    pub fn session_without_sweep(&self, config: SessionConfig) -> Session {
        Session::open_with(self, config, false)
    }

    /// The journal, if one is configured.
    pub fn journal(&self) -> Option<&Arc<dyn Journal>> {
        self.inner.env.stores.journal.as_ref()
    }

    /// The session store.
    pub fn session_store(&self) -> &Arc<dyn SessionStore> {
        &self.inner.env.stores.sessions
    }

    /// Continues a journaled run that did not finish — its process died, or it is suspended
    /// waiting for approval — in its own session, as the user it ran for. Completed model calls
    /// are not sent again and completed tool calls do not run again: their journaled results are
    /// replayed. A tool call that started and has no recorded result runs again only when its tool
    /// is `idempotent` or `rerun_on_resume`; otherwise the run fails as ambiguous.
    ///
    /// The run continues on the model it started on: when this agent's model is another one
    /// (another provider or model name), the resume fails with [`Error::ModelChanged`] rather than
    /// switch models silently; [`Agent::resume_with`] and
    /// [`ResumeOptions::allow_model_change`] make the switch explicit.
    ///
    /// Errors: no journal configured, [`Error::RunNotFound`], [`Error::RunFinished`] (a finished
    /// run is never replayed), [`Error::LeaseHeld`] (another process drives it, or its owner died
    /// less than a lease ago), [`Error::ModelChanged`], [`Error::Corrupt`].
    pub async fn resume(&self, run_id: &str) -> Result<Run, Error> {
        self.resume_with(run_id, ResumeOptions::default()).await
    }

    /// [`Agent::resume`] on behalf of one user: a run of another user (or of no user) is
    /// [`Error::RunNotFound`], as if it did not exist. For services where users resume their own
    /// runs.
    pub async fn resume_as(&self, user_id: &str, run_id: &str) -> Result<Run, Error> {
        self.resume_with(run_id, ResumeOptions::default().user(user_id)).await
    }

    /// [`Agent::resume`] with options: on behalf of one user, and whether the run may continue on
    /// this agent's model when it started on another (the run then records a `model.changed`
    /// event naming both).
    pub async fn resume_with(&self, run_id: &str, options: ResumeOptions) -> Result<Run, Error> {
        self.resume_inner(run_id, options, None).await
    }

    /// [`Agent::resume_with`], for a child run linked to its (live) parent when `child` is given.
    pub(crate) async fn resume_inner(
        &self,
        run_id: &str,
        options: ResumeOptions,
        child: Option<&crate::runtime::ChildSpec>,
    ) -> Result<Run, Error> {
        // A child whose agent has no journal is journaled in its parent's.
        let inherited = child.and_then(|c| c.link.journal.as_ref()).filter(|_| self.journal().is_none());
        let journal = match inherited {
            Some(journal) => journal,
            None => self.journal_or_err()?,
        };
        let peek = journal.load(run_id).await?.ok_or_else(|| Error::RunNotFound(run_id.to_string()))?;
        if let Some(user) = &options.user_id
            && peek.record.user_id.as_ref() != Some(user)
        {
            return Err(Error::RunNotFound(run_id.to_string()));
        }
        if peek.finished {
            return Err(Error::RunFinished { run_id: run_id.to_string(), state: peek.state });
        }
        let current = crate::store::RecordedModel::of(self.inner.env.model.as_ref());
        let switched = match &peek.record.model {
            Some(recorded) if !recorded.same_model(&current) => {
                if !options.allow_model_change && !options.cancel {
                    return Err(Error::ModelChanged {
                        run_id: run_id.to_string(),
                        recorded: recorded.to_string(),
                        current: current.to_string(),
                    });
                }
                Some((recorded.to_string(), current.to_string()))
            }
            _ => None,
        };
        // A run taken over only to end it continues on no model.
        let switched = switched.filter(|_| !options.cancel);
        // A run continues under the architecture it started with: a built-in one by name; a
        // custom one only on an agent that has it.
        let architecture = match peek.record.architecture.as_deref() {
            Some(name) if name != self.inner.architecture.name() => match crate::architecture::by_name(name) {
                Ok(architecture) => Some(architecture),
                Err(_) => {
                    return Err(Error::Config(format!(
                        "run {run_id} started under the architecture `{name}`, which this agent does not run \
                         (it runs `{}`)",
                        self.inner.architecture.name()
                    )));
                }
            },
            _ => None,
        };
        let fence = journal.acquire(run_id, &self.inner.env.stores.lease).await?;
        let stored = match journal.load(run_id).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return Err(Error::RunNotFound(run_id.to_string())),
            Err(e) => {
                let lease = self.inner.env.stores.lease.fenced(fence);
                let _ = journal.end(run_id, &lease, RunState::Running, &[]).await;
                return Err(e);
            }
        };
        let config = SessionConfig {
            id: Some(stored.record.session_id.clone()),
            user_id: stored.record.user_id.clone(),
            ..Default::default()
        };
        self.session(config).start_resumed(stored, switched, child, architecture, fence, options.cancel)
    }

    /// Sends the decision on a tool call a suspended run is waiting for, and continues the run
    /// (see [`Approval::Defer`]). Works in any process that
    /// shares the journal, after a restart too.
    pub async fn decide(&self, run_id: &str, call_id: &str, approval: Approval) -> Result<Run, Error> {
        let journal = self.journal_or_err()?;
        let stored = journal.load(run_id).await?.ok_or_else(|| Error::RunNotFound(run_id.to_string()))?;
        if stored.finished {
            return Err(Error::RunFinished { run_id: run_id.to_string(), state: stored.state });
        }
        let mut waiting = false;
        for entry in &stored.entries {
            match entry {
                JournalEntry::ApprovalPending { call, .. } if call.id == call_id => waiting = true,
                JournalEntry::ApprovalDecision { call_id: id, .. } if id == call_id => waiting = false,
                _ => {}
            }
        }
        if !waiting || approval == Approval::Defer {
            return Err(Error::Config(format!(
                "run {run_id} is not waiting for a decision on call `{call_id}` (or the decision is `Defer`)"
            )));
        }
        journal.decide(run_id, &JournalEntry::ApprovalDecision { call_id: call_id.to_string(), approval }).await?;
        self.resume(run_id).await
    }

    /// Journaled runs, newest first (from the journal, across restarts).
    pub async fn list_journaled_runs(&self, filter: &RunFilter) -> Result<Vec<JournalRunSummary>, Error> {
        self.journal_or_err()?.list(filter).await
    }

    fn journal_or_err(&self) -> Result<&Arc<dyn Journal>, Error> {
        self.inner.env.stores.journal.as_ref().ok_or_else(|| {
            Error::Config("this agent has no journal: configure one with .journal(\"sqlite:./loom.db\")".into())
        })
    }
}

/// How [`Agent::resume_with`] continues a run.
///
/// ```
/// use loom_agent::ResumeOptions;
///
/// let options = ResumeOptions::default().user("alice").allow_model_change();
/// assert!(options.allow_model_change);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResumeOptions {
    /// Resume only a run of this user; another user's run is [`Error::RunNotFound`].
    pub user_id: Option<String>,
    /// Continue on this agent's model even when the run started on another one (recorded as a
    /// `model.changed` event). Off by default: a different model is [`Error::ModelChanged`].
    pub allow_model_change: bool,
    /// Take the run over only to end it: it ends `cancelled` at once, without executing a step
    /// (its journal, events, transcript and audit log record the end). How a run whose process
    /// died is cancelled; the takeover's fencing makes one of concurrent resumers win.
    pub cancel: bool,
}

impl ResumeOptions {
    /// Resume only a run of this user.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Allow the run to continue on this agent's model when it started on another.
    pub fn allow_model_change(mut self) -> Self {
        self.allow_model_change = true;
        self
    }

    /// Take the run over only to end it `cancelled` (see [`ResumeOptions::cancel`]).
    pub fn cancelled(mut self) -> Self {
        self.cancel = true;
        self
    }
}

struct CancelOnDrop(Option<Run>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(run) = self.0.take()
            && !run.state().is_terminal()
        {
            run.cancel();
        }
    }
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let specs = self.tools();
        let tools: Vec<&str> = specs.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("Agent")
            .field("name", &self.inner.env.name)
            .field("model", &self.inner.env.model.name())
            .field("tools", &tools)
            .field("architecture", &self.inner.architecture.name())
            .field("max_turns", &self.inner.max_turns)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}
