//! Child runs: the link from a run to the run that started it (an agent used as a tool, a
//! supervisor's worker, a workflow's agent node). Through the link a child run draws on its
//! ancestors' budgets, rolls its usage up into their counters, and is cancelled with them; the
//! parent's log keeps its children so a consumer can follow their events nested live.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures::Stream;
use tokio_util::sync::CancellationToken;

use super::log::RunLog;
use crate::event::{Event, EventKind};
use crate::governance::{Budget, BudgetVerdict, Scope};
use crate::message::Usage;
use crate::store::Journal;

/// The journal a run writes to: its agent's, or (for a child run whose agent has none) its
/// parent's.
pub(crate) fn journal_of(stores: &super::env::Stores, log: &RunLog) -> Option<Arc<dyn Journal>> {
    stores.journal.clone().or_else(|| log.parent.as_ref().and_then(|p| p.journal.clone()))
}

/// A run as its children see it: its log (events, counters, cancellation), who it acts for and
/// its budget. One per run, handed to its tool calls through [`crate::tool::ToolContext`].
///
/// The log is held weakly: a parent's log keeps its children's logs (for [`NestedEvents`]) and
/// each child's log keeps this link, so a strong reference here would be a cycle, and a parent
/// with children would never be freed. The parent's log is alive while any of its children runs
/// (the parent's run awaits the call that started the child).
pub(crate) struct ParentLink {
    log: Weak<RunLog>,
    pub(crate) scope: Scope,
    pub(crate) budget: Option<Arc<dyn Budget>>,
    /// The journal the run writes to: a child whose agent has none is journaled here too.
    pub(crate) journal: Option<Arc<dyn Journal>>,
}

impl fmt::Debug for ParentLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParentLink").field("run_id", &self.scope.run_id).finish_non_exhaustive()
    }
}

impl ParentLink {
    /// The link of the run whose log is `log`.
    pub(crate) fn new(
        log: &Arc<RunLog>,
        scope: Scope,
        budget: Option<Arc<dyn Budget>>,
        journal: Option<Arc<dyn Journal>>,
    ) -> Self {
        ParentLink { log: Arc::downgrade(log), scope, budget, journal }
    }

    /// The run's log, while the run is alive (always, for a child of the run that is running).
    pub(crate) fn log(&self) -> Option<Arc<RunLog>> {
        self.log.upgrade()
    }

    /// The run's log and its ancestors' (with their links), nearest first.
    fn chain(self: &Arc<Self>) -> impl Iterator<Item = (Arc<ParentLink>, Arc<RunLog>)> {
        let first = self.log().map(|log| (self.clone(), log));
        std::iter::successors(first, |(_, log)| {
            let link = log.parent.clone()?;
            let parent_log = link.log()?;
            Some((link, parent_log))
        })
    }
}

/// How a child run starts: linked to its parent, cancelled with it, under a given id.
#[derive(Clone, Debug)]
pub(crate) struct ChildSpec {
    /// The parent run.
    pub(crate) link: Arc<ParentLink>,
    /// Fires when the parent (or the call that started the child) stops.
    pub(crate) cancel: CancellationToken,
    /// The child's run id (derived from the parent's id and call, so a resumed parent finds it).
    pub(crate) run_id: Option<String>,
}

impl RunLog {
    /// The run that started this one, if any.
    pub(crate) fn parent_run_id(&self) -> Option<String> {
        self.parent.as_ref().map(|p| p.scope.run_id.to_string())
    }

    /// Records a child run, so [`NestedEvents`] can follow it.
    pub(crate) fn add_child(&self, child: Arc<RunLog>) {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.push(child);
    }

    /// A child run by id.
    pub(crate) fn child(&self, run_id: &str) -> Option<Arc<RunLog>> {
        let children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.iter().find(|c| &*c.run_id == run_id).cloned()
    }

    /// Adds a child's model call usage to every ancestor's counters and budget (skipping
    /// `own`, the budget the child already recorded it in).
    pub(crate) fn roll_up(&self, usage: &Usage, own: Option<&Arc<dyn Budget>>) {
        let Some(parent) = self.parent.as_ref() else { return };
        let mut recorded: Vec<*const ()> = own.map(|b| Arc::as_ptr(b) as *const ()).into_iter().collect();
        for (link, log) in parent.chain() {
            log.add_usage(usage);
            if let Some(budget) = &link.budget {
                let ptr = Arc::as_ptr(budget) as *const ();
                if !recorded.contains(&ptr) {
                    recorded.push(ptr);
                    budget.record(&link.scope, usage);
                }
            }
        }
    }

