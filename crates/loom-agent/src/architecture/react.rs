use super::{Architecture, RunCx};
use crate::error::{RunError, RunErrorKind};

/// Reason and act: call the model; if it asks for tools, run them and call it again with the
/// results; stop at the first answer without tool calls, or at max_turns.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReAct;

#[async_trait::async_trait]
impl Architecture for ReAct {
    fn name(&self) -> &str {
        "react"
    }

    async fn run(&self, cx: &mut RunCx) -> Result<String, RunError> {
        loop {
            if cx.turn() >= cx.max_turns() {
                return Err(RunError::interrupted(
                    RunErrorKind::MaxTurns,
                    "max_turns",
                    format!("the run reached max_turns ({}) without a final answer", cx.max_turns()),
                ));
            }
            let response = cx.model_turn().await?;
            if response.tool_calls.is_empty() {
                return Ok(response.text);
            }
            // Boxed: a run waiting on its model should not carry the room of the tool calls.
            Box::pin(cx.run_tools(&response.tool_calls)).await?;
        }
    }
}
