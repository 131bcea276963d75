//! The `loom_tenant_usage` and `loom_tenant_run_usage` tables.

use super::{PostgresStore, get, pg};
use crate::error::Error;
use crate::store::tenant_usage::{TenantDayUsage, TenantUsageStore, bounds, increment};

/// Version 9: per-tenant daily usage (`loom serve`'s tenant budgets), shared by every process, and
/// sessions found by id alone (`SessionStore::find_sessions`: a tenant's session, whatever its user).
pub(super) const MIGRATE_V9: &str = "
    CREATE TABLE IF NOT EXISTS loom_tenant_usage (
        tenant TEXT NOT NULL, day TEXT NOT NULL, runs BIGINT NOT NULL DEFAULT 0,
        tokens BIGINT NOT NULL DEFAULT 0, cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, day));
    CREATE TABLE IF NOT EXISTS loom_tenant_run_usage (
        run_id TEXT NOT NULL, day TEXT NOT NULL, tenant TEXT NOT NULL,
        tokens BIGINT NOT NULL DEFAULT 0, cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, day));
    CREATE INDEX IF NOT EXISTS loom_sessions_by_id ON loom_sessions (id);";

fn usage(row: &tokio_postgres::Row, from: usize) -> Result<TenantDayUsage, Error> {
    let (runs, tokens): (i64, i64) = (get(row, from)?, get(row, from + 1)?);
    Ok(TenantDayUsage {
        runs: u64::try_from(runs).unwrap_or(0),
        tokens: u64::try_from(tokens).unwrap_or(0),
        cost_usd: get(row, from + 2)?,
    })
}

#[async_trait::async_trait]
impl TenantUsageStore for PostgresStore {
    async fn count_tenant_run(
        &self,
        tenant: &str,
        day: &str,
        run_id: &str,
        tokens: u64,
        cost_usd: f64,
    ) -> Result<TenantDayUsage, Error> {
        with_conn!(self, |client| async {
            let tx = client.transaction().await.map_err(|e| pg("beginning a usage count", e))?;
            // The run's row, made when new (then a run started), and locked until the commit: two
            // processes counting one run add its spend once.
            let inserted = tx
                .execute(
                    "INSERT INTO loom_tenant_run_usage (run_id, day, tenant) VALUES ($1, $2, $3)
                     ON CONFLICT (run_id, day) DO NOTHING",
                    &[&run_id, &day, &tenant],
                )
                .await
                .map_err(|e| pg("counting a tenant's run", e))?;
            let row = tx
                .query_one(
                    "SELECT tokens, cost_usd FROM loom_tenant_run_usage WHERE run_id = $1 AND day = $2 FOR UPDATE",
                    &[&run_id, &day],
                )
                .await
                .map_err(|e| pg("reading a run's counted usage", e))?;
            let before: (i64, f64) = (get(&row, 0)?, get(&row, 1)?);
            let before = (u64::try_from(before.0).unwrap_or(0), before.1);
            let ((add_tokens, add_cost), now) = increment(before, tokens, cost_usd);
            if now != before {
                tx.execute(
                    "UPDATE loom_tenant_run_usage SET tokens = $3, cost_usd = $4 WHERE run_id = $1 AND day = $2",
                    &[&run_id, &day, &i64::try_from(now.0).unwrap_or(i64::MAX), &now.1],
                )
                .await
                .map_err(|e| pg("counting a run's usage", e))?;
            }
            let started = i64::from(inserted > 0);
            let add_tokens = i64::try_from(add_tokens).unwrap_or(i64::MAX);
            let row = tx
                .query_one(
                    "INSERT INTO loom_tenant_usage (tenant, day, runs, tokens, cost_usd) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (tenant, day) DO UPDATE SET runs = loom_tenant_usage.runs + EXCLUDED.runs,
                        tokens = loom_tenant_usage.tokens + EXCLUDED.tokens,
                        cost_usd = loom_tenant_usage.cost_usd + EXCLUDED.cost_usd
                     RETURNING runs, tokens, cost_usd",
                    &[&tenant, &day, &started, &add_tokens, &add_cost],
                )
                .await
                .map_err(|e| pg("counting a tenant's usage", e))?;
            let day_now = usage(&row, 0)?;
            tx.commit().await.map_err(|e| pg("committing a usage count", e))?;
            Ok(day_now)
        })
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
        with_conn!(self, |client| async {
            let row = client
                .query_opt(
                    "INSERT INTO loom_tenant_usage (tenant, day, runs) VALUES ($1, $2, 1)
                     ON CONFLICT (tenant, day) DO UPDATE SET runs = loom_tenant_usage.runs + 1
                        WHERE loom_tenant_usage.runs < $3 AND loom_tenant_usage.tokens < $4
                          AND loom_tenant_usage.cost_usd < $5
                     RETURNING runs",
                    &[&tenant, &day, &runs, &tokens, &cost],
                )
                .await
                .map_err(|e| pg("reserving a tenant's run", e))?;
            Ok(row.is_some())
        })
    }

