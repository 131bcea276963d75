//! The SQLite journal and session store: one database file holds sessions, their history, runs,
//! transcripts, events, artifacts and run journals.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use crate::error::Error;
use crate::event::Event;
use crate::store::sql::{decode_event, expand, now_ms};
use loom_core::journal::{Lease, LeaseView, may_write};

mod api_keys;
mod journal;
mod queue;
mod sessions;
mod signals;
mod tenant_usage;

#[cfg(test)]
mod upkeep_tests;

/// The newest schema this version reads and writes.
pub(crate) const SCHEMA_VERSION: i64 = 9;

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

/// A SQLite failure, keeping the driver's error as the source.
pub(super) fn db(e: rusqlite::Error) -> Error {
    Error::store(format!("sqlite: {e}"), e)
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
        let mut conn =
            Connection::open(&path).map_err(|e| Error::store(format!("opening {}: {e}", path.display()), e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(db)?;
        // Every statement a run uses stays prepared: rusqlite keeps 16 by default, fewer than the
        // store's statements, and an evicted one is parsed again on its next use (each run).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        plans_ignore_bound_values(&conn)?;
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
            .map_err(|e| Error::store(format!("starting the SQLite thread: {e}"), e))?;
        Ok(SqliteStore { inline: None, tx, path: Arc::new(path), _checkpointer: Arc::new(checkpointer) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An id of this store's connection, shared by its clones (see `Journal::database_id`).
    fn database_id(&self) -> usize {
        Arc::as_ptr(&self.path) as usize
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
        rx.await.map_err(|e| Error::store("the SQLite thread stopped during a call", e))?
    }
}

/// Turns on SQLite's query planner stability guarantee (QPSG): a statement's plan no longer
/// depends on the values bound to it. Without it, SQLite marks a statement to be prepared again
/// whenever a parameter it looked at while planning is bound anew (`LIMIT ?n`, an equality left
/// as a filter, a partial index's condition), and rusqlite clears the bindings of every cached
/// statement it takes back, so such a statement was parsed and planned again at every use: the
/// session history and pending-signal reads of every run, each paginated list, each queue claim.
fn plans_ignore_bound_values(conn: &Connection) -> Result<(), Error> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map_err(db)?;
    Ok(())
}

/// The WAL's length (in frames of one page) past which a checkpoint starts the log over.
const WAL_MAX_FRAMES: i64 = 4096;

/// New frames per PASSIVE pass below which the checkpoint thread stops catching up and restarts
/// the log.
const CATCH_UP_FRAMES: i64 = 1024;

/// A thread that checkpoints the WAL every 100 ms while the store is open, and once more when
/// the store is dropped. PASSIVE checkpoints never block writers, and a log they copy entirely is
/// started over by the next write; but under continuous writes new frames arrive while they copy,
/// so the log is never seen entirely copied and grows without end (838 MB after 6,000 durable
/// runs in a row, measured), even when each checkpoint copied every frame it saw. So once the log
/// holds more than 4,096 frames (16 MiB) a RESTART checkpoint follows, whatever the PASSIVE one
/// copied: it waits for the writer between two transactions, copies the rest, and makes the next
/// write start the log over, which bounds it. Writers wait while it copies, so PASSIVE passes
/// catch up first and leave it only the last frames.
fn spawn_checkpointer(path: &Path) -> Result<mpsc::Sender<()>, Error> {
    let conn = Connection::open(path).map_err(|e| Error::store(format!("opening {}: {e}", path.display()), e))?;
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
                        if let Some((mut log, _)) = checkpoint("PASSIVE")
                            && log > WAL_MAX_FRAMES
                        {
                            // Catch up first: each PASSIVE pass copies what arrived during the one
                            // before, without blocking the writer, so the RESTART (which holds the
                            // write lock while it copies) has only the last frames left to copy.
                            for _ in 0..4 {
                                match checkpoint("PASSIVE") {
                                    Some((now, _)) if now - log > CATCH_UP_FRAMES => log = now,
                                    _ => break,
                                }
                            }
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
        .map_err(|e| Error::store(format!("starting the SQLite checkpoint thread: {e}"), e))?;
    Ok(tx)
}

/// Version 2: sessions belong to a user. A session is keyed by (owner, id), where the owner is the
/// user id or `''` for none; history rows carry their session's owner. Existing data is split by
/// the user each run ran for: a session id that two users shared becomes one session per user,
/// each holding only its own user's history.
/// A `BEGIN IMMEDIATE` transaction whose `BEGIN` and `COMMIT` are prepared once per connection
/// (rusqlite's `Transaction` parses both on every use); rolled back if dropped uncommitted. It
/// derefs to the connection.
pub(super) struct Immediate<'a> {
    conn: &'a Connection,
    open: bool,
}

impl<'a> Immediate<'a> {
    /// Begins the transaction (taking the write lock now, waiting up to the busy timeout).
    pub(super) fn begin(conn: &'a mut Connection) -> Result<Immediate<'a>, Error> {
        conn.prepare_cached("BEGIN IMMEDIATE").map_err(db)?.execute([]).map_err(db)?;
        Ok(Immediate { conn, open: true })
    }

    /// Commits it.
    pub(super) fn commit(mut self) -> Result<(), Error> {
        self.conn.prepare_cached("COMMIT").map_err(db)?.execute([]).map_err(db)?;
        self.open = false;
        Ok(())
    }
}

impl std::ops::Deref for Immediate<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Immediate<'_> {
    fn drop(&mut self) {
        if self.open && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// How many prepared statements a connection keeps (all of the store's, with room to spare).
const STATEMENT_CACHE: usize = 128;

const MIGRATE_V2: &str = "
    ALTER TABLE loom_history ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    UPDATE loom_history SET owner = COALESCE(
        (SELECT r.user_id FROM loom_runs r WHERE r.run_id = loom_history.run_id), '');
    CREATE INDEX loom_history_by_owner ON loom_history (session_id, owner, id);
    CREATE TABLE loom_sessions_v2 (
        owner TEXT NOT NULL, id TEXT NOT NULL, metadata TEXT NOT NULL, extensions TEXT NOT NULL,
        closed INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL, PRIMARY KEY (owner, id));
    INSERT OR IGNORE INTO loom_sessions_v2 (owner, id, metadata, extensions, closed, updated_at)
        SELECT o.owner, s.id, s.metadata, s.extensions, s.closed, s.updated_at FROM loom_sessions s
        JOIN (SELECT owner, session_id FROM loom_history
              UNION SELECT COALESCE(user_id, ''), session_id FROM loom_runs) o ON o.session_id = s.id;
    INSERT OR IGNORE INTO loom_sessions_v2 (owner, id, metadata, extensions, closed, updated_at)
        SELECT '', id, metadata, extensions, closed, updated_at FROM loom_sessions s
        WHERE NOT EXISTS (SELECT 1 FROM loom_sessions_v2 v WHERE v.id = s.id);
    DROP TABLE loom_sessions;
    ALTER TABLE loom_sessions_v2 RENAME TO loom_sessions;
    PRAGMA user_version = 2;";

/// Version 3: sessions carry a run lock (`lock_holder`, `lock_expires`) that serializes their runs
/// across processes.
const MIGRATE_V3: &str = "
    ALTER TABLE loom_sessions ADD COLUMN lock_holder TEXT;
    ALTER TABLE loom_sessions ADD COLUMN lock_expires INTEGER;
    PRAGMA user_version = 3;";

/// Version 4: a session's summary (context management), one row per session, replaced by each
/// run that compacts: the next run starts from it instead of the history it covers.
const MIGRATE_V4: &str = "
    CREATE TABLE loom_session_summaries (
        owner TEXT NOT NULL, session_id TEXT NOT NULL, summary TEXT NOT NULL, updated_at INTEGER NOT NULL,
        PRIMARY KEY (owner, session_id)) WITHOUT ROWID;
    PRAGMA user_version = 4;";

/// Version 6: a run may be another run's child (`parent_run_id`: an agent used as a tool, a
/// supervisor's worker, a workflow's agent node). Existing runs have no parent.
/// (The column is added only where missing, so a database marked older than it is does not fail.)
const MIGRATE_V6: &str = "
    UPDATE loom_runs SET parent_run_id = json_extract(record, '$.parent_run_id') WHERE record IS NOT NULL;
    CREATE INDEX IF NOT EXISTS loom_runs_by_parent ON loom_runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
    PRAGMA user_version = 6;";
/// Version 7: API keys for `loom serve` (SHA-256 hashes only; each key bound to a tenant).
const MIGRATE_V7: &str = "
    CREATE TABLE IF NOT EXISTS loom_api_keys (
        id TEXT PRIMARY KEY, tenant TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0);
    PRAGMA user_version = 7;";

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
    if version < 2 {
        tx.execute_batch(MIGRATE_V2).map_err(db)?;
    }
    if version < 3 {
        tx.execute_batch(MIGRATE_V3).map_err(db)?;
    }
    if version < 4 {
        tx.execute_batch(MIGRATE_V4).map_err(db)?;
    }
    if version < 5 {
        tx.execute_batch(signals::MIGRATE_V5).map_err(db)?;
    }
    if version < 6 {
        let has_column: bool = tx
            .query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info('loom_runs') WHERE name = 'parent_run_id'",
                [],
                |r| r.get(0),
            )
            .map_err(db)?;
        if !has_column {
            tx.execute_batch("ALTER TABLE loom_runs ADD COLUMN parent_run_id TEXT;").map_err(db)?;
        }
        tx.execute_batch(MIGRATE_V6).map_err(db)?;
    }
    if version < 7 {
        tx.execute_batch(MIGRATE_V7).map_err(db)?;
    }
    if version < 8 {
        for (column, declaration) in V8_COLUMNS {
            let has_column: bool = tx
                .query_row("SELECT COUNT(*) > 0 FROM pragma_table_info('loom_runs') WHERE name = ?1", [column], |r| {
                    r.get(0)
                })
                .map_err(db)?;
            if !has_column {
                tx.execute_batch(&format!("ALTER TABLE loom_runs ADD COLUMN {column} {declaration};")).map_err(db)?;
            }
        }
        tx.execute_batch(MIGRATE_V8).map_err(db)?;
    }
    if version < 9 {
        tx.execute_batch(tenant_usage::MIGRATE_V9).map_err(db)?;
    }
    tx.commit().map_err(db)
}

/// Version 8 (scale-out): each run's fencing number (incremented at every takeover; every write
/// under a lease carries it), and the durable run queue in `loom_runs` itself: `agent` (the agent
/// that runs it; set only for queued runs), `request` (input, context and metadata as JSON),
/// `queued_at`, and `cancel_requested` (a cancel recorded for the process that executes it).
const V8_COLUMNS: [(&str, &str); 5] = [
    ("fence", "INTEGER NOT NULL DEFAULT 0"),
    ("agent", "TEXT"),
    ("request", "TEXT"),
    ("queued_at", "INTEGER"),
    ("cancel_requested", "INTEGER NOT NULL DEFAULT 0"),
];

const MIGRATE_V8: &str = "
    CREATE INDEX IF NOT EXISTS loom_runs_queued ON loom_runs (agent, queued_at) WHERE agent IS NOT NULL AND finished = 0;
    CREATE INDEX IF NOT EXISTS loom_runs_by_finish ON loom_runs (finished_at) WHERE finished = 1;
    PRAGMA user_version = 8;";

/// Appends a journal entry after the run's last one (the caller's transaction holds the write lock).
pub(super) fn insert_entry(tx: &rusqlite::Connection, run_id: &str, kind: &str, entry: &str) -> Result<(), Error> {
    tx.prepare_cached(INSERT_ENTRY).map_err(db)?.execute(params![run_id, kind, entry]).map_err(db)?;
    Ok(())
}

/// The journal append. `CAST(?1 AS TEXT)`, not a bare `?1`, in the `MAX(seq)` lookup: SQLite
/// re-prepares (parses and plans again) a statement whose `MAX` over an index is keyed by a bare
/// parameter each time that parameter is bound anew, which here was every append (~9 µs each);
/// the plan is the same either way (a search of the primary key).
const INSERT_ENTRY: &str = "INSERT INTO loom_journal (run_id, seq, kind, entry) VALUES (?1,
    (SELECT COALESCE(MAX(seq) + 1, 0) FROM loom_journal WHERE run_id = CAST(?1 AS TEXT)), ?2, ?3)";

pub(super) fn insert_events(tx: &rusqlite::Connection, run_id: &str, events: &[(i64, String)]) -> Result<(), Error> {
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

/// Renews the lease held by `lease`'s owner until `until`; `RunNotFound` or `LeaseLost` (the lease
/// rule) when it does not hold the run.
pub(super) fn renew_lease(tx: &rusqlite::Connection, run_id: &str, lease: &Lease, until: i64) -> Result<(), Error> {
    let n = tx
        .prepare_cached(
            "UPDATE loom_runs SET lease_expires = ?1 WHERE run_id = ?2 AND lease_owner = ?3 AND fence = ?4
                AND finished = 0",
        )
        .map_err(db)?
        .execute(params![until, run_id, &*lease.owner, lease.fence_i64()])
        .map_err(db)?;
    if n == 0 {
        // The update matched nothing: the rule says why (unknown run, finished, another owner).
        return with_lease(tx, run_id, |view| {
            may_write(run_id, view, lease)?;
            Err(Error::LeaseLost { run_id: run_id.to_string() })
        });
    }
    Ok(())
}

/// Checks that `lease` holds the run, renewing it only once half of it has passed: most journal
/// writes then leave the run's row alone.
pub(super) fn hold_lease(tx: &rusqlite::Connection, run_id: &str, lease: &Lease) -> Result<(), Error> {
    let expires =
        with_lease(tx, run_id, |view| may_write(run_id, view, lease).map(|()| view.and_then(|v| v.expires_ms)))?;
    let now = now_ms();
    if lease.due_for_renewal(expires, now) {
        renew_lease(tx, run_id, lease, lease.expiry_ms(now))?;
    }
    Ok(())
}

/// A run's lease columns: state, finished, journaled, owner, expiry, fence.
type LeaseColumns = (String, bool, bool, Option<String>, Option<i64>, i64);

/// Reads the run's lease and hands it to the lease rule.
pub(super) fn with_lease<T>(
    conn: &Connection,
    run_id: &str,
    rule: impl FnOnce(Option<LeaseView<'_>>) -> Result<T, Error>,
) -> Result<T, Error> {
    let row: Option<LeaseColumns> = conn
        .prepare_cached(
            "SELECT state, finished, record IS NOT NULL, lease_owner, lease_expires, fence FROM loom_runs
             WHERE run_id = ?1",
        )
        .map_err(db)?
        .query_row([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .optional()
        .map_err(db)?;
    let Some((state, finished, journaled, owner, expires_ms, fence)) = row else { return rule(None) };
    let state = crate::store::sql::parse_state(&state, run_id)?;
    let fence = u64::try_from(fence).unwrap_or_default();
    rule(Some(LeaseView { state, finished, journaled, owner: owner.as_deref(), expires_ms, fence }))
}

pub(super) fn load_events(conn: &Connection, run_id: &str) -> Result<Vec<Event>, Error> {
    let mut stmt =
        conn.prepare_cached("SELECT seq, event FROM loom_events WHERE run_id = ?1 ORDER BY seq").map_err(db)?;
    let rows = stmt
        .query_map([run_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    rows.into_iter()
        .map(|(seq, text)| {
            let text = expand(&text, || run_input(conn, run_id), || format!("run {run_id}: event {seq}"))?;
            decode_event(run_id, seq, &text)
        })
        .collect()
}

/// A run's `input` column (read for rows that store a large prompt once).
pub(super) fn run_input(conn: &Connection, run_id: &str) -> Result<Option<String>, Error> {
    conn.prepare_cached("SELECT input FROM loom_runs WHERE run_id = ?1")
        .map_err(db)?
        .query_row([run_id], |r| r.get(0))
        .optional()
        .map(Option::flatten)
        .map_err(db)
}

#[cfg(test)]
mod insert_entry_tests {
    use rusqlite::{Connection, StatementStatus, params};

    /// The append is prepared once and reused, not re-prepared at each new run id.
    #[test]
    fn the_journal_append_is_not_re_prepared() {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch(
            "CREATE TABLE loom_journal (run_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
                 entry TEXT NOT NULL, PRIMARY KEY (run_id, seq)) WITHOUT ROWID;",
        )
        .expect("schema");
        for i in 0..6 {
            super::insert_entry(&conn, &format!("run_{}", i % 2), "kind", "{}").expect("append");
        }
        let statement = conn.prepare_cached(super::INSERT_ENTRY).expect("cached");
        assert_eq!(statement.get_status(StatementStatus::RePrepare), 0);
        let seqs: Vec<i64> = conn
            .prepare("SELECT seq FROM loom_journal WHERE run_id = 'run_1' ORDER BY seq")
            .expect("query")
            .query_map(params![], |r| r.get(0))
            .expect("rows")
            .map(|r| r.expect("seq"))
            .collect();
        assert_eq!(seqs, vec![0, 1, 2]);
    }
}
