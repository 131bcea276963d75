//! The client side of each scenario of `conformance client` (spec 2025-11-25).

use std::sync::Arc;
use std::time::Duration;

use rmcp::ClientHandler;
use rmcp::model::{ClientCapabilities, Implementation, InitializeRequestParams, ProtocolVersion};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use loom_core::tool::{Tool as LoomTool, ToolContext};
use loom_mcp::{ElicitationAnswer, ElicitationRequest};

use crate::elicitation::apply_schema_defaults;
use loom_mcp::oauth::{OAuthConfig, OAuthError};

/// The Client ID Metadata Document URL the suite's authorization servers accept (SEP-991).
pub const CIMD_CLIENT_METADATA_URL: &str = "https://conformance-test.local/client-metadata.json";

/// What the suite passes in `MCP_CONFORMANCE_CONTEXT` (fields of the scenarios this client runs).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Context {
    /// Pre-registered client id (`auth/pre-registration`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Pre-registered client secret (`auth/pre-registration`).
    #[serde(default)]
    pub client_secret: Option<String>,
}

impl Context {
    /// Parses the suite's context JSON; an absent or empty context is the default.
    pub fn parse(raw: Option<&str>) -> Result<Self, ScenarioError> {
        match raw.map(str::trim) {
            None | Some("") => Ok(Self::default()),
            Some(raw) => serde_json::from_str(raw).map_err(|e| ScenarioError::Context(e.to_string())),
        }
    }
}

