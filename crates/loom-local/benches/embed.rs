//! Local embedding throughput: sentences per second on 2 threads (the issue's target: ≥ 200).
//! Needs the embedder in the cache (`loom model pull --embedder`); prints a note and measures
//! nothing otherwise.
//!
//! `cargo bench -p loom-local --bench embed`
//!
//! Before criterion runs, it prints CPU time per sentence (getrusage, user + system, every thread)
//! and wall time for 256 sentences in one call and for sentences one call each, for the embedder
//! and for the baseline measured in the same process: candle-transformers' `BertModel` with
//! length-sorted padded batches of 32, as the embedder ran before its own encoder. CPU time is
//! disturbed less by other processes than wall time; `2 / CPU-s per sentence` is the 2-thread
//! rate when both cores are free. `LOOM_EMBED_ROUNDS` (default 5) sets the rounds per figure;
//! `LOOM_EMBED_BASELINE=0` leaves the baseline out (to profile the embedder alone).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use loom_local::embed::{LocalEmbedder, MAX_TOKENS, embedder_dir, is_pulled};
use tokenizers::{Tokenizer, TruncationParams};

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

/// User + system CPU time of this process so far, every thread (getrusage).
#[allow(unsafe_code)]
fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is valid, and getrusage only writes into the one we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// candle-transformers' BERT as the embedder ran it before: texts sorted by length, padded
/// batches of at most 32 texts and 4096 padded tokens, on a 2-thread pool.
struct Baseline {
    model: BertModel,
    tokenizer: Tokenizer,
    pool: rayon::ThreadPool,
}

impl Baseline {
    fn load(dir: &Path) -> Baseline {
        let config: Config = serde_json::from_str(
            r#"{"hidden_act": "gelu", "hidden_size": 384, "intermediate_size": 1536, "num_attention_heads": 12,
            "num_hidden_layers": 6, "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2,
            "hidden_dropout_prob": 0.1, "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
            "position_embedding_type": "absolute", "model_type": "bert"}"#,
        )
        .unwrap();
        let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
        let model = BertModel::load(VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu), &config).unwrap();
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        tokenizer.with_padding(None);
        tokenizer.with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() })).unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        Baseline { model, tokenizer, pool }
    }

    fn embed(&self, texts: &[String]) -> Vec<Vec<f32>> {
        self.pool.install(|| {
            let encoded: Vec<Vec<u32>> =
                texts.iter().map(|t| self.tokenizer.encode(t.as_str(), true).unwrap().get_ids().to_vec()).collect();
            let mut order: Vec<usize> = (0..texts.len()).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].len()));
            let mut out = vec![Vec::new(); texts.len()];
            let mut start = 0;
            while start < order.len() {
                let longest = encoded[order[start]].len().max(1);
                let end = (start + (4096 / longest).clamp(1, 32)).min(order.len());
                let batch: Vec<&[u32]> = order[start..end].iter().map(|&i| encoded[i].as_slice()).collect();
                for (&i, v) in order[start..end].iter().zip(self.forward(&batch, longest)) {
                    out[i] = v;
                }
                start = end;
            }
            out
        })
    }

    fn forward(&self, batch: &[&[u32]], len: usize) -> Vec<Vec<f32>> {
        let n = batch.len();
        let mut ids = vec![0u32; n * len];
        let mut mask = vec![0f32; n * len];
        for (row, tokens) in batch.iter().enumerate() {
            for (col, &token) in tokens.iter().enumerate() {
                ids[row * len + col] = token;
                mask[row * len + col] = 1.0;
            }
        }
        let ids = Tensor::from_vec(ids, (n, len), &Device::Cpu).unwrap();
        let mask = Tensor::from_vec(mask, (n, len), &Device::Cpu).unwrap();
        let hidden = self.model.forward(&ids, &ids.zeros_like().unwrap(), Some(&mask)).unwrap();
        let summed = hidden.broadcast_mul(&mask.unsqueeze(2).unwrap()).unwrap().sum(1).unwrap();
        let mean = summed.broadcast_div(&mask.sum_keepdim(1).unwrap()).unwrap();
        let norms = mean.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap();
        mean.broadcast_div(&norms).unwrap().to_vec2::<f32>().unwrap()
    }
}

/// Runs `f` over `texts` (all at once or one call each) for `rounds` rounds after one warm-up, and
/// prints CPU and wall time per sentence.
fn report(name: &str, texts: &[String], one_by_one: bool, rounds: usize, f: &dyn Fn(&[String]) -> usize) {
    let run = || {
        if one_by_one { texts.iter().map(|t| f(std::slice::from_ref(t))).sum() } else { f(texts) }
    };
    assert_eq!(run(), texts.len());
    let (cpu0, wall0) = (cpu_time(), Instant::now());
    for _ in 0..rounds {
        assert_eq!(run(), texts.len());
    }
    let (cpu, wall) = (cpu_time() - cpu0, wall0.elapsed());
    let n = (texts.len() * rounds) as f64;
    let cpu_ms = cpu.as_secs_f64() * 1e3 / n;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?");
    println!(
        "embed cpu: {name:<40} {cpu_ms:7.3} CPU-ms/sentence  2-thread rate by CPU {:7.1}/s  wall {:7.1}/s  (load {load})",
        2e3 / cpu_ms,
        n / wall.as_secs_f64(),
    );
}

fn bench(c: &mut Criterion) {
    let Some(dir) = embedder_dir().ok().filter(|d| is_pulled(d)) else {
        eprintln!("embed bench skipped: the embedder is not pulled (run `loom model pull --embedder`)");
        return;
    };
    let texts = sentences(256);
    let embedder = LocalEmbedder::from_dir(&dir).threads(2);
    if let Err(e) = embedder.load() {
        eprintln!("embed bench skipped: {e}");
        return;
    }
    let with_baseline = std::env::var("LOOM_EMBED_BASELINE").map_or(true, |v| v != "0");
    let baseline = with_baseline.then(|| Baseline::load(&dir));
    let rounds = std::env::var("LOOM_EMBED_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let ours = |t: &[String]| embedder.embed_blocking(t).map(|v| v.len()).unwrap_or(0);
    let theirs = |t: &[String]| baseline.as_ref().map_or(0, |b| b.embed(t).len());
    if with_baseline {
        report("baseline (candle BertModel), 256 in one call", &texts, false, rounds, &theirs);
    }
    report("encoder, 256 in one call", &texts, false, rounds, &ours);
    if with_baseline {
        report("baseline (candle BertModel), 64 one by one", &texts[..64], true, rounds, &theirs);
    }
    report("encoder, 64 one by one", &texts[..64], true, rounds, &ours);

    let mut group = c.benchmark_group("embed");
    group.sample_size(10);
    group.throughput(Throughput::Elements(texts.len() as u64));
    group.bench_function("all-minilm-l6-v2/2-threads/256-sentences", |b| b.iter(|| ours(&texts)));
    if with_baseline {
        group.bench_function("baseline-candle-bert/2-threads/256-sentences", |b| b.iter(|| theirs(&texts)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
