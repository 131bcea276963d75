//! A2A 1.0 (the Agent2Agent protocol, JSON-RPC binding) in front of the server's agents.
//!
//! - `GET /.well-known/agent-card.json` (public): the agent card — one skill per agent, the
//!   JSON-RPC interface at `/a2a` with protocol version 1.0, streaming on, push notifications and
//!   the extended card off, the bearer scheme when keys are required.
//! - `POST /a2a` (bearer key, tenant-scoped like every API route): `SendMessage` (blocking unless
//!   `configuration.returnImmediately`), `SendStreamingMessage` and `SubscribeToTask` (SSE),
//!   `GetTask`, `CancelTask`, `ListTasks`. The push-notification methods answer
//!   `PushNotificationNotSupportedError`, `GetExtendedAgentCard` `UnsupportedOperationError`.
//!   Every request must carry `A2A-Version: 1.0` (header or query parameter; a missing one means
//!   0.3, §3.6.2) or it gets `VersionNotSupportedError` (-32009).
//!
//! A task is a run (task id = run id); `contextId` is a session of the tenant (no user), so a
//! follow-up message with the same `contextId` continues the conversation. A message naming a
//! running task steers it (`Run::steer`). Another tenant's task id is `TaskNotFoundError`, the
//! same answer as an id that never existed. See [`task::task_state`] for the state mapping.
//!
//! In queue mode (`[server] execution = "queue"`) a message's run is queued for a worker and the
//! task is read from the database (`queued.rs`); steering a running task is not available there
//! (an `UnsupportedOperationError` says so).

mod queued;
mod rpc;
mod stream;
mod task;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use loom_agent::store::SessionKey;
use loom_agent::{Run, RunRequest, RunState, Transcript};

use crate::exec::Started;
use serde_json::{Value, json};

pub use rpc::{PROTOCOL_VERSION, RpcError, VERSION_HEADER};

use crate::state::{AppState, Tenant};

/// What the agent card says beyond what the agents know: the URL clients reach the server at and
/// the agents' descriptions.
#[derive(Clone, Debug, Default)]
pub struct A2aSettings {
    /// The server's public base URL (`https://agents.example.com`). When unset, the card uses the
    /// request's `Host` header (and `https` when the server has TLS): set it behind a proxy.
    pub public_url: Option<String>,
    /// Whether the server speaks TLS (for the scheme of a URL made from `Host`).
    pub tls: bool,
    /// Each agent's description, by agent name (the config's `description`). An agent without
    /// one is described by its name only: the instructions are the agent's system prompt and are
    /// not published.
    pub descriptions: BTreeMap<String, String>,
}

/// The methods of the JSON-RPC binding (§5.3).
const METHODS: &[&str] = &[
    "SendMessage",
    "SendStreamingMessage",
    "GetTask",
    "ListTasks",
    "CancelTask",
    "SubscribeToTask",
    "CreateTaskPushNotificationConfig",
    "GetTaskPushNotificationConfig",
    "ListTaskPushNotificationConfigs",
    "DeleteTaskPushNotificationConfig",
    "GetExtendedAgentCard",
];

fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.a2a.public_url {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)))
        .unwrap_or("localhost");
    format!("{}://{host}", if state.a2a.tls { "https" } else { "http" })
}

