//! The PostgreSQL store's knowledge index (memory schema step 2): documents in `loom_kn_docs`,
//! chunks in `loom_kn_chunks` with a generated `tsvector` column under a GIN index, vectors in a
//! `real[]` column searched with an exact scan of the scope's rows. Replacing a document locks its
//! row first, so two indexers of one document never interleave.

use chrono::Utc;
use tokio_postgres::{GenericClient, Row};

use super::{PostgresMemoryStore, pg, query_terms};
use crate::error::Error;
use crate::knowledge::{Chunk, DocumentInfo, KnowledgeScope, KnowledgeStore, Location, NewChunk};
use crate::memory::Embedding;
use crate::memory::rows::{TopK, corrupt_row, time};
use crate::memory::types::cosine;

/// The knowledge tables (every statement idempotent).
pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS loom_kn_docs (
        tenant TEXT NOT NULL, collection TEXT NOT NULL, doc TEXT NOT NULL,
        mtime_ms BIGINT NOT NULL, size BIGINT NOT NULL, hash TEXT NOT NULL, chunks INTEGER NOT NULL,
        indexed_at BIGINT NOT NULL, PRIMARY KEY (tenant, collection, doc));
    CREATE TABLE IF NOT EXISTS loom_kn_chunks (
        seq BIGSERIAL PRIMARY KEY,
        tenant TEXT NOT NULL, collection TEXT NOT NULL, doc TEXT NOT NULL, ordinal INTEGER NOT NULL,
        page INTEGER, line_start INTEGER, line_end INTEGER, text TEXT NOT NULL,
        embed_model TEXT, embedding REAL[],
        tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED);
    CREATE INDEX IF NOT EXISTS loom_kn_chunks_doc ON loom_kn_chunks (tenant, collection, doc, ordinal);
    CREATE INDEX IF NOT EXISTS loom_kn_chunks_tsv ON loom_kn_chunks USING GIN (tsv);";

const CHUNK_COLUMNS: &str = "doc, ordinal, page, line_start, line_end, text";

/// A chunk from a row holding [`CHUNK_COLUMNS`] from column `at` on.
fn chunk_row(r: &Row, at: usize) -> Result<Chunk, Error> {
    let bad = |e: tokio_postgres::Error| corrupt_row("knowledge chunk", format!("unreadable column: {e}"));
    let opt_u32 = |i: usize| -> Result<Option<u32>, Error> {
        Ok(r.try_get::<_, Option<i32>>(at + i).map_err(bad)?.and_then(|v| u32::try_from(v).ok()))
    };
    Ok(Chunk {
        document: r.try_get(at).map_err(bad)?,
        ordinal: u32::try_from(r.try_get::<_, i32>(at + 1).map_err(bad)?).unwrap_or(u32::MAX),
        location: Location { page: opt_u32(2)?, line_start: opt_u32(3)?, line_end: opt_u32(4)? },
        text: r.try_get(at + 5).map_err(bad)?,
    })
}

fn opt_i32(v: Option<u32>) -> Option<i32> {
    v.map(|v| i32::try_from(v).unwrap_or(i32::MAX))
}

async fn delete_chunks<C: GenericClient>(tx: &C, scope: &KnowledgeScope, doc: Option<&str>) -> Result<(), Error> {
    tx.execute(
        "DELETE FROM loom_kn_chunks WHERE tenant = $1 AND collection = $2 AND ($3::TEXT IS NULL OR doc = $3)",
        &[&scope.tenant, &scope.collection, &doc],
    )
    .await
    .map_err(|e| pg("deleting knowledge chunks", e))?;
    Ok(())
}

