//! The `loom_tenant_usage` and `loom_tenant_run_usage` tables.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{SqliteStore, db};
use crate::error::Error;
use crate::store::tenant_usage::{TenantDayUsage, TenantUsageStore, bounds, increment};

/// Version 9: per-tenant daily usage (`loom serve`'s tenant budgets), shared by every process, and
/// sessions found by id alone (`SessionStore::find_sessions`: a tenant's session, whatever its user).
pub(super) const MIGRATE_V9: &str = "
    CREATE TABLE IF NOT EXISTS loom_tenant_usage (
        tenant TEXT NOT NULL, day TEXT NOT NULL, runs INTEGER NOT NULL DEFAULT 0,
        tokens INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, day)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS loom_tenant_run_usage (
        run_id TEXT NOT NULL, day TEXT NOT NULL, tenant TEXT NOT NULL,
        tokens INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, day)) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS loom_sessions_by_id ON loom_sessions (id);
    PRAGMA user_version = 9;";

fn usage(runs: i64, tokens: i64, cost_usd: f64) -> TenantDayUsage {
    TenantDayUsage { runs: u64::try_from(runs).unwrap_or(0), tokens: u64::try_from(tokens).unwrap_or(0), cost_usd }
}

#[async_trait::async_trait]
impl TenantUsageStore for SqliteStore {
    async fn count_tenant_run(
        &self,
        tenant: &str,
        day: &str,
        run_id: &str,
        tokens: u64,
        cost_usd: f64,
    ) -> Result<TenantDayUsage, Error> {
        let (tenant, day, run_id) = (tenant.to_string(), day.to_string(), run_id.to_string());
        let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let before: Option<(i64, f64)> = tx
                .prepare_cached("SELECT tokens, cost_usd FROM loom_tenant_run_usage WHERE run_id = ?1 AND day = ?2")
                .map_err(db)?
                .query_row(params![run_id, day], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db)?;
            let start = before.is_none();
            let before = before.map_or((0, 0.0), |(t, c)| (u64::try_from(t).unwrap_or(0), c));
            let ((add_tokens, add_cost), now) = increment(before, u64::try_from(tokens).unwrap_or(0), cost_usd);
            tx.prepare_cached(
                "INSERT INTO loom_tenant_run_usage (run_id, day, tenant, tokens, cost_usd) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (run_id, day) DO UPDATE SET tokens = ?4, cost_usd = ?5",
            )
            .map_err(db)?
            .execute(params![run_id, day, tenant, i64::try_from(now.0).unwrap_or(i64::MAX), now.1])
            .map_err(db)?;
            let day_now = tx
                .prepare_cached(
                    "INSERT INTO loom_tenant_usage (tenant, day, runs, tokens, cost_usd) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (tenant, day) DO UPDATE SET runs = runs + excluded.runs,
                        tokens = tokens + excluded.tokens, cost_usd = cost_usd + excluded.cost_usd
                     RETURNING runs, tokens, cost_usd",
                )
                .map_err(db)?
                .query_row(
                    params![tenant, day, i64::from(start), i64::try_from(add_tokens).unwrap_or(i64::MAX), add_cost],
                    |r| Ok(usage(r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(day_now)
        })
        .await
    }

    async fn reserve_tenant_run(
        &self,
        tenant: &str,
        day: &str,
        max_runs: Option<u64>,
        max_tokens: Option<u64>,
        max_cost_usd: Option<f64>,
    ) -> Result<bool, Error> {
        let Some((runs, tokens, cost)) = bounds(max_runs, max_tokens, max_cost_usd) else { return Ok(false) };
        let (tenant, day) = (tenant.to_string(), day.to_string());
        self.call(move |conn| {
            let done = conn
                .prepare_cached(
                    "INSERT INTO loom_tenant_usage (tenant, day, runs) VALUES (?1, ?2, 1)
                     ON CONFLICT (tenant, day) DO UPDATE SET runs = runs + 1
                        WHERE runs < ?3 AND tokens < ?4 AND cost_usd < ?5
                     RETURNING runs",
                )
                .map_err(db)?
                .query_row(params![tenant, day, runs, tokens, cost], |r| r.get::<_, i64>(0))
                .optional()
                .map_err(db)?;
            Ok(done.is_some())
        })
        .await
    }

    async fn adopt_tenant_run(&self, tenant: &str, day: &str, run_id: &str) -> Result<(), Error> {
        let (tenant, day, run_id) = (tenant.to_string(), day.to_string(), run_id.to_string());
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let made = tx
                .execute(
                    "INSERT INTO loom_tenant_run_usage (run_id, day, tenant) VALUES (?1, ?2, ?3)
                     ON CONFLICT (run_id, day) DO NOTHING",
                    params![run_id, day, tenant],
                )
                .map_err(db)?;
            if made == 0 {
                tx.execute(
                    "UPDATE loom_tenant_usage SET runs = MAX(runs - 1, 0) WHERE tenant = ?1 AND day = ?2",
                    params![tenant, day],
                )
                .map_err(db)?;
            }
            tx.commit().map_err(db)
        })
        .await
    }

    async fn release_tenant_run(&self, tenant: &str, day: &str) -> Result<(), Error> {
        let (tenant, day) = (tenant.to_string(), day.to_string());
        self.call(move |conn| {
            conn.execute(
                "UPDATE loom_tenant_usage SET runs = MAX(runs - 1, 0) WHERE tenant = ?1 AND day = ?2",
                params![tenant, day],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn tenant_usage(&self, tenant: &str, day: &str) -> Result<TenantDayUsage, Error> {
        let (tenant, day) = (tenant.to_string(), day.to_string());
        self.call(move |conn| {
            let found = conn
                .prepare_cached("SELECT runs, tokens, cost_usd FROM loom_tenant_usage WHERE tenant = ?1 AND day = ?2")
                .map_err(db)?
                .query_row(params![tenant, day], |r| Ok(usage(r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
                .map_err(db)?;
            Ok(found.unwrap_or_default())
        })
        .await
    }

    async fn tenant_usages(&self, day: &str) -> Result<Vec<(String, TenantDayUsage)>, Error> {
        let day = day.to_string();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT tenant, runs, tokens, cost_usd FROM loom_tenant_usage WHERE day = ?1 ORDER BY tenant",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![day], |r| Ok((r.get(0)?, usage(r.get(1)?, r.get(2)?, r.get(3)?))))
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })
        .await
    }

    async fn prune_tenant_usage(&self, day: &str) -> Result<u64, Error> {
        let day = day.to_string();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            let a = tx.execute("DELETE FROM loom_tenant_usage WHERE day < ?1", params![day]).map_err(db)?;
            let b = tx.execute("DELETE FROM loom_tenant_run_usage WHERE day < ?1", params![day]).map_err(db)?;
            tx.commit().map_err(db)?;
            Ok((a + b) as u64)
        })
        .await
    }
}
