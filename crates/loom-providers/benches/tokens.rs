//! Token counting throughput (issue 13's target: at least 50 MB/s of text with the BPE
//! tokenizer): Loom's counter (`OpenAiBpe`, the ASCII fast path of `tokens/fast.rs`) against
//! `bpe-openai`'s own `count` and tiktoken-rs on the same text, in the same process, so the ratios
//! hold on a busy machine. The text is the one of `loom-agent`'s `context` bench: about 1 MB of
//! prose, code, JSON and a little non-ASCII text.
//!
//! ```text
//! cargo bench -p loom-providers --bench tokens -- --warm-up-time 1 --measurement-time 3
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use loom_core::model::TokenCounter;
use loom_providers::tokens::{Encoding, OpenAiBpe};

fn corpus() -> String {
    let prose = "The quick brown fox jumps over the lazy dog while the release notes are written. ";
    let code = "fn main() {\n    let total: u64 = items.iter().map(|i| i.price * i.qty).sum();\n    println!(\"{total}\");\n}\n";
    let json = r#"{"id": 12345, "name": "widget", "tags": ["a", "b"], "price": 19.99, "ok": true}"#;
    let mut out = String::with_capacity(1 << 20);
    let mut i = 0u64;
    while out.len() < 1 << 20 {
        out.push_str(prose);
        out.push_str(code);
        out.push_str(json);
        out.push_str(&format!(" #{i} Ünïcödé 日本語 "));
        i += 1;
    }
    out
}

fn counting(c: &mut Criterion) {
    let text = corpus();
    let o200k = OpenAiBpe::new(Encoding::O200k);
    let reference = bpe_openai::o200k_base();
    let tiktoken = tiktoken_rs::o200k_base().unwrap();
    assert_eq!(o200k.count(&text), reference.count(text.as_str()));
    assert_eq!(o200k.count(&text), tiktoken.encode_ordinary(&text).len());

    let mut group = c.benchmark_group("token_count_1MB");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("o200k/loom", |b| b.iter(|| o200k.count(std::hint::black_box(&text))));
    group.bench_function("o200k/bpe-openai", |b| b.iter(|| reference.count(std::hint::black_box(text.as_str()))));
    let cl100k = OpenAiBpe::new(Encoding::Cl100k);
    cl100k.count("warm up");
    group.bench_function("cl100k/loom", |b| b.iter(|| cl100k.count(std::hint::black_box(&text))));
    let reference = bpe_openai::cl100k_base();
    group.bench_function("cl100k/bpe-openai", |b| b.iter(|| reference.count(std::hint::black_box(text.as_str()))));
    group.sample_size(10);
    group.bench_function("o200k/tiktoken-rs", |b| {
        b.iter(|| tiktoken.encode_ordinary(std::hint::black_box(&text)).len())
    });
    group.finish();
}

criterion_group!(benches, counting);
criterion_main!(benches);
