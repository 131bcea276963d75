//! The PostgreSQL store as a [`Journal`].

use tokio_postgres::Client;

use super::{
    LeaseRow, PooledConn, PostgresStore, event_columns, get, insert_entry, insert_events, is_unique_violation,
    lease_row, load_events, pg, renew_lease, snapshot,
};
use crate::error::Error;
use crate::event::Event;
use crate::run::RunState;
use crate::store::SessionRecord;
use crate::store::sql::{self, RecordRow, decode_entry, decode_record, from_millis, json, now_ms, parse_state};
use loom_core::journal::{
    FinalCommit, Journal, JournalEntry, JournalRunSummary, JournalWrite, JournaledRun, Lease, RunFilter, RunRecord,
    may_decide, may_take_over,
};

/// The run's row (created, or a queued run's row claimed by its holder) and, if that happened, its
/// events: the common CTEs of [`BEGIN`] and [`BEGIN_WITH`].
macro_rules! begin_ctes {
    () => {
        "
    WITH r AS (
        INSERT INTO loom_runs (run_id, session_id, user_id, state, input, record, started_at, lease_owner,
            lease_expires, parent_run_id, fence)
        VALUES ($1::TEXT, $2::TEXT, $3::TEXT, 'running', $4::TEXT, $5::TEXT, $6::BIGINT, $7::TEXT, $8::BIGINT,
            $11::TEXT, $12::BIGINT)
        ON CONFLICT (run_id) DO UPDATE SET session_id = EXCLUDED.session_id, user_id = EXCLUDED.user_id,
            state = 'running', input = EXCLUDED.input, record = EXCLUDED.record, started_at = EXCLUDED.started_at,
            lease_expires = EXCLUDED.lease_expires, parent_run_id = EXCLUDED.parent_run_id
        WHERE loom_runs.record IS NULL AND loom_runs.agent IS NOT NULL AND NOT loom_runs.finished
            AND loom_runs.lease_owner = EXCLUDED.lease_owner AND loom_runs.fence = EXCLUDED.fence
        RETURNING run_id),
    ev AS (
        INSERT INTO loom_events (run_id, seq, event)
        SELECT r.run_id, e.seq, e.event FROM r, UNNEST($9::BIGINT[], $10::TEXT[]) AS e(seq, event)
        ON CONFLICT (run_id, seq) DO NOTHING)"
    };
}

/// The statement's last line for writes that do not wait for the disk: `synchronous_commit` off
/// for this transaction only (`set_config(…, true)`; the setting is read when the transaction
/// commits, after the statement). Used for `begin` and for entries that
/// [`JournalEntry::may_commit_lazily`]: the next durable commit (a tool's intent, the final commit)
/// flushes the log up to itself, so these become durable with it, in order. A crash of the database
/// server before then loses only steps a resumed run makes again; the run's own process sees its
/// next write fail.
macro_rules! lazy_commit {
    () => {
        ", set_config('synchronous_commit', 'off', true)"
    };
}

/// `begin` in one statement (one round trip, committed on its own, without waiting for the disk:
/// see [`lazy_commit`]): the run's row (or, for a queued run, its queue row, where the caller holds
/// its claim), then its events if the row was new. Returns how many rows it created or claimed (0:
/// the run was already there).
const BEGIN: &str = concat!(
    begin_ctes!(),
    "
    SELECT COUNT(*)",
    lazy_commit!(),
    " FROM r"
);

/// [`BEGIN`] and the opening of the run's session in one statement: the session is created, or its
/// metadata and extensions merged as `open_session` merges them (the record's top-level keys
/// replace the stored ones), only if the run's row was created.
const BEGIN_WITH: &str = concat!(
    begin_ctes!(),
    ",
    s AS (
        INSERT INTO loom_sessions AS s (owner, id, metadata, extensions, closed, updated_at)
        SELECT $13::TEXT, $14::TEXT, $15::TEXT, $16::TEXT, FALSE, $17::BIGINT FROM r
        ON CONFLICT (owner, id) DO UPDATE SET metadata = (s.metadata::JSONB || EXCLUDED.metadata::JSONB)::TEXT,
            extensions = (s.extensions::JSONB || EXCLUDED.extensions::JSONB)::TEXT, closed = FALSE,
            updated_at = EXCLUDED.updated_at)
    SELECT COUNT(*)",
    lazy_commit!(),
    " FROM r"
);

