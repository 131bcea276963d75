//! The complete example: instructions, generation settings, a tool, a runtime profile with
//! criteria, a named session and a run context.
//!
//! Mirrors the seed's "complete example":
//!
//! ```python
//! @tool(description="Search repository docs", read_only=True)
//! def search_docs(query: str) -> str:
//!     return f"results for: {query}"
//!
//! agent = Agent(
//!     model=Model.openai("gpt-5.1"),
//!     instructions="You are a repository assistant.",
//!     generation=Generation(temperature=0.2, max_output_tokens=512),
//!     tools=[search_docs],
//!     capabilities=[Capability.files(read_only=True)],
//!     runtime=Runtime.long_running(criteria=["answers cite repo evidence"]),
//! )
//! session = agent.session(SessionConfig(id="repo-assistant"))
//! result = await session.run("Summarize the API design.", context=RunContext(inputs={"repo": "loom-agent"}))
//! print(result.output)
//! ```

use std::sync::Arc;

use loom_agent::Runtime;
use loom_agent::model::{LanguageModel, ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use serde_json::json;

#[tool(description = "Search repository docs", read_only)]
fn search_docs(query: String) -> String {
    format!("results for: {query}")
}

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    // `Model.openai("gpt-5.1")` is `Model::openai("gpt-5.1")` (needs a key); a scripted model keeps this offline.
    let model = Arc::new(ScriptedModel::new([
        ScriptedTurn::tool_call("search_docs", json!({"query": "API design"})),
        ScriptedTurn::text(
            "The API centres on Agent (configuration), Session (a conversation) and Run (one execution \
             with a live event log) [search_docs: results for: API design].",
        ),
    ]));

    let agent = Agent::builder()
        .model(model.clone() as Arc<dyn LanguageModel>)
        .instructions("You are a repository assistant.")
        .generation(Generation::new().temperature(0.2).max_output_tokens(512))
        .tool(search_docs)
        // `Capability.files(read_only=True)` is left out: capabilities (files, web, shell, MCP, skills) are their own issue.
        .runtime(Runtime::long_running(["answers cite repo evidence"]))
        .build()?;

    let session = agent.session(SessionConfig::new("repo-assistant"));
    let result = session
        .run(RunRequest::new("Summarize the API design.").context(RunContext::new().input("repo", json!("loom-agent"))))
        .await?;
    println!("{}", result.output);

    // Behind the scenes: what the first model call carried.
    println!("\n-- the first model request --");
    if let Some(request) = model.requests().first() {
        let generation = &request.generation;
        println!(
            "generation: temperature {:?}, max_output_tokens {:?}",
            generation.temperature, generation.max_output_tokens
        );
        let tools: Vec<&str> = request.tools.iter().map(|t| t.name.as_str()).collect();
        println!("tools: {tools:?}");
        for message in &request.messages {
            println!("[{}] {}", message.role(), message.text());
        }
    }
    println!(
        "\nstate {} after {} model calls; session {}; runtime profile {:?} (max {} turns)",
        result.state,
        result.turns,
        result.session_id,
        agent.runtime().name,
        agent.max_turns()
    );
    Ok(())
}
