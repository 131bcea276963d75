//! The durable run queue: runs created by one process (a `loom serve`) and executed by another (a
//! `loom worker`), in the journal's database; and retention (pruning finished runs).
//!
//! A queued run is a row of the journal with no record yet: the agent that runs it, its session and
//! user, and its request (input, context, metadata). A worker claims it with a lease (one claimer
//! wins; the claim increments the run's fencing number) and starts it under that run id and fence;
//! the run's `begin` then records it as any other. A claimed run whose worker died (its lease
//! expired) is claimed again, and resumed from its journal when it had begun.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, RunError};
use crate::event::Event;
use crate::run::RunState;

use super::Lease;

/// A run waiting for a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueuedRun {
    /// The run's id, chosen when it is queued.
    pub run_id: String,
    /// The agent that runs it (a name of the configuration both sides load).
    pub agent: String,
    /// Its session.
    pub session_id: String,
    /// The user it acts for.
    pub user_id: Option<String>,
    /// What to run: `{"input": …, "context": …, "metadata": …}`.
    pub request: Value,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
}

/// A run a worker claimed: it holds the run's lease with `fence` until it renews no more.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedRun {
    /// The run.
    pub run: QueuedRun,
    /// The fencing number of this claim.
    pub fence: u64,
    /// Whether the run had begun (its journal has a record): a claimer resumes it.
    pub begun: bool,
    /// Whether a cancel was requested: the claimer ends it `cancelled`.
    pub cancel_requested: bool,
    /// Why the stored request could not be read, when it could not (a corrupt row): `request` is
    /// then `null`, and the claimer ends the run `failed` ([`RunQueue::fail_claimed`]) instead of
    /// starting it.
    pub unreadable: Option<String>,
}

/// Where a run is, as the queue's database knows it (any process may ask).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    /// The run.
    pub run_id: String,
    /// The agent that runs it (queued runs only).
    pub agent: Option<String>,
    /// Its session.
    pub session_id: String,
    /// Its user.
    pub user_id: Option<String>,
    /// The state last written (`queued` until a worker begins it).
    pub state: RunState,
    /// Whether it has finished.
    pub finished: bool,
    /// When it was queued or started.
    pub created_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Whether a cancel was requested.
    pub cancel_requested: bool,
    /// The worker holding it, if any.
    pub lease_owner: Option<String>,
    /// When the holder's lease expires (it renews it while the run goes on).
    #[serde(default)]
    pub lease_expires_at: Option<DateTime<Utc>>,
}

impl RunStatus {
    /// Whether a process held the run and stopped renewing its lease before the run finished (it
    /// died, or lost its database): nothing executes it now, and it can be resumed. A run whose
    /// holder ran on this machine and is gone ([`super::owner_is_gone`]) counts as well.
    pub fn abandoned(&self, now: DateTime<Utc>) -> bool {
        let Some(owner) = self.lease_owner.as_deref() else { return false };
        !self.finished && (self.lease_expires_at.is_none_or(|at| at <= now) || super::owner_is_gone(owner))
    }

    /// Whether the run is in flight: not finished, not suspended, and not
    /// [abandoned](RunStatus::abandoned) (queued, or held by a live lease).
    pub fn in_flight(&self, now: DateTime<Utc>) -> bool {
        !self.finished && !self.state.is_terminal() && self.state != RunState::Suspended && !self.abandoned(now)
    }
}

/// What a prune deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Runs deleted (their rows, with transcripts).
    pub runs: u64,
    /// Events deleted.
    pub events: u64,
    /// Journal entries deleted.
    pub entries: u64,
}

