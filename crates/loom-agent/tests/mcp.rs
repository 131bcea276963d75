//! MCP servers as capabilities, end to end: a scripted model calls the tools of real servers (the
//! npm reference server, a scripted server on the same SDK) through an agent's runs; tools that
//! appear mid-run are offered from the next turn; a run's cancellation reaches the server; a
//! server that never answers fails the first run with its stderr.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../loom-mcp/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::*;
use loom_agent::capability::mcp;
use loom_agent::model::ScriptedTurn;
use loom_agent::{Agent, RunErrorKind, RunState};
use serde_json::json;

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("loom-agent-mcp-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_scripted_model_calls_an_mcp_tool_through_a_run() {
    let Some(entry) = support::reference_server() else { return };
    let server = mcp::stdio("node", [entry.display().to_string(), "stdio".into()]).name("everything");
    let client = server.connect().await.unwrap();
    let pid = client.process_id().await.unwrap();
    let (model, shared) = scripted([
        ScriptedTurn::tool_call("everything__get-sum", json!({"a": 2, "b": 3})),
        ScriptedTurn::tool_call("everything__echo", json!({"message": 7})),
        ScriptedTurn::text("five"),
    ]);
    let agent = Agent::builder().model(shared).capability(server).build().unwrap();
    assert!(agent.tools().is_empty(), "MCP tools are not fixed at build time");
    let current = agent.current_tools().await.unwrap();
    let echo = current.iter().find(|t| t.name == "everything__echo").unwrap();
    assert!(echo.flags.read_only && !echo.flags.destructive);

    let result = within(30, "run", agent.run("add 2 and 3")).await.unwrap();
    assert_eq!(result.state, RunState::Completed);
    assert_eq!(result.output, "five");
    let results = tool_results(&result.events);
    assert_eq!(results[0].name, "everything__get-sum");
    assert_eq!(results[0].output, "The sum of 2 and 3 is 5.");
    assert!(!results[0].is_error);
    // Loom checks the server's schema before calling: a number where a string belongs.
    assert!(results[1].is_error);
    assert!(results[1].output.contains("do not match its schema"), "{}", results[1].output);
    let offered: Vec<String> = model.requests()[0].tools.iter().map(|t| t.name.clone()).collect();
    assert!(offered.contains(&"everything__get-sum".to_string()), "{offered:?}");

    // The agent holds the server: dropping it (and the client) ends the process.
    drop(agent);
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z")) {
        assert!(Instant::now() < deadline, "the server outlived its agent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_tool_added_mid_run_is_offered_from_the_next_turn() {
    let dir = temp_dir("changed");
    let Some(script) = support::scripted_server(&dir) else { return };
    let server = mcp::stdio("node", [script.display().to_string()]).name("scripted");
    let (model, shared) = scripted([
        ScriptedTurn::tool_call("scripted__add_tool", json!({})),
        ScriptedTurn::tool_call("scripted__late", json!({})),
        ScriptedTurn::text("done"),
    ]);
    // No connect(): the first run connects.
    let agent = Agent::builder().model(shared).capability(server).build().unwrap();
    let result = within(30, "run", agent.run("go")).await.unwrap();
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    let results = tool_results(&result.events);
    assert_eq!(results[0].output, "added");
    assert_eq!(results[1].output, "late tool ran", "{:?}", results[1]);
    let requests = model.requests();
    let names = |i: usize| requests[i].tools.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert!(!names(0).contains(&"scripted__late".to_string()));
    assert!(names(1).contains(&"scripted__late".to_string()), "{:?}", names(1));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn cancelling_a_run_cancels_the_call_on_the_server() {
    let dir = temp_dir("cancel");
    let Some(script) = support::scripted_server(&dir) else { return };
    let server = mcp::stdio("node", [script.display().to_string()]).name("scripted");
    let client = server.connect().await.unwrap();
    let (_, shared) = scripted([ScriptedTurn::tool_call("scripted__slow", json!({})), ScriptedTurn::text("never")]);
    let agent = Agent::builder().model(shared).capability(server).build().unwrap();
    let run = agent.start("go");
    wait_for(&run, "tool.call").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    run.cancel();
    let result = within(5, "cancelled run", run.result()).await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(result.state, RunState::Cancelled);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !client.stderr_tail().await.contains("cancelled request") {
        assert!(
            Instant::now() < deadline,
            "the server never saw notifications/cancelled: {}",
            client.stderr_tail().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_server_that_never_answers_fails_the_first_run_with_its_stderr() {
    let server = mcp::stdio("sh", ["-c", "echo 'waiting for a licence key' >&2; exec sleep 60"])
        .name("mute")
        .handshake_timeout(Duration::from_secs(1));
    let (model, shared) = scripted([ScriptedTurn::text("unreachable")]);
    let agent = Agent::builder().model(shared).capability(server).build().unwrap();
    let started = Instant::now();
    let result = within(10, "run", agent.run("go")).await;
    let result = failed_result(result.unwrap_err());
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.kind, RunErrorKind::Config);
    assert!(error.message.contains("MCP server `mute` did not answer the handshake within 1s"), "{}", error.message);
    assert!(error.message.contains("waiting for a licence key"), "{}", error.message);
    assert!(model.requests().is_empty(), "the model is not called without its tools");
}

#[test]
fn two_servers_with_one_name_are_refused() {
    let (_, shared) = scripted([ScriptedTurn::text("x")]);
    let err = Agent::builder()
        .model(shared)
        .capability(mcp::stdio("a", ["x"]).name("same"))
        .capability(mcp::http("http://127.0.0.1:1/mcp").name("same"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("named `same`"), "{err}");
}

#[path = "../../loom-mcp/tests/support/oauth_server.rs"]
mod oauth_server;

#[tokio::test]
async fn an_mcp_tool_behind_oauth_is_called_after_the_flow_and_the_token_is_reused() {
    use oauth_server::{Behaviour, OAuthMcpServer};
    let mock = OAuthMcpServer::start(Behaviour::default()).await;
    let server = mcp::http(mock.url()).name("secure").oauth(mcp::oauth::OAuthConfig::new("loom-agent-test"));
    let (_model, shared) = scripted([
        ScriptedTurn::tool_call("secure__whoami", json!({})),
        ScriptedTurn::text("first"),
        ScriptedTurn::tool_call("secure__whoami", json!({})),
        ScriptedTurn::text("second"),
    ]);
    // No connect(): the first run connects, meets the challenge and authorizes.
    let agent = Agent::builder().model(shared).capability(server).build().unwrap();
    let first = within(30, "run", agent.run("who am I?")).await.unwrap();
    assert_eq!(first.state, RunState::Completed, "{:?}", first.error);
    let results = tool_results(&first.events);
    assert_eq!((results[0].output.as_str(), results[0].is_error), ("authorized call #1", false));
    let counts = mock.counts();
    assert_eq!((counts.challenges, counts.authorizations, counts.code_grants), (1, 1, 1), "{counts:?}");

    let second = within(30, "run", agent.run("and now?")).await.unwrap();
    assert_eq!(second.state, RunState::Completed, "{:?}", second.error);
    assert_eq!(tool_results(&second.events)[0].output, "authorized call #2");
    assert_eq!(mock.counts().authorizations, 1, "the second run reuses the token");
}

#[tokio::test]
async fn a_refused_oauth_authorization_fails_the_run_clearly() {
    use oauth_server::{Behaviour, OAuthMcpServer};
    let mock = OAuthMcpServer::start(Behaviour { deny: true, ..Behaviour::default() }).await;
    let config = mcp::oauth::OAuthConfig::new("loom-agent-test").preregistered("client-7", Some("s3cr3t".into()));
    let server = mcp::http(mock.url()).name("secure").oauth(config);
    let (_model, shared) = scripted([ScriptedTurn::text("unreachable")]);
    let agent = Agent::builder().model(shared).capability(server).build().unwrap();
    let result = failed_result(within(30, "run", agent.run("go")).await.unwrap_err());
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.unwrap();
    assert!(
        error.message.contains("OAuth authorization failed") && error.message.contains("access_denied"),
        "{}",
        error.message
    );
    assert!(!error.message.contains("s3cr3t"), "{}", error.message);
    assert_eq!(mock.counts().tool_calls, 0);
}
