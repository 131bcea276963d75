//! OpenAI Chat Completions (`POST {base}/chat/completions`), and every server that speaks it.

use std::borrow::Cow;
use std::collections::HashMap;

use reqwest::header::{AUTHORIZATION, HeaderMap};
use serde_json::{Map, Value, json};

use super::http::{ApiKey, HttpRequest, StreamDecoder, WireFormat, secret_header};
use super::sse::SseEvent;
use super::strict::strict_schema;
use crate::error::ModelError;
use crate::message::{ContentPart, FinishReason, Message, Usage};
use crate::model::{ModelCapabilities, ModelChunk, ModelRequest};

/// The Chat Completions wire format.
#[derive(Clone, Debug)]
pub struct ChatCompletions {
    pub(crate) provider: String,
    pub(crate) model: String,
    pub(crate) base_url: String,
    pub(crate) key_env: &'static str,
    pub(crate) key_required: bool,
    pub(crate) extra_headers: Vec<(String, String)>,
    pub(crate) native_structured_output: bool,
    pub(crate) context_window: Option<u32>,
}

/// Whether a model takes `max_completion_tokens` and reasoning settings (o-series, gpt-5 and later).
pub(crate) fn is_reasoning_model(model: &str) -> bool {
    let m = model.rsplit('/').next().unwrap_or(model);
    ["o1", "o3", "o4", "gpt-5", "gpt-6"].iter().any(|p| {
        m.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with('-') || rest.starts_with('.'))
    })
}

impl ChatCompletions {
    fn messages(&self, messages: &[Message]) -> Vec<Value> {
        messages
            .iter()
            .map(|m| match m {
                Message::System { content } => json!({"role": "system", "content": content}),
                Message::User { content } => json!({"role": "user", "content": user_content(content)}),
                Message::Assistant { content, tool_calls, .. } => {
                    let mut msg = Map::new();
                    msg.insert("role".into(), json!("assistant"));
                    msg.insert("content".into(), if content.is_empty() { Value::Null } else { json!(content) });
                    if !tool_calls.is_empty() {
                        let calls: Vec<Value> = tool_calls
                            .iter()
                            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                            .collect();
                        msg.insert("tool_calls".into(), Value::Array(calls));
                    }
                    Value::Object(msg)
                }
                Message::Tool { call_id, content, .. } => json!({"role": "tool", "tool_call_id": call_id, "content": content}),
            })
            .collect()
    }
}

fn user_content(parts: &[ContentPart]) -> Value {
    if let [ContentPart::Text { text }] = parts {
        return json!(text);
    }
    Value::Array(
        parts
            .iter()
            .map(|p| match p {
                ContentPart::Text { text } => json!({"type": "text", "text": text}),
                ContentPart::Image { url, .. } => json!({"type": "image_url", "image_url": {"url": url}}),
            })
            .collect(),
    )
}

impl WireFormat for ChatCompletions {
    fn provider(&self) -> &str {
        &self.provider
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn capabilities(&self) -> ModelCapabilities {
        ModelCapabilities {
            tools: true,
            native_structured_output: self.native_structured_output,
            context_window: self.context_window,
        }
    }

    fn key_env(&self) -> &str {
        self.key_env
    }

    fn key_required(&self) -> bool {
        self.key_required
    }

    fn set_base_url(&mut self, url: String) {
        self.base_url = url;
    }

    fn build(&self, request: &ModelRequest<'_>, stream: bool, key: Option<&ApiKey>) -> Result<HttpRequest, ModelError> {
        let g = request.generation;
        let mut body = Map::new();
        body.insert("model".into(), json!(self.model));
        body.insert("messages".into(), Value::Array(self.messages(request.messages)));
        if !request.tools.is_empty() {
            let tools: Vec<Value> = request
                .tools
                .iter()
                .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
                .collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        if stream {
            body.insert("stream".into(), json!(true));
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        let reasoning = is_reasoning_model(&self.model) && self.provider == "openai";
        // Reasoning models reject sampling settings: they are left out for them.
        if let Some(t) = g.temperature.filter(|_| !reasoning) {
            body.insert("temperature".into(), sampling_value(t));
        }
        if let Some(p) = g.top_p.filter(|_| !reasoning) {
            body.insert("top_p".into(), sampling_value(p));
        }
        if let Some(n) = g.max_output_tokens {
            let field = if reasoning { "max_completion_tokens" } else { "max_tokens" };
            body.insert(field.into(), json!(n));
        }
        if !g.stop.is_empty() {
            body.insert("stop".into(), json!(g.stop));
        }
        if let Some(seed) = g.seed {
            body.insert("seed".into(), json!(seed));
        }
        if let Some(schema) = request.output_schema {
            let (schema, strict) = strict_schema(schema);
            body.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": strict}}),
            );
        }
        // Provider-specific fields (reasoning_effort, prompt_cache_key, …) pass through as given.
        for (k, v) in &g.extensions {
            body.insert(k.clone(), v.clone());
        }
        let mut headers = HeaderMap::new();
        if let Some(key) = key {
            headers.insert(AUTHORIZATION, secret_header(&format!("Bearer {}", key.expose()))?);
        }
        for (name, value) in &self.extra_headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ModelError::InvalidRequest(format!("invalid header name {name}")))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| ModelError::InvalidRequest(format!("invalid value for header {name}")))?;
            headers.insert(name, value);
        }
        let body = serde_json::to_vec(&Value::Object(body)).map_err(|e| ModelError::InvalidRequest(e.to_string()))?;
        Ok(HttpRequest { url: format!("{}/chat/completions", self.base_url.trim_end_matches('/')), headers, body })
    }

    fn decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ChatDecoder::default())
    }

    fn decode_body(&self, body: &[u8]) -> Result<Vec<ModelChunk>, ModelError> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| ModelError::Protocol(format!("invalid JSON response: {e}")))?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            return Err(stream_error(err));
        }
        let choice =
            v.pointer("/choices/0").ok_or_else(|| ModelError::Protocol("the response has no choices".into()))?;
        let message = choice.get("message").unwrap_or(&Value::Null);
        if let Some(refusal) = message.get("refusal").and_then(Value::as_str).filter(|r| !r.is_empty()) {
            return Err(refused(refusal));
        }
        let mut out = Vec::new();
        if let Some(r) = reasoning_text(message) {
            out.push(ModelChunk::Thinking { text: r.to_string(), signature: None });
        }
        if let Some(text) = message.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            out.push(ModelChunk::Text(text.to_string()));
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            for (index, c) in calls.iter().enumerate() {
                out.push(ModelChunk::ToolCallDelta {
                    index,
                    id: c.get("id").and_then(Value::as_str).map(str::to_string),
                    name: c.pointer("/function/name").and_then(Value::as_str).map(str::to_string),
                    arguments: c.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("").to_string(),
                });
            }
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            out.push(ModelChunk::Usage(usage(u)));
        }
        out.push(ModelChunk::Finish(finish_reason(choice.get("finish_reason"))));
        Ok(out)
    }
}

