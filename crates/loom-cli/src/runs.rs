//! `loom runs list|show|resume`: journaled runs (written by `loom run --journal URL`).

use std::io::{self, Write};

use loom_agent::ResumeOptions;
use loom_agent::store::{JournalEntry, JournalSlot, JournaledRun, RecordedModel, RunFilter, SessionKey, open_journal};
use loom_agent::{Error, Event, Message};
use serde_json::{Value, json};

use crate::cli::{AgentArgs, JOURNAL_ENV, RunsArgs, RunsCommand};
use crate::render::HumanView;
use crate::run::{Exit, View, async_runtime, build_agent, describe, redact, report, stream_run};

/// How much of a summary, payload or message a line shows.
const WIDTH: usize = 100;

/// Runs `loom runs …` to the end.
pub fn main(args: RunsArgs) -> Exit {
    let runtime = match async_runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    match args.command {
        RunsCommand::List { journal, session, user, unfinished, limit, json } => {
            let filter = RunFilter {
                session_id: session,
                user_id: user,
                unfinished,
                limit: limit.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)),
                ..RunFilter::default()
            };
            match open(&journal.journal) {
                Ok(slot) => runtime.block_on(list(&slot, &filter, json)),
                Err(exit) => exit,
            }
        }
        RunsCommand::Show { run_id, journal, json } => match open(&journal.journal) {
            Ok(slot) => runtime.block_on(show(&slot, &run_id, json)),
            Err(exit) => exit,
        },
        RunsCommand::Resume { run_id, agent, json, wait } => resume(&runtime, agent, &run_id, json, wait),
        RunsCommand::Prune { journal, older_than, json } => match open(&journal.journal) {
            Ok(slot) => runtime.block_on(prune(&slot, older_than, json)),
            Err(exit) => exit,
        },
    }
}

/// `loom runs prune`: deletes the runs that finished more than `older_than` ago.
async fn prune(slot: &JournalSlot, older_than: std::time::Duration, json: bool) -> Exit {
    let age = chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
    let cut = chrono::Utc::now().checked_sub_signed(age).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    match slot.journal.prune(cut).await {
        Ok(r) => {
            if json {
                println!("{}", json!({"runs": r.runs, "events": r.events, "entries": r.entries, "before": cut}));
            } else {
                println!(
                    "pruned {} run(s), {} event(s), {} journal entr{} (finished before {})",
                    r.runs,
                    r.events,
                    r.entries,
                    if r.entries == 1 { "y" } else { "ies" },
                    cut.to_rfc3339()
                );
            }
            Exit::Completed
        }
        Err(e) => {
            report(&format!("error: {}", describe(&e)));
            Exit::Usage
        }
    }
}

/// Opens the journal named by `--journal` / `$LOOM_JOURNAL` to read it: a SQLite journal must
/// exist already (reading never creates one).
fn open(url: &str) -> Result<JournalSlot, Exit> {
    must_exist(url)?;
    open_journal(url).map_err(|e| {
        report(&format!("error: --journal {}: {}", redact(url), describe(&e)));
        Exit::Usage
    })
}

/// Fails (exit 2) when `url` names a SQLite database that does not exist: a mistyped path would
/// otherwise create an empty journal.
fn must_exist(url: &str) -> Result<(), Exit> {
    let Some(rest) = url.trim().strip_prefix("sqlite:") else { return Ok(()) };
    let path = rest.split_once('?').map_or(rest, |(path, _)| path);
    let path = path.strip_prefix("//").unwrap_or(path);
    if path.is_empty() || path == ":memory:" || std::path::Path::new(path).exists() {
        return Ok(());
    }
    report(&format!(
        "error: --journal {}: no journal at {path} (`loom runs` never creates one; check the path, or run \
         `loom run --journal {}` first)",
        redact(url),
        redact(url)
    ));
    Err(Exit::Usage)
}

/// Writes the lines to stdout; a closed pipe is not an error worth reporting.
fn print(lines: &[String]) -> Exit {
    let mut out = io::stdout().lock();
    let written = lines.iter().try_for_each(|line| writeln!(out, "{line}")).and_then(|()| out.flush());
    match written {
        Ok(()) => Exit::Completed,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Exit::Completed,
        Err(e) => {
            report(&format!("error: cannot write to stdout: {e}"));
            Exit::Failed
        }
    }
}

