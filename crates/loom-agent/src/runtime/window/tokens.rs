//! Token counts of the messages a model receives: the model's own tokenizer when it has one, an
//! estimate otherwise, both corrected from the input tokens the provider reports. Counts are cached
//! per message, so checking a long conversation before each model call costs a few comparisons
//! per message, not a tokenization.

use std::sync::Arc;

use crate::message::{ContentPart, Message, Usage};
use crate::model::TokenCounter;

/// What a message is assumed to cost beyond its text (role and framing).
const MESSAGE_OVERHEAD: u32 = 4;
/// What an image is assumed to cost (providers bill a few hundred to a few thousand tokens).
const IMAGE_TOKENS: u32 = 1_000;

/// Counts tokens: exactly with a tokenizer, else about four bytes a token.
#[derive(Clone)]
pub(crate) struct Counter {
    exact: Option<Arc<dyn TokenCounter>>,
}

impl Counter {
    pub(crate) fn new(exact: Option<Arc<dyn TokenCounter>>) -> Self {
        Counter { exact }
    }

    /// The tokens of a text.
    pub(crate) fn text(&self, text: &str) -> u32 {
        let n = match &self.exact {
            Some(counter) => counter.count(text),
            None => text.len().div_ceil(4),
        };
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The tokens of a message: its text, reasoning, tool calls and images, plus framing.
    pub(crate) fn message(&self, message: &Message) -> u32 {
        let body = match message {
            Message::System { content } => self.text(content),
            Message::User { content } => content
                .iter()
                .map(|p| match p {
                    ContentPart::Text { text } => self.text(text),
                    ContentPart::Image { .. } => IMAGE_TOKENS,
                })
                .fold(0u32, u32::saturating_add),
            Message::Assistant { content, thinking, tool_calls } => {
                let mut n = self.text(content);
                for t in thinking {
                    n = n.saturating_add(self.text(&t.text));
                }
                for c in tool_calls {
                    n = n.saturating_add(self.text(&c.name)).saturating_add(self.text(&c.arguments)).saturating_add(3);
                }
                n
            }
            Message::Tool { name, content, .. } => self.text(content).saturating_add(self.text(name)),
        };
        body.saturating_add(MESSAGE_OVERHEAD)
    }
}

/// A cheap identity of a message's content: when it is unchanged, the cached count stands.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    role: u8,
    len: usize,
    parts: usize,
}

fn fingerprint(message: &Message) -> Fingerprint {
    match message {
        Message::System { content } => Fingerprint { role: 0, len: content.len(), parts: 0 },
        Message::User { content } => Fingerprint {
            role: 1,
            len: content
                .iter()
                .map(|p| match p {
                    ContentPart::Text { text } => text.len(),
                    ContentPart::Image { url, .. } => url.len(),
                })
                .sum(),
            parts: content.len(),
        },
        Message::Assistant { content, thinking, tool_calls } => Fingerprint {
            role: 2,
            len: content.len()
                + thinking.iter().map(|t| t.text.len()).sum::<usize>()
                + tool_calls.iter().map(|c| c.arguments.len() + c.name.len()).sum::<usize>(),
            parts: thinking.len() * 1_000 + tool_calls.len(),
        },
        Message::Tool { content, call_id, .. } => Fingerprint { role: 3, len: content.len(), parts: call_id.len() },
    }
}

/// Cached token counts of a message list, position by position.
#[derive(Default)]
pub(crate) struct Counts {
    cached: Vec<(Fingerprint, u32)>,
}

impl Counts {
    /// The total tokens of `messages`, counting only the messages that are new or changed since
    /// the last call.
    pub(crate) fn total(&mut self, counter: &Counter, messages: &[Message]) -> u64 {
        self.cached.truncate(messages.len());
        let mut total = 0u64;
        for (i, m) in messages.iter().enumerate() {
            let fp = fingerprint(m);
            let n = match self.cached.get(i) {
                Some((cached, n)) if *cached == fp => *n,
                Some(_) => {
                    let n = counter.message(m);
                    self.cached[i] = (fp, n);
                    n
                }
                None => {
                    let n = counter.message(m);
                    self.cached.push((fp, n));
                    n
                }
            };
            total += u64::from(n);
        }
        total
    }

    /// The cached count of message `i` (after [`Counts::total`]).
    pub(crate) fn at(&self, i: usize) -> u64 {
        self.cached.get(i).map_or(0, |(_, n)| u64::from(*n))
    }

    /// Forgets every count (the list was rebuilt).
    pub(crate) fn clear(&mut self) {
        self.cached.clear();
    }
}

/// Corrects counts from what the provider reports: the ratio of reported input tokens to counted
/// ones, smoothed over calls. Starts at 1.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Calibration {
    factor: f64,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration { factor: 1.0 }
    }
}

impl Calibration {
    /// Scales a raw count.
    pub(crate) fn apply(&self, raw: u64) -> u64 {
        (raw as f64 * self.factor).ceil() as u64
    }

    /// Learns from one call: `raw` counted, `usage` reported (nothing when the provider reported
    /// no input tokens).
    pub(crate) fn observe(&mut self, raw: u64, usage: &Usage) {
        let reported = usage.input_tokens + usage.cached_input_tokens + usage.cache_write_tokens;
        if reported == 0 || raw < 64 {
            return;
        }
        let ratio = (reported as f64 / raw as f64).clamp(0.5, 4.0);
        self.factor = (self.factor + ratio) / 2.0;
    }

    /// The current factor.
    #[cfg(test)]
    pub(crate) fn factor(&self) -> f64 {
        self.factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_cached_and_recounted_when_a_message_changes() {
        let counter = Counter::new(None);
        let mut counts = Counts::default();
        let mut messages = vec![Message::system("x".repeat(40)), Message::user("y".repeat(80))];
        assert_eq!(counts.total(&counter, &messages), 10 + 4 + 20 + 4);
        messages.push(Message::tool("c1", "t", "z".repeat(400), false));
        assert_eq!(counts.total(&counter, &messages), 38 + 100 + 4 + 1);
        messages[1] = Message::user("short");
        assert_eq!(counts.total(&counter, &messages), 14 + 6 + 105);
        messages.truncate(1);
        assert_eq!(counts.total(&counter, &messages), 14);
    }

    #[test]
    fn calibration_moves_toward_the_reported_count() {
        let mut c = Calibration::default();
        c.observe(1_000, &Usage { input_tokens: 1_500, ..Usage::default() });
        assert!((c.factor() - 1.25).abs() < 1e-9);
        assert_eq!(c.apply(1_000), 1_250);
        c.observe(1_000, &Usage::default());
        assert!((c.factor() - 1.25).abs() < 1e-9, "no report, no change");
    }
}
