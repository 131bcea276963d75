//! Signal intake into a SQLite session (target: at least 5,000 signals a second): the store's
//! append alone, and `Session::receive` end to end (stored claimed, the attention policy asked,
//! the decision recorded) under a policy that observes, so no run is started. Also the in-memory
//! store for reference, and `sqlite_append_then_settle`: the two writes `Session::receive` made
//! for such a signal before the decision was stored with the signal (`append_decided`, one
//! write), as the baseline in the same run.
//!
//! ```text
//! cargo bench -p loom-agent --bench signals -- --warm-up-time 1 --measurement-time 4
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use loom_agent::signal::{Attention, RuntimeSignal, SessionState, SignalStore};
use loom_agent::store::{InMemorySignalStore, SessionKey, SqliteStore};
use loom_agent::{Agent, SessionConfig};
use std::time::Duration;

fn intake(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("loom-bench-signals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut group = c.benchmark_group("signal_intake");
    group.throughput(Throughput::Elements(1));

    let sqlite = SqliteStore::open(dir.join("append.db")).unwrap();
    group.bench_function("sqlite_append", |b| {
        b.to_async(&rt).iter(|| async {
            let signal = RuntimeSignal::new("a build finished");
            assert!(sqlite.append(SessionKey::new("bench"), &signal, None).await.unwrap());
        })
    });

    group.bench_function("sqlite_append_then_settle", |b| {
        b.to_async(&rt).iter(|| async {
            let signal = RuntimeSignal::new("a build finished");
            let key = SessionKey::new("bench-settle");
            let until = chrono_now_ms() + 60_000;
            assert!(sqlite.append(key, &signal, Some(("bench", until))).await.unwrap());
            sqlite.settle(key, &signal.id, Attention::Observe, None).await.unwrap();
        })
    });
    group.bench_function("sqlite_append_decided", |b| {
        b.to_async(&rt).iter(|| async {
            let signal = RuntimeSignal::new("a build finished");
            let key = SessionKey::new("bench-decided");
            let until = chrono_now_ms() + 60_000;
            assert!(sqlite.append_decided(key, &signal, Attention::Observe, ("bench", until)).await.unwrap());
        })
    });

    let memory = InMemorySignalStore::new();
    group.bench_function("memory_append", |b| {
        b.to_async(&rt).iter(|| async {
            let signal = RuntimeSignal::new("a build finished");
            assert!(memory.append(SessionKey::new("bench"), &signal, None).await.unwrap());
        })
    });

    let url = format!("sqlite:{}", dir.join("receive.db").display());
    let observe = |_: &RuntimeSignal, _: &SessionState| Attention::Observe;
    let agent = Agent::builder().model("echo").journal(url.as_str()).attention(observe).build().unwrap();
    let session = rt.block_on(async { agent.session(SessionConfig::new("bench-receive")) });
    group.bench_function("sqlite_session_receive", |b| {
        b.to_async(&rt).iter(|| async {
            let receipt = session.receive(RuntimeSignal::new("a build finished"), None).await.unwrap();
            assert_eq!(receipt.attention, Some(Attention::Observe));
        })
    });
    group.finish();
    drop(session);
    std::fs::remove_dir_all(&dir).ok();
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    targets = intake
}
criterion_main!(benches);
