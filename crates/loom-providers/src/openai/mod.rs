//! OpenAI Chat Completions (`POST {base}/chat/completions`), and every server that speaks it.
//!
//! This file is the wire format: the request, a whole response, the shared helpers; `body` writes
//! the request body straight from the borrowed request. The streamed response is decoded in
//! `stream` (the decoder) with `scan` (a hand-written scanner for the common
//! `chat.completion.chunk` events; see docs/benchmarks.md for what it saves) and `chunk` (the typed
//! serde structs both decode into); their tests, proptests included, are in `tests`.

mod body;
mod chunk;
mod scan;
mod stream;
#[cfg(test)]
mod tests;

use reqwest::header::{AUTHORIZATION, HeaderMap};
use serde_json::Value;

use crate::http::{ApiKey, HttpRequest, StreamDecoder, WireFormat, secret_header};
use crate::json::Body;
use loom_core::error::ModelError;
use loom_core::message::{FinishReason, Usage};
use loom_core::model::{ModelCapabilities, ModelChunk, ModelRequest};
use stream::ChatDecoder;

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

    fn base_url(&self) -> Option<&str> {
        Some(&self.base_url)
    }

    fn build(&self, request: &ModelRequest<'_>, stream: bool, key: Option<&ApiKey>) -> Result<HttpRequest, ModelError> {
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
        let body = Body { wire: self, request, stream }.to_bytes()?;
        Ok(HttpRequest { url: crate::http::endpoint(&self.base_url, "/chat/completions", &[])?, headers, body })
    }

    fn decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ChatDecoder::default())
    }

    fn decode_body(&self, body: &[u8]) -> Result<Vec<ModelChunk>, ModelError> {
        // Typed and borrowed first; an answer that does not fit those types (a field of another
        // type, a duplicate key, an array for an object) is read from a JSON tree, which takes what it can.
        match serde_json::from_slice::<chunk::Obj<chunk::Completion<'_>>>(body) {
            Ok(completion) => decode_completion(completion.0),
            Err(_) => decode_tree(body),
        }
    }
}

/// A whole answer, from its typed fields: what [`decode_tree`] makes of the same answer.
fn decode_completion(c: chunk::Completion<'_>) -> Result<Vec<ModelChunk>, ModelError> {
    if let Some(err) = c.error.as_ref().filter(|e| !e.is_null()) {
        return Err(stream_error(err));
    }
    let choice =
        c.choices.into_iter().next().ok_or_else(|| ModelError::Protocol("the response has no choices".into()))?;
    let mut out = Vec::new();
    if let Some(message) = choice.message {
        // A whole answer's calls are in order: each at its place in the list.
        let mut next = 0;
        let refusal = stream::delta_chunks(
            message,
            |_, _| {
                next += 1;
                next - 1
            },
            &mut out,
        );
        if let Some(refusal) = refusal.filter(|r| !r.is_empty()) {
            return Err(refused(&refusal));
        }
    }
    if let Some(u) = c.usage {
        out.push(ModelChunk::Usage(stream::typed_usage(u)));
    }
    out.push(ModelChunk::Finish(choice.finish_reason.map_or(FinishReason::Stop, |r| stream::finish_reason_str(&r))));
    Ok(out)
}

/// A whole answer, read from a JSON tree.
fn decode_tree(body: &[u8]) -> Result<Vec<ModelChunk>, ModelError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| ModelError::Protocol(format!("invalid JSON response: {e}")))?;
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        return Err(stream_error(err));
    }
    let choice =
        crate::json::at(&v, "/choices/0").ok_or_else(|| ModelError::Protocol("the response has no choices".into()))?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    if let Some(refusal) = message.get("refusal").and_then(Value::as_str).filter(|r| !r.is_empty()) {
        return Err(refused(refusal));
    }
    let mut out = Vec::new();
    if let Some(r) = reasoning_text(message) {
        out.push(ModelChunk::Thinking { text: r.to_string(), signature: None, provider: None });
    }
    if let Some(text) = message.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        out.push(ModelChunk::Text(text.to_string()));
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for (index, c) in calls.iter().enumerate() {
            out.push(ModelChunk::ToolCallDelta {
                index,
                id: c.get("id").and_then(Value::as_str).map(str::to_string),
                name: crate::json::at(c, "/function/name").and_then(Value::as_str).map(str::to_string),
                arguments: crate::json::at(c, "/function/arguments").and_then(Value::as_str).unwrap_or("").to_string(),
            });
        }
    }
    if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
        out.push(ModelChunk::Usage(usage(u)));
    }
    out.push(ModelChunk::Finish(finish_reason(choice.get("finish_reason"))));
    Ok(out)
}

/// OpenAI's usage, normalized: `prompt_tokens` includes cached tokens, which we count apart.
pub(crate) fn usage(u: &Value) -> Usage {
    let n = |p: &str| crate::json::at(u, p).and_then(Value::as_u64).unwrap_or(0);
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
