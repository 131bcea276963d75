//! The server's own cost per run: the same echo-model run in process (`agent.run`) and through the
//! router (`POST /runs` with `wait: true`: auth with a hashed key, JSON in and out, the run index,
//! the metrics watcher), without sockets; and over HTTP on 127.0.0.1. The difference is the
//! server's overhead. Single-threaded runtime, so wall time is CPU time.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use loom_agent::Agent;
use loom_agent::store::InMemoryApiKeys;
use loom_server::{AppState, Server};
use tower::ServiceExt;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let agent = Agent::builder().model("echo").build().unwrap();
    let keys = InMemoryApiKeys::new();
    let (_, key) = rt.block_on(loom_server::create_key(&keys, "bench")).unwrap();
    let state = AppState::new(BTreeMap::from([("a".to_string(), agent.clone())]), Some(Arc::new(keys)), None);
    let server = Server::new(state, Default::default());
    let router = server.router().unwrap();
    let body = r#"{"input":"hello","wait":true}"#;

    let mut g = c.benchmark_group("serve_overhead");
    g.bench_function("in_process_run", |b| b.to_async(&rt).iter(|| async { agent.run("hello").await.unwrap() }));
    g.bench_function("router_post_runs_wait", |b| {
        b.to_async(&rt).iter(|| async {
            let req = Request::post("/runs")
                .header("authorization", format!("Bearer {key}"))
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            let res = router.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), 200);
            axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
