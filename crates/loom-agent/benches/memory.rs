//! Recall latency on the SQLite (and PostgreSQL) memory stores at 10^4, 10^5 and 10^6 stored
//! items, embedding excluded (and included when an embedder is available):
//!
//! - `text`: what an agent without an embedder runs before each run (FTS5 search, recent items,
//!   blocks, fusion, token budget) — [`recall::recall`] with no embedder;
//! - `vector`: the store's vector search alone (`search_vector`, 20 results);
//! - `hybrid`: full text, vectors and recent items fused — [`recall::search`] with a query vector
//!   computed beforehand (384 dimensions, random unit vectors: the worst case for any index, since
//!   no item is much nearer than the rest) — through the store's in-process vector cache (filled by
//!   the first query, timed apart), and, for comparison, with the cache off (an exact scan of the
//!   owner's vectors in SQLite per query, a few queries only);
//! - `hybrid + embedding`: the same with the query embedded first by `memory::default_embedder()`
//!   (the local all-MiniLM-L6-v2; needs `--features local` and `loom model pull --embedder`).
//!
//! Two layouts: `one` — one user holds every item (plus 1,000 of another user without vectors),
//! the worst case for a per-user scan; `many` — users of 1,000 items each, interleaved, as a shared
//! store holds them; the queries are one user's.
//!
//! Every case prints p50 and p99 of wall time and of the thread's CPU time (from
//! `/proc/thread-self/schedstat`, which other processes on a loaded machine disturb far less) over
//! the queries, and the load average. The data is generated once into
//! `$TMPDIR/loom-bench-memory-{one,many}-N.db` and reused by later runs.
//!
//! Environment: `LOOM_BENCH_MEMORY_SIZES=10000,100000,1000000` (default 10^4 and 10^5),
//! `LOOM_BENCH_MEMORY_LAYOUTS=one,many` (default both), `LOOM_BENCH_MEMORY_QUERIES` (default 300),
//! `LOOM_BENCH_MEMORY_CRITERION=0` skips the criterion groups. PostgreSQL (with `--features
//! postgres`): `LOOM_TEST_POSTGRES_URL` set runs the same cases for the sizes in
//! `LOOM_BENCH_MEMORY_PG_SIZES` (default 10^4), each in its own schema `loom_bench_mem_LAYOUT_N`
//! (kept for later runs; `VACUUM ANALYZE`d before the queries), `LOOM_BENCH_MEMORY_PG_QUERIES`
//! queries each (default 50).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use loom_agent::embed::Embedder;
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

#[derive(Clone, Copy, PartialEq, Debug)]
enum Layout {
    /// One user holds every item.
    One,
    /// Users of 1,000 items each.
    Many,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::One => "one",
            Layout::Many => "many",
        }
    }

    /// The owner of item `i` of `n`.
    fn owner_of(self, i: usize, n: usize) -> Owner {
        match self {
            Layout::One => Owner::user("bench-user").unwrap(),
            Layout::Many => Owner::user(format!("bench-user-{}", i % (n / 1000).max(1))).unwrap(),
        }
    }

    /// The owner the queries are about.
    fn queried(self) -> Owner {
        self.owner_of(0, 1000)
    }
}

/// Fills `store` with `n` facts in `layout` (and, for `One`, 1,000 of another user without
/// vectors), then marks it complete.
async fn generate(store: &dyn MemoryStore, n: usize, layout: Layout, words: &[String]) {
    let started = Instant::now();
    let mut rng = Rng(42);
    for i in 0..n {
        let text = format!("Fact {i}: {}.", sentence(&mut rng, words));
        let embedding = Embedding { model: "bench:384".into(), vector: vector(&mut rng) };
        store.add_fact(&layout.owner_of(i, n), NewFact::new(text), Some(embedding)).await.unwrap();
        if i > 0 && i % 100_000 == 0 {
            eprintln!("  … {i} items in {:.0} s", started.elapsed().as_secs_f64());
        }
    }
    if layout == Layout::One {
        // Another user's data beside it: queries must not pay for it, and never see it.
        let other = Owner::user("someone-else").unwrap();
        for i in 0..1000 {
            store
                .add_fact(&other, NewFact::new(format!("Other {i}: {}", sentence(&mut rng, words))), None)
                .await
                .unwrap();
        }
    }
    let owner = layout.queried();
    store.set_block(&owner, "profile", "Name: Bench. Likes fast recall.").await.unwrap();
    store.set_block(&owner, "complete", "yes").await.unwrap();
    eprintln!("generated {n} items ({}) in {:.1} s", layout.name(), started.elapsed().as_secs_f64());
}

async fn complete(store: &dyn MemoryStore, layout: Layout) -> bool {
    store.blocks(&layout.queried()).await.unwrap().iter().any(|b| b.name == "complete")
}

