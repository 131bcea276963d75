//! A run's final commit in one statement: the held-back journal entries, the last events, the
//! transcript, the history extension, the run's state and the release of the session's run lock
//! (see [`loom_core::journal::FinalCommit`]).

use tokio_postgres::Client;

use super::{PooledConn, get, insert_entry, insert_events, is_unique_violation, pg, renew_lease};
use crate::error::Error;
use crate::store::sql::{self, RunRow, encode_events, encode_history, json, now_ms};
use loom_core::journal::{FinalCommit, Lease, LeaseView, may_write};

/// Everything in one statement (one round trip, one commit), where the owner holds the lease: the
/// run's row takes the transcript and the state (releasing the lease), and only then the entries
/// (at the next seqs, in order), the events, the history rows and the lock's release are written.
/// Returns how many runs it matched (0: [`end_with_tx`] applies the lease rule).
const END_WITH: &str = "
    WITH lease AS (
        UPDATE loom_runs SET state = $3::TEXT, finished = $4::BOOLEAN, lease_owner = NULL, lease_expires = NULL,
            finished_at = CASE WHEN $4::BOOLEAN THEN $5::BIGINT ELSE $19::BIGINT END,
            input = $9::TEXT, transcript = $10::TEXT
        WHERE run_id = $1::TEXT AND lease_owner = $2::TEXT AND fence = $8::BIGINT AND NOT finished
        RETURNING run_id),
    j AS (
        INSERT INTO loom_journal (run_id, seq, kind, entry)
        SELECT l.run_id, (SELECT COALESCE(MAX(seq) + 1, 0) FROM loom_journal WHERE run_id = $1::TEXT) + e.n - 1,
            e.kind, e.entry
        FROM lease l, UNNEST($11::TEXT[], $12::TEXT[]) WITH ORDINALITY AS e(kind, entry, n)),
    ev AS (
        INSERT INTO loom_events (run_id, seq, event)
        SELECT l.run_id, e.seq, e.event FROM lease l, UNNEST($6::BIGINT[], $7::TEXT[]) AS e(seq, event)
        ON CONFLICT (run_id, seq) DO NOTHING),
    h AS (
        INSERT INTO loom_history (owner, session_id, run_id, idx, message)
        SELECT $13::TEXT, $14::TEXT, l.run_id, m.n - 1, m.message
        FROM lease l, UNNEST($15::TEXT[]) WITH ORDINALITY AS m(message, n) ORDER BY m.n
        ON CONFLICT (session_id, run_id, idx) DO NOTHING),
    u AS (
        UPDATE loom_sessions SET lock_holder = NULL, lock_expires = NULL
        WHERE owner = $16::TEXT AND id = $17::TEXT AND lock_holder = $18::TEXT AND EXISTS (SELECT 1 FROM lease))
    SELECT COUNT(*) FROM lease";

/// The lease columns, read without a lock (see `Journal::check_lease`).
const CHECK_LEASE: &str =
    "SELECT state, finished, record IS NOT NULL, lease_owner, lease_expires, fence FROM loom_runs WHERE run_id = $1";

/// A final commit, encoded.
pub(super) struct Final {
    state: loom_core::run::RunState,
    kinds: Vec<&'static str>,
    entries: Vec<String>,
    events: (Vec<i64>, Vec<String>),
    row: RunRow,
    history: Vec<String>,
    unlock: Option<(String, String, String)>,
}

impl Final {
    pub(super) fn new(commit: &FinalCommit<'_>) -> Result<Final, Error> {
        let row = RunRow::journaled(commit.transcript)?;
        let history = match commit.history {
            Some(h) => encode_history(h, row.literal())?,
            None => Vec::new(),
        };
        Ok(Final {
            state: commit.state,
            kinds: commit.entries.iter().map(|e| e.type_name()).collect(),
            entries: commit.entries.iter().map(json).collect::<Result<_, _>>()?,
            events: encode_events(commit.events)?.into_iter().unzip(),
            history,
            unlock: commit
                .unlock
                .map(|(key, holder)| (key.owner().to_string(), key.session_id.to_string(), holder.to_string())),
            row,
        })
    }
}