#[async_trait::async_trait]
impl KnowledgeStore for PostgresMemoryStore {
    async fn documents(&self, scope: &KnowledgeScope) -> Result<Vec<DocumentInfo>, Error> {
        with_client!(self, |client| {
            async {
                let rows = client
                    .query(
                        "SELECT doc, mtime_ms, size, hash, chunks, indexed_at FROM loom_kn_docs
                         WHERE tenant = $1 AND collection = $2 ORDER BY doc",
                        &[&scope.tenant, &scope.collection],
                    )
                    .await
                    .map_err(|e| pg("reading knowledge documents", e))?;
                rows.iter()
                    .map(|r| {
                        let bad = |e: tokio_postgres::Error| corrupt_row("knowledge document", e);
                        let id: String = r.try_get(0).map_err(bad)?;
                        let size: i64 = r.try_get(2).map_err(bad)?;
                        let chunks: i32 = r.try_get(4).map_err(bad)?;
                        let what = format!("knowledge document `{id}`");
                        Ok(DocumentInfo {
                            mtime_ms: r.try_get(1).map_err(bad)?,
                            size: u64::try_from(size).map_err(|_| corrupt_row(&what, "negative size"))?,
                            hash: r.try_get(3).map_err(bad)?,
                            chunks: u32::try_from(chunks).map_err(|_| corrupt_row(&what, "bad chunk count"))?,
                            indexed_at: time(&what, r.try_get(5).map_err(bad)?)?,
                            id,
                        })
                    })
                    .collect()
            }
            .await
        })
    }

