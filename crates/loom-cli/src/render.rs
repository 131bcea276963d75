//! The human view of a run: the answer on stdout as it streams, everything else on stderr.
//!
//! ```text
//! $ loom run --model scripted:demo.json "What is Loom?"
//! I should look it up.                          (thinking, dimmed, stderr)
//! → lookup({"q":"loom"})                        (stderr)
//! ← lookup: error (not_found): unknown tool …   (stderr)
//! Loom is an agent runtime.                     (stdout)
//! ```

use std::io::{self, IsTerminal, Write};

use loom_agent::event::{DeltaKind, PlanStepStatus, ToolResultEvent};
use loom_agent::{Event, EventKind, RunResult, RunState, ToolCall};

/// How much of a tool call's arguments is shown.
const ARGS_WIDTH: usize = 160;
/// How much of a tool result's first line is shown.
const RESULT_WIDTH: usize = 120;

/// Which stream has a line that was started but not ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpenLine {
    None,
    Stdout,
    Stderr,
}

/// ANSI styles for stderr, on only when stderr is a terminal and `NO_COLOR` is unset.
#[derive(Clone, Copy, Debug)]
struct Style {
    ansi: bool,
}

impl Style {
    fn detect() -> Self {
        Style { ansi: io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() }
    }

    fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }

    fn red(self, text: &str) -> String {
        self.paint("31", text)
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.ansi { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }
}

/// Renders a run's events for a person as they arrive.
#[derive(Debug)]
pub struct HumanView {
    style: Style,
    /// Whether answer text streams to stdout (off when the parsed structured value is printed).
    stream_text: bool,
    open: OpenLine,
    /// The turn of the last model answer.
    last_turn: u32,
    /// The turn whose text was last streamed to stdout.
    streamed_turn: Option<u32>,
    /// Whether anything was written to stdout.
    wrote_stdout: bool,
}

impl HumanView {
    /// A view that streams answer text when `stream_text`, else prints only the parsed value at the end.
    pub fn new(stream_text: bool) -> Self {
        HumanView {
            style: Style::detect(),
            stream_text,
            open: OpenLine::None,
            last_turn: 0,
            streamed_turn: None,
            wrote_stdout: false,
        }
    }

