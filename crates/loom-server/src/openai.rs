//! OpenAI-compatible endpoints in front of an agent: `POST /v1/chat/completions` (streaming and
//! not) and `POST /v1/responses`. The request's `model` names an agent of the file (`"default"`
//! or any name picks the only one). Tools run server-side (in queue mode, in the worker that claims
//! the run: the answer and the stream come from the database); the client sees the answer.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, stream};
use loom_agent::event::DeltaKind;
use loom_agent::{EventKind, RunRequest, RunResult, Usage};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::exec::Started;
use crate::state::{AppState, Body, Tenant};

/// A chat message: `content` is a string or a list of parts with `text`.
#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, `developer`.
    pub role: String,
    /// The text, or parts.
    #[serde(default)]
    pub content: Option<Value>,
}

/// A chat completion request (other OpenAI fields are accepted and ignored: the agent's
/// configuration decides).
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The agent's name.
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation; the last user message is the run's input.
    pub messages: Vec<ChatMessage>,
    /// Stream chunks as Server-Sent Events.
    #[serde(default)]
    pub stream: bool,
    /// The end user (within the caller's tenant).
    #[serde(default)]
    pub user: Option<String>,
}

fn text_of(content: &Option<Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

/// The run request for a conversation: the last user message as input, the earlier turns (not
/// the system messages: the agent has its own instructions) in the context as `conversation`.
fn request_for(tenant: &Tenant, user: Option<&str>, messages: &[(String, String)]) -> ApiResult<RunRequest> {
    let last = messages
        .iter()
        .rposition(|(role, _)| role == "user")
        .ok_or_else(|| ApiError::bad_request("the request has no user message"))?;
    let mut request = RunRequest::new(messages[last].1.clone()).user(tenant.scoped_user(user));
    let earlier: Vec<Value> = messages[..last]
        .iter()
        .filter(|(role, _)| role != "system" && role != "developer")
        .map(|(role, text)| json!({"role": role, "content": text}))
        .collect();
    if !earlier.is_empty() {
        request.context = loom_agent::RunContext::new().input("conversation", Value::Array(earlier));
    }
    Ok(request)
}

/// Starts the run: here, or queued for a worker in queue mode.
async fn start(
    state: &Arc<AppState>,
    tenant: &Tenant,
    model: Option<&str>,
    user: Option<&str>,
    request: RunRequest,
) -> ApiResult<(String, Started)> {
    if user.is_some_and(str::is_empty) {
        return Err(ApiError::bad_request("`user` is empty"));
    }
    let wanted = model.filter(|m| *m != "default");
    let (name, agent) = state.agent(wanted)?;
    let run = crate::exec::start(state, tenant, &name, &agent, user, None, request).await?;
    Ok((name, run))
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
    })
}

fn failure(r: &RunResult) -> ApiError {
    let message = r.error.as_ref().map(|e| e.message.clone()).unwrap_or_else(|| "the run did not complete".into());
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "run_failed",
        format!("run {} {}: {message}", r.run_id, json!(r.state)),
    )
}

pub(crate) async fn chat_completions(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Body(body): Body<ChatRequest>,
) -> ApiResult<Response> {
    let messages: Vec<(String, String)> = body.messages.iter().map(|m| (m.role.clone(), text_of(&m.content))).collect();
    let request = request_for(&tenant, body.user.as_deref(), &messages)?;
    let (name, run) = start(&state, &tenant, body.model.as_deref(), body.user.as_deref(), request).await?;
    let id = format!("chatcmpl-{}", run.id());
    let created = chrono::Utc::now().timestamp();
    if !body.stream {
        let r = run.result().await?;
        if !r.is_completed() {
            return Err(failure(&r));
        }
        return Ok(Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": r.output},
                "finish_reason": "stop",
            }],
            "usage": usage_json(&r.usage),
        }))
        .into_response());
    }
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let first = chunk(json!({"role": "assistant", "content": ""}), None);
    // Text deltas of the model turns; the last chunk says why the answer ended.
    let chunk2 = chunk.clone();
    let body = run.events().filter_map(move |e| {
        let out = match &e.kind {
            EventKind::ModelDelta(d) if d.kind == DeltaKind::Text && !d.text.is_empty() => {
                Some(chunk2(json!({"content": d.text}), None))
            }
            EventKind::RunCompleted(_) => Some(chunk2(json!({}), Some("stop"))),
            kind if e.is_terminal() => {
                Some(json!({"error": {"message": format!("the run ended {}", kind.type_name()), "type": "run_failed"}}))
            }
            _ => None,
        };
        futures::future::ready(out)
    });
    let events = stream::once(futures::future::ready(first))
        .chain(body)
        .map(|v| SseEvent::default().data(v.to_string()))
        .chain(stream::once(futures::future::ready(SseEvent::default().data("[DONE]"))))
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(events).into_response())
}

