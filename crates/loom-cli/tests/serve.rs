//! `loom keys create` and `loom serve` as processes: a key printed once on the last line, 401
//! without it, runs with it, and the official OpenAI Python SDK against the server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Served {
    child: Child,
    base: String,
    dir: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn loom(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loom")).args(args).current_dir(dir).output().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Writes a config, makes a key for `acme`, starts `loom serve`, waits for /health.
async fn serve(tag: &str) -> (Served, String) {
    let dir = std::env::temp_dir().join(format!("loom-serve-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("agent.toml"), "model = \"echo\"\njournal = \"sqlite:./loom.db\"\n").unwrap();
    let out = loom(&["keys", "create", "--tenant", "acme", "--config", "agent.toml"], &dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().last().unwrap().trim().to_string();
    assert!(key.starts_with("loom_") && key.len() > 40, "{stdout}");
    let db = std::fs::read(dir.join("loom.db")).unwrap();
    assert!(!db.windows(key.len()).any(|w| w == key.as_bytes()), "the key is not stored");
    let list = loom(&["keys", "list", "--config", "agent.toml"], &dir);
    let listed = String::from_utf8(list.stdout).unwrap();
    assert!(listed.contains("acme") && !listed.contains(&key), "{listed}");
    let bad = loom(&["keys", "create", "--tenant", "a/b", "--config", "agent.toml"], &dir);
    assert_eq!(bad.status.code(), Some(2));
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_loom"))
        .args(["serve", "agent.toml", "--bind", &format!("127.0.0.1:{port}")])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let served = Served { child, base: format!("http://127.0.0.1:{port}"), dir };
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("{}/health", served.base)).send().await.is_ok() {
            return (served, key);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("loom serve did not start");
}

#[tokio::test]
async fn keys_and_serve() {
    let (s, key) = serve("keys").await;
    let http = reqwest::Client::new();
    let body = serde_json::json!({"input": "hi", "wait": true});
    let r = http.post(format!("{}/runs", s.base)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.post(format!("{}/runs", s.base)).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let run: serde_json::Value = r.json().await.unwrap();
    assert_eq!(run["output"], "Echo: hi");
    let r = http.get(format!("{}/ready", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn serve_refuses_a_bad_config() {
    let dir = std::env::temp_dir().join(format!("loom-serve-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("agent.toml"), "modle = \"echo\"\n").unwrap();
    let out = loom(&["serve", "agent.toml"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `model`"));
    std::fs::write(dir.join("agent.toml"), "model = \"echo\"\n").unwrap();
    let out = loom(&["serve", "agent.toml"], &dir);
    assert_eq!(out.status.code(), Some(2), "no journal for the keys and auth not turned off");
    assert!(String::from_utf8_lossy(&out.stderr).contains("journal"));
    std::fs::remove_dir_all(&dir).ok();
}

const SDK_SCRIPT: &str = r#"
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
r = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "hello sdk"}])
print(r.choices[0].message.content)
print(r.usage.total_tokens >= 0)
chunks = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "stream me please"}], stream=True)
print("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
r = client.responses.create(model="default", input="via responses")
print(r.output_text)
try:
    openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="wrong", max_retries=0).chat.completions.create(
        model="default", messages=[{"role": "user", "content": "x"}])
    print("no error")
except openai.AuthenticationError:
    print("401")
"#;

/// The official OpenAI Python SDK (`pip install openai==1.109.1`, done by .ci/run) against
/// `loom serve`: a chat completion, a streamed one, a Responses call, and a 401.
#[tokio::test]
async fn the_openai_python_sdk_talks_to_loom_serve() {
    let probe = Command::new("python3").args(["-c", "import openai; print(openai.__version__)"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        _ => {
            println!("skipped: python3 with the `openai` package is not installed (pip install openai==1.109.1)");
            return;
        }
    }
    let (s, key) = serve("sdk").await;
    let out = tokio::process::Command::new("python3").args(["-c", SDK_SCRIPT, &s.base, &key]).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["Echo: hello sdk", "True", "Echo: stream me please", "Echo: via responses", "401"]);
}
