//! A supervisor: a coordinator delegates tasks to named workers (each a child run; independent
//! ones in the same turn run in parallel) and combines their results.
//!
//! Runs offline on scripted models.

use std::time::{Duration, Instant};

use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use loom_agent::team::Supervisor;
use serde_json::json;

fn worker(name: &str, answer: &str) -> Result<Agent, loom_agent::Error> {
    // Each worker takes 200 ms to answer.
    let model = ScriptedModel::new([ScriptedTurn::text(answer).with_delay(Duration::from_millis(200))]);
    Agent::builder().name(name).model(model).build()
}

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    let coordinator = ScriptedModel::new([
        // Two independent tasks in one turn: the workers run at the same time.
        ScriptedTurn::tool_call("researcher", json!({"input": "Key facts about the Rhine"}))
            .with_tool_call("poet", json!({"input": "A two-line poem about a river"})),
        ScriptedTurn::text(
            "The Rhine runs 1,230 km to the North Sea.\nSilver water, patient, slow — / it carries what the mountains know.",
        ),
    ]);
    let supervisor = Supervisor::builder(
        Agent::builder().name("editor").instructions("You edit a short article.").model(coordinator),
    )
    .worker(
        "researcher",
        "Finds facts.",
        worker("researcher", "The Rhine is 1,230 km long and ends in the North Sea.")?,
    )
    .worker(
        "poet",
        "Writes verse.",
        worker("poet", "Silver water, patient, slow — / it carries what the mountains know.")?,
    )
    .build()?;

    let began = Instant::now();
    let outcome = supervisor.run("Write a short piece about the Rhine.").await?;
    for (name, child) in &outcome.workers {
        println!("worker {name}: run {} {}", child.run_id, child.state);
    }
    println!("answer:\n{}", outcome.result.output);
    let took = began.elapsed();
    println!("took {took:?} (the workers ran in parallel)");
    assert!(took < Duration::from_millis(400));
    Ok(())
}
