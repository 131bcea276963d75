//! Loom's model providers over HTTP: OpenAI (Chat Completions and Responses), Anthropic Messages,
//! Google Gemini, and OpenAI-compatible servers by base URL, with ordered failover across models;
//! and embeddings over OpenAI-compatible `/embeddings` endpoints ([`HttpEmbedder`]).
//!
//! Every provider is an [`HttpModel`] over its [`WireFormat`]: they share timeouts, retries,
//! concurrency limits, pricing and key handling. Each implements `loom_core`'s
//! [`LanguageModel`](loom_core::model::LanguageModel), so any Loom agent can use it.
//!
//! Most programs do not add this crate: `loom-agent` pulls it in with its `providers` feature (on by
//! default) and re-exports it as `loom_agent::model::providers`, with constructors on its `Model`
//! handle (`Model::openai("gpt-5.1")`, `Model::anthropic(…)`, `Model::parse("ollama:qwen3")`, …).
//! Used on its own:
//!
//! ```no_run
//! use loom_providers::{HttpConfig, RetryPolicy, compatible};
//!
//! let model = compatible::openai("gpt-5.1")
//!     .api_key("sk-…")
//!     .with_config(HttpConfig { retry: RetryPolicy::none(), ..HttpConfig::default() });
//! let local = compatible::compatible("http://localhost:8000/v1", "my-model");
//! # let _ = (model, local);
//! ```

pub mod anthropic;
pub mod compatible;
pub mod embeddings;
mod fallback;
pub mod gemini;
mod http;
mod json;
mod openai;
pub mod pricing;
pub mod responses;
pub mod sse;
mod strict;
pub mod tokens;

pub use anthropic::AnthropicMessages;
#[allow(deprecated)]
pub use anthropic::Messages;
pub use compatible::{PRESETS, Preset};
pub use embeddings::HttpEmbedder;
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
pub type AnthropicModel = HttpModel<AnthropicMessages>;
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
