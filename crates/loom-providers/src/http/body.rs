//! The deadline of a call and reading a response body: whole, or streamed event by event.

use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::StreamExt;
use loom_core::error::ModelError;
use loom_core::model::ModelChunk;

use super::StreamDecoder;
use super::errors::{sse_error, too_large, transient, transport_error};
use crate::sse::{SseEvent, SseParser};

/// The end of a call: its total timeout, from the moment it got its place in the concurrency limit.
#[derive(Clone, Copy, Debug)]
pub(super) struct Deadline {
    pub(super) at: Instant,
    total: Duration,
}

impl Deadline {
    pub(super) fn new(total: Duration) -> Self {
        Deadline { at: after(total), total }
    }

    pub(super) fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub(super) fn exceeded(&self) -> ModelError {
        transient(format!("the call exceeded its total timeout of {} ms", self.total.as_millis()))
    }

    /// Runs `fut` for at most `limit`, and never past the deadline. The error says which one ran out.
    pub(super) async fn run<F: Future>(
        &self,
        limit: Duration,
        fut: F,
        message: impl FnOnce() -> String,
    ) -> Result<F::Output, ModelError> {
        let remaining = self.remaining();
        if limit < remaining {
            tokio::time::timeout(limit, fut).await.map_err(|_| transient(message()))
        } else {
            tokio::time::timeout(remaining, fut).await.map_err(|_| self.exceeded())
        }
    }
}

/// A failed attempt, and how long the server asked us to wait before the next one.
pub(super) struct Failed {
    pub(super) error: ModelError,
    pub(super) retry_after: Option<Duration>,
}

impl From<ModelError> for Failed {
    fn from(error: ModelError) -> Self {
        Failed { error, retry_after: None }
    }
}

pub(super) struct Opened {
    pub(super) chunks: VecDeque<ModelChunk>,
    pub(super) body: Option<BodyDecoder>,
}

type ByteStream = std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

pub(super) struct BodyDecoder {
    bytes: ByteStream,
    parser: SseParser,
    decoder: Box<dyn StreamDecoder>,
    /// Events of the network chunk being decoded (kept for its allocation).
    events: Vec<SseEvent>,
    /// One timer for the whole body. It is armed for `timer_at` and only moved when it fires early
    /// (each read pushes the idle deadline forward) or a read's deadline is earlier: reads cost no
    /// timer registration each.
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    timer_at: Instant,
    /// The deadline of the read in progress (and whether it is the call's total timeout).
    due: Option<(Instant, bool)>,
    /// What the drain after the last event may still read.
    drained: usize,
    /// The decoder has seen the end of the answer.
    pub(super) done: bool,
    /// The body has ended.
    pub(super) eof: bool,
    read: usize,
    max_bytes: usize,
}

impl BodyDecoder {
    /// A decoder over a streamed body whose first bytes are due at `first_byte_at`, accepting at
    /// most `max_bytes` in all (and per event).
    pub(super) fn new(
        response: reqwest::Response,
        decoder: Box<dyn StreamDecoder>,
        first_byte_at: Instant,
        max_bytes: usize,
    ) -> Self {
        BodyDecoder {
            bytes: Box::pin(response.bytes_stream()),
            parser: SseParser::with_limit(max_bytes),
            decoder,
            events: Vec::new(),
            timer: Box::pin(tokio::time::sleep_until(first_byte_at.into())),
            timer_at: first_byte_at,
            due: None,
            drained: 64 * 1024,
            done: false,
            eof: false,
            read: 0,
            max_bytes,
        }
    }

    /// Reads one network chunk (waiting at most `limit` from the first poll of this read, and never
    /// past the deadline) and decodes what it completes into `out`. On an error, `out` keeps the
    /// chunks decoded before it.
    pub(super) fn poll_next_chunks(
        &mut self,
        cx: &mut Context<'_>,
        deadline: &Deadline,
        limit: Duration,
        timed_out: impl FnOnce() -> String,
        out: &mut Vec<ModelChunk>,
    ) -> Poll<Result<(), ModelError>> {
        let (due, by_total) =
            *self.due.get_or_insert_with(|| match Instant::now().checked_add(limit).filter(|at| *at < deadline.at) {
                Some(at) => (at, false),
                None => (deadline.at, true),
            });
        let next = match self.bytes.poll_next_unpin(cx) {
            Poll::Ready(next) => next,
            Poll::Pending => {
                if !self.poll_timer(cx, due) {
                    return Poll::Pending;
                }
                self.due = None;
                return Poll::Ready(Err(if by_total { deadline.exceeded() } else { transient(timed_out()) }));
            }
        };
        self.due = None;
        let mut events = std::mem::take(&mut self.events);
        let result = self.decode(next, &mut events, out);
        events.clear();
        self.events = events;
        Poll::Ready(result)
    }

