//! [`PostgresAuditLog`]: the signed audit chain in a PostgreSQL table (feature `postgres`).

use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tokio_postgres::Client;

use super::audit::{AuditEntry, GENESIS_HASH, Prepared, Signer, Verifier, VerifyReport, now_rfc3339, sha256_hex};
use super::{AuditLog, AuditRecord};
use crate::Error;
use crate::store::PostgresStore;
use crate::store::postgres::{PgPool, PooledConn};

/// The table used unless [`PostgresAuditLog::table`] names another.
pub const DEFAULT_AUDIT_TABLE: &str = "loom_audit_log";

/// An audit log in a PostgreSQL table: the same signed, hash-chained
/// [`AuditEntry`] as [`FileAuditLog`](super::FileAuditLog) writes (the format is documented there),
/// payloads redacted first ([`redact`](super::redact)), one row per entry.
///
/// # The table
///
/// Created if missing (on first use), named `loom_audit_log` unless [`PostgresAuditLog::table`]
/// says otherwise:
///
/// | column | type | holds |
/// | --- | --- | --- |
/// | `seq` | `BIGINT PRIMARY KEY` | the entry's `seq` |
/// | `at` | `TIMESTAMPTZ` | `at` (microseconds, UTC) |
/// | `run_id`, `session_id` | `TEXT` | the scope |
/// | `user_id` | `TEXT NULL` | the user, if any |
/// | `action` | `TEXT` | the action |
/// | `payload` | `JSONB` | the redacted payload, for queries |
/// | `payload_text` | `TEXT` | the same payload in canonical JSON, as hashed |
/// | `prev_hash`, `hash`, `signature` | `TEXT` | the chain |
///
/// JSONB reorders keys and normalizes numbers, so the hash is over `payload_text`, and
/// [`PostgresAuditLog::verify`] reads `payload_text`; the `payload` column is a copy for querying
/// and is not covered by verification.
///
/// # Appending, across tasks, processes and machines
///
/// Each append runs one transaction: it takes `pg_advisory_xact_lock` with a key derived from the
/// table name, reads the last row (`ORDER BY seq DESC LIMIT 1`), builds the next entry (`seq + 1`,
/// `prev_hash` = the last `hash` or [`GENESIS_HASH`]), inserts it and commits, which releases the
/// lock. So any number of [`PostgresAuditLog`] values, in any number of processes, appending to one
/// table keep one valid chain. Redaction and serialization happen before the transaction.
///
/// Connections come from a pool (up to 8, opened as needed on the current tokio runtime; a broken
/// one is replaced on the next call), the same pool as [`PostgresStore`]'s: build the log with
/// [`PostgresAuditLog::with_store`] to share the store's.
#[derive(Clone)]
pub struct PostgresAuditLog {
    inner: Arc<Inner>,
    table: Arc<str>,
    created: Arc<OnceCell<()>>,
}

struct Inner {
    pool: Arc<PgPool>,
    signer: Signer,
}

impl std::fmt::Debug for PostgresAuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresAuditLog").field("table", &self.table).finish_non_exhaustive()
    }
}

fn store_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::store(format!("postgres audit log: {what}: {e}"), e)
}

impl PostgresAuditLog {
    /// Connects to the database at `url` (a `postgres://` URL or a key-value connection string,
    /// without TLS), signing with `secret`, which must not be empty. Connections run as tasks on
    /// the current tokio runtime; a URL that does not parse, a failure to connect, or no runtime is
    /// an [`Error::Store`].
    pub async fn connect(url: &str, secret: impl AsRef<[u8]>) -> Result<PostgresAuditLog, Error> {
        let signer = Signer::new(secret.as_ref())?;
        let pool = PgPool::new(url).map_err(|e| match e {
            Error::Config(msg) => Error::Store(format!("postgres audit log: connecting: {msg}").into()),
            other => other,
        })?;
        let log = Self::from_pool(Arc::new(pool), signer);
        let conn = log.conn().await?;
        log.inner.pool.put(conn);
        Ok(log)
    }

