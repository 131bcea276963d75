//! The PostgreSQL journal and session store: one database holds sessions, their history, runs,
//! transcripts, events and run journals, in tables named `loom_*` (the same layout as the SQLite
//! store).

use std::str::FromStr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use tokio_postgres::config::Host;
use tokio_postgres::types::FromSql;
use tokio_postgres::{Client, Config, IsolationLevel, NoTls, Row, Transaction};

use super::{RunSummary, SessionRecord, SessionStore};
use crate::error::Error;
use crate::event::Event;
use crate::message::Message;
use crate::run::{RunInput, RunState, Transcript};
use loom_core::journal::{Journal, JournalEntry, JournalRunSummary, JournaledRun, Lease, RunFilter, RunRecord};

/// The newest schema this version reads and writes.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// The `pg_advisory_xact_lock` key that serializes migrations ("loom_mig" in ASCII).
const MIGRATION_LOCK: i64 = 0x6c6f_6f6d_5f6d_6967;

/// The most connections one store (and its clones) opens at once.
const MAX_CONNECTIONS: usize = 8;

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
    config: Config,
    /// `host:port` list, for messages (never the password).
    host: String,
    /// The database name, for messages.
    dbname: String,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
    migrated: OnceCell<()>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("host", &self.inner.host)
            .field("dbname", &self.inner.dbname)
            .finish_non_exhaustive()
    }
}

/// A pooled connection; hand it back with [`PostgresStore::release`].
struct Conn {
    client: Client,
    _permit: OwnedSemaphorePermit,
}

/// A database error, with its cause (tokio-postgres prints only "db error" without it).
fn pg(what: &str, e: tokio_postgres::Error) -> Error {
    let mut msg = format!("postgres: {what}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        msg.push_str(": ");
        msg.push_str(&cause.to_string());
        source = cause.source();
    }
    Error::Store(msg)
}

fn corrupt(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("{what}: {e}"))
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::Store(format!("serializing: {e}")))
}

fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, Error> {
    row.try_get(idx).map_err(|e| pg("reading a row", e))
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn expiry(lease: &Lease) -> i64 {
    millis(Utc::now()).saturating_add(lease.ttl.as_millis().min(i64::MAX as u128) as i64)
}

fn parse_state(s: &str, run_id: &str) -> Result<RunState, Error> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|e| corrupt(format!("run {run_id} state"), e))
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default()
}

/// Serialized events: (seqs, json texts).
fn encode_events(events: &[Event]) -> Result<(Vec<i64>, Vec<String>), Error> {
    let mut seqs = Vec::with_capacity(events.len());
    let mut texts = Vec::with_capacity(events.len());
    for e in events {
        seqs.push(i64::try_from(e.seq).map_err(|_| Error::Store(format!("event seq {} out of range", e.seq)))?);
        texts.push(json(e)?);
    }
    Ok((seqs, texts))
}

/// Removes the password of a `postgres://user:password@…` URL from `text`.
fn scrub(url: &str, text: String) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else { return text };
    match userinfo.split_once(':') {
        Some((_, password)) if !password.is_empty() => text.replace(password, "***"),
        _ => text,
    }
}

impl PostgresStore {
    /// A store for the database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?…]` or a
    /// key-value connection string), without connecting: the first call connects. A URL that does
    /// not parse is an [`Error::Config`] (which never repeats the password).
    pub fn new(url: &str) -> Result<Self, Error> {
        let config = Config::from_str(url.trim()).map_err(|e| {
            let mut msg = e.to_string();
            if let Some(cause) = std::error::Error::source(&e) {
                msg = format!("{msg}: {cause}");
            }
            Error::Config(scrub(url, format!("bad PostgreSQL URL: {msg}")))
        })?;
        let ports = config.get_ports();
        let host = config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let name = match h {
                    Host::Tcp(name) => name.clone(),
                    #[cfg(unix)]
                    Host::Unix(path) => path.display().to_string(),
                };
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                format!("{name}:{port}")
            })
            .collect::<Vec<_>>()
            .join(",");
        let dbname = config.get_dbname().or(config.get_user()).unwrap_or_default().to_string();
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                config,
                host,
                dbname,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
                migrated: OnceCell::new(),
            }),
        })
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
    async fn conn(&self) -> Result<Conn, Error> {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Store("postgres: the connection pool is closed".into()))?;
        let idle = {
            let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
            let mut found = None;
            while let Some(client) = idle.pop() {
                if !client.is_closed() {
                    found = Some(client);
                    break;
                }
            }
            found
        };
        let mut client = match idle {
            Some(client) => client,
            None => self.open().await?,
        };
        self.inner.migrated.get_or_try_init(|| migrate(&mut client)).await?;
        Ok(Conn { client, _permit: permit })
    }

    /// Hands a connection back to the pool (a closed one is dropped).
    fn release(&self, conn: Conn) {
        if !conn.client.is_closed() {
            self.inner.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn.client);
        }
    }

    async fn open(&self) -> Result<Client, Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::Store(format!("postgres: connecting needs a tokio runtime: {e}")))?;
        let what = format!("connecting to {}/{}", self.inner.host, self.inner.dbname);
        let (client, connection) = self.inner.config.connect(NoTls).await.map_err(|e| pg(&what, e))?;
        runtime.spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres store: the connection ended with an error");
            }
        });
        Ok(client)
    }
}

