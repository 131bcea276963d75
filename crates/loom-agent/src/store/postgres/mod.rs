//! The PostgreSQL journal and session store: one database holds sessions, their history, runs,
//! transcripts, events and run journals, in tables named `loom_*` (the same layout as the SQLite
//! store).

mod pool;

use std::sync::Arc;

use tokio::sync::OnceCell;
use tokio_postgres::types::FromSql;
use tokio_postgres::{Client, IsolationLevel, Row, Transaction};

use crate::error::Error;
use crate::event::Event;
use crate::store::sql::{decode_event, expand, now_ms};
use loom_core::journal::{Lease, LeaseView, may_write};
pub(crate) use pool::{PgPool, PooledConn, pg};

/// The newest schema this version reads and writes.
pub(crate) const SCHEMA_VERSION: i64 = 9;

/// The `pg_advisory_xact_lock` key that serializes migrations ("loom_mig" in ASCII).
const MIGRATION_LOCK: i64 = 0x6c6f_6f6d_5f6d_6967;

/// The tables of schema version 1.
const SCHEMA_V1: &str = "
    CREATE TABLE IF NOT EXISTS loom_sessions (
        id TEXT PRIMARY KEY, metadata TEXT NOT NULL, extensions TEXT NOT NULL,
        closed BOOLEAN NOT NULL DEFAULT FALSE, updated_at BIGINT NOT NULL);
    CREATE TABLE IF NOT EXISTS loom_history (
        id BIGSERIAL PRIMARY KEY, session_id TEXT NOT NULL, run_id TEXT NOT NULL,
        idx BIGINT NOT NULL, message TEXT NOT NULL, UNIQUE (session_id, run_id, idx));
    CREATE INDEX IF NOT EXISTS loom_history_by_session ON loom_history (session_id, id);
    CREATE TABLE IF NOT EXISTS loom_runs (
        run_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, user_id TEXT, state TEXT NOT NULL,
        finished BOOLEAN NOT NULL DEFAULT FALSE, input TEXT, record TEXT, transcript TEXT,
        started_at BIGINT NOT NULL, finished_at BIGINT, lease_owner TEXT, lease_expires BIGINT);
    CREATE INDEX IF NOT EXISTS loom_runs_by_session ON loom_runs (session_id, run_id);
    CREATE TABLE IF NOT EXISTS loom_journal (
        run_id TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL, entry TEXT NOT NULL,
        PRIMARY KEY (run_id, seq));
    CREATE TABLE IF NOT EXISTS loom_events (
        run_id TEXT NOT NULL, seq BIGINT NOT NULL, event TEXT NOT NULL,
        PRIMARY KEY (run_id, seq));";

/// Version 2: sessions belong to a user, keyed by (owner, id) where the owner is the user id or
/// `''` for none; history rows carry their session's owner. Existing data is split by the user each
/// run ran for: a session id that two users shared becomes one session per user.
const MIGRATE_V2: &str = "
    ALTER TABLE loom_history ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    UPDATE loom_history h SET owner = COALESCE(r.user_id, '') FROM loom_runs r WHERE r.run_id = h.run_id;
    CREATE INDEX loom_history_by_owner ON loom_history (session_id, owner, id);
    ALTER TABLE loom_sessions ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE loom_sessions DROP CONSTRAINT loom_sessions_pkey;
    INSERT INTO loom_sessions (owner, id, metadata, extensions, closed, updated_at)
        SELECT DISTINCT o.owner, s.id, s.metadata, s.extensions, s.closed, s.updated_at FROM loom_sessions s
        JOIN (SELECT owner, session_id FROM loom_history
              UNION SELECT COALESCE(user_id, ''), session_id FROM loom_runs) o ON o.session_id = s.id
        WHERE s.owner = '' AND o.owner <> '';
    DELETE FROM loom_sessions s WHERE s.owner = ''
        AND EXISTS (SELECT 1 FROM loom_sessions v WHERE v.id = s.id AND v.owner <> '')
        AND NOT EXISTS (SELECT 1 FROM loom_history h WHERE h.session_id = s.id AND h.owner = '')
        AND NOT EXISTS (SELECT 1 FROM loom_runs r WHERE r.session_id = s.id AND r.user_id IS NULL);
    ALTER TABLE loom_sessions ADD PRIMARY KEY (owner, id);";

