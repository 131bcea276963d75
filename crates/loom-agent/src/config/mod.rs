//! Agents from configuration: [`AgentConfig`], everything the builder sets that can be data,
//! loaded from TOML.
//!
//! A single-agent file uses top-level keys named after the builder's methods; several agents go in
//! `[agents.NAME]` tables. Unknown keys are errors that suggest the nearest known key. Secrets are
//! never written in the file: `api_key_env`, `journal_env` and `audit.secret_env` name environment
//! variables, and a key such as `api_key` or a URL with a password is refused.
//!
//! ```
//! use loom_agent::config::AgentConfig;
//!
//! let config = AgentConfig::from_toml_str(r#"
//!     model = "echo"
//!     instructions = "Be brief."
//!     max_turns = 4
//! "#).unwrap();
//! let agent = config.build().unwrap();
//! assert_eq!(agent.max_turns(), 4);
//! ```

mod build;
mod check;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::Generation;
use crate::tool::{IntoTool, Tool};

/// Tools a program offers to configuration files, by name: an agent's `tools = ["…"]` picks from
/// these.
///
/// ```
/// use loom_agent::config::{AgentConfig, ToolRegistry};
///
/// #[loom_agent::tool]
/// /// Adds two numbers.
/// async fn add(a: i64, b: i64) -> Result<i64, loom_agent::ToolError> { Ok(a + b) }
///
/// let registry = ToolRegistry::new().with(add);
/// let config = AgentConfig::from_toml_str("model = \"echo\"\ntools = [\"add\"]").unwrap();
/// let agent = config.build_with(&registry).unwrap();
/// assert_eq!(agent.tools().len(), 1);
/// ```
#[derive(Clone, Default)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Arc<dyn Tool>>,
}

impl ToolRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tool under its own name (a later tool of the same name replaces it).
    pub fn with(mut self, tool: impl IntoTool) -> Self {
        self.add(tool);
        self
    }

    /// Adds a tool under its own name.
    pub fn add(&mut self, tool: impl IntoTool) {
        let tool = tool.into_tool();
        self.tools.insert(tool.name().to_string(), tool);
    }

    /// The tool of this name.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Tool>> {
        self.tools.get(name).cloned()
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.tools.keys().map(String::as_str).collect()
    }
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolRegistry").field("tools", &self.names()).finish()
    }
}

/// One agent's configuration, or (with `[agents.NAME]` tables) a file of several.
///
/// Every field is optional; an agent needs a `model`. Durations are strings such as `"30s"`,
/// `"500ms"` or `"2m"`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's name (the table's name in `[agents.NAME]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A model string: `"echo"`, `"openai:gpt-4o-mini"`, `"scripted:FILE.json"`, ….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The provider's base URL, overriding its default and environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The environment variable that holds the provider's API key (the provider's own variable
    /// when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// The instructions (system prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// What the agent does, for people and other agents: `loom serve` publishes it in the A2A
    /// agent card (the instructions, a system prompt, are never published).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tools by name, from the program's [`ToolRegistry`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Capabilities: `files`, `web`, `shell`, `skills`, `a2a`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<CapabilityConfig>,
    /// Generation settings (`temperature`, `max_output_tokens`, `top_p`, `stop`, `seed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<Generation>,
    /// The runtime profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeConfig>,
    /// The architecture by name (`"react"`, `"plan_execute"`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// The most model calls per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// How long a run may take.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// How many times an answer that fails the output schema goes back to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_retries: Option<u32>,
    /// The most bytes of one tool result the model receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_output_limit: Option<usize>,
    /// The default timeout of one tool call.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub tool_timeout: Option<Duration>,
    /// The journal URL (`"sqlite:./loom.db"`, `"postgres://host/db"`, `"memory"`), without a
    /// password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<String>,
    /// The environment variable holding the journal URL (for URLs with credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_env: Option<String>,
    /// How long the agent's hold on a run lasts without renewal.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<Duration>,
    /// The memory store URL (`"memory"`, `"sqlite:./memory.db"`, `"postgres://…"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Whether the memory tools are offered to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_tools: Option<bool>,
    /// The budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetConfig>,
    /// The permission policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<PermissionsConfig>,
    /// Who answers approval requests: `"deny"` (the default), `"allow"`, or `"defer"` (the run
    /// pauses durably until a decision arrives, e.g. over `loom serve`'s approvals endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalConfig>,
    /// Guardrails, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<GuardrailConfig>,
    /// A token-bucket rate limiter per user, checked before every model call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiterConfig>,
    /// The audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<AuditConfig>,
    /// Whether prompts and outputs go on telemetry spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_content: Option<bool>,
    /// Several agents, by name (only at the top of a file).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: BTreeMap<String, AgentConfig>,
    /// Settings for `loom serve` (only at the top of a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerConfig>,
}

