//! The decoder of a streamed Chat Completions response: `chat.completion.chunk` events until
//! `[DONE]`. Each event goes through the hand-written scanner ([`super::scan`]) when it is sure of
//! the event, else through serde into the same typed structs ([`super::chunk`]); an event that
//! differs from the one before only in its text (or arguments) piece is not scanned again.

use std::borrow::Cow;
use std::collections::HashMap;

use loom_core::error::ModelError;
use loom_core::message::{FinishReason, Usage};
use loom_core::model::ModelChunk;

use super::{chunk, refused, scan, stream_error};
use crate::http::StreamDecoder;
use crate::sse::SseEvent;

/// Decodes `chat.completion.chunk` events until `[DONE]`.
#[derive(Default)]
pub(super) struct ChatDecoder {
    pub(super) finish: Option<FinishReason>,
    /// The server's tool-call index → our position (servers need not number calls from 0).
    seen_calls: HashMap<u64, usize>,
    /// Calls seen so far.
    calls: usize,
    /// For servers that send no index: the id of the call being streamed, and its position.
    unindexed: Option<(Option<String>, usize)>,
    /// Refusal text (`delta.refusal`), reported as an error at the end.
    pub(super) refusal: String,
    /// The bytes around the text of the last event that held nothing but a text piece.
    pub(super) text_shape: Shape,
    /// The same for a piece of tool-call arguments, with that call's index.
    pub(super) args_shape: Shape,
    args_index: Option<u64>,
}

/// An event's bytes before and after one string value. Events in a stream differ mostly in that
/// one string, so the next event is checked against these bytes before it is scanned.
#[derive(Default)]
pub(super) struct Shape {
    prefix: String,
    suffix: String,
    /// Where a top-level string that may change from event to event (see [`scan::Spans`]) sits
    /// in `suffix`.
    padding: Option<(usize, usize)>,
}

impl Shape {
    fn learn(&mut self, data: &str, span: Option<(usize, usize)>, padding: Option<(usize, usize)>) {
        self.prefix.clear();
        self.suffix.clear();
        self.padding = None;
        if let Some((start, end)) = span
            && let (Some(prefix), Some(suffix)) = (data.get(..start), data.get(end..))
        {
            self.prefix.push_str(prefix);
            self.suffix.push_str(suffix);
            self.padding = padding.filter(|&(p, _)| p >= end).map(|(p, q)| (p - end, q - end));
        }
    }

    pub(super) fn matches<'a>(&self, data: &'a str) -> Option<Cow<'a, str>> {
        scan::slot(data, &self.prefix, &self.suffix, self.padding)
    }
}

impl ChatDecoder {
    /// Our position for one tool-call piece.
    fn call_index(&mut self, raw_index: Option<u64>, id: Option<&str>) -> usize {
        if let Some(raw) = raw_index {
            let next = self.calls;
            let index = *self.seen_calls.entry(raw).or_insert(next);
            if index == next {
                self.calls += 1;
            }
            return index;
        }
        // No index: a piece with a new id starts a new call; any other piece continues the last one.
        let id = id.filter(|s| !s.is_empty());
        match &self.unindexed {
            Some((current, index)) if id.is_none() || id == current.as_deref() => *index,
            _ => {
                let index = self.calls;
                self.calls += 1;
                self.unindexed = Some((id.map(str::to_string), index));
                index
            }
        }
    }
}

