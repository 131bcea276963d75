//! `#[tool]`: turn a plain function into a tool, with a description and flags.
//!
//! Mirrors the seed snippet:
//!
//! ```python
//! @tool(description="Get the weather for a city", read_only=True)
//! def get_weather(city: str) -> str:
//!     return f"{city}: sunny"
//!
//! agent = Agent(model=Model.openai("gpt-5.1"), tools=[get_weather])
//! ```
//!
//! The attribute makes `get_weather` a tool value (a unit struct implementing `Tool`) whose JSON
//! schema comes from the parameters; the original function stays callable as `get_weather::invoke`.

use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use serde_json::json;

#[tool(description = "Get the weather for a city", read_only)]
fn get_weather(city: String) -> String {
    format!("{city}: sunny")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The declaration, as the model is offered it.
    println!("name        : {}", get_weather.name());
    println!("description : {}", get_weather.description());
    println!("flags       : {:?}", get_weather.flags());
    println!("parameters  : {}", get_weather.parameters());

    // The function itself is still there.
    println!("direct call : {}", get_weather::invoke("Paris".to_string()));

    // The seed's `Model.openai("gpt-5.1")` is `Model::openai("gpt-5.1")` (needs a key); a scripted
    // model calls the tool here, offline.
    let model = ScriptedModel::new([
        ScriptedTurn::tool_call("get_weather", json!({"city": "Tokyo"})),
        ScriptedTurn::text("Tokyo is sunny."),
    ]);
    let agent = Agent::builder().model(model).tool(get_weather).build()?;
    let specs = agent.tools();
    let tools: Vec<&str> = specs.iter().map(|t| t.name.as_str()).collect();
    println!("agent tools : {tools:?}");

    let result = agent.run("Weather in Tokyo?").await?;
    for event in result.events.iter() {
        if let EventKind::ToolResult(r) = &event.kind {
            println!("tool result : {} -> {:?}", r.name, r.output);
        }
    }
    println!("answer      : {}", result.output);
    Ok(())
}
