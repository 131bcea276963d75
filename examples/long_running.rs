//! A long-running agent held to acceptance criteria, offline (a scripted model plays both the
//! worker and the judge).
//!
//! Mirrors the seed snippet:
//!
//! ```python
//! agent = Agent(..., runtime=Runtime.long_running(criteria=["names a release date", "lists the risks"]))
//! result = await agent.run("Plan the release")
//! ```
//!
//! `Runtime::long_running` judges each final answer against the criteria (a structured verdict per
//! criterion from the judge: the agent's model unless `.judge(model)` names another), sends the
//! failed ones back to the model and lets it continue, up to 3 rounds; the result lists each
//! criterion's last verdict. It also keeps the conversation within the model's context window,
//! summarizing older turns when needed, so a session can go on across many runs.

use std::sync::Arc;

use loom_agent::Runtime;
use loom_agent::event::EventKind;
use loom_agent::model::{LanguageModel, ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    let verdict = |date: bool, reason: &str| {
        ScriptedTurn::text(
            json!({"verdicts": [
                {"criterion": 1, "passed": date, "reason": reason},
                {"criterion": 2, "passed": true, "reason": "risks listed"}
            ]})
            .to_string(),
        )
    };
    let model = Arc::new(ScriptedModel::new([
        // The first answer forgets the date; the judge says so.
        ScriptedTurn::text("Plan: freeze main, write notes, tag. Risks: flaky CI, late docs."),
        verdict(false, "no release date is named"),
        // With the judge's feedback, the model completes its answer, and the judge agrees.
        ScriptedTurn::text(
            "Release on 2026-12-15: freeze main on the 10th, notes on the 12th, tag on the 15th. Risks: flaky CI, late docs.",
        ),
        verdict(true, "2026-12-15"),
    ]));
    let agent = Agent::builder()
        .instructions("You plan software releases.")
        .model(model.clone() as Arc<dyn LanguageModel>)
        .runtime(Runtime::long_running(["names a release date", "lists the risks"]))
        .build()?;

    let result = agent.run("Plan the release").await?;
    for event in result.events.iter() {
        if let EventKind::CriteriaChecked(checked) = &event.kind {
            println!("round {}: {}", checked.round, if checked.passed { "all criteria met" } else { "not yet" });
        }
    }
    for verdict in &result.criteria {
        println!("  [{}] {} ({})", if verdict.passed { "x" } else { " " }, verdict.criterion, verdict.reason);
    }
    println!("{}", result.output);
    assert!(result.criteria.iter().all(|v| v.passed));
    assert_eq!(model.remaining(), 0);
    Ok(())
}
