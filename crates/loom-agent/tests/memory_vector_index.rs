//! The SQLite memory store's approximate vector index (the sign-bit sketch of a large owner's
//! cached vectors) stays correct under writes: with the index on from 100 vectors, every search
//! equals the cache-less store's (below 2,000 vectors the sketch admits every row, so the results
//! must be identical) through inserts after the build, supersession, forgetting, a rebuild at twice
//! the size, another connection's writes and erasure — and never holds another owner's item.

#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod memory_support;

use loom_agent::memory::{Embedding, Forget, MemoryStore, NewFact, Owner, SqliteMemoryStore};
use memory_support::*;

const MODEL: &str = "test:hash-64";

fn emb(vector: Vec<f32>) -> Option<Embedding> {
    Some(Embedding { model: MODEL.into(), vector })
}

async fn texts(store: &SqliteMemoryStore, owner: &Owner, q: &[f32], limit: usize) -> Vec<String> {
    let q = Embedding { model: MODEL.into(), vector: q.to_vec() };
    store.search_vector(owner, &q, limit).await.unwrap().into_iter().map(|i| i.text).collect()
}

/// Asserts that the indexed store finds what the cache-less one finds, for `queries`, and only
/// `owner`'s items.
async fn same(indexed: &SqliteMemoryStore, plain: &SqliteMemoryStore, owner: &Owner, queries: &[Vec<f32>], tag: &str) {
    for (i, q) in queries.iter().enumerate() {
        let a = texts(indexed, owner, q, 10).await;
        let b = texts(plain, owner, q, 10).await;
        assert_eq!(a, b, "{tag}: query {i}");
        assert!(a.iter().all(|t| t.starts_with(&owner.user)), "{tag}: another owner's item in {a:?}");
    }
}

#[tokio::test]
async fn the_index_follows_inserts_supersession_forgetting_and_other_writers() {
    let path = temp_db();
    let indexed = SqliteMemoryStore::open(&path).unwrap().vector_index_rows(100);
    let plain = SqliteMemoryStore::open(&path).unwrap().vector_cache_bytes(0);
    let owner = Owner::user(format!("u{}", unique())).unwrap();
    let other = Owner::user(format!("o{}", unique())).unwrap();
    let mut state = 7u64;
    for i in 0..150 {
        indexed
            .add_fact(&owner, NewFact::new(format!("{} fact {i}", owner.user)), emb(random_unit(&mut state)))
            .await
            .unwrap();
        indexed
            .add_fact(&other, NewFact::new(format!("{} fact {i}", other.user)), emb(random_unit(&mut state)))
            .await
            .unwrap();
    }
    let queries: Vec<Vec<f32>> = (0..12).map(|_| random_unit(&mut state)).collect();
    // The first search fills the cache and builds the sketch (150 rows ≥ 100).
    same(&indexed, &plain, &owner, &queries, "built").await;

    // A keyed fact, then its supersession, both through the indexed store after the build.
    let kiwi = random_unit(&mut state);
    let mango = random_unit(&mut state);
    let kiwi_text = format!("{} kiwi orchard", owner.user);
    indexed.add_fact(&owner, NewFact::new(&kiwi_text).key("plan"), emb(kiwi.clone())).await.unwrap();
    assert_eq!(texts(&indexed, &owner, &kiwi, 1).await, std::slice::from_ref(&kiwi_text));
    indexed
        .add_fact(&owner, NewFact::new(format!("{} mango grove", owner.user)).key("plan"), emb(mango.clone()))
        .await
        .unwrap();
    let found = texts(&indexed, &owner, &kiwi, 200).await;
    assert!(!found.contains(&kiwi_text), "a superseded fact is recalled: {found:?}");
    same(&indexed, &plain, &owner, &queries, "superseded").await;

    // Forgetting one item.
    let mango_fact =
        indexed.facts(&owner, false).await.unwrap().into_iter().find(|f| f.statement.contains("mango")).unwrap();
    indexed.forget(&owner, &Forget::Item(mango_fact.id)).await.unwrap();
    assert!(!texts(&indexed, &owner, &mango, 200).await.iter().any(|t| t.contains("mango")));

    // Past twice the rows it was built for, the sketch is rebuilt (new mean): still the same.
    for i in 150..400 {
        indexed
            .add_fact(&owner, NewFact::new(format!("{} fact {i}", owner.user)), emb(random_unit(&mut state)))
            .await
            .unwrap();
    }
    same(&indexed, &plain, &owner, &queries, "grown").await;

    // Another connection's write to the owner is seen; to another owner, kept apart.
    let papaya = random_unit(&mut state);
    let papaya_text = format!("{} papaya stand", owner.user);
    plain.add_fact(&owner, NewFact::new(&papaya_text), emb(papaya.clone())).await.unwrap();
    plain.add_fact(&other, NewFact::new(format!("{} papaya twin", other.user)), emb(papaya.clone())).await.unwrap();
    assert_eq!(texts(&indexed, &owner, &papaya, 1).await, [papaya_text]);
    same(&indexed, &plain, &owner, &queries, "other writer").await;
    same(&indexed, &plain, &other, &queries, "other owner").await;

    // Erasure by another connection.
    plain.forget(&owner, &Forget::All).await.unwrap();
    assert!(texts(&indexed, &owner, &papaya, 10).await.is_empty());
    same(&indexed, &plain, &other, &queries, "after erasure").await;
    drop((indexed, plain));
    remove_db(&path);
}
