//! `agent.run`: a one-off request that waits for the final answer.
//!
//! Mirrors the seed snippet:
//!
//! ```python
//! result = await agent.run("Summarize this design document.")
//! print(result.output)
//! print(result.state)
//! ```
//!
//! Use it for one-off requests, stateless flows, extraction, classification and simple chat
//! endpoints. `Ok` means the run completed; any other end (failed, cancelled, interrupted) is an
//! `Err(Error::Run(..))` that still carries the whole `RunResult`.

use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    // The seed uses `Model.openai("gpt-5.1")`: that is `.model(Model::openai("gpt-5.1"))` with a key
    // set. A scripted model keeps this example offline.
    let model = ScriptedModel::new([ScriptedTurn::text(
        "The document proposes a Rust agent runtime built from an Agent (configuration), Sessions \
         (conversations) and Runs (one execution each, with a live event log).",
    )]);
    let agent = Agent::builder().instructions("You are a code assistant.").model(model).build()?;

    let result = agent.run("Summarize this design document.").await?;
    println!("{}", result.output);
    println!("{}", result.state);

    // The rest of the result, for the curious.
    println!(
        "run {} in session {}, {} model call(s), {} events",
        result.run_id,
        result.session_id,
        result.turns,
        result.events.len()
    );

    // A run that does not complete comes back as an error with the result inside: this model has
    // no turns left, so the next run fails.
    match agent.run("And once more?").await {
        Ok(r) => println!("unexpected: {}", r.output),
        Err(err) => {
            let state = err.run_result().map(|r| r.state.as_str()).unwrap_or("-");
            println!("second run: state {state}; error: {err}");
        }
    }
    Ok(())
}
