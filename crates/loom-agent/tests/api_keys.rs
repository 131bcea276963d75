//! API key stores (schema version 7): hashes only, lookup by hash, tenants, revocation; in
//! memory, SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use loom_agent::store::{ApiKeyRecord, ApiKeyStore, InMemoryApiKeys, hash_api_key, open_api_keys};

async fn conformance(store: Arc<dyn ApiKeyStore>, tag: &str) {
    let key = format!("loom_secret_{tag}");
    let record = ApiKeyRecord {
        id: format!("key_{tag}_1"),
        tenant: format!("acme-{tag}"),
        hash: hash_api_key(&key),
        created_at_ms: 1,
        revoked: false,
    };
    store.insert_api_key(&record).await.unwrap();
    assert!(store.insert_api_key(&record).await.is_err(), "a duplicate id is refused");
    let found = store.api_key_by_hash(&hash_api_key(&key)).await.unwrap().unwrap();
    assert_eq!(found, record);
    assert_ne!(found.hash, key, "the key itself is not stored");
    assert!(store.api_key_by_hash(&hash_api_key("other")).await.unwrap().is_none());
    let other = ApiKeyRecord {
        id: format!("key_{tag}_2"),
        tenant: format!("globex-{tag}"),
        hash: hash_api_key(&format!("{key}2")),
        ..record.clone()
    };
    store.insert_api_key(&other).await.unwrap();
    let mine = store.list_api_keys(Some(&record.tenant)).await.unwrap();
    assert_eq!(mine, vec![record.clone()]);
    assert!(store.revoke_api_key(&record.id).await.unwrap());
    assert!(!store.revoke_api_key("key_none").await.unwrap());
    assert!(store.api_key_by_hash(&record.hash).await.unwrap().unwrap().revoked);
}

#[tokio::test]
async fn in_memory() {
    conformance(Arc::new(InMemoryApiKeys::new()), "mem").await;
}

#[tokio::test]
async fn sqlite() {
    let dir = std::env::temp_dir().join(format!("loom-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("loom.db").display());
    conformance(open_api_keys(&url).await.unwrap(), "sqlite").await;
    let version: i64 = rusqlite::Connection::open(dir.join("loom.db"))
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert!(version >= 7, "the keys table came with version 7; the database is at {version}");
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres() {
    let Ok(url) = std::env::var("LOOM_TEST_POSTGRES_URL") else {
        println!("skipped: LOOM_TEST_POSTGRES_URL is not set");
        return;
    };
    let tag = format!("pg{}", std::process::id());
    conformance(open_api_keys(&url).await.unwrap(), &tag).await;
}
