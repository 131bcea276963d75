//! Crash tests for multi-agent runs, after the crash harness of crash.rs: a supervisor run (its
//! workers are child runs) or a workflow run (its nodes are journal boundaries) runs in a child
//! process (this test binary, re-executed) on a SQLite journal (and, with `LOOM_TEST_POSTGRES_URL`,
//! a PostgreSQL one); the child stops at a journal boundary and is killed with SIGKILL; this
//! process resumes the run and checks that completed children and nodes did not run again, that
//! the unfinished ones did, and that the result is the uninterrupted one. Scenarios: a supervisor
//! calling its workers one after another and in parallel (killed after one of two finished); a
//! linear workflow with an agent node; a fan-out of two sub-workflow branches killed with one
//! branch done; a loop killed in its second visit; a sub-workflow node killed after its first
//! inner node. Also: a run started under `plan_execute` resumes under `plan_execute` on an agent
//! configured with another architecture.
#![cfg(all(unix, feature = "sqlite"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use loom_agent::message::Message;
use loom_agent::model::{FnModel, ScriptedTurn};
use loom_agent::store::{
    Journal, JournalEntry, JournalRunSummary, JournaledRun, Lease, RunFilter, RunRecord, open_journal,
};
use loom_agent::team::Supervisor;
use loom_agent::workflow::{END, Workflow, WorkflowAgent};
use loom_agent::{Agent, Error, Event, RunRequest, RunState};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Appends a line to `dir/name.calls`: one per execution of something that must not repeat.
fn count(dir: &Path, name: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{name}.calls"))).unwrap();
    writeln!(f, "x").unwrap();
    f.sync_all().unwrap();
}

fn calls(dir: &Path, name: &str) -> usize {
    std::fs::read_to_string(dir.join(format!("{name}.calls"))).map(|s| s.lines().count()).unwrap_or(0)
}

/// A worker whose model answers `answer` and counts its calls.
fn worker(dir: &Path, name: &str, answer: &str) -> Agent {
    let (dir, key, answer) = (dir.to_path_buf(), name.to_string(), answer.to_string());
    let model = FnModel::new(format!("worker-{name}"), move |_req| {
        count(&dir, &key);
        ScriptedTurn::text(answer.clone())
    });
    // No journal of its own: a child run is journaled in its parent's journal.
    Agent::builder().name(name).model(model).lease_ttl(Duration::from_millis(300)).build().unwrap()
}

