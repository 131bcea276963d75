//! One turn's tool calls: batching (concurrency-safe calls together, the rest alone, results in
//! call order), execution under the timeout with panics caught, output capping and the tool-result
//! guardrails, the journal's intent and result entries, and a resumed run's recorded results.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use serde_json::Value;
use tracing::Instrument;

use super::approval::Prepared;
use super::calls::ToolCallResult;
use super::context::{RunCx, blocked};
use super::env::GuardResult;
use super::replay::ToolReplay;
use crate::error::{RunError, RunErrorKind, ToolError, ToolErrorKind};
use crate::event::{EventKind, ToolCallEvent, ToolResultEvent};
use crate::governance::{AuditAction, GuardAction, GuardStage};
use crate::message::{Message, ToolCall};
use crate::store::JournalEntry;
use crate::telemetry;
use crate::tool::{ArtifactSink, ToolContext};

struct ToolOutcome {
    content: String,
    is_error: bool,
    error_kind: Option<ToolErrorKind>,
    truncated: bool,
    /// A guardrail blocked this result: (guardrail, reason).
    blocked: Option<(String, String)>,
    /// A background tool answered "pending" with this handle: the run suspends.
    pending: Option<String>,
}

impl ToolOutcome {
    fn waiting(handle: String) -> Self {
        ToolOutcome {
            content: String::new(),
            is_error: false,
            error_kind: None,
            truncated: false,
            blocked: None,
            pending: Some(handle),
        }
    }
}

