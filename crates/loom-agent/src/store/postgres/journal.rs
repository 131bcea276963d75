//! The PostgreSQL store as a [`Journal`].

use tokio_postgres::Client;

use super::{
    LeaseRow, PostgresStore, event_columns, get, insert_entry, insert_events, lease_row, load_events, pg, renew_lease,
    snapshot,
};
use crate::error::Error;
use crate::event::Event;
use crate::run::RunState;
use crate::store::sql::{self, RecordRow, decode_entry, decode_record, from_millis, json, now_ms, parse_state};
use loom_core::journal::{
    Journal, JournalEntry, JournalRunSummary, JournaledRun, Lease, RunFilter, RunRecord, may_decide, may_take_over,
};

async fn begin_tx(
    client: &mut Client,
    record: &RunRecord,
    lease: &Lease,
    events: &(Vec<i64>, Vec<String>),
) -> Result<(), Error> {
    let row = RecordRow::new(record)?;
    let owner: &str = &lease.owner;
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    let n = tx
        .execute(
            "INSERT INTO loom_runs (run_id, session_id, user_id, state, input, record, started_at,
                lease_owner, lease_expires) VALUES ($1, $2, $3, 'running', $4, $5, $6, $7, $8)
             ON CONFLICT (run_id) DO NOTHING",
            &[
                &record.run_id,
                &record.session_id,
                &record.user_id,
                &row.input,
                &row.record,
                &row.started,
                &owner,
                &lease.expiry_ms(now_ms()),
            ],
        )
        .await
        .map_err(|e| pg("registering the run", e))?;
    if n == 0 {
        return Err(Error::Store(format!("run {} is already journaled", record.run_id).into()));
    }
    insert_events(&tx, &record.run_id, events).await?;
    tx.commit().await.map_err(|e| pg("committing", e))
}

async fn append_tx(
    client: &mut Client,
    run_id: &str,
    lease: &Lease,
    entry: &JournalEntry,
    events: &(Vec<i64>, Vec<String>),
) -> Result<(), Error> {
    let text = json(entry)?;
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    renew_lease(&tx, run_id, lease, lease.expiry_ms(now_ms())).await?;
    insert_entry(&tx, run_id, entry.type_name(), &text).await?;
    insert_events(&tx, run_id, events).await?;
    tx.commit().await.map_err(|e| pg("committing", e))
}

async fn end_tx(
    client: &mut Client,
    run_id: &str,
    lease: &Lease,
    state: RunState,
    events: &(Vec<i64>, Vec<String>),
) -> Result<(), Error> {
    let finished = sql::is_finished(state);
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    renew_lease(&tx, run_id, lease, lease.expiry_ms(now_ms())).await?;
    insert_events(&tx, run_id, events).await?;
    tx.execute(
        "UPDATE loom_runs SET state = $2, finished = $3, lease_owner = NULL, lease_expires = NULL,
            finished_at = CASE WHEN $3 THEN $4 ELSE finished_at END WHERE run_id = $1",
        &[&run_id, &state.as_str(), &finished, &now_ms()],
    )
    .await
    .map_err(|e| pg("ending the run", e))?;
    tx.commit().await.map_err(|e| pg("committing", e))
}

async fn acquire_tx(client: &mut Client, run_id: &str, lease: &Lease) -> Result<(), Error> {
    let owner: &str = &lease.owner;
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    // FOR UPDATE: concurrent acquirers wait here and then see the winner's lease.
    let row = lease_row(&tx, run_id, true).await?;
    let now = now_ms();
    may_take_over(run_id, row.as_ref().map(LeaseRow::view), lease, now)?;
    tx.execute(
        "UPDATE loom_runs SET lease_owner = $2, lease_expires = $3, state = 'running' WHERE run_id = $1",
        &[&run_id, &owner, &lease.expiry_ms(now)],
    )
    .await
    .map_err(|e| pg("taking the lease", e))?;
    tx.commit().await.map_err(|e| pg("committing", e))
}

async fn renew_tx(client: &mut Client, run_id: &str, lease: &Lease) -> Result<(), Error> {
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    renew_lease(&tx, run_id, lease, lease.expiry_ms(now_ms())).await?;
    tx.commit().await.map_err(|e| pg("committing", e))
}

async fn decide_tx(client: &mut Client, run_id: &str, entry: &JournalEntry) -> Result<(), Error> {
    let text = json(entry)?;
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    let row = lease_row(&tx, run_id, true).await?;
    may_decide(run_id, row.as_ref().map(LeaseRow::view))?;
    insert_entry(&tx, run_id, entry.type_name(), &text).await?;
    tx.commit().await.map_err(|e| pg("committing", e))
}

