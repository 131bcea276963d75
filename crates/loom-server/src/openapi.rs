//! The OpenAPI 3.1 document served at `/openapi.json`, built by hand (a test checks that every
//! route of the router is in it, and nothing else).

use serde_json::{Map, Value, json};

/// Every route: (method, path, summary, whether it needs a key).
pub const ROUTES: &[(&str, &str, &str, bool)] = &[
    ("get", "/health", "Liveness", false),
    ("get", "/ready", "Readiness: the stores are reachable", false),
    ("get", "/openapi.json", "This document", false),
    ("get", "/metrics", "Prometheus metrics", false),
    ("post", "/runs", "Start a run (busy: enqueue | reject | interrupt; wait: answer when it ends)", true),
    ("get", "/runs", "List runs (filters: user_id, session_id, state, limit)", true),
    ("get", "/runs/{run_id}", "A run", true),
    ("post", "/runs/{run_id}/cancel", "Cancel a run", true),
    ("post", "/runs/{run_id}/resume", "Resume a journaled run that did not finish", true),
    ("get", "/runs/{run_id}/events", "A run's events: SSE (Last-Event-ID) or a JSON page (after, limit)", true),
    ("post", "/runs/{run_id}/approvals/{call_id}", "Decide a pending tool call: allow, deny, edit", true),
    ("get", "/approvals", "Pending approvals", true),
    ("post", "/sessions", "Create a session", true),
    ("get", "/sessions", "List sessions (filter: user_id)", true),
    ("get", "/sessions/{session_id}", "A session", true),
    ("post", "/sessions/{session_id}/close", "Close a session", true),
    ("get", "/sessions/{session_id}/history", "A session's conversation history", true),
    ("get", "/sessions/{session_id}/runs", "A session's runs", true),
    ("post", "/v1/chat/completions", "OpenAI-compatible chat completions (stream or not)", true),
    ("post", "/v1/responses", "OpenAI-compatible Responses API", true),
    ("post", "/mcp", "MCP over Streamable HTTP: each agent is a tool {message, session_id?}", true),
];

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, auth) in ROUTES {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "Malformed request", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "404": {"description": "Not found (or another tenant's)"},
            },
        });
        if *auth {
            op["security"] = json!([{"bearer": []}]);
            op["responses"]["401"] = json!({"description": "No valid API key"});
        }
        if *method == "post" {
            op["requestBody"] =
                json!({"required": false, "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Loom agent server", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "object", "properties": {
                        "code": {"type": "string"}, "message": {"type": "string"}}}},
                },
            },
        },
    })
}