/// `loom runs list`: a table, or one JSON object per line.
async fn list(slot: &JournalSlot, filter: &RunFilter, json: bool) -> Exit {
    let runs = match slot.journal.list(filter).await {
        Ok(runs) => runs,
        Err(e) => {
            report(&format!("error: cannot list the journal's runs: {e}"));
            return Exit::Usage;
        }
    };
    if json {
        let lines: Result<Vec<String>, _> = runs.iter().map(serde_json::to_string).collect();
        return match lines {
            Ok(lines) => print(&lines),
            Err(e) => {
                report(&format!("error: {e}"));
                Exit::Failed
            }
        };
    }
    if runs.is_empty() {
        report("no journaled runs");
        return Exit::Completed;
    }
    let header = ["RUN", "SESSION", "USER", "STATE", "FINISHED", "STARTED", "ENTRIES"].map(String::from);
    let mut rows = vec![header];
    for r in &runs {
        rows.push([
            r.run_id.clone(),
            r.session_id.clone(),
            r.user_id.clone().unwrap_or_else(|| "-".to_string()),
            r.state.to_string(),
            if r.finished { "yes" } else { "no" }.to_string(),
            r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            r.entries.to_string(),
        ]);
    }
    print(&table(&rows))
}

/// Left-aligned columns, two spaces apart.
fn table<const N: usize>(rows: &[[String; N]]) -> Vec<String> {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect()
}

/// `loom runs show RUN_ID`.
async fn show(slot: &JournalSlot, run_id: &str, json: bool) -> Exit {
    let stored = match slot.journal.load(run_id).await {
        Ok(Some(stored)) => stored,
        Ok(None) => {
            report(&format!("error: run {run_id} not found in the journal (see `loom runs list`)"));
            return Exit::Failed;
        }
        Err(e) => {
            report(&format!("error: cannot load run {run_id}: {e}"));
            return Exit::Failed;
        }
    };
    let transcript = match &slot.session_store {
        Some(store) => match store
            .get_run(SessionKey::scoped(stored.record.user_id.as_deref(), &stored.record.session_id), run_id)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                report(&format!("warning: cannot load the transcript of run {run_id}: {e}"));
                None
            }
        },
        None => None,
    };
    let messages = transcript.as_ref().map(|t| t.messages.as_slice());
    let mut tree = Vec::new();
    child_tree(slot, run_id, 1, &mut tree).await;
    if json {
        let value = json!({
            "record": stored.record,
            "state": stored.state,
            "finished": stored.finished,
            "lease_owner": stored.lease_owner,
            "lease_expires_at": stored.lease_expires_at,
            "entries": stored.entries,
            "events": stored.events,
            "transcript": transcript.as_deref(),
            "children": tree.iter().map(|(depth, c)| json!({"depth": depth, "run": c})).collect::<Vec<_>>(),
        });
        return print(&[value.to_string()]);
    }
    let mut lines = show_lines(&stored, messages);
    if !tree.is_empty() {
        lines.push(String::new());
        lines.push(format!("children ({})", tree.len()));
        for (depth, c) in &tree {
            let indent = "  ".repeat(*depth);
            let state = format!("{}{}", c.state, if c.finished { "" } else { " (unfinished)" });
            lines.push(format!("{indent}{}  {state}  {} entries", c.run_id, c.entries));
        }
    }
    print(&lines)
}

/// The run's child runs (agents used as tools, a supervisor's workers, a workflow's agent
/// nodes), depth first, oldest first, with their depth below the run (at most 8 levels).
async fn child_tree(
    slot: &JournalSlot,
    run_id: &str,
    depth: usize,
    out: &mut Vec<(usize, loom_agent::store::JournalRunSummary)>,
) {
    if depth > 8 {
        return;
    }
    let filter = RunFilter { parent_run_id: Some(run_id.to_string()), ..RunFilter::default() };
    let mut children = match slot.journal.list(&filter).await {
        Ok(children) => children,
        Err(e) => {
            report(&format!("warning: cannot list the child runs of {run_id}: {e}"));
            return;
        }
    };
    children.reverse();
    for child in children {
        let id = child.run_id.clone();
        out.push((depth, child));
        Box::pin(child_tree(slot, &id, depth + 1, out)).await;
    }
}

