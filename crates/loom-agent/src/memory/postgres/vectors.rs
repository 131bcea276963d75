//! The PostgreSQL memory store's side of the vector cache (`crate::memory::vector_cache`): the
//! per-owner write counter (`loom_mem_owner_writes`, kept by a trigger on `loom_mem_items`, so
//! every writer of the database moves it, in the writing transaction) and vector search through
//! the cache.
//!
//! A search reads the owner's counter (one indexed row), then scans the cached matrix if it was
//! filled at that counter, or reads the owner's vectors and fills it; the candidates are rescored
//! exactly from their stored `real[]` vectors in one query. A write through this store locks the
//! counter row first (so no other writer of the owner commits between its two reads of the
//! counter) and, after committing, moves the cached entry from the counter it read before to the
//! one after; an entry cached at any other counter is dropped.

use tokio_postgres::GenericClient;

use super::{PostgresMemoryStore, cache_owner};
use crate::error::Error;
use crate::memory::rows::{ITEM_COLUMNS, TopK, corrupt_row};
use crate::memory::types::{Embedding, MemoryItem, Owner, cosine};
use crate::memory::vector_cache::Lookup;
use crate::store::postgres::pg;

/// The counter table, its sequence and the trigger (idempotent). Counter values come from one
/// sequence, so they never repeat; 0 stands for "no row" (never written, or forgotten). The
/// function keeps the `search_path` it was created under (the store's schema), so a write by a
/// session with another `search_path` (plain SQL naming `schema.loom_mem_items`) moves this
/// schema's counter instead of failing or moving another schema's.
pub(super) const SCHEMA: &str = "
    CREATE SEQUENCE IF NOT EXISTS loom_mem_writes_seq;
    CREATE TABLE IF NOT EXISTS loom_mem_owner_writes (
        user_id TEXT NOT NULL, agent TEXT NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (user_id, agent));
    CREATE OR REPLACE FUNCTION loom_mem_owner_wrote() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            INSERT INTO loom_mem_owner_writes (user_id, agent, n)
                VALUES (OLD.user_id, OLD.agent, nextval('loom_mem_writes_seq'))
                ON CONFLICT (user_id, agent) DO UPDATE SET n = excluded.n;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO loom_mem_owner_writes (user_id, agent, n)
                VALUES (NEW.user_id, NEW.agent, nextval('loom_mem_writes_seq'))
                ON CONFLICT (user_id, agent) DO UPDATE SET n = excluded.n;
        END IF;
        RETURN NULL;
    END $$;
    CREATE OR REPLACE TRIGGER loom_mem_items_written
        AFTER INSERT OR DELETE OR UPDATE OF user_id, agent, active, embed_model, embedding ON loom_mem_items
        FOR EACH ROW EXECUTE FUNCTION loom_mem_owner_wrote();";

/// Run when the counter table is first created: owners whose items were written before it get a
/// counter, so 0 always means the owner has no items.
pub(super) const SEED: &str = "
    INSERT INTO loom_mem_owner_writes (user_id, agent, n)
        SELECT user_id, agent, nextval('loom_mem_writes_seq') FROM (SELECT DISTINCT user_id, agent FROM loom_mem_items) o
        ON CONFLICT (user_id, agent) DO NOTHING";

/// The owner's write counter (0 when the owner has no row).
pub(super) async fn owner_writes<C: GenericClient>(client: &C, owner: &Owner) -> Result<i64, Error> {
    let row = client
        .query_opt(
            "SELECT n FROM loom_mem_owner_writes WHERE user_id = $1 AND agent = $2",
            &[&owner.user, &owner.agent],
        )
        .await
        .map_err(|e| pg("reading the owner's write counter", e))?;
    match row {
        Some(r) => r.try_get(0).map_err(|e| pg("reading the owner's write counter", e)),
        None => Ok(0),
    }
}

/// Locks the owner's write counter row until the transaction ends (creating it at 0, which reads
/// the same as no row) and returns its value: no other writer of the owner's items commits until
/// then.
pub(super) async fn lock_writes<C: GenericClient>(tx: &C, owner: &Owner) -> Result<i64, Error> {
    let row = tx
        .query_one(
            "INSERT INTO loom_mem_owner_writes (user_id, agent, n) VALUES ($1, $2, 0)
             ON CONFLICT (user_id, agent) DO UPDATE SET n = loom_mem_owner_writes.n RETURNING n",
            &[&owner.user, &owner.agent],
        )
        .await
        .map_err(|e| pg("locking the owner's write counter", e))?;
    row.try_get(0).map_err(|e| pg("locking the owner's write counter", e))
}

