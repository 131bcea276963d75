//! Replaying a resumed run's journal: the recorded results stand in for model calls and tool
//! calls the earlier execution completed.

use serde_json::Value;

use crate::governance::Approval;
use crate::model::ModelResponse;
use crate::store::JournalEntry;

/// The journal entries a resumed run has not consumed yet.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    entries: Vec<JournalEntry>,
}

/// What the journal says about one tool call.
pub(crate) enum ToolReplay {
    /// Nothing: the call runs normally.
    None,
    /// It ran and its result is recorded.
    Done(JournalEntry),
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

impl Replay {
    pub(crate) fn new(entries: Vec<JournalEntry>) -> Self {
        Replay { entries }
    }

    /// Whether entries remain.
    pub(crate) fn is_active(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Entries left unconsumed (a diverged replay).
    pub(crate) fn remaining(&self) -> &[JournalEntry] {
        &self.entries
    }

    pub(crate) fn take_model(&mut self, turn: u32) -> Option<ModelResponse> {
        let i =
            self.entries.iter().position(|e| matches!(e, JournalEntry::ModelResult { turn: t, .. } if *t == turn))?;
        match self.entries.remove(i) {
            JournalEntry::ModelResult { response, .. } => Some(response),
            _ => None,
        }
    }

    pub(crate) fn take_tool(&mut self, call_id: &str) -> ToolReplay {
        let mut intent: Option<Value> = None;
        let mut done: Option<JournalEntry> = None;
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
                _ => i += 1,
            }
        }
        match (done, intent) {
            (Some(entry), _) => ToolReplay::Done(entry),
            (None, Some(args)) => ToolReplay::Started(args),
            (None, None) => ToolReplay::None,
        }
    }

    pub(crate) fn take_approval(&mut self, call_id: &str) -> ApprovalReplay {
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
