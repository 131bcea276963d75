//! How a chat turn is shown: the answer streams to stdout as it arrives; tool calls (→), their
//! results (←), approvals and errors go to stderr, as with `loom run`. The same view serves a local
//! agent's events and a server's (parsed from its SSE stream).

use std::io::{self, Write};

use loom_agent::event::DeltaKind;
use loom_agent::{Event, EventKind, Message, RunState};

use crate::render::{describe_call, first_line};

/// How much of a tool result's first line is shown.
const RESULT_WIDTH: usize = 120;

/// How a turn ended, as the events said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The run answered.
    Completed,
    /// The run paused for an approval (a server's deferred approval).
    Suspended,
    /// The run failed, was cancelled or was interrupted.
    NotCompleted(RunState),
}

/// The view of one chat (kept across turns; [`ChatView::start_turn`] resets a turn's state).
#[derive(Debug, Default)]
pub struct ChatView {
    /// The turn whose text was last streamed.
    streamed_turn: Option<u32>,
    /// The turn of the last model answer.
    last_turn: u32,
    /// Whether a stdout line was started and not ended.
    open: bool,
}

impl ChatView {
    /// Forgets the previous turn.
    pub fn start_turn(&mut self) {
        self.streamed_turn = None;
        self.last_turn = 0;
    }

    /// Shows one event; `Some` when it ended the run. Fails only when stdout cannot be written.
    pub fn event(&mut self, event: &Event) -> io::Result<Option<Ended>> {
        match &event.kind {
            EventKind::ModelDelta(delta) if delta.kind == DeltaKind::Text && !delta.text.is_empty() => {
                self.streamed_turn = Some(delta.turn);
                self.stdout(&delta.text)?;
            }
            EventKind::ModelResponse(response) => self.last_turn = response.turn,
            EventKind::ToolCall(call) => self.note(&format!("→ {}", describe_call(&call.call)))?,
            EventKind::ToolResult(result) => {
                let summary = first_line(result.output.strip_prefix("Error: ").unwrap_or(&result.output), RESULT_WIDTH);
                let line = if result.is_error {
                    format!("← {}: error: {summary}", result.name)
                } else {
                    format!("← {}: {summary}", result.name)
                };
                self.note(&line)?;
            }
            EventKind::RunCompleted(done) => {
                if self.streamed_turn != Some(self.last_turn) {
                    self.stdout(&done.output)?;
                }
                self.end_line()?;
                return Ok(Some(Ended::Completed));
            }
            EventKind::RunSuspended(_) => {
                self.end_line()?;
                return Ok(Some(Ended::Suspended));
            }
            EventKind::RunFailed(e) | EventKind::RunCancelled(e) | EventKind::RunInterrupted(e) => {
                let state = match &event.kind {
                    EventKind::RunCancelled(_) => RunState::Cancelled,
                    EventKind::RunInterrupted(_) => RunState::Interrupted,
                    _ => RunState::Failed,
                };
                let mut line = format!("error: run {} {state}: {}", event.run_id, e.error.message);
                if let Some(reason) = &e.error.reason {
                    line.push_str(&format!(" (reason: {reason})"));
                }
                self.note(&line)?;
                return Ok(Some(Ended::NotCompleted(state)));
            }
            _ => {}
        }
        Ok(None)
    }

    /// Writes a line to stderr, on a line of its own.
    pub fn note(&mut self, line: &str) -> io::Result<()> {
        self.end_line()?;
        let _ = writeln!(io::stderr().lock(), "{line}");
        Ok(())
    }

    /// Ends the stdout line, when one is open.
    pub fn end_line(&mut self) -> io::Result<()> {
        if self.open {
            let mut out = io::stdout().lock();
            writeln!(out)?;
            out.flush()?;
            self.open = false;
        }
        Ok(())
    }

    fn stdout(&mut self, text: &str) -> io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        self.open = !text.ends_with('\n');
        Ok(())
    }
}

/// A session's history for `/history`: one line per message (`you:`, `assistant:`, tool calls
/// and results), on stdout.
pub fn print_history(messages: &[Message]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let mut shown = 0;
    for m in messages {
        match m {
            Message::System { .. } => continue,
            Message::User { .. } => writeln!(out, "you: {}", m.text())?,
            Message::Assistant { content, tool_calls, .. } => {
                if !content.is_empty() {
                    writeln!(out, "assistant: {content}")?;
                }
                for call in tool_calls {
                    writeln!(out, "  → {}", describe_call(call))?;
                }
            }
            Message::Tool { name, content, is_error, .. } => {
                let mark = if *is_error { "error: " } else { "" };
                writeln!(out, "  ← {name}: {mark}{}", first_line(content, RESULT_WIDTH))?;
            }
        }
        shown += 1;
    }
    if shown == 0 {
        writeln!(out, "(no messages in this session yet)")?;
    }
    out.flush()
}
