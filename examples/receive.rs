//! Signals: events from outside a run, addressed to a session, offline (the echo model answers).
//!
//! Mirrors the seed snippet:
//!
//! ```python
//! slack = SignalAdapter(source="slack", type="message", summary=lambda e: f"{e['user']}: {e['text']}")
//! await agent.receive(event, adapter=slack, session_id="support")
//! ```
//!
//! The signal is stored in the session's signal store first (the journal's database, when the
//! agent has one), duplicates dropped by their dedupe key; then the attention policy decides. By
//! default: low urgency is observed (the next run sees it as context), normal and high start a run
//! with the signal as input, critical interrupts the running run.

use loom_agent::prelude::*;
use loom_agent::signal::{Attention, RuntimeSignal, SignalAdapter, Urgency};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    let agent = Agent::builder().instructions("You triage the support channel.").model("echo").build()?;

    // A Slack-shaped event and the adapter that turns it into a signal.
    let slack = SignalAdapter::new("slack", "message", |e: &Value| {
        format!("{} in #{}: {}", text(e, "user"), text(e, "channel"), text(e, "text"))
    })
    .dedupe_key(|e| e["event_ts"].as_str().map(str::to_string))
    .urgency(|e| if text(e, "text").contains("outage") { Urgency::Critical } else { Urgency::Normal });
    let event = json!({
        "type": "message", "user": "U024BE7LH", "channel": "support",
        "text": "Can someone look at ticket 4312?", "event_ts": "1712345678.000100"
    });

    let receipt = agent.receive(event.clone(), Some(&slack), "support").await?;
    println!("attention: {:?}", receipt.attention);
    if let Some(run) = receipt.run {
        println!("run: {}", run.result().await.output);
    }
    // Slack retries deliveries: the same event is a duplicate, dropped.
    let again = agent.receive(event, Some(&slack), "support").await?;
    assert!(again.duplicate);

    // A low-urgency signal is only observed: the session's next run gets it as context.
    let note = RuntimeSignal::create("The on-call rota changed to Ana.", "pagerduty", "rota", Urgency::Low);
    let session = agent.session(SessionConfig::new("support"));
    assert_eq!(session.receive(note, None).await?.attention, Some(Attention::Observe));
    let next = session.run("Who is on call?").await?;
    println!(
        "next run saw {} signal(s) as context",
        next.events.iter().filter(|e| e.type_name() == "signal.handled").count()
    );

    for record in session.signals().await? {
        println!("{:<9} {:<8} {}", format!("{:?}", record.status), record.signal.urgency, record.signal.text);
    }
    Ok(())
}

fn text<'a>(event: &'a Value, key: &str) -> &'a str {
    event[key].as_str().unwrap_or("")
}