/// [`APPEND`] up to its last `FROM`.
macro_rules! append_body {
    () => {
        "
    WITH lease AS (
        UPDATE loom_runs SET lease_expires = $3::BIGINT
        WHERE run_id = $1::TEXT AND lease_owner = $2::TEXT AND fence = $8::BIGINT AND NOT finished RETURNING run_id),
    j AS (
        INSERT INTO loom_journal (run_id, seq, kind, entry)
        SELECT l.run_id, (SELECT COALESCE(MAX(seq) + 1, 0) FROM loom_journal WHERE run_id = $1::TEXT) + e.n - 1,
            e.kind, e.entry
        FROM lease l, UNNEST($4::TEXT[], $5::TEXT[]) WITH ORDINALITY AS e(kind, entry, n)),
    ev AS (
        INSERT INTO loom_events (run_id, seq, event)
        SELECT l.run_id, e.seq, e.event FROM lease l, UNNEST($6::BIGINT[], $7::TEXT[]) AS e(seq, event)
        ON CONFLICT (run_id, seq) DO NOTHING)
    SELECT COUNT(*)"
    };
}

/// `append` and `append_all` in one statement: renews the lease (locking the run's row) where the
/// owner holds it, and only then adds the entries at the next seqs, in order, and the events. Returns how many runs it matched
/// (0: the lease rule fails, [`append_tx`] says why). The seq comes from the statement's snapshot:
/// a concurrent writer that committed after it was taken makes the insert a unique violation, and
/// [`append_tx`] (which reads the seq after taking the row lock) writes the entry instead.
const APPEND: &str = concat!(append_body!(), " FROM lease");

/// [`APPEND`] for entries that all [`JournalEntry::may_commit_lazily`]: committed without waiting
/// for the disk (see [`lazy_commit`]).
const APPEND_LAZY: &str = concat!(append_body!(), lazy_commit!(), " FROM lease");

/// `end` in one statement: the final state and the events where the owner holds the lease. Returns
/// how many runs it matched (0: [`end_tx`] applies the lease rule).
const END: &str = "
    WITH lease AS (
        UPDATE loom_runs SET state = $3::TEXT, finished = $4::BOOLEAN, lease_owner = NULL, lease_expires = NULL,
            finished_at = CASE WHEN $4::BOOLEAN THEN $5::BIGINT ELSE finished_at END
        WHERE run_id = $1::TEXT AND lease_owner = $2::TEXT AND fence = $8::BIGINT AND NOT finished RETURNING run_id),
    ev AS (
        INSERT INTO loom_events (run_id, seq, event)
        SELECT l.run_id, e.seq, e.event FROM lease l, UNNEST($6::BIGINT[], $7::TEXT[]) AS e(seq, event)
        ON CONFLICT (run_id, seq) DO NOTHING)
    SELECT COUNT(*) FROM lease";

/// `renew` in one statement; 0 rows: [`renew_tx`] applies the lease rule.
const RENEW: &str = "UPDATE loom_runs SET lease_expires = $1::BIGINT WHERE run_id = $2::TEXT AND lease_owner = $3::TEXT
    AND fence = $4::BIGINT AND NOT finished";

async fn begin_one(
    conn: &mut PooledConn,
    record: &RunRecord,
    lease: &Lease,
    events: &(Vec<i64>, Vec<String>),
    session: Option<&SessionRecord>,
) -> Result<(), Error> {
    let row = RecordRow::new(record)?;
    let owner: &str = &lease.owner;
    let (run_id, expires, fence) = (&record.run_id, lease.expiry_ms(now_ms()), lease.fence_i64());
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        run_id,
        &record.session_id,
        &record.user_id,
        &row.input,
        &row.record,
        &row.started,
        &owner,
        &expires,
        &events.0,
        &events.1,
        &record.parent_run_id,
        &fence,
    ];
    let opened = match session {
        Some(s) => Some((s.key().owner(), json(&s.metadata)?, json(&s.extensions)?, now_ms())),
        None => None,
    };
    if let (Some(s), Some((session_owner, metadata, extensions, now))) = (session, &opened) {
        params.extend_from_slice(&[session_owner, &s.id, metadata, extensions, now]);
    }
    let statement = conn.prepared(if session.is_some() { BEGIN_WITH } else { BEGIN }).await?;
    let created = conn.client.query_one(&statement, &params).await.map_err(|e| pg("registering the run", e))?;
    if get::<i64>(&created, 0)? == 0 {
        return Err(Error::Store(format!("run {} is already journaled", record.run_id).into()));
    }
    Ok(())
}