/// A capability, by kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CapabilityConfig {
    /// Files under a root (read-only unless `writable`).
    Files {
        /// The root directory.
        root: String,
        /// Whether the write and edit tools are offered.
        #[serde(default)]
        writable: bool,
    },
    /// `web_fetch` (and `web_search` when a backend is configured in code).
    Web {
        /// Hosts the agent may fetch from (all public hosts when empty).
        #[serde(default)]
        allow_hosts: Vec<String>,
    },
    /// A shell rooted at a directory.
    Shell {
        /// The working directory.
        root: String,
    },
    /// Skills (`SKILL.md` folders) from a directory.
    Skills {
        /// The skills directory.
        dir: String,
    },
    /// A remote A2A agent as a tool (see [`crate::capability::a2a`]).
    A2a {
        /// The agent's base URL (its card is at `URL/.well-known/agent-card.json`) or its card's URL.
        url: String,
        /// The environment variable holding the bearer token to send (none when unset).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_env: Option<String>,
        /// The tool's name (from the card's name by default).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// How long one call may take (default 120 s).
        #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
        timeout: Option<Duration>,
    },
}

/// The runtime profile: a named profile with optional overrides.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// `"sdk"` (default), `"long_running"` or `"supervised"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Criteria every answer should meet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub criteria: Vec<String>,
    /// The profile's turn limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// The profile's time limit.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// Budget limits (see [`crate::governance::StandardBudget`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct BudgetConfig {
    pub max_tokens: Option<u64>,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    pub max_wall_clock: Option<Duration>,
    pub max_turns: Option<u32>,
    pub max_tool_calls: Option<u32>,
    pub per_user_max_tokens: Option<u64>,
    pub per_user_max_cost_usd: Option<f64>,
    pub total_max_tokens: Option<u64>,
    pub total_max_cost_usd: Option<f64>,
    /// The fraction of a limit at which a warning is emitted.
    pub soft_warning_at: Option<f64>,
}

/// The permission policy (see [`crate::governance::StandardPermissions`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionsConfig {
    /// `"default"`, `"accept_edits"`, `"bypass"` or `"read_only"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Only these tools may run (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// These tools never run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// These tools need approval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ask: Vec<String>,
}

/// Who answers approval requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalConfig {
    /// Every request is denied (the same as no handler).
    #[default]
    Deny,
    /// Every request is allowed.
    Allow,
    /// The run pauses durably (`suspended`) until a decision arrives (needs a journal).
    Defer,
}

/// A guardrail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GuardrailConfig {
    /// Personal data and secrets: `action = "redact"` (default) or `"block"`.
    Pii {
        /// `"redact"` or `"block"`.
        #[serde(default)]
        action: Option<String>,
    },
    /// Prompt-injection markers: `action = "block"` (default) or `"redact"`.
    Injection {
        /// `"block"` or `"redact"`.
        #[serde(default)]
        action: Option<String>,
    },
    /// A regular expression: `replace = "…"` redacts, else it blocks.
    Regex {
        /// The guardrail's name.
        name: String,
        /// The pattern (Rust `regex` syntax).
        pattern: String,
        /// The replacement; blocks when unset.
        #[serde(default)]
        replace: Option<String>,
    },
}

/// A token bucket per user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiterConfig {
    /// Permits a user starts with.
    pub capacity: u32,
    /// Permits given back per second.
    pub refill_per_second: f64,
    /// `"wait"` (default) or `"reject"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl RateLimiterConfig {
    /// The token bucket this describes.
    pub fn build(&self) -> Result<crate::governance::TokenBucketLimiter, Error> {
        build::rate_limiter(self)
    }
}

