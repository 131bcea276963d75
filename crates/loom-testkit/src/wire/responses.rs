//! OpenAI Responses API bodies and stream pieces.
//!
//! A streamed response is a sequence of typed events, each sent with an `event:` line naming its
//! type and a JSON `data:` line carrying the same `type` and a `sequence_number`. There is no
//! `[DONE]`: the stream ends with `response.completed`, `response.incomplete` or `response.failed`
//! (or an `error` event). [`Events`] builds such a stream, numbering the events and keeping the
//! finished output items for the final response object.
//!
//! ```
//! use loom_testkit::wire::responses::{self, Events};
//!
//! let stream = Events::new()
//!     .message("msg_1", &["Hel", "lo"])
//!     .function_call("fc_1", "call_1", "get_weather", &["{\"city\":", "\"Oslo\"}"])
//!     .completed(responses::usage(100, 20, 7));
//! assert!(stream[0].starts_with("event: response.created\n"));
//! ```

use serde_json::{Value, json};

use super::sse_event;

/// The model the fixtures name.
const MODEL: &str = "gpt-5.1";

/// A `usage` object: `input_tokens` includes the cached ones
/// (`input_tokens_details.cached_tokens`).
pub fn usage(input: u64, cached: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input + output
    })
}

/// A finished assistant message output item with one `output_text` part.
pub fn message_item(id: &str, text: &str) -> Value {
    json!({
        "type": "message", "id": id, "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    })
}

/// A finished assistant message output item whose only part is a refusal.
pub fn refusal_item(id: &str, refusal: &str) -> Value {
    json!({
        "type": "message", "id": id, "status": "completed", "role": "assistant",
        "content": [{"type": "refusal", "refusal": refusal}]
    })
}

/// A finished `function_call` output item.
pub fn function_call_item(id: &str, call_id: &str, name: &str, arguments: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": arguments, "status": "completed"})
}

/// A `reasoning` output item with a summary.
pub fn reasoning_item(id: &str, summary: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [{"type": "summary_text", "text": summary}]})
}

/// A whole response object (`object: "response"`), as a non-streamed call returns it and as
/// `response.completed` carries it.
pub fn response(status: &str, output: Vec<Value>, usage: Option<Value>) -> Value {
    json!({
        "id": "resp_mock", "object": "response", "created_at": 1_700_000_000, "status": status,
        "error": null, "incomplete_details": null, "instructions": null, "max_output_tokens": null,
        "model": MODEL, "output": output, "parallel_tool_calls": true, "previous_response_id": null,
        "store": false, "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
        "tools": [], "top_p": 1.0, "truncation": "disabled", "usage": usage, "metadata": {}
    })
}

/// A completed non-streamed response.
pub fn response_body(output: Vec<Value>, usage: Value) -> Value {
    response("completed", output, Some(usage))
}

