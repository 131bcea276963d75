//! The tool: one `SendMessage` (JSON-RPC, blocking) per call, the task's answer as the result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Conversation, PROTOCOL_VERSION, Shared, Token};
use crate::tool::{Tool, ToolContext, ToolError, ToolOutput};
use loom_core::error::ToolErrorKind;

/// A remote agent as a tool.
pub(crate) struct A2aTool {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) endpoint: String,
    pub(crate) token: Token,
    pub(crate) timeout: Duration,
    pub(crate) shared: Arc<Shared>,
}

/// How long to wait between `GetTask` polls of a task still working.
const POLL: Duration = Duration::from_millis(250);

/// The text of a list of parts: text as is, data as JSON, files by name and URL.
fn parts_text(parts: Option<&Value>) -> Vec<String> {
    parts
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| {
                    if let Some(t) = p.get("text").and_then(Value::as_str) {
                        Some(t.to_string())
                    } else if let Some(d) = p.get("data") {
                        Some(d.to_string())
                    } else {
                        p.get("url")
                            .and_then(Value::as_str)
                            .map(|u| format!("[{}: {u}]", p.get("filename").and_then(Value::as_str).unwrap_or("file")))
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The status message's text, if any.
fn status_text(task: &Value) -> String {
    parts_text(task.pointer("/status/message/parts")).join("\n")
}

/// What a task's answer is: its artifacts' text, else its status message, else the last agent
/// message of its history.
fn answer(task: &Value) -> String {
    let from_artifacts: Vec<String> = task
        .get("artifacts")
        .and_then(Value::as_array)
        .map(|a| a.iter().flat_map(|a| parts_text(a.get("parts"))).collect())
        .unwrap_or_default();
    if !from_artifacts.is_empty() {
        return from_artifacts.join("\n");
    }
    let status = status_text(task);
    if !status.is_empty() {
        return status;
    }
    task.get("history")
        .and_then(Value::as_array)
        .and_then(|h| h.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("ROLE_AGENT")))
        .map(|m| parts_text(m.get("parts")).join("\n"))
        .unwrap_or_default()
}

/// How a call ended, for the model.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// The answer.
    Answer(String),
    /// The agent asks for more input (the task continues with the session's next call).
    Question(String),
    /// The task is still working: poll it.
    Working(String),
    /// The task ended without an answer.
    Failed(String),
}

/// Reads a `SendMessage` / `GetTask` result and updates the session's conversation.
pub(crate) fn outcome(result: &Value, agent: &str, conv: &mut Conversation) -> Result<Outcome, String> {
    if let Some(message) = result.get("message") {
        if let Some(c) = message.get("contextId").and_then(Value::as_str) {
            conv.context_id = Some(c.to_string());
        }
        conv.task_id = None;
        return Ok(Outcome::Answer(parts_text(message.get("parts")).join("\n")));
    }
    let task = result.get("task").unwrap_or(result);
    let id = task
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| "the answer holds neither a task nor a message".to_string())?;
    if let Some(c) = task.get("contextId").and_then(Value::as_str).filter(|c| !c.is_empty()) {
        conv.context_id = Some(c.to_string());
    }
    let state = task.pointer("/status/state").and_then(Value::as_str).unwrap_or("TASK_STATE_UNSPECIFIED");
    let why = status_text(task);
    let why = if why.is_empty() { String::new() } else { format!(": {why}") };
    conv.task_id = None;
    Ok(match state {
        "TASK_STATE_COMPLETED" => Outcome::Answer(answer(task)),
        "TASK_STATE_INPUT_REQUIRED" => {
            conv.task_id = Some(id.to_string());
            Outcome::Question(format!("The agent \"{agent}\" needs more input (reply with this tool){why}"))
        }
        "TASK_STATE_AUTH_REQUIRED" => Outcome::Failed(format!(
            "the agent \"{agent}\" waits for an authorization given outside this conversation (task {id}){why}"
        )),
        "TASK_STATE_FAILED" => Outcome::Failed(format!("the agent \"{agent}\" failed the task{why}")),
        "TASK_STATE_CANCELED" => Outcome::Failed(format!("the agent \"{agent}\" canceled the task{why}")),
        "TASK_STATE_REJECTED" => Outcome::Failed(format!("the agent \"{agent}\" rejected the task{why}")),
        "TASK_STATE_SUBMITTED" | "TASK_STATE_WORKING" => Outcome::Working(id.to_string()),
        other => return Err(format!("the task {id} is in an unknown state `{other}`")),
    })
}

