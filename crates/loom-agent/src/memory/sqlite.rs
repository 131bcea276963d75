//! The SQLite memory store: items in `loom_mem_items` (vectors as BLOBs beside them), their text
//! in the FTS5 index `loom_mem_fts`, working blocks in `loom_mem_blocks`. It can share a file with
//! the SQLite journal (`sqlite:./bot.db` for both): its tables are its own and its schema version
//! is kept in `loom_mem_schema`, not in `PRAGMA user_version`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::MemoryStore;
use super::rows::{EpisodeData, ITEM_COLUMNS, ItemRow, TopK, corrupt_row, ms, owner_token, time};
use super::types::{
    Block, Embedding, Episode, Fact, Forget, MemoryItem, NewEpisode, NewFact, Owner, check_block_name, episode_text,
    query_terms, vector_bytes,
};
use crate::error::Error;

mod knowledge;
mod schema;
mod vectors;

use super::vector_cache::{Lookup, VectorCache};
use schema::SCHEMA;
use vectors::{dot_bytes, owner_writes, scan_vectors};

/// The newest memory schema this version reads and writes: 1, the memory tables; 2, the knowledge
/// chunk tables (`knowledge.rs`).
const SCHEMA_VERSION: i64 = 2;

/// Memory in a SQLite file (WAL mode), safe to share between processes: FTS5 (porter stemming)
/// for text, vectors as little-endian `f32` BLOBs beside each item. Vector search scans an
/// in-process cache of the owner's vectors (quantized to `i8`, filled at the owner's first vector
/// search, kept current by this store's writes and dropped when another connection writes the
/// owner's items — seen through a per-owner write counter that triggers keep, so commits to other
/// tables such as a journal sharing the file leave it; at most 256 MiB by default, see
/// [`SqliteMemoryStore::vector_cache_bytes`]) and rescores the candidates exactly; an owner that
/// does not fit is scanned from SQLite. Deleted rows are overwritten (`secure_delete`) and the
/// text index removes forgotten entries at once (FTS5 `secure-delete`).
#[derive(Clone)]
pub struct SqliteMemoryStore {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
    /// Used under the `conn` lock (taken first).
    vectors: Arc<Mutex<VectorCache>>,
}

/// The default budget of the vector cache.
const VECTOR_CACHE_BYTES: usize = 256 << 20;

impl std::fmt::Debug for SqliteMemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteMemoryStore").field("path", &self.path).finish()
    }
}

fn db(e: rusqlite::Error) -> Error {
    Error::store(format!("sqlite memory: {e}"), e)
}