    /// An audit log in the database of `store`, sharing its connection pool, signing with
    /// `secret` (which must not be empty). Connects on first use.
    pub fn with_store(store: &PostgresStore, secret: impl AsRef<[u8]>) -> Result<PostgresAuditLog, Error> {
        Ok(Self::from_pool(store.pool().clone(), Signer::new(secret.as_ref())?))
    }

    fn from_pool(pool: Arc<PgPool>, signer: Signer) -> PostgresAuditLog {
        PostgresAuditLog {
            inner: Arc::new(Inner { pool, signer }),
            table: DEFAULT_AUDIT_TABLE.into(),
            created: Arc::new(OnceCell::new()),
        }
    }

    /// A pooled connection, the table created on first use.
    async fn conn(&self) -> Result<PooledConn, Error> {
        let mut conn = self.inner.pool.get().await?;
        if let Err(e) = self.ensure_table(&mut conn.client).await {
            self.inner.pool.put(conn);
            return Err(e);
        }
        Ok(conn)
    }

    /// Uses the table `name` (created on first use if missing) instead of `loom_audit_log`. The
    /// name must match `[a-z_][a-z0-9_]*` and be at most 63 bytes, else [`Error::Config`].
    pub fn table(mut self, name: &str) -> Result<Self, Error> {
        if !valid_table_name(name) {
            return Err(Error::Config(format!(
                "bad audit table name {name:?}: use [a-z_][a-z0-9_]*, at most 63 bytes"
            )));
        }
        self.table = name.into();
        self.created = Arc::new(OnceCell::new());
        Ok(self)
    }

    /// The table's name.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// The advisory lock key of the table: the first 8 bytes of SHA-256 of `loom_audit_log:<table>`.
    fn lock_key(&self) -> i64 {
        let digest = Sha256::digest(format!("loom_audit_log:{}", self.table).as_bytes());
        let mut key = [0u8; 8];
        key.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(key)
    }

