//! Anthropic Messages (`POST {base}/v1/messages`).

use std::collections::HashMap;

use reqwest::header::HeaderMap;
use serde_json::{Map, Value, json};

use crate::http::{ApiKey, HttpModel, HttpRequest, StreamDecoder, WireFormat, header, secret_header};
use crate::sse::SseEvent;
use loom_core::error::ModelError;
use loom_core::message::{ContentPart, FinishReason, Message, Usage};
use loom_core::model::{ModelCapabilities, ModelChunk, ModelRequest};

/// The API version header sent with every call.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The prefix that marks a [`loom_core::message::Thinking`] signature as a redacted thinking block's data.
/// Signatures and data are base64, so no real signature starts with it.
pub(crate) const REDACTED_THINKING: &str = "redacted_thinking:";

/// The tag of the thinking signatures Anthropic mints (see [`loom_core::message::Thinking::provider`]).
pub const SIGNATURE_PROVIDER: &str = "anthropic";

fn redacted(data: Option<&str>) -> Option<String> {
    data.map(|d| format!("{REDACTED_THINKING}{d}"))
}

/// A thinking chunk carrying an Anthropic signature (or redacted data).
fn signed(text: String, signature: Option<String>) -> ModelChunk {
    let provider = signature.is_some().then(|| SIGNATURE_PROVIDER.to_string());
    ModelChunk::Thinking { text, signature, provider }
}

/// The Anthropic Messages wire format (named apart from [`loom_core::message::Message`], which it
/// is one letter from).
///
/// Thinking blocks are replayed with their signatures on the next turn (a block may have empty text:
/// with `thinking.display: "omitted"` only its signature comes back). A redacted thinking block is
/// kept as a [`loom_core::message::Thinking`] with empty text and its opaque data, prefixed with
/// `redacted_thinking:`, as the signature. Signatures are tagged `anthropic`; thinking another
/// provider signed is not replayed (Anthropic accepts only its own signatures, and lets earlier
/// turns' thinking be left out).
/// With prompt caching on (the default), cache breakpoints are set on the system prompt, the last
/// tool and the end of the conversation.
#[derive(Clone, Debug)]
pub struct AnthropicMessages {
    pub(crate) model: String,
    pub(crate) base_url: String,
    /// Cache breakpoints on (default true).
    pub prompt_caching: bool,
    /// `max_tokens` when the generation settings give none (Anthropic requires one).
    pub default_max_tokens: u32,
}

/// The old name of [`AnthropicMessages`].
#[deprecated(note = "renamed to AnthropicMessages")]
pub type Messages = AnthropicMessages;

/// Anthropic: `ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL`.
pub fn anthropic(model: &str) -> HttpModel<AnthropicMessages> {
    HttpModel::new(AnthropicMessages {
        model: model.to_string(),
        base_url: crate::base_url_from_env("ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
        prompt_caching: true,
        default_max_tokens: 4096,
    })
}

fn cache_mark(block: &mut Value) {
    if let Some(obj) = block.as_object_mut() {
        obj.insert("cache_control".into(), json!({"type": "ephemeral"}));
    }
}

/// An `f32` setting as the decimal it was written as: `json!(0.2f32)` widens to 0.20000000298023224.
fn decimal(v: f32) -> Value {
    v.to_string().parse::<f64>().map_or(Value::Null, Value::from)
}

fn image_block(url: &str, media_type: Option<&str>) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
    {
        let mt = meta.trim_end_matches(";base64");
        let mt = if mt.is_empty() { media_type.unwrap_or("image/png") } else { mt };
        return json!({"type": "image", "source": {"type": "base64", "media_type": mt, "data": data}});
    }
    json!({"type": "image", "source": {"type": "url", "url": url}})
}

