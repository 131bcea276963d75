//! [`RunCx`]: one run's working state and the one pipeline for its side effects. An architecture
//! drives turns only through it: [`RunCx::model_turn`] and [`RunCx::run_tools`]; the driver calls
//! `begin` / `resume` before and `finish` after (begin.rs, finish.rs).

use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use super::calls::ModelCall;
use super::env::{GuardResult, RunEnv};
use super::live::Live;
use super::log::RunLog;
use super::replay::Recorder;
use crate::error::{RunError, RunErrorKind};
use crate::event::{BudgetEvent, EventKind, GuardrailEvent, ModelResponseEvent, RateLimitedEvent, RunSteered};
use crate::governance::{AuditAction, BudgetVerdict, GuardAction, GuardStage, HookAction, Scope};
use crate::message::Message;
use crate::model::ModelResponse;
use crate::output::OutputSchema;
use crate::store::JournalEntry;
use crate::telemetry;
use crate::tool::{ToolRegistry, ToolSnapshot, ToolSpec};

/// One run's working state, handed to the architecture:
/// the conversation and the two operations that touch the world, a model turn and a batch of tool
/// calls. Budget, hooks, rate limits, permissions, approval, guardrails, the journal, the audit log
/// and events all apply inside them, so an architecture only decides what to do next.
pub struct RunCx {
    /// The conversation so far. Architectures may add messages (for example a critique) before the
    /// next model turn.
    pub messages: Vec<Message>,
    pub(super) env: Arc<RunEnv>,
    /// The agent's tools and hooks as they were when the run started.
    pub(super) live: Arc<Live>,
    /// The tools this run offers: the agent's, or the latest snapshot of its tool sources.
    pub(super) tools: Arc<ToolRegistry>,
    /// The tool-source snapshot `tools` came from (agents with tool sources only).
    snapshot: Option<Arc<ToolSnapshot>>,
    pub(super) log: Arc<RunLog>,
    pub(super) scope: Scope,
    /// The output schema, when the model enforces it natively.
    pub(super) native_schema: Option<OutputSchema>,
    pub(super) turn: u32,
    pub(super) max_turns: u32,
    /// Budget limits already warned about in this run (behind a lock: a workflow's parallel
    /// branches check the budget through a shared context).
    warned: std::sync::Mutex<Vec<String>>,
    /// Approvals remembered for this run: tool name → allowed.
    pub(super) remembered: Vec<(String, Result<(), String>)>,
    /// The journal, both ways: writes, and a resumed run's entries not replayed yet.
    pub(super) recorder: Recorder,
    /// Where this run's own messages start (the input message), once seeded.
    pub(super) history_base: Option<usize>,
    /// Whether `begin` created or updated the session in the store.
    pub(super) session_opened: bool,
    /// Whether the audit log has this run's `run_started` entry (written by `begin`, or by the
    /// process that began a resumed run); `finish` writes one first when it has not.
    pub(super) audited_start: bool,
    /// Context management's state (agents with context management only).
    pub(super) window: Option<Box<super::window::WindowState>>,
    /// How many messages of the session's history the seeds' leading summary stands for.
    pub(super) summary_covers: usize,
    /// This run as its children see it (handed to tool calls; made at the first one).
    link: std::sync::OnceLock<Arc<super::child::ParentLink>>,
    /// The agent the run handed the conversation to (a `transfer_to_<name>` call).
    pub(super) handoff: Option<String>,
    /// The session's run lock this run holds in the store (its holder id), released by `finish`.
    pub(super) session_lock: Option<String>,
    /// The session to open in the store with the journal's `begin` (or, for a run that ends
    /// before it, in `finish`).
    pub(super) deferred_open: Option<crate::store::SessionRecord>,
}

impl RunCx {
    /// A run context before `begin` / `resume` seeds it.
    pub(crate) fn new(env: Arc<RunEnv>, live: Arc<Live>, log: Arc<RunLog>, max_turns: u32) -> Self {
        let scope = log.scope();
        let recorder = Recorder::new(&env.stores, log.clone());
        let window = env.context.clone().map(|settings| Box::new(super::window::WindowState::new(settings)));
        RunCx {
            messages: Vec::new(),
            tools: live.tools.clone(),
            snapshot: None,
            env,
            live,
            log,
            scope,
            native_schema: None,
            turn: 0,
            max_turns,
            warned: std::sync::Mutex::new(Vec::new()),
            remembered: Vec::new(),
            recorder,
            history_base: None,
            session_opened: false,
            audited_start: false,
            window,
            summary_covers: 0,
            link: std::sync::OnceLock::new(),
            handoff: None,
            session_lock: None,
            deferred_open: None,
        }
    }

