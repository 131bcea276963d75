//! The stream handed to the caller: chunks as they are decoded, priced, with the key scrubbed
//! from errors; the connection goes back to the pool before it ends.

use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::Duration;

use loom_core::error::ModelError;
use loom_core::message::Usage;
use loom_core::model::ModelChunk;
use tokio::sync::OwnedSemaphorePermit;

use super::ApiKey;
use super::body::{BodyDecoder, Deadline};
use super::errors::{scrub_error, stalled};
use crate::pricing::Price;

fn priced(chunk: ModelChunk, price: Option<&Price>) -> ModelChunk {
    match (chunk, price) {
        (ModelChunk::Usage(u), Some(p)) => ModelChunk::Usage(Usage { cost_usd: p.cost(&u), ..u }),
        (c, _) => c,
    }
}

/// Whether a stream that reached the end of its body should yield once before it ends.
///
/// Once the body has ended, the task hyper spawned to put the connection back in the pool is
/// woken, but has not run yet. On a current-thread runtime it runs only when this task yields;
/// without the yield, the next call (right after a quick tool) opens a second connection (a new
/// TLS handshake against a real provider). On a multi-thread runtime that task almost always runs
/// first anyway: a worker runs the task woken last next, and the connection's task woke it after
/// this one (a two-worker test reused one connection for six calls in 50 of 50 agent runs, 48-50 of
/// 50 under load, with or without the yield). There a self-wake costs more than it saves: tokio
/// treats it as a yield and wakes an idle worker (an eventfd write and futex calls), about a fifth
/// of a streamed run's CPU (docs/benchmarks.md).
pub(super) fn yields_at_end() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread)
}

/// What the stream handed to the caller carries between polls.
pub(super) struct Streaming {
    pub(super) chunks: VecDeque<ModelChunk>,
    pub(super) body: Option<BodyDecoder>,
    /// An error to yield once the chunks decoded before it are out.
    pub(super) error: Option<ModelError>,
    pub(super) buf: Vec<ModelChunk>,
    pub(super) price: Option<Price>,
    pub(super) idle: Duration,
    pub(super) deadline: Deadline,
    pub(super) key: Option<ApiKey>,
    pub(super) _permit: Option<OwnedSemaphorePermit>,
    /// Whether the stream still has to yield once after the body ended (see `yields_at_end`).
    pub(super) yield_at_end: bool,
}

impl futures::Stream for Streaming {
    type Item = Result<ModelChunk, ModelError>;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(chunk) = this.chunks.pop_front() {
                return Poll::Ready(Some(Ok(priced(chunk, this.price.as_ref()))));
            }
            if let Some(e) = this.error.take() {
                return Poll::Ready(Some(Err(e)));
            }
            let Some(body) = this.body.as_mut() else {
                this._permit = None;
                return Poll::Ready(None);
            };
            if body.done {
                if !body.eof {
                    let wait = this.idle.min(this.deadline.remaining()).min(Duration::from_millis(500));
                    std::task::ready!(body.poll_drain(cx, wait));
                }
                if this.yield_at_end {
                    // Give hyper's connection task one turn to put the connection back in the pool,
                    // so the next call (often right after a quick tool) reuses it.
                    this.yield_at_end = false;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                // The connection is back in the pool (or closed): the place in the limit is free.
                this.body = None;
                this._permit = None;
                return Poll::Ready(None);
            }
            let idle = this.idle;
            let result =
                std::task::ready!(body.poll_next_chunks(cx, &this.deadline, idle, || stalled(idle), &mut this.buf));
            this.chunks.extend(this.buf.drain(..));
            if let Err(e) = result {
                this.body = None;
                this.error = Some(scrub_error(this.key.as_ref(), e));
            }
        }
    }
}