/// Entries to append, encoded: their kinds, their JSON, all their events, and whether the commit
/// may skip waiting for the disk.
struct Appends {
    kinds: Vec<&'static str>,
    entries: Vec<String>,
    events: (Vec<i64>, Vec<String>),
    lazy: bool,
}

impl Appends {
    fn new(writes: &[JournalWrite<'_>]) -> Result<Appends, Error> {
        let mut events = (Vec::new(), Vec::new());
        for w in writes {
            let (seqs, texts) = event_columns(w.events)?;
            events.0.extend(seqs);
            events.1.extend(texts);
        }
        Ok(Appends {
            kinds: writes.iter().map(|w| w.entry.type_name()).collect(),
            entries: writes.iter().map(|w| json(w.entry)).collect::<Result<_, _>>()?,
            events,
            lazy: JournalWrite::all_lazy(writes),
        })
    }
}

/// One statement where the lease holds; otherwise (or after a lost seq race) [`append_tx`].
async fn append_one(conn: &mut PooledConn, run_id: &str, lease: &Lease, a: &Appends) -> Result<(), Error> {
    let owner: &str = &lease.owner;
    let statement = conn.prepared(if a.lazy { APPEND_LAZY } else { APPEND }).await?;
    let result = conn
        .client
        .query_one(
            &statement,
            &[
                &run_id,
                &owner,
                &lease.expiry_ms(now_ms()),
                &a.kinds,
                &a.entries,
                &a.events.0,
                &a.events.1,
                &lease.fence_i64(),
            ],
        )
        .await;
    match result {
        Ok(row) if get::<i64>(&row, 0)? > 0 => Ok(()),
        Ok(_) => append_tx(&mut conn.client, run_id, lease, a).await,
        Err(e) if is_unique_violation(&e) => append_tx(&mut conn.client, run_id, lease, a).await,
        Err(e) => Err(pg("appending to the journal", e)),
    }
}

/// One statement where the lease holds; otherwise [`end_tx`].
async fn end_one(
    conn: &mut PooledConn,
    run_id: &str,
    lease: &Lease,
    state: RunState,
    events: &(Vec<i64>, Vec<String>),
) -> Result<(), Error> {
    let finished = sql::is_finished(state);
    let owner: &str = &lease.owner;
    let statement = conn.prepared(END).await?;
    let row = conn
        .client
        .query_one(
            &statement,
            &[&run_id, &owner, &state.as_str(), &finished, &now_ms(), &events.0, &events.1, &lease.fence_i64()],
        )
        .await
        .map_err(|e| pg("ending the run", e))?;
    if get::<i64>(&row, 0)? > 0 {
        return Ok(());
    }
    end_tx(&mut conn.client, run_id, lease, state, events).await
}

/// One statement where the lease holds; otherwise [`renew_tx`].
async fn renew_one(conn: &mut PooledConn, run_id: &str, lease: &Lease) -> Result<(), Error> {
    let owner: &str = &lease.owner;
    let statement = conn.prepared(RENEW).await?;
    let n = conn
        .client
        .execute(&statement, &[&lease.expiry_ms(now_ms()), &run_id, &owner, &lease.fence_i64()])
        .await
        .map_err(|e| pg("renewing the lease", e))?;
    if n > 0 {
        return Ok(());
    }
    renew_tx(&mut conn.client, run_id, lease).await
}

/// The slow path of [`append_one`]: a transaction that locks the run's row first.
async fn append_tx(client: &mut Client, run_id: &str, lease: &Lease, a: &Appends) -> Result<(), Error> {
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    renew_lease(&tx, run_id, lease, lease.expiry_ms(now_ms())).await?;
    for (kind, text) in a.kinds.iter().zip(&a.entries) {
        insert_entry(&tx, run_id, kind, text).await?;
    }
    insert_events(&tx, run_id, &a.events).await?;
    tx.commit().await.map_err(|e| pg("committing", e))
}

/// The slow path of [`end_one`]: a transaction that applies the lease rule.
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

async fn acquire_tx(client: &mut Client, run_id: &str, lease: &Lease) -> Result<u64, Error> {
    let owner: &str = &lease.owner;
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    // FOR UPDATE: concurrent acquirers wait here and then see the winner's lease.
    let row = lease_row(&tx, run_id, true).await?;
    let now = now_ms();
    may_take_over(run_id, row.as_ref().map(LeaseRow::view), lease, now)?;
    let row = tx
        .query_one(
            "UPDATE loom_runs SET lease_owner = $2, lease_expires = $3, state = 'running', fence = fence + 1
             WHERE run_id = $1 RETURNING fence",
            &[&run_id, &owner, &lease.expiry_ms(now)],
        )
        .await
        .map_err(|e| pg("taking the lease", e))?;
    let fence: i64 = get(&row, 0)?;
    tx.commit().await.map_err(|e| pg("committing", e))?;
    Ok(u64::try_from(fence).unwrap_or_default())
}

/// The slow path of [`renew_one`].
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
            "SELECT record, state, finished, lease_owner, lease_expires, input FROM loom_runs WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .map_err(|e| pg("reading the run", e))?;
    let Some(row) = row else { return Ok(None) };
    let Some(record) = get::<Option<&str>>(&row, 0)? else { return Ok(None) };
    let record = sql::expand(record, || get::<Option<String>>(&row, 5), || format!("run {run_id}: record"))?;
    let record: RunRecord = decode_record(run_id, &record)?;
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
                (SELECT COUNT(*) FROM loom_journal j WHERE j.run_id = r.run_id), parent_run_id
             FROM loom_runs r
             WHERE record IS NOT NULL AND ($1::TEXT IS NULL OR session_id = $1::TEXT)
                AND ($2::TEXT IS NULL OR user_id = $2::TEXT) AND (NOT $3::BOOLEAN OR NOT finished)
                AND ($5::TEXT IS NULL OR parent_run_id = $5::TEXT)
             ORDER BY run_id COLLATE \"C\" DESC LIMIT $4::BIGINT",
            &[&filter.session_id, &filter.user_id, &filter.unfinished, &limit, &filter.parent_run_id],
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
                parent_run_id: get(row, 7)?,
                run_id,
            })
        })
        .collect()
}