    /// The session's run lock this run holds in the store (its holder id): `finish` releases it,
    /// in the journal's final commit where it can.
    pub(crate) fn set_session_lock(&mut self, holder: Option<String>) {
        self.session_lock = holder;
    }

    /// This run as its children see it.
    pub(crate) fn link(&self) -> &Arc<super::child::ParentLink> {
        self.link.get_or_init(|| {
            Arc::new(super::child::ParentLink::new(
                &self.log,
                self.scope.clone(),
                self.env.policies.budget.clone(),
                super::child::journal_of(&self.env.stores, &self.log),
            ))
        })
    }

    /// Model calls made so far.
    pub fn turn(&self) -> u32 {
        self.turn
    }

    /// The most model calls this run may make.
    pub fn max_turns(&self) -> u32 {
        self.max_turns
    }

    /// Who the run acts for.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The tools offered to the model.
    pub fn tools(&self) -> &[ToolSpec] {
        self.tools.specs()
    }

    /// Takes the tool sources' current tools when one of them changed (or at the run's first
    /// turn). Agents without tool sources skip this with one `None` check.
    async fn refresh_tools(&mut self) -> Result<(), RunError> {
        let Some(dynamic) = &self.live.dynamic_tools else { return Ok(()) };
        if dynamic.is_current(self.snapshot.as_deref()) {
            return Ok(());
        }
        let snapshot = dynamic.current().await.map_err(|e| RunError::new(RunErrorKind::Config, e.to_string()))?;
        self.tools = snapshot.registry.clone();
        self.snapshot = Some(snapshot);
        Ok(())
    }

    /// Appends an event to the run's log.
    pub fn emit(&self, kind: EventKind) {
        self.log.emit(kind);
    }

    /// Whether the journal has this run (it began there, or it resumed from there).
    pub(crate) fn is_journaled(&self) -> bool {
        self.recorder.is_journaled()
    }

    /// Whether `begin` created or updated the session in the store.
    pub(crate) fn session_opened(&self) -> bool {
        self.session_opened
    }

    /// Marks a resumed run as journaled before it starts (a run cancelled while queued still
    /// gets its journal's final commit).
    pub(crate) fn set_journaled(&mut self) {
        self.recorder = Recorder::resumed(&self.env.stores, self.log.clone(), Vec::new());
        self.audited_start = true;
    }

    /// Journal entries a resumed run did not replay (its execution diverged from the journal).
    pub(crate) fn unreplayed(&self) -> usize {
        self.recorder.unreplayed()
    }

    /// Whether effects run: not while a resumed run replays what already happened.
    pub(super) fn live(&self) -> bool {
        !self.log.is_suppressing()
    }

    /// One model call with the conversation so far: streams deltas as events, appends the answer
    /// as an assistant message, and returns it. Counts as one turn. A resumed run gets the
    /// journaled answer instead of calling the model again.
    pub async fn model_turn(&mut self) -> Result<ModelResponse, RunError> {
        self.model_step(None).await
    }

    /// A model turn, shaped by `call` when given (see [`RunCx::model_call`]).
    pub(super) async fn model_step(&mut self, call: Option<&ModelCall>) -> Result<ModelResponse, RunError> {
        self.check_cancelled()?;
        self.stop_at_handoff()?;
        // The steps before the call are boxed, and awaited only when they have work: their futures
        // are large, and inline they would make every run waiting on its model carry their room.
        if self.live.dynamic_tools.is_some() {
            Box::pin(self.refresh_tools()).await?;
        }
        let turn = self.turn + 1;
        if self.recorder.is_replaying() || self.log.has_steering() {
            Box::pin(self.apply_steering(turn)).await?;
        }
        if self.window.is_some() {
            Box::pin(self.fit_context(turn)).await?;
        }
        let response = match self.recorder.model(turn) {
            // Recorded by the run's earlier execution: not sent again. The spend was counted by
            // the process that made the call; this run's own usage includes it.
            Some(recorded) => {
                self.turn = turn;
                self.log.set_turns(turn);
                self.log.record_turn(turn, &recorded.usage);
                self.log.roll_up(&recorded.usage, None);
                recorded
            }
            None => self.call_model(turn, call).await?,
        };
        self.log.emit(EventKind::ModelResponse(ModelResponseEvent {
            turn,
            text: response.text.clone(),
            tool_calls: response.tool_calls.clone(),
            usage: response.usage,
            finish_reason: response.finish_reason,
        }));
        if call.is_none_or(ModelCall::keeps_answer) {
            self.messages.push(Message::Assistant {
                content: response.text.clone(),
                thinking: response.thinking.clone(),
                tool_calls: response.tool_calls.clone(),
            });
        }
        if self.live() {
            let hooks = &self.live.hooks;
            for hook in hooks.iter() {
                if let Err(e) = Box::pin(hooks.call(hook.after_model(&self.scope, turn, &response))).await {
                    tracing::warn!(run_id = %self.scope.run_id, error = %e, "an after_model hook failed");
                }
            }
        }
        Ok(response)
    }

