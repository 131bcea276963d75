//! A run's first step. A fresh run is seeded (instructions, context, memory, history, input), its
//! input goes through the input guardrails, it becomes `running` (`run.started`), the audit log and
//! the `before_run` hooks see it, and the journal registers it. A resumed run takes all of that
//! from its journal record instead.

use std::time::Duration;

use serde_json::{Map, Value};

use super::context::{RunCx, stopped_by_hook};
use super::env::GuardResult;
use super::replay::Recorder;
use crate::error::{RunError, RunErrorKind};
use crate::event::{EventKind, KnowledgeInjected, MemoryRecalled, RunStarted, SignalEvent};
use crate::governance::{AuditAction, GuardAction, GuardStage, HookAction};
use crate::message::{ContentPart, Message};
use crate::output::OutputSchema;
use crate::run::{RunContext, RunInput};
use crate::store::{JournalEntry, JournaledRun, RecordedModel, RunRecord, SessionRecord};

/// What a fresh run is asked to do, beyond its input (which the run's log holds).
pub(crate) struct RunPlan<'a> {
    /// The session to create or update in the store first (when the store is not current).
    pub(crate) open_session: Option<SessionRecord>,
    /// The run's context.
    pub(crate) context: &'a RunContext,
    /// Request metadata.
    pub(crate) metadata: &'a Map<String, Value>,
    /// The output schema, if any.
    pub(crate) output_schema: Option<OutputSchema>,
    /// The turn limit.
    pub(crate) max_turns: u32,
    /// The timeout.
    pub(crate) timeout: Option<Duration>,
    /// The architecture's name (for the audit log and the journal's record).
    pub(crate) architecture: &'a str,
    /// Whether the session may have observed signals for this run (a session other runs or
    /// processes may share; a fresh session has none).
    pub(crate) signals: bool,
    /// Whether the session may have history: not for the first run of a session whose id this
    /// process made (nothing can have been written under it), which saves the store a read.
    pub(crate) history: bool,
    /// The signal that started this run, if one did.
    pub(crate) received: Option<SignalEvent>,
}

impl RunCx {
    /// Seeds and starts a fresh run. `Err` ends the run with that error.
    pub(crate) async fn begin(&mut self, plan: &RunPlan<'_>) -> Result<(), RunError> {
        self.max_turns = plan.max_turns;
        let schema = plan.output_schema.as_ref();
        let native = schema.is_some() && self.env.model.capabilities().native_structured_output;
        let input = self.log.input();
        let observed = self.observed_signals(plan).await;
        let (mut messages, mut history_base, recalled) = match self.seed(plan, &input, schema.filter(|_| !native)).await
        {
            Ok(seeded) => seeded,
            Err(error) => {
                self.started(&input, plan.context, Vec::new());
                return Err(error);
            }
        };
        if !observed.is_empty() {
            // The observed signals go right before the input: the newest context the run has
            // (not part of the run's own messages, so not added to the session's history).
            messages.insert(history_base, observed_message(&observed));
            history_base += 1;
        }
        // Input guardrails run before anything records the input: a redacted input is what the
        // run.started event, the audit log, the transcript and the model all see.
        let (input, input_guard) = self.guard_input(&mut messages, input);
        self.started(&input, plan.context, messages.clone());
        if let Some(injected) = KnowledgeInjected::of(plan.context) {
            self.log.emit(EventKind::KnowledgeInjected(injected));
        }
        if let Some(recalled) = recalled {
            self.log.emit(EventKind::MemoryRecalled(recalled));
        }
        if let Some(received) = &plan.received {
            self.log.emit(EventKind::SignalReceived(received.clone()));
        }
        if !observed.is_empty() {
            for record in &observed {
                let attention = record.attention.unwrap_or(crate::signal::Attention::Observe);
                self.log.emit(EventKind::SignalHandled(SignalEvent::of(&record.signal, attention)));
            }
        }
        self.messages = messages;
        self.history_base = Some(history_base);
        let policies = &self.env.policies;
        if policies.audit.is_some() {
            let payload = serde_json::json!({
                "input": input.summary().chars().take(500).collect::<String>(),
                "model": self.env.model.name(), "max_turns": self.max_turns, "architecture": plan.architecture,
            });
            self.audit(AuditAction::RunStarted, payload).await?;
            self.audited_start = true;
        }
        let hooks = &self.live.hooks;
        for hook in hooks.iter() {
            let action = match hooks.call(hook.before_run(&self.scope, &input)).await {
                Ok(action) => action,
                Err(e) if hooks.failure_denies => HookAction::Stop(e),
                Err(e) => {
                    tracing::warn!(run_id = %self.scope.run_id, error = %e, "a before_run hook failed");
                    HookAction::Continue
                }
            };
            if let HookAction::Stop(reason) = action {
                let mut error = stopped_by_hook(reason.clone());
                error.message = format!("stopped by a hook before the first model call: {reason}");
                return Err(error);
            }
        }
        for (name, blocked_by) in input_guard {
            match blocked_by {
                Some(reason) => return Err(self.guard_blocked(GuardStage::Input, name, reason).await),
                None => self.guard_event(GuardStage::Input, &name, GuardAction::Redact, None).await,
            }
        }
        self.native_schema = plan.output_schema.clone().filter(|_| native);
        let record = || RunRecord {
            run_id: self.scope.run_id.to_string(),
            session_id: self.scope.session_id.to_string(),
            user_id: self.scope.user_id.as_deref().map(str::to_string),
            input,
            context: plan.context.clone(),
            metadata: plan.metadata.clone(),
            seeds: self.messages.clone(),
            history_base,
            history_start: self.window.as_ref().map(|w| w.prefix),
            summary_covers: self.summary_covers,
            max_turns: self.max_turns,
            timeout_ms: plan.timeout.map(|t| t.as_millis().min(u64::MAX as u128) as u64),
            output_schema: schema.map(|s| (s.name().to_string(), s.schema().clone())),
            started_at: self.log.started_at().unwrap_or_else(chrono::Utc::now),
            model: Some(RecordedModel::of(self.env.model.as_ref())),
            parent_run_id: self.log.parent_run_id(),
            architecture: Some(plan.architecture.to_string()),
        };
        let open = self.deferred_open.take();
        let sessions = self.env.stores.sessions.clone();
        let began = self.recorder.begin(record, open.as_ref().map(|o| (o, sessions.as_ref()))).await;
        match began {
            Ok(()) => self.session_opened |= open.is_some(),
            // `finish` opens it.
            Err(_) => self.deferred_open = open,
        }
        began
    }

