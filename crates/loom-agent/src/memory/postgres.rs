//! The PostgreSQL memory store (feature `postgres`): items in `loom_mem_items` with a generated
//! `tsvector` column under a GIN index for text, vectors in a `real[]` column searched through
//! pgvector's HNSW indexes when the extension (≥ 0.8) is there (`pgvector.rs`), else with an exact
//! scan of the owner's vectors through the in-process cache (`vectors.rs`), working blocks in
//! `loom_mem_blocks`. Writes that must not interleave for one owner (facts and their
//! supersession, episodes) take a transaction-scoped advisory lock on the owner.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::OnceCell;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Row};

use super::MemoryStore;
use super::rows::{EpisodeData, ITEM_COLUMNS, ItemRow, corrupt_row, ms, time};
use super::types::{
    Block, Embedding, Episode, Fact, Forget, MemoryItem, NewEpisode, NewFact, Owner, check_block_name, episode_text,
    query_terms,
};
use super::vector_cache::VectorCache;
use crate::error::Error;
use crate::store::postgres::{PgPool, PooledConn, pg};

/// The newest memory schema this version reads and writes: 1, the memory tables; 2, the knowledge
/// chunk tables (`knowledge.rs`).
const SCHEMA_VERSION: i64 = 2;

/// The `pg_advisory_xact_lock` key that serializes memory migrations ("loom_mem" in ASCII).
const MIGRATION_LOCK: i64 = 0x6c6f_6f6d_5f6d_656d;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS loom_mem_items (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL, agent TEXT NOT NULL,
        kind TEXT NOT NULL, key TEXT, text TEXT NOT NULL, data TEXT NOT NULL,
        importance DOUBLE PRECISION NOT NULL, run_id TEXT,
        active BOOLEAN NOT NULL, extracted BOOLEAN NOT NULL,
        valid_from BIGINT NOT NULL, valid_to BIGINT, recorded_at BIGINT NOT NULL,
        superseded_by TEXT, source_run TEXT,
        embed_model TEXT, embedding REAL[],
        tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED);
    CREATE INDEX IF NOT EXISTS loom_mem_items_recent ON loom_mem_items (user_id, agent, active, recorded_at);
    CREATE UNIQUE INDEX IF NOT EXISTS loom_mem_items_run ON loom_mem_items (user_id, agent, run_id)
        WHERE kind = 'episode';
    CREATE INDEX IF NOT EXISTS loom_mem_items_same ON loom_mem_items (user_id, agent, lower(text))
        WHERE kind = 'fact' AND active;
    CREATE INDEX IF NOT EXISTS loom_mem_items_key ON loom_mem_items (user_id, agent, key)
        WHERE kind = 'fact' AND active;
    CREATE INDEX IF NOT EXISTS loom_mem_items_tsv ON loom_mem_items USING GIN (tsv);
    CREATE TABLE IF NOT EXISTS loom_mem_blocks (
        user_id TEXT NOT NULL, agent TEXT NOT NULL, name TEXT NOT NULL, text TEXT NOT NULL,
        updated_at BIGINT NOT NULL, PRIMARY KEY (user_id, agent, name));";

/// Memory in a PostgreSQL database (feature `postgres`), safe to share between processes and
/// machines. [`PostgresMemoryStore::new`] only checks the URL; the first call connects and creates
/// the tables. Vector search scans an in-process cache of the owner's vectors (quantized to `i8`,
/// filled at the owner's first vector search, kept current by this store's writes and dropped
/// when anyone else writes the owner's items — seen through a per-owner write counter that a
/// trigger keeps in the writing transaction; at most 256 MiB by default, see
/// [`PostgresMemoryStore::vector_cache_bytes`]) and rescores the candidates exactly.
#[derive(Clone)]
pub struct PostgresMemoryStore {
    pool: Arc<PgPool>,
    migrated: Arc<OnceCell<VectorPath>>,
    vectors: Arc<Mutex<VectorCache>>,
    /// Whether to use pgvector when the server has it.
    pgvector: bool,
    /// The HNSW indexes (model, dimension) this store made sure of.
    hnsw_indexes: Arc<Mutex<HashSet<(String, usize)>>>,
}

/// The default budget of the vector cache.
const VECTOR_CACHE_BYTES: usize = 256 << 20;

impl std::fmt::Debug for PostgresMemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresMemoryStore").field("host", &self.pool.host()).field("db", &self.pool.dbname()).finish()
    }
}

