//! Drives one run from queued to its final state, then persists it.

use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::Instrument;

use super::AgentInner;
use super::input::RunRequest;
use super::run::{RunEnd, RunShared};
use super::session::SessionInner;
use crate::architecture::RunCx;
use crate::architecture::cx::{GuardResult, apply_guardrails_quiet, guard_hook, record_guard_event};
use crate::architecture::replay::Replay;
use crate::error::{RunError, RunErrorKind, ToolErrorKind};
use crate::event::{EventKind, OutputInvalid, RunCompleted, RunEnded, RunStarted, ToolResultEvent};
use crate::governance::{AuditAction, AuditRecord, GuardAction, GuardStage, HookAction};
use crate::message::Message;
use crate::output::OutputSchema;
use crate::run::RunInput;
use crate::run::{RunResult, RunState, Transcript};
use crate::store::{JournalEntry, JournaledRun, RunRecord, SessionRecord};
use crate::telemetry;

/// How a run starts: fresh from a request, or resumed from its journal.
#[allow(clippy::large_enum_variant)] // built once per run and moved into its task
pub(crate) enum Start {
    Fresh(RunRequest),
    Resume(Box<JournaledRun>),
}

/// The whole life of a run: wait for the session's earlier runs, execute, seal, persist, publish.
pub(crate) async fn drive(
    agent: Arc<AgentInner>,
    session: Arc<SessionInner>,
    shared: Arc<RunShared>,
    start: Start,
    previous: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
) {
    let mut previous = previous;
    if let Some(prev) = previous.as_mut() {
        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => {}
            _ = prev => { previous = None; }
        }
    }
    let span = telemetry::run_span(&agent, &shared.scope());
    let (end, history_base, journaled) = if shared.cancel.is_cancelled() {
        let error = RunError::new(RunErrorKind::Cancelled, "the run was cancelled before it started");
        shared.emit(EventKind::RunCancelled(RunEnded { error: error.clone(), turns: 0, usage: Default::default() }));
        (
            RunEnd {
                state: RunState::Cancelled,
                output: String::new(),
                parsed: None,
                error: Some(error),
                messages: Vec::new(),
            },
            None,
            matches!(start, Start::Resume(_)),
        )
    } else {
        match start {
            Start::Fresh(request) => execute(&agent, &session, &shared, &request).instrument(span.clone()).await,
            Start::Resume(stored) => execute_resumed(&agent, &shared, *stored).instrument(span.clone()).await,
        }
    };
    let (result, transcript) = shared.finish(end);
    telemetry::record_run(&span, &result);
    persist(&agent, &shared, &result, &transcript, history_base, journaled).await;
    if journaled && let Some(journal) = &agent.journal {
        // The final commit: the run's last events and its state; the lease is released.
        let (events, end) = shared.unpersisted();
        match journal.end(&shared.run_id, &agent.lease, result.state, &events).await {
            Ok(()) => shared.mark_persisted(end),
            Err(e) => tracing::warn!(run_id = %result.run_id, error = %e, "the journal's final commit failed"),
        }
    }
    shared.publish();
    session.lock().live.remove(&*shared.run_id);
    // A run cancelled while queued still holds its place: the next run starts only after the
    // earlier ones have ended.
    if let Some(prev) = previous {
        let _ = prev.await;
    }
    drop(done);
}

