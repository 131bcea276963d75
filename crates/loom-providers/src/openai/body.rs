//! The Chat Completions request body, serialized straight from the request: the messages, tools
//! and settings are written as they are borrowed, with no JSON tree built and cloned first (that
//! tree cost about 60 allocations per call: every string and every tool schema copied).

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Value, json};

use loom_core::message::{ContentPart, Message, ToolCall};
use loom_core::model::ModelRequest;
use loom_core::tool::ToolSpec;

use super::{ChatCompletions, is_reasoning_model, sampling_value};
use crate::strict::strict_schema;

/// The body of one call. A key the generation's extensions also give is theirs: they are sent as
/// given, in place of the built-in value.
pub(super) struct Body<'a> {
    pub(super) wire: &'a ChatCompletions,
    pub(super) request: &'a ModelRequest<'a>,
    pub(super) stream: bool,
}

/// Writes `key: value` unless the extensions give `key`.
fn put<M: SerializeMap, V: Serialize + ?Sized>(
    map: &mut M,
    extensions: &Map<String, Value>,
    key: &str,
    value: &V,
) -> Result<(), M::Error> {
    if extensions.contains_key(key) { Ok(()) } else { map.serialize_entry(key, value) }
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let request = self.request;
        let g = request.generation;
        let ext = &g.extensions;
        let mut map = serializer.serialize_map(None)?;
        put(&mut map, ext, "model", &self.wire.model)?;
        put(&mut map, ext, "messages", &Messages(request.messages))?;
        if !request.tools.is_empty() {
            put(&mut map, ext, "tools", &Tools(request.tools))?;
        }
        if self.stream {
            put(&mut map, ext, "stream", &true)?;
            put(&mut map, ext, "stream_options", &IncludeUsage)?;
        }
        let reasoning = is_reasoning_model(&self.wire.model) && self.wire.provider == "openai";
        // Reasoning models reject sampling settings: they are left out for them.
        if let Some(t) = g.temperature.filter(|_| !reasoning) {
            put(&mut map, ext, "temperature", &sampling_value(t))?;
        }
        if let Some(p) = g.top_p.filter(|_| !reasoning) {
            put(&mut map, ext, "top_p", &sampling_value(p))?;
        }
        if let Some(n) = g.max_output_tokens {
            let field = if reasoning { "max_completion_tokens" } else { "max_tokens" };
            put(&mut map, ext, field, &n)?;
        }
        if !g.stop.is_empty() {
            put(&mut map, ext, "stop", &g.stop)?;
        }
        if let Some(seed) = g.seed {
            put(&mut map, ext, "seed", &seed)?;
        }
        if let Some(schema) = request.output_schema {
            let (schema, strict) = strict_schema(schema);
            let format =
                json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": strict}});
            put(&mut map, ext, "response_format", &format)?;
        }
        // Provider-specific fields (reasoning_effort, prompt_cache_key, …) pass through as given.
        for (k, v) in ext {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// `{"include_usage": true}`.
struct IncludeUsage;

impl Serialize for IncludeUsage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("include_usage", &true)?;
        map.end()
    }
}

struct Messages<'a>(&'a [Message]);

impl Serialize for Messages<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(WireMessage))
    }
}

/// One message as Chat Completions takes it.
struct WireMessage<'a>(&'a Message);

impl Serialize for WireMessage<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match self.0 {
            Message::System { content } => {
                map.serialize_entry("role", "system")?;
                map.serialize_entry("content", content)?;
            }
            Message::User { content } => {
                map.serialize_entry("role", "user")?;
                map.serialize_entry("content", &UserContent(content))?;
            }
            Message::Assistant { content, tool_calls, .. } => {
                map.serialize_entry("role", "assistant")?;
                map.serialize_entry("content", &(!content.is_empty()).then_some(content))?;
                if !tool_calls.is_empty() {
                    map.serialize_entry("tool_calls", &Calls(tool_calls))?;
                }
            }
            Message::Tool { call_id, content, .. } => {
                map.serialize_entry("role", "tool")?;
                map.serialize_entry("tool_call_id", call_id)?;
                map.serialize_entry("content", content)?;
            }
        }
        map.end()
    }
}

/// A user's content: a string when it is one text part, else the parts.
struct UserContent<'a>(&'a [ContentPart]);

impl Serialize for UserContent<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if let [ContentPart::Text { text }] = self.0 {
            return serializer.serialize_str(text);
        }
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for part in self.0 {
            match part {
                ContentPart::Text { text } => seq.serialize_element(&TextPart(text))?,
                ContentPart::Image { url, .. } => seq.serialize_element(&ImageUrl(url))?,
            }
        }
        seq.end()
    }
}

/// `{"type": "text", "text": …}`.
struct TextPart<'a>(&'a str);

impl Serialize for TextPart<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("type", "text")?;
        map.serialize_entry("text", self.0)?;
        map.end()
    }
}

/// `{"type": "image_url", "image_url": {"url": …}}`.
struct ImageUrl<'a>(&'a str);

impl Serialize for ImageUrl<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("type", "image_url")?;
        map.serialize_entry("image_url", &Url(self.0))?;
        map.end()
    }
}

struct Url<'a>(&'a str);

impl Serialize for Url<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("url", self.0)?;
        map.end()
    }
}

/// An assistant message's tool calls: `{"id", "type": "function", "function": {"name", "arguments"}}`.
struct Calls<'a>(&'a [ToolCall]);

impl Serialize for Calls<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|c| Function {
            id: Some(&c.id),
            name: &c.name,
            payload: Payload::Arguments(&c.arguments),
        }))
    }
}

/// The tools: `{"type": "function", "function": {"name", "description", "parameters"}}`.
struct Tools<'a>(&'a [ToolSpec]);

impl Serialize for Tools<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|t| Function {
            id: None,
            name: &t.name,
            payload: Payload::Declared { description: &t.description, parameters: &t.parameters },
        }))
    }
}

/// `{"id"?, "type": "function", "function": {…}}`: a call the model made, or a tool it may call.
struct Function<'a> {
    id: Option<&'a str>,
    name: &'a str,
    payload: Payload<'a>,
}

enum Payload<'a> {
    Arguments(&'a str),
    Declared { description: &'a str, parameters: &'a Value },
}

impl Serialize for Function<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if let Some(id) = self.id {
            map.serialize_entry("id", id)?;
        }
        map.serialize_entry("type", "function")?;
        map.serialize_entry("function", &Inner(self))?;
        map.end()
    }
}

struct Inner<'a, 'b>(&'b Function<'a>);

impl Serialize for Inner<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("name", self.0.name)?;
        match self.0.payload {
            Payload::Arguments(arguments) => map.serialize_entry("arguments", arguments)?,
            Payload::Declared { description, parameters } => {
                map.serialize_entry("description", description)?;
                map.serialize_entry("parameters", parameters)?;
            }
        }
        map.end()
    }
}