    /// Shows one event. Fails only when stdout cannot be written.
    pub fn event(&mut self, event: &Event) -> io::Result<()> {
        match &event.kind {
            EventKind::ModelDelta(delta) => match delta.kind {
                DeltaKind::Text if self.stream_text => {
                    self.streamed_turn = Some(delta.turn);
                    self.stdout(&delta.text)?;
                }
                DeltaKind::Text => {}
                DeltaKind::Thinking => self.stderr(&self.style.dim(&delta.text), delta.text.ends_with('\n')),
            },
            EventKind::ModelResponse(response) => self.last_turn = response.turn,
            EventKind::ToolCall(call) => self.stderr_line(&format!("→ {}", describe_call(&call.call)))?,
            EventKind::ToolResult(result) => self.stderr_line(&format!("← {}", self.describe_result(result)))?,
            EventKind::ArtifactCreated(created) => {
                let artifact = &created.artifact;
                self.stderr_line(&format!("+ artifact {} ({})", artifact.name, artifact.media_type))?;
            }
            EventKind::OutputInvalid(invalid) => {
                let line = format!(
                    "! the answer does not match the output schema (attempt {}): {}",
                    invalid.attempt,
                    first_line(&invalid.error, RESULT_WIDTH)
                );
                self.stderr_line(&line)?;
            }
            EventKind::PlanCreated(plan) => {
                let steps: Vec<String> = plan.steps.iter().map(|s| format!("{}: {}", s.id, s.description)).collect();
                self.stderr_line(&format!("plan (revision {}): {}", plan.revision, steps.join("; ")))?;
            }
            EventKind::PlanStep(step) if step.status != PlanStepStatus::Started => {
                let status = if step.status == PlanStepStatus::Completed { "done" } else { "failed" };
                self.stderr_line(&format!("step {} {status}", step.id))?;
            }
            EventKind::Critique(c) => {
                let verdict = if c.passed { "passed" } else { "did not pass" };
                let line = format!("critique {}: {verdict}: {}", c.round, first_line(&c.feedback, RESULT_WIDTH));
                self.stderr_line(&line)?;
            }
            EventKind::ModelChanged(changed) => {
                self.stderr_line(&format!("! the run continues on {} (it started on {})", changed.to, changed.from))?;
            }
            EventKind::CriteriaChecked(checked) => {
                for v in &checked.verdicts {
                    let mark = if v.passed { "✓" } else { "✗" };
                    let line = format!("{mark} criterion (round {}): {} — {}", checked.round, v.criterion, v.reason);
                    self.stderr_line(&first_line(&line, RESULT_WIDTH))?;
                }
            }
            EventKind::ContextCompacted(c) => {
                self.stderr_line(&format!("~ context compacted: {} → {} tokens", c.tokens_before, c.tokens_after))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Ends the view: the answer when the run completed (unless it already streamed), else the
    /// error line on stderr.
    pub fn finish(&mut self, result: &RunResult) -> io::Result<()> {
        if result.state != RunState::Completed {
            self.end_line()?;
            let mut err = io::stderr().lock();
            let _ = writeln!(err, "{}", self.style.red(&error_line(result)));
            return Ok(());
        }
        if let Some(parsed) = result.parsed.as_ref().filter(|_| !self.stream_text) {
            let pretty = serde_json::to_string_pretty(parsed).unwrap_or_else(|_| parsed.to_string());
            self.stdout(&pretty)?;
        } else if self.streamed_turn != Some(self.last_turn) {
            self.stdout(&result.output)?;
        }
        self.end_line_on(OpenLine::Stderr)?;
        if self.open == OpenLine::Stdout {
            self.end_line()?;
        } else if !self.wrote_stdout {
            // An empty answer is still one line.
            let mut out = io::stdout().lock();
            writeln!(out)?;
            out.flush()?;
        }
        Ok(())
    }

    fn describe_result(&self, result: &ToolResultEvent) -> String {
        if !result.is_error {
            return format!("{}: {}", result.name, first_line(&result.output, RESULT_WIDTH));
        }
        // The model reads "Error: …"; the label below already says so.
        let message = result.output.strip_prefix("Error: ").unwrap_or(&result.output);
        let summary = first_line(message, RESULT_WIDTH);
        let label = match result.error_kind.and_then(|kind| serde_json::to_value(kind).ok()) {
            Some(serde_json::Value::String(kind)) => format!("error ({kind})"),
            _ => "error".to_string(),
        };
        format!("{}: {} {summary}", result.name, self.style.red(&format!("{label}:")))
    }

    /// Writes answer text to stdout and flushes it, so it shows as it arrives.
    fn stdout(&mut self, text: &str) -> io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        self.end_line_on(OpenLine::Stderr)?;
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        self.wrote_stdout = true;
        self.open = if text.ends_with('\n') { OpenLine::None } else { OpenLine::Stdout };
        Ok(())
    }

    /// Writes text to stderr; `ends_line` says whether it ends with a newline.
    fn stderr(&mut self, text: &str, ends_line: bool) {
        if text.is_empty() {
            return;
        }
        // A failure to end the stdout line shows up again at the next stdout write.
        let _ = self.end_line_on(OpenLine::Stdout);
        let _ = io::stderr().lock().write_all(text.as_bytes());
        self.open = if ends_line { OpenLine::None } else { OpenLine::Stderr };
    }

    /// Writes one whole line to stderr, on a line of its own.
    fn stderr_line(&mut self, line: &str) -> io::Result<()> {
        self.end_line()?;
        let _ = writeln!(io::stderr().lock(), "{line}");
        Ok(())
    }

    /// Ends whichever line is open.
    fn end_line(&mut self) -> io::Result<()> {
        self.end_line_on(self.open)
    }

    /// Ends the open line when it is on `stream`.
    fn end_line_on(&mut self, stream: OpenLine) -> io::Result<()> {
        if self.open != stream {
            return Ok(());
        }
        match stream {
            OpenLine::None => {}
            OpenLine::Stdout => {
                let mut out = io::stdout().lock();
                writeln!(out)?;
                out.flush()?;
            }
            OpenLine::Stderr => {
                let _ = writeln!(io::stderr().lock());
            }
        }
        self.open = OpenLine::None;
        Ok(())
    }
}

/// `error: run <id> <state>: <message>`, with the reason of an interruption.
pub fn error_line(result: &RunResult) -> String {
    let mut line = format!("error: run {} {}", result.run_id, result.state);
    if let Some(error) = &result.error {
        line.push_str(": ");
        line.push_str(&error.message);
        if let Some(reason) = &error.reason {
            line.push_str(&format!(" (reason: {reason})"));
        }
    }
    line
}

/// `name(arguments)`, with the arguments as compact JSON when they parse, cut to a readable width.
pub(crate) fn describe_call(call: &ToolCall) -> String {
    let arguments = match serde_json::from_str::<serde_json::Value>(&call.arguments) {
        Ok(value) => value.to_string(),
        Err(_) => call.arguments.split_whitespace().collect::<Vec<_>>().join(" "),
    };
    format!("{}({})", call.name, truncate(&arguments, ARGS_WIDTH))
}

/// The first non-empty line of a text, cut to `width` characters; `…` marks anything left out.
pub(crate) fn first_line(text: &str, width: usize) -> String {
    let trimmed = text.trim();
    let mut lines = trimmed.lines();
    let first = lines.next().unwrap_or_default().trim_end();
    let cut = truncate(first, width);
    if lines.next().is_some() && !cut.ends_with('…') { format!("{cut}…") } else { cut }
}

/// Cuts a text to `width` characters, marking the cut with `…`.
fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_lines_are_cut_and_marked() {
        assert_eq!(first_line("ok", 10), "ok");
        assert_eq!(first_line("\n  one\ntwo", 10), "one…");
        assert_eq!(first_line("abcdefghijkl", 5), "abcd…");
        assert_eq!(first_line("", 5), "");
        assert_eq!(truncate("héllo wörld", 6), "héllo…");
    }

    #[test]
    fn calls_show_compact_arguments() {
        let call = ToolCall { id: "c1".into(), name: "lookup".into(), arguments: "{ \"q\" :\n \"loom\" }".into() };
        assert_eq!(describe_call(&call), r#"lookup({"q":"loom"})"#);
        let raw = ToolCall { id: "c2".into(), name: "lookup".into(), arguments: "{not json\n  at all".into() };
        assert_eq!(describe_call(&raw), "lookup({not json at all)");
    }
}
