//! An agent used as another agent's tool: each call runs the sub-agent as a child run, with its
//! own run id and events, linked to the parent (`parent_run_id`), its usage rolled up into the
//! parent's, its budget drawn from the parent's, cancelled with the parent. The parent's stream
//! can carry the children's events nested live.
//!
//! Runs offline on scripted models: the scripts are what real models would answer.

use futures::StreamExt;
use loom_agent::message::Usage;
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    let spend = |input, output| Usage { input_tokens: input, output_tokens: output, ..Usage::default() };
    let researcher = Agent::builder()
        .name("researcher")
        .instructions("You research one question and answer it in a sentence.")
        .model(ScriptedModel::new([ScriptedTurn::text("The Louvre is in Paris.").with_usage(spend(40, 8))]))
        .build()?;
    let lead = Agent::builder()
        .name("lead")
        .instructions("Answer the user; use the researcher for facts.")
        .model(ScriptedModel::new([
            ScriptedTurn::tool_call("research", json!({"input": "Where is the Louvre?"})).with_usage(spend(60, 12)),
            ScriptedTurn::text("The Louvre is in Paris, France.").with_usage(spend(90, 10)),
        ]))
        .tool(researcher.as_tool("research", "Researches a question and answers it."))
        .build()?;

    let run = lead.start(RunRequest::new("Where can I see the Mona Lisa?").user("alice"));
    // The parent's events with its children's nested live, each tagged with its run id.
    let mut events = run.events_with_children();
    while let Some(nested) = events.next().await {
        let indent = "  ".repeat(nested.depth as usize);
        println!("{indent}{} {}", nested.event.run_id, nested.event.type_name());
    }
    let result = run.wait().await?;
    println!("answer: {}", result.output);
    println!("usage (parent and child): {} tokens", result.usage.total_tokens());
    assert_eq!(result.usage.total_tokens(), 60 + 12 + 90 + 10 + 40 + 8);
    Ok(())
}
