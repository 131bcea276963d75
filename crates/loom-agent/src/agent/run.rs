//! Handles to a run: [`Run`] (state, result, live events, cancel), [`EventStream`], [`RunStream`].

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;

use crate::error::Error;
use crate::event::Event;
use crate::run::{Artifact, RunResult, RunState, Transcript};
use crate::runtime::RunLog;
/// A handle to one run: its state, its live events, its result, and a way to cancel it. Cheap to
/// clone; every clone sees the same run.
#[derive(Clone)]
pub struct Run {
    pub(crate) log: Arc<RunLog>,
}

impl Run {
    /// The run's id.
    pub fn id(&self) -> &str {
        &self.log.run_id
    }

    /// The run's session.
    pub fn session_id(&self) -> &str {
        &self.log.session_id
    }

    /// The user the run acts for.
    pub fn user_id(&self) -> Option<&str> {
        self.log.user_id.as_deref()
    }

    /// The current state.
    pub fn state(&self) -> RunState {
        self.log.state()
    }

    /// Waits for the run to end. `Ok` when it completed; otherwise [`Error::Run`] carrying the full
    /// result (state, error, events, usage).
    pub async fn wait(&self) -> Result<RunResult, Error> {
        self.result().await.into_completed()
    }

    /// Waits for the run to end and returns its result, whatever the state.
    pub async fn result(&self) -> RunResult {
        let log = self.log.clone();
        let r = futures::future::poll_fn(move |cx| log.poll_result(cx)).await;
        (*r).clone()
    }

    /// Every event from the start, then the new ones live as they happen; ends after the run's last
    /// event. Call it any number of times: each stream has its own cursor, and a slow consumer
    /// neither loses events nor slows the run or anyone else.
    pub fn events(&self) -> EventStream {
        EventStream { log: self.log.clone(), cursor: 0 }
    }

    /// Every event of this run and, nested live, of the child runs it starts (agents used as
    /// tools, a supervisor's workers, a workflow's agent nodes), each tagged with its run id and
    /// depth. Each run's events stay in order; the stream ends when the run and every child have
    /// ended.
    pub fn events_with_children(&self) -> crate::runtime::NestedEvents {
        crate::runtime::NestedEvents::new(self.log.clone())
    }

    /// Asks the run to stop. A queued run never starts; a running one stops at once (the model call
    /// or tools in flight are dropped, and tools see their cancellation token fire). The run ends
    /// `cancelled`. Cancelling a finished run does nothing.
    pub fn cancel(&self) {
        self.log.cancel.cancel();
    }

    /// Adds a user message that the model sees at its next turn, without cancelling anything: the
    /// run goes on, with a `run.steered` event when the message is added (journaled, so a resumed
    /// run sees it at the same point). A message that arrives while the model gives its final
    /// answer sends the run back to the model. A queued run gets it at its first turn.
    ///
    /// # Errors
    /// [`Error::RunFinished`] once the run has ended.
    pub fn steer(&self, text: impl Into<String>) -> Result<(), Error> {
        if self.log.steer(text.into()) {
            Ok(())
        } else {
            Err(Error::RunFinished { run_id: self.id().to_string(), state: self.state() })
        }
    }

    /// The artifacts created so far.
    pub fn artifacts(&self) -> Vec<Artifact> {
        self.log.artifacts()
    }

    /// The run's transcript (complete once the run has ended).
    pub fn transcript(&self) -> Transcript {
        self.log.transcript()
    }
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("id", &self.id())
            .field("session_id", &self.session_id())
            .field("state", &self.state())
            .finish()
    }
}

/// A run's events: the log from the start, then live. See [`Run::events`].
pub struct EventStream {
    log: Arc<RunLog>,
    cursor: usize,
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let cursor = self.cursor;
        match self.log.poll_event(cursor, cx) {
            Poll::Ready(Some(e)) => {
                self.cursor += 1;
                Poll::Ready(Some(e))
            }
            other => other,
        }
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").field("run_id", &self.log.run_id).field("cursor", &self.cursor).finish()
    }
}

/// The live events of a run started by `agent.stream` or `session.stream`. Dropping it before the
/// run ends cancels the run (nobody is listening any more); [`RunStream::detach`] keeps it going.
pub struct RunStream {
    run: Run,
    events: EventStream,
    cancel_on_drop: bool,
}

impl RunStream {
    pub(crate) fn new(run: Run) -> Self {
        let events = run.events();
        RunStream { run, events, cancel_on_drop: true }
    }

    /// The run.
    pub fn run(&self) -> &Run {
        &self.run
    }

    /// Keeps the run going when this stream is dropped, and returns its handle.
    pub fn detach(mut self) -> Run {
        self.cancel_on_drop = false;
        self.run.clone()
    }

    /// Waits for the run to end and returns its result, whatever the state.
    pub async fn result(mut self) -> RunResult {
        self.cancel_on_drop = false;
        self.run.result().await
    }
}

impl Stream for RunStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        Pin::new(&mut self.events).poll_next(cx)
    }
}

impl Drop for RunStream {
    fn drop(&mut self) {
        if self.cancel_on_drop && !self.run.state().is_terminal() {
            self.run.cancel();
        }
    }
}

impl fmt::Debug for RunStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunStream").field("run", &self.run).finish()
    }
}
