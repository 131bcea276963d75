//! The SQLite journal and session store: one database file holds sessions, their history, runs,
//! transcripts, events, artifacts and run journals.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::{RunSummary, SessionRecord, SessionStore};
use crate::error::Error;
use crate::event::Event;
use crate::message::Message;
use crate::run::{RunInput, RunState, Transcript};
use loom_core::journal::{Journal, JournalEntry, JournalRunSummary, JournaledRun, Lease, RunFilter, RunRecord};

/// The newest schema this version reads and writes.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// How hard SQLite works to make each commit survive a power loss (`PRAGMA synchronous`). In WAL
/// mode, `Normal` survives a process crash (kill -9) and may lose the last commits on power loss;
/// `Full` survives both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// No syncs: fast, and a power loss may corrupt the database.
    Off,
    /// Sync at checkpoints (the default): crash-safe, not power-loss-safe for the last commits.
    #[default]
    Normal,
    /// Sync every commit.
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A journal and session store in one SQLite file (WAL mode), safe to share between processes.
///
/// Writes go through one connection on a dedicated thread, so the async runtime never blocks on
/// disk. Schema migrations run on open; a database written by a newer version is refused.
///
/// ```
/// # fn main() -> Result<(), loom_agent::Error> {
/// let dir = std::env::temp_dir().join(format!("loom-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let store = loom_agent::store::SqliteStore::open(dir.join("loom.db"))?;
/// let agent = loom_agent::Agent::builder().model("echo").journal(store).build()?;
/// # let _ = agent; std::fs::remove_dir_all(&dir).ok();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    /// Under `synchronous` OFF or NORMAL a commit never waits for the disk (checkpoints run on
    /// their own thread), so calls run on the caller's thread, under this lock: a hand-off to
    /// another thread would cost more than the work.
    inline: Option<Arc<std::sync::Mutex<Connection>>>,
    tx: mpsc::Sender<Job>,
    path: Arc<PathBuf>,
    /// Keeps the checkpoint thread alive; dropping the last clone stops it (after a last
    /// checkpoint).
    _checkpointer: Arc<mpsc::Sender<()>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish()
    }
}

fn db(e: rusqlite::Error) -> Error {
    Error::Store(format!("sqlite: {e}"))
}

fn corrupt(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("{what}: {e}"))
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::Store(format!("serializing: {e}")))
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn expiry(lease: &Lease) -> i64 {
    millis(Utc::now()) + lease.ttl.as_millis().min(i64::MAX as u128) as i64
}

