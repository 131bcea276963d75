//! Knowledge: an agent that looks things up in a directory of documents and cites them.
//!
//! Mirrors the seed snippet:
//!
//! ```python
//! bundle = await agent.resolve_knowledge(KnowledgeQuery(text="How do I reset the router?", top_k=3))
//! result = await agent.run("How do I reset the router?", context=RunContext(knowledge=bundle))
//! ```
//!
//! Offline: the documents are written to a temporary directory, the index lives in a SQLite file
//! beside them (the memory store's knowledge tables), the embedder is a toy one defined here, and
//! the model is scripted. It prints what the model received (the passages numbered for citation),
//! the `knowledge.injected` event, the `search_knowledge` tool's answer, and what re-indexing
//! after a change reads.

use std::sync::Arc;

use loom_agent::embed::Embedder;
use loom_agent::knowledge::{KnowledgeQuery, KnowledgeSource};
use loom_agent::model::{LanguageModel, ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use serde_json::json;

/// A toy embedder: words hashed into 64 buckets. (Real agents use the memory embedder: the local
/// MiniLM or an OpenAI-compatible `/v1/embeddings` endpoint.)
struct Buckets;

#[async_trait::async_trait]
impl Embedder for Buckets {
    fn model_id(&self) -> &str {
        "example:buckets-64"
    }
    fn dimensions(&self) -> usize {
        64
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, loom_agent::Error> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0f32; 64];
                for w in t.split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() > 2) {
                    let h = w.to_lowercase().bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
                    v[(h % 64) as usize] += 1.0;
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
                v.iter().map(|x| x / n).collect()
            })
            .collect())
    }
}

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    let dir = std::env::temp_dir().join(format!("loom-example-knowledge-{}", std::process::id()));
    let docs = dir.join("manuals");
    std::fs::create_dir_all(&docs).map_err(|e| loom_agent::Error::Config(e.to_string()))?;
    let write = |name: &str, text: &str| {
        std::fs::write(docs.join(name), text).map_err(|e| loom_agent::Error::Config(e.to_string()))
    };
    write(
        "router.md",
        "# Router\n\nTo reset the router, hold the reset button for ten seconds.\nThe lights blink twice when it restarts.\n",
    )?;
    write("warranty.html", "<html><body><h1>Warranty</h1><p>The warranty lasts two years.</p></body></html>")?;

    let model = Arc::new(ScriptedModel::new([
        ScriptedTurn::tool_call("search_knowledge", json!({"query": "warranty length"})),
        ScriptedTurn::text("Hold the reset button for ten seconds [1]; the warranty lasts two years."),
    ]));
    let agent = Agent::builder()
        .instructions("Answer from the manuals and cite them.")
        .model(model.clone() as Arc<dyn LanguageModel>)
        .memory(format!("sqlite:{}", dir.join("bot.db").display()))
        .auto_extract(false)
        .embedder(Buckets)
        .knowledge(KnowledgeSource::directory(&docs))
        .build()?;

    let question = "How do I reset the router?";
    let bundle = agent.resolve_knowledge(KnowledgeQuery::new(question).top_k(1)).await?;
    let result = agent.run(RunRequest::new(question).context(RunContext::new().knowledge(&bundle))).await?;
    println!("answer: {}\n", result.output);

    for event in result.events.iter() {
        if let EventKind::KnowledgeInjected(injected) = &event.kind {
            for item in &injected.items {
                println!(
                    "knowledge.injected: [{}] {} ({})",
                    item.marker,
                    item.title.as_deref().unwrap_or(""),
                    item.source
                );
            }
        }
    }
    let requests = model.requests();
    println!("\nwhat the model received first:");
    for message in &requests[0].messages {
        println!("--- {} ---\n{}", message.role(), message.text());
    }
    println!(
        "\nthe search_knowledge tool answered:\n{}",
        requests[1].messages.last().map(|m| m.text()).unwrap_or_default()
    );

    // Re-indexing reads only what changed.
    write("router.md", "# Router\n\nTo reset the router, hold the reset button for fifteen seconds.\n")?;
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
    if let Ok(file) = std::fs::File::options().write(true).open(docs.join("router.md")) {
        let _ = file.set_modified(later);
    }
    if let Some(knowledge) = agent.knowledge() {
        for r in knowledge.index().await? {
            println!(
                "\nre-indexed {}: {} indexed ({} chunks), {} unchanged, {} removed",
                r.source, r.indexed, r.chunks, r.unchanged, r.removed
            );
            assert_eq!((r.indexed, r.unchanged), (1, 1));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
