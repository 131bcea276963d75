//! The SQLite store's knowledge index (memory schema step 2): documents in `loom_kn_docs`, chunks
//! in `loom_kn_chunks` (vectors as BLOBs beside them, searched through the store's vector cache
//! like memory items, under a key of their own per scope), their text in the FTS5 index
//! `loom_kn_fts` (porter stemming).

use chrono::Utc;
use rusqlite::{Row, TransactionBehavior, params};

use super::{Lookup, SqliteMemoryStore, db, dot_bytes, fts_query};
use crate::error::Error;
use crate::knowledge::{Chunk, DocumentInfo, KnowledgeScope, KnowledgeStore, Location, NewChunk};
use crate::memory::Embedding;
use crate::memory::rows::{TopK, corrupt_row, time};
use crate::memory::types::{bytes_vector, cosine, vector_bytes};

/// The knowledge tables (every statement idempotent).
pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS loom_kn_docs (
        tenant TEXT NOT NULL, collection TEXT NOT NULL, doc TEXT NOT NULL,
        mtime_ms INTEGER NOT NULL, size INTEGER NOT NULL, hash TEXT NOT NULL, chunks INTEGER NOT NULL,
        indexed_at INTEGER NOT NULL, PRIMARY KEY (tenant, collection, doc)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS loom_kn_chunks (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant TEXT NOT NULL, collection TEXT NOT NULL, doc TEXT NOT NULL, ordinal INTEGER NOT NULL,
        page INTEGER, line_start INTEGER, line_end INTEGER, text TEXT NOT NULL,
        embed_model TEXT, embedding BLOB);
    CREATE INDEX IF NOT EXISTS loom_kn_chunks_doc ON loom_kn_chunks (tenant, collection, doc, ordinal);
    CREATE VIRTUAL TABLE IF NOT EXISTS loom_kn_fts USING fts5(text, tokenize = 'porter unicode61');";

/// Schema step 2: creates the knowledge tables.
pub(super) fn migrate(tx: &rusqlite::Transaction<'_>) -> Result<(), Error> {
    tx.execute_batch(SCHEMA).map_err(db)?;
    tx.execute("INSERT INTO loom_kn_fts (loom_kn_fts, rank) VALUES ('secure-delete', 1)", []).map_err(db)?;
    Ok(())
}

const CHUNK_COLUMNS: &str = "c.doc, c.ordinal, c.page, c.line_start, c.line_end, c.text";

fn chunk_row(r: &Row<'_>) -> rusqlite::Result<Chunk> {
    let opt_u32 = |i: usize| -> rusqlite::Result<Option<u32>> {
        Ok(r.get::<_, Option<i64>>(i)?.and_then(|v| u32::try_from(v).ok()))
    };
    Ok(Chunk {
        document: r.get(0)?,
        ordinal: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(u32::MAX),
        location: Location { page: opt_u32(2)?, line_start: opt_u32(3)?, line_end: opt_u32(4)? },
        text: r.get(5)?,
    })
}

/// Deletes the chunks (and their text-index entries) of the documents `filter` selects.
fn delete_chunks(tx: &rusqlite::Transaction<'_>, scope: &KnowledgeScope, doc: Option<&str>) -> Result<Vec<i64>, Error> {
    let seqs: Vec<i64> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT seq FROM loom_kn_chunks WHERE tenant = ?1 AND collection = ?2 AND (?3 IS NULL OR doc = ?3)",
            )
            .map_err(db)?;
        stmt.query_map(params![scope.tenant, scope.collection, doc], |r| r.get(0))
            .map_err(db)?
            .collect::<Result<_, _>>()
            .map_err(db)?
    };
    let mut del_fts = tx.prepare_cached("DELETE FROM loom_kn_fts WHERE rowid = ?1").map_err(db)?;
    let mut del = tx.prepare_cached("DELETE FROM loom_kn_chunks WHERE seq = ?1").map_err(db)?;
    for &seq in &seqs {
        del_fts.execute([seq]).map_err(db)?;
        del.execute([seq]).map_err(db)?;
    }
    Ok(seqs)
}

/// A scope's key in the vector cache: `k` and the tenant, and the collection (memory owners' keys
/// start with `m`, so the two never meet).
fn cache_owner(scope: &KnowledgeScope) -> (String, String) {
    (format!("k{}", scope.tenant), scope.collection.clone())
}