/// Version 3: sessions carry a run lock (`lock_holder`, `lock_expires`) that serializes their runs
/// across processes.
const MIGRATE_V3: &str = "
    ALTER TABLE loom_sessions ADD COLUMN lock_holder TEXT;
    ALTER TABLE loom_sessions ADD COLUMN lock_expires BIGINT;";

/// Version 4: a session's summary (context management), one row per session, replaced by each
/// run that compacts: the next run starts from it instead of the history it covers.
const MIGRATE_V4: &str = "
    CREATE TABLE loom_session_summaries (
        owner TEXT NOT NULL, session_id TEXT NOT NULL, summary TEXT NOT NULL, updated_at BIGINT NOT NULL,
        PRIMARY KEY (owner, session_id));";

/// Version 6: a run may be another run's child (`parent_run_id`: an agent used as a tool, a
/// supervisor's worker, a workflow's agent node). Existing runs take it from their record (none
/// has one before this version).
const MIGRATE_V6: &str = "
    ALTER TABLE loom_runs ADD COLUMN IF NOT EXISTS parent_run_id TEXT;
    UPDATE loom_runs SET parent_run_id = (record::JSONB)->>'parent_run_id'
        WHERE record IS NOT NULL AND record LIKE '%parent_run_id%';
    CREATE INDEX IF NOT EXISTS loom_runs_by_parent ON loom_runs (parent_run_id) WHERE parent_run_id IS NOT NULL;";

/// A journal and session store in a PostgreSQL database, safe to share between processes and
/// machines (feature `postgres`).
///
/// [`PostgresStore::new`] only checks the URL; the first call connects (without TLS) and creates
/// or upgrades the schema, in a transaction under `pg_advisory_xact_lock`, so any number of
/// processes may start at once. A database written by a newer version of Loom is refused with
/// [`Error::SchemaTooNew`]. The schema version is kept in the table `loom_schema_version`.
///
/// A store (and its clones) keeps up to 8 connections, opened as needed on the current tokio
/// runtime; a connection that breaks is dropped and replaced on the next call.
///
/// Each write of a run (the session, `begin`, each journal entry with its events, the transcript
/// with the history, the final commit) is one statement, committed on its own, so a run costs about
/// one round trip per write, plus the wait for the server to flush a commit to disk
/// (`synchronous_commit`) where the commit guards a side effect or ends the run. `begin` and the
/// entries a resumed run can make again without side effects (a model's result: see
/// `JournalEntry::may_commit_lazily`) do not wait: the next commit that waits makes them durable
/// with it. Where losing the last writes on a crash of the database server is acceptable,
/// `?options=-c%20synchronous_commit%3Doff` in the URL removes the remaining waits.
///
/// Leases are timed with this process's clock (milliseconds since the Unix epoch), as with the
/// SQLite store: keep the clocks of the machines sharing a database in sync, well within a lease's
/// time to live.
///
/// ```no_run
/// # async fn demo() -> Result<(), loom_agent::Error> {
/// let store = loom_agent::store::PostgresStore::connect("postgres://loom@localhost:5432/loom").await?;
/// let agent = loom_agent::Agent::builder().model("echo").journal(store).build()?;
/// # let _ = agent; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Arc<PgPool>,
    migrated: OnceCell<()>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("host", &self.inner.pool.host())
            .field("dbname", &self.inner.pool.dbname())
            .finish_non_exhaustive()
    }
}

fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, Error> {
    row.try_get(idx).map_err(|e| pg("reading a row", e))
}

/// Events as the array parameters of one insert: (seqs, JSON texts).
fn event_columns(events: &[Event]) -> Result<(Vec<i64>, Vec<String>), Error> {
    Ok(crate::store::sql::encode_events(events)?.into_iter().unzip())
}

impl PostgresStore {
    /// An id of this store's connections, shared by its clones (see `Journal::database_id`).
    fn database_id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// A store for the database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?…]` or a
    /// key-value connection string), without connecting: the first call connects. A URL that does
    /// not parse is an [`Error::Config`] (which never repeats the password).
    pub fn new(url: &str) -> Result<Self, Error> {
        Ok(PostgresStore { inner: Arc::new(Inner { pool: Arc::new(PgPool::new(url)?), migrated: OnceCell::new() }) })
    }

