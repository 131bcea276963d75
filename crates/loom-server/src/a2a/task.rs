//! A Loom run as an A2A task: the state mapping, the `Task` object, and the incoming `Message`
//! turned into a run input.

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use loom_agent::error::RunErrorKind;
use loom_agent::{Artifact, RunError, RunState, Transcript};
use serde_json::{Map, Value, json};

use super::rpc::RpcError;

/// The A2A task state of a run state (§4.1.3), honestly: a failed run is `FAILED`, a cancelled one
/// `CANCELED`, one stopped by a guardrail `REJECTED` (the agent would not do it), one stopped by
/// another limit `FAILED`, one suspended for a human's approval `AUTH_REQUIRED` (§7.6: "an agent
/// requiring human approval before a destructive action is taken"), one waiting for a background
/// tool `WORKING` (it continues by itself).
pub fn task_state(state: RunState, error: Option<&RunError>) -> &'static str {
    let kind = error.map(|e| e.kind);
    match state {
        RunState::Queued => "TASK_STATE_SUBMITTED",
        RunState::Running => "TASK_STATE_WORKING",
        RunState::Completed => "TASK_STATE_COMPLETED",
        RunState::Failed => "TASK_STATE_FAILED",
        RunState::Cancelled => "TASK_STATE_CANCELED",
        RunState::Interrupted if kind == Some(RunErrorKind::Guardrail) => "TASK_STATE_REJECTED",
        RunState::Interrupted => "TASK_STATE_FAILED",
        RunState::Suspended if kind == Some(RunErrorKind::ToolPending) => "TASK_STATE_WORKING",
        RunState::Suspended => "TASK_STATE_AUTH_REQUIRED",
    }
}

/// Whether an A2A state is terminal (§3.1.2: completed, failed, canceled, rejected).
pub fn is_terminal(a2a_state: &str) -> bool {
    matches!(a2a_state, "TASK_STATE_COMPLETED" | "TASK_STATE_FAILED" | "TASK_STATE_CANCELED" | "TASK_STATE_REJECTED")
}

/// An ISO 8601 UTC timestamp with milliseconds (§5.6.1).
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An agent message with one text part.
pub fn agent_message(task_id: &str, context_id: &str, message_id: String, text: &str) -> Value {
    json!({
        "messageId": message_id,
        "contextId": context_id,
        "taskId": task_id,
        "role": "ROLE_AGENT",
        "parts": [{"text": text}],
    })
}

/// The `TaskStatus` of a run: the state, a message saying why for runs that did not complete,
/// and when.
pub fn status(task_id: &str, context_id: &str, state: RunState, error: Option<&RunError>, at: DateTime<Utc>) -> Value {
    let a2a = task_state(state, error);
    let mut status = json!({"state": a2a, "timestamp": timestamp(at)});
    let why = match (a2a, error) {
        ("TASK_STATE_AUTH_REQUIRED", Some(e)) => Some(format!(
            "{} A person must decide the pending tool call (POST /runs/{task_id}/approvals/{{call_id}}, or the \
             dashboard); the task then continues.",
            e.message
        )),
        (s, Some(e)) if is_terminal(s) || (s == "TASK_STATE_WORKING" && state == RunState::Suspended) => {
            Some(e.message.clone())
        }
        _ => None,
    };
    if let Some(text) = why {
        status["message"] = agent_message(task_id, context_id, format!("{task_id}-status"), &text);
    }
    status
}

/// The artifact holding a completed run's answer.
pub fn answer_artifact(task_id: &str, output: &str) -> Value {
    json!({"artifactId": format!("{task_id}-answer"), "name": "answer", "parts": [{"text": output}]})
}

/// A tool-made artifact of the run.
fn tool_artifact(a: &Artifact) -> Value {
    json!({
        "artifactId": a.id,
        "name": a.name,
        "parts": [{"text": a.content, "mediaType": a.media_type}],
    })
}

