//! The PostgreSQL memory store's pgvector path: when the `vector` extension (≥ 0.8) is installed,
//! or available and creatable by the store's role, vector search runs in the database through
//! HNSW indexes instead of the in-process cache.
//!
//! - **Storage.** `loom_mem_items.embedding REAL[]` stays the stored vector (every writer, old
//!   versions and stores with pgvector off included, keeps writing it); the migration adds
//!   `vec vector`, a column generated from it (NULL for an empty, over-long or non-finite vector,
//!   which pgvector refuses), so existing rows migrate in the `ALTER TABLE` and no writer can leave
//!   the two apart.
//! - **Indexes.** One HNSW index (`vector_cosine_ops`) per embedding model and dimension, on
//!   `vec::vector(N)` and partial on `embed_model = 'model' AND vector_dims(vec) = N`, created at
//!   the first search of that model (under the migration lock): vectors of different models or
//!   dimensions are never compared, and the column needs no fixed dimension.
//! - **Search.** `ORDER BY vec::vector(N) <=> query LIMIT want`, filtered by owner, model and
//!   dimension, with `hnsw.iterative_scan = relaxed_order` (pgvector 0.8) so that an owner's filter
//!   applied to the index's candidates keeps scanning until enough of the owner's rows are found.
//!   The planner picks the owner's b-tree index and an exact sort for a small owner. When fewer rows
//!   than wanted come back (the owner has fewer, or the iterative scan stopped at
//!   `hnsw.max_scan_tuples`), the same query runs without the index order (an exact sort of the
//!   owner's rows). The rows are rescored exactly from `embedding`, as on the cache path.

use tokio_postgres::{Client, GenericClient};

use super::PostgresMemoryStore;
use crate::error::Error;
use crate::memory::rows::{ITEM_COLUMNS, corrupt_row};
use crate::memory::types::{Embedding, MemoryItem, Owner, cosine};
use crate::store::postgres::pg;

/// The oldest pgvector the store uses (iterative index scans came in 0.8.0).
const MIN_VERSION: (u32, u32) = (0, 8);

/// The most dimensions pgvector indexes with HNSW (for `vector`).
const MAX_INDEXED_DIMS: usize = 2000;

/// How a PostgreSQL memory store searches vectors, decided when it first connects (see
/// [`PostgresMemoryStore::vector_path`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VectorPath {
    /// pgvector: HNSW indexes per model and dimension, searched in the database.
    Pgvector {
        /// The schema the extension lives in.
        schema: String,
        /// The extension's version.
        version: String,
    },
    /// Vectors in `real[]`, searched exactly through the in-process vector cache: pgvector is
    /// not installed (nor creatable), older than 0.8, or turned off.
    ExactScan {
        /// Why pgvector is not used.
        reason: String,
    },
}

/// A SQL identifier, quoted.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal (standard-conforming strings: only `'` is special).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split('.');
    Some((parts.next()?.trim().parse().ok()?, parts.next()?.trim().parse().ok()?))
}

/// The extension's schema and version, when installed.
async fn installed<C: GenericClient>(tx: &C) -> Result<Option<(String, String)>, Error> {
    let row = tx
        .query_opt(
            "SELECT n.nspname::TEXT, e.extversion FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
             WHERE e.extname = 'vector'",
            &[],
        )
        .await
        .map_err(|e| pg("reading the installed extensions", e))?;
    match row {
        Some(r) => Ok(Some((
            r.try_get(0).map_err(|e| pg("reading the installed extensions", e))?,
            r.try_get(1).map_err(|e| pg("reading the installed extensions", e))?,
        ))),
        None => Ok(None),
    }
}

/// Decides the vector path in the migration transaction `tx` (which holds the migration lock):
/// creates the extension if it is available and not installed (a role that may not is told in the
/// path's reason), and adds the generated `vec` column.
pub(super) async fn migrate(tx: &tokio_postgres::Transaction<'_>, wanted: bool) -> Result<VectorPath, Error> {
    if !wanted {
        return Ok(VectorPath::ExactScan { reason: "pgvector turned off".into() });
    }
    let mut found = installed(tx).await?;
    if found.is_none() {
        let available = tx
            .query_opt("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'", &[])
            .await
            .map_err(|e| pg("reading the available extensions", e))?
            .is_some();
        if !available {
            return Ok(VectorPath::ExactScan { reason: "pgvector is not installed on the server".into() });
        }
        tx.batch_execute("SAVEPOINT loom_pgvector").await.map_err(|e| pg("creating a savepoint", e))?;
        if let Err(e) = tx.batch_execute("CREATE EXTENSION IF NOT EXISTS vector").await {
            tx.batch_execute("ROLLBACK TO SAVEPOINT loom_pgvector").await.map_err(|e| pg("rolling back", e))?;
            return Ok(VectorPath::ExactScan { reason: format!("pgvector is available but not created: {e}") });
        }
        found = installed(tx).await?;
    }
    let Some((schema, version)) = found else {
        return Ok(VectorPath::ExactScan { reason: "pgvector could not be created".into() });
    };
    if parse_version(&version).is_none_or(|v| v < MIN_VERSION) {
        return Ok(VectorPath::ExactScan { reason: format!("pgvector {version} is older than 0.8") });
    }
    let s = ident(&schema);
    let has_column = tx
        .query_opt(
            "SELECT 1 FROM pg_attribute WHERE attrelid = 'loom_mem_items'::regclass AND attname = 'vec' AND NOT attisdropped",
            &[],
        )
        .await
        .map_err(|e| pg("reading the memory tables", e))?
        .is_some();
    if has_column {
        return Ok(VectorPath::Pgvector { schema, version });
    }
    tx.batch_execute(&format!(
        "ALTER TABLE loom_mem_items ADD COLUMN IF NOT EXISTS vec {s}.vector GENERATED ALWAYS AS (
            CASE WHEN cardinality(embedding) BETWEEN 1 AND 16000
                AND NOT ('NaN'::REAL = ANY(embedding) OR 'Infinity'::REAL = ANY(embedding)
                    OR '-Infinity'::REAL = ANY(embedding))
            THEN embedding::{s}.vector END) STORED"
    ))
    .await
    .map_err(|e| pg("adding the pgvector column", e))?;
    Ok(VectorPath::Pgvector { schema, version })
}

