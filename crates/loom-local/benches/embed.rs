//! Local embedding throughput: sentences per second on 2 threads (the target: ≥ 200).
//! Needs the embedder in the cache (`loom model pull --embedder`); prints a note and measures
//! nothing otherwise.
//!
//! `cargo bench -p loom-local --bench embed`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use loom_local::embed::{LocalEmbedder, embedder_dir, is_pulled};

/// Sentences like the facts and questions memory embeds: 6 to 30 words.
fn sentences(n: usize) -> Vec<String> {
    let subjects = ["I", "My sister", "The user", "Our team", "My doctor", "The landlord", "Alex", "She"];
    let verbs = ["moved to", "prefers", "is allergic to", "works at", "visited", "bought", "booked", "mentioned"];
    let objects = [
        "Berlin",
        "green tea in the morning",
        "peanuts and most tree nuts, so restaurants need a warning",
        "a small robotics startup near the river",
        "the dentist on Tuesday at 3 pm",
        "a second-hand bicycle with a broken bell and new tyres",
        "a flight to Lisbon for the conference in late September",
        "that the quarterly report is due before the board meeting next Friday",
    ];
    (0..n)
        .map(|i| {
            let s = subjects[i % subjects.len()];
            let v = verbs[(i / 8) % verbs.len()];
            let o = objects[(i * 7 + i / 64) % objects.len()];
            format!("{s} {v} {o} (note {i}).")
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let Some(dir) = embedder_dir().ok().filter(|d| is_pulled(d)) else {
        eprintln!("embed bench skipped: the embedder is not pulled (run `loom model pull --embedder`)");
        return;
    };
    let texts = sentences(256);
    let mut group = c.benchmark_group("embed");
    group.sample_size(10);
    group.throughput(Throughput::Elements(texts.len() as u64));
    let embedder = LocalEmbedder::from_dir(&dir).threads(2);
    if let Err(e) = embedder.load() {
        eprintln!("embed bench skipped: {e}");
        return;
    }
    group.bench_function("all-minilm-l6-v2/2-threads/256-sentences", |b| {
        b.iter(|| embedder.embed_blocking(&texts).map(|v| v.len()).unwrap_or(0))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
