//! `loom signal`, `loom schedule add|list|remove` and `loom worker`: signals into a session's
//! store, schedules, and the worker that handles them (a run per signal, by the agent's attention
//! policy) with the agent `loom run` would build.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use loom_agent::signal::{MissedPolicy, RuntimeSignal, Schedule, ScheduleRecord, SignalStore, Urgency};
use loom_agent::store::{SessionKey, open_journal};
use loom_agent::{Agent, RunState};
use serde_json::json;

use crate::cli::{AgentArgs, JOURNAL_ENV};
use crate::run::{Exit, async_runtime, build_agent, describe, redact, report};

/// How urgent a signal is.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum UrgencyArg {
    /// Observed: the session's next run sees it.
    Low,
    /// A run, in turn.
    Normal,
    /// A run, in turn.
    High,
    /// Interrupts the session's running run.
    Critical,
}

impl From<UrgencyArg> for Urgency {
    fn from(u: UrgencyArg) -> Self {
        match u {
            UrgencyArg::Low => Urgency::Low,
            UrgencyArg::Normal => Urgency::Normal,
            UrgencyArg::High => Urgency::High,
            UrgencyArg::Critical => Urgency::Critical,
        }
    }
}

/// The options of `loom signal`.
#[derive(Debug, Args)]
pub struct SignalArgs {
    /// The store: "sqlite:PATH" or "postgres://USER@HOST:PORT/DB" (the journal's database).
    #[arg(long, value_name = "URL", env = JOURNAL_ENV, hide_env_values = true)]
    pub journal: String,
    /// The target session.
    #[arg(long, value_name = "ID")]
    pub session: String,
    /// The session's user (a session belongs to its user).
    #[arg(long, value_name = "ID")]
    pub user: Option<String>,
    /// How urgent it is: low (observed), normal and high (a run), critical (interrupts).
    #[arg(long, value_enum, default_value = "normal")]
    pub urgency: UrgencyArg,
    /// Where it comes from.
    #[arg(long, default_value = "cli")]
    pub source: String,
    /// Its type.
    #[arg(long = "type", value_name = "TYPE", default_value = "message")]
    pub kind: String,
    /// A key that makes a second signal with the same key in the session a duplicate: it is
    /// dropped quietly (exit 0).
    #[arg(long, value_name = "KEY")]
    pub dedupe_key: Option<String>,
    /// The signal's text.
    pub text: String,
}

/// The options of `loom schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

/// The subcommands of `loom schedule`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Add a schedule: at each occurrence the worker sends TEXT to the session as a signal.
    #[command(
        after_help = "Examples:\n  loom schedule add --journal sqlite:./loom.db --session ops --cron '0 9 * * MON-FRI' \
                            'Write the daily summary'\n  loom schedule add --journal sqlite:./loom.db --session ops --every 1h 'Check the queue'"
    )]
    Add {
        /// The store.
        #[arg(long, value_name = "URL", env = JOURNAL_ENV, hide_env_values = true)]
        journal: String,
        /// The target session.
        #[arg(long, value_name = "ID")]
        session: String,
        /// The session's user.
        #[arg(long, value_name = "ID")]
        user: Option<String>,
        /// A cron expression, in UTC ("0 9 * * MON-FRI").
        #[arg(long, value_name = "EXPR", group = "when")]
        cron: Option<String>,
        /// A fixed interval ("30s", "15m", "1h", "1d").
        #[arg(long, value_name = "DURATION", group = "when", value_parser = humantime::parse_duration)]
        every: Option<Duration>,
        /// Once, at an RFC 3339 time ("2026-12-24T09:00:00Z").
        #[arg(long, value_name = "TIME", group = "when")]
        at: Option<DateTime<Utc>>,
        /// The urgency of its signals.
        #[arg(long, value_enum, default_value = "normal")]
        urgency: UrgencyArg,
        /// Fire once for occurrences missed while no worker ran (default: skip them).
        #[arg(long)]
        run_missed: bool,
        /// The signals' text.
        text: String,
    },
    /// List the schedules.
    List {
        /// The store.
        #[arg(long, value_name = "URL", env = JOURNAL_ENV, hide_env_values = true)]
        journal: String,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Remove a schedule (exit 1 when there is none with that id).
    Remove {
        /// The store.
        #[arg(long, value_name = "URL", env = JOURNAL_ENV, hide_env_values = true)]
        journal: String,
        /// The schedule's id.
        id: String,
    },
}

