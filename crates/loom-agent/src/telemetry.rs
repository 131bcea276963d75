//! Telemetry: `tracing` spans and metric events following the OpenTelemetry GenAI semantic
//! conventions.
//!
//! Spans: `invoke_agent {agent}` for a run (target `loom`), `chat {model}` for each model call,
//! `execute_tool {tool}` for each tool call, with `gen_ai.*` attributes (operation, provider, model,
//! conversation id, token usage, finish reasons, tool name and call id) and `error.type` on failure.
//! Metrics are `tracing` events on target `loom::metrics` whose fields follow
//! `tracing-opentelemetry`'s conventions (`histogram.gen_ai.client.token.usage`,
//! `histogram.gen_ai.client.operation.duration`, `monotonic_counter.loom.cost.usd`,
//! `histogram.loom.tool.duration`), so an OpenTelemetry metrics layer turns them into instruments.
//!
//! With no subscriber listening, a span costs a check of a cached flag and no field is evaluated.
//! Prompts and outputs are never put on spans unless [`Telemetry::capture_content`] is on.
//! The `loom-otel` crate wires these into an OpenTelemetry pipeline (OTLP export behind a feature).

use std::time::Duration;

use tracing::Span;
use tracing::field::Empty;

use crate::error::RunError;
use crate::governance::Scope;
use crate::message::Message;
use crate::model::{Generation, LanguageModel, ModelResponse};

/// Telemetry settings of an agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Telemetry {
    /// Put prompts and outputs on spans (`gen_ai.input.messages`, `gen_ai.output.messages`).
    /// Off by default: they may hold personal data.
    pub capture_content: bool,
}

impl Telemetry {
    /// Spans and metrics without content.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also records prompts and outputs on spans.
    pub fn capture_content(mut self, on: bool) -> Self {
        self.capture_content = on;
        self
    }
}

/// Token counts as OpenTelemetry integer attributes (which are signed).
fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn run_span(agent: &str, model: &dyn LanguageModel, scope: &Scope) -> Span {
    let span = tracing::info_span!(
        target: "loom",
        "invoke_agent",
        otel.name = Empty,
        otel.kind = "internal",
        otel.status_code = Empty,
        gen_ai.operation.name = "invoke_agent",
        gen_ai.agent.name = %agent,
        gen_ai.conversation.id = %scope.session_id,
        gen_ai.request.model = %model.name(),
        gen_ai.provider.name = %model.provider(),
        loom.run_id = %scope.run_id,
        loom.user_id = scope.user_id.as_deref(),
        loom.run.state = Empty,
        loom.run.turns = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        error.type = Empty,
    );
    if !span.is_disabled() {
        span.record("otel.name", format!("invoke_agent {agent}"));
    }
    span
}

pub(crate) fn record_run(span: &Span, result: &crate::run::RunResult) {
    if span.is_disabled() {
        return;
    }
    span.record("loom.run.state", result.state.as_str());
    span.record("loom.run.turns", i64::from(result.turns));
    span.record("gen_ai.usage.input_tokens", as_i64(result.usage.input_tokens + result.usage.cached_input_tokens));
    span.record("gen_ai.usage.output_tokens", as_i64(result.usage.output_tokens));
    if let Some(e) = &result.error {
        span.record("error.type", serde_json::to_value(e.kind).ok().and_then(|v| v.as_str().map(str::to_string)));
        span.record("otel.status_code", "ERROR");
    }
}

pub(crate) fn chat_span(model: &dyn LanguageModel, g: &Generation, scope: &Scope, turn: u32) -> Span {
    let span = tracing::info_span!(
        target: "loom",
        "chat",
        otel.name = Empty,
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = %model.provider(),
        gen_ai.request.model = %model.name(),
        gen_ai.request.temperature = g.temperature,
        gen_ai.request.max_tokens = g.max_output_tokens.map(i64::from),
        gen_ai.request.top_p = g.top_p,
        gen_ai.conversation.id = %scope.session_id,
        loom.run_id = %scope.run_id,
        loom.turn = i64::from(turn),
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.usage.cache_read.input_tokens = Empty,
        gen_ai.usage.cache_creation.input_tokens = Empty,
        gen_ai.response.finish_reasons = Empty,
        gen_ai.input.messages = Empty,
        gen_ai.output.messages = Empty,
        error.type = Empty,
    );
    if !span.is_disabled() {
        span.record("otel.name", format!("chat {}", model.name()));
    }
    span
}