fn sqlite_path(n: usize, layout: Layout) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("loom-bench-memory-{}-{n}.db", layout.name()))
}

/// The SQLite store with `n` facts in `layout` (generated on first use).
fn sqlite_dataset(rt: &tokio::runtime::Runtime, n: usize, layout: Layout, words: &[String]) -> SqliteMemoryStore {
    let path = sqlite_path(n, layout);
    let store = SqliteMemoryStore::open(&path).unwrap();
    if rt.block_on(complete(&store, layout)) {
        return store;
    }
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = SqliteMemoryStore::open(&path).unwrap();
    rt.block_on(generate(&store, n, layout, words));
    store
}

/// The thread's CPU time so far: the first field of `/proc/thread-self/schedstat` (nanoseconds on
/// the CPU); zero where there is no such file.
fn cpu_now() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Wall and CPU times of repeated calls.
#[derive(Default)]
struct Samples {
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
}

impl Samples {
    fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let (c, t) = (cpu_now(), Instant::now());
        let out = std::hint::black_box(f());
        self.wall.push(t.elapsed());
        self.cpu.push(cpu_now().saturating_sub(c));
        out
    }

    fn report(&self, label: &str) {
        if self.wall.is_empty() {
            return;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (w50, w99) = percentiles(self.wall.clone());
        let (c50, c99) = percentiles(self.cpu.clone());
        // The kernel may account CPU time in scheduler ticks (4 ms here): the mean over many
        // queries is still right where the percentiles are not.
        let mean = self.cpu.iter().sum::<Duration>() / self.cpu.len() as u32;
        eprintln!(
            "memory recall {label}: wall p50 {:.2} ms, p99 {:.2} ms; cpu mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms ({} queries, load {})",
            ms(w50),
            ms(w99),
            ms(mean),
            ms(c50),
            ms(c99),
            self.wall.len(),
            load()
        );
    }
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn layouts() -> Vec<Layout> {
    match std::env::var("LOOM_BENCH_MEMORY_LAYOUTS") {
        Ok(v) => v
            .split(',')
            .filter_map(|l| match l.trim() {
                "one" => Some(Layout::One),
                "many" => Some(Layout::Many),
                _ => None,
            })
            .collect(),
        Err(_) => vec![Layout::One, Layout::Many],
    }
}

/// The queries: texts of three words and random query vectors.
fn queries(words: &[String]) -> (Vec<String>, Vec<Embedding>) {
    let count = std::env::var("LOOM_BENCH_MEMORY_QUERIES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let mut rng = Rng(99);
    let texts: Vec<String> = (0..count)
        .map(|_| (0..3).map(|_| words[rng.below(words.len())].clone()).collect::<Vec<_>>().join(" "))
        .collect();
    let vectors = (0..count).map(|_| Embedding { model: "bench:384".into(), vector: vector(&mut rng) }).collect();
    (texts, vectors)
}

/// The text, vector and hybrid cases on `store` (`label` names the store and dataset), and the
/// hybrid case with the query embedded when there is an embedder.
fn measure(
    rt: &tokio::runtime::Runtime,
    store: &dyn MemoryStore,
    owner: &Owner,
    label: &str,
    texts: &[String],
    vectors: &[Embedding],
    embedder: Option<&Arc<dyn Embedder>>,
) {
    let options = RecallOptions::default();
    let (mut text, mut vector, mut hybrid, mut embed, mut included) =
        (Samples::default(), Samples::default(), Samples::default(), Samples::default(), Samples::default());
    for (q, v) in texts.iter().zip(vectors) {
        text.time(|| rt.block_on(recall::recall(store, None, owner, q, &options)).unwrap());
        vector.time(|| rt.block_on(store.search_vector(owner, v, options.candidates)).unwrap());
        hybrid.time(|| rt.block_on(recall::search(store, owner, q, Some(v), &options)).unwrap());
        if let Some(e) = embedder {
            // Embedding included: this query's embedding time plus its search time (recall runs
            // the two one after the other).
            let (c2, t2) = (cpu_now(), Instant::now());
            embed.time(|| rt.block_on(e.embed(std::slice::from_ref(q))).unwrap());
            let (search_wall, search_cpu) = (hybrid.wall[hybrid.wall.len() - 1], hybrid.cpu[hybrid.cpu.len() - 1]);
            included.wall.push(search_wall + t2.elapsed());
            included.cpu.push(search_cpu + cpu_now().saturating_sub(c2));
        }
    }
    text.report(&format!("text {label}"));
    vector.report(&format!("vector {label}"));
    hybrid.report(&format!("hybrid {label}"));
    embed.report(&format!("query embedding {label}"));
    included.report(&format!("hybrid + embedding {label}"));
}

fn sqlite_cases(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    words: &[String],
    embedder: Option<&Arc<dyn Embedder>>,
) {
    let options = RecallOptions::default();
    let (texts, vectors) = queries(words);
    let criterion = std::env::var("LOOM_BENCH_MEMORY_CRITERION").map(|v| v != "0").unwrap_or(true);
    let mut group = c.benchmark_group("memory_recall_sqlite");
    group.sample_size(20).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    for n in env_list("LOOM_BENCH_MEMORY_SIZES", &[10_000, 100_000]) {
        for layout in layouts() {
            let owner = layout.queried();
            let label = format!("sqlite {} n={n}", layout.name());
            let mut store = sqlite_dataset(rt, n, layout, words);
            // One user's 10^6 vectors take 412 MB quantized (460 MB with the index's sketch): more than the default budget (such an
            // owner is scanned from SQLite at each query, measured below as "no cache").
            let need = if layout == Layout::One { n * (DIM + 28 + DIM / 8) } else { 1000 * (DIM + 28) };
            if need > 256 << 20 {
                eprintln!("{label}: vector cache budget raised to {} MiB for this owner", (need >> 20) + 1);
                store = store.vector_cache_bytes(need + (1 << 20));
            }
            // Sanity: recall finds items, and only this user's.
            let found = rt.block_on(recall::recall(&store, None, &owner, &texts[0], &options)).unwrap();
            assert!(!found.items.is_empty());

            // The first vector search fills the owner's vector cache.
            let t = Instant::now();
            let first = rt.block_on(recall::search(&store, &owner, &texts[0], Some(&vectors[0]), &options)).unwrap();
            eprintln!(
                "memory recall hybrid {label}: first query (fills the vector cache) {:.1} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
            // The same store without the cache: every query scans the owner's vectors in SQLite.
            let scan = SqliteMemoryStore::open(sqlite_path(n, layout)).unwrap().vector_cache_bytes(0);
            let mut no_cache = Samples::default();
            let unscanned = no_cache
                .time(|| rt.block_on(recall::search(&scan, &owner, &texts[0], Some(&vectors[0]), &options)).unwrap());
            assert_eq!(
                first.iter().map(|(_, i)| &i.id).collect::<Vec<_>>(),
                unscanned.iter().map(|(_, i)| &i.id).collect::<Vec<_>>(),
                "the cache finds what the scan finds"
            );
            // The cache's candidates, rescored exactly, are the exact scan's top results.
            let mut agree = 0;
            let checks = texts.len().min(if layout == Layout::One { 3_000_000 / n.max(1) } else { 300 }).clamp(3, 100);
            for v in vectors.iter().take(checks) {
                let a = rt.block_on(store.search_vector(&owner, v, options.candidates)).unwrap();
                let b = no_cache.time(|| rt.block_on(scan.search_vector(&owner, v, options.candidates)).unwrap());
                agree += a.iter().zip(&b).filter(|(x, y)| x.id == y.id).count();
            }
            eprintln!(
                "memory recall {label}: the cached vector search returns the exact scan's ranking for {agree} of {} ranks ({checks} queries)",
                checks * options.candidates
            );
            no_cache.report(&format!("vector without the cache {label}"));
            drop(scan);
            index_against_exact(rt, &store, n, layout, &label, &vectors);

            measure(rt, &store, &owner, &label, &texts, &vectors, embedder);

            if criterion {
                let mut i = 0;
                group.bench_function(format!("text_{}_{n}", layout.name()), |b| {
                    b.iter(|| {
                        i = (i + 1) % texts.len();
                        rt.block_on(recall::recall(&store, None, &owner, &texts[i], &options)).unwrap()
                    })
                });
                group.bench_function(format!("hybrid_{}_{n}", layout.name()), |b| {
                    b.iter(|| {
                        i = (i + 1) % texts.len();
                        rt.block_on(recall::search(&store, &owner, &texts[i], Some(&vectors[i]), &options)).unwrap()
                    })
                });
            }
        }
    }
    group.finish();
}

/// The vector search through the cache's approximate index (on from
/// `SqliteMemoryStore::vector_index_rows`, default 50,000 vectors) against the exact `i8` scan of
/// the same cache (index off), interleaved query by query: wall and CPU of each, recall@10 (of the
/// exact path's top 10, how many the index path returned in its top 10), and the first query of
/// each (filling the cache; for the index, building its sketch too).
fn index_against_exact(
    rt: &tokio::runtime::Runtime,
    store: &SqliteMemoryStore,
    n: usize,
    layout: Layout,
    label: &str,
    vectors: &[Embedding],
) {
    let owner = layout.queried();
    let budget = if layout == Layout::One { n * (DIM + 28) + (8 << 20) } else { 256 << 20 };
    let exact = SqliteMemoryStore::open(sqlite_path(n, layout))
        .unwrap()
        .vector_cache_bytes(budget)
        .vector_index_rows(usize::MAX);
    let t = Instant::now();
    rt.block_on(exact.search_vector(&owner, &vectors[0], 10)).unwrap();
    eprintln!("memory recall {label}: first query of the exact cache (fill) {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let indexed = store.clone();
    let (mut a, mut b) = (Samples::default(), Samples::default());
    let (mut found, mut asked) = (0, 0);
    let queries = vectors
        .len()
        .min(std::env::var("LOOM_BENCH_MEMORY_INDEX_QUERIES").ok().and_then(|v| v.parse().ok()).unwrap_or(200));
    for v in vectors.iter().take(queries) {
        let got = a.time(|| rt.block_on(indexed.search_vector(&owner, v, 10)).unwrap());
        let truth = b.time(|| rt.block_on(exact.search_vector(&owner, v, 10)).unwrap());
        found += got.iter().filter(|i| truth.iter().any(|t| t.id == i.id)).count();
        asked += truth.len();
    }
    eprintln!(
        "memory recall {label}: vector search through the index: recall@10 {:.3} against the exact scan ({queries} queries, {found} of {asked})",
        found as f64 / asked.max(1) as f64
    );
    a.report(&format!("vector (10) through the index {label}"));
    b.report(&format!("vector (10) exact i8 scan {label}"));
}

#[cfg(feature = "postgres")]
fn postgres_cases(rt: &tokio::runtime::Runtime, words: &[String], embedder: Option<&Arc<dyn Embedder>>) {
    use loom_agent::memory::PostgresMemoryStore;
    let Ok(url) = std::env::var("LOOM_TEST_POSTGRES_URL") else {
        eprintln!("memory recall postgres: skipped (LOOM_TEST_POSTGRES_URL not set)");
        return;
    };
    let options = RecallOptions::default();
    let (texts, vectors) = queries(words);
    // The exact scan reads every vector of the owner per query: fewer queries.
    let count =
        texts.len().min(std::env::var("LOOM_BENCH_MEMORY_PG_QUERIES").ok().and_then(|v| v.parse().ok()).unwrap_or(50));
    for n in env_list("LOOM_BENCH_MEMORY_PG_SIZES", &[10_000]) {
        for layout in layouts() {
            let schema = format!("loom_bench_mem_{}_{n}", layout.name());
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await.unwrap();
            });
            let sep = if url.contains('?') { '&' } else { '?' };
            let mut store = rt
                .block_on(PostgresMemoryStore::connect(&format!("{url}{sep}options=-csearch_path%3D{schema}")))
                .unwrap();
            if !rt.block_on(complete(&store, layout)) {
                rt.block_on(async {
                    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
                    tokio::spawn(conn);
                    client
                        .batch_execute(&format!(
                            "DELETE FROM {schema}.loom_mem_items; DELETE FROM {schema}.loom_mem_blocks;"
                        ))
                        .await
                        .unwrap();
                });
                rt.block_on(generate(&store, n, layout, words));
            }
            // Statistics as autovacuum would leave them (it is off on some servers, this one
            // included): without them the planner scans the owner's rows instead of the GIN index
            // (10^4 items, one owner: full text 15 ms p50 before, 1.9 ms after).
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                client.batch_execute(&format!("VACUUM ANALYZE {schema}.loom_mem_items")).await.unwrap();
            });
            let owner = layout.queried();
            let label = format!("postgres {} n={n}", layout.name());
            // As for SQLite: one user's 10^6 vectors need more than the default cache budget.
            let need = if layout == Layout::One { n * (DIM + 28 + DIM / 8) } else { 1000 * (DIM + 28) };
            if need > 256 << 20 {
                eprintln!("{label}: vector cache budget raised to {} MiB for this owner", (need >> 20) + 1);
                store = store.vector_cache_bytes(need + (1 << 20));
            }
            eprintln!("{label}: vector path {:?}", rt.block_on(store.vector_path()).unwrap());
            let t = Instant::now();
            let first = rt.block_on(recall::search(&store, &owner, &texts[0], Some(&vectors[0]), &options)).unwrap();
            assert!(!first.is_empty());
            eprintln!(
                "memory recall hybrid {label}: first query (fills the vector cache) {:.1} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
            measure(rt, &store, &owner, &label, &texts[..count], &vectors[..count], embedder);
        }
    }
}

fn memory_recall(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let words = vocabulary();
    let embedder = loom_agent::memory::default_embedder();
    match &embedder {
        Some(e) => eprintln!("memory recall: query embedding by {}", e.model_id()),
        None => {
            eprintln!("memory recall: no embedder (build with --features local and pull it): embedding excluded only")
        }
    }
    sqlite_cases(c, &rt, &words, embedder.as_ref());
    #[cfg(feature = "postgres")]
    postgres_cases(&rt, &words, embedder.as_ref());
}

criterion_group!(benches, memory_recall);
criterion_main!(benches);