impl PostgresMemoryStore {
    /// This store committed writes to the owner's items that moved its counter `before` → `after`.
    pub(super) fn owner_wrote(
        &self,
        owner: &Owner,
        counters: (i64, i64),
        removed: &[i64],
        inserted: Option<(i64, &Embedding)>,
    ) {
        let (user, agent) = cache_owner(owner);
        if let Ok(mut cache) = self.vectors.lock() {
            let inserted = inserted.map(|(seq, e)| (seq, e.model.as_str(), e.vector.as_slice()));
            cache.owner_wrote(&user, &agent, counters, removed, inserted);
        }
    }

    /// Vector search through the cache (see the module docs).
    pub(super) async fn vector_search<C: GenericClient>(
        &self,
        client: &C,
        owner: &Owner,
        query: &Embedding,
        limit: usize,
    ) -> Result<Vec<MemoryItem>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (user, agent) = cache_owner(owner);
        // Read before the vectors (a fill stores it): a write in between makes the next lookup
        // refill, never serve stale vectors.
        let writes = owner_writes(client, owner).await?;
        // Candidates from the cache are rescored exactly: take more than asked for.
        let want = limit.saturating_mul(2).saturating_add(8);
        let cached = self
            .vectors
            .lock()
            .ok()
            .map(|mut c| c.lookup(&user, &agent, &query.model, &query.vector, want, Some(writes)));
        let seqs: Vec<i64> = match cached {
            Some(Lookup::Hit(seqs)) => seqs,
            Some(Lookup::Miss) | None => {
                let rows = scan_vectors(client, owner, query).await?;
                let mut best = TopK::new(want);
                for (seq, v) in &rows {
                    best.push(cosine(v, &query.vector), *seq);
                }
                if let Ok(mut c) = self.vectors.lock() {
                    c.fill(&user, &agent, &query.model, query.vector.len(), rows, Some(writes));
                }
                best.into_sorted().into_iter().map(|(_, seq)| seq).collect()
            }
        };
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let rows = client
            .query(
                &format!(
                    "SELECT {ITEM_COLUMNS}, embedding FROM loom_mem_items
                     WHERE seq = ANY($1) AND user_id = $2 AND agent = $3 AND active AND embed_model = $4"
                ),
                &[&seqs, &owner.user, &owner.agent, &query.model],
            )
            .await
            .map_err(|e| pg("reading memory", e))?;
        let mut scored = Vec::with_capacity(rows.len());
        for row in &rows {
            let item = super::item_row(row)?;
            let vector: Option<Vec<f32>> =
                row.try_get(13).map_err(|e| corrupt_row(&item.id, format!("unreadable embedding: {e}")))?;
            // Changed by a commit after the counter was read: left out, as a search a moment
            // earlier would have.
            let Some(vector) = vector.filter(|v| v.len() == query.vector.len()) else { continue };
            scored.push((cosine(&vector, &query.vector), item.into_item()?));
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        Ok(scored.into_iter().take(limit).map(|(_, item)| item).collect())
    }
}

/// The owner's valid vectors of the query's model and length.
async fn scan_vectors<C: GenericClient>(
    client: &C,
    owner: &Owner,
    query: &Embedding,
) -> Result<Vec<(i64, Vec<f32>)>, Error> {
    let rows = client
        .query(
            "SELECT seq, id, embedding FROM loom_mem_items
             WHERE user_id = $1 AND agent = $2 AND active AND embed_model = $3",
            &[&owner.user, &owner.agent, &query.model],
        )
        .await
        .map_err(|e| pg("reading vectors", e))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let seq: i64 = row.try_get(0).map_err(|e| pg("reading vectors", e))?;
        let vector: Vec<f32> = row.try_get(2).map_err(|e| {
            let id: String = row.try_get(1).unwrap_or_default();
            corrupt_row(&id, format!("unreadable embedding: {e}"))
        })?;
        if vector.len() == query.vector.len() {
            out.push((seq, vector));
        }
    }
    Ok(out)
}
