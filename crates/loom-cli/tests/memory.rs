//! `loom run --memory URL --user ID` and `loom memory facts|search|forget|export`, end to end with
//! the real binary against a mock OpenAI-compatible server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use loom_testkit::wire::openai;
use loom_testkit::{MockServer, Reply};
use serde_json::{Value, json};

const KEY: &str = "sk-test-memory-0123456789";

fn loom() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loom"));
    for var in ["OPENAI_API_KEY", "OPENAI_BASE_URL", "LOOM_MODEL", "LOOM_JOURNAL", "OLLAMA_BASE_URL"] {
        cmd.env_remove(var);
    }
    cmd.env("OPENAI_API_KEY", KEY);
    cmd
}

fn memory_url() -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("loom-cli-memory-{}", loom_agent::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("bot.db").display());
    (dir, url)
}

fn answer(server: &MockServer, text: &str) {
    server.enqueue(Reply::sse([openai::text(text), openai::finish("stop"), openai::usage(20, 0, 5), openai::done()]));
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

fn run_cmd(server: &MockServer, url: &str, user: &str, prompt: &str) -> Command {
    let mut cmd = loom();
    cmd.args(["run", "--model", "openai:gpt-4o-mini", "--base-url", &format!("{}/v1", server.url())]);
    cmd.args(["--memory", url, "--user", user, prompt]);
    cmd
}

fn memory(args: &[&str]) -> Command {
    let mut cmd = loom();
    cmd.arg("memory").args(args);
    cmd
}

fn body(server: &MockServer, i: usize) -> Value {
    serde_json::from_slice(&server.requests()[i].body).unwrap()
}

#[tokio::test]
async fn a_run_remembers_and_the_memory_commands_show_search_export_and_erase() {
    let server = MockServer::start().await;
    let (dir, url) = memory_url();
    answer(&server, "Noted, you live in Berlin.");
    let facts = json!({"facts": [{"key": "home_city", "statement": "Lives in Berlin.", "importance": 0.9, "supersedes": null}]});
    answer(&server, &facts.to_string());
    let out = output(run_cmd(&server, &url, "ann", "I live in Berlin now.")).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "Noted, you live in Berlin.");
    // loom waited for the extraction before exiting: it was the second request, with the schema.
    assert_eq!(server.requests().len(), 2);
    let extraction = body(&server, 1);
    assert_eq!(extraction["response_format"]["type"], "json_schema");
    assert_eq!(
        extraction["response_format"]["json_schema"]["schema"],
        loom_agent::memory::extract::extraction_schema()
    );
    assert!(extraction["messages"][1]["content"].as_str().unwrap().contains("User: I live in Berlin now."));

    let out = output(memory(&["facts", "--memory", &url, "--user", "ann"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert!(listed.contains("[home_city] Lives in Berlin."), "{listed}");
    let out = output(memory(&["facts", "--memory", &url, "--user", "bob"])).await;
    assert_eq!(text(&out.stdout), "", "another user sees nothing");

    // The next run recalls it: a system message before the prompt.
    answer(&server, "Berlin.");
    answer(&server, "{\"facts\": []}");
    let out = output(run_cmd(&server, &url, "ann", "Where do I live?")).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let second = body(&server, 2);
    let messages = second["messages"].as_array().unwrap();
    let recalled =
        messages.iter().find(|m| m["role"] == "system" && m["content"].as_str().unwrap_or("").contains("Memory:"));
    assert!(recalled.unwrap()["content"].as_str().unwrap().contains("- Lives in Berlin."), "{messages:?}");

    let out = output(memory(&["search", "berlin", "--memory", &url, "--user", "ann"])).await;
    let found = text(&out.stdout);
    assert!(found.lines().any(|l| l.contains(" fact Lives in Berlin.")), "{found}");

    let out = output(memory(&["export", "--memory", &url, "--user", "ann"])).await;
    let export: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(export["facts"].as_array().unwrap().len(), 1);
    assert_eq!(export["episodes"].as_array().unwrap().len(), 2);

    let out = output(memory(&["forget", "--all", "--memory", &url, "--user", "ann"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("forgot 3 item(s)"), "{}", text(&out.stderr));
    let out = output(memory(&["export", "--memory", &url, "--user", "ann"])).await;
    let export: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(export["facts"], json!([]));
    assert_eq!(export["episodes"], json!([]));
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn bad_memory_urls_and_flags_exit_2() {
    let out = output(memory(&["facts", "--memory", "mongodb://x", "--user", "ann"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("sqlite:PATH"), "{}", text(&out.stderr));
    let (dir, url) = memory_url();
    let out = output(memory(&["forget", "--memory", &url, "--user", "ann"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--all"), "{}", text(&out.stderr));
    let out = output(memory(&["forget", "--id", "fact_nope", "--memory", &url, "--user", "ann"])).await;
    assert_eq!(out.status.code(), Some(1), "nothing matched");
    let mut cmd = loom();
    cmd.args(["run", "--model", "echo", "--memory", "redis://x", "hi"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--memory"), "{}", text(&out.stderr));
    std::fs::remove_dir_all(dir).ok();
}
