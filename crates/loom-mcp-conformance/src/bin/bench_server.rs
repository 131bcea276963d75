//! A minimal MCP server over stdio for the overhead benchmark: newline-delimited JSON-RPC,
//! protocol 2025-11-25, one tool `echo` that returns its `message` argument as text.
//! Its own cost per call is what the benchmark's raw JSON-RPC floor measures: the floor client
//! writes pre-serialized requests and reads the answers, so client time minus the floor is what
//! a client adds.

use std::io::{BufRead, Write};

use serde_json::{Value, json};

fn answer(request: &Value) -> Option<Value> {
    let id = request.get("id")?.clone();
    let method = request.get("method").and_then(Value::as_str).unwrap_or("");
    let result = match method {
        "initialize" => json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "loom-mcp-bench-server", "version": env!("CARGO_PKG_VERSION")}
        }),
        "ping" => json!({}),
        "tools/list" => json!({"tools": [{
            "name": "echo",
            "description": "Returns its message.",
            "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}},
                            "required": ["message"]}
        }]}),
        "tools/call" if request.pointer("/params/name").and_then(Value::as_str) != Some("echo") => {
            return Some(json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32602, "message": "unknown tool"}}));
        }
        "tools/call" => {
            let message = request.pointer("/params/arguments/message").and_then(Value::as_str).unwrap_or("");
            json!({"content": [{"type": "text", "text": message}]})
        }
        _ => {
            return Some(json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": format!("method not found: {method}")}}));
        }
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

fn main() {
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(request) => answer(&request),
            Err(e) => Some(json!({"jsonrpc": "2.0", "id": null,
                "error": {"code": -32700, "message": format!("parse error: {e}")}})),
        };
        if let Some(reply) = reply {
            let written = serde_json::to_writer(&mut stdout, &reply)
                .map_err(std::io::Error::other)
                .and_then(|()| stdout.write_all(b"\n"))
                .and_then(|()| stdout.flush());
            if written.is_err() {
                break;
            }
        }
    }
}
