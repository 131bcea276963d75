use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::{FutureExt, StreamExt};
use serde_json::Value;
use tracing::Instrument;

use crate::agent::{AgentInner, RunShared};
use crate::error::{ModelError, RunError, RunErrorKind, ToolError, ToolErrorKind};
use crate::event::{
    BudgetEvent, DeltaKind, EventKind, GuardrailEvent, ModelDelta, ModelRequestEvent, ModelResponseEvent,
    PermissionDecisionEvent, RateLimitedEvent, ToolCallEvent, ToolResultEvent,
};
use crate::governance::{
    Approval, ApprovalRequest, AuditRecord, BudgetVerdict, Decision, GuardStage, GuardVerdict, Guardrail, HookAction,
    Scope, ToolHookAction,
};
use crate::governance::{AuditAction, DecidedBy, GuardAction, PermissionDecision};
use crate::message::{Message, ToolCall};
use crate::model::{ModelChunk, ModelRequest, ModelResponse, ResponseAssembler};
use crate::output::OutputSchema;
use crate::store::JournalEntry;

use super::replay::{ApprovalReplay, Replay, ToolReplay};
use crate::telemetry;
use crate::tool::{ArtifactSink, ToolContext, ToolSpec};

/// One run's working state, handed to the [`super::Architecture`]: the conversation and the two
/// operations that touch the world, a model turn and a batch of tool calls.
pub struct RunCx {
    /// The conversation so far. Architectures may add messages (for example a critique) before the
    /// next model turn.
    pub messages: Vec<Message>,
    agent: Arc<AgentInner>,
    shared: Arc<RunShared>,
    scope: Scope,
    native_schema: Option<OutputSchema>,
    turn: u32,
    max_turns: u32,
    /// Budget limits already warned about in this run.
    warned: Vec<String>,
    /// Approvals remembered for this run: tool name → allowed.
    remembered: Vec<(String, Result<(), String>)>,
    /// A resumed run's journal entries not replayed yet.
    replay: Replay,
}

/// One prepared tool call: ready to run, or already failed.
enum Prepared {
    Ready { index: usize, args: Value },
    Failed(ToolError),
}

struct ToolOutcome {
    content: String,
    is_error: bool,
    error_kind: Option<ToolErrorKind>,
    truncated: bool,
    /// A guardrail blocked this result: (guardrail, reason).
    blocked: Option<(String, String)>,
}

impl RunCx {
    pub(crate) fn new(
        agent: Arc<AgentInner>,
        shared: Arc<RunShared>,
        messages: Vec<Message>,
        native_schema: Option<OutputSchema>,
        max_turns: u32,
        replay: Replay,
    ) -> Self {
        let scope = shared.scope();
        RunCx {
            messages,
            agent,
            shared,
            scope,
            native_schema,
            turn: 0,
            max_turns,
            warned: Vec::new(),
            remembered: Vec::new(),
            replay,
        }
    }

    /// Journal entries a resumed run did not replay (its execution diverged from the journal).
    pub(crate) fn unreplayed(&self) -> usize {
        self.replay.remaining().len()
    }

    /// After consuming replayed entries: once none are left, events flow again.
    fn replayed(&self) {
        if !self.replay.is_active() {
            self.shared.stop_suppressing();
        }
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
        self.agent.tools.specs()
    }

    /// Appends an event to the run's log.
    pub fn emit(&self, kind: EventKind) {
        self.shared.emit(kind);
    }

    pub(crate) fn into_messages(self) -> Vec<Message> {
        self.messages
    }

    /// A run cancelled while this task was busy (a tool cancelling it, a `cancel()` from another
    /// thread mid-poll) stops here instead of going on to the next step.
    fn check_cancelled(&self) -> Result<(), RunError> {
        if self.shared.cancel.is_cancelled() {
            return Err(RunError::new(RunErrorKind::Cancelled, "the run was cancelled"));
        }
        Ok(())
    }

    async fn check_budget(&mut self) -> Result<(), RunError> {
        let Some(budget) = &self.agent.budget else { return Ok(()) };
        let p = self.shared.progress();
        match budget.check(&self.scope, &p.usage, p.turns, p.tool_calls) {
            BudgetVerdict::Ok => Ok(()),
            BudgetVerdict::Warn(notice) => {
                if !self.warned.contains(&notice.limit) {
                    self.warned.push(notice.limit.clone());
                    self.shared.emit(EventKind::BudgetWarning(BudgetEvent {
                        limit: notice.limit,
                        used: notice.used,
                        max: notice.max,
                    }));
                }
                Ok(())
            }
            BudgetVerdict::Exceeded(notice) => {
                let limit = notice.limit.clone();
                self.shared.emit(EventKind::BudgetExceeded(BudgetEvent {
                    limit: notice.limit,
                    used: notice.used,
                    max: notice.max,
                }));
                if self.agent.audit.is_some() {
                    let payload = serde_json::json!({"limit": limit, "used": notice.used, "max": notice.max});
                    self.audit(AuditAction::BudgetExceeded, payload).await?;
                }
                Err(RunError::interrupted(
                    RunErrorKind::Budget,
                    format!("budget: {limit}"),
                    format!("the budget limit `{limit}` was reached"),
                ))
            }
        }
    }

