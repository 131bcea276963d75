//! The SQLite memory store's side of the vector cache (`crate::memory::vector_cache`): the
//! owner's write counter and the scan of the owner's vectors from SQLite.

use rusqlite::{Connection, OptionalExtension, params};

use super::db;
use crate::error::Error;
use crate::memory::rows::corrupt_row;
use crate::memory::types::{Embedding, Owner, bytes_vector};

/// The owner's write counter: moved by every insert, deletion and change of validity or vector of
/// the owner's items, by any connection (the triggers of `SCHEMA`; values never repeat, since they
/// come from one counter of the file); 0 when the owner has no row (never written, or forgotten).
pub(super) fn owner_writes(conn: &Connection, owner: &Owner) -> Result<i64, Error> {
    conn.prepare_cached("SELECT n FROM loom_mem_owner_writes WHERE user_id = ?1 AND agent = ?2")
        .map_err(db)?
        .query_row(params![owner.user, owner.agent], |r| r.get(0))
        .optional()
        .map(|n| n.unwrap_or(0))
        .map_err(db)
}

/// The owner's valid vectors of the query's model and length, read from SQLite (a row whose
/// embedding is not a blob, or not a whole number of `f32`s, is [`Error::Corrupt`]).
pub(super) fn scan_vectors(conn: &Connection, owner: &Owner, query: &Embedding) -> Result<Vec<(i64, Vec<f32>)>, Error> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, id, embedding FROM loom_mem_items
             WHERE user_id = ?1 AND agent = ?2 AND active = 1 AND embed_model = ?3",
        )
        .map_err(db)?;
    let mut rows = stmt.query(params![owner.user, owner.agent, query.model]).map_err(db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        let seq: i64 = row.get(0).map_err(db)?;
        let blob = row.get_ref(2).map_err(db)?.as_blob().map_err(|e| {
            let id: String = row.get(1).unwrap_or_default();
            corrupt_row(&id, format!("embedding is not a blob: {e}"))
        })?;
        if blob.len() != query.vector.len() * 4 {
            if !blob.len().is_multiple_of(4) {
                let id: String = row.get(1).map_err(db)?;
                return Err(corrupt_row(&id, "embedding length is not a multiple of 4 bytes"));
            }
            continue;
        }
        if let Some(v) = bytes_vector(blob) {
            out.push((seq, v));
        }
    }
    Ok(out)
}