impl PostgresMemoryStore {
    /// A store for the database at `url`, without connecting.
    ///
    /// # Errors
    /// A URL that does not parse is [`Error::Config`] (never repeating the password).
    pub fn new(url: &str) -> Result<Self, Error> {
        Ok(PostgresMemoryStore {
            pool: Arc::new(PgPool::new(url)?),
            migrated: Arc::new(OnceCell::new()),
            vectors: Arc::new(Mutex::new(VectorCache::new(VECTOR_CACHE_BYTES))),
            pgvector: !matches!(
                std::env::var("LOOM_MEMORY_PGVECTOR").map(|v| v.to_ascii_lowercase()).as_deref(),
                Ok("0" | "off" | "false" | "no")
            ),
            hnsw_indexes: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// Whether to search vectors through pgvector when the server has it (default on, unless the
    /// environment variable `LOOM_MEMORY_PGVECTOR` is `0`, `off`, `false` or `no`); off, vectors
    /// are searched exactly through the in-process cache. Decided at the store's first connection.
    pub fn pgvector(mut self, on: bool) -> Self {
        self.pgvector = on;
        self
    }

    /// The vector search path this store took (connecting and migrating first if it has not).
    ///
    /// # Errors
    /// As [`PostgresMemoryStore::connect`].
    pub async fn vector_path(&self) -> Result<VectorPath, Error> {
        let conn = self.conn().await?;
        self.pool.put(conn);
        self.migrated.get().cloned().ok_or_else(|| Error::Store("postgres memory: not migrated".into()))
    }

    /// The most memory the in-process vector cache may hold (default 256 MiB; 0 turns it off:
    /// every vector search then reads the owner's vectors from the database).
    pub fn vector_cache_bytes(mut self, bytes: usize) -> Self {
        self.vectors = VectorCache::rebudgeted(&self.vectors, bytes);
        self
    }

    /// From how many cached vectors (of one owner and model) a vector search goes through the
    /// approximate index — a sign-bit sketch of each vector, compared by Hamming distance, whose
    /// nearest rows are scored by the `i8` codes — instead of the exact `i8` scan of every vector
    /// (default 50,000; `usize::MAX` turns the index off). Recall@10 against the exact scan
    /// measured 0.97–0.98 on random vectors (docs/benchmarks.md); the candidates are rescored
    /// exactly either way.
    pub fn vector_index_rows(self, rows: usize) -> Self {
        if let Ok(mut cache) = self.vectors.lock() {
            cache.set_index_min_rows(rows);
        }
        self
    }

    /// A store for `url`, connected and migrated.
    ///
    /// # Errors
    /// As [`PostgresMemoryStore::new`]; a database that cannot be reached is [`Error::Store`]; a
    /// newer memory schema is [`Error::SchemaTooNew`].
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let store = Self::new(url)?;
        let conn = store.conn().await?;
        store.pool.put(conn);
        Ok(store)
    }

    async fn conn(&self) -> Result<PooledConn, Error> {
        let mut conn = self.pool.get().await?;
        if let Err(e) = self.migrated.get_or_try_init(|| migrate(&mut conn.client, self.pgvector)).await {
            self.pool.put(conn);
            return Err(e);
        }
        Ok(conn)
    }
}

async fn migrate(client: &mut Client, pgvector: bool) -> Result<VectorPath, Error> {
    let tx = client.transaction().await.map_err(|e| pg("beginning the memory migration", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(|e| pg("locking", e))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS loom_mem_schema (version BIGINT NOT NULL)")
        .await
        .map_err(|e| pg("creating loom_mem_schema", e))?;
    let found: Option<i64> = tx
        .query_one("SELECT MAX(version) FROM loom_mem_schema", &[])
        .await
        .map_err(|e| pg("reading the memory schema version", e))?
        .get(0);
    match found {
        Some(v) if v > SCHEMA_VERSION => return Err(Error::SchemaTooNew { found: v, supported: SCHEMA_VERSION }),
        // Every statement of the schema is idempotent: run it again, so indexes added within a
        // version reach older databases.
        Some(_) => tx.batch_execute(SCHEMA).await.map_err(|e| pg("updating the memory tables", e))?,
        None => {
            tx.batch_execute(SCHEMA).await.map_err(|e| pg("creating the memory tables", e))?;
            tx.execute("INSERT INTO loom_mem_schema (version) VALUES (1)", &[])
                .await
                .map_err(|e| pg("recording the memory schema version", e))?;
        }
    }
    // The per-owner write counter of the vector cache (idempotent; existing owners seeded once).
    let counters_existed: bool = tx
        .query_one("SELECT to_regclass('loom_mem_owner_writes') IS NOT NULL", &[])
        .await
        .map_err(|e| pg("reading the memory tables", e))?
        .get(0);
    tx.batch_execute(vectors::SCHEMA).await.map_err(|e| pg("creating the memory write counters", e))?;
    if !counters_existed {
        tx.batch_execute(vectors::SEED).await.map_err(|e| pg("seeding the memory write counters", e))?;
    }
    // Step 2: the knowledge chunk tables (idempotent, so run again on newer databases too).
    tx.batch_execute(knowledge::SCHEMA).await.map_err(|e| pg("creating the knowledge tables", e))?;
    if found.unwrap_or(1) < 2 {
        tx.execute("INSERT INTO loom_mem_schema (version) VALUES (2)", &[])
            .await
            .map_err(|e| pg("recording the memory schema version", e))?;
    }
    let path = pgvector::migrate(&tx, pgvector).await?;
    tx.commit().await.map_err(|e| pg("committing the memory migration", e))?;
    match &path {
        VectorPath::Pgvector { schema, version } => {
            tracing::info!(
                path = "pgvector",
                version,
                schema,
                "memory: PostgreSQL vector search through pgvector HNSW indexes"
            )
        }
        VectorPath::ExactScan { reason } => {
            tracing::info!(
                path = "exact",
                reason,
                "memory: PostgreSQL vector search by an exact scan (in-process cache)"
            )
        }
    }
    Ok(path)
}

fn item_row(r: &Row) -> Result<ItemRow, Error> {
    let get = |e: tokio_postgres::Error| {
        let id: String = r.try_get(0).unwrap_or_default();
        corrupt_row(&id, format!("unreadable column: {e}"))
    };
    Ok(ItemRow {
        id: r.try_get(0).map_err(get)?,
        kind: r.try_get(1).map_err(get)?,
        key: r.try_get(2).map_err(get)?,
        text: r.try_get(3).map_err(get)?,
        data: r.try_get(4).map_err(get)?,
        importance: r.try_get(5).map_err(get)?,
        run_id: r.try_get(6).map_err(get)?,
        extracted: r.try_get(7).map_err(get)?,
        valid_from: r.try_get(8).map_err(get)?,
        valid_to: r.try_get(9).map_err(get)?,
        recorded_at: r.try_get(10).map_err(get)?,
        superseded_by: r.try_get(11).map_err(get)?,
        source_run: r.try_get(12).map_err(get)?,
    })
}

async fn query_rows<C: GenericClient, T>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    decode: impl Fn(ItemRow) -> Result<T, Error>,
) -> Result<Vec<T>, Error> {
    let rows = client.query(sql, params).await.map_err(|e| pg("reading memory", e))?;
    rows.iter().map(|r| decode(item_row(r)?)).collect()
}

/// Locks the owner's memory for writing until the transaction ends.
async fn lock_owner<C: GenericClient>(tx: &C, owner: &Owner) -> Result<(), Error> {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"loom_mem\0")
        .chain_update(&owner.user)
        .chain_update([0u8])
        .chain_update(&owner.agent)
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let key = i64::from_le_bytes(first);
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key]).await.map_err(|e| pg("locking the owner's memory", e))?;
    Ok(())
}