fn parse_state(s: &str, run_id: &str) -> Result<RunState, Error> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|e| corrupt(format!("run {run_id} state"), e))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with `synchronous = NORMAL`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_with(path, Synchronous::Normal)
    }

    /// Opens a store from the part of a journal URL after `sqlite:`: `PATH[?synchronous=off|normal|full]`.
    pub fn open_url(rest: &str) -> Result<Self, Error> {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(Error::Config("the journal URL `sqlite:` needs a path, e.g. `sqlite:./loom.db`".into()));
        }
        let mut sync = Synchronous::Normal;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("synchronous", v)) => {
                    sync = match v.to_ascii_lowercase().as_str() {
                        "off" | "0" => Synchronous::Off,
                        "normal" | "1" => Synchronous::Normal,
                        "full" | "2" => Synchronous::Full,
                        other => {
                            return Err(Error::Config(format!(
                                "unknown synchronous level `{other}` in the journal URL; accepted: off, normal, full"
                            )));
                        }
                    }
                }
                _ => {
                    return Err(Error::Config(format!(
                        "unknown option `{pair}` in the journal URL; accepted: synchronous=off|normal|full"
                    )));
                }
            }
        }
        Self::open_with(path, sync)
    }

    /// Opens (creating if needed) the database at `path` with the given synchronous level.
    pub fn open_with(path: impl AsRef<Path>, synchronous: Synchronous) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let mut conn = Connection::open(&path).map_err(|e| Error::Store(format!("opening {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
        conn.pragma_update(None, "synchronous", synchronous.pragma()).map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        migrate(&mut conn)?;
        // Checkpoints (copying the WAL into the database, with fsyncs) run on their own thread,
        // not inside a run's commit: the writer never pays for them.
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(db)?;

        let checkpointer = spawn_checkpointer(&path)?;
        let (tx, rx) = mpsc::channel::<Job>();
        if synchronous != Synchronous::Full {
            let inline = Some(Arc::new(std::sync::Mutex::new(conn)));
            return Ok(SqliteStore { inline, tx, path: Arc::new(path), _checkpointer: Arc::new(checkpointer) });
        }
        std::thread::Builder::new()
            .name("loom-sqlite".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(job) = rx.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| Error::Store(format!("starting the SQLite thread: {e}")))?;
        Ok(SqliteStore { inline: None, tx, path: Arc::new(path), _checkpointer: Arc::new(checkpointer) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the store's connection thread.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        if let Some(conn) = &self.inline {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            return f(&mut conn);
        }
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        self.tx.send(job).map_err(|_| Error::Store("the SQLite thread has stopped".into()))?;
        rx.await.map_err(|_| Error::Store("the SQLite thread stopped during a call".into()))?
    }
}

/// A thread that checkpoints the WAL every 100 ms while the store is open, and once more when
/// the store is dropped. PASSIVE checkpoints never block writers; under continuous writes they may
/// never catch up, so once the log passes 4,096 frames (16 MiB) a RESTART checkpoint makes the
/// next write start the log over (writers wait for it, briefly), which bounds the WAL.
fn spawn_checkpointer(path: &Path) -> Result<mpsc::Sender<()>, Error> {
    const MAX_FRAMES: i64 = 4096;
    let conn = Connection::open(path).map_err(|e| Error::Store(format!("opening {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(1)).map_err(db)?;
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("loom-sqlite-checkpoint".into())
        .spawn(move || {
            let checkpoint = |mode: &str| -> Option<(i64, i64)> {
                match conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(1)?, r.get(2)?))) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        tracing::debug!(error = %e, "sqlite checkpoint skipped");
                        None
                    }
                }
            };
            loop {
                match rx.recv_timeout(std::time::Duration::from_millis(100)) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if let Some((log, done)) = checkpoint("PASSIVE")
                            && log > MAX_FRAMES
                            && done < log
                        {
                            checkpoint("RESTART");
                        }
                    }
                    Ok(()) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        checkpoint("TRUNCATE");
                        break;
                    }
                }
            }
        })
        .map_err(|e| Error::Store(format!("starting the SQLite checkpoint thread: {e}")))?;
    Ok(tx)
}

/// Creates or upgrades the schema. Refuses a database from a newer version.
fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(db)?;
    if version > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew { found: version, supported: SCHEMA_VERSION });
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    // Re-read under the write lock: another process may have migrated meanwhile.
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(db)?;
    if version < 1 {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS loom_sessions (
                id TEXT PRIMARY KEY, metadata TEXT NOT NULL, extensions TEXT NOT NULL,
                closed INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS loom_history (
                id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL, run_id TEXT NOT NULL,
                idx INTEGER NOT NULL, message TEXT NOT NULL, UNIQUE (session_id, run_id, idx));
             CREATE TABLE IF NOT EXISTS loom_runs (
                run_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, user_id TEXT, state TEXT NOT NULL,
                finished INTEGER NOT NULL DEFAULT 0, input TEXT, record TEXT, transcript TEXT,
                started_at INTEGER NOT NULL, finished_at INTEGER, lease_owner TEXT, lease_expires INTEGER);
             CREATE INDEX IF NOT EXISTS loom_runs_by_session ON loom_runs (session_id, run_id);
             CREATE TABLE IF NOT EXISTS loom_journal (
                run_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, entry TEXT NOT NULL,
                PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS loom_events (
                run_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL,
                PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
             PRAGMA user_version = 1;",
        )
        .map_err(db)?;
    }
    tx.commit().map_err(db)
}

/// Appends a journal entry after the run's last one (the caller's transaction holds the write lock).
fn insert_entry(tx: &rusqlite::Transaction<'_>, run_id: &str, kind: &str, entry: &str) -> Result<(), Error> {
    tx.prepare_cached(
        "INSERT INTO loom_journal (run_id, seq, kind, entry) VALUES (?1,
            (SELECT COALESCE(MAX(seq) + 1, 0) FROM loom_journal WHERE run_id = ?1), ?2, ?3)",
    )
    .map_err(db)?
    .execute(params![run_id, kind, entry])
    .map_err(db)?;
    Ok(())
}

/// Serialized events: (seq, json).
fn encode_events(events: &[Event]) -> Result<Vec<(i64, String)>, Error> {
    events.iter().map(|e| Ok((e.seq as i64, json(e)?))).collect()
}

