//! The embedded local model: load time, prompt processing and generation speed, peak memory.
//!
//! Not a criterion bench: one generation of 128 tokens after a ~500-token prompt takes seconds, and
//! peak RSS (VmHWM) is per process. Run it once per re-quantization format:
//!
//! ```text
//! LOOM_LOCAL_QUANT=q8_0 cargo bench -p loom-agent --features local --bench local
//! LOOM_LOCAL_QUANT=q4_0 cargo bench -p loom-agent --features local --bench local
//! ```
//!
//! Two scenarios: `short` (the ~500-token notes below) and `long` (benches/data/prompt-4k.txt,
//! about 4,000 tokens: the same text, system prompt and ChatML frame `benches/llama-ref` gives
//! llama.cpp).
//! `LOOM_LOCAL_BENCH=short|long` runs one of them; both run by default.
//!
//! Needs the model in the cache (`loom model pull`); prints "skipped" otherwise. Threads: candle
//! uses one per core (`CANDLE_NUM_THREADS` / `RAYON_NUM_THREADS` override); docs/benchmarks.md has
//! the numbers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use loom_agent::model::local::{bench_generate, pull};

/// About 500 tokens of English prose once the chat template wraps it.
const PROMPT: &str = "Summarize the following notes in three sentences.\n\n\
The city council met on Tuesday evening to discuss the new public transport plan. The plan proposes \
three new bus lines connecting the northern suburbs to the city centre, a tram extension along the \
river, and a bicycle sharing scheme with two hundred stations. Supporters argue that the plan will \
reduce traffic congestion, lower air pollution, and make the city more attractive to young families. \
Critics point to the cost, estimated at four hundred million euros over ten years, and worry that the \
construction work will disrupt local businesses for several years. The mayor said that the council \
would hold public consultations in every district before the final vote in the spring. Several \
residents spoke during the meeting. A shop owner from the old town said that the tram works on the \
river road would cut off access to her shop and asked for compensation. A student said that the bus \
lines should run later at night, because many students work evening shifts. A retired teacher asked \
whether the bicycle stations would also be placed in the hilly eastern districts, where few people \
cycle today. The transport director answered that electric bicycles would be available at half of the \
stations. The council also discussed the budget for road maintenance, which has been cut for three \
years in a row, and agreed to set aside an additional ten million euros for repairing bridges. The \
finance committee warned that the city would need to borrow money or raise local taxes to pay for \
both the transport plan and the repairs. Several council members suggested asking the regional \
government for support, since the new lines would also serve neighbouring towns. The meeting ended \
after midnight with a vote to publish the full plan online and to invite written comments from \
citizens for the next two months. A second meeting was scheduled for the first week of March, when \
the council will review the comments and the updated cost estimates prepared by the transport \
department together with independent engineers from the technical university. In the meantime, the \
mayor asked every district office to organise information evenings, to print leaflets in several \
languages, and to collect questions from residents who do not use the internet.";

/// The long scenario's user message (also `benches/llama-ref`'s prompt).
const LONG_PROMPT: &str = include_str!("../../../benches/data/prompt-4k.txt");

fn vm_hwm_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
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
    let quant = std::env::var("LOOM_LOCAL_QUANT").unwrap_or_else(|_| "default".into());
    // A first run makes the re-quantized file if it is missing, so the timed runs load warm.
    bench_generate(Some(&path), "Hi", 1).expect("the model runs");
    let which = std::env::var("LOOM_LOCAL_BENCH").unwrap_or_default();
    let scenarios = [("short", PROMPT), ("long", LONG_PROMPT)];
    for (scenario, prompt) in scenarios.into_iter().filter(|(s, _)| which.is_empty() || which == *s) {
        run_scenario(&path, &quant, scenario, prompt);
    }
    println!("local/{quant} peak RSS (VmHWM): {:.0} MB", vm_hwm_mb());
}

fn run_scenario(path: &std::path::Path, quant: &str, scenario: &str, prompt: &str) {
    for round in 1..=3 {
        let r = bench_generate(Some(path), prompt, 128).expect("the model runs");
        println!(
            "local/{quant}/{scenario} round {round}: load {:.2} s | prompt {} tok in {:.2} s = {:.0} tok/s | generation {} tok in {:.2} s = {:.1} tok/s",
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
