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
    (
        "get",
        "/runs",
        "List runs, newest first, from the database too (filters: user_id, session_id, state; pages: limit, before = the previous page's next)",
        true,
    ),
    (
        "post",
        "/runs/stream",
        "Start a run (body as POST /runs, without wait) and stream its events as SSE in the same request \
         (Content-Location: /runs/{run_id}; resume with GET /runs/{run_id}/events and Last-Event-ID)",
        true,
    ),
    ("get", "/runs/{run_id}", "A run", true),
    ("post", "/runs/{run_id}/cancel", "Cancel a run", true),
    ("post", "/runs/{run_id}/resume", "Resume a journaled run that did not finish", true),
    ("get", "/runs/{run_id}/events", "A run's events: SSE (Last-Event-ID) or a JSON page (after, limit)", true),
    ("post", "/runs/{run_id}/approvals/{call_id}", "Decide a pending tool call: allow, deny, edit", true),
    ("get", "/approvals", "Pending approvals", true),
    ("post", "/sessions", "Create a session", true),
    ("get", "/sessions", "List sessions, held and stored (filters: user_id, limit)", true),
    ("get", "/sessions/{session_id}", "A session", true),
    ("post", "/sessions/{session_id}/close", "Close a session", true),
    ("get", "/sessions/{session_id}/history", "A session's conversation history", true),
    ("get", "/sessions/{session_id}/runs", "A session's runs", true),
    ("post", "/sessions/{session_id}/signals", "Send a signal to a session: a run starts, or it is stored", true),
    ("get", "/sessions/{session_id}/signals", "A session's signals (filter: status = pending | processed)", true),
    ("post", "/schedules", "Schedule signals into a session (cron, every_ms or at; missed: skip | run_once)", true),
    ("get", "/schedules", "The tenant's schedules (filters: user_id, session_id, agent)", true),
    ("delete", "/schedules/{schedule_id}", "Remove a schedule", true),
    ("get", "/memory/facts", "A user's facts (history: include superseded ones)", true),
    ("post", "/memory/facts", "Remember a fact about a user", true),
    ("get", "/memory/search", "Search a user's facts and episodes (q, limit)", true),
    ("get", "/memory/blocks", "A user's working blocks", true),
    ("put", "/memory/blocks/{name}", "Create or replace a working block", true),
    ("delete", "/memory/blocks/{name}", "Delete a working block", true),
    ("delete", "/memory", "Forget an item (item_id), a time range (from, to) or everything (all=true)", true),
    ("get", "/memory/export", "Everything memory holds about a user", true),
    ("get", "/knowledge/search", "Search the agent's knowledge sources (q, top_k, sources)", true),
    ("post", "/knowledge/index", "Re-index the agent's knowledge sources", true),
    ("get", "/budget", "The tenant's daily budget and today's usage", true),
    ("post", "/v1/chat/completions", "OpenAI-compatible chat completions (stream or not)", true),
    ("post", "/v1/responses", "OpenAI-compatible Responses API", true),
    ("get", "/runs/{run_id}/transcript", "A run's conversation: messages, tool calls and results", true),
    ("get", "/usage", "Tokens and cost of the tenant's runs (group: user, day, user,day; days)", true),
    ("get", "/audit", "The tenant's audit entries and each log's verification (run_id, action, limit)", true),
    ("get", "/ui", "The dashboard (static files; the data it shows needs a key)", false),
    ("get", "/.well-known/agent-card.json", "The A2A 1.0 agent card", false),
    (
        "post",
        "/a2a",
        "A2A 1.0 JSON-RPC (header A2A-Version: 1.0): SendMessage, SendStreamingMessage, SubscribeToTask (SSE), \
         GetTask, CancelTask, ListTasks",
        true,
    ),
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
            op["responses"]["429"] =
                json!({"description": "Rate limited, or the tenant's daily budget is spent (tenant_budget_exceeded)"});
        }
        if *method == "post" || *method == "put" {
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
