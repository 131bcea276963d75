//! Context management: before each model call, the conversation the model receives is kept under
//! the context window. Over the threshold, old tool results are shortened first; if that is not
//! enough, older turns are replaced by a summary written by a model call. The run's own message
//! list (its transcript, the session's history) stays whole: what changes is the model's view of
//! it, described by a [`Compaction`] that is journaled (a resumed run rebuilds the same view
//! without summarizing again) and whose summary the session keeps for its next run.
//!
//! A tool call is never separated from its result: a summary always ends just before an assistant
//! message, so every tool result after it follows its call.

mod tokens;

use std::sync::Arc;

use super::context::RunCx;
use crate::error::RunError;
use crate::event::{ContextCompacted, EventKind};
use crate::message::{Message, Usage};
use crate::model::{Generation, TokenCounter};
use crate::store::{Compaction, JournalEntry};
pub(crate) use tokens::{Calibration, Counter, Counts};

/// The lead line of a summary message.
pub(crate) const SUMMARY_LEAD: &str =
    "Summary of the earlier conversation (older messages were condensed to fit the context window):";

/// The instructions of the summarizing call.
pub(crate) const SUMMARIZER_PROMPT: &str = "You condense the earlier part of a conversation between a user, an AI agent \
and its tools, so the agent can continue the work without it. Write a concise summary that keeps: every decision made \
and why; facts learned (names, numbers, paths, identifiers, results of tool calls); what the user asked for; and the \
open tasks (what remains to do, and what was about to happen next). Plain text, no preamble.";

/// Counts the tokens of a conversation the way context management does before each model call:
/// with the model's tokenizer when it has one (else about four bytes a token), caching each
/// message's count so a second call on a grown list counts only the new messages.
///
/// ```
/// use loom_agent::message::Message;
/// use loom_agent::runtime::ContextMeter;
///
/// let mut meter = ContextMeter::new(None);
/// let messages = vec![Message::system("x".repeat(40)), Message::user("y".repeat(80))];
/// assert_eq!(meter.tokens(&messages), 38);
/// ```
pub struct ContextMeter {
    counter: Counter,
    counts: Counts,
}

impl ContextMeter {
    /// A meter counting with `counter` (`None`: the estimate).
    pub fn new(counter: Option<Arc<dyn TokenCounter>>) -> Self {
        ContextMeter { counter: Counter::new(counter), counts: Counts::default() }
    }

    /// The tokens of `messages` (their text, tool calls and a few tokens of framing each).
    pub fn tokens(&mut self, messages: &[Message]) -> u64 {
        self.counts.total(&self.counter, messages)
    }
}

/// The context settings of an agent, resolved when it is built.
#[derive(Clone)]
pub(crate) struct ContextSettings {
    /// The context window, in tokens.
    pub(crate) window: u32,
    /// Tokens kept for the answer.
    pub(crate) reserve: u32,
    /// Above this many tokens, the conversation is compacted.
    pub(crate) threshold: u64,
    /// The most recent messages never summarized nor shortened.
    pub(crate) keep_recent: usize,
    /// Characters kept of a shortened tool result.
    pub(crate) keep_chars: usize,
    /// How tokens are counted.
    pub(crate) counter: Counter,
}

impl ContextSettings {
    /// Settings for a window, an output reserve and a threshold share.
    pub(crate) fn new(
        window: u32,
        reserve: u32,
        share: f32,
        keep_recent: usize,
        keep_chars: usize,
        counter: Option<Arc<dyn TokenCounter>>,
    ) -> Self {
        let reserve = reserve.min(window / 4);
        let usable = u64::from(window.saturating_sub(reserve));
        let threshold = ((usable as f64) * f64::from(share.clamp(0.05, 1.0))) as u64;
        ContextSettings { window, reserve, threshold, keep_recent, keep_chars, counter: Counter::new(counter) }
    }

    /// The most tokens a summary may take.
    fn summary_budget(&self) -> u32 {
        u32::try_from((self.threshold / 4).clamp(64, 2_000)).unwrap_or(2_000)
    }
}

/// One run's context state: cached counts, the calibration, and the model's view once compacted.
pub(crate) struct WindowState {
    settings: ContextSettings,
    counts: Counts,
    calibration: Calibration,
    /// The current compaction, once there is one.
    pub(crate) compaction: Option<Compaction>,
    /// The model's view of the conversation (when compacted).
    view: Vec<Message>,
    /// How many of the run's messages the view reflects.
    synced: usize,
    /// The tools' tokens, per tool registry (by address).
    tools: Option<(usize, u64)>,
    /// The raw count of the last request sent.
    last_raw: u64,
    /// Leading messages never summarized (instructions, context, memory).
    pub(crate) prefix: usize,
}