    async fn put_document(&self, scope: &KnowledgeScope, doc: &DocumentInfo, chunks: &[NewChunk]) -> Result<(), Error> {
        with_client!(self, |client| {
            async {
                let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
                // The upsert locks the document's row until the commit.
                tx.execute(
                    "INSERT INTO loom_kn_docs (tenant, collection, doc, mtime_ms, size, hash, chunks, indexed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (tenant, collection, doc) DO UPDATE SET mtime_ms = excluded.mtime_ms,
                         size = excluded.size, hash = excluded.hash, chunks = excluded.chunks,
                         indexed_at = excluded.indexed_at",
                    &[
                        &scope.tenant,
                        &scope.collection,
                        &doc.id,
                        &doc.mtime_ms,
                        &i64::try_from(doc.size).unwrap_or(i64::MAX),
                        &doc.hash,
                        &i32::try_from(chunks.len()).unwrap_or(i32::MAX),
                        &doc.indexed_at.timestamp_millis(),
                    ],
                )
                .await
                .map_err(|e| pg("storing a knowledge document", e))?;
                delete_chunks(&tx, scope, Some(&doc.id)).await?;
                let insert = tx
                    .prepare(
                        "INSERT INTO loom_kn_chunks (tenant, collection, doc, ordinal, page, line_start, line_end,
                             text, embed_model, embedding) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    )
                    .await
                    .map_err(|e| pg("storing knowledge chunks", e))?;
                for (i, c) in chunks.iter().enumerate() {
                    tx.execute(
                        &insert,
                        &[
                            &scope.tenant,
                            &scope.collection,
                            &doc.id,
                            &i32::try_from(i).unwrap_or(i32::MAX),
                            &opt_i32(c.location.page),
                            &opt_i32(c.location.line_start),
                            &opt_i32(c.location.line_end),
                            &c.text,
                            &c.embedding.as_ref().map(|e| e.model.as_str()),
                            &c.embedding.as_ref().map(|e| e.vector.as_slice()),
                        ],
                    )
                    .await
                    .map_err(|e| pg("storing knowledge chunks", e))?;
                }
                tx.commit().await.map_err(|e| pg("committing", e))
            }
            .await
        })
    }

    async fn touch_document(&self, scope: &KnowledgeScope, doc: &DocumentInfo) -> Result<(), Error> {
        with_client!(self, |client| {
            client
                .execute(
                    "UPDATE loom_kn_docs SET mtime_ms = $4, size = $5, hash = $6, indexed_at = $7
                     WHERE tenant = $1 AND collection = $2 AND doc = $3",
                    &[
                        &scope.tenant,
                        &scope.collection,
                        &doc.id,
                        &doc.mtime_ms,
                        &i64::try_from(doc.size).unwrap_or(i64::MAX),
                        &doc.hash,
                        &Utc::now().timestamp_millis(),
                    ],
                )
                .await
                .map(|_| ())
                .map_err(|e| pg("updating a knowledge document", e))
        })
    }

    async fn delete_document(&self, scope: &KnowledgeScope, id: &str) -> Result<bool, Error> {
        with_client!(self, |client| {
            async {
                let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
                let n = tx
                    .execute(
                        "DELETE FROM loom_kn_docs WHERE tenant = $1 AND collection = $2 AND doc = $3",
                        &[&scope.tenant, &scope.collection, &id],
                    )
                    .await
                    .map_err(|e| pg("deleting a knowledge document", e))?;
                delete_chunks(&tx, scope, Some(id)).await?;
                tx.commit().await.map_err(|e| pg("committing", e))?;
                Ok(n > 0)
            }
            .await
        })
    }

    async fn search_text(&self, scope: &KnowledgeScope, query: &str, limit: usize) -> Result<Vec<Chunk>, Error> {
        let terms = query_terms(query);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        // Terms are letters and digits only, so they are safe tsquery operands.
        let tsquery = terms.join(" | ");
        let limit = limit.min(10_000) as i64;
        with_client!(self, |client| {
            async {
                let rows = client
                    .query(
                        &format!(
                            "SELECT {CHUNK_COLUMNS} FROM loom_kn_chunks, to_tsquery('english', $3) q
                             WHERE tenant = $1 AND collection = $2 AND tsv @@ q
                             ORDER BY ts_rank(tsv, q) DESC, seq LIMIT $4"
                        ),
                        &[&scope.tenant, &scope.collection, &tsquery, &limit],
                    )
                    .await
                    .map_err(|e| pg("searching knowledge", e))?;
                rows.iter().map(|r| chunk_row(r, 0)).collect()
            }
            .await
        })
    }

    async fn search_vector(
        &self,
        scope: &KnowledgeScope,
        query: &Embedding,
        limit: usize,
    ) -> Result<Vec<Chunk>, Error> {
        with_client!(self, |client| {
            async {
                let rows = client
                    .query(
                        "SELECT seq, embedding FROM loom_kn_chunks
                         WHERE tenant = $1 AND collection = $2 AND embed_model = $3",
                        &[&scope.tenant, &scope.collection, &query.model],
                    )
                    .await
                    .map_err(|e| pg("reading knowledge vectors", e))?;
                let mut best = TopK::new(limit);
                for row in &rows {
                    let seq: i64 = row.try_get(0).map_err(|e| pg("reading knowledge vectors", e))?;
                    let vector: Vec<f32> = row
                        .try_get(1)
                        .map_err(|e| corrupt_row(&format!("knowledge chunk {seq}"), format!("embedding: {e}")))?;
                    if vector.len() == query.vector.len() {
                        best.push(cosine(&vector, &query.vector), seq);
                    }
                }
                let seqs: Vec<i64> = best.into_sorted().into_iter().map(|(_, s)| s).collect();
                let rows = client
                    .query(&format!("SELECT seq, {CHUNK_COLUMNS} FROM loom_kn_chunks WHERE seq = ANY($1)"), &[&seqs])
                    .await
                    .map_err(|e| pg("reading knowledge chunks", e))?;
                let mut by_seq = std::collections::HashMap::new();
                for r in &rows {
                    let seq: i64 = r.try_get(0).map_err(|e| pg("reading knowledge chunks", e))?;
                    let chunk = chunk_row(r, 1)?;
                    by_seq.insert(seq, chunk);
                }
                Ok(seqs.iter().filter_map(|s| by_seq.remove(s)).collect())
            }
            .await
        })
    }

    async fn clear(&self, scope: &KnowledgeScope) -> Result<u64, Error> {
        with_client!(self, |client| {
            async {
                let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
                let n = tx
                    .execute(
                        "DELETE FROM loom_kn_docs WHERE tenant = $1 AND collection = $2",
                        &[&scope.tenant, &scope.collection],
                    )
                    .await
                    .map_err(|e| pg("deleting knowledge", e))?;
                delete_chunks(&tx, scope, None).await?;
                tx.commit().await.map_err(|e| pg("committing", e))?;
                Ok(n)
            }
            .await
        })
    }
}
