//! Anthropic Messages (`POST {base}/v1/messages`): the wire format and its decoders here, the
//! request body in `body.rs`.

mod body;

use std::collections::HashMap;

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::http::{ApiKey, HttpModel, HttpRequest, StreamDecoder, WireFormat, header, secret_header};
use crate::json::Body;
use crate::sse::SseEvent;
use loom_core::error::ModelError;
use loom_core::message::{FinishReason, Usage};
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
        let body = Body { wire: self, request, stream }.to_bytes()?;
        let mut headers = HeaderMap::new();
        if let Some(key) = key {
            headers.insert("x-api-key", secret_header(key.expose())?);
        }
        header(&mut headers, "anthropic-version", ANTHROPIC_VERSION)?;
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
