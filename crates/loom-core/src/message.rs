//! Conversation messages: what the loop sends to a model and keeps as history.

use serde::{Deserialize, Serialize};

/// One message of a conversation.
///
/// Serialized with a `role` tag: `{"role":"user","content":[{"type":"text","text":"hi"}]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Message {
    /// Instructions and context for the model.
    System {
        /// The text.
        content: String,
    },
    /// Input from the user (text and images).
    User {
        /// The parts of the message, in order.
        content: Vec<ContentPart>,
    },
    /// A model's answer: text, reasoning and tool calls.
    Assistant {
        /// Visible text (may be empty when the model only calls tools).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        content: String,
        /// Reasoning blocks, replayed to providers that require them (with their signatures).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        thinking: Vec<Thinking>,
        /// Tool calls requested in this turn, in the model's order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call, sent back to the model.
    Tool {
        /// The id of the call this answers.
        call_id: String,
        /// The tool's name.
        name: String,
        /// What the model reads.
        content: String,
        /// Whether the call failed (unknown tool, bad arguments, error, timeout, denial).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
}

impl Message {
    /// A system message.
    pub fn system(text: impl Into<String>) -> Self {
        Message::System { content: text.into() }
    }

    /// A user message with one text part.
    pub fn user(text: impl Into<String>) -> Self {
        Message::User { content: vec![ContentPart::Text { text: text.into() }] }
    }

    /// An assistant message with text only.
    pub fn assistant(text: impl Into<String>) -> Self {
        Message::Assistant { content: text.into(), thinking: Vec::new(), tool_calls: Vec::new() }
    }

    /// A tool result message.
    pub fn tool(
        call_id: impl Into<String>,
        name: impl Into<String>,
        content: impl Into<String>,
        is_error: bool,
    ) -> Self {
        Message::Tool { call_id: call_id.into(), name: name.into(), content: content.into(), is_error }
    }

    /// The role as a lower-case string.
    pub fn role(&self) -> &'static str {
        match self {
            Message::System { .. } => "system",
            Message::User { .. } => "user",
            Message::Assistant { .. } => "assistant",
            Message::Tool { .. } => "tool",
        }
    }

    /// The message's text: the system text, the user's text parts joined, the assistant's
    /// visible text, or the tool's output.
    pub fn text(&self) -> String {
        match self {
            Message::System { content } => content.clone(),
            Message::User { content } => {
                let mut out = String::new();
                for part in content {
                    if let ContentPart::Text { text } = part {
                        if !out.is_empty() {
                            out.push('\n');
                        }
                        out.push_str(text);
                    }
                }
                out
            }
            Message::Assistant { content, .. } => content.clone(),
            Message::Tool { content, .. } => content.clone(),
        }
    }
}

/// A part of a user message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// An image, by URL (`https://…` or a `data:` URL).
    Image {
        /// Where the image is.
        url: String,
        /// The media type when known (`image/png`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_type: Option<String>,
    },
}

impl ContentPart {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        ContentPart::Text { text: text.into() }
    }

    /// An image by URL (`https://…`, or a `data:` URL), with its media type when known.
    pub fn image_url(url: impl Into<String>, media_type: Option<String>) -> Self {
        ContentPart::Image { url: url.into(), media_type }
    }

    /// An image from its bytes and media type (`image/png`), sent as a base64 `data:` URL that
    /// every provider wire format accepts.
    ///
    /// ```
    /// use loom_core::ContentPart;
    ///
    /// let part = ContentPart::image_bytes(&[0x89, b'P', b'N', b'G'], "image/png");
    /// assert_eq!(
    ///     part,
    ///     ContentPart::Image { url: "data:image/png;base64,iVBORw==".into(), media_type: Some("image/png".into()) }
    /// );
    /// ```
    pub fn image_bytes(bytes: &[u8], media_type: impl Into<String>) -> Self {
        use base64::Engine as _;
        let media_type = media_type.into();
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        ContentPart::Image { url: format!("data:{media_type};base64,{encoded}"), media_type: Some(media_type) }
    }

    /// Whether this part is an image.
    pub fn is_image(&self) -> bool {
        matches!(self, ContentPart::Image { .. })
    }
}

