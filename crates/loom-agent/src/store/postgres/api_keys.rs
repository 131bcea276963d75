//! The `loom_api_keys` table.

use super::{PostgresStore, get, pg};
use crate::error::Error;
use crate::store::api_keys::{ApiKeyRecord, ApiKeyStore};

fn record(r: &tokio_postgres::Row) -> Result<ApiKeyRecord, Error> {
    Ok(ApiKeyRecord {
        id: get(r, 0)?,
        tenant: get(r, 1)?,
        hash: get(r, 2)?,
        created_at_ms: get(r, 3)?,
        revoked: get(r, 4)?,
    })
}

#[async_trait::async_trait]
impl ApiKeyStore for PostgresStore {
    async fn insert_api_key(&self, r: &ApiKeyRecord) -> Result<(), Error> {
        with_conn!(self, |client| async {
            client
                .execute(
                    "INSERT INTO loom_api_keys (id, tenant, hash, created_at, revoked) VALUES ($1, $2, $3, $4, $5)",
                    &[&r.id, &r.tenant, &r.hash, &r.created_at_ms, &r.revoked],
                )
                .await
                .map_err(|e| pg("storing an API key", e))?;
            Ok(())
        })
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, Error> {
        with_conn!(self, |client| async {
            let row = client
                .query_opt("SELECT id, tenant, hash, created_at, revoked FROM loom_api_keys WHERE hash = $1", &[&hash])
                .await
                .map_err(|e| pg("reading an API key", e))?;
            row.as_ref().map(record).transpose()
        })
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>, Error> {
        with_conn!(self, |client| async {
            let rows = client
                .query(
                    "SELECT id, tenant, hash, created_at, revoked FROM loom_api_keys
                     WHERE $1::TEXT IS NULL OR tenant = $1 ORDER BY created_at, id",
                    &[&tenant],
                )
                .await
                .map_err(|e| pg("listing API keys", e))?;
            rows.iter().map(record).collect()
        })
    }

    async fn revoke_api_key(&self, id: &str) -> Result<bool, Error> {
        with_conn!(self, |client| async {
            let n = client
                .execute("UPDATE loom_api_keys SET revoked = TRUE WHERE id = $1", &[&id])
                .await
                .map_err(|e| pg("revoking an API key", e))?;
            Ok(n > 0)
        })
    }
}
