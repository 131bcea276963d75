//! `loom run --journal URL --session ID` and `loom runs list|show|resume`, end to end with the
//! real binary against a mock OpenAI-compatible server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use loom_testkit::wire::openai;
use loom_testkit::{MockServer, Reply};
use serde_json::Value;

const KEY: &str = "sk-test-journal-0123456789";

fn loom() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loom"));
    for var in ["OPENAI_API_KEY", "OPENAI_BASE_URL", "LOOM_MODEL", "LOOM_JOURNAL", "OLLAMA_BASE_URL"] {
        cmd.env_remove(var);
    }
    cmd.env("OPENAI_API_KEY", KEY);
    cmd
}

/// A journal URL in a fresh temporary directory.
fn journal() -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("loom-cli-journal-{}", loom_agent::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("loom.db").display());
    (dir, url)
}

fn answer(server: &MockServer, text: &str) {
    server.enqueue(Reply::sse([openai::text(text), openai::finish("stop"), openai::usage(20, 0, 5), openai::done()]));
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited with a code")
}

/// Runs the command off the async runtime (the mock server lives on it).
async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

fn run_cmd(server: &MockServer, journal: Option<&str>, session: &str, prompt: &str) -> Command {
    let mut cmd = loom();
    cmd.args(["run", "--model", "openai:gpt-4o-mini", "--base-url", &format!("{}/v1", server.url())]);
    cmd.args(["--session", session]);
    if let Some(url) = journal {
        cmd.args(["--journal", url]);
    }
    cmd.arg(prompt);
    cmd
}

fn runs(args: &[&str]) -> Command {
    let mut cmd = loom();
    cmd.arg("runs").args(args);
    cmd
}

/// The run id from the "run RUN_ID in session ID" line on stderr.
fn run_id(out: &Output) -> String {
    let stderr = text(&out.stderr);
    let line = stderr.lines().find(|l| l.starts_with("run ") && l.contains(" in session "));
    let line = line.unwrap_or_else(|| unreachable!("no run id on stderr: {stderr}"));
    line.split_whitespace().nth(1).unwrap().to_string()
}