    /// A live model call: budget → before_model hooks → rate limit → the call → output guardrails
    /// → usage and budget → journal.
    async fn call_model(&mut self, turn: u32, call: Option<&ModelCall>) -> Result<ModelResponse, RunError> {
        // As in `model_step`: what is not on every call's path is boxed and awaited only when needed.
        if self.env.policies.budget.is_some() || self.log.parent.is_some() {
            Box::pin(self.check_budget()).await?;
        }
        // A shaped call sends its own messages; a plain turn sends the conversation, uncopied.
        // The conversation is the compacted view when the context policy made one.
        let native = self.native_structured();
        let conversation = super::window::view(&self.window, &self.messages);
        let owned = call.and_then(|c| c.request_messages(conversation, native));
        let messages: &[Message] = owned.as_deref().unwrap_or(conversation);
        let hooks = &self.live.hooks;
        for hook in hooks.iter() {
            match Box::pin(hooks.call(hook.before_model(&self.scope, turn, messages))).await {
                Ok(HookAction::Continue) => {}
                Ok(HookAction::Stop(reason)) => return Err(stopped_by_hook(reason)),
                Err(e) if hooks.failure_denies => return Err(stopped_by_hook(e)),
                Err(e) => tracing::warn!(run_id = %self.scope.run_id, error = %e, "a before_model hook failed"),
            }
        }
        if self.env.policies.rate_limiter.is_some() {
            Box::pin(self.rate_limit()).await?;
        }
        self.turn = turn;
        self.log.set_turns(turn);
        let span = telemetry::chat_span(self.env.model.as_ref(), &self.env.generation, &self.scope, turn);
        let started = Instant::now();
        let outcome = self.stream_turn(turn, messages, call).instrument(span.clone()).await;
        telemetry::record_chat(
            &span,
            self.env.model.name(),
            self.env.telemetry.capture_content,
            messages,
            &outcome,
            started.elapsed(),
        );
        let mut response = outcome?;
        self.observe_usage(&response.usage);
        if !response.text.is_empty()
            && !self.env.policies.guardrails.is_empty()
            && let Some(redacted) = Box::pin(self.guard(GuardStage::Output, &response.text)).await?
        {
            response.text = redacted;
        }
        self.log.record_turn(turn, &response.usage);
        if let Some(budget) = &self.env.policies.budget {
            budget.record(&self.scope, &response.usage);
        }
        self.log.roll_up(&response.usage, self.env.policies.budget.as_ref());
        if self.recorder.is_journaled() {
            // A model's result guards no side effect: it rides with the next write, in the same
            // transaction (the first tool intent, or the final commit for an answer). A run killed
            // before then asks the model again.
            self.recorder.defer(|| JournalEntry::ModelResult { turn, response: response.clone() }).await;
        }
        Ok(response)
    }

    /// Adds the steering messages for model call `turn`: the journaled ones of a resumed run, then
    /// the ones queued by `Run::steer` (each a user message, a `run.steered` event and a journal
    /// entry).
    async fn apply_steering(&mut self, turn: u32) -> Result<(), RunError> {
        for text in self.recorder.steered(turn) {
            self.messages.push(Message::user(text.clone()));
            self.log.emit(EventKind::RunSteered(RunSteered { turn, text }));
        }
        if self.recorder.has_model(turn) {
            return Ok(());
        }
        for text in self.log.take_steering() {
            self.messages.push(Message::user(text.clone()));
            self.log.emit(EventKind::RunSteered(RunSteered { turn, text: text.clone() }));
            self.recorder.record(|| JournalEntry::Steered { turn, text }).await?;
        }
        Ok(())
    }

    /// Whether steering messages wait for the next model call.
    pub(crate) fn has_steering(&self) -> bool {
        self.log.has_steering()
    }

    /// A run cancelled while this task was busy (a tool cancelling it, a `cancel()` from another
    /// thread mid-poll) stops here instead of going on to the next step.
    pub(super) fn check_cancelled(&self) -> Result<(), RunError> {
        if self.log.cancel.is_cancelled() {
            return Err(RunError::new(RunErrorKind::Cancelled, "the run was cancelled"));
        }
        Ok(())
    }

