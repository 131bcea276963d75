//! The `plan_execute` architecture: the model writes a plan (structured output: steps with
//! dependencies), each step is carried out with tools in dependency order, a failed step leads to
//! a new plan, and a last call gives the answer. The plan is a `plan.created` event and an
//! artifact; each step is a pair of `plan.step` events.
//!
//! Runs offline on a scripted model: the script is what a real model would answer to each call.

use loom_agent::architecture::PlanExecute;
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use serde_json::json;

/// Look up a city's population, in millions.
#[tool(read_only, concurrency_safe)]
async fn population(city: String) -> Result<String, ToolError> {
    Ok(match city.as_str() {
        "Tokyo" => "37.4",
        "Delhi" => "31.0",
        _ => "unknown",
    }
    .to_string())
}

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    let plan = json!({"steps": [
        {"id": "tokyo", "description": "Look up Tokyo's population"},
        {"id": "delhi", "description": "Look up Delhi's population"},
        {"id": "compare", "description": "Compare the two", "depends_on": ["tokyo", "delhi"]}
    ]});
    let model = ScriptedModel::new([
        ScriptedTurn::text(plan.to_string()),
        ScriptedTurn::tool_call("population", json!({"city": "Tokyo"})),
        ScriptedTurn::text("Tokyo: 37.4 million"),
        ScriptedTurn::tool_call("population", json!({"city": "Delhi"})),
        ScriptedTurn::text("Delhi: 31.0 million"),
        ScriptedTurn::text("Tokyo is larger by 6.4 million."),
        ScriptedTurn::text("Tokyo (37.4 million) is larger than Delhi (31.0 million)."),
    ]);
    let agent = Agent::builder()
        .instructions("You answer questions about cities.")
        .model(model)
        .tool(population)
        // By name with default settings: `.architecture_name("plan_execute")`.
        .architecture(PlanExecute::new().max_replans(1))
        .build()?;

    let run = agent.start("Which is larger, Tokyo or Delhi?");
    let result = run.wait().await?;
    for event in result.events.iter() {
        match &event.kind {
            EventKind::PlanCreated(plan) => {
                println!("plan (revision {}):", plan.revision);
                for step in &plan.steps {
                    println!("  {} {:?}: {}", step.id, step.depends_on, step.description);
                }
            }
            EventKind::PlanStep(step) => println!("step {} {:?}", step.id, step.status),
            EventKind::ToolCall(call) => println!("  tool {} {}", call.call.name, call.call.arguments),
            _ => {}
        }
    }
    println!("artifact: {} ({} bytes)", result.artifacts[0].name, result.artifacts[0].content.len());
    println!("answer: {}", result.output);
    Ok(())
}