#[async_trait::async_trait]
impl Journal for PostgresStore {
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
        let literal_input = crate::store::sql::json(&record.input)?;
        let literal = crate::store::sql::prompt_literal(&literal_input);
        let events: (Vec<i64>, Vec<String>) =
            crate::store::sql::events_once(crate::store::sql::encode_events(events)?, literal).into_iter().unzip();
        with_conn!(self, |conn: conn| begin_one(conn, record, lease, &events, None))
    }

    async fn begin_with(
        &self,
        record: &RunRecord,
        lease: &Lease,
        events: &[Event],
        session: &SessionRecord,
    ) -> Result<bool, Error> {
        let literal_input = crate::store::sql::json(&record.input)?;
        let literal = crate::store::sql::prompt_literal(&literal_input);
        let events: (Vec<i64>, Vec<String>) =
            crate::store::sql::events_once(crate::store::sql::encode_events(events)?, literal).into_iter().unzip();
        with_conn!(self, |conn: conn| begin_one(conn, record, lease, &events, Some(session)))?;
        Ok(true)
    }

    async fn append(&self, run_id: &str, lease: &Lease, entry: &JournalEntry, events: &[Event]) -> Result<(), Error> {
        let appends = Appends::new(&[JournalWrite { entry, events }])?;
        with_conn!(self, |conn: conn| append_one(conn, run_id, lease, &appends))
    }

    async fn append_all(&self, run_id: &str, lease: &Lease, writes: &[JournalWrite<'_>]) -> Result<(), Error> {
        let appends = Appends::new(writes)?;
        with_conn!(self, |conn: conn| append_one(conn, run_id, lease, &appends))
    }

    async fn end(&self, run_id: &str, lease: &Lease, state: RunState, events: &[Event]) -> Result<(), Error> {
        let events = event_columns(events)?;
        with_conn!(self, |conn: conn| end_one(conn, run_id, lease, state, &events))
    }

    async fn acquire(&self, run_id: &str, lease: &Lease) -> Result<u64, Error> {
        with_conn!(self, |client| acquire_tx(client, run_id, lease))
    }

    async fn renew(&self, run_id: &str, lease: &Lease) -> Result<(), Error> {
        with_conn!(self, |conn: conn| renew_one(conn, run_id, lease))
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

    fn database_id(&self) -> Option<usize> {
        Some(self.database_id())
    }

    async fn check_lease(&self, run_id: &str, lease: &Lease) -> Result<(), Error> {
        with_conn!(self, |conn: conn| super::finish::check_lease_one(conn, run_id, lease))
    }

    async fn end_with(&self, run_id: &str, lease: &Lease, commit: &FinalCommit<'_>) -> Result<bool, Error> {
        let commit = super::finish::Final::new(commit)?;
        with_conn!(self, |conn: conn| super::finish::end_with_one(conn, run_id, lease, &commit))?;
        Ok(true)
    }
}
