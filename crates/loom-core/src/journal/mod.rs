//! The run journal: every side effect of a run is recorded before the run moves on, so a run whose
//! process died can be resumed by replaying what was recorded.
//!
//! A journaled run is a [`RunRecord`] (what the run was asked to do, as seeded), followed by
//! [`JournalEntry`] records (model results, tool intents and results, approvals), plus the run's
//! events, written in the same step as the entry they precede. A [`Lease`] says which process
//! drives the run; it expires, so another process can take over a run whose owner died.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, ToolErrorKind};
use crate::event::Event;
use crate::governance::Approval;
use crate::message::{Message, ToolCall};
use crate::model::ModelResponse;
use crate::run::{Artifact, RunContext, RunInput, RunState, Transcript};
use crate::store::{SessionKey, SessionStore};

mod lease;
mod queue;
pub use lease::{Lease, LeaseView, may_decide, may_take_over, may_write, owner_is_gone};
pub use queue::{ClaimedRun, PruneReport, QueuedRun, RunQueue, RunStatus};

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
    /// A background tool answered "pending": the run suspended until the call's result arrives
    /// (`Agent::complete_tool`, or a `tool.result` signal), as a `tool_result` entry.
    ToolPending {
        /// The turn.
        turn: u32,
        /// The call waiting.
        call_id: String,
        /// The tool's handle on the background job.
        handle: String,
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
    /// A round of the criteria gate was judged: a resumed run does not judge it again.
    CriteriaChecked {
        /// The round, from 1.
        round: u32,
        /// One verdict per criterion.
        verdicts: Vec<crate::run::CriterionVerdict>,
        /// The judge call's usage.
        #[serde(default)]
        usage: crate::message::Usage,
    },
    /// A steering message was added before model call `turn`.
    Steered {
        /// The model call that first saw it.
        turn: u32,
        /// The message.
        text: String,
    },
    /// The conversation was compacted before model call `turn`.
    ContextCompacted {
        /// The model call it came before.
        turn: u32,
        /// What the model sees from then on.
        compaction: Compaction,
    },
    /// A step of the architecture's own finished (a workflow node, a router's choice): a resumed
    /// run takes its output back instead of running it again.
    StepCompleted {
        /// The step's key, unique in the run (such as `node:review#2`).
        key: String,
        /// What the step produced.
        output: Value,
    },
}

/// How a run's conversation is compacted for the model: the messages before `prefix` are kept, the
/// ones in `prefix..cut` are replaced by `summary` (a user message), and tool results before
/// `shorten_before` longer than `keep_chars` are cut to their first `keep_chars` characters. The
/// run's own message list (its transcript, the session's history) stays whole; this describes the
/// model's view of it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Compaction {
    /// Leading messages always kept (instructions, context, memory).
    pub prefix: usize,
    /// The first message after the summarized span (`prefix` when nothing is summarized).
    pub cut: usize,
    /// The summary of `prefix..cut`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Tool results before this index are shortened.
    pub shorten_before: usize,
    /// How many characters of a shortened tool result are kept.
    pub keep_chars: usize,
    /// The summarizing call's usage.
    #[serde(default)]
    pub usage: crate::message::Usage,
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
            JournalEntry::ToolPending { .. } => "tool_pending",
            JournalEntry::MemoryWritten => "memory_written",
            JournalEntry::CriteriaChecked { .. } => "criteria_checked",
            JournalEntry::Steered { .. } => "steered",
            JournalEntry::ContextCompacted { .. } => "context_compacted",
            JournalEntry::StepCompleted { .. } => "step_completed",
        }
    }

    /// Whether losing this entry in a crash of the database itself only makes a resumed run
    /// repeat work without side effects: a model call's result, a criteria judgement, a context
    /// compaction. A store may commit such an entry without waiting for the disk (PostgreSQL:
    /// `synchronous_commit = off` for that transaction); a later commit that does wait makes it
    /// durable with everything before it, since the database's log is written in order. Every
    /// other entry guards a side effect or a person's input (a tool's intent or result, an
    /// approval, a steering message, a workflow step) and is committed durably.
    pub fn may_commit_lazily(&self) -> bool {
        matches!(
            self,
            JournalEntry::ModelResult { .. }
                | JournalEntry::CriteriaChecked { .. }
                | JournalEntry::ContextCompacted { .. }
        )
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
    /// Where the session's history (or its stored summary) starts in `seeds`, after the
    /// instructions, context and memory (absent in records written before Loom kept it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_start: Option<usize>,
    /// How many messages of the session's stored history the seeds' leading summary stands for
    /// (0: the seeds hold the whole history).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub summary_covers: usize,
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
    /// The model it ran on (absent in records written before Loom kept it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<RecordedModel>,
    /// The run that started this one as its child (an agent used as a tool, a supervisor's
    /// worker, a workflow's agent node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
    /// The architecture it runs (`react`, `plan_execute`, …; absent in records written before
    /// Loom kept it): a resume refuses to continue it under another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The model a durable run ran on, as its record keeps it: never a key.
///
/// A resume compares it with the model it is given ([`RecordedModel::same_model`]) and never
/// switches models silently; `spec` and `base_url` let a tool (such as `loom runs resume`) build
/// the same model again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedModel {
    /// The provider (`openai`, `anthropic`, `local`, …).
    pub provider: String,
    /// The model's name as sent to the provider.
    pub name: String,
    /// The model string that builds it again, if any (see `LanguageModel::model_string`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    /// The base URL, without user info, query or fragment (they may hold credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

impl RecordedModel {
    /// What `model` is, as a run record keeps it.
    pub fn of(model: &dyn crate::model::LanguageModel) -> Self {
        RecordedModel {
            provider: model.provider().to_string(),
            name: model.name().to_string(),
            spec: model.model_string(),
            base_url: model.base_url().map(scrub_url),
        }
    }

    /// Whether `other` is the same model: same provider and name. The base URL may differ (the
    /// same model behind another endpoint, proxy or gateway).
    pub fn same_model(&self, other: &RecordedModel) -> bool {
        self.provider == other.provider && self.name == other.name
    }
}

impl std::fmt::Display for RecordedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.spec {
            Some(spec) => f.write_str(spec)?,
            None => write!(f, "{}:{}", self.provider, self.name)?,
        }
        match &self.base_url {
            Some(url) => write!(f, " at {url}"),
            None => Ok(()),
        }
    }
}

