//! Streaming redaction: the output guardrails applied to a model answer while it streams.

use super::env::{GuardResult, Guardrails};
use crate::governance::GuardStage;

/// Filters streamed output through the output guardrails. Text is held back until it is more than
/// [`OutputFilter::HOLD`] bytes behind the stream's end, and the last unbroken word (up to
/// [`OutputFilter::MAX_WORD`] bytes) is held whole, so a pattern split across deltas is seen whole
/// before it is shown, and a long token (a JWT, a key) never shows its first part. A pattern longer
/// than the hold may be shown partly unredacted; the final answer (events, messages, result) is
/// always checked whole.
///
/// To keep long answers linear, the part already shown is committed from time to time: the raw
/// text is cut well behind what is shown, and each delta re-checks only the text after the cut. A
/// cut is kept only when checking the two parts apart gives exactly the text checking them together
/// gave, so no match across it is lost.
pub(crate) struct OutputFilter<'a> {
    guards: &'a Guardrails,
    /// The raw text since the last commit.
    raw: String,
    /// Bytes of the filtered `raw` already shown.
    shown: usize,
    /// Try to commit once `raw` is this long.
    commit_at: usize,
}

impl<'a> OutputFilter<'a> {
    const HOLD: usize = 256;
    const MAX_WORD: usize = 4096;
    const WINDOW: usize = 2048;

    pub(crate) fn new(guards: &'a Guardrails) -> Option<Self> {
        guards.any_at(GuardStage::Output).then_some(OutputFilter {
            guards,
            raw: String::new(),
            shown: 0,
            commit_at: Self::WINDOW,
        })
    }

    fn filter(&self, raw: &str) -> Result<String, (String, String)> {
        match self.guards.apply(GuardStage::Output, raw) {
            GuardResult::Unchanged => Ok(raw.to_string()),
            GuardResult::Redacted(t, _) => Ok(t),
            GuardResult::Blocked(name, reason) => Err((name, reason)),
        }
    }

    /// Adds a delta; returns the text that may be shown now.
    pub(crate) fn push(&mut self, delta: &str) -> Result<Option<String>, (String, String)> {
        self.raw.push_str(delta);
        let text = self.filter(&self.raw)?;
        let mut safe = text.len().saturating_sub(Self::HOLD);
        let word =
            text.rfind(char::is_whitespace).map_or(0, |i| i + text[i..].chars().next().map_or(1, char::len_utf8));
        if text.len() - word <= Self::MAX_WORD {
            safe = safe.min(word);
        }
        while safe > self.shown && !text.is_char_boundary(safe) {
            safe -= 1;
        }
        let out = if safe <= self.shown {
            None
        } else {
            let start = if text.is_char_boundary(self.shown) { self.shown } else { safe };
            self.shown = safe;
            Some(text[start..safe].to_string())
        };
        if self.raw.len() >= self.commit_at {
            self.commit(&text);
        }
        Ok(out)
    }

    /// Drops the raw text up to a cut well behind what is shown, when that is safe (see above).
    fn commit(&mut self, text: &str) {
        self.commit_at = self.raw.len() + Self::HOLD;
        let Some(mut limit) = self.raw.len().checked_sub(text.len().saturating_sub(self.shown) + Self::HOLD) else {
            return;
        };
        while !self.raw.is_char_boundary(limit) {
            limit -= 1;
        }
        let cut = self.raw[..limit].rfind(char::is_whitespace).filter(|c| limit - c < Self::HOLD).unwrap_or(limit);
        if cut == 0 {
            return;
        }
        let (Ok(head), Ok(tail)) = (self.filter(&self.raw[..cut]), self.filter(&self.raw[cut..])) else { return };
        if head.len() > self.shown
            || head.len() + tail.len() != text.len()
            || !text.starts_with(&head)
            || !text.ends_with(&tail)
        {
            return;
        }
        self.raw.drain(..cut);
        self.shown -= head.len();
        self.commit_at = self.raw.len() + Self::WINDOW;
    }

    /// The rest, at the end of the stream.
    pub(crate) fn finish(&mut self) -> Result<String, (String, String)> {
        let text = self.filter(&self.raw)?;
        let start = self.shown.min(text.len());
        let start = if text.is_char_boundary(start) { start } else { text.len() };
        self.shown = text.len();
        Ok(text[start..].to_string())
    }
}
