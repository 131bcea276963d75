//! `loom signal`, `loom schedule add|list|remove` and `loom worker --until-idle`, end to end with
//! the real binary on a SQLite database and the echo model.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn loom() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loom"));
    for var in ["OPENAI_API_KEY", "OPENAI_BASE_URL", "LOOM_MODEL", "LOOM_JOURNAL", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    cmd
}

fn database() -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("loom-cli-signals-{}", loom_agent::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("loom.db").display());
    (dir, url)
}

fn run(args: &[&str]) -> Output {
    loom().args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn signals_wait_for_the_worker_and_duplicates_are_dropped_quietly() {
    let (dir, url) = database();
    let first = run(&["signal", "--journal", &url, "--session", "ops", "--dedupe-key", "d1", "the build is red"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(stdout(&first).trim().starts_with("sig_"), "{}", stdout(&first));
    let dup = run(&["signal", "--journal", &url, "--session", "ops", "--dedupe-key", "d1", "the build is red"]);
    assert_eq!(dup.status.code(), Some(0), "{}", stderr(&dup));
    assert_eq!(stdout(&dup), "", "a duplicate prints nothing");
    let low = run(&["signal", "--journal", &url, "--session", "ops", "--urgency", "low", "fyi: disk at 80%"]);
    assert_eq!(low.status.code(), Some(0));
    let other = run(&["signal", "--journal", &url, "--session", "ops", "--user", "ana", "hello ana"]);
    assert_eq!(other.status.code(), Some(0));
    let worker = run(&["worker", "--journal", &url, "--model", "echo", "--until-idle", "--json"]);
    assert_eq!(worker.status.code(), Some(0), "{}", stderr(&worker));
    let lines: Vec<serde_json::Value> = stdout(&worker).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{}", stdout(&worker));
    let outputs: Vec<&str> = lines.iter().map(|l| l["output"].as_str().unwrap()).collect();
    assert!(outputs.contains(&"Echo: [signal from cli, message, normal] the build is red"), "{outputs:?}");
    assert!(outputs.contains(&"Echo: [signal from cli, message, normal] hello ana"), "{outputs:?}");
    assert!(lines.iter().any(|l| l["user_id"] == "ana"));
    assert!(stderr(&worker).contains("3 signal(s) handled, 2 run(s)"), "{}", stderr(&worker));
    // Nothing left: the next worker exits at once.
    let again = run(&["worker", "--journal", &url, "--model", "echo", "--until-idle"]);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(stdout(&again), "");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn schedules_are_added_listed_fired_and_removed() {
    let (dir, url) = database();
    let add =
        run(&["schedule", "add", "--journal", &url, "--session", "daily", "--cron", "0 9 * * MON-FRI", "summary"]);
    assert_eq!(add.status.code(), Some(0), "{}", stderr(&add));
    let cron_id = stdout(&add).trim().to_string();
    assert!(cron_id.starts_with("sch_"));
    let past = "2020-01-01T00:00:00Z";
    let once =
        run(&["schedule", "add", "--journal", &url, "--session", "daily", "--at", past, "--run-missed", "catch up"]);
    assert_eq!(once.status.code(), Some(0), "{}", stderr(&once));
    let list = run(&["schedule", "list", "--journal", &url]);
    let listing = stdout(&list);
    assert!(listing.contains(&cron_id) && listing.contains("cron '0 9 * * MON-FRI'"), "{listing}");
    assert!(listing.contains("once at 2020-01-01"), "{listing}");
    let worker = run(&["worker", "--journal", &url, "--model", "echo", "--until-idle"]);
    assert_eq!(worker.status.code(), Some(0), "{}", stderr(&worker));
    assert!(stdout(&worker).contains("[signal from schedule, schedule.fired, normal] catch up"), "{}", stdout(&worker));
    let list = stdout(&run(&["schedule", "list", "--journal", &url, "--json"]));
    let done: Vec<serde_json::Value> = list.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(done.len(), 2);
    assert!(done.iter().any(|s| s["input"] == "catch up" && s.get("next_at").is_none()), "{list}");
    assert_eq!(run(&["schedule", "remove", "--journal", &url, &cron_id]).status.code(), Some(0));
    assert_eq!(run(&["schedule", "remove", "--journal", &url, &cron_id]).status.code(), Some(1));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_input_is_a_usage_error() {
    let (dir, url) = database();
    let bad_cron = run(&["schedule", "add", "--journal", &url, "--session", "s", "--cron", "whenever", "x"]);
    assert_eq!(bad_cron.status.code(), Some(2), "{}", stderr(&bad_cron));
    assert!(stderr(&bad_cron).contains("invalid cron expression"));
    let bad_urgency = run(&["signal", "--journal", &url, "--session", "s", "--urgency", "meh", "x"]);
    assert_eq!(bad_urgency.status.code(), Some(2));
    let memory = run(&["signal", "--journal", "memory", "--session", "s", "x"]);
    assert_eq!(memory.status.code(), Some(2), "{}", stderr(&memory));
    let no_journal = run(&["worker", "--model", "echo", "--until-idle"]);
    assert_eq!(no_journal.status.code(), Some(2));
    std::fs::remove_dir_all(dir).ok();
}
