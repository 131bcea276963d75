//! `RunContext`: run-scoped structured inputs, grounded knowledge and extension fields.
//!
//! Mirrors the seed snippets:
//!
//! ```python
//! context = RunContext(inputs={"repo": "loom-agent", "tenant": "acme"}, extensions={"trace_id": "req-123"})
//! result = await agent.run("Explain Loom's session model.", context=RunContext(knowledge=bundle))
//! ```
//!
//! `inputs` and `knowledge` reach the model as one system message after the instructions;
//! `extensions` never reach the model but stay with the run (transcript, hooks, stores). The
//! example prints exactly what the model received, using `ScriptedModel::requests()`.

use std::sync::Arc;

use loom_agent::KnowledgeItem;
use loom_agent::model::{LanguageModel, ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    // Keep a handle on the model to read its recorded requests afterwards.
    let model = Arc::new(ScriptedModel::new([ScriptedTurn::text(
        "A session is one conversation: its runs see each other's history and run in order [1].",
    )]));
    let agent = Agent::builder()
        .instructions("You are a repository assistant.")
        .model(model.clone() as Arc<dyn LanguageModel>)
        .build()?;

    // The evidence is built by hand here; `agent.resolve_knowledge(KnowledgeQuery::new(…))` finds it in
    // the agent's knowledge sources instead (see examples/knowledge.rs).
    let context = RunContext::new()
        .input("repo", json!("loom-agent"))
        .input("tenant", json!("acme"))
        .knowledge(KnowledgeItem {
            source: "docs".into(),
            title: Some("Sessions".into()),
            content: "Runs in one session see the earlier runs and execute one after another.".into(),
            uri: Some("docs/architecture.md".into()),
            score: Some(0.92),
        })
        .extension("trace_id", json!("req-123"));

    let run = agent.start(RunRequest::new("Explain Loom's session model.").context(context));
    let result = run.wait().await?;
    println!("answer: {}\n", result.output);

    println!("what the model received:");
    for request in model.requests() {
        for message in &request.messages {
            println!("--- {} ---\n{}", message.role(), message.text());
        }
    }

    // The extensions were not sent, but they are kept with the run.
    let transcript = run.transcript();
    println!("\nkept with the run, not sent: extensions = {}", json!(transcript.context.extensions));
    Ok(())
}