impl SqliteMemoryStore {
    /// Opens (creating if needed) the memory tables in the database at `path`.
    ///
    /// # Errors
    /// A file that cannot be opened is [`Error::Store`]; a memory schema written by a newer
    /// version is [`Error::SchemaTooNew`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let mut conn =
            Connection::open(&path).map_err(|e| Error::store(format!("opening {}: {e}", path.display()), e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(db)?;
        // Plans that do not depend on bound values (SQLite's QPSG): otherwise recall's `LIMIT ?n`
        // is parsed and planned again at every query (rusqlite clears a cached statement's
        // bindings, which expires such a plan; see the session store's `plans_ignore_bound_values`).
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(db)?;
        conn.pragma_update(None, "secure_delete", "ON").map_err(db)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS loom_mem_schema (version INTEGER NOT NULL)").map_err(db)?;
        let found: Option<i64> =
            tx.query_row("SELECT MAX(version) FROM loom_mem_schema", [], |r| r.get(0)).map_err(db)?;
        match found {
            Some(v) if v > SCHEMA_VERSION => return Err(Error::SchemaTooNew { found: v, supported: SCHEMA_VERSION }),
            // Every statement of the schema is idempotent: run it again, so indexes added within
            // a version reach older files.
            Some(_) => tx.execute_batch(SCHEMA).map_err(db)?,
            None => {
                tx.execute_batch(SCHEMA).map_err(db)?;
                // Deleting from the index removes the entries at once, not at the next merge.
                tx.execute("INSERT INTO loom_mem_fts (loom_mem_fts, rank) VALUES ('secure-delete', 1)", [])
                    .map_err(db)?;
                tx.execute("INSERT INTO loom_mem_schema (version) VALUES (1)", []).map_err(db)?;
            }
        }
        let version = found.unwrap_or(1);
        // Step 2: the knowledge chunk tables.
        if version < 2 {
            knowledge::migrate(&tx)?;
            tx.execute("INSERT INTO loom_mem_schema (version) VALUES (2)", []).map_err(db)?;
        } else {
            tx.execute_batch(knowledge::SCHEMA).map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(SqliteMemoryStore {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::new(path),
            vectors: Arc::new(Mutex::new(VectorCache::new(VECTOR_CACHE_BYTES))),
        })
    }

    /// The most memory the in-process vector cache may hold (default 256 MiB; 0 turns it off:
    /// every vector search then scans the owner's vectors in SQLite).
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

    /// Runs `f` on the vector cache (under the connection lock the caller holds).
    fn cache<T>(&self, f: impl FnOnce(&mut VectorCache) -> T) -> Option<T> {
        match self.vectors.lock() {
            Ok(mut cache) => Some(f(&mut cache)),
            Err(_) => None,
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection. Calls are short (indexed reads, small transactions): they run
    /// on the caller's thread under the lock, as the SQLite journal does.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, Error>) -> Result<T, Error> {
        let mut conn = self.conn.lock().map_err(|_| Error::Store("sqlite memory: connection lock poisoned".into()))?;
        f(&mut conn)
    }
}

fn item_row(r: &Row<'_>) -> rusqlite::Result<ItemRow> {
    Ok(ItemRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        key: r.get(2)?,
        text: r.get(3)?,
        data: r.get(4)?,
        importance: r.get(5)?,
        run_id: r.get(6)?,
        extracted: r.get::<_, i64>(7)? != 0,
        valid_from: r.get(8)?,
        valid_to: r.get(9)?,
        recorded_at: r.get(10)?,
        superseded_by: r.get(11)?,
        source_run: r.get(12)?,
    })
}

/// Rows of `sql` (which selects [`ITEM_COLUMNS`]) decoded by `decode`.
fn query_rows<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(ItemRow) -> Result<T, Error>,
) -> Result<Vec<T>, Error> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let rows = stmt.query_map(params, item_row).map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(decode(row.map_err(db)?)?);
    }
    Ok(out)
}

/// The FTS5 query for `text`: any of its words. (The owner is filtered in the join: measured at
/// 10^5 items of one owner, also matching the owner token `okey` in the index cost 10.9 ms at p50
/// against 0.2 ms without it, since its doclist spans every row of the owner.)
///
/// For an owner of at most [`SMALL_OWNER`] items the search adds the owner token after all: with
/// many users sharing the table, a common word's doclist spans every user's rows and ranking them
/// all before the join drops the other users' stalled p99 (measured: 335 ms at 10^5 items of 100
/// users), while the small owner's token doclist is short.
fn fts_query(text: &str) -> Option<String> {
    let terms = query_terms(text);
    if terms.is_empty() {
        return None;
    }
    let any = terms.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(" OR ");
    Some(format!("text : ({any})"))
}

/// The most items an owner may have for its text search to be confined to its token in the index.
const SMALL_OWNER: i64 = 2_000;

/// Whether the owner has at most [`SMALL_OWNER`] items (an index range read of at most that many
/// entries).
fn owner_is_small(conn: &rusqlite::Connection, owner: &Owner) -> Result<bool, Error> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM (SELECT 1 FROM loom_mem_items WHERE user_id = ?1 AND agent = ?2 LIMIT ?3)",
        )
        .map_err(db)?
        .query_row(params![owner.user, owner.agent, SMALL_OWNER + 1], |r| r.get(0))
        .map_err(db)?;
    Ok(n <= SMALL_OWNER)
}

