//! The PostgreSQL store as a [`SignalStore`]: signals per session (deduplicated by a unique key on
//! the session and dedupe key), schedules, and one lease row per schedule occurrence
//! (`INSERT … ON CONFLICT DO NOTHING`: exactly one process fires each occurrence).

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{PostgresStore, get, pg};
use crate::error::Error;
use crate::signal::{Attention, RuntimeSignal, ScheduleRecord, SignalRecord, SignalStatus, SignalStore};
use crate::store::SessionKey;
use crate::store::signal_rows::{SignalRow, decide_status, decode_schedule};
use crate::store::sql::{from_millis, json, millis, now_ms};

/// Version 5: signals, schedules and schedule occurrence leases.
pub(super) const MIGRATE_V5: &str = "
    CREATE TABLE loom_signals (
        seq BIGSERIAL PRIMARY KEY, owner TEXT NOT NULL, session_id TEXT NOT NULL,
        id TEXT NOT NULL, dedupe_key TEXT, signal TEXT NOT NULL, status TEXT NOT NULL,
        attention TEXT, run_id TEXT, claim_holder TEXT, claim_until BIGINT NOT NULL DEFAULT 0,
        received_at BIGINT NOT NULL, handled_at BIGINT,
        UNIQUE (owner, session_id, id), UNIQUE (owner, session_id, dedupe_key));
    CREATE INDEX loom_signals_by_status ON loom_signals (owner, session_id, status);
    CREATE INDEX loom_signals_open ON loom_signals (status);
    CREATE TABLE loom_schedules (
        id TEXT PRIMARY KEY, owner TEXT NOT NULL, session_id TEXT NOT NULL, record TEXT NOT NULL,
        next_at BIGINT, created_at BIGINT NOT NULL);
    CREATE TABLE loom_schedule_fires (
        schedule_id TEXT NOT NULL, at_ms BIGINT NOT NULL, holder TEXT NOT NULL, fired_at BIGINT NOT NULL,
        PRIMARY KEY (schedule_id, at_ms));";

const COLUMNS: &str = "owner, session_id, signal, status, attention, run_id, handled_at";

fn decode_row(row: &Row) -> Result<SignalRecord, Error> {
    SignalRow {
        owner: get(row, 0)?,
        session_id: get(row, 1)?,
        signal: get(row, 2)?,
        status: get(row, 3)?,
        attention: get(row, 4)?,
        run_id: get(row, 5)?,
        handled_at: get(row, 6)?,
    }
    .decode()
}

