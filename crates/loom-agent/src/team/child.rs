//! Running an agent as another run's child: linked to the parent (`parent_run_id`, budget, usage,
//! cancellation), announced in the parent's log (`child.started`, `child.finished`), and durable:
//! a child's id comes from its parent's id and the call that started it, so a resumed parent
//! finds a child that finished before the crash (and takes its answer without running it again)
//! or one that did not (and resumes it).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, ResumeOptions, RunRequest, Session};
use crate::error::RunError;
use crate::event::{ChildFinished, ChildStarted, EventKind};
use crate::message::Usage;
use crate::run::{RunResult, RunState};
use crate::runtime::{ChildSpec, ParentLink};
use crate::tool::ToolContext;

/// How a child run ended, as its parent sees it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ChildOutcome {
    /// The child run.
    pub run_id: String,
    /// How it ended.
    pub state: RunState,
    /// Its final answer (empty unless it completed, or it kept a raw answer).
    pub output: String,
    /// Its structured answer, if any.
    pub parsed: Option<serde_json::Value>,
    /// Why it did not complete.
    pub error: Option<RunError>,
    /// What it spent (already rolled up into the parent's usage).
    pub usage: Usage,
    /// Its model calls.
    pub turns: u32,
    /// Whether it finished before a crash and was not run again.
    pub replayed: bool,
}

impl ChildOutcome {
    fn of(result: &RunResult) -> Self {
        ChildOutcome {
            run_id: result.run_id.clone(),
            state: result.state,
            output: result.output.clone(),
            parsed: result.parsed.clone(),
            error: result.error.clone(),
            usage: result.usage,
            turns: result.turns,
            replayed: false,
        }
    }

    /// Whether the child completed.
    pub fn is_completed(&self) -> bool {
        self.state == RunState::Completed
    }

    /// The text a parent's model reads about this child: its answer, or how it ended.
    pub fn summary(&self, agent: &str) -> String {
        match (&self.error, self.state) {
            (_, RunState::Completed) => self.output.clone(),
            (Some(e), state) => format!("the agent `{agent}` ended {state}: {}", e.message),
            (None, state) => format!("the agent `{agent}` ended {state}"),
        }
    }
}

/// The link to the calling run a tool call carries, if the runtime set one.
pub(crate) fn link_of(ctx: &ToolContext) -> Option<Arc<ParentLink>> {
    ctx.run_handle().and_then(|h| h.clone().downcast::<ParentLink>().ok())
}

/// The id of the child a parent's call `key` starts.
pub(crate) fn child_run_id(parent: &str, key: &str) -> String {
    format!("{parent}.{key}")
}

/// Runs `agent` on `request` as a child of `link` (or as a plain run when there is no link), under
/// `cancel`, with the id `{parent}.{key}` when a key is given. The child acts for the parent's
/// user. Returns when the child has ended.
///
/// The request comes boxed: this future lives as long as the child, and an inline request would
/// stay in it (an `async fn`'s parameters are fields of its future) long after the child started.
pub(crate) async fn run_child(
    agent: &Agent,
    link: Option<&Arc<ParentLink>>,
    cancel: CancellationToken,
    key: Option<&str>,
    label: &str,
    request: Box<RunRequest>,
) -> ChildOutcome {
    let Some(link) = link else {
        // Boxed: a plain run's result is large, and a linked child's future (one per in-flight
        // child) should not carry room for it.
        return Box::pin(unlinked(agent, cancel, request)).await;
    };
    // Everything but the run is dropped before the long wait below: this future lives as long as
    // the child, and what is live across that wait is kept once per in-flight child.
    let run = {
        let run_id = key.map(|k| child_run_id(&link.scope.run_id, k));
        let spec = ChildSpec { link: link.clone(), cancel, run_id: run_id.clone() };
        // A child of this id in the journal: the parent is resuming. (Boxed: the lookup and resume
        // are large futures that a child without a journal should not carry.)
        let journal = agent.journal().or(link.journal.as_ref());
        if let (Some(id), Some(journal)) = (&run_id, journal)
            && let Some(outcome) = Box::pin(journaled(agent, journal, id, &spec, link, label, key)).await
        {
            return outcome;
        }
        start_linked(agent, link, spec, request)
    };
    follow(link, run, label, key).await
}

