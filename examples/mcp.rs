//! An agent with an MCP server over stdio: the npm reference server
//! `@modelcontextprotocol/server-everything`, its tools offered to the model as `everything__TOOL`.
//!
//! ```rust,ignore
//! let server = mcp::stdio("npx", ["-y", "@modelcontextprotocol/server-everything"]).name("everything");
//! let client = server.connect().await?; // optional: a server that does not start fails here
//! let agent = Agent::builder().model(model).capability(server).build()?;
//! ```
//!
//! To stay offline this example does not run `npx`: it starts the copy that `.ci/run` (and the MCP
//! tests) install into `$LOOM_MCP_CACHE` (default `~/.cache/loom-mcp`) with `node`. When that copy
//! or `node` is missing it prints `skipped: …` and exits 0. Install it with
//! `npm install --prefix ~/.cache/loom-mcp @modelcontextprotocol/server-everything@2026.8.31`.
//!
//! What it shows: `connect()` (the handshake, so a broken server fails before any run), the tools
//! the agent sees (`agent.current_tools()`: MCP tools are loaded from the server, not fixed at
//! build time), a scripted model calling `everything__echo`, the answer, and the server's
//! resources listed and read through the client API (resources are not offered to the model).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use loom_agent::capability::mcp;
use loom_agent::capability::mcp::model::ResourceContents;
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use serde_json::json;

/// The reference server's entry point in the MCP cache, or why it cannot be used.
fn reference_server() -> Result<PathBuf, String> {
    let cache = match std::env::var_os("LOOM_MCP_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache/loom-mcp"),
    };
    let entry = cache.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    if !Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Err("node is not installed".into());
    }
    if !entry.is_file() {
        return Err(format!("the MCP reference server is not installed ({} is missing)", entry.display()));
    }
    Ok(entry)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let entry = match reference_server() {
        Ok(entry) => entry,
        Err(why) => {
            println!("skipped: {why}");
            return Ok(());
        }
    };

    // The server as a capability: a child process with a scrubbed environment, in its own process
    // group, killed when the agent (and every client handle) is dropped.
    let server = mcp::stdio("node", [entry.display().to_string(), "stdio".into()])
        .name("everything")
        .handshake_timeout(Duration::from_secs(20))
        .call_timeout(Duration::from_secs(10));

    // Optional: connect now, so a server that does not start or answer fails here, with its stderr.
    let client = server.connect().await?;
    println!(
        "connected to `{}`: protocol {}, server {:?}",
        client.name(),
        client.protocol_version().await?,
        client.server_info().await?.map(|info| format!("{} {}", info.name, info.version))
    );

    let model = ScriptedModel::new([
        ScriptedTurn::tool_call("everything__echo", json!({"message": "hello from Loom"})),
        ScriptedTurn::text("The server echoed the message back."),
    ]);
    let agent =
        Agent::builder().model(model).instructions("You are a helpful assistant.").capability(server).build()?;

    // `agent.tools()` holds only the fixed tools; `current_tools()` loads the server's.
    let tools = agent.current_tools().await?;
    println!("\n{} tools from the server:", tools.len());
    for tool in &tools {
        let flags = &tool.flags;
        println!(
            "  {:<40} read_only={:<5} destructive={:<5} {}",
            tool.name,
            flags.read_only,
            flags.destructive,
            tool.description.lines().next().unwrap_or_default()
        );
    }

    let result = agent.run("Echo 'hello from Loom' through the MCP server.").await?;
    println!();
    for event in result.events.iter() {
        match &event.kind {
            EventKind::ToolCall(e) => println!("tool.call   {} {}", e.call.name, e.call.arguments),
            EventKind::ToolResult(r) => println!("tool.result {} -> {:?} (error: {})", r.name, r.output, r.is_error),
            _ => {}
        }
    }
    println!("answer ({}): {}", result.state, result.output);

    // Resources (and prompts) go through the client, not the model.
    let resources = client.list_resources().await?;
    println!("\n{} resources, the first three:", resources.len());
    for resource in resources.iter().take(3) {
        println!("  {} ({}) {}", resource.name, resource.mime_type.as_deref().unwrap_or("?"), resource.uri);
    }
    if let Some(first) = resources.first() {
        let read = client.read_resource(&first.uri).await?;
        for content in &read.contents {
            match content {
                ResourceContents::TextResourceContents { uri, text, .. } => {
                    println!("read {uri}: {:?}", text.chars().take(60).collect::<String>())
                }
                ResourceContents::BlobResourceContents { uri, blob, .. } => {
                    println!("read {uri}: {} bytes of base64", blob.len())
                }
                other => println!("read: {other:?}"),
            }
        }
    }
    let prompts = client.list_prompts().await?;
    println!("{} prompts: {:?}", prompts.len(), prompts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>());
    Ok(())
}