fn insert_events(tx: &rusqlite::Transaction<'_>, run_id: &str, events: &[(i64, String)]) -> Result<(), Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO loom_events (run_id, seq, event) VALUES (?1, ?2, ?3)").map_err(db)?;
    for (seq, event) in events {
        stmt.execute(params![run_id, seq, event]).map_err(db)?;
    }
    Ok(())
}

/// Renews the lease held by `owner`; `LeaseLost` when the run is held by someone else or finished.
fn renew_lease(tx: &rusqlite::Transaction<'_>, run_id: &str, owner: &str, until: i64) -> Result<(), Error> {
    let n = tx
        .prepare_cached(
            "UPDATE loom_runs SET lease_expires = ?1 WHERE run_id = ?2 AND lease_owner = ?3 AND finished = 0",
        )
        .map_err(db)?
        .execute(params![until, run_id, owner])
        .map_err(db)?;
    if n == 0 {
        let exists: Option<i64> =
            tx.query_row("SELECT 1 FROM loom_runs WHERE run_id = ?1", [run_id], |r| r.get(0)).optional().map_err(db)?;
        return Err(match exists {
            None => Error::RunNotFound(run_id.to_string()),
            Some(_) => Error::LeaseLost { run_id: run_id.to_string() },
        });
    }
    Ok(())
}

