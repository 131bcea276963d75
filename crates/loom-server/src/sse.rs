//! A run's events as a `text/event-stream` body: each event framed as
//! `id: SEQ\nevent: TYPE\ndata: JSON\n\n` (the bytes axum's `Sse` writes for the same event), with
//! a `:` comment after 15 s without an event (as axum's default keep-alive).
//!
//! Unlike axum's `Sse`, the events already available when the body is polled go out in one frame
//! (one chunk over HTTP/1.1, one DATA frame over HTTP/2), each serialized straight into it (one
//! buffer per frame rather than a few allocations per event), and the keep-alive timer is not
//! re-armed at every event: it is armed when the stream waits, and when it fires early (events
//! went out meanwhile) it is moved to 15 s after the last one. The bytes on the wire are the same.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures::Stream;
use loom_agent::Event;
use tokio::time::{Instant, Sleep};

/// A stream of a run's events.
pub(crate) type EventBox = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// How long a stream may stay silent before a keep-alive comment.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The keep-alive comment (what axum's `KeepAlive::default()` sends).
const KEEP_ALIVE_COMMENT: &[u8] = b":\n\n";

/// A frame stops taking further ready events past this size.
const MAX_FRAME: usize = 64 * 1024;

/// Appends one event in SSE framing: `id` (its seq), `event` (its type name), `data` (its JSON).
/// JSON as serde_json writes it has no raw newline, so the data is one line.
pub(crate) fn write_event(buf: &mut Vec<u8>, e: &Event) {
    let _ = write!(buf, "id: {}\nevent: {}\ndata: ", e.seq, e.type_name());
    let start = buf.len();
    if serde_json::to_writer(&mut *buf, e).is_err() {
        buf.truncate(start);
        buf.extend_from_slice(b"{}");
    }
    buf.extend_from_slice(b"\n\n");
}

/// The SSE body of an event stream: the events ready at each poll in one frame, and keep-alive
/// comments while it waits. It says it has ended as soon as its last frame is out, so that the
/// last frame carries the end (HTTP/1.1: the last chunk and the terminating one in one write;
/// HTTP/2: `END_STREAM` on the last DATA frame rather than an empty one after it).
pub(crate) struct SseBody {
    events: EventBox,
    keep_alive: Pin<Box<Sleep>>,
    interval: Duration,
    /// When the last frame went out (the keep-alive counts from it).
    last_sent: Instant,
    ended: bool,
}

impl SseBody {
    /// The body of `events`, with a keep-alive comment after `interval` of silence.
    pub(crate) fn new(events: EventBox, interval: Duration) -> Self {
        let now = Instant::now();
        SseBody {
            events,
            keep_alive: Box::pin(tokio::time::sleep_until(now + interval)),
            interval,
            last_sent: now,
            ended: false,
        }
    }

