//! The SQLite store as a [`Journal`].

use rusqlite::{OptionalExtension, params};

use super::{
    Immediate, SqliteStore, db, hold_lease, insert_entry, insert_events, load_events, renew_lease, with_lease,
};
use crate::error::Error;
use crate::event::Event;
use crate::run::RunState;
use crate::store::SessionRecord;
use crate::store::sql::{
    self, RecordRow, RunRow, decode_entry, decode_record, encode_events, encode_history, expand, from_millis, json,
    now_ms, parse_state,
};
use loom_core::journal::{
    FinalCommit, Journal, JournalEntry, JournalRunSummary, JournalWrite, JournaledRun, Lease, RunFilter, RunRecord,
    may_decide, may_take_over, may_write,
};

/// Journaled runs, newest first, filtered by session, user, unfinished and parent.
pub(super) const LIST_RUNS: &str = "SELECT run_id, session_id, user_id, state, finished, started_at,
        (SELECT COUNT(*) FROM loom_journal j WHERE j.run_id = r.run_id), parent_run_id
     FROM loom_runs r
     WHERE record IS NOT NULL AND (?1 IS NULL OR session_id = ?1) AND (?2 IS NULL OR user_id = ?2) AND (?3 = 0 OR finished = 0)
        AND (?5 IS NULL OR parent_run_id = ?5)
     ORDER BY run_id DESC LIMIT ?4";

#[async_trait::async_trait]
impl Journal for SqliteStore {
    fn signal_store(&self) -> Option<std::sync::Arc<dyn crate::signal::SignalStore>> {
        Some(std::sync::Arc::new(self.clone()))
    }

    fn run_queue(&self) -> Option<std::sync::Arc<dyn loom_core::journal::RunQueue>> {
        Some(std::sync::Arc::new(self.clone()))
    }

    async fn prune(
        &self,
        finished_before: chrono::DateTime<chrono::Utc>,
    ) -> Result<loom_core::journal::PruneReport, Error> {
        super::queue::prune(self, finished_before).await
    }

    async fn begin(&self, record: &RunRecord, lease: &Lease, events: &[Event]) -> Result<(), Error> {
        let begin = Begin::new(record, lease, events)?;
        self.call(move |conn| {
            let tx = Immediate::begin(conn)?;
            begin.write(&tx)?;
            tx.commit()
        })
        .await
    }