    /// Adds a child's tool calls to every ancestor's count: an ancestor's `max_tool_calls` budget
    /// is for its whole tree. (Turns are not rolled up: a run's `max_turns` counts its own model
    /// calls.)
    pub(crate) fn roll_up_tool_calls(&self, n: u32) {
        let Some(parent) = self.parent.as_ref() else { return };
        for (_, log) in parent.chain() {
            log.record_tool_calls(n);
        }
    }

    /// The ancestors' budget verdicts, given what each ancestor (its children included) has
    /// spent: the first limit reached, else the first warning, else `Ok`.
    pub(crate) fn ancestors_budget(&self) -> BudgetVerdict {
        let Some(parent) = self.parent.as_ref() else { return BudgetVerdict::Ok };
        let mut verdict = BudgetVerdict::Ok;
        for (link, log) in parent.chain() {
            let Some(budget) = &link.budget else { continue };
            let p = log.progress();
            match budget.check(&link.scope, &p.usage, p.turns, p.tool_calls) {
                BudgetVerdict::Ok => {}
                exceeded @ BudgetVerdict::Exceeded(_) => return exceeded,
                warn @ BudgetVerdict::Warn(_) => {
                    if verdict == BudgetVerdict::Ok {
                        verdict = warn;
                    }
                }
            }
        }
        verdict
    }
}

/// One event of a run or of one of its descendants, as [`crate::Run::events_with_children`]
/// yields them.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct NestedEvent {
    /// 0 for the run itself, 1 for its children, 2 for theirs, …
    pub depth: u32,
    /// The run whose `child.started` event introduced this event's run (`None` at depth 0).
    pub parent_run_id: Option<Arc<str>>,
    /// The event; its `run_id` is the run it belongs to.
    pub event: Event,
}

/// A run's events with its children's events nested live: every event of the run, and after
/// each `child.started`, the child's events (recursively) as they happen. Each run's events stay
/// in order; runs interleave. Ends when the run and every child it started have ended.
pub struct NestedEvents {
    streams: Vec<Nested>,
}

struct Nested {
    log: Arc<RunLog>,
    cursor: usize,
    depth: u32,
    parent: Option<Arc<str>>,
}

impl NestedEvents {
    pub(crate) fn new(log: Arc<RunLog>) -> Self {
        NestedEvents { streams: vec![Nested { log, cursor: 0, depth: 0, parent: None }] }
    }
}

impl Stream for NestedEvents {
    type Item = NestedEvent;

    /// Polls the most recently started runs first: a child's events that are ready come right
    /// after its `child.started`, before the parent's next event.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<NestedEvent>> {
        let this = &mut *self;
        loop {
            if this.streams.is_empty() {
                return Poll::Ready(None);
            }
            let mut ended = None;
            for i in (0..this.streams.len()).rev() {
                let s = &mut this.streams[i];
                match s.log.poll_event(s.cursor, cx) {
                    Poll::Ready(Some(event)) => {
                        s.cursor += 1;
                        let depth = s.depth;
                        let parent = s.parent.clone();
                        let log = s.log.clone();
                        if let EventKind::ChildStarted(started) = &event.kind
                            && let Some(child) = log.child(&started.child_run_id)
                        {
                            this.streams.push(Nested {
                                log: child,
                                cursor: 0,
                                depth: depth + 1,
                                parent: Some(log.run_id.clone()),
                            });
                        }
                        return Poll::Ready(Some(NestedEvent { depth, parent_run_id: parent, event }));
                    }
                    Poll::Ready(None) => {
                        ended = Some(i);
                        break;
                    }
                    Poll::Pending => {}
                }
            }
            match ended {
                Some(i) => {
                    this.streams.remove(i);
                }
                None => return Poll::Pending,
            }
        }
    }
}

impl fmt::Debug for NestedEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NestedEvents").field("runs", &self.streams.len()).finish()
    }
}
