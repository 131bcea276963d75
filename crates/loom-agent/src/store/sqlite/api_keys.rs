//! The `loom_api_keys` table.

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, db};
use crate::error::Error;
use crate::store::api_keys::{ApiKeyRecord, ApiKeyStore};

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        hash: r.get(2)?,
        created_at_ms: r.get(3)?,
        revoked: r.get::<_, i64>(4)? != 0,
    })
}

#[async_trait::async_trait]
impl ApiKeyStore for SqliteStore {
    async fn insert_api_key(&self, record: &ApiKeyRecord) -> Result<(), Error> {
        let r = record.clone();
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO loom_api_keys (id, tenant, hash, created_at, revoked) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![r.id, r.tenant, r.hash, r.created_at_ms, r.revoked as i64],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, Error> {
        let hash = hash.to_string();
        self.call(move |conn| {
            conn.query_row(
                "SELECT id, tenant, hash, created_at, revoked FROM loom_api_keys WHERE hash = ?1",
                params![hash],
                row,
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>, Error> {
        let tenant = tenant.map(str::to_string);
        self.call(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT id, tenant, hash, created_at, revoked FROM loom_api_keys
                     WHERE ?1 IS NULL OR tenant = ?1 ORDER BY created_at, id",
                )
                .map_err(db)?;
            let rows = stmt.query_map(params![tenant], row).map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })
        .await
    }

    async fn revoke_api_key(&self, id: &str) -> Result<bool, Error> {
        let id = id.to_string();
        self.call(move |conn| {
            let n = conn.execute("UPDATE loom_api_keys SET revoked = 1 WHERE id = ?1", params![id]).map_err(db)?;
            Ok(n > 0)
        })
        .await
    }
}