impl AnthropicMessages {
    /// The system blocks and the alternating messages.
    fn convert(&self, messages: &[Message]) -> (Vec<Value>, Vec<Value>) {
        let mut system = Vec::new();
        let mut out: Vec<Value> = Vec::new();
        let push = |role: &str, blocks: Vec<Value>, out: &mut Vec<Value>| {
            if blocks.is_empty() {
                return;
            }
            // Consecutive messages of one role merge into one turn.
            if let Some(last) = out.last_mut()
                && last["role"] == role
                && let Some(content) = last.get_mut("content").and_then(Value::as_array_mut)
            {
                content.extend(blocks);
                return;
            }
            out.push(json!({"role": role, "content": blocks}));
        };
        for m in messages {
            match m {
                Message::System { content } => system.push(json!({"type": "text", "text": content})),
                Message::User { content } => {
                    let blocks = content
                        .iter()
                        .map(|p| match p {
                            ContentPart::Text { text } => json!({"type": "text", "text": text}),
                            ContentPart::Image { url, media_type } => image_block(url, media_type.as_deref()),
                        })
                        .collect();
                    push("user", blocks, &mut out);
                }
                Message::Assistant { content, thinking, tool_calls } => {
                    let mut blocks = Vec::new();
                    for t in thinking {
                        // Unsigned thinking cannot be replayed, nor can another provider's
                        // signature: Anthropic would reject either.
                        let Some(signature) = &t.signature else { continue };
                        if !t.replayable_by(SIGNATURE_PROVIDER) {
                            continue;
                        }
                        match signature.strip_prefix(REDACTED_THINKING) {
                            Some(data) => blocks.push(json!({"type": "redacted_thinking", "data": data})),
                            None => {
                                blocks.push(json!({"type": "thinking", "thinking": t.text, "signature": signature}))
                            }
                        }
                    }
                    if !content.is_empty() {
                        blocks.push(json!({"type": "text", "text": content}));
                    }
                    for c in tool_calls {
                        let input: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
                        let input = if input.is_object() { input } else { json!({}) };
                        blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
                    }
                    push("assistant", blocks, &mut out);
                }
                Message::Tool { call_id, content, is_error, .. } => {
                    let mut block = json!({"type": "tool_result", "tool_use_id": call_id, "content": content});
                    if *is_error {
                        block["is_error"] = json!(true);
                    }
                    push("user", vec![block], &mut out);
                }
            }
        }
        (system, out)
    }
}

impl WireFormat for AnthropicMessages {
    fn provider(&self) -> &str {
        "anthropic"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn capabilities(&self) -> ModelCapabilities {
        ModelCapabilities { tools: true, native_structured_output: false, context_window: Some(200_000) }
    }

    fn key_env(&self) -> &str {
        "ANTHROPIC_API_KEY"
    }

    fn set_base_url(&mut self, url: String) {
        self.base_url = url;
    }

    fn base_url(&self) -> Option<&str> {
        Some(&self.base_url)
    }

    fn build(&self, request: &ModelRequest<'_>, stream: bool, key: Option<&ApiKey>) -> Result<HttpRequest, ModelError> {
        let g = request.generation;
        let (mut system, mut messages) = self.convert(request.messages);
        let mut body = Map::new();
        body.insert("model".into(), json!(self.model));
        body.insert("max_tokens".into(), json!(g.max_output_tokens.unwrap_or(self.default_max_tokens)));
        let mut tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
            .collect();
        if self.prompt_caching {
            if let Some(last) = system.last_mut() {
                cache_mark(last);
            }
            if let Some(last) = tools.last_mut() {
                cache_mark(last);
            }
            if let Some(block) = messages
                .last_mut()
                .and_then(|m| m.get_mut("content"))
                .and_then(Value::as_array_mut)
                .and_then(|c| c.last_mut())
            {
                cache_mark(block);
            }
        }
        if !system.is_empty() {
            body.insert("system".into(), Value::Array(system));
        }
        body.insert("messages".into(), Value::Array(messages));
        if !tools.is_empty() {
            body.insert("tools".into(), Value::Array(tools));
        }
        if stream {
            body.insert("stream".into(), json!(true));
        }
        if let Some(t) = g.temperature {
            body.insert("temperature".into(), decimal(t));
        }
        if let Some(p) = g.top_p {
            body.insert("top_p".into(), decimal(p));
        }
        if !g.stop.is_empty() {
            body.insert("stop_sequences".into(), json!(g.stop));
        }
        // thinking, tool_choice, metadata, … pass through as given.
        for (k, v) in &g.extensions {
            body.insert(k.clone(), v.clone());
        }
        let mut headers = HeaderMap::new();
        if let Some(key) = key {
            headers.insert("x-api-key", secret_header(key.expose())?);
        }
        header(&mut headers, "anthropic-version", ANTHROPIC_VERSION)?;
        let body = serde_json::to_vec(&Value::Object(body)).map_err(|e| ModelError::InvalidRequest(e.to_string()))?;
        Ok(HttpRequest { url: crate::http::endpoint(&self.base_url, "/v1/messages", &[])?, headers, body })
    }

    fn decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(MessagesDecoder::default())
    }

