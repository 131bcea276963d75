//! A run's last step: the terminal event, the sealed result and transcript, and what persists them
//! (the session store and history, memory, the audit log, the budget, the `after_run` hooks, the
//! journal's final commit).

use std::sync::Arc;

use super::context::RunCx;
use super::log::RunEnd;
use crate::error::{RunError, RunErrorKind, ToolErrorKind};
use crate::event::{EventKind, RunCompleted, RunEnded, ToolResultEvent};
use crate::governance::AuditAction;
use crate::message::Message;
use crate::run::{RunResult, RunState, Transcript};
use crate::store::{JournalEntry, SessionSummary};

/// How the architecture's work came out: the answer (and its structured value), or the error.
pub(crate) type Outcome = Result<(String, Option<serde_json::Value>), RunError>;

impl RunCx {
    /// Ends the run: emits its terminal event, seals its result and transcript, and persists them.
    /// The caller publishes the result.
    pub(crate) async fn finish(mut self, outcome: Outcome) -> Arc<RunResult> {
        let outcome = match outcome {
            Ok(_) if self.unreplayed() > 0 => Err(RunError::new(
                RunErrorKind::Internal,
                format!(
                    "the resumed run finished without replaying {} journal entries: its execution diverged from \
                     the journal (a nondeterministic architecture or hook?)",
                    self.unreplayed()
                ),
            )),
            other => other,
        };
        self.log.stop_suppressing();
        let messages = std::mem::take(&mut self.messages);
        let end = self.end_with(outcome, messages);
        let (result, transcript) = self.log.finish(end);
        // A run another process took over (its lease expired while this one stalled) saves
        // nothing: the new holder owns the transcript, the history and the journal's end.
        if let Err(e @ (crate::Error::LeaseLost { .. } | crate::Error::RunNotFound(_))) =
            self.recorder.still_held().await
        {
            let message = format!("this process lost the run to another one and saved nothing: {e}");
            tracing::warn!(run_id = %result.run_id, "{message}");
            self.unlock_session().await;
            return self.log.amend_failed(&result, RunError::new(RunErrorKind::Store, message));
        }
        // A run that ended before its journal's `begin` opens its session now.
        let mut opened = Vec::new();
        if let Some(session) = self.deferred_open.take()
            && let Err(e) = self.env.stores.sessions.open_session(&session).await
        {
            opened.push(format!("opening the session: {e}"));
        }
        let history = self.history_of(&result, &transcript);
        let together = self.recorder.shares_database(self.env.stores.sessions.as_ref())
            && self.session_summary(history.map_or(0, <[Message]>::len)).is_none();
        let mut problems = if together {
            self.commit_together(&result, &transcript, history).await
        } else {
            self.commit_apart(&result, &transcript, history).await
        };
        problems.splice(0..0, opened);
        self.unlock_session().await;
        self.after_run(&result).await;
        if problems.is_empty() {
            return result;
        }
        let mut message = format!("the run ended {}, but saving it failed: {}", result.state, problems.join("; "));
        if self.recorder.is_journaled() {
            message.push_str(&format!(
                "; its journal keeps it unfinished: resume it (Agent::resume, `loom runs resume {}`) to save it",
                result.run_id
            ));
        }
        tracing::error!(run_id = %result.run_id, "{message}");
        self.log.amend_failed(&result, RunError::new(RunErrorKind::Store, message))
    }

    /// Emits the terminal event and describes the end.
    fn end_with(&self, outcome: Outcome, messages: Vec<Message>) -> RunEnd {
        let progress = self.log.progress();
        let error = match outcome {
            Ok((output, parsed)) => {
                self.log.emit(EventKind::RunCompleted(RunCompleted {
                    output: output.clone(),
                    parsed: parsed.clone(),
                    turns: progress.turns,
                    usage: progress.usage,
                }));
                return RunEnd { state: RunState::Completed, output, parsed, error: None, messages };
            }
            Err(error) => error,
        };
        let state = match error.kind {
            RunErrorKind::Cancelled => RunState::Cancelled,
            RunErrorKind::MaxTurns
            | RunErrorKind::Timeout
            | RunErrorKind::Budget
            | RunErrorKind::Guardrail
            | RunErrorKind::RateLimit
            | RunErrorKind::Criteria => RunState::Interrupted,
            RunErrorKind::ApprovalPending | RunErrorKind::ToolPending => RunState::Suspended,
            _ => RunState::Failed,
        };
        // Every tool.call gets its tool.result: calls still in flight when the run stopped are
        // reported as cancelled. A suspended run's calls get theirs when it continues.
        let pending = if state == RunState::Suspended { Vec::new() } else { self.log.pending_tool_calls() };
        for (turn, call) in pending {
            self.log.emit(EventKind::ToolResult(ToolResultEvent {
                turn,
                call_id: call.id,
                name: call.name,
                output: format!("Error: the run stopped before this call finished ({})", error.message),
                is_error: true,
                error_kind: Some(ToolErrorKind::Cancelled),
                truncated: false,
                duration_ms: 0,
            }));
        }
        let ended = RunEnded { error: error.clone(), turns: progress.turns, usage: progress.usage };
        self.log.emit(match state {
            RunState::Cancelled => EventKind::RunCancelled(ended),
            RunState::Interrupted => EventKind::RunInterrupted(ended),
            RunState::Suspended => EventKind::RunSuspended(ended),
            _ => EventKind::RunFailed(ended),
        });
        let output = error.raw_output.clone().unwrap_or_default();
        RunEnd { state, output, parsed: None, error: Some(error), messages }
    }