/// Runs `op` on a pooled connection and hands the connection back, whatever the outcome.
macro_rules! with_conn {
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
        tx.execute("INSERT INTO loom_schema_version (version, applied_at) VALUES (1, $1)", &[&millis(Utc::now())])
            .await
            .map_err(|e| pg("recording the schema version", e))?;
    }
    tx.commit().await.map_err(|e| pg("committing the migration", e))
}

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

/// Renews the lease held by `owner` (locking the run's row until the transaction ends);
/// `LeaseLost` when the run is held by someone else or finished.
async fn renew_lease(tx: &Transaction<'_>, run_id: &str, owner: &str, until: i64) -> Result<(), Error> {
    let n = tx
        .execute(
            "UPDATE loom_runs SET lease_expires = $1 WHERE run_id = $2 AND lease_owner = $3 AND NOT finished",
            &[&until, &run_id, &owner],
        )
        .await
        .map_err(|e| pg("renewing the lease", e))?;
    if n == 0 {
        let exists = tx
            .query_opt("SELECT 1 FROM loom_runs WHERE run_id = $1", &[&run_id])
            .await
            .map_err(|e| pg("reading the run", e))?;
        return Err(match exists {
            None => Error::RunNotFound(run_id.to_string()),
            Some(_) => Error::LeaseLost { run_id: run_id.to_string() },
        });
    }
    Ok(())
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
    rows.iter()
        .map(|row| {
            let seq: i64 = get(row, 0)?;
            let text: &str = get(row, 1)?;
            serde_json::from_str(text).map_err(|e| corrupt(format!("run {run_id}: event {seq}"), e))
        })
        .collect()
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

async fn begin_tx(
    client: &mut Client,
    record: &RunRecord,
    lease: &Lease,
    events: &(Vec<i64>, Vec<String>),
) -> Result<(), Error> {
    let input = json(&record.input)?;
    let text = json(record)?;
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
                &input,
                &text,
                &millis(record.started_at),
                &owner,
                &expiry(lease),
            ],
        )
        .await
        .map_err(|e| pg("registering the run", e))?;
    if n == 0 {
        return Err(Error::Store(format!("run {} is already journaled", record.run_id)));
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
    renew_lease(&tx, run_id, &lease.owner, expiry(lease)).await?;
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
    let finished = state.is_terminal() && state != RunState::Suspended;
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    renew_lease(&tx, run_id, &lease.owner, expiry(lease)).await?;
    insert_events(&tx, run_id, events).await?;
    tx.execute(
        "UPDATE loom_runs SET state = $2, finished = $3, lease_owner = NULL, lease_expires = NULL,
            finished_at = CASE WHEN $3 THEN $4 ELSE finished_at END WHERE run_id = $1",
        &[&run_id, &state.as_str(), &finished, &millis(Utc::now())],
    )
    .await
    .map_err(|e| pg("ending the run", e))?;
    tx.commit().await.map_err(|e| pg("committing", e))
}

