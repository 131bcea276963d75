//! The PostgreSQL memory store's pgvector path: the store says which path it took; with pgvector
//! it finds what the exact path finds (a small set: the same top results), keeps owners apart,
//! never recalls a superseded or forgotten fact, searches a large owner through the HNSW index
//! (recall@10 against the exact path ≥ 0.9), and migrates a database whose vectors were written
//! without it. Needs `LOOM_TEST_POSTGRES_URL` and, for all but the first test, a server with the
//! `vector` extension (≥ 0.8) available (else prints "skipped: pgvector not installed").

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod memory_support;

use loom_agent::memory::{Embedding, Forget, MemoryStore, NewFact, Owner, PostgresMemoryStore, VectorPath};
use memory_support::*;

const MODEL: &str = "test:pgvector-64";

fn emb(vector: Vec<f32>) -> Option<Embedding> {
    Some(Embedding { model: MODEL.into(), vector })
}

async fn texts(store: &PostgresMemoryStore, owner: &Owner, q: &[f32], limit: usize) -> Vec<String> {
    let q = Embedding { model: MODEL.into(), vector: q.to_vec() };
    store.search_vector(owner, &q, limit).await.unwrap().into_iter().map(|i| i.text).collect()
}

async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// The two stores on `url` (pgvector, exact), or `None` (printing why) when the server has no
/// pgvector.
async fn both(url: &str) -> Option<(PostgresMemoryStore, PostgresMemoryStore)> {
    let indexed = PostgresMemoryStore::new(url).unwrap();
    match indexed.vector_path().await.unwrap() {
        VectorPath::Pgvector { .. } => {}
        VectorPath::ExactScan { reason } => {
            eprintln!("skipped: pgvector not installed ({reason})");
            return None;
        }
    }
    let exact = PostgresMemoryStore::new(url).unwrap().pgvector(false);
    assert!(matches!(exact.vector_path().await.unwrap(), VectorPath::ExactScan { .. }));
    Some((indexed, exact))
}