/// A child run without a parent link (a tool called outside a run): a plain run, cancelled with
/// `cancel`.
async fn unlinked(agent: &Agent, cancel: CancellationToken, request: Box<RunRequest>) -> ChildOutcome {
    let run = agent.start(unbox(request));
    let result = tokio::select! {
        r = run.result() => r,
        _ = cancel.cancelled() => { run.cancel(); run.result().await }
    };
    ChildOutcome::of(&result)
}

/// Starts `request` as the child `spec` describes, acting for the parent's user.
fn start_linked(agent: &Agent, link: &ParentLink, spec: ChildSpec, mut request: Box<RunRequest>) -> crate::agent::Run {
    let user = link.scope.user_id.as_deref();
    request.user_id = user.map(str::to_string);
    request.session_id = None;
    request.child = Some(spec);
    Session::anonymous(agent.clone(), user).start(unbox(request))
}

/// The request out of its box, the box freed now (moved out of in `run_child`, the box itself
/// would be freed only when the child ends).
fn unbox(request: Box<RunRequest>) -> RunRequest {
    *request
}

/// A child the journal already has: a finished one's outcome (not run again), or an unfinished
/// one resumed and followed to its end. `None`: not journaled (or not resumable): start it.
async fn journaled(
    agent: &Agent,
    journal: &Arc<dyn crate::store::Journal>,
    id: &str,
    spec: &ChildSpec,
    link: &ParentLink,
    label: &str,
    key: Option<&str>,
) -> Option<ChildOutcome> {
    match journal.load(id).await {
        Ok(Some(stored)) if stored.finished => {
            let outcome = finished_outcome(id, &stored.events);
            if let Some(log) = link.log() {
                log.add_usage(&outcome.usage);
            }
            announce(link, id, label, key, &outcome);
            Some(outcome)
        }
        Ok(Some(_)) => {
            let user = link.scope.user_id.as_deref().map(str::to_string);
            let options = ResumeOptions { user_id: user, ..ResumeOptions::default() };
            match agent.resume_inner(id, options, Some(spec)).await {
                Ok(run) => Some(follow(link, run, label, key).await),
                Err(e) => {
                    tracing::warn!(run_id = %id, error = %e, "resuming a child run failed; starting it again");
                    None
                }
            }
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(run_id = %id, error = %e, "looking up a child run failed");
            None
        }
    }
}

/// Announces a started child in its parent's log, waits for it, and announces its end.
async fn follow(link: &ParentLink, run: crate::agent::Run, label: &str, key: Option<&str>) -> ChildOutcome {
    if let Some(log) = link.log() {
        log.add_child(run.log.clone());
    }
    emit(
        link,
        EventKind::ChildStarted(ChildStarted {
            child_run_id: run.id().to_string(),
            agent: label.to_string(),
            call_id: key.map(str::to_string),
        }),
    );
    let mut guard = Unfinished { run: Some(run.clone()), link, label };
    let result = run.result().await;
    guard.run = None;
    let outcome = ChildOutcome::of(&result);
    emit(
        link,
        EventKind::ChildFinished(ChildFinished {
            child_run_id: outcome.run_id.clone(),
            agent: label.to_string(),
            state: outcome.state,
            usage: outcome.usage,
            turns: outcome.turns,
        }),
    );
    outcome
}

/// Emits `kind` in the parent's log (alive while its child runs).
fn emit(link: &ParentLink, kind: EventKind) {
    if let Some(log) = link.log() {
        log.emit(kind);
    }
}

/// Announces a child that finished before the crash (its events are in its own journal).
fn announce(link: &ParentLink, id: &str, label: &str, key: Option<&str>, outcome: &ChildOutcome) {
    emit(
        link,
        EventKind::ChildStarted(ChildStarted {
            child_run_id: id.to_string(),
            agent: label.to_string(),
            call_id: key.map(str::to_string),
        }),
    );
    emit(
        link,
        EventKind::ChildFinished(ChildFinished {
            child_run_id: id.to_string(),
            agent: label.to_string(),
            state: outcome.state,
            usage: outcome.usage,
            turns: outcome.turns,
        }),
    );
}

