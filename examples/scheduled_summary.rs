//! A scheduled daily summary, offline: a cron schedule sends the session a signal every weekday at
//! 09:00 UTC, and a worker turns due occurrences into runs. Here a one-shot schedule that is
//! already due stands in for this morning's occurrence, so the example finishes at once.
//!
//! With a journal (`.journal("sqlite:./loom.db")` or `postgres://…`) schedules are durable, and
//! several workers may share the database: each occurrence fires once (a lease row per
//! occurrence). The command line does the same: `loom schedule add --cron '0 9 * * MON-FRI' …`
//! and `loom worker --until-idle`.

use std::time::Duration;

use loom_agent::prelude::*;
use loom_agent::signal::Schedule;

#[tokio::main]
async fn main() -> Result<(), loom_agent::Error> {
    let dir = std::env::temp_dir().join(format!("loom-scheduled-summary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| loom_agent::Error::Config(e.to_string()))?;
    let journal = format!("sqlite:{}", dir.join("loom.db").display());
    let agent = Agent::builder()
        .instructions("Summarize yesterday's activity for the team.")
        .model("echo")
        .journal(journal.as_str())
        .build()?;

    let daily = agent.schedule(Schedule::cron("0 9 * * MON-FRI"), "team-daily", "Write the daily summary.").await?;
    println!("daily summary scheduled; next at {:?}", daily.next_at);
    let now = agent.schedule(Schedule::once(chrono::Utc::now()), "team-daily", "Write the daily summary.").await?;

    let report = agent.worker().grace(Duration::from_secs(60)).run_until_idle().await?;
    println!("fired {} occurrence(s), {} run(s)", report.fired, report.runs.len());
    for run in &report.runs {
        println!("{} [{}] {}", run.session_id, run.state, run.output);
    }
    assert_eq!(report.fired, 1, "only the one-shot was due");

    agent.remove_schedule(&now.id).await?;
    for s in agent.schedules().await? {
        println!("still scheduled: {} ({:?})", s.input, s.schedule);
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