/// A URL without user info, query string or fragment.
fn scrub_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
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
    /// The run that started this one as its child.
    pub parent_run_id: Option<String>,
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
    /// Only the children of this run.
    pub parent_run_id: Option<String>,
}

/// A run's final commit and everything that rides in its transaction (see [`Journal::end_with`]):
/// entries not written yet, the run's last events, its state, its transcript and history
/// extension (saved as [`SessionStore::save_finished_run`] would), and the release of the session's
/// run lock.
#[derive(Clone, Copy, Debug)]
pub struct FinalCommit<'a> {
    /// The state the run ends in: a terminal state finishes it; either way the lease is released.
    pub state: RunState,
    /// Entries that guard no side effect and were held back for this commit, in order: each goes
    /// in after the ones already written.
    pub entries: &'a [JournalEntry],
    /// The events emitted since the last write.
    pub events: &'a [Event],
    /// The finished run's transcript (its events are the journal's: they are not written again).
    pub transcript: &'a Transcript,
    /// The messages the run adds to its session's history, if any.
    pub history: Option<&'a [Message]>,
    /// The session's run lock to release: (session, holder).
    pub unlock: Option<(SessionKey<'a>, &'a str)>,
}

/// One entry of a multi-entry append ([`Journal::append_all`]) and the events emitted before it
/// (since the previous entry of the batch, or since the run's last write for the first).
#[derive(Clone, Copy, Debug)]
pub struct JournalWrite<'a> {
    /// The entry.
    pub entry: &'a JournalEntry,
    /// The events emitted before it.
    pub events: &'a [Event],
}

impl JournalWrite<'_> {
    /// Whether the whole batch may commit without waiting for the disk: every entry
    /// [`JournalEntry::may_commit_lazily`] (an empty batch too).
    pub fn all_lazy(writes: &[JournalWrite<'_>]) -> bool {
        writes.iter().all(|w| w.entry.may_commit_lazily())
    }
}

