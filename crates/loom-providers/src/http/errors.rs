//! The error taxonomy of a response, and keeping keys out of error messages.

use std::time::Duration;

use loom_core::error::ModelError;

use super::ApiKey;
use crate::sse::SseError;

/// The error kind of an HTTP status and body, the rules every provider shares.
pub fn classify(status: u16, body: &str, retry_after: Option<Duration>) -> ModelError {
    let message = error_message(body).unwrap_or_else(|| format!("HTTP {status}"));
    let lower = body.to_ascii_lowercase();
    let message = format!("{message} (HTTP {status})");
    // Body phrases decide the kind only for client errors: a 429 saying "too many tokens per
    // minute" is a rate limit, and a 5xx mentioning a filter is still transient.
    let client_error = matches!(status, 400 | 413 | 422);
    if client_error
        && (lower.contains("context_length_exceeded")
            || lower.contains("maximum context length")
            || lower.contains("prompt is too long")
            || lower.contains("too many tokens"))
    {
        return ModelError::ContextLengthExceeded(message);
    }
    if client_error
        && (lower.contains("content_filter")
            || lower.contains("content_policy")
            || lower.contains("content filtering")
            || lower.contains("safety"))
    {
        return ModelError::ContentFilter(message);
    }
    match status {
        401 | 403 => ModelError::Authentication(message),
        429 => ModelError::RateLimited { message, retry_after },
        408 | 409 | 500..=599 => ModelError::Transient { message, status: Some(status) },
        _ if lower.contains("overloaded") => ModelError::Transient { message, status: Some(status) },
        _ => ModelError::InvalidRequest(message),
    }
}

/// The human message in a provider's JSON error body (`error.message`, `message`, or `error` as a
/// string), cut to a readable length.
pub fn error_message(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let v = if v.is_array() { v.get(0)?.clone() } else { v };
    let msg = v
        .pointer("/error/message")
        .or_else(|| v.get("message"))
        .or_else(|| v.get("error").filter(|e| e.is_string()))
        .and_then(|m| m.as_str())?;
    Some(msg.chars().take(500).collect())
}

pub(super) fn transient(message: String) -> ModelError {
    ModelError::Transient { message, status: None }
}

pub(super) fn stalled(idle: Duration) -> String {
    format!("the stream stalled for {} ms", idle.as_millis())
}

pub(super) fn too_large(max: usize, declared: Option<u64>) -> ModelError {
    match declared {
        Some(n) => ModelError::Protocol(format!(
            "the response exceeded {max} bytes (max_response_bytes): it declared {n} bytes"
        )),
        None => ModelError::Protocol(format!("the response exceeded {max} bytes (max_response_bytes)")),
    }
}

pub(super) fn sse_error(e: SseError) -> ModelError {
    match e {
        SseError::TooLarge(n) => {
            ModelError::Protocol(format!("malformed event stream: one event exceeded {n} bytes (max_response_bytes)"))
        }
        other => ModelError::Protocol(format!("malformed event stream: {other}")),
    }
}

pub(super) fn transport_error(e: &reqwest::Error) -> ModelError {
    // reqwest's Display includes the URL but never headers, so no key can leak from here.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_decode() || e.is_body() && !e.is_timeout() && !e.is_connect() {
        return ModelError::Transient { message: format!("the connection broke: {msg}"), status: None };
    }
    ModelError::Transient { message: msg, status: None }
}

/// Removes the key from any message an error carries.
pub(crate) fn scrub_error(key: Option<&ApiKey>, e: ModelError) -> ModelError {
    let Some(key) = key else { return e };
    match e {
        ModelError::Transient { message, status } => ModelError::Transient { message: key.scrub(&message), status },
        ModelError::RateLimited { message, retry_after } => {
            ModelError::RateLimited { message: key.scrub(&message), retry_after }
        }
        ModelError::Authentication(m) => ModelError::Authentication(key.scrub(&m)),
        ModelError::InvalidRequest(m) => ModelError::InvalidRequest(key.scrub(&m)),
        ModelError::ContentFilter(m) => ModelError::ContentFilter(key.scrub(&m)),
        ModelError::ContextLengthExceeded(m) => ModelError::ContextLengthExceeded(key.scrub(&m)),
        ModelError::Protocol(m) => ModelError::Protocol(key.scrub(&m)),
        ModelError::Unavailable(m) => ModelError::Unavailable(key.scrub(&m)),
        ModelError::Configuration(m) => ModelError::Configuration(key.scrub(&m)),
        other => other,
    }
}

#[cfg(test)]
mod classify_tests {
    use super::classify;
    use loom_core::error::ModelError;

    #[test]
    fn classify_uses_body_phrases_only_for_client_errors() {
        let filtered = r#"{"error":{"message":"Output blocked by content filtering policy"}}"#;
        assert!(matches!(classify(400, filtered, None), ModelError::ContentFilter(_)));
        assert!(matches!(classify(503, filtered, None), ModelError::Transient { .. }));
        let tpm = r#"{"error":{"message":"Too many tokens per minute"}}"#;
        assert!(matches!(classify(429, tpm, None), ModelError::RateLimited { .. }));
        assert!(matches!(classify(400, tpm, None), ModelError::ContextLengthExceeded(_)));
        let policy = r#"{"error":{"code":"content_policy_violation","message":"no"}}"#;
        assert!(matches!(classify(429, policy, None), ModelError::RateLimited { .. }));
    }
}