/// The coordinator calls worker `a`, then worker `b`, then combines their answers. Its model
/// decides from the conversation only, so a resumed process takes the same path.
fn supervisor(dir: &Path, journal: Arc<dyn Journal>) -> Supervisor {
    let d = dir.to_path_buf();
    let model = FnModel::new("coordinator", move |req| {
        count(&d, "coordinator");
        let results: Vec<String> = req
            .messages
            .iter()
            .filter_map(|m| match m {
                Message::Tool { content, .. } => Some(content.clone()),
                _ => None,
            })
            .collect();
        match results.len() {
            0 => ScriptedTurn::tool_call("a", json!({"input": "task a"})),
            1 => ScriptedTurn::tool_call("b", json!({"input": "task b"})),
            _ => ScriptedTurn::text(format!("combined: {}", results.join(", "))),
        }
    });
    Supervisor::builder(
        Agent::builder().name("lead").model(model).journal(journal).lease_ttl(Duration::from_millis(300)),
    )
    .worker("a", "Does a.", worker(dir, "a", "A result"))
    .worker("b", "Does b.", worker(dir, "b", "B result"))
    .build()
    .unwrap()
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Job {
    steps: Vec<String>,
}

/// `one` (a function) → `ask` (an agent) → `two` (a function).
fn workflow(dir: &Path, journal: Arc<dyn Journal>) -> WorkflowAgent<Job> {
    let (d1, d2) = (dir.to_path_buf(), dir.to_path_buf());
    Workflow::<Job>::new("job")
        .node("one", move |mut j: Job| {
            count(&d1, "one");
            j.steps.push("one".into());
            async move { Ok(j) }
        })
        .agent_node(
            "ask",
            worker(dir, "ask", "asked"),
            |j: &Job| format!("after {:?}", j.steps),
            |mut j, answer| {
                j.steps.push(answer);
                j
            },
        )
        .node("two", move |mut j: Job| {
            count(&d2, "two");
            j.steps.push("two".into());
            async move { Ok(j) }
        })
        .start("one")
        .edge("one", "ask")
        .edge("ask", "two")
        .edge("two", END)
        .into_agent(Agent::builder().name("job").journal(journal).lease_ttl(Duration::from_millis(300)))
        .unwrap()
}

/// Whether this process is the child the test kills (its slow steps wait there, not on resume).
fn in_child() -> bool {
    std::env::var("LOOM_TEAM_CRASH_URL").is_ok()
}

/// The coordinator calls workers `a` and `b` in one turn (in parallel), then combines them;
/// `b` answers slowly in the child, so the kill after `a`'s end finds `b` unfinished.
fn parallel_supervisor(dir: &Path, journal: Arc<dyn Journal>) -> Supervisor {
    let d = dir.to_path_buf();
    let model = FnModel::new("coordinator", move |req| {
        count(&d, "coordinator");
        let results: Vec<String> = req
            .messages
            .iter()
            .filter_map(|m| match m {
                Message::Tool { content, .. } => Some(content.clone()),
                _ => None,
            })
            .collect();
        if results.is_empty() {
            ScriptedTurn::tool_call("a", json!({"input": "task a"})).with_tool_call("b", json!({"input": "task b"}))
        } else {
            ScriptedTurn::text(format!("combined: {}", results.join(", ")))
        }
    });
    let (db, key) = (dir.to_path_buf(), "b".to_string());
    let slow_b = FnModel::new("worker-b", move |_req| {
        count(&db, &key);
        let delay = if in_child() { Duration::from_secs(60) } else { Duration::ZERO };
        ScriptedTurn::text("B result").with_delay(delay)
    });
    let b = Agent::builder().name("b").model(slow_b).lease_ttl(Duration::from_millis(300)).build().unwrap();
    Supervisor::builder(
        Agent::builder().name("lead").model(model).journal(journal).lease_ttl(Duration::from_millis(300)),
    )
    .worker("a", "Does a.", worker(dir, "a", "A result"))
    .worker("b", "Does b.", b)
    .build()
    .unwrap()
}

/// A function node that appends `name` to the steps and counts its execution (when it ends).
fn step(
    dir: &Path,
    name: &'static str,
    slow_in_child: bool,
) -> impl Fn(Job) -> BoxFuture<'static, Result<Job, String>> + Send + Sync + 'static + use<> {
    let dir = dir.to_path_buf();
    move |mut j: Job| {
        let dir = dir.clone();
        Box::pin(async move {
            if slow_in_child && in_child() {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            count(&dir, name);
            j.steps.push(name.into());
            Ok(j)
        })
    }
}

/// The workflow shapes beyond the linear one: `fanout` (two sub-workflow branches `x` = x1 → x2
/// and `y` = y1 → y2, concurrent, joined at `join`; y2 is slow in the child), `loop` (`inc`
/// three times) and `sub` (`pre` → a sub-workflow s1 → s2 → `post`).
fn shaped(dir: &Path, shape: &str, journal: Arc<dyn Journal>) -> WorkflowAgent<Job> {
    let chain = |name: &str, a: &'static str, b: &'static str, slow_b: bool| {
        Workflow::<Job>::new(name)
            .node(a, step(dir, a, false))
            .node(b, step(dir, b, slow_b))
            .start(a)
            .edge(a, b)
            .edge(b, END)
    };
    let wf = match shape {
        "fanout" => Workflow::<Job>::new("fanout")
            .node("start", step(dir, "start", false))
            .workflow_node("x", chain("x", "x1", "x2", false))
            .workflow_node("y", chain("y", "y1", "y2", true))
            .node("join", step(dir, "join", false))
            .start("start")
            .fan_out("start", ["x", "y"], "join", |mut base: Job, branches: Vec<Job>| {
                for b in branches {
                    base.steps.extend(b.steps.into_iter().skip(1));
                }
                base
            })
            .edge("join", END),
        "loop" => {
            let d = dir.to_path_buf();
            Workflow::<Job>::new("loop")
                .node("inc", move |mut j: Job| {
                    let name = format!("inc{}", j.steps.len() + 1);
                    count(&d, &name);
                    j.steps.push(name);
                    async move { Ok(j) }
                })
                .start("inc")
                .branch("inc", ["inc", END], |j: &Job| if j.steps.len() < 3 { "inc".into() } else { END.into() })
        }
        _ => Workflow::<Job>::new("outer")
            .node("pre", step(dir, "pre", false))
            .workflow_node("sub", chain("inner", "s1", "s2", false))
            .node("post", step(dir, "post", false))
            .start("pre")
            .edge("pre", "sub")
            .edge("sub", "post")
            .edge("post", END),
    };
    wf.into_agent(Agent::builder().name(shape).journal(journal).lease_ttl(Duration::from_millis(300))).unwrap()
}

/// Where the child stops: before or after the `nth` call of a journal operation.
struct Stopping {
    inner: Arc<dyn Journal>,
    at: (bool, String, usize),
    seen: Mutex<std::collections::HashMap<String, usize>>,
    /// Once stopped, every operation waits forever (as in a dead process: no renewal either).
    stopped: std::sync::atomic::AtomicBool,
}

impl Stopping {
    fn new(inner: Arc<dyn Journal>, at: &str) -> Self {
        let mut parts = at.split(':');
        let after = parts.next() == Some("after");
        let op = parts.next().unwrap().to_string();
        let nth = parts.next().unwrap().parse().unwrap();
        Stopping { inner, at: (after, op, nth), seen: Mutex::new(Default::default()), stopped: Default::default() }
    }

    async fn check(&self, op: &str, after: bool) {
        if self.stopped.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let n = {
            let mut seen = self.seen.lock().unwrap();
            let n = seen.entry(format!("{op}:{after}")).or_insert(0);
            *n += 1;
            *n
        };
        if self.at.1 == op && self.at.0 == after && self.at.2 == n {
            self.stopped.store(true, Ordering::SeqCst);
            say("STOPPED");
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait::async_trait]
impl Journal for Stopping {
    async fn begin(&self, record: &RunRecord, lease: &Lease, events: &[Event]) -> Result<(), Error> {
        self.check("begin", false).await;
        self.inner.begin(record, lease, events).await?;
        self.check("begin", true).await;
        Ok(())
    }
    async fn append(&self, run_id: &str, lease: &Lease, entry: &JournalEntry, events: &[Event]) -> Result<(), Error> {
        self.check(entry.type_name(), false).await;
        self.inner.append(run_id, lease, entry, events).await?;
        self.check(entry.type_name(), true).await;
        Ok(())
    }
    async fn end(&self, run_id: &str, lease: &Lease, state: RunState, events: &[Event]) -> Result<(), Error> {
        self.check("end", false).await;
        self.inner.end(run_id, lease, state, events).await?;
        self.check("end", true).await;
        Ok(())
    }
    async fn acquire(&self, run_id: &str, lease: &Lease) -> Result<u64, Error> {
        self.inner.acquire(run_id, lease).await
    }
    async fn renew(&self, run_id: &str, lease: &Lease) -> Result<(), Error> {
        self.check("renew", false).await;
        self.inner.renew(run_id, lease).await
    }
    async fn decide(&self, run_id: &str, entry: &JournalEntry) -> Result<(), Error> {
        self.inner.decide(run_id, entry).await
    }
    async fn load(&self, run_id: &str) -> Result<Option<JournaledRun>, Error> {
        self.inner.load(run_id).await
    }
    async fn list(&self, filter: &RunFilter) -> Result<Vec<JournalRunSummary>, Error> {
        self.inner.list(filter).await
    }
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// The child: runs the scenario until the journal stops it. A no-op unless started by a test.
#[test]
fn team_crash_child() {
    let Ok(url) = std::env::var("LOOM_TEAM_CRASH_URL") else { return };
    let scenario = std::env::var("LOOM_TEAM_CRASH_SCENARIO").unwrap();
    let at = std::env::var("LOOM_TEAM_CRASH_AT").unwrap();
    let dir = PathBuf::from(std::env::var("LOOM_TEAM_CRASH_DIR").unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async move {
        let journal: Arc<dyn Journal> = Arc::new(Stopping::new(open_journal(&url).unwrap().journal, &at));
        let run = match scenario.as_str() {
            "supervisor" => supervisor(&dir, journal).agent().start("Do a and b."),
            "parallel" => parallel_supervisor(&dir, journal).agent().start("Do a and b."),
            "workflow" => workflow(&dir, journal).start(&Job::default(), RunRequest::default()).unwrap(),
            shape => shaped(&dir, shape, journal).start(&Job::default(), RunRequest::default()).unwrap(),
        };
        say(&format!("RUN {}", run.id()));
        let result = run.result().await;
        say(&format!("FINISHED {} {:?}", result.state, result.error.map(|e| e.message)));
    });
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn scratch(name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("loom-team-crash-{}-{n}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the child until it stops at `at`, kills it with SIGKILL, returns the run id.
async fn kill_at(url: &str, scenario: &str, at: &str, dir: &Path) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut child = tokio::process::Command::new(exe)
        .args(["team_crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("LOOM_TEAM_CRASH_URL", url)
        .env("LOOM_TEAM_CRASH_SCENARIO", scenario)
        .env("LOOM_TEAM_CRASH_AT", at)
        .env("LOOM_TEAM_CRASH_DIR", dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut run_id, mut stopped) = (None, false);
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(i) = line.find("RUN run_") {
                run_id = Some(line[i + 4..].trim().to_string());
            } else if line.ends_with("STOPPED") {
                stopped = true;
            } else if line.contains("FINISHED") {
                panic!("the child finished without reaching {at}: {line}");
            }
            if stopped && run_id.is_some() {
                return;
            }
        }
    })
    .await
    .expect("the child did not reach its boundary in time");
    assert!(stopped, "the child exited before reaching {at}");
    child.start_kill().unwrap(); // SIGKILL
    assert!(!child.wait().await.unwrap().success());
    run_id.unwrap()
}

/// Resumes, retrying while a dead child's lease has not expired yet.
async fn resume(agent: &Agent, run_id: &str) -> loom_agent::Run {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match agent.resume(run_id).await {
            Err(Error::LeaseHeld { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other.unwrap_or_else(|e| panic!("resume failed: {e}")),
        }
    }
}

async fn children_of(journal: &Arc<dyn Journal>, run_id: &str) -> Vec<JournalRunSummary> {
    journal.list(&RunFilter { parent_run_id: Some(run_id.to_string()), ..Default::default() }).await.unwrap()
}

/// Kills a supervisor run at `at`, resumes it, checks. `a_done`: worker a finished before the
/// kill; `b_started`: worker b's child run was registered.
async fn supervisor_crash(url: &str, at: &str, a_done: bool, b_started: bool) {
    let dir = scratch("supervisor");
    let run_id = kill_at(url, "supervisor", at, &dir).await;
    assert_eq!(calls(&dir, "a"), usize::from(a_done), "{at}: worker a before the kill");
    let journal = open_journal(url).unwrap().journal;
    assert_eq!(children_of(&journal, &run_id).await.len(), usize::from(a_done) + usize::from(b_started), "{at}");
    let team = supervisor(&dir, journal.clone());
    let result = resume(team.agent(), &run_id).await.result().await;
    assert_eq!(result.state, RunState::Completed, "{at}: {:?}", result.error);
    assert_eq!(result.output, "combined: A result, B result", "{at}");
    assert_eq!(calls(&dir, "a"), 1, "{at}: worker a ran exactly once");
    assert_eq!(calls(&dir, "b"), 1, "{at}: worker b ran exactly once");
    assert_eq!(calls(&dir, "coordinator"), 3, "{at}: journaled coordinator calls are not sent again");
    let kids = children_of(&journal, &run_id).await;
    assert_eq!(kids.len(), 2, "{at}: one child run per worker call, none duplicated");
    assert!(kids.iter().all(|k| k.finished && k.state == RunState::Completed), "{at}");
    let seqs: Vec<u64> = result.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..result.events.len() as u64).collect::<Vec<_>>(), "{at}: no event lost or duplicated");
    std::fs::remove_dir_all(&dir).ok();
}

/// Kills a workflow run at `at`, resumes it, checks that completed nodes did not run again.
async fn workflow_crash(url: &str, at: &str, one_done: bool, ask_done: bool) {
    let dir = scratch("workflow");
    let run_id = kill_at(url, "workflow", at, &dir).await;
    assert_eq!(calls(&dir, "one"), usize::from(one_done), "{at}: node one before the kill");
    assert_eq!(calls(&dir, "ask"), usize::from(ask_done), "{at}: node ask before the kill");
    assert_eq!(calls(&dir, "two"), 0, "{at}");
    let journal = open_journal(url).unwrap().journal;
    let runner = workflow(&dir, journal.clone());
    let result = resume(runner.agent(), &run_id).await.result().await;
    assert_eq!(result.state, RunState::Completed, "{at}: {:?}", result.error);
    let job: Job = serde_json::from_str(&result.output).unwrap();
    assert_eq!(job.steps, vec!["one", "asked", "two"], "{at}");
    for node in ["one", "ask", "two"] {
        assert_eq!(calls(&dir, node), 1, "{at}: node {node} ran exactly once");
    }
    assert_eq!(children_of(&journal, &run_id).await.len(), 1, "{at}: the agent node's child run, once");
    let record = journal.load(&run_id).await.unwrap().unwrap().record;
    assert_eq!(record.architecture.as_deref(), Some("workflow"));
    std::fs::remove_dir_all(&dir).ok();
}

/// Kills a supervisor run whose coordinator called `a` and `b` in one turn, once `a` has ended
/// (`b` still running), resumes it and checks: `a` is not run again, `b` runs to its end once
/// (its model call that was in flight at the kill, unjournaled, is made again), the answer
/// combines both.
async fn parallel_supervisor_crash(url: &str) {
    let at = "after:end:1";
    let dir = scratch("parallel");
    let run_id = kill_at(url, "parallel", at, &dir).await;
    assert_eq!(calls(&dir, "a"), 1, "worker a finished before the kill");
    let b_before = calls(&dir, "b");
    assert!(b_before <= 1, "worker b was still running");
    let journal = open_journal(url).unwrap().journal;
    let team = parallel_supervisor(&dir, journal.clone());
    let result = resume(team.agent(), &run_id).await.result().await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "combined: A result, B result");
    assert_eq!(calls(&dir, "a"), 1, "the finished worker a did not run again");
    assert_eq!(calls(&dir, "b"), b_before + 1, "the unfinished worker b ran to its end once");
    assert_eq!(calls(&dir, "coordinator"), 2, "the journaled first turn was not sent again");
    let kids = children_of(&journal, &run_id).await;
    assert_eq!(kids.len(), 2, "one child run per worker call, none duplicated: {kids:?}");
    assert!(kids.iter().all(|k| k.finished && k.state == RunState::Completed));
    let seqs: Vec<u64> = result.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..result.events.len() as u64).collect::<Vec<_>>(), "no event lost or duplicated");
    std::fs::remove_dir_all(&dir).ok();
}

/// Kills a `shape` workflow at `at`; checks what ran before the kill (`before`: node → runs),
/// resumes, and checks the final steps and that every node ran `after` times in all.
async fn shaped_crash(
    url: &str,
    shape: &str,
    at: &str,
    before: &[(&str, usize)],
    after: &[(&str, usize)],
    steps: &[&str],
) {
    let dir = scratch(shape);
    let run_id = kill_at(url, shape, at, &dir).await;
    for (node, n) in before {
        assert_eq!(calls(&dir, node), *n, "{shape} {at}: node {node} before the kill");
    }
    let journal = open_journal(url).unwrap().journal;
    let runner = shaped(&dir, shape, journal.clone());
    let result = resume(runner.agent(), &run_id).await.result().await;
    assert_eq!(result.state, RunState::Completed, "{shape} {at}: {:?}", result.error);
    let job: Job = serde_json::from_str(&result.output).unwrap();
    assert_eq!(job.steps, steps, "{shape} {at}");
    for (node, n) in after {
        assert_eq!(calls(&dir, node), *n, "{shape} {at}: node {node} in all");
    }
    let seqs: Vec<u64> = result.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..result.events.len() as u64).collect::<Vec<_>>(), "{shape} {at}: no event lost or duplicated");
    std::fs::remove_dir_all(&dir).ok();
}