/// Why a scenario failed on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The scenario name is not one this client knows.
    #[error("unknown scenario {0:?}")]
    UnknownScenario(String),
    /// `MCP_CONFORMANCE_CONTEXT` is not valid JSON of the expected shape.
    #[error("bad MCP_CONFORMANCE_CONTEXT: {0}")]
    Context(String),
    /// The context lacks a field the scenario needs.
    #[error("MCP_CONFORMANCE_CONTEXT lacks {0}")]
    MissingContext(&'static str),
    /// Connecting (the initialize handshake) failed.
    #[error("connect: {0}")]
    Connect(String),
    /// A request after the handshake failed.
    #[error("{0}")]
    Request(String),
    /// The OAuth machinery could not be set up.
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    /// The scenario did not finish in time.
    #[error("the scenario did not finish within {0:?}")]
    Timeout(Duration),
    /// The server offered no tool the scenario needs.
    #[error("the server has no tool {0:?}")]
    MissingTool(&'static str),
}

/// The rmcp client handler of the benchmark's rmcp row: identifies as Loom and offers protocol 2025-11-25 in the
/// `initialize` handshake (the revision these scenarios test; 2026-07-28 has no `initialize`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ConformanceHandler;

impl ClientHandler for ConformanceHandler {
    fn get_info(&self) -> InitializeRequestParams {
        InitializeRequestParams::new(
            ClientCapabilities::default(),
            Implementation::new("loom-mcp-conformance-client", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }
}

/// Runs `scenario` against `server_url` within `timeout`.
pub async fn run(scenario: &str, server_url: &str, context: &Context, timeout: Duration) -> Result<(), ScenarioError> {
    tokio::time::timeout(timeout, run_inner(scenario, server_url, context))
        .await
        .map_err(|_| ScenarioError::Timeout(timeout))?
}

async fn run_inner(scenario: &str, server_url: &str, context: &Context) -> Result<(), ScenarioError> {
    match scenario {
        // Loom's own client (loom-mcp), as agents use it: connect, list the tools, call them
        // through the `Tool` trait.
        "initialize" => {
            let client = connect_loom(server_url).await?;
            client.tools().await.map_err(|e| ScenarioError::Request(e.to_string()))?;
            Ok(())
        }
        "tools_call" => {
            let client = connect_loom(server_url).await?;
            call_every_loom_tool(&client).await
        }
        "sse-retry" => {
            let client = connect_loom(server_url).await?;
            call_named_loom_tool(&client, "test_reconnection").await
        }
        "elicitation-sep1034-client-defaults" => {
            // The user "accepts without touching the form": the schema's defaults (SEP-1034).
            let server = loom_server(server_url).elicitation(|request: ElicitationRequest| async move {
                ElicitationAnswer::Accept(Value::Object(apply_schema_defaults(&request.schema, Map::new())))
            });
            let client = connect(&server).await?;
            call_named_loom_tool(&client, "test_client_elicitation_defaults").await
        }
        "auth/pre-registration" => {
            let id = context.client_id.clone().ok_or(ScenarioError::MissingContext("client_id"))?;
            let config = oauth_config().preregistered(id, context.client_secret.clone());
            run_authorized(server_url, config).await
        }
        name if name.starts_with("auth/") => run_authorized(server_url, oauth_config()).await,
        other => Err(ScenarioError::UnknownScenario(other.to_owned())),
    }
}

fn oauth_config() -> OAuthConfig {
    OAuthConfig::new("loom-mcp-conformance-client").client_metadata_url(CIMD_CLIENT_METADATA_URL)
}

/// The `auth/*` scenarios through Loom's own client, as agents use it: `McpServer::oauth` with
/// the headless user agent (the suite's authorization servers redirect without a login).
async fn run_authorized(server_url: &str, config: OAuthConfig) -> Result<(), ScenarioError> {
    let client = connect(&loom_server(server_url).oauth(config)).await?;
    call_every_loom_tool(&client).await
}

/// The name the conformance servers get in Loom (their tools are `conformance__TOOL`).
const LOOM_SERVER_NAME: &str = "conformance";

fn loom_server(server_url: &str) -> loom_mcp::McpServer {
    loom_mcp::http(server_url).name(LOOM_SERVER_NAME).handshake_timeout(Duration::from_secs(20))
}

async fn connect(server: &loom_mcp::McpServer) -> Result<loom_mcp::McpClient, ScenarioError> {
    server.connect().await.map_err(|e| ScenarioError::Connect(e.to_string()))
}

async fn connect_loom(server_url: &str) -> Result<loom_mcp::McpClient, ScenarioError> {
    connect(&loom_server(server_url)).await
}

async fn call_loom_tool(tool: &Arc<dyn LoomTool>) -> Result<(), ScenarioError> {
    let arguments = sample_arguments(&tool.parameters()).unwrap_or_default();
    tool.call(ToolContext::detached("conformance", "conformance"), Value::Object(arguments))
        .await
        .map(|_| ())
        .map_err(|e| ScenarioError::Request(format!("{}: {e}", tool.name())))
}

async fn loom_tools(client: &loom_mcp::McpClient) -> Result<Vec<Arc<dyn LoomTool>>, ScenarioError> {
    client.tools().await.map_err(|e| ScenarioError::Request(format!("tools/list: {e}")))
}

async fn call_every_loom_tool(client: &loom_mcp::McpClient) -> Result<(), ScenarioError> {
    for tool in loom_tools(client).await? {
        call_loom_tool(&tool).await?;
    }
    Ok(())
}

async fn call_named_loom_tool(client: &loom_mcp::McpClient, name: &'static str) -> Result<(), ScenarioError> {
    let full = format!("{LOOM_SERVER_NAME}{}{name}", loom_mcp::SEPARATOR);
    let tools = loom_tools(client).await?;
    let tool = tools.iter().find(|t| t.name() == full).ok_or(ScenarioError::MissingTool(name))?;
    call_loom_tool(tool).await
}

/// Arguments for a call of a tool with the input schema `schema`: a sample value of each
/// required property's type (numbers 1, 2, …), or `None` for a schema without properties.
pub fn sample_arguments(schema: &Value) -> Option<Map<String, Value>> {
    let properties = schema.get("properties").and_then(Value::as_object)?;
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut arguments = Map::new();
    let mut n = 0;
    for (name, schema) in properties {
        if !required.contains(&name.as_str()) {
            continue;
        }
        n += 1;
        let value = match schema.get("type").and_then(Value::as_str) {
            Some("number" | "integer") => json!(n),
            Some("boolean") => json!(true),
            Some("array") => json!([]),
            Some("object") => json!({}),
            _ => json!("test"),
        };
        arguments.insert(name.clone(), value);
    }
    Some(arguments)
}
