//! The run's journal, both ways: every tool intent, tool result and approval is written before the
//! run moves on ([`Recorder::record`]), a model's result rides in the next write's transaction
//! ([`Recorder::defer`]), and a resumed run takes its journaled
//! results back instead of calling the model or the tool again ([`Recorder::model`],
//! [`Recorder::tool`], [`Recorder::approval`]). While a resumed run replays, its log drops the
//! events it already holds and the steps skip effects that already happened (hooks, audit); both
//! resume once the last entry is consumed.

use std::sync::Arc;

use serde_json::Value;

use super::env::Stores;
use super::log::RunLog;
use crate::error::{RunError, RunErrorKind};
use crate::governance::Approval;
use crate::message::Usage;
use crate::model::ModelResponse;
use crate::run::CriterionVerdict;
use crate::run::RunState;
use crate::store::{Compaction, Journal, JournalEntry, JournalWrite, Lease, RunRecord};

/// A run's journal handle and the entries a resumed run has not consumed yet.
pub(crate) struct Recorder {
    /// The journal, once it has this run (after `begin`, or for a resumed run); until then nothing
    /// is written.
    journal: Option<Arc<dyn Journal>>,
    /// The agent's journal, before `begin` registers the run there.
    configured: Option<Arc<dyn Journal>>,
    lease: Lease,
    log: Arc<RunLog>,
    entries: Vec<JournalEntry>,
    /// Entries that guard no side effect, each held back with the end of the events before it: the
    /// next write (or the final commit) carries them first, in the same transaction. A write that
    /// carries them holds this lock until it has committed, so no other write of the run (a
    /// parallel tool call's intent) commits before them.
    deferred: tokio::sync::Mutex<Deferred>,
}

/// Entries held back (see [`Recorder::defer`]) and, for each, the end of the events before it.
struct Deferred {
    entries: Vec<JournalEntry>,
    ends: Vec<usize>,
}

impl Deferred {
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.ends.clear();
    }
}

/// What the journal says about one tool call.
pub(crate) enum ToolReplay {
    /// Nothing: the call runs normally.
    None,
    /// It ran and its result is recorded.
    Done(JournalEntry),
    /// A background call still waiting for its result (its handle).
    Pending(String),
    /// It was about to run (intent recorded) with these arguments, and no result is recorded.
    Started(Value),
}

/// What the journal says about an approval.
pub(crate) enum ApprovalReplay {
    /// Nothing recorded.
    None,
    /// The run paused for it, and no decision has arrived.
    Pending,
    /// The decision.
    Decided(Approval),
}

impl Recorder {
    /// A recorder for a fresh run: it writes nothing until [`Recorder::begin`] registers the run.
    pub(crate) fn new(stores: &Stores, log: Arc<RunLog>) -> Self {
        Recorder {
            journal: None,
            configured: super::child::journal_of(stores, &log),
            lease: stores.lease.fenced(log.fence.load(std::sync::atomic::Ordering::Acquire)),
            log,
            entries: Vec::new(),
            deferred: tokio::sync::Mutex::new(Deferred { entries: Vec::new(), ends: Vec::new() }),
        }
    }

    /// A recorder for a run the journal already has; `entries` are its journal, to replay.
    pub(crate) fn resumed(stores: &Stores, log: Arc<RunLog>, entries: Vec<JournalEntry>) -> Self {
        Recorder { journal: super::child::journal_of(stores, &log), entries, ..Recorder::new(stores, log) }
    }

    /// Whether the journal has this run.
    pub(crate) fn is_journaled(&self) -> bool {
        self.journal.is_some()
    }

