//! Per-tenant daily usage for services built on Loom (`loom serve`'s `[server.tenant_budget]`),
//! counted in the journal's database so that every server process on it, and a restarted one,
//! share the count. The SQLite and PostgreSQL stores keep it in two tables (schema version 9):
//! `loom_tenant_usage`, one row per tenant and UTC day with atomic increments, and
//! `loom_tenant_run_usage`, what each run of the day has been counted for (so a run counted again
//! — as it goes, when it ends, when it is resumed — adds only what it spent beyond that).

use std::sync::Arc;

use crate::error::Error;

/// One tenant's usage of one UTC day.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TenantDayUsage {
    /// Runs started.
    pub runs: u64,
    /// Tokens used.
    pub tokens: u64,
    /// Dollars spent.
    pub cost_usd: f64,
}

/// Where per-tenant daily usage is counted.
#[async_trait::async_trait]
pub trait TenantUsageStore: Send + Sync + 'static {
    /// Counts run `run_id` of `tenant` on `day` (`YYYY-MM-DD`, UTC) at its cumulative `tokens`
    /// and `cost_usd`: the first call for a run on a day counts one run started; each call adds
    /// to the day what goes beyond what was counted for the run before (never subtracts). Atomic:
    /// processes sharing the database count together. Returns the tenant's day after it.
    async fn count_tenant_run(
        &self,
        tenant: &str,
        day: &str,
        run_id: &str,
        tokens: u64,
        cost_usd: f64,
    ) -> Result<TenantDayUsage, Error>;

    /// Reserves a run start for `tenant` on `day` in one atomic statement (a conditional upsert):
    /// adds one run only while the day is under every limit given (`max_runs`, `max_tokens`,
    /// `max_cost_usd`; `None`: unlimited). `true` when it did; `false` (nothing changed) when a
    /// limit is reached. The reservation is then tied to its run by [`Self::adopt_tenant_run`] or
    /// given back by [`Self::release_tenant_run`].
    async fn reserve_tenant_run(
        &self,
        tenant: &str,
        day: &str,
        max_runs: Option<u64>,
        max_tokens: Option<u64>,
        max_cost_usd: Option<f64>,
    ) -> Result<bool, Error>;

    /// Ties a reserved start to run `run_id`: its per-run row is made (so counting the run later
    /// adds no start); when the run was counted on that day already, the reservation is given back.
    async fn adopt_tenant_run(&self, tenant: &str, day: &str, run_id: &str) -> Result<(), Error>;

    /// Gives back a reserved start that began no run.
    async fn release_tenant_run(&self, tenant: &str, day: &str) -> Result<(), Error>;

    /// The tenant's usage of `day` (zero when nothing was counted).
    async fn tenant_usage(&self, tenant: &str, day: &str) -> Result<TenantDayUsage, Error>;

    /// Every tenant's usage of `day`, by tenant name.
    async fn tenant_usages(&self, day: &str) -> Result<Vec<(String, TenantDayUsage)>, Error>;

    /// Deletes what was counted for days before `day`; how many rows went.
    async fn prune_tenant_usage(&self, day: &str) -> Result<u64, Error>;
}

/// What a run's new cumulative figures add to its day, given what was counted for it before:
/// (tokens, dollars) to add, and the run's new counted figures.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn increment(before: (u64, f64), tokens: u64, cost_usd: f64) -> ((u64, f64), (u64, f64)) {
    let now = (before.0.max(tokens), before.1.max(cost_usd));
    ((now.0 - before.0, (now.1 - before.1).max(0.0)), now)
}

/// The bounds of a reservation's conditional upsert, `None` unlimited; `None` overall when a limit
/// is zero (nothing may start, and a first row of the day must not be made).
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn bounds(
    max_runs: Option<u64>,
    max_tokens: Option<u64>,
    max_cost_usd: Option<f64>,
) -> Option<(i64, i64, f64)> {
    if max_runs == Some(0) || max_tokens == Some(0) || max_cost_usd.is_some_and(|c| c <= 0.0) {
        return None;
    }
    let int = |v: Option<u64>| v.map_or(i64::MAX, |v| i64::try_from(v).unwrap_or(i64::MAX));
    Some((int(max_runs), int(max_tokens), max_cost_usd.unwrap_or(f64::MAX)))
}

/// Opens the tenant usage store in the database of a journal URL (`sqlite:…`, `postgres://…`).
pub async fn open_tenant_usage(url: &str) -> Result<Arc<dyn TenantUsageStore>, Error> {
    let url = url.trim();
    #[cfg(feature = "sqlite")]
    if let Some(rest) = url.strip_prefix("sqlite:") {
        return Ok(Arc::new(super::SqliteStore::open_url(rest)?));
    }
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(super::PostgresStore::connect(url).await?));
    }
    Err(Error::Config(format!(
        "tenant usage is counted in a `sqlite:` or `postgres://` database (with the matching feature), not `{url}`"
    )))
}

#[cfg(test)]
mod tests {
    use super::increment;

    #[test]
    fn a_run_adds_only_what_goes_beyond_what_was_counted() {
        assert_eq!(increment((0, 0.0), 20, 0.5), ((20, 0.5), (20, 0.5)));
        assert_eq!(increment((20, 0.5), 30, 0.5), ((10, 0.0), (30, 0.5)));
        // Lower figures (a resumed run's part after the pause alone) add nothing.
        assert_eq!(increment((30, 0.5), 10, 0.1), ((0, 0.0), (30, 0.5)));
    }
}