    async fn begin_with(
        &self,
        record: &RunRecord,
        lease: &Lease,
        events: &[Event],
        session: &SessionRecord,
    ) -> Result<bool, Error> {
        let begin = Begin::new(record, lease, events)?;
        let session = session.clone();
        self.call(move |conn| {
            let tx = Immediate::begin(conn)?;
            begin.write(&tx)?;
            super::sessions::open(&tx, &session)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn append(&self, run_id: &str, lease: &Lease, entry: &JournalEntry, events: &[Event]) -> Result<(), Error> {
        let run_id = run_id.to_string();
        let kind = entry.type_name();
        let text = json(entry)?;
        let lease = lease.clone();
        let events = encode_events(events)?;
        self.call(move |conn| {
            let tx = Immediate::begin(conn)?;
            hold_lease(&tx, &run_id, &lease)?;
            insert_entry(&tx, &run_id, kind, &text)?;
            insert_events(&tx, &run_id, &events)?;
            tx.commit()
        })
        .await
    }

    async fn append_all(&self, run_id: &str, lease: &Lease, writes: &[JournalWrite<'_>]) -> Result<(), Error> {
        let run_id = run_id.to_string();
        let lease = lease.clone();
        let writes = writes
            .iter()
            .map(|w| Ok((w.entry.type_name(), json(w.entry)?, encode_events(w.events)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        self.call(move |conn| {
            let tx = Immediate::begin(conn)?;
            hold_lease(&tx, &run_id, &lease)?;
            for (kind, text, events) in &writes {
                insert_entry(&tx, &run_id, kind, text)?;
                insert_events(&tx, &run_id, events)?;
            }
            tx.commit()
        })
        .await
    }

    async fn end(&self, run_id: &str, lease: &Lease, state: RunState, events: &[Event]) -> Result<(), Error> {
        let run_id = run_id.to_string();
        let lease = lease.clone();
        let events = encode_events(events)?;
        self.call(move |conn| {
            let tx = Immediate::begin(conn)?;
            renew_lease(&tx, &run_id, &lease, lease.expiry_ms(now_ms()))?;
            insert_events(&tx, &run_id, &events)?;
            end_row(&tx, &run_id, state)?;
            tx.commit()
        })
        .await
    }

    async fn acquire(&self, run_id: &str, lease: &Lease) -> Result<u64, Error> {
        let run_id = run_id.to_string();
        let lease = lease.clone();
        self.call(move |conn| {
            let tx = Immediate::begin(conn)?;
            let now = now_ms();
            with_lease(&tx, &run_id, |view| may_take_over(&run_id, view, &lease, now))?;
            let fence: i64 = tx
                .query_row(
                    "UPDATE loom_runs SET lease_owner = ?2, lease_expires = ?3, state = 'running', fence = fence + 1
                     WHERE run_id = ?1 RETURNING fence",
                    params![run_id, &*lease.owner, lease.expiry_ms(now)],
                    |r| r.get(0),
                )
                .map_err(db)?;
            tx.commit()?;
            Ok(u64::try_from(fence).unwrap_or_default())
        })
        .await
    }

    async fn renew(&self, run_id: &str, lease: &Lease) -> Result<(), Error> {
        let run_id = run_id.to_string();
        let lease = lease.clone();
        self.call(move |conn| {
            let tx = Immediate::begin(conn)?;
            renew_lease(&tx, &run_id, &lease, lease.expiry_ms(now_ms()))?;
            tx.commit()
        })
        .await
    }

    async fn decide(&self, run_id: &str, entry: &JournalEntry) -> Result<(), Error> {
        let run_id = run_id.to_string();
        let kind = entry.type_name();
        let text = json(entry)?;
        self.call(move |conn| {
            let tx = Immediate::begin(conn)?;
            with_lease(&tx, &run_id, |view| may_decide(&run_id, view))?;
            insert_entry(&tx, &run_id, kind, &text)?;
            tx.commit()
        })
        .await
    }

    async fn load(&self, run_id: &str) -> Result<Option<JournaledRun>, Error> {
        let run_id = run_id.to_string();
        self.call(move |conn| {
            let row: Option<(Option<String>, String, bool, Option<String>, Option<i64>)> = conn
                .query_row(
                    "SELECT record, state, finished, lease_owner, lease_expires FROM loom_runs WHERE run_id = ?1",
                    [&run_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()
                .map_err(db)?;
            let Some((Some(record), state, finished, lease_owner, expires)) = row else { return Ok(None) };
            let record = expand(&record, || super::run_input(conn, &run_id), || format!("run {run_id}: record"))?;
            let record: RunRecord = decode_record(&run_id, &record)?;
            let mut stmt = conn
                .prepare_cached("SELECT seq, entry FROM loom_journal WHERE run_id = ?1 ORDER BY seq")
                .map_err(db)?;
            let rows = stmt
                .query_map([&run_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            let entries = rows
                .into_iter()
                .map(|(seq, text)| decode_entry(&run_id, seq, &text))
                .collect::<Result<Vec<JournalEntry>, Error>>()?;
            let events = load_events(conn, &run_id)?;
            Ok(Some(JournaledRun {
                record,
                entries,
                events,
                state: parse_state(&state, &run_id)?,
                finished,
                lease_owner,
                lease_expires_at: expires.map(from_millis),
            }))
        })
        .await
    }

    fn database_id(&self) -> Option<usize> {
        Some(SqliteStore::database_id(self))
    }

    async fn check_lease(&self, run_id: &str, lease: &Lease) -> Result<(), Error> {
        let run_id = run_id.to_string();
        let lease = lease.clone();
        self.call(move |conn| check_lease(conn, &run_id, &lease)).await
    }

    async fn end_with(&self, run_id: &str, lease: &Lease, commit: &FinalCommit<'_>) -> Result<bool, Error> {
        let run_id = run_id.to_string();
        let lease = lease.clone();
        let state = commit.state;
        let entries = commit
            .entries
            .iter()
            .map(|e| Ok((e.type_name(), json(e)?)))
            .collect::<Result<Vec<(&'static str, String)>, Error>>()?;
        let events = encode_events(commit.events)?;
        let row = RunRow::journaled(commit.transcript)?;
        let history = commit.history.map(|h| encode_history(h, row.literal())).transpose()?;
        let unlock = commit
            .unlock
            .map(|(key, holder)| (key.owner().to_string(), key.session_id.to_string(), holder.to_string()));
        self.call(move |conn| {
            let tx = Immediate::begin(conn)?;
            // The lease is released below: checked, not renewed (a renewal rewrote the run's row
            // once more in this transaction).
            check_lease(&tx, &run_id, &lease)?;
            for (kind, text) in &entries {
                insert_entry(&tx, &run_id, kind, text)?;
            }
            insert_events(&tx, &run_id, &events)?;
            super::sessions::write_run(&tx, &row, Some(true))?;
            if let Some(rows) = &history {
                super::sessions::write_history(
                    &tx,
                    row.user_id.as_deref().unwrap_or(""),
                    &row.session_id,
                    &run_id,
                    rows,
                )?;
            }
            end_row(&tx, &run_id, state)?;
            if let Some((owner, id, holder)) = &unlock {
                super::sessions::unlock(&tx, owner, id, holder)?;
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn list(&self, filter: &RunFilter) -> Result<Vec<JournalRunSummary>, Error> {
        let filter = filter.clone();
        self.call(move |conn| {
            let limit = if filter.limit == 0 { -1 } else { filter.limit as i64 };
            let mut stmt = conn.prepare_cached(LIST_RUNS).map_err(db)?;
            let rows = stmt
                .query_map(
                    params![filter.session_id, filter.user_id, filter.unfinished, limit, filter.parent_run_id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, Option<String>>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, bool>(4)?,
                            r.get::<_, i64>(5)?,
                            r.get::<_, i64>(6)?,
                            r.get::<_, Option<String>>(7)?,
                        ))
                    },
                )
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            rows.into_iter()
                .map(|(run_id, session_id, user_id, state, finished, started, entries, parent_run_id)| {
                    Ok(JournalRunSummary {
                        state: parse_state(&state, &run_id)?,
                        started_at: from_millis(started),
                        run_id,
                        session_id,
                        user_id,
                        finished,
                        entries: entries as u64,
                        parent_run_id,
                    })
                })
                .collect()
        })
        .await
    }
}

/// Sets the run's state (a terminal one finishes it) and releases its lease.
fn end_row(tx: &rusqlite::Connection, run_id: &str, state: RunState) -> Result<(), Error> {
    tx.prepare_cached(
        "UPDATE loom_runs SET state = ?2, finished = ?3, lease_owner = NULL, lease_expires = NULL,
            finished_at = CASE WHEN ?3 THEN ?4 ELSE finished_at END WHERE run_id = ?1",
    )
    .map_err(db)?
    .execute(params![run_id, state.as_str(), sql::is_finished(state), now_ms()])
    .map_err(db)?;
    Ok(())
}

/// Whether `lease` holds the run (the lease rule, read without a write).
fn check_lease(conn: &rusqlite::Connection, run_id: &str, lease: &Lease) -> Result<(), Error> {
    with_lease(conn, run_id, |view| may_write(run_id, view, lease))
}

/// A run's registration, encoded (see `Journal::begin`).
struct Begin {
    run_id: String,
    session_id: String,
    user_id: Option<String>,
    parent: Option<String>,
    row: RecordRow,
    owner: String,
    until: i64,
    fence: i64,
    events: Vec<(i64, String)>,
}

impl Begin {
    fn new(record: &RunRecord, lease: &Lease, events: &[Event]) -> Result<Begin, Error> {
        let row = RecordRow::new(record)?;
        let events = crate::store::sql::events_once(encode_events(events)?, row.literal());
        Ok(Begin {
            run_id: record.run_id.clone(),
            session_id: record.session_id.clone(),
            user_id: record.user_id.clone(),
            parent: record.parent_run_id.clone(),
            row,
            owner: lease.owner.to_string(),
            until: lease.expiry_ms(now_ms()),
            fence: lease.fence_i64(),
            events,
        })
    }

    /// The run's row (or, for a queued run, its queue row, where the caller holds its claim), then
    /// its events; fails if the run is already journaled.
    fn write(&self, tx: &rusqlite::Connection) -> Result<(), Error> {
        let n = tx
            .prepare_cached(
                "INSERT INTO loom_runs (run_id, session_id, user_id, state, input, record, started_at,
                    lease_owner, lease_expires, parent_run_id, fence)
                 VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (run_id) DO UPDATE SET session_id = excluded.session_id, user_id = excluded.user_id,
                    state = 'running', input = excluded.input, record = excluded.record,
                    started_at = excluded.started_at, lease_expires = excluded.lease_expires,
                    parent_run_id = excluded.parent_run_id
                 WHERE loom_runs.record IS NULL AND loom_runs.agent IS NOT NULL AND loom_runs.finished = 0
                    AND loom_runs.lease_owner = excluded.lease_owner AND loom_runs.fence = excluded.fence",
            )
            .map_err(db)?
            .execute(params![
                self.run_id,
                self.session_id,
                self.user_id,
                self.row.input,
                self.row.record,
                self.row.started,
                self.owner,
                self.until,
                self.parent,
                self.fence
            ])
            .map_err(db)?;
        if n == 0 {
            return Err(Error::Store(format!("run {} is already journaled", self.run_id).into()));
        }
        insert_events(tx, &self.run_id, &self.events)
    }
}