    /// Continues a run from its journal: the seeded conversation comes from the record, and the
    /// journaled results stand in for the calls the earlier execution completed. Returns the
    /// run's output schema and timeout.
    pub(crate) fn resume(
        &mut self,
        stored: JournaledRun,
    ) -> Result<(Option<OutputSchema>, Option<Duration>), RunError> {
        let record = stored.record;
        let mut entries = stored.entries;
        if entries.iter().any(|e| matches!(e, JournalEntry::MemoryWritten)) {
            self.log.set_memory_written();
        }
        entries.retain(|e| !matches!(e, JournalEntry::MemoryWritten));
        self.recorder = Recorder::resumed(&self.env.stores, self.log.clone(), entries);
        self.remembered = self.recorder.remembered_approvals();
        // The process that began the run wrote its `run_started` audit entry.
        self.audited_start = true;
        self.history_base = Some(record.history_base);
        self.summary_covers = record.summary_covers;
        if let Some(w) = self.window.as_deref_mut() {
            w.prefix = record.history_start.unwrap_or_else(|| leading_system(&record.seeds));
        }
        self.log.set_running(record.seeds.clone());
        self.log.set_started_at(record.started_at);
        if let Some(budget) = &self.env.policies.budget {
            budget.run_started(&self.scope);
        }
        self.messages = record.seeds;
        self.max_turns = record.max_turns;
        let schema =
            record.output_schema.map(|(name, schema)| OutputSchema::new(name, schema)).transpose().map_err(|e| {
                RunError::new(RunErrorKind::Store, format!("journal: the stored output schema is invalid: {e}"))
            })?;
        let native = schema.is_some() && self.env.model.capabilities().native_structured_output;
        self.native_schema = schema.clone().filter(|_| native);
        Ok((schema, record.timeout_ms.map(Duration::from_millis)))
    }

    /// The run starts executing: it becomes `running` (keeping its seed messages for the in-flight
    /// transcript), the budget's wall clock starts, and `run.started` is emitted.
    fn started(&self, input: &RunInput, context: &RunContext, seeds: Vec<Message>) {
        self.log.set_running(seeds);
        if let Some(budget) = &self.env.policies.budget {
            budget.run_started(&self.scope);
        }
        self.log.emit(EventKind::RunStarted(Box::new(RunStarted {
            input: input.clone(),
            user_id: self.scope.user_id.as_deref().map(str::to_string),
            model: self.env.model.name().to_string(),
            context: context.clone(),
        })));
    }

    /// Takes the session's observed signals for this run (marking them handled by it). A store
    /// failure is logged and the run goes on without them (they stay observed).
    async fn observed_signals(&self, plan: &RunPlan<'_>) -> Vec<crate::signal::SignalRecord> {
        if !plan.signals {
            return Vec::new();
        }
        match self.env.stores.signals.take_observed(self.scope.session_key(), &self.scope.run_id).await {
            Ok(observed) => observed,
            Err(e) => {
                tracing::warn!(run_id = %self.scope.run_id, error = %e, "reading the session's observed signals failed");
                Vec::new()
            }
        }
    }

