//! The SQLite store as a [`RunQueue`] (one writer at a time: a claim is an immediate transaction)
//! and retention (`prune`).

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{SqliteStore, db, load_events};
use crate::error::{Error, RunError};
use crate::event::Event;
use crate::run::RunState;
use crate::store::sql::{self, from_millis, json, millis, now_ms, parse_state};
use loom_core::journal::{ClaimedRun, Lease, PruneReport, QueuedRun, RunQueue, RunStatus};

/// The columns of a [`RunStatus`].
const STATUS_COLUMNS: &str = "run_id, agent, session_id, user_id, state, finished, COALESCE(queued_at, started_at),
    finished_at, cancel_requested, lease_owner, lease_expires";

type StatusRow =
    (String, Option<String>, String, Option<String>, String, bool, i64, Option<i64>, bool, Option<String>, Option<i64>);

fn read_status(r: &rusqlite::Row<'_>) -> rusqlite::Result<StatusRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

fn status(row: StatusRow) -> Result<RunStatus, Error> {
    let (
        run_id,
        agent,
        session_id,
        user_id,
        state,
        finished,
        created,
        finished_at,
        cancel_requested,
        lease_owner,
        expires,
    ) = row;
    Ok(RunStatus {
        state: parse_state(&state, &run_id)?,
        agent,
        session_id,
        user_id,
        finished,
        created_at: from_millis(created),
        finished_at: finished_at.map(from_millis),
        cancel_requested,
        lease_owner,
        lease_expires_at: expires.map(from_millis),
        run_id,
    })
}

#[async_trait::async_trait]
impl RunQueue for SqliteStore {
    async fn enqueue(&self, run: &QueuedRun) -> Result<(), Error> {
        let request = json(&run.request)?;
        let at = millis(run.queued_at);
        let run = run.clone();
        self.call(move |conn| {
            let n = conn
                .execute(
                    "INSERT INTO loom_runs (run_id, session_id, user_id, state, started_at, agent, request, queued_at)
                     VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?4) ON CONFLICT (run_id) DO NOTHING",
                    params![run.run_id, run.session_id, run.user_id, at, run.agent, request],
                )
                .map_err(db)?;
            if n == 0 {
                return Err(Error::Store(format!("run {} exists already", run.run_id).into()));
            }
            Ok(())
        })
        .await
    }

    async fn fail_claimed(&self, run_id: &str, lease: &Lease, error: &RunError) -> Result<bool, Error> {
        let run_id = run_id.to_string();
        let (owner, fence) = (lease.owner.clone(), lease.fence_i64());
        let error = error.clone();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let session: Option<String> = tx
                .query_row(
                    "UPDATE loom_runs SET state = 'failed', finished = 1, finished_at = ?1, lease_owner = NULL,
                        lease_expires = NULL
                     WHERE run_id = ?2 AND finished = 0 AND fence >= ?3
                       AND (lease_owner IS NULL OR lease_owner = ?4 OR lease_expires < ?1)
                     RETURNING session_id",
                    params![now_ms(), run_id, fence, &*owner],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            let Some(session) = session else { return Ok(false) };
            let seq: i64 = tx
                .query_row(
                    "SELECT COALESCE(MAX(seq) + 1, 0) FROM loom_events WHERE run_id = ?1",
                    params![run_id],
                    |r| r.get(0),
                )
                .map_err(db)?;
            let event = sql::claim_failed_event(&run_id, &session, seq, &error)?;
            tx.execute("INSERT INTO loom_events (run_id, seq, event) VALUES (?1, ?2, ?3)", params![run_id, seq, event])
                .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(true)
        })
        .await
    }

    async fn hold(&self, run: &QueuedRun, lease: &Lease) -> Result<bool, Error> {
        let request = json(&run.request)?;
        let at = millis(run.queued_at);
        let run = run.clone();
        let owner = lease.owner.clone();
        let expires = lease.expiry_ms(now_ms());
        let fence = lease.fence_i64();
        self.call(move |conn| {
            let n = conn
                .execute(
                    "INSERT INTO loom_runs (run_id, session_id, user_id, state, started_at, agent, request, queued_at,
                        lease_owner, lease_expires, fence)
                     VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?4, ?7, ?8, ?9) ON CONFLICT (run_id) DO NOTHING",
                    params![run.run_id, run.session_id, run.user_id, at, run.agent, request, &*owner, expires, fence],
                )
                .map_err(db)?;
            Ok(n > 0)
        })
        .await
    }

    async fn claim_run(&self, run_id: &str, lease: &Lease) -> Result<Option<ClaimedRun>, Error> {
        let run_id = run_id.to_string();
        let lease = lease.clone();
        let row = self
            .call(move |conn| {
                let now = now_ms();
                conn.query_row(
                    "UPDATE loom_runs SET lease_owner = ?1, lease_expires = ?2, fence = fence + 1
                     WHERE run_id = ?3 AND agent IS NOT NULL AND record IS NULL AND finished = 0
                       AND state <> 'suspended' AND (lease_owner IS NULL OR lease_expires < ?4)
                     RETURNING run_id, agent, session_id, user_id, request, queued_at, fence, cancel_requested",
                    params![&*lease.owner, lease.expiry_ms(now), run_id, now],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, Option<i64>>(5)?,
                            r.get::<_, i64>(6)?,
                            r.get::<_, bool>(7)?,
                        ))
                    },
                )
                .optional()
                .map_err(db)
            })
            .await?;
        let Some((run_id, agent, session_id, user_id, request, queued_at, fence, cancel_requested)) = row else {
            return Ok(None);
        };
        let (request, unreadable) = sql::claimed_request(&run_id, request.as_deref());
        Ok(Some(ClaimedRun {
            run: QueuedRun {
                run_id,
                agent: agent.unwrap_or_default(),
                session_id,
                user_id,
                request,
                queued_at: from_millis(queued_at.unwrap_or_default()),
            },
            fence: u64::try_from(fence).unwrap_or_default(),
            begun: false,
            cancel_requested,
            unreadable,
        }))
    }

    async fn renew_held(&self, run_ids: &[String], lease: &Lease) -> Result<(), Error> {
        if run_ids.is_empty() {
            return Ok(());
        }
        let ids = run_ids.to_vec();
        let owner = lease.owner.clone();
        let expires = lease.expiry_ms(now_ms());
        self.call(move |conn| {
            let tx = conn.transaction().map_err(db)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE loom_runs SET lease_expires = ?1 WHERE run_id = ?2 AND lease_owner = ?3
                            AND record IS NULL AND finished = 0",
                    )
                    .map_err(db)?;
                for id in &ids {
                    stmt.execute(params![expires, id, &*owner]).map_err(db)?;
                }
            }
            tx.commit().map_err(db)
        })
        .await
    }

    async fn claim(&self, agent: &str, lease: &Lease, max: usize) -> Result<Vec<ClaimedRun>, Error> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let agent = agent.to_string();
        let lease = lease.clone();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let now = now_ms();
            let mut claimed = Vec::new();
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE loom_runs SET lease_owner = ?1, lease_expires = ?2, fence = fence + 1
                         WHERE run_id IN (SELECT run_id FROM loom_runs
                             WHERE agent = ?3 AND finished = 0 AND state <> 'suspended'
                               AND (lease_owner IS NULL OR lease_expires < ?4)
                             ORDER BY queued_at LIMIT ?5)
                         RETURNING run_id, agent, session_id, user_id, request, queued_at, fence, record IS NOT NULL,
                             cancel_requested",
                    )
                    .map_err(db)?;
                let rows = stmt
                    .query_map(
                        params![
                            &*lease.owner,
                            lease.expiry_ms(now),
                            agent,
                            now,
                            i64::try_from(max).unwrap_or(i64::MAX)
                        ],
                        |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, Option<String>>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, Option<String>>(3)?,
                                r.get::<_, Option<String>>(4)?,
                                r.get::<_, Option<i64>>(5)?,
                                r.get::<_, i64>(6)?,
                                r.get::<_, bool>(7)?,
                                r.get::<_, bool>(8)?,
                            ))
                        },
                    )
                    .map_err(db)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db)?;
                for (run_id, agent, session_id, user_id, request, queued_at, fence, begun, cancel_requested) in rows {
                    let (request, unreadable) = sql::claimed_request(&run_id, request.as_deref());
                    claimed.push(ClaimedRun {
                        run: QueuedRun {
                            agent: agent.unwrap_or_default(),
                            session_id,
                            user_id,
                            request,
                            queued_at: from_millis(queued_at.unwrap_or_default()),
                            run_id,
                        },
                        fence: u64::try_from(fence).unwrap_or_default(),
                        begun,
                        cancel_requested,
                        unreadable,
                    });
                }
            }
            tx.commit().map_err(db)?;
            claimed.sort_by_key(|c| c.run.queued_at);
            Ok(claimed)
        })
        .await
    }

    async fn request_cancel(&self, run_id: &str) -> Result<bool, Error> {
        let run_id = run_id.to_string();
        self.call(move |conn| {
            let n = conn
                .execute("UPDATE loom_runs SET cancel_requested = 1 WHERE run_id = ?1 AND finished = 0", [&run_id])
                .map_err(db)?;
            Ok(n > 0)
        })
        .await
    }

    async fn request_resume(&self, run_id: &str, agent: &str) -> Result<bool, Error> {
        let (run_id, agent) = (run_id.to_string(), agent.to_string());
        self.call(move |conn| {
            let now = now_ms();
            let n = conn
                .execute(
                    "UPDATE loom_runs SET agent = COALESCE(agent, ?2), queued_at = COALESCE(queued_at, ?3),
                        state = CASE WHEN state = 'suspended' THEN 'queued' ELSE state END
                     WHERE run_id = ?1 AND finished = 0 AND record IS NOT NULL
                       AND (lease_owner IS NULL OR lease_expires < ?3)",
                    params![run_id, agent, now],
                )
                .map_err(db)?;
            Ok(n > 0)
        })
        .await
    }

    async fn cancels_requested(&self, run_ids: &[String]) -> Result<Vec<String>, Error> {
        let run_ids = run_ids.to_vec();
        self.call(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT cancel_requested FROM loom_runs WHERE run_id = ?1").map_err(db)?;
            let mut out = Vec::new();
            for id in run_ids {
                let wanted: Option<bool> = stmt.query_row([&id], |r| r.get(0)).optional().map_err(db)?;
                if wanted == Some(true) {
                    out.push(id);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn status(&self, run_id: &str) -> Result<Option<RunStatus>, Error> {
        let run_id = run_id.to_string();
        self.call(move |conn| {
            let row = conn
                .query_row(&format!("SELECT {STATUS_COLUMNS} FROM loom_runs WHERE run_id = ?1"), [&run_id], read_status)
                .optional()
                .map_err(db)?;
            row.map(status).transpose()
        })
        .await
    }

    async fn runs_before(
        &self,
        user_prefix: &str,
        session_id: Option<&str>,
        user_id: Option<&str>,
        state: Option<RunState>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunStatus>, Error> {
        let (prefix, session_id, user_id) =
            (user_prefix.to_string(), session_id.map(str::to_string), user_id.map(str::to_string));
        let before = before.map(str::to_string);
        let state = state.map(|s| s.as_str().to_string());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {STATUS_COLUMNS} FROM loom_runs
                     WHERE (record IS NOT NULL OR agent IS NOT NULL) AND substr(user_id, 1, length(?1)) = ?1
                       AND (?2 IS NULL OR session_id = ?2) AND (?3 IS NULL OR user_id = ?3)
                       AND (?4 IS NULL OR state = ?4) AND (?6 IS NULL OR run_id < ?6)
                     ORDER BY run_id DESC LIMIT ?5"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map(params![prefix, session_id, user_id, state, limit, before], read_status)
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            rows.into_iter().map(status).collect()
        })
        .await
    }

    async fn events_after(&self, run_id: &str, after: Option<u64>, limit: usize) -> Result<Vec<Event>, Error> {
        let run_id = run_id.to_string();
        self.call(move |conn| {
            let all = load_events(conn, &run_id)?;
            Ok(all.into_iter().filter(|e| after.is_none_or(|a| e.seq > a)).take(limit).collect())
        })
        .await
    }

    async fn depth(&self) -> Result<u64, Error> {
        self.call(|conn| {
            let n: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM loom_runs WHERE agent IS NOT NULL AND finished = 0 AND record IS NULL
                        AND lease_owner IS NULL",
                    [],
                    |r| r.get(0),
                )
                .map_err(db)?;
            Ok(u64::try_from(n).unwrap_or_default())
        })
        .await
    }
}

/// Deletes the runs that finished before `before`, with their events and journal entries.
pub(super) async fn prune(store: &SqliteStore, before: DateTime<Utc>) -> Result<PruneReport, Error> {
    let before = millis(before);
    store
        .call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            const GONE: &str =
                "SELECT run_id FROM loom_runs WHERE finished = 1 AND COALESCE(finished_at, started_at) < ?1";
            let events =
                tx.execute(&format!("DELETE FROM loom_events WHERE run_id IN ({GONE})"), [before]).map_err(db)?;
            let entries =
                tx.execute(&format!("DELETE FROM loom_journal WHERE run_id IN ({GONE})"), [before]).map_err(db)?;
            let runs = tx
                .execute(
                    "DELETE FROM loom_runs WHERE finished = 1 AND COALESCE(finished_at, started_at) < ?1",
                    [before],
                )
                .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(PruneReport { runs: runs as u64, events: events as u64, entries: entries as u64 })
        })
        .await
}
