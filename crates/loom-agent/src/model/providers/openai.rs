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
    ["o1", "o3", "o4", "gpt-5", "gpt-6"]
        .iter()
        .any(|p| m == *p || m.starts_with(&format!("{p}-")) || m.starts_with(&format!("{p}.")))
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

impl StreamDecoder for ChatDecoder {
    fn event(&mut self, event: SseEvent, out: &mut Vec<ModelChunk>) -> Result<bool, ModelError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        let v: chunk::Chunk<'_> = serde_json::from_str(data)
            .map_err(|e| ModelError::Protocol(format!("invalid JSON in the event stream: {e}")))?;
        if let Some(err) = v.error.as_ref().filter(|e| !e.is_null()) {
            return Err(stream_error(err));
        }
        if let Some(choice) = v.choices.into_iter().next() {
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
        if let Some(u) = v.usage {
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
