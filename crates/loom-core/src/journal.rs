//! The run journal: every side effect of a run is recorded before the run moves on, so a run whose
//! process died can be resumed by replaying what was recorded.
//!
//! A journaled run is a [`RunRecord`] (what the run was asked to do, as seeded), followed by
//! [`JournalEntry`] records (model results, tool intents and results, approvals), plus the run's
//! events, written in the same step as the entry they precede. A [`Lease`] says which process
//! drives the run; it expires, so another process can take over a run whose owner died.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, ToolErrorKind};
use crate::event::Event;
use crate::governance::Approval;
use crate::message::{Message, ToolCall};
use crate::model::ModelResponse;
use crate::run::{Artifact, RunContext, RunInput, RunState};
use crate::store::SessionStore;

/// One record of a run's journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JournalEntry {
    /// A model call's result (after output guardrails).
    ModelResult {
        /// The turn.
        turn: u32,
        /// The answer.
        response: ModelResponse,
    },
    /// A tool call is about to run.
    ToolIntent {
        /// The turn.
        turn: u32,
        /// The call.
        call: ToolCall,
        /// The arguments it runs with (after approvals and hooks).
        #[serde(default)]
        arguments: Value,
    },
    /// A tool call finished.
    ToolResult {
        /// The turn.
        turn: u32,
        /// The call's id.
        call_id: String,
        /// What the model receives.
        output: String,
        /// Whether it failed.
        is_error: bool,
        /// How it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_kind: Option<ToolErrorKind>,
        /// Whether the output was cut to the limit.
        #[serde(default)]
        truncated: bool,
        /// A guardrail blocked the result: (guardrail, reason).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        blocked: Option<(String, String)>,
        /// How long it took.
        #[serde(default)]
        duration_ms: u64,
        /// Artifacts the call created.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        artifacts: Vec<Artifact>,
    },
    /// The run paused: this call waits for a human decision (see `Agent::decide`).
    ApprovalPending {
        /// The turn.
        turn: u32,
        /// The call waiting.
        call: ToolCall,
        /// Why it needs approval.
        reason: String,
    },
    /// The decision on a pending call, sent with `Agent::decide`.
    ApprovalDecision {
        /// The call decided.
        call_id: String,
        /// The decision.
        approval: Approval,
    },
    /// The finished run was handed to the memory slot (`Memory::remember`).
    MemoryWritten,
}

impl JournalEntry {
    /// The entry's type name (`model_result`, `tool_intent`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            JournalEntry::ModelResult { .. } => "model_result",
            JournalEntry::ToolIntent { .. } => "tool_intent",
            JournalEntry::ToolResult { .. } => "tool_result",
            JournalEntry::ApprovalPending { .. } => "approval_pending",
            JournalEntry::ApprovalDecision { .. } => "approval_decision",
            JournalEntry::MemoryWritten => "memory_written",
        }
    }
}

/// What a run was asked to do, as seeded: enough to drive it again from its journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run.
    pub run_id: String,
    /// Its session.
    pub session_id: String,
    /// The user it acts for.
    pub user_id: Option<String>,
    /// The input (after input guardrails).
    pub input: RunInput,
    /// The context.
    #[serde(default)]
    pub context: RunContext,
    /// Request metadata.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// The seeded conversation: instructions, context, memory, history and the input.
    pub seeds: Vec<Message>,
    /// Where this run's own messages start in `seeds` (the input message).
    pub history_base: usize,
    /// The turn limit.
    pub max_turns: u32,
    /// The timeout, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The output schema: (name, JSON schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<(String, Value)>,
    /// When it started executing.
    pub started_at: DateTime<Utc>,
}

/// Who drives a run, and for how long without renewing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The owner: one id per journal handle (per process).
    pub owner: Arc<str>,
    /// How long the lease lasts after each renewal.
    pub ttl: Duration,
}

/// A journaled run as loaded for resuming or inspection.
#[derive(Clone, Debug, PartialEq)]
pub struct JournaledRun {
    /// What the run was asked to do.
    pub record: RunRecord,
    /// The journal, in the order written.
    pub entries: Vec<JournalEntry>,
    /// The events persisted so far, in order.
    pub events: Vec<Event>,
    /// The state last written (`running` while a process drives it or after a crash).
    pub state: RunState,
    /// Whether the run has finished (a finished run is never replayed).
    pub finished: bool,
    /// The lease holder, if any.
    pub lease_owner: Option<String>,
    /// When the lease expires.
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// A line of a journal's run listing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalRunSummary {
    /// The run.
    pub run_id: String,
    /// Its session.
    pub session_id: String,
    /// The user.
    pub user_id: Option<String>,
    /// The state last written.
    pub state: RunState,
    /// Whether it has finished.
    pub finished: bool,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Journal entries written.
    pub entries: u64,
}

