//! The PostgreSQL memory store's vector cache never serves stale vectors: two store instances on
//! one database (two processes, as far as their caches know) see each other's writes at the next
//! search, a write by plain SQL is seen too, and the cached search matches the cache-less one and
//! never returns another owner's item. The stores run with pgvector off (the exact path through the
//! cache, whether or not the server has pgvector). Needs `LOOM_TEST_POSTGRES_URL` (else prints
//! "skipped").

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod memory_support;

use loom_agent::memory::{Embedding, Forget, MemoryStore, NewFact, Owner, PostgresMemoryStore};
use memory_support::*;

/// A store on the exact path (pgvector off, where the server has it): these tests are about the
/// vector cache.
async fn exact_store(url: &str) -> PostgresMemoryStore {
    let store = PostgresMemoryStore::new(url).unwrap().pgvector(false);
    store.vector_path().await.unwrap();
    store
}

fn emb(text: &str) -> Option<Embedding> {
    Some(Embedding { model: "test:hash-64".into(), vector: hash_embed(text) })
}

async fn texts(store: &PostgresMemoryStore, owner: &Owner, query: &str, limit: usize) -> Vec<String> {
    let q = emb(query).unwrap();
    store.search_vector(owner, &q, limit).await.unwrap().into_iter().map(|i| i.text).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_another_instance_are_seen_at_the_next_search() {
    let Some(url) = postgres_url() else { return };
    let a = exact_store(&url).await;
    let b = exact_store(&url).await;
    let plain = exact_store(&url).await.vector_cache_bytes(0);
    let owner = Owner::user(format!("pgc_{}", unique())).unwrap();
    let other = Owner::user(format!("pgo_{}", unique())).unwrap();
    for i in 0..40 {
        let text = format!("note {i} about topic{} and thing{}", i % 7, i % 11);
        a.add_fact(&owner, NewFact::new(&text), emb(&text)).await.unwrap();
    }
    b.add_fact(&other, NewFact::new("secret kiwi garden"), emb("secret kiwi garden")).await.unwrap();
    // Filled at the first search; the same answers as the cache-less store.
    for q in ["topic3 thing5", "note 12", "topic1"] {
        assert_eq!(texts(&a, &owner, q, 5).await, texts(&plain, &owner, q, 5).await, "{q}");
        assert_eq!(texts(&b, &owner, q, 5).await, texts(&plain, &owner, q, 5).await, "{q}");
    }
    assert!(texts(&a, &owner, "secret kiwi garden", 60).await.iter().all(|t| !t.contains("kiwi")));

    // A write through `b` is seen by a search through `a` (whose cache is filled).
    b.add_fact(&owner, NewFact::new("papaya stand").key("fruit"), emb("papaya stand")).await.unwrap();
    assert_eq!(texts(&a, &owner, "papaya stand", 1).await, ["papaya stand"]);
    // Supersession through `a`: `b` no longer finds the old fact.
    a.add_fact(&owner, NewFact::new("mango grove").key("fruit"), emb("mango grove")).await.unwrap();
    assert_eq!(texts(&a, &owner, "mango grove", 1).await, ["mango grove"]);
    assert!(!texts(&b, &owner, "papaya stand", 60).await.iter().any(|t| t.contains("papaya")));
    // Forgetting one item through `b`: gone for `a`.
    let mango = b.facts(&owner, false).await.unwrap().into_iter().find(|f| f.statement.contains("mango")).unwrap();
    b.forget(&owner, &Forget::Item(mango.id)).await.unwrap();
    assert!(!texts(&a, &owner, "mango grove", 60).await.iter().any(|t| t.contains("mango")));

    // A change by plain SQL (no store involved) is seen too.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    b.add_fact(&owner, NewFact::new("walrus saxophone"), emb("walrus saxophone")).await.unwrap();
    assert_eq!(texts(&a, &owner, "walrus saxophone", 1).await, ["walrus saxophone"]);
    client
        .execute(
            "UPDATE loom_mem_items SET active = FALSE WHERE user_id = $1 AND text = 'walrus saxophone'",
            &[&owner.user],
        )
        .await
        .unwrap();
    assert!(!texts(&a, &owner, "walrus saxophone", 60).await.iter().any(|t| t.contains("walrus")));

    // Erasure through `a`: `b` finds nothing; the other owner is untouched.
    a.forget(&owner, &Forget::All).await.unwrap();
    assert!(texts(&b, &owner, "topic3", 10).await.is_empty());
    assert!(texts(&a, &owner, "topic3", 10).await.is_empty());
    assert_eq!(texts(&a, &other, "secret kiwi garden", 1).await, ["secret kiwi garden"]);
    let n: i64 = client
        .query_one("SELECT COUNT(*) FROM loom_mem_owner_writes WHERE user_id = $1", &[&owner.user])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "erasure leaves no counter row");
    a.forget(&other, &Forget::All).await.unwrap();
}

