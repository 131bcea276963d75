//! The server's own CPU cost per run: the same echo-model run in process (`agent.run`) and through
//! the router without sockets (`POST /runs` with `wait: true`: auth with a hashed key, JSON in and
//! out, the session and run index, the metrics watcher; and `POST /runs` then its events as SSE to
//! the end, as a streaming client does). The difference is the server's overhead.
//!
//! ```text
//! cargo bench -p loom-server --bench overhead
//! ```
//!
//! Every figure is CPU time of this process (all its threads, `CLOCK_PROCESS_CPUTIME_ID`),
//! not wall time: the machine is shared, and CPU time is what the server adds. A single-threaded
//! runtime, so nothing else runs in between. After criterion's figures, a summary measures the
//! three paths again, interleaved, in the same process, and prints the differences.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use loom_agent::Agent;
use loom_agent::store::InMemoryApiKeys;
use loom_server::{AppState, Server};
use tokio::runtime::Runtime;
use tower::ServiceExt;

/// CPU time of this process so far (every thread): `CLOCK_PROCESS_CPUTIME_ID`, exact to the
/// nanosecond (the scheduler's `/proc` statistics lag by up to a tick for a running thread).
#[allow(unsafe_code)]
fn process_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct Fixture {
    rt: Runtime,
    agent: Agent,
    router: Router,
    key: String,
}

impl Fixture {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let agent = Agent::builder().model("echo").build().unwrap();
        let keys = InMemoryApiKeys::new();
        let (_, key) = rt.block_on(loom_server::create_key(&keys, "bench")).unwrap();
        let state = AppState::new(BTreeMap::from([("a".to_string(), agent.clone())]), Some(Arc::new(keys)), None);
        let router = Server::new(state, Default::default()).router().unwrap();
        Fixture { rt, agent, router, key }
    }

    async fn in_process(&self) {
        self.agent.run("hello").await.unwrap();
    }

    async fn call(&self, req: Request<Body>, status: u16) -> axum::body::Bytes {
        let res = self.router.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), status);
        axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap()
    }

    fn post_runs(&self, body: &'static str) -> Request<Body> {
        Request::post("/runs")
            .header("authorization", format!("Bearer {}", self.key))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap()
    }

    async fn router_wait(&self) {
        self.call(self.post_runs(r#"{"input":"hello","wait":true}"#), 200).await;
    }

    async fn router_sse(&self) {
        let created = self.call(self.post_runs(r#"{"input":"hello"}"#), 201).await;
        let created: serde_json::Value = serde_json::from_slice(&created).unwrap();
        let id = created["run_id"].as_str().unwrap();
        let req = Request::get(format!("/runs/{id}/events"))
            .header("authorization", format!("Bearer {}", self.key))
            .header("accept", "text/event-stream")
            .body(Body::empty())
            .unwrap();
        let events = self.call(req, 200).await;
        let text = String::from_utf8_lossy(&events);
        let last = text.lines().filter_map(|l| l.strip_prefix("event:")).next_back().map(str::trim);
        assert_eq!(last, Some("run.completed"), "{text}");
    }

    /// CPU time of `iters` runs of one path.
    fn cpu_of(&self, path: Path, iters: u64) -> Duration {
        let start = process_cpu();
        self.rt.block_on(async {
            for _ in 0..iters {
                match path {
                    Path::InProcess => self.in_process().await,
                    Path::RouterWait => self.router_wait().await,
                    Path::RouterSse => self.router_sse().await,
                }
            }
        });
        process_cpu().saturating_sub(start)
    }
}

#[derive(Clone, Copy)]
enum Path {
    InProcess,
    RouterWait,
    RouterSse,
}

fn bench(c: &mut Criterion) {
    let f = Fixture::new();
    let mut g = c.benchmark_group("serve_overhead_cpu");
    g.bench_function("in_process_run", |b| b.iter_custom(|iters| f.cpu_of(Path::InProcess, iters)));
    g.bench_function("router_post_runs_wait", |b| b.iter_custom(|iters| f.cpu_of(Path::RouterWait, iters)));
    g.bench_function("router_post_runs_then_sse", |b| b.iter_custom(|iters| f.cpu_of(Path::RouterSse, iters)));
    g.finish();

    // The summary: the three paths interleaved, five rounds, the median per path.
    let runs: u64 = std::env::var("LOOM_OVERHEAD_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let started = Instant::now();
    let mut per_run: [Vec<f64>; 3] = Default::default();
    for _ in 0..5 {
        for (i, path) in [Path::InProcess, Path::RouterWait, Path::RouterSse].into_iter().enumerate() {
            per_run[i].push(f.cpu_of(path, runs).as_secs_f64() * 1e6 / runs as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [mut local, mut wait, mut sse] = per_run;
    let (local, wait, sse) = (median(&mut local), median(&mut wait), median(&mut sse));
    println!(
        "CPU per run (median of 5 rounds of {runs}, {:.1} s): in process {local:.1} µs; POST /runs wait {wait:.1} µs \
         (server overhead {:.1} µs); POST /runs + SSE {sse:.1} µs (server overhead {:.1} µs)",
        started.elapsed().as_secs_f64(),
        wait - local,
        sse - local,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
