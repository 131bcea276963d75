//! Durable steps of an architecture's own (a workflow's nodes, a router's choice) and the pieces
//! a multi-agent architecture needs: each finished step is a journal boundary (a resumed run
//! takes its output back instead of running it again), children link to this run, and a
//! `transfer_to_<name>` tool ends the run as a handoff.

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::context::RunCx;
use crate::error::{RunError, RunErrorKind};
use crate::message::Message;
use crate::store::JournalEntry;

/// The prefix of handoff tools' names.
pub(crate) const HANDOFF_PREFIX: &str = "transfer_to_";

/// What a successful handoff tool answers (the runtime recognizes the handoff by it).
pub(crate) const HANDOFF_ANSWER: &str = "Transferred to ";

impl RunCx {
    /// The output of step `key` when this is a resumed run whose journal has it (the step
    /// finished before the process died): use it instead of running the step again.
    pub fn replayed_step(&mut self, key: &str) -> Option<Value> {
        self.recorder.step(key)
    }

    /// Records that step `key` finished with `output`: a journal boundary, written (with the
    /// events so far) before the run moves on. Keys must be unique in the run and the same on
    /// every execution of it (no clock, no randomness).
    pub async fn complete_step(&self, key: &str, output: &Value) -> Result<(), RunError> {
        self.recorder.record(|| JournalEntry::StepCompleted { key: key.to_string(), output: output.clone() }).await
    }

    /// The outputs of every step the journal of this resumed run has (none for a fresh run),
    /// taken out at once: an architecture whose steps run concurrently (a workflow's parallel
    /// branches) looks them up by key from there instead of through [`RunCx::replayed_step`].
    pub(crate) fn take_replayed_steps(&mut self) -> std::collections::HashMap<String, Value> {
        self.recorder.take_steps()
    }

    /// Checks cancellation and the budget (the run's and its ancestors') before a step that is
    /// not a model call.
    pub async fn before_step(&self) -> Result<(), RunError> {
        self.check_cancelled()?;
        self.check_budget().await
    }

    /// Fires when the run is cancelled.
    pub(crate) fn cancellation(&self) -> CancellationToken {
        self.log.cancel.clone()
    }

    /// The agent the last tool batch handed the conversation to, if a `transfer_to_<name>` call
    /// in it succeeded: the run then ends, completed, with the handoff as its answer.
    pub(crate) fn pending_handoff(&self) -> Option<String> {
        let mut results = Vec::new();
        for m in self.messages.iter().rev() {
            match m {
                Message::Tool { .. } => results.push(m),
                Message::Assistant { tool_calls, .. } => {
                    return tool_calls.iter().find_map(|call| {
                        let target = call.name.strip_prefix(HANDOFF_PREFIX)?;
                        let done = results.iter().any(|r| match r {
                            Message::Tool { call_id, is_error, content, .. } => {
                                *call_id == call.id && !*is_error && content.starts_with(HANDOFF_ANSWER)
                            }
                            _ => false,
                        });
                        done.then(|| target.to_string())
                    });
                }
                _ => return None,
            }
        }
        None
    }

    /// Before a model call: a handoff in the last tool batch ends the architecture's loop (the
    /// driver turns it into the run's answer, see [`RunCx::handed_off`]).
    pub(super) fn stop_at_handoff(&mut self) -> Result<(), RunError> {
        let Some(target) = self.pending_handoff() else { return Ok(()) };
        let error = RunError::new(RunErrorKind::Internal, format!("handoff to `{target}`"));
        self.handoff = Some(target);
        Err(error)
    }

    /// The agent this run handed the conversation to, once its loop stopped for it.
    pub(crate) fn handed_off(&self) -> Option<&str> {
        self.handoff.as_deref()
    }
}