async fn acquire_tx(client: &mut Client, run_id: &str, lease: &Lease) -> Result<(), Error> {
    let owner: &str = &lease.owner;
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    // FOR UPDATE: concurrent acquirers wait here and then see the winner's lease.
    let row = tx
        .query_opt(
            "SELECT state, finished, lease_owner, lease_expires, record IS NOT NULL
             FROM loom_runs WHERE run_id = $1 FOR UPDATE",
            &[&run_id],
        )
        .await
        .map_err(|e| pg("reading the run", e))?;
    let Some(row) = row else { return Err(Error::RunNotFound(run_id.to_string())) };
    let state: &str = get(&row, 0)?;
    let finished: bool = get(&row, 1)?;
    let holder: Option<String> = get(&row, 2)?;
    let expires: Option<i64> = get(&row, 3)?;
    let journaled: bool = get(&row, 4)?;
    if finished {
        return Err(Error::RunFinished { state: parse_state(state, run_id)?, run_id: run_id.to_string() });
    }
    if !journaled {
        return Err(Error::RunNotFound(run_id.to_string()));
    }
    let now = millis(Utc::now());
    if let (Some(holder), Some(expires)) = (holder, expires)
        && expires > now
        && holder != owner
    {
        let until = DateTime::<Utc>::from_timestamp_millis(expires).map(|t| t.to_rfc3339()).unwrap_or_default();
        return Err(Error::LeaseHeld { run_id: run_id.to_string(), owner: holder, until });
    }
    tx.execute(
        "UPDATE loom_runs SET lease_owner = $2, lease_expires = $3, state = 'running' WHERE run_id = $1",
        &[&run_id, &owner, &expiry(lease)],
    )
    .await
    .map_err(|e| pg("taking the lease", e))?;
    tx.commit().await.map_err(|e| pg("committing", e))
}

async fn renew_tx(client: &mut Client, run_id: &str, lease: &Lease) -> Result<(), Error> {
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    renew_lease(&tx, run_id, &lease.owner, expiry(lease)).await?;
    tx.commit().await.map_err(|e| pg("committing", e))
}

