//! `RuntimeTask`: a run with a goal, structured input and acceptance criteria.
//!
//! Mirrors the seed snippet:
//!
//! ```python
//! task = RuntimeTask(
//!     goal="Refactor the provider tool-call path",
//!     input={"providers": ["openai", "anthropic", "gemini"]},
//!     criteria=["tool call round-trip works", "provider details stay out of engine"],
//! )
//! result = await agent.run(task)
//! ```
//!
//! The task reaches the model as one user message: the goal, the input as JSON and the criteria as
//! a list. Task metadata stays with the run and is never sent.

use std::sync::Arc;

use loom_agent::model::{LanguageModel, ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    let model = Arc::new(ScriptedModel::new([ScriptedTurn::text(
        "Plan: move tool-call assembly into one ResponseAssembler shared by openai, anthropic and gemini; \
         the engine only sees ToolCall values. Round-trip tests cover each provider.",
    )]));
    let agent = Agent::builder()
        .instructions("You are a code assistant.")
        .model(model.clone() as Arc<dyn LanguageModel>)
        .build()?;

    let task = RuntimeTask::new("Refactor the provider tool-call path")
        .input(json!({"providers": ["openai", "anthropic", "gemini"]}))
        .criterion("tool call round-trip works")
        .criterion("provider details stay out of engine")
        .metadata("ticket", json!("LOOM-42"));

    let result = agent.run(task).await?;
    println!("state : {}", result.state);
    println!("output: {}\n", result.output);

    let requests = model.requests();
    if let Some(user) = requests.first().and_then(|r| r.messages.last()) {
        println!("the user message the model received:\n{}", user.text());
    }
    Ok(())
}