fn insert_item(
    tx: &rusqlite::Transaction<'_>,
    owner: &Owner,
    row: &ItemRow,
    embedding: Option<&Embedding>,
) -> Result<i64, Error> {
    tx.prepare_cached(
        "INSERT INTO loom_mem_items (id, user_id, agent, kind, key, text, data, importance, run_id, active, extracted,
             valid_from, valid_to, recorded_at, superseded_by, source_run, embed_model, embedding)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?10, ?11, NULL, ?12, NULL, ?13, ?14, ?15)",
    )
    .map_err(db)?
    .execute(params![
        row.id,
        owner.user,
        owner.agent,
        row.kind,
        row.key,
        row.text,
        row.data,
        row.importance,
        row.run_id,
        row.extracted as i64,
        row.valid_from,
        row.recorded_at,
        row.source_run,
        embedding.map(|e| e.model.as_str()),
        embedding.map(|e| vector_bytes(&e.vector)),
    ])
    .map_err(db)?;
    let seq = tx.last_insert_rowid();
    tx.prepare_cached("INSERT INTO loom_mem_fts (rowid, text, okey) VALUES (?1, ?2, ?3)")
        .map_err(db)?
        .execute(params![seq, row.text, owner_token(&owner.user, &owner.agent)])
        .map_err(db)?;
    Ok(seq)
}

