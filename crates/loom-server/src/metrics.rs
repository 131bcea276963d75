//! Prometheus metrics: runs by state, tokens, cost, run latencies, queue depth. Written in the
//! text exposition format by hand: a few counters and one histogram need no registry.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use loom_agent::{Run, RunState};

/// Upper bounds of the run-duration histogram, in seconds.
const BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// The server's counters (cheap to clone: one `Arc`).
#[derive(Clone, Default)]
pub struct Metrics {
    inner: std::sync::Arc<Counters>,
}

impl std::ops::Deref for Metrics {
    type Target = Counters;
    fn deref(&self) -> &Counters {
        &self.inner
    }
}

/// The counters behind [`Metrics`].
#[derive(Default)]
pub struct Counters {
    finished: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    /// Micro-dollars.
    cost_micro_usd: AtomicU64,
    durations: Mutex<(Vec<u64>, f64, u64)>,
    pub(crate) requests: AtomicU64,
}

fn state_name(s: RunState) -> &'static str {
    match s {
        RunState::Queued => "queued",
        RunState::Running => "running",
        RunState::Completed => "completed",
        RunState::Failed => "failed",
        RunState::Cancelled => "cancelled",
        RunState::Interrupted => "interrupted",
        RunState::Suspended => "suspended",
    }
}

impl Metrics {
    /// Counts the run's outcome, tokens, cost and duration when it ends.
    pub(crate) fn watch(&self, run: Run) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let this = self.clone();
        handle.spawn(async move {
            let r = run.result().await;
            this.record(r.state, &r.usage, r.duration_ms);
        });
    }
}

impl Counters {
    fn record(&self, state: RunState, usage: &loom_agent::Usage, duration_ms: u64) {
        *self.finished.lock().unwrap_or_else(|p| p.into_inner()).entry(state_name(state)).or_default() += 1;
        self.input_tokens.fetch_add(usage.input_tokens, Ordering::Relaxed);
        self.output_tokens.fetch_add(usage.output_tokens, Ordering::Relaxed);
        self.cost_micro_usd.fetch_add((usage.cost_usd * 1e6).round().max(0.0) as u64, Ordering::Relaxed);
        let secs = duration_ms as f64 / 1000.0;
        let mut d = self.durations.lock().unwrap_or_else(|p| p.into_inner());
        if d.0.is_empty() {
            d.0 = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                d.0[i] += 1;
            }
        }
        d.1 += secs;
        d.2 += 1;
    }

    /// The exposition text; `live`: the states of the runs in flight now.
    pub(crate) fn render(&self, live: &[RunState]) -> String {
        let mut out = String::new();
        let mut by_state: std::collections::BTreeMap<&'static str, u64> = std::collections::BTreeMap::new();
        for s in live {
            *by_state.entry(state_name(*s)).or_default() += 1;
        }
        let _ =
            writeln!(out, "# HELP loom_runs_in_flight Runs not finished, by state.\n# TYPE loom_runs_in_flight gauge");
        for s in ["queued", "running", "suspended"] {
            let _ = writeln!(out, "loom_runs_in_flight{{state=\"{s}\"}} {}", by_state.get(s).copied().unwrap_or(0));
        }
        let _ = writeln!(out, "# HELP loom_queue_depth Runs waiting for their session.\n# TYPE loom_queue_depth gauge");
        let _ = writeln!(out, "loom_queue_depth {}", by_state.get("queued").copied().unwrap_or(0));
        let _ = writeln!(
            out,
            "# HELP loom_runs_finished_total Runs that ended, by state.\n# TYPE loom_runs_finished_total counter"
        );
        let finished = self.finished.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for s in ["completed", "failed", "cancelled", "interrupted", "suspended"] {
            let _ =
                writeln!(out, "loom_runs_finished_total{{state=\"{s}\"}} {}", finished.get(s).copied().unwrap_or(0));
        }
        let _ =
            writeln!(out, "# HELP loom_tokens_total Tokens used by finished runs.\n# TYPE loom_tokens_total counter");
        let _ = writeln!(out, "loom_tokens_total{{kind=\"input\"}} {}", self.input_tokens.load(Ordering::Relaxed));
        let _ = writeln!(out, "loom_tokens_total{{kind=\"output\"}} {}", self.output_tokens.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP loom_cost_usd_total Cost of finished runs.\n# TYPE loom_cost_usd_total counter");
        let _ = writeln!(out, "loom_cost_usd_total {}", self.cost_micro_usd.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(
            out,
            "# HELP loom_http_requests_total Authenticated API requests.\n# TYPE loom_http_requests_total counter"
        );
        let _ = writeln!(out, "loom_http_requests_total {}", self.requests.load(Ordering::Relaxed));
        let d = self.durations.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _ =
            writeln!(out, "# HELP loom_run_duration_seconds Run latency.\n# TYPE loom_run_duration_seconds histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let n = d.0.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "loom_run_duration_seconds_bucket{{le=\"{b}\"}} {n}");
        }
        let _ = writeln!(out, "loom_run_duration_seconds_bucket{{le=\"+Inf\"}} {}", d.2);
        let _ = writeln!(out, "loom_run_duration_seconds_sum {}", d.1);
        let _ = writeln!(out, "loom_run_duration_seconds_count {}", d.2);
        out
    }
}