    /// Connects to the database at `url` now (see [`PostgresStore::new`]) and creates or upgrades
    /// the schema: a database that cannot be reached is an [`Error::Store`] here rather than on
    /// first use.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let store = Self::new(url)?;
        let conn = store.conn().await?;
        store.release(conn);
        Ok(store)
    }

    /// Takes an idle connection or opens one, migrating the schema on the store's first connection.
    async fn conn(&self) -> Result<PooledConn, Error> {
        let mut conn = self.inner.pool.get().await?;
        if let Err(e) = self.inner.migrated.get_or_try_init(|| migrate(&mut conn.client)).await {
            self.release(conn);
            return Err(e);
        }
        Ok(conn)
    }

    /// Hands a connection back to the pool (a closed one is dropped).
    fn release(&self, conn: PooledConn) {
        self.inner.pool.put(conn);
    }

    /// The store's connection pool (the audit log can share it).
    pub(crate) fn pool(&self) -> &Arc<PgPool> {
        &self.inner.pool
    }
}

/// Runs `op` on a pooled connection (`|client|`: its client; `|conn|`: the [`PooledConn`], for its
/// prepared statements) and hands the connection back, whatever the outcome.
macro_rules! with_conn {
    ($store:expr, |conn: $conn:ident| $body:expr) => {{
        let mut conn = $store.conn().await?;
        let result = {
            let $conn = &mut conn;
            $body.await
        };
        $store.release(conn);
        result
    }};
    ($store:expr, |$client:ident| $body:expr) => {{
        let mut conn = $store.conn().await?;
        let result = {
            let $client = &mut conn.client;
            $body.await
        };
        $store.release(conn);
        result
    }};
}

/// Whether `e` is a unique violation: a fast path's single statement lost a race (two writers
/// picked the same seq from one snapshot) and the transaction that locks first must decide.
fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

mod api_keys;
mod finish;
mod journal;
mod queue;
mod sessions;
mod signals;
mod tenant_usage;