/// The audit log: a signed JSONL file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The log file.
    pub path: String,
    /// The environment variable holding the signing key.
    pub secret_env: String,
}

/// Settings for `loom serve`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The address to listen on (default `127.0.0.1:8080`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Origins allowed by CORS (CORS is off when empty; `"*"` allows any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cors_origins: Vec<String>,
    /// The TLS certificate chain (PEM); TLS is on when this and `tls_key` are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    /// The TLS private key (PEM file path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    /// The largest request body in bytes (default 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// Requests each tenant may make: a token bucket (unlimited when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_rate_limit: Option<RateLimiterConfig>,
    /// Whether requests need an API key (default true). Off only for local development.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<bool>,
    /// What each tenant may spend per UTC day (`[server.tenant_budget]`; unlimited when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_budget: Option<TenantBudgetConfig>,
    /// The URL clients reach the server at (`https://agents.example.com`), for the A2A agent
    /// card; by default the card is built from the request's `Host` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Where runs execute: `"in_process"` (the default: the server that takes the request runs
    /// it) or `"queue"` (the server queues it in the journal's database and `loom worker
    /// --config` processes claim it; needs a SQLite or PostgreSQL journal. With SQLite, or with
    /// `queue_workers` above 0, the server runs a worker itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<Execution>,
    /// How many queued runs a worker drives at once (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_concurrency: Option<usize>,
    /// In queue mode, whether `loom serve` also claims and runs queued runs (default: only with a
    /// SQLite journal, where one process does both roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve_runs: Option<bool>,
    /// Retention: runs that finished longer ago than this (`"30d"`, `"12h"`) are deleted, with
    /// their events and journal entries (the audit log is kept), by `loom serve` and `loom
    /// worker`, hourly.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub retention: Option<Duration>,
    /// How many sessions `loom serve` keeps open in memory (default 10,000): past it the least
    /// recently used is dropped from memory, and read back from the session store when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<usize>,
}

/// Per-tenant daily limits for `loom serve` (`[server.tenant_budget]`), with overrides by tenant
/// name (`[server.tenant_budget.tenants.NAME]`).
///
/// Usage is counted per tenant and UTC day from the runs the server started or continued: a run
/// counts against `max_runs` when it starts, and its tokens and cost as each model call answers. A request that
/// would start a run (or continue one) while the tenant's usage of the day has reached one of its
/// limits is refused with HTTP 429 and the error code `tenant_budget_exceeded`. Runs already in
/// flight when the limit is reached finish; the day's figures may therefore pass a token or cost
/// limit by what those runs spend.
///
/// ```
/// use loom_agent::config::AgentConfig;
///
/// let config = AgentConfig::from_toml_str(r#"
///     model = "echo"
///     [server.tenant_budget]
///     max_cost_usd = 5.0
///     max_tokens = 200000
///     [server.tenant_budget.tenants.acme]
///     max_cost_usd = 50.0
/// "#).unwrap();
/// let budget = config.server.unwrap().tenant_budget.unwrap();
/// assert_eq!(budget.limits_for("acme").max_cost_usd, Some(50.0));
/// assert_eq!(budget.limits_for("acme").max_tokens, Some(200000));
/// assert_eq!(budget.limits_for("globex").max_cost_usd, Some(5.0));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantBudgetConfig {
    /// Dollars a tenant's runs may cost per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// Tokens (input, cached, cache writes and output) a tenant's runs may use per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Runs a tenant may start per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runs: Option<u64>,
    /// Limits for named tenants; a limit a tenant's table leaves unset is the default one above.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, TenantLimits>,
}

/// One tenant's daily limits (see [`TenantBudgetConfig`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Dollars per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// Tokens per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Runs started per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runs: Option<u64>,
}

impl TenantBudgetConfig {
    /// The limits of `tenant`: its own table's, each unset one taken from the defaults.
    pub fn limits_for(&self, tenant: &str) -> TenantLimits {
        let own = self.tenants.get(tenant).copied().unwrap_or_default();
        TenantLimits {
            max_cost_usd: own.max_cost_usd.or(self.max_cost_usd),
            max_tokens: own.max_tokens.or(self.max_tokens),
            max_runs: own.max_runs.or(self.max_runs),
        }
    }