    /// Whether `due` has passed, by the one timer: it is moved only when it is armed later than
    /// `due`, or fires for an earlier read's deadline.
    fn poll_timer(&mut self, cx: &mut Context<'_>, due: Instant) -> bool {
        if self.timer_at > due {
            self.timer.as_mut().reset(due.into());
            self.timer_at = due;
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= due {
                return true;
            }
            self.timer.as_mut().reset(due.into());
            self.timer_at = due;
        }
        false
    }

    fn decode(
        &mut self,
        next: Option<reqwest::Result<bytes::Bytes>>,
        events: &mut Vec<SseEvent>,
        out: &mut Vec<ModelChunk>,
    ) -> Result<(), ModelError> {
        match next {
            Some(Ok(bytes)) => {
                self.read += bytes.len();
                if self.read > self.max_bytes {
                    return Err(too_large(self.max_bytes, None));
                }
                self.parser.feed(&bytes, |e| events.push(e)).map_err(sse_error)?;
            }
            Some(Err(e)) => return Err(transport_error(&e)),
            None => {
                self.eof = true;
                self.parser.finish(|e| events.push(e)).map_err(sse_error)?;
                for e in events.drain(..) {
                    if self.decoder.event(e, out)? {
                        break;
                    }
                }
                self.done = true;
                return self.decoder.end(out);
            }
        }
        for e in events.drain(..) {
            if self.decoder.event(e, out)? {
                self.done = true;
                return self.decoder.end(out);
            }
        }
        Ok(())
    }

    /// After the last event: reads what is left of the body (normally just the end of the chunked
    /// encoding, already on its way) so the connection goes back to the pool instead of being
    /// closed. Gives up after `wait` or 64 KiB.
    pub(super) fn poll_drain(&mut self, cx: &mut Context<'_>, wait: Duration) -> Poll<()> {
        let due = *self.due.get_or_insert_with(|| (after(wait), false));
        loop {
            match self.bytes.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(b))) => match self.drained.checked_sub(b.len()) {
                    Some(left) => self.drained = left,
                    None => return Poll::Ready(()),
                },
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending if self.poll_timer(cx, due.0) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Now plus `d`; a century when `d` is too large to add (`Duration::MAX` for "no limit").
pub(super) fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// The first bytes of a body (at most `max`, for an error message): whatever arrives within
/// `wait`; a failure to read ends it early.
pub(super) async fn read_head(response: reqwest::Response, max: usize, wait: Duration, deadline: &Deadline) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    let read = async {
        while let Some(Ok(chunk)) = stream.next().await {
            out.extend_from_slice(&chunk[..chunk.len().min(max - out.len())]);
            if out.len() >= max {
                break;
            }
        }
    };
    let _ = deadline.run(wait.min(Duration::from_secs(5)), read, String::new).await;
    out
}

/// Reads a whole body of at most `max` bytes, within `wait` and the deadline.
pub(super) async fn read_limited(
    response: reqwest::Response,
    max: usize,
    wait: Duration,
    deadline: &Deadline,
) -> Result<Vec<u8>, ModelError> {
    if let Some(len) = response.content_length().filter(|n| *n > max as u64) {
        return Err(too_large(max, Some(len)));
    }
    let mut out = Vec::with_capacity(response.content_length().map_or(0, |n| n as usize));
    let mut stream = response.bytes_stream();
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| transport_error(&e))?;
            if out.len() + chunk.len() > max {
                return Err(too_large(max, None));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(())
    };
    let message = || format!("the response body did not arrive within {} ms", wait.as_millis());
    deadline.run(wait, read, message).await??;
    Ok(out)
}
