//! The complete example: instructions, generation settings, a tool, a read-only file capability,
//! a runtime profile with criteria, a named session and a run context.
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
//!
//! `capability::files(".").read_only()` gives the model `read_file`, `list_files`, `glob` and
//! `grep`, confined to the current directory; its instructions are appended to the agent's. The
//! scripted model calls `search_docs` and `read_file` (on `Cargo.toml`, which exists both at the
//! repository root and in `examples/`) in one turn, and the example prints what the file tool
//! returned.

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
        // One turn, two read-only calls (run together): the tool and the file capability.
        ScriptedTurn::tool_call("search_docs", json!({"query": "API design"}))
            .with_tool_call("read_file", json!({"path": "Cargo.toml", "limit": 3})),
        ScriptedTurn::text(
            "The API centres on Agent (configuration), Session (a conversation) and Run (one execution \
             with a live event log) [search_docs: results for: API design] [read_file: Cargo.toml].",
        ),
        // `long_running` judges the answer against its criteria: this turn is the judge's verdict.
        ScriptedTurn::text(
            r#"{"verdicts": [{"criterion": 1, "passed": true, "reason": "cites search_docs and Cargo.toml"}]}"#,
        ),
    ]));

    let agent = Agent::builder()
        .model(model.clone() as Arc<dyn LanguageModel>)
        .instructions("You are a repository assistant.")
        .generation(Generation::new().temperature(0.2).max_output_tokens(512))
        .tool(search_docs)
        .capability(capability::files(".").read_only())
        .runtime(Runtime::long_running(["answers cite repo evidence"]))
        .build()?;

    let session = agent.session(SessionConfig::new("repo-assistant"));
    let result = session
        .run(RunRequest::new("Summarize the API design.").context(RunContext::new().input("repo", json!("loom-agent"))))
        .await?;
    println!("{}", result.output);

    // What the tools returned, from the run's events.
    for event in result.events.iter() {
        if let EventKind::ToolResult(r) = &event.kind {
            println!("\n-- {} returned{} --", r.name, if r.is_error { " an error" } else { "" });
            for line in r.output.lines().take(4) {
                println!("  {line}");
            }
        }
    }

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
