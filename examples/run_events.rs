//! A run's events, artifacts and transcript: `run.events()` read by two consumers at once,
//! `run.artifacts()`, and `run.transcript()` serialized to JSON.
//!
//! Mirrors the seed snippets:
//!
//! ```python
//! async for event in run.events():
//!     print(event.type, event.payload)
//! await run.artifacts()
//! await run.transcript()   # a serializable record for persistence, auditing and debugging
//! ```
//!
//! Every run keeps an append-only event log. `run.events()` replays it from the start and then
//! follows it live, so any number of consumers, joining at any time, each see every event once.

use futures::StreamExt;
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use serde_json::json;

/// Write a short report and attach it to the run.
#[tool]
async fn write_report(ctx: ToolContext, title: String) -> Result<String, ToolError> {
    let artifact = ctx.create_artifact(format!("{title}.md"), "text/markdown", format!("# {title}\n\nAll green."));
    Ok(format!("wrote artifact {}", artifact.id))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = ScriptedModel::new([
        ScriptedTurn::tool_call("write_report", json!({"title": "status"})),
        ScriptedTurn::text("The status report is attached."),
    ]);
    let agent = Agent::builder().model(model).tool(write_report).build()?;
    let session = agent.session(SessionConfig::new("reports"));
    let run = session.start("Write the status report.");

    // Two independent consumers of the same run.
    let printer = {
        let mut events = run.events();
        tokio::spawn(async move {
            let mut names = Vec::new();
            while let Some(event) = events.next().await {
                let payload = serde_json::to_value(&event).map(|mut v| v["payload"].take()).unwrap_or_default();
                println!("[printer] #{} {:<16} {}", event.seq, event.type_name(), payload);
                names.push(event.type_name());
            }
            names
        })
    };
    let counter = {
        let mut events = run.events();
        tokio::spawn(async move {
            let mut names = Vec::new();
            while let Some(event) = events.next().await {
                names.push(event.type_name());
            }
            names
        })
    };
    let (printed, counted) = (printer.await?, counter.await?);
    println!("\nboth consumers saw the same {} events: {}", counted.len(), printed == counted);

    let result = run.wait().await?;
    println!("state {}: {}", result.state, result.output);

    for artifact in run.artifacts() {
        println!("artifact {} {} ({}): {:?}", artifact.id, artifact.name, artifact.media_type, artifact.content);
    }

    // The transcript: ids, state, input, context, messages, output, events, artifacts, usage.
    let transcript = run.transcript();
    let json = serde_json::to_string_pretty(&transcript)?;
    println!("\ntranscript ({} bytes of JSON):\n{json}", json.len());
    Ok(())
}