/// Seeds the conversation, runs the architecture under the timeout and cancellation, validates
/// structured output, and reports how the run ended.
async fn execute(
    agent: &Arc<AgentInner>,
    session: &Arc<SessionInner>,
    shared: &Arc<RunShared>,
    request: &RunRequest,
) -> (RunEnd, Option<usize>, bool) {
    let scope = shared.scope();
    let input = shared.input();
    let schema = request.output_schema.clone().or_else(|| agent.output_schema.clone());
    let native = schema.is_some() && agent.model.capabilities().native_structured_output;

    let seeded = seed(agent, session, shared, request, &input, schema.as_ref().filter(|_| !native)).await;
    let (messages, history_base) = match seeded {
        Ok(v) => v,
        Err(error) => {
            begin(agent, shared, request, &input, Vec::new());
            return (end_with(shared, Err(error), Vec::new()), None, false);
        }
    };
    // Input guardrails run before anything records the input: a redacted input is what the
    // run.started event, the audit log, the transcript and the model all see.
    let mut messages = messages;
    let mut input = input;
    let mut input_guard: Vec<(String, Option<String>)> = Vec::new(); // (guardrail, Some(reason) when blocking)
    if !agent.guardrails.is_empty()
        && let Some(Message::User { content }) = messages.last_mut()
    {
        let mut redacted = false;
        for part in content.iter_mut() {
            if let crate::message::ContentPart::Text { text } = part {
                match apply_guardrails_quiet(&agent.guardrails, GuardStage::Input, text) {
                    GuardResult::Unchanged => {}
                    GuardResult::Redacted(new, names) => {
                        *text = new;
                        redacted = true;
                        input_guard.extend(names.into_iter().map(|n| (n, None)));
                    }
                    GuardResult::Blocked(name, reason) => {
                        input_guard.push((name, Some(reason)));
                        break;
                    }
                }
            }
        }
        if redacted {
            let text = messages.last().map(Message::text).unwrap_or_default();
            input = RunInput::Prompt(text);
            shared.set_input(input.clone());
        }
    }
    begin(agent, shared, request, &input, messages.clone());
    if let Some(audit) = &agent.audit {
        let payload = serde_json::json!({
            "input": input.summary().chars().take(500).collect::<String>(),
            "model": agent.model.name(), "max_turns": agent.max_turns, "architecture": agent.architecture.name(),
        });
        if let Err(e) =
            audit.append(AuditRecord { scope: scope.clone(), action: AuditAction::RunStarted, payload }).await
        {
            let error = RunError::new(RunErrorKind::Store, format!("audit log: {e}"));
            return (end_with(shared, Err(error), messages), Some(history_base), false);
        }
    }
    for hook in agent.hooks.iter() {
        let action = match guard_hook(agent, hook.before_run(&scope, &input)).await {
            Ok(action) => action,
            Err(e) if agent.hook_failure_denies => HookAction::Stop(e),
            Err(e) => {
                tracing::warn!(run_id = %scope.run_id, error = %e, "a before_run hook failed");
                HookAction::Continue
            }
        };
        if let HookAction::Stop(reason) = action {
            let error = RunError::interrupted(
                RunErrorKind::Guardrail,
                format!("guardrail: {reason}"),
                format!("stopped by a hook before the first model call: {reason}"),
            );
            return (end_with(shared, Err(error), messages), Some(history_base), false);
        }
    }
    for (name, blocked) in input_guard {
        let action = if blocked.is_some() { GuardAction::Block } else { GuardAction::Redact };
        record_guard_event(agent, shared, &scope, GuardStage::Input, &name, action, blocked.clone()).await;
        if let Some(reason) = blocked {
            let error = RunError::interrupted(
                RunErrorKind::Guardrail,
                format!("guardrail: {name}"),
                format!("blocked by guardrail `{name}`: {reason}"),
            );
            return (end_with(shared, Err(error), messages), Some(history_base), false);
        }
    }

    let max_turns = request.max_turns.unwrap_or(agent.max_turns);
    let timeout = request.timeout.or(agent.timeout);
    let journaled = agent.journal.is_some();
    if let Some(journal) = &agent.journal {
        let record = RunRecord {
            run_id: shared.run_id.to_string(),
            session_id: shared.session_id.to_string(),
            user_id: shared.user_id.as_deref().map(str::to_string),
            input: input.clone(),
            context: request.context.clone(),
            metadata: request.metadata.clone(),
            seeds: messages.clone(),
            history_base,
            max_turns,
            timeout_ms: timeout.map(|t| t.as_millis().min(u64::MAX as u128) as u64),
            output_schema: schema.as_ref().map(|s| (s.name().to_string(), s.schema().clone())),
            started_at: shared.started_at().unwrap_or_else(chrono::Utc::now),
        };
        let (events, end) = shared.unpersisted();
        if let Err(e) = journal.begin(&record, &agent.lease, &events).await {
            let error = RunError::new(RunErrorKind::Store, format!("journal: {e}"));
            return (end_with(shared, Err(error), messages), Some(history_base), false);
        }
        shared.mark_persisted(end);
    }
    let cx = RunCx::new(
        agent.clone(),
        shared.clone(),
        messages,
        schema.clone().filter(|_| native),
        max_turns,
        Replay::default(),
    );
    let end = run_body(agent, shared, cx, schema.as_ref(), timeout, journaled).await;
    (end, Some(history_base), journaled)
}

