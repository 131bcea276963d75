//! Google Gemini `generateContent` and `streamGenerateContent` (`?alt=sse`): the wire format and
//! its decoder here, the request body in `body.rs`.

mod body;

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::http::{ApiKey, HttpModel, HttpRequest, StreamDecoder, WireFormat, secret_header};
use crate::json::Body;
use crate::sse::SseEvent;
use loom_core::error::ModelError;
use loom_core::message::{FinishReason, Usage};
use loom_core::model::{ModelCapabilities, ModelChunk, ModelRequest};

/// The Gemini wire format. Function calls carry their thought signature back on the next turn
/// (kept as a [`loom_core::message::Thinking`] block of the assistant message, tagged `gemini`).
///
/// A signature another provider minted is never sent: where a turn's only signature is foreign,
/// its first function call carries [`FOREIGN_TURN_SIGNATURE`] instead, the value Google documents
/// for replaying a turn Gemini did not produce (Gemini 3 rejects a current-turn function call
/// without a signature).
#[derive(Clone, Debug)]
pub struct GenerateContent {
    pub(crate) model: String,
    pub(crate) base_url: String,
    pub(crate) key_env: &'static str,
}

/// The tag of the thought signatures Gemini mints (see [`loom_core::message::Thinking::provider`]).
pub const SIGNATURE_PROVIDER: &str = "gemini";

/// The thought signature sent for a turn another provider produced: Google's documented value for
/// skipping signature validation on history Gemini did not write.
pub const FOREIGN_TURN_SIGNATURE: &str = "skip_thought_signature_validator";

/// Gemini: `GEMINI_API_KEY` (or `GOOGLE_API_KEY`), `GEMINI_BASE_URL`.
pub fn gemini(model: &str) -> HttpModel<GenerateContent> {
    let key_env = if std::env::var("GEMINI_API_KEY").is_err() && std::env::var("GOOGLE_API_KEY").is_ok() {
        "GOOGLE_API_KEY"
    } else {
        "GEMINI_API_KEY"
    };
    HttpModel::new(GenerateContent {
        model: model.trim_start_matches("models/").to_string(),
        base_url: crate::base_url_from_env("GEMINI_BASE_URL", "https://generativelanguage.googleapis.com"),
        key_env,
    })
}

impl WireFormat for GenerateContent {
    fn provider(&self) -> &str {
        "gemini"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn capabilities(&self) -> ModelCapabilities {
        ModelCapabilities { tools: true, native_structured_output: true, context_window: Some(1_048_576) }
    }

    fn key_env(&self) -> &str {
        self.key_env
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
            headers.insert("x-goog-api-key", secret_header(key.expose())?);
        }
        let url = if stream {
            let path = format!("/v1beta/models/{}:streamGenerateContent", self.model);
            crate::http::endpoint(&self.base_url, &path, &[("alt", "sse")])?
        } else {
            crate::http::endpoint(&self.base_url, &format!("/v1beta/models/{}:generateContent", self.model), &[])?
        };
        Ok(HttpRequest { url, headers, body })
    }

    fn decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(GeminiDecoder::default())
    }

    fn decode_body(&self, body: &[u8]) -> Result<Vec<ModelChunk>, ModelError> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| ModelError::Protocol(format!("invalid JSON response: {e}")))?;
        let mut d = GeminiDecoder::default();
        let mut out = Vec::new();
        d.response(&v, &mut out)?;
        d.end(&mut out)?;
        Ok(out)
    }

    fn error(&self, status: u16, body: &str, retry_after: Option<std::time::Duration>) -> ModelError {
        let lower = body.to_ascii_lowercase();
        if status == 400 && (lower.contains("api key not valid") || lower.contains("api_key_invalid")) {
            let message = crate::http::error_message(body).unwrap_or_else(|| "invalid API key".into());
            return ModelError::Authentication(format!("{message} (HTTP {status})"));
        }
        if is_context_overflow(&lower) {
            let message = crate::http::error_message(body).unwrap_or_else(|| "the input is too long".into());
            return ModelError::ContextLengthExceeded(format!("{message} (HTTP {status})"));
        }
        // Gemini asks for a wait in the body (google.rpc.RetryInfo), not in a Retry-After header.
        crate::http::classify(status, body, retry_after.or_else(|| retry_delay(body)))
    }
}

/// The `retryDelay` of a `google.rpc.RetryInfo` detail (`"17s"`, `"0.5s"`) in an error body.
fn retry_delay(body: &str) -> Option<std::time::Duration> {
    let v: Value = serde_json::from_str(body).ok()?;
    let v = if v.is_array() { v.get(0)?.clone() } else { v };
    crate::json::at(&v, "/error/details")?.as_array()?.iter().find_map(|d| {
        let secs = d.get("retryDelay")?.as_str()?.strip_suffix('s')?.parse::<f64>().ok()?;
        std::time::Duration::try_from_secs_f64(secs).ok()
    })
}