    /// Whether a resumed run is still replaying its journal.
    pub(crate) fn is_replaying(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Journal entries a resumed run did not replay (its execution diverged from the journal).
    pub(crate) fn unreplayed(&self) -> usize {
        self.entries.len()
    }

    /// Whether `begin` can open the run's session in its own transaction: the journal writes to the
    /// database `sessions` keeps the sessions in.
    pub(crate) fn can_open_at_begin(&self, sessions: &dyn crate::store::SessionStore) -> bool {
        let journal = self.configured.as_ref().and_then(|j| j.database_id());
        journal.is_some() && journal == sessions.session_database_id()
    }

    /// Registers the run with the journal, with its events so far, opening its session in the same
    /// transaction when `open` is given (see [`Recorder::can_open_at_begin`]; a journal that cannot
    /// gets the two calls). `record` is built only for a journaled run.
    pub(crate) async fn begin(
        &mut self,
        record: impl FnOnce() -> RunRecord,
        open: Option<(&crate::store::SessionRecord, &dyn crate::store::SessionStore)>,
    ) -> Result<(), RunError> {
        let Some(journal) = &self.configured else { return Ok(()) };
        let (events, end) = self.log.unpersisted();
        let record = record();
        let together = match open {
            Some((session, _)) => {
                journal.begin_with(&record, &self.lease, &events, session).await.map_err(store_error)?
            }
            None => false,
        };
        if !together {
            if let Some((session, sessions)) = open {
                sessions.open_session(session).await.map_err(|e| RunError::new(RunErrorKind::Store, e.to_string()))?;
            }
            journal.begin(&record, &self.lease, &events).await.map_err(store_error)?;
        }
        self.log.mark_persisted(end);
        self.journal = Some(journal.clone());
        Ok(())
    }

    /// Writes a journal entry, with the events emitted since the last write, before the run
    /// moves on; held-back entries ride in the same transaction, first. `entry` is built only for
    /// a journaled run.
    pub(crate) async fn record(&self, entry: impl FnOnce() -> JournalEntry) -> Result<(), RunError> {
        let Some(journal) = &self.journal else { return Ok(()) };
        let mut deferred = self.deferred.lock().await;
        if deferred.is_empty() {
            // Nothing to order against: parallel writes (a turn's tool calls) go in at once.
            drop(deferred);
            let (events, end) = self.log.unpersisted();
            journal.append(&self.log.run_id, &self.lease, &entry(), &events).await.map_err(store_error)?;
            self.log.mark_persisted(end);
            return Ok(());
        }
        self.carry(journal, &mut deferred, Some((&entry(), true))).await.map_err(store_error)
    }

    /// Holds back an entry that guards no side effect (a model's result: a resumed run asks again,
    /// and the first tool intent, or the final commit, carries it): the next write writes it
    /// first, with the events emitted before it, in the same transaction. A run killed before then
    /// makes that step again when resumed (nothing it guards has happened). `entry` is built only
    /// for a journaled run.
    pub(crate) async fn defer(&self, entry: impl FnOnce() -> JournalEntry) {
        if self.journal.is_none() {
            return;
        }
        let end = self.log.event_count();
        let mut deferred = self.deferred.lock().await;
        deferred.entries.push(entry());
        deferred.ends.push(end);
    }

    /// Writes the held-back entries, if any, with the events before them.
    pub(crate) async fn flush(&self) -> Result<(), crate::Error> {
        let Some(journal) = &self.journal else { return Ok(()) };
        let mut deferred = self.deferred.lock().await;
        if deferred.is_empty() {
            return Ok(());
        }
        self.carry(journal, &mut deferred, None).await
    }

    /// Writes a journal entry with no events (an entry after the last model or tool boundary),
    /// after the held-back ones in the same transaction.
    pub(crate) async fn record_alone(&self, entry: &JournalEntry) -> Result<(), crate::Error> {
        let Some(journal) = &self.journal else { return Ok(()) };
        let mut deferred = self.deferred.lock().await;
        if deferred.is_empty() {
            drop(deferred);
            return journal.append(&self.log.run_id, &self.lease, entry, &[]).await;
        }
        self.carry(journal, &mut deferred, Some((entry, false))).await
    }

    /// Writes the held-back entries, then `last` (with the events since them when its flag is set,
    /// else none), in one [`Journal::append_all`], while the caller holds the lock on them. They
    /// are dropped once written; on failure they stay held back (a transactional journal wrote
    /// nothing).
    async fn carry(
        &self,
        journal: &Arc<dyn Journal>,
        deferred: &mut Deferred,
        last: Option<(&JournalEntry, bool)>,
    ) -> Result<(), crate::Error> {
        let (events, start, now) = self.log.unpersisted_span();
        let mut writes = Vec::with_capacity(deferred.entries.len() + 1);
        let mut from = 0;
        for (entry, until) in deferred.entries.iter().zip(&deferred.ends) {
            let to = until.saturating_sub(start).clamp(from, events.len());
            writes.push(JournalWrite { entry, events: &events[from..to] });
            from = to;
        }
        let mut end = start + from;
        if let Some((entry, with_events)) = last {
            let tail = if with_events { &events[from..] } else { &[] };
            if with_events {
                end = now;
            }
            writes.push(JournalWrite { entry, events: tail });
        }
        journal.append_all(&self.log.run_id, &self.lease, &writes).await?;
        deferred.clear();
        self.log.mark_persisted(end);
        Ok(())
    }

    /// Whether the final commit can carry the run's transcript and history: the journal writes to
    /// the database `sessions` keeps them in.
    pub(crate) fn shares_database(&self, sessions: &dyn crate::store::SessionStore) -> bool {
        let journal = self.journal.as_ref().and_then(|j| j.database_id());
        journal.is_some() && journal == sessions.session_database_id()
    }

    /// The final commit in one transaction: the held-back entry, the run's last events, its state,
    /// its transcript and history extension, and the release of the session's run lock (see
    /// [`crate::store::FinalCommit`]). `Ok(false)`: the journal cannot, and nothing was written.
    pub(crate) async fn end_with(
        &self,
        state: RunState,
        transcript: &crate::run::Transcript,
        history: Option<&[crate::message::Message]>,
        unlock: Option<(crate::store::SessionKey<'_>, &str)>,
    ) -> Result<bool, crate::Error> {
        let Some(journal) = &self.journal else { return Ok(false) };
        let mut deferred = self.deferred.lock().await;
        let (events, end) = self.log.unpersisted();
        let commit = crate::store::FinalCommit {
            state,
            entries: &deferred.entries,
            events: &events,
            transcript,
            history,
            unlock,
        };
        let written = journal.end_with(&self.log.run_id, &self.lease, &commit).await;
        if let Ok(true) = written {
            deferred.clear();
            self.log.mark_persisted(end);
        }
        // Otherwise nothing was written: the entries are still held back.
        written
    }

    /// The final commit: the run's last events and its state; the lease is released.
    pub(crate) async fn end(&self, state: RunState) -> Result<(), crate::Error> {
        let Some(journal) = &self.journal else { return Ok(()) };
        self.flush().await?;
        let (events, end) = self.log.unpersisted();
        journal.end(&self.log.run_id, &self.lease, state, &events).await?;
        self.log.mark_persisted(end);
        Ok(())
    }

    /// Checks that this run still holds its lease with its fencing number (writing nothing where
    /// the journal can): a run taken over by another process since is
    /// [`crate::Error::LeaseLost`] and must save nothing. A run claimed from the queue (fence
    /// above 0) is checked even before its `begin`: its claim is a lease on the queue's row.
    pub(crate) async fn still_held(&self) -> Result<(), crate::Error> {
        let claimed = self.configured.as_ref().filter(|_| self.lease.fence > 0);
        let Some(journal) = self.journal.as_ref().or(claimed) else { return Ok(()) };
        journal.check_lease(&self.log.run_id, &self.lease).await
    }

    /// Releases the lease and leaves the run unfinished in the journal, without its last events
    /// (a resume emits them again).
    pub(crate) async fn release(&self) -> Result<(), crate::Error> {
        let Some(journal) = &self.journal else { return Ok(()) };
        self.flush().await?;
        journal.end(&self.log.run_id, &self.lease, RunState::Running, &[]).await
    }

    /// The recorded result of model call `turn`, if the journal has it.
    pub(crate) fn model(&mut self, turn: u32) -> Option<ModelResponse> {
        let i =
            self.entries.iter().position(|e| matches!(e, JournalEntry::ModelResult { turn: t, .. } if *t == turn))?;
        let response = match self.entries.remove(i) {
            JournalEntry::ModelResult { response, .. } => Some(response),
            _ => None,
        };
        self.consumed();
        response
    }

    /// Whether the journal has the result of model call `turn` (it was made before).
    pub(crate) fn has_model(&self, turn: u32) -> bool {
        self.entries.iter().any(|e| matches!(e, JournalEntry::ModelResult { turn: t, .. } if *t == turn))
    }

    /// The journaled compaction before model call `turn`, if any.
    pub(crate) fn compaction(&mut self, turn: u32) -> Option<Compaction> {
        let i = self
            .entries
            .iter()
            .position(|e| matches!(e, JournalEntry::ContextCompacted { turn: t, .. } if *t == turn))?;
        let found = match self.entries.remove(i) {
            JournalEntry::ContextCompacted { compaction, .. } => Some(compaction),
            _ => None,
        };
        self.consumed();
        found
    }

    /// The journaled verdict of criteria round `round`, if any.
    pub(crate) fn criteria(&mut self, round: u32) -> Option<(Vec<CriterionVerdict>, Usage)> {
        let i = self
            .entries
            .iter()
            .position(|e| matches!(e, JournalEntry::CriteriaChecked { round: r, .. } if *r == round))?;
        let found = match self.entries.remove(i) {
            JournalEntry::CriteriaChecked { verdicts, usage, .. } => Some((verdicts, usage)),
            _ => None,
        };
        self.consumed();
        found
    }

    /// The journaled output of the architecture's step `key`, if any.
    pub(crate) fn step(&mut self, key: &str) -> Option<Value> {
        if !self.is_replaying() {
            return None;
        }
        let i =
            self.entries.iter().position(|e| matches!(e, JournalEntry::StepCompleted { key: k, .. } if k == key))?;
        let found = match self.entries.remove(i) {
            JournalEntry::StepCompleted { output, .. } => Some(output),
            _ => None,
        };
        self.consumed();
        found
    }

    /// Every journaled step output, taken out (see [`RunCx::take_replayed_steps`]).
    ///
    /// [`RunCx::take_replayed_steps`]: super::RunCx::take_replayed_steps
    pub(crate) fn take_steps(&mut self) -> std::collections::HashMap<String, Value> {
        if !self.is_replaying() {
            return std::collections::HashMap::new();
        }
        let steps = self
            .entries
            .extract_if(.., |e| matches!(e, JournalEntry::StepCompleted { .. }))
            .filter_map(|e| match e {
                JournalEntry::StepCompleted { key, output } => Some((key, output)),
                _ => None,
            })
            .collect();
        self.consumed();
        steps
    }

    /// The steering messages journaled before model call `turn`, in order.
    pub(crate) fn steered(&mut self, turn: u32) -> Vec<String> {
        if !self.is_replaying() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.entries.len() {
            if matches!(&self.entries[i], JournalEntry::Steered { turn: t, .. } if *t == turn) {
                if let JournalEntry::Steered { text, .. } = self.entries.remove(i) {
                    out.push(text);
                }
            } else {
                i += 1;
            }
        }
        if !out.is_empty() {
            self.consumed();
        }
        out
    }

    /// What the journal says about one tool call.
    pub(crate) fn tool(&mut self, call_id: &str) -> ToolReplay {
        if !self.is_replaying() {
            return ToolReplay::None;
        }
        let found = self.take_tool(call_id);
        if !matches!(found, ToolReplay::None) {
            // Its approval was decided before it started (a "for this run" answer is already
            // remembered, see `RunCx::resume`): nothing about it is left to replay.
            if matches!(found, ToolReplay::Done(_)) {
                let _ = self.take_approval(call_id);
            }
            self.consumed();
        }
        found
    }

    /// The "for this run" answers the journal holds: (tool name, allowed or the denial's reason).
    pub(crate) fn remembered_approvals(&self) -> Vec<(String, Result<(), String>)> {
        let name_of = |call_id: &str| {
            self.entries.iter().find_map(|e| match e {
                JournalEntry::ToolIntent { call, .. } | JournalEntry::ApprovalPending { call, .. }
                    if call.id == call_id =>
                {
                    Some(call.name.clone())
                }
                JournalEntry::ModelResult { response, .. } => {
                    response.tool_calls.iter().find(|c| c.id == call_id).map(|c| c.name.clone())
                }
                _ => None,
            })
        };
        self.entries
            .iter()
            .filter_map(|e| match e {
                JournalEntry::ApprovalDecision { call_id, approval: Approval::AllowForRun } => {
                    Some((name_of(call_id)?, Ok(())))
                }
                JournalEntry::ApprovalDecision { call_id, approval: Approval::DenyForRun(reason) } => {
                    Some((name_of(call_id)?, Err(reason.clone())))
                }
                _ => None,
            })
            .collect()
    }

    /// What the journal says about the approval of one call.
    pub(crate) fn approval(&mut self, call_id: &str) -> ApprovalReplay {
        if !self.is_replaying() {
            return ApprovalReplay::None;
        }
        let found = self.take_approval(call_id);
        self.consumed();
        found
    }

    /// Once every entry is consumed, events and effects flow again.
    fn consumed(&self) {
        if self.entries.is_empty() {
            self.log.stop_suppressing();
        }
    }

    fn take_tool(&mut self, call_id: &str) -> ToolReplay {
        let mut intent: Option<Value> = None;
        let mut done: Option<JournalEntry> = None;
        let mut pending: Option<String> = None;
        let mut i = 0;
        while i < self.entries.len() {
            match &self.entries[i] {
                JournalEntry::ToolIntent { call, .. } if call.id == call_id => {
                    if let JournalEntry::ToolIntent { arguments, .. } = self.entries.remove(i) {
                        intent = Some(arguments);
                    }
                }
                JournalEntry::ToolResult { call_id: id, .. } if id == call_id => {
                    done = Some(self.entries.remove(i));
                }
                JournalEntry::ToolPending { call_id: id, .. } if id == call_id => {
                    if let JournalEntry::ToolPending { handle, .. } = self.entries.remove(i) {
                        pending = Some(handle);
                    }
                }
                _ => i += 1,
            }
        }
        match (done, intent) {
            (Some(entry), _) => ToolReplay::Done(entry),
            (None, _) if let Some(handle) = pending => ToolReplay::Pending(handle),
            (None, Some(args)) => ToolReplay::Started(args),
            (None, None) => ToolReplay::None,
        }
    }

    fn take_approval(&mut self, call_id: &str) -> ApprovalReplay {
        let mut pending = false;
        let mut decided = None;
        let mut i = 0;
        while i < self.entries.len() {
            match &self.entries[i] {
                JournalEntry::ApprovalPending { call, .. } if call.id == call_id => {
                    self.entries.remove(i);
                    pending = true;
                }
                JournalEntry::ApprovalDecision { call_id: id, .. } if id == call_id => {
                    if let JournalEntry::ApprovalDecision { approval, .. } = self.entries.remove(i) {
                        decided = Some(approval);
                    }
                }
                _ => i += 1,
            }
        }
        match (decided, pending) {
            (Some(a), _) => ApprovalReplay::Decided(a),
            (None, true) => ApprovalReplay::Pending,
            (None, false) => ApprovalReplay::None,
        }
    }
}

fn store_error(e: crate::Error) -> RunError {
    RunError::new(RunErrorKind::Store, format!("journal: {e}"))
}
