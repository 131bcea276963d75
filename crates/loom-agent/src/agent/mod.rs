//! The agent layer: [`Agent`] (a configured loop driver), [`Session`] (a conversation), and [`Run`]
//! (one execution, with its live event log).

mod driver;
mod input;
mod live;
mod memory;
mod profile;
mod run;
mod session;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

pub use crate::run::{Artifact, KnowledgeItem, RunContext, RunInput, RunResult, RunState, RuntimeTask, Transcript};
pub use input::RunRequest;
pub use profile::{ApprovalRule, ContextPolicy, CriteriaGate, Runtime, RuntimeBuilder};
pub use run::{EventStream, Run, RunStream};
use session::SessionInner;
pub use session::{Session, SessionConfig};

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
        let journal = self.journal_or_err()?;
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
                if !options.allow_model_change {
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
        journal.acquire(run_id, &self.inner.env.stores.lease).await?;
        let stored = match journal.load(run_id).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return Err(Error::RunNotFound(run_id.to_string())),
            Err(e) => {
                let _ = journal.end(run_id, &self.inner.env.stores.lease, RunState::Running, &[]).await;
                return Err(e);
            }
        };
        let config = SessionConfig {
            id: Some(stored.record.session_id.clone()),
            user_id: stored.record.user_id.clone(),
            ..Default::default()
        };
        self.session(config).start_resumed(stored, switched)
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

/// Builds an [`Agent`]. Only the model is required.
#[derive(Default)]
pub struct AgentBuilder {
    name: Option<String>,
    instructions: String,
    model: Option<Result<SharedModel, Error>>,
    tools: Vec<Arc<dyn Tool>>,
    capabilities: Vec<Arc<dyn Capability>>,
    generation: Generation,
    runtime: Option<Runtime>,
    memory: Option<Result<crate::memory::MemorySlot, Error>>,
    memory_parts: crate::memory::MemoryParts,
    session_store: Option<Arc<dyn SessionStore>>,
    journal: Option<Result<JournalSlot, Error>>,
    lease_ttl: Option<Duration>,
    budget: Option<Arc<dyn Budget>>,
    permissions: Option<Arc<dyn Permissions>>,
    approval: Option<Arc<dyn ApprovalHandler>>,
    hooks: Vec<Arc<dyn Hooks>>,
    hook_timeout: Option<Duration>,
    hook_failure_denies: Option<bool>,
    guardrails: Vec<Arc<dyn Guardrail>>,
    rate_limiter: Option<Arc<dyn RateLimiter>>,
    telemetry: Telemetry,
    audit: Option<Arc<dyn AuditLog>>,
    architecture: Option<Result<Arc<dyn Architecture>, Error>>,
    max_turns: Option<u32>,
    timeout: Option<Duration>,
    output_schema: Option<Result<OutputSchema, Error>>,
    output_retries: Option<u32>,
    tool_output_limit: Option<usize>,
    tool_timeout: Option<Duration>,
    judge: Option<Result<SharedModel, Error>>,
}

impl AgentBuilder {
    /// The model that judges acceptance criteria (see [`CriteriaGate`]); the agent's model by
    /// default. A model value, a shared model, or a model string.
    pub fn judge(mut self, model: impl IntoModel) -> Self {
        self.judge = Some(crate::model::resolve_model(model));
        self
    }

    /// Names the agent (for logs and telemetry).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The instructions: the system prompt.
    pub fn instructions(mut self, instructions: impl Into<String>) -> Self {
        self.instructions = instructions.into();
        self
    }

    /// The model: a model value, a shared model, or a model string such as `"echo"`.
    pub fn model(mut self, model: impl IntoModel) -> Self {
        self.model = Some(crate::model::resolve_model(model));
        self
    }

    /// Adds a tool.
    pub fn tool(mut self, tool: impl IntoTool) -> Self {
        self.tools.push(tool.into_tool());
        self
    }

    /// Adds tools.
    pub fn tools<I, T>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: IntoTool,
    {
        self.tools.extend(tools.into_iter().map(IntoTool::into_tool));
        self
    }

    /// Adds a capability: its tools are registered, its instructions appended, and its hooks
    /// added after the builder's own.
    pub fn capability(mut self, capability: impl Capability) -> Self {
        self.capabilities.push(Arc::new(capability));
        self
    }

    /// Generation settings.
    pub fn generation(mut self, generation: Generation) -> Self {
        self.generation = generation;
        self
    }

    /// The runtime profile.
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// The session store (in memory by default).
    pub fn session_store(mut self, store: impl SessionStore) -> Self {
        self.session_store = Some(Arc::new(store));
        self
    }

