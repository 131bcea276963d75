//! Context management's costs: token counting throughput with the o200k BPE (OpenAI models) and
//! the estimate, and the context check before a model call on a 100-turn history when nothing
//! needs compacting (cached per-message counts: only new messages are counted). The check runs
//! as `ContextMeter::tokens` on the grown list, as `RunCx` does before each call.
//!
//! ```text
//! cargo bench -p loom-agent --bench context -- --warm-up-time 1 --measurement-time 4
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use loom_agent::message::{Message, ToolCall};
use loom_agent::model::TokenCounter;
use loom_agent::model::providers::tokens::{Encoding, OpenAiBpe};
use loom_agent::runtime::ContextMeter;

/// About 1 MB of mixed prose, code and JSON, as tool results and answers look.
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
    let mut group = c.benchmark_group("token_count");
    group.throughput(Throughput::Bytes(text.len() as u64));
    let o200k = OpenAiBpe::new(Encoding::O200k);
    o200k.count("warm up the tables");
    group.bench_function("o200k_bpe_1MB", |b| b.iter(|| o200k.count(std::hint::black_box(&text))));
    let cl100k = OpenAiBpe::new(Encoding::Cl100k);
    cl100k.count("warm up the tables");
    group.bench_function("cl100k_bpe_1MB", |b| b.iter(|| cl100k.count(std::hint::black_box(&text))));
    group.finish();
}

/// A 100-turn history: each turn a tool call with its result and an answer.
fn history() -> Vec<Message> {
    let mut messages = vec![Message::system("You are a helpful agent. ".repeat(20)), Message::user("Start.")];
    for i in 0..100 {
        let call = ToolCall { id: format!("c{i}"), name: "lookup".into(), arguments: format!("{{\"n\": {i}}}") };
        messages.push(Message::Assistant { content: format!("step {i}"), thinking: vec![], tool_calls: vec![call] });
        messages.push(Message::tool(format!("c{i}"), "lookup", "result text ".repeat(40), false));
    }
    messages
}

fn check(c: &mut Criterion) {
    let mut group = c.benchmark_group("context_check");
    for (name, counter) in [
        ("estimate_100_turns", None),
        ("o200k_100_turns", Some(Arc::new(OpenAiBpe::new(Encoding::O200k)) as Arc<dyn TokenCounter>)),
    ] {
        let mut messages = history();
        let mut meter = ContextMeter::new(counter);
        meter.tokens(&messages);
        let extra = Message::assistant("one more answer");
        // Each iteration: one new message since the last check (as between two model calls),
        // then the check over the whole list.
        group.bench_function(name, |b| {
            b.iter(|| {
                messages.push(extra.clone());
                let n = meter.tokens(std::hint::black_box(&messages));
                messages.pop();
                n
            })
        });
    }
    group.finish();
}

criterion_group!(benches, counting, check);
criterion_main!(benches);
