//! The OpenAI Responses API (`POST {base}/responses`).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use reqwest::header::{AUTHORIZATION, HeaderMap};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Value, json};

use crate::http::{ApiKey, HttpModel, HttpRequest, StreamDecoder, WireFormat, secret_header};
use crate::json::{Body, decimal, put};
use crate::openai::is_reasoning_model;
use crate::sse::SseEvent;
use crate::strict::strict_schema;
use loom_core::error::ModelError;
use loom_core::message::{ContentPart, FinishReason, Message, Usage};
use loom_core::model::{ModelCapabilities, ModelChunk, ModelRequest};
use loom_core::tool::ToolSpec;

/// The Responses wire format (stateless: `store: false`, the whole conversation is sent each turn).
#[derive(Clone, Debug)]
pub struct Responses {
    pub(crate) model: String,
    pub(crate) base_url: String,
}

/// OpenAI Responses: `OPENAI_API_KEY`, `OPENAI_BASE_URL`.
pub fn openai_responses(model: &str) -> HttpModel<Responses> {
    HttpModel::new(Responses {
        model: model.to_string(),
        base_url: crate::base_url_from_env("OPENAI_BASE_URL", "https://api.openai.com/v1"),
    })
}

/// The leading system messages as the instructions (joined by a blank line), and the input items:
/// later system messages stay in place as developer messages.
fn input_items(messages: &[Message]) -> (Option<Cow<'_, str>>, Vec<Item<'_>>) {
    let mut instructions: Option<Cow<'_, str>> = None;
    let mut items = Vec::new();
    for m in messages {
        match m {
            Message::System { content } if items.is_empty() => match &mut instructions {
                Some(i) => {
                    let i = i.to_mut();
                    i.push_str("\n\n");
                    i.push_str(content);
                }
                None => instructions = Some(Cow::Borrowed(content)),
            },
            Message::System { content } => {
                items.push(Item::Message { role: "developer", content: Content::Text(content) })
            }
            Message::User { content } => {
                items.push(Item::Message { role: "user", content: Content::User(UserParts(content)) })
            }
            Message::Assistant { content, tool_calls, .. } => {
                if !content.is_empty() {
                    let text = [Part::OutputText { text: content }];
                    items.push(Item::Message { role: "assistant", content: Content::Assistant(text) });
                }
                items.extend(tool_calls.iter().map(|c| Item::Call {
                    kind: "function_call",
                    call_id: &c.id,
                    name: &c.name,
                    arguments: &c.arguments,
                }));
            }
            Message::Tool { call_id, content, .. } => {
                items.push(Item::Output { kind: "function_call_output", call_id, output: content })
            }
        }
    }
    (instructions, items)
}

/// One input item: a message (tagged by its role) or a function call or its output (tagged by
/// their type).
#[derive(Serialize)]
#[serde(untagged)]
enum Item<'a> {
    Message {
        role: &'static str,
        content: Content<'a>,
    },
    Call {
        #[serde(rename = "type")]
        kind: &'static str,
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
    Output {
        #[serde(rename = "type")]
        kind: &'static str,
        call_id: &'a str,
        output: &'a str,
    },
}

/// A message's content: a developer message's text, a user's parts, an assistant's text as one
/// `output_text` part.
#[derive(Serialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(&'a str),
    User(UserParts<'a>),
    Assistant([Part<'a>; 1]),
}

/// A user's parts: `input_text` and `input_image`.
struct UserParts<'a>(&'a [ContentPart]);

impl Serialize for UserParts<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|p| match p {
            ContentPart::Text { text } => Part::InputText { text },
            ContentPart::Image { url, .. } => Part::InputImage { image_url: url },
        }))
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part<'a> {
    InputText { text: &'a str },
    InputImage { image_url: &'a str },
    OutputText { text: &'a str },
}

/// A tool: `{"type": "function", "name", "description", "parameters", "strict": false}`.
#[derive(Serialize)]
struct Tool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    description: &'a str,
    parameters: &'a Value,
    strict: bool,
}

struct Tools<'a>(&'a [ToolSpec]);

impl Serialize for Tools<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|t| Tool {
            kind: "function",
            name: &t.name,
            description: &t.description,
            parameters: &t.parameters,
            strict: false,
        }))
    }
}

