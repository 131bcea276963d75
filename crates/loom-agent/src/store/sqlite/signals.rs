//! The SQLite store as a [`SignalStore`]: signals per session (deduplicated by a unique key on
//! the session and dedupe key), schedules, and one lease row per schedule occurrence.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::{SqliteStore, db};
use crate::error::Error;
use crate::signal::{Attention, RuntimeSignal, ScheduleRecord, SignalRecord, SignalStatus, SignalStore};
use crate::store::SessionKey;
use crate::store::signal_rows::{SIGNAL_COLUMNS, SignalRow, decide_status, decode_schedule};
use crate::store::sql::{json, millis, now_ms};

/// Version 5: signals (unique per session and dedupe key), schedules, and the lease rows that
/// make each schedule occurrence fire once.
pub(super) const MIGRATE_V5: &str = "
    CREATE TABLE loom_signals (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, session_id TEXT NOT NULL,
        id TEXT NOT NULL, dedupe_key TEXT, signal TEXT NOT NULL, status TEXT NOT NULL,
        attention TEXT, run_id TEXT, claim_holder TEXT, claim_until INTEGER NOT NULL DEFAULT 0,
        received_at INTEGER NOT NULL, handled_at INTEGER,
        UNIQUE (owner, session_id, id), UNIQUE (owner, session_id, dedupe_key));
    CREATE INDEX loom_signals_by_status ON loom_signals (owner, session_id, status);
    CREATE INDEX loom_signals_open ON loom_signals (status);
    CREATE TABLE loom_schedules (
        id TEXT PRIMARY KEY, owner TEXT NOT NULL, session_id TEXT NOT NULL, record TEXT NOT NULL,
        next_at INTEGER, created_at INTEGER NOT NULL);
    CREATE TABLE loom_schedule_fires (
        schedule_id TEXT NOT NULL, at_ms INTEGER NOT NULL, holder TEXT NOT NULL, fired_at INTEGER NOT NULL,
        PRIMARY KEY (schedule_id, at_ms)) WITHOUT ROWID;
    PRAGMA user_version = 5;";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SignalRow> {
    Ok(SignalRow {
        owner: r.get(0)?,
        session_id: r.get(1)?,
        signal: r.get(2)?,
        status: r.get(3)?,
        attention: r.get(4)?,
        run_id: r.get(5)?,
        handled_at: r.get(6)?,
    })
}

fn query(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<SignalRecord>, Error> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let rows = stmt.query_map(params, row).map_err(db)?.collect::<Result<Vec<_>, _>>().map_err(db)?;
    rows.into_iter().map(SignalRow::decode).collect()
}

/// A session's signals still to handle: pending, or claimed by a holder whose claim lapsed; the
/// signal's columns, then its `seq`.
pub(super) fn pending_sql() -> String {
    format!(
        "SELECT {SIGNAL_COLUMNS}, seq FROM loom_signals WHERE owner = ?1 AND session_id = ?2
         AND (status = 'pending' OR (status = 'claimed' AND claim_until < ?3))"
    )
}

#[async_trait::async_trait]
impl SignalStore for SqliteStore {
    async fn append(
        &self,
        session: SessionKey<'_>,
        signal: &RuntimeSignal,
        claim: Option<(&str, i64)>,
    ) -> Result<bool, Error> {
        let (owner, id) = (session.owner().to_string(), session.session_id.to_string());
        let text = json(signal)?;
        let status = if claim.is_some() { "claimed" } else { "pending" };
        let (holder, until) = (claim.map(|(h, _)| h.to_string()), claim.map_or(0, |(_, u)| u));
        let (signal_id, dedupe, at) = (signal.id.clone(), signal.dedupe_key.clone(), millis(signal.received_at));
        self.call(move |conn| {
            let n = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO loom_signals (owner, session_id, id, dedupe_key, signal, status,
                        received_at, claim_holder, claim_until)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(db)?
                .execute(params![owner, id, signal_id, dedupe, text, status, at, holder, until])
                .map_err(db)?;
            Ok(n == 1)
        })
        .await
    }

