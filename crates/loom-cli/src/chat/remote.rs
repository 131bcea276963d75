//! `loom chat --url`: an agent of a `loom serve`. Each message is `POST /runs` in one server
//! session; its events come from `GET /runs/{id}/events` as Server-Sent Events (reconnecting with
//! `Last-Event-ID`, so nothing is lost or repeated); a run suspended for an approval is continued
//! with `POST /runs/{id}/approvals/{call}` once the question is answered here.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use loom_agent::{Event, Message};
use serde_json::{Value, json};

use super::view::{ChatView, Ended};
use super::{Answer, ChatArgs, Lines, ask_approval};
use crate::run::{Exit, report};

/// A chat with a server's agent.
pub struct RemoteChat {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
    agent: Option<String>,
    user: Option<String>,
    /// The server session; `None` until the first run makes one (or after `/new`).
    session: Option<String>,
}

/// What went wrong talking to the server.
enum Failure {
    /// The key was refused (401): nothing will work.
    Unauthorized,
    /// Anything else, as a sentence.
    Other(String),
}

impl From<reqwest::Error> for Failure {
    fn from(e: reqwest::Error) -> Self {
        Failure::Other(format!("the server did not answer: {e}"))
    }
}

impl RemoteChat {
    /// Checks the URL and that the server answers `/health`; reads the key from `--key-env`.
    pub async fn connect(url: &str, args: &ChatArgs) -> Result<RemoteChat, String> {
        let parsed = url::Url::parse(url.trim()).map_err(|e| format!("--url `{url}` is not a valid URL ({e})"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
            return Err(format!("--url `{url}`: expected an http:// or https:// URL of a `loom serve`"));
        }
        let key = match std::env::var(&args.key_env) {
            Ok(k) if !k.trim().is_empty() => Some(k.trim().to_string()),
            _ => {
                report(&format!("note: ${} is not set: requests carry no API key", args.key_env));
                None
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        let base = url.trim().trim_end_matches('/').to_string();
        let health = http.get(format!("{base}/health")).send().await.map_err(|e| format!("--url {base}: {e}"))?;
        if !health.status().is_success() {
            return Err(format!("--url {base}: /health answered {}", health.status()));
        }
        Ok(RemoteChat {
            http,
            base,
            key,
            agent: args.agent_name.clone(),
            user: args.user.clone(),
            session: args.session.clone(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    /// Sends a JSON request and reads a JSON answer; an error status is a failure with the
    /// server's message.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string());
        }
        let r = req.send().await?;
        let status = r.status();
        let text = r.text().await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(Failure::Unauthorized);
        }
        if !status.is_success() {
            let message = value["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
            return Err(Failure::Other(format!("{path}: {status}: {message}")));
        }
        Ok(value)
    }

    fn unauthorized(&self) -> Exit {
        report(&format!("error: {} refused the API key (401): set the key in the variable --key-env names", self.base));
        Exit::Usage
    }

    /// One message: a run on the server, its events shown as they stream.
    pub async fn turn(&mut self, message: String, lines: &mut Lines, view: &mut ChatView) -> Exit {
        let mut body = json!({"input": message});
        for (key, value) in [("session_id", &self.session), ("user_id", &self.user), ("agent", &self.agent)] {
            if let Some(v) = value {
                body[key] = json!(v);
            }
        }
        let run = match self.call(reqwest::Method::POST, "/runs", Some(body)).await {
            Ok(run) => run,
            Err(Failure::Unauthorized) => return self.unauthorized(),
            Err(Failure::Other(e)) => {
                report(&format!("error: {e}"));
                return Exit::Failed;
            }
        };
        let (Some(run_id), Some(session)) = (run["run_id"].as_str(), run["session_id"].as_str()) else {
            report(&format!("error: the server's answer to POST /runs has no run: {run}"));
            return Exit::Failed;
        };
        self.session = Some(session.to_string());
        match self.follow(run_id, lines, view).await {
            Ok(exit) => exit,
            Err(Failure::Unauthorized) => self.unauthorized(),
            Err(Failure::Other(e)) => {
                report(&format!("error: {e}"));
                Exit::Failed
            }
        }
    }

    /// Streams the run's events until it ends; a suspension asks the pending approvals and
    /// streams on after the last event seen.
    async fn follow(&self, run_id: &str, lines: &mut Lines, view: &mut ChatView) -> Result<Exit, Failure> {
        let mut last: Option<u64> = None;
        let mut always: HashSet<String> = HashSet::new();
        let mut cancelled = false;
        loop {
            let mut req = self
                .request(reqwest::Method::GET, &format!("/runs/{run_id}/events"))
                .header(reqwest::header::ACCEPT, "text/event-stream");
            if let Some(seq) = last {
                req = req.header("last-event-id", seq.to_string());
            }
            let r = req.send().await?;
            if r.status() == reqwest::StatusCode::UNAUTHORIZED {
                return Err(Failure::Unauthorized);
            }
            if !r.status().is_success() {
                return Err(Failure::Other(format!("/runs/{run_id}/events: {}", r.status())));
            }
            let mut stream = r.bytes_stream();
            let mut buffer = String::new();
            let mut ended: Option<Ended> = None;
            while ended.is_none() {
                let chunk = tokio::select! {
                    biased;
                    Ok(()) = tokio::signal::ctrl_c() => {
                        if cancelled {
                            return Ok(Exit::Cancelled);
                        }
                        cancelled = true;
                        let path = format!("/runs/{run_id}/cancel");
                        if let Err(Failure::Other(e)) = self.call(reqwest::Method::POST, &path, None).await {
                            report(&format!("error: cancelling: {e}"));
                        }
                        continue;
                    }
                    chunk = stream.next() => chunk,
                };
                let Some(chunk) = chunk else { break };
                buffer.push_str(&String::from_utf8_lossy(&chunk?));
                while let Some((frame, rest)) = split_frame(&buffer) {
                    buffer = rest;
                    let Some(data) = frame_data(&frame) else { continue };
                    let event: Event = serde_json::from_str(&data)
                        .map_err(|e| Failure::Other(format!("an event the server sent is not valid: {e}")))?;
                    if last.is_some_and(|l| event.seq <= l) {
                        continue;
                    }
                    last = Some(event.seq);
                    match view.event(&event) {
                        Ok(Some(end)) => {
                            ended = Some(end);
                            break;
                        }
                        Ok(None) => {}
                        Err(e) => return Err(Failure::Other(format!("cannot write to stdout: {e}"))),
                    }
                }
            }
            match ended {
                Some(Ended::Completed) => return Ok(Exit::Completed),
                Some(Ended::NotCompleted(state)) => return Ok(Exit::of(state)),
                Some(Ended::Suspended) => self.decide(run_id, lines, &mut always).await?,
                // The stream closed early (a restart, a proxy): reconnect after the last event.
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Asks about each pending call of the run and sends the decisions.
    async fn decide(&self, run_id: &str, lines: &mut Lines, always: &mut HashSet<String>) -> Result<(), Failure> {
        let mut pending = Vec::new();
        // The run's state may lag its last event by a moment.
        for _ in 0..40 {
            let list = self.call(reqwest::Method::GET, "/approvals", None).await?;
            pending = list["approvals"]
                .as_array()
                .map(|a| a.iter().filter(|p| p["run_id"] == run_id).cloned().collect())
                .unwrap_or_default();
            if !pending.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if pending.is_empty() {
            return Err(Failure::Other(format!("run {run_id} is suspended, but the server lists no pending approval")));
        }
        for p in pending {
            let tool = p["tool"].as_str().unwrap_or_default().to_string();
            let call = p["call_id"].as_str().unwrap_or_default();
            let answer = if always.contains(&tool) {
                report(&format!("? `{tool}`: allowed (always, for this run)"));
                Answer::Yes
            } else {
                let reason = p["reason"].as_str().unwrap_or("it needs approval");
                ask_approval(lines, &tool, reason, &p["arguments"].to_string()).await
            };
            let decision = match answer {
                Answer::Yes => json!({"decision": "allow"}),
                Answer::Always => {
                    always.insert(tool);
                    json!({"decision": "allow"})
                }
                Answer::No => json!({"decision": "deny", "reason": "denied in the chat"}),
            };
            self.call(reqwest::Method::POST, &format!("/runs/{run_id}/approvals/{call}"), Some(decision)).await?;
        }
        Ok(())
    }

    /// Forgets the session: the next message starts a new one on the server.
    pub fn new_session(&mut self) -> String {
        self.session = None;
        "(made by the server with the next message)".to_string()
    }

    /// The session's conversation, from the server.
    pub async fn history(&self) -> Result<Vec<Message>, String> {
        let Some(session) = &self.session else { return Ok(Vec::new()) };
        let value = match self.call(reqwest::Method::GET, &format!("/sessions/{session}/history"), None).await {
            Ok(v) => v,
            Err(Failure::Unauthorized) => return Err("the server refused the API key (401)".into()),
            Err(Failure::Other(e)) => return Err(e),
        };
        serde_json::from_value(value["messages"].clone()).map_err(|e| format!("the history is not valid: {e}"))
    }
}

/// The first complete SSE frame of `buffer` (up to a blank line) and the rest.
fn split_frame(buffer: &str) -> Option<(String, String)> {
    let normalized = buffer.find("\r\n").map(|_| buffer.replace("\r\n", "\n"));
    let text = normalized.as_deref().unwrap_or(buffer);
    let at = text.find("\n\n")?;
    Some((text[..at].to_string(), text[at + 2..].to_string()))
}

/// The data of a frame (its `data:` lines joined); `None` for comments and keep-alives.
fn frame_data(frame: &str) -> Option<String> {
    let data: Vec<&str> =
        frame.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.strip_prefix(' ').unwrap_or(d)).collect();
    (!data.is_empty()).then(|| data.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_on_blank_lines() {
        let (frame, rest) = split_frame("id: 1\nevent: x\ndata: {\"a\":1}\n\ndata: par").unwrap();
        assert_eq!(frame_data(&frame).as_deref(), Some("{\"a\":1}"));
        assert_eq!(rest, "data: par");
        assert!(split_frame(&rest).is_none());
        let (frame, _) = split_frame(": keep-alive\r\n\r\n").unwrap();
        assert_eq!(frame_data(&frame), None);
        let (frame, _) = split_frame("data: a\ndata: b\n\n").unwrap();
        assert_eq!(frame_data(&frame).as_deref(), Some("a\nb"));
    }
}