/// A fan-out of two sub-workflow branches, killed when branch `x` (x1, x2) has finished and branch
/// `y` is in its slow second node: journal boundaries 1 `start`, then x1, y1, x2 and the branch
/// `x` in some order (y2 cannot finish in the child). x does not run again, y1 does not, y2 and
/// the join run once.
async fn fan_out_crash(url: &str) {
    let before = [("start", 1), ("x1", 1), ("x2", 1), ("y1", 1), ("y2", 0), ("join", 0)];
    let after = [("start", 1), ("x1", 1), ("x2", 1), ("y1", 1), ("y2", 1), ("join", 1)];
    shaped_crash(url, "fanout", "after:step_completed:5", &before, &after, &["start", "x1", "x2", "y1", "y2", "join"])
        .await;
}

/// A loop killed in its second visit, before that visit's completion is journaled: the first
/// visit does not run again; the second (unfinished) runs again; the third runs once.
async fn loop_crash(url: &str) {
    let before = [("inc1", 1), ("inc2", 1), ("inc3", 0)];
    let after = [("inc1", 1), ("inc2", 2), ("inc3", 1)];
    shaped_crash(url, "loop", "before:step_completed:2", &before, &after, &["inc1", "inc2", "inc3"]).await;
}

/// A sub-workflow node killed after its first inner node: `pre` and `s1` do not run again.
async fn sub_workflow_crash(url: &str) {
    let before = [("pre", 1), ("s1", 1), ("s2", 0), ("post", 0)];
    let after = [("pre", 1), ("s1", 1), ("s2", 1), ("post", 1)];
    shaped_crash(url, "sub", "after:step_completed:2", &before, &after, &["pre", "s1", "s2", "post"]).await;
}

