//! Sessions: `agent.session(...)`, `session.start` (returns a `Run` at once), `run.wait()`, and a
//! second run that continues the conversation.
//!
//! Mirrors the seed snippets:
//!
//! ```python
//! session = agent.session(SessionConfig(id="assistant-1"))
//! run = session.start("Inspect the current repository layout.")
//! result = await run.wait()
//! result = await session.run("Generate a requirement summary.")
//! ```
//!
//! Runs in one session see the earlier runs' prompts, answers and tool results, and run one after
//! another in the order they were started.

use loom_agent::Message;
use loom_agent::model::{FnModel, ScriptedTurn};
use loom_agent::prelude::*;

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    // A model that answers from what it is sent, so the output shows what history it saw.
    let model = FnModel::new("history-aware", |request| {
        let users: Vec<String> =
            request.messages.iter().filter(|m| matches!(m, Message::User { .. })).map(Message::text).collect();
        let answer = match users.as_slice() {
            [] => "I received no question.".to_string(),
            [only] => {
                format!("(first message of the session) You asked: \"{only}\". The layout: crates/, examples/, docs/.")
            }
            [first, .., last] => {
                // Everything but the instructions and the new question is history.
                let history = request.messages.iter().filter(|m| !matches!(m, Message::System { .. })).count() - 1;
                format!(
                    "I see {history} earlier messages in this session; you first asked \"{first}\". Now: \"{last}\"."
                )
            }
        };
        ScriptedTurn::text(answer)
    });
    let agent = Agent::builder().instructions("You are a repository assistant.").model(model).build()?;

    let session = agent.session(SessionConfig::new("assistant-1"));
    println!("session {}", session.id());

    // `start` returns the run's handle at once; the run proceeds in the background.
    let run = session.start("Inspect the current repository layout.");
    println!("started {} (state right after start: {})", run.id(), run.state());
    let result = run.wait().await?;
    println!("run 1 -> {}: {}", result.state, result.output);

    // `session.run` is `session.start(..)` + `run.wait()`. This run continues the conversation.
    let result = session.run("Generate a requirement summary.").await?;
    println!("run 2 -> {}: {}", result.state, result.output);

    // Runs started back to back are queued and execute in order.
    let third = session.start("Anything else?");
    let fourth = session.start("Last one.");
    println!("run 3 is {}, run 4 is {} (it waits for run 3)", third.state(), fourth.state());
    println!("run 4 -> {}", fourth.wait().await?.output);
    println!("run 3 had already finished: {}", third.state());

    println!("\nruns in this session:");
    for summary in session.list_runs().await? {
        println!("  {} {:<9} {}", summary.run_id, summary.state.as_str(), summary.input.summary());
    }
    Ok(())
}
