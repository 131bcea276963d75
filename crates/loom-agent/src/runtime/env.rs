//! What every run of an agent consults, fixed when the agent is built: the model and tools, the
//! stores, the limits, and the governance policies as one value.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::FutureExt;
use serde_json::Value;

use super::live::Live;
use crate::governance::{
    ApprovalHandler, AuditAction, AuditLog, AuditRecord, Budget, GuardStage, GuardVerdict, Guardrail, Hooks,
    Permissions, RateLimiter, Scope,
};
use crate::model::{Generation, SharedModel};
use crate::run::RunInput;
use crate::store::{Journal, Lease, Memory, SessionStore};
use crate::telemetry::Telemetry;

/// Everything a run consults. The runtime reads nothing else.
pub(crate) struct RunEnv {
    /// The agent's name (telemetry).
    pub(crate) name: String,
    /// The system instructions.
    pub(crate) instructions: String,
    /// The model.
    pub(crate) model: SharedModel,
    /// What changes while the agent lives: its tools and hooks (`Agent::add_tool`,
    /// `remove_tool`, `add_hook`). Copy-on-write: a run takes the current value once, when it
    /// starts, and keeps it (see live.rs).
    pub(crate) live: ArcSwap<Live>,
    /// Generation settings.
    pub(crate) generation: Generation,
    /// Governance: budget, permissions, approval, hooks, guardrails, rate limit, audit.
    pub(crate) policies: Policies,
    /// Where sessions, history, the journal and memory live.
    pub(crate) stores: Stores,
    /// Per-run limits.
    pub(crate) limits: Limits,
    /// Telemetry settings.
    pub(crate) telemetry: Telemetry,
    /// The model that judges acceptance criteria (`None`: the agent's model).
    pub(crate) judge: Option<SharedModel>,
    /// Context management (`None`: off).
    pub(crate) context: Option<super::window::ContextSettings>,
}

impl RunEnv {
    /// Writes the `run_started` audit entry of a run that never executed (cancelled while queued,
    /// refused, failed while seeding), so every run still has one start before its end.
    pub(crate) async fn audit_unexecuted_start(&self, scope: &Scope, input: &RunInput) -> Result<(), crate::Error> {
        let payload = serde_json::json!({
            "input": input.summary().chars().take(500).collect::<String>(),
            "model": self.model.name(), "executed": false,
        });
        self.policies.audit(scope, AuditAction::RunStarted, payload).await
    }
}

/// The stores a run writes to.
pub(crate) struct Stores {
    /// Sessions, history, transcripts.
    pub(crate) sessions: Arc<dyn SessionStore>,
    /// The run journal, if the agent is durable.
    pub(crate) journal: Option<Arc<dyn Journal>>,
    /// This agent's lease on the runs it drives (one owner id per agent value).
    pub(crate) lease: Lease,
    /// The memory slot.
    pub(crate) memory: Option<Arc<dyn Memory>>,
    /// Signals and schedules (in memory unless the journal's database or the builder gave one).
    pub(crate) signals: Arc<dyn crate::signal::SignalStore>,
}

/// Limits of one run's steps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// How many times an answer that fails the output schema goes back to the model.
    pub(crate) output_retries: u32,
    /// The most bytes of one tool result the model receives.
    pub(crate) tool_output_limit: usize,
    /// The default timeout of one tool call.
    pub(crate) tool_timeout: Duration,
}

/// The governance policies, consulted by the run's steps in a fixed order (see
/// docs/architecture.md): budget → hooks → rate limit → model; permissions → approval → hooks →
/// tool → guardrails; the audit log records each decision. The hooks are the run's own
/// (`RunCx::hooks`, taken from [`Live`] when the run starts).
pub(crate) struct Policies {
    pub(crate) budget: Option<Arc<dyn Budget>>,
    pub(crate) permissions: Arc<dyn Permissions>,
    pub(crate) approval: Option<Arc<dyn ApprovalHandler>>,
    pub(crate) guardrails: Guardrails,
    pub(crate) rate_limiter: Option<Arc<dyn RateLimiter>>,
    pub(crate) audit: Option<Arc<dyn AuditLog>>,
}

impl Policies {
    /// Appends an audit record (nothing without an audit log).
    pub(crate) async fn audit(&self, scope: &Scope, action: AuditAction, payload: Value) -> Result<(), crate::Error> {
        match &self.audit {
            Some(audit) => audit.append(AuditRecord { scope: scope.clone(), action, payload }).await,
            None => Ok(()),
        }
    }

    /// Appends an audit record; a failure is logged, not returned (the step it records has
    /// happened).
    pub(crate) async fn audit_or_warn(&self, scope: &Scope, action: AuditAction, payload: impl FnOnce() -> Value) {
        if self.audit.is_none() {
            return;
        }
        if let Err(e) = self.audit(scope, action, payload()).await {
            tracing::warn!(run_id = %scope.run_id, error = %e, "audit write failed");
        }
    }
}

/// The agent's hooks, with the timeout and failure rule every call runs under.
#[derive(Clone)]
pub(crate) struct HookSet {
    pub(crate) hooks: Arc<[Arc<dyn Hooks>]>,
    pub(crate) timeout: Duration,
    /// Whether a hook that panics or times out denies the call / stops the run.
    pub(crate) failure_denies: bool,
}

impl HookSet {
    /// The hooks, in the order added.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<dyn Hooks>> {
        self.hooks.iter()
    }

    /// Runs one hook call under the timeout, with panics caught: `Err` says what went wrong.
    pub(crate) async fn call<T>(&self, hook: impl Future<Output = T>) -> Result<T, String> {
        match tokio::time::timeout(self.timeout, AssertUnwindSafe(hook).catch_unwind()).await {
            Err(_) => Err(format!("a hook did not answer within {} ms", self.timeout.as_millis())),
            Ok(Err(_)) => Err("a hook panicked".to_string()),
            Ok(Ok(v)) => Ok(v),
        }
    }
}

/// The agent's guardrails, applied in the order added.
#[derive(Clone)]
pub(crate) struct Guardrails(pub(crate) Arc<[Arc<dyn Guardrail>]>);

/// What the guardrails made of a text.
pub(crate) enum GuardResult {
    Unchanged,
    /// The new text and the guardrails that changed it.
    Redacted(String, Vec<String>),
    /// The guardrail that blocked it, and why.
    Blocked(String, String),
}

impl Guardrails {
    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any applies to `stage`.
    pub(crate) fn any_at(&self, stage: GuardStage) -> bool {
        self.0.iter().any(|g| g.applies_to(stage))
    }

    /// Applies every guardrail of `stage`, in order, each seeing the previous one's redactions.
    pub(crate) fn apply(&self, stage: GuardStage, text: &str) -> GuardResult {
        let mut current: Option<String> = None;
        let mut names = Vec::new();
        for g in self.0.iter().filter(|g| g.applies_to(stage)) {
            match g.check(stage, current.as_deref().unwrap_or(text)) {
                GuardVerdict::Pass => {}
                GuardVerdict::Redact(new) => {
                    names.push(g.name().to_string());
                    current = Some(new);
                }
                GuardVerdict::Block(reason) => return GuardResult::Blocked(g.name().to_string(), reason),
            }
        }
        match current {
            Some(t) if t != text => GuardResult::Redacted(t, names),
            _ => GuardResult::Unchanged,
        }
    }
}