/// Deletes the owner's items whose `seq` the query `select` (with `params`) returns, and their
/// text-index entries.
fn delete_items(
    tx: &rusqlite::Transaction<'_>,
    select: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<i64>, Error> {
    let seqs: Vec<i64> = {
        let mut stmt = tx.prepare(select).map_err(db)?;
        stmt.query_map(params, |r| r.get(0)).map_err(db)?.collect::<Result<_, _>>().map_err(db)?
    };
    let mut del_fts = tx.prepare_cached("DELETE FROM loom_mem_fts WHERE rowid = ?1").map_err(db)?;
    let mut del_item = tx.prepare_cached("DELETE FROM loom_mem_items WHERE seq = ?1").map_err(db)?;
    for seq in &seqs {
        del_fts.execute([seq]).map_err(db)?;
        del_item.execute([seq]).map_err(db)?;
    }
    Ok(seqs)
}

#[async_trait::async_trait]
impl MemoryStore for SqliteMemoryStore {
    async fn add_episode(
        &self,
        owner: &Owner,
        episode: NewEpisode,
        embedding: Option<Embedding>,
    ) -> Result<Option<Episode>, Error> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT seq FROM loom_mem_items WHERE user_id = ?1 AND agent = ?2 AND run_id = ?3 AND kind = 'episode'",
                    params![owner.user, owner.agent, episode.run_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            if exists.is_some() {
                return Ok(None);
            }
            let before = owner_writes(&tx, owner)?;
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
            let seq = insert_item(&tx, owner, &row, embedding.as_ref())?;
            let after = owner_writes(&tx, owner)?;
            tx.commit().map_err(db)?;
            let (user, agent) = cache_owner(owner);
            let inserted = embedding.as_ref().map(|e| (seq, e.model.as_str(), e.vector.as_slice()));
            self.cache(|c| c.owner_wrote(&user, &agent, (before, after), &[], inserted));
            row.into_episode().map(Some)
        })
    }

    async fn episodes(&self, owner: &Owner, limit: usize) -> Result<Vec<Episode>, Error> {
        self.with(|conn| {
            query_rows(
                conn,
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM loom_mem_items WHERE user_id = ?1 AND agent = ?2 AND kind = 'episode'
                     ORDER BY seq DESC LIMIT ?3"
                ),
                params![owner.user, owner.agent, limit.min(i64::MAX as usize) as i64],
                ItemRow::into_episode,
            )
        })
    }

    async fn pending_episodes(&self, owner: &Owner) -> Result<Vec<Episode>, Error> {
        self.with(|conn| {
            query_rows(
                conn,
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM loom_mem_items WHERE user_id = ?1 AND agent = ?2 AND extracted = 0
                     AND kind = 'episode' ORDER BY seq"
                ),
                params![owner.user, owner.agent],
                ItemRow::into_episode,
            )
        })
    }

    async fn mark_extracted(&self, owner: &Owner, episode_id: &str) -> Result<(), Error> {
        self.with(|conn| {
            conn.execute(
                "UPDATE loom_mem_items SET extracted = 1 WHERE user_id = ?1 AND agent = ?2 AND id = ?3",
                params![owner.user, owner.agent, episode_id],
            )
            .map_err(db)?;
            Ok(())
        })
    }

    async fn add_fact(&self, owner: &Owner, fact: NewFact, embedding: Option<Embedding>) -> Result<Fact, Error> {
        let fact = fact.normalized()?;
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let same = query_rows(
                &tx,
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM loom_mem_items WHERE user_id = ?1 AND agent = ?2 AND kind = 'fact'
                     AND active = 1 AND lower(text) = lower(?3) LIMIT 1"
                ),
                params![owner.user, owner.agent, fact.statement],
                ItemRow::into_fact,
            )?;
            if let Some(existing) = same.into_iter().next() {
                return Ok(existing);
            }
            let before = owner_writes(&tx, owner)?;
            let now = Utc::now();
            let id = crate::new_id("fact");
            let valid_from = ms(fact.valid_from.unwrap_or(now));
            // Two lookups, each on an index: by key, and by the id the new fact names.
            let mut old: Vec<i64> = Vec::new();
            if let Some(key) = &fact.key {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT seq FROM loom_mem_items WHERE user_id = ?1 AND agent = ?2 AND key = ?3
                         AND kind = 'fact' AND active = 1",
                    )
                    .map_err(db)?;
                let rows = stmt.query_map(params![owner.user, owner.agent, key], |r| r.get(0)).map_err(db)?;
                for seq in rows {
                    old.push(seq.map_err(db)?);
                }
            }
            if let Some(named) = &fact.supersedes {
                let seq: Option<i64> = tx
                    .query_row(
                        "SELECT seq FROM loom_mem_items WHERE id = ?1 AND user_id = ?2 AND agent = ?3
                         AND kind = 'fact' AND active = 1",
                        params![named, owner.user, owner.agent],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db)?;
                old.extend(seq.filter(|s| !old.contains(s)));
            }
            for &seq in &old {
                tx.execute(
                    "UPDATE loom_mem_items SET active = 0, valid_to = ?2, superseded_by = ?3 WHERE seq = ?1",
                    params![seq, valid_from, id],
                )
                .map_err(db)?;
                tx.execute("DELETE FROM loom_mem_fts WHERE rowid = ?1", [seq]).map_err(db)?;
            }
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
            let seq = insert_item(&tx, owner, &row, embedding.as_ref())?;
            let after = owner_writes(&tx, owner)?;
            tx.commit().map_err(db)?;
            let (user, agent) = cache_owner(owner);
            let inserted = embedding.as_ref().map(|e| (seq, e.model.as_str(), e.vector.as_slice()));
            self.cache(|c| c.owner_wrote(&user, &agent, (before, after), &old, inserted));
            row.into_fact()
        })
    }

    async fn facts(&self, owner: &Owner, history: bool) -> Result<Vec<Fact>, Error> {
        self.with(|conn| {
            query_rows(
                conn,
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM loom_mem_items WHERE user_id = ?1 AND agent = ?2 AND kind = 'fact'
                     AND (active = 1 OR ?3) ORDER BY seq"
                ),
                params![owner.user, owner.agent, history],
                ItemRow::into_fact,
            )
        })
    }

    async fn search_text(&self, owner: &Owner, query: &str, limit: usize) -> Result<Vec<MemoryItem>, Error> {
        let Some(fts) = fts_query(query) else { return Ok(Vec::new()) };
        self.with(|conn| {
            // A small owner among many: the match is confined to the owner's token inside the
            // index, so it no longer ranks every user's matching rows (see [`fts_query`]).
            let fts = if owner_is_small(conn, owner)? {
                format!("okey : \"{}\" AND {fts}", owner_token(&owner.user, &owner.agent))
            } else {
                fts
            };
            query_rows(
                conn,
                "SELECT i.id, i.kind, i.key, i.text, i.data, i.importance, i.run_id, i.extracted, i.valid_from,
                        i.valid_to, i.recorded_at, i.superseded_by, i.source_run
                 FROM loom_mem_fts f JOIN loom_mem_items i ON i.seq = f.rowid
                 WHERE loom_mem_fts MATCH ?1 AND i.user_id = ?2 AND i.agent = ?3 AND i.active = 1
                 ORDER BY f.rank LIMIT ?4",
                params![fts, owner.user, owner.agent, limit.min(10_000) as i64],
                ItemRow::into_item,
            )
        })
    }

    async fn search_vector(&self, owner: &Owner, query: &Embedding, limit: usize) -> Result<Vec<MemoryItem>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (user, agent) = cache_owner(owner);
        self.with(|conn| {
            // Read before the vectors (a fill stores it): a write in between makes the next
            // lookup refill, never serve stale vectors.
            let writes = owner_writes(conn, owner)?;
            // Candidates from the cache are rescored exactly: take more than asked for.
            let want = limit.saturating_mul(2).saturating_add(8);
            let cached = self.cache(|c| c.lookup(&user, &agent, &query.model, &query.vector, want, Some(writes)));
            let seqs = match cached {
                Some(Lookup::Hit(seqs)) => seqs,
                Some(Lookup::Miss) | None => {
                    let rows = scan_vectors(conn, owner, query)?;
                    let mut best = TopK::new(want);
                    for (seq, v) in &rows {
                        best.push(super::types::cosine(v, &query.vector), *seq);
                    }
                    self.cache(|c| c.fill(&user, &agent, &query.model, query.vector.len(), rows, Some(writes)));
                    best.into_sorted().into_iter().map(|(_, seq)| seq).collect()
                }
            };
            let mut scored = Vec::with_capacity(seqs.len());
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {ITEM_COLUMNS}, embedding FROM loom_mem_items
                     WHERE seq = ?1 AND user_id = ?2 AND agent = ?3 AND active = 1"
                ))
                .map_err(db)?;
            for seq in seqs {
                let mut rows = stmt.query(params![seq, owner.user, owner.agent]).map_err(db)?;
                let Some(row) = rows.next().map_err(db)? else { continue };
                let item = item_row(row).map_err(db)?;
                let score = match row.get_ref(13).map_err(db)?.as_blob_or_null() {
                    Ok(Some(blob)) if blob.len() == query.vector.len() * 4 => dot_bytes(blob, &query.vector),
                    _ => return Err(corrupt_row(&item.id, "embedding changed under the vector cache")),
                };
                scored.push((score, item.into_item()?));
            }
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            Ok(scored.into_iter().take(limit).map(|(_, item)| item).collect())
        })
    }

    async fn recent(&self, owner: &Owner, limit: usize) -> Result<Vec<MemoryItem>, Error> {
        self.with(|conn| {
            query_rows(
                conn,
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM loom_mem_items WHERE user_id = ?1 AND agent = ?2 AND active = 1
                     ORDER BY recorded_at DESC, seq DESC LIMIT ?3"
                ),
                params![owner.user, owner.agent, limit.min(10_000) as i64],
                ItemRow::into_item,
            )
        })
    }

    async fn blocks(&self, owner: &Owner) -> Result<Vec<Block>, Error> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name, text, updated_at FROM loom_mem_blocks WHERE user_id = ?1 AND agent = ?2 ORDER BY name",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![owner.user, owner.agent], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
                })
                .map_err(db)?;
            let mut out = Vec::new();
            for row in rows {
                let (name, text, at) = row.map_err(db)?;
                out.push(Block { updated_at: time(&name, at)?, name, text });
            }
            Ok(out)
        })
    }

    async fn set_block(&self, owner: &Owner, name: &str, text: &str) -> Result<Block, Error> {
        check_block_name(name)?;
        let now = Utc::now();
        self.with(|conn| {
            conn.execute(
                "INSERT INTO loom_mem_blocks (user_id, agent, name, text, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (user_id, agent, name) DO UPDATE SET text = excluded.text, updated_at = excluded.updated_at",
                params![owner.user, owner.agent, name, text, ms(now)],
            )
            .map_err(db)?;
            Ok(())
        })?;
        Ok(Block { name: name.to_string(), text: text.to_string(), updated_at: now })
    }

    async fn delete_block(&self, owner: &Owner, name: &str) -> Result<bool, Error> {
        self.with(|conn| {
            let n = conn
                .execute(
                    "DELETE FROM loom_mem_blocks WHERE user_id = ?1 AND agent = ?2 AND name = ?3",
                    params![owner.user, owner.agent, name],
                )
                .map_err(db)?;
            Ok(n > 0)
        })
    }

    async fn forget(&self, owner: &Owner, what: &Forget) -> Result<u64, Error> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let before = owner_writes(&tx, owner)?;
            let (gone, blocks) = match what {
                Forget::Item(id) => (
                    delete_items(
                        &tx,
                        "SELECT seq FROM loom_mem_items WHERE user_id = ?1 AND agent = ?2 AND id = ?3",
                        params![owner.user, owner.agent, id],
                    )?,
                    0,
                ),
                Forget::Range(from, to) => (
                    delete_items(
                        &tx,
                        "SELECT seq FROM loom_mem_items WHERE user_id = ?1 AND agent = ?2
                         AND recorded_at >= ?3 AND recorded_at < ?4",
                        params![owner.user, owner.agent, ms(*from), ms(*to)],
                    )?,
                    0,
                ),
                Forget::All => {
                    let items = delete_items(
                        &tx,
                        "SELECT seq FROM loom_mem_items WHERE user_id = ?1 AND agent = ?2",
                        params![owner.user, owner.agent],
                    )?;
                    let blocks = tx
                        .execute(
                            "DELETE FROM loom_mem_blocks WHERE user_id = ?1 AND agent = ?2",
                            params![owner.user, owner.agent],
                        )
                        .map_err(db)?;
                    // The owner's write counter goes too (erasure leaves no row of the user); its
                    // next value comes from the file's counter, so it never repeats an old one.
                    tx.execute(
                        "DELETE FROM loom_mem_owner_writes WHERE user_id = ?1 AND agent = ?2",
                        params![owner.user, owner.agent],
                    )
                    .map_err(db)?;
                    (items, blocks as u64)
                }
            };
            let after = owner_writes(&tx, owner)?;
            tx.commit().map_err(db)?;
            let (user, agent) = cache_owner(owner);
            self.cache(|c| c.owner_wrote(&user, &agent, (before, after), &gone, None));
            let n = gone.len() as u64 + blocks;
            if matches!(what, Forget::All) {
                // The write-ahead log still holds the pages as they were before: copy it into the
                // database (whose freed pages `secure_delete` zeroes) and empty it. Best effort:
                // a reader in another process can keep the log from being emptied now.
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "sqlite memory: checkpoint after erasure failed");
                }
            }
            Ok(n)
        })
    }

    fn knowledge(&self) -> Option<Arc<dyn crate::knowledge::KnowledgeStore>> {
        Some(Arc::new(self.clone()))
    }
}

/// An owner's key in the vector cache: `m` and the user, and the agent (knowledge scopes' keys
/// start with `k`, so the two never meet).
fn cache_owner(owner: &Owner) -> (String, String) {
    (format!("m{}", owner.user), owner.agent.clone())
}
