use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::{FutureExt, StreamExt};
use serde_json::Value;

use crate::agent::{AgentInner, RunShared};
use crate::error::{ModelError, RunError, RunErrorKind, ToolError, ToolErrorKind};
use crate::event::{
    DeltaKind, EventKind, ModelDelta, ModelRequestEvent, ModelResponseEvent, ToolCallEvent, ToolResultEvent,
};
use crate::governance::{
    Approval, ApprovalRequest, AuditRecord, BudgetVerdict, Decision, HookAction, Scope, ToolHookAction,
};
use crate::message::{Message, ToolCall};
use crate::model::{ModelChunk, ModelRequest, ModelResponse, ResponseAssembler};
use crate::output::OutputSchema;
use crate::store::JournalEntry;
use crate::tool::{ToolContext, ToolSpec};

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
}

impl RunCx {
    pub(crate) fn new(
        agent: Arc<AgentInner>,
        shared: Arc<RunShared>,
        messages: Vec<Message>,
        native_schema: Option<OutputSchema>,
        max_turns: u32,
    ) -> Self {
        let scope = shared.scope();
        RunCx { messages, agent, shared, scope, native_schema, turn: 0, max_turns }
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

    fn check_budget(&self) -> Result<(), RunError> {
        let Some(budget) = &self.agent.budget else { return Ok(()) };
        let p = self.shared.progress();
        match budget.check(&self.scope, &p.usage, p.turns, p.tool_calls) {
            BudgetVerdict::Ok => Ok(()),
            BudgetVerdict::Exceeded(limit) => Err(RunError::interrupted(
                RunErrorKind::Budget,
                format!("budget: {limit}"),
                format!("the budget limit `{limit}` was reached"),
            )),
        }
    }

    async fn audit(&self, action: &'static str, payload: Value) -> Result<(), RunError> {
        let Some(audit) = &self.agent.audit else { return Ok(()) };
        audit
            .append(AuditRecord { scope: self.scope.clone(), action, payload })
            .await
            .map_err(|e| RunError::new(RunErrorKind::Store, format!("audit log: {e}")))
    }

    async fn journal(&self, entry: JournalEntry) -> Result<(), RunError> {
        let Some(journal) = &self.agent.journal else { return Ok(()) };
        journal
            .record(&self.scope, entry)
            .await
            .map_err(|e| RunError::new(RunErrorKind::Store, format!("journal: {e}")))
    }

    /// One model call with the conversation so far: streams deltas as events, appends the answer
    /// as an assistant message, and returns it. Counts as one turn.
    pub async fn model_turn(&mut self) -> Result<ModelResponse, RunError> {
        self.check_cancelled()?;
        self.check_budget()?;
        let turn = self.turn + 1;
        for hook in self.agent.hooks.iter() {
            if let HookAction::Stop(reason) = hook.before_model(&self.scope, turn, &self.messages).await {
                return Err(guardrail(reason));
            }
        }
        self.turn = turn;
        self.shared.set_turns(turn);
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
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| RunError::from_model(&e))?;
            match &chunk {
                ModelChunk::Text(text) if !text.is_empty() => {
                    self.shared.emit(EventKind::ModelDelta(ModelDelta {
                        turn,
                        kind: DeltaKind::Text,
                        text: text.clone(),
                    }));
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
        self.shared.record_turn(turn, &response.usage);
        if let Some(budget) = &agent.budget {
            budget.record(&self.scope, &response.usage);
        }
        self.journal(JournalEntry::ModelResult { turn, response: response.clone() }).await?;
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
        for hook in agent.hooks.iter() {
            hook.after_model(&self.scope, turn, &response).await;
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
        self.check_budget()?;
        for call in calls {
            self.shared.emit(EventKind::ToolCall(ToolCallEvent { turn, call: call.clone() }));
        }
        self.shared.record_tool_calls(calls.len() as u32);
        let tools = &self.agent.tools;
        let safe =
            |call: &ToolCall| tools.index_of(&call.name).is_some_and(|i| tools.entry(i).spec.flags.concurrency_safe);
        let mut outcomes: Vec<Option<ToolOutcome>> = (0..calls.len()).map(|_| None).collect();
        let mut i = 0;
        while i < calls.len() {
            if safe(&calls[i]) {
                let mut j = i + 1;
                while j < calls.len() && safe(&calls[j]) {
                    j += 1;
                }
                // Checks and approvals in call order, then the batch runs together.
                let mut prepared = Vec::with_capacity(j - i);
                for call in &calls[i..j] {
                    prepared.push(self.prepare(call).await?);
                }
                let batch = calls[i..j].iter().zip(&prepared).map(|(call, p)| self.execute(turn, call, p));
                let results = futures::future::join_all(batch).await;
                for (k, outcome) in (i..j).zip(results) {
                    outcomes[k] = Some(outcome);
                }
                i = j;
            } else {
                let prepared = self.prepare(&calls[i]).await?;
                outcomes[i] = Some(self.execute(turn, &calls[i], &prepared).await);
                i += 1;
            }
        }
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
        self.check_cancelled()
    }

    /// Resolves the tool, parses and checks the arguments, and asks permissions and hooks.
    async fn prepare(&self, call: &ToolCall) -> Result<Prepared, RunError> {
        let agent = &self.agent;
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
        match agent.permissions.check(&self.scope, &entry.spec, &args).await {
            Decision::Allow => {}
            Decision::Deny(reason) => {
                return Ok(Prepared::Failed(ToolError::with_kind(
                    ToolErrorKind::Denied,
                    format!("permission denied: {reason}"),
                )));
            }
            Decision::Ask(reason) => {
                let Some(handler) = &agent.approval else {
                    return Ok(Prepared::Failed(ToolError::with_kind(
                        ToolErrorKind::Denied,
                        format!(
                            "permission denied: {reason} and needs approval, and no approval handler is configured"
                        ),
                    )));
                };
                let request = ApprovalRequest {
                    scope: self.scope.clone(),
                    tool: entry.spec.clone(),
                    call: call.clone(),
                    args: args.clone(),
                    reason,
                };
                match handler.approve(request).await {
                    Approval::Allow => {}
                    Approval::Deny(reason) => {
                        return Ok(Prepared::Failed(ToolError::with_kind(
                            ToolErrorKind::Denied,
                            format!("denied by approver: {reason}"),
                        )));
                    }
                    Approval::Edit(edited) => {
                        if let Err(problems) = entry.validate(&edited) {
                            return Ok(Prepared::Failed(ToolError::invalid_arguments(format!(
                                "the approver's edited arguments do not match the schema of `{}`: {problems}",
                                call.name
                            ))));
                        }
                        args = edited;
                    }
                }
            }
        }
        for hook in agent.hooks.iter() {
            match hook.before_tool(&self.scope, call, &args).await {
                ToolHookAction::Continue => {}
                ToolHookAction::Deny(reason) => {
                    return Ok(Prepared::Failed(ToolError::with_kind(
                        ToolErrorKind::Denied,
                        format!("denied by hook: {reason}"),
                    )));
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
            Prepared::Ready { index, args } => self.invoke(turn, call, *index, args.clone()).await,
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let limit = self.agent.tool_output_limit;
        let outcome = match result {
            Ok(content) => {
                let (content, truncated) = cap_output(content, limit);
                ToolOutcome { content, is_error: false, error_kind: None, truncated }
            }
            Err(err) => {
                let (content, truncated) = cap_output(format!("Error: {}", err.message()), limit);
                ToolOutcome { content, is_error: true, error_kind: Some(err.kind()), truncated }
            }
        };
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
            })
            .await
        {
            tracing::warn!(run_id = %self.scope.run_id, error = %e, "journal write failed");
        }
        if self.agent.audit.is_some() {
            let payload = serde_json::json!({
                "tool": call.name, "call_id": call.id, "ok": !outcome.is_error,
                "error_kind": outcome.error_kind, "turn": turn,
            });
            if let Err(e) = self.audit("tool_result", payload).await {
                tracing::warn!(run_id = %self.scope.run_id, error = %e, "audit write failed");
            }
        }
        for hook in self.agent.hooks.iter() {
            hook.after_tool(&self.scope, call, &event).await;
        }
        self.shared.emit(EventKind::ToolResult(event));
        outcome
    }

    async fn invoke(&self, turn: u32, call: &ToolCall, index: usize, args: Value) -> Result<String, ToolError> {
        let entry = self.agent.tools.entry(index);
        if let Err(e) = self.journal(JournalEntry::ToolIntent { turn, call: call.clone() }).await {
            return Err(ToolError::new(format!("not run: {e}")));
        }
        if self.agent.audit.is_some() {
            let payload = serde_json::json!({"tool": call.name, "call_id": call.id, "args": args, "turn": turn,
                                             "destructive": entry.spec.flags.destructive});
            if let Err(e) = self.audit("tool_call", payload).await {
                return Err(ToolError::new(format!("not run: {e}")));
            }
        }
        let token = self.shared.cancel.child_token();
        let ctx = ToolContext::for_run(&self.shared, &call.id, token.clone());
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
