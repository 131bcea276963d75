//! The PostgreSQL store as a [`RunQueue`]: queued runs are rows of `loom_runs` without a record,
//! claimed with `FOR UPDATE SKIP LOCKED` and a lease; and retention (`prune`).

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{PostgresStore, get, pg};
use crate::error::{Error, RunError};
use crate::event::Event;
use crate::run::RunState;
use crate::store::sql::{self, decode_event, expand, from_millis, json, millis, now_ms, parse_state};
use loom_core::journal::{ClaimedRun, Lease, PruneReport, QueuedRun, RunQueue, RunStatus};

/// Claims the oldest waiting runs of an agent in one statement: the inner select skips rows
/// another claimer has locked, so concurrent workers never claim the same run.
const CLAIM: &str = "
    UPDATE loom_runs r SET lease_owner = $1::TEXT, lease_expires = $2::BIGINT, fence = r.fence + 1
    FROM (SELECT run_id FROM loom_runs
          WHERE agent = $3::TEXT AND NOT finished AND state <> 'suspended'
            AND (lease_owner IS NULL OR lease_expires < $4::BIGINT)
          ORDER BY queued_at LIMIT $5::BIGINT FOR UPDATE SKIP LOCKED) c
    WHERE r.run_id = c.run_id
    RETURNING r.run_id, r.agent, r.session_id, r.user_id, r.request, r.queued_at, r.fence, r.record IS NOT NULL,
        r.cancel_requested";

/// The columns of a [`RunStatus`].
const STATUS_COLUMNS: &str = "run_id, agent, session_id, user_id, state, finished, COALESCE(queued_at, started_at),
    finished_at, cancel_requested, lease_owner, lease_expires";

fn status(row: &Row) -> Result<RunStatus, Error> {
    let run_id: String = get(row, 0)?;
    Ok(RunStatus {
        agent: get(row, 1)?,
        session_id: get(row, 2)?,
        user_id: get(row, 3)?,
        state: parse_state(get(row, 4)?, &run_id)?,
        finished: get(row, 5)?,
        created_at: from_millis(get(row, 6)?),
        finished_at: get::<Option<i64>>(row, 7)?.map(from_millis),
        cancel_requested: get(row, 8)?,
        lease_owner: get(row, 9)?,
        lease_expires_at: get::<Option<i64>>(row, 10)?.map(from_millis),
        run_id,
    })
}

fn claimed(row: &Row) -> Result<ClaimedRun, Error> {
    let run_id: String = get(row, 0)?;
    let request: Option<String> = get(row, 4)?;
    let (request, unreadable) = sql::claimed_request(&run_id, request.as_deref());
    let fence: i64 = get(row, 6)?;
    Ok(ClaimedRun {
        run: QueuedRun {
            agent: get::<Option<String>>(row, 1)?.unwrap_or_default(),
            session_id: get(row, 2)?,
            user_id: get(row, 3)?,
            request,
            queued_at: from_millis(get::<Option<i64>>(row, 5)?.unwrap_or_default()),
            run_id,
        },
        fence: u64::try_from(fence).unwrap_or_default(),
        begun: get(row, 7)?,
        cancel_requested: get(row, 8)?,
        unreadable,
    })
}

#[async_trait::async_trait]
impl RunQueue for PostgresStore {
    async fn enqueue(&self, run: &QueuedRun) -> Result<(), Error> {
        let request = json(&run.request)?;
        let at = millis(run.queued_at);
        with_conn!(self, |client| async {
            let n = client
                .execute(
                    "INSERT INTO loom_runs (run_id, session_id, user_id, state, started_at, agent, request, queued_at)
                     VALUES ($1, $2, $3, 'queued', $4, $5, $6, $4) ON CONFLICT (run_id) DO NOTHING",
                    &[&run.run_id, &run.session_id, &run.user_id, &at, &run.agent, &request],
                )
                .await
                .map_err(|e| pg("queueing the run", e))?;
            if n == 0 {
                return Err(Error::Store(format!("run {} exists already", run.run_id).into()));
            }
            Ok(())
        })
    }