/// The human view of a journaled run.
fn show_lines(stored: &JournaledRun, messages: Option<&[Message]>) -> Vec<String> {
    let record = &stored.record;
    let mut lines = vec![
        format!("run       {}", record.run_id),
        format!("session   {}", record.session_id),
        format!("user      {}", record.user_id.as_deref().unwrap_or("-")),
        format!("state     {}{}", stored.state, if stored.finished { " (finished)" } else { " (unfinished)" }),
        format!("started   {}", record.started_at.to_rfc3339()),
        format!("model     {}", record.model.as_ref().map_or("- (not recorded)".to_string(), |m| m.to_string())),
        format!("arch      {}", record.architecture.as_deref().unwrap_or("- (not recorded)")),
        format!("input     {}", short(record.input.summary())),
    ];
    if let Some(parent) = &record.parent_run_id {
        lines.push(format!("parent    {parent}"));
    }
    if let Some(owner) = &stored.lease_owner {
        let until = stored.lease_expires_at.map(|t| t.to_rfc3339()).unwrap_or_default();
        lines.push(format!("lease     {owner} until {until}"));
    }
    lines.push(String::new());
    let n = stored.entries.len();
    lines.push(format!("journal ({n} {})", if n == 1 { "entry" } else { "entries" }));
    for entry in &stored.entries {
        lines.push(format!("  {:<18} {}", entry.type_name(), short(&entry_summary(entry))));
    }
    lines.push(String::new());
    lines.push(format!("events ({})", stored.events.len()));
    for event in &stored.events {
        lines.push(format!("  {:>4}  {:<20} {}", event.seq, event.type_name(), short(&payload(event))));
    }
    lines.push(String::new());
    match messages {
        Some(messages) => {
            lines.push(format!("transcript ({} messages)", messages.len()));
            for m in messages {
                let text = match m {
                    Message::Assistant { tool_calls, content, .. } if !tool_calls.is_empty() => {
                        let names: Vec<&str> = tool_calls.iter().map(|c| c.name.as_str()).collect();
                        format!("{content} [calls: {}]", names.join(", "))
                    }
                    Message::Tool { name, content, is_error, .. } => {
                        format!("{name}{}: {content}", if *is_error { " (error)" } else { "" })
                    }
                    other => other.text(),
                };
                lines.push(format!("  {:<9} {}", m.role(), short(text.trim())));
            }
        }
        None => {
            lines.push("transcript (not stored: the run has not finished, or the journal keeps no sessions)".into())
        }
    }
    lines
}

