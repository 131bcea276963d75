//! Google Gemini `generateContent` and `streamGenerateContent` (`?alt=sse`).

use reqwest::header::HeaderMap;
use serde_json::{Map, Value, json};

use crate::http::{ApiKey, HttpModel, HttpRequest, StreamDecoder, WireFormat, secret_header};
use crate::sse::SseEvent;
use loom_core::error::ModelError;
use loom_core::message::{ContentPart, FinishReason, Message, Usage};
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

fn user_part(p: &ContentPart) -> Value {
    match p {
        ContentPart::Text { text } => json!({"text": text}),
        ContentPart::Image { url, media_type } => {
            if let Some(rest) = url.strip_prefix("data:")
                && let Some((meta, data)) = rest.split_once(',')
            {
                let mt = meta.trim_end_matches(";base64");
                let mt = if mt.is_empty() { media_type.as_deref().unwrap_or("image/png") } else { mt };
                return json!({"inlineData": {"mimeType": mt, "data": data}});
            }
            json!({"fileData": {"mimeType": media_type.as_deref().unwrap_or("image/png"), "fileUri": url}})
        }
    }
}

impl GenerateContent {
    fn contents(messages: &[Message]) -> (Vec<Value>, Vec<Value>) {
        let mut system = Vec::new();
        let mut contents: Vec<Value> = Vec::new();
        let push = |role: &str, parts: Vec<Value>, contents: &mut Vec<Value>| {
            if parts.is_empty() {
                return;
            }
            if let Some(last) = contents.last_mut()
                && last["role"] == role
                && let Some(p) = last.get_mut("parts").and_then(Value::as_array_mut)
            {
                p.extend(parts);
                return;
            }
            contents.push(json!({"role": role, "parts": parts}));
        };
        for m in messages {
            match m {
                Message::System { content } => system.push(json!({"text": content})),
                Message::User { content } => push("user", content.iter().map(user_part).collect(), &mut contents),
                Message::Assistant { content, thinking, tool_calls } => {
                    // Only Gemini's own signatures go back; a turn signed by another provider gets
                    // the documented placeholder instead.
                    let own = thinking.iter().filter(|t| t.replayable_by(SIGNATURE_PROVIDER));
                    let signature = own.filter_map(|t| t.signature.clone()).next().or_else(|| {
                        thinking.iter().any(|t| t.signature.is_some()).then(|| FOREIGN_TURN_SIGNATURE.to_string())
                    });
                    let mut parts = Vec::new();
                    if !content.is_empty() {
                        parts.push(json!({"text": content}));
                    }
                    for c in tool_calls {
                        // Gemini takes only an object (a Struct); malformed arguments go back as `{}`.
                        let args = serde_json::from_str::<Value>(&c.arguments)
                            .ok()
                            .filter(Value::is_object)
                            .unwrap_or_else(|| json!({}));
                        let mut call = json!({"name": c.name, "args": args});
                        if !c.id.starts_with("call_") {
                            call["id"] = json!(c.id);
                        }
                        parts.push(json!({"functionCall": call}));
                    }
                    // The signature goes back on the first function call (or the text) of the turn.
                    if let Some(sig) = signature {
                        let target = parts.iter().position(|p| p.get("functionCall").is_some()).unwrap_or(0);
                        if let Some(p) = parts.get_mut(target) {
                            p["thoughtSignature"] = json!(sig);
                        }
                    }
                    push("model", parts, &mut contents);
                }
                Message::Tool { call_id, name, content, is_error } => {
                    let key = if *is_error { "error" } else { "content" };
                    let mut resp = json!({"name": name, "response": {key: content}});
                    if !call_id.starts_with("call_") {
                        resp["id"] = json!(call_id);
                    }
                    push("user", vec![json!({"functionResponse": resp})], &mut contents);
                }
            }
        }
        (system, contents)
    }
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
        let g = request.generation;
        let (system, contents) = Self::contents(request.messages);
        let mut body = Map::new();
        body.insert("contents".into(), Value::Array(contents));
        if !system.is_empty() {
            body.insert("systemInstruction".into(), json!({"parts": system}));
        }
        if !request.tools.is_empty() {
            let decls: Vec<Value> = request
                .tools
                .iter()
                .map(|t| json!({"name": t.name, "description": t.description, "parametersJsonSchema": t.parameters}))
                .collect();
            body.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        }
        let mut config = Map::new();
        if let Some(t) = g.temperature {
            config.insert("temperature".into(), crate::json::decimal(t));
        }
        if let Some(p) = g.top_p {
            config.insert("topP".into(), crate::json::decimal(p));
        }
        if let Some(n) = g.max_output_tokens {
            config.insert("maxOutputTokens".into(), json!(n));
        }
        if !g.stop.is_empty() {
            config.insert("stopSequences".into(), json!(g.stop));
        }
        if let Some(seed) = g.seed {
            config.insert("seed".into(), json!(seed));
        }
        if let Some(schema) = request.output_schema {
            config.insert("responseMimeType".into(), json!("application/json"));
            let mut schema = schema.clone();
            if let Some(o) = schema.as_object_mut() {
                o.remove("$schema");
            }
            config.insert("responseJsonSchema".into(), schema);
        }
        // Extensions: `generationConfig.*` keys (thinkingConfig, …) or top-level fields (safetySettings, …).
        for (k, v) in &g.extensions {
            match k.strip_prefix("generationConfig.") {
                Some(inner) => {
                    config.insert(inner.to_string(), v.clone());
                }
                None if k == "thinkingConfig" || k == "responseModalities" => {
                    config.insert(k.clone(), v.clone());
                }
                None => {
                    body.insert(k.clone(), v.clone());
                }
            }
        }
        if !config.is_empty() {
            body.insert("generationConfig".into(), Value::Object(config));
        }
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
        let body = serde_json::to_vec(&Value::Object(body)).map_err(|e| ModelError::InvalidRequest(e.to_string()))?;
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