/// The journal slot: every side effect of a run is recorded here before the run moves on.
/// Empty by default (nothing recorded, no cost).
///
/// Every write that names a lease fails with [`Error::LeaseLost`] when another process holds the
/// run, so two processes never drive one run at once.
#[async_trait::async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Registers a run that starts executing and takes its lease, with the lease's fencing
    /// number; `events` are the run's events so far. Fails if the run id is already journaled
    /// (a queued run, registered without a record, is journaled by the holder of its claim).
    async fn begin(&self, record: &RunRecord, lease: &Lease, events: &[Event]) -> Result<(), Error>;

    /// Appends one entry and the events emitted since the last write, renewing the lease.
    async fn append(&self, run_id: &str, lease: &Lease, entry: &JournalEntry, events: &[Event]) -> Result<(), Error>;

    /// Appends several entries in order, each with the events emitted before it, renewing the
    /// lease: the run's held-back entries and the write that carries them (see
    /// `Recorder::defer`). A store that can writes them all in one transaction, checking the lease
    /// once, so either all of them are written or none (a lost lease writes nothing). The default
    /// makes one [`Journal::append`] per entry, in order, and stops at the first failure (the
    /// entries before it stay written).
    async fn append_all(&self, run_id: &str, lease: &Lease, writes: &[JournalWrite<'_>]) -> Result<(), Error> {
        for write in writes {
            self.append(run_id, lease, write.entry, write.events).await?;
        }
        Ok(())
    }

    /// Records a state change that is not a journal entry (a run suspended for approval, a
    /// finished run) with the events since the last write. A terminal `state` finishes the run;
    /// either way the lease is released.
    async fn end(&self, run_id: &str, lease: &Lease, state: RunState, events: &[Event]) -> Result<(), Error>;

    /// Takes over an unfinished run whose lease is free or expired, and increments the run's
    /// fencing number: returns the new number, which the caller's writes must carry from then on
    /// (`lease.fenced(n)`); writes with an older number fail with [`Error::LeaseLost`]. Exactly
    /// one of several concurrent callers wins; the others get [`Error::LeaseHeld`].
    async fn acquire(&self, run_id: &str, lease: &Lease) -> Result<u64, Error>;

    /// Extends the lease; [`Error::LeaseLost`] if another process holds it.
    async fn renew(&self, run_id: &str, lease: &Lease) -> Result<(), Error>;

    /// Appends a decision to a run waiting for approval, whoever holds it (it holds no lease while
    /// it waits). Fails if the run is unknown or finished.
    async fn decide(&self, run_id: &str, entry: &JournalEntry) -> Result<(), Error>;

    /// A run's record, journal and events.
    async fn load(&self, run_id: &str) -> Result<Option<JournaledRun>, Error>;

    /// Runs, newest first.
    async fn list(&self, filter: &RunFilter) -> Result<Vec<JournalRunSummary>, Error>;

    /// The signal store in the journal's database, if it has one (the SQL stores): an agent with
    /// this journal keeps its signals and schedules there. `None` by default.
    fn signal_store(&self) -> Option<Arc<dyn crate::signal::SignalStore>> {
        None
    }

    /// The durable run queue in the journal's database, if it has one (the SQL stores): servers
    /// queue runs there and workers claim them. `None` by default.
    fn run_queue(&self) -> Option<Arc<dyn RunQueue>> {
        None
    }

    /// Retention: deletes the runs that finished before `finished_before`, with their events,
    /// journal entries and transcripts (an audit log, kept elsewhere, is not touched). Unfinished
    /// runs (running, queued, suspended) are kept whatever their age. A journal that cannot
    /// prune says so with [`Error::Config`].
    async fn prune(&self, finished_before: DateTime<Utc>) -> Result<PruneReport, Error> {
        let _ = finished_before;
        Err(Error::Config("this journal does not support pruning".into()))
    }

    /// An id of the database handle this journal writes through, when a session store can share
    /// it: a session store whose [`SessionStore::session_database_id`] is the same id keeps its
    /// sessions, history and transcripts in this journal's database, so [`Journal::end_with`] may
    /// save a run's transcript in its final commit. `None` by default.
    fn database_id(&self) -> Option<usize> {
        None
    }

    /// [`Journal::begin`], and the opening of the run's session with `session` (as
    /// [`SessionStore::open_session`] would: created, or its metadata and extensions merged) in the
    /// same transaction, for a journal whose database the session store shares (the same
    /// [`Journal::database_id`]). Returns `Ok(false)`, having written nothing, when this journal
    /// cannot (the default): the caller then makes the two calls.
    async fn begin_with(
        &self,
        record: &RunRecord,
        lease: &Lease,
        events: &[Event],
        session: &crate::store::SessionRecord,
    ) -> Result<bool, Error> {
        let _ = (record, lease, events, session);
        Ok(false)
    }

    /// Checks that `lease` still holds the run ([`Error::LeaseLost`], [`Error::RunNotFound`] when
    /// not), writing nothing where the journal can. By default: [`Journal::renew`].
    async fn check_lease(&self, run_id: &str, lease: &Lease) -> Result<(), Error> {
        self.renew(run_id, lease).await
    }

    /// The final commit with everything that can ride in its transaction (see [`FinalCommit`]),
    /// for a journal whose database the run's session store shares (the same
    /// [`Journal::database_id`]): one transaction instead of one per part, written only if
    /// `lease` holds the run. Returns `Ok(false)`, having written nothing, when this journal cannot
    /// (the default): the caller then writes each part with the other calls.
    async fn end_with(&self, run_id: &str, lease: &Lease, commit: &FinalCommit<'_>) -> Result<bool, Error> {
        let _ = (run_id, lease, commit);
        Ok(false)
    }
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

/// A shared journal is a journal (wrap one, or keep a handle while an agent writes to it).
#[async_trait::async_trait]
impl<T: Journal + ?Sized> Journal for Arc<T> {
    async fn begin(&self, record: &RunRecord, lease: &Lease, events: &[Event]) -> Result<(), Error> {
        (**self).begin(record, lease, events).await
    }
    async fn append(&self, run_id: &str, lease: &Lease, entry: &JournalEntry, events: &[Event]) -> Result<(), Error> {
        (**self).append(run_id, lease, entry, events).await
    }
    async fn append_all(&self, run_id: &str, lease: &Lease, writes: &[JournalWrite<'_>]) -> Result<(), Error> {
        (**self).append_all(run_id, lease, writes).await
    }
    async fn end(&self, run_id: &str, lease: &Lease, state: RunState, events: &[Event]) -> Result<(), Error> {
        (**self).end(run_id, lease, state, events).await
    }
    async fn acquire(&self, run_id: &str, lease: &Lease) -> Result<u64, Error> {
        (**self).acquire(run_id, lease).await
    }
    async fn renew(&self, run_id: &str, lease: &Lease) -> Result<(), Error> {
        (**self).renew(run_id, lease).await
    }
    async fn decide(&self, run_id: &str, entry: &JournalEntry) -> Result<(), Error> {
        (**self).decide(run_id, entry).await
    }
    async fn load(&self, run_id: &str) -> Result<Option<JournaledRun>, Error> {
        (**self).load(run_id).await
    }
    async fn list(&self, filter: &RunFilter) -> Result<Vec<JournalRunSummary>, Error> {
        (**self).list(filter).await
    }
    fn signal_store(&self) -> Option<Arc<dyn crate::signal::SignalStore>> {
        (**self).signal_store()
    }
    fn run_queue(&self) -> Option<Arc<dyn RunQueue>> {
        (**self).run_queue()
    }
    async fn prune(&self, finished_before: DateTime<Utc>) -> Result<PruneReport, Error> {
        (**self).prune(finished_before).await
    }
    fn database_id(&self) -> Option<usize> {
        (**self).database_id()
    }
    async fn begin_with(
        &self,
        record: &RunRecord,
        lease: &Lease,
        events: &[Event],
        session: &crate::store::SessionRecord,
    ) -> Result<bool, Error> {
        (**self).begin_with(record, lease, events, session).await
    }
    async fn check_lease(&self, run_id: &str, lease: &Lease) -> Result<(), Error> {
        (**self).check_lease(run_id, lease).await
    }
    async fn end_with(&self, run_id: &str, lease: &Lease, commit: &FinalCommit<'_>) -> Result<bool, Error> {
        (**self).end_with(run_id, lease, commit).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials() {
        assert_eq!(scrub_url("https://u:pw@api.example/v1?key=abc#x"), "https://api.example/v1");
        assert_eq!(scrub_url("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(scrub_url("https://h/a@b/c"), "https://h/a@b/c");
    }

    #[test]
    fn only_side_effect_free_steps_may_commit_lazily() {
        let call = crate::message::ToolCall::new("c1", "send_mail", &serde_json::json!({}));
        let lazy = JournalEntry::ModelResult { turn: 0, response: ModelResponse::default() };
        assert!(lazy.may_commit_lazily());
        let durable = [
            JournalEntry::ToolIntent { turn: 0, call, arguments: serde_json::json!({}) },
            JournalEntry::Steered { turn: 1, text: "stop".into() },
            JournalEntry::MemoryWritten,
        ];
        for entry in durable {
            assert!(!entry.may_commit_lazily(), "{}", entry.type_name());
        }
    }
}
