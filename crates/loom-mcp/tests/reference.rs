//! The MCP client against real servers it starts itself: the npm reference server
//! (`@modelcontextprotocol/server-everything`) over stdio and Streamable HTTP, a scripted server
//! on the same SDK, and processes that never answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loom_core::tool::{CancellationToken, Tool, ToolContext, ToolErrorKind};
use loom_mcp::{McpClient, McpServer};
use serde_json::json;

fn node() -> String {
    "node".to_string()
}

fn everything(entry: &Path) -> McpServer {
    loom_mcp::stdio(node(), [entry.display().to_string(), "stdio".to_string()]).name("everything")
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loom-mcp-{tag}-{}-{}", std::process::id(), fastrand_u64()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

async fn tool(client: &McpClient, name: &str) -> Arc<dyn Tool> {
    let tools = client.tools().await.unwrap();
    tools.into_iter().find(|t| t.name() == name).unwrap_or_else(|| panic!("no tool {name}"))
}

fn ctx() -> ToolContext {
    ToolContext::detached("run_test", "session_test")
}

fn pid_alive(pid: u32) -> bool {
    // A zombie (dead, not yet reaped) counts as dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

async fn wait_dead(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !pid_alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn stdio_tools_calls_structured_output_images_resources_and_prompts() {
    let Some(entry) = support::reference_server() else { return };
    let server = everything(&entry);
    let client = server.connect().await.unwrap();
    // The reference server (SDK 1.x) answers `server/discover` with an error: the client falls
    // back to the `initialize` handshake.
    assert_eq!(client.protocol_version().await.unwrap(), "2025-11-25");
    assert_eq!(client.server_info().await.unwrap().unwrap().name, "mcp-servers/everything");

    let tools = client.tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
    for expected in ["everything__echo", "everything__get-sum", "everything__get-env", "everything__get-tiny-image"] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    assert!(names.iter().all(|n| n.starts_with("everything__")), "{names:?}");
    let echo = tool(&client, "everything__echo").await;
    let flags = echo.flags();
    assert!(flags.read_only && flags.idempotent && !flags.destructive, "{flags:?}");
    // The schema as the server gave it.
    assert_eq!(echo.parameters()["properties"]["message"]["type"], "string");

    let out = echo.call(ctx(), json!({"message": "hi there"})).await.unwrap();
    assert_eq!(out.content, "Echo: hi there");
    let sum = tool(&client, "everything__get-sum").await;
    assert_eq!(sum.call(ctx(), json!({"a": 2, "b": 3})).await.unwrap().content, "The sum of 2 and 3 is 5.");

    // Bad arguments: the server's validation error reaches the model as a tool error.
    let err = sum.call(ctx(), json!({"a": "two"})).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("invalid") || err.to_string().contains("expected"), "{err}");

    let structured = tool(&client, "everything__get-structured-content").await;
    let out = structured.call(ctx(), json!({"location": "Chicago"})).await.unwrap();
    let value: serde_json::Value = serde_json::from_str(&out.content).unwrap();
    assert_eq!(value, json!({"temperature": 36, "conditions": "Light rain / drizzle", "humidity": 82}));
    let raw = client.call_tool("get-structured-content", json!({"location": "Chicago"})).await.unwrap();
    assert_eq!(raw.structured_content, Some(value));

    let image = tool(&client, "everything__get-tiny-image").await;
    let out = image.call(ctx(), json!({})).await.unwrap();
    assert!(out.content.starts_with("Here's the image you requested:\n[image image/png, about "), "{}", out.content);
    assert!(out.content.contains("saved as artifact art"), "{}", out.content);
    assert!(out.content.ends_with("The image above is the MCP logo."));

    let links = tool(&client, "everything__get-resource-links").await;
    let out = links.call(ctx(), json!({"count": 2})).await.unwrap();
    assert!(out.content.contains("[resource link: "), "{}", out.content);
    assert!(out.content.contains("<demo://resource/"), "{}", out.content);

    let resources = client.list_resources().await.unwrap();
    assert!(!resources.is_empty());
    let first = &resources[0];
    let read = client.read_resource(&first.uri).await.unwrap();
    assert!(!read.contents.is_empty(), "{read:?}");
    let missing = client.read_resource("demo://nothing/here").await.unwrap_err();
    assert!(missing.to_string().contains("MCP server `everything`"), "{missing}");

    let prompts = client.list_prompts().await.unwrap();
    assert!(prompts.iter().any(|p| p.name == "simple-prompt"), "{prompts:?}");
    let prompt = client.get_prompt("simple-prompt", json!({})).await.unwrap();
    assert!(!prompt.messages.is_empty());
    let args_prompt = prompts.iter().find(|p| p.name == "args-prompt").expect("args-prompt");
    assert!(args_prompt.arguments.as_ref().is_some_and(|a| !a.is_empty()));
}

#[tokio::test]
async fn allow_and_deny_filters() {
    let Some(entry) = support::reference_server() else { return };
    let server = everything(&entry).allow_tools(["get-*", "echo"]).deny_tools(["get-env"]);
    let client = server.connect().await.unwrap();
    let tools = client.tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
    assert!(names.contains(&"everything__echo") && names.contains(&"everything__get-sum"), "{names:?}");
    assert!(!names.contains(&"everything__get-env"), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("trigger")), "{names:?}");
}

/// The real check runs in a child copy of this test binary whose environment holds secrets.
#[test]
fn the_server_environment_is_scrubbed() {
    if support::reference_server().is_none() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["env_scrub_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("LOOM_MCP_ENV_CHILD", "1")
        .env("OPENAI_API_KEY", "sk-test-not-for-servers")
        .env("ANTHROPIC_API_KEY", "sk-ant-test-not-for-servers")
        .env("LOOM_AUDIT_KEY", "loom-secret-not-for-servers")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("env scrub checked"), "{stdout}\n{stderr}");
}

#[tokio::test]
async fn env_scrub_child() {
    if std::env::var_os("LOOM_MCP_ENV_CHILD").is_none() {
        return; // only meaningful in the child started above
    }
    let Some(entry) = support::reference_server() else { return };
    let server = everything(&entry).env("GIVEN_BY_CONFIG", "yes");
    let client = server.connect().await.unwrap();
    let env = tool(&client, "everything__get-env").await;
    let out = env.call(ctx(), json!({})).await.unwrap().content;
    let vars: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(!out.contains("not-for-servers"), "{out}");
    assert!(!vars.keys().any(|k| k.starts_with("LOOM_") || k.ends_with("_API_KEY")), "{out}");
    assert_eq!(vars["GIVEN_BY_CONFIG"], "yes");
    assert!(vars.contains_key("PATH"));
    println!("env scrub checked");
}

#[tokio::test]
async fn a_killed_server_fails_the_call_clearly_and_the_next_call_restarts_it() {
    let Some(entry) = support::reference_server() else { return };
    let server = everything(&entry);
    let client = server.connect().await.unwrap();
    let echo = tool(&client, "everything__echo").await;
    assert_eq!(echo.call(ctx(), json!({"message": "one"})).await.unwrap().content, "Echo: one");
    let pid = client.process_id().await.unwrap();
    let generation = client.tools_generation();

    // Killed in the middle of a call.
    let long = tool(&client, "everything__trigger-long-running-operation").await;
    let call = tokio::spawn({
        let long = long.clone();
        async move { long.call(ctx(), json!({"duration": 20, "steps": 2})).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    let started = Instant::now();
    let err = call.await.unwrap().unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let message = err.to_string();
    assert!(message.contains("MCP server `everything`"), "{message}");
    assert!(message.contains("connection closed"), "{message}");
    assert!(message.contains("signal: 9") || message.contains("SIGKILL"), "{message}");
    assert!(message.contains("the next request reconnects"), "{message}");

    // The next call starts a new process.
    assert_eq!(echo.call(ctx(), json!({"message": "two"})).await.unwrap().content, "Echo: two");
    let new_pid = client.process_id().await.unwrap();
    assert_ne!(pid, new_pid);
    assert!(client.tools_generation() > generation, "a restart makes agents reload the tools");
}

#[tokio::test]
async fn a_server_that_never_answers_fails_within_the_handshake_timeout_with_its_stderr() {
    let server = loom_mcp::stdio(
        "sh",
        [
            "-c",
            "echo \"pid $$\" >&2; read -r first; echo \"got $first\" >&2; \
             echo 'fatal: the config file is missing' >&2; exec sleep 60",
        ],
    )
    .name("mute")
    .handshake_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let err = server.connect().await.unwrap_err();
    let elapsed = started.elapsed();
    // The timeout plus a little (kill, stderr), with room for a loaded machine.
    assert!(elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(5), "{elapsed:?}");
    let message = err.to_string();
    assert!(message.starts_with("MCP server `mute` did not answer the handshake within 2s"), "{message}");
    assert!(message.contains("fatal: the config file is missing"), "{message}");
    // The client tried the 2026-07-28 lifecycle first.
    assert!(message.contains(r#""method":"server/discover""#), "{message}");
    assert!(message.contains("2026-07-28"), "{message}");
    let pid: u32 = message.split("pid ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(wait_dead(pid).await, "the mute server {pid} was not killed");
}

#[tokio::test]
async fn a_server_that_exits_at_once_shows_its_stderr() {
    let server =
        loom_mcp::stdio("sh", ["-c", "echo 'cannot open database: permission denied' >&2; exit 3"]).name("broken");
    let err = server.connect().await.unwrap_err().to_string();
    assert!(err.starts_with("MCP server `broken`: the handshake failed"), "{err}");
    assert!(err.contains("cannot open database: permission denied"), "{err}");
    let missing = loom_mcp::stdio("/nonexistent/mcp-server", Vec::<String>::new()).connect().await.unwrap_err();
    assert!(missing.to_string().contains("cannot start `/nonexistent/mcp-server`"), "{missing}");
}

#[tokio::test]
async fn dropping_the_server_kills_its_process_group() {
    let Some(entry) = support::reference_server() else { return };
    // A shell that starts the server as a grandchild: the group, not just the shell, must die.
    let script = format!("exec 3<&0; node '{}' stdio <&3 & echo \"child $!\" >&2; wait", entry.display());
    let server = loom_mcp::stdio("sh", ["-c", script.as_str()]).name("wrapped");
    let client = server.connect().await.unwrap();
    let shell = client.process_id().await.unwrap();
    let tail = client.stderr_tail().await;
    let grandchild: u32 = tail.split("child ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(pid_alive(shell) && pid_alive(grandchild));
    drop(client);
    drop(server);
    assert!(wait_dead(grandchild).await, "the server {grandchild} outlived its client");
    assert!(wait_dead(shell).await);
}

#[tokio::test]
async fn cancellation_and_timeouts_cancel_the_request_on_the_server() {
    let dir = temp_dir("cancel");
    let Some(script) = support::scripted_server(&dir) else { return };
    let server = loom_mcp::stdio(node(), [script.display().to_string()]).name("scripted");
    let client = server.connect().await.unwrap();
    let slow = tool(&client, "scripted__slow").await;

    let cancel = CancellationToken::new();
    let scope = loom_core::run::Scope { run_id: "run_c".into(), session_id: "session_c".into(), user_id: None };
    let ctx = ToolContext::for_call(&scope, "call_1", cancel.clone(), None);
    let started = Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    });
    let err = slow.call(ctx, json!({})).await.unwrap_err();
    canceller.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(err.kind(), ToolErrorKind::Cancelled);
    assert!(err.to_string().contains("was cancelled"), "{err}");
    // The server saw `notifications/cancelled` for the request.
    assert!(wait_for_stderr(&client, "cancelled request").await, "{}", client.stderr_tail().await);

    // The per-call timeout does the same.
    let timed = loom_mcp::stdio(node(), [script.display().to_string()])
        .name("scripted")
        .call_timeout(Duration::from_millis(400));
    let timed_client = timed.connect().await.unwrap();
    let slow = tool(&timed_client, "scripted__slow").await;
    assert_eq!(slow.timeout(), Some(Duration::from_millis(2400)));
    let started = Instant::now();
    let err = slow.call(ToolContext::detached("r", "s"), json!({})).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(err.kind(), ToolErrorKind::Timeout);
    assert!(err.to_string().contains("did not finish within 400ms"), "{err}");
    assert!(wait_for_stderr(&timed_client, "cancelled request").await);

    // The connection still works after both.
    let plain = tool(&client, "scripted__plain").await;
    assert_eq!(plain.call(ToolContext::detached("r", "s"), json!({})).await.unwrap().content, "plain");
    let _ = std::fs::remove_dir_all(dir);
}

async fn wait_for_stderr(client: &McpClient, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if client.stderr_tail().await.contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn errors_list_changed_and_unannotated_tools() {
    let dir = temp_dir("changed");
    let Some(script) = support::scripted_server(&dir) else { return };
    let server = loom_mcp::stdio(node(), [script.display().to_string()]).name("scripted");
    let client = server.connect().await.unwrap();

    let fails = tool(&client, "scripted__fails").await;
    let err = fails.call(ctx(), json!({})).await.unwrap_err();
    assert_eq!(err.kind(), ToolErrorKind::Failed);
    assert_eq!(err.to_string(), "it broke: disk on fire");

    // No annotations: destructive by the MCP default, so it asks for approval.
    let plain = tool(&client, "scripted__plain").await;
    assert!(plain.flags().destructive && !plain.flags().read_only);

    let before = client.tools_generation();
    assert!(client.tools().await.unwrap().iter().all(|t| t.name() != "scripted__late"));
    let add = tool(&client, "scripted__add_tool").await;
    assert!(!add.flags().destructive && !add.flags().read_only);
    assert_eq!(add.call(ctx(), json!({})).await.unwrap().content, "added");
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.tools_generation() == before {
        assert!(Instant::now() < deadline, "no notifications/tools/list_changed seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let late = tool(&client, "scripted__late").await;
    assert_eq!(late.call(ctx(), json!({})).await.unwrap().content, "late tool ran");
    let _ = std::fs::remove_dir_all(dir);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn streamable_http_with_a_bearer_token() {
    let Some(entry) = support::reference_server() else { return };
    let port = free_port();
    let mut child = tokio::process::Command::new(node())
        .arg(&entry)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "the HTTP server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = format!("http://127.0.0.1:{port}/mcp");
    let server = loom_mcp::http(&url).bearer("test-token").header("X-Trace", "loom-test");
    assert_eq!(server.server_name(), "127_0_0_1");
    let shown = format!("{server:?}");
    assert!(!shown.contains("test-token") && !shown.contains("loom-test"), "{shown}");
    let client = server.connect().await.unwrap();
    assert_eq!(client.protocol_version().await.unwrap(), "2025-11-25");
    let echo = tool(&client, "127_0_0_1__echo").await;
    assert_eq!(echo.call(ctx(), json!({"message": "over http"})).await.unwrap().content, "Echo: over http");
    let structured = tool(&client, "127_0_0_1__get-structured-content").await;
    let out = structured.call(ctx(), json!({"location": "New York"})).await.unwrap();
    assert!(out.content.contains("\"temperature\":33"), "{}", out.content);
    assert!(!client.list_prompts().await.unwrap().is_empty());

    // A port nobody listens on: a handshake error, not a hang.
    let nobody = loom_mcp::http(format!("http://127.0.0.1:{}/mcp", free_port()))
        .name("nobody")
        .handshake_timeout(Duration::from_secs(5));
    let started = Instant::now();
    let err = nobody.connect().await.unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(err.starts_with("MCP server `nobody`"), "{err}");
    child.kill().await.unwrap();
}

async fn start_http(entry: &Path, port: u16) -> tokio::process::Child {
    let child = tokio::process::Command::new(node())
        .arg(entry)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "the HTTP server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child
}

#[tokio::test]
async fn an_http_server_that_restarts_is_reconnected() {
    let Some(entry) = support::reference_server() else { return };
    let port = free_port();
    let mut first = start_http(&entry, port).await;
    let server =
        loom_mcp::http(format!("http://127.0.0.1:{port}/mcp")).name("web").handshake_timeout(Duration::from_secs(5));
    let client = server.connect().await.unwrap();
    let echo = tool(&client, "web__echo").await;
    assert_eq!(echo.call(ctx(), json!({"message": "one"})).await.unwrap().content, "Echo: one");
    first.kill().await.unwrap();
    let _ = first.wait().await;

    let started = Instant::now();
    let err = echo.call(ctx(), json!({"message": "lost"})).await.unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(err.contains("MCP server `web`"), "{err}");
    assert!(err.contains("the connection closed") && err.contains("the next request reconnects"), "{err}");

    let _second = start_http(&entry, port).await;
    // One call: the dead connection was dropped, this one opens a new session.
    let answer = echo.call(ctx(), json!({"message": "two"})).await;
    assert_eq!(answer.unwrap().content, "Echo: two");
}

#[tokio::test]
async fn elicitation_is_answered_by_the_callback_or_not_offered() {
    let Some(entry) = support::reference_server() else { return };
    // Without a callback the client does not advertise elicitation: the server offers no tool
    // that needs it.
    let plain = everything(&entry).connect().await.unwrap();
    let names: Vec<String> = plain.tools().await.unwrap().iter().map(|t| t.name().to_string()).collect();
    assert!(!names.iter().any(|n| n.contains("elicitation")), "{names:?}");

    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    let server = everything(&entry).elicitation(move |request: loom_mcp::ElicitationRequest| {
        seen.lock().unwrap().push(request.clone());
        async move { loom_mcp::ElicitationAnswer::Accept(json!({"name": "Ada Lovelace", "check": true})) }
    });
    let client = server.connect().await.unwrap();
    let elicit = tool(&client, "everything__trigger-elicitation-request").await;
    let out = elicit.call(ctx(), json!({})).await.unwrap().content;
    assert!(out.contains("User provided the requested information"), "{out}");
    assert!(out.contains("- Name: Ada Lovelace") && out.contains("- Agreed to terms: true"), "{out}");
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].server, "everything");
    assert_eq!(asked[0].message, "Please provide inputs for the following fields:");
    assert_eq!(asked[0].schema["properties"]["name"]["type"], "string");

    // Declined: the server goes on without the answer.
    let declining =
        everything(&entry).elicitation(|_| async { loom_mcp::ElicitationAnswer::Decline }).connect().await.unwrap();
    let elicit = tool(&declining, "everything__trigger-elicitation-request").await;
    let out = elicit.call(ctx(), json!({})).await.unwrap().content;
    assert!(out.contains("declined"), "{out}");
}
