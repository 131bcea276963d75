//! Prompt processing of the ~4,000-token prompt (`benches/data/prompt-4k.txt`, in the same
//! ChatML frame `benches/llama-ref` gives llama.cpp), then greedy generation: the side of the
//! llama.cpp comparison in docs/benchmarks.md "## Local model" that builds without loom-agent's
//! dependencies (`crates/loom-agent/benches/local.rs` runs the same through `loom_agent`).
//!
//! ```text
//! cargo bench -p loom-local --bench prompt
//! LOOM_LOCAL_QGEMM=candle cargo bench -p loom-local --bench prompt   # candle's Q8_0 matmul
//! ```
//!
//! `LOOM_BENCH_ROUNDS` (default 3) rounds, each loading the model again; `LOOM_BENCH_GENERATE`
//! (default 128) tokens generated; `LOOM_BENCH_PROMPT_WORDS=N` keeps only the prompt's first `N`
//! words (a short-context run, for generation speed). Needs the model in the cache (`loom model pull`); prints
//! "skipped" otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use loom_local::{bench_generate, pull};

const LONG_PROMPT: &str = include_str!("../../../benches/data/prompt-4k.txt");

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let path = match pull::default_model_path() {
        Ok(p) if p.is_file() => p,
        _ => {
            eprintln!("skipped: the local model is not in the cache (run `loom model pull`)");
            return;
        }
    };
    let matmul = std::env::var("LOOM_LOCAL_QGEMM").unwrap_or_else(|_| "default".into());
    // A first run makes the re-quantized file if it is missing, so the timed runs load warm.
    bench_generate(Some(&path), "Hi", 1).expect("the model runs");
    let generate = env_usize("LOOM_BENCH_GENERATE", 128);
    let prompt = match std::env::var("LOOM_BENCH_PROMPT_WORDS").ok().and_then(|v| v.parse::<usize>().ok()) {
        Some(n) => LONG_PROMPT.split_whitespace().take(n).collect::<Vec<_>>().join(" "),
        None => LONG_PROMPT.to_string(),
    };
    for round in 1..=env_usize("LOOM_BENCH_ROUNDS", 3) {
        let r = bench_generate(Some(&path), &prompt, generate).expect("the model runs");
        println!(
            "loom/{matmul}/long round {round}: load {:.2} s | prompt {} tok in {:.2} s = {:.0} tok/s | generation {} tok in {:.2} s = {:.1} tok/s",
            r.load.as_secs_f64(),
            r.prompt_tokens,
            r.prompt_time.as_secs_f64(),
            r.prompt_tokens as f64 / r.prompt_time.as_secs_f64(),
            r.generated_tokens,
            r.generation_time.as_secs_f64(),
            r.generated_tokens as f64 / r.generation_time.as_secs_f64(),
        );
    }
}