    /// Builds the seed messages: instructions, context, memory, history, input. Returns them, the
    /// index of the input message (where this run's own messages start), and what memory recalled
    /// (for the `memory.recalled` event, emitted after `run.started`).
    async fn seed(
        &mut self,
        plan: &RunPlan<'_>,
        input: &RunInput,
        prompt_schema: Option<&OutputSchema>,
    ) -> Result<(Vec<Message>, usize, Option<MemoryRecalled>), RunError> {
        let stores = &self.env.stores;
        let store_error = |e: crate::Error| RunError::new(RunErrorKind::Store, e.to_string());
        if let Some(record) = &plan.open_session {
            if self.recorder.can_open_at_begin(stores.sessions.as_ref()) {
                // The journal's `begin` opens it in its own transaction.
                self.deferred_open = Some(record.clone());
            } else {
                stores.sessions.open_session(record).await.map_err(store_error)?;
                self.session_opened = true;
            }
        }
        let history = if plan.history {
            stores.sessions.history(self.scope.session_key()).await.map_err(store_error)?
        } else {
            Vec::new()
        };
        let mut messages = Vec::with_capacity(history.len() + 4);
        let instructions = &self.env.instructions;
        match prompt_schema {
            Some(schema) => {
                let mut system = instructions.clone();
                if !system.is_empty() {
                    system.push_str("\n\n");
                }
                system.push_str(&schema.directive());
                messages.push(Message::system(system));
            }
            None if !instructions.is_empty() => messages.push(Message::system(instructions.clone())),
            None => {}
        }
        if let Some(context) = plan.context.to_message() {
            messages.push(context);
        }
        let mut event = None;
        if let Some(memory) = &stores.memory {
            match memory.recall(&self.scope, input).await {
                Ok(recalled) => {
                    messages.extend(recalled.messages);
                    if !recalled.items.is_empty() {
                        event = Some(MemoryRecalled { items: recalled.items });
                    }
                }
                Err(e) => {
                    tracing::warn!(run_id = %self.scope.run_id, error = %e, "memory recall failed; continuing without it")
                }
            }
        }
        let history_start = messages.len();
        // With context management, the session's stored summary stands for the history it covers.
        let summary = match &self.window {
            Some(_) => stores.sessions.summary(self.scope.session_key()).await.map_err(store_error)?,
            None => None,
        };
        match summary {
            Some(summary) if summary.covers > 0 && summary.covers <= history.len() => {
                messages.push(super::window::summary_message(&summary.text));
                messages.extend(history.into_iter().skip(summary.covers));
                self.summary_covers = summary.covers;
            }
            _ => messages.extend(history),
        }
        if let Some(w) = self.window.as_deref_mut() {
            w.prefix = history_start;
        }
        let base = messages.len();
        messages.push(input.to_message());
        Ok((messages, base, event))
    }

    /// Applies the input guardrails to the input message. Returns the input as the run records it
    /// and what each guardrail did: (guardrail, Some(reason) when it blocked).
    fn guard_input(&self, messages: &mut [Message], input: RunInput) -> (RunInput, Vec<(String, Option<String>)>) {
        let guardrails = &self.env.policies.guardrails;
        let mut verdicts = Vec::new();
        if guardrails.is_empty() {
            return (input, verdicts);
        }
        let Some(Message::User { content }) = messages.last_mut() else { return (input, verdicts) };
        let mut redacted = false;
        for part in content.iter_mut() {
            if let ContentPart::Text { text } = part {
                match guardrails.apply(GuardStage::Input, text) {
                    GuardResult::Unchanged => {}
                    GuardResult::Redacted(new, names) => {
                        *text = new;
                        redacted = true;
                        verdicts.extend(names.into_iter().map(|n| (n, None)));
                    }
                    GuardResult::Blocked(name, reason) => {
                        verdicts.push((name, Some(reason)));
                        break;
                    }
                }
            }
        }
        if !redacted {
            return (input, verdicts);
        }
        let input = match (&input, messages.last()) {
            (RunInput::Parts(_), Some(Message::User { content })) => RunInput::Parts(content.clone()),
            _ => RunInput::Prompt(messages.last().map(Message::text).unwrap_or_default()),
        };
        self.log.set_input(input.clone());
        (input, verdicts)
    }
}

/// How many system messages lead `messages` (the instructions, context and memory of records
/// written before Loom kept where the history starts).
fn leading_system(messages: &[Message]) -> usize {
    messages.iter().take_while(|m| matches!(m, Message::System { .. })).count()
}

/// The system message that shows a run the signals its session observed since its last run.
fn observed_message(observed: &[crate::signal::SignalRecord]) -> Message {
    let mut text = String::from(
        "Signals this session received since its last run (context; act on them only if they matter to the task):",
    );
    for record in observed {
        text.push_str("\n- ");
        text.push_str(&record.signal.to_prompt());
    }
    Message::system(text)
}