/// The agent card (§4.4.1, §8).
pub(crate) fn card(state: &AppState, base: &str) -> Value {
    let describe =
        |name: &str| state.a2a.descriptions.get(name).cloned().unwrap_or_else(|| format!("The Loom agent `{name}`."));
    let skills: Vec<Value> = state
        .agents
        .keys()
        .map(|name| {
            json!({
                "id": name,
                "name": name,
                "description": describe(name),
                "tags": ["loom", "agent"],
                "inputModes": ["text/plain", "application/json"],
                "outputModes": ["text/plain"],
            })
        })
        .collect();
    let (name, description) = match state.agents.keys().next() {
        Some(only) if state.agents.len() == 1 => (only.clone(), describe(only)),
        _ => (
            "Loom agents".to_string(),
            format!(
                "Loom agents: {}. Name one with `metadata.skill` on the request.",
                state.agents.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ),
    };
    let mut card = json!({
        "name": name,
        "description": description,
        "supportedInterfaces": [{
            "url": format!("{base}/a2a"),
            "protocolBinding": "JSONRPC",
            "protocolVersion": PROTOCOL_VERSION,
        }],
        "version": env!("CARGO_PKG_VERSION"),
        "capabilities": {"streaming": true, "pushNotifications": false, "extendedAgentCard": false},
        "defaultInputModes": ["text/plain", "application/json"],
        "defaultOutputModes": ["text/plain"],
        "skills": skills,
    });
    if state.keys.is_some() {
        card["securitySchemes"] = json!({"bearer": {"httpAuthSecurityScheme": {
            "scheme": "Bearer",
            "description": "A Loom API key (`loom keys create --tenant T`), sent as `Authorization: Bearer KEY`.",
        }}});
        card["securityRequirements"] = json!([{"schemes": {"bearer": {"list": []}}}]);
    }
    card
}

/// `GET /.well-known/agent-card.json`.
pub(crate) async fn agent_card(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let card = card(&state, &base_url(&state, &headers));
    let hash = loom_agent::store::hash_api_key(&card.to_string());
    let etag = format!("\"{}\"", hash.get(..32).unwrap_or(&hash));
    let mut response = Json(card).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    response
}

/// The version a request asks for: the `A2A-Version` header, else the query parameter; empty
/// when neither.
fn requested_version(headers: &HeaderMap, query: Option<&str>) -> String {
    if let Some(v) = headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok()) {
        return v.trim().to_string();
    }
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.split_once('=').filter(|(k, _)| k.eq_ignore_ascii_case(VERSION_HEADER)).map(|(_, v)| v))
        .unwrap_or("")
        .to_string()
}

fn answer(body: Value) -> Response {
    Json(body).into_response()
}

/// `POST /a2a`: one JSON-RPC request.
pub(crate) async fn endpoint(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = match rpc::parse_request(&body) {
        Ok(r) => r,
        Err(failure) => return answer(rpc::error(&failure.0, &failure.1)),
    };
    let id = req.id.clone();
    match dispatch(&state, &tenant, &headers, query.as_deref(), req).await {
        Ok(Reply::Json(result)) => answer(rpc::result(&id, result)),
        Ok(Reply::Stream(response)) => response,
        Err(e) => answer(rpc::error(&id, &e)),
    }
}

enum Reply {
    Json(Value),
    Stream(Response),
}

async fn dispatch(
    state: &Arc<AppState>,
    tenant: &Tenant,
    headers: &HeaderMap,
    query: Option<&str>,
    req: rpc::Request,
) -> Result<Reply, RpcError> {
    if !METHODS.contains(&req.method.as_str()) {
        return Err(RpcError::method_not_found(&req.method));
    }
    let version = requested_version(headers, query);
    if !rpc::version_supported(&version) {
        return Err(RpcError::version_not_supported(if version.is_empty() {
            "0.3 (no A2A-Version header)"
        } else {
            &version
        }));
    }
    let params = &req.params;
    match req.method.as_str() {
        "SendMessage" => {
            let incoming = task::incoming(params)?;
            let run = start(state, tenant, &incoming).await?;
            if !incoming.return_immediately {
                run.result().await?;
            }
            Ok(Reply::Json(json!({"task": task::task(&run.transcript().await?, incoming.history_length)})))
        }
        "SendStreamingMessage" => {
            let incoming = task::incoming(params)?;
            let run = start(state, tenant, &incoming).await?;
            let snapshot = task::task(&run.transcript().await?, incoming.history_length);
            Ok(Reply::Stream(stream::task_stream(req.id, run.events(), snapshot)))
        }
        "GetTask" => {
            let id = task::task_id(params)?;
            let history = params.as_object().map(task::history_length).transpose()?.flatten();
            if let Some(e) = state.run_entry(tenant, &id) {
                return Ok(Reply::Json(task::task(&live(&e.run), history)));
            }
            if let Some(queue) = &state.queue {
                return queued::get(state, queue, tenant, &id, history).await.map(Reply::Json);
            }
            stored(state, tenant, &id, history).await.map(Reply::Json)
        }
        "CancelTask" => cancel(state, tenant, &task::task_id(params)?).await.map(Reply::Json),
        "SubscribeToTask" => {
            let id = task::task_id(params)?;
            let Some(e) = state.run_entry(tenant, &id) else {
                if let Some(queue) = &state.queue {
                    return queued::subscribe(state, queue, tenant, req.id, &id).await.map(Reply::Stream);
                }
                // A task this server does not run now: terminal, or not found.
                stored(state, tenant, &id, None).await?;
                return Err(RpcError::unsupported(format!("task `{id}` is not in progress on this server")));
            };
            let t = live(&e.run);
            let a2a = task::task_state(t.state, t.error.as_ref());
            if task::is_terminal(a2a) {
                return Err(RpcError::unsupported(format!("task `{id}` is in a terminal state ({a2a})")));
            }
            if e.run.state() == RunState::Suspended {
                return Ok(Reply::Stream(stream::single(req.id, task::task(&t, None))));
            }
            Ok(Reply::Stream(stream::task_stream(req.id, e.run.events(), task::task(&t, None))))
        }
        "ListTasks" => list(state, tenant, params).await.map(Reply::Json),
        "GetExtendedAgentCard" => Err(RpcError::unsupported("this agent has no extended agent card")),
        _ => Err(RpcError::push_not_supported()),
    }
}

