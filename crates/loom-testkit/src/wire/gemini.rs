//! Google Gemini generateContent bodies and stream pieces.
//!
//! Written from the Gemini API reference: `generateContent` answers one `GenerateContentResponse`;
//! `streamGenerateContent?alt=sse` sends a series of them as `data:` events (no event names, no end
//! marker), the last one carrying `finishReason` and every one the cumulative `usageMetadata`.

use serde_json::{Value, json};

use super::sse_event;

/// The model version the fixtures report.
pub const MODEL: &str = "gemini-2.5-flash";

/// A text part.
pub fn text(t: &str) -> Value {
    json!({"text": t})
}

/// A thought summary part (`thought: true`).
pub fn thought(t: &str) -> Value {
    json!({"text": t, "thought": true})
}

/// A functionCall part (`id` is only sent by some models and APIs).
pub fn function_call(name: &str, args: Value, id: Option<&str>) -> Value {
    let mut call = json!({"name": name, "args": args});
    if let Some(id) = id {
        call["id"] = json!(id);
    }
    json!({"functionCall": call})
}

/// The same part with a `thoughtSignature`.
pub fn signed(mut part: Value, signature: &str) -> Value {
    part["thoughtSignature"] = json!(signature);
    part
}

/// `usageMetadata`: `promptTokenCount` includes the cached tokens; thoughts are counted apart from
/// the candidates.
pub fn usage(prompt: u64, cached: u64, candidates: u64, thoughts: u64) -> Value {
    let mut u = json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]
    });
    if cached > 0 {
        u["cachedContentTokenCount"] = json!(cached);
    }
    if thoughts > 0 {
        u["thoughtsTokenCount"] = json!(thoughts);
    }
    u
}

/// One `GenerateContentResponse` with one candidate.
pub fn response(parts: Vec<Value>, finish_reason: Option<&str>, usage: Option<Value>) -> Value {
    let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
    if let Some(r) = finish_reason {
        candidate["finishReason"] = json!(r);
    }
    let mut body = json!({"candidates": [candidate], "modelVersion": MODEL, "responseId": "resp-mock"});
    if let Some(u) = usage {
        body["usageMetadata"] = u;
    }
    body
}

/// A response whose prompt was blocked: no candidates, `promptFeedback.blockReason`.
pub fn blocked(reason: &str, prompt_tokens: u64) -> Value {
    json!({
        "promptFeedback": {"blockReason": reason, "safetyRatings": []},
        "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens},
        "modelVersion": MODEL
    })
}

/// One streamed chunk (`data: <response>`).
pub fn chunk(parts: Vec<Value>, finish_reason: Option<&str>, usage: Option<Value>) -> String {
    sse_event(None, &response(parts, finish_reason, usage).to_string())
}

/// Any body as one streamed chunk.
pub fn event(body: &Value) -> String {
    sse_event(None, &body.to_string())
}

/// A whole streamed text answer in two chunks, `STOP`.
pub fn text_stream(t: &str, prompt: u64, candidates: u64) -> Vec<String> {
    let mid = t.char_indices().nth(t.chars().count() / 2).map_or(0, |(i, _)| i);
    vec![
        chunk(vec![text(&t[..mid])], None, Some(usage(prompt, 0, 1, 0))),
        chunk(vec![text(&t[mid..])], Some("STOP"), Some(usage(prompt, 0, candidates, 0))),
    ]
}

/// An error body: `{error: {code, message, status}}`.
pub fn error_body(code: u16, message: &str, status: &str) -> Value {
    json!({"error": {"code": code, "message": message, "status": status}})
}

/// A 429 body with the wait Gemini asks for (`google.rpc.RetryInfo`, such as `"17s"`).
pub fn rate_limited_body(retry_delay: &str) -> Value {
    json!({"error": {
        "code": 429,
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
             "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                             "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
        ]
    }})
}

/// The error body for an invalid API key (HTTP 400, `API_KEY_INVALID`).
pub fn invalid_key_body() -> Value {
    json!({"error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"}
        }]
    }})
}
