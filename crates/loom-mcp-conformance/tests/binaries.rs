//! The crate's two binaries, run as real processes: the benchmark's stdio server answered by
//! the same client the conformance binary uses, and the conformance client's refusals.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::{Command, Stdio};

use loom_mcp_conformance::scenarios::{ConformanceHandler, sample_arguments};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::json;

const SERVER: &str = env!("CARGO_BIN_EXE_loom-mcp-bench-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_loom-mcp-conformance-client");

#[tokio::test]
async fn the_bench_server_speaks_mcp_to_our_client() {
    let mut command = tokio::process::Command::new(SERVER);
    command.stderr(Stdio::null());
    let client = ConformanceHandler.serve(TokioChildProcess::new(command).unwrap()).await.expect("initialize");
    let info = client.peer_info().expect("server info");
    assert_eq!(info.protocol_version.as_str(), "2025-11-25");

    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].name, "echo");
    let arguments =
        sample_arguments(&serde_json::Value::Object((*tools[0].input_schema).clone())).expect("echo has properties");
    assert_eq!(serde_json::Value::Object(arguments), json!({"message": "test"}));

    let params =
        CallToolRequestParams::new("echo").with_arguments(json!({"message": "héllo"}).as_object().cloned().unwrap());
    let result = client.call_tool(params).await.unwrap();
    assert_ne!(result.is_error, Some(true));
    let text = result.content[0].as_text().expect("text content");
    assert_eq!(text.text, "héllo");

    let unknown = client.call_tool(CallToolRequestParams::new("nope")).await;
    assert!(unknown.is_err(), "an unknown tool is a JSON-RPC error: {unknown:?}");
    client.cancel().await.unwrap();
}

#[test]
fn the_bench_server_answers_unknown_methods_and_bad_json_with_errors() {
    let output = Command::new(SERVER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"nope\"}\nnot json\n")?;
            drop(stdin);
            child.wait_with_output()
        })
        .unwrap();
    let lines: Vec<serde_json::Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], 7);
    assert_eq!(lines[0]["error"]["code"], -32601);
    assert_eq!(lines[1]["error"]["code"], -32700);
}

#[test]
fn the_conformance_client_refuses_what_it_cannot_run() {
    let no_url = Command::new(CLIENT).output().unwrap();
    assert_eq!(no_url.status.code(), Some(2));

    let unknown = Command::new(CLIENT)
        .arg("http://127.0.0.1:9/mcp")
        .env("MCP_CONFORMANCE_SCENARIO", "no-such-scenario")
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown scenario \"no-such-scenario\""));

    let bad_context = Command::new(CLIENT)
        .arg("http://127.0.0.1:9/mcp")
        .env("MCP_CONFORMANCE_SCENARIO", "auth/pre-registration")
        .env("MCP_CONFORMANCE_CONTEXT", "{not json")
        .output()
        .unwrap();
    assert_eq!(bad_context.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_context.stderr).contains("bad MCP_CONFORMANCE_CONTEXT"));

    let missing = Command::new(CLIENT)
        .arg("http://127.0.0.1:9/mcp")
        .env("MCP_CONFORMANCE_SCENARIO", "auth/pre-registration")
        .env("MCP_CONFORMANCE_CONTEXT", "{}")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("lacks client_id"));
}

#[test]
fn a_server_that_is_not_there_fails_the_scenario_quickly() {
    // Port 9 (discard) on loopback: nothing listens, the connection is refused.
    let started = std::time::Instant::now();
    let output = Command::new(CLIENT)
        .arg("http://127.0.0.1:9/mcp")
        .env("MCP_CONFORMANCE_SCENARIO", "initialize")
        .env("LOOM_MCP_CONFORMANCE_TIMEOUT_SECS", "10")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("initialize: "));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