/// A live run's transcript with its live state.
fn live(run: &Run) -> Transcript {
    let mut t = run.transcript();
    t.state = run.state();
    t
}

/// Starts the run of a message (here, or queued for a worker in queue mode), or steers the running
/// task it names.
async fn start(state: &Arc<AppState>, tenant: &Tenant, incoming: &task::Incoming) -> Result<Started, RpcError> {
    // The tenant's daily budget, as on the other routes that start or continue runs: the start is
    // reserved atomically (only the sending methods spend; GetTask, CancelTask and ListTasks stay
    // open), and given back when the message started no run (steering).
    state.budgets.reserving(tenant, start_reserved(state, tenant, incoming)).await
}

/// [`start`] under its reservation.
async fn start_reserved(
    state: &Arc<AppState>,
    tenant: &Tenant,
    incoming: &task::Incoming,
) -> Result<Started, RpcError> {
    if let Some(task_id) = &incoming.task_id {
        let Some(e) = state.run_entry(tenant, task_id) else {
            if let Some(queue) = &state.queue {
                // The task runs in a worker: a message cannot reach its live run from here.
                queued::owned(state, queue, tenant, task_id).await?;
                return Err(RpcError::unsupported(format!(
                    "task `{task_id}` runs in a queue worker, and steering a task is not available in \
                     queue mode; send a new message in its context instead"
                )));
            }
            return Err(RpcError::task_not_found(task_id));
        };
        if incoming.context_id.as_deref().is_some_and(|c| c != e.run.session_id()) {
            return Err(RpcError::invalid_params(format!(
                "`contextId` does not match the context of task `{task_id}`"
            )));
        }
        return match e.run.state() {
            RunState::Queued | RunState::Running => {
                e.run.steer(incoming.text.clone()).map_err(|err| RpcError::unsupported(err.to_string()))?;
                Ok(Started::Local(e.run))
            }
            RunState::Suspended => Err(RpcError::unsupported(format!(
                "task `{task_id}` waits for a person's approval of a tool call; decide it with \
                 POST /runs/{task_id}/approvals/{{call_id}}"
            ))),
            s => Err(RpcError::unsupported(format!(
                "task `{task_id}` is in a terminal state ({}); send a new message in its context instead",
                task::task_state(s, None)
            ))),
        };
    }
    let (name, agent) = state.agent(incoming.skill.as_deref()).map_err(|e| RpcError::invalid_params(e.message))?;
    let request = RunRequest::new(incoming.text.clone()).user(tenant.scoped_user(None));
    Ok(crate::exec::start(state, tenant, &name, &agent, None, incoming.context_id.as_deref(), request).await?)
}

/// A task this server does not hold live: from the agents' journals and stores.
async fn stored(state: &AppState, tenant: &Tenant, id: &str, history: Option<i64>) -> Result<Value, RpcError> {
    if state.runs().contains_key(id) {
        return Err(RpcError::task_not_found(id));
    }
    for agent in state.agents.values() {
        let Some(journal) = agent.journal() else { continue };
        let Some(run) = journal.load(id).await? else { continue };
        if tenant.owns(run.record.user_id.as_deref()).is_none() {
            break;
        }
        let key = SessionKey::scoped(run.record.user_id.as_deref(), &run.record.session_id);
        if let Some(t) = agent.session_store().get_run(key, id).await? {
            return Ok(task::task(&t, history));
        }
        let at = run.record.started_at;
        return Ok(json!({
            "id": id,
            "contextId": run.record.session_id,
            "status": task::status(id, &run.record.session_id, run.state, None, at),
        }));
    }
    Err(RpcError::task_not_found(id))
}

