//! Helpers shared by the provider test suites (Chat Completions and Responses): building a bare
//! `ModelRequest`, draining a model's stream, quick retry settings, and small assertions.

use std::time::Duration;

use futures::StreamExt;
use loom_agent::RunResult;
use loom_agent::error::ModelError;
use loom_agent::event::EventKind;
use loom_agent::message::{FinishReason, Message, Usage};
use loom_agent::model::providers::{HttpConfig, RetryPolicy};
use loom_agent::model::{Generation, LanguageModel, ModelChunk, ModelRequest};
use loom_agent::tool::ToolSpec;

use super::within;
use serde_json::json;

pub fn request<'a>(messages: &'a [Message], tools: &'a [ToolSpec], generation: &'a Generation) -> ModelRequest<'a> {
    ModelRequest { messages, tools, generation, output_schema: None, run_id: "run_test", user_id: None, turn: 1 }
}

/// Every chunk of one call, or the first error (before or inside the stream).
pub async fn chunks(model: &dyn LanguageModel, request: ModelRequest<'_>) -> Result<Vec<ModelChunk>, ModelError> {
    let mut stream = within(20, "model call", model.stream(&request)).await?;
    let mut out = Vec::new();
    while let Some(chunk) = within(20, "next chunk", stream.next()).await {
        out.push(chunk?);
    }
    Ok(out)
}

pub fn assert_close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-12, "cost {actual} != {expected}");
}

pub fn finish_reasons(result: &RunResult) -> Vec<FinishReason> {
    result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ModelResponse(r) => Some(r.finish_reason),
            _ => None,
        })
        .collect()
}

/// Retries as by default, but without the long waits.
pub fn quick_retries() -> HttpConfig {
    HttpConfig {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        },
        ..HttpConfig::default()
    }
}

pub fn lookup_spec() -> ToolSpec {
    ToolSpec {
        name: "lookup".into(),
        description: "Look something up.".into(),
        parameters: json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}),
        flags: Default::default(),
    }
}

/// Usage without the cost (compared apart, with a tolerance).
pub fn tokens(u: &Usage) -> (u64, u64, u64, u64) {
    (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens)
}