/// Which runs a listing returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only this session's runs.
    pub session_id: Option<String>,
    /// Only this user's runs.
    pub user_id: Option<String>,
    /// Only unfinished runs (crashed, running or waiting for approval).
    pub unfinished: bool,
    /// At most this many, newest first (0: no limit).
    pub limit: usize,
}

/// The journal slot: every side effect of a run is recorded here before the run moves on.
/// Empty by default (nothing recorded, no cost).
///
/// Every write that names a lease fails with [`Error::LeaseLost`] when another process holds the
/// run, so two processes never drive one run at once.
#[async_trait::async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Registers a run that starts executing and takes its lease; `events` are the run's events
    /// so far. Fails if the run id is already journaled.
    async fn begin(&self, record: &RunRecord, lease: &Lease, events: &[Event]) -> Result<(), Error>;

    /// Appends one entry and the events emitted since the last write, renewing the lease.
    async fn append(&self, run_id: &str, lease: &Lease, entry: &JournalEntry, events: &[Event]) -> Result<(), Error>;

    /// Records a state change that is not a journal entry (a run suspended for approval, a
    /// finished run) with the events since the last write. A terminal `state` finishes the run;
    /// either way the lease is released.
    async fn end(&self, run_id: &str, lease: &Lease, state: RunState, events: &[Event]) -> Result<(), Error>;

    /// Takes over an unfinished run whose lease is free or expired. Exactly one of several
    /// concurrent callers wins; the others get [`Error::LeaseHeld`].
    async fn acquire(&self, run_id: &str, lease: &Lease) -> Result<(), Error>;

    /// Extends the lease; [`Error::LeaseLost`] if another process holds it.
    async fn renew(&self, run_id: &str, lease: &Lease) -> Result<(), Error>;

    /// Appends a decision to a run waiting for approval, whoever holds it (it holds no lease while
    /// it waits). Fails if the run is unknown or finished.
    async fn decide(&self, run_id: &str, entry: &JournalEntry) -> Result<(), Error>;

    /// A run's record, journal and events.
    async fn load(&self, run_id: &str) -> Result<Option<JournaledRun>, Error>;

    /// Runs, newest first.
    async fn list(&self, filter: &RunFilter) -> Result<Vec<JournalRunSummary>, Error>;
}

/// A journal, and the session store that shares its database (for URL journals).
#[derive(Clone)]
pub struct JournalSlot {
    /// The journal.
    pub journal: Arc<dyn Journal>,
    /// The session store in the same database, if any.
    pub session_store: Option<Arc<dyn SessionStore>>,
}

impl std::fmt::Debug for JournalSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalSlot").field("session_store", &self.session_store.is_some()).finish_non_exhaustive()
    }
}

/// A journal as given to an agent: a value, or a URL the runtime opens when the agent is built.
#[derive(Clone, Debug)]
pub enum JournalRef {
    /// A journal value (and the session store sharing its database, if any).
    Slot(JournalSlot),
    /// A journal URL: `"memory"`, `"sqlite:./loom.db"`, `"postgres://…"`.
    Url(String),
}

/// Something that resolves into a journal: any [`Journal`], or a URL string —
/// `"memory"` (in process), `"sqlite:./loom.db"` (optionally `?synchronous=full`),
/// `"postgres://…"`. A durable URL also gives the agent its session store (same database),
/// unless one was set explicitly.
pub trait IntoJournal {
    /// The journal, or the URL naming it.
    fn into_journal_ref(self) -> Result<JournalRef, Error>;
}

impl<J: Journal> IntoJournal for J {
    fn into_journal_ref(self) -> Result<JournalRef, Error> {
        Ok(JournalRef::Slot(JournalSlot { journal: Arc::new(self), session_store: None }))
    }
}

impl IntoJournal for JournalSlot {
    fn into_journal_ref(self) -> Result<JournalRef, Error> {
        Ok(JournalRef::Slot(self))
    }
}

impl IntoJournal for &str {
    fn into_journal_ref(self) -> Result<JournalRef, Error> {
        Ok(JournalRef::Url(self.to_string()))
    }
}

impl IntoJournal for String {
    fn into_journal_ref(self) -> Result<JournalRef, Error> {
        Ok(JournalRef::Url(self))
    }
}