/// One line about a journal entry.
fn entry_summary(entry: &JournalEntry) -> String {
    match entry {
        JournalEntry::ModelResult { turn, response } => {
            let mut s = format!("turn {turn}: {:?}", response.text);
            if !response.tool_calls.is_empty() {
                let names: Vec<&str> = response.tool_calls.iter().map(|c| c.name.as_str()).collect();
                s.push_str(&format!(" calls {}", names.join(", ")));
            }
            s
        }
        JournalEntry::ToolIntent { turn, call, arguments } => {
            format!("turn {turn}: {} {} {}", call.id, call.name, arguments)
        }
        JournalEntry::ToolResult { turn, call_id, output, is_error, .. } => {
            let status = if *is_error { "error" } else { "ok" };
            format!("turn {turn}: {call_id} {status}: {output:?}")
        }
        JournalEntry::ApprovalPending { turn, call, reason } => {
            format!("turn {turn}: {} {} waits: {reason}", call.id, call.name)
        }
        JournalEntry::ApprovalDecision { call_id, approval } => format!("{call_id}: {approval:?}"),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// An event's payload as compact JSON.
fn payload(event: &Event) -> String {
    match serde_json::to_value(event) {
        Ok(Value::Object(mut map)) => map.remove("payload").map(|p| p.to_string()).unwrap_or_default(),
        _ => String::new(),
    }
}

/// The first line of `text`, cut to [`WIDTH`] characters.
fn short(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    let mut out: String = first.chars().take(WIDTH).collect();
    if out.len() < first.len() || text.lines().nth(1).is_some() {
        out.push('…');
    }
    out
}

/// `loom runs resume RUN_ID`: continues the run and shows the rest of it as `loom run` does.
fn resume(runtime: &tokio::runtime::Runtime, mut args: AgentArgs, run_id: &str, json: bool, wait: bool) -> Exit {
    let Some(url) = args.journal.clone() else {
        report(&format!("error: `loom runs resume` needs the run's journal: --journal URL or ${JOURNAL_ENV}"));
        return Exit::Usage;
    };
    if let Err(exit) = must_exist(&url) {
        return exit;
    }
    // The model the run started on: used unless --model overrides it.
    let Before { model: recorded, shown: skip, stream_text } = match runtime.block_on(before_resume(&url, run_id)) {
        Ok(before) => before,
        Err(exit) => return exit,
    };
    let explicit = args.model.is_some();
    if !explicit {
        match recorded.as_ref().and_then(|m| m.spec.clone().map(|spec| (spec, m.base_url.clone()))) {
            Some((spec, base_url)) => {
                report(&format!("resuming on the run's model {spec} (--model overrides it)"));
                args.model = Some(spec);
                if args.base_url.is_none() {
                    args.base_url = base_url;
                }
            }
            None => {
                let what = recorded
                    .as_ref()
                    .map_or("no model".to_string(), |m| format!("the model {m}, which no model string builds"));
                report(&format!(
                    "error: run {run_id}'s journal records {what}; say which model to resume on with --model"
                ));
                return Exit::Usage;
            }
        }
    }
    let agent = match build_agent(args) {
        Ok(agent) => agent,
        Err(message) => {
            report(&format!("error: {message}"));
            return Exit::Usage;
        }
    };
    runtime.block_on(async {
        // What the run already showed (`skip` events, read above) is not shown again.
        let current = RecordedModel::of(agent.model().as_ref());
        let mut options = ResumeOptions::default();
        if let Some(recorded) = recorded.as_ref().filter(|r| !r.same_model(&current)) {
            // Only --model gets here: the switch is the user's choice, and it is said out loud.
            report(&format!("note: run {run_id} started on {recorded}; resuming on {current} as --model asks"));
            options = options.allow_model_change();
        }
        let run = loop {
            match agent.resume_with(run_id, options.clone()).await {
                Ok(run) => break run,
                Err(Error::LeaseHeld { until, .. }) if wait => countdown(&until).await,
                Err(e) => {
                    report(&format!("error: cannot resume: {}", resume_error(&e, run_id)));
                    return Exit::Failed;
                }
            }
        };
        report(&format!("resuming run {} in session {}", run.id(), run.session_id()));
        let view = if json { View::Json } else { View::Human(HumanView::new(stream_text)) };
        stream_run(run, skip, view).await
    })
}

/// What `resume` needs to know of a journaled run before the agent is built: the model it records,
/// how many events it has shown already, and whether its text streams (no output schema).
struct Before {
    model: Option<RecordedModel>,
    shown: usize,
    stream_text: bool,
}

/// Reads [`Before`] from the journal (one load).
async fn before_resume(url: &str, run_id: &str) -> Result<Before, Exit> {
    let slot = open_journal(url).map_err(|e| {
        report(&format!("error: --journal {}: {}", redact(url), describe(&e)));
        Exit::Usage
    })?;
    match slot.journal.load(run_id).await {
        Ok(Some(stored)) => Ok(Before {
            shown: stored.events.len(),
            stream_text: stored.record.output_schema.is_none(),
            model: stored.record.model,
        }),
        Ok(None) => {
            report(&format!("error: cannot resume: {}", resume_error(&Error::RunNotFound(run_id.to_string()), run_id)));
            Err(Exit::Failed)
        }
        Err(e) => {
            report(&format!("error: cannot resume: {}", resume_error(&e, run_id)));
            Err(Exit::Failed)
        }
    }
}

/// Waits until `until` (RFC 3339), counting down on stderr once a second.
async fn countdown(until: &str) {
    let end = chrono::DateTime::parse_from_rfc3339(until).map(|t| t.with_timezone(&chrono::Utc)).ok();
    loop {
        let left = end.map_or(0, |end| (end - chrono::Utc::now()).num_milliseconds());
        if left <= 0 {
            let _ = write!(io::stderr(), "\r\x1b[K");
            return;
        }
        let _ = write!(
            io::stderr(),
            "\rwaiting for another process's lease on the run to expire: {}s ",
            (left + 999) / 1000
        );
        let _ = io::stderr().flush();
        tokio::time::sleep(std::time::Duration::from_millis(left.clamp(1, 1000) as u64)).await;
    }
}

/// Why a run cannot be resumed, with what to do about it.
fn resume_error(err: &Error, run_id: &str) -> String {
    match err {
        Error::RunNotFound(_) => format!("run {run_id} not found in the journal (see `loom runs list`)"),
        Error::RunFinished { state, .. } => {
            format!("run {run_id} has already finished ({state}); see it with `loom runs show {run_id}`")
        }
        Error::LeaseHeld { .. } => format!("{err}; try again once it expires, or wait for it with --wait"),
        other => describe(other),
    }
}