impl WindowState {
    pub(crate) fn new(settings: ContextSettings) -> Self {
        WindowState {
            settings,
            counts: Counts::default(),
            calibration: Calibration::default(),
            compaction: None,
            view: Vec::new(),
            synced: 0,
            tools: None,
            last_raw: 0,
            prefix: 0,
        }
    }
}

/// A summary as the model receives it.
pub(crate) fn summary_message(summary: &str) -> Message {
    Message::user(format!("{SUMMARY_LEAD}\n{summary}"))
}

/// `message` with its content cut to `keep` characters, when it is a longer tool result.
fn shortened(message: &Message, keep: usize) -> Option<Message> {
    let Message::Tool { call_id, name, content, is_error } = message else { return None };
    let total = content.chars().count();
    if total <= keep {
        return None;
    }
    let head: String = content.chars().take(keep).collect();
    Some(Message::Tool {
        call_id: call_id.clone(),
        name: name.clone(),
        content: format!("{head}\n… [shortened to fit the context window: {total} characters in all]"),
        is_error: *is_error,
    })
}

/// The model's view of `messages` under `c`.
pub(crate) fn build_view(messages: &[Message], c: &Compaction) -> Vec<Message> {
    let prefix = c.prefix.min(messages.len());
    let cut = c.cut.clamp(prefix, messages.len());
    let mut view = Vec::with_capacity(prefix + 1 + messages.len() - cut);
    view.extend_from_slice(&messages[..prefix]);
    if let Some(summary) = &c.summary {
        view.push(summary_message(summary));
    }
    for (i, m) in messages.iter().enumerate().skip(cut) {
        let short = if i < c.shorten_before { shortened(m, c.keep_chars) } else { None };
        view.push(short.unwrap_or_else(|| m.clone()));
    }
    view
}

/// How many tool results `c` shortens in `messages`.
fn shortened_count(messages: &[Message], c: &Compaction) -> u32 {
    let end = c.shorten_before.min(messages.len());
    let start = c.cut.min(end);
    messages[start..end].iter().filter(|m| shortened(m, c.keep_chars).is_some()).count() as u32
}

/// The conversation span as text for the summarizer, each message cut to `per` characters.
fn render(messages: &[Message], per: usize) -> String {
    let cut = |s: &str| -> String {
        if s.chars().count() <= per {
            s.to_string()
        } else {
            let mut t: String = s.chars().take(per).collect();
            t.push_str(" …");
            t
        }
    };
    let mut out = String::new();
    for m in messages {
        match m {
            Message::System { content } => out.push_str(&format!("[system] {}\n", cut(content))),
            Message::User { .. } => out.push_str(&format!("[user] {}\n", cut(&m.text()))),
            Message::Assistant { content, tool_calls, .. } => {
                if !content.is_empty() {
                    out.push_str(&format!("[assistant] {}\n", cut(content)));
                }
                for c in tool_calls {
                    out.push_str(&format!("[assistant calls {}] {}\n", c.name, cut(&c.arguments)));
                }
            }
            Message::Tool { name, content, is_error, .. } => {
                let tag = if *is_error { "tool error" } else { "tool result" };
                out.push_str(&format!("[{tag} {name}] {}\n", cut(content)));
            }
        }
    }
    out
}

impl RunCx {
    /// Brings the view up to date with messages added since the last call.
    fn sync_view(&mut self) {
        let Some(w) = self.window.as_deref_mut() else { return };
        let Some(c) = &w.compaction else { return };
        if self.messages.len() < w.synced {
            // The list shrank under us (an architecture rewrote it): rebuild.
            w.view = build_view(&self.messages, c);
            w.counts.clear();
        } else {
            w.view.extend_from_slice(&self.messages[w.synced..]);
        }
        w.synced = self.messages.len();
    }