/// A run queue in a journal's database (the SQL stores: see [`super::Journal::run_queue`]).
#[async_trait::async_trait]
pub trait RunQueue: Send + Sync + 'static {
    /// Queues a run (state `queued`). Fails if the run id exists.
    async fn enqueue(&self, run: &QueuedRun) -> Result<(), Error>;

    /// Claims up to `max` runs of `agent` that wait (queued, or held by a lease that expired),
    /// oldest first, for `lease`'s owner: each claim increments the run's fencing number. Claims
    /// by concurrent workers never overlap.
    async fn claim(&self, agent: &str, lease: &Lease, max: usize) -> Result<Vec<ClaimedRun>, Error>;

    /// Ends a claimed run that can never start `failed` (its stored request is unreadable, its
    /// journal cannot be resumed, its agent cannot take it): the run is finished with state
    /// `failed`, its lease released, and a `run.failed` event carrying `error` appended to its
    /// event log (so its followers see the end; that event counts no turns or usage, which the
    /// queue does not know). `lease` is the claimer's, fenced with its claim's number. `false`,
    /// writing nothing, when the run finished already or another claim took it since (another
    /// owner's lease that has not expired). Without this, such a run would be claimed again at
    /// every lease expiry, forever.
    async fn fail_claimed(&self, run_id: &str, lease: &Lease, error: &RunError) -> Result<bool, Error>;

    /// Records a run that waits to execute in the process of `lease` (behind its session's earlier
    /// runs) as `queued`, its lease held by that process (so no worker claims it, and other
    /// processes see it in flight until it ends or the lease expires): the row the run's `begin`
    /// then takes over (with fencing number 0), or the finished run's save ends. `false` (nothing
    /// written) when the run's row exists already (it began, or ended, first).
    async fn hold(&self, run: &QueuedRun, lease: &Lease) -> Result<bool, Error>;

    /// Claims one run that has not begun and that no live lease holds (queued, or held by a
    /// process that died before it began) for `lease`'s owner, as [`RunQueue::claim`] does
    /// (incrementing its fencing number; concurrent claimers never both win); `None` when it is
    /// not such a run.
    async fn claim_run(&self, run_id: &str, lease: &Lease) -> Result<Option<ClaimedRun>, Error>;

    /// Renews the leases of runs [held](RunQueue::hold) by `lease`'s owner that have not begun
    /// (runs that began renew their own through the journal).
    async fn renew_held(&self, run_ids: &[String], lease: &Lease) -> Result<(), Error>;

    /// Records a cancel for the process that executes the run (or will claim it). `false` when
    /// the run is unknown or finished.
    async fn request_cancel(&self, run_id: &str) -> Result<bool, Error>;

    /// Queues an unfinished, journaled run that no live lease holds (suspended for approval, or
    /// left by a process that died) for a worker to resume: it becomes claimable by `agent`'s
    /// workers (a suspended one is marked `queued` until a worker resumes it), and the claimer
    /// resumes it from its journal. `false` when the run is unknown, not journaled, finished, or
    /// held by a live lease (in flight).
    async fn request_resume(&self, run_id: &str, agent: &str) -> Result<bool, Error>;

    /// Of these runs, the ones whose cancel was requested.
    async fn cancels_requested(&self, run_ids: &[String]) -> Result<Vec<String>, Error>;

    /// A run's status (queued or journaled).
    async fn status(&self, run_id: &str) -> Result<Option<RunStatus>, Error>;

    /// Runs (queued and journaled) of users whose id starts with `user_prefix`, newest first,
    /// filtered by session, user (exact) and state; at most `limit`.
    async fn runs(
        &self,
        user_prefix: &str,
        session_id: Option<&str>,
        user_id: Option<&str>,
        state: Option<RunState>,
        limit: usize,
    ) -> Result<Vec<RunStatus>, Error> {
        self.runs_before(user_prefix, session_id, user_id, state, None, limit).await
    }

    /// A page of [`RunQueue::runs`]: only the runs whose id sorts (bytewise) before `before`, the
    /// last id of the previous page (`None`: the first page).
    #[allow(clippy::too_many_arguments)]
    async fn runs_before(
        &self,
        user_prefix: &str,
        session_id: Option<&str>,
        user_id: Option<&str>,
        state: Option<RunState>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunStatus>, Error>;

    /// A run's persisted events with a seq above `after` (all with `None`), in order, at most
    /// `limit`.
    async fn events_after(&self, run_id: &str, after: Option<u64>, limit: usize) -> Result<Vec<Event>, Error>;

    /// How many runs wait for a worker (queued, not claimed).
    async fn depth(&self) -> Result<u64, Error>;
}
