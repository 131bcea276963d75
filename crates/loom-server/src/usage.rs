//! `GET /usage`: tokens and cost of the tenant's runs, grouped by user and/or day (UTC), over the
//! runs this server holds and the runs its agents' journals list (a restarted server still counts
//! them, from their saved transcripts).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Extension, Query, State};
use chrono::{DateTime, Duration, Utc};
use loom_agent::Usage;
use loom_agent::store::{RunFilter, SessionKey};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Tenant};

/// How many journaled runs per agent `GET /usage` reads at most (newest first).
const MAX_JOURNALED: usize = 5_000;

/// Query of `GET /usage`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// What to group by: `user`, `day`, or both (`user,day`, the default).
    pub group: Option<String>,
    /// How many days back, from today (UTC) included (default 30, 1 to 366).
    pub days: Option<u32>,
}

/// The grouping a query asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Grouping {
    user: bool,
    day: bool,
}

fn grouping(group: Option<&str>) -> ApiResult<Grouping> {
    let mut g = Grouping { user: false, day: false };
    for part in group.unwrap_or("user,day").split(',').map(str::trim) {
        match part {
            "user" => g.user = true,
            "day" => g.day = true,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown `group` `{other}`: use `user`, `day` or `user,day`"
                )));
            }
        }
    }
    Ok(g)
}

/// One run's share: who, when, how much.
struct Line {
    user: Option<String>,
    started_at: DateTime<Utc>,
    usage: Usage,
}

/// The totals of a group.
#[derive(Default)]
struct Sum {
    runs: u64,
    usage: Usage,
}

fn sum_json(sum: &Sum) -> Value {
    json!({
        "runs": sum.runs,
        "input_tokens": sum.usage.input_tokens,
        "cached_input_tokens": sum.usage.cached_input_tokens,
        "cache_write_tokens": sum.usage.cache_write_tokens,
        "output_tokens": sum.usage.output_tokens,
        "total_tokens": sum.usage.total_tokens(),
        "cost_usd": sum.usage.cost_usd,
    })
}

/// Usage of finished runs read from the stores (it does not change): a dashboard that polls
/// `/usage` reads each transcript once. Bounded: cleared when full.
static SAVED: std::sync::LazyLock<Mutex<HashMap<String, Usage>>> = std::sync::LazyLock::new(Default::default);
const MAX_SAVED: usize = 100_000;

fn saved_usage(run_id: &str) -> Option<Usage> {
    SAVED.lock().unwrap_or_else(|p| p.into_inner()).get(run_id).copied()
}

fn remember_usage(run_id: &str, usage: Usage) {
    let mut saved = SAVED.lock().unwrap_or_else(|p| p.into_inner());
    if saved.len() >= MAX_SAVED {
        saved.clear();
    }
    saved.insert(run_id.to_string(), usage);
}

/// The tenant's runs since `since`: those this server holds, then the journaled ones it does not.
async fn lines(state: &AppState, tenant: &Tenant, since: DateTime<Utc>) -> ApiResult<Vec<Line>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let held: Vec<loom_agent::Run> =
        state.runs().values().filter(|e| &e.tenant == tenant).map(|e| e.run.clone()).collect();
    for run in held {
        seen.insert(run.id().to_string());
        let t = run.transcript();
        let Some(started_at) = t.started_at else { continue };
        if started_at >= since {
            out.push(Line { user: tenant.owns(t.user_id.as_deref()).flatten(), started_at, usage: t.usage });
        }
    }
    for agent in state.agents.values() {
        let Some(journal) = agent.journal() else { continue };
        let filter = RunFilter { limit: MAX_JOURNALED, ..Default::default() };
        for summary in journal.list(&filter).await? {
            if summary.started_at < since
                || tenant.owns(summary.user_id.as_deref()).is_none()
                || !seen.insert(summary.run_id.clone())
            {
                continue;
            }
            let usage = match saved_usage(&summary.run_id) {
                Some(usage) => usage,
                None => {
                    let key = SessionKey::scoped(summary.user_id.as_deref(), &summary.session_id);
                    // A run without a saved transcript (in flight elsewhere, or crashed) has no
                    // usage yet.
                    match agent.session_store().get_run(key, &summary.run_id).await? {
                        Some(t) if summary.finished => {
                            remember_usage(&summary.run_id, t.usage);
                            t.usage
                        }
                        Some(t) => t.usage,
                        None => Usage::default(),
                    }
                }
            };
            out.push(Line {
                user: tenant.owns(summary.user_id.as_deref()).flatten(),
                started_at: summary.started_at,
                usage,
            });
        }
    }
    Ok(out)
}

pub(crate) async fn usage(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Json<Value>> {
    let g = grouping(q.group.as_deref())?;
    let days = q.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::bad_request("`days` is from 1 to 366"));
    }
    let today = Utc::now().date_naive();
    let first_day = today - Duration::days(i64::from(days) - 1);
    let since = first_day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or_else(Utc::now);
    let mut groups: BTreeMap<(Option<String>, Option<String>), Sum> = BTreeMap::new();
    let mut total = Sum::default();
    for line in lines(&state, &tenant, since).await? {
        let key = (
            g.user.then(|| line.user.clone().unwrap_or_default()),
            g.day.then(|| line.started_at.format("%Y-%m-%d").to_string()),
        );
        let sum = groups.entry(key).or_default();
        sum.runs += 1;
        sum.usage.add(&line.usage);
        total.runs += 1;
        total.usage.add(&line.usage);
    }
    let groups: Vec<Value> = groups
        .iter()
        .map(|((user, day), sum)| {
            let mut v = sum_json(sum);
            if g.user {
                // The empty name stands for runs without a user.
                v["user_id"] = user.as_deref().filter(|u| !u.is_empty()).map_or(Value::Null, |u| json!(u));
            }
            if g.day {
                v["day"] = json!(day);
            }
            v
        })
        .collect();
    let group_names: Vec<&str> = [g.user.then_some("user"), g.day.then_some("day")].into_iter().flatten().collect();
    Ok(Json(json!({
        "from": first_day.format("%Y-%m-%d").to_string(),
        "to": today.format("%Y-%m-%d").to_string(),
        "group": group_names,
        "groups": groups,
        "total": sum_json(&total),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groupings_parse_and_unknown_ones_are_refused() {
        assert_eq!(grouping(None).ok(), Some(Grouping { user: true, day: true }));
        assert_eq!(grouping(Some("day")).ok(), Some(Grouping { user: false, day: true }));
        assert_eq!(grouping(Some("user")).ok(), Some(Grouping { user: true, day: false }));
        assert!(grouping(Some("user,month")).is_err());
        assert!(grouping(Some("")).is_err());
    }
}
