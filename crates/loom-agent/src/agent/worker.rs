//! The worker: handles the signals that wait in the store (stored by `loom signal`, or while no
//! process was up) and fires the schedules that are due, then waits for the runs they started.
//! Any number of workers may share a store: each signal is claimed by one of them, and each
//! schedule occurrence is fired by one of them (a lease row per occurrence).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::schedule::next_after;
use super::{Agent, Receipt, RunResult, Session, SessionConfig};
use crate::error::Error;
use crate::signal::{MissedPolicy, RuntimeSignal, ScheduleRecord};

/// What the worker did.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Schedule occurrences it fired.
    pub fired: usize,
    /// Missed occurrences it skipped (their schedules' policy is [`MissedPolicy::Skip`]).
    pub skipped: usize,
    /// Waiting signals it handled (its own schedules' signals included).
    pub signals: usize,
    /// The runs those signals started, as they ended.
    pub runs: Vec<RunResult>,
}

impl WorkerReport {
    fn absorb(&mut self, other: WorkerReport) {
        self.fired += other.fired;
        self.skipped += other.skipped;
        self.signals += other.signals;
        self.runs.extend(other.runs);
    }
}

/// Processes queued signals and due schedules for an agent: [`Agent::worker`].
#[derive(Clone, Debug)]
pub struct Worker {
    agent: Agent,
    grace: Duration,
    poll: Duration,
}

impl Agent {
    /// A worker for this agent's signal store (see [`Worker`]).
    pub fn worker(&self) -> Worker {
        Worker { agent: self.clone(), grace: Duration::from_secs(60), poll: Duration::from_secs(1) }
    }
}

impl Worker {
    /// How late an occurrence may be and still fire as usual (default 60 s); a later one is
    /// missed, and its schedule's [`MissedPolicy`] decides.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How often [`Worker::run`] looks for work (default 1 s).
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }

    /// One pass: fires the due schedules, handles the waiting signals, and waits for the runs
    /// they started.
    pub async fn tick(&self) -> Result<WorkerReport, Error> {
        let mut report = WorkerReport::default();
        let mut receipts = Vec::new();
        let now = Utc::now();
        for schedule in self.agent.schedules().await? {
            self.fire_due(&schedule, now, &mut report, &mut receipts).await?;
        }
        let store = self.agent.signal_store().clone();
        for (user, id) in store.pending_sessions(now.timestamp_millis()).await? {
            let session = self.session(user, id);
            let handled = session.process_pending().await?;
            report.signals += handled.iter().filter(|r| r.attention.is_some()).count();
            receipts.extend(handled);
        }
        for receipt in receipts {
            if let Some(run) = receipt.run {
                report.runs.push(run.result().await);
            }
        }
        Ok(report)
    }

    /// Runs passes until one finds nothing to do (no due schedule, no waiting signal), then
    /// returns everything done. Schedules due later do not keep it running.
    pub async fn run_until_idle(&self) -> Result<WorkerReport, Error> {
        let mut total = WorkerReport::default();
        loop {
            let pass = self.tick().await?;
            let idle = pass.fired == 0 && pass.signals == 0 && pass.runs.is_empty();
            total.absorb(pass);
            if idle {
                return Ok(total);
            }
        }
    }

    /// Runs passes every poll interval until `shutdown` completes (between passes), then returns
    /// everything done. A pass that fails is logged and the worker goes on.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) -> WorkerReport {
        let mut total = WorkerReport::default();
        tokio::pin!(shutdown);
        loop {
            match self.tick().await {
                Ok(pass) => total.absorb(pass),
                Err(e) => tracing::warn!(error = %e, "a worker pass failed"),
            }
            tokio::select! {
                _ = &mut shutdown => return total,
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// The session, opened without the background sweep: the worker handles its signals itself.
    fn session(&self, user_id: Option<String>, session_id: String) -> Session {
        Session::open_with(&self.agent, SessionConfig { id: Some(session_id), user_id, ..Default::default() }, false)
    }

    /// Fires `schedule` if it is due at `now` (once per occurrence across processes), and moves
    /// it to its next occurrence.
    async fn fire_due(
        &self,
        schedule: &ScheduleRecord,
        now: DateTime<Utc>,
        report: &mut WorkerReport,
        receipts: &mut Vec<Receipt>,
    ) -> Result<(), Error> {
        let Some(due) = schedule.next_at.filter(|at| *at <= now) else { return Ok(()) };
        let late = (now - due).to_std().unwrap_or_default() > self.grace;
        let (occurrence, next) = if late {
            // Every occurrence up to now was missed: the latest stands for them.
            let mut latest = due;
            let mut guard = 0u32;
            while let Some(n) = next_after(&schedule.schedule, schedule.created_at, latest)?.filter(|n| *n <= now) {
                latest = n;
                guard += 1;
                if guard > 100_000 {
                    break;
                }
            }
            let next = next_after(&schedule.schedule, schedule.created_at, now)?;
            match schedule.missed {
                MissedPolicy::Skip => {
                    report.skipped += 1;
                    self.agent.signal_store().advance_schedule(&schedule.id, next).await?;
                    return Ok(());
                }
                MissedPolicy::RunOnce => (latest, next),
            }
        } else {
            (due, next_after(&schedule.schedule, schedule.created_at, due)?)
        };
        let store = self.agent.signal_store().clone();
        let holder = self.agent.inner.env.stores.lease.owner.clone();
        let at_ms = occurrence.timestamp_millis();
        if store.claim_occurrence(&schedule.id, at_ms, &holder).await? {
            let signal = RuntimeSignal::create(&schedule.input, "schedule", "schedule.fired", schedule.urgency)
                .dedupe_key(format!("schedule:{}:{at_ms}", schedule.id))
                .payload(json!({"schedule_id": schedule.id, "occurrence": occurrence, "late": late}));
            let session = self.session(schedule.user_id.clone(), schedule.session_id.clone());
            let receipt = session.receive(signal, None).await?;
            report.fired += 1;
            if receipt.attention.is_some() {
                report.signals += 1;
            }
            receipts.push(receipt);
        }
        store.advance_schedule(&schedule.id, next).await
    }
}
