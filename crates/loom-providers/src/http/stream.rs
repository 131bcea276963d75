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
    /// Whether the stream already yielded once after the body ended.
    pub(super) yielded: bool,
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
                if !this.yielded {
                    // Give hyper's connection task one turn to put the connection back in the pool,
                    // so the next call (often right after a quick tool) reuses it.
                    this.yielded = true;
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