/// Continues a run from its journal: the seeded conversation comes from the record, and the
/// journaled results stand in for the calls the earlier execution completed.
async fn execute_resumed(
    agent: &Arc<AgentInner>,
    shared: &Arc<RunShared>,
    stored: JournaledRun,
) -> (RunEnd, Option<usize>, bool) {
    let record = stored.record;
    shared.set_running(record.seeds.clone());
    shared.set_started_at(record.started_at);
    if let Some(budget) = &agent.budget {
        budget.run_started(&shared.scope());
    }
    let schema = match record.output_schema.map(|(name, schema)| OutputSchema::new(name, schema)).transpose() {
        Ok(schema) => schema,
        Err(e) => {
            let error =
                RunError::new(RunErrorKind::Store, format!("journal: the stored output schema is invalid: {e}"));
            return (end_with(shared, Err(error), record.seeds), Some(record.history_base), true);
        }
    };
    let native = schema.is_some() && agent.model.capabilities().native_structured_output;
    let timeout = record.timeout_ms.map(std::time::Duration::from_millis);
    let mut entries = stored.entries;
    if entries.iter().any(|e| matches!(e, JournalEntry::MemoryWritten)) {
        shared.set_memory_written();
    }
    entries.retain(|e| !matches!(e, JournalEntry::MemoryWritten));
    let cx = RunCx::new(
        agent.clone(),
        shared.clone(),
        record.seeds,
        schema.clone().filter(|_| native),
        record.max_turns,
        Replay::new(entries),
    );
    let end = run_body(agent, shared, cx, schema.as_ref(), timeout, true).await;
    (end, Some(record.history_base), true)
}

/// Runs the architecture under the timeout, cancellation and (for journaled runs) the lease.
async fn run_body(
    agent: &Arc<AgentInner>,
    shared: &Arc<RunShared>,
    mut cx: RunCx,
    schema: Option<&OutputSchema>,
    timeout: Option<std::time::Duration>,
    journaled: bool,
) -> RunEnd {
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    // The lease is renewed at every journal write, and here between writes (a long tool call).
    let heartbeat = async {
        let Some(journal) = agent.journal.as_ref().filter(|_| journaled) else {
            return std::future::pending::<RunError>().await;
        };
        loop {
            tokio::time::sleep(agent.lease.ttl / 3).await;
            match journal.renew(&shared.run_id, &agent.lease).await {
                Ok(()) => {}
                Err(e @ (crate::Error::LeaseLost { .. } | crate::Error::RunNotFound(_))) => {
                    return RunError::new(RunErrorKind::Store, format!("journal: {e}"));
                }
                Err(e) => tracing::warn!(run_id = %shared.run_id, error = %e, "renewing the run's lease failed"),
            }
        }
    };
    let outcome = {
        let body = body(agent, &mut cx, schema);
        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => Err(RunError::new(RunErrorKind::Cancelled, "the run was cancelled")),
            e = heartbeat => Err(e),
            _ = deadline => Err(RunError::interrupted(
                RunErrorKind::Timeout,
                "timeout",
                format!("the run did not finish within its timeout of {} ms", timeout.map(|t| t.as_millis()).unwrap_or(0)),
            )),
            r = body => r,
        }
    };
    let outcome = match outcome {
        Ok(_) if cx.unreplayed() > 0 => Err(RunError::new(
            RunErrorKind::Internal,
            format!(
                "the resumed run finished without replaying {} journal entries: its execution diverged from the \
                 journal (a nondeterministic architecture or hook?)",
                cx.unreplayed()
            ),
        )),
        other => other,
    };
    if shared.is_suppressing() {
        shared.stop_suppressing();
    }
    end_with(shared, outcome, cx.into_messages())
}