async fn cancel(state: &AppState, tenant: &Tenant, id: &str) -> Result<Value, RpcError> {
    let Some(e) = state.run_entry(tenant, id) else {
        if let Some(queue) = &state.queue {
            return queued::cancel(state, queue, tenant, id).await;
        }
        let task = stored(state, tenant, id, None).await?;
        let why = format!("it is not in progress on this server ({})", task["status"]["state"]);
        return Err(RpcError::task_not_cancelable(id, &why));
    };
    match e.run.state() {
        RunState::Queued | RunState::Running => {}
        RunState::Suspended => {
            return Err(RpcError::task_not_cancelable(
                id,
                "it waits for a person's approval of a tool call; deny the call to end it",
            ));
        }
        s => return Err(RpcError::task_not_cancelable(id, &format!("it has ended ({})", task::task_state(s, None)))),
    }
    e.run.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), e.run.result()).await;
    Ok(task::task(&live(&e.run), None))
}

/// `ListTasks` over the tasks this server holds for the tenant, newest first: filters
/// `contextId` and `status`, `pageSize` (1–100, default 50), `pageToken` (from `nextPageToken`),
/// `historyLength`, `includeArtifacts`.
async fn list(state: &AppState, tenant: &Tenant, params: &Value) -> Result<Value, RpcError> {
    let obj = params.as_object().cloned().unwrap_or_default();
    let context = obj.get("contextId").and_then(Value::as_str).filter(|s| !s.is_empty());
    let wanted = obj.get("status").and_then(Value::as_str).filter(|s| *s != "TASK_STATE_UNSPECIFIED");
    let size = match obj.get("pageSize") {
        None | Some(Value::Null) => 50,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| RpcError::invalid_params("`pageSize` is an integer from 1 to 100"))?,
    };
    let offset: usize = match obj.get("pageToken").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        None => 0,
        Some(t) => t.parse().map_err(|_| RpcError::invalid_params("`pageToken` is not one this server gave"))?,
    };
    let history = task::history_length(&obj)?;
    let artifacts = obj.get("includeArtifacts").and_then(Value::as_bool).unwrap_or(false);
    // Queue mode: the tenant's runs from the database (their status first; the page in full).
    let mut runs: Vec<Transcript> = match &state.queue {
        Some(queue) => queue
            .runs(&format!("{}/", tenant.0), context, None, None, 1000)
            .await?
            .iter()
            .map(crate::exec::status_transcript)
            .collect(),
        None => held(state, tenant, context),
    };
    runs.sort_by(|a, b| b.run_id.cmp(&a.run_id));
    runs.retain(|t| wanted.is_none_or(|w| task::task_state(t.state, t.error.as_ref()) == w));
    let total = runs.len();
    let mut page = Vec::new();
    for t in runs.into_iter().skip(offset).take(usize::try_from(size).unwrap_or(50)) {
        let t = match &state.queue {
            Some(queue) => queued::owned(state, queue, tenant, &t.run_id).await?.transcript().await?,
            None => t,
        };
        page.push(task::task(&t, history));
    }
    let page: Vec<Value> = page
        .into_iter()
        .map(|mut t| {
            if !artifacts && let Some(o) = t.as_object_mut() {
                o.remove("artifacts");
            }
            t
        })
        .collect();
    let next = offset + page.len();
    Ok(json!({
        "tasks": page,
        "nextPageToken": if next < total { next.to_string() } else { String::new() },
        "pageSize": size,
        "totalSize": total,
    }))
}

/// The tenant's runs this server holds (of one context, when given).
fn held(state: &AppState, tenant: &Tenant, context: Option<&str>) -> Vec<Transcript> {
    state
        .runs()
        .values()
        .filter(|e| &e.tenant == tenant && context.is_none_or(|c| e.run.session_id() == c))
        .map(|e| live(&e.run))
        .collect()
}

/// Settings for a server built from a configuration.
pub(crate) fn settings_from(config: &loom_agent::config::AgentConfig) -> A2aSettings {
    let server = config.server.clone().unwrap_or_default();
    A2aSettings {
        public_url: server.public_url.clone(),
        tls: server.tls_cert.is_some(),
        descriptions: config
            .agent_configs()
            .into_iter()
            .filter_map(|(name, agent)| agent.description.map(|d| (name, d)))
            .collect(),
    }
}
