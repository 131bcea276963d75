//! Background tools: a tool that answers [`crate::tool::ToolOutput::pending`] suspends its
//! (journaled) run; [`Agent::complete_tool`] records the result and continues the run, in any
//! process sharing the journal.

use super::{Agent, Run};
use crate::error::Error;
use crate::governance::GuardStage;
use crate::runtime::env::GuardResult;
use crate::store::JournalEntry;
use crate::tool::{IntoToolResult, ToolErrorKind};

impl Agent {
    /// Records the result of a background tool call that a suspended run waits for (its tool
    /// answered [`ToolOutput::pending`](crate::tool::ToolOutput::pending)), and continues the run:
    /// the model receives `result` as the call's result (an `Err` as an error result). Works in any
    /// process that shares the journal, after a restart too. The tool-result guardrails apply to it
    /// as to any tool result, and it is cut to the tool output limit.
    ///
    /// # Errors
    /// No journal, [`Error::RunNotFound`], [`Error::RunFinished`], or [`Error::Config`] when the
    /// run does not wait for that call; the errors of [`Agent::resume`].
    pub async fn complete_tool(&self, run_id: &str, call_id: &str, result: impl IntoToolResult) -> Result<Run, Error> {
        let journal = self.journal_or_err()?;
        let stored = journal.load(run_id).await?.ok_or_else(|| Error::RunNotFound(run_id.to_string()))?;
        if stored.finished {
            return Err(Error::RunFinished { run_id: run_id.to_string(), state: stored.state });
        }
        let mut waiting = None;
        for entry in &stored.entries {
            match entry {
                JournalEntry::ToolPending { turn, call_id: id, .. } if id == call_id => waiting = Some(*turn),
                JournalEntry::ToolResult { call_id: id, .. } if id == call_id => waiting = None,
                _ => {}
            }
        }
        let Some(turn) = waiting else {
            return Err(Error::Config(format!(
                "run {run_id} is not waiting for a background result of call `{call_id}`"
            )));
        };
        let (content, is_error, error_kind) = match result.into_tool_result() {
            Ok(output) => (output.content, false, None),
            Err(e) => (format!("Error: {}", e.message()), true, Some(e.kind())),
        };
        let env = &self.inner.env;
        let (mut content, truncated) = cap(content, env.limits.tool_output_limit);
        let (mut is_error, mut error_kind, mut blocked) = (is_error, error_kind, None);
        match env.policies.guardrails.apply(GuardStage::ToolResult, &content) {
            GuardResult::Unchanged => {}
            GuardResult::Redacted(text, _) => content = text,
            GuardResult::Blocked(name, reason) => {
                content = format!("Error: blocked by guardrail `{name}`");
                is_error = true;
                error_kind = Some(ToolErrorKind::Denied);
                blocked = Some((name, reason));
            }
        }
        let entry = JournalEntry::ToolResult {
            turn,
            call_id: call_id.to_string(),
            output: content,
            is_error,
            error_kind,
            truncated,
            blocked,
            duration_ms: 0,
            artifacts: Vec::new(),
        };
        journal.decide(run_id, &entry).await?;
        self.resume(run_id).await
    }
}

/// Cuts `content` to at most `limit` bytes on a character boundary, with a note saying so.
fn cap(content: String, limit: usize) -> (String, bool) {
    if content.len() <= limit {
        return (content, false);
    }
    let mut cut = limit;
    while cut > 0 && !content.is_char_boundary(cut) {
        cut -= 1;
    }
    let total = content.len();
    (format!("{}\n[output truncated: {cut} of {total} bytes shown]", &content[..cut]), true)
}