/// The dot product of a little-endian `f32` BLOB with `v` (same length, checked by the caller).
pub(super) fn dot_bytes(blob: &[u8], v: &[f32]) -> f32 {
    let mut sum = [0f32; 8];
    let mut chunks = blob.chunks_exact(32).zip(v.chunks_exact(8));
    for (b, x) in &mut chunks {
        for j in 0..8 {
            let f = f32::from_le_bytes([b[j * 4], b[j * 4 + 1], b[j * 4 + 2], b[j * 4 + 3]]);
            sum[j] += f * x[j];
        }
    }
    let done = v.len() / 8 * 8;
    let mut total: f32 = sum.iter().sum();
    if let Some(rest) = bytes_vector(&blob[done * 4..]) {
        total += rest.iter().zip(&v[done..]).map(|(a, b)| a * b).sum::<f32>();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::vector_cache::{Lookup, VectorCache};

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..dim)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    #[test]
    fn the_quantized_scan_ranks_like_the_exact_one_and_follows_removals() {
        let dim = 48;
        let rows: Vec<(i64, Vec<f32>)> = (0..500).map(|i| (i, unit(i as u64 + 1, dim))).collect();
        let mut cache = VectorCache::new(1 << 20);
        cache.check_version(1);
        cache.fill("u", "", "m", dim, rows.clone(), None);
        let query = unit(9999, dim);
        let exact = {
            let mut s: Vec<(f32, i64)> =
                rows.iter().map(|(seq, v)| (v.iter().zip(&query).map(|(a, b)| a * b).sum(), *seq)).collect();
            s.sort_by(|a, b| b.0.total_cmp(&a.0));
            s
        };
        let Lookup::Hit(found) = cache.lookup("u", "", "m", &query, 20, None) else { panic!("not cached") };
        assert!(found.contains(&exact[0].1), "the best is among the candidates");
        let top5: Vec<i64> = exact.iter().take(5).map(|(_, s)| *s).collect();
        assert!(top5.iter().filter(|s| found.contains(s)).count() >= 4);
        cache.removed("u", "", &[exact[0].1]);
        let Lookup::Hit(found) = cache.lookup("u", "", "m", &query, 20, None) else { panic!() };
        assert!(!found.contains(&exact[0].1));
        cache.inserted("u", "", 10_000, "m", &query);
        let Lookup::Hit(found) = cache.lookup("u", "", "m", &query, 1, None) else { panic!() };
        assert_eq!(found, vec![10_000]);
        // Another owner, model or dimension is a miss; a new data version empties the cache.
        assert!(matches!(cache.lookup("v", "", "m", &query, 1, None), Lookup::Miss));
        assert!(matches!(cache.lookup("u", "", "other", &query, 1, None), Lookup::Miss));
        cache.check_version(2);
        assert!(matches!(cache.lookup("u", "", "m", &query, 1, None), Lookup::Miss));
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used_and_refuses_what_cannot_fit() {
        let dim = 16;
        let rows = |n: i64| (0..n).map(|i| (i, unit(i as u64 + 3, dim))).collect::<Vec<_>>();
        let mut cache = VectorCache::new(100 * (dim + 28));
        cache.check_version(1);
        cache.fill("a", "", "m", dim, rows(60), None);
        cache.fill("b", "", "m", dim, rows(30), None);
        let q = unit(1, dim);
        assert!(matches!(cache.lookup("a", "", "m", &q, 1, None), Lookup::Hit(_)));
        cache.fill("c", "", "m", dim, rows(30), None);
        assert!(matches!(cache.lookup("b", "", "m", &q, 1, None), Lookup::Miss), "b was least recently used");
        assert!(matches!(cache.lookup("a", "", "m", &q, 1, None), Lookup::Hit(_)));
        cache.fill("d", "", "m", dim, rows(500), None);
        assert!(matches!(cache.lookup("d", "", "m", &q, 1, None), Lookup::Miss), "too big to cache");
    }

    #[test]
    fn a_memory_owner_entry_follows_its_write_counter_not_other_commits() {
        let dim = 32;
        let rows: Vec<(i64, Vec<f32>)> = (0..50).map(|i| (i, unit(i as u64 + 5, dim))).collect();
        let q = unit(77, dim);
        let mut cache = VectorCache::new(1 << 20);
        cache.check_version(1);
        cache.fill("mu", "", "m", dim, rows.clone(), Some(7));
        cache.fill("kt", "c", "m", dim, rows.clone(), None);
        // Another connection committed (say, to the journal's tables): the knowledge scope is
        // dropped, the memory owner is kept while its counter has not moved.
        cache.check_version(2);
        assert!(!cache.holds("kt", "c", "m", dim));
        assert!(matches!(cache.lookup("mu", "", "m", &q, 3, Some(7)), Lookup::Hit(_)));
        // This connection's write moved the counter 7 → 9: the entry follows it.
        cache.owner_wrote("mu", "", (7, 9), &[0, 1], Some((1000, "m", &q)));
        let Lookup::Hit(found) = cache.lookup("mu", "", "m", &q, 1, Some(9)) else { panic!("dropped") };
        assert_eq!(found, vec![1000]);
        let Lookup::Hit(all) = cache.lookup("mu", "", "m", &q, 100, Some(9)) else { panic!("dropped") };
        assert_eq!(all.len(), 49, "two removed, one added");
        assert!(!all.contains(&0) && !all.contains(&1));
        // A write this connection did not see (the counter is not the one cached): dropped.
        assert!(matches!(cache.lookup("mu", "", "m", &q, 1, Some(12)), Lookup::Miss));
        assert!(!cache.holds("mu", "", "m", dim));
        cache.fill("mu", "", "m", dim, rows, Some(12));
        cache.owner_wrote("mu", "", (13, 14), &[], None);
        assert!(!cache.holds("mu", "", "m", dim), "cached at 12, written from 13: another write came between");
    }

    /// The store level: a commit by another connection to another table (a journal sharing the
    /// file) or to another owner keeps the owner's entry (no refill); another connection's write
    /// to the owner's items is seen at the next search; this store's own writes keep the entry.
    #[tokio::test]
    async fn other_tables_and_owners_keep_the_entry_and_the_owners_writes_are_seen() {
        use crate::memory::{Forget, MemoryStore, NewFact, SqliteMemoryStore};
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let path = std::env::temp_dir().join(format!("loom-vector-cache-{}-{nanos}.db", std::process::id()));
        let store = SqliteMemoryStore::open(&path).unwrap();
        let other = SqliteMemoryStore::open(&path).unwrap();
        let owner = Owner::user("u1").unwrap();
        let e = |seed: u64| Some(Embedding { model: "m".into(), vector: unit(seed, 16) });
        for i in 0..20 {
            store.add_fact(&owner, NewFact::new(format!("fact {i}")), e(i + 1)).await.unwrap();
        }
        let q = Embedding { model: "m".into(), vector: unit(1000, 16) };
        let fills = |s: &SqliteMemoryStore| s.vectors.lock().unwrap().fills();
        store.search_vector(&owner, &q, 3).await.unwrap();
        assert_eq!(fills(&store), 1);

        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE journal_like (x); INSERT INTO journal_like VALUES (1);").unwrap();
        other.add_fact(&Owner::user("u2").unwrap(), NewFact::new("someone else"), e(99)).await.unwrap();
        store.search_vector(&owner, &q, 3).await.unwrap();
        assert_eq!(fills(&store), 1, "not refilled for other tables and owners");

        other.add_fact(&owner, NewFact::new("written elsewhere"), Some(q.clone())).await.unwrap();
        let found = store.search_vector(&owner, &q, 1).await.unwrap();
        assert_eq!(found[0].text, "written elsewhere");
        assert_eq!(fills(&store), 2, "refilled after another connection wrote the owner's items");
        // Without another write, it is not read again; this store's own writes keep it too.
        store.add_fact(&owner, NewFact::new("mine"), Some(q.clone())).await.unwrap();
        let found = store.search_vector(&owner, &q, 2).await.unwrap();
        assert_eq!(found.iter().map(|i| i.text.as_str()).collect::<Vec<_>>().len(), 2);
        assert!(found.iter().any(|i| i.text == "mine"));
        assert_eq!(fills(&store), 2);

        // A row changed by another connection (even by SQL, not by a store): seen.
        conn.execute("UPDATE loom_mem_items SET active = 0 WHERE text = 'mine'", []).unwrap();
        let found = store.search_vector(&owner, &q, 2).await.unwrap();
        assert!(found.iter().all(|i| i.text != "mine"));
        other.forget(&owner, &Forget::All).await.unwrap();
        assert!(store.search_vector(&owner, &q, 5).await.unwrap().is_empty());
        drop(conn);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