/// Random interleavings of writes and searches of three owners through two cached instances:
/// every search matches the cache-less store and holds only the owner's own items.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_searches_match_the_scan_and_stay_within_the_owner() {
    let Some(url) = postgres_url() else { return };
    let stores = [exact_store(&url).await, exact_store(&url).await];
    let plain = exact_store(&url).await.vector_cache_bytes(0);
    let run = unique();
    let owners: Vec<Owner> = (0..3).map(|i| Owner::user(format!("pgp{i}_{run}")).unwrap()).collect();
    const WORDS: [&str; 6] = ["apple", "river", "violin", "garden", "rocket", "harbor"];
    let mut s: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = |n: u64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s % n
    };
    for step in 0..150 {
        let store = &stores[next(2) as usize];
        let u = next(3) as usize;
        let o = &owners[u];
        let word = WORDS[next(6) as usize];
        match next(10) {
            0..=4 => {
                let text = format!("{}-tag {word} {step}", o.user);
                let key = (next(2) == 0).then(|| format!("k{}", next(3)));
                let fact = match key {
                    Some(k) => NewFact::new(&text).key(k),
                    None => NewFact::new(&text),
                };
                store.add_fact(o, fact, emb(&text)).await.unwrap();
            }
            5 => {
                store.forget(o, &Forget::All).await.unwrap();
            }
            _ => {
                let found = texts(store, o, word, 5).await;
                assert!(found.iter().all(|t| t.starts_with(&format!("{}-tag", o.user))), "{found:?}");
                assert_eq!(found, texts(&plain, o, word, 5).await, "step {step}");
            }
        }
    }
    for o in &owners {
        plain.forget(o, &Forget::All).await.unwrap();
    }
}

/// The counter trigger resolves its tables in the store's schema, not in the writer's
/// `search_path`: a plain-SQL write from a session on the default `search_path`, naming the table
/// by schema, moves the store's counter (it failed, or moved another schema's counter, before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_from_another_search_path_moves_the_stores_counter() {
    let Some(url) = postgres_url() else { return };
    let schema = format!("loom_mem_sp_{}", unique());
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let store = exact_store(&format!("{url}{sep}options=-csearch_path%3D{schema}")).await;
    let owner = Owner::user("sp-user").unwrap();
    store.add_fact(&owner, NewFact::new("walrus saxophone"), emb("walrus saxophone")).await.unwrap();
    assert_eq!(texts(&store, &owner, "walrus saxophone", 1).await, ["walrus saxophone"]);
    let counter = format!("SELECT n FROM {schema}.loom_mem_owner_writes WHERE user_id = 'sp-user'");
    let before: i64 = client.query_one(&counter, &[]).await.unwrap().get(0);
    client
        .execute(&format!("UPDATE {schema}.loom_mem_items SET active = FALSE WHERE user_id = 'sp-user'"), &[])
        .await
        .unwrap();
    let after: i64 = client.query_one(&counter, &[]).await.unwrap().get(0);
    assert!(after > before, "the store's counter moved: {before} -> {after}");
    assert!(texts(&store, &owner, "walrus saxophone", 10).await.is_empty());
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}