    async fn claim(&self, agent: &str, lease: &Lease, max: usize) -> Result<Vec<ClaimedRun>, Error> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let owner: &str = &lease.owner;
        let now = now_ms();
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = with_conn!(self, |client| async {
            client
                .query(CLAIM, &[&owner, &lease.expiry_ms(now), &agent, &now, &max])
                .await
                .map_err(|e| pg("claiming queued runs", e))
        })?;
        let mut runs = rows.iter().map(claimed).collect::<Result<Vec<_>, _>>()?;
        runs.sort_by_key(|c| c.run.queued_at);
        Ok(runs)
    }

    async fn fail_claimed(&self, run_id: &str, lease: &Lease, error: &RunError) -> Result<bool, Error> {
        let (owner, fence): (&str, i64) = (&lease.owner, lease.fence_i64());
        let now = now_ms();
        with_conn!(self, |client| async {
            let tx = client.transaction().await.map_err(|e| pg("failing the claimed run", e))?;
            let row = tx
                .query_opt(
                    "UPDATE loom_runs SET state = 'failed', finished = TRUE, finished_at = $1, lease_owner = NULL,
                        lease_expires = NULL
                     WHERE run_id = $2 AND NOT finished AND fence >= $3
                       AND (lease_owner IS NULL OR lease_owner = $4 OR lease_expires < $1)
                     RETURNING session_id",
                    &[&now, &run_id, &fence, &owner],
                )
                .await
                .map_err(|e| pg("failing the claimed run", e))?;
            let Some(row) = row else { return Ok(false) };
            let session: String = get(&row, 0)?;
            let seq: i64 = tx
                .query_one("SELECT COALESCE(MAX(seq) + 1, 0) FROM loom_events WHERE run_id = $1", &[&run_id])
                .await
                .and_then(|r| r.try_get(0))
                .map_err(|e| pg("failing the claimed run", e))?;
            let event = sql::claim_failed_event(run_id, &session, seq, error)?;
            tx.execute("INSERT INTO loom_events (run_id, seq, event) VALUES ($1, $2, $3)", &[&run_id, &seq, &event])
                .await
                .map_err(|e| pg("failing the claimed run", e))?;
            tx.commit().await.map_err(|e| pg("failing the claimed run", e))?;
            Ok(true)
        })
    }

    async fn hold(&self, run: &QueuedRun, lease: &Lease) -> Result<bool, Error> {
        let request = json(&run.request)?;
        let at = millis(run.queued_at);
        let owner: &str = &lease.owner;
        let expires = lease.expiry_ms(now_ms());
        let fence = lease.fence_i64();
        with_conn!(self, |client| async {
            let n = client
                .execute(
                    "INSERT INTO loom_runs (run_id, session_id, user_id, state, started_at, agent, request, queued_at,
                        lease_owner, lease_expires, fence)
                     VALUES ($1, $2, $3, 'queued', $4, $5, $6, $4, $7, $8, $9) ON CONFLICT (run_id) DO NOTHING",
                    &[&run.run_id, &run.session_id, &run.user_id, &at, &run.agent, &request, &owner, &expires, &fence],
                )
                .await
                .map_err(|e| pg("recording the waiting run", e))?;
            Ok(n > 0)
        })
    }

    async fn claim_run(&self, run_id: &str, lease: &Lease) -> Result<Option<ClaimedRun>, Error> {
        let owner: &str = &lease.owner;
        let now = now_ms();
        let row = with_conn!(self, |client| async {
            client
                .query_opt(
                    "UPDATE loom_runs SET lease_owner = $1::TEXT, lease_expires = $2::BIGINT, fence = fence + 1
                     WHERE run_id = $3::TEXT AND agent IS NOT NULL AND record IS NULL AND NOT finished
                       AND state <> 'suspended' AND (lease_owner IS NULL OR lease_expires < $4::BIGINT)
                     RETURNING run_id, agent, session_id, user_id, request, queued_at, fence, record IS NOT NULL,
                        cancel_requested",
                    &[&owner, &lease.expiry_ms(now), &run_id, &now],
                )
                .await
                .map_err(|e| pg("claiming the run", e))
        })?;
        row.as_ref().map(claimed).transpose()
    }

    async fn renew_held(&self, run_ids: &[String], lease: &Lease) -> Result<(), Error> {
        if run_ids.is_empty() {
            return Ok(());
        }
        let owner: &str = &lease.owner;
        let expires = lease.expiry_ms(now_ms());
        with_conn!(self, |client| async {
            client
                .execute(
                    "UPDATE loom_runs SET lease_expires = $1 WHERE run_id = ANY($2) AND lease_owner = $3
                        AND record IS NULL AND NOT finished",
                    &[&expires, &run_ids, &owner],
                )
                .await
                .map_err(|e| pg("renewing the waiting runs' leases", e))?;
            Ok(())
        })
    }

    async fn request_cancel(&self, run_id: &str) -> Result<bool, Error> {
        with_conn!(self, |client| async {
            let n = client
                .execute("UPDATE loom_runs SET cancel_requested = TRUE WHERE run_id = $1 AND NOT finished", &[&run_id])
                .await
                .map_err(|e| pg("recording the cancel", e))?;
            Ok(n > 0)
        })
    }

    async fn request_resume(&self, run_id: &str, agent: &str) -> Result<bool, Error> {
        let now = now_ms();
        with_conn!(self, |client| async {
            let n = client
                .execute(
                    "UPDATE loom_runs SET agent = COALESCE(agent, $2), queued_at = COALESCE(queued_at, $3),
                        state = CASE WHEN state = 'suspended' THEN 'queued' ELSE state END
                     WHERE run_id = $1 AND NOT finished AND record IS NOT NULL
                       AND (lease_owner IS NULL OR lease_expires < $3)",
                    &[&run_id, &agent, &now],
                )
                .await
                .map_err(|e| pg("queueing the resume", e))?;
            Ok(n > 0)
        })
    }

    async fn cancels_requested(&self, run_ids: &[String]) -> Result<Vec<String>, Error> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = with_conn!(self, |client| async {
            client
                .query("SELECT run_id FROM loom_runs WHERE run_id = ANY($1) AND cancel_requested", &[&run_ids])
                .await
                .map_err(|e| pg("reading cancels", e))
        })?;
        rows.iter().map(|r| get(r, 0)).collect()
    }

    async fn status(&self, run_id: &str) -> Result<Option<RunStatus>, Error> {
        let query = format!("SELECT {STATUS_COLUMNS} FROM loom_runs WHERE run_id = $1");
        let row = with_conn!(self, |client| async {
            client.query_opt(&query, &[&run_id]).await.map_err(|e| pg("reading the run", e))
        })?;
        row.as_ref().map(status).transpose()
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
        let query = format!(
            "SELECT {STATUS_COLUMNS} FROM loom_runs
             WHERE (record IS NOT NULL OR agent IS NOT NULL) AND left(user_id, length($1::TEXT)) = $1::TEXT
               AND ($2::TEXT IS NULL OR session_id = $2::TEXT) AND ($3::TEXT IS NULL OR user_id = $3::TEXT)
               AND ($4::TEXT IS NULL OR state = $4::TEXT)
               AND ($6::TEXT IS NULL OR run_id COLLATE \"C\" < $6::TEXT COLLATE \"C\")
             ORDER BY run_id COLLATE \"C\" DESC LIMIT $5::BIGINT"
        );
        let state = state.map(|s| s.as_str());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = with_conn!(self, |client| async {
            client
                .query(&query, &[&user_prefix, &session_id, &user_id, &state, &limit, &before])
                .await
                .map_err(|e| pg("listing runs", e))
        })?;
        rows.iter().map(status).collect()
    }

    async fn events_after(&self, run_id: &str, after: Option<u64>, limit: usize) -> Result<Vec<Event>, Error> {
        let after = after.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        with_conn!(self, |client| async {
            let rows = client
                .query(
                    "SELECT seq, event FROM loom_events WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    &[&run_id, &after, &limit],
                )
                .await
                .map_err(|e| pg("reading events", e))?;
            let mut input: Option<Option<String>> = None;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let seq: i64 = get(row, 0)?;
                let text: &str = get(row, 1)?;
                if text.starts_with('@') && input.is_none() {
                    let row = client
                        .query_opt("SELECT input FROM loom_runs WHERE run_id = $1", &[&run_id])
                        .await
                        .map_err(|e| pg("reading the run's input", e))?;
                    input = Some(row.map(|r| get::<Option<String>>(&r, 0)).transpose()?.flatten());
                }
                let text = expand(text, || Ok(input.clone().flatten()), || format!("run {run_id}: event {seq}"))?;
                out.push(decode_event(run_id, seq, &text)?);
            }
            Ok(out)
        })
    }

    async fn depth(&self) -> Result<u64, Error> {
        let row = with_conn!(self, |client| async {
            client
                .query_one(
                    "SELECT COUNT(*) FROM loom_runs WHERE agent IS NOT NULL AND NOT finished AND record IS NULL
                        AND lease_owner IS NULL",
                    &[],
                )
                .await
                .map_err(|e| pg("counting queued runs", e))
        })?;
        Ok(u64::try_from(get::<i64>(&row, 0)?).unwrap_or_default())
    }
}

/// Deletes the runs that finished before `before`, with their events and journal entries.
pub(super) async fn prune(store: &PostgresStore, before: DateTime<Utc>) -> Result<PruneReport, Error> {
    let before = millis(before);
    let row = with_conn!(store, |client| async {
        client
            .query_one(
                "WITH gone AS (
                    DELETE FROM loom_runs WHERE finished AND COALESCE(finished_at, started_at) < $1 RETURNING run_id),
                 ev AS (DELETE FROM loom_events WHERE run_id IN (SELECT run_id FROM gone) RETURNING 1),
                 j AS (DELETE FROM loom_journal WHERE run_id IN (SELECT run_id FROM gone) RETURNING 1)
                 SELECT (SELECT COUNT(*) FROM gone), (SELECT COUNT(*) FROM ev), (SELECT COUNT(*) FROM j)",
                &[&before],
            )
            .await
            .map_err(|e| pg("pruning runs", e))
    })?;
    let n = |i: usize| get::<i64>(&row, i).map(|v| u64::try_from(v).unwrap_or_default());
    Ok(PruneReport { runs: n(0)?, events: n(1)?, entries: n(2)? })
}
