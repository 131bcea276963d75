//! API keys: made once and shown once, stored as SHA-256 hashes, sent as `Authorization: Bearer
//! KEY`; each key acts for one tenant. Also the per-tenant request limit.
//!
//! A key found in the store is remembered (by its hash, with its tenant) for a short time, so a
//! busy client does not cost one key-store query per request (a round trip to the SQLite thread or
//! to PostgreSQL). A key revoked in the store stops working once its entry expires: within
//! [`DEFAULT_KEY_CACHE_TTL`] unless [`AppState::key_cache_ttl`] says otherwise. Unknown and revoked
//! keys are never remembered: a key made after a refused request works at once.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use loom_agent::Error;
use loom_agent::governance::RateLimiter;
use loom_agent::store::{ApiKeyRecord, ApiKeyStore, hash_api_key};

use crate::error::ApiError;
use crate::state::{AppState, Tenant};

/// How long a key found in the store is trusted without asking the store again.
pub const DEFAULT_KEY_CACHE_TTL: Duration = Duration::from_secs(10);

/// At most this many keys are remembered; past it the expired ones are dropped (all of them, if
/// none has expired).
const KEY_CACHE_MAX: usize = 10_000;

/// The tenants of keys found in the store recently, by the key's hash (never the key).
pub(crate) struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Tenant, Instant)>>,
}

impl KeyCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        KeyCache { ttl, entries: Mutex::new(HashMap::new()) }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Tenant, Instant)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tenant of this key hash, when it was found in the store less than the TTL ago.
    fn get(&self, hash: &str) -> Option<Tenant> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries();
        entries.get(hash).filter(|(_, at)| at.elapsed() < self.ttl).map(|(tenant, _)| tenant.clone())
    }

    /// Remembers a valid key's tenant.
    fn put(&self, hash: String, tenant: Tenant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries();
        if entries.len() >= KEY_CACHE_MAX {
            entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
            if entries.len() >= KEY_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(hash, (tenant, Instant::now()));
    }
}

/// The tenant every request acts for when the server runs without authentication.
pub const DEFAULT_TENANT: &str = "default";

/// Whether `tenant` is a valid tenant name: 1–64 letters, digits, `_`, `-` or `.`.
pub fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 64
        && tenant.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn random_hex(bytes: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| Error::Config(format!("no randomness for an API key: {e}")))?;
    Ok(hex::encode(buf))
}

/// Makes a key for `tenant`, stores its hash, and returns the record and the key (the only time
/// the key exists outside the client).
pub async fn create_key(store: &dyn ApiKeyStore, tenant: &str) -> Result<(ApiKeyRecord, String), Error> {
    if !valid_tenant(tenant) {
        return Err(Error::Config(format!(
            "invalid tenant name `{tenant}`: use 1-64 letters, digits, `_`, `-` or `.`"
        )));
    }
    let id = format!("key_{}", random_hex(6)?);
    let key = format!("loom_{}", random_hex(32)?);
    let record = ApiKeyRecord {
        id,
        tenant: tenant.to_string(),
        hash: hash_api_key(&key),
        created_at_ms: chrono::Utc::now().timestamp_millis(),
        revoked: false,
    };
    store.insert_api_key(&record).await?;
    Ok((record, key))
}

/// The tenant of a request's bearer key; 401 without a valid one. Then the tenant's rate limit
/// (429 when it is spent).
pub(crate) async fn authenticate(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let tenant = match &state.keys {
        None => Tenant(Arc::from(DEFAULT_TENANT)),
        Some(keys) => {
            let bearer = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .map(str::trim);
            let Some(key) = bearer.filter(|k| !k.is_empty()) else {
                return ApiError::unauthorized().into_response();
            };
            let hash = hash_api_key(key);
            match state.key_cache.get(&hash) {
                Some(tenant) => tenant,
                None => match keys.api_key_by_hash(&hash).await {
                    Ok(Some(record)) if !record.revoked => {
                        let tenant = Tenant(Arc::from(record.tenant.as_str()));
                        state.key_cache.put(hash, tenant.clone());
                        tenant
                    }
                    Ok(_) => return ApiError::unauthorized().into_response(),
                    Err(e) => {
                        tracing::error!(error = %e, "the API key store failed");
                        return ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "unavailable",
                            "the key store is unavailable",
                        )
                        .into_response();
                    }
                },
            }
        }
    };
    if let Some(limiter) = &state.limiter {
        let scope = loom_agent::governance::Scope {
            run_id: Arc::from(""),
            session_id: Arc::from(""),
            user_id: Some(tenant.0.clone()),
        };
        if let Err(why) = limiter.acquire(&scope).await {
            return ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", format!("rate limit: {why}"))
                .into_response();
        }
    }
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    req.extensions_mut().insert(tenant);
    next.run(req).await
}