    async fn adopt_tenant_run(&self, tenant: &str, day: &str, run_id: &str) -> Result<(), Error> {
        with_conn!(self, |client| async {
            let tx = client.transaction().await.map_err(|e| pg("beginning a usage count", e))?;
            let made = tx
                .execute(
                    "INSERT INTO loom_tenant_run_usage (run_id, day, tenant) VALUES ($1, $2, $3)
                     ON CONFLICT (run_id, day) DO NOTHING",
                    &[&run_id, &day, &tenant],
                )
                .await
                .map_err(|e| pg("adopting a tenant's reserved run", e))?;
            if made == 0 {
                tx.execute(
                    "UPDATE loom_tenant_usage SET runs = GREATEST(runs - 1, 0) WHERE tenant = $1 AND day = $2",
                    &[&tenant, &day],
                )
                .await
                .map_err(|e| pg("giving back a tenant's reserved run", e))?;
            }
            tx.commit().await.map_err(|e| pg("committing a usage count", e))
        })
    }

    async fn release_tenant_run(&self, tenant: &str, day: &str) -> Result<(), Error> {
        with_conn!(self, |client| async {
            client
                .execute(
                    "UPDATE loom_tenant_usage SET runs = GREATEST(runs - 1, 0) WHERE tenant = $1 AND day = $2",
                    &[&tenant, &day],
                )
                .await
                .map_err(|e| pg("giving back a tenant's reserved run", e))?;
            Ok(())
        })
    }

    async fn tenant_usage(&self, tenant: &str, day: &str) -> Result<TenantDayUsage, Error> {
        with_conn!(self, |client| async {
            let row = client
                .query_opt(
                    "SELECT runs, tokens, cost_usd FROM loom_tenant_usage WHERE tenant = $1 AND day = $2",
                    &[&tenant, &day],
                )
                .await
                .map_err(|e| pg("reading a tenant's usage", e))?;
            row.map(|r| usage(&r, 0)).transpose().map(Option::unwrap_or_default)
        })
    }

    async fn tenant_usages(&self, day: &str) -> Result<Vec<(String, TenantDayUsage)>, Error> {
        with_conn!(self, |client| async {
            let rows = client
                .query(
                    "SELECT tenant, runs, tokens, cost_usd FROM loom_tenant_usage WHERE day = $1 ORDER BY tenant",
                    &[&day],
                )
                .await
                .map_err(|e| pg("reading the tenants' usage", e))?;
            rows.iter().map(|r| Ok((get(r, 0)?, usage(r, 1)?))).collect()
        })
    }

    async fn prune_tenant_usage(&self, day: &str) -> Result<u64, Error> {
        with_conn!(self, |client| async {
            let a = client
                .execute("DELETE FROM loom_tenant_usage WHERE day < $1", &[&day])
                .await
                .map_err(|e| pg("pruning tenant usage", e))?;
            let b = client
                .execute("DELETE FROM loom_tenant_run_usage WHERE day < $1", &[&day])
                .await
                .map_err(|e| pg("pruning tenant usage", e))?;
            Ok(a + b)
        })
    }
}
