//! The SQLite memory store's vector cache never serves stale vectors: its own writes (insert,
//! supersession, forgetting) update it, another connection's writes empty it, and search results
//! match the cache-less store exactly.

#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod memory_support;

use loom_agent::memory::{Embedding, Forget, MemoryStore, NewFact, Owner, SqliteMemoryStore};
use memory_support::*;

fn emb(text: &str) -> Option<Embedding> {
    Some(Embedding { model: "test:hash-64".into(), vector: hash_embed(text) })
}

async fn ids(store: &SqliteMemoryStore, owner: &Owner, query: &str, limit: usize) -> Vec<String> {
    let q = emb(query).unwrap();
    store.search_vector(owner, &q, limit).await.unwrap().into_iter().map(|i| i.text).collect()
}

#[tokio::test]
async fn writes_through_this_store_and_through_another_connection_are_seen() {
    let path = temp_db();
    let cached = SqliteMemoryStore::open(&path).unwrap();
    let plain = SqliteMemoryStore::open(&path).unwrap().vector_cache_bytes(0);
    let owner = Owner::user(format!("u_{}", unique())).unwrap();
    let other = Owner::user(format!("o_{}", unique())).unwrap();
    for i in 0..50 {
        let text = format!("note {i} about topic{} and thing{}", i % 7, i % 11);
        cached.add_fact(&owner, NewFact::new(&text), emb(&text)).await.unwrap();
    }
    cached.add_fact(&other, NewFact::new("secret kiwi garden"), emb("secret kiwi garden")).await.unwrap();
    // Filled at the first search; same answers as the scan.
    for q in ["topic3 thing5", "note 12", "topic1"] {
        assert_eq!(ids(&cached, &owner, q, 5).await, ids(&plain, &owner, q, 5).await, "{q}");
    }
    assert!(ids(&cached, &owner, "secret kiwi garden", 60).await.iter().all(|t| !t.contains("kiwi")));

    // This store's own writes: a new fact is found, a superseded one is not, a forgotten one not.
    cached.add_fact(&owner, NewFact::new("kiwi orchard plans").key("plan"), emb("kiwi orchard plans")).await.unwrap();
    assert_eq!(ids(&cached, &owner, "kiwi orchard plans", 1).await, ["kiwi orchard plans"]);
    cached.add_fact(&owner, NewFact::new("mango grove plans").key("plan"), emb("mango grove plans")).await.unwrap();
    let found = ids(&cached, &owner, "kiwi orchard plans", 60).await;
    assert!(!found.iter().any(|t| t.contains("kiwi")), "superseded: {found:?}");
    let mango = cached.facts(&owner, false).await.unwrap().into_iter().find(|f| f.statement.contains("mango")).unwrap();
    cached.forget(&owner, &Forget::Item(mango.id)).await.unwrap();
    assert!(!ids(&cached, &owner, "mango grove plans", 60).await.iter().any(|t| t.contains("mango")));

    // Another connection's writes empty the cache.
    plain.add_fact(&owner, NewFact::new("papaya stand"), emb("papaya stand")).await.unwrap();
    assert_eq!(ids(&cached, &owner, "papaya stand", 1).await, ["papaya stand"]);
    plain.forget(&owner, &Forget::All).await.unwrap();
    assert!(ids(&cached, &owner, "papaya stand", 10).await.is_empty());
    assert_eq!(ids(&cached, &other, "secret kiwi garden", 1).await, ["secret kiwi garden"]);
    drop((cached, plain));
    remove_db(&path);
}

#[tokio::test]
async fn knowledge_vectors_go_through_the_cache_and_stay_current() {
    use loom_agent::knowledge::{DocumentInfo, KnowledgeScope, KnowledgeStore, Location, NewChunk};
    let path = temp_db();
    let a = SqliteMemoryStore::open(&path).unwrap();
    let b = SqliteMemoryStore::open(&path).unwrap();
    let scope = KnowledgeScope::new("acme", "docs").unwrap();
    let doc = |id: &str| DocumentInfo {
        id: id.into(),
        mtime_ms: 0,
        size: 1,
        hash: id.into(),
        chunks: 0,
        indexed_at: chrono::Utc::now(),
    };
    let chunk = |text: &str| NewChunk { location: Location::lines(1, 1), text: text.into(), embedding: emb(text) };
    let search = |store: &SqliteMemoryStore, q: &str| {
        let store = store.clone();
        let scope = scope.clone();
        let q = emb(q).unwrap();
        async move {
            KnowledgeStore::search_vector(&store, &scope, &q, 1)
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.text)
                .collect::<Vec<_>>()
        }
    };
    a.put_document(&scope, &doc("one"), &[chunk("kiwi orchard"), chunk("mango grove")]).await.unwrap();
    assert_eq!(search(&a, "kiwi orchard").await, ["kiwi orchard"]);
    // Replaced by this store: the old chunk is gone from the cache.
    a.put_document(&scope, &doc("one"), &[chunk("papaya stand")]).await.unwrap();
    assert_eq!(search(&a, "kiwi orchard").await.len(), 1);
    assert_ne!(search(&a, "kiwi orchard").await, ["kiwi orchard"]);
    // Written by another connection: seen.
    b.put_document(&scope, &doc("two"), &[chunk("kiwi orchard")]).await.unwrap();
    assert_eq!(search(&a, "kiwi orchard").await, ["kiwi orchard"]);
    b.delete_document(&scope, "two").await.unwrap();
    assert_ne!(search(&a, "kiwi orchard").await, ["kiwi orchard"]);
    a.clear(&scope).await.unwrap();
    assert!(search(&a, "papaya stand").await.is_empty());
    drop((a, b));
    remove_db(&path);
}
