//! Guardrails: checks on what goes into and comes out of a run.

use serde::{Deserialize, Serialize};

/// Where a guardrail looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardStage {
    /// The run's input, before the first model call.
    Input,
    /// Every model answer's text, streamed deltas included.
    Output,
    /// Every tool result, before the model reads it.
    ToolResult,
}

/// What a guardrail decides about a text.
#[derive(Clone, Debug, PartialEq)]
pub enum GuardVerdict {
    /// Let it through as it is.
    Pass,
    /// Let it through with these changes (the full replacement text).
    Redact(String),
    /// Stop the run: it ends interrupted with reason `guardrail: <name>`.
    Block(String),
}

/// A check on text at one or more stages. Checks are synchronous and should be fast: the output
/// stage runs on streamed text as it arrives.
pub trait Guardrail: Send + Sync + 'static {
    /// The guardrail's name, as it appears in interruption reasons and events.
    fn name(&self) -> &str;

    /// Whether it looks at this stage (all stages by default).
    fn applies_to(&self, _stage: GuardStage) -> bool {
        true
    }

    /// Checks one text.
    fn check(&self, stage: GuardStage, text: &str) -> GuardVerdict;
}
