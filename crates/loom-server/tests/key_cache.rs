//! The key cache: a key found in the store is trusted for the cache's TTL (so a revoked key stops
//! working within it), unknown keys are never remembered, and tenants stay apart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use loom_agent::Agent;
use loom_agent::store::{ApiKeyRecord, ApiKeyStore, InMemoryApiKeys, hash_api_key};
use loom_server::{AppState, Server};
use serde_json::{Value, json};

struct Fixture {
    base: String,
    keys: InMemoryApiKeys,
    http: reqwest::Client,
}

async fn start(ttl: Option<Duration>) -> Fixture {
    let keys = InMemoryApiKeys::new();
    let agent = Agent::builder().model("echo").build().unwrap();
    let mut state = AppState::new(BTreeMap::from([("a".to_string(), agent)]), Some(Arc::new(keys.clone())), None);
    if let Some(ttl) = ttl {
        state = state.key_cache_ttl(ttl);
    }
    let server = Server::new(state, Default::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve_on(listener).await.unwrap() });
    Fixture { base: format!("http://{addr}"), keys, http: reqwest::Client::new() }
}

impl Fixture {
    async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(key).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self.http.post(format!("{}{path}", self.base)).bearer_auth(key).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn a_revoked_key_works_until_its_cache_entry_expires_then_is_refused() {
    let f = start(Some(Duration::from_millis(300))).await;
    let (record, key) = loom_server::create_key(&f.keys, "acme").await.unwrap();
    assert_eq!(f.get(&key, "/runs").await.0, 200);
    assert!(f.keys.revoke_api_key(&record.id).await.unwrap());
    // Still trusted from the cache, within the TTL.
    assert_eq!(f.get(&key, "/runs").await.0, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, body) = f.get(&key, "/runs").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(f.get(&key, "/runs").await.0, 401);
}

#[tokio::test]
async fn without_a_cache_a_revoked_key_is_refused_at_once() {
    let f = start(Some(Duration::ZERO)).await;
    let (record, key) = loom_server::create_key(&f.keys, "acme").await.unwrap();
    assert_eq!(f.get(&key, "/runs").await.0, 200);
    assert!(f.keys.revoke_api_key(&record.id).await.unwrap());
    assert_eq!(f.get(&key, "/runs").await.0, 401);
}

#[tokio::test]
async fn a_refused_key_is_not_remembered() {
    let f = start(None).await;
    let key = "loom_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_eq!(f.get(key, "/runs").await.0, 401);
    let record = ApiKeyRecord {
        id: "key_late".into(),
        tenant: "acme".into(),
        hash: hash_api_key(key),
        created_at_ms: 0,
        revoked: false,
    };
    f.keys.insert_api_key(&record).await.unwrap();
    assert_eq!(f.get(key, "/runs").await.0, 200);
}

#[tokio::test]
async fn cached_keys_keep_tenants_apart() {
    let f = start(None).await;
    let (_, a) = loom_server::create_key(&f.keys, "acme").await.unwrap();
    let (_, b) = loom_server::create_key(&f.keys, "globex").await.unwrap();
    // Both keys cached, then each tenant sees only its own run.
    assert_eq!(f.get(&a, "/runs").await.0, 200);
    assert_eq!(f.get(&b, "/runs").await.0, 200);
    let (status, run) = f.post(&a, "/runs", json!({"input": "hello", "wait": true})).await;
    assert_eq!(status, 200, "{run}");
    let id = run["run_id"].as_str().unwrap();
    assert_eq!(f.get(&a, &format!("/runs/{id}")).await.0, 200);
    let (status, body) = f.get(&b, &format!("/runs/{id}")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(f.get(&b, "/runs").await.1["runs"], json!([]));
    assert_eq!(f.get(&a, "/runs").await.1["runs"].as_array().unwrap().len(), 1);
}