async fn insert_item<C: GenericClient>(
    tx: &C,
    owner: &Owner,
    row: &ItemRow,
    embedding: Option<&Embedding>,
) -> Result<i64, Error> {
    let row = tx.query_one(
        "INSERT INTO loom_mem_items (id, user_id, agent, kind, key, text, data, importance, run_id, active, extracted,
             valid_from, valid_to, recorded_at, superseded_by, source_run, embed_model, embedding)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, TRUE, $10, $11, NULL, $12, NULL, $13, $14, $15)
         RETURNING seq",
        &[
            &row.id,
            &owner.user,
            &owner.agent,
            &row.kind,
            &row.key,
            &row.text,
            &row.data,
            &row.importance,
            &row.run_id,
            &row.extracted,
            &row.valid_from,
            &row.recorded_at,
            &row.source_run,
            &embedding.map(|e| e.model.as_str()),
            &embedding.map(|e| e.vector.as_slice()),
        ],
    )
    .await
    .map_err(|e| pg("storing a memory item", e))?;
    row.try_get(0).map_err(|e| pg("storing a memory item", e))
}

/// Runs `$body` with `$client` bound to a pooled connection's client, and hands it back.
macro_rules! with_client {
    ($store:expr, |$client:ident| $body:expr) => {{
        let mut conn = $store.conn().await?;
        let result = {
            let $client = &mut conn.client;
            $body
        };
        $store.pool.put(conn);
        result
    }};
}

