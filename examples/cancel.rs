//! Cancelling a run while the model is still thinking.
//!
//! Mirrors the seed's run states ("RunResult.state: the final run state") for a run stopped by its
//! caller: `run.cancel()` drops the model call in flight and the run ends `cancelled`, with a
//! `run.cancelled` event. The same happens when the future of `agent.run(..)` or the stream of
//! `agent.stream(..)` is dropped before the run ends.

use std::time::{Duration, Instant};

use futures::StreamExt;
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    // A model that takes a minute to answer.
    let model = ScriptedModel::new([ScriptedTurn::text("a very slow answer").with_delay(Duration::from_secs(60))]);
    let agent = Agent::builder().model(model).build()?;

    let started = Instant::now();
    let run = agent.start("Write a long essay.");

    // Wait until the model call is in flight, then cancel.
    let mut events = run.events();
    while let Some(event) = events.next().await {
        println!("{:>6.1} ms  {}", started.elapsed().as_secs_f64() * 1e3, event.type_name());
        if matches!(event.kind, EventKind::ModelRequest(_)) {
            println!("{:>6.1} ms  cancelling (state was {})", started.elapsed().as_secs_f64() * 1e3, run.state());
            run.cancel();
        }
    }

    // `wait()` would return `Err(Error::Run(..))` for a cancelled run; `result()` gives the result
    // whatever the state.
    let result = run.result().await;
    println!("state: {}", result.state);
    if let Some(error) = &result.error {
        println!("error: {} ({:?})", error.message, error.kind);
    }
    println!("ended after {:.1} ms, not 60 s", started.elapsed().as_secs_f64() * 1e3);
    Ok(())
}