/// One statement where the lease holds; otherwise (or after a lost seq race) [`end_with_tx`].
pub(super) async fn end_with_one(conn: &mut PooledConn, run_id: &str, lease: &Lease, f: &Final) -> Result<(), Error> {
    let owner: &str = &lease.owner;
    let finished = sql::is_finished(f.state);
    let history_owner = f.row.user_id.as_deref().unwrap_or("");
    let (unlock_owner, unlock_id, holder) = match &f.unlock {
        Some((o, i, h)) => (Some(o.as_str()), Some(i.as_str()), Some(h.as_str())),
        None => (None, None, None),
    };
    let statement = conn.prepared(END_WITH).await?;
    let result = conn
        .client
        .query_one(
            &statement,
            &[
                &run_id,
                &owner,
                &f.state.as_str(),
                &finished,
                &now_ms(),
                &f.events.0,
                &f.events.1,
                &lease.fence_i64(),
                &f.row.input,
                &f.row.transcript,
                &f.kinds,
                &f.entries,
                &history_owner,
                &f.row.session_id,
                &f.history,
                &unlock_owner,
                &unlock_id,
                &holder,
                &f.row.finished_at,
            ],
        )
        .await;
    match result {
        Ok(row) if get::<i64>(&row, 0)? > 0 => Ok(()),
        Ok(_) => end_with_tx(&mut conn.client, run_id, lease, f).await,
        Err(e) if is_unique_violation(&e) => end_with_tx(&mut conn.client, run_id, lease, f).await,
        Err(e) => Err(pg("the final commit", e)),
    }
}

/// The slow path of [`end_with_one`]: a transaction that applies the lease rule first (and locks
/// the run's row, so the entries' seqs cannot race).
async fn end_with_tx(client: &mut Client, run_id: &str, lease: &Lease, f: &Final) -> Result<(), Error> {
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    renew_lease(&tx, run_id, lease, lease.expiry_ms(now_ms())).await?;
    for (kind, text) in f.kinds.iter().zip(&f.entries) {
        insert_entry(&tx, run_id, kind, text).await?;
    }
    insert_events(&tx, run_id, &f.events).await?;
    let finished = sql::is_finished(f.state);
    tx.execute(
        "UPDATE loom_runs SET state = $2, finished = $3, lease_owner = NULL, lease_expires = NULL,
            finished_at = CASE WHEN $3 THEN $4 ELSE $5 END, input = $6, transcript = $7 WHERE run_id = $1",
        &[&run_id, &f.state.as_str(), &finished, &now_ms(), &f.row.finished_at, &f.row.input, &f.row.transcript],
    )
    .await
    .map_err(|e| pg("ending the run", e))?;
    if !f.history.is_empty() {
        tx.execute(
            "INSERT INTO loom_history (owner, session_id, run_id, idx, message)
             SELECT $1::TEXT, $2::TEXT, $3::TEXT, m.n - 1, m.message
             FROM UNNEST($4::TEXT[]) WITH ORDINALITY AS m(message, n) ORDER BY m.n
             ON CONFLICT (session_id, run_id, idx) DO NOTHING",
            &[&f.row.user_id.as_deref().unwrap_or(""), &f.row.session_id, &run_id, &f.history],
        )
        .await
        .map_err(|e| pg("appending to the history", e))?;
    }
    if let Some((owner, id, holder)) = &f.unlock {
        tx.execute(
            "UPDATE loom_sessions SET lock_holder = NULL, lock_expires = NULL
             WHERE owner = $1 AND id = $2 AND lock_holder = $3",
            &[owner, id, holder],
        )
        .await
        .map_err(|e| pg("releasing the session lock", e))?;
    }
    tx.commit().await.map_err(|e| pg("committing", e))
}

/// The lease rule on the run's row as it is, without a write or a lock.
pub(super) async fn check_lease_one(conn: &mut PooledConn, run_id: &str, lease: &Lease) -> Result<(), Error> {
    let statement = conn.prepared(CHECK_LEASE).await?;
    let row = conn.client.query_opt(&statement, &[&run_id]).await.map_err(|e| pg("reading the run", e))?;
    let Some(row) = row else { return may_write(run_id, None, lease) };
    let owner: Option<String> = get(&row, 3)?;
    let fence: i64 = get(&row, 5)?;
    let view = LeaseView {
        state: sql::parse_state(get(&row, 0)?, run_id)?,
        finished: get(&row, 1)?,
        journaled: get(&row, 2)?,
        owner: owner.as_deref(),
        expires_ms: get(&row, 4)?,
        fence: u64::try_from(fence).unwrap_or_default(),
    };
    may_write(run_id, Some(view), lease)
}