/// The outcome of a finished child, from its journaled events.
fn finished_outcome(id: &str, events: &[crate::event::Event]) -> ChildOutcome {
    let mut outcome = ChildOutcome {
        run_id: id.to_string(),
        state: RunState::Failed,
        output: String::new(),
        parsed: None,
        error: None,
        usage: Usage::default(),
        turns: 0,
        replayed: true,
    };
    for event in events.iter().rev() {
        let (state, ended) = match &event.kind {
            EventKind::RunCompleted(done) => {
                outcome.state = RunState::Completed;
                outcome.output = done.output.clone();
                outcome.parsed = done.parsed.clone();
                outcome.usage = done.usage;
                outcome.turns = done.turns;
                return outcome;
            }
            EventKind::RunFailed(e) => (RunState::Failed, e),
            EventKind::RunCancelled(e) => (RunState::Cancelled, e),
            EventKind::RunInterrupted(e) => (RunState::Interrupted, e),
            EventKind::RunSuspended(e) => (RunState::Suspended, e),
            _ => continue,
        };
        outcome.state = state;
        outcome.error = Some(ended.error.clone());
        outcome.usage = ended.usage;
        outcome.turns = ended.turns;
        return outcome;
    }
    outcome
}

/// A child the parent stopped waiting for (the parent was cancelled or stopped, or the call timed
/// out): dropping it cancels the child and tells the parent's log it finished cancelled, so every
/// `child.started` has its `child.finished`.
struct Unfinished<'a> {
    run: Option<crate::agent::Run>,
    link: &'a ParentLink,
    label: &'a str,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        let Some(run) = self.run.take() else { return };
        run.cancel();
        let progress = run.log.progress();
        emit(
            self.link,
            EventKind::ChildFinished(ChildFinished {
                child_run_id: run.id().to_string(),
                agent: self.label.to_string(),
                state: RunState::Cancelled,
                usage: progress.usage,
                turns: progress.turns,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    //! Lives in team/, above agent/: it drives a parent agent with an agent tool.
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Weak};

    use serde_json::json;
    use tokio::sync::Notify;

    use crate::agent::{Agent, RunRequest};
    use crate::error::ModelError;
    use crate::event::EventKind;
    use crate::model::{FnModel, LanguageModel, ModelRequest, ModelStream, ScriptedTurn};
    use crate::run::RunState;

    /// Counts its calls and then waits until the run is cancelled.
    struct Blocked(Arc<AtomicUsize>, Arc<Notify>);

    #[async_trait::async_trait]
    impl LanguageModel for Blocked {
        fn name(&self) -> &str {
            "blocked"
        }

        async fn stream(&self, _request: &ModelRequest<'_>) -> Result<ModelStream, ModelError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1.notified().await;
            Err(ModelError::Unavailable("released".into()))
        }
    }

    /// A parent and its children are freed once nothing outside holds them: a parent's log keeps
    /// its children's logs and each child's log its link to the parent, which must not be a cycle.
    #[tokio::test]
    async fn parent_and_children_logs_are_freed_after_cancel() {
        let calls = Arc::new(AtomicUsize::new(0));
        let child = Agent::builder()
            .name("child")
            .model(Blocked(calls.clone(), Arc::new(Notify::new())))
            .build()
            .expect("child agent");
        let model = FnModel::new("parent", |_req| {
            ScriptedTurn::text("")
                .with_tool_call("child", json!({"input": "a"}))
                .with_tool_call("child", json!({"input": "b"}))
        });
        let parent =
            Agent::builder().model(model).tool(child.as_tool("child", "Does one task.")).build().expect("parent agent");
        let run = parent.start(RunRequest::new("go"));
        while calls.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        run.cancel();
        let result = run.result().await;
        assert_eq!(result.state, RunState::Cancelled);
        let children: Vec<Weak<_>> = result
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::ChildStarted(s) => run.log.child(&s.child_run_id).map(|log| Arc::downgrade(&log)),
                _ => None,
            })
            .collect();
        assert_eq!(children.len(), 2, "both children were started and are followed by the parent's log");
        let parent_log = Arc::downgrade(&run.log);
        drop((run, result, parent, child));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(parent_log.upgrade().is_none(), "the parent's log is still held");
        assert!(children.iter().all(|c| c.upgrade().is_none()), "a child's log is still held");
    }
}
