//! The `tree_of_thoughts` architecture, for problems where a search pays: at each level the
//! model proposes next thoughts for every line kept so far, one call scores them, the best
//! `breadth` lines stay; the best line is turned into the answer. Each candidate is a
//! `thought.scored` event.
//!
//! Runs offline on a scripted model.

use loom_agent::architecture::TreeOfThoughts;
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    let model = ScriptedModel::new([
        // Depth 1: expand the request, score the candidates.
        ScriptedTurn::text(json!({"thoughts": ["Try 4 + 4 + 4 - 4", "Try 4 * 4 / 4 + 4"]}).to_string()),
        ScriptedTurn::text(json!({"scores": [6, 8]}).to_string()),
        // Depth 2: expand the kept line, score again.
        ScriptedTurn::text(json!({"thoughts": ["4 * 4 = 16, / 4 = 4, + 4 = 8", "check: uses four 4s"]}).to_string()),
        ScriptedTurn::text(json!({"scores": [9, 7]}).to_string()),
        ScriptedTurn::text("4 * 4 / 4 + 4 = 8"),
    ]);
    let search = TreeOfThoughts::new().breadth(1).depth(2).branching(2);
    let agent = Agent::builder().model(model).architecture(search).build()?;
    let result = agent.run("Make 8 from four 4s with + - * /.").await?;
    for event in result.events.iter() {
        if let EventKind::ThoughtScored(t) = &event.kind {
            let mark = if t.kept { "kept" } else { "pruned" };
            println!("depth {} thought {} ({mark}, score {}): {}", t.depth, t.id, t.score, t.thought);
        }
    }
    println!("answer: {}", result.output);
    Ok(())
}
