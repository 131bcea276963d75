//! `agent.stream`: the run's events, live, for event-driven UIs, status displays and debugging.
//!
//! Mirrors the seed snippet:
//!
//! ```python
//! async for event in agent.stream("Analyze the current requirement."):
//!     print(event.type, event.payload)
//! ```
//!
//! In Rust an event is a typed enum (`event.kind`); `event.type_name()` is its dotted name and its
//! JSON form is `{type, run_id, session_id, seq, at, payload}`.

use futures::StreamExt;
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use serde_json::json;

/// Look up a requirement by its id.
#[tool(read_only)]
async fn get_requirement(id: String) -> Result<String, ToolError> {
    Ok(format!("{id}: runs must stream their events live"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = ScriptedModel::new([
        ScriptedTurn::tool_call("get_requirement", json!({"id": "REQ-7"})),
        ScriptedTurn::text("REQ-7 asks for live run events. It is met by agent.stream.").streamed(),
    ]);
    let agent = Agent::builder().model(model).tool(get_requirement).build()?;

    let mut events = agent.stream("Analyze the current requirement.");
    while let Some(event) = events.next().await {
        // `payload` as the seed prints it: the event's JSON payload.
        let payload = serde_json::to_value(&event)?["payload"].take();
        println!("{:<16} {payload}", event.type_name());
    }
    Ok(())
}