    /// The messages the run adds to its session's history: completed and interrupted runs' own
    /// messages, up to the last consistent point, and only when the model answered at least once.
    fn history_of<'t>(&self, result: &RunResult, transcript: &'t Transcript) -> Option<&'t [Message]> {
        // A run stopped by a guardrail adds nothing: replaying the blocked content would send it to the
        // model on the next run (or trip the guardrail again on every later run of the session).
        let guardrail = result.error.as_ref().is_some_and(|e| e.kind == RunErrorKind::Guardrail);
        let (Some(base), RunState::Completed | RunState::Interrupted, false) =
            (self.history_base, result.state, guardrail)
        else {
            return None;
        };
        let own = transcript.messages.get(base..).unwrap_or_default();
        let keep = consistent_prefix(own);
        // An interrupted run that got no answer at all (stopped before its first model call)
        // adds nothing, so the history never holds a question without a reply.
        let answered = own[..keep].iter().any(|m| matches!(m, Message::Assistant { .. }));
        (keep > 0 && answered).then(|| &own[..keep])
    }

    /// Persists a journaled run whose journal shares the session store's database: memory and
    /// the audit log are told, then one transaction holds the held-back journal entry, the last
    /// events, the transcript, the history extension, the run's state and the release of the
    /// session's run lock. Returns what failed to be written.
    async fn commit_together(
        &mut self,
        result: &Arc<RunResult>,
        transcript: &Arc<Transcript>,
        history: Option<&[Message]>,
    ) -> Vec<String> {
        self.tell_memory(result, transcript).await;
        if let Some(problem) = self.audit_end(result, transcript).await {
            // The journal keeps the run unfinished, so a resume can write the audit entry.
            let mut problems = vec![problem];
            problems.extend(self.save_transcript(result, transcript, history).await);
            if let Err(e) = self.recorder.release().await {
                problems.push(format!("the journal's final commit: {e}"));
            }
            return problems;
        }
        let unlock = self.session_lock.as_deref().map(|holder| (self.scope.session_key(), holder));
        match self.recorder.end_with(result.state, transcript, history, unlock).await {
            Ok(true) => {
                self.session_lock = None;
                Vec::new()
            }
            Ok(false) => {
                let mut problems = self.save_transcript(result, transcript, history).await;
                let committed = if problems.is_empty() {
                    self.recorder.end(result.state).await
                } else {
                    self.recorder.release().await
                };
                if let Err(e) = committed {
                    problems.push(format!("the journal's final commit: {e}"));
                }
                problems
            }
            Err(e) => vec![format!("saving the transcript, the session history and the journal's final commit: {e}")],
        }
    }

    /// Persists a run part by part: the transcript and history, memory, the audit log, then the
    /// journal's final commit (or, when something failed, the lease's release with the run kept
    /// unfinished, so a resume can finish saving it). Returns what failed to be written.
    async fn commit_apart(
        &self,
        result: &Arc<RunResult>,
        transcript: &Arc<Transcript>,
        history: Option<&[Message]>,
    ) -> Vec<String> {
        let mut problems = self.save_transcript(result, transcript, history).await;
        self.tell_memory(result, transcript).await;
        problems.extend(self.audit_end(result, transcript).await);
        // The journal says "finished" only once the run is saved; otherwise it keeps the run
        // unfinished (its lease released), so a resume can finish saving it.
        let committed =
            if problems.is_empty() { self.recorder.end(result.state).await } else { self.recorder.release().await };
        if let Err(e) = committed {
            problems.push(format!("the journal's final commit: {e}"));
        }
        problems
    }

    /// Saves the transcript and extends the session's history (one step where the store can), then
    /// the session's summary when the run left one. Returns what failed.
    async fn save_transcript(
        &self,
        result: &Arc<RunResult>,
        transcript: &Arc<Transcript>,
        history: Option<&[Message]>,
    ) -> Vec<String> {
        let stores = &self.env.stores;
        let mut problems = Vec::new();
        match stores.sessions.save_finished_run(transcript.clone(), history).await {
            Err(e) => problems.push(format!("saving the transcript and session history: {e}")),
            // A run that summarized its context leaves the summary for the session's next run.
            Ok(()) => {
                if let Some((text, covers)) = self.session_summary(history.map_or(0, <[Message]>::len)) {
                    let summary =
                        SessionSummary { text, covers, run_id: result.run_id.clone(), created_at: chrono::Utc::now() };
                    if let Err(e) = stores.sessions.save_summary(self.scope.session_key(), &summary).await {
                        problems.push(format!("saving the session's summary: {e}"));
                    }
                }
            }
        }
        problems
    }

    /// Hands the finished run to the memory slot, and journals that it did.
    async fn tell_memory(&self, result: &Arc<RunResult>, transcript: &Arc<Transcript>) {
        // The memory write is journaled after it happens (at least once: a crash in between repeats
        // it on resume; `remember` gets the run id to tell). A resumed run whose journal has it skips it.
        if let Some(memory) = &self.env.stores.memory
            && result.state != RunState::Suspended
            && !self.log.memory_written()
        {
            match memory.remember(&self.scope, transcript).await {
                // No events ride with this entry: a resumed run replays up to the last model or
                // tool boundary and emits what followed it again.
                Ok(()) => {
                    if let Err(e) = self.recorder.record_alone(&JournalEntry::MemoryWritten).await {
                        tracing::warn!(run_id = %result.run_id, error = %e, "journaling the memory write failed");
                    }
                }
                Err(e) => tracing::warn!(run_id = %result.run_id, error = %e, "memory write failed"),
            }
        }
    }

    /// Writes the run's end to the audit log (and its start first, for a run that never wrote
    /// it). Returns the failure, if any.
    async fn audit_end(&self, result: &Arc<RunResult>, transcript: &Arc<Transcript>) -> Option<String> {
        let policies = &self.env.policies;
        let scope = &self.scope;
        policies.audit.as_ref()?;
        // Every run has one start and one end entry, in order: a run that never got to write
        // its start (cancelled while queued, refused, failed while seeding) writes it now.
        let started =
            if self.audited_start { Ok(()) } else { self.env.audit_unexecuted_start(scope, &transcript.input).await };
        let payload = serde_json::json!({
            "state": result.state, "turns": result.turns, "reason": result.interruption_reason(),
            "error": result.error.as_ref().map(|e| e.message.clone()),
            "input_tokens": result.usage.input_tokens, "output_tokens": result.usage.output_tokens,
            "cost_usd": result.usage.cost_usd, "duration_ms": result.duration_ms,
        });
        let ended = match started {
            Ok(()) => policies.audit(scope, AuditAction::RunFinished, payload).await,
            Err(e) => Err(e),
        };
        ended.err().map(|e| format!("the audit log: {e}"))
    }

    /// Releases the session's run lock, unless the final commit did.
    async fn unlock_session(&mut self) {
        if let Some(holder) = self.session_lock.take()
            && let Err(e) = self.env.stores.sessions.unlock_session(self.scope.session_key(), &holder).await
        {
            tracing::warn!(run_id = %self.scope.run_id, error = %e, "releasing the session's run lock failed (it expires)");
        }
    }

    /// The budget and the `after_run` hooks learn that the run ended.
    async fn after_run(&self, result: &Arc<RunResult>) {
        if let Some(budget) = &self.env.policies.budget
            && self.log.was_started()
        {
            budget.run_finished(&self.scope);
        }
        let hooks = &self.live.hooks;
        for hook in hooks.iter() {
            if let Err(e) = hooks.call(hook.after_run(&self.scope, result)).await {
                tracing::warn!(run_id = %self.scope.run_id, error = %e, "an after_run hook failed");
            }
        }
    }
}