/// A Responses API request (other fields are accepted and ignored).
#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    /// The agent's name.
    #[serde(default)]
    pub model: Option<String>,
    /// A string, or a list of messages.
    pub input: Value,
    /// Stream events as Server-Sent Events.
    #[serde(default)]
    pub stream: bool,
    /// The end user (within the caller's tenant).
    #[serde(default)]
    pub user: Option<String>,
}

fn response_json(id: &str, name: &str, status: &str, text: &str, usage: Option<&Usage>) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": chrono::Utc::now().timestamp(),
        "status": status,
        "model": name,
        "output": [{
            "type": "message",
            "id": format!("msg_{}", id.trim_start_matches("resp_")),
            "status": status,
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }],
        "output_text": text,
        "usage": usage.map(|u| json!({
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens,
        })),
    })
}

pub(crate) async fn responses(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Body(body): Body<ResponsesRequest>,
) -> ApiResult<Response> {
    let messages: Vec<(String, String)> = match &body.input {
        Value::String(s) => vec![("user".to_string(), s.clone())],
        Value::Array(items) => items
            .iter()
            .map(|m| {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("user").to_string();
                (role, text_of(&m.get("content").cloned()))
            })
            .collect(),
        _ => return Err(ApiError::bad_request("`input` is a string or a list of messages")),
    };
    let request = request_for(&tenant, body.user.as_deref(), &messages)?;
    let (name, run) = start(&state, &tenant, body.model.as_deref(), body.user.as_deref(), request).await?;
    let id = format!("resp_{}", run.id());
    if !body.stream {
        let r = run.result().await?;
        if !r.is_completed() {
            return Err(failure(&r));
        }
        return Ok(Json(response_json(&id, &name, "completed", &r.output, Some(&r.usage))).into_response());
    }
    let created = response_json(&id, &name, "in_progress", "", None);
    let first = json!({"type": "response.created", "response": created});
    let run2 = run.clone();
    let deltas = run.events().filter_map(move |e| {
        let out = match &e.kind {
            EventKind::ModelDelta(d) if d.kind == DeltaKind::Text && !d.text.is_empty() => Some(json!({
                "type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": d.text,
            })),
            _ => None,
        };
        futures::future::ready(out)
    });
    let last = stream::once(async move {
        let r = match run2.result().await {
            Ok(r) => r,
            Err(e) => {
                let failed = response_json(&id, &name, "failed", "", None);
                return json!({"type": "response.failed", "response": failed, "error": {"message": e.message}});
            }
        };
        if r.is_completed() {
            json!({"type": "response.completed", "response": response_json(&id, &name, "completed", &r.output, Some(&r.usage))})
        } else {
            json!({"type": "response.failed", "response": response_json(&id, &name, "failed", &r.output, Some(&r.usage))})
        }
    });
    let events = stream::once(futures::future::ready(first)).chain(deltas).chain(last).map(|v| {
        let kind = v["type"].as_str().unwrap_or("message").to_string();
        Ok::<_, Infallible>(SseEvent::default().event(kind).data(v.to_string()))
    });
    Ok(Sse::new(events).into_response())
}