/// Creates or upgrades the schema under the migration lock. Refuses a database from a newer version.
async fn migrate(client: &mut Client) -> Result<(), Error> {
    let tx = client.transaction().await.map_err(|e| pg("beginning the migration", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| pg("taking the migration lock", e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS loom_schema_version (version BIGINT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .await
    .map_err(|e| pg("creating loom_schema_version", e))?;
    let row = tx
        .query_one("SELECT COALESCE(MAX(version), 0)::BIGINT FROM loom_schema_version", &[])
        .await
        .map_err(|e| pg("reading the schema version", e))?;
    let version: i64 = get(&row, 0)?;
    if version > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew { found: version, supported: SCHEMA_VERSION });
    }
    if version < 1 {
        tx.batch_execute(SCHEMA_V1).await.map_err(|e| pg("creating the schema", e))?;
        tx.execute("INSERT INTO loom_schema_version (version, applied_at) VALUES (1, $1)", &[&now_ms()])
            .await
            .map_err(|e| pg("recording the schema version", e))?;
    }
    if version < 2 {
        tx.batch_execute(MIGRATE_V2).await.map_err(|e| pg("upgrading the schema to version 2", e))?;
        tx.execute("INSERT INTO loom_schema_version (version, applied_at) VALUES (2, $1)", &[&now_ms()])
            .await
            .map_err(|e| pg("recording the schema version", e))?;
    }
    if version < 3 {
        tx.batch_execute(MIGRATE_V3).await.map_err(|e| pg("upgrading the schema to version 3", e))?;
        tx.execute("INSERT INTO loom_schema_version (version, applied_at) VALUES (3, $1)", &[&now_ms()])
            .await
            .map_err(|e| pg("recording the schema version", e))?;
    }
    if version < 4 {
        tx.batch_execute(MIGRATE_V4).await.map_err(|e| pg("upgrading the schema to version 4", e))?;
        tx.execute("INSERT INTO loom_schema_version (version, applied_at) VALUES (4, $1)", &[&now_ms()])
            .await
            .map_err(|e| pg("recording the schema version", e))?;
    }
    if version < 5 {
        tx.batch_execute(signals::MIGRATE_V5).await.map_err(|e| pg("upgrading the schema to version 5", e))?;
        tx.execute("INSERT INTO loom_schema_version (version, applied_at) VALUES (5, $1)", &[&now_ms()])
            .await
            .map_err(|e| pg("recording the schema version", e))?;
    }
    if version < 6 {
        tx.batch_execute(MIGRATE_V6).await.map_err(|e| pg("upgrading the schema to version 6", e))?;
        tx.execute("INSERT INTO loom_schema_version (version, applied_at) VALUES (6, $1)", &[&now_ms()])
            .await
            .map_err(|e| pg("recording the schema version", e))?;
    }
    if version < 7 {
        tx.batch_execute(MIGRATE_V7).await.map_err(|e| pg("upgrading the schema to version 7", e))?;
        tx.execute("INSERT INTO loom_schema_version (version, applied_at) VALUES (7, $1)", &[&now_ms()])
            .await
            .map_err(|e| pg("recording the schema version", e))?;
    }
    if version < 8 {
        tx.batch_execute(MIGRATE_V8).await.map_err(|e| pg("upgrading the schema to version 8", e))?;
        tx.execute("INSERT INTO loom_schema_version (version, applied_at) VALUES (8, $1)", &[&now_ms()])
            .await
            .map_err(|e| pg("recording the schema version", e))?;
    }
    if version < 9 {
        tx.batch_execute(tenant_usage::MIGRATE_V9).await.map_err(|e| pg("upgrading the schema to version 9", e))?;
        tx.execute("INSERT INTO loom_schema_version (version, applied_at) VALUES (9, $1)", &[&now_ms()])
            .await
            .map_err(|e| pg("recording the schema version", e))?;
    }
    tx.commit().await.map_err(|e| pg("committing the migration", e))
}

/// Version 8 (scale-out): each run's fencing number (incremented at every takeover; every write
/// under a lease carries it), and the durable run queue in `loom_runs` itself: `agent` (the agent
/// that runs it; set only for queued runs), `request` (input, context and metadata as JSON),
/// `queued_at`, and `cancel_requested` (a cancel recorded for the process that executes it).
const MIGRATE_V8: &str = "
    ALTER TABLE loom_runs ADD COLUMN IF NOT EXISTS fence BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE loom_runs ADD COLUMN IF NOT EXISTS agent TEXT;
    ALTER TABLE loom_runs ADD COLUMN IF NOT EXISTS request TEXT;
    ALTER TABLE loom_runs ADD COLUMN IF NOT EXISTS queued_at BIGINT;
    ALTER TABLE loom_runs ADD COLUMN IF NOT EXISTS cancel_requested BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE INDEX IF NOT EXISTS loom_runs_queued ON loom_runs (agent, queued_at) WHERE agent IS NOT NULL AND NOT finished;
    CREATE INDEX IF NOT EXISTS loom_runs_by_finish ON loom_runs (finished_at) WHERE finished;";

/// Version 7: API keys for `loom serve` (SHA-256 hashes only; each key bound to a tenant).
const MIGRATE_V7: &str = "
    CREATE TABLE IF NOT EXISTS loom_api_keys (
        id TEXT PRIMARY KEY, tenant TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, created_at BIGINT NOT NULL,
        revoked BOOLEAN NOT NULL DEFAULT FALSE);";

async fn insert_events(tx: &Transaction<'_>, run_id: &str, events: &(Vec<i64>, Vec<String>)) -> Result<(), Error> {
    if events.0.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO loom_events (run_id, seq, event)
         SELECT $1::TEXT, e.seq, e.event FROM UNNEST($2::BIGINT[], $3::TEXT[]) AS e(seq, event)
         ON CONFLICT (run_id, seq) DO NOTHING",
        &[&run_id, &events.0, &events.1],
    )
    .await
    .map_err(|e| pg("inserting events", e))?;
    Ok(())
}

/// Renews the lease held by `lease`'s owner until `until` (locking the run's row until the
/// transaction ends); `RunNotFound` or `LeaseLost` (the lease rule) when it does not hold the run.
async fn renew_lease(tx: &Transaction<'_>, run_id: &str, lease: &Lease, until: i64) -> Result<(), Error> {
    let owner: &str = &lease.owner;
    let n = tx
        .execute(
            "UPDATE loom_runs SET lease_expires = $1 WHERE run_id = $2 AND lease_owner = $3 AND fence = $4
                AND NOT finished",
            &[&until, &run_id, &owner, &lease.fence_i64()],
        )
        .await
        .map_err(|e| pg("renewing the lease", e))?;
    if n == 0 {
        // The update matched nothing: the rule says why (unknown run, finished, another owner).
        let row = lease_row(tx, run_id, false).await?;
        may_write(run_id, row.as_ref().map(LeaseRow::view), lease)?;
        return Err(Error::LeaseLost { run_id: run_id.to_string() });
    }
    Ok(())
}

/// A run's lease columns, as read for the lease rule.
struct LeaseRow {
    state: loom_core::run::RunState,
    finished: bool,
    journaled: bool,
    owner: Option<String>,
    expires_ms: Option<i64>,
    fence: i64,
}

impl LeaseRow {
    fn view(&self) -> LeaseView<'_> {
        LeaseView {
            state: self.state,
            finished: self.finished,
            journaled: self.journaled,
            owner: self.owner.as_deref(),
            expires_ms: self.expires_ms,
            fence: u64::try_from(self.fence).unwrap_or_default(),
        }
    }
}

