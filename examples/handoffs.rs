//! Handoffs, as in the OpenAI Agents SDK: the triage agent hands the conversation to the billing
//! agent by calling `transfer_to_billing`; its run ends there, and the session continues with the
//! billing agent, which answers from the same history (the agents share a session store). The
//! session's next request goes straight to the agent that answered last.
//!
//! Runs offline on scripted models.

use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use loom_agent::store::InMemorySessionStore;
use loom_agent::team::Handoffs;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    let store = std::sync::Arc::new(InMemorySessionStore::default());
    let triage = Agent::builder()
        .name("triage")
        .instructions("Route the user to the right specialist.")
        .model(ScriptedModel::new([ScriptedTurn::tool_call("transfer_to_billing", json!({}))]))
        .session_store(store.clone())
        .build()?;
    let billing = Agent::builder()
        .name("billing")
        .instructions("You handle invoices and refunds.")
        .model(ScriptedModel::new([
            ScriptedTurn::text("Your refund of 20 EUR was sent today."),
            ScriptedTurn::text("You're welcome!"),
        ]))
        .session_store(store)
        .build()?;
    let team = Handoffs::new(triage).agent(billing).build()?;

    let first = team.run(RunRequest::new("Where is my refund?").session("conv-1")).await?;
    for run in &first.runs {
        println!("run {} -> {}", run.run_id, run.output);
    }
    println!("answered by {}: {}", first.agent, first.result.output);
    let next = team.run(RunRequest::new("Thanks!").session("conv-1")).await?;
    println!("answered by {}: {}", next.agent, next.result.output);
    assert_eq!(next.agent, "billing");
    Ok(())
}
