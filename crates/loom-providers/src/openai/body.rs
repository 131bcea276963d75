//! The Chat Completions request body, serialized straight from the request: the messages, tools
//! and settings are written as they are borrowed, with no JSON tree built and cloned first (that
//! tree cost about 60 allocations per call: every string and every tool schema copied).

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Value, json};

use loom_core::message::{ContentPart, Message, ToolCall};
use loom_core::tool::ToolSpec;

use super::{ChatCompletions, is_reasoning_model};
use crate::json::{Body, decimal, put};
use crate::strict::strict_schema;

/// The body of one call. A key the generation's extensions also give is theirs: they are sent as
/// given, in place of the built-in value.
impl Serialize for Body<'_, ChatCompletions> {
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
            put(&mut map, ext, "stream_options", &IncludeUsage { include_usage: true })?;
        }
        let reasoning = is_reasoning_model(&self.wire.model) && self.wire.provider == "openai";
        // Reasoning models reject sampling settings: they are left out for them.
        if let Some(t) = g.temperature.filter(|_| !reasoning) {
            put(&mut map, ext, "temperature", &decimal(t))?;
        }
        if let Some(p) = g.top_p.filter(|_| !reasoning) {
            put(&mut map, ext, "top_p", &decimal(p))?;
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
#[derive(Serialize)]
struct IncludeUsage {
    include_usage: bool,
}

/// The messages, each as Chat Completions takes it.
struct Messages<'a>(&'a [Message]);

impl Serialize for Messages<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|m| match m {
            Message::System { content } => WireMessage::System { content },
            Message::User { content } => WireMessage::User { content: UserContent(content) },
            Message::Assistant { content, tool_calls, .. } => WireMessage::Assistant {
                content: (!content.is_empty()).then_some(content.as_str()),
                tool_calls: Calls(tool_calls),
            },
            Message::Tool { call_id, content, .. } => WireMessage::Tool { tool_call_id: call_id, content },
        }))
    }
}

/// One message, tagged with its role.
#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum WireMessage<'a> {
    System {
        content: &'a str,
    },
    User {
        content: UserContent<'a>,
    },
    Assistant {
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Calls::is_empty")]
        tool_calls: Calls<'a>,
    },
    Tool {
        tool_call_id: &'a str,
        content: &'a str,
    },
}

/// A user's content: a string when it is one text part, else the parts.
struct UserContent<'a>(&'a [ContentPart]);

impl Serialize for UserContent<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if let [ContentPart::Text { text }] = self.0 {
            return serializer.serialize_str(text);
        }
        serializer.collect_seq(self.0.iter().map(|part| match part {
            ContentPart::Text { text } => Part::Text { text },
            ContentPart::Image { url, .. } => Part::ImageUrl { image_url: Url { url } },
        }))
    }
}

/// `{"type": "text", "text": …}` or `{"type": "image_url", "image_url": {"url": …}}`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: Url<'a> },
}

#[derive(Serialize)]
struct Url<'a> {
    url: &'a str,
}

/// An assistant message's tool calls: `{"id", "type": "function", "function": {"name", "arguments"}}`.
struct Calls<'a>(&'a [ToolCall]);

impl Calls<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Calls<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|c| FunctionCall {
            id: &c.id,
            kind: "function",
            function: CallFunction { name: &c.name, arguments: &c.arguments },
        }))
    }
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: CallFunction<'a>,
}

#[derive(Serialize)]
struct CallFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// The tools: `{"type": "function", "function": {"name", "description", "parameters"}}`.
struct Tools<'a>(&'a [ToolSpec]);

impl Serialize for Tools<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|t| FunctionTool {
            kind: "function",
            function: ToolFunction { name: &t.name, description: &t.description, parameters: &t.parameters },
        }))
    }
}

#[derive(Serialize)]
struct FunctionTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: ToolFunction<'a>,
}

#[derive(Serialize)]
struct ToolFunction<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a Value,
}