/// An error body (HTTP 4xx/5xx) in the Responses API's format.
pub fn error_body(kind: &str, code: Option<&str>, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// Builds a streamed response, event by event. Starts with `response.created` and
/// `response.in_progress`; ends with one of the terminal methods, which return the SSE chunks (one
/// event per chunk).
#[derive(Clone, Debug)]
pub struct Events {
    seq: u64,
    next_output: u64,
    done_items: Vec<Value>,
    out: Vec<String>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// A stream opened with `response.created` and `response.in_progress`.
    pub fn new() -> Self {
        let mut e = Events { seq: 0, next_output: 0, done_items: Vec::new(), out: Vec::new() };
        e.push("response.created", json!({"response": response("in_progress", vec![], None)}));
        e.push("response.in_progress", json!({"response": response("in_progress", vec![], None)}));
        e
    }

    /// Adds one event of `kind` with these fields (`type` and `sequence_number` are added).
    pub fn push(&mut self, kind: &str, fields: Value) -> &mut Self {
        let mut body = json!({"type": kind, "sequence_number": self.seq});
        if let (Some(b), Value::Object(f)) = (body.as_object_mut(), fields) {
            b.extend(f);
        }
        self.seq += 1;
        self.out.push(sse_event(Some(kind), &body.to_string()));
        self
    }

    /// Adds an event (builder style).
    pub fn event(mut self, kind: &str, fields: Value) -> Self {
        self.push(kind, fields);
        self
    }

    /// The output index the next item gets.
    pub fn next_output_index(&self) -> u64 {
        self.next_output
    }

    /// `response.output_item.added` for `item` at the next output index; returns that index.
    pub fn item_added(&mut self, item: Value) -> u64 {
        let index = self.next_output;
        self.next_output += 1;
        self.push("response.output_item.added", json!({"output_index": index, "item": item}));
        index
    }

    /// `response.output_item.done` for `item` at `output_index` (the item joins the final output).
    pub fn item_done(&mut self, output_index: u64, item: Value) -> &mut Self {
        self.done_items.push(item.clone());
        self.push("response.output_item.done", json!({"output_index": output_index, "item": item}))
    }

    /// `response.output_text.delta`.
    pub fn text_delta(&mut self, output_index: u64, item_id: &str, delta: &str) -> &mut Self {
        self.push(
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": output_index, "content_index": 0, "delta": delta, "logprobs": []}),
        )
    }

    /// `response.function_call_arguments.delta`.
    pub fn args_delta(&mut self, output_index: u64, item_id: &str, delta: &str) -> &mut Self {
        self.push(
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": output_index, "delta": delta}),
        )
    }

    /// `response.function_call_arguments.done`.
    pub fn args_done(&mut self, output_index: u64, item_id: &str, arguments: &str) -> &mut Self {
        self.push(
            "response.function_call_arguments.done",
            json!({"item_id": item_id, "output_index": output_index, "arguments": arguments}),
        )
    }

    /// A whole assistant message: item added, content part added, text deltas, text done, content
    /// part done, item done.
    pub fn message(mut self, item_id: &str, pieces: &[&str]) -> Self {
        let index = self.item_added(
            json!({"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []}),
        );
        let part = json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
        self.push(
            "response.content_part.added",
            json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": part}),
        );
        for p in pieces {
            self.text_delta(index, item_id, p);
        }
        let text: String = pieces.concat();
        self.push(
            "response.output_text.done",
            json!({"item_id": item_id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
        );
        let part = json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
        self.push(
            "response.content_part.done",
            json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": part}),
        );
        self.item_done(index, message_item(item_id, &text));
        self
    }

    /// A refusal: message item added, refusal deltas, refusal done, item done.
    pub fn refusal(mut self, item_id: &str, pieces: &[&str]) -> Self {
        let index = self.item_added(
            json!({"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []}),
        );
        for p in pieces {
            self.push(
                "response.refusal.delta",
                json!({"item_id": item_id, "output_index": index, "content_index": 0, "delta": p}),
            );
        }
        let refusal: String = pieces.concat();
        self.push(
            "response.refusal.done",
            json!({"item_id": item_id, "output_index": index, "content_index": 0, "refusal": refusal}),
        );
        self.item_done(index, refusal_item(item_id, &refusal));
        self
    }

    /// A whole function call: item added (empty arguments), argument deltas, arguments done, item
    /// done.
    pub fn function_call(mut self, item_id: &str, call_id: &str, name: &str, pieces: &[&str]) -> Self {
        let index = self.function_call_added(item_id, call_id, name);
        for p in pieces {
            self.args_delta(index, item_id, p);
        }
        self.function_call_done(index, item_id, call_id, name, &pieces.concat());
        self
    }

    /// `response.output_item.added` for a function call with empty arguments; returns its output
    /// index.
    pub fn function_call_added(&mut self, item_id: &str, call_id: &str, name: &str) -> u64 {
        self.item_added(json!({
            "type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": "",
            "status": "in_progress"
        }))
    }

    /// `response.function_call_arguments.done` then `response.output_item.done` for a function call.
    pub fn function_call_done(
        &mut self,
        output_index: u64,
        item_id: &str,
        call_id: &str,
        name: &str,
        arguments: &str,
    ) -> &mut Self {
        self.args_done(output_index, item_id, arguments);
        self.item_done(output_index, function_call_item(item_id, call_id, name, arguments))
    }

    /// A reasoning item with its summary streamed in pieces.
    pub fn reasoning(mut self, item_id: &str, pieces: &[&str]) -> Self {
        let index = self.item_added(json!({"type": "reasoning", "id": item_id, "summary": []}));
        for p in pieces {
            self.push(
                "response.reasoning_summary_text.delta",
                json!({"item_id": item_id, "output_index": index, "summary_index": 0, "delta": p}),
            );
        }
        self.item_done(index, reasoning_item(item_id, &pieces.concat()));
        self
    }

    /// Ends with `response.completed` carrying the finished items and `usage`.
    pub fn completed(mut self, usage: Value) -> Vec<String> {
        let r = response("completed", std::mem::take(&mut self.done_items), Some(usage));
        self.push("response.completed", json!({"response": r}));
        self.out
    }

    /// Ends with `response.incomplete` (`reason`: `max_output_tokens` or `content_filter`).
    pub fn incomplete(mut self, reason: &str, usage: Value) -> Vec<String> {
        let mut r = response("incomplete", std::mem::take(&mut self.done_items), Some(usage));
        r["incomplete_details"] = json!({"reason": reason});
        self.push("response.incomplete", json!({"response": r}));
        self.out
    }

    /// Ends with `response.failed` whose `response.error` has this code and message.
    pub fn failed(mut self, code: &str, message: &str) -> Vec<String> {
        let mut r = response("failed", std::mem::take(&mut self.done_items), None);
        r["error"] = json!({"code": code, "message": message});
        self.push("response.failed", json!({"response": r}));
        self.out
    }

    /// Ends with an `error` event (`code`, `message`, `param` at the top level).
    pub fn error(mut self, code: &str, message: &str) -> Vec<String> {
        self.push("error", json!({"code": code, "message": message, "param": null}));
        self.out
    }

    /// The events so far, without a terminal event (a stream cut short).
    pub fn unfinished(self) -> Vec<String> {
        self.out
    }
}

/// A whole streamed text answer.
pub fn text_stream(text: &str, usage: Value) -> Vec<String> {
    Events::new().message("msg_mock", &[text]).completed(usage)
}
