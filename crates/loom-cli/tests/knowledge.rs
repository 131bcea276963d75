//! `loom knowledge index|search` and `loom run --knowledge DIR`, end to end with the real binary
//! (against a mock OpenAI-compatible server for the runs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

use loom_testkit::wire::openai;
use loom_testkit::{MockServer, Reply};
use serde_json::Value;

const KEY: &str = "sk-test-knowledge-0123456789";

fn loom() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loom"));
    for var in ["OPENAI_API_KEY", "OPENAI_BASE_URL", "LOOM_MODEL", "LOOM_JOURNAL", "OLLAMA_BASE_URL"] {
        cmd.env_remove(var);
    }
    cmd.env("OPENAI_API_KEY", KEY);
    cmd
}

/// A fresh directory holding `docs/` with two documents, and a memory URL beside it.
fn setup() -> (PathBuf, PathBuf, String) {
    let root = std::env::temp_dir().join(format!("loom-cli-knowledge-{}", loom_agent::new_id("t")));
    let docs = root.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("faq.txt"), "Refunds are paid within 14 days.\n").unwrap();
    std::fs::write(docs.join("guide.md"), "# Setup\nPlug the router in.\nPress reset for ten seconds.\n").unwrap();
    let url = format!("sqlite:{}", root.join("bot.db").display());
    (root, docs, url)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

fn index(docs: &std::path::Path, url: &str) -> Command {
    let mut cmd = loom();
    cmd.args(["knowledge", "index"]).arg(docs).args(["--memory", url]);
    cmd
}

#[tokio::test]
async fn index_reports_what_it_did_and_reindexing_reads_only_changes() {
    let (root, docs, url) = setup();
    let out = output(index(&docs, &url)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "docs: 2 files indexed (2 chunks), 0 unchanged, 0 removed, 0 skipped");

    let out = output(index(&docs, &url)).await;
    assert_eq!(text(&out.stdout).trim(), "docs: 0 files indexed (0 chunks), 2 unchanged, 0 removed, 0 skipped");

    std::fs::write(docs.join("faq.txt"), "Refunds are paid within 30 days, by bank transfer.\n").unwrap();
    let file = std::fs::File::options().write(true).open(docs.join("faq.txt")).unwrap();
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
    std::fs::remove_file(docs.join("guide.md")).unwrap();
    std::fs::write(docs.join("blob.txt"), b"bin\0ary").unwrap();
    let mut cmd = index(&docs, &url);
    cmd.arg("--json");
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!((report["indexed"].as_u64(), report["removed"].as_u64()), (Some(1), Some(1)), "{report}");
    assert_eq!(report["skipped"][0]["path"], "blob.txt");
    assert!(text(&out.stderr).contains("skipped blob.txt: binary"), "{}", text(&out.stderr));

    let mut cmd = loom();
    cmd.args(["knowledge", "search", "refunds bank", "--memory", &url, "--name", "docs"]);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "[1] faq.txt:1 (docs)\nRefunds are paid within 30 days, by bank transfer.");

    let mut cmd = loom();
    cmd.args(["knowledge", "index", "/nonexistent/loom-docs", "--memory", &url]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn run_with_knowledge_puts_cited_passages_before_the_model() {
    let (root, docs, url) = setup();
    for memory in [Some(url.as_str()), None] {
        let server = MockServer::start().await;
        server.enqueue(Reply::sse([
            openai::text("Hold reset for ten seconds [1]."),
            openai::finish("stop"),
            openai::usage(20, 0, 5),
            openai::done(),
        ]));
        let mut cmd = loom();
        cmd.args(["run", "--model", "openai:gpt-4o-mini", "--base-url", &format!("{}/v1", server.url())]);
        cmd.arg("--knowledge").arg(&docs);
        if let Some(url) = memory {
            cmd.args(["--memory", url]);
        }
        cmd.arg("How do I reset the router?");
        let out = output(cmd).await;
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(text(&out.stdout).trim(), "Hold reset for ten seconds [1].");
        assert!(stderr.contains("knowledge: [1] guide.md:1-3 (docs)"), "{stderr}");
        let body: Value = serde_json::from_slice(&server.requests()[0].body).unwrap();
        let context = body["messages"][0]["content"].as_str().unwrap();
        assert!(
            context.contains(
                "Knowledge (cite it by the numbers in brackets, such as [1]):\n[1] guide.md:1-3 (docs)\n# Setup"
            ),
            "{context}"
        );
        let tools: Vec<&str> =
            body["tools"].as_array().unwrap().iter().filter_map(|t| t["function"]["name"].as_str()).collect();
        assert!(tools.contains(&"search_knowledge"), "{tools:?}");
    }
    // The run indexed into the memory store's file.
    let out = output(index(&docs, &url)).await;
    assert_eq!(text(&out.stdout).trim(), "docs: 0 files indexed (0 chunks), 2 unchanged, 0 removed, 0 skipped");
    let _ = std::fs::remove_dir_all(&root);
}
