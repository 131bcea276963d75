//! A2A both ways, offline and in one process: a Loom agent served over A2A 1.0 by `loom serve`'s
//! router on 127.0.0.1, and another Loom agent that calls it as a tool through
//! `capability::a2a(url)`. Scripted models stand in for real ones.
//!
//! `cargo run -p loom-examples --example a2a`

use std::collections::BTreeMap;

use loom_agent::model::{FnModel, ScriptedTurn};
use loom_agent::prelude::*;
use loom_agent::{Message, SessionConfig};
use loom_server::a2a::A2aSettings;
use loom_server::{AppState, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The remote side: a forecaster agent behind `loom serve`, with one API key for tenant "travel".
    let forecaster = Agent::builder()
        .name("forecaster")
        .model(FnModel::new("forecast-model", |req| {
            let asked = req.messages.iter().rev().find(|m| m.role() == "user").map(Message::text).unwrap_or_default();
            ScriptedTurn::text(format!("Forecast for \"{asked}\": sunny, 21 °C."))
        }))
        .build()?;
    let keys = loom_agent::store::open_api_keys("memory").await?;
    let (_, key) = loom_server::create_key(keys.as_ref(), "travel").await?;
    let settings = A2aSettings {
        descriptions: BTreeMap::from([("forecaster".to_string(), "Tomorrow's weather for a city.".to_string())]),
        ..Default::default()
    };
    let state =
        AppState::new(BTreeMap::from([("forecaster".to_string(), forecaster)]), Some(keys), None).with_a2a(settings);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = Server::new(state, Default::default());
    tokio::spawn(server.serve_on(listener));

    // The calling side: a planner whose tool is the remote forecaster.
    let remote = capability::a2a(&base).bearer(key);
    let card = remote.connect().await?;
    println!("remote agent: {} ({}) at {}", card.name, card.description, card.endpoint);
    let planner = Agent::builder()
        .name("planner")
        .model(FnModel::new("plan-model", |req| match req.messages.last() {
            Some(Message::Tool { content, .. }) => ScriptedTurn::text(format!("Pack sunglasses. ({content})")),
            _ => ScriptedTurn::tool_call("forecaster", serde_json::json!({"message": "Lisbon tomorrow"})),
        }))
        .capability(remote)
        .build()?;
    let session = planner.session(SessionConfig::default());
    let result = session.start("Plan my day in Lisbon").result().await;
    println!("{}: {}", result.state.as_str(), result.output);
    if result.state != RunState::Completed {
        return Err(format!("the planner's run ended {}", result.state.as_str()).into());
    }
    Ok(())
}