#[tokio::test]
async fn the_store_says_which_path_it_took_and_the_option_turns_pgvector_off() {
    let Some(url) = postgres_url() else { return };
    let off = PostgresMemoryStore::new(&url).unwrap().pgvector(false);
    assert_eq!(off.vector_path().await.unwrap(), VectorPath::ExactScan { reason: "pgvector turned off".into() });
    let client = raw_client(&url).await;
    let available = client
        .query_opt("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'", &[])
        .await
        .unwrap()
        .map(|r| r.get::<_, String>(0));
    let path = PostgresMemoryStore::new(&url).unwrap().vector_path().await.unwrap();
    let usable = |v: &str| {
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (0, 8)
    };
    match available {
        Some(v) if usable(&v) => {
            assert!(matches!(path, VectorPath::Pgvector { .. }), "{path:?}")
        }
        _ => {
            eprintln!("skipped: pgvector not installed");
            assert!(matches!(path, VectorPath::ExactScan { .. }), "{path:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgvector_finds_what_the_exact_path_finds_within_the_owner() {
    let Some(url) = postgres_url() else { return };
    let Some((indexed, exact)) = both(&url).await else { return };
    let owner = Owner::user(format!("pgv{}", unique())).unwrap();
    let other = Owner::user(format!("pgo{}", unique())).unwrap();
    let mut state = 11u64;
    for i in 0..120 {
        indexed
            .add_fact(&owner, NewFact::new(format!("{} fact {i}", owner.user)), emb(random_unit(&mut state)))
            .await
            .unwrap();
        exact
            .add_fact(&other, NewFact::new(format!("{} fact {i}", other.user)), emb(random_unit(&mut state)))
            .await
            .unwrap();
    }
    let queries: Vec<Vec<f32>> = (0..10).map(|_| random_unit(&mut state)).collect();
    for (i, q) in queries.iter().enumerate() {
        let a = texts(&indexed, &owner, q, 10).await;
        assert_eq!(a, texts(&exact, &owner, q, 10).await, "query {i}");
        assert_eq!(a.len(), 10);
        assert!(a.iter().all(|t| t.starts_with(&owner.user)), "{a:?}");
        let b = texts(&indexed, &other, q, 10).await;
        assert_eq!(b, texts(&exact, &other, q, 10).await, "query {i}, other owner");
        assert!(b.iter().all(|t| t.starts_with(&other.user)), "{b:?}");
    }
    // Supersession and forgetting.
    let kiwi = random_unit(&mut state);
    let kiwi_text = format!("{} kiwi", owner.user);
    indexed.add_fact(&owner, NewFact::new(&kiwi_text).key("plan"), emb(kiwi.clone())).await.unwrap();
    assert_eq!(texts(&indexed, &owner, &kiwi, 1).await, std::slice::from_ref(&kiwi_text));
    exact
        .add_fact(&owner, NewFact::new(format!("{} mango", owner.user)).key("plan"), emb(random_unit(&mut state)))
        .await
        .unwrap();
    assert!(!texts(&indexed, &owner, &kiwi, 200).await.contains(&kiwi_text), "superseded");
    let mango =
        indexed.facts(&owner, false).await.unwrap().into_iter().find(|f| f.statement.contains("mango")).unwrap();
    indexed.forget(&owner, &Forget::Item(mango.id)).await.unwrap();
    assert!(!texts(&indexed, &owner, &kiwi, 200).await.iter().any(|t| t.contains("mango")));
    // A vector of another model or dimension is never compared.
    let short = Embedding { model: MODEL.into(), vector: vec![1.0, 0.0, 0.0] };
    assert!(indexed.search_vector(&owner, &short, 5).await.unwrap().is_empty());
    for o in [&owner, &other] {
        indexed.forget(o, &Forget::All).await.unwrap();
    }
    assert!(texts(&indexed, &owner, &queries[0], 10).await.is_empty());
}

/// One owner of 3,000 vectors: the planner takes the HNSW index (checked with `EXPLAIN`), and its
/// results hold at least nine in ten of the exact path's top 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_owner_is_searched_through_the_hnsw_index() {
    let Some(url) = postgres_url() else { return };
    let Some((indexed, exact)) = both(&url).await else { return };
    let owner = Owner::user(format!("pgbig{}", unique())).unwrap();
    let mut state = 5u64;
    let client = raw_client(&url).await;
    // Bulk rows through SQL (3,000 `add_fact` calls would dominate the test), as another writer.
    let vectors: Vec<Vec<f32>> = (0..3000).map(|_| random_unit(&mut state)).collect();
    let texts_: Vec<String> = (0..3000).map(|i| format!("{} fact {i}", owner.user)).collect();
    let ids: Vec<String> = (0..3000).map(|i| format!("fact-big-{}-{i}", owner.user)).collect();
    let flat: Vec<f32> = vectors.concat();
    client
        .execute(
            "INSERT INTO loom_mem_items (id, user_id, agent, kind, text, data, importance, active, extracted,
                 valid_from, recorded_at, embed_model, embedding)
             SELECT ids[i], $2::TEXT, '', 'fact', texts[i], '{}', 0.5, TRUE, TRUE, 0, 0, $5::TEXT,
                 flat[(i - 1) * $6::INT + 1 : i * $6::INT]
             FROM (SELECT $1::TEXT[] AS ids, $3::TEXT[] AS texts, $4::REAL[] AS flat) a, generate_series(1, 3000) i",
            &[&ids, &owner.user, &texts_, &flat, &MODEL, &(DIM as i32)],
        )
        .await
        .unwrap();
    client.batch_execute("ANALYZE loom_mem_items").await.unwrap();
    let queries: Vec<Vec<f32>> = (0..20).map(|_| random_unit(&mut state)).collect();
    let mut found = 0;
    for q in &queries {
        let a = texts(&indexed, &owner, q, 10).await;
        let b = texts(&exact, &owner, q, 10).await;
        assert_eq!(b.len(), 10);
        found += a.iter().filter(|t| b.contains(t)).count();
    }
    let recall = found as f64 / 200.0;
    assert!(recall >= 0.9, "recall@10 {recall}");
    // The plan of the store's query, with its settings, uses the index.
    client
        .batch_execute("BEGIN; SET LOCAL hnsw.iterative_scan = relaxed_order; SET LOCAL hnsw.ef_search = 64")
        .await
        .unwrap();
    let schema: String = client
        .query_one("SELECT n.nspname::TEXT FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'", &[])
        .await
        .unwrap()
        .get(0);
    let s = format!("\"{schema}\"");
    let plan: Vec<String> = client
        .query(
            &format!(
                "EXPLAIN SELECT id FROM loom_mem_items WHERE user_id = $1 AND agent = '' AND active
                 AND embed_model = '{MODEL}' AND {s}.vector_dims(vec) = {DIM}
                 ORDER BY vec::{s}.vector({DIM}) OPERATOR({s}.<=>) $2::REAL[]::{s}.vector({DIM}) LIMIT 28"
            ),
            &[&owner.user, &queries[0]],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    client.batch_execute("COMMIT").await.unwrap();
    assert!(plan.iter().any(|l| l.contains("loom_mem_items_hnsw_")), "{plan:#?}");
    indexed.forget(&owner, &Forget::All).await.unwrap();
}

/// A database whose vectors were written on the exact path (no `vec` column) migrates: the
/// pgvector store's first connection adds the column, generated from the stored `real[]` vectors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_written_without_pgvector_migrate() {
    let Some(url) = postgres_url() else { return };
    let Some(_) = both(&url).await else { return };
    let schema = format!("loom_mem_pgv_{}", unique());
    let client = raw_client(&url).await;
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{sep}options=-csearch_path%3D{schema}");
    let old = PostgresMemoryStore::new(&scoped).unwrap().pgvector(false);
    let owner = Owner::user("migrated").unwrap();
    let mut state = 3u64;
    let vectors: Vec<Vec<f32>> = (0..40).map(|_| random_unit(&mut state)).collect();
    for (i, v) in vectors.iter().enumerate() {
        old.add_fact(&owner, NewFact::new(format!("old fact {i}")), emb(v.clone())).await.unwrap();
    }
    let column = format!(
        "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = '{schema}' AND table_name = 'loom_mem_items' AND column_name = 'vec'"
    );
    assert_eq!(client.query_one(&column, &[]).await.unwrap().get::<_, i64>(0), 0);
    let new = PostgresMemoryStore::new(&scoped).unwrap();
    assert!(matches!(new.vector_path().await.unwrap(), VectorPath::Pgvector { .. }));
    assert_eq!(client.query_one(&column, &[]).await.unwrap().get::<_, i64>(0), 1);
    for (i, v) in vectors.iter().enumerate().take(10) {
        assert_eq!(texts(&new, &owner, v, 1).await, [format!("old fact {i}")]);
    }
    // Written by the old store after the migration: the generated column follows.
    let late = random_unit(&mut state);
    old.add_fact(&owner, NewFact::new("late fact"), emb(late.clone())).await.unwrap();
    assert_eq!(texts(&new, &owner, &late, 1).await, ["late fact"]);
    drop((old, new));
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}
