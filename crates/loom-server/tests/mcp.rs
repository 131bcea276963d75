//! `/mcp`: the server's agents as MCP tools over Streamable HTTP, checked with loom-mcp's client,
//! with a Loom agent whose MCP capability points at the server, with the official TypeScript SDK's
//! client (node, when installed), and for auth and tenant isolation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use loom_agent::config::ServerConfig;
use loom_agent::governance::{Approval, FnApproval};
use loom_agent::model::{FnModel, ScriptedTurn};
use loom_agent::{Agent, Message};
use loom_mcp::model::{CallToolResult, ContentBlock};
use loom_server::{AppState, Server};
use serde_json::{Value, json};

/// A model that shows what it saw: `history` answers with the earlier user messages of the
/// session; `fail` fails; `tool` calls `danger` (which waits for an approval); otherwise it echoes.
fn model() -> FnModel {
    FnModel::new("mcp-test-model", |req| {
        if let Some(Message::Tool { content, .. }) = req.messages.last() {
            return ScriptedTurn::text(format!("done: {content}"));
        }
        let users: Vec<String> = req.messages.iter().filter(|m| m.role() == "user").map(Message::text).collect();
        let last = users.last().cloned().unwrap_or_default();
        if last.starts_with("history") {
            ScriptedTurn::text(format!("earlier: [{}]", users[..users.len() - 1].join(" | ")))
        } else if last.starts_with("fail") {
            ScriptedTurn::error("the model is down")
        } else if last.starts_with("tool") {
            ScriptedTurn::tool_call("danger", json!({"x": 1}))
        } else if last.starts_with("slow") {
            ScriptedTurn::text(format!("Echo: {last}")).with_delay(Duration::from_secs(30))
        } else {
            ScriptedTurn::text(format!("Echo: {last}"))
        }
    })
}

struct Mcp {
    base: String,
    key_a: String,
    key_b: String,
    dir: PathBuf,
}

