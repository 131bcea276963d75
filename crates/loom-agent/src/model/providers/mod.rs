//! Model providers over HTTP: OpenAI (Chat Completions and Responses), Anthropic Messages, Google
//! Gemini, and OpenAI-compatible servers by base URL.
//!
//! Every provider is an [`HttpModel`] over its [`WireFormat`]: they share timeouts, retries,
//! concurrency limits, pricing and key handling. Build one with [`crate::Model::openai`] and
//! friends, or from a model string with [`crate::Model::parse`].

pub(crate) mod anthropic;
pub(crate) mod compatible;
mod fallback;
pub(crate) mod gemini;
mod http;
mod openai;
pub mod pricing;
pub(crate) mod responses;
pub mod sse;
mod strict;

pub use anthropic::Messages;
pub use compatible::{PRESETS, Preset};
pub use fallback::FallbackModel;
pub use gemini::GenerateContent;
pub use http::{
    ApiKey, HttpConfig, HttpModel, HttpRequest, RetryPolicy, StreamDecoder, WireFormat, classify, error_message,
};
pub use openai::ChatCompletions;
pub use pricing::Price;
pub use responses::Responses;

/// An OpenAI Chat Completions model.
pub type OpenAIModel = HttpModel<ChatCompletions>;
/// An OpenAI Responses API model.
pub type OpenAIResponsesModel = HttpModel<Responses>;
/// An Anthropic Messages model.
pub type AnthropicModel = HttpModel<Messages>;
/// A Google Gemini model.
pub type GeminiModel = HttpModel<GenerateContent>;

/// The base URL from an environment variable, else the default.
pub(crate) fn base_url_from_env(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_string())
}