async fn load_tx(client: &mut Client, run_id: &str) -> Result<Option<JournaledRun>, Error> {
    let tx = snapshot(client).await?;
    let row = tx
        .query_opt(
            "SELECT record, state, finished, lease_owner, lease_expires FROM loom_runs WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .map_err(|e| pg("reading the run", e))?;
    let Some(row) = row else { return Ok(None) };
    let Some(record) = get::<Option<&str>>(&row, 0)? else { return Ok(None) };
    let record: RunRecord = decode_record(run_id, record)?;
    let state = parse_state(get(&row, 1)?, run_id)?;
    let finished: bool = get(&row, 2)?;
    let lease_owner: Option<String> = get(&row, 3)?;
    let expires: Option<i64> = get(&row, 4)?;
    let rows = tx
        .query("SELECT seq, entry FROM loom_journal WHERE run_id = $1 ORDER BY seq", &[&run_id])
        .await
        .map_err(|e| pg("reading the journal", e))?;
    let entries = rows
        .iter()
        .map(|row| decode_entry(run_id, get(row, 0)?, get(row, 1)?))
        .collect::<Result<Vec<JournalEntry>, Error>>()?;
    let events = load_events(&tx, run_id).await?;
    tx.commit().await.map_err(|e| pg("ending the read", e))?;
    Ok(Some(JournaledRun {
        record,
        entries,
        events,
        state,
        finished,
        lease_owner,
        lease_expires_at: expires.map(from_millis),
    }))
}

async fn list_tx(client: &mut Client, filter: &RunFilter) -> Result<Vec<JournalRunSummary>, Error> {
    let limit = if filter.limit == 0 { None } else { Some(i64::try_from(filter.limit).unwrap_or(i64::MAX)) };
    let rows = client
        .query(
            "SELECT run_id, session_id, user_id, state, finished, started_at,
                (SELECT COUNT(*) FROM loom_journal j WHERE j.run_id = r.run_id)
             FROM loom_runs r
             WHERE record IS NOT NULL AND ($1::TEXT IS NULL OR session_id = $1::TEXT)
                AND ($2::TEXT IS NULL OR user_id = $2::TEXT) AND (NOT $3::BOOLEAN OR NOT finished)
             ORDER BY run_id COLLATE \"C\" DESC LIMIT $4::BIGINT",
            &[&filter.session_id, &filter.user_id, &filter.unfinished, &limit],
        )
        .await
        .map_err(|e| pg("listing runs", e))?;
    rows.iter()
        .map(|row| {
            let run_id: String = get(row, 0)?;
            let entries: i64 = get(row, 6)?;
            Ok(JournalRunSummary {
                state: parse_state(get(row, 3)?, &run_id)?,
                session_id: get(row, 1)?,
                user_id: get(row, 2)?,
                finished: get(row, 4)?,
                started_at: from_millis(get(row, 5)?),
                entries: u64::try_from(entries).unwrap_or_default(),
                run_id,
            })
        })
        .collect()
}

#[async_trait::async_trait]
impl Journal for PostgresStore {
    async fn begin(&self, record: &RunRecord, lease: &Lease, events: &[Event]) -> Result<(), Error> {
        let events = event_columns(events)?;
        with_conn!(self, |client| begin_tx(client, record, lease, &events))
    }

    async fn append(&self, run_id: &str, lease: &Lease, entry: &JournalEntry, events: &[Event]) -> Result<(), Error> {
        let events = event_columns(events)?;
        with_conn!(self, |client| append_tx(client, run_id, lease, entry, &events))
    }

    async fn end(&self, run_id: &str, lease: &Lease, state: RunState, events: &[Event]) -> Result<(), Error> {
        let events = event_columns(events)?;
        with_conn!(self, |client| end_tx(client, run_id, lease, state, &events))
    }

    async fn acquire(&self, run_id: &str, lease: &Lease) -> Result<(), Error> {
        with_conn!(self, |client| acquire_tx(client, run_id, lease))
    }

    async fn renew(&self, run_id: &str, lease: &Lease) -> Result<(), Error> {
        with_conn!(self, |client| renew_tx(client, run_id, lease))
    }

    async fn decide(&self, run_id: &str, entry: &JournalEntry) -> Result<(), Error> {
        with_conn!(self, |client| decide_tx(client, run_id, entry))
    }

    async fn load(&self, run_id: &str) -> Result<Option<JournaledRun>, Error> {
        with_conn!(self, |client| load_tx(client, run_id))
    }

    async fn list(&self, filter: &RunFilter) -> Result<Vec<JournalRunSummary>, Error> {
        with_conn!(self, |client| list_tx(client, filter))
    }
}