fn doc_id(scope: &KnowledgeScope, doc: &str) -> String {
    format!("knowledge document `{doc}` of `{}`", scope.collection)
}

#[async_trait::async_trait]
impl KnowledgeStore for SqliteMemoryStore {
    async fn documents(&self, scope: &KnowledgeScope) -> Result<Vec<DocumentInfo>, Error> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT doc, mtime_ms, size, hash, chunks, indexed_at FROM loom_kn_docs
                     WHERE tenant = ?1 AND collection = ?2 ORDER BY doc",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![scope.tenant, scope.collection], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })
                .map_err(db)?;
            let mut out = Vec::new();
            for row in rows {
                let (id, mtime_ms, size, hash, chunks, at) = row.map_err(db)?;
                let what = doc_id(scope, &id);
                out.push(DocumentInfo {
                    indexed_at: time(&what, at)?,
                    size: u64::try_from(size).map_err(|_| corrupt_row(&what, "negative size"))?,
                    chunks: u32::try_from(chunks).map_err(|_| corrupt_row(&what, "bad chunk count"))?,
                    id,
                    mtime_ms,
                    hash,
                });
            }
            Ok(out)
        })
    }

    async fn put_document(&self, scope: &KnowledgeScope, doc: &DocumentInfo, chunks: &[NewChunk]) -> Result<(), Error> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let gone = delete_chunks(&tx, scope, Some(&doc.id))?;
            let mut added = Vec::new();
            tx.execute(
                "INSERT INTO loom_kn_docs (tenant, collection, doc, mtime_ms, size, hash, chunks, indexed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (tenant, collection, doc) DO UPDATE SET mtime_ms = excluded.mtime_ms,
                     size = excluded.size, hash = excluded.hash, chunks = excluded.chunks,
                     indexed_at = excluded.indexed_at",
                params![
                    scope.tenant,
                    scope.collection,
                    doc.id,
                    doc.mtime_ms,
                    i64::try_from(doc.size).unwrap_or(i64::MAX),
                    doc.hash,
                    chunks.len() as i64,
                    doc.indexed_at.timestamp_millis(),
                ],
            )
            .map_err(db)?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO loom_kn_chunks (tenant, collection, doc, ordinal, page, line_start, line_end,
                             text, embed_model, embedding) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    )
                    .map_err(db)?;
                let mut fts = tx.prepare_cached("INSERT INTO loom_kn_fts (rowid, text) VALUES (?1, ?2)").map_err(db)?;
                for (i, c) in chunks.iter().enumerate() {
                    insert
                        .execute(params![
                            scope.tenant,
                            scope.collection,
                            doc.id,
                            i as i64,
                            c.location.page,
                            c.location.line_start,
                            c.location.line_end,
                            c.text,
                            c.embedding.as_ref().map(|e| e.model.as_str()),
                            c.embedding.as_ref().map(|e| vector_bytes(&e.vector)),
                        ])
                        .map_err(db)?;
                    let seq = tx.last_insert_rowid();
                    fts.execute(params![seq, c.text]).map_err(db)?;
                    if let Some(e) = &c.embedding {
                        added.push((seq, e));
                    }
                }
            }
            tx.commit().map_err(db)?;
            let (user, agent) = cache_owner(scope);
            self.cache(|cache| {
                cache.removed(&user, &agent, &gone);
                for (seq, e) in added {
                    cache.inserted(&user, &agent, seq, &e.model, &e.vector);
                }
            });
            Ok(())
        })
    }

    async fn touch_document(&self, scope: &KnowledgeScope, doc: &DocumentInfo) -> Result<(), Error> {
        self.with(|conn| {
            conn.execute(
                "UPDATE loom_kn_docs SET mtime_ms = ?4, size = ?5, hash = ?6, indexed_at = ?7
                 WHERE tenant = ?1 AND collection = ?2 AND doc = ?3",
                params![
                    scope.tenant,
                    scope.collection,
                    doc.id,
                    doc.mtime_ms,
                    i64::try_from(doc.size).unwrap_or(i64::MAX),
                    doc.hash,
                    Utc::now().timestamp_millis(),
                ],
            )
            .map_err(db)?;
            Ok(())
        })
    }

    async fn delete_document(&self, scope: &KnowledgeScope, id: &str) -> Result<bool, Error> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let gone = delete_chunks(&tx, scope, Some(id))?;
            let n = tx
                .execute(
                    "DELETE FROM loom_kn_docs WHERE tenant = ?1 AND collection = ?2 AND doc = ?3",
                    params![scope.tenant, scope.collection, id],
                )
                .map_err(db)?;
            tx.commit().map_err(db)?;
            let (user, agent) = cache_owner(scope);
            self.cache(|cache| cache.removed(&user, &agent, &gone));
            Ok(n > 0)
        })
    }

    async fn search_text(&self, scope: &KnowledgeScope, query: &str, limit: usize) -> Result<Vec<Chunk>, Error> {
        let Some(fts) = fts_query(query) else { return Ok(Vec::new()) };
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {CHUNK_COLUMNS} FROM loom_kn_fts f JOIN loom_kn_chunks c ON c.seq = f.rowid
                     WHERE loom_kn_fts MATCH ?1 AND c.tenant = ?2 AND c.collection = ?3
                     ORDER BY f.rank LIMIT ?4"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map(params![fts, scope.tenant, scope.collection, limit.min(10_000) as i64], chunk_row)
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })
    }

    async fn search_vector(
        &self,
        scope: &KnowledgeScope,
        query: &Embedding,
        limit: usize,
    ) -> Result<Vec<Chunk>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (user, agent) = cache_owner(scope);
        self.with(|conn| {
            let version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0)).map_err(db)?;
            let want = limit.saturating_mul(2).saturating_add(8);
            let cached = self.cache(|c| {
                c.check_version(version);
                c.lookup(&user, &agent, &query.model, &query.vector, want, None)
            });
            let seqs: Vec<i64> = match cached {
                Some(Lookup::Hit(seqs)) => seqs,
                Some(Lookup::Miss) | None => {
                    let mut rows = Vec::new();
                    let mut stmt = conn
                        .prepare_cached(
                            "SELECT seq, embedding FROM loom_kn_chunks
                             WHERE tenant = ?1 AND collection = ?2 AND embed_model = ?3",
                        )
                        .map_err(db)?;
                    let mut found = stmt.query(params![scope.tenant, scope.collection, query.model]).map_err(db)?;
                    while let Some(row) = found.next().map_err(db)? {
                        let seq: i64 = row.get(0).map_err(db)?;
                        let blob =
                            row.get_ref(1).map_err(db)?.as_blob().map_err(|e| {
                                corrupt_row(&format!("knowledge chunk {seq}"), format!("embedding: {e}"))
                            })?;
                        if blob.len() == query.vector.len() * 4
                            && let Some(v) = bytes_vector(blob)
                        {
                            rows.push((seq, v));
                        }
                    }
                    let mut best = TopK::new(want);
                    for (seq, v) in &rows {
                        best.push(cosine(v, &query.vector), *seq);
                    }
                    self.cache(|c| c.fill(&user, &agent, &query.model, query.vector.len(), rows, None));
                    best.into_sorted().into_iter().map(|(_, seq)| seq).collect()
                }
            };
            // Rescored exactly from the stored vectors.
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {CHUNK_COLUMNS}, c.embedding FROM loom_kn_chunks c
                     WHERE c.seq = ?1 AND c.tenant = ?2 AND c.collection = ?3"
                ))
                .map_err(db)?;
            let mut scored = Vec::with_capacity(seqs.len());
            for seq in seqs {
                let mut rows = stmt.query(params![seq, scope.tenant, scope.collection]).map_err(db)?;
                let Some(row) = rows.next().map_err(db)? else { continue };
                let chunk = chunk_row(row).map_err(db)?;
                let score = match row.get_ref(6).map_err(db)?.as_blob_or_null() {
                    Ok(Some(blob)) if blob.len() == query.vector.len() * 4 => dot_bytes(blob, &query.vector),
                    _ => return Err(corrupt_row(&format!("knowledge chunk {seq}"), "embedding changed")),
                };
                scored.push((score, chunk));
            }
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            Ok(scored.into_iter().take(limit).map(|(_, c)| c).collect())
        })
    }

    async fn clear(&self, scope: &KnowledgeScope) -> Result<u64, Error> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let gone = delete_chunks(&tx, scope, None)?;
            let n = tx
                .execute(
                    "DELETE FROM loom_kn_docs WHERE tenant = ?1 AND collection = ?2",
                    params![scope.tenant, scope.collection],
                )
                .map_err(db)?;
            tx.commit().map_err(db)?;
            let (user, agent) = cache_owner(scope);
            self.cache(|cache| cache.removed(&user, &agent, &gone));
            Ok(n as u64)
        })
    }
}