/// Reads the run's lease columns; `for_update` locks the row until the transaction ends.
async fn lease_row(tx: &Transaction<'_>, run_id: &str, for_update: bool) -> Result<Option<LeaseRow>, Error> {
    let sql = if for_update {
        "SELECT state, finished, record IS NOT NULL, lease_owner, lease_expires, fence FROM loom_runs \
         WHERE run_id = $1 FOR UPDATE"
    } else {
        "SELECT state, finished, record IS NOT NULL, lease_owner, lease_expires, fence FROM loom_runs WHERE run_id = $1"
    };
    let row = tx.query_opt(sql, &[&run_id]).await.map_err(|e| pg("reading the run", e))?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(LeaseRow {
        state: crate::store::sql::parse_state(get(&row, 0)?, run_id)?,
        finished: get(&row, 1)?,
        journaled: get(&row, 2)?,
        owner: get(&row, 3)?,
        expires_ms: get(&row, 4)?,
        fence: get(&row, 5)?,
    }))
}

/// Appends a journal entry at the next seq. The caller holds the run's row lock, so concurrent
/// writers of one run never pick the same seq.
async fn insert_entry(tx: &Transaction<'_>, run_id: &str, kind: &str, text: &str) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO loom_journal (run_id, seq, kind, entry)
         SELECT $1::TEXT, COALESCE(MAX(seq) + 1, 0), $2::TEXT, $3::TEXT FROM loom_journal WHERE run_id = $1::TEXT",
        &[&run_id, &kind, &text],
    )
    .await
    .map_err(|e| pg("appending to the journal", e))?;
    Ok(())
}

async fn load_events(tx: &Transaction<'_>, run_id: &str) -> Result<Vec<Event>, Error> {
    let rows = tx
        .query("SELECT seq, event FROM loom_events WHERE run_id = $1 ORDER BY seq", &[&run_id])
        .await
        .map_err(|e| pg("reading events", e))?;
    let mut input: Option<Option<String>> = None;
    if rows.iter().any(|row| get::<&str>(row, 1).is_ok_and(|t| t.starts_with('@'))) {
        input = Some(run_input(tx, run_id).await?);
    }
    rows.iter()
        .map(|row| {
            let seq: i64 = get(row, 0)?;
            let text = expand(get(row, 1)?, || Ok(input.clone().flatten()), || format!("run {run_id}: event {seq}"))?;
            decode_event(run_id, seq, &text)
        })
        .collect()
}

/// A run's `input` column (read for rows that store a large prompt once).
async fn run_input(tx: &Transaction<'_>, run_id: &str) -> Result<Option<String>, Error> {
    let row = tx
        .query_opt("SELECT input FROM loom_runs WHERE run_id = $1", &[&run_id])
        .await
        .map_err(|e| pg("reading the run's input", e))?;
    row.map(|row| get::<Option<String>>(&row, 0)).transpose().map(Option::flatten)
}

/// A consistent read-only snapshot.
async fn snapshot(client: &mut Client) -> Result<Transaction<'_>, Error> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| pg("beginning a read", e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn new_does_not_connect_and_debug_hides_the_password() {
        let store = PostgresStore::new("postgres://loom:s3cret-pw@db.example:6543/journal").unwrap();
        let debug = format!("{store:?}");
        assert!(!debug.contains("s3cret-pw"), "{debug}");
        assert!(debug.contains("db.example:6543") && debug.contains("journal"), "{debug}");
    }

    #[test]
    fn bad_urls_are_config_errors_without_the_password() {
        for url in ["postgres://loom:s3cret-pw@db.example:notaport/x", "postgres://loom:s3cret-pw@h/x?bogus=1"] {
            match PostgresStore::new(url) {
                Err(Error::Config(msg)) => assert!(!msg.contains("s3cret-pw"), "{msg}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn scrub_removes_the_password() {
        assert_eq!(pool::scrub("postgres://u:pw@h/db", "a pw b".into()), "a *** b");
        assert_eq!(pool::scrub("postgres://u@h/db", "a pw b".into()), "a pw b");
    }
}
