//! The `rewoo` architecture (reasoning without observation): one call plans every tool call up
//! front, with `#E1`-style placeholders for earlier results; the tools run with no model call in
//! between; one call answers from the evidence. Two model calls, however many tools.
//!
//! Runs offline on a scripted model.

use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use serde_json::json;

/// The capital of a country.
#[tool(read_only, concurrency_safe)]
async fn capital(country: String) -> Result<String, ToolError> {
    Ok(if country == "France" { "Paris" } else { "unknown" }.to_string())
}

/// Today's weather in a city.
#[tool(read_only, concurrency_safe)]
async fn weather(city: String) -> Result<String, ToolError> {
    Ok(format!("{city}: 21 °C, sunny"))
}

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    let plan = json!({"steps": [
        {"id": "E1", "plan": "Find the capital", "tool": "capital", "arguments": {"country": "France"}},
        {"id": "E2", "plan": "Get its weather", "tool": "weather", "arguments": {"city": "#E1"}}
    ]});
    let model = ScriptedModel::new([
        ScriptedTurn::text(plan.to_string()),
        ScriptedTurn::text("It is 21 °C and sunny in Paris."),
    ]);
    let agent = Agent::builder().model(model).tool(capital).tool(weather).architecture_name("rewoo").build()?;
    let result = agent.run("What is the weather in the capital of France?").await?;
    for event in result.events.iter() {
        match &event.kind {
            EventKind::ModelRequest(r) => println!("model call {}", r.turn),
            EventKind::ToolCall(c) => println!("  tool {} {}", c.call.name, c.call.arguments),
            EventKind::ToolResult(r) => println!("  -> {}", r.output),
            _ => {}
        }
    }
    println!("answer: {}", result.output);
    Ok(())
}