#[async_trait::async_trait]
impl SignalStore for PostgresStore {
    async fn append(
        &self,
        session: SessionKey<'_>,
        signal: &RuntimeSignal,
        claim: Option<(&str, i64)>,
    ) -> Result<bool, Error> {
        let text = json(signal)?;
        let at = millis(signal.received_at);
        let status = if claim.is_some() { "claimed" } else { "pending" };
        let (holder, until) = (claim.map(|(h, _)| h), claim.map_or(0, |(_, u)| u));
        with_conn!(self, |client| async move {
            let n = client
                .execute(
                    "INSERT INTO loom_signals (owner, session_id, id, dedupe_key, signal, status, received_at,
                        claim_holder, claim_until)
                     VALUES ($1::TEXT, $2::TEXT, $3::TEXT, $4::TEXT, $5::TEXT, $6::TEXT, $7::BIGINT, $8::TEXT,
                        $9::BIGINT)
                     ON CONFLICT DO NOTHING",
                    &[
                        &session.owner(),
                        &session.session_id,
                        &signal.id,
                        &signal.dedupe_key,
                        &text,
                        &status,
                        &at,
                        &holder,
                        &until,
                    ],
                )
                .await
                .map_err(|e| pg("storing a signal", e))?;
            Ok(n == 1)
        })
    }

    async fn append_decided(
        &self,
        session: SessionKey<'_>,
        signal: &RuntimeSignal,
        attention: Attention,
        claim: (&str, i64),
    ) -> Result<bool, Error> {
        let text = json(signal)?;
        let at = millis(signal.received_at);
        let status = decide_status(attention);
        let handled_at = (status == SignalStatus::Handled).then(now_ms);
        let (holder, until) = claim;
        with_conn!(self, |client| async move {
            let n = client
                .execute(
                    "INSERT INTO loom_signals (owner, session_id, id, dedupe_key, signal, status, received_at,
                        claim_holder, claim_until, attention, handled_at)
                     VALUES ($1::TEXT, $2::TEXT, $3::TEXT, $4::TEXT, $5::TEXT, $6::TEXT, $7::BIGINT, $8::TEXT,
                        $9::BIGINT, $10::TEXT, $11::BIGINT)
                     ON CONFLICT DO NOTHING",
                    &[
                        &session.owner(),
                        &session.session_id,
                        &signal.id,
                        &signal.dedupe_key,
                        &text,
                        &status.as_str(),
                        &at,
                        &holder,
                        &until,
                        &attention.as_str(),
                        &handled_at,
                    ],
                )
                .await
                .map_err(|e| pg("storing a signal", e))?;
            Ok(n == 1)
        })
    }

    async fn signals(&self, session: SessionKey<'_>) -> Result<Vec<SignalRecord>, Error> {
        let sql =
            format!("SELECT {COLUMNS} FROM loom_signals WHERE owner = $1::TEXT AND session_id = $2::TEXT ORDER BY seq");
        with_conn!(self, |client| async move {
            let rows = client
                .query(&sql, &[&session.owner(), &session.session_id])
                .await
                .map_err(|e| pg("reading signals", e))?;
            rows.iter().map(decode_row).collect()
        })
    }

    async fn pending(&self, session: SessionKey<'_>, now_ms: i64) -> Result<Vec<SignalRecord>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM loom_signals WHERE owner = $1::TEXT AND session_id = $2::TEXT
             AND (status = 'pending' OR (status = 'claimed' AND claim_until < $3::BIGINT)) ORDER BY seq"
        );
        with_conn!(self, |client| async move {
            let rows = client
                .query(&sql, &[&session.owner(), &session.session_id, &now_ms])
                .await
                .map_err(|e| pg("reading pending signals", e))?;
            rows.iter().map(decode_row).collect()
        })
    }

    async fn pending_sessions(&self, now_ms: i64) -> Result<Vec<(Option<String>, String)>, Error> {
        with_conn!(self, |client| async move {
            let rows = client
                .query(
                    "SELECT DISTINCT owner, session_id FROM loom_signals
                     WHERE status = 'pending' OR (status = 'claimed' AND claim_until < $1::BIGINT)
                     ORDER BY owner, session_id",
                    &[&now_ms],
                )
                .await
                .map_err(|e| pg("listing sessions with pending signals", e))?;
            rows.iter()
                .map(|r| {
                    let owner: String = get(r, 0)?;
                    Ok(((!owner.is_empty()).then_some(owner), get(r, 1)?))
                })
                .collect()
        })
    }

    async fn claim(
        &self,
        session: SessionKey<'_>,
        signal_id: &str,
        holder: &str,
        until_ms: i64,
    ) -> Result<bool, Error> {
        let now = now_ms();
        with_conn!(self, |client| async move {
            let n = client
                .execute(
                    "UPDATE loom_signals SET status = 'claimed', claim_holder = $4::TEXT, claim_until = $5::BIGINT
                     WHERE owner = $1::TEXT AND session_id = $2::TEXT AND id = $3::TEXT
                     AND (status = 'pending' OR (status = 'claimed' AND claim_until < $6::BIGINT))",
                    &[&session.owner(), &session.session_id, &signal_id, &holder, &until_ms, &now],
                )
                .await
                .map_err(|e| pg("claiming a signal", e))?;
            Ok(n == 1)
        })
    }

    async fn settle(
        &self,
        session: SessionKey<'_>,
        signal_id: &str,
        attention: Attention,
        run_id: Option<&str>,
    ) -> Result<(), Error> {
        let status = decide_status(attention);
        let handled_at = (status == SignalStatus::Handled).then(now_ms);
        with_conn!(self, |client| async move {
            let n = client
                .execute(
                    "UPDATE loom_signals SET status = $4::TEXT, attention = $5::TEXT, run_id = $6::TEXT,
                     handled_at = $7::BIGINT WHERE owner = $1::TEXT AND session_id = $2::TEXT AND id = $3::TEXT",
                    &[
                        &session.owner(),
                        &session.session_id,
                        &signal_id,
                        &status.as_str(),
                        &attention.as_str(),
                        &run_id,
                        &handled_at,
                    ],
                )
                .await
                .map_err(|e| pg("settling a signal", e))?;
            if n == 0 {
                return Err(Error::Config(format!("no signal `{signal_id}` in session `{}`", session.session_id)));
            }
            Ok(())
        })
    }

    async fn take_observed(&self, session: SessionKey<'_>, run_id: &str) -> Result<Vec<SignalRecord>, Error> {
        let sql = format!(
            "UPDATE loom_signals SET status = 'handled', run_id = $3::TEXT, handled_at = $4::BIGINT
             WHERE owner = $1::TEXT AND session_id = $2::TEXT AND status = 'observed' RETURNING {COLUMNS}, seq"
        );
        let now = now_ms();
        with_conn!(self, |client| async move {
            let rows = client
                .query(&sql, &[&session.owner(), &session.session_id, &run_id, &now])
                .await
                .map_err(|e| pg("taking observed signals", e))?;
            let mut taken =
                rows.iter().map(|r| Ok((get::<i64>(r, 7)?, decode_row(r)?))).collect::<Result<Vec<_>, Error>>()?;
            taken.sort_by_key(|(seq, _)| *seq);
            Ok(taken.into_iter().map(|(_, r)| r).collect())
        })
    }

    async fn put_schedule(&self, schedule: &ScheduleRecord) -> Result<(), Error> {
        let text = json(schedule)?;
        let owner = schedule.user_id.as_deref().unwrap_or("");
        let next = schedule.next_at.map(millis);
        let created = millis(schedule.created_at);
        with_conn!(self, |client| async move {
            client
                .execute(
                    "INSERT INTO loom_schedules (id, owner, session_id, record, next_at, created_at)
                     VALUES ($1::TEXT, $2::TEXT, $3::TEXT, $4::TEXT, $5::BIGINT, $6::BIGINT)
                     ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, session_id = EXCLUDED.session_id,
                     record = EXCLUDED.record, next_at = EXCLUDED.next_at",
                    &[&schedule.id, &owner, &schedule.session_id, &text, &next, &created],
                )
                .await
                .map_err(|e| pg("storing a schedule", e))?;
            Ok(())
        })
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, Error> {
        with_conn!(self, |client| async move {
            let rows = client
                .query("SELECT id, record, next_at FROM loom_schedules ORDER BY created_at, id", &[])
                .await
                .map_err(|e| pg("reading schedules", e))?;
            rows.iter()
                .map(|r| {
                    let id: String = get(r, 0)?;
                    let text: String = get(r, 1)?;
                    let next: Option<i64> = get(r, 2)?;
                    let mut record = decode_schedule(&id, &text)?;
                    record.next_at = next.map(from_millis);
                    Ok(record)
                })
                .collect()
        })
    }

    async fn remove_schedule(&self, id: &str) -> Result<bool, Error> {
        with_conn!(self, |client| async move {
            let n = client
                .execute("DELETE FROM loom_schedules WHERE id = $1::TEXT", &[&id])
                .await
                .map_err(|e| pg("removing a schedule", e))?;
            Ok(n == 1)
        })
    }

    async fn claim_occurrence(&self, schedule_id: &str, at_ms: i64, holder: &str) -> Result<bool, Error> {
        let now = now_ms();
        with_conn!(self, |client| async move {
            let n = client
                .execute(
                    "INSERT INTO loom_schedule_fires (schedule_id, at_ms, holder, fired_at)
                     VALUES ($1::TEXT, $2::BIGINT, $3::TEXT, $4::BIGINT) ON CONFLICT DO NOTHING",
                    &[&schedule_id, &at_ms, &holder, &now],
                )
                .await
                .map_err(|e| pg("taking a schedule occurrence's lease", e))?;
            Ok(n == 1)
        })
    }

    async fn advance_schedule(&self, id: &str, next_at: Option<DateTime<Utc>>) -> Result<(), Error> {
        let next = next_at.map(millis);
        with_conn!(self, |client| async move {
            client
                .execute("UPDATE loom_schedules SET next_at = $2::BIGINT WHERE id = $1::TEXT", &[&id, &next])
                .await
                .map_err(|e| pg("moving a schedule", e))?;
            Ok(())
        })
    }
}