/// The body of one call. A key the generation's extensions also give is theirs: they are sent as
/// given, in place of the built-in value.
impl Serialize for Body<'_, Responses> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let request = self.request;
        let g = request.generation;
        let ext = &g.extensions;
        let (instructions, input) = input_items(request.messages);
        let mut map = serializer.serialize_map(None)?;
        put(&mut map, ext, "model", &self.wire.model)?;
        if let Some(i) = &instructions {
            put(&mut map, ext, "instructions", i)?;
        }
        put(&mut map, ext, "input", &input)?;
        put(&mut map, ext, "store", &false)?;
        if !request.tools.is_empty() {
            put(&mut map, ext, "tools", &Tools(request.tools))?;
        }
        if self.stream {
            put(&mut map, ext, "stream", &true)?;
        }
        // Reasoning models reject sampling settings: they are left out for them.
        let reasoning = is_reasoning_model(&self.wire.model);
        if let Some(t) = g.temperature.filter(|_| !reasoning) {
            put(&mut map, ext, "temperature", &decimal(t))?;
        }
        if let Some(p) = g.top_p.filter(|_| !reasoning) {
            put(&mut map, ext, "top_p", &decimal(p))?;
        }
        if let Some(n) = g.max_output_tokens {
            put(&mut map, ext, "max_output_tokens", &n)?;
        }
        if let Some(schema) = request.output_schema {
            let (schema, strict) = strict_schema(schema);
            let text = json!({"format": {"type": "json_schema", "name": "output", "schema": schema, "strict": strict}});
            put(&mut map, ext, "text", &text)?;
        }
        // reasoning, include, previous_response_id, … pass through as given.
        for (k, v) in ext {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl WireFormat for Responses {
    fn provider(&self) -> &str {
        "openai"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn capabilities(&self) -> ModelCapabilities {
        ModelCapabilities { tools: true, native_structured_output: true, context_window: None }
    }

    fn key_env(&self) -> &str {
        "OPENAI_API_KEY"
    }

    fn set_base_url(&mut self, url: String) {
        self.base_url = url;
    }

    fn base_url(&self) -> Option<&str> {
        Some(&self.base_url)
    }

    fn model_string(&self) -> String {
        format!("openai-responses:{}", self.model)
    }

    fn build(&self, request: &ModelRequest<'_>, stream: bool, key: Option<&ApiKey>) -> Result<HttpRequest, ModelError> {
        let body = Body { wire: self, request, stream }.to_bytes()?;
        let mut headers = HeaderMap::new();
        if let Some(key) = key {
            headers.insert(AUTHORIZATION, secret_header(&format!("Bearer {}", key.expose()))?);
        }
        Ok(HttpRequest { url: crate::http::endpoint(&self.base_url, "/responses", &[])?, headers, body })
    }

    fn decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ResponsesDecoder::default())
    }

    fn decode_body(&self, body: &[u8]) -> Result<Vec<ModelChunk>, ModelError> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| ModelError::Protocol(format!("invalid JSON response: {e}")))?;
        let mut out = Vec::new();
        let mut calls = 0;
        for item in v.get("output").and_then(Value::as_array).into_iter().flatten() {
            match item.get("type").and_then(Value::as_str) {
                Some("message") => {
                    for c in item.get("content").and_then(Value::as_array).into_iter().flatten() {
                        match c.get("type").and_then(Value::as_str) {
                            Some("output_text") => out.push(ModelChunk::Text(
                                c.get("text").and_then(Value::as_str).unwrap_or("").to_string(),
                            )),
                            Some("refusal") => {
                                let refusal = c.get("refusal").and_then(Value::as_str).unwrap_or("");
                                return Err(ModelError::ContentFilter(format!("the model refused: {refusal}")));
                            }
                            _ => {}
                        }
                    }
                }
                Some("function_call") => {
                    out.push(ModelChunk::ToolCallDelta {
                        index: calls,
                        id: item.get("call_id").and_then(Value::as_str).map(str::to_string),
                        name: item.get("name").and_then(Value::as_str).map(str::to_string),
                        arguments: item.get("arguments").and_then(Value::as_str).unwrap_or("{}").to_string(),
                    });
                    calls += 1;
                }
                Some("reasoning") => {
                    for s in item.get("summary").and_then(Value::as_array).into_iter().flatten() {
                        if let Some(t) = s.get("text").and_then(Value::as_str) {
                            out.push(ModelChunk::Thinking { text: t.to_string(), signature: None, provider: None });
                        }
                    }
                }
                _ => {}
            }
        }
        finish_response(&v, calls > 0, &mut out)?;
        Ok(out)
    }
}

fn usage(u: &Value) -> Usage {
    let n = |p: &str| crate::json::at(u, p).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("/input_tokens_details/cached_tokens");
    Usage {
        input_tokens: n("/input_tokens").saturating_sub(cached),
        cached_input_tokens: cached,
        cache_write_tokens: 0,
        output_tokens: n("/output_tokens"),
        cost_usd: 0.0,
    }
}

/// Usage and finish reason from a final `response` object.
fn finish_response(response: &Value, has_calls: bool, out: &mut Vec<ModelChunk>) -> Result<(), ModelError> {
    if let Some(err) = response.get("error").filter(|e| !e.is_null()) {
        return Err(response_error(err));
    }
    if let Some(u) = response.get("usage").filter(|u| !u.is_null()) {
        out.push(ModelChunk::Usage(usage(u)));
    }
    let finish = match response.get("status").and_then(Value::as_str) {
        Some("incomplete") => match crate::json::at(response, "/incomplete_details/reason").and_then(Value::as_str) {
            Some("max_output_tokens") => FinishReason::Length,
            Some("content_filter") => FinishReason::ContentFilter,
            _ => FinishReason::Other,
        },
        _ if has_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    };
    out.push(ModelChunk::Finish(finish));
    Ok(())
}