pub(super) fn finish_reason_str(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

impl ChatDecoder {
    /// One event's JSON: the hand-written scanner when it is sure of the event, else serde (which
    /// then also reports any error, with serde's message).
    pub(super) fn decode(&mut self, data: &str, fast: bool, out: &mut Vec<ModelChunk>) -> Result<(), ModelError> {
        if fast {
            if let Some(text) = self.text_shape.matches(data) {
                // What `apply` does with a delta that holds only this text.
                if !text.is_empty() {
                    out.push(ModelChunk::Text(text.into_owned()));
                }
                return Ok(());
            }
            if let Some(arguments) = self.args_shape.matches(data) {
                // What `apply` does with a delta that holds only this piece of arguments.
                let index = self.call_index(self.args_index, None);
                out.push(ModelChunk::ToolCallDelta { index, id: None, name: None, arguments: arguments.into_owned() });
                return Ok(());
            }
            if let Some((choice, usage, spans)) = scan::chunk(data) {
                if usage.is_none() {
                    self.learn(data, choice.as_ref(), &spans);
                }
                self.apply(choice, usage, out);
                return Ok(());
            }
        }
        let chunk::Obj(v): chunk::Obj<chunk::Chunk<'_>> = serde_json::from_str(data)
            .map_err(|e| ModelError::Protocol(format!("invalid JSON in the event stream: {e}")))?;
        if let Some(err) = v.error.as_ref().filter(|e| !e.is_null()) {
            return Err(stream_error(err));
        }
        self.apply(v.choices.into_iter().next(), v.usage, out);
        Ok(())
    }

    /// Remembers the shape of an event that holds nothing but a text piece, or nothing but a piece
    /// of one call's arguments (no id, no name), for the events after it.
    fn learn(&mut self, data: &str, choice: Option<&chunk::Choice<'_>>, spans: &scan::Spans) {
        use chunk::{CallDelta, Choice, Delta, FunctionDelta};
        let Some(Choice { delta: Some(delta), finish_reason: None }) = choice else {
            return;
        };
        match delta {
            Delta { content: Some(_), reasoning_content: None, reasoning: None, refusal: None, tool_calls: None } => {
                self.text_shape.learn(data, spans.content, spans.padding);
            }
            Delta {
                content: None,
                reasoning_content: None,
                reasoning: None,
                refusal: None,
                tool_calls: Some(calls),
            } => {
                if let [
                    CallDelta { index, id: None, function: Some(FunctionDelta { name: None, arguments: Some(_) }) },
                ] = calls.as_slice()
                {
                    self.args_shape.learn(data, spans.arguments, spans.padding);
                    self.args_index = *index;
                }
            }
            _ => {}
        }
    }

    /// The first choice and the usage of one decoded event.
    fn apply(&mut self, choice: Option<chunk::Choice<'_>>, usage: Option<chunk::Usage>, out: &mut Vec<ModelChunk>) {
        if let Some(choice) = choice {
            if let Some(delta) = choice.delta
                && let Some(r) = delta_chunks(delta, |i, id| self.call_index(i, id), out)
            {
                self.refusal.push_str(&r);
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(finish_reason_str(&reason));
            }
        }
        if let Some(u) = usage {
            out.push(ModelChunk::Usage(typed_usage(u)));
        }
    }
}

/// The chunks of a stream's delta or of a whole answer's message, into `out`: its reasoning, its
/// text, then its tool calls, each at the index `index` gives it (from the call's own index and
/// id). Returns its refusal text, if any.
pub(super) fn delta_chunks<'a>(
    delta: chunk::Delta<'a>,
    mut index: impl FnMut(Option<u64>, Option<&str>) -> usize,
    out: &mut Vec<ModelChunk>,
) -> Option<Cow<'a, str>> {
    // Servers send either reasoning field, and sometimes the other one as null.
    let reasoning = delta.reasoning_content.filter(|r| !r.is_empty()).or(delta.reasoning.filter(|r| !r.is_empty()));
    if let Some(r) = reasoning {
        out.push(ModelChunk::Thinking { text: r.into_owned(), signature: None, provider: None });
    }
    if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
        out.push(ModelChunk::Text(text.into_owned()));
    }
    for c in delta.tool_calls.into_iter().flatten() {
        let index = index(c.index, c.id.as_deref());
        let (name, arguments) = match c.function {
            Some(f) => (f.name.map(Cow::into_owned), f.arguments.map(Cow::into_owned).unwrap_or_default()),
            None => (None, String::new()),
        };
        out.push(ModelChunk::ToolCallDelta { index, id: c.id.map(Cow::into_owned), name, arguments });
    }
    delta.refusal
}

/// OpenAI's usage, normalized: `prompt_tokens` includes cached tokens, which we count apart
/// (reported in `prompt_tokens_details`, or as DeepSeek's `prompt_cache_hit_tokens`).
pub(super) fn typed_usage(u: chunk::Usage) -> Usage {
    let cached =
        u.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0).max(u.prompt_cache_hit_tokens.unwrap_or(0));
    Usage {
        input_tokens: u.prompt_tokens.saturating_sub(cached),
        cached_input_tokens: cached,
        cache_write_tokens: 0,
        output_tokens: u.completion_tokens,
        cost_usd: 0.0,
    }
}

impl StreamDecoder for ChatDecoder {
    fn event(&mut self, event: SseEvent, out: &mut Vec<ModelChunk>) -> Result<bool, ModelError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        self.decode(data, true, out)?;
        Ok(false)
    }

    fn end(&mut self, out: &mut Vec<ModelChunk>) -> Result<(), ModelError> {
        if !self.refusal.is_empty() {
            return Err(refused(&self.refusal));
        }
        match self.finish.take() {
            Some(reason) => {
                out.push(ModelChunk::Finish(reason));
                Ok(())
            }
            None => Err(ModelError::Transient {
                message: "the stream ended before the model finished (no finish_reason)".into(),
                status: None,
            }),
        }
    }
}