mod knowledge;
mod pgvector;
mod vectors;

pub use pgvector::VectorPath;

/// An owner's key in the vector cache: `m` and the user, and the agent.
fn cache_owner(owner: &Owner) -> (String, String) {
    (format!("m{}", owner.user), owner.agent.clone())
}

/// The `seq`s that a statement `RETURNING seq` returned.
fn seqs(rows: &[Row]) -> Result<Vec<i64>, Error> {
    rows.iter().map(|r| r.try_get(0).map_err(|e| pg("reading memory", e))).collect()
}

#[async_trait::async_trait]
impl MemoryStore for PostgresMemoryStore {
    async fn add_episode(
        &self,
        owner: &Owner,
        episode: NewEpisode,
        embedding: Option<Embedding>,
    ) -> Result<Option<Episode>, Error> {
        with_client!(self, |client| {
            async {
                let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
                lock_owner(&tx, owner).await?;
                let exists = tx
                    .query_opt(
                        "SELECT seq FROM loom_mem_items WHERE user_id = $1 AND agent = $2 AND run_id = $3 AND kind = 'episode'",
                        &[&owner.user, &owner.agent, &episode.run_id],
                    )
                    .await
                    .map_err(|e| pg("reading memory", e))?;
                if exists.is_some() {
                    return Ok(None);
                }
                let before = vectors::lock_writes(&tx, owner).await?;
                let now = ms(Utc::now());
                let data = EpisodeData {
                    session_id: episode.session_id,
                    prompt: episode.prompt,
                    answer: episode.answer,
                    tools: episode.tools,
                };
                let row = ItemRow {
                    id: crate::new_id("ep"),
                    kind: "episode".into(),
                    key: None,
                    text: episode_text(&data.prompt, &data.answer, &data.tools),
                    data: serde_json::to_string(&data).map_err(|e| Error::store("encoding an episode", e))?,
                    importance: 0.3,
                    run_id: Some(episode.run_id),
                    extracted: !episode.pending_extraction,
                    valid_from: now,
                    valid_to: None,
                    recorded_at: now,
                    superseded_by: None,
                    source_run: None,
                };
                let seq = insert_item(&tx, owner, &row, embedding.as_ref()).await?;
                let after = vectors::owner_writes(&tx, owner).await?;
                tx.commit().await.map_err(|e| pg("committing", e))?;
                self.owner_wrote(owner, (before, after), &[], embedding.as_ref().map(|e| (seq, e)));
                row.into_episode().map(Some)
            }
            .await
        })
    }