/// The longest prefix in which every assistant tool call has its result, so the history never
/// holds a dangling call that providers would reject.
fn consistent_prefix(messages: &[Message]) -> usize {
    let mut pending: Vec<&str> = Vec::new();
    let mut keep = 0;
    for (i, m) in messages.iter().enumerate() {
        match m {
            Message::Assistant { tool_calls, .. } if !tool_calls.is_empty() => {
                pending = tool_calls.iter().map(|c| c.id.as_str()).collect();
            }
            Message::Tool { call_id, .. } => pending.retain(|id| id != call_id),
            _ => {}
        }
        if pending.is_empty() {
            keep = i + 1;
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::consistent_prefix;
    use crate::message::{Message, ToolCall};

    #[test]
    fn drops_a_dangling_tool_call() {
        let call = |id: &str| ToolCall { id: id.into(), name: "t".into(), arguments: "{}".into() };
        let msgs = vec![
            Message::user("q"),
            Message::Assistant { content: String::new(), thinking: vec![], tool_calls: vec![call("a")] },
            Message::tool("a", "t", "r", false),
            Message::Assistant { content: String::new(), thinking: vec![], tool_calls: vec![call("b"), call("c")] },
            Message::tool("b", "t", "r", false),
        ];
        assert_eq!(consistent_prefix(&msgs), 3);
        assert_eq!(consistent_prefix(&msgs[..3]), 3);
    }
}
