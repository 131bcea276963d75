//! Recall latency on the SQLite memory store at 10^4 and 10^5 stored items of one user (the worst
//! case: every item is a candidate), excluding the embedding of the query:
//!
//! - `text`: what an agent without an embedder runs before each run (FTS5 search, recent items,
//!   blocks, fusion, token budget) — [`recall::recall`] with no embedder;
//! - `hybrid`: the same plus vector search over 384-dimension vectors stored beside every item,
//!   with a query vector computed beforehand — [`recall::search`]: through the store's in-process
//!   vector cache (filled by the first query, timed apart), and, for comparison, with the cache
//!   off (an exact scan of the owner's vectors in SQLite per query; p50/p99 only).
//!
//! The data is generated once into `$TMPDIR/loom-bench-memory-N.db` and reused by later runs.
//! `LOOM_BENCH_MEMORY_SIZES=10000,100000,1000000` picks the sizes (default 10^4 and 10^5).
//! Besides criterion's numbers, p50 and p99 over 300 queries are printed for each case.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use loom_agent::memory::{Embedding, MemoryStore, NewFact, Owner, RecallOptions, SqliteMemoryStore, recall};

const DIM: usize = 384;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// A vocabulary of 4,000 pronounceable words.
fn vocabulary() -> Vec<String> {
    let (c, v) = (["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z"], ["a", "e", "i", "o", "u"]);
    let mut words = Vec::new();
    let mut rng = Rng(7);
    while words.len() < 4000 {
        let syllables = 2 + rng.below(2);
        let w: String = (0..syllables).map(|_| format!("{}{}", c[rng.below(c.len())], v[rng.below(v.len())])).collect();
        if !words.contains(&w) {
            words.push(w);
        }
    }
    words
}

fn sentence(rng: &mut Rng, words: &[String]) -> String {
    let n = 6 + rng.below(6);
    // Zipf-like: low indexes are more frequent.
    (0..n)
        .map(|_| words[(rng.below(words.len()) * rng.below(words.len())) / words.len()].as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn vector(rng: &mut Rng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM).map(|_| rng.unit()).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// The store with `n` facts of one user (generated on first use), and the owner.
fn dataset(rt: &tokio::runtime::Runtime, n: usize, words: &[String]) -> (SqliteMemoryStore, Owner) {
    let path = std::env::temp_dir().join(format!("loom-bench-memory-{n}.db"));
    let owner = Owner::user("bench-user").unwrap();
    let store = SqliteMemoryStore::open(&path).unwrap();
    let have = rt.block_on(store.recent(&owner, 1)).unwrap().len();
    let complete = rt.block_on(store.blocks(&owner)).unwrap().iter().any(|b| b.name == "complete");
    if have == 0 || !complete {
        drop(store);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let store = SqliteMemoryStore::open(&path).unwrap();
        let started = Instant::now();
        let mut rng = Rng(42);
        rt.block_on(async {
            for i in 0..n {
                let text = format!("Fact {i}: {}.", sentence(&mut rng, words));
                let embedding = Embedding { model: "bench:384".into(), vector: vector(&mut rng) };
                store.add_fact(&owner, NewFact::new(text), Some(embedding)).await.unwrap();
            }
            // Another user's data beside it: queries must not pay for it, and never see it.
            let other = Owner::user("someone-else").unwrap();
            for i in 0..1000 {
                store
                    .add_fact(&other, NewFact::new(format!("Other {i}: {}", sentence(&mut rng, words))), None)
                    .await
                    .unwrap();
            }
            store.set_block(&owner, "profile", "Name: Bench. Likes fast recall.").await.unwrap();
            store.set_block(&owner, "complete", "yes").await.unwrap();
        });
        eprintln!("generated {n} items in {:.1} s", started.elapsed().as_secs_f64());
        return (store, owner);
    }
    (store, owner)
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}

fn memory_recall(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let words = vocabulary();
    let options = RecallOptions::default();
    let mut group = c.benchmark_group("memory_recall_sqlite");
    group.sample_size(20).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    let sizes: Vec<usize> = std::env::var("LOOM_BENCH_MEMORY_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000]);
    for n in sizes {
        let (store, owner) = dataset(&rt, n, &words);
        let mut rng = Rng(99);
        let queries: Vec<String> = (0..300)
            .map(|_| (0..3).map(|_| words[rng.below(words.len())].clone()).collect::<Vec<_>>().join(" "))
            .collect();
        let vectors: Vec<Embedding> =
            (0..300).map(|_| Embedding { model: "bench:384".into(), vector: vector(&mut rng) }).collect();
        // Sanity: recall finds items, and only this user's.
        let found = rt.block_on(recall::recall(&store, None, &owner, &queries[0], &options)).unwrap();
        assert!(!found.items.is_empty());

        // The first vector search fills the owner's vector cache.
        let t = Instant::now();
        let first = rt.block_on(recall::search(&store, &owner, &queries[0], Some(&vectors[0]), &options)).unwrap();
        eprintln!(
            "memory recall hybrid n={n}: first query (fills the vector cache) {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        // The same store without the cache: every query scans the owner's vectors in SQLite.
        let path = std::env::temp_dir().join(format!("loom-bench-memory-{n}.db"));
        let scan = SqliteMemoryStore::open(&path).unwrap().vector_cache_bytes(0);
        let unscanned = rt.block_on(recall::search(&scan, &owner, &queries[0], Some(&vectors[0]), &options)).unwrap();
        assert_eq!(
            first.iter().map(|(_, i)| &i.id).collect::<Vec<_>>(),
            unscanned.iter().map(|(_, i)| &i.id).collect::<Vec<_>>(),
            "the cache finds what the scan finds"
        );

        let mut text = Vec::new();
        let mut hybrid = Vec::new();
        let mut hybrid_scan = Vec::new();
        for (i, (q, v)) in queries.iter().zip(&vectors).enumerate() {
            let t = Instant::now();
            std::hint::black_box(rt.block_on(recall::recall(&store, None, &owner, q, &options)).unwrap());
            text.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(rt.block_on(recall::search(&store, &owner, q, Some(v), &options)).unwrap());
            hybrid.push(t.elapsed());
            // The scan is slow: a third of the queries are enough for its percentiles.
            if i % 3 == 0 {
                let t = Instant::now();
                std::hint::black_box(rt.block_on(recall::search(&scan, &owner, q, Some(v), &options)).unwrap());
                hybrid_scan.push(t.elapsed());
            }
        }
        for (name, samples) in [("text", text), ("hybrid", hybrid), ("hybrid without the vector cache", hybrid_scan)] {
            let (p50, p99) = percentiles(samples);
            eprintln!(
                "memory recall {name} n={n}: p50 {:.2} ms, p99 {:.2} ms",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
        }

        let mut i = 0;
        group.bench_function(format!("text_{n}"), |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                rt.block_on(recall::recall(&store, None, &owner, &queries[i], &options)).unwrap()
            })
        });
        group.bench_function(format!("hybrid_{n}"), |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                rt.block_on(recall::search(&store, &owner, &queries[i], Some(&vectors[i]), &options)).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, memory_recall);
criterion_main!(benches);