    /// The tokens of the next request as it stands (calibrated), with the raw count.
    fn measure(&mut self) -> (u64, u64) {
        let tools_key = Arc::as_ptr(&self.tools) as *const () as usize;
        let Some(w) = self.window.as_deref_mut() else { return (0, 0) };
        let tools = match w.tools {
            Some((key, n)) if key == tools_key => n,
            _ => {
                let specs = serde_json::to_string(self.tools.specs()).unwrap_or_default();
                let n = u64::from(w.settings.counter.text(&specs));
                w.tools = Some((tools_key, n));
                n
            }
        };
        let list = if w.compaction.is_some() { &w.view } else { &self.messages };
        let raw = w.counts.total(&w.settings.counter, list) + tools;
        (w.calibration.apply(raw), raw)
    }

    /// Learns from the usage a live model call reported.
    pub(super) fn observe_usage(&mut self, usage: &Usage) {
        if let Some(w) = self.window.as_deref_mut() {
            let raw = w.last_raw;
            w.calibration.observe(raw, usage);
        }
    }

    /// Before model call `turn`: the journaled compaction of a resumed run, or, live, compaction
    /// when the conversation passes the threshold.
    pub(super) async fn fit_context(&mut self, turn: u32) -> Result<(), RunError> {
        if self.window.is_none() {
            return Ok(());
        }
        if let Some(recorded) = self.recorder.compaction(turn) {
            self.set_compaction(recorded);
            return Ok(());
        }
        self.sync_view();
        let live = !self.recorder.has_model(turn);
        let (tokens, raw) = self.measure();
        if let Some(w) = self.window.as_deref_mut() {
            w.last_raw = raw;
        }
        let Some(w) = self.window.as_deref() else { return Ok(()) };
        if !live || tokens <= w.settings.threshold {
            return Ok(());
        }
        self.compact(turn, tokens).await
    }

    fn set_compaction(&mut self, c: Compaction) {
        let Some(w) = self.window.as_deref_mut() else { return };
        w.view = build_view(&self.messages, &c);
        w.synced = self.messages.len();
        w.counts.clear();
        w.compaction = Some(c);
    }

    /// Compacts: shortens old tool results, then summarizes older turns if still over.
    async fn compact(&mut self, turn: u32, before: u64) -> Result<(), RunError> {
        let Some(w) = self.window.as_deref() else { return Ok(()) };
        let settings = w.settings.clone();
        let previous = w.compaction.clone();
        let prefix = w.prefix.min(self.messages.len());
        let mut c = previous.clone().unwrap_or(Compaction {
            prefix,
            cut: prefix,
            summary: None,
            shorten_before: 0,
            keep_chars: settings.keep_chars,
            usage: Usage::default(),
        });
        c.usage = Usage::default();
        let protect = self.messages.len().saturating_sub(settings.keep_recent).max(c.cut);
        c.shorten_before = c.shorten_before.max(protect);
        c.keep_chars = settings.keep_chars;
        self.set_compaction(c.clone());
        let (after, _) = self.measure();
        if after > settings.threshold
            && let Some(cut) = self.choose_cut(&c, protect, &settings)
        {
            let summary = self.summarize(&c, cut, &settings).await?;
            c.usage = summary.1;
            c.summary = Some(summary.0);
            c.cut = cut;
            self.set_compaction(c.clone());
        }
        let (after, raw) = self.measure();
        if let Some(w) = self.window.as_deref_mut() {
            w.last_raw = raw;
        }
        let old_cut = previous.as_ref().map_or(prefix, |p| p.cut);
        let event = ContextCompacted {
            turn,
            tokens_before: before,
            tokens_after: after,
            threshold: settings.threshold,
            shortened: shortened_count(&self.messages, &c),
            summarized: u32::try_from(c.cut.saturating_sub(old_cut)).unwrap_or(u32::MAX),
        };
        self.log.emit(EventKind::ContextCompacted(event));
        self.recorder.record(|| JournalEntry::ContextCompacted { turn, compaction: c }).await
    }

    /// Where the summary should end: the earliest assistant message at or before `protect` whose
    /// suffix fits half the threshold, or, when none fits, the latest one (the most summarized).
    fn choose_cut(&mut self, c: &Compaction, protect: usize, settings: &ContextSettings) -> Option<usize> {
        let w = self.window.as_deref()?;
        // View index of full index i (i ≥ c.cut): prefix + summary + (i - cut).
        let offset = c.prefix + usize::from(c.summary.is_some());
        let prefix_tokens: u64 = (0..c.prefix).map(|i| w.counts.at(i)).sum::<u64>() + w.tools.map_or(0, |(_, n)| n);
        let target = settings.threshold / 2;
        let reserve = u64::from(settings.summary_budget());
        let (mut best, mut latest) = (None, None);
        let mut suffix = 0u64;
        for i in (c.cut + 1..self.messages.len()).rev() {
            suffix += w.counts.at(offset + i - c.cut);
            let fits = w.calibration.apply(prefix_tokens + reserve + suffix) <= target;
            let candidate = i <= protect && matches!(self.messages[i], Message::Assistant { .. });
            if candidate {
                latest = latest.or(Some(i));
                if fits {
                    best = Some(i);
                }
            }
            if !fits && latest.is_some() {
                break;
            }
        }
        best.or(latest)
    }