/// The options of `loom worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The agent (the same flags as `loom run`; --journal is required: the worker handles its
    /// database's signals and schedules).
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Stop once nothing is queued and no schedule is due (exit 0), instead of running until
    /// interrupted.
    #[arg(long)]
    pub until_idle: bool,
    /// How late (seconds) an occurrence may be and still fire; later ones are missed.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub grace: u64,
    /// Print each run as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Claim and run the queued runs of the agents of this configuration (`[server] execution =
    /// "queue"` in `loom serve`), on its journal's database, until interrupted; instead of
    /// handling signals and schedules. Any number of workers may share the database.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// With --config: how many runs to drive at once (default: the file's
    /// [server] worker_concurrency, else 64).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
}

/// The signal store in the database at `url` (a durable one: "memory" would lose the signal).
fn store(url: &str) -> Result<std::sync::Arc<dyn SignalStore>, Exit> {
    let usage = |why: String| {
        report(&format!("error: --journal {}: {why}", redact(url)));
        Exit::Usage
    };
    let slot = open_journal(url).map_err(|e| usage(describe(&e)))?;
    slot.journal.signal_store().ok_or_else(|| usage("this journal keeps no signals; use sqlite: or postgres://".into()))
}

/// Runs `loom signal`.
pub fn signal(args: SignalArgs) -> Exit {
    let runtime = match async_runtime() {
        Ok(r) => r,
        Err(exit) => return exit,
    };
    let store = match store(&args.journal) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    if args.user.as_deref() == Some("") {
        report("error: --user is empty; omit it for no user");
        return Exit::Usage;
    }
    let mut signal = RuntimeSignal::create(args.text, args.source, args.kind, args.urgency.into());
    if let Some(key) = args.dedupe_key {
        signal = signal.dedupe_key(key);
    }
    let key = SessionKey::scoped(args.user.as_deref(), &args.session);
    match runtime.block_on(store.append(key, &signal, None)) {
        Ok(true) => {
            println!("{}", signal.id);
            Exit::Completed
        }
        Ok(false) => {
            tracing::info!("duplicate signal dropped");
            Exit::Completed
        }
        Err(e) => {
            report(&format!("error: {}", describe(&e)));
            Exit::Failed
        }
    }
}

