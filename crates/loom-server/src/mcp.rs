//! `/mcp`: the server's agents as an MCP server over Streamable HTTP (MCP 2025-06-18 and
//! 2025-11-25 with `initialize`; 2026-07-28 with `server/discover`), on rmcp's server side.
//!
//! Each agent is one tool, named after the agent, with the input `{message, session_id?}`: a call
//! runs the agent as the calling tenant (user `TENANT/`, the tenant's key being the only identity
//! an MCP client has) in the tenant's session of that id (a new session without one), and answers
//! with the run's output as text. A run that fails, is cancelled, is interrupted or waits for an
//! approval answers `isError: true` with what happened. The result's `_meta` carries the run's and
//! the session's ids (`loom/run_id`, `loom/session_id`), so a client can continue the session or
//! read the run through the REST API.
//!
//! Authentication is the API's: `/mcp` sits behind the same bearer-key layer, which puts the
//! [`Tenant`] in the request's extensions; rmcp hands each request's HTTP parts to the handler,
//! which reads the tenant from them. The service runs stateless (no `Mcp-Session-Id`): every
//! request carries its own key, so nothing of one tenant is kept between requests where another
//! could reach it. Progress: a call that carries a progress token gets a
//! `notifications/progress` for each tool call the agent makes. In queue mode the run is queued
//! for a worker and followed in the database (see `exec`).

use std::sync::Arc;

use loom_agent::{EventKind, RunRequest, RunResult, RunState};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, JsonObject, ListToolsResult,
    MetaObject, PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};

use crate::state::{AppState, Tenant};

/// The MCP service mounted at `/mcp`.
pub(crate) type McpService = StreamableHttpService<LoomMcp, NeverSessionManager>;

/// How much of an agent's instructions its tool's description quotes.
const DESCRIPTION_WIDTH: usize = 300;

/// The MCP handler: the agents of the server as tools.
#[derive(Clone)]
pub(crate) struct LoomMcp {
    state: Arc<AppState>,
}

/// The service for `/mcp`. `auth`: whether requests carry API keys. With keys, any `Host` is
/// accepted (a page that rebinds DNS to this server still has no key); without them (local
/// development), rmcp's DNS-rebinding guard admits loopback hosts only.
pub(crate) fn service(state: Arc<AppState>, auth: bool, max_body: usize) -> McpService {
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_max_request_body_bytes(max_body)
        .with_sse_keep_alive(None);
    if auth {
        config = config.disable_allowed_hosts();
    }
    let handler = LoomMcp { state };
    StreamableHttpService::new(move || Ok(handler.clone()), Arc::new(NeverSessionManager::default()), config)
}

/// The input schema of every agent tool.
fn input_schema() -> JsonObject {
    let schema = json!({
        "type": "object",
        "properties": {
            "message": {"type": "string", "description": "What to ask the agent."},
            "session_id": {
                "type": "string",
                "description": "Continue this session (its earlier messages are the agent's history); a new session when omitted. The result's _meta names the session.",
            },
        },
        "required": ["message"],
        "additionalProperties": false,
    });
    match schema {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

/// The tool's description: the agent's name and the start of its instructions.
fn description(name: &str, instructions: &str) -> String {
    let first = instructions.trim();
    if first.is_empty() {
        return format!("Ask the Loom agent `{name}`; it answers with text.");
    }
    let mut cut: String = first.chars().take(DESCRIPTION_WIDTH).collect();
    if cut.len() < first.len() {
        cut.push('…');
    }
    format!("Ask the Loom agent `{name}`; it answers with text. Its instructions: {cut}")
}

/// The tenant of the request (the auth layer put it in the HTTP request's extensions).
fn tenant_of(ctx: &RequestContext<RoleServer>) -> Result<Tenant, ErrorData> {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Tenant>())
        .cloned()
        .ok_or_else(|| ErrorData::internal_error("the request was not authenticated", None))
}

/// The arguments of a call: `message` (a non-empty string) and `session_id` (optional string).
fn arguments(args: Option<&JsonObject>) -> Result<(String, Option<String>), String> {
    let empty = JsonObject::new();
    let args = args.unwrap_or(&empty);
    if let Some(unknown) = args.keys().find(|k| *k != "message" && *k != "session_id") {
        return Err(format!("unknown argument `{unknown}`: the arguments are `message` and `session_id`"));
    }
    let message = match args.get("message") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => return Err("`message` is empty".into()),
        Some(_) => return Err("`message` must be a string".into()),
        None => return Err("`message` is required".into()),
    };
    let session = match args.get("session_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => return Err("`session_id` must be a non-empty string".into()),
    };
    Ok((message, session))
}