    /// Creates the table if it is missing, once per value (under the advisory lock, since
    /// concurrent `CREATE TABLE IF NOT EXISTS` can collide).
    async fn ensure_table(&self, client: &mut Client) -> Result<(), Error> {
        if self.created.initialized() {
            return Ok(());
        }
        let tx = client.transaction().await.map_err(|e| store_error("beginning", e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&self.lock_key()])
            .await
            .map_err(|e| store_error("locking", e))?;
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {} (
                seq BIGINT PRIMARY KEY,
                at TIMESTAMPTZ NOT NULL,
                run_id TEXT NOT NULL,
                session_id TEXT NOT NULL,
                user_id TEXT NULL,
                action TEXT NOT NULL,
                payload JSONB NOT NULL,
                payload_text TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL,
                signature TEXT NOT NULL
            )",
            self.table
        );
        tx.batch_execute(&create).await.map_err(|e| store_error(&format!("creating table {}", self.table), e))?;
        tx.commit().await.map_err(|e| store_error("committing", e))?;
        let _ = self.created.set(());
        Ok(())
    }

    async fn insert(&self, prepared: &Prepared) -> Result<(), Error> {
        let mut conn = self.conn().await?;
        let result = self.insert_on(&mut conn.client, prepared).await;
        self.inner.pool.put(conn);
        result
    }

    async fn insert_on(&self, client: &mut Client, prepared: &Prepared) -> Result<(), Error> {
        let tx = client.transaction().await.map_err(|e| store_error("beginning", e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&self.lock_key()])
            .await
            .map_err(|e| store_error("locking", e))?;
        let last = tx
            .query_opt(&format!("SELECT seq, hash FROM {} ORDER BY seq DESC LIMIT 1", self.table), &[])
            .await
            .map_err(|e| store_error("reading the last entry", e))?;
        let (seq, prev_hash) = match last {
            Some(row) => {
                let seq: i64 = row.try_get(0).map_err(|e| store_error("reading seq", e))?;
                let hash: String = row.try_get(1).map_err(|e| store_error("reading hash", e))?;
                (u64::try_from(seq).map_err(|e| store_error("a negative seq in the table", e))?, hash)
            }
            None => (0, GENESIS_HASH.to_string()),
        };
        let seq = seq + 1;
        let at = now_rfc3339();
        let fields = prepared.fields(seq, &at, &prev_hash);
        let hash = sha256_hex(&fields.content());
        let signature = self.inner.signer.sign(&hash);
        let seq_db = i64::try_from(seq).map_err(|e| store_error("seq out of range", e))?;
        let user_id = prepared.scope.user_id.as_deref();
        let sql = format!(
            "INSERT INTO {} (seq, at, run_id, session_id, user_id, action, payload, payload_text, prev_hash, hash, \
             signature) VALUES ($1, $2::text::timestamptz, $3, $4, $5, $6, $7::text::jsonb, $7, $8, $9, $10)",
            self.table
        );
        tx.execute(
            &sql,
            &[
                &seq_db,
                &at,
                &&*prepared.scope.run_id,
                &&*prepared.scope.session_id,
                &user_id,
                &prepared.action.as_str(),
                &prepared.payload_json,
                &prev_hash,
                &hash,
                &signature,
            ],
        )
        .await
        .map_err(|e| store_error("inserting", e))?;
        tx.commit().await.map_err(|e| store_error("committing", e))
    }

    /// Checks the table: every entry's hash and signature, the chain, the order, as
    /// [`FileAuditLog::verify`](super::FileAuditLog::verify) checks a file. Rows are read in `seq`
    /// order, so a [`Problem`](super::Problem)'s `line` is the row's position in that order (from 1).
    /// Fails only when the table cannot be read; what is wrong with it is in the report.
    pub async fn verify(&self) -> Result<VerifyReport, Error> {
        let conn = self.conn().await?;
        let sql = format!(
            "SELECT seq, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), run_id, session_id, \
             user_id, action, payload_text, prev_hash, hash, signature FROM {} ORDER BY seq",
            self.table
        );
        let rows = conn.client.query(&sql, &[]).await.map_err(|e| store_error("reading the entries", e));
        self.inner.pool.put(conn);
        let rows = rows?;
        let mut verifier = Verifier::new(&self.inner.signer);
        for (i, row) in rows.iter().enumerate() {
            let line = i + 1;
            let read = |e: tokio_postgres::Error| store_error("reading a row", e);
            let seq: i64 = row.try_get(0).map_err(read)?;
            let payload_text: String = row.try_get(6).map_err(read)?;
            let payload = match serde_json::from_str::<Value>(&payload_text) {
                Ok(payload) => payload,
                Err(e) => {
                    verifier.push_malformed(line, u64::try_from(seq).ok(), format!("payload_text is not JSON ({e})"));
                    continue;
                }
            };
            let Ok(seq) = u64::try_from(seq) else {
                verifier.push_malformed(line, None, format!("seq {seq} is not a positive integer"));
                continue;
            };
            let entry = AuditEntry {
                seq,
                at: row.try_get(1).map_err(read)?,
                run_id: row.try_get(2).map_err(read)?,
                session_id: row.try_get(3).map_err(read)?,
                user_id: row.try_get(4).map_err(read)?,
                action: row.try_get(5).map_err(read)?,
                payload,
                prev_hash: row.try_get(7).map_err(read)?,
                hash: row.try_get(8).map_err(read)?,
                signature: row.try_get(9).map_err(read)?,
            };
            verifier.push_entry(line, &entry);
        }
        Ok(verifier.finish())
    }
}

/// `[a-z_][a-z0-9_]*`, at most 63 bytes (PostgreSQL's identifier limit): safe to put in SQL as is.
fn valid_table_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 63
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[async_trait::async_trait]
impl AuditLog for PostgresAuditLog {
    async fn append(&self, record: AuditRecord) -> Result<(), Error> {
        let prepared = Prepared::new(record);
        self.insert(&prepared).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn table_names_are_checked() {
        for name in ["loom_audit_log", "_x", "a1_b2", &"a".repeat(63)] {
            assert!(valid_table_name(name), "{name}");
        }
        for name in ["", "1abc", "Loom", "a-b", "a b", "a;drop table x", "\"x\"", "é", &"a".repeat(64)] {
            assert!(!valid_table_name(name), "{name}");
        }
    }
}