/// Checks that `owner` holds the run, renewing the lease only once half of it has passed: most
/// journal writes then leave the run's row alone.
fn hold_lease(tx: &rusqlite::Transaction<'_>, run_id: &str, lease: &Lease) -> Result<(), Error> {
    let row: Option<(Option<String>, Option<i64>, bool)> = tx
        .prepare_cached("SELECT lease_owner, lease_expires, finished FROM loom_runs WHERE run_id = ?1")
        .map_err(db)?
        .query_row([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .map_err(db)?;
    let Some((holder, expires, finished)) = row else { return Err(Error::RunNotFound(run_id.to_string())) };
    if finished || holder.as_deref() != Some(&*lease.owner) {
        return Err(Error::LeaseLost { run_id: run_id.to_string() });
    }
    let until = expiry(lease);
    let half = (lease.ttl.as_millis() / 2).min(i64::MAX as u128) as i64;
    if expires.unwrap_or(0) < until - half {
        renew_lease(tx, run_id, &lease.owner, until)?;
    }
    Ok(())
}

fn load_events(conn: &Connection, run_id: &str) -> Result<Vec<Event>, Error> {
    let mut stmt =
        conn.prepare_cached("SELECT seq, event FROM loom_events WHERE run_id = ?1 ORDER BY seq").map_err(db)?;
    let rows = stmt
        .query_map([run_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    rows.into_iter()
        .map(|(seq, text)| serde_json::from_str(&text).map_err(|e| corrupt(format!("run {run_id}: event {seq}"), e)))
        .collect()
}

#[async_trait::async_trait]
impl Journal for SqliteStore {
    async fn begin(&self, record: &RunRecord, lease: &Lease, events: &[Event]) -> Result<(), Error> {
        let run_id = record.run_id.clone();
        let session_id = record.session_id.clone();
        let user_id = record.user_id.clone();
        let input = json(&record.input)?;
        let text = json(record)?;
        let started = millis(record.started_at);
        let owner = lease.owner.to_string();
        let until = expiry(lease);
        let events = encode_events(events)?;
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let n = tx
                .prepare_cached(
                    "INSERT INTO loom_runs (run_id, session_id, user_id, state, input, record, started_at,
                        lease_owner, lease_expires) VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (run_id) DO NOTHING",
                )
                .map_err(db)?
                .execute(params![run_id, session_id, user_id, input, text, started, owner, until])
                .map_err(db)?;
            if n == 0 {
                return Err(Error::Store(format!("run {run_id} is already journaled")));
            }
            insert_events(&tx, &run_id, &events)?;
            tx.commit().map_err(db)
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
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            hold_lease(&tx, &run_id, &lease)?;
            insert_entry(&tx, &run_id, kind, &text)?;
            insert_events(&tx, &run_id, &events)?;
            tx.commit().map_err(db)
        })
        .await
    }

    async fn end(&self, run_id: &str, lease: &Lease, state: RunState, events: &[Event]) -> Result<(), Error> {
        let run_id = run_id.to_string();
        let owner = lease.owner.to_string();
        let until = expiry(lease);
        let events = encode_events(events)?;
        let finished = state.is_terminal() && state != RunState::Suspended;
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            renew_lease(&tx, &run_id, &owner, until)?;
            insert_events(&tx, &run_id, &events)?;
            tx.prepare_cached(
                "UPDATE loom_runs SET state = ?2, finished = ?3, lease_owner = NULL, lease_expires = NULL,
                    finished_at = CASE WHEN ?3 THEN ?4 ELSE finished_at END WHERE run_id = ?1",
            )
            .map_err(db)?
            .execute(params![run_id, state.as_str(), finished, millis(Utc::now())])
            .map_err(db)?;
            tx.commit().map_err(db)
        })
        .await
    }

    async fn acquire(&self, run_id: &str, lease: &Lease) -> Result<(), Error> {
        let run_id = run_id.to_string();
        let owner = lease.owner.to_string();
        let until = expiry(lease);
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let row: Option<(String, bool, Option<String>, Option<i64>, bool)> = tx
                .query_row(
                    "SELECT state, finished, lease_owner, lease_expires, record IS NOT NULL
                     FROM loom_runs WHERE run_id = ?1",
                    [&run_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()
                .map_err(db)?;
            let Some((state, finished, holder, expires, journaled)) = row else {
                return Err(Error::RunNotFound(run_id));
            };
            if finished {
                return Err(Error::RunFinished { state: parse_state(&state, &run_id)?, run_id });
            }
            if !journaled {
                return Err(Error::RunNotFound(run_id));
            }
            let now = millis(Utc::now());
            if let (Some(holder), Some(expires)) = (holder, expires)
                && expires > now
                && holder != owner
            {
                let until = DateTime::<Utc>::from_timestamp_millis(expires).map(|t| t.to_rfc3339()).unwrap_or_default();
                return Err(Error::LeaseHeld { run_id, owner: holder, until });
            }
            tx.execute(
                "UPDATE loom_runs SET lease_owner = ?2, lease_expires = ?3, state = 'running' WHERE run_id = ?1",
                params![run_id, owner, until],
            )
            .map_err(db)?;
            tx.commit().map_err(db)
        })
        .await
    }

    async fn renew(&self, run_id: &str, lease: &Lease) -> Result<(), Error> {
        let run_id = run_id.to_string();
        let owner = lease.owner.to_string();
        let until = expiry(lease);
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            renew_lease(&tx, &run_id, &owner, until)?;
            tx.commit().map_err(db)
        })
        .await
    }

    async fn decide(&self, run_id: &str, entry: &JournalEntry) -> Result<(), Error> {
        let run_id = run_id.to_string();
        let kind = entry.type_name();
        let text = json(entry)?;
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let row: Option<(String, bool)> = tx
                .query_row("SELECT state, finished FROM loom_runs WHERE run_id = ?1", [&run_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(db)?;
            match row {
                None => return Err(Error::RunNotFound(run_id)),
                Some((state, true)) => return Err(Error::RunFinished { state: parse_state(&state, &run_id)?, run_id }),
                Some(_) => {}
            }
            insert_entry(&tx, &run_id, kind, &text)?;
            tx.commit().map_err(db)
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
            let record: RunRecord =
                serde_json::from_str(&record).map_err(|e| corrupt(format!("run {run_id}: record"), e))?;
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
                .map(|(seq, text)| {
                    serde_json::from_str(&text).map_err(|e| corrupt(format!("run {run_id}: journal entry {seq}"), e))
                })
                .collect::<Result<Vec<JournalEntry>, Error>>()?;
            let events = load_events(conn, &run_id)?;
            Ok(Some(JournaledRun {
                record,
                entries,
                events,
                state: parse_state(&state, &run_id)?,
                finished,
                lease_owner,
                lease_expires_at: expires.and_then(DateTime::<Utc>::from_timestamp_millis),
            }))
        })
        .await
    }

    async fn list(&self, filter: &RunFilter) -> Result<Vec<JournalRunSummary>, Error> {
        let filter = filter.clone();
        self.call(move |conn| {
            let limit = if filter.limit == 0 { -1 } else { filter.limit as i64 };
            let mut stmt = conn
                .prepare_cached(
                    "SELECT run_id, session_id, user_id, state, finished, started_at,
                        (SELECT COUNT(*) FROM loom_journal j WHERE j.run_id = r.run_id)
                     FROM loom_runs r
                     WHERE record IS NOT NULL AND (?1 IS NULL OR session_id = ?1) AND (?2 IS NULL OR user_id = ?2) AND (?3 = 0 OR finished = 0)
                     ORDER BY run_id DESC LIMIT ?4",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![filter.session_id, filter.user_id, filter.unfinished, limit], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, bool>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, i64>(6)?,
                    ))
                })
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            rows.into_iter()
                .map(|(run_id, session_id, user_id, state, finished, started, entries)| {
                    Ok(JournalRunSummary {
                        state: parse_state(&state, &run_id)?,
                        started_at: DateTime::<Utc>::from_timestamp_millis(started).unwrap_or_default(),
                        run_id,
                        session_id,
                        user_id,
                        finished,
                        entries: entries as u64,
                    })
                })
                .collect()
        })
        .await
    }
}

