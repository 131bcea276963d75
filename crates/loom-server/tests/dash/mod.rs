//! A `loom serve` for the dashboard tests: the `support` server's shape (SQLite journal, two
//! tenants' keys, the `danger` tool that waits for approval) with a model that reports usage, and
//! an in-memory signed audit log shown on `/audit`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod webdriver;

use std::collections::BTreeMap;
use std::time::Duration;

use loom_agent::config::ServerConfig;
use loom_agent::governance::{Approval, FnApproval, InMemoryAuditLog};
use loom_agent::model::{FnModel, ScriptedTurn};
use loom_agent::{Agent, Message, Usage};
use loom_server::{AppState, AuditSource, Server};
use serde_json::json;

use crate::support::{Danger, TestServer};

/// What each model call reports: 120 input tokens, 30 output tokens, $0.002.
pub fn turn_usage() -> Usage {
    Usage { input_tokens: 120, output_tokens: 30, cost_usd: 0.002, ..Usage::default() }
}

/// `tool …` calls `danger` (which waits for approval), `slow …` answers after 1.5 s, anything
/// else is echoed word by word; every call reports [`turn_usage`].
pub fn model() -> FnModel {
    FnModel::new("dash-model", |req| {
        let turn = if let Some(Message::Tool { content, .. }) = req.messages.last() {
            ScriptedTurn::text(format!("done: {content}"))
        } else {
            let last = req.messages.iter().rev().find(|m| m.role() == "user").map(Message::text).unwrap_or_default();
            if last.starts_with("tool") {
                ScriptedTurn::tool_call("danger", json!({"x": 1, "path": "/tmp/report.txt"}))
            } else if last.starts_with("slow") {
                ScriptedTurn::text(format!("Echo: {last}")).streamed().with_delay(Duration::from_millis(1500))
            } else {
                ScriptedTurn::text(format!("Echo: {last}")).streamed()
            }
        };
        turn.with_usage(turn_usage())
    })
}

/// The server and its audit log.
pub struct Dash {
    pub server: TestServer,
    pub audit: InMemoryAuditLog,
}

pub async fn start() -> Dash {
    start_with(None, true).await
}

/// [`start`], with another audit log shown on `/audit` too.
pub async fn start_with_audit(extra: AuditSource) -> Dash {
    start_with(Some(extra), true).await
}

/// [`start`] without authentication (`[server] auth = false`: every request acts for `default`).
pub async fn start_without_auth() -> Dash {
    start_with(None, false).await
}

async fn start_with(extra: Option<AuditSource>, auth: bool) -> Dash {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("loom-dash-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("loom.db").display());
    let keys = loom_agent::store::open_api_keys(&url).await.unwrap();
    let (_, key_a) = loom_server::create_key(keys.as_ref(), "acme").await.unwrap();
    let (_, key_b) = loom_server::create_key(keys.as_ref(), "globex").await.unwrap();
    let audit = InMemoryAuditLog::new("dashboard-test-secret").unwrap();
    let agent = Agent::builder()
        .name("bot")
        .model(model())
        .tool(Danger)
        .journal(url.as_str())
        .audit_log(audit.clone())
        .approval_handler(FnApproval::new(|_| async { Approval::Defer }))
        .build()
        .unwrap();
    let agents = BTreeMap::from([("bot".to_string(), agent)]);
    let mut server = Server::new(AppState::new(agents, auth.then(|| keys.clone()), None), ServerConfig::default())
        .with_audit_log(AuditSource::memory("audit", audit.clone()));
    if let Some(extra) = extra {
        server = server.with_audit_log(extra);
    }
    let state = server.state().clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve_on(listener).await.unwrap() });
    let server = TestServer { base: format!("http://{addr}"), key_a, key_b, http: reqwest::Client::new(), dir, state };
    Dash { server, audit }
}
