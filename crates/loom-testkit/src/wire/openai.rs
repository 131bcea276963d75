//! OpenAI Chat Completions bodies and stream pieces.

use serde_json::{Value, json};

use super::sse_event;

fn chunk(delta: Value, finish: Option<&str>) -> String {
    let body = json!({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "mock",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
    });
    sse_event(None, &body.to_string())
}

/// A text delta.
pub fn text(t: &str) -> String {
    chunk(json!({"content": t}), None)
}

/// The first piece of a tool call (id and name).
pub fn tool_call_start(index: u32, id: &str, name: &str) -> String {
    chunk(
        json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
        None,
    )
}

/// A piece of a tool call's arguments.
pub fn tool_call_args(index: u32, args: &str) -> String {
    chunk(json!({"tool_calls": [{"index": index, "function": {"arguments": args}}]}), None)
}

/// The finish chunk.
pub fn finish(reason: &str) -> String {
    chunk(json!({}), Some(reason))
}

/// The usage chunk (`stream_options.include_usage`).
pub fn usage(prompt: u64, cached: u64, completion: u64) -> String {
    let body = json!({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "mock", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": cached}}
    });
    sse_event(None, &body.to_string())
}

/// The end of the stream.
pub fn done() -> String {
    sse_event(None, "[DONE]")
}

/// A whole streamed text answer.
pub fn text_stream(t: &str) -> Vec<String> {
    vec![text(t), finish("stop"), usage(10, 0, 5), done()]
}

/// A whole non-streamed answer.
pub fn completion(text: Option<&str>, tool_calls: &[(&str, &str, &str)], prompt: u64, completion: u64) -> Value {
    let calls: Vec<Value> = tool_calls
        .iter()
        .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
        .collect();
    let mut message = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1_700_000_000, "model": "mock",
        "choices": [{"index": 0, "message": message, "finish_reason": if tool_calls.is_empty() { "stop" } else { "tool_calls" }}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    })
}

/// An error body.
pub fn error(kind: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
}