/// Runs `loom schedule …`.
pub fn schedule(args: ScheduleArgs) -> Exit {
    let runtime = match async_runtime() {
        Ok(r) => r,
        Err(exit) => return exit,
    };
    match args.command {
        ScheduleCommand::Add { journal, session, user, cron, every, at, urgency, run_missed, text } => {
            let when = match (cron, every, at) {
                (Some(expr), _, _) => Schedule::cron(expr),
                (_, Some(every), _) => Schedule::every(every),
                (_, _, Some(at)) => Schedule::once(at),
                _ => {
                    report("error: say when: --cron EXPR, --every DURATION or --at TIME");
                    return Exit::Usage;
                }
            };
            let agent = match Agent::builder().model("echo").journal(journal.as_str()).build() {
                Ok(a) => a,
                Err(e) => {
                    report(&format!("error: --journal {}: {}", redact(&journal), describe(&e)));
                    return Exit::Usage;
                }
            };
            let mut record = ScheduleRecord::new(when, session, text).urgency(urgency.into());
            if run_missed {
                record = record.missed(MissedPolicy::RunOnce);
            }
            if let Some(user) = user {
                record = record.user(user);
            }
            match runtime.block_on(agent.add_schedule(record)) {
                Ok(record) => {
                    let next = record.next_at.map_or("never".to_string(), |t| t.to_rfc3339());
                    println!("{}", record.id);
                    report(&format!("next occurrence: {next}"));
                    Exit::Completed
                }
                Err(e) => {
                    report(&format!("error: {}", describe(&e)));
                    Exit::Usage
                }
            }
        }
        ScheduleCommand::List { journal, json } => {
            let store = match store(&journal) {
                Ok(s) => s,
                Err(exit) => return exit,
            };
            match runtime.block_on(store.schedules()) {
                Ok(all) => {
                    for s in all {
                        if json {
                            println!("{}", serde_json::to_string(&s).unwrap_or_default());
                        } else {
                            let when = match &s.schedule {
                                Schedule::Cron { expr } => format!("cron '{expr}'"),
                                Schedule::Every { every_ms } => {
                                    format!("every {}", humantime::format_duration(Duration::from_millis(*every_ms)))
                                }
                                Schedule::Once { at } => format!("once at {}", at.to_rfc3339()),
                            };
                            let next = s.next_at.map_or("done".to_string(), |t| t.to_rfc3339());
                            let user = s.user_id.as_deref().map(|u| format!(" (user {u})")).unwrap_or_default();
                            println!("{}  {when}  session {}{user}  next {next}  {}", s.id, s.session_id, s.input);
                        }
                    }
                    Exit::Completed
                }
                Err(e) => {
                    report(&format!("error: {}", describe(&e)));
                    Exit::Failed
                }
            }
        }
        ScheduleCommand::Remove { journal, id } => {
            let store = match store(&journal) {
                Ok(s) => s,
                Err(exit) => return exit,
            };
            match runtime.block_on(store.remove_schedule(&id)) {
                Ok(true) => Exit::Completed,
                Ok(false) => {
                    report(&format!("error: no schedule `{id}`"));
                    Exit::Failed
                }
                Err(e) => {
                    report(&format!("error: {}", describe(&e)));
                    Exit::Failed
                }
            }
        }
    }
}

/// Runs `loom worker`.
pub fn worker(args: WorkerArgs) -> Exit {
    if let Some(config) = &args.config {
        return crate::queue_cmd::worker(config, args.concurrency);
    }
    if args.agent.journal.is_none() {
        report(&format!("error: loom worker needs --journal URL (or ${JOURNAL_ENV}): the database it works for"));
        return Exit::Usage;
    }
    let runtime = match async_runtime() {
        Ok(r) => r,
        Err(exit) => return exit,
    };
    let agent = match build_agent(args.agent) {
        Ok(a) => a,
        Err(message) => {
            report(&format!("error: {message}"));
            return Exit::Usage;
        }
    };
    let worker = agent.worker().grace(Duration::from_secs(args.grace));
    let report_ = runtime.block_on(async {
        if args.until_idle {
            worker.run_until_idle().await
        } else {
            Ok(worker
                .run(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await)
        }
    });
    match report_ {
        Ok(done) => {
            let mut failed = false;
            for run in &done.runs {
                failed |= run.state != RunState::Completed;
                if args.json {
                    let line = json!({"run_id": run.run_id, "session_id": run.session_id, "user_id": run.user_id,
                                      "state": run.state, "output": run.output, "error": run.error});
                    println!("{line}");
                } else {
                    println!("{} {} [{}] {}", run.session_id, run.run_id, run.state, run.output);
                }
            }
            report(&format!(
                "worker: {} occurrence(s) fired, {} skipped, {} signal(s) handled, {} run(s)",
                done.fired,
                done.skipped,
                done.signals,
                done.runs.len()
            ));
            if failed { Exit::Failed } else { Exit::Completed }
        }
        Err(e) => {
            report(&format!("error: {}", describe(&e)));
            Exit::Failed
        }
    }
}
