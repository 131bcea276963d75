//! What `grep` (the file capability's tool) costs over a real tree: this repository by default, or
//! the directory in `LOOM_GREP_BENCH_ROOT`. Compare with ripgrep on the same tree and patterns:
//!
//! ```text
//! cargo bench -p loom-agent --bench grep -- --warm-up-time 1 --measurement-time 5
//! hyperfine -N --warmup 3 "rg -n 'fn\s+\w+\(' ." "rg -n -i 'capability' ."
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use loom_agent::capability::{self, Capability};
use loom_agent::tool::{Tool, ToolContext};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

fn root() -> PathBuf {
    std::env::var_os("LOOM_GREP_BENCH_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

fn grep(c: &mut Criterion) {
    let runtime = Runtime::new().unwrap();
    let tools = capability::files(root()).tools();
    let grep: Arc<dyn Tool> = tools.into_iter().find(|t| t.name() == "grep").unwrap();
    let cases: [(&str, Value); 2] = [
        ("regex fn\\s+\\w+\\(", json!({"pattern": r"fn\s+\w+\("})),
        ("case-insensitive literal capability", json!({"pattern": "capability", "case_insensitive": true})),
    ];
    for (name, args) in cases {
        // One call first: the answer is real (not an error), so the benchmark measures a search.
        let first = runtime.block_on(grep.call(ToolContext::detached("run", "sess"), args.clone())).unwrap();
        assert!(first.content.contains(':'), "{}", first.content);
        c.bench_function(&format!("grep {name}"), |b| {
            b.to_async(&runtime).iter(|| grep.call(ToolContext::detached("run", "sess"), args.clone()))
        });
    }
}

criterion_group!(benches, grep);
criterion_main!(benches);