/// Runs the architecture, then validates structured output, sending validation errors back.
async fn body(
    agent: &AgentInner,
    cx: &mut RunCx,
    schema: Option<&OutputSchema>,
) -> Result<(String, Option<serde_json::Value>), RunError> {
    let mut attempt = 0u32;
    loop {
        let text = agent.architecture.run(cx).await?;
        let Some(schema) = schema else { return Ok((text, None)) };
        match schema.parse(&text) {
            Ok(value) => return Ok((text, Some(value))),
            Err(problem) => {
                attempt += 1;
                cx.emit(EventKind::OutputInvalid(OutputInvalid { attempt, error: problem.clone() }));
                if attempt > agent.output_retries {
                    let mut error = RunError::new(
                        RunErrorKind::OutputValidation,
                        format!(
                            "the final answer does not match the output schema `{}` after {attempt} attempt(s): {problem}",
                            schema.name()
                        ),
                    );
                    error.raw_output = Some(text);
                    return Err(error);
                }
                cx.messages.push(Message::user(format!(
                    "Your answer does not match the required JSON schema: {problem}\n\
                     Reply with only the corrected JSON value, no prose and no code fences."
                )));
            }
        }
    }
}

/// Builds the seed messages: instructions, context, memory, history, input. Returns them and the
/// index of the input message (where this run's own messages start).
async fn seed(
    agent: &AgentInner,
    session: &SessionInner,
    shared: &RunShared,
    request: &RunRequest,
    input: &RunInput,
    prompt_schema: Option<&OutputSchema>,
) -> Result<(Vec<Message>, usize), RunError> {
    let store = &agent.session_store;
    let scope = shared.scope();
    let record = {
        let st = session.lock();
        (!st.synced).then(|| SessionRecord {
            id: session.id.to_string(),
            metadata: st.metadata.clone(),
            extensions: st.extensions.clone(),
        })
    };
    if let Some(record) = record {
        store.open_session(&record).await.map_err(|e| RunError::new(RunErrorKind::Store, e.to_string()))?;
        session.lock().synced = true;
    }
    let history = store.history(&session.id).await.map_err(|e| RunError::new(RunErrorKind::Store, e.to_string()))?;
    let mut messages = Vec::with_capacity(history.len() + 4);
    match prompt_schema {
        Some(schema) => {
            let mut system = agent.instructions.clone();
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str(&schema.directive());
            messages.push(Message::system(system));
        }
        None if !agent.instructions.is_empty() => messages.push(Message::system(agent.instructions.clone())),
        None => {}
    }
    if let Some(context) = request.context.to_message() {
        messages.push(context);
    }
    if let Some(memory) = &agent.memory {
        match memory.recall(&scope, input).await {
            Ok(recalled) => messages.extend(recalled),
            Err(e) => tracing::warn!(run_id = %scope.run_id, error = %e, "memory recall failed; continuing without it"),
        }
    }
    messages.extend(history);
    let base = messages.len();
    messages.push(input.to_message());
    Ok((messages, base))
}

/// The run starts executing: it becomes `running` (keeping its seed messages for the in-flight
/// transcript), the budget's wall clock starts, and `run.started` is emitted.
fn begin(agent: &AgentInner, shared: &RunShared, request: &RunRequest, input: &RunInput, seeds: Vec<Message>) {
    shared.set_running(seeds);
    let scope = shared.scope();
    if let Some(budget) = &agent.budget {
        budget.run_started(&scope);
    }
    shared.emit(EventKind::RunStarted(RunStarted {
        input: input.clone(),
        user_id: scope.user_id.as_deref().map(str::to_string),
        model: agent.model.name().to_string(),
        context: request.context.clone(),
    }));
}