/// A sampling setting as JSON, written as the `f32` reads (`0.2`, not the widened
/// `0.20000000298023224`).
pub(crate) fn sampling_value(v: f32) -> Value {
    v.to_string().parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number)
}

/// OpenAI's usage, normalized: `prompt_tokens` includes cached tokens, which we count apart.
pub(crate) fn usage(u: &Value) -> Usage {
    let n = |p: &str| u.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let prompt = n("/prompt_tokens");
    // OpenAI reports cached tokens in prompt_tokens_details; DeepSeek as prompt_cache_hit_tokens.
    let cached = n("/prompt_tokens_details/cached_tokens").max(n("/prompt_cache_hit_tokens"));
    Usage {
        input_tokens: prompt.saturating_sub(cached),
        cached_input_tokens: cached,
        cache_write_tokens: 0,
        output_tokens: n("/completion_tokens"),
        cost_usd: 0.0,
    }
}

fn finish_reason(v: Option<&Value>) -> FinishReason {
    match v.and_then(Value::as_str) {
        Some("stop") | None => FinishReason::Stop,
        Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        Some(_) => FinishReason::Other,
    }
}

fn reasoning_text(v: &Value) -> Option<&str> {
    // Servers send either field, and sometimes the other one as null.
    let field = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    field("reasoning_content").or_else(|| field("reasoning"))
}

fn refused(refusal: &str) -> ModelError {
    ModelError::ContentFilter(format!("the model refused: {refusal}"))
}

fn stream_error(err: &Value) -> ModelError {
    let message = err.get("message").and_then(Value::as_str).unwrap_or("unknown error").to_string();
    // The code is the more specific of the two (`type: invalid_request_error` with
    // `code: context_length_exceeded`), and either may be null.
    let field = |k: &str| err.get(k).and_then(Value::as_str).unwrap_or("");
    let (kind, code) = (field("type"), field("code"));
    let is = |names: &[&str]| names.contains(&code) || names.contains(&kind);
    if is(&["context_length_exceeded"]) {
        ModelError::ContextLengthExceeded(message)
    } else if is(&["rate_limit_exceeded", "rate_limit_error"]) {
        ModelError::RateLimited { message, retry_after: None }
    } else if is(&["authentication_error", "invalid_api_key"]) {
        ModelError::Authentication(message)
    } else if is(&["invalid_request_error"]) {
        ModelError::InvalidRequest(message)
    } else {
        ModelError::Transient { message, status: None }
    }
}

/// Decodes `chat.completion.chunk` events until `[DONE]`.
#[derive(Default)]
struct ChatDecoder {
    finish: Option<FinishReason>,
    /// The server's tool-call index → our position (servers need not number calls from 0).
    seen_calls: HashMap<u64, usize>,
    /// Calls seen so far.
    calls: usize,
    /// For servers that send no index: the id of the call being streamed, and its position.
    unindexed: Option<(Option<String>, usize)>,
    /// Refusal text (`delta.refusal`), reported as an error at the end.
    refusal: String,
    /// The bytes around the text of the last event that held nothing but a text piece.
    text_shape: Shape,
    /// The same for a piece of tool-call arguments, with that call's index.
    args_shape: Shape,
    args_index: Option<u64>,
}

/// An event's bytes before and after one string value. Events in a stream differ mostly in that
/// one string, so the next event is checked against these bytes before it is scanned.
#[derive(Default)]
struct Shape {
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

    fn matches<'a>(&self, data: &'a str) -> Option<Cow<'a, str>> {
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

/// One `chat.completion.chunk`, decoded into borrowed, typed fields: only what the decoder reads,
/// with strings borrowed from the event unless they hold escapes.
mod chunk {
    use std::borrow::Cow;

    use serde::Deserialize;

    #[derive(Deserialize)]
    pub(super) struct Chunk<'a> {
        #[serde(borrow, default)]
        pub(super) choices: Vec<Choice<'a>>,
        #[serde(default)]
        pub(super) usage: Option<Usage>,
        #[serde(default)]
        pub(super) error: Option<serde_json::Value>,
    }

    #[derive(Deserialize)]
    pub(super) struct Choice<'a> {
        #[serde(borrow, default)]
        pub(super) delta: Option<Delta<'a>>,
        #[serde(borrow, default)]
        pub(super) finish_reason: Option<Cow<'a, str>>,
    }

    #[derive(Deserialize)]
    pub(super) struct Delta<'a> {
        #[serde(borrow, default)]
        pub(super) content: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub(super) reasoning_content: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub(super) reasoning: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub(super) refusal: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub(super) tool_calls: Option<Vec<CallDelta<'a>>>,
    }

    #[derive(Deserialize)]
    pub(super) struct CallDelta<'a> {
        #[serde(default)]
        pub(super) index: Option<u64>,
        #[serde(borrow, default)]
        pub(super) id: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub(super) function: Option<FunctionDelta<'a>>,
    }

    #[derive(Deserialize)]
    pub(super) struct FunctionDelta<'a> {
        #[serde(borrow, default)]
        pub(super) name: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub(super) arguments: Option<Cow<'a, str>>,
    }

    #[derive(Deserialize)]
    pub(super) struct Usage {
        #[serde(default)]
        pub(super) prompt_tokens: u64,
        #[serde(default)]
        pub(super) completion_tokens: u64,
        #[serde(default)]
        pub(super) prompt_tokens_details: Option<Details>,
        #[serde(default)]
        pub(super) prompt_cache_hit_tokens: Option<u64>,
    }

    #[derive(Deserialize)]
    pub(super) struct Details {
        #[serde(default)]
        pub(super) cached_tokens: Option<u64>,
    }
}

