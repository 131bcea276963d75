//! What several architectures share: the ReAct loop as a building block, structured model calls,
//! the task's text, and the tool list for a planning prompt.

use serde::de::DeserializeOwned;

use super::RunCx;
use crate::error::{RunError, RunErrorKind};
use crate::message::Message;
use crate::model::ModelResponse;
use crate::output::OutputSchema;
use crate::runtime::ModelCall;

/// Model turns and tool calls on the conversation until an answer without tool calls (a ReAct
/// episode), within the run's max_turns.
pub(crate) async fn react_episode(cx: &mut RunCx) -> Result<ModelResponse, RunError> {
    loop {
        cx.check_max_turns()?;
        let response = cx.model_turn().await?;
        if response.tool_calls.is_empty() {
            return Ok(response);
        }
        cx.run_tools(&response.tool_calls).await?;
    }
}

/// A call without tools whose answer must match `T`'s schema, kept out of the conversation: the
/// conversation plus `instruction`. `Ok(Err(problem))` when the answer does not match.
pub(crate) async fn structured<T: DeserializeOwned + schemars::JsonSchema + 'static>(
    cx: &mut RunCx,
    instruction: String,
) -> Result<Result<T, String>, RunError> {
    let schema = OutputSchema::of::<T>()
        .map_err(|e| RunError::new(RunErrorKind::Internal, format!("an architecture's schema: {e}")))?;
    cx.check_max_turns()?;
    let call = ModelCall::new()
        .message(Message::user(instruction))
        .without_tools()
        .output_schema(schema.clone())
        .discard_answer();
    let response = cx.model_call(call).await?;
    Ok(schema.parse(&response.text).and_then(|value| serde_json::from_value(value).map_err(|e| e.to_string())))
}

/// The error of a model whose structured answer an architecture cannot use.
pub(crate) fn unusable(architecture: &str, what: &str, problem: &str) -> RunError {
    RunError::new(RunErrorKind::Model, format!("{architecture}: the model's {what} is not usable: {problem}"))
}

/// The run's tools, one line each, for a prompt that plans their use.
pub(crate) fn tool_list(cx: &RunCx) -> String {
    let tools = cx.tools();
    if tools.is_empty() {
        return "(no tools)".to_string();
    }
    let mut out = String::new();
    for t in tools.iter() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("- {}: {} Arguments (JSON Schema): {}", t.name, t.description, t.parameters));
    }
    out
}