    fn decode_body(&self, body: &[u8]) -> Result<Vec<ModelChunk>, ModelError> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| ModelError::Protocol(format!("invalid JSON response: {e}")))?;
        if v.get("type").and_then(Value::as_str) == Some("error") {
            return Err(stream_error(v.get("error").unwrap_or(&Value::Null)));
        }
        let mut out = Vec::new();
        let mut calls = 0;
        for block in v.get("content").and_then(Value::as_array).into_iter().flatten() {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => {
                    if let Some(t) = block.get("text").and_then(Value::as_str) {
                        out.push(ModelChunk::Text(t.to_string()));
                    }
                }
                Some("thinking") => out.push(signed(
                    block.get("thinking").and_then(Value::as_str).unwrap_or("").to_string(),
                    Some(block.get("signature").and_then(Value::as_str).unwrap_or("").to_string()),
                )),
                Some("redacted_thinking") => {
                    out.push(signed(String::new(), redacted(block.get("data").and_then(Value::as_str))))
                }
                Some("tool_use") => {
                    out.push(ModelChunk::ToolCallDelta {
                        index: calls,
                        id: block.get("id").and_then(Value::as_str).map(str::to_string),
                        name: block.get("name").and_then(Value::as_str).map(str::to_string),
                        arguments: block.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                    });
                    calls += 1;
                }
                _ => {}
            }
        }
        if let Some(u) = v.get("usage") {
            let mut usage = Usage::default();
            apply_usage(&mut usage, u);
            out.push(ModelChunk::Usage(usage));
        }
        out.push(ModelChunk::Finish(stop_reason(v.get("stop_reason"))));
        Ok(out)
    }
}

fn apply_usage(usage: &mut Usage, u: &Value) {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    if let Some(v) = n("input_tokens") {
        usage.input_tokens = v;
    }
    if let Some(v) = n("cache_read_input_tokens") {
        usage.cached_input_tokens = v;
    }
    if let Some(v) = n("cache_creation_input_tokens") {
        usage.cache_write_tokens = v;
    }
    if let Some(v) = n("output_tokens") {
        usage.output_tokens = v;
    }
}

fn stop_reason(v: Option<&Value>) -> FinishReason {
    match v.and_then(Value::as_str) {
        Some("end_turn") | Some("stop_sequence") | None => FinishReason::Stop,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("max_tokens") => FinishReason::Length,
        Some("refusal") => FinishReason::ContentFilter,
        Some(_) => FinishReason::Other,
    }
}