fn finish_reason_str(reason: &str) -> FinishReason {
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
    fn decode(&mut self, data: &str, fast: bool, out: &mut Vec<ModelChunk>) -> Result<(), ModelError> {
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
        let v: chunk::Chunk<'_> = serde_json::from_str(data)
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
            if let Some(delta) = choice.delta {
                // Servers send either reasoning field, and sometimes the other one as null.
                let reasoning =
                    delta.reasoning_content.filter(|r| !r.is_empty()).or(delta.reasoning.filter(|r| !r.is_empty()));
                if let Some(r) = reasoning {
                    out.push(ModelChunk::Thinking { text: r.into_owned(), signature: None });
                }
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    out.push(ModelChunk::Text(text.into_owned()));
                }
                if let Some(r) = delta.refusal {
                    self.refusal.push_str(&r);
                }
                for c in delta.tool_calls.into_iter().flatten() {
                    let index = self.call_index(c.index, c.id.as_deref());
                    let (name, arguments) = match c.function {
                        Some(f) => (f.name.map(Cow::into_owned), f.arguments.map(Cow::into_owned).unwrap_or_default()),
                        None => (None, String::new()),
                    };
                    out.push(ModelChunk::ToolCallDelta { index, id: c.id.map(Cow::into_owned), name, arguments });
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(finish_reason_str(&reason));
            }
        }
        if let Some(u) = usage {
            let cached = u
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0)
                .max(u.prompt_cache_hit_tokens.unwrap_or(0));
            out.push(ModelChunk::Usage(Usage {
                input_tokens: u.prompt_tokens.saturating_sub(cached),
                cached_input_tokens: cached,
                cache_write_tokens: 0,
                output_tokens: u.completion_tokens,
                cost_usd: 0.0,
            }));
        }
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

/// A hand-written scanner for `chat.completion.chunk` events: it reads the few fields the decoder
/// uses into the same borrowed structs as serde, and skips everything else without building it.
///
/// It accepts only what serde accepts and decodes to the same values; whenever it is not sure
/// (malformed JSON, an unexpected type, several choices, duplicate fields, escaped keys, an `error`,
/// deep nesting), it returns `None` and the event goes through serde, which also reports errors.
mod scan {
    use std::borrow::Cow;

    use super::chunk::{CallDelta, Choice, Delta, Details, FunctionDelta, Usage};

    /// Nesting deeper than this in a skipped value is left to serde (whose own limit is 128).
    const MAX_DEPTH: u32 = 64;

    /// The first choice and the usage of one event, or `None` to decode it with serde.
    pub(super) fn chunk(data: &str) -> Option<(Option<Choice<'_>>, Option<Usage>, Spans)> {
        let mut c = Cursor { src: data, s: data.as_bytes(), i: 0, spans: Spans::default() };
        let (mut choice, mut usage) = (None, None);
        let mut seen = [false; 3];
        c.ws();
        c.object(|c, key| {
            match key {
                "choices" => {
                    once(&mut seen[0])?;
                    choice = c.choices()?;
                }
                "usage" => {
                    once(&mut seen[1])?;
                    usage = if c.null() { None } else { Some(c.usage()?) };
                }
                // A non-null error is rare: serde decodes it.
                "error" => {
                    once(&mut seen[2])?;
                    if !c.null() {
                        return None;
                    }
                }
                _ => {
                    let at = c.i;
                    c.skip(0)?;
                    if c.s.get(at) == Some(&b'"') {
                        c.spans.padding = Some((at, c.i));
                    }
                }
            }
            Some(())
        })?;
        c.ws();
        (c.i == c.s.len()).then_some((choice, usage, c.spans))
    }

    /// Marks a field as seen; `None` if it was already (serde rejects duplicate fields).
    fn once(seen: &mut bool) -> Option<()> {
        if *seen {
            return None;
        }
        *seen = true;
        Some(())
    }

    /// Bytes that end a run of plain string content.
    fn special(b: &u8) -> bool {
        *b == b'"' || *b == b'\\' || *b < 0x20
    }

    /// The offset of the first `"`, `\` or control byte in `s`, 8 bytes at a time.
    pub(super) fn find_special(s: &[u8]) -> Option<usize> {
        const LO: u64 = 0x0101_0101_0101_0101;
        const HI: u64 = 0x8080_8080_8080_8080;
        let mut chunks = s.chunks_exact(8);
        let mut at = 0;
        for chunk in &mut chunks {
            let w = u64::from_le_bytes(chunk.try_into().ok()?);
            let quote = w ^ (LO * u64::from(b'"'));
            let backslash = w ^ (LO * u64::from(b'\\'));
            // Each term flags its lowest matching byte exactly (a borrow only spreads upwards).
            let hits = ((quote.wrapping_sub(LO) & !quote)
                | (backslash.wrapping_sub(LO) & !backslash)
                | (w.wrapping_sub(LO * 0x20) & !w))
                & HI;
            if hits != 0 {
                return Some(at + (hits.trailing_zeros() / 8) as usize);
            }
            at += 8;
        }
        chunks.remainder().iter().position(special).map(|p| at + p)
    }