    async fn append_decided(
        &self,
        session: SessionKey<'_>,
        signal: &RuntimeSignal,
        attention: Attention,
        claim: (&str, i64),
    ) -> Result<bool, Error> {
        let (owner, id) = (session.owner().to_string(), session.session_id.to_string());
        let text = json(signal)?;
        let status = decide_status(attention);
        let handled_at = (status == SignalStatus::Handled).then(now_ms);
        let (holder, until) = (claim.0.to_string(), claim.1);
        let (signal_id, dedupe, at) = (signal.id.clone(), signal.dedupe_key.clone(), millis(signal.received_at));
        self.call(move |conn| {
            let n = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO loom_signals (owner, session_id, id, dedupe_key, signal, status,
                        received_at, claim_holder, claim_until, attention, handled_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(db)?
                .execute(params![
                    owner,
                    id,
                    signal_id,
                    dedupe,
                    text,
                    status.as_str(),
                    at,
                    holder,
                    until,
                    attention.as_str(),
                    handled_at
                ])
                .map_err(db)?;
            Ok(n == 1)
        })
        .await
    }

    async fn signals(&self, session: SessionKey<'_>) -> Result<Vec<SignalRecord>, Error> {
        let (owner, id) = (session.owner().to_string(), session.session_id.to_string());
        self.call(move |conn| {
            let sql =
                format!("SELECT {SIGNAL_COLUMNS} FROM loom_signals WHERE owner = ?1 AND session_id = ?2 ORDER BY seq");
            query(conn, &sql, params![owner, id])
        })
        .await
    }

    async fn pending(&self, session: SessionKey<'_>, now_ms: i64) -> Result<Vec<SignalRecord>, Error> {
        let (owner, id) = (session.owner().to_string(), session.session_id.to_string());
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(&pending_sql()).map_err(db)?;
            let mut rows = stmt
                .query_map(params![owner, id, now_ms], |r| Ok((r.get::<_, i64>(7)?, row(r)?)))
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            // In arrival order, sorted here: with `ORDER BY seq` SQLite sorted them in a temporary
            // b-tree (its index serves the session, not the order) at every read, every run.
            rows.sort_unstable_by_key(|(seq, _)| *seq);
            rows.into_iter().map(|(_, r)| SignalRow::decode(r)).collect()
        })
        .await
    }

    async fn pending_sessions(&self, now_ms: i64) -> Result<Vec<(Option<String>, String)>, Error> {
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT DISTINCT owner, session_id FROM loom_signals
                     WHERE status = 'pending' OR (status = 'claimed' AND claim_until < ?1) ORDER BY owner, session_id",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([now_ms], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            Ok(rows.into_iter().map(|(o, s)| ((!o.is_empty()).then_some(o), s)).collect())
        })
        .await
    }

    async fn claim(
        &self,
        session: SessionKey<'_>,
        signal_id: &str,
        holder: &str,
        until_ms: i64,
    ) -> Result<bool, Error> {
        let (owner, id) = (session.owner().to_string(), session.session_id.to_string());
        let (signal_id, holder) = (signal_id.to_string(), holder.to_string());
        self.call(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE loom_signals SET status = 'claimed', claim_holder = ?4, claim_until = ?5
                     WHERE owner = ?1 AND session_id = ?2 AND id = ?3
                     AND (status = 'pending' OR (status = 'claimed' AND claim_until < ?6))",
                )
                .map_err(db)?
                .execute(params![owner, id, signal_id, holder, until_ms, now_ms()])
                .map_err(db)?;
            Ok(n == 1)
        })
        .await
    }

    async fn settle(
        &self,
        session: SessionKey<'_>,
        signal_id: &str,
        attention: Attention,
        run_id: Option<&str>,
    ) -> Result<(), Error> {
        let (owner, id) = (session.owner().to_string(), session.session_id.to_string());
        let (signal_id, run_id) = (signal_id.to_string(), run_id.map(str::to_string));
        let status = decide_status(attention);
        let handled_at = (status == SignalStatus::Handled).then(now_ms);
        self.call(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE loom_signals SET status = ?4, attention = ?5, run_id = ?6, handled_at = ?7
                     WHERE owner = ?1 AND session_id = ?2 AND id = ?3",
                )
                .map_err(db)?
                .execute(params![owner, id, signal_id, status.as_str(), attention.as_str(), run_id, handled_at])
                .map_err(db)?;
            if n == 0 {
                return Err(Error::Config(format!("no signal `{signal_id}` in session `{id}`")));
            }
            Ok(())
        })
        .await
    }

    async fn take_observed(&self, session: SessionKey<'_>, run_id: &str) -> Result<Vec<SignalRecord>, Error> {
        let (owner, id) = (session.owner().to_string(), session.session_id.to_string());
        let run_id = run_id.to_string();
        self.call(move |conn| {
            // Most runs find none: a read first, so they do not take the write lock for nothing.
            let any: bool = conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM loom_signals WHERE owner = ?1 AND session_id = ?2
                     AND status = 'observed')",
                )
                .map_err(db)?
                .query_row(params![owner, id], |r| r.get(0))
                .map_err(db)?;
            if !any {
                return Ok(Vec::new());
            }
            let sql = format!(
                "UPDATE loom_signals SET status = 'handled', run_id = ?3, handled_at = ?4
                 WHERE owner = ?1 AND session_id = ?2 AND status = 'observed' RETURNING {SIGNAL_COLUMNS}, seq"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
            let mut rows = stmt
                .query_map(params![owner, id, run_id, now_ms()], |r| Ok((r.get::<_, i64>(7)?, row(r)?)))
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            rows.sort_by_key(|(seq, _)| *seq);
            rows.into_iter().map(|(_, r)| r.decode()).collect()
        })
        .await
    }

    async fn put_schedule(&self, schedule: &ScheduleRecord) -> Result<(), Error> {
        let text = json(schedule)?;
        let s = schedule.clone();
        self.call(move |conn| {
            conn.prepare_cached(
                "INSERT INTO loom_schedules (id, owner, session_id, record, next_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET owner = ?2, session_id = ?3, record = ?4, next_at = ?5",
            )
            .map_err(db)?
            .execute(params![
                s.id,
                s.user_id.as_deref().unwrap_or(""),
                s.session_id,
                text,
                s.next_at.map(millis),
                millis(s.created_at)
            ])
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, Error> {
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, record, next_at FROM loom_schedules ORDER BY created_at, id")
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?)))
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            rows.into_iter()
                .map(|(id, text, next)| {
                    let mut record = decode_schedule(&id, &text)?;
                    record.next_at = next.map(crate::store::sql::from_millis);
                    Ok(record)
                })
                .collect()
        })
        .await
    }

    async fn remove_schedule(&self, id: &str) -> Result<bool, Error> {
        let id = id.to_string();
        self.call(move |conn| {
            let n = conn.execute("DELETE FROM loom_schedules WHERE id = ?1", [&id]).map_err(db)?;
            Ok(n == 1)
        })
        .await
    }

    async fn claim_occurrence(&self, schedule_id: &str, at_ms: i64, holder: &str) -> Result<bool, Error> {
        let (id, holder) = (schedule_id.to_string(), holder.to_string());
        self.call(move |conn| {
            let n = conn
                .prepare_cached(
                    "INSERT INTO loom_schedule_fires (schedule_id, at_ms, holder, fired_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO NOTHING",
                )
                .map_err(db)?
                .execute(params![id, at_ms, holder, now_ms()])
                .map_err(db)?;
            Ok(n == 1)
        })
        .await
    }

    async fn advance_schedule(&self, id: &str, next_at: Option<DateTime<Utc>>) -> Result<(), Error> {
        let id = id.to_string();
        self.call(move |conn| {
            conn.prepare_cached("UPDATE loom_schedules SET next_at = ?2 WHERE id = ?1")
                .map_err(db)?
                .execute(params![id, next_at.map(millis)])
                .map_err(db)?;
            Ok(())
        })
        .await
    }
}