/// The name of the HNSW index of one model and dimension.
fn index_name(model: &str, dim: usize) -> String {
    use sha2::{Digest, Sha256};
    let digest =
        Sha256::new().chain_update(model.as_bytes()).chain_update([0u8]).chain_update(dim.to_le_bytes()).finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("loom_mem_items_hnsw_{hex}")
}

impl PostgresMemoryStore {
    /// Creates the HNSW index of the query's model and dimension if this store has not yet.
    async fn ensure_index(&self, client: &mut Client, schema: &str, model: &str, dim: usize) -> Result<(), Error> {
        let key = (model.to_string(), dim);
        if self.hnsw_indexes.lock().map(|set| set.contains(&key)).unwrap_or(false) {
            return Ok(());
        }
        let s = ident(schema);
        let started = std::time::Instant::now();
        let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&super::MIGRATION_LOCK])
            .await
            .map_err(|e| pg("locking", e))?;
        tx.batch_execute(&format!(
            "CREATE INDEX IF NOT EXISTS {name} ON loom_mem_items
                USING hnsw ((vec::{s}.vector({dim})) {s}.vector_cosine_ops)
                WHERE embed_model = {model} AND {s}.vector_dims(vec) = {dim}",
            name = ident(&index_name(model, dim)),
            model = literal(model),
        ))
        .await
        .map_err(|e| pg("creating the HNSW index", e))?;
        tx.commit().await.map_err(|e| pg("committing the HNSW index", e))?;
        tracing::info!(model, dim, ms = started.elapsed().as_millis() as u64, "memory: pgvector HNSW index ready");
        if let Ok(mut set) = self.hnsw_indexes.lock() {
            set.insert(key);
        }
        Ok(())
    }

    /// Vector search through pgvector (see the module docs). A query vector pgvector cannot
    /// index (empty, over 2,000 dimensions, not finite) is searched on the cache path instead.
    pub(super) async fn pgvector_search(
        &self,
        client: &mut Client,
        schema: &str,
        owner: &Owner,
        query: &Embedding,
        limit: usize,
    ) -> Result<Vec<MemoryItem>, Error> {
        let dim = query.vector.len();
        if limit == 0 {
            return Ok(Vec::new());
        }
        if dim == 0 || dim > MAX_INDEXED_DIMS || !query.vector.iter().all(|x| x.is_finite()) {
            return self.vector_search(&*client, owner, query, limit).await;
        }
        self.ensure_index(client, schema, &query.model, dim).await?;
        let want = limit.saturating_mul(2).saturating_add(8).min(100_000);
        let s = ident(schema);
        let select = |order: &str| {
            format!(
                "SELECT {ITEM_COLUMNS}, embedding FROM loom_mem_items
                 WHERE user_id = $1 AND agent = $2 AND active AND embed_model = {model} AND {s}.vector_dims(vec) = {dim}
                 ORDER BY {order} LIMIT $4",
                model = literal(&query.model),
            )
        };
        let distance = format!("vec::{s}.vector({dim}) OPERATOR({s}.<=>) $3::REAL[]::{s}.vector({dim})");
        let limit_rows = want as i64;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&owner.user, &owner.agent, &query.vector, &limit_rows];
        let tx = client.transaction().await.map_err(|e| pg("beginning", e))?;
        tx.batch_execute(&format!(
            "SET LOCAL hnsw.iterative_scan = relaxed_order; SET LOCAL hnsw.ef_search = {}",
            want.clamp(64, 1000)
        ))
        .await
        .map_err(|e| pg("setting the HNSW search", e))?;
        let mut rows = tx.query(&select(&distance), &params).await.map_err(|e| pg("searching vectors", e))?;
        if rows.len() < want {
            // An exact sort of the owner's rows (the expression is not the index's order).
            rows = tx
                .query(&select(&format!("({distance}) + 0")), &params)
                .await
                .map_err(|e| pg("searching vectors", e))?;
        }
        tx.commit().await.map_err(|e| pg("committing", e))?;
        let mut scored = Vec::with_capacity(rows.len());
        for row in &rows {
            let item = super::item_row(row)?;
            let vector: Option<Vec<f32>> =
                row.try_get(13).map_err(|e| corrupt_row(&item.id, format!("unreadable embedding: {e}")))?;
            let Some(vector) = vector.filter(|v| v.len() == dim) else { continue };
            scored.push((cosine(&vector, &query.vector), item.into_item()?));
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        Ok(scored.into_iter().take(limit).map(|(_, item)| item).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_literals_are_quoted_and_versions_parsed() {
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(parse_version("0.8.6"), Some((0, 8)));
        assert_eq!(parse_version("0.7"), Some((0, 7)));
        assert_eq!(parse_version("x"), None);
        assert!(parse_version("0.7.4").is_some_and(|v| v < MIN_VERSION));
        assert_ne!(index_name("m", 384), index_name("m", 385));
        assert_ne!(index_name("a", 384), index_name("b", 384));
        assert!(index_name("m", 384).len() < 64, "within PostgreSQL's identifier limit");
    }
}