    struct Cursor<'a> {
        src: &'a str,
        s: &'a [u8],
        i: usize,
        /// Where the last `delta.content` and `function.arguments` strings were (quotes included).
        spans: Spans,
    }

    /// Where the text and the argument strings of an event sit, quotes included.
    #[derive(Default)]
    pub(super) struct Spans {
        pub(super) content: Option<(usize, usize)>,
        pub(super) arguments: Option<(usize, usize)>,
        /// The last string value of a top-level field the decoder does not read (OpenAI's
        /// `obfuscation` padding, which changes with every event).
        pub(super) padding: Option<(usize, usize)>,
    }

    /// The string at `prefix.len()` in `data` when `data` is `prefix`, one JSON string, then
    /// `suffix`; or, with `padding` (a string's span in `suffix`), then `suffix` with any other
    /// JSON string in that place. Replacing a string value with another leaves the rest of the
    /// document as it was.
    pub(super) fn slot<'a>(
        data: &'a str,
        prefix: &str,
        suffix: &str,
        padding: Option<(usize, usize)>,
    ) -> Option<Cow<'a, str>> {
        if prefix.is_empty() || !data.starts_with(prefix) {
            return None;
        }
        let mut c = Cursor { src: data, s: data.as_bytes(), i: prefix.len(), spans: Spans::default() };
        let text = c.string()?;
        let rest = data.get(c.i..)?;
        if rest == suffix {
            return Some(text);
        }
        let (start, end) = padding?;
        if rest.as_bytes().get(..start) != suffix.as_bytes().get(..start) {
            return None;
        }
        c.i += start;
        c.skip_string()?;
        (data.get(c.i..)? == suffix.get(end..)?).then_some(text)
    }

    impl<'a> Cursor<'a> {
        fn peek(&self) -> Option<u8> {
            self.s.get(self.i).copied()
        }

        /// JSON whitespace, as serde skips it.
        fn ws(&mut self) {
            while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
                self.i += 1;
            }
        }

        fn eat(&mut self, b: u8) -> bool {
            let hit = self.peek() == Some(b);
            if hit {
                self.i += 1;
            }
            hit
        }

        fn literal(&mut self, lit: &[u8]) -> bool {
            let hit = self.s.get(self.i..self.i + lit.len()) == Some(lit);
            if hit {
                self.i += lit.len();
            }
            hit
        }

        fn null(&mut self) -> bool {
            self.literal(b"null")
        }

        /// An object; `field` reads each value (the cursor is on its first byte).
        fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
            if !self.eat(b'{') {
                return None;
            }
            self.ws();
            if self.eat(b'}') {
                return Some(());
            }
            loop {
                let key = self.key()?;
                self.ws();
                if !self.eat(b':') {
                    return None;
                }
                self.ws();
                field(self, key)?;
                self.ws();
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        self.ws();
                    }
                    b'}' => {
                        self.i += 1;
                        return Some(());
                    }
                    _ => return None,
                }
            }
        }

        /// An array; `item` reads each element (the cursor is on its first byte).
        fn array(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
            if !self.eat(b'[') {
                return None;
            }
            self.ws();
            if self.eat(b']') {
                return Some(());
            }
            loop {
                item(self)?;
                self.ws();
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        self.ws();
                    }
                    b']' => {
                        self.i += 1;
                        return Some(());
                    }
                    _ => return None,
                }
            }
        }

        /// A key without escapes (an escaped key is left to serde).
        fn key(&mut self) -> Option<&'a str> {
            if !self.eat(b'"') {
                return None;
            }
            let start = self.i;
            let end = start + find_special(self.s.get(start..)?)?;
            if self.s.get(end) != Some(&b'"') {
                return None;
            }
            self.i = end + 1;
            self.src.get(start..end)
        }

        /// A string, borrowed unless it has escapes.
        fn string(&mut self) -> Option<Cow<'a, str>> {
            if !self.eat(b'"') {
                return None;
            }
            let start = self.i;
            self.i += find_special(self.s.get(start..)?)?;
            if self.eat(b'"') {
                return self.src.get(start..self.i - 1).map(Cow::Borrowed);
            }
            let mut out = String::with_capacity(self.i - start + 16);
            let mut run = start;
            loop {
                match self.peek()? {
                    b'"' => {
                        out.push_str(self.src.get(run..self.i)?);
                        self.i += 1;
                        return Some(Cow::Owned(out));
                    }
                    b'\\' => {
                        out.push_str(self.src.get(run..self.i)?);
                        self.i += 1;
                        out.push(self.escape()?);
                        run = self.i;
                    }
                    _ => return None,
                }
                self.i += find_special(self.s.get(self.i..)?)?;
            }
        }

        /// Skips a string, checking it as serde does.
        fn skip_string(&mut self) -> Option<()> {
            if !self.eat(b'"') {
                return None;
            }
            loop {
                self.i += find_special(self.s.get(self.i..)?)?;
                match self.peek()? {
                    b'"' => {
                        self.i += 1;
                        return Some(());
                    }
                    b'\\' => {
                        self.i += 1;
                        self.escape()?;
                    }
                    _ => return None,
                }
            }
        }

        /// One escape, after its backslash. Lone surrogates are left to serde.
        fn escape(&mut self) -> Option<char> {
            let esc = self.peek()?;
            self.i += 1;
            Some(match esc {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => {
                    let hi = self.hex4()?;
                    if (0xD800..0xDC00).contains(&hi) {
                        if !self.literal(b"\\u") {
                            return None;
                        }
                        let lo = self.hex4()?;
                        if !(0xDC00..0xE000).contains(&lo) {
                            return None;
                        }
                        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                    } else {
                        char::from_u32(hi)?
                    }
                }
                _ => return None,
            })
        }

        fn hex4(&mut self) -> Option<u32> {
            let mut n = 0;
            for &b in self.s.get(self.i..self.i + 4)? {
                n = n * 16 + char::from(b).to_digit(16)?;
            }
            self.i += 4;
            Some(n)
        }

        fn digits(&mut self) {
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
            }
        }

        /// A non-negative integer that fits a `u64`, as serde reads one into a `u64`.
        fn u64(&mut self) -> Option<u64> {
            let start = self.i;
            let mut n: u64 = 0;
            while let Some(b @ b'0'..=b'9') = self.peek() {
                n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
                self.i += 1;
            }
            let len = self.i - start;
            if len == 0
                || (len > 1 && self.s.get(start) == Some(&b'0'))
                || matches!(self.peek(), Some(b'.' | b'e' | b'E'))
            {
                return None;
            }
            Some(n)
        }

        fn skip_number(&mut self) -> Option<()> {
            self.eat(b'-');
            match self.peek()? {
                b'0' => self.i += 1,
                b'1'..=b'9' => self.digits(),
                _ => return None,
            }
            if self.eat(b'.') {
                if !matches!(self.peek(), Some(b'0'..=b'9')) {
                    return None;
                }
                self.digits();
            }
            if matches!(self.peek(), Some(b'e' | b'E')) {
                self.i += 1;
                if !self.eat(b'+') {
                    self.eat(b'-');
                }
                if !matches!(self.peek(), Some(b'0'..=b'9')) {
                    return None;
                }
                self.digits();
            }
            Some(())
        }

        /// Skips any value, checking it as serde does.
        fn skip(&mut self, depth: u32) -> Option<()> {
            match self.peek()? {
                b'"' => self.skip_string(),
                b'{' if depth < MAX_DEPTH => self.object(|c, _| c.skip(depth + 1)),
                b'[' if depth < MAX_DEPTH => self.array(|c| c.skip(depth + 1)),
                b't' => self.literal(b"true").then_some(()),
                b'f' => self.literal(b"false").then_some(()),
                b'n' => self.null().then_some(()),
                b'-' | b'0'..=b'9' => self.skip_number(),
                _ => None,
            }
        }

        fn opt_string(&mut self) -> Option<Option<Cow<'a, str>>> {
            if self.null() { Some(None) } else { self.string().map(Some) }
        }

        fn opt_u64(&mut self) -> Option<Option<u64>> {
            if self.null() { Some(None) } else { self.u64().map(Some) }
        }

        /// `choices`: none or one (several are left to serde).
        fn choices(&mut self) -> Option<Option<Choice<'a>>> {
            let mut first = None;
            self.array(|c| {
                if first.is_some() {
                    return None;
                }
                first = Some(c.choice()?);
                Some(())
            })?;
            Some(first)
        }

        fn choice(&mut self) -> Option<Choice<'a>> {
            let mut out = Choice { delta: None, finish_reason: None };
            let mut seen = [false; 2];
            self.object(|c, key| {
                match key {
                    "delta" => {
                        once(&mut seen[0])?;
                        out.delta = if c.null() { None } else { Some(c.delta()?) };
                    }
                    "finish_reason" => {
                        once(&mut seen[1])?;
                        out.finish_reason = c.opt_string()?;
                    }
                    _ => c.skip(0)?,
                }
                Some(())
            })?;
            Some(out)
        }

        fn delta(&mut self) -> Option<Delta<'a>> {
            let mut out =
                Delta { content: None, reasoning_content: None, reasoning: None, refusal: None, tool_calls: None };
            let mut seen = [false; 5];
            self.object(|c, key| {
                match key {
                    "content" => {
                        once(&mut seen[0])?;
                        let at = c.i;
                        out.content = c.opt_string()?;
                        c.spans.content = out.content.as_ref().map(|_| (at, c.i));
                    }
                    "reasoning_content" => {
                        once(&mut seen[1])?;
                        out.reasoning_content = c.opt_string()?;
                    }
                    "reasoning" => {
                        once(&mut seen[2])?;
                        out.reasoning = c.opt_string()?;
                    }
                    "refusal" => {
                        once(&mut seen[3])?;
                        out.refusal = c.opt_string()?;
                    }
                    "tool_calls" => {
                        once(&mut seen[4])?;
                        out.tool_calls = if c.null() { None } else { Some(c.calls()?) };
                    }
                    _ => c.skip(0)?,
                }
                Some(())
            })?;
            Some(out)
        }

        fn calls(&mut self) -> Option<Vec<CallDelta<'a>>> {
            let mut calls = Vec::new();
            self.array(|c| {
                calls.push(c.call()?);
                Some(())
            })?;
            Some(calls)
        }

        fn call(&mut self) -> Option<CallDelta<'a>> {
            let mut out = CallDelta { index: None, id: None, function: None };
            let mut seen = [false; 3];
            self.object(|c, key| {
                match key {
                    "index" => {
                        once(&mut seen[0])?;
                        out.index = c.opt_u64()?;
                    }
                    "id" => {
                        once(&mut seen[1])?;
                        out.id = c.opt_string()?;
                    }
                    "function" => {
                        once(&mut seen[2])?;
                        out.function = if c.null() { None } else { Some(c.function()?) };
                    }
                    _ => c.skip(0)?,
                }
                Some(())
            })?;
            Some(out)
        }

        fn function(&mut self) -> Option<FunctionDelta<'a>> {
            let mut out = FunctionDelta { name: None, arguments: None };
            let mut seen = [false; 2];
            self.object(|c, key| {
                match key {
                    "name" => {
                        once(&mut seen[0])?;
                        out.name = c.opt_string()?;
                    }
                    "arguments" => {
                        once(&mut seen[1])?;
                        let at = c.i;
                        out.arguments = c.opt_string()?;
                        c.spans.arguments = out.arguments.as_ref().map(|_| (at, c.i));
                    }
                    _ => c.skip(0)?,
                }
                Some(())
            })?;
            Some(out)
        }

        fn usage(&mut self) -> Option<Usage> {
            let mut out = Usage {
                prompt_tokens: 0,
                completion_tokens: 0,
                prompt_tokens_details: None,
                prompt_cache_hit_tokens: None,
            };
            let mut seen = [false; 4];
            self.object(|c, key| {
                match key {
                    "prompt_tokens" => {
                        once(&mut seen[0])?;
                        out.prompt_tokens = c.u64()?;
                    }
                    "completion_tokens" => {
                        once(&mut seen[1])?;
                        out.completion_tokens = c.u64()?;
                    }
                    "prompt_tokens_details" => {
                        once(&mut seen[2])?;
                        out.prompt_tokens_details = if c.null() { None } else { Some(c.details()?) };
                    }
                    "prompt_cache_hit_tokens" => {
                        once(&mut seen[3])?;
                        out.prompt_cache_hit_tokens = c.opt_u64()?;
                    }
                    _ => c.skip(0)?,
                }
                Some(())
            })?;
            Some(out)
        }

        fn details(&mut self) -> Option<Details> {
            let mut out = Details { cached_tokens: None };
            let mut seen = false;
            self.object(|c, key| {
                if key == "cached_tokens" {
                    once(&mut seen)?;
                    out.cached_tokens = c.opt_u64()?;
                } else {
                    c.skip(0)?;
                }
                Some(())
            })?;
            Some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// One event through a fresh decoder, with the scanner or with serde only.
    fn decode(data: &str, fast: bool) -> (Result<(), ModelError>, Vec<ModelChunk>, Option<FinishReason>, String) {
        let mut d = ChatDecoder::default();
        let mut out = Vec::new();
        let r = d.decode(data, fast, &mut out);
        (r, out, d.finish, d.refusal)
    }

    type StreamResult = (Vec<Result<(), ModelError>>, Vec<ModelChunk>, Result<(), ModelError>, Vec<ModelChunk>);

    /// Events through one decoder (so that it learns their shapes), then the end of the stream.
    fn decode_stream(events: &[String], fast: bool) -> StreamResult {
        let mut d = ChatDecoder::default();
        let mut out = Vec::new();
        let results = events.iter().map(|e| d.decode(e, fast, &mut out)).collect();
        let mut tail = Vec::new();
        let end = d.end(&mut tail);
        (results, out, end, tail)
    }

    /// One event of a stream: `kind` picks its shape, `text` its string.
    fn stream_event(kind: u8, text: &str) -> String {
        let q = serde_json::to_string(text).unwrap_or_default();
        let head =
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"#;
        let pad = serde_json::to_string(&text.chars().rev().collect::<String>()).unwrap_or_default();
        match kind % 14 {
            0 => format!(r#"{{"choices":[{{"delta":{{"content":{q}}},"finish_reason":null,"index":0}}],"id":"x"}}"#),
            1 => format!(r#"{head}"delta":{{"content":{q}}},"finish_reason":null}}],"obfuscation":"abc"}}"#),
            2 => format!(r#"{head}"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":{q}}}}}]}}}}]}}"#),
            3 => format!(r#"{head}"delta":{{"tool_calls":[{{"index":1,"function":{{"arguments":{q}}}}}]}}}}]}}"#),
            4 => format!(
                r#"{head}"delta":{{"tool_calls":[{{"index":1,"id":{q},"function":{{"name":"f","arguments":""}}}}]}}}}]}}"#
            ),
            5 => format!(r#"{head}"delta":{{}},"finish_reason":{q}}}]}}"#),
            6 => r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3}}"#.to_string(),
            7 => format!(
                r#"{head}"delta":{{"content":{}}},"finish_reason":null}}],"obfuscation":"abc"}}"#,
                escape_all(text)
            ),
            8 => format!(r#"{head}"delta":{{"content":{q}}},"finish_reason":"stop"}}],"obfuscation":"abc"}}"#),
            // The text unescaped: often malformed.
            9 => format!(r#"{head}"delta":{{"content":"{text}"}},"finish_reason":null}}],"obfuscation":"abc"}}"#),
            10 => format!(r#"{head}"delta":{{"tool_calls":[{{"function":{{"arguments":{q}}}}}]}}}}]}}"#),
            12 => format!(r#"{head}"delta":{{"content":{q}}},"finish_reason":null}}],"obfuscation":{pad}}}"#),
            13 => format!(
                r#"{head}"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":{q}}}}}]}}}}]}},"obfuscation":{pad}}}"#
            ),
            _ => format!(r#"{head}"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":"{text}"}}}}]}}}}]}}"#),
        }
    }

    #[test]
    fn a_stream_decodes_as_serde_does() {
        let pieces = ["The ", "", "caf\u{e9} 😀 \"q\" \\ \n", "\u{1}", "plain"];
        let mut events = Vec::new();
        for kind in 0..14 {
            for text in pieces {
                events.push(stream_event(kind, text));
            }
        }
        for (i, e) in events.iter().enumerate() {
            let (a, b) = (&events[..=i], decode_stream(&events[..=i], true));
            assert_eq!(b, decode_stream(a, false), "{e}");
        }
        // Lone surrogates and bad escapes in the place of the learned string.
        let bad = [
            r#"{"choices":[{"delta":{"content":"a"},"finish_reason":null,"index":0}],"id":"x"}"#,
            r#"{"choices":[{"delta":{"content":"\ud800"},"finish_reason":null,"index":0}],"id":"x"}"#,
            r#"{"choices":[{"delta":{"content":"\x"},"finish_reason":null,"index":0}],"id":"x"}"#,
            r#"{"choices":[{"delta":{"content":null},"finish_reason":null,"index":0}],"id":"x"}"#,
            r#"{"choices":[{"delta":{"content":"a","content":"b"},"finish_reason":null,"index":0}],"id":"x"}"#,
            r#"{"choices":[{"delta":{"content":"a"},"finish_reason":null,"index":0}],"id":"x"} "#,
            r#"{"choices":[{"delta":{"content":"a"},"finish_reason":null,"index":0}],"id":"x"}}"#,
            r#"{"choices":[{"delta":{"content":"a"},"finish_reason":null,"index":0}],"id":"x""#,
            r#"{"choices":[{"delta":{"content":"b"},"finish_reason":null,"index":0}],"id":"x"}"#,
        ]
        .map(str::to_string);
        assert_eq!(decode_stream(&bad, true), decode_stream(&bad, false));
    }

    #[test]
    fn reasoning_models_by_name() {
        for m in ["o1", "o3-mini", "openai/o4-mini", "gpt-5", "gpt-5.1", "gpt-5-mini", "gpt-6"] {
            assert!(is_reasoning_model(m), "{m}");
        }
        for m in ["gpt-4o", "o10", "gpt-50", "gpt-5x", "o", "", "gpt-4.1", "gpt-5/o"] {
            assert!(!is_reasoning_model(m), "{m}");
        }
    }

    #[test]
    fn the_next_event_of_a_known_shape_is_not_scanned_again() {
        let mut d = ChatDecoder::default();
        let mut out = Vec::new();
        assert!(d.decode(&stream_event(1, "a"), true, &mut out).is_ok());
        assert_eq!(d.text_shape.matches(&stream_event(1, "b\n\"")).as_deref(), Some("b\n\""));
        assert!(d.text_shape.matches(&stream_event(8, "b")).is_none());
        assert!(d.text_shape.matches(&stream_event(0, "b")).is_none());
        assert!(d.decode(&stream_event(2, "{\"x"), true, &mut out).is_ok());
        assert_eq!(d.args_shape.matches(&stream_event(2, "\": 1}")).as_deref(), Some("\": 1}"));
        assert!(d.args_shape.matches(&stream_event(3, "y")).is_none());
        // OpenAI's padding changes with every event.
        assert!(d.decode(&stream_event(12, "abc"), true, &mut out).is_ok());
        assert_eq!(d.text_shape.matches(&stream_event(12, "de")).as_deref(), Some("de"));
        assert_eq!(d.text_shape.matches(&stream_event(1, "de")).as_deref(), Some("de"));
        assert!(d.text_shape.matches(&stream_event(8, "de")).is_none());
        // A piece that names the call is not a shape to reuse.
        assert!(d.decode(&stream_event(4, "call_1"), true, &mut out).is_ok());
        assert!(d.args_shape.matches(&stream_event(4, "call_2")).is_none());
    }

    /// Events the scanner must decode itself, to the same result as serde.
    const FAST: &[&str] = &[
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"choices":[{"delta":{"content":"line\nbreak \"quoted\" back\\slash \/ \b\f\r\t"}}]}"#,
        r#"{"choices":[{"delta":{"content":"caf\u00e9 \u00E9 \ud83d\ude00 and 😀 raw"}}]}"#,
        r#"{"choices":[{"delta":{"content":"\u0000\u001f"}}]}"#,
        r#"{"choices":[{"delta":{"content":""}}]}"#,
        r#"{"choices":[{"delta":{"content":null}}]}"#,
        r#"{"choices":[{"delta":{}}]}"#,
        r#"{"choices":[{"delta":null,"finish_reason":"stop"}]}"#,
        r#"{"choices":[]}"#,
        r#"{}"#,
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": \"Paris\""}}]}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{}"}},{"index":1,"id":"b","function":{"name":"g","arguments":"{\"x\":1}"}}]}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"id":"a","function":{"name":"f"}},{"function":null},{"index":null,"id":null}]}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":null}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#,
        r#"{"choices":[{"delta":{},"finish_reason":"content_filter"}]}"#,
        r#"{"choices":[{"delta":{},"finish_reason":"function_call"}]}"#,
        r#"{"choices":[{"delta":{},"finish_reason":"something_new"}]}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":120,"completion_tokens":42,"total_tokens":162,"prompt_tokens_details":{"cached_tokens":100,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":120,"completion_tokens":42,"prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":56}}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":0,"completion_tokens":18446744073709551615,"prompt_tokens_details":null,"prompt_cache_hit_tokens":null}}"#,
        r#"{"choices":[],"usage":{"prompt_tokens_details":{"cached_tokens":null}}}"#,
        r#"{"choices":[],"usage":null,"error":null}"#,
        r#"{"choices":[{"delta":{"refusal":"I can't help with that."}}]}"#,
        r#"{"choices":[{"delta":{"refusal":null,"content":"ok"}}]}"#,
        r#"{"choices":[{"delta":{"reasoning_content":"think \"hard\"","reasoning":null}}]}"#,
        r#"{"choices":[{"delta":{"reasoning":"hmm","reasoning_content":""}}]}"#,
        r#"{"choices":[{"delta":{"reasoning_content":"a","reasoning":"b","content":"c"}}]}"#,
        r#"{"x":{"a":[1,-2.5e+3,0,1E9,true,false,null,{"b":"c\"\\\u1234"},[[]],{}]},"choices":[{"delta":{"content":"t","extra":[{"y":[1,2]}]},"logprobs":{"content":[{"token":"t","logprob":-0.1,"bytes":[116]}]}}],"system_fingerprint":"fp_1"}"#,
        " { \"choices\" : [ { \"delta\" : { \"content\" : \"spaced\" } , \"finish_reason\" : null } ] , \"usage\" : null } ",
        "{\n\t\"choices\":\r\n[{\"delta\":{\"content\":\"tabs\"}}]\n}",
        r#"{"id":"ab\u0063","choices":[{"delta":{"content":"t"}}]}"#,
        r#"{"choices":[{"delta":{"content":"x"}}],"choices_extra":[1,2]}"#,
    ];

    /// Events the scanner leaves to serde (errors, or shapes it is not sure of): same result either way.
    const FALLBACK: &[&str] = &[
        r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
        r#"{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
        r#"{"error":{"message":"bad key","type":"authentication_error","code":null}}"#,
        r#"{"error":"oops"}"#,
        r#"{"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}]}"#,
        r#"{"choices":[{"delta":{"content":"a"}},{"delta":{"content":5}}]}"#,
        r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
        r#"{"choices":[{"delta":{"content":"a"}}],"choices":[]}"#,
        r#"{"choices":[{"delta":{"cont\u0065nt":"escaped key"}}]}"#,
        r#"{"choices":[{"delta":{"content":"lone \ud83d surrogate"}}]}"#,
        r#"{"choices":[{"delta":{"content":"lone \ude00 low"}}]}"#,
        r#"{"choices":[{"delta":{"content":"bad \x escape"}}]}"#,
        "{\"choices\":[{\"delta\":{\"content\":\"raw\ttab\"}}]}",
        r#"{"choices":[{"delta":{"content":5}}]}"#,
        r#"{"choices":[{"delta":{"content":["a"]}}]}"#,
        r#"{"choices":null}"#,
        r#"{"choices":{}}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":-1}]}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":1.0}]}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":01}]}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":"0"}]}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[[0,"id",null]]}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":{}}}]}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":null}}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":18446744073709551616}}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":1e3}}"#,
        r#"{"choices":[],"usage":{"prompt_tokens_details":{"cached_tokens":-1}}}"#,
        r#"{"choices":[],"usage":7}"#,
        r#"[[],null,null]"#,
        r#"[]"#,
        r#"{"choices":[{"delta":{"content":"x"}}]} trailing"#,
        r#"{"choices":[{"delta":{"content":"x"}}]}{}"#,
        r#"{"choices":[{"delta":{"content":"x"}},]}"#,
        r#"{"choices":[{"delta":{"content":"x"},}]}"#,
        r#"{"choices":[{"delta":{"content":"unterminated}}]}"#,
        r#"{"choices":[{"delta":{"content":"x"}}]"#,
        r#"{"x":01,"choices":[]}"#,
        r#"{"x":1.,"choices":[]}"#,
        r#"{"x":-,"choices":[]}"#,
        r#"{"x":tru,"choices":[]}"#,
        r#"{"x":nulll,"choices":[]}"#,
        r#"{"x":"\u12G4","choices":[]}"#,
        r#"{"x":[1 2],"choices":[]}"#,
        r#"{"x":{"a" 1},"choices":[]}"#,
        r#"{"x":'a',"choices":[]}"#,
        r#"{choices:[]}"#,
        r#"not json"#,
        r#"{"#,
    ];

    #[test]
    fn the_scanner_decodes_common_events_as_serde_does() {
        for data in FAST {
            assert!(scan::chunk(data).is_some(), "the scanner should decode {data}");
            let fast = decode(data, true);
            assert_eq!(fast, decode(data, false), "{data}");
            assert!(fast.0.is_ok(), "{data}");
        }
    }

    #[test]
    fn the_scanner_leaves_odd_events_to_serde() {
        for data in FALLBACK {
            assert!(scan::chunk(data).is_none(), "the scanner should leave {data} to serde");
            assert_eq!(decode(data, true), decode(data, false), "{data}");
        }
    }

    #[test]
    fn deep_nesting_is_left_to_serde() {
        let deep = format!(r#"{{"x":{}{},"choices":[]}}"#, "[".repeat(200), "]".repeat(200));
        assert!(scan::chunk(&deep).is_none());
        assert_eq!(decode(&deep, true), decode(&deep, false));
        let ok = format!(r#"{{"x":{}{},"choices":[]}}"#, "[".repeat(60), "]".repeat(60));
        assert!(scan::chunk(&ok).is_some());
    }

    #[test]
    fn scanned_strings_match_the_expected_text() {
        let (r, out, ..) = decode(FAST[2], true);
        assert!(r.is_ok());
        assert_eq!(out, vec![ModelChunk::Text("café é 😀 and 😀 raw".into())]);
        let (_, out, ..) = decode(FAST[1], true);
        assert_eq!(out, vec![ModelChunk::Text("line\nbreak \"quoted\" back\\slash / \u{8}\u{c}\r\t".into())]);
    }

    /// Every character as a `\uXXXX` escape (surrogate pairs beyond the BMP).
    fn escape_all(s: &str) -> String {
        let mut out = String::from("\"");
        for unit in s.encode_utf16() {
            out.push_str(&format!("\\u{unit:04x}"));
        }
        out.push('"');
        out
    }

    /// JSON values whose keys are mostly the ones the decoder reads, so that they hit its fields
    /// with any type and nesting.
    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec![
            "choices",
            "delta",
            "content",
            "finish_reason",
            "tool_calls",
            "index",
            "id",
            "function",
            "name",
            "arguments",
            "usage",
            "prompt_tokens",
            "completion_tokens",
            "prompt_tokens_details",
            "cached_tokens",
            "prompt_cache_hit_tokens",
            "refusal",
            "reasoning",
            "reasoning_content",
            "error",
            "message",
            "other",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            (0u64..3).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            prop::sample::select(vec!["stop", "tool_calls", "length", ""]).prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 48, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
            ]
        })
    }

    /// An object with some of `fields` (each a key and its strategy), in any order.
    fn object_of(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
        let parts: Vec<_> = fields
            .into_iter()
            .map(|(k, v)| prop::option::weighted(0.7, v).prop_map(move |v| v.map(|v| (k.to_string(), v))))
            .collect();
        (parts, any::<bool>())
            .prop_map(|(parts, reversed)| {
                let mut kv: Vec<_> = parts.into_iter().flatten().collect();
                if reversed {
                    kv.reverse();
                }
                Value::Object(kv.into_iter().collect())
            })
            .boxed()
    }

    /// Events shaped like `chat.completion.chunk`, with odd values here and there.
    fn chunk_value() -> impl Strategy<Value = Value> {
        let text = || prop_oneof![4 => any::<String>().prop_map(Value::from), 1 => json_value()].boxed();
        let count = || prop_oneof![4 => (0u64..1000).prop_map(Value::from), 1 => json_value()].boxed();
        let function = object_of(vec![("name", text()), ("arguments", text()), ("other", json_value().boxed())]);
        let call = object_of(vec![
            ("index", count()),
            ("id", text()),
            ("type", Just(Value::from("function")).boxed()),
            ("function", prop_oneof![4 => function, 1 => json_value()].boxed()),
        ]);
        let calls = prop_oneof![4 => prop::collection::vec(call, 0..3).prop_map(Value::Array), 1 => json_value()];
        let delta = object_of(vec![
            ("role", Just(Value::from("assistant")).boxed()),
            ("content", text()),
            ("reasoning_content", text()),
            ("reasoning", text()),
            ("refusal", text()),
            ("tool_calls", calls.boxed()),
        ]);
        let choice = object_of(vec![
            ("index", count()),
            ("delta", prop_oneof![4 => delta, 1 => json_value()].boxed()),
            ("finish_reason", text()),
            ("logprobs", json_value().boxed()),
        ]);
        let details = object_of(vec![("cached_tokens", count()), ("audio_tokens", count())]);
        let usage = object_of(vec![
            ("prompt_tokens", count()),
            ("completion_tokens", count()),
            ("prompt_tokens_details", prop_oneof![4 => details, 1 => json_value()].boxed()),
            ("prompt_cache_hit_tokens", count()),
        ]);
        let choices = prop_oneof![
            4 => prop::collection::vec(choice, 0..2).prop_map(Value::Array),
            1 => json_value()
        ];
        object_of(vec![
            ("id", Just(Value::from("chatcmpl-1")).boxed()),
            ("choices", choices.boxed()),
            ("usage", prop_oneof![4 => usage, 1 => json_value()].boxed()),
            ("error", prop_oneof![4 => Just(Value::Null), 1 => json_value()].boxed()),
            ("other", json_value().boxed()),
        ])
    }

    proptest! {
        #[test]
        fn content_round_trips_through_the_scanner(text in any::<String>()) {
            for quoted in [serde_json::to_string(&text).unwrap_or_default(), escape_all(&text)] {
                let data = format!(r#"{{"choices":[{{"index":0,"delta":{{"content":{quoted}}}}}]}}"#);
                prop_assert!(scan::chunk(&data).is_some());
                let fast = decode(&data, true);
                let expected = if text.is_empty() { vec![] } else { vec![ModelChunk::Text(text.clone())] };
                prop_assert_eq!(&fast.1, &expected);
                prop_assert_eq!(fast, decode(&data, false));
            }
        }

        #[test]
        fn arbitrary_json_decodes_as_serde_does(v in prop_oneof![json_value(), chunk_value()], cut in any::<prop::sample::Index>()) {
            let data = serde_json::to_string(&v).unwrap_or_default();
            prop_assert_eq!(decode(&data, true), decode(&data, false), "{}", data);
            // The same text with one byte left out: mostly malformed.
            let at = cut.index(data.len().max(1));
            if let Some(cut) = data.get(..at).zip(data.get(at + 1..)).map(|(a, b)| format!("{a}{b}")) {
                prop_assert_eq!(decode(&cut, true), decode(&cut, false), "{}", cut);
            }
        }

        #[test]
        fn streams_decode_as_serde_does(events in prop::collection::vec((any::<u8>(), any::<String>()), 0..12)) {
            let events: Vec<String> = events.iter().map(|(kind, text)| stream_event(*kind, text)).collect();
            prop_assert_eq!(decode_stream(&events, true), decode_stream(&events, false));
        }

        #[test]
        fn find_special_agrees_with_a_byte_loop(
            bytes in prop::collection::vec(
                prop_oneof![any::<u8>(), prop::sample::select(vec![0u8, 0x1f, 0x20, 0x21, b'"', b'\\', 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff])],
                0..40,
            )
        ) {
            let expected = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(scan::find_special(&bytes), expected);
        }

        #[test]
        fn arbitrary_input_decodes_as_serde_does(data in "[{}\\[\\]\",:a-z0-9 \\\\.eE+-]{0,40}") {
            prop_assert_eq!(decode(&data, true), decode(&data, false));
        }
    }
}