pub(crate) fn record_chat(
    span: &Span,
    model: &str,
    capture_content: bool,
    messages: &[Message],
    outcome: &Result<ModelResponse, RunError>,
    elapsed: Duration,
) {
    match outcome {
        Ok(r) => {
            if !span.is_disabled() {
                let u = &r.usage;
                span.record(
                    "gen_ai.usage.input_tokens",
                    as_i64(u.input_tokens + u.cached_input_tokens + u.cache_write_tokens),
                );
                span.record("gen_ai.usage.output_tokens", as_i64(u.output_tokens));
                span.record("gen_ai.usage.cache_read.input_tokens", as_i64(u.cached_input_tokens));
                span.record("gen_ai.usage.cache_creation.input_tokens", as_i64(u.cache_write_tokens));
                let reason = serde_json::to_value(r.finish_reason).ok().and_then(|v| v.as_str().map(str::to_string));
                span.record("gen_ai.response.finish_reasons", format!("[\"{}\"]", reason.unwrap_or_default()));
                if capture_content {
                    span.record("gen_ai.input.messages", serde_json::to_string(messages).unwrap_or_default());
                    let out = serde_json::json!([{"role": "assistant", "content": r.text, "tool_calls": r.tool_calls}]);
                    span.record("gen_ai.output.messages", out.to_string());
                }
            }
            tracing::event!(
                target: "loom::metrics",
                tracing::Level::INFO,
                histogram.gen_ai.client.token.usage = r.usage.input_tokens + r.usage.cached_input_tokens,
                gen_ai.token.type = "input",
                gen_ai.request.model = %model,
            );
            tracing::event!(
                target: "loom::metrics",
                tracing::Level::INFO,
                histogram.gen_ai.client.token.usage = r.usage.output_tokens,
                gen_ai.token.type = "output",
                gen_ai.request.model = %model,
            );
            tracing::event!(
                target: "loom::metrics",
                tracing::Level::INFO,
                histogram.gen_ai.client.operation.duration = elapsed.as_secs_f64(),
                gen_ai.operation.name = "chat",
                gen_ai.request.model = %model,
            );
            if r.usage.cost_usd > 0.0 {
                tracing::event!(target: "loom::metrics", tracing::Level::INFO, monotonic_counter.loom.cost.usd = r.usage.cost_usd, gen_ai.request.model = %model);
            }
        }
        Err(e) => {
            if !span.is_disabled() {
                let kind = e.model_error.clone().unwrap_or_else(|| {
                    serde_json::to_value(e.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
                });
                span.record("error.type", kind);
                span.record("otel.status_code", "ERROR");
            }
        }
    }
}

pub(crate) fn tool_span(name: &str, call_id: &str) -> Span {
    let span = tracing::info_span!(
        target: "loom",
        "execute_tool",
        otel.name = Empty,
        otel.kind = "internal",
        otel.status_code = Empty,
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = %name,
        gen_ai.tool.call.id = %call_id,
        gen_ai.tool.type = "function",
        error.type = Empty,
    );
    if !span.is_disabled() {
        span.record("otel.name", format!("execute_tool {name}"));
    }
    span
}

pub(crate) fn record_tool(span: &Span, name: &str, error_kind: Option<crate::error::ToolErrorKind>, elapsed: Duration) {
    if let Some(kind) = error_kind
        && !span.is_disabled()
    {
        span.record("error.type", serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_string)));
        span.record("otel.status_code", "ERROR");
    }
    tracing::event!(target: "loom::metrics", tracing::Level::INFO, histogram.loom.tool.duration = elapsed.as_secs_f64(), gen_ai.tool.name = %name);
}
