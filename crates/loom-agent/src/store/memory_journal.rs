use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::error::Error;
use crate::event::Event;
use crate::run::RunState;
use loom_core::journal::{
    Journal, JournalEntry, JournalRunSummary, JournalWrite, JournaledRun, Lease, LeaseView, RunFilter, RunRecord,
    may_decide, may_take_over, may_write,
};

/// A journal in process memory: leases, replay and approvals work within one process (a run can
/// be suspended for approval and resumed), nothing survives a restart. Useful in tests and as the
/// reference implementation of the [`Journal`] contract.
#[derive(Debug, Default)]
pub struct InMemoryJournal {
    runs: Mutex<HashMap<String, Held>>,
}

/// A run and its fencing number.
#[derive(Debug)]
struct Held {
    run: JournaledRun,
    fence: u64,
}

impl InMemoryJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Held>) -> Result<T, Error>) -> Result<T, Error> {
        let mut guard = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

fn expiry(lease: &Lease, now_ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(lease.expiry_ms(now_ms)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// What the lease rule reads of a run.
fn view(held: &Held) -> LeaseView<'_> {
    let run = &held.run;
    LeaseView {
        state: run.state,
        finished: run.finished,
        journaled: true,
        owner: run.lease_owner.as_deref(),
        expires_ms: run.lease_expires_at.map(|t| t.timestamp_millis()),
        fence: held.fence,
    }
}

/// The run, held by `lease`: renews it. `LeaseLost` when another owner holds it (the lease rule).
fn held<'a>(runs: &'a mut HashMap<String, Held>, run_id: &str, lease: &Lease) -> Result<&'a mut JournaledRun, Error> {
    let run = runs.get_mut(run_id);
    may_write(run_id, run.as_deref().map(view), lease)?;
    let run = &mut run.ok_or_else(|| Error::RunNotFound(run_id.to_string()))?.run;
    run.lease_expires_at = Some(expiry(lease, Utc::now().timestamp_millis()));
    Ok(run)
}

#[async_trait::async_trait]
impl Journal for InMemoryJournal {
    async fn begin(&self, record: &RunRecord, lease: &Lease, events: &[Event]) -> Result<(), Error> {
        self.with(|runs| {
            if runs.contains_key(&record.run_id) {
                return Err(Error::Store(format!("run {} is already journaled", record.run_id).into()));
            }
            let run = JournaledRun {
                record: record.clone(),
                entries: Vec::new(),
                events: events.to_vec(),
                state: RunState::Running,
                finished: false,
                lease_owner: Some(lease.owner.to_string()),
                lease_expires_at: Some(expiry(lease, Utc::now().timestamp_millis())),
            };
            runs.insert(record.run_id.clone(), Held { run, fence: lease.fence });
            Ok(())
        })
    }

    async fn append(&self, run_id: &str, lease: &Lease, entry: &JournalEntry, events: &[Event]) -> Result<(), Error> {
        self.with(|runs| {
            let run = held(runs, run_id, lease)?;
            run.entries.push(entry.clone());
            push_events(&mut run.events, events);
            Ok(())
        })
    }

    async fn append_all(&self, run_id: &str, lease: &Lease, writes: &[JournalWrite<'_>]) -> Result<(), Error> {
        self.with(|runs| {
            let run = held(runs, run_id, lease)?;
            for write in writes {
                run.entries.push(write.entry.clone());
                push_events(&mut run.events, write.events);
            }
            Ok(())
        })
    }

    async fn end(&self, run_id: &str, lease: &Lease, state: RunState, events: &[Event]) -> Result<(), Error> {
        self.with(|runs| {
            let run = held(runs, run_id, lease)?;
            push_events(&mut run.events, events);
            run.state = state;
            run.finished = state.is_terminal() && state != RunState::Suspended;
            run.lease_owner = None;
            run.lease_expires_at = None;
            Ok(())
        })
    }

    async fn acquire(&self, run_id: &str, lease: &Lease) -> Result<u64, Error> {
        self.with(|runs| {
            let now = Utc::now().timestamp_millis();
            let held = runs.get_mut(run_id);
            may_take_over(run_id, held.as_deref().map(view), lease, now)?;
            let held = held.ok_or_else(|| Error::RunNotFound(run_id.to_string()))?;
            held.fence += 1;
            let run = &mut held.run;
            run.lease_owner = Some(lease.owner.to_string());
            run.lease_expires_at = Some(expiry(lease, now));
            run.state = RunState::Running;
            Ok(held.fence)
        })
    }

    async fn renew(&self, run_id: &str, lease: &Lease) -> Result<(), Error> {
        self.with(|runs| held(runs, run_id, lease).map(|_| ()))
    }

    async fn decide(&self, run_id: &str, entry: &JournalEntry) -> Result<(), Error> {
        self.with(|runs| {
            let held = runs.get_mut(run_id);
            may_decide(run_id, held.as_deref().map(view))?;
            let held = held.ok_or_else(|| Error::RunNotFound(run_id.to_string()))?;
            held.run.entries.push(entry.clone());
            Ok(())
        })
    }

    async fn prune(&self, finished_before: DateTime<Utc>) -> Result<loom_core::journal::PruneReport, Error> {
        self.with(|runs| {
            let mut report = loom_core::journal::PruneReport::default();
            runs.retain(|_, held| {
                let run = &held.run;
                // The in-memory journal keeps no finish time: a finished run's last event stands for it.
                let ended = run.events.last().map_or(run.record.started_at, |e| e.at);
                let gone = run.finished && ended < finished_before;
                if gone {
                    report.runs += 1;
                    report.events += run.events.len() as u64;
                    report.entries += run.entries.len() as u64;
                }
                !gone
            });
            Ok(report)
        })
    }

    async fn load(&self, run_id: &str) -> Result<Option<JournaledRun>, Error> {
        self.with(|runs| Ok(runs.get(run_id).map(|h| h.run.clone())))
    }

    async fn list(&self, filter: &RunFilter) -> Result<Vec<JournalRunSummary>, Error> {
        self.with(|runs| {
            let mut out: Vec<JournalRunSummary> = runs
                .values()
                .map(|h| &h.run)
                .filter(|r| filter.session_id.as_ref().is_none_or(|s| *s == r.record.session_id))
                .filter(|r| filter.user_id.is_none() || filter.user_id == r.record.user_id)
                .filter(|r| !filter.unfinished || !r.finished)
                .filter(|r| filter.parent_run_id.is_none() || filter.parent_run_id == r.record.parent_run_id)
                .map(|r| JournalRunSummary {
                    run_id: r.record.run_id.clone(),
                    session_id: r.record.session_id.clone(),
                    user_id: r.record.user_id.clone(),
                    state: r.state,
                    finished: r.finished,
                    started_at: r.record.started_at,
                    entries: r.entries.len() as u64,
                    parent_run_id: r.record.parent_run_id.clone(),
                })
                .collect();
            out.sort_by(|a, b| b.run_id.cmp(&a.run_id));
            if filter.limit > 0 {
                out.truncate(filter.limit);
            }
            Ok(out)
        })
    }
}

/// Appends events not stored yet (a resumed run re-sends none, but a retried write may).
fn push_events(stored: &mut Vec<Event>, events: &[Event]) {
    for e in events {
        if e.seq as usize == stored.len() {
            stored.push(e.clone());
        }
    }
}
