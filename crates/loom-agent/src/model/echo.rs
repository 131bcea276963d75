use super::{LanguageModel, ModelChunk, ModelRequest, ModelStream};
use crate::error::ModelError;
use crate::message::{FinishReason, Message, Usage};

/// A model that answers with the last user message, prefixed (`"Echo: "` by default). Needs no key
/// and no network; the model string `"echo"`.
#[derive(Clone, Debug)]
pub struct EchoModel {
    prefix: String,
}

impl EchoModel {
    /// An echo model with the prefix `"Echo: "`.
    pub fn new() -> Self {
        EchoModel { prefix: "Echo: ".to_string() }
    }

    /// An echo model with another prefix.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        EchoModel { prefix: prefix.into() }
    }
}

impl Default for EchoModel {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl LanguageModel for EchoModel {
    fn name(&self) -> &str {
        "echo"
    }

    fn model_string(&self) -> Option<String> {
        Some("echo".to_string())
    }

    async fn stream(&self, request: &ModelRequest<'_>) -> Result<ModelStream, ModelError> {
        let last = request
            .messages
            .iter()
            .rev()
            .find(|m| matches!(m, Message::User { .. }))
            .map(Message::text)
            .unwrap_or_default();
        let input_chars: usize = request.messages.iter().map(|m| m.text().len()).sum();
        let text = format!("{}{}", self.prefix, last);
        let usage = Usage {
            input_tokens: (input_chars as u64).div_ceil(4),
            output_tokens: (text.len() as u64).div_ceil(4),
            ..Usage::default()
        };
        Ok(Box::pin(futures::stream::iter([
            Ok(ModelChunk::Text(text)),
            Ok(ModelChunk::Usage(usage)),
            Ok(ModelChunk::Finish(FinishReason::Stop)),
        ])))
    }
}
