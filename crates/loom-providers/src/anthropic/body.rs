//! The Messages request body, serialized straight from the request: messages, tools and settings
//! are written as they are borrowed, with no JSON tree built and cloned first (that tree copied
//! every string, every tool schema and every tool call's arguments at every call).

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use loom_core::message::{ContentPart, Message};
use loom_core::tool::ToolSpec;
use serde_json::Value;

use super::{AnthropicMessages, REDACTED_THINKING, SIGNATURE_PROVIDER};
use crate::json::{Body, ObjectArgs, Turn, decimal, object_args, push_turn, put};

/// The body of one call. A key the generation's extensions also give is theirs: they are sent as
/// given, in place of the built-in value.
impl Serialize for Body<'_, AnthropicMessages> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let request = self.request;
        let g = request.generation;
        let ext = &g.extensions;
        let cache = self.wire.prompt_caching;
        let (system, turns) = convert(request.messages);
        let mut map = serializer.serialize_map(None)?;
        put(&mut map, ext, "model", &self.wire.model)?;
        put(&mut map, ext, "max_tokens", &g.max_output_tokens.unwrap_or(self.wire.default_max_tokens))?;
        if !system.is_empty() {
            put(&mut map, ext, "system", &MarkLast(&system, cache))?;
        }
        put(&mut map, ext, "messages", &Turns(&turns, cache))?;
        if !request.tools.is_empty() {
            put(&mut map, ext, "tools", &Tools(request.tools, cache))?;
        }
        if self.stream {
            put(&mut map, ext, "stream", &true)?;
        }
        if let Some(t) = g.temperature {
            put(&mut map, ext, "temperature", &decimal(t))?;
        }
        if let Some(p) = g.top_p {
            put(&mut map, ext, "top_p", &decimal(p))?;
        }
        if !g.stop.is_empty() {
            put(&mut map, ext, "stop_sequences", &g.stop)?;
        }
        // thinking, tool_choice, metadata, … pass through as given.
        for (k, v) in ext {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// One content block, tagged with its type.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: Source<'a>,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    RedactedThinking {
        data: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: ObjectArgs<'a>,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
}

/// An image's source: its base64 data (from a `data:` URL) or its URL.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Source<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

/// An image block: base64 data from a `data:` URL (its media type, else the part's, else PNG), or
/// the URL.
fn image<'a>(url: &'a str, media_type: Option<&'a str>) -> Block<'a> {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
    {
        let mt = meta.trim_end_matches(";base64");
        let media_type = if mt.is_empty() { media_type.unwrap_or("image/png") } else { mt };
        return Block::Image { source: Source::Base64 { media_type, data } };
    }
    Block::Image { source: Source::Url { url } }
}

/// The system prompt's blocks and the alternating turns.
fn convert(messages: &[Message]) -> (Vec<Block<'_>>, Vec<Turn<Block<'_>>>) {
    let mut system = Vec::new();
    let mut turns = Vec::new();
    for m in messages {
        let mut blocks = Vec::new();
        let role = match m {
            Message::System { content } => {
                system.push(Block::Text { text: content });
                continue;
            }
            Message::Assistant { .. } => "assistant",
            Message::User { .. } | Message::Tool { .. } => "user",
        };
        match m {
            Message::System { .. } => {}
            Message::User { content } => blocks.extend(content.iter().map(|p| match p {
                ContentPart::Text { text } => Block::Text { text },
                ContentPart::Image { url, media_type } => image(url, media_type.as_deref()),
            })),
            Message::Assistant { content, thinking, tool_calls } => {
                for t in thinking {
                    // Unsigned thinking cannot be replayed, nor can another provider's signature:
                    // Anthropic would reject either.
                    let Some(signature) = &t.signature else { continue };
                    if !t.replayable_by(SIGNATURE_PROVIDER) {
                        continue;
                    }
                    blocks.push(match signature.strip_prefix(REDACTED_THINKING) {
                        Some(data) => Block::RedactedThinking { data },
                        None => Block::Thinking { thinking: &t.text, signature },
                    });
                }
                if !content.is_empty() {
                    blocks.push(Block::Text { text: content });
                }
                blocks.extend(tool_calls.iter().map(|c| Block::ToolUse {
                    id: &c.id,
                    name: &c.name,
                    input: object_args(&c.arguments),
                }));
            }
            Message::Tool { call_id, content, is_error, .. } => {
                blocks.push(Block::ToolResult { tool_use_id: call_id, content, is_error: *is_error })
            }
        }
        push_turn(&mut turns, role, blocks);
    }
    (system, turns)
}

/// `{"type": "ephemeral"}`: a prompt-cache breakpoint.
#[derive(Serialize)]
struct CacheControl {
    #[serde(rename = "type")]
    kind: &'static str,
}

/// An item with a cache breakpoint when `cache_control` is given.
#[derive(Serialize)]
struct Marked<T: Serialize> {
    #[serde(flatten)]
    item: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<CacheControl>,
}

/// A list whose last item carries a cache breakpoint when the flag is set.
struct MarkLast<'a, T>(&'a [T], bool);

impl<T: Serialize> Serialize for MarkLast<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let last = self.0.len().wrapping_sub(1);
        serializer.collect_seq(self.0.iter().enumerate().map(|(i, item)| Marked {
            item,
            cache_control: (self.1 && i == last).then_some(CacheControl { kind: "ephemeral" }),
        }))
    }
}

/// The turns; with caching on, the last block of the last turn is a cache breakpoint.
struct Turns<'a>(&'a [Turn<Block<'a>>], bool);

impl Serialize for Turns<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let last = self.0.len().wrapping_sub(1);
        serializer.collect_seq(
            self.0
                .iter()
                .enumerate()
                .map(|(i, t)| WireTurn { role: t.role, content: MarkLast(&t.parts, self.1 && i == last) }),
        )
    }
}

#[derive(Serialize)]
struct WireTurn<'a> {
    role: &'static str,
    content: MarkLast<'a, Block<'a>>,
}

/// The tools; with caching on, the last one is a cache breakpoint.
struct Tools<'a>(&'a [ToolSpec], bool);

impl Serialize for Tools<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let last = self.0.len().wrapping_sub(1);
        serializer.collect_seq(self.0.iter().enumerate().map(|(i, t)| Marked {
            item: Tool { name: &t.name, description: &t.description, input_schema: &t.parameters },
            cache_control: (self.1 && i == last).then_some(CacheControl { kind: "ephemeral" }),
        }))
    }
}

#[derive(Serialize)]
struct Tool<'a> {
    name: &'a str,
    description: &'a str,
    input_schema: &'a Value,
}