fn sqlite_url(name: &str) -> String {
    format!("sqlite:{}", scratch(name).join("loom.db").display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_a_supervisor_run_while_the_second_worker_runs_then_resume() {
    // Journal begins: 1 the coordinator, 2 worker a, 3 worker b.
    supervisor_crash(&sqlite_url("sup"), "after:begin:3", true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_a_supervisor_run_after_the_first_worker_then_resume() {
    // Ends: 1 worker a; the coordinator has not journaled a's result yet.
    supervisor_crash(&sqlite_url("sup"), "after:end:1", true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_a_workflow_before_a_finished_agent_node_is_journaled_then_resume() {
    workflow_crash(&sqlite_url("wf"), "before:step_completed:2", true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_a_workflow_after_its_first_node_then_resume() {
    workflow_crash(&sqlite_url("wf"), "after:step_completed:1", true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_a_supervisor_run_with_parallel_workers_after_one_finished_then_resume() {
    parallel_supervisor_crash(&sqlite_url("par")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_a_fan_out_with_one_branch_done_then_resume() {
    fan_out_crash(&sqlite_url("fan")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_a_loop_at_its_second_visit_then_resume() {
    loop_crash(&sqlite_url("loop")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_a_sub_workflow_node_then_resume() {
    sub_workflow_crash(&sqlite_url("sub")).await;
}

/// A run started under `plan_execute` continues under `plan_execute`, whatever the resuming agent
/// is configured with: its record names its architecture.
#[tokio::test]
async fn a_resume_continues_under_the_recorded_architecture() {
    let url = sqlite_url("arch");
    let journal = open_journal(&url).unwrap().journal;
    let plan = json!({"steps": [{"id": "1", "description": "answer", "depends_on": []}]}).to_string();
    let stopping: Arc<dyn Journal> = Arc::new(Stopping::new(journal.clone(), "after:model_result:1"));
    let (p1, p2) = (plan.clone(), plan.clone());
    let planner = Agent::builder()
        .model(FnModel::new("planner", move |_| ScriptedTurn::text(p1.clone())))
        .architecture_name("plan_execute")
        .journal(stopping)
        .lease_ttl(Duration::from_millis(200))
        .build()
        .unwrap();
    let run = planner.start("Answer.");
    let id = run.id().to_string();
    // The first model call (the plan) is journaled; the run then waits forever: abandon it.
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if journal.load(&id).await.unwrap().is_some_and(|r| !r.entries.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let stored = journal.load(&id).await.unwrap().unwrap();
    assert_eq!(stored.record.architecture.as_deref(), Some("plan_execute"));
    tokio::time::sleep(Duration::from_millis(300)).await; // the abandoned lease expires
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let resumer = Agent::builder()
        .model(FnModel::new("planner", move |req| {
            s.lock().unwrap().push(req.messages.iter().map(Message::text).collect::<Vec<_>>().join("\n"));
            if req.output_schema.is_some() { ScriptedTurn::text(p2.clone()) } else { ScriptedTurn::text("step done") }
        }))
        .journal(journal.clone())
        .build()
        .unwrap();
    let result = resume(&resumer, &id).await.result().await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert!(result.events.iter().any(|e| e.type_name() == "plan.step"), "plan_execute drove the resumed run");
    assert!(!seen.lock().unwrap().is_empty());
    run.cancel();
}

/// The same kills against PostgreSQL (skipped without `LOOM_TEST_POSTGRES_URL`).
#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    fn url() -> Option<String> {
        let url = std::env::var("LOOM_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty());
        if url.is_none() {
            eprintln!("skipped: LOOM_TEST_POSTGRES_URL is not set");
        }
        url
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_in_a_supervisor_run_while_the_second_worker_runs_then_resume() {
        let Some(url) = url() else { return };
        supervisor_crash(&url, "after:begin:3", true, true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_in_a_workflow_before_a_finished_agent_node_is_journaled_then_resume() {
        let Some(url) = url() else { return };
        workflow_crash(&url, "before:step_completed:2", true, true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_in_a_supervisor_run_after_the_first_worker_then_resume() {
        let Some(url) = url() else { return };
        supervisor_crash(&url, "after:end:1", true, false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_in_a_workflow_after_its_first_node_then_resume() {
        let Some(url) = url() else { return };
        workflow_crash(&url, "after:step_completed:1", true, false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_in_a_supervisor_run_with_parallel_workers_after_one_finished_then_resume() {
        let Some(url) = url() else { return };
        parallel_supervisor_crash(&url).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_in_a_fan_out_with_one_branch_done_then_resume() {
        let Some(url) = url() else { return };
        fan_out_crash(&url).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_in_a_loop_at_its_second_visit_then_resume() {
        let Some(url) = url() else { return };
        loop_crash(&url).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_in_a_sub_workflow_node_then_resume() {
        let Some(url) = url() else { return };
        sub_workflow_crash(&url).await;
    }
}
