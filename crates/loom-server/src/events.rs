//! `GET /runs/{id}/events`: Server-Sent Events (each event's `id` is its `seq`; a client that
//! reconnects with `Last-Event-ID` gets exactly the events after it), or a JSON page. And
//! `POST /runs/stream`: a run started and its events streamed in one request (the same SSE ids,
//! so `GET /runs/{id}/events` with `Last-Event-ID` resumes it).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::{FutureExt, StreamExt, stream};
use loom_agent::{Event, Run};
use serde::Deserialize;
use serde_json::json;

use crate::error::{ApiError, ApiResult};
use crate::runs::CreateRun;
use crate::sse::EventBox;
use crate::state::{AppState, Body, Tenant};

/// Query of the events endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events after this seq (as `Last-Event-ID`).
    pub after: Option<u64>,
    /// At most this many events in a JSON page (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// Where a run's events come from: the live log, or the durable one.
enum Source {
    Live(Run),
    Stored(Vec<Event>),
    /// Queue mode: the durable log, followed (the run executes in another process).
    Follow(Arc<dyn loom_agent::store::RunQueue>),
}

async fn source(state: &AppState, tenant: &Tenant, run_id: &str) -> ApiResult<Source> {
    if let Some(e) = state.run_entry(tenant, run_id) {
        return Ok(Source::Live(e.run));
    }
    if state.runs().contains_key(run_id) {
        return Err(ApiError::not_found("run", run_id));
    }
    if let Some(queue) = &state.queue {
        crate::queued::owned(queue.as_ref(), tenant, run_id).await?;
        return Ok(Source::Follow(queue.clone()));
    }
    for agent in state.agents.values() {
        let Some(journal) = agent.journal() else { continue };
        let Some(stored) = journal.load(run_id).await? else {
            // A run another server holds waiting (not begun): its durable log, followed to its end.
            if let Ok(queue) = agent.run_queue()
                && let Some(s) = queue.status(run_id).await?
            {
                if tenant.owns(s.user_id.as_deref()).is_none() {
                    break;
                }
                return Ok(Source::Follow(queue));
            }
            continue;
        };
        if tenant.owns(stored.record.user_id.as_deref()).is_none() {
            break;
        }
        return Ok(Source::Stored(stored.events));
    }
    Err(ApiError::not_found("run", run_id))
}

/// The seq after which to start: `Last-Event-ID`, else `?after=`.
fn start_after(headers: &HeaderMap, q: &EventsQuery) -> ApiResult<Option<u64>> {
    match headers.get("last-event-id").map(|v| v.to_str().map(str::trim)) {
        Some(Ok(id)) if !id.is_empty() => {
            id.parse().map(Some).map_err(|_| ApiError::bad_request("Last-Event-ID is an event seq (a number)"))
        }
        _ => Ok(q.after),
    }
}

pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(run_id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let source = source(&state, &tenant, &run_id).await?;
    let after = start_after(&headers, &q)?;
    let wanted = move |e: &Event| after.is_none_or(|a| e.seq > a);
    let sse =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"));
    if sse {
        let events: EventBox = match source {
            Source::Live(run) => Box::pin(run.events().filter(move |e| futures::future::ready(wanted(e)))),
            Source::Stored(list) => Box::pin(stream::iter(list.into_iter().filter(move |e| wanted(e)))),
            Source::Follow(queue) => {
                let follow = crate::queued::Follow::new(queue, run_id.clone(), after);
                Box::pin(
                    stream::unfold(follow, |mut f| async move { f.next_batch().await.map(|batch| (batch, f)) })
                        .flat_map(stream::iter),
                )
            }
        };
        return Ok(crate::sse::response(events));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let (mut page, done) = match source {
        Source::Live(run) => {
            let mut s = run.events();
            let mut out = Vec::new();
            let mut done = false;
            while out.len() < limit {
                match s.next().now_or_never() {
                    Some(Some(e)) => {
                        if wanted(&e) {
                            out.push(e);
                        }
                    }
                    Some(None) => {
                        done = true;
                        break;
                    }
                    None => break,
                }
            }
            let ended = run.state().is_terminal() && out.last().is_some_and(Event::is_terminal);
            (out, done || ended)
        }
        Source::Stored(list) => {
            let all: Vec<Event> = list.into_iter().filter(|e| wanted(e)).collect();
            let done = all.len() <= limit;
            (all, done)
        }
        Source::Follow(queue) => {
            let page = queue.events_after(&run_id, after, limit).await?;
            let mut follow = crate::queued::Follow::new(queue, run_id.clone(), after);
            let page = follow.contiguous_page(page);
            (page, follow.done)
        }
    };
    page.truncate(limit);
    let next_after = page.last().map(|e| e.seq).or(after);
    Ok(Json(json!({ "events": page, "next_after": next_after, "done": done })).into_response())
}

/// `POST /runs/stream`: starts a run as `POST /runs` does (same body; `wait` is refused) and
/// answers its events as SSE from the first one, in the same request. The run's address is in
/// `Content-Location` (and every event carries its `run_id`): a client that loses the stream
/// resumes with `GET /runs/{id}/events` and `Last-Event-ID`.
pub(crate) async fn create_stream(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Body(body): Body<CreateRun>,
) -> ApiResult<Response> {
    if body.wait {
        return Err(ApiError::bad_request("`wait` does not apply to `POST /runs/stream` (it streams to the end)"));
    }
    let (run_id, events): (String, EventBox) = match state.queue.clone() {
        Some(queue) => {
            let (_, queued) = crate::queued::enqueue(&state, queue.as_ref(), &tenant, body).await?;
            let follow = crate::queued::Follow::new(queue, queued.run_id.clone(), None);
            let events = stream::unfold(follow, |mut f| async move { f.next_batch().await.map(|batch| (batch, f)) })
                .flat_map(stream::iter);
            (queued.run_id, Box::pin(events))
        }
        None => {
            let (_, run) = crate::runs::start(&state, &tenant, body).await?;
            let mut events = run.events().peekable();
            // The run's first events come from its task, which starts once this one yields:
            // waiting for them for one turn of the scheduler sends the response head and the
            // first events in one write (one wake-up of the client, not two). A run that waits
            // behind its session's earlier runs is answered after that turn all the same.
            let first = std::pin::Pin::new(&mut events).peek();
            futures::future::select(first, std::pin::pin!(tokio::task::yield_now())).await;
            (run.id().to_string(), Box::pin(events))
        }
    };
    let mut response = crate::sse::response(events);
    if let Ok(location) = HeaderValue::from_str(&format!("/runs/{run_id}")) {
        response.headers_mut().insert(header::CONTENT_LOCATION, location);
    }
    Ok(response)
}