    /// Summarizes the view's span before full index `cut` (the earlier summary included) with a
    /// model call: the summary and the call's usage.
    async fn summarize(
        &mut self,
        c: &Compaction,
        cut: usize,
        settings: &ContextSettings,
    ) -> Result<(String, Usage), RunError> {
        let Some(w) = self.window.as_deref() else { return Ok((String::new(), Usage::default())) };
        let start = c.prefix;
        let end = (c.prefix + usize::from(c.summary.is_some()) + (cut - c.cut)).min(w.view.len());
        let span = &w.view[start..end];
        // The rendered span must fit the summarizer's own window.
        let room_tokens = u64::from(settings.window.saturating_sub(settings.reserve))
            .saturating_sub(u64::from(settings.summary_budget()) + 512);
        let room_chars = usize::try_from(room_tokens * 3).unwrap_or(usize::MAX).max(2_000);
        let per = (room_chars / span.len().max(1)).max(200);
        let text = render(span, per);
        let text: String = text.chars().take(room_chars).collect();
        let messages = [
            Message::system(SUMMARIZER_PROMPT),
            Message::user(format!("The conversation so far:\n\n{text}\nWrite the summary now.")),
        ];
        let generation = Generation { max_output_tokens: Some(settings.summary_budget()), ..Generation::default() };
        let model = self.env.model.clone();
        let response = self.side_call(&model, &messages, None, &generation).await?;
        let summary = response.text.trim().to_string();
        if summary.is_empty() {
            return Err(RunError::new(
                crate::error::RunErrorKind::Model,
                "context management: the summarizing model call returned no text",
            ));
        }
        Ok((summary, response.usage))
    }

    /// The compaction to store as the session's summary when the run ends, with how many messages
    /// of the session's history (after this run's are appended) it stands for: `None` when the run
    /// did not summarize. `appended` is how many of this run's messages the history receives.
    pub(crate) fn session_summary(&self, appended: usize) -> Option<(String, usize)> {
        let w = self.window.as_deref()?;
        let c = w.compaction.as_ref()?;
        let summary = c.summary.clone()?;
        let base = self.history_base?;
        if c.cut > base + appended {
            return None;
        }
        let covers = (self.summary_covers + c.cut).checked_sub(w.prefix + usize::from(self.summary_covers > 0))?;
        Some((summary, covers))
    }
}

/// The messages a model call sends: the conversation, or its compacted view. A free function so a
/// caller can borrow the two fields without borrowing the whole run context.
pub(super) fn view<'a>(window: &'a Option<Box<WindowState>>, messages: &'a [Message]) -> &'a [Message] {
    match window {
        Some(w) if w.compaction.is_some() => &w.view,
        _ => messages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ToolCall;

    #[test]
    fn the_view_keeps_the_prefix_summarizes_and_shortens() {
        let call = ToolCall { id: "c1".into(), name: "t".into(), arguments: "{}".into() };
        let messages = vec![
            Message::system("s"),
            Message::user("q1"),
            Message::Assistant { content: String::new(), thinking: vec![], tool_calls: vec![call] },
            Message::tool("c1", "t", "x".repeat(50), false),
            Message::assistant("a1"),
            Message::user("q2"),
        ];
        let c = Compaction {
            prefix: 1,
            cut: 2,
            summary: Some("S".into()),
            shorten_before: 4,
            keep_chars: 10,
            ..Compaction::default()
        };
        let view = build_view(&messages, &c);
        assert_eq!(view.len(), 6);
        assert_eq!(view[1], summary_message("S"));
        assert!(view[3].text().starts_with("xxxxxxxxxx\n… [shortened"), "{:?}", view[3]);
        assert_eq!(view[4], messages[4]);
        assert_eq!(shortened_count(&messages, &c), 1);
    }
}
