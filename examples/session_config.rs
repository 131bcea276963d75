//! `SessionConfig`: an id, business metadata and extension fields. The same id reuses the same
//! session and merges the new metadata into it; no id makes a new session every time.
//!
//! Mirrors the seed snippets:
//!
//! ```python
//! config = SessionConfig(id="demo", metadata={"tenant": "acme"}, extensions={"trace_id": "req-123"})
//! session = agent.session(SessionConfig(id="assistant-1"))
//! ```
//!
//! and the behaviour rules: `agent.session()` with no config returns a new `Session`;
//! `agent.session(SessionConfig(id="same"))` reuses the same session; reused sessions merge metadata.

use loom_agent::prelude::*;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    let agent = Agent::builder().model("echo").build()?;

    let config = SessionConfig::new("demo").metadata("tenant", json!("acme")).extension("trace_id", json!("req-123"));
    let session = agent.session(config);
    println!("session {:?}", session.id());
    println!("  metadata   {}", json!(session.metadata()));
    println!("  extensions {}", json!(session.extensions()));
    session.run("hello from the first handle").await?;

    // The same id gives the same live session: new metadata is merged, existing keys are kept.
    let again = agent.session(SessionConfig::new("demo").metadata("plan", json!("pro")));
    println!("same id again -> session {:?}", again.id());
    println!("  metadata   {}", json!(again.metadata()));
    println!("  (seen through the first handle too: {})", json!(session.metadata()));

    // It is one conversation: a run through the second handle sees the first run in its history.
    let result = again.run("hello from the second handle").await?;
    let listed = again.list_runs().await?;
    println!("  runs in the session: {} (latest answer: {:?})", listed.len(), result.output);

    // No id: a new session with a generated id, every time.
    let a = agent.session(SessionConfig::default());
    let b = agent.session(SessionConfig::default());
    println!("no id -> {:?} and {:?} (different: {})", a.id(), b.id(), a.id() != b.id());
    Ok(())
}