impl Drop for Mcp {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// A server with two agents (`bot`, `helper`) and two tenants' keys.
async fn start() -> Mcp {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("loom-server-mcp-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("loom.db").display());
    let keys = loom_agent::store::open_api_keys(&url).await.unwrap();
    let (_, key_a) = loom_server::create_key(keys.as_ref(), "acme").await.unwrap();
    let (_, key_b) = loom_server::create_key(keys.as_ref(), "globex").await.unwrap();
    let bot = Agent::builder()
        .name("bot")
        .instructions("You answer questions about the weather.")
        .model(model())
        .tool(support::Danger)
        .journal(url.as_str())
        .approval_handler(FnApproval::new(|_| async { Approval::Defer }))
        .build()
        .unwrap();
    let helper = Agent::builder().name("helper").model(model()).journal(url.as_str()).build().unwrap();
    let agents = BTreeMap::from([("bot".to_string(), bot), ("helper".to_string(), helper)]);
    let server = Server::new(AppState::new(agents, Some(keys), None), ServerConfig::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve_on(listener).await.unwrap() });
    Mcp { base: format!("http://{addr}"), key_a, key_b, dir }
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| match c {
            ContentBlock::Text(t) => Some(t.text.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn meta(r: &CallToolResult, key: &str) -> String {
    r.meta.as_ref().and_then(|m| m.0.get(key)).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn client(s: &Mcp, key: &str) -> loom_mcp::McpServer {
    loom_mcp::http(format!("{}/mcp", s.base)).bearer(key).name("loom").handshake_timeout(Duration::from_secs(10))
}

#[tokio::test]
async fn loom_mcp_client_lists_and_calls_the_agents() {
    let s = start().await;
    let client = client(&s, &s.key_a).connect().await.unwrap();
    let version = client.protocol_version().await.unwrap();
    assert!(["2026-07-28", "2025-11-25"].contains(&version.as_str()), "{version}");
    let info = client.server_info().await.unwrap();
    assert_eq!(info.map(|i| i.name).as_deref(), Some("loom"));
    let tools = client.tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
    assert_eq!(names, ["loom__bot", "loom__helper"]);
    assert!(tools[0].description().contains("weather"), "{}", tools[0].description());
    let schema = tools[0].parameters();
    assert_eq!(schema["required"], json!(["message"]));
    assert_eq!(schema["properties"]["session_id"]["type"], "string");

    let first = client.call_tool("bot", json!({"message": "hello there"})).await.unwrap();
    assert_ne!(first.is_error, Some(true), "{first:?}");
    assert_eq!(text(&first), "Echo: hello there");
    let session = meta(&first, "loom/session_id");
    let run_id = meta(&first, "loom/run_id");
    assert!(!session.is_empty() && !run_id.is_empty(), "{first:?}");
    assert_eq!(meta(&first, "loom/state"), "completed");

    // The same session: the second call sees the first in its history.
    let second = client.call_tool("bot", json!({"message": "history please", "session_id": session})).await.unwrap();
    assert_eq!(text(&second), "earlier: [hello there]");
    assert_eq!(meta(&second, "loom/session_id"), session);
    // A new session sees nothing.
    let fresh = client.call_tool("bot", json!({"message": "history please"})).await.unwrap();
    assert_eq!(text(&fresh), "earlier: []");
    // The other agent is another tool.
    let other = client.call_tool("helper", json!({"message": "hi helper"})).await.unwrap();
    assert_eq!(text(&other), "Echo: hi helper");

    // The run is the tenant's, through the REST API too.
    let http = reqwest::Client::new();
    let r = http.get(format!("{}/runs/{run_id}", s.base)).bearer_auth(&s.key_a).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let run: Value = r.json().await.unwrap();
    assert_eq!((run["output"].as_str(), run["agent"].as_str()), (Some("Echo: hello there"), Some("bot")));
}

#[tokio::test]
async fn failed_and_suspended_runs_and_bad_calls_are_tool_errors() {
    let s = start().await;
    let client = client(&s, &s.key_a).connect().await.unwrap();
    let failed = client.call_tool("bot", json!({"message": "fail now"})).await.unwrap();
    assert_eq!(failed.is_error, Some(true), "{failed:?}");
    let t = text(&failed);
    assert!(t.contains("failed") && t.contains("the model is down"), "{t}");
    assert_eq!(meta(&failed, "loom/state"), "failed");

    let suspended = client.call_tool("bot", json!({"message": "tool please"})).await.unwrap();
    assert_eq!(suspended.is_error, Some(true), "{suspended:?}");
    let t = text(&suspended);
    assert!(t.contains("suspended") && t.contains("/approvals"), "{t}");
    // The pending approval is there to decide, for this tenant only.
    let http = reqwest::Client::new();
    let pending: Value =
        http.get(format!("{}/approvals", s.base)).bearer_auth(&s.key_a).send().await.unwrap().json().await.unwrap();
    assert_eq!(pending["approvals"][0]["tool"], "danger", "{pending}");
    let other: Value =
        http.get(format!("{}/approvals", s.base)).bearer_auth(&s.key_b).send().await.unwrap().json().await.unwrap();
    assert_eq!(other["approvals"], json!([]));

    for (args, expected) in [
        (json!({}), "`message` is required"),
        (json!({"message": 7}), "`message` must be a string"),
        (json!({"message": "x", "user_id": "u"}), "unknown argument `user_id`"),
    ] {
        let r = client.call_tool("bot", args).await.unwrap();
        assert_eq!(r.is_error, Some(true));
        assert!(text(&r).contains(expected), "{}", text(&r));
    }
    let r = client.call_tool("nobody", json!({"message": "x"})).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("unknown tool `nobody`"), "{}", text(&r));
}

#[tokio::test]
async fn mcp_needs_a_key_and_keeps_tenants_apart() {
    let s = start().await;
    let http = reqwest::Client::new();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    for key in [None, Some("loom_wrong")] {
        let mut req =
            http.post(format!("{}/mcp", s.base)).header("accept", "application/json, text/event-stream").json(&init);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        assert_eq!(req.send().await.unwrap().status(), 401, "{key:?}");
    }
    let refused = client(&s, "loom_wrong").connect().await;
    assert!(refused.is_err(), "a wrong key cannot connect");
    // With a key: the raw handshake answers (JSON or SSE).
    let r = http
        .post(format!("{}/mcp", s.base))
        .bearer_auth(&s.key_a)
        .header("accept", "application/json, text/event-stream")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("\"protocolVersion\":\"2025-11-25\""), "{body}");

    // Tenant A's session `shared`, and tenant B's session of the same id: two conversations.
    let a = client(&s, &s.key_a).connect().await.unwrap();
    let b = client(&s, &s.key_b).connect().await.unwrap();
    let first = a.call_tool("bot", json!({"message": "secret of acme", "session_id": "shared"})).await.unwrap();
    assert_eq!(text(&first), "Echo: secret of acme");
    let seen_by_b = b.call_tool("bot", json!({"message": "history", "session_id": "shared"})).await.unwrap();
    assert_eq!(text(&seen_by_b), "earlier: []", "tenant B sees nothing of tenant A's session");
    let seen_by_a = a.call_tool("bot", json!({"message": "history", "session_id": "shared"})).await.unwrap();
    assert_eq!(text(&seen_by_a), "earlier: [secret of acme]");
    // A's run through the REST API: 404 for B, as if it did not exist.
    let run_id = meta(&first, "loom/run_id");
    let r = http.get(format!("{}/runs/{run_id}", s.base)).bearer_auth(&s.key_b).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = http.get(format!("{}/sessions/shared/history", s.base)).bearer_auth(&s.key_b).send().await.unwrap();
    let history: Value = r.json().await.unwrap();
    assert!(!history.to_string().contains("secret of acme"), "{history}");
}

#[tokio::test]
async fn a_loom_agent_uses_a_served_agent_through_its_mcp_capability() {
    let s = start().await;
    let remote = loom_agent::capability::mcp::http(format!("{}/mcp", s.base)).bearer(&s.key_a).name("remote");
    let asked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = asked.clone();
    let caller = Agent::builder()
        .name("caller")
        .model(FnModel::new("caller-model", |req| {
            if let Some(Message::Tool { content, .. }) = req.messages.last() {
                return ScriptedTurn::text(format!("the remote agent said: {content}"));
            }
            ScriptedTurn::tool_call("remote__bot", json!({"message": "forecast for Paris"}))
        }))
        .capability(remote)
        // An MCP tool without annotations may be destructive: it needs approval.
        .approval_handler(FnApproval::new(move |request| {
            let asked = asked.clone();
            async move {
                asked.lock().unwrap().push(request.tool.name.clone());
                Approval::Allow
            }
        }))
        .build()
        .unwrap();
    let result = caller.run("ask the remote one").await.unwrap();
    assert_eq!(result.state, loom_agent::RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "the remote agent said: Echo: forecast for Paris");
    assert_eq!(*seen.lock().unwrap(), ["remote__bot"]);
    // The served run belongs to the key's tenant: listed for A, not for B.
    let http = reqwest::Client::new();
    let list = |key: String| {
        let http = http.clone();
        let url = format!("{}/runs", s.base);
        async move { http.get(url).bearer_auth(key).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let a = list(s.key_a.clone()).await;
    assert_eq!(a["runs"][0]["input"], json!({"prompt": "forecast for Paris"}), "{a}");
    assert_eq!(a["runs"][0]["output"], "Echo: forecast for Paris");
    assert_eq!(list(s.key_b.clone()).await["runs"], json!([]));
}

/// The official TypeScript SDK's client (`@modelcontextprotocol/sdk`, installed under
/// `$LOOM_MCP_CACHE` with the reference server): connect with the bearer key, list, call.
#[tokio::test]
async fn the_typescript_sdk_client_calls_an_agent() {
    let cache = match std::env::var_os("LOOM_MCP_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache/loom-mcp"),
    };
    let sdk = cache.join("node_modules/@modelcontextprotocol/sdk/dist/esm/client");
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !node || !sdk.join("index.js").exists() {
        println!(
            "skipped: node or {} is missing (installed with @modelcontextprotocol/server-everything)",
            sdk.display()
        );
        return;
    }
    let s = start().await;
    let script = format!(
        r#"
import {{ Client }} from "{client}";
import {{ StreamableHTTPClientTransport }} from "{transport}";
const [url, key] = process.argv.slice(2);
const client = new Client({{ name: "ts-client", version: "1.0.0" }});
const transport = new StreamableHTTPClientTransport(new URL(url), {{ requestInit: {{ headers: {{ Authorization: `Bearer ${{key}}` }} }} }});
await client.connect(transport);
console.log(client.getServerVersion().name);
const tools = await client.listTools();
console.log(tools.tools.map((t) => t.name).join(","));
const r = await client.callTool({{ name: "bot", arguments: {{ message: "from typescript" }} }});
console.log(r.content[0].text);
const again = await client.callTool({{ name: "bot", arguments: {{ message: "history", session_id: r._meta["loom/session_id"] }} }});
console.log(again.content[0].text);
const bad = await client.callTool({{ name: "bot", arguments: {{ message: "fail" }} }});
console.log(bad.isError);
await client.close();
"#,
        client = sdk.join("index.js").display(),
        transport = sdk.join("streamableHttp.js").display(),
    );
    let file = s.dir.join("client.mjs");
    std::fs::write(&file, script).unwrap();
    let out = tokio::process::Command::new("node")
        .arg(&file)
        .arg(format!("{}/mcp", s.base))
        .arg(&s.key_a)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["loom", "bot,helper", "Echo: from typescript", "earlier: [from typescript]", "true"]);
}

#[tokio::test]
async fn a_cancelled_mcp_request_cancels_the_run() {
    let s = start().await;
    let client = client(&s, &s.key_a).connect().await.unwrap();
    // The client gives up (its request future is dropped: rmcp cancels the request).
    let call = client.call_tool("bot", json!({"message": "slow answer"}));
    assert!(tokio::time::timeout(Duration::from_millis(500), call).await.is_err());
    // The run on the server ends cancelled instead of running on unobserved.
    let http = reqwest::Client::new();
    let mut state = String::new();
    for _ in 0..100 {
        let list: Value =
            http.get(format!("{}/runs", s.base)).bearer_auth(&s.key_a).send().await.unwrap().json().await.unwrap();
        state = list["runs"][0]["state"].as_str().unwrap_or_default().to_string();
        if state == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "cancelled");
}