/// A block of model reasoning.
///
/// A signature is only valid for the provider that minted it, so a signed block carries that
/// provider's tag (`"anthropic"`, `"gemini"`): a wire format replays only its own signatures, and a
/// conversation that moves to another provider (a fallback, a model switch) never sends one
/// provider's signature to another. A block without a tag (a transcript written before tags
/// existed) is replayed as it always was.
///
/// ```
/// use loom_core::message::Thinking;
///
/// let block = Thinking::signed("plan", "EqQBCkgIARAB", "anthropic");
/// assert!(block.replayable_by("anthropic"));
/// assert!(!block.replayable_by("gemini"));
/// assert!(Thinking::text("unsigned").replayable_by("gemini"));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thinking {
    /// The reasoning text (may be empty for redacted blocks).
    pub text: String,
    /// The provider's signature, needed to replay the block on the next turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The provider that minted `signature` (`None`: unknown, as in transcripts from before tags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

impl Thinking {
    /// An unsigned block of reasoning text.
    pub fn text(text: impl Into<String>) -> Self {
        Thinking { text: text.into(), signature: None, provider: None }
    }

    /// A block signed by `provider`.
    pub fn signed(text: impl Into<String>, signature: impl Into<String>, provider: impl Into<String>) -> Self {
        Thinking { text: text.into(), signature: Some(signature.into()), provider: Some(provider.into()) }
    }

    /// Whether `provider` may be sent this block's signature: the block is tagged with `provider`,
    /// or with no provider at all (unsigned blocks, and transcripts from before tags).
    pub fn replayable_by(&self, provider: &str) -> bool {
        self.provider.as_deref().is_none_or(|p| p == provider)
    }
}

/// A tool call requested by a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, unique within the run.
    pub id: String,
    /// The tool's name, as the model wrote it.
    pub name: String,
    /// The arguments as the model produced them: JSON text, possibly malformed.
    pub arguments: String,
}

impl ToolCall {
    /// A tool call with JSON arguments.
    pub fn new(id: impl Into<String>, name: impl Into<String>, arguments: &serde_json::Value) -> Self {
        ToolCall { id: id.into(), name: name.into(), arguments: arguments.to_string() }
    }
}

/// Token usage and cost, normalized across providers. Input, cached input and cache writes are
/// separate buckets: `input_tokens` excludes the cached ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens billed at the normal rate.
    pub input_tokens: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cached_input_tokens: u64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write_tokens: u64,
    /// Output tokens (including reasoning).
    pub output_tokens: u64,
    /// Cost in US dollars, when the price is known.
    pub cost_usd: f64,
}

impl Usage {
    /// All tokens: input, cached input, cache writes and output.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens + self.cached_input_tokens + self.cache_write_tokens + self.output_tokens
    }

    /// Adds another usage to this one.
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.cached_input_tokens += other.cached_input_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_usd += other.cost_usd;
    }
}

/// Why a model stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural end of the answer.
    #[default]
    Stop,
    /// The model wants tools to run.
    ToolCalls,
    /// The output token limit was reached.
    Length,
    /// A content filter stopped the answer.
    ContentFilter,
    /// Anything else the provider reported.
    Other,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn thinking_without_a_provider_tag_still_loads_and_a_tag_round_trips() {
        // A transcript written before signatures were tagged.
        let old = r#"{"role":"assistant","thinking":[{"text":"plan","signature":"sig=="}]}"#;
        let Message::Assistant { thinking, .. } = serde_json::from_str::<Message>(old).unwrap() else {
            unreachable!("an assistant message")
        };
        assert_eq!(thinking, vec![Thinking { text: "plan".into(), signature: Some("sig==".into()), provider: None }]);
        assert!(thinking[0].replayable_by("anthropic") && thinking[0].replayable_by("gemini"));
        // Tagged blocks keep their tag; untagged ones are written as before.
        let tagged = Thinking::signed("plan", "sig==", "anthropic");
        let json = serde_json::to_value(&tagged).unwrap();
        assert_eq!(json, serde_json::json!({"text": "plan", "signature": "sig==", "provider": "anthropic"}));
        assert_eq!(serde_json::from_value::<Thinking>(json).unwrap(), tagged);
        assert_eq!(serde_json::to_value(Thinking::text("t")).unwrap(), serde_json::json!({"text": "t"}));
    }
}
