//! `SendStreamingMessage` and `SubscribeToTask`: Server-Sent Events whose `data` are JSON-RPC
//! responses holding a `StreamResponse` (§3.2.3, §9.4.2). The stream begins with the `Task`, then
//! a `statusUpdate` when the run starts working, `artifactUpdate`s as the answer streams (the first
//! delta of each model turn replaces the `answer` artifact, later ones append; the final answer
//! replaces it whole with `lastChunk`, so a client that applies the updates ends with exactly the
//! answer), tool artifacts as they are made, and a last `statusUpdate` with the final state. It
//! closes when the task reaches a terminal or interrupted state.

use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, stream};
use loom_agent::event::DeltaKind;
use loom_agent::{Event, EventKind, RunState};
use serde_json::{Value, json};

use super::rpc;
use super::task::{answer_artifact, status};

/// What the stream remembers between events: the model turn whose text is streaming.
struct Cursor {
    turn: Option<u32>,
}

fn status_update(task_id: &str, context_id: &str, state: RunState, e: &Event) -> Value {
    let error = match &e.kind {
        EventKind::RunFailed(x)
        | EventKind::RunCancelled(x)
        | EventKind::RunInterrupted(x)
        | EventKind::RunSuspended(x) => Some(&x.error),
        _ => None,
    };
    json!({"statusUpdate": {
        "taskId": task_id,
        "contextId": context_id,
        "status": status(task_id, context_id, state, error, e.at),
    }})
}

fn artifact_update(task_id: &str, context_id: &str, artifact: Value, append: bool, last: bool) -> Value {
    json!({"artifactUpdate": {
        "taskId": task_id,
        "contextId": context_id,
        "artifact": artifact,
        "append": append,
        "lastChunk": last,
    }})
}

/// The stream responses one run event gives.
fn updates(cursor: &mut Cursor, e: &Event) -> Vec<Value> {
    let (task_id, context_id) = (&*e.run_id, &*e.session_id);
    match &e.kind {
        EventKind::RunStarted(_) => vec![status_update(task_id, context_id, RunState::Running, e)],
        EventKind::ModelDelta(d) if d.kind == DeltaKind::Text && !d.text.is_empty() => {
            let append = cursor.turn == Some(d.turn);
            cursor.turn = Some(d.turn);
            let chunk =
                json!({"artifactId": format!("{task_id}-answer"), "name": "answer", "parts": [{"text": d.text}]});
            vec![artifact_update(task_id, context_id, chunk, append, false)]
        }
        EventKind::ArtifactCreated(a) => {
            let a = &a.artifact;
            let artifact =
                json!({"artifactId": a.id, "name": a.name, "parts": [{"text": a.content, "mediaType": a.media_type}]});
            vec![artifact_update(task_id, context_id, artifact, false, true)]
        }
        EventKind::RunCompleted(c) => vec![
            artifact_update(task_id, context_id, answer_artifact(task_id, &c.output), false, true),
            status_update(task_id, context_id, RunState::Completed, e),
        ],
        EventKind::RunFailed(_) => vec![status_update(task_id, context_id, RunState::Failed, e)],
        EventKind::RunCancelled(_) => vec![status_update(task_id, context_id, RunState::Cancelled, e)],
        EventKind::RunInterrupted(_) => vec![status_update(task_id, context_id, RunState::Interrupted, e)],
        EventKind::RunSuspended(_) => vec![status_update(task_id, context_id, RunState::Suspended, e)],
        _ => Vec::new(),
    }
}

fn sse(id: &Value, result: Value) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().data(rpc::result(id, result).to_string()))
}

/// The SSE response following a run's `events`, starting with `task` (the task as it is now), then the run's
/// whole event log from its start (so a subscriber that arrives mid-answer rebuilds the streamed
/// text from the turn's first chunk), until its last event.
pub fn task_stream(id: Value, events: impl futures::Stream<Item = Event> + Send + 'static, task: Value) -> Response {
    let first = sse(&id, json!({"task": task}));
    let mut cursor = Cursor { turn: None };
    let events = events.flat_map(move |e| {
        let out: Vec<Result<SseEvent, Infallible>> =
            updates(&mut cursor, &e).into_iter().map(|v| sse(&id, v)).collect();
        stream::iter(out)
    });
    let body = stream::once(futures::future::ready(first)).chain(events);
    Sse::new(body).keep_alive(KeepAlive::default()).into_response()
}

/// A stream of one task that has already stopped (a suspended task a client subscribed to): the
/// task, and nothing after it.
pub fn single(id: Value, task: Value) -> Response {
    let body = stream::once(futures::future::ready(sse(&id, json!({"task": task}))));
    Sse::new(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use loom_agent::event::{ModelDelta, RunCompleted};
    use std::sync::Arc;

    fn ev(seq: u64, kind: EventKind) -> Event {
        Event { run_id: Arc::from("run_1"), session_id: Arc::from("s1"), seq, at: chrono::Utc::now(), kind }
    }

    #[test]
    fn deltas_replace_per_turn_and_the_answer_is_last() {
        let mut c = Cursor { turn: None };
        let d = |turn, text: &str| EventKind::ModelDelta(ModelDelta { turn, kind: DeltaKind::Text, text: text.into() });
        let a = updates(&mut c, &ev(1, d(1, "thinking ")));
        let b = updates(&mut c, &ev(2, d(1, "aloud")));
        let n = updates(&mut c, &ev(3, d(2, "Answer")));
        assert_eq!(a[0]["artifactUpdate"]["append"], false);
        assert_eq!(b[0]["artifactUpdate"]["append"], true);
        assert_eq!(n[0]["artifactUpdate"]["append"], false, "a new turn replaces the text");
        let done = EventKind::RunCompleted(RunCompleted {
            output: "Answer".into(),
            parsed: None,
            turns: 2,
            usage: Default::default(),
        });
        let end = updates(&mut c, &ev(4, done));
        assert_eq!(end[0]["artifactUpdate"]["lastChunk"], true);
        assert_eq!(end[0]["artifactUpdate"]["artifact"]["parts"][0]["text"], "Answer");
        assert_eq!(end[1]["statusUpdate"]["status"]["state"], "TASK_STATE_COMPLETED");
        assert_eq!(end[1]["statusUpdate"]["taskId"], "run_1");
    }
}