fn json_lines(out: &Output) -> Vec<Value> {
    text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journaled_session_continues_across_processes_and_its_runs_can_be_listed_and_shown() {
    let server = MockServer::start().await;
    answer(&server, "Noted: the number is 7.");
    answer(&server, "You told me 7.");
    let (dir, url) = journal();

    let first = output(run_cmd(&server, Some(&url), "s1", "Remember the number 7")).await;
    assert_eq!(code(&first), 0, "{}", text(&first.stderr));
    assert!(text(&first.stdout).contains("Noted: the number is 7."));
    let first_id = run_id(&first);
    assert!(text(&first.stderr).contains(&format!("run {first_id} in session s1")));

    let second = output(run_cmd(&server, Some(&url), "s1", "Which number?")).await;
    assert_eq!(code(&second), 0, "{}", text(&second.stderr));
    let second_id = run_id(&second);
    assert_ne!(first_id, second_id);

    // The second process sent the first exchange: the conversation went on.
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let body = requests[1].json().to_string();
    assert!(body.contains("Remember the number 7"), "{body}");
    assert!(body.contains("Noted: the number is 7."), "{body}");
    assert!(body.contains("Which number?"), "{body}");

    // `loom runs list --json` lists both, newest first.
    let list = output(runs(&["list", "--journal", &url, "--json"])).await;
    assert_eq!(code(&list), 0, "{}", text(&list.stderr));
    let listed = json_lines(&list);
    let ids: Vec<&str> = listed.iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [second_id.as_str(), first_id.as_str()]);
    assert!(listed.iter().all(|r| r["session_id"] == "s1" && r["state"] == "completed" && r["finished"] == true));

    // Filters and the table.
    let limited = output(runs(&["list", "--journal", &url, "--json", "--limit", "1"])).await;
    assert_eq!(json_lines(&limited).len(), 1);
    let other = output(runs(&["list", "--journal", &url, "--json", "--session", "other"])).await;
    assert!(json_lines(&other).is_empty());
    let unfinished = output(runs(&["list", "--journal", &url, "--json", "--unfinished"])).await;
    assert!(json_lines(&unfinished).is_empty());
    let table = output(runs(&["list", "--journal", &url])).await;
    let table_text = text(&table.stdout);
    assert!(table_text.starts_with("RUN"), "{table_text}");
    assert!(table_text.contains(&first_id) && table_text.contains("completed"), "{table_text}");

    // `loom runs show --json`: record, entries, events and the transcript.
    let show = output(runs(&["show", &second_id, "--journal", &url, "--json"])).await;
    assert_eq!(code(&show), 0, "{}", text(&show.stderr));
    let shown: Value = serde_json::from_str(text(&show.stdout).trim()).unwrap();
    assert_eq!(shown["record"]["run_id"], second_id.as_str());
    assert_eq!(shown["record"]["session_id"], "s1");
    assert_eq!(shown["state"], "completed");
    assert_eq!(shown["finished"], true);
    assert_eq!(shown["entries"][0]["type"], "model_result");
    let types: Vec<&str> = shown["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"run.started"));
    assert_eq!(types.last(), Some(&"run.completed"));
    let messages = shown["transcript"]["messages"].to_string();
    assert!(messages.contains("Remember the number 7") && messages.contains("You told me 7."), "{messages}");

    // The human view.
    let show = output(runs(&["show", &first_id, "--journal", &url])).await;
    let shown = text(&show.stdout);
    assert!(shown.contains("model_result") && shown.contains("run.completed"), "{shown}");
    assert!(shown.contains("transcript (2 messages)"), "{shown}");

    // An unknown run.
    let missing = output(runs(&["show", "run_nope", "--journal", &url])).await;
    assert_ne!(code(&missing), 0);
    assert!(text(&missing.stderr).contains("run run_nope not found"), "{}", text(&missing.stderr));

    // A finished run is never resumed.
    let mut resume = runs(&["resume", &first_id, "--journal", &url, "--model", "openai:gpt-4o-mini"]);
    resume.args(["--base-url", &format!("{}/v1", server.url())]);
    let resumed = output(resume).await;
    assert_eq!(code(&resumed), 1, "{}", text(&resumed.stderr));
    assert!(text(&resumed.stderr).contains("has already finished (completed)"), "{}", text(&resumed.stderr));
    assert_eq!(server.requests().len(), 2, "nothing was sent to the model");

    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loom_journal_names_the_journal() {
    let server = MockServer::start().await;
    answer(&server, "one");
    answer(&server, "two");
    let (dir, url) = journal();

    let mut first = run_cmd(&server, None, "env-session", "first");
    first.env("LOOM_JOURNAL", &url);
    let first = output(first).await;
    assert_eq!(code(&first), 0, "{}", text(&first.stderr));
    let id = run_id(&first);

    let mut second = run_cmd(&server, None, "env-session", "second");
    second.env("LOOM_JOURNAL", &url);
    assert_eq!(code(&output(second).await), 0);
    assert!(server.requests()[1].json().to_string().contains("first"), "the session went on");

    let mut list = runs(&["list", "--json"]);
    list.env("LOOM_JOURNAL", &url);
    let list = output(list).await;
    assert_eq!(code(&list), 0, "{}", text(&list.stderr));
    assert_eq!(json_lines(&list).len(), 2);

    let mut show = runs(&["show", &id, "--json"]);
    show.env("LOOM_JOURNAL", &url);
    let show = output(show).await;
    assert_eq!(code(&show), 0, "{}", text(&show.stderr));

    // Without a journal, `loom runs` says what it needs.
    let none = output(runs(&["list"])).await;
    assert_eq!(code(&none), 2);
    assert!(text(&none.stderr).contains("--journal"), "{}", text(&none.stderr));

    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bad_journal_url_lists_the_accepted_forms() {
    for args in [
        vec!["run", "--journal", "mysql://nope", "hello"],
        vec!["runs", "list", "--journal", "mysql://nope"],
        vec!["runs", "show", "run_x", "--journal", "mysql://nope"],
        vec!["runs", "resume", "run_x", "--journal", "mysql://nope"],
    ] {
        let out = loom().args(&args).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 2, "{args:?}: {stderr}");
        assert!(stderr.contains("unknown journal `mysql://nope`"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("sqlite:PATH") && stderr.contains("postgres://") && stderr.contains("memory"),
            "{stderr}"
        );
    }
    let mut env = loom();
    env.env("LOOM_JOURNAL", "bogus").args(["run", "hello"]);
    let out = env.output().unwrap();
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("unknown journal `bogus`"), "{}", text(&out.stderr));
}

#[test]
fn resume_needs_a_journal_and_a_known_run() {
    let out = loom().args(["runs", "resume", "run_x"]).output().unwrap();
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("--journal URL or $LOOM_JOURNAL"), "{}", text(&out.stderr));

    let (dir, url) = journal();
    let made = loom().args(["run", "--model", "echo", "--journal", &url, "hi"]).output().unwrap();
    assert_eq!(code(&made), 0, "{}", text(&made.stderr));
    let out = loom().args(["runs", "resume", "run_missing", "--journal", &url]).output().unwrap();
    assert_eq!(code(&out), 1);
    assert!(text(&out.stderr).contains("run run_missing not found"), "{}", text(&out.stderr));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_process_died_resumes_at_once_on_the_model_it_started_on() {
    let server = MockServer::start().await;
    server.enqueue(
        Reply::sse([openai::text("never seen"), openai::finish("stop"), openai::done()])
            .delay_first_byte(Duration::from_secs(30)),
    );
    let (dir, url) = journal();

    let mut cmd = run_cmd(&server, Some(&url), "crash", "a long question");
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    server.wait_for_requests(1).await;
    child.kill().unwrap();
    child.wait().unwrap();

    let list = output(runs(&["list", "--journal", &url, "--json", "--unfinished"])).await;
    let listed = json_lines(&list);
    assert_eq!(listed.len(), 1, "{}", text(&list.stdout));
    assert_eq!(listed[0]["state"], "running");
    assert_eq!(listed[0]["finished"], false);
    let id = listed[0]["run_id"].as_str().unwrap().to_string();

    let show = output(runs(&["show", &id, "--journal", &url])).await;
    let shown = text(&show.stdout);
    assert!(shown.contains("running (unfinished)") && shown.contains("run.started"), "{shown}");
    assert!(shown.contains(&format!("model     openai:gpt-4o-mini at {}/v1", server.url())), "{shown}");

    // The owner died on this machine: its lease (30 s) is not waited for. No --model and no
    // --base-url: the run continues on the model and endpoint it started on, not on a default.
    answer(&server, "recovered");
    let started = std::time::Instant::now();
    let resumed = output(runs(&["resume", &id, "--journal", &url])).await;
    let stderr = text(&resumed.stderr);
    assert_eq!(code(&resumed), 0, "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "waited {:?}", started.elapsed());
    assert!(stderr.contains("resuming on the run's model openai:gpt-4o-mini"), "{stderr}");
    assert_eq!(text(&resumed.stdout).trim(), "recovered");
    let body: Value = serde_json::from_slice(&server.requests().last().unwrap().body).unwrap();
    assert_eq!(body["model"], "gpt-4o-mini");
    assert!(shown_state(&id, &url).contains("completed"));

    std::fs::remove_dir_all(&dir).ok();
}

fn shown_state(id: &str, url: &str) -> String {
    let out = runs(&["show", id, "--journal", url]).output().unwrap();
    text(&out.stdout).lines().find(|l| l.starts_with("state")).unwrap_or_default().to_string()
}

/// A run held by a process on another machine: refused, or with `--wait` taken once its lease
/// expires, counting down; `--model` that differs is announced and recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_elsewhere_is_waited_for_with_wait() {
    let server = MockServer::start().await;
    server.enqueue(
        Reply::sse([openai::text("never seen"), openai::finish("stop"), openai::done()])
            .delay_first_byte(Duration::from_secs(30)),
    );
    let (dir, url) = journal();
    let mut cmd = run_cmd(&server, Some(&url), "remote", "a long question");
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    server.wait_for_requests(1).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let list = output(runs(&["list", "--journal", &url, "--json", "--unfinished"])).await;
    let id = json_lines(&list)[0]["run_id"].as_str().unwrap().to_string();

    // Pretend a process on another machine holds the run for 3 more seconds.
    let hold = |ms: i64| {
        let db = rusqlite::Connection::open(dir.join("loom.db")).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        db.execute(
            "UPDATE loom_runs SET lease_owner = 'owner_x@elsewhere/boot/1/2/3', lease_expires = ?1 WHERE run_id = ?2",
            rusqlite::params![now + ms, id],
        )
        .unwrap();
    };
    hold(3_000);
    let refused = output(runs(&["resume", &id, "--journal", &url])).await;
    let stderr = text(&refused.stderr);
    assert_eq!(code(&refused), 1, "{stderr}");
    assert!(stderr.contains("held by another process") && stderr.contains("--wait"), "{stderr}");

    hold(3_000);
    answer(&server, "after the wait");
    let started = std::time::Instant::now();
    let mut resume = runs(&["resume", &id, "--journal", &url, "--wait", "--model", "openai:gpt-4.1-mini", "--json"]);
    resume.args(["--base-url", &format!("{}/v1", server.url())]);
    let waited = output(resume).await;
    let stderr = text(&waited.stderr);
    assert_eq!(code(&waited), 0, "{stderr}");
    assert!(started.elapsed() >= Duration::from_millis(2_000), "did not wait: {:?}", started.elapsed());
    assert!(stderr.contains("waiting for another process's lease on the run to expire"), "{stderr}");
    assert!(
        stderr.contains("started on openai:gpt-4o-mini") && stderr.contains("resuming on openai:gpt-4.1-mini"),
        "{stderr}"
    );
    let events = json_lines(&waited);
    let changed = events.iter().find(|e| e["type"] == "model.changed").expect("a model.changed event");
    assert!(changed["payload"]["from"].as_str().unwrap().contains("gpt-4o-mini"), "{changed}");
    let body: Value = serde_json::from_slice(&server.requests().last().unwrap().body).unwrap();
    assert_eq!(body["model"], "gpt-4.1-mini");
    std::fs::remove_dir_all(&dir).ok();
}

/// A fixture's `scripted:` model string, by absolute path (these commands run in any directory).
fn script(name: &str) -> String {
    format!("scripted:{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `loom runs show RUN_ID --json` as JSON.
fn shown(id: &str, url: &str) -> Value {
    let out = runs(&["show", id, "--journal", url, "--json"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    serde_json::from_str(text(&out.stdout).trim()).unwrap()
}

#[test]
fn read_commands_never_create_a_journal() {
    let (dir, _) = journal();
    let typo = dir.join("lomo.db");
    let url = format!("sqlite:{}", typo.display());
    for args in [
        vec!["runs", "list", "--journal", &url],
        vec!["runs", "show", "run_x", "--journal", &url],
        vec!["runs", "resume", "run_x", "--journal", &url, "--model", "echo"],
    ] {
        let out = loom().args(&args).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(code(&out), 2, "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("no journal at {}", typo.display())), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
    let mut env = loom();
    env.env("LOOM_JOURNAL", &url).args(["runs", "list"]);
    assert_eq!(code(&env.output().unwrap()), 2);
    assert!(!typo.exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(unix)]
#[test]
fn sigterm_cancels_the_run_and_the_journal_says_so() {
    use std::io::{BufRead, BufReader, Read};

    let (dir, url) = journal();
    let mut child = loom()
        .args(["run", "--json", "--model", &script("slow.json"), "--journal", &url, "x"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    assert!(first.contains("run.started"), "{first}");
    let id = serde_json::from_str::<Value>(&first).unwrap()["run_id"].as_str().unwrap().to_string();
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut rest = String::new();
    lines.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4), "cancelled, not killed: {status:?}");
    let result: Value = serde_json::from_str(rest.lines().last().unwrap()).unwrap();
    assert_eq!(result["state"], "cancelled");

    let run = shown(&id, &url);
    assert_eq!(run["state"], "cancelled", "{run}");
    assert_eq!(run["finished"], true, "{run}");
    assert_eq!(run["lease_owner"], Value::Null, "the lease is released: {run}");
    let types: Vec<&str> = run["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.last(), Some(&"run.cancelled"), "{types:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_closed_json_pipe_lets_the_run_finish_truthfully() {
    use std::io::{BufRead, BufReader};

    let (dir, url) = journal();
    let mut child = loom()
        .args(["run", "--json", "--model", &script("answer_later.json"), "--journal", &url, "x"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Like `| head -n1`: read one line, then close the pipe while the run goes on.
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    drop(reader);
    let id = serde_json::from_str::<Value>(&first).unwrap()["run_id"].as_str().unwrap().to_string();
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 0, "the run completed: {stderr}");
    assert!(!stderr.contains("cannot write"), "a closed pipe is not an error worth a message: {stderr}");

    let run = shown(&id, &url);
    assert_eq!(run["state"], "completed", "{run}");
    assert_eq!(run["finished"], true, "{run}");
    let messages = run["transcript"]["messages"].to_string();
    assert!(messages.contains("Loom is an agent runtime."), "{messages}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_journals_work_from_the_command_line() {
    let Some(database) = std::env::var("LOOM_TEST_POSTGRES_URL").ok().filter(|url| !url.is_empty()) else {
        println!("skipped: LOOM_TEST_POSTGRES_URL not set (e.g. postgres://postgres@127.0.0.1:5432/test)");
        return;
    };
    // A schema of its own: the database may be shared with other tests and other Loom versions.
    let schema = loom_agent::new_id("loom_cli").to_lowercase();
    let (client, connection) = tokio_postgres::connect(&database, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let separator = if database.contains('?') { '&' } else { '?' };
    let pg = format!("{database}{separator}options=-csearch_path%3D{schema}");

    let server = MockServer::start().await;
    answer(&server, "Stored in PostgreSQL.");
    let session = loom_agent::new_id("cli-pg");

    let first = output(run_cmd(&server, Some(&pg), &session, "Where are you stored?")).await;
    assert_eq!(code(&first), 0, "{}", text(&first.stderr));
    let id = run_id(&first);

    let list = output(runs(&["list", "--journal", &pg, "--session", &session, "--json"])).await;
    assert_eq!(code(&list), 0, "{}", text(&list.stderr));
    let listed = json_lines(&list);
    assert_eq!(listed.len(), 1, "{}", text(&list.stdout));
    assert_eq!(listed[0]["run_id"], id.as_str());
    assert_eq!(listed[0]["state"], "completed");

    let show = output(runs(&["show", &id, "--journal", &pg, "--json"])).await;
    assert_eq!(code(&show), 0, "{}", text(&show.stderr));
    let shown: Value = serde_json::from_str(text(&show.stdout).trim()).unwrap();
    assert!(shown["transcript"]["messages"].to_string().contains("Stored in PostgreSQL."), "{shown}");
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}