    async fn rate_limit(&self) -> Result<(), RunError> {
        let Some(limiter) = &self.agent.rate_limiter else { return Ok(()) };
        match limiter.acquire(&self.scope).await {
            Ok(waited) => {
                if !waited.is_zero() {
                    self.shared.emit(EventKind::RateLimited(RateLimitedEvent { waited_ms: waited.as_millis() as u64 }));
                }
                Ok(())
            }
            Err(reason) => {
                if self.agent.audit.is_some() {
                    self.audit(AuditAction::RateLimited, serde_json::json!({"reason": reason})).await?;
                }
                Err(RunError::interrupted(RunErrorKind::RateLimit, "rate_limit", format!("rate limited: {reason}")))
            }
        }
    }

    /// Applies the guardrails of `stage` to `text`: `Ok(None)` unchanged, `Ok(Some(new))` redacted,
    /// `Err` blocked (the event and audit entry are written here).
    async fn guard(&self, stage: GuardStage, text: &str) -> Result<Option<String>, RunError> {
        if self.agent.guardrails.is_empty() {
            return Ok(None);
        }
        guard_text(&self.agent, &self.shared, &self.scope, stage, text).await
    }

    /// Streamed output blocked by a guardrail: the event and audit entry, and the error.
    async fn output_blocked(&self, name: String, reason: String) -> RunError {
        self.guard_event(GuardStage::Output, &name, GuardAction::Block, Some(reason.clone())).await;
        blocked(&name, reason)
    }

    async fn guard_event(&self, stage: GuardStage, name: &str, action: GuardAction, reason: Option<String>) {
        record_guard_event(&self.agent, &self.shared, &self.scope, stage, name, action, reason).await;
    }

    async fn permission_event(
        &self,
        turn: u32,
        call: &ToolCall,
        decision: PermissionDecision,
        by: DecidedBy,
        reason: Option<String>,
    ) {
        if self.agent.audit.is_some() {
            let payload = serde_json::json!({"tool": call.name, "call_id": call.id, "decision": decision, "by": by,
                                             "reason": reason, "turn": turn});
            if let Err(e) = self.audit(AuditAction::PermissionDecision, payload).await {
                tracing::warn!(run_id = %self.scope.run_id, error = %e, "audit write failed");
            }
        }
        self.shared.emit(EventKind::PermissionDecision(PermissionDecisionEvent {
            turn,
            call_id: call.id.clone(),
            tool: call.name.clone(),
            decision,
            by,
            reason,
        }));
    }

    async fn audit(&self, action: AuditAction, payload: Value) -> Result<(), RunError> {
        let Some(audit) = &self.agent.audit else { return Ok(()) };
        audit
            .append(AuditRecord { scope: self.scope.clone(), action, payload })
            .await
            .map_err(|e| RunError::new(RunErrorKind::Store, format!("audit log: {e}")))
    }

    /// Writes a journal entry, with the events emitted since the last write, before the run
    /// moves on.
    async fn journal(&self, entry: JournalEntry) -> Result<(), RunError> {
        let Some(journal) = &self.agent.journal else { return Ok(()) };
        let (events, end) = self.shared.unpersisted();
        journal
            .append(&self.scope.run_id, &self.agent.lease, &entry, &events)
            .await
            .map_err(|e| RunError::new(RunErrorKind::Store, format!("journal: {e}")))?;
        self.shared.mark_persisted(end);
        Ok(())
    }

    /// One model call with the conversation so far: streams deltas as events, appends the answer
    /// as an assistant message, and returns it. Counts as one turn.
    pub async fn model_turn(&mut self) -> Result<ModelResponse, RunError> {
        self.check_cancelled()?;
        let turn = self.turn + 1;
        if self.replay.is_active()
            && let Some(response) = self.replay.take_model(turn)
        {
            // Recorded by the run's earlier execution: not sent again. The spend was counted by
            // the process that made the call; this run's own usage includes it.
            self.replayed();
            self.turn = turn;
            self.shared.set_turns(turn);
            self.shared.record_turn(turn, &response.usage);
            return Ok(self.conclude_turn(turn, response).await);
        }
        self.check_budget().await?;
        for hook in self.agent.hooks.iter() {
            let action = guard_hook(&self.agent, hook.before_model(&self.scope, turn, &self.messages)).await;
            match action {
                Ok(HookAction::Continue) => {}
                Ok(HookAction::Stop(reason)) => return Err(guardrail(reason)),
                Err(e) if self.agent.hook_failure_denies => return Err(guardrail(e)),
                Err(e) => tracing::warn!(run_id = %self.scope.run_id, error = %e, "a before_model hook failed"),
            }
        }
        self.rate_limit().await?;
        self.turn = turn;
        self.shared.set_turns(turn);
        let span = telemetry::chat_span(&self.agent, &self.scope, turn);
        let started = Instant::now();
        let outcome = self.stream_turn(turn).instrument(span.clone()).await;
        telemetry::record_chat(&span, &self.agent, &self.messages, &outcome, started.elapsed());
        let mut response = outcome?;
        let agent = &self.agent;
        if !response.text.is_empty()
            && let Some(redacted) = self.guard(GuardStage::Output, &response.text).await?
        {
            response.text = redacted;
        }
        self.shared.record_turn(turn, &response.usage);
        if let Some(budget) = &agent.budget {
            budget.record(&self.scope, &response.usage);
        }
        self.journal(JournalEntry::ModelResult { turn, response: response.clone() }).await?;
        Ok(self.conclude_turn(turn, response).await)
    }

