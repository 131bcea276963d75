//! The `self_refine` and `reflexion` architectures: an answer, a structured critique (kept out of
//! the conversation), a revision — until the critique passes or the rounds run out. Each critique
//! is a `critique` event. Reflexion differs in that a failed attempt leaves a lesson and the task
//! is tried again with every lesson so far.
//!
//! Runs offline on scripted models.

use loom_agent::architecture::{Reflexion, SelfRefine};
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use serde_json::json;

fn critiques(result: &RunResult) {
    for event in result.events.iter() {
        if let EventKind::Critique(c) = &event.kind {
            println!("  critique {}: passed={} score={:?} — {}", c.round, c.passed, c.score, c.feedback);
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    let model = ScriptedModel::new([
        ScriptedTurn::text("Rust is a language."),
        ScriptedTurn::text(
            json!({"passed": false, "score": 3, "feedback": "Say what makes it distinctive."}).to_string(),
        ),
        ScriptedTurn::text("Rust is a systems language with memory safety without a garbage collector."),
        ScriptedTurn::text(json!({"passed": true, "score": 9, "feedback": "Accurate and specific."}).to_string()),
    ]);
    let agent = Agent::builder().model(model).architecture(SelfRefine::new().max_rounds(3)).build()?;
    let result = agent.run("Describe Rust in one sentence.").await?;
    println!("self_refine:");
    critiques(&result);
    println!("  answer: {}", result.output);

    let model = ScriptedModel::new([
        ScriptedTurn::text("12 inches"),
        ScriptedTurn::text(
            json!({"passed": false, "feedback": "The question asked for centimetres.",
                   "reflection": "Answer in the unit the question asks for."})
            .to_string(),
        ),
        ScriptedTurn::text("30.48 cm"),
        ScriptedTurn::text(json!({"passed": true, "feedback": "Correct."}).to_string()),
    ]);
    let agent = Agent::builder().model(model).architecture(Reflexion::new().max_trials(3)).build()?;
    let result = agent.run("How long is a foot, in centimetres?").await?;
    println!("reflexion:");
    critiques(&result);
    println!("  answer: {}", result.output);
    Ok(())
}
