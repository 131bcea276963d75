//! `AgentBuilder`: every setting an agent takes, checked and assembled into a `RunEnv` by `build`.

use super::*;

/// Builds an [`Agent`]. Only the model is required.
#[derive(Default)]
pub struct AgentBuilder {
    pub(super) name: Option<String>,
    pub(super) instructions: String,
    pub(super) model: Option<Result<SharedModel, Error>>,
    pub(super) tools: Vec<Arc<dyn Tool>>,
    pub(super) capabilities: Vec<Arc<dyn Capability>>,
    pub(super) generation: Generation,
    pub(super) runtime: Option<Runtime>,
    pub(super) memory: Option<Result<crate::memory::MemorySlot, Error>>,
    pub(super) memory_parts: crate::memory::MemoryParts,
    pub(super) knowledge: super::knowledge::KnowledgeParts,
    pub(super) session_store: Option<Arc<dyn SessionStore>>,
    pub(super) journal: Option<Result<JournalSlot, Error>>,
    pub(super) lease_ttl: Option<Duration>,
    pub(super) budget: Option<Arc<dyn Budget>>,
    pub(super) permissions: Option<Arc<dyn Permissions>>,
    pub(super) approval: Option<Arc<dyn ApprovalHandler>>,
    pub(super) hooks: Vec<Arc<dyn Hooks>>,
    pub(super) hook_timeout: Option<Duration>,
    pub(super) hook_failure_denies: Option<bool>,
    pub(super) guardrails: Vec<Arc<dyn Guardrail>>,
    pub(super) rate_limiter: Option<Arc<dyn RateLimiter>>,
    pub(super) telemetry: Telemetry,
    pub(super) audit: Option<Arc<dyn AuditLog>>,
    pub(super) architecture: Option<Result<Arc<dyn Architecture>, Error>>,
    pub(super) max_turns: Option<u32>,
    pub(super) timeout: Option<Duration>,
    pub(super) output_schema: Option<Result<OutputSchema, Error>>,
    pub(super) output_retries: Option<u32>,
    pub(super) tool_output_limit: Option<usize>,
    pub(super) tool_timeout: Option<Duration>,
    pub(super) judge: Option<Result<SharedModel, Error>>,
    pub(super) signal_store: Option<Arc<dyn crate::signal::SignalStore>>,
    pub(super) attention: Option<Arc<dyn crate::signal::AttentionPolicy>>,
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

    /// Adds a paragraph after the instructions (the multi-agent patterns describe their members).
    pub(crate) fn append_instructions(mut self, text: &str) -> Self {
        if !self.instructions.is_empty() {
            self.instructions.push_str("\n\n");
        }
        self.instructions.push_str(text);
        self
    }

    /// Whether a model is set.
    pub(crate) fn has_model(&self) -> bool {
        self.model.is_some()
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

    /// Where signals and schedules are kept. By default: the journal's database when the journal
    /// has one (a `sqlite:` or `postgres://` URL, or a SQL store value), otherwise in memory.
    pub fn signal_store(mut self, store: impl crate::signal::SignalStore) -> Self {
        self.signal_store = Some(Arc::new(store));
        self
    }

    /// The attention policy: what a session does with each signal it receives
    /// ([`crate::signal::UrgencyPolicy`] by default: low → observe, normal and high → run,
    /// critical → interrupt). A policy value or a closure
    /// `|signal: &RuntimeSignal, session: &SessionState| -> Attention`.
    pub fn attention(mut self, policy: impl crate::signal::AttentionPolicy) -> Self {
        self.attention = Some(Arc::new(policy));
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
    ///
    /// Only the run's own model calls count: the turns of its child runs (an agent used as a
    /// tool, a supervisor's workers, a workflow's agent nodes) count toward each child's own
    /// limit, not the parent's. A parent's budget ([`AgentBuilder::budget`]) is shared with its
    /// children for tokens, cost and tool calls.
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
    pub fn build(mut self) -> Result<Agent, Error> {
        let knowledge = self.assemble_knowledge()?;
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
        let knowledge = knowledge.map(|(knowledge, tool)| {
            tools.push(tool);
            knowledge
        });
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
        let signals_durable =
            self.signal_store.is_some() || journal.as_ref().is_some_and(|j| j.journal.signal_store().is_some());
        let signal_store: Arc<dyn crate::signal::SignalStore> = self
            .signal_store
            .or_else(|| journal.as_ref().and_then(|j| j.journal.signal_store()))
            .unwrap_or_else(|| Arc::new(crate::store::InMemorySignalStore::new()));
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
            stores: Stores {
                sessions: session_store,
                journal: journal.map(|j| j.journal),
                lease,
                memory: memory.slot,
                signals: signal_store,
            },
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
                knowledge,
                attention: self.attention.unwrap_or_else(|| Arc::new(crate::signal::UrgencyPolicy)),
                signals_durable,
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