impl A2aTool {
    /// One JSON-RPC call; the `result` or a tool error.
    async fn rpc(&self, method: &str, params: Value, deadline: Instant) -> Result<Value, ToolError> {
        let token = self.token.get().map_err(|e| ToolError::new(e.to_string()))?;
        let body = json!({"jsonrpc": "2.0", "id": loom_core::new_id("rpc"), "method": method, "params": params});
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ToolError::with_kind(
                ToolErrorKind::Timeout,
                format!("the agent did not answer within {:?}", self.timeout),
            ));
        }
        let mut request = self
            .shared
            .http
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .header("A2A-Version", PROTOCOL_VERSION)
            .timeout(left)
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| {
            let kind = if e.is_timeout() { ToolErrorKind::Timeout } else { ToolErrorKind::Failed };
            // reqwest's message names the URL, never the headers.
            ToolError::with_kind(kind, format!("the agent \"{}\" is unreachable: {e}", self.name))
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(ToolError::new(format!(
                "the agent \"{}\" refused the credentials (HTTP {})",
                self.name,
                status.as_u16()
            )));
        }
        let bytes = response.bytes().await.map_err(|e| ToolError::new(format!("reading the answer: {e}")))?;
        let answer: Value = serde_json::from_slice(&bytes).map_err(|_| {
            let start: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
            ToolError::new(format!(
                "the agent answered HTTP {} with something that is not JSON: {start}",
                status.as_u16()
            ))
        })?;
        if let Some(error) = answer.get("error") {
            return Err(ToolError::new(format!(
                "the agent \"{}\" answered error {}: {}",
                self.name,
                error.get("code").map(Value::to_string).unwrap_or_default(),
                error.get("message").and_then(Value::as_str).unwrap_or("(no message)")
            )));
        }
        answer.get("result").cloned().ok_or_else(|| {
            ToolError::new(format!("the agent answered HTTP {} without a JSON-RPC result", status.as_u16()))
        })
    }

    async fn exchange(
        &self,
        ctx: &ToolContext,
        text: String,
        key: (Option<String>, String),
    ) -> Result<ToolOutput, ToolError> {
        let deadline = Instant::now() + self.timeout;
        let mut conv = self.shared.conversation(&key);
        let mut message = json!({
            "messageId": loom_core::new_id("msg"),
            "role": "ROLE_USER",
            "parts": [{"text": text}],
        });
        if let Some(c) = &conv.context_id {
            message["contextId"] = json!(c);
        }
        if let Some(t) = &conv.task_id {
            message["taskId"] = json!(t);
        }
        let params = json!({
            "message": message,
            "configuration": {"acceptedOutputModes": ["text/plain"], "returnImmediately": false},
        });
        let mut result = self.rpc("SendMessage", params, deadline).await?;
        loop {
            let outcome = outcome(&result, &self.name, &mut conv).map_err(ToolError::new)?;
            match outcome {
                Outcome::Working(task_id) => {
                    if ctx.is_cancelled() {
                        return Err(ToolError::with_kind(ToolErrorKind::Cancelled, "cancelled"));
                    }
                    tokio::time::sleep(POLL).await;
                    result = self.rpc("GetTask", json!({"id": task_id, "historyLength": 0}), deadline).await?;
                }
                Outcome::Answer(text) | Outcome::Question(text) => {
                    self.shared.remember(key, conv);
                    return Ok(ToolOutput::text(text));
                }
                Outcome::Failed(why) => {
                    self.shared.remember(key, conv);
                    return Err(ToolError::new(why));
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Tool for A2aTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"message": {"type": "string", "description": "The message for the agent, in plain language."}},
            "required": ["message"],
            "additionalProperties": false,
        })
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout + Duration::from_secs(5))
    }

    async fn call(&self, ctx: ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        let text = args
            .get("message")
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| ToolError::with_kind(ToolErrorKind::InvalidArguments, "`message` is a non-empty string"))?
            .to_string();
        let key = (ctx.user_id().map(str::to_string), ctx.session_id().to_string());
        let cancel = ctx.cancellation().clone();
        tokio::select! {
            r = self.exchange(&ctx, text, key.clone()) => r,
            () = cancel.cancelled() => {
                // The remote task, if the session knows one in progress, is told.
                if let Some(task_id) = self.shared.conversation(&key).task_id {
                    let deadline = Instant::now() + Duration::from_secs(5);
                    let _ = self.rpc("CancelTask", json!({"id": task_id}), deadline).await;
                }
                Err(ToolError::with_kind(ToolErrorKind::Cancelled, "cancelled"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        let mut c = Conversation::default();
        let done = json!({"task": {"id": "t1", "contextId": "c1", "status": {"state": "TASK_STATE_COMPLETED"},
            "artifacts": [{"artifactId": "a", "parts": [{"text": "42"}]}]}});
        assert_eq!(outcome(&done, "x", &mut c).unwrap(), Outcome::Answer("42".into()));
        assert_eq!(c, Conversation { context_id: Some("c1".into()), task_id: None });
        let ask = json!({"task": {"id": "t2", "contextId": "c1", "status": {"state": "TASK_STATE_INPUT_REQUIRED",
            "message": {"role": "ROLE_AGENT", "parts": [{"text": "Which city?"}]}}}});
        let Outcome::Question(q) = outcome(&ask, "x", &mut c).unwrap() else { panic!() };
        assert!(q.contains("Which city?"));
        assert_eq!(c.task_id.as_deref(), Some("t2"));
        let failed = json!({"task": {"id": "t3", "contextId": "c1", "status": {"state": "TASK_STATE_FAILED",
            "message": {"role": "ROLE_AGENT", "parts": [{"text": "model down"}]}}}});
        let Outcome::Failed(f) = outcome(&failed, "x", &mut c).unwrap() else { panic!() };
        assert!(f.contains("failed") && f.contains("model down"), "{f}");
        assert_eq!(c.task_id, None);
        let msg =
            json!({"message": {"messageId": "m", "role": "ROLE_AGENT", "contextId": "c9", "parts": [{"text": "hi"}]}});
        assert_eq!(outcome(&msg, "x", &mut c).unwrap(), Outcome::Answer("hi".into()));
        assert_eq!(c.context_id.as_deref(), Some("c9"));
        let working = json!({"task": {"id": "t4", "status": {"state": "TASK_STATE_WORKING"}}});
        assert_eq!(outcome(&working, "x", &mut c).unwrap(), Outcome::Working("t4".into()));
        assert!(outcome(&json!({"nothing": 1}), "x", &mut c).is_err());
    }
}