impl RunCx {
    /// Runs one turn's tool calls and appends their results, in call order, as tool messages.
    ///
    /// Consecutive concurrency-safe calls run at the same time; every other call runs alone, in
    /// order. Each call is checked (schema, permissions, approval, hooks) just before it runs; the
    /// calls of a concurrent batch are checked in call order before the batch starts. Unknown tools, malformed or schema-violating arguments, denials, errors, panics and
    /// timeouts become error results for the model; the run goes on.
    pub async fn run_tools(&mut self, calls: &[ToolCall]) -> Result<(), RunError> {
        let outcomes = self.execute_calls(calls).await?;
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

    /// Runs tool calls the architecture made itself (a plan's steps, say) exactly as
    /// [`RunCx::run_tools`] runs a model's, and returns their results in call order instead of
    /// adding them to the conversation. Call ids must be unique within the run and the same on
    /// every execution of it: a resumed run finds a call's journaled result by its id.
    pub async fn call_tools(&mut self, calls: &[ToolCall]) -> Result<Vec<ToolCallResult>, RunError> {
        let outcomes = self.execute_calls(calls).await?;
        let blocked_by = outcomes.iter().flatten().find_map(|o| o.blocked.clone());
        if let Some((name, reason)) = blocked_by {
            return Err(blocked(&name, reason));
        }
        self.check_cancelled()?;
        Ok(calls
            .iter()
            .zip(outcomes)
            .filter_map(|(call, o)| {
                let o = o?;
                Some(ToolCallResult {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    content: o.content,
                    is_error: o.is_error,
                })
            })
            .collect())
    }

    /// Runs one batch of calls: each call's outcome, in call order.
    async fn execute_calls(&mut self, calls: &[ToolCall]) -> Result<Vec<Option<ToolOutcome>>, RunError> {
        let turn = self.turn;
        self.check_budget().await?;
        for call in calls {
            self.log.emit(EventKind::ToolCall(ToolCallEvent { turn, call: call.clone() }));
        }
        self.log.record_tool_calls(calls.len() as u32);
        self.log.roll_up_tool_calls(calls.len() as u32);
        let tools = self.tools.clone();
        let safe =
            |call: &ToolCall| tools.index_of(&call.name).is_some_and(|i| tools.entry(i).spec.flags.concurrency_safe);
        let mut outcomes: Vec<Option<ToolOutcome>> = (0..calls.len()).map(|_| None).collect();
        // A resumed run: calls whose results are journaled are not run again; a call that was
        // started and has no result runs again only if its tool says that is safe.
        let mut rerun: Vec<Option<Prepared>> = (0..calls.len()).map(|_| None).collect();
        for (k, call) in calls.iter().enumerate() {
            match self.recorder.tool(&call.id) {
                ToolReplay::None => {}
                ToolReplay::Done(entry) => outcomes[k] = Some(self.replayed_call(turn, call, entry).await),
                // Still waiting for its background result: the run suspends again.
                ToolReplay::Pending(handle) => return Err(pending_error(call, &handle)),
                ToolReplay::Started(args) => {
                    let index = tools.index_of(&call.name);
                    let flags = index.map(|i| tools.entry(i).spec.flags).unwrap_or_default();
                    match index {
                        Some(index) if flags.safe_to_rerun() => {
                            rerun[k] = Some(Prepared::Ready { index, args: Box::new(args) });
                        }
                        _ => return Err(ambiguous(call)),
                    }
                }
            }
        }
        let mut i = 0;
        while i < calls.len() {
            // A background call answered "pending": the run suspends after the calls so far.
            if let Some((call, handle)) =
                calls.iter().zip(&outcomes).find_map(|(c, o)| Some((c, o.as_ref()?.pending.as_ref()?)))
            {
                return Err(pending_error(call, handle));
            }
            if outcomes[i].is_some() {
                i += 1;
            } else if let Some(prepared) = rerun[i].take() {
                outcomes[i] = Some(self.execute(turn, &calls[i], prepared).await);
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
                // Each call's arguments move into its tool (they are not copied again).
                let batch = calls[i..j].iter().zip(prepared).map(|(call, p)| self.execute(turn, call, p));
                let results = futures::future::join_all(batch).await;
                for (k, outcome) in (i..j).zip(results) {
                    outcomes[k] = Some(outcome);
                }
                i = j;
            } else {
                let prepared = self.prepare(turn, &calls[i]).await?;
                outcomes[i] = Some(self.execute(turn, &calls[i], prepared).await);
                i += 1;
            }
        }
        if let Some((call, handle)) =
            calls.iter().zip(&outcomes).find_map(|(c, o)| Some((c, o.as_ref()?.pending.as_ref()?)))
        {
            return Err(pending_error(call, handle));
        }
        Ok(outcomes)
    }

    /// Runs one prepared call (or reports its preparation failure), emits `tool.result`.
    async fn execute(&self, turn: u32, call: &ToolCall, prepared: Prepared) -> ToolOutcome {
        let started = Instant::now();
        let result = match prepared {
            Prepared::Failed(err) => Err(ToolError::with_kind(err.kind(), err.message())),
            Prepared::Ready { index, args } => {
                let span = telemetry::tool_span(&call.name, &call.id);
                let result = self.invoke(turn, call, index, args).instrument(span.clone()).await;
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
        let limit = self.env.limits.tool_output_limit;
        let result = match result {
            Ok(output) => match output.pending {
                Some(handle) if self.recorder.is_journaled() => {
                    let entry = || JournalEntry::ToolPending { turn, call_id: call.id.clone(), handle: handle.clone() };
                    return match Box::pin(self.recorder.record(entry)).await {
                        Ok(()) => ToolOutcome::waiting(handle),
                        Err(e) => {
                            let message = format!("Error: the pending call could not be recorded: {}", e.message);
                            ToolOutcome {
                                content: message,
                                is_error: true,
                                error_kind: Some(ToolErrorKind::Failed),
                                truncated: false,
                                blocked: None,
                                pending: None,
                            }
                        }
                    };
                }
                Some(handle) => Err(ToolError::new(format!(
                    "`{}` started a background job ({handle}) whose result comes later, and waiting for it needs a \
                     journal (this agent has none); do not call it again",
                    call.name
                ))),
                None => Ok(output.content),
            },
            Err(e) => Err(e),
        };
        let mut outcome = match result {
            Ok(content) => {
                let (content, truncated) = cap_output(content, limit);
                ToolOutcome { content, is_error: false, error_kind: None, truncated, blocked: None, pending: None }
            }
            Err(err) => {
                let (content, truncated) = cap_output(format!("Error: {}", err.message()), limit);
                ToolOutcome {
                    content,
                    is_error: true,
                    error_kind: Some(err.kind()),
                    truncated,
                    blocked: None,
                    pending: None,
                }
            }
        };
        let guardrails = &self.env.policies.guardrails;
        if !guardrails.is_empty() {
            match guardrails.apply(GuardStage::ToolResult, &outcome.content) {
                GuardResult::Unchanged => {}
                GuardResult::Redacted(text, names) => {
                    for name in names {
                        Box::pin(self.guard_event(GuardStage::ToolResult, &name, GuardAction::Redact, None)).await;
                    }
                    outcome.content = text;
                }
                GuardResult::Blocked(name, reason) => {
                    let why = Some(reason.clone());
                    Box::pin(self.guard_event(GuardStage::ToolResult, &name, GuardAction::Block, why)).await;
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
        // The writes are boxed and made only when there is a journal (or an audit log, or hooks):
        // inline, every call waiting on its tool would carry their room.
        if self.recorder.is_journaled()
            && let Err(e) = Box::pin(self.recorder.record(|| JournalEntry::ToolResult {
                turn,
                call_id: call.id.clone(),
                output: outcome.content.clone(),
                is_error: outcome.is_error,
                error_kind: outcome.error_kind,
                truncated: outcome.truncated,
                blocked: outcome.blocked.clone(),
                duration_ms,
                artifacts: self.log.artifacts_of(&call.id),
            }))
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
        if effects {
            let policies = &self.env.policies;
            if policies.audit.is_some() {
                Box::pin(policies.audit_or_warn(&self.scope, AuditAction::ToolResult, || {
                    serde_json::json!({
                        "tool": call.name, "call_id": call.id, "ok": !event.is_error,
                        "error_kind": event.error_kind, "turn": event.turn,
                    })
                }))
                .await;
            }
            let hooks = &self.live.hooks;
            for hook in hooks.iter() {
                if let Err(e) = Box::pin(hooks.call(hook.after_tool(&self.scope, call, &event))).await {
                    tracing::warn!(run_id = %self.scope.run_id, error = %e, "an after_tool hook failed");
                }
            }
        }
        self.log.emit(EventKind::ToolResult(event));
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
                pending: None,
            };
        };
        self.log.restore_artifacts(&artifacts);
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
        self.conclude_call(call, event, self.live()).await;
        ToolOutcome { content: output, is_error, error_kind, truncated, blocked, pending: None }
    }

    async fn invoke(
        &self,
        turn: u32,
        call: &ToolCall,
        index: usize,
        args: Box<Value>,
    ) -> Result<crate::tool::ToolOutput, ToolError> {
        let entry = self.tools.entry(index);
        if self.recorder.is_journaled()
            && let Err(e) = Box::pin(self.recorder.record(|| JournalEntry::ToolIntent {
                turn,
                call: call.clone(),
                arguments: (*args).clone(),
            }))
            .await
        {
            return Err(ToolError::new(format!("not run: {e}")));
        }
        if self.env.policies.audit.is_some() {
            let payload = serde_json::json!({"tool": call.name, "call_id": call.id, "args": args, "turn": turn,
                                             "destructive": entry.spec.flags.destructive});
            if let Err(e) = Box::pin(self.audit(AuditAction::ToolCall, payload)).await {
                return Err(ToolError::new(format!("not run: {e}")));
            }
        }
        let token = self.log.cancel.child_token();
        let sink: Arc<dyn ArtifactSink> = self.log.clone();
        let ctx = ToolContext::for_call(&self.scope, &call.id, token.clone(), Some(sink))
            .with_run_handle(self.link().clone());
        let timeout = entry.timeout.unwrap_or(self.env.limits.tool_timeout);
        let future = AssertUnwindSafe(entry.tool.call(ctx, *args)).catch_unwind();
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
            Ok(Ok(result)) => result,
        };
        if self.log.cancel.is_cancelled() {
            return Err(ToolError::with_kind(ToolErrorKind::Cancelled, "the run was cancelled"));
        }
        outcome
    }
}

/// The run suspends: a background call's result comes later.
fn pending_error(call: &ToolCall, handle: &str) -> RunError {
    RunError::interrupted(
        RunErrorKind::ToolPending,
        "tool_pending",
        format!(
            "waiting for the background result of `{}` (call {}, job {handle}); send it with Agent::complete_tool",
            call.name, call.id
        ),
    )
}

/// A resumed run's call that started and has no recorded result, of a tool that is not safe to
/// run again.
fn ambiguous(call: &ToolCall) -> RunError {
    RunError::new(
        RunErrorKind::Ambiguous,
        format!(
            "tool call `{}` ({}) started before the run's process stopped and its result was not recorded; `{}` \
             is not marked read_only, idempotent or rerun_on_resume, so it was not run again: check its effect and start \
             a new run",
            call.name, call.id, call.name
        ),
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