    /// The run journal: any [`Journal`], or a URL — `"sqlite:./loom.db"` (durable, embedded;
    /// `?synchronous=full` to sync every commit), `"postgres://…"` (`postgres` feature),
    /// `"memory"`. A URL journal also becomes the session store (same database) unless
    /// [`AgentBuilder::session_store`] set one, so sessions, runs, transcripts and events survive
    /// restarts and [`Agent::resume`] can continue a run whose process died. A bad URL fails
    /// [`AgentBuilder::build`].
    pub fn journal(mut self, journal: impl IntoJournal) -> Self {
        self.journal = Some(crate::store::resolve_journal(journal));
        self
    }

    /// How long this agent's hold on a run lasts without renewal (default 30 s). The lease is
    /// renewed at every journal write and every third of this; another process can take over a
    /// run (with [`Agent::resume`]) once its owner has been silent this long.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = Some(ttl);
        self
    }

    /// The budget slot.
    pub fn budget(mut self, budget: impl Budget) -> Self {
        self.budget = Some(Arc::new(budget));
        self
    }

    /// The permission policy (by default: destructive and requires_permission tools need approval).
    pub fn permissions(mut self, permissions: impl Permissions) -> Self {
        self.permissions = Some(Arc::new(permissions));
        self
    }

    /// Answers approval requests. Without one, every call that needs approval is denied.
    pub fn approval_handler(mut self, handler: impl ApprovalHandler) -> Self {
        self.approval = Some(Arc::new(handler));
        self
    }

    /// Adds hooks; they run in the order added.
    pub fn hook(mut self, hooks: impl Hooks) -> Self {
        self.hooks.push(Arc::new(hooks));
        self
    }

    /// How long one hook call may take (default 5 s).
    pub fn hook_timeout(mut self, timeout: Duration) -> Self {
        self.hook_timeout = Some(timeout);
        self
    }

    /// What a hook that panics or times out means: deny the call / stop the run (`true`, the
    /// default), or carry on as if it had said continue (`false`).
    pub fn hook_failure_denies(mut self, denies: bool) -> Self {
        self.hook_failure_denies = Some(denies);
        self
    }

    /// Adds a guardrail; guardrails run in the order added.
    pub fn guardrail(mut self, guardrail: impl Guardrail) -> Self {
        self.guardrails.push(Arc::new(guardrail));
        self
    }

    /// The rate limiter, checked before every model call.
    pub fn rate_limiter(mut self, limiter: impl RateLimiter) -> Self {
        self.rate_limiter = Some(Arc::new(limiter));
        self
    }

    /// Telemetry settings (spans and metrics are always emitted through `tracing`; this decides
    /// whether prompts and outputs go on spans).
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// The audit log slot.
    pub fn audit_log(mut self, audit: impl AuditLog) -> Self {
        self.audit = Some(Arc::new(audit));
        self
    }

    /// The architecture: a value, or a name (`"react"`, the default).
    pub fn architecture(mut self, architecture: impl Architecture) -> Self {
        self.architecture = Some(Ok(Arc::new(architecture)));
        self
    }

    /// The architecture by name, with its default settings: one of [`crate::architecture::ARCHITECTURE_NAMES`]
    /// (`"react"`, `"plan_execute"`, `"reflexion"`, `"self_refine"`, `"rewoo"`, `"tree_of_thoughts"`). An
    /// unknown name fails [`AgentBuilder::build`].
    pub fn architecture_name(mut self, name: &str) -> Self {
        self.architecture = Some(crate::architecture::by_name(name));
        self
    }

    /// The most model calls per run (default: the runtime profile's, 32 for [`Runtime::sdk`]).
    pub fn max_turns(mut self, max_turns: u32) -> Self {
        self.max_turns = Some(max_turns);
        self
    }

    /// How long a run may take (no limit by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// A JSON schema every final answer must match.
    pub fn output_schema(mut self, name: impl Into<String>, schema: serde_json::Value) -> Self {
        self.output_schema = Some(OutputSchema::new(name, schema));
        self
    }

    /// How many times an answer that fails the output schema goes back to the model (default 2).
    pub fn output_retries(mut self, retries: u32) -> Self {
        self.output_retries = Some(retries);
        self
    }

    /// The most bytes of one tool result the model receives (default 50,000).
    pub fn tool_output_limit(mut self, bytes: usize) -> Self {
        self.tool_output_limit = Some(bytes);
        self
    }

    /// The default timeout of one tool call (default 120 s); a tool's own timeout wins.
    pub fn tool_timeout(mut self, timeout: Duration) -> Self {
        self.tool_timeout = Some(timeout);
        self
    }

    /// Builds the agent: resolves the model, compiles tool schemas, checks names.
    pub fn build(self) -> Result<Agent, Error> {
        let model = match self.model {
            Some(m) => m?,
            #[cfg(feature = "local")]
            None if crate::model::local::provider_key_env().is_none() => {
                tracing::info!("no model configured and no provider key set: using the local model");
                std::sync::Arc::new(crate::model::LocalModel::new())
            }
            None => {
                return Err(Error::Config(format!(
                    "no model configured: call .model(…) with a model value or one of {}",
                    crate::model::ACCEPTED_MODEL_STRINGS
                )));
            }
        };
        let runtime = self.runtime.unwrap_or_default();
        let name = self.name.unwrap_or_else(|| "agent".to_string());
        let memory = crate::memory::assemble(self.memory.transpose()?, self.memory_parts, &model, &name)?;
        let mut tools = self.tools;
        tools.extend(memory.tools);
        let mut instructions = self.instructions.trim().to_string();
        let mut hooks = self.hooks;
        let mut sources: Vec<(String, Arc<dyn crate::capability::ToolSource>)> = Vec::new();
        for cap in &self.capabilities {
            tools.extend(cap.tools());
            if let Some(extra) = cap.instructions() {
                push_section(&mut instructions, extra.trim());
            }
            hooks.extend(cap.hooks());
            if let Some(source) = cap.tool_source() {
                let name = cap.name().to_string();
                if sources.iter().any(|(n, _)| *n == name) {
                    return Err(Error::Config(format!(
                        "two capabilities with changing tools (MCP servers) are named `{name}`; give each a unique name"
                    )));
                }
                sources.push((name, source));
            }
        }
        if !runtime.criteria.is_empty() {
            let mut section = String::from("Acceptance criteria for every answer:");
            for c in &runtime.criteria {
                section.push_str("\n- ");
                section.push_str(c);
            }
            push_section(&mut instructions, &section);
        }
        let dynamic_tools = (!sources.is_empty()).then(|| Arc::new(DynamicTools::new(tools.clone(), sources)));
        let judge = self.judge.transpose()?;
        let context = profile::context_settings(&runtime.context, &model, &self.generation);
        let permissions: Arc<dyn Permissions> = self.permissions.unwrap_or_else(|| Arc::new(DefaultPermissions));
        let permissions = match runtime.approval {
            ApprovalRule::Permissions => permissions,
            ApprovalRule::EveryNonReadOnly => Arc::new(crate::governance::Supervised::new(permissions)),
        };
        let tools = Arc::new(ToolRegistry::new(tools)?);
        let architecture = match self.architecture {
            Some(a) => a?,
            None => Arc::new(ReAct),
        };
        let output_schema = self.output_schema.transpose()?;
        let journal = self.journal.transpose()?;
        let session_store = self
            .session_store
            .or_else(|| journal.as_ref().and_then(|j| j.session_store.clone()))
            .unwrap_or_else(|| Arc::new(InMemorySessionStore::new()));
        let lease =
            Lease::for_this_process(self.lease_ttl.unwrap_or(Duration::from_secs(30)).max(Duration::from_millis(10)));
        let env = RunEnv {
            name,
            instructions,
            model,
            live: ArcSwap::from_pointee(Live {
                tools,
                dynamic_tools,
                hooks: HookSet {
                    hooks: Arc::from(hooks),
                    timeout: self.hook_timeout.unwrap_or(Duration::from_secs(5)),
                    failure_denies: self.hook_failure_denies.unwrap_or(true),
                },
            }),
            generation: self.generation,
            policies: Policies {
                budget: self.budget,
                permissions,
                approval: self.approval,
                guardrails: Guardrails(Arc::from(self.guardrails)),
                rate_limiter: self.rate_limiter,
                audit: self.audit,
            },
            stores: Stores { sessions: session_store, journal: journal.map(|j| j.journal), lease, memory: memory.slot },
            limits: Limits {
                output_retries: self.output_retries.unwrap_or(2),
                tool_output_limit: self.tool_output_limit.unwrap_or(50_000),
                tool_timeout: self.tool_timeout.unwrap_or(Duration::from_secs(120)),
            },
            telemetry: self.telemetry,
            judge,
            context,
        };
        Ok(Agent {
            inner: Arc::new(AgentInner {
                env: Arc::new(env),
                max_turns: self.max_turns.unwrap_or(runtime.max_turns),
                timeout: self.timeout.or(runtime.timeout),
                runtime,
                architecture,
                output_schema,
                sessions: Mutex::new(HashMap::new()),
                memory: memory.handle,
            }),
        })
    }
}

fn push_section(instructions: &mut String, section: &str) {
    if section.is_empty() {
        return;
    }
    if !instructions.is_empty() {
        instructions.push_str("\n\n");
    }
    instructions.push_str(section);
}

impl fmt::Debug for AgentBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentBuilder")
            .field("name", &self.name)
            .field("tools", &self.tools.len())
            .finish_non_exhaustive()
    }
}