#[async_trait::async_trait]
impl SessionStore for SqliteStore {
    async fn open_session(&self, record: &SessionRecord) -> Result<SessionRecord, Error> {
        let record = record.clone();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let existing = read_session(&tx, &record.id)?;
            let mut merged = existing.unwrap_or_else(|| SessionRecord { id: record.id.clone(), ..Default::default() });
            merged.metadata.extend(record.metadata);
            merged.extensions.extend(record.extensions);
            tx.prepare_cached(
                "INSERT INTO loom_sessions (id, metadata, extensions, closed, updated_at) VALUES (?1, ?2, ?3, 0, ?4)
                 ON CONFLICT (id) DO UPDATE SET metadata = ?2, extensions = ?3, closed = 0, updated_at = ?4",
            )
            .map_err(db)?
            .execute(params![merged.id, json(&merged.metadata)?, json(&merged.extensions)?, millis(Utc::now())])
            .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(merged)
        })
        .await
    }

    async fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>, Error> {
        let id = session_id.to_string();
        self.call(move |conn| read_session(conn, &id)).await
    }

    async fn history(&self, session_id: &str) -> Result<Vec<Message>, Error> {
        let id = session_id.to_string();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, message FROM loom_history WHERE session_id = ?1 ORDER BY id")
                .map_err(db)?;
            let rows = stmt
                .query_map([&id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            rows.into_iter()
                .map(|(row, text)| {
                    serde_json::from_str(&text).map_err(|e| corrupt(format!("session {id}: history row {row}"), e))
                })
                .collect()
        })
        .await
    }

    async fn append_history(&self, session_id: &str, run_id: &str, messages: &[Message]) -> Result<(), Error> {
        let id = session_id.to_string();
        let run_id = run_id.to_string();
        let rows = messages.iter().map(json).collect::<Result<Vec<String>, Error>>()?;
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            write_history(&tx, &id, &run_id, &rows)?;
            tx.commit().map_err(db)
        })
        .await
    }

    async fn save_run(&self, transcript: Arc<Transcript>) -> Result<(), Error> {
        self.save_finished_run(transcript, None).await
    }

    async fn save_finished_run(&self, transcript: Arc<Transcript>, history: Option<&[Message]>) -> Result<(), Error> {
        let row = RunRow::new(&transcript)?;
        let history = history.map(|h| h.iter().map(json).collect::<Result<Vec<String>, Error>>()).transpose()?;
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            row.write(&tx)?;
            if let Some(rows) = &history {
                write_history(&tx, &row.session_id, &row.run_id, rows)?;
            }
            tx.commit().map_err(db)
        })
        .await
    }

    async fn get_run(&self, session_id: &str, run_id: &str) -> Result<Option<Arc<Transcript>>, Error> {
        let session_id = session_id.to_string();
        let run_id = run_id.to_string();
        self.call(move |conn| {
            let text: Option<Option<String>> = conn
                .query_row(
                    "SELECT transcript FROM loom_runs WHERE run_id = ?1 AND session_id = ?2",
                    params![run_id, session_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            let Some(Some(text)) = text else { return Ok(None) };
            let mut t: Transcript =
                serde_json::from_str(&text).map_err(|e| corrupt(format!("run {run_id}: transcript"), e))?;
            t.events = Arc::from(load_events(conn, &run_id)?);
            Ok(Some(Arc::new(t)))
        })
        .await
    }

    async fn list_runs(&self, session_id: &str) -> Result<Vec<RunSummary>, Error> {
        let session_id = session_id.to_string();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT run_id, user_id, state, input, started_at, finished_at FROM loom_runs
                     WHERE session_id = ?1 AND transcript IS NOT NULL ORDER BY run_id",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([&session_id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                })
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            rows.into_iter()
                .map(|(run_id, user_id, state, input, started, finished)| {
                    let input = match input {
                        Some(text) => {
                            serde_json::from_str(&text).map_err(|e| corrupt(format!("run {run_id}: input"), e))?
                        }
                        None => RunInput::Prompt(String::new()),
                    };
                    Ok(RunSummary {
                        state: parse_state(&state, &run_id)?,
                        run_id,
                        session_id: session_id.clone(),
                        user_id,
                        input,
                        started_at: DateTime::<Utc>::from_timestamp_millis(started).unwrap_or_default(),
                        finished_at: finished.and_then(DateTime::<Utc>::from_timestamp_millis),
                    })
                })
                .collect()
        })
        .await
    }

    async fn close_session(&self, session_id: &str) -> Result<(), Error> {
        let id = session_id.to_string();
        self.call(move |conn| {
            conn.execute("UPDATE loom_sessions SET closed = 1 WHERE id = ?1", [&id]).map_err(db)?;
            Ok(())
        })
        .await
    }
}