    async fn episodes(&self, owner: &Owner, limit: usize) -> Result<Vec<Episode>, Error> {
        let limit = limit.min(i64::MAX as usize) as i64;
        with_client!(self, |client| {
            query_rows(
                &*client,
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM loom_mem_items WHERE user_id = $1 AND agent = $2 AND kind = 'episode'
                     ORDER BY seq DESC LIMIT $3"
                ),
                &[&owner.user, &owner.agent, &limit],
                ItemRow::into_episode,
            )
            .await
        })
    }

    async fn pending_episodes(&self, owner: &Owner) -> Result<Vec<Episode>, Error> {
        with_client!(self, |client| {
            query_rows(
                &*client,
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM loom_mem_items WHERE user_id = $1 AND agent = $2 AND NOT extracted
                     AND kind = 'episode' ORDER BY seq"
                ),
                &[&owner.user, &owner.agent],
                ItemRow::into_episode,
            )
            .await
        })
    }

    async fn mark_extracted(&self, owner: &Owner, episode_id: &str) -> Result<(), Error> {
        with_client!(self, |client| {
            client
                .execute(
                    "UPDATE loom_mem_items SET extracted = TRUE WHERE user_id = $1 AND agent = $2 AND id = $3",
                    &[&owner.user, &owner.agent, &episode_id],
                )
                .await
                .map(|_| ())
                .map_err(|e| pg("updating memory", e))
        })
    }

    async fn add_fact(&self, owner: &Owner, fact: NewFact, embedding: Option<Embedding>) -> Result<Fact, Error> {
        let fact = fact.normalized()?;
        with_client!(self, |client| {
            async {
                let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
                lock_owner(&tx, owner).await?;
                let same = query_rows(
                    &tx,
                    &format!(
                        "SELECT {ITEM_COLUMNS} FROM loom_mem_items WHERE user_id = $1 AND agent = $2 AND kind = 'fact'
                         AND active AND lower(text) = lower($3) LIMIT 1"
                    ),
                    &[&owner.user, &owner.agent, &fact.statement],
                    ItemRow::into_fact,
                )
                .await?;
                if let Some(existing) = same.into_iter().next() {
                    return Ok(existing);
                }
                let before = vectors::lock_writes(&tx, owner).await?;
                let now = Utc::now();
                let id = crate::new_id("fact");
                let valid_from = ms(fact.valid_from.unwrap_or(now));
                let old = tx
                    .query(
                        "UPDATE loom_mem_items SET active = FALSE, valid_to = $5, superseded_by = $6
                     WHERE user_id = $1 AND agent = $2 AND kind = 'fact' AND active
                     AND (($3::TEXT IS NOT NULL AND key = $3) OR id = $4) RETURNING seq",
                        &[&owner.user, &owner.agent, &fact.key, &fact.supersedes, &valid_from, &id],
                    )
                    .await
                    .map_err(|e| pg("superseding facts", e))?;
                let old = seqs(&old)?;
                let row = ItemRow {
                    id,
                    kind: "fact".into(),
                    key: fact.key,
                    text: fact.statement,
                    data: "{}".into(),
                    importance: fact.importance as f64,
                    run_id: None,
                    extracted: true,
                    valid_from,
                    valid_to: None,
                    recorded_at: ms(now),
                    superseded_by: None,
                    source_run: fact.source_run,
                };
                let seq = insert_item(&tx, owner, &row, embedding.as_ref()).await?;
                let after = vectors::owner_writes(&tx, owner).await?;
                tx.commit().await.map_err(|e| pg("committing", e))?;
                self.owner_wrote(owner, (before, after), &old, embedding.as_ref().map(|e| (seq, e)));
                row.into_fact()
            }
            .await
        })
    }

    async fn facts(&self, owner: &Owner, history: bool) -> Result<Vec<Fact>, Error> {
        with_client!(self, |client| {
            query_rows(
                &*client,
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM loom_mem_items WHERE user_id = $1 AND agent = $2 AND kind = 'fact'
                     AND (active OR $3) ORDER BY seq"
                ),
                &[&owner.user, &owner.agent, &history],
                ItemRow::into_fact,
            )
            .await
        })
    }

    async fn search_text(&self, owner: &Owner, query: &str, limit: usize) -> Result<Vec<MemoryItem>, Error> {
        let terms = query_terms(query);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        // Terms are letters and digits only, so they are safe tsquery operands.
        let tsquery = terms.join(" | ");
        let limit = limit.min(10_000) as i64;
        with_client!(self, |client| {
            query_rows(
                &*client,
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM loom_mem_items, to_tsquery('english', $3) q
                     WHERE user_id = $1 AND agent = $2 AND active AND tsv @@ q
                     ORDER BY ts_rank(tsv, q) DESC, seq DESC LIMIT $4"
                ),
                &[&owner.user, &owner.agent, &tsquery, &limit],
                ItemRow::into_item,
            )
            .await
        })
    }

    async fn search_vector(&self, owner: &Owner, query: &Embedding, limit: usize) -> Result<Vec<MemoryItem>, Error> {
        with_client!(self, |client| match self.migrated.get() {
            Some(VectorPath::Pgvector { schema, .. }) => {
                self.pgvector_search(client, schema, owner, query, limit).await
            }
            _ => self.vector_search(&*client, owner, query, limit).await,
        })
    }

    async fn recent(&self, owner: &Owner, limit: usize) -> Result<Vec<MemoryItem>, Error> {
        let limit = limit.min(10_000) as i64;
        with_client!(self, |client| {
            query_rows(
                &*client,
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM loom_mem_items WHERE user_id = $1 AND agent = $2 AND active
                     ORDER BY recorded_at DESC, seq DESC LIMIT $3"
                ),
                &[&owner.user, &owner.agent, &limit],
                ItemRow::into_item,
            )
            .await
        })
    }

    async fn blocks(&self, owner: &Owner) -> Result<Vec<Block>, Error> {
        with_client!(self, |client| {
            async {
                let rows = client
                    .query(
                        "SELECT name, text, updated_at FROM loom_mem_blocks WHERE user_id = $1 AND agent = $2 ORDER BY name",
                        &[&owner.user, &owner.agent],
                    )
                    .await
                    .map_err(|e| pg("reading blocks", e))?;
                rows.iter()
                    .map(|r| {
                        let name: String = r.try_get(0).map_err(|e| pg("reading blocks", e))?;
                        let text: String = r.try_get(1).map_err(|e| pg("reading blocks", e))?;
                        let at: i64 = r.try_get(2).map_err(|e| pg("reading blocks", e))?;
                        Ok(Block { updated_at: time(&name, at)?, name, text })
                    })
                    .collect()
            }
            .await
        })
    }

    async fn set_block(&self, owner: &Owner, name: &str, text: &str) -> Result<Block, Error> {
        check_block_name(name)?;
        let now = Utc::now();
        with_client!(self, |client| {
            client
                .execute(
                    "INSERT INTO loom_mem_blocks (user_id, agent, name, text, updated_at) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (user_id, agent, name) DO UPDATE SET text = excluded.text, updated_at = excluded.updated_at",
                    &[&owner.user, &owner.agent, &name, &text, &ms(now)],
                )
                .await
                .map_err(|e| pg("storing a block", e))
        })?;
        Ok(Block { name: name.to_string(), text: text.to_string(), updated_at: now })
    }

    async fn delete_block(&self, owner: &Owner, name: &str) -> Result<bool, Error> {
        with_client!(self, |client| {
            client
                .execute(
                    "DELETE FROM loom_mem_blocks WHERE user_id = $1 AND agent = $2 AND name = $3",
                    &[&owner.user, &owner.agent, &name],
                )
                .await
                .map(|n| n > 0)
                .map_err(|e| pg("deleting a block", e))
        })
    }

    async fn forget(&self, owner: &Owner, what: &Forget) -> Result<u64, Error> {
        with_client!(self, |client| {
            async {
                let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
                lock_owner(&tx, owner).await?;
                let before = vectors::lock_writes(&tx, owner).await?;
                let (gone, blocks) = match what {
                    Forget::Item(id) => (
                        tx.query(
                            "DELETE FROM loom_mem_items WHERE user_id = $1 AND agent = $2 AND id = $3 RETURNING seq",
                            &[&owner.user, &owner.agent, id],
                        )
                        .await
                        .map_err(|e| pg("forgetting", e))?,
                        0,
                    ),
                    Forget::Range(from, to) => (
                        tx.query(
                            "DELETE FROM loom_mem_items WHERE user_id = $1 AND agent = $2
                             AND recorded_at >= $3 AND recorded_at < $4 RETURNING seq",
                            &[&owner.user, &owner.agent, &ms(*from), &ms(*to)],
                        )
                        .await
                        .map_err(|e| pg("forgetting", e))?,
                        0,
                    ),
                    Forget::All => {
                        let items = tx
                            .query(
                                "DELETE FROM loom_mem_items WHERE user_id = $1 AND agent = $2 RETURNING seq",
                                &[&owner.user, &owner.agent],
                            )
                            .await
                            .map_err(|e| pg("forgetting", e))?;
                        let blocks = tx
                            .execute(
                                "DELETE FROM loom_mem_blocks WHERE user_id = $1 AND agent = $2",
                                &[&owner.user, &owner.agent],
                            )
                            .await
                            .map_err(|e| pg("forgetting", e))?;
                        // The owner's write counter goes too (erasure leaves no row of the user);
                        // its next value comes from the sequence, so it never repeats an old one.
                        tx.execute(
                            "DELETE FROM loom_mem_owner_writes WHERE user_id = $1 AND agent = $2",
                            &[&owner.user, &owner.agent],
                        )
                        .await
                        .map_err(|e| pg("forgetting", e))?;
                        (items, blocks)
                    }
                };
                let gone = seqs(&gone)?;
                let after = vectors::owner_writes(&tx, owner).await?;
                tx.commit().await.map_err(|e| pg("committing", e))?;
                self.owner_wrote(owner, (before, after), &gone, None);
                Ok(gone.len() as u64 + blocks)
            }
            .await
        })
    }

    fn knowledge(&self) -> Option<Arc<dyn crate::knowledge::KnowledgeStore>> {
        Some(Arc::new(self.clone()))
    }
}