    /// Checks the limits: amounts are finite and not negative.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad limit.
    pub fn validate(&self) -> Result<(), Error> {
        let cost = |path: &str, v: Option<f64>| match v {
            Some(c) if !c.is_finite() || c < 0.0 => {
                Err(Error::Config(format!("{path}.max_cost_usd must be a finite amount >= 0, not {c}")))
            }
            _ => Ok(()),
        };
        cost("server.tenant_budget", self.max_cost_usd)?;
        for (name, limits) in &self.tenants {
            cost(&format!("server.tenant_budget.tenants.{name}"), limits.max_cost_usd)?;
        }
        Ok(())
    }
}

/// Where `loom serve` executes runs (`[server] execution`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Execution {
    /// The server that takes the request runs it (the default).
    #[default]
    InProcess,
    /// The server queues the run in the journal's database; workers claim and run it.
    Queue,
}

impl AgentConfig {
    /// Parses a TOML document. Unknown keys, inline secrets and invalid environment variable
    /// names are [`Error::Config`] naming the key (and the nearest known key).
    pub fn from_toml_str(text: &str) -> Result<AgentConfig, Error> {
        check::parse(text)
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<AgentConfig, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("reading the agent configuration {}: {e}", path.display())))?;
        check::parse(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The agents of the file, by name: the `[agents.NAME]` tables, or the top-level agent (named
    /// by its `name`, else `"default"`).
    pub fn agent_configs(&self) -> Vec<(String, AgentConfig)> {
        if self.agents.is_empty() {
            let name = self.name.clone().unwrap_or_else(|| "default".to_string());
            let mut single = self.clone();
            single.server = None;
            return vec![(name, single)];
        }
        self.agents
            .iter()
            .map(|(name, c)| {
                let mut c = c.clone();
                c.name.get_or_insert_with(|| name.clone());
                (name.clone(), c)
            })
            .collect()
    }

    /// The builder this configuration describes, with no program tools.
    pub fn builder(&self) -> Result<crate::AgentBuilder, Error> {
        build::builder(self, &ToolRegistry::default())
    }

    /// Builds the single agent this configuration describes (a file of several agents is an
    /// error: use [`AgentConfig::build_all`]).
    pub fn build(&self) -> Result<crate::Agent, Error> {
        self.build_with(&ToolRegistry::default())
    }

    /// Builds the single agent, picking `tools` from the program's registry.
    pub fn build_with(&self, registry: &ToolRegistry) -> Result<crate::Agent, Error> {
        if !self.agents.is_empty() {
            return Err(Error::Config(format!(
                "the configuration has {} agents ({}); build them with AgentConfig::build_all",
                self.agents.len(),
                self.agents.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        build::builder(self, registry)?.build()
    }

    /// Builds every agent of the file, by name.
    pub fn build_all(&self, registry: &ToolRegistry) -> Result<BTreeMap<String, crate::Agent>, Error> {
        let mut out = BTreeMap::new();
        for (name, config) in self.agent_configs() {
            let agent = build::builder(&config, registry)?
                .build()
                .map_err(|e| Error::Config(format!("agent `{name}`: {e}")))?;
            out.insert(name, agent);
        }
        Ok(out)
    }

    /// The journal URL: `journal`, or the value of the variable `journal_env` names.
    pub fn journal_url(&self) -> Result<Option<String>, Error> {
        build::journal_url(self)
    }
}

impl crate::Agent {
    /// Builds the agent a TOML file describes (see [`AgentConfig`]).
    pub fn from_config_file(path: impl AsRef<Path>) -> Result<crate::Agent, Error> {
        AgentConfig::from_file(path)?.build()
    }

    /// Builds the agent a TOML file describes, picking `tools` from the program's registry.
    pub fn from_config_file_with(path: impl AsRef<Path>, registry: &ToolRegistry) -> Result<crate::Agent, Error> {
        AgentConfig::from_file(path)?.build_with(registry)
    }
}