fn error_result(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// The answer of an ended run: the output, or `isError` with how it ended; `_meta` names the run
/// and its session.
fn result_of(r: &RunResult) -> CallToolResult {
    let mut result = if r.state == RunState::Completed {
        CallToolResult::success(vec![ContentBlock::text(r.output.clone())])
    } else {
        let mut text = format!("run {} {}", r.run_id, r.state);
        if let Some(e) = &r.error {
            text.push_str(": ");
            text.push_str(&e.message);
            if let Some(reason) = &e.reason {
                text.push_str(&format!(" (reason: {reason})"));
            }
        }
        if r.state == RunState::Suspended {
            text.push_str(&format!(
                "; it waits for an approval: GET /approvals, then POST /runs/{}/approvals/CALL_ID",
                r.run_id
            ));
        }
        error_result(text)
    };
    let mut meta = JsonObject::new();
    meta.insert("loom/run_id".into(), json!(r.run_id));
    meta.insert("loom/session_id".into(), json!(r.session_id));
    meta.insert("loom/state".into(), json!(r.state));
    result.meta = Some(MetaObject(meta));
    result
}

impl LoomMcp {
    async fn call(&self, request: CallToolRequestParams, ctx: RequestContext<RoleServer>) -> CallToolResult {
        let tenant = match tenant_of(&ctx) {
            Ok(t) => t,
            Err(e) => return error_result(e.message.to_string()),
        };
        let name = request.name.as_ref();
        let Some(agent) = self.state.agents.get(name).cloned() else {
            let known: Vec<&str> = self.state.agents.keys().map(String::as_str).collect();
            return error_result(format!("unknown tool `{name}`; the tools are: {}", known.join(", ")));
        };
        let (message, session_id) = match arguments(request.arguments.as_ref()) {
            Ok(a) => a,
            Err(e) => return error_result(e),
        };
        // Here, or (queue mode) queued for a worker, the answer then read from the database; the
        // tenant's daily budget as on the other routes that start runs (a start reserved
        // atomically, given back when no run started).
        let request = RunRequest::new(message).user(tenant.scoped_user(None));
        let start = async {
            if let Some(id) = session_id.as_deref() {
                crate::sessions::lookup(&self.state, &tenant, id).await?;
            }
            crate::exec::start(&self.state, &tenant, name, &agent, None, session_id.as_deref(), request).await
        };
        let run = match self.state.budgets.reserving(&tenant, start).await {
            Ok(run) => run,
            Err(e) => return error_result(e.message),
        };
        let progress = ctx.meta.get_progress_token();
        let mut events = run.events();
        let mut step = 0.0;
        loop {
            tokio::select! {
                // The client cancelled the request (or went away): the run is cancelled too.
                () = ctx.ct.cancelled() => {
                    run.cancel().await;
                    break;
                }
                event = futures::StreamExt::next(&mut events) => {
                    let Some(event) = event else { break };
                    if let (Some(token), EventKind::ToolCall(call)) = (&progress, &event.kind) {
                        step += 1.0;
                        let note = ProgressNotificationParam::new(token.clone(), step)
                            .with_message(format!("calling {}", call.call.name));
                        let _ = ctx.peer.notify_progress(note).await;
                    }
                }
            }
        }
        match run.result().await {
            Ok(r) => result_of(&r),
            Err(e) => error_result(e.message),
        }
    }
}

impl ServerHandler for LoomMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("loom", env!("CARGO_PKG_VERSION")).with_title("Loom agent server"))
            .with_instructions(
                "Each tool is a Loom agent: call it with a message (and a session_id to continue a conversation).",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        tenant_of(&ctx)?;
        let schema = Arc::new(input_schema());
        let tools = self
            .state
            .agents
            .iter()
            .map(|(name, agent)| Tool::new(name.clone(), description(name, agent.instructions()), schema.clone()))
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        Ok(self.call(request, ctx).await.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> JsonObject {
        match v {
            Value::Object(m) => m,
            _ => JsonObject::new(),
        }
    }

    #[test]
    fn arguments_are_checked() {
        assert_eq!(arguments(Some(&obj(json!({"message": "hi"})))), Ok(("hi".into(), None)));
        assert_eq!(
            arguments(Some(&obj(json!({"message": "hi", "session_id": "s1"})))),
            Ok(("hi".into(), Some("s1".into())))
        );
        assert!(arguments(None).unwrap_err().contains("required"));
        assert!(arguments(Some(&obj(json!({"message": 3})))).unwrap_err().contains("string"));
        assert!(arguments(Some(&obj(json!({"message": "  "})))).unwrap_err().contains("empty"));
        assert!(arguments(Some(&obj(json!({"message": "x", "user": "u"})))).unwrap_err().contains("`user`"));
        assert!(arguments(Some(&obj(json!({"message": "x", "session_id": 1})))).is_err());
    }

    #[test]
    fn descriptions_quote_the_instructions() {
        assert_eq!(description("bot", ""), "Ask the Loom agent `bot`; it answers with text.");
        let long = "x".repeat(400);
        let d = description("bot", &long);
        assert!(d.ends_with('…') && d.contains(&"x".repeat(DESCRIPTION_WIDTH)));
    }
}