fn stream_error(err: &Value) -> ModelError {
    let kind = err.get("type").and_then(Value::as_str).unwrap_or("");
    let message = format!("{} ({kind})", err.get("message").and_then(Value::as_str).unwrap_or("unknown error"));
    match kind {
        "overloaded_error" | "api_error" | "timeout_error" => ModelError::Transient { message, status: None },
        "rate_limit_error" => ModelError::RateLimited { message, retry_after: None },
        "authentication_error" | "permission_error" => ModelError::Authentication(message),
        "invalid_request_error" if message.contains("prompt is too long") => ModelError::ContextLengthExceeded(message),
        "invalid_request_error" | "not_found_error" | "request_too_large" | "billing_error" => {
            ModelError::InvalidRequest(message)
        }
        _ => ModelError::Transient { message, status: None },
    }
}

/// Decodes the Messages event stream.
#[derive(Default)]
struct MessagesDecoder {
    usage: Usage,
    finish: Option<FinishReason>,
    /// Content block index → tool call index.
    tool_blocks: HashMap<u64, usize>,
    stopped: bool,
}

impl StreamDecoder for MessagesDecoder {
    fn event(&mut self, event: SseEvent, out: &mut Vec<ModelChunk>) -> Result<bool, ModelError> {
        if event.data.trim().is_empty() {
            return Ok(false);
        }
        let v: Value = serde_json::from_str(&event.data)
            .map_err(|e| ModelError::Protocol(format!("invalid JSON in the event stream: {e}")))?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(event.event.as_str());
        match kind {
            "message_start" => {
                if let Some(u) = crate::json::at(&v, "/message/usage") {
                    apply_usage(&mut self.usage, u);
                }
            }
            "content_block_start" => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let block = v.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let call = self.tool_blocks.len();
                        self.tool_blocks.insert(index, call);
                        out.push(ModelChunk::ToolCallDelta {
                            index: call,
                            id: block.get("id").and_then(Value::as_str).map(str::to_string),
                            name: block.get("name").and_then(Value::as_str).map(str::to_string),
                            arguments: String::new(),
                        });
                    }
                    Some("redacted_thinking") => {
                        out.push(signed(String::new(), redacted(block.get("data").and_then(Value::as_str))))
                    }
                    Some("text") => {
                        if let Some(t) = block.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                            out.push(ModelChunk::Text(t.to_string()));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let delta = v.get("delta").unwrap_or(&Value::Null);
                let s = |k: &str| delta.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => out.push(ModelChunk::Text(s("text"))),
                    Some("thinking_delta") => out.push(signed(s("thinking"), None)),
                    Some("signature_delta") => out.push(signed(String::new(), Some(s("signature")))),
                    Some("input_json_delta") => {
                        let Some(&call) = self.tool_blocks.get(&index) else {
                            return Err(ModelError::Protocol(format!(
                                "input_json_delta for block {index}, which is not a tool_use"
                            )));
                        };
                        out.push(ModelChunk::ToolCallDelta {
                            index: call,
                            id: None,
                            name: None,
                            arguments: s("partial_json"),
                        });
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = crate::json::at(&v, "/delta/stop_reason").filter(|r| !r.is_null()) {
                    self.finish = Some(stop_reason(Some(reason)));
                }
                if let Some(u) = v.get("usage") {
                    apply_usage(&mut self.usage, u);
                }
            }
            "message_stop" => {
                self.stopped = true;
                return Ok(true);
            }
            "error" => return Err(stream_error(v.get("error").unwrap_or(&Value::Null))),
            // ping, content_block_stop, and event types added later.
            _ => {}
        }
        Ok(false)
    }

    fn end(&mut self, out: &mut Vec<ModelChunk>) -> Result<(), ModelError> {
        if !self.stopped && self.finish.is_none() {
            return Err(ModelError::Transient { message: "the stream ended before message_stop".into(), status: None });
        }
        out.push(ModelChunk::Usage(self.usage));
        out.push(ModelChunk::Finish(self.finish.take().unwrap_or(FinishReason::Stop)));
        Ok(())
    }
}