/// Emits the terminal event and describes the end.
fn end_with(
    shared: &RunShared,
    outcome: Result<(String, Option<serde_json::Value>), RunError>,
    messages: Vec<Message>,
) -> RunEnd {
    let progress = shared.progress();
    match outcome {
        Ok((output, parsed)) => {
            shared.emit(EventKind::RunCompleted(RunCompleted {
                output: output.clone(),
                parsed: parsed.clone(),
                turns: progress.turns,
                usage: progress.usage,
            }));
            RunEnd { state: RunState::Completed, output, parsed, error: None, messages }
        }
        Err(error) => {
            let state = match error.kind {
                RunErrorKind::Cancelled => RunState::Cancelled,
                RunErrorKind::MaxTurns
                | RunErrorKind::Timeout
                | RunErrorKind::Budget
                | RunErrorKind::Guardrail
                | RunErrorKind::RateLimit => RunState::Interrupted,
                RunErrorKind::ApprovalPending => RunState::Suspended,
                _ => RunState::Failed,
            };
            // Every tool.call gets its tool.result: calls still in flight when the run stopped
            // are reported as cancelled. A suspended run's calls get theirs when it continues.
            let pending = if state == RunState::Suspended { Vec::new() } else { shared.pending_tool_calls() };
            for (turn, call) in pending {
                shared.emit(EventKind::ToolResult(ToolResultEvent {
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
            shared.emit(match state {
                RunState::Cancelled => EventKind::RunCancelled(ended),
                RunState::Interrupted => EventKind::RunInterrupted(ended),
                RunState::Suspended => EventKind::RunSuspended(ended),
                _ => EventKind::RunFailed(ended),
            });
            let output = error.raw_output.clone().unwrap_or_default();
            RunEnd { state, output, parsed: None, error: Some(error), messages }
        }
    }
}

/// Saves the transcript, extends the session's history, tells memory, audit and hooks.
async fn persist(
    agent: &AgentInner,
    shared: &RunShared,
    result: &Arc<RunResult>,
    transcript: &Arc<Transcript>,
    history_base: Option<usize>,
    journaled: bool,
) {
    let store = &agent.session_store;
    let scope = shared.scope();
    // A run stopped by a guardrail adds nothing: replaying the blocked content would send it to the
    // model on the next run (or trip the guardrail again on every later run of the session).
    let guardrail = result.error.as_ref().is_some_and(|e| e.kind == RunErrorKind::Guardrail);
    let mut history: Option<&[Message]> = None;
    if let (Some(base), RunState::Completed | RunState::Interrupted, false) = (history_base, result.state, guardrail) {
        let own = transcript.messages.get(base..).unwrap_or_default();
        let keep = consistent_prefix(own);
        // An interrupted run that got no answer at all (stopped before its first model call)
        // adds nothing, so the history never holds a question without a reply.
        let answered = own[..keep].iter().any(|m| matches!(m, Message::Assistant { .. }));
        if keep > 0 && answered {
            history = Some(&own[..keep]);
        }
    }
    if let Err(e) = store.save_finished_run(transcript.clone(), history).await {
        tracing::warn!(run_id = %result.run_id, error = %e, "saving the run (transcript, session history) failed");
    }
    // The memory write is journaled after it happens (at least once: a crash in between repeats it
    // on resume; `remember` gets the run id to tell). A resumed run whose journal has it skips it.
    if let Some(memory) = &agent.memory
        && result.state != RunState::Suspended
        && !shared.memory_written()
    {
        match memory.remember(&scope, transcript).await {
            Ok(()) => {
                if journaled && let Some(journal) = &agent.journal {
                    // No events ride with this entry: a resumed run replays up to the last model
                    // or tool boundary and emits what followed it again.
                    let entry = JournalEntry::MemoryWritten;
                    if let Err(e) = journal.append(&result.run_id, &agent.lease, &entry, &[]).await {
                        tracing::warn!(run_id = %result.run_id, error = %e, "journaling the memory write failed");
                    }
                }
            }
            Err(e) => tracing::warn!(run_id = %result.run_id, error = %e, "memory write failed"),
        }
    }
    if let Some(audit) = &agent.audit {
        let payload = serde_json::json!({
            "state": result.state, "turns": result.turns, "reason": result.interruption_reason(),
            "error": result.error.as_ref().map(|e| e.message.clone()),
            "input_tokens": result.usage.input_tokens, "output_tokens": result.usage.output_tokens,
            "cost_usd": result.usage.cost_usd, "duration_ms": result.duration_ms,
        });
        if let Err(e) =
            audit.append(AuditRecord { scope: scope.clone(), action: AuditAction::RunFinished, payload }).await
        {
            tracing::warn!(run_id = %result.run_id, error = %e, "audit write failed");
        }
    }
    if let Some(budget) = &agent.budget
        && shared.was_started()
    {
        budget.run_finished(&scope);
    }
    for hook in agent.hooks.iter() {
        if let Err(e) = guard_hook(agent, hook.after_run(&scope, result)).await {
            tracing::warn!(run_id = %scope.run_id, error = %e, "an after_run hook failed");
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
