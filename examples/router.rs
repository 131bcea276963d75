//! A router: one classification call (structured output) picks the agent that answers; the
//! chosen agent runs as a child of the router's run.
//!
//! Runs offline on scripted models.

use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use loom_agent::team::Router;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    let billing = Agent::builder()
        .name("billing")
        .model(ScriptedModel::new([ScriptedTurn::text("Your last invoice was paid on March 3.")]))
        .build()?;
    let support = Agent::builder()
        .name("support")
        .model(ScriptedModel::new([ScriptedTurn::text("Try restarting the router.")]))
        .build()?;
    let classifier = ScriptedModel::new([ScriptedTurn::text(
        json!({"agent": "billing", "reason": "a question about an invoice"}).to_string(),
    )]);
    let router = Router::new()
        .route("billing", "Invoices, payments and refunds.", billing)
        .route("support", "Technical problems.", support)
        .build(Agent::builder().name("front_desk").model(classifier))?;

    let result = router.run("Was my last invoice paid?").await?;
    for event in result.events.iter() {
        if let EventKind::ChildStarted(child) = &event.kind {
            println!("routed to {} (run {})", child.agent, child.child_run_id);
        }
    }
    println!("answer: {}", result.output);
    assert_eq!(result.output, "Your last invoice was paid on March 3.");
    Ok(())
}
