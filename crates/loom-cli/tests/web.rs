//! `loom run --web`: the real binary, a scripted model calling web_fetch and web_search against
//! mock servers on 127.0.0.1, the SSRF refusal without --allow-private, and the flags' rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use loom_testkit::{MockServer, Reply};
use serde_json::{Value, json};

fn loom(args: Vec<String>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loom"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("LOOM_MODEL")
        .env_remove("LOOM_JOURNAL")
        .env("NO_COLOR", "1")
        .output()
        .expect("loom starts")
}

/// Runs loom on a blocking thread, so the mock servers keep answering.
async fn loom_async(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || loom(args)).await.unwrap()
}

/// Writes a scripted model: the given tool calls, one per turn, then the answer "done".
fn script(dir: &std::path::Path, calls: &[(&str, Value)]) -> String {
    let mut turns: Vec<Value> =
        calls.iter().map(|(name, args)| json!({"tool_calls": [{"name": name, "arguments": args}]})).collect();
    turns.push(json!({"text": "done"}));
    let path = dir.join("script.json");
    std::fs::write(&path, serde_json::to_string(&turns).unwrap()).unwrap();
    format!("scripted:{}", path.display())
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("loom-cli-web-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `tool.result` events of a `--json` run, as (name, output, is_error).
fn tool_results(out: &Output) -> Vec<(String, String, bool)> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "tool.result")
        .map(|e| {
            let data = &e["payload"];
            (
                data["name"].as_str().unwrap_or_default().to_string(),
                data["output"].as_str().unwrap_or_default().to_string(),
                data["is_error"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn web_fetch_and_web_search_run_from_the_command_line() {
    let page = MockServer::start().await;
    page.always(Reply::html(200, "<html><body><h1>Changelog</h1><p>Version 2 is out.</p></body></html>"));
    let searx = MockServer::start().await;
    searx.always(Reply::json(
        200,
        json!({"results": [{"title": "Loom", "url": "https://loom.example/", "content": "An agent runtime."}]}),
    ));
    let dir = scratch("ok");
    let url = format!("{}/changelog", page.url());
    let model = script(&dir, &[("web_fetch", json!({"url": url})), ("web_search", json!({"query": "loom agent"}))]);
    let out = loom_async(&[
        "run",
        "--model",
        &model,
        "--web",
        "--allow-private",
        "--search-url",
        &searx.url(),
        "--json",
        "go",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let results = tool_results(&out);
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0].0, "web_fetch");
    assert!(
        !results[0].2 && results[0].1.contains("# Changelog") && results[0].1.contains("Version 2 is out."),
        "{results:?}"
    );
    assert_eq!(results[1].0, "web_search");
    assert_eq!(results[1].1, "1. Loom\n   https://loom.example/\n   An agent runtime.");
    assert_eq!(searx.requests()[0].path, "/search?q=loom+agent&format=json");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn without_allow_private_loopback_is_refused() {
    let page = MockServer::start().await;
    page.always(Reply::bytes(200, "text/plain", "internal"));
    let dir = scratch("refused");
    let port = page.url().rsplit(':').next().unwrap().to_string();
    let model = script(
        &dir,
        &[
            ("web_fetch", json!({"url": format!("http://localhost:{port}/")})),
            ("web_fetch", json!({"url": "http://169.254.169.254/latest/meta-data/"})),
            ("web_fetch", json!({"url": "https://docs.example/"})),
        ],
    );
    let out = loom_async(&[
        "run",
        "--model",
        &model,
        "--web",
        "--allow-host",
        "localhost",
        "--allow-host",
        "169.254.169.254",
        "--json",
        "go",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let results = tool_results(&out);
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(results.iter().all(|r| r.2), "{results:?}");
    assert!(results[0].1.contains("`localhost` resolves to a loopback address"), "{results:?}");
    assert!(results[1].1.contains("`169.254.169.254` is a cloud metadata service address"), "{results:?}");
    assert!(results[2].1.contains("the host `docs.example` is not on the allow-list"), "{results:?}");
    assert!(page.requests().is_empty());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn web_options_need_web_and_a_bad_search_url_is_a_usage_error() {
    for flags in [vec!["--allow-host", "docs.rs"], vec!["--allow-private"], vec!["--search-url", "http://127.0.0.1:1"]]
    {
        let mut args = vec!["run".to_string(), "--model".into(), "echo".into()];
        args.extend(flags.iter().map(|f| f.to_string()));
        args.push("hi".into());
        let out = loom(args);
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--web"), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = loom(["run", "--model", "echo", "--web", "--search-url", "not a url", "hi"].map(String::from).to_vec());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--search-url not a url: the searxng search backend is misconfigured"), "{stderr}");
}
