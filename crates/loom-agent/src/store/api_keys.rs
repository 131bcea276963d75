//! API keys for services built on Loom (`loom serve`): only a key's SHA-256 hash is stored, bound
//! to a tenant. The SQLite and PostgreSQL stores keep them in the journal's database (table
//! `loom_api_keys`, schema version 7); [`InMemoryApiKeys`] is for tests.

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::error::Error;

/// One stored key: never the key itself, only its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// The key's public id (shown in listings, used to revoke it).
    pub id: String,
    /// The tenant the key acts for.
    pub tenant: String,
    /// The lowercase hex SHA-256 of the key.
    pub hash: String,
    /// When it was made, in milliseconds since the epoch.
    pub created_at_ms: i64,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// The hex SHA-256 of a key, as stored.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Where API keys are kept.
#[async_trait::async_trait]
pub trait ApiKeyStore: Send + Sync + 'static {
    /// Stores a key's record.
    async fn insert_api_key(&self, record: &ApiKeyRecord) -> Result<(), Error>;
    /// The record whose hash this is, revoked or not.
    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, Error>;
    /// The records, of one tenant or all, oldest first.
    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>, Error>;
    /// Revokes a key by id; `false` when there is no such key.
    async fn revoke_api_key(&self, id: &str) -> Result<bool, Error>;
}

/// API keys in memory (tests, and servers without a journal database).
#[derive(Clone, Debug, Default)]
pub struct InMemoryApiKeys {
    keys: Arc<Mutex<Vec<ApiKeyRecord>>>,
}

impl InMemoryApiKeys {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait::async_trait]
impl ApiKeyStore for InMemoryApiKeys {
    async fn insert_api_key(&self, record: &ApiKeyRecord) -> Result<(), Error> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.iter().any(|k| k.id == record.id || k.hash == record.hash) {
            return Err(Error::Config(format!("an API key with id {} or the same hash exists", record.id)));
        }
        keys.push(record.clone());
        Ok(())
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, Error> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        Ok(keys.iter().find(|k| k.hash == hash).cloned())
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>, Error> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        Ok(keys.iter().filter(|k| tenant.is_none_or(|t| k.tenant == t)).cloned().collect())
    }

    async fn revoke_api_key(&self, id: &str) -> Result<bool, Error> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        Ok(keys.iter_mut().find(|k| k.id == id).map(|k| k.revoked = true).is_some())
    }
}

/// Opens the API key store in the database of a journal URL (`sqlite:…`, `postgres://…`;
/// `memory` gives an empty in-memory store).
pub async fn open_api_keys(url: &str) -> Result<Arc<dyn ApiKeyStore>, Error> {
    let url = url.trim();
    if url == "memory" {
        return Ok(Arc::new(InMemoryApiKeys::new()));
    }
    #[cfg(feature = "sqlite")]
    if let Some(rest) = url.strip_prefix("sqlite:") {
        return Ok(Arc::new(super::SqliteStore::open_url(rest)?));
    }
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(super::PostgresStore::connect(url).await?));
    }
    Err(Error::Config(
        "API keys live in the journal's database: a `sqlite:` or `postgres://` journal URL (with the matching feature)"
            .into(),
    ))
}
