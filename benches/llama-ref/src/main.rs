//! llama.cpp reference timings for docs/benchmarks.md "## Local model": prompt processing of the
//! ~4,000-token prompt in `benches/data/prompt-4k.txt` (wrapped in the same ChatML system + user
//! turn as Loom's `bench_generate`), then 128 greedy tokens without stopping at end-of-turn.
//! Threads: `LLAMA_REF_THREADS` (default 2). Files: the arguments, else the cached SmolLM2 Q4_1
//! file and the Q8_0 copy Loom writes beside it.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;

const PROMPT: &str = include_str!("../../data/prompt-4k.txt");
const SYSTEM: &str = "You are a helpful assistant.";
const GENERATE: usize = 128;
const UBATCH: u32 = 512;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn run(backend: &LlamaBackend, model: &LlamaModel, threads: i32, round: usize, name: &str) -> Res<()> {
    let text = format!(
        "<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"
    );
    // No BOS (SmolLM2's `add_bos` is false); special tokens (`<|im_start|>`) parsed.
    let tokens = model.vocab().tokenize(text.as_bytes(), false, true);
    let n_ctx = tokens.len() as u32 + GENERATE as u32 + 16;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(n_ctx)
        .with_n_ubatch(UBATCH)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(backend, params)?;
    let mut batch = LlamaBatch::new(n_ctx as usize, 1);
    let last = tokens.len() - 1;
    for (i, t) in tokens.iter().enumerate() {
        batch.add(*t, i as i32, &[0], i == last)?;
    }
    let t0 = Instant::now();
    ctx.decode(&mut batch)?;
    let prompt_s = t0.elapsed().as_secs_f64();
    let mut sampler = LlamaSampler::greedy();
    let mut pos = tokens.len() as i32;
    let t1 = Instant::now();
    for _ in 0..GENERATE {
        let tok = sampler.sample(&ctx, batch.n_tokens() - 1);
        batch.clear();
        batch.add(tok, pos, &[0], true)?;
        pos += 1;
        ctx.decode(&mut batch)?;
    }
    let gen_s = t1.elapsed().as_secs_f64();
    println!(
        "llama.cpp/{name} threads {threads} round {round}: prompt {} tok in {prompt_s:.2} s = {:.0} tok/s | generation {GENERATE} tok in {gen_s:.2} s = {:.1} tok/s",
        tokens.len(),
        tokens.len() as f64 / prompt_s,
        GENERATE as f64 / gen_s
    );
    Ok(())
}

fn main() -> Res<()> {
    let threads: i32 = std::env::var("LLAMA_REF_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let rounds: usize = std::env::var("LLAMA_REF_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let mut files: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if files.is_empty() {
        let dir = PathBuf::from(std::env::var("HOME")?).join(".cache/loom/models");
        files.push(dir.join("SmolLM2-135M-Instruct.Q4_1.gguf"));
        files.push(dir.join("SmolLM2-135M-Instruct.Q4_1.q8_0.gguf"));
    }
    let mut backend = LlamaBackend::init()?;
    backend.void_logs();
    for file in files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
        let model = LlamaModel::load_from_file(&backend, &file, &LlamaModelParams::default())?;
        for round in 1..=rounds {
            run(&backend, &model, threads, round, &name)?;
        }
    }
    Ok(())
}