/// The `Task` of a run (§4.1.1). `history_length`: how many history messages to include (all when
/// `None`, none for 0).
pub fn task(t: &Transcript, history_length: Option<i64>) -> Value {
    let at = t.finished_at.or(t.started_at).unwrap_or_else(Utc::now);
    let mut task = json!({
        "id": t.run_id,
        "contextId": t.session_id,
        "status": status(&t.run_id, &t.session_id, t.state, t.error.as_ref(), at),
    });
    let mut artifacts: Vec<Value> = t.artifacts.iter().map(tool_artifact).collect();
    if t.state == RunState::Completed {
        artifacts.push(answer_artifact(&t.run_id, &t.output));
    }
    if !artifacts.is_empty() {
        task["artifacts"] = Value::Array(artifacts);
    }
    let mut history = vec![json!({
        "messageId": format!("{}-input", t.run_id),
        "contextId": t.session_id,
        "taskId": t.run_id,
        "role": "ROLE_USER",
        "parts": [{"text": t.input.to_message().text()}],
    })];
    if t.state == RunState::Completed {
        history.push(agent_message(&t.run_id, &t.session_id, format!("{}-output", t.run_id), &t.output));
    }
    match history_length {
        Some(n) if n <= 0 => {}
        Some(n) => {
            let skip = history.len().saturating_sub(usize::try_from(n).unwrap_or(usize::MAX));
            task["history"] = Value::Array(history.split_off(skip));
        }
        None => task["history"] = Value::Array(history),
    }
    task
}

/// What a `SendMessage` asks for, checked.
#[derive(Debug)]
pub struct Incoming {
    /// The text the run receives.
    pub text: String,
    /// The context (session) to continue.
    pub context_id: Option<String>,
    /// The task to continue.
    pub task_id: Option<String>,
    /// `configuration.returnImmediately`.
    pub return_immediately: bool,
    /// `configuration.historyLength`.
    pub history_length: Option<i64>,
    /// Which agent (skill id), from `metadata.skill` of the request or the message.
    pub skill: Option<String>,
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, RpcError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(RpcError::invalid_params(format!("`{key}` must be a string"))),
    }
}

/// `historyLength` (an integer, or a string holding one as ProtoJSON allows).
pub fn history_length(obj: &Map<String, Value>) -> Result<Option<i64>, RpcError> {
    match obj.get("historyLength") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_i64().map(Some).ok_or_else(|| RpcError::invalid_params("`historyLength` is an integer"))
        }
        Some(Value::String(s)) => {
            s.parse().map(Some).map_err(|_| RpcError::invalid_params("`historyLength` is an integer"))
        }
        Some(_) => Err(RpcError::invalid_params("`historyLength` is an integer")),
    }
}

/// The text of one part: `text`, `data` (as JSON), `raw` of a `text/*` media type (decoded), or a
/// `url` (named, not fetched: the agent decides whether to read it).
fn part_text(part: &Value, i: usize) -> Result<String, RpcError> {
    let Some(p) = part.as_object() else {
        return Err(RpcError::invalid_params(format!("`message.parts[{i}]` must be an object")));
    };
    let media = p.get("mediaType").and_then(Value::as_str).unwrap_or("");
    if let Some(text) = p.get("text") {
        return text
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| RpcError::invalid_params("a part's `text` is a string"));
    }
    if let Some(data) = p.get("data") {
        return Ok(serde_json::to_string_pretty(data).unwrap_or_default());
    }
    if let Some(url) = p.get("url").and_then(Value::as_str) {
        let name = p.get("filename").and_then(Value::as_str).unwrap_or("file");
        return Ok(format!("[{name}: {url}{}]", if media.is_empty() { String::new() } else { format!(" ({media})") }));
    }
    if let Some(raw) = p.get("raw").and_then(Value::as_str) {
        if !(media.starts_with("text/") || media == "application/json") {
            return Err(RpcError::content_type(format!(
                "`message.parts[{i}]` is `{}`; this agent reads text (text/*, application/json)",
                if media.is_empty() { "bytes without a media type" } else { media }
            )));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(raw))
            .map_err(|_| RpcError::invalid_params(format!("`message.parts[{i}].raw` is not base64")))?;
        return String::from_utf8(bytes)
            .map_err(|_| RpcError::content_type(format!("`message.parts[{i}]` is not UTF-8 text")));
    }
    Err(RpcError::invalid_params(format!("`message.parts[{i}]` has no content (text, data, url or raw)")))
}