    /// Checks the run's budget, then (for a child run) its ancestors' budgets with what they have
    /// spent, this run included: a limit of the parent's reached inside a child stops the child,
    /// and the parent stops at its own next check.
    pub(super) async fn check_budget(&self) -> Result<(), RunError> {
        let own = match &self.env.policies.budget {
            Some(budget) => {
                let p = self.log.progress();
                budget.check(&self.scope, &p.usage, p.turns, p.tool_calls)
            }
            None => BudgetVerdict::Ok,
        };
        let verdict = match own {
            BudgetVerdict::Ok if self.log.parent.is_some() => self.log.ancestors_budget(),
            other => other,
        };
        match verdict {
            BudgetVerdict::Ok => Ok(()),
            BudgetVerdict::Warn(notice) => {
                let first = {
                    let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
                    let first = !warned.contains(&notice.limit);
                    if first {
                        warned.push(notice.limit.clone());
                    }
                    first
                };
                if first {
                    self.log.emit(EventKind::BudgetWarning(BudgetEvent {
                        limit: notice.limit,
                        used: notice.used,
                        max: notice.max,
                    }));
                }
                Ok(())
            }
            BudgetVerdict::Exceeded(notice) => {
                let limit = notice.limit.clone();
                self.log.emit(EventKind::BudgetExceeded(BudgetEvent {
                    limit: notice.limit,
                    used: notice.used,
                    max: notice.max,
                }));
                let payload = serde_json::json!({"limit": limit, "used": notice.used, "max": notice.max});
                self.audit(AuditAction::BudgetExceeded, payload).await?;
                Err(RunError::interrupted(
                    RunErrorKind::Budget,
                    format!("budget: {limit}"),
                    format!("the budget limit `{limit}` was reached"),
                ))
            }
        }
    }

    pub(super) async fn rate_limit(&self) -> Result<(), RunError> {
        let Some(limiter) = &self.env.policies.rate_limiter else { return Ok(()) };
        match limiter.acquire(&self.scope).await {
            Ok(waited) => {
                if !waited.is_zero() {
                    self.log.emit(EventKind::RateLimited(RateLimitedEvent { waited_ms: waited.as_millis() as u64 }));
                }
                Ok(())
            }
            Err(reason) => {
                self.audit(AuditAction::RateLimited, serde_json::json!({"reason": reason})).await?;
                Err(RunError::interrupted(RunErrorKind::RateLimit, "rate_limit", format!("rate limited: {reason}")))
            }
        }
    }

    /// Appends an audit record; a failure ends the run (`store`).
    pub(super) async fn audit(&self, action: AuditAction, payload: serde_json::Value) -> Result<(), RunError> {
        self.env
            .policies
            .audit(&self.scope, action, payload)
            .await
            .map_err(|e| RunError::new(RunErrorKind::Store, format!("audit log: {e}")))
    }

    /// Applies the guardrails of `stage` to `text`, with events: `Ok(None)` unchanged,
    /// `Ok(Some(new))` redacted, `Err` blocked.
    pub(super) async fn guard(&self, stage: GuardStage, text: &str) -> Result<Option<String>, RunError> {
        if self.env.policies.guardrails.is_empty() {
            return Ok(None);
        }
        match self.env.policies.guardrails.apply(stage, text) {
            GuardResult::Unchanged => Ok(None),
            GuardResult::Redacted(new, names) => {
                for name in names {
                    self.guard_event(stage, &name, GuardAction::Redact, None).await;
                }
                Ok(Some(new))
            }
            GuardResult::Blocked(name, reason) => Err(self.guard_blocked(stage, name, reason).await),
        }
    }

    /// A guardrail blocked the run at `stage`: its event and audit entry, and the run's error.
    pub(super) async fn guard_blocked(&self, stage: GuardStage, name: String, reason: String) -> RunError {
        self.guard_event(stage, &name, GuardAction::Block, Some(reason.clone())).await;
        blocked(&name, reason)
    }

    /// A guardrail's `guardrail.triggered` event and audit entry.
    pub(super) async fn guard_event(&self, stage: GuardStage, name: &str, action: GuardAction, reason: Option<String>) {
        self.env
            .policies
            .audit_or_warn(
                &self.scope,
                AuditAction::GuardrailTriggered,
                || serde_json::json!({"stage": stage, "guardrail": name, "action": action, "reason": reason}),
            )
            .await;
        self.log.emit(EventKind::GuardrailTriggered(GuardrailEvent {
            stage,
            guardrail: name.to_string(),
            action,
            reason,
        }));
    }
}

/// The error of a run a guardrail blocked.
pub(super) fn blocked(name: &str, reason: String) -> RunError {
    RunError::interrupted(
        RunErrorKind::Guardrail,
        format!("guardrail: {name}"),
        format!("blocked by guardrail `{name}`: {reason}"),
    )
}

/// The error of a run a hook stopped.
pub(super) fn stopped_by_hook(reason: String) -> RunError {
    RunError::interrupted(
        RunErrorKind::Guardrail,
        format!("guardrail: {reason}"),
        format!("stopped by a hook: {reason}"),
    )
}