    /// The next frame's bytes: every event ready now (up to [`MAX_FRAME`] bytes), else a
    /// keep-alive comment when one is due; `None` once the events have ended.
    pub(crate) fn poll_batch(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let mut buf = Vec::new();
        while buf.len() < MAX_FRAME {
            match self.events.as_mut().poll_next(cx) {
                Poll::Ready(Some(e)) => write_event(&mut buf, &e),
                Poll::Ready(None) => {
                    self.ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if !buf.is_empty() {
            self.last_sent = Instant::now();
            return Poll::Ready(Some(Bytes::from(buf)));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        // Nothing ready: wait for the keep-alive deadline, counted from the last frame.
        loop {
            if self.keep_alive.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let due = self.last_sent + self.interval;
            if now >= due {
                self.last_sent = now;
                self.keep_alive.as_mut().reset(now + self.interval);
                return Poll::Ready(Some(Bytes::from_static(KEEP_ALIVE_COMMENT)));
            }
            // Frames went out since the timer was armed: wait until `interval` after the last.
            self.keep_alive.as_mut().reset(due);
        }
    }
}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.get_mut().poll_batch(cx).map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

/// A `text/event-stream` response of `events` (`Cache-Control: no-cache`, as axum's `Sse`).
pub(crate) fn response(events: EventBox) -> Response {
    let mut response = Response::new(Body::new(SseBody::new(events, KEEP_ALIVE)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::response::IntoResponse;
    use axum::response::sse::{Event as SseEvent, Sse};
    use futures::StreamExt;
    use http_body::Body as _;
    use loom_agent::Agent;

    use super::*;

    /// A real run's events (echo model): `run.started` with the input, the model's, `run.completed`.
    async fn run_events(prompt: &str) -> Vec<Event> {
        let agent = Agent::builder().model("echo").build().unwrap_or_else(|e| panic!("{e}"));
        let run = agent.start(prompt);
        run.events().collect().await
    }

    /// What axum's `Sse` writes for the same events (the framing this module replaces).
    async fn axum_bytes(events: Vec<Event>) -> Vec<u8> {
        let body = futures::stream::iter(events).map(|e| {
            let data = serde_json::to_string(&e).unwrap_or_default();
            Ok::<_, Infallible>(SseEvent::default().id(e.seq.to_string()).event(e.type_name()).data(data))
        });
        let res = Sse::new(body).into_response();
        axum::body::to_bytes(res.into_body(), usize::MAX).await.map(|b| b.to_vec()).unwrap_or_default()
    }

    async fn next(body: &mut SseBody) -> Option<Bytes> {
        futures::future::poll_fn(|cx| body.poll_batch(cx)).await
    }

    async fn body_bytes(res: Response) -> String {
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn frames_are_the_bytes_axum_writes() {
        // A multi-line prompt: its newlines must stay escaped inside the one `data:` line.
        let events = run_events("first line\nsecond line\r\nthird: \"quoted\"").await;
        assert!(events.len() >= 3, "{events:?}");
        let expected = String::from_utf8_lossy(&axum_bytes(events.clone()).await).into_owned();
        assert!(expected.starts_with("id: 0\nevent: run.started\ndata: {"), "{expected}");
        let res = response(Box::pin(futures::stream::iter(events)));
        assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(body_bytes(res).await, expected);
    }

    #[tokio::test]
    async fn ready_events_go_out_in_one_frame() {
        let events = run_events("hello").await;
        let (tx, rx) = futures::channel::mpsc::unbounded::<Event>();
        let mut frames = SseBody::new(Box::pin(rx), KEEP_ALIVE);
        let (first, rest) = events.split_at(events.len() - 1);
        for e in first {
            tx.unbounded_send(e.clone()).unwrap_or_else(|e| panic!("{e}"));
        }
        let mut expected = Vec::new();
        first.iter().for_each(|e| write_event(&mut expected, e));
        let frame = next(&mut frames).await.unwrap_or_default();
        assert_eq!(frame.as_ref(), expected.as_slice(), "every ready event in the first frame");
        // Nothing more is ready: the stream waits.
        assert!(futures::poll!(std::pin::pin!(next(&mut frames))).is_pending());
        tx.unbounded_send(rest[0].clone()).unwrap_or_else(|e| panic!("{e}"));
        drop(tx);
        let mut last = Vec::new();
        write_event(&mut last, &rest[0]);
        let frame = next(&mut frames).await.unwrap_or_default();
        assert_eq!(frame.as_ref(), last.as_slice());
        assert!(frames.is_end_stream(), "the body says it ended with its last frame");
        assert!(next(&mut frames).await.is_none());
    }

    #[tokio::test]
    async fn keep_alive_counts_from_the_last_frame() {
        let interval = Duration::from_millis(150);
        let events = run_events("hello").await;
        let (tx, rx) = futures::channel::mpsc::unbounded::<Event>();
        let mut frames = SseBody::new(Box::pin(rx), interval);
        // Silence from the start: a comment after the interval.
        let started = std::time::Instant::now();
        let frame = next(&mut frames).await.unwrap_or_default();
        assert_eq!(frame.as_ref(), b":\n\n");
        assert!(started.elapsed() >= interval);
        // An event part-way through the next interval: the comment comes an interval after it,
        // not when the timer armed before it fires.
        tokio::time::sleep(interval / 2).await;
        tx.unbounded_send(events[0].clone()).unwrap_or_else(|e| panic!("{e}"));
        let frame = next(&mut frames).await.unwrap_or_default();
        assert!(frame.starts_with(b"id: 0\n"));
        let sent = std::time::Instant::now();
        let frame = next(&mut frames).await.unwrap_or_default();
        assert_eq!(frame.as_ref(), b":\n\n");
        assert!(sent.elapsed() >= interval - Duration::from_millis(2), "{:?}", sent.elapsed());
        drop(tx);
        assert!(next(&mut frames).await.is_none());
    }
}
