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

/// The first chunk of a stream: the assistant role with empty content, as OpenAI sends it.
pub fn role() -> String {
    chunk(json!({"role": "assistant", "content": "", "refusal": null}), None)
}

/// A reasoning delta as DeepSeek (and vLLM, LM Studio) send it: `delta.reasoning_content`.
pub fn reasoning_content(t: &str) -> String {
    chunk(json!({"content": null, "reasoning_content": t}), None)
}

/// A reasoning delta as OpenRouter sends it: `delta.reasoning`, with `reasoning_content: null`.
pub fn reasoning(t: &str) -> String {
    chunk(json!({"content": null, "reasoning": t, "reasoning_content": null}), None)
}

/// A refusal delta (`delta.refusal`), sent instead of content when the model declines.
pub fn refusal(t: &str) -> String {
    chunk(json!({"content": null, "refusal": t}), None)
}

/// One chunk carrying pieces of several tool calls at once: `(index, id, name, arguments)`, where id
/// and name are sent only when given.
pub fn tool_call_pieces(pieces: &[(u32, Option<&str>, Option<&str>, &str)]) -> String {
    let calls: Vec<Value> = pieces
        .iter()
        .map(|(index, id, name, args)| {
            let mut function = json!({"arguments": args});
            if let Some(name) = name {
                function["name"] = json!(name);
            }
            let mut call = json!({"index": index, "function": function});
            if let Some(id) = id {
                call["id"] = json!(id);
                call["type"] = json!("function");
            }
            call
        })
        .collect();
    chunk(json!({"tool_calls": calls}), None)
}

/// A whole tool call in one chunk without an `index` (some compatible servers send calls this way).
pub fn tool_call_without_index(id: &str, name: &str, args: &str) -> String {
    chunk(json!({"tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": args}}]}), None)
}

/// The usage chunk as DeepSeek sends it: `prompt_cache_hit_tokens` and `prompt_cache_miss_tokens`,
/// with `prompt_tokens` their sum.
pub fn usage_deepseek(hit: u64, miss: u64, completion: u64) -> String {
    let body = json!({
        "id": "mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "deepseek-chat",
        "choices": [],
        "usage": {"prompt_tokens": hit + miss, "completion_tokens": completion, "total_tokens": hit + miss + completion,
                  "prompt_cache_hit_tokens": hit, "prompt_cache_miss_tokens": miss}
    });
    sse_event(None, &body.to_string())
}

/// An error sent inside the event stream (`data: {"error": …}`), as OpenAI does when a request
/// fails after the response started.
pub fn stream_error(kind: Option<&str>, code: Option<&str>, message: &str) -> String {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    sse_event(None, &body.to_string())
}

/// A whole streamed answer with tool calls (`(id, name, arguments)`), each call's arguments in two
/// pieces, then `finish_reason: tool_calls`, usage and `[DONE]`.
pub fn tool_call_stream(calls: &[(&str, &str, &str)], prompt: u64, completion: u64) -> Vec<String> {
    let mut out = vec![role()];
    for (i, (id, name, args)) in calls.iter().enumerate() {
        let index = i as u32;
        let split = args.len() / 2;
        let split = (split..=args.len()).find(|s| args.is_char_boundary(*s)).unwrap_or(args.len());
        out.push(tool_call_start(index, id, name));
        out.push(tool_call_args(index, &args[..split]));
        out.push(tool_call_args(index, &args[split..]));
    }
    out.push(finish("tool_calls"));
    out.push(usage(prompt, 0, completion));
    out.push(done());
    out
}

/// A whole non-streamed answer with usage that counts cached prompt tokens
/// (`usage.prompt_tokens_details.cached_tokens`).
pub fn completion_cached(
    text: Option<&str>,
    tool_calls: &[(&str, &str, &str)],
    prompt: u64,
    cached: u64,
    completion_tokens: u64,
) -> Value {
    let mut body = completion(text, tool_calls, prompt, completion_tokens);
    body["usage"]["prompt_tokens_details"] = json!({"cached_tokens": cached, "audio_tokens": 0});
    body["usage"]["completion_tokens_details"] = json!({"reasoning_tokens": 0, "audio_tokens": 0});
    body
}

/// An error body as OpenAI sends it, with a `code` (`invalid_api_key`, `context_length_exceeded`).
pub fn error_with_code(kind: &str, code: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}
