//! Anthropic Messages bodies and stream pieces.
//!
//! Written from the Messages API reference: a streamed answer is `message_start` (a message with
//! empty content and the input usage), then per content block a `content_block_start`, its
//! `content_block_delta`s and a `content_block_stop`, then `message_delta` (stop reason and the
//! cumulative output tokens) and `message_stop`. `ping` may come anywhere; `error` ends the stream.

use serde_json::{Value, json};

use super::sse_event;

/// The model name the fixtures report.
pub const MODEL: &str = "claude-sonnet-4-5";

fn event(kind: &str, data: Value) -> String {
    sse_event(Some(kind), &data.to_string())
}

/// Input usage as `message_start` and whole messages report it.
pub fn usage(input: u64, cache_creation: u64, cache_read: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output
    })
}

/// `message_start`: the message shell with the input usage (output tokens start at 1, as the API
/// reports them).
pub fn message_start(input: u64, cache_creation: u64, cache_read: u64) -> String {
    event(
        "message_start",
        json!({
            "type": "message_start",
            "message": {
                "id": "msg_mock", "type": "message", "role": "assistant", "content": [], "model": MODEL,
                "stop_reason": null, "stop_sequence": null,
                "usage": usage(input, cache_creation, cache_read, 1)
            }
        }),
    )
}

fn block_start(index: u32, block: Value) -> String {
    event("content_block_start", json!({"type": "content_block_start", "index": index, "content_block": block}))
}

fn block_delta(index: u32, delta: Value) -> String {
    event("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": delta}))
}

/// `content_block_start` of a text block (empty, as the API sends it).
pub fn text_start(index: u32) -> String {
    block_start(index, json!({"type": "text", "text": ""}))
}

/// `content_block_start` of a tool_use block (its input arrives as `input_json_delta`s).
pub fn tool_use_start(index: u32, id: &str, name: &str) -> String {
    block_start(index, json!({"type": "tool_use", "id": id, "name": name, "input": {}}))
}

/// `content_block_start` of a thinking block.
pub fn thinking_start(index: u32) -> String {
    block_start(index, json!({"type": "thinking", "thinking": "", "signature": ""}))
}

/// `content_block_start` of a redacted_thinking block (its data comes whole, with no deltas).
pub fn redacted_thinking_start(index: u32, data: &str) -> String {
    block_start(index, json!({"type": "redacted_thinking", "data": data}))
}

/// A `text_delta`.
pub fn text_delta(index: u32, text: &str) -> String {
    block_delta(index, json!({"type": "text_delta", "text": text}))
}

/// An `input_json_delta`: a piece of a tool_use input's JSON text.
pub fn input_json_delta(index: u32, partial_json: &str) -> String {
    block_delta(index, json!({"type": "input_json_delta", "partial_json": partial_json}))
}

/// A `thinking_delta`.
pub fn thinking_delta(index: u32, thinking: &str) -> String {
    block_delta(index, json!({"type": "thinking_delta", "thinking": thinking}))
}

/// A `signature_delta` (sent just before a thinking block's `content_block_stop`).
pub fn signature_delta(index: u32, signature: &str) -> String {
    block_delta(index, json!({"type": "signature_delta", "signature": signature}))
}

/// `content_block_stop`.
pub fn block_stop(index: u32) -> String {
    event("content_block_stop", json!({"type": "content_block_stop", "index": index}))
}

/// `message_delta`: the stop reason and the cumulative output tokens.
pub fn message_delta(stop_reason: &str, output_tokens: u64) -> String {
    event(
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": output_tokens}
        }),
    )
}

/// `message_stop`.
pub fn message_stop() -> String {
    event("message_stop", json!({"type": "message_stop"}))
}

/// `ping`.
pub fn ping() -> String {
    event("ping", json!({"type": "ping"}))
}

/// An in-stream `error` event (`overloaded_error`, `api_error`, …).
pub fn error_event(kind: &str, message: &str) -> String {
    event("error", error_body(kind, message))
}

/// An error body as the API sends it with a non-2xx status (and as the `error` event's data).
pub fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"})
}

/// A whole streamed text answer: one text block in two deltas, `end_turn`.
pub fn text_stream(text: &str, input: u64, output: u64) -> Vec<String> {
    let mid = text.char_indices().nth(text.chars().count() / 2).map_or(0, |(i, _)| i);
    vec![
        message_start(input, 0, 0),
        text_start(0),
        text_delta(0, &text[..mid]),
        text_delta(0, &text[mid..]),
        block_stop(0),
        message_delta("end_turn", output),
        message_stop(),
    ]
}

/// A whole streamed tool call: one tool_use block whose input arrives in `pieces`, `tool_use`.
pub fn tool_use_stream(id: &str, name: &str, pieces: &[&str], input: u64, output: u64) -> Vec<String> {
    let mut out = vec![message_start(input, 0, 0), tool_use_start(0, id, name)];
    out.extend(pieces.iter().map(|p| input_json_delta(0, p)));
    out.extend([block_stop(0), message_delta("tool_use", output), message_stop()]);
    out
}

/// A text content block of a whole message.
pub fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// A tool_use content block of a whole message.
pub fn tool_use_block(id: &str, name: &str, input: Value) -> Value {
    json!({"type": "tool_use", "id": id, "name": name, "input": input})
}

/// A thinking content block of a whole message.
pub fn thinking_block(thinking: &str, signature: &str) -> Value {
    json!({"type": "thinking", "thinking": thinking, "signature": signature})
}

/// A redacted_thinking content block of a whole message.
pub fn redacted_thinking_block(data: &str) -> Value {
    json!({"type": "redacted_thinking", "data": data})
}

/// A whole (non-streamed) message.
pub fn message(content: Vec<Value>, stop_reason: &str, usage: Value) -> Value {
    json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": MODEL,
        "content": content, "stop_reason": stop_reason, "stop_sequence": null, "usage": usage
    })
}