async fn decide_tx(client: &mut Client, run_id: &str, entry: &JournalEntry) -> Result<(), Error> {
    let text = json(entry)?;
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    let row = tx
        .query_opt("SELECT state, finished FROM loom_runs WHERE run_id = $1 FOR UPDATE", &[&run_id])
        .await
        .map_err(|e| pg("reading the run", e))?;
    let Some(row) = row else { return Err(Error::RunNotFound(run_id.to_string())) };
    let state: &str = get(&row, 0)?;
    let finished: bool = get(&row, 1)?;
    if finished {
        return Err(Error::RunFinished { state: parse_state(state, run_id)?, run_id: run_id.to_string() });
    }
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
    let record: RunRecord = serde_json::from_str(record).map_err(|e| corrupt(format!("run {run_id}: record"), e))?;
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
        .map(|row| {
            let seq: i64 = get(row, 0)?;
            let text: &str = get(row, 1)?;
            serde_json::from_str(text).map_err(|e| corrupt(format!("run {run_id}: journal entry {seq}"), e))
        })
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
        lease_expires_at: expires.and_then(DateTime::<Utc>::from_timestamp_millis),
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
        let events = encode_events(events)?;
        with_conn!(self, |client| begin_tx(client, record, lease, &events))
    }

    async fn append(&self, run_id: &str, lease: &Lease, entry: &JournalEntry, events: &[Event]) -> Result<(), Error> {
        let events = encode_events(events)?;
        with_conn!(self, |client| append_tx(client, run_id, lease, entry, &events))
    }

    async fn end(&self, run_id: &str, lease: &Lease, state: RunState, events: &[Event]) -> Result<(), Error> {
        let events = encode_events(events)?;
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

fn parse_session(id: &str, metadata: &str, extensions: &str) -> Result<SessionRecord, Error> {
    Ok(SessionRecord {
        id: id.to_string(),
        metadata: serde_json::from_str(metadata).map_err(|e| corrupt(format!("session {id}: metadata"), e))?,
        extensions: serde_json::from_str(extensions).map_err(|e| corrupt(format!("session {id}: extensions"), e))?,
    })
}

async fn open_session_tx(client: &mut Client, record: &SessionRecord) -> Result<SessionRecord, Error> {
    let now = millis(Utc::now());
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    // Create the row first, then lock it: concurrent opens merge one after the other.
    tx.execute(
        "INSERT INTO loom_sessions (id, metadata, extensions, closed, updated_at) VALUES ($1, '{}', '{}', FALSE, $2)
         ON CONFLICT (id) DO NOTHING",
        &[&record.id, &now],
    )
    .await
    .map_err(|e| pg("creating the session", e))?;
    let row = tx
        .query_one("SELECT metadata, extensions FROM loom_sessions WHERE id = $1 FOR UPDATE", &[&record.id])
        .await
        .map_err(|e| pg("reading the session", e))?;
    let mut merged = parse_session(&record.id, get(&row, 0)?, get(&row, 1)?)?;
    merged.metadata.extend(record.metadata.clone());
    merged.extensions.extend(record.extensions.clone());
    tx.execute(
        "UPDATE loom_sessions SET metadata = $2, extensions = $3, closed = FALSE, updated_at = $4 WHERE id = $1",
        &[&merged.id, &json(&merged.metadata)?, &json(&merged.extensions)?, &now],
    )
    .await
    .map_err(|e| pg("updating the session", e))?;
    tx.commit().await.map_err(|e| pg("committing", e))?;
    Ok(merged)
}

async fn get_session_tx(client: &mut Client, id: &str) -> Result<Option<SessionRecord>, Error> {
    let row = client
        .query_opt("SELECT metadata, extensions FROM loom_sessions WHERE id = $1", &[&id])
        .await
        .map_err(|e| pg("reading the session", e))?;
    row.map(|row| parse_session(id, get(&row, 0)?, get(&row, 1)?)).transpose()
}

async fn history_tx(client: &mut Client, id: &str) -> Result<Vec<Message>, Error> {
    let rows = client
        .query("SELECT id, message FROM loom_history WHERE session_id = $1 ORDER BY id", &[&id])
        .await
        .map_err(|e| pg("reading the history", e))?;
    rows.iter()
        .map(|row| {
            let n: i64 = get(row, 0)?;
            let text: &str = get(row, 1)?;
            serde_json::from_str(text).map_err(|e| corrupt(format!("session {id}: history row {n}"), e))
        })
        .collect()
}

async fn append_history_tx(client: &mut Client, id: &str, run_id: &str, rows: &[String]) -> Result<(), Error> {
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    let stmt = tx
        .prepare(
            "INSERT INTO loom_history (session_id, run_id, idx, message) VALUES ($1, $2, $3, $4)
             ON CONFLICT (session_id, run_id, idx) DO NOTHING",
        )
        .await
        .map_err(|e| pg("preparing", e))?;
    // One row at a time, so the ids (the history's order) follow the messages' order.
    for (i, message) in rows.iter().enumerate() {
        let idx = i64::try_from(i).unwrap_or(i64::MAX);
        tx.execute(&stmt, &[&id, &run_id, &idx, message]).await.map_err(|e| pg("appending to the history", e))?;
    }
    tx.commit().await.map_err(|e| pg("committing", e))
}

async fn save_run_tx(client: &mut Client, bare: &Transcript, events: &(Vec<i64>, Vec<String>)) -> Result<(), Error> {
    let text = json(bare)?;
    let input = json(&bare.input)?;
    let started = millis(bare.started_at.or(bare.finished_at).unwrap_or_else(Utc::now));
    let finished_at = bare.finished_at.map(millis);
    let finished = bare.state.is_terminal() && bare.state != RunState::Suspended;
    let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
    let row = tx
        .query_one(
            "INSERT INTO loom_runs (run_id, session_id, user_id, state, finished, input, transcript, started_at,
            finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (run_id) DO UPDATE SET state = EXCLUDED.state, input = EXCLUDED.input,
            transcript = EXCLUDED.transcript, finished_at = EXCLUDED.finished_at,
            finished = CASE WHEN loom_runs.record IS NULL THEN EXCLUDED.finished ELSE loom_runs.finished END
         RETURNING record IS NOT NULL",
            &[
                &bare.run_id,
                &bare.session_id,
                &bare.user_id,
                &bare.state.as_str(),
                &finished,
                &input,
                &text,
                &started,
                &finished_at,
            ],
        )
        .await
        .map_err(|e| pg("saving the run", e))?;
    // A journaled run's events are written by the journal (at its boundaries and final commit),
    // so a resumed run finds exactly the events its journal covers.
    let journaled: bool = get(&row, 0)?;
    if !journaled {
        insert_events(&tx, &bare.run_id, events).await?;
    }
    tx.commit().await.map_err(|e| pg("committing", e))
}

async fn get_run_tx(client: &mut Client, session_id: &str, run_id: &str) -> Result<Option<Arc<Transcript>>, Error> {
    let tx = snapshot(client).await?;
    let row = tx
        .query_opt("SELECT transcript FROM loom_runs WHERE run_id = $1 AND session_id = $2", &[&run_id, &session_id])
        .await
        .map_err(|e| pg("reading the run", e))?;
    let Some(row) = row else { return Ok(None) };
    let Some(text) = get::<Option<&str>>(&row, 0)? else { return Ok(None) };
    let mut t: Transcript = serde_json::from_str(text).map_err(|e| corrupt(format!("run {run_id}: transcript"), e))?;
    t.events = Arc::from(load_events(&tx, run_id).await?);
    tx.commit().await.map_err(|e| pg("ending the read", e))?;
    Ok(Some(Arc::new(t)))
}

async fn list_runs_tx(client: &mut Client, session_id: &str) -> Result<Vec<RunSummary>, Error> {
    let rows = client
        .query(
            "SELECT run_id, user_id, state, input, started_at, finished_at FROM loom_runs
             WHERE session_id = $1 AND transcript IS NOT NULL ORDER BY run_id COLLATE \"C\"",
            &[&session_id],
        )
        .await
        .map_err(|e| pg("listing runs", e))?;
    rows.iter()
        .map(|row| {
            let run_id: String = get(row, 0)?;
            let input = match get::<Option<&str>>(row, 3)? {
                Some(text) => serde_json::from_str(text).map_err(|e| corrupt(format!("run {run_id}: input"), e))?,
                None => RunInput::Prompt(String::new()),
            };
            Ok(RunSummary {
                state: parse_state(get(row, 2)?, &run_id)?,
                session_id: session_id.to_string(),
                user_id: get(row, 1)?,
                input,
                started_at: from_millis(get(row, 4)?),
                finished_at: get::<Option<i64>>(row, 5)?.and_then(DateTime::<Utc>::from_timestamp_millis),
                run_id,
            })
        })
        .collect()
}

async fn close_session_tx(client: &mut Client, id: &str) -> Result<(), Error> {
    client
        .execute("UPDATE loom_sessions SET closed = TRUE WHERE id = $1", &[&id])
        .await
        .map_err(|e| pg("closing the session", e))?;
    Ok(())
}

#[async_trait::async_trait]
impl SessionStore for PostgresStore {
    async fn open_session(&self, record: &SessionRecord) -> Result<SessionRecord, Error> {
        with_conn!(self, |client| open_session_tx(client, record))
    }

    async fn history(&self, session_id: &str) -> Result<Vec<Message>, Error> {
        with_conn!(self, |client| history_tx(client, session_id))
    }

    async fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>, Error> {
        with_conn!(self, |client| get_session_tx(client, session_id))
    }

    async fn append_history(&self, session_id: &str, run_id: &str, messages: &[Message]) -> Result<(), Error> {
        let rows = messages.iter().map(json).collect::<Result<Vec<String>, Error>>()?;
        with_conn!(self, |client| append_history_tx(client, session_id, run_id, &rows))
    }

    async fn save_run(&self, transcript: Arc<Transcript>) -> Result<(), Error> {
        let events = encode_events(&transcript.events)?;
        let mut bare = (*transcript).clone();
        bare.events = Arc::from(Vec::new());
        with_conn!(self, |client| save_run_tx(client, &bare, &events))
    }

    async fn get_run(&self, session_id: &str, run_id: &str) -> Result<Option<Arc<Transcript>>, Error> {
        with_conn!(self, |client| get_run_tx(client, session_id, run_id))
    }

    async fn list_runs(&self, session_id: &str) -> Result<Vec<RunSummary>, Error> {
        with_conn!(self, |client| list_runs_tx(client, session_id))
    }

    async fn close_session(&self, session_id: &str) -> Result<(), Error> {
        with_conn!(self, |client| close_session_tx(client, session_id))
    }
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
        assert_eq!(scrub("postgres://u:pw@h/db", "a pw b".into()), "a *** b");
        assert_eq!(scrub("postgres://u@h/db", "a pw b".into()), "a pw b");
    }
}