/// Checks the params of `SendMessage` / `SendStreamingMessage` (§3.2.1).
pub fn incoming(params: &Value) -> Result<Incoming, RpcError> {
    let obj = params.as_object().ok_or_else(|| RpcError::invalid_params("params must be an object"))?;
    let message = obj
        .get("message")
        .and_then(Value::as_object)
        .ok_or_else(|| RpcError::invalid_params("`message` is required"))?;
    if str_field(message, "messageId")?.is_none() {
        return Err(RpcError::invalid_params("`message.messageId` is required"));
    }
    match message.get("role").and_then(Value::as_str) {
        Some("ROLE_USER") => {}
        other => {
            return Err(RpcError::invalid_params(format!(
                "`message.role` must be \"ROLE_USER\" (got {})",
                other.map(|r| format!("\"{r}\"")).unwrap_or_else(|| "nothing".into())
            )));
        }
    }
    let parts = match message.get("parts") {
        Some(Value::Array(p)) if !p.is_empty() => p,
        _ => return Err(RpcError::invalid_params("`message.parts` needs at least one part")),
    };
    let text = parts.iter().enumerate().map(|(i, p)| part_text(p, i)).collect::<Result<Vec<_>, _>>()?.join("\n");
    let config = match obj.get("configuration") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(c)) => c.clone(),
        Some(_) => return Err(RpcError::invalid_params("`configuration` must be an object")),
    };
    if config.get("taskPushNotificationConfig").is_some_and(|v| !v.is_null()) {
        return Err(RpcError::push_not_supported());
    }
    if let Some(Value::Array(modes)) = config.get("acceptedOutputModes")
        && !modes.is_empty()
        && !modes.iter().filter_map(Value::as_str).any(|m| matches!(m, "text/plain" | "text/*" | "*/*" | "text"))
    {
        return Err(RpcError::content_type("this agent answers in text/plain, which `acceptedOutputModes` leaves out"));
    }
    let return_immediately = match config.get("returnImmediately") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(RpcError::invalid_params("`configuration.returnImmediately` is a boolean")),
    };
    let skill = [obj.get("metadata"), message.get("metadata")]
        .into_iter()
        .flatten()
        .find_map(|m| m.get("skill").and_then(Value::as_str))
        .map(str::to_string);
    Ok(Incoming {
        text,
        context_id: str_field(message, "contextId")?.map(str::to_string),
        task_id: str_field(message, "taskId")?.map(str::to_string),
        return_immediately,
        history_length: history_length(&config)?,
        skill,
    })
}

/// The `id` of `GetTask`, `CancelTask` and `SubscribeToTask` params.
pub fn task_id(params: &Value) -> Result<String, RpcError> {
    params
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| RpcError::invalid_params("`id` (the task id) is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(message: Value) -> Value {
        json!({"message": message})
    }

    #[test]
    fn messages() {
        let ok = incoming(&send(json!({
            "messageId": "m1", "role": "ROLE_USER", "contextId": "ctx",
            "parts": [{"text": "hello"}, {"data": {"a": 1}}, {"raw": "aGk=", "mediaType": "text/plain"}],
        })))
        .unwrap();
        assert_eq!(ok.text, "hello\n{\n  \"a\": 1\n}\nhi");
        assert_eq!(ok.context_id.as_deref(), Some("ctx"));
        assert!(!ok.return_immediately);
        let code = |m: Value| incoming(&send(m)).unwrap_err().code;
        assert_eq!(code(json!({"role": "ROLE_USER", "parts": [{"text": "x"}]})), -32602);
        assert_eq!(code(json!({"messageId": "m", "role": "ROLE_AGENT", "parts": [{"text": "x"}]})), -32602);
        assert_eq!(code(json!({"messageId": "m", "role": "ROLE_USER", "parts": []})), -32602);
        assert_eq!(
            code(json!({"messageId": "m", "role": "ROLE_USER", "parts": [{"raw": "AAA=", "mediaType": "image/png"}]})),
            -32005
        );
        let p = json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]},
            "configuration": {"acceptedOutputModes": ["image/png"]}});
        assert_eq!(incoming(&p).unwrap_err().code, -32005);
        let p = json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]},
            "configuration": {"taskPushNotificationConfig": {"url": "http://x"}}});
        assert_eq!(incoming(&p).unwrap_err().code, -32003);
    }

    #[test]
    fn states() {
        let e = |kind| RunError { kind, message: "m".into(), reason: None, model_error: None, raw_output: None };
        assert_eq!(
            task_state(RunState::Suspended, Some(&e(RunErrorKind::ApprovalPending))),
            "TASK_STATE_AUTH_REQUIRED"
        );
        assert_eq!(task_state(RunState::Interrupted, Some(&e(RunErrorKind::Guardrail))), "TASK_STATE_REJECTED");
        assert_eq!(task_state(RunState::Interrupted, Some(&e(RunErrorKind::MaxTurns))), "TASK_STATE_FAILED");
        assert_eq!(task_state(RunState::Cancelled, None), "TASK_STATE_CANCELED");
        assert!(is_terminal("TASK_STATE_REJECTED") && !is_terminal("TASK_STATE_AUTH_REQUIRED"));
    }
}