    /// After a model answer is recorded: the event, the assistant message, the after_model hooks.
    async fn conclude_turn(&mut self, turn: u32, response: ModelResponse) -> ModelResponse {
        let agent = self.agent.clone();
        self.shared.emit(EventKind::ModelResponse(ModelResponseEvent {
            turn,
            text: response.text.clone(),
            tool_calls: response.tool_calls.clone(),
            usage: response.usage,
            finish_reason: response.finish_reason,
        }));
        self.messages.push(Message::Assistant {
            content: response.text.clone(),
            thinking: response.thinking.clone(),
            tool_calls: response.tool_calls.clone(),
        });
        if !self.shared.is_suppressing() {
            for hook in agent.hooks.iter() {
                if let Err(e) = guard_hook(&agent, hook.after_model(&self.scope, turn, &response)).await {
                    tracing::warn!(run_id = %self.scope.run_id, error = %e, "an after_model hook failed");
                }
            }
        }
        response
    }

    /// Sends the conversation to the model and assembles the streamed answer, emitting deltas
    /// (through the output guardrails' filter).
    async fn stream_turn(&self, turn: u32) -> Result<ModelResponse, RunError> {
        let agent = &self.agent;
        let tools: &[ToolSpec] = if agent.model.capabilities().tools { agent.tools.specs() } else { &[] };
        self.shared.emit(EventKind::ModelRequest(ModelRequestEvent {
            turn,
            model: agent.model.name().to_string(),
            messages: self.messages.len(),
            tools: tools.len(),
        }));
        let request = ModelRequest {
            messages: &self.messages,
            tools,
            generation: &agent.generation,
            output_schema: self.native_schema.as_ref().map(OutputSchema::schema),
            run_id: &self.scope.run_id,
            user_id: self.scope.user_id.as_deref(),
            turn,
        };
        let mut stream = agent.model.stream(&request).await.map_err(|e| RunError::from_model(&e))?;
        let mut assembler = ResponseAssembler::new();
        let mut filter = OutputFilter::new(&agent.guardrails);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| RunError::from_model(&e))?;
            match &chunk {
                ModelChunk::Text(text) if !text.is_empty() => {
                    let shown = match &mut filter {
                        None => Some(text.clone()),
                        Some(f) => match f.push(text) {
                            Ok(shown) => shown,
                            Err((name, reason)) => return Err(self.output_blocked(name, reason).await),
                        },
                    };
                    if let Some(text) = shown.filter(|t| !t.is_empty()) {
                        self.shared.emit(EventKind::ModelDelta(ModelDelta { turn, kind: DeltaKind::Text, text }));
                    }
                }
                ModelChunk::Thinking { text, .. } if !text.is_empty() => {
                    self.shared.emit(EventKind::ModelDelta(ModelDelta {
                        turn,
                        kind: DeltaKind::Thinking,
                        text: text.clone(),
                    }));
                }
                _ => {}
            }
            assembler.push(chunk);
        }
        drop(stream);
        let response = assembler.finish(turn).map_err(|e: ModelError| RunError::from_model(&e))?;
        if let Some(f) = &mut filter {
            let rest = match f.finish() {
                Ok(rest) => rest,
                Err((name, reason)) => return Err(self.output_blocked(name, reason).await),
            };
            if !rest.is_empty() {
                self.shared.emit(EventKind::ModelDelta(ModelDelta { turn, kind: DeltaKind::Text, text: rest }));
            }
        }
        Ok(response)
    }

    /// Runs one turn's tool calls and appends their results, in call order, as tool messages.
    ///
    /// Consecutive concurrency-safe calls run at the same time; every other call runs alone, in
    /// order. Each call is checked (schema, permissions, approval, hooks) just before it runs; the
    /// calls of a concurrent batch are checked in call order before the batch starts. Unknown tools, malformed or schema-violating arguments, denials, errors, panics and
    /// timeouts become error results for the model; the run goes on.
    pub async fn run_tools(&mut self, calls: &[ToolCall]) -> Result<(), RunError> {
        let turn = self.turn;
        self.check_budget().await?;
        for call in calls {
            self.shared.emit(EventKind::ToolCall(ToolCallEvent { turn, call: call.clone() }));
        }
        self.shared.record_tool_calls(calls.len() as u32);
        let agent = self.agent.clone();
        let tools = &agent.tools;
        let safe =
            |call: &ToolCall| tools.index_of(&call.name).is_some_and(|i| tools.entry(i).spec.flags.concurrency_safe);
        let mut outcomes: Vec<Option<ToolOutcome>> = (0..calls.len()).map(|_| None).collect();
        // A resumed run: calls whose results are journaled are not run again; a call that was
        // started and has no result runs again only if its tool says that is safe.
        let mut rerun: Vec<Option<Prepared>> = (0..calls.len()).map(|_| None).collect();
        if self.replay.is_active() {
            for (k, call) in calls.iter().enumerate() {
                match self.replay.take_tool(&call.id) {
                    ToolReplay::None => {}
                    ToolReplay::Done(entry) => {
                        self.replayed();
                        outcomes[k] = Some(self.replayed_call(turn, call, entry).await);
                    }
                    ToolReplay::Started(args) => {
                        self.replayed();
                        let index = tools.index_of(&call.name);
                        let flags = index.map(|i| tools.entry(i).spec.flags).unwrap_or_default();
                        match index {
                            Some(index) if flags.idempotent || flags.rerun_on_resume => {
                                rerun[k] = Some(Prepared::Ready { index, args });
                            }
                            _ => {
                                return Err(RunError::new(
                                    RunErrorKind::Ambiguous,
                                    format!(
                                        "tool call `{}` ({}) started before the run's process stopped and its result \
                                         was not recorded; `{}` is not marked idempotent (nor rerun_on_resume), so \
                                         it was not run again: check its effect and start a new run",
                                        call.name, call.id, call.name
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
        }
        let mut i = 0;
        while i < calls.len() {
            if outcomes[i].is_some() {
                i += 1;
            } else if let Some(prepared) = rerun[i].take() {
                outcomes[i] = Some(self.execute(turn, &calls[i], &prepared).await);
                i += 1;
            } else if safe(&calls[i]) {
                let mut j = i + 1;
                while j < calls.len() && safe(&calls[j]) && outcomes[j].is_none() && rerun[j].is_none() {
                    j += 1;
                }
                // Checks and approvals in call order, then the batch runs together.
                let mut prepared = Vec::with_capacity(j - i);
                for call in &calls[i..j] {
                    prepared.push(self.prepare(turn, call).await?);
                }
                let batch = calls[i..j].iter().zip(&prepared).map(|(call, p)| self.execute(turn, call, p));
                let results = futures::future::join_all(batch).await;
                for (k, outcome) in (i..j).zip(results) {
                    outcomes[k] = Some(outcome);
                }
                i = j;
            } else {
                let prepared = self.prepare(turn, &calls[i]).await?;
                outcomes[i] = Some(self.execute(turn, &calls[i], &prepared).await);
                i += 1;
            }
        }
        let blocked_by = outcomes.iter().flatten().find_map(|o| o.blocked.clone());
        for (call, outcome) in calls.iter().zip(outcomes) {
            if let Some(o) = outcome {
                self.messages.push(Message::Tool {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    content: o.content,
                    is_error: o.is_error,
                });
            }
        }
        if let Some((name, reason)) = blocked_by {
            return Err(blocked(&name, reason));
        }
        self.check_cancelled()
    }

    /// Resolves the tool, parses and checks the arguments, and asks permissions and hooks.
    async fn prepare(&mut self, turn: u32, call: &ToolCall) -> Result<Prepared, RunError> {
        let agent = &self.agent.clone();
        let Some(index) = agent.tools.index_of(&call.name) else {
            let names: Vec<&str> = agent.tools.specs().iter().map(|t| t.name.as_str()).collect();
            let available = if names.is_empty() { "none".to_string() } else { names.join(", ") };
            return Ok(Prepared::Failed(ToolError::with_kind(
                ToolErrorKind::NotFound,
                format!("unknown tool `{}`; available tools: {available}", call.name),
            )));
        };
        let entry = agent.tools.entry(index);
        let mut args: Value = match serde_json::from_str(&call.arguments) {
            Ok(v) => v,
            Err(e) => {
                return Ok(Prepared::Failed(ToolError::invalid_arguments(format!(
                    "the arguments for `{}` are not valid JSON ({e}); send a JSON object",
                    call.name
                ))));
            }
        };
        if let Err(problems) = entry.validate(&args) {
            return Ok(Prepared::Failed(ToolError::invalid_arguments(format!(
                "the arguments for `{}` do not match its schema: {problems}",
                call.name
            ))));
        }
        let denied = |reason: String| Ok(Prepared::Failed(ToolError::with_kind(ToolErrorKind::Denied, reason)));
        let remembered = self.remembered.iter().find(|(tool, _)| *tool == call.name).map(|(_, r)| r.clone());
        if let Some(Err(reason)) = &remembered {
            self.permission_event(turn, call, PermissionDecision::Deny, DecidedBy::Remembered, Some(reason.clone()))
                .await;
            return denied(format!("denied by approver: {reason}"));
        }
        // A remembered "allow for this run" only answers the approval question: the policy still
        // decides first, so a call it denies (other arguments, a deny list) stays denied.
        match agent.permissions.check(&self.scope, &entry.spec, &args).await {
            Decision::Ask(_) if remembered.is_some() => {
                self.permission_event(turn, call, PermissionDecision::Allow, DecidedBy::Remembered, None).await
            }
            Decision::Allow => {
                if entry.spec.flags.needs_approval() {
                    self.permission_event(turn, call, PermissionDecision::Allow, DecidedBy::Policy, None).await;
                }
            }
            Decision::Deny(reason) => {
                self.permission_event(turn, call, PermissionDecision::Deny, DecidedBy::Policy, Some(reason.clone()))
                    .await;
                return denied(format!("permission denied: {reason}"));
            }
            Decision::Ask(reason) => {
                let recorded = if self.replay.is_active() {
                    let recorded = self.replay.take_approval(&call.id);
                    self.replayed();
                    recorded
                } else {
                    ApprovalReplay::None
                };
                let approval = match recorded {
                    ApprovalReplay::Decided(approval) => approval,
                    ApprovalReplay::None | ApprovalReplay::Pending => {
                        let Some(handler) = &agent.approval else {
                            let reason = format!("{reason} and needs approval, and no approval handler is configured");
                            self.permission_event(
                                turn,
                                call,
                                PermissionDecision::Deny,
                                DecidedBy::Policy,
                                Some(reason.clone()),
                            )
                            .await;
                            return denied(format!("permission denied: {reason}"));
                        };
                        let request = ApprovalRequest {
                            scope: self.scope.clone(),
                            tool: entry.spec.clone(),
                            call: call.clone(),
                            args: args.clone(),
                            reason: reason.clone(),
                        };
                        handler.approve(request).await
                    }
                };
                match approval {
                    Approval::Defer if agent.journal.is_none() => {
                        let reason = "the approver deferred the decision, and deferring needs a journal".to_string();
                        self.permission_event(
                            turn,
                            call,
                            PermissionDecision::Deny,
                            DecidedBy::Approver,
                            Some(reason.clone()),
                        )
                        .await;
                        return denied(format!("denied: {reason}"));
                    }
                    Approval::Defer => {
                        self.permission_event(
                            turn,
                            call,
                            PermissionDecision::Defer,
                            DecidedBy::Approver,
                            Some(reason.clone()),
                        )
                        .await;
                        self.journal(JournalEntry::ApprovalPending { turn, call: call.clone(), reason }).await?;
                        return Err(RunError::interrupted(
                            RunErrorKind::ApprovalPending,
                            "approval_pending",
                            format!(
                                "waiting for a decision on `{}` (call {}); send it with Agent::decide",
                                call.name, call.id
                            ),
                        ));
                    }
                    Approval::Allow => {
                        self.permission_event(turn, call, PermissionDecision::Allow, DecidedBy::Approver, None).await
                    }
                    Approval::AllowForRun => {
                        self.remembered.push((call.name.clone(), Ok(())));
                        self.permission_event(
                            turn,
                            call,
                            PermissionDecision::Allow,
                            DecidedBy::Approver,
                            Some("for this run".into()),
                        )
                        .await;
                    }
                    Approval::Deny(reason) => {
                        self.permission_event(
                            turn,
                            call,
                            PermissionDecision::Deny,
                            DecidedBy::Approver,
                            Some(reason.clone()),
                        )
                        .await;
                        return denied(format!("denied by approver: {reason}"));
                    }
                    Approval::DenyForRun(reason) => {
                        self.remembered.push((call.name.clone(), Err(reason.clone())));
                        self.permission_event(
                            turn,
                            call,
                            PermissionDecision::Deny,
                            DecidedBy::Approver,
                            Some(reason.clone()),
                        )
                        .await;
                        return denied(format!("denied by approver: {reason}"));
                    }
                    Approval::Edit(edited) => {
                        if let Err(problems) = entry.validate(&edited) {
                            self.permission_event(
                                turn,
                                call,
                                PermissionDecision::Deny,
                                DecidedBy::Approver,
                                Some("invalid edit".into()),
                            )
                            .await;
                            return Ok(Prepared::Failed(ToolError::invalid_arguments(format!(
                                "the approver's edited arguments do not match the schema of `{}`: {problems}",
                                call.name
                            ))));
                        }
                        self.permission_event(turn, call, PermissionDecision::Edit, DecidedBy::Approver, None).await;
                        args = edited;
                    }
                }
            }
        }
        for hook in agent.hooks.iter() {
            let action = match guard_hook(agent, hook.before_tool(&self.scope, call, &args)).await {
                Ok(action) => action,
                Err(e) if agent.hook_failure_denies => ToolHookAction::Deny(e),
                Err(e) => {
                    tracing::warn!(run_id = %self.scope.run_id, error = %e, "a before_tool hook failed");
                    ToolHookAction::Continue
                }
            };
            match action {
                ToolHookAction::Continue => {}
                ToolHookAction::Deny(reason) => {
                    self.permission_event(turn, call, PermissionDecision::Deny, DecidedBy::Hook, Some(reason.clone()))
                        .await;
                    return denied(format!("denied by hook: {reason}"));
                }
                ToolHookAction::Rewrite(new_args) => {
                    if let Err(problems) = entry.validate(&new_args) {
                        return Ok(Prepared::Failed(ToolError::invalid_arguments(format!(
                            "a hook rewrote the arguments of `{}` into ones that do not match its schema: {problems}",
                            call.name
                        ))));
                    }
                    args = new_args;
                }
            }
        }
        Ok(Prepared::Ready { index, args })
    }

    /// Runs one prepared call (or reports its preparation failure), emits `tool.result`.
    async fn execute(&self, turn: u32, call: &ToolCall, prepared: &Prepared) -> ToolOutcome {
        let started = Instant::now();
        let result = match prepared {
            Prepared::Failed(err) => Err(ToolError::with_kind(err.kind(), err.message())),
            Prepared::Ready { index, args } => {
                let span = telemetry::tool_span(&call.name, &call.id);
                let result = self.invoke(turn, call, *index, args.clone()).instrument(span.clone()).await;
                telemetry::record_tool(
                    &span,
                    &call.name,
                    result.as_ref().err().map(ToolError::kind),
                    started.elapsed(),
                );
                result
            }
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let limit = self.agent.tool_output_limit;
        let mut outcome = match result {
            Ok(content) => {
                let (content, truncated) = cap_output(content, limit);
                ToolOutcome { content, is_error: false, error_kind: None, truncated, blocked: None }
            }
            Err(err) => {
                let (content, truncated) = cap_output(format!("Error: {}", err.message()), limit);
                ToolOutcome { content, is_error: true, error_kind: Some(err.kind()), truncated, blocked: None }
            }
        };
        if !self.agent.guardrails.is_empty() {
            match apply_guardrails_quiet(&self.agent.guardrails, GuardStage::ToolResult, &outcome.content) {
                GuardResult::Unchanged => {}
                GuardResult::Redacted(text, names) => {
                    for name in names {
                        self.guard_event(GuardStage::ToolResult, &name, GuardAction::Redact, None).await;
                    }
                    outcome.content = text;
                }
                GuardResult::Blocked(name, reason) => {
                    self.guard_event(GuardStage::ToolResult, &name, GuardAction::Block, Some(reason.clone())).await;
                    outcome.content = format!("Error: blocked by guardrail `{name}`");
                    outcome.is_error = true;
                    outcome.error_kind = Some(ToolErrorKind::Denied);
                    outcome.blocked = Some((name, reason));
                }
            }
        }
        let event = ToolResultEvent {
            turn,
            call_id: call.id.clone(),
            name: call.name.clone(),
            output: outcome.content.clone(),
            is_error: outcome.is_error,
            error_kind: outcome.error_kind,
            truncated: outcome.truncated,
            duration_ms,
        };
        // Journal and audit failures cannot be returned from here without losing the other calls'
        // results; they are logged, and the journal/audit implementations own their durability.
        if let Err(e) = self
            .journal(JournalEntry::ToolResult {
                turn,
                call_id: call.id.clone(),
                output: outcome.content.clone(),
                is_error: outcome.is_error,
                error_kind: outcome.error_kind,
                truncated: outcome.truncated,
                blocked: outcome.blocked.clone(),
                duration_ms,
                artifacts: self.shared.artifacts_of(&call.id),
            })
            .await
        {
            tracing::warn!(run_id = %self.scope.run_id, error = %e, "journal write failed");
        }
        self.conclude_call(call, event, true).await;
        outcome
    }

    /// What follows a recorded tool result: the audit entry and the `after_tool` hooks (when
    /// `effects`), then the `tool.result` event.
    async fn conclude_call(&self, call: &ToolCall, event: ToolResultEvent, effects: bool) {
        if effects && self.agent.audit.is_some() {
            let payload = serde_json::json!({
                "tool": call.name, "call_id": call.id, "ok": !event.is_error,
                "error_kind": event.error_kind, "turn": event.turn,
            });
            if let Err(e) = self.audit(AuditAction::ToolResult, payload).await {
                tracing::warn!(run_id = %self.scope.run_id, error = %e, "audit write failed");
            }
        }
        if effects {
            for hook in self.agent.hooks.iter() {
                if let Err(e) = guard_hook(&self.agent, hook.after_tool(&self.scope, call, &event)).await {
                    tracing::warn!(run_id = %self.scope.run_id, error = %e, "an after_tool hook failed");
                }
            }
        }
        self.shared.emit(EventKind::ToolResult(event));
    }

    /// A call whose result the journal holds: its artifacts come back, and what followed the
    /// result (hooks, the audit entry, the `tool.result` event) happens if the earlier execution
    /// had not got that far.
    async fn replayed_call(&self, turn: u32, call: &ToolCall, entry: JournalEntry) -> ToolOutcome {
        let JournalEntry::ToolResult {
            output, is_error, error_kind, truncated, blocked, duration_ms, artifacts, ..
        } = entry
        else {
            return ToolOutcome {
                content: "Error: the journal holds no result for this call".into(),
                is_error: true,
                error_kind: Some(ToolErrorKind::Failed),
                truncated: false,
                blocked: None,
            };
        };
        self.shared.restore_artifacts(&artifacts);
        let event = ToolResultEvent {
            turn,
            call_id: call.id.clone(),
            name: call.name.clone(),
            output: output.clone(),
            is_error,
            error_kind,
            truncated,
            duration_ms,
        };
        self.conclude_call(call, event, !self.shared.is_suppressing()).await;
        ToolOutcome { content: output, is_error, error_kind, truncated, blocked }
    }

    async fn invoke(&self, turn: u32, call: &ToolCall, index: usize, args: Value) -> Result<String, ToolError> {
        let entry = self.agent.tools.entry(index);
        if let Err(e) =
            self.journal(JournalEntry::ToolIntent { turn, call: call.clone(), arguments: args.clone() }).await
        {
            return Err(ToolError::new(format!("not run: {e}")));
        }
        if self.agent.audit.is_some() {
            let payload = serde_json::json!({"tool": call.name, "call_id": call.id, "args": args, "turn": turn,
                                             "destructive": entry.spec.flags.destructive});
            if let Err(e) = self.audit(AuditAction::ToolCall, payload).await {
                return Err(ToolError::new(format!("not run: {e}")));
            }
        }
        let token = self.shared.cancel.child_token();
        let sink: Arc<dyn ArtifactSink> = self.shared.clone();
        let ctx = ToolContext::for_call(&self.scope, &call.id, token.clone(), Some(sink));
        let timeout = entry.timeout.unwrap_or(self.agent.tool_timeout);
        let future = AssertUnwindSafe(entry.tool.call(ctx, args)).catch_unwind();
        let outcome = match tokio::time::timeout(timeout, future).await {
            Err(_) => {
                token.cancel();
                Err(ToolError::with_kind(
                    ToolErrorKind::Timeout,
                    format!("`{}` did not finish within {} ms", call.name, timeout.as_millis()),
                ))
            }
            Ok(Err(panic)) => {
                let detail = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_string());
                Err(ToolError::with_kind(ToolErrorKind::Panicked, format!("`{}` panicked: {detail}", call.name)))
            }
            Ok(Ok(result)) => result.map(|o| o.content),
        };
        if self.shared.cancel.is_cancelled() {
            return Err(ToolError::with_kind(ToolErrorKind::Cancelled, "the run was cancelled"));
        }
        outcome
    }
}

/// Runs a hook under the agent's hook timeout, with panics caught: `Err` says what went wrong.
pub(crate) async fn guard_hook<T>(agent: &AgentInner, hook: impl std::future::Future<Output = T>) -> Result<T, String> {
    match tokio::time::timeout(agent.hook_timeout, AssertUnwindSafe(hook).catch_unwind()).await {
        Err(_) => Err(format!("a hook did not answer within {} ms", agent.hook_timeout.as_millis())),
        Ok(Err(_)) => Err("a hook panicked".to_string()),
        Ok(Ok(v)) => Ok(v),
    }
}

/// What the guardrails made of a text.
pub(crate) enum GuardResult {
    Unchanged,
    /// The new text and the guardrails that changed it.
    Redacted(String, Vec<String>),
    /// The guardrail that blocked it, and why.
    Blocked(String, String),
}

/// Applies every guardrail of `stage`, in order, each seeing the previous one's redactions.
pub(crate) fn apply_guardrails_quiet(guards: &[Arc<dyn Guardrail>], stage: GuardStage, text: &str) -> GuardResult {
    let mut current: Option<String> = None;
    let mut names = Vec::new();
    for g in guards.iter().filter(|g| g.applies_to(stage)) {
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

pub(crate) async fn record_guard_event(
    agent: &AgentInner,
    shared: &RunShared,
    scope: &Scope,
    stage: GuardStage,
    name: &str,
    action: GuardAction,
    reason: Option<String>,
) {
    if let Some(audit) = &agent.audit {
        let payload = serde_json::json!({"stage": stage, "guardrail": name, "action": action, "reason": reason});
        let record = AuditRecord { scope: scope.clone(), action: AuditAction::GuardrailTriggered, payload };
        if let Err(e) = audit.append(record).await {
            tracing::warn!(run_id = %scope.run_id, error = %e, "audit write failed");
        }
    }
    shared.emit(EventKind::GuardrailTriggered(GuardrailEvent { stage, guardrail: name.to_string(), action, reason }));
}

/// Applies the guardrails of `stage` with events: `Ok(None)` unchanged, `Ok(Some(new))` redacted,
/// `Err` blocked.
pub(crate) async fn guard_text(
    agent: &AgentInner,
    shared: &RunShared,
    scope: &Scope,
    stage: GuardStage,
    text: &str,
) -> Result<Option<String>, RunError> {
    match apply_guardrails_quiet(&agent.guardrails, stage, text) {
        GuardResult::Unchanged => Ok(None),
        GuardResult::Redacted(new, names) => {
            for name in names {
                record_guard_event(agent, shared, scope, stage, &name, GuardAction::Redact, None).await;
            }
            Ok(Some(new))
        }
        GuardResult::Blocked(name, reason) => {
            record_guard_event(agent, shared, scope, stage, &name, GuardAction::Block, Some(reason.clone())).await;
            Err(blocked(&name, reason))
        }
    }
}

fn blocked(name: &str, reason: String) -> RunError {
    RunError::interrupted(
        RunErrorKind::Guardrail,
        format!("guardrail: {name}"),
        format!("blocked by guardrail `{name}`: {reason}"),
    )
}

/// Filters streamed output through the output guardrails. Text is held back until it is more than
/// [`OutputFilter::HOLD`] bytes behind the stream's end, and the last unbroken word (up to
/// [`OutputFilter::MAX_WORD`] bytes) is held whole, so a pattern split across deltas is seen whole
/// before it is shown, and a long token (a JWT, a key) never shows its first part. A pattern longer
/// than the hold may be shown partly unredacted; the final answer (events, messages, result) is
/// always checked whole.
///
/// To keep long answers linear, the part already shown is committed from time to time: the raw
/// text is cut well behind what is shown, and each delta re-checks only the text after the cut. A
/// cut is kept only when checking the two parts apart gives exactly the text checking them together
/// gave, so no match across it is lost.
pub(crate) struct OutputFilter<'a> {
    guards: &'a [Arc<dyn Guardrail>],
    /// The raw text since the last commit.
    raw: String,
    /// Bytes of the filtered `raw` already shown.
    shown: usize,
    /// Try to commit once `raw` is this long.
    commit_at: usize,
}

impl<'a> OutputFilter<'a> {
    const HOLD: usize = 256;
    const MAX_WORD: usize = 4096;
    const WINDOW: usize = 2048;

    pub(crate) fn new(guards: &'a [Arc<dyn Guardrail>]) -> Option<Self> {
        guards.iter().any(|g| g.applies_to(GuardStage::Output)).then_some(OutputFilter {
            guards,
            raw: String::new(),
            shown: 0,
            commit_at: Self::WINDOW,
        })
    }

    fn filter(&self, raw: &str) -> Result<String, (String, String)> {
        match apply_guardrails_quiet(self.guards, GuardStage::Output, raw) {
            GuardResult::Unchanged => Ok(raw.to_string()),
            GuardResult::Redacted(t, _) => Ok(t),
            GuardResult::Blocked(name, reason) => Err((name, reason)),
        }
    }

    /// Adds a delta; returns the text that may be shown now.
    pub(crate) fn push(&mut self, delta: &str) -> Result<Option<String>, (String, String)> {
        self.raw.push_str(delta);
        let text = self.filter(&self.raw)?;
        let mut safe = text.len().saturating_sub(Self::HOLD);
        let word =
            text.rfind(char::is_whitespace).map_or(0, |i| i + text[i..].chars().next().map_or(1, char::len_utf8));
        if text.len() - word <= Self::MAX_WORD {
            safe = safe.min(word);
        }
        while safe > self.shown && !text.is_char_boundary(safe) {
            safe -= 1;
        }
        let out = if safe <= self.shown {
            None
        } else {
            let start = if text.is_char_boundary(self.shown) { self.shown } else { safe };
            self.shown = safe;
            Some(text[start..safe].to_string())
        };
        if self.raw.len() >= self.commit_at {
            self.commit(&text);
        }
        Ok(out)
    }

    /// Drops the raw text up to a cut well behind what is shown, when that is safe (see above).
    fn commit(&mut self, text: &str) {
        self.commit_at = self.raw.len() + Self::HOLD;
        let Some(mut limit) = self.raw.len().checked_sub(text.len().saturating_sub(self.shown) + Self::HOLD) else {
            return;
        };
        while !self.raw.is_char_boundary(limit) {
            limit -= 1;
        }
        let cut = self.raw[..limit].rfind(char::is_whitespace).filter(|c| limit - c < Self::HOLD).unwrap_or(limit);
        if cut == 0 {
            return;
        }
        let (Ok(head), Ok(tail)) = (self.filter(&self.raw[..cut]), self.filter(&self.raw[cut..])) else { return };
        if head.len() > self.shown
            || head.len() + tail.len() != text.len()
            || !text.starts_with(&head)
            || !text.ends_with(&tail)
        {
            return;
        }
        self.raw.drain(..cut);
        self.shown -= head.len();
        self.commit_at = self.raw.len() + Self::WINDOW;
    }

    /// The rest, at the end of the stream.
    pub(crate) fn finish(&mut self) -> Result<String, (String, String)> {
        let text = self.filter(&self.raw)?;
        let start = self.shown.min(text.len());
        let start = if text.is_char_boundary(start) { start } else { text.len() };
        self.shown = text.len();
        Ok(text[start..].to_string())
    }
}

fn guardrail(reason: String) -> RunError {
    RunError::interrupted(
        RunErrorKind::Guardrail,
        format!("guardrail: {reason}"),
        format!("stopped by a hook: {reason}"),
    )
}

/// Cuts `content` to at most `limit` bytes on a character boundary, with a note saying so.
fn cap_output(content: String, limit: usize) -> (String, bool) {
    if content.len() <= limit {
        return (content, false);
    }
    let mut cut = limit;
    while cut > 0 && !content.is_char_boundary(cut) {
        cut -= 1;
    }
    let total = content.len();
    let mut out = String::with_capacity(cut + 64);
    out.push_str(&content[..cut]);
    out.push_str(&format!("\n[output truncated: {cut} of {total} bytes shown]"));
    (out, true)
}

#[cfg(test)]
mod tests {
    use super::cap_output;

    #[test]
    fn caps_on_char_boundaries() {
        let (s, t) = cap_output("héllo".to_string(), 2);
        assert!(t);
        assert!(s.starts_with('h') && !s.starts_with("hé"));
        assert!(s.contains("1 of 6 bytes"));
        assert_eq!(cap_output("abc".into(), 3), ("abc".to_string(), false));
    }
}