/// Gemini's "The input token count (N) exceeds the maximum number of tokens allowed (M)."
fn is_context_overflow(lower: &str) -> bool {
    lower.contains("exceeds the maximum number of tokens")
}

fn gemini_error(err: &Value) -> ModelError {
    let message = err.get("message").and_then(Value::as_str).unwrap_or("unknown error").to_string();
    let status = err.get("code").and_then(Value::as_u64).map(|c| c as u16);
    if is_context_overflow(&message.to_ascii_lowercase()) {
        return ModelError::ContextLengthExceeded(message);
    }
    match err.get("status").and_then(Value::as_str).unwrap_or("") {
        "RESOURCE_EXHAUSTED" => ModelError::RateLimited { message, retry_after: None },
        "UNAVAILABLE" | "INTERNAL" | "DEADLINE_EXCEEDED" => ModelError::Transient { message, status },
        "UNAUTHENTICATED" | "PERMISSION_DENIED" => ModelError::Authentication(message),
        _ => ModelError::InvalidRequest(message),
    }
}

#[derive(Default)]
struct GeminiDecoder {
    usage: Option<Usage>,
    finish: Option<FinishReason>,
    calls: usize,
}

impl GeminiDecoder {
    fn response(&mut self, v: &Value, out: &mut Vec<ModelChunk>) -> Result<(), ModelError> {
        if let Some(err) = v.get("error") {
            return Err(gemini_error(err));
        }
        if let Some(reason) = crate::json::at(v, "/promptFeedback/blockReason").and_then(Value::as_str) {
            return Err(ModelError::ContentFilter(format!("the prompt was blocked ({reason})")));
        }
        if let Some(candidate) = crate::json::at(v, "/candidates/0") {
            for part in crate::json::at(candidate, "/content/parts").and_then(Value::as_array).into_iter().flatten() {
                let signature = part.get("thoughtSignature").and_then(Value::as_str).map(str::to_string);
                let provider = signature.is_some().then(|| SIGNATURE_PROVIDER.to_string());
                if let Some(call) = part.get("functionCall") {
                    if signature.is_some() {
                        out.push(ModelChunk::Thinking { text: String::new(), signature, provider });
                    }
                    out.push(ModelChunk::ToolCallDelta {
                        index: self.calls,
                        id: call.get("id").and_then(Value::as_str).map(str::to_string),
                        name: call.get("name").and_then(Value::as_str).map(str::to_string),
                        arguments: call.get("args").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                    });
                    self.calls += 1;
                } else if let Some(text) = part.get("text").and_then(Value::as_str) {
                    if part.get("thought").and_then(Value::as_bool) == Some(true) {
                        out.push(ModelChunk::Thinking { text: text.to_string(), signature, provider });
                    } else {
                        if signature.is_some() {
                            out.push(ModelChunk::Thinking { text: String::new(), signature, provider });
                        }
                        if !text.is_empty() {
                            out.push(ModelChunk::Text(text.to_string()));
                        }
                    }
                }
            }
            if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
                self.finish = Some(match reason {
                    "STOP" => FinishReason::Stop,
                    "MAX_TOKENS" => FinishReason::Length,
                    "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
                        FinishReason::ContentFilter
                    }
                    _ => FinishReason::Other,
                });
            }
        }
        if let Some(u) = v.get("usageMetadata") {
            let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            let cached = n("cachedContentTokenCount");
            self.usage = Some(Usage {
                input_tokens: n("promptTokenCount").saturating_sub(cached),
                cached_input_tokens: cached,
                cache_write_tokens: 0,
                output_tokens: n("candidatesTokenCount") + n("thoughtsTokenCount"),
                cost_usd: 0.0,
            });
        }
        Ok(())
    }
}

impl StreamDecoder for GeminiDecoder {
    fn event(&mut self, event: SseEvent, out: &mut Vec<ModelChunk>) -> Result<bool, ModelError> {
        if event.data.trim().is_empty() {
            return Ok(false);
        }
        let v: Value = serde_json::from_str(&event.data)
            .map_err(|e| ModelError::Protocol(format!("invalid JSON in the event stream: {e}")))?;
        self.response(&v, out)?;
        Ok(false)
    }

    fn end(&mut self, out: &mut Vec<ModelChunk>) -> Result<(), ModelError> {
        let Some(mut finish) = self.finish.take() else {
            return Err(ModelError::Transient {
                message: "the stream ended without a finishReason".into(),
                status: None,
            });
        };
        if self.calls > 0 && finish == FinishReason::Stop {
            finish = FinishReason::ToolCalls;
        }
        if let Some(u) = self.usage.take() {
            out.push(ModelChunk::Usage(u));
        }
        out.push(ModelChunk::Finish(finish));
        Ok(())
    }
}