/// A transcript as stored: the row's columns, and its events apart.
struct RunRow {
    run_id: String,
    session_id: String,
    user_id: Option<String>,
    state: RunState,
    finished: bool,
    input: String,
    transcript: String,
    started: i64,
    finished_at: Option<i64>,
    events: Vec<(i64, String)>,
}

impl RunRow {
    fn new(transcript: &Transcript) -> Result<Self, Error> {
        let events = encode_events(&transcript.events)?;
        let mut bare = transcript.clone();
        bare.events = Arc::from(Vec::new());
        Ok(RunRow {
            transcript: json(&bare)?,
            input: json(&bare.input)?,
            started: millis(bare.started_at.or(bare.finished_at).unwrap_or_else(Utc::now)),
            finished_at: bare.finished_at.map(millis),
            finished: bare.state.is_terminal() && bare.state != RunState::Suspended,
            state: bare.state,
            run_id: bare.run_id,
            session_id: bare.session_id,
            user_id: bare.user_id,
            events,
        })
    }

    fn write(&self, tx: &rusqlite::Transaction<'_>) -> Result<(), Error> {
        let journaled: bool = tx
            .prepare_cached(
                "INSERT INTO loom_runs (run_id, session_id, user_id, state, finished, input, transcript, started_at,
                finished_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (run_id) DO UPDATE SET state = ?4, input = ?6, transcript = ?7, finished_at = ?9,
                finished = CASE WHEN record IS NULL THEN ?5 ELSE finished END
             RETURNING record IS NOT NULL",
            )
            .map_err(db)?
            .query_row(
                params![
                    self.run_id,
                    self.session_id,
                    self.user_id,
                    self.state.as_str(),
                    self.finished,
                    self.input,
                    self.transcript,
                    self.started,
                    self.finished_at
                ],
                |r| r.get(0),
            )
            .map_err(db)?;
        // A journaled run's events are written by the journal, at its boundaries and final
        // commit, so a resumed run finds exactly the events its journal covers.
        if !journaled {
            insert_events(tx, &self.run_id, &self.events)?;
        }
        Ok(())
    }
}

fn write_history(tx: &rusqlite::Transaction<'_>, session_id: &str, run_id: &str, rows: &[String]) -> Result<(), Error> {
    let mut stmt = tx
        .prepare_cached("INSERT OR IGNORE INTO loom_history (session_id, run_id, idx, message) VALUES (?1, ?2, ?3, ?4)")
        .map_err(db)?;
    for (i, m) in rows.iter().enumerate() {
        stmt.execute(params![session_id, run_id, i as i64, m]).map_err(db)?;
    }
    Ok(())
}

fn read_session(conn: &Connection, id: &str) -> Result<Option<SessionRecord>, Error> {
    let row: Option<(String, String)> = conn
        .query_row("SELECT metadata, extensions FROM loom_sessions WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db)?;
    let Some((metadata, extensions)) = row else { return Ok(None) };
    Ok(Some(SessionRecord {
        id: id.to_string(),
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt(format!("session {id}: metadata"), e))?,
        extensions: serde_json::from_str(&extensions).map_err(|e| corrupt(format!("session {id}: extensions"), e))?,
    }))
}