fn response_error(err: &Value) -> ModelError {
    let message = err.get("message").and_then(Value::as_str).unwrap_or("unknown error").to_string();
    match err.get("code").and_then(Value::as_str).unwrap_or("") {
        "rate_limit_exceeded" => ModelError::RateLimited { message, retry_after: None },
        "server_error" | "server_is_overloaded" => ModelError::Transient { message, status: None },
        "context_length_exceeded" => ModelError::ContextLengthExceeded(message),
        "invalid_prompt" => ModelError::InvalidRequest(message),
        _ => ModelError::Transient { message, status: None },
    }
}

#[derive(Default)]
struct ResponsesDecoder {
    /// Output index → tool call index.
    calls: HashMap<u64, usize>,
    /// Tool calls whose arguments have arrived (in pieces or whole).
    with_arguments: HashSet<usize>,
    done: bool,
    /// Refusal text received so far.
    refusal: String,
}

impl StreamDecoder for ResponsesDecoder {
    fn event(&mut self, event: SseEvent, out: &mut Vec<ModelChunk>) -> Result<bool, ModelError> {
        if event.data.trim().is_empty() || event.data.trim() == "[DONE]" {
            return Ok(event.data.trim() == "[DONE]");
        }
        let v: Value = serde_json::from_str(&event.data)
            .map_err(|e| ModelError::Protocol(format!("invalid JSON in the event stream: {e}")))?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(event.event.as_str());
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        match kind {
            "response.output_text.delta" => out.push(ModelChunk::Text(s("delta"))),
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                out.push(ModelChunk::Thinking { text: s("delta"), signature: None, provider: None })
            }
            "response.output_item.added" => {
                let item = v.get("item").unwrap_or(&Value::Null);
                if item.get("type").and_then(Value::as_str) == Some("function_call") {
                    let output_index = v.get("output_index").and_then(Value::as_u64).unwrap_or(0);
                    let index = self.calls.len();
                    self.calls.insert(output_index, index);
                    let arguments = item.get("arguments").and_then(Value::as_str).unwrap_or("").to_string();
                    if !arguments.is_empty() {
                        self.with_arguments.insert(index);
                    }
                    out.push(ModelChunk::ToolCallDelta {
                        index,
                        id: item.get("call_id").and_then(Value::as_str).map(str::to_string),
                        name: item.get("name").and_then(Value::as_str).map(str::to_string),
                        arguments,
                    });
                }
            }
            "response.function_call_arguments.delta" => {
                let output_index = v.get("output_index").and_then(Value::as_u64).unwrap_or(0);
                let Some(&index) = self.calls.get(&output_index) else {
                    return Err(ModelError::Protocol(format!(
                        "arguments for output {output_index}, which is not a function call"
                    )));
                };
                let delta = s("delta");
                if !delta.is_empty() {
                    self.with_arguments.insert(index);
                }
                out.push(ModelChunk::ToolCallDelta { index, id: None, name: None, arguments: delta });
            }
            // The whole arguments again: used only when no piece came before (servers that do not
            // stream arguments).
            "response.function_call_arguments.done" | "response.output_item.done" => {
                let output_index = v.get("output_index").and_then(Value::as_u64).unwrap_or(0);
                let arguments = match kind {
                    "response.function_call_arguments.done" => v.get("arguments"),
                    _ => v
                        .get("item")
                        .filter(|i| i.get("type").and_then(Value::as_str) == Some("function_call"))
                        .and_then(|i| i.get("arguments")),
                };
                let arguments = arguments.and_then(Value::as_str).unwrap_or("");
                if let Some(&index) = self.calls.get(&output_index)
                    && !arguments.is_empty()
                    && self.with_arguments.insert(index)
                {
                    out.push(ModelChunk::ToolCallDelta {
                        index,
                        id: None,
                        name: None,
                        arguments: arguments.to_string(),
                    });
                }
            }
            // The refusal's text arrives in pieces; the call fails once it is whole.
            "response.refusal.delta" => self.refusal.push_str(&s("delta")),
            "response.refusal.done" => {
                let done = s("refusal");
                let text = if done.is_empty() { std::mem::take(&mut self.refusal) } else { done };
                return Err(ModelError::ContentFilter(format!("the model refused: {text}")));
            }
            "response.completed" | "response.incomplete" if !self.refusal.is_empty() => {
                return Err(ModelError::ContentFilter(format!("the model refused: {}", self.refusal)));
            }
            "response.completed" | "response.incomplete" => {
                let response = v.get("response").unwrap_or(&Value::Null);
                finish_response(response, !self.calls.is_empty(), out)?;
                self.done = true;
                return Ok(true);
            }
            "response.failed" => {
                return Err(response_error(crate::json::at(&v, "/response/error").unwrap_or(&Value::Null)));
            }
            "error" => return Err(response_error(&v)),
            _ => {}
        }
        Ok(false)
    }

    fn end(&mut self, _out: &mut Vec<ModelChunk>) -> Result<(), ModelError> {
        if self.done {
            Ok(())
        } else {
            Err(ModelError::Transient { message: "the stream ended before response.completed".into(), status: None })
        }
    }
}
