//! `loom chat` with piped input: one session across messages (the second request carries the
//! first exchange), tool calls shown, approvals answered inline, the commands, and `--url` against
//! a `loom serve` started here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use loom_testkit::wire::openai;
use loom_testkit::{MockServer, Reply};
use serde_json::{Value, json};

const KEY: &str = "sk-test-chat-0123456789";

fn loom() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loom"));
    for var in ["OPENAI_API_KEY", "OPENAI_BASE_URL", "LOOM_MODEL", "LOOM_JOURNAL", "LOOM_API_KEY"] {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Runs `loom chat ARGS` with `input` piped to it.
fn chat(args: &[&str], input: &str, dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut child = loom()
        .arg("chat")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loom-chat-{tag}-{}", loom_agent::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text_reply(text: &str) -> Reply {
    Reply::sse([openai::text(text), openai::finish("stop"), openai::usage(20, 0, 5), openai::done()])
}

fn write_call(id: &str, path: &str, content: &str) -> Reply {
    let args = json!({"path": path, "content": content}).to_string();
    Reply::sse([
        openai::tool_call_start(0, id, "write_file"),
        openai::tool_call_args(0, &args),
        openai::finish("tool_calls"),
        openai::usage(20, 0, 5),
        openai::done(),
    ])
}

/// The messages of a recorded chat completion request, as (role, content) pairs.
fn messages(body: &Value) -> Vec<(String, String)> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (m["role"].as_str().unwrap_or_default().to_string(), m["content"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_message_sees_the_first() {
    let server = MockServer::start().await;
    server.enqueue(text_reply("Nice to meet you, Ann."));
    server.enqueue(text_reply("Your name is Ann."));
    let dir = temp("history");
    let url = format!("{}/v1", server.url());
    let out = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || {
            chat(
                &["--model", "openai:gpt-4o-mini"],
                "My name is Ann\nWhat is my name?\n/history\n/exit\nnot sent\n",
                &dir,
                &[("OPENAI_BASE_URL", &url), ("OPENAI_API_KEY", KEY)],
            )
        }
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("Nice to meet you, Ann.\nYour name is Ann.\n"), "{stdout}");
    // /history prints the session's conversation.
    assert!(
        stdout.contains("you: My name is Ann\nassistant: Nice to meet you, Ann.\nyou: What is my name?\nassistant: Your name is Ann.\n"),
        "{stdout}"
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "/exit ended the chat before `not sent`");
    let second = messages(&requests[1].json());
    let tail: Vec<(&str, &str)> = second.iter().rev().take(3).rev().map(|(r, c)| (r.as_str(), c.as_str())).collect();
    assert_eq!(
        tail,
        [("user", "My name is Ann"), ("assistant", "Nice to meet you, Ann."), ("user", "What is my name?")]
    );
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_show_and_approvals_are_answered_inline() {
    let server = MockServer::start().await;
    server.enqueue(write_call("call_1", "a.txt", "one"));
    server.enqueue(text_reply("Wrote a.txt."));
    server.enqueue(write_call("call_2", "b.txt", "two"));
    server.enqueue(text_reply("I did not write b.txt."));
    let dir = temp("approve");
    let url = format!("{}/v1", server.url());
    let out = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || {
            chat(
                &["--model", "openai:gpt-4o-mini", "--files", ".", "--writable"],
                "write a\nmaybe\ny\nwrite b\nn\n",
                &dir,
                &[("OPENAI_BASE_URL", &url), ("OPENAI_API_KEY", KEY)],
            )
        }
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout, "Wrote a.txt.\nI did not write b.txt.\n");
    assert_eq!(std::fs::read_to_string(dir.join("a.txt")).unwrap(), "one");
    assert!(!dir.join("b.txt").exists(), "the denied call did not run");
    // The call, the question (asked again after an unclear answer), the answers, the results.
    assert!(stderr.contains("→ write_file({") && stderr.contains(r#""path":"a.txt""#), "{stderr}");
    assert_eq!(stderr.matches("? `write_file` needs approval").count(), 2, "{stderr}");
    assert!(stderr.contains("please answer y, n or a"), "{stderr}");
    assert!(stderr.contains("run it? [y]es, [n]o, [a]lways for this run: y"), "{stderr}");
    assert!(stderr.contains("← write_file: "), "{stderr}");
    assert!(stderr.contains("← write_file: error: "), "the denial is shown: {stderr}");
    // The model read the denial.
    let fourth = requests_tool_message(&server, 3);
    assert!(fourth.contains("denied in the chat"), "{fourth}");
    std::fs::remove_dir_all(&dir).ok();
}

fn requests_tool_message(server: &MockServer, n: usize) -> String {
    let body = server.requests()[n].json();
    let last = body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "tool");
    last["content"].as_str().unwrap().to_string()
}

#[test]
fn new_forgets_the_session_and_end_of_input_ends_the_chat() {
    let dir = temp("new");
    let out = chat(&["--model", "echo"], "one\n/history\n/new\n/history\n/nope\ntwo", &dir, &[]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout, "Echo: one\nyou: one\nassistant: Echo: one\n(no messages in this session yet)\nEcho: two\n",
        "{stderr}"
    );
    assert!(stderr.contains("(new session "), "{stderr}");
    assert!(stderr.contains("unknown command `/nope`"), "{stderr}");
    // Journaled: a later chat in the same session continues it.
    let first =
        chat(&["--model", "echo", "--journal", "sqlite:./chat.db", "--session", "s1"], "Remember 7\n", &dir, &[]);
    assert!(first.status.success());
    let later = chat(&["--model", "echo", "--journal", "sqlite:./chat.db", "--session", "s1"], "/history\n", &dir, &[]);
    assert_eq!(String::from_utf8_lossy(&later.stdout), "you: Remember 7\nassistant: Echo: Remember 7\n");
    // --url does not mix with the local agent's flags.
    let bad = chat(&["--url", "http://127.0.0.1:1", "--model", "echo"], "", &dir, &[]);
    assert_eq!(bad.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}

struct Served {
    child: Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `loom serve` of an agent on the mock model, with deferred approvals and writable files under
/// `work/`; the key of tenant `acme`.
async fn serve(dir: &Path, model_url: &str) -> (Served, String) {
    std::fs::create_dir_all(dir.join("work")).unwrap();
    let config = format!(
        "model = \"openai:gpt-4o-mini\"\nbase_url = \"{model_url}\"\njournal = \"sqlite:./loom.db\"\n\
         approval = \"defer\"\ncapabilities = [{{ kind = \"files\", root = \"./work\", writable = true }}]\n"
    );
    std::fs::write(dir.join("agent.toml"), config).unwrap();
    let out = loom()
        .args(["keys", "create", "--tenant", "acme", "--config", "agent.toml"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = loom()
        .args(["serve", "agent.toml", "--bind", &format!("127.0.0.1:{port}")])
        .env("OPENAI_API_KEY", KEY)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let served = Served { child, base: format!("http://127.0.0.1:{port}") };
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("{}/health", served.base)).send().await.is_ok() {
            return (served, key);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("loom serve did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_with_a_served_agent() {
    let model = MockServer::start().await;
    model.enqueue(text_reply("Hi Ann."));
    model.enqueue(write_call("call_9", "note.txt", "hello"));
    model.enqueue(text_reply("Written."));
    let dir = temp("url");
    let (served, key) = serve(&dir, &format!("{}/v1", model.url())).await;
    let base = served.base.clone();
    let out = tokio::task::spawn_blocking({
        let (dir, key, base) = (dir.clone(), key.clone(), base.clone());
        move || {
            chat(
                &["--url", &base, "--key-env", "CHAT_KEY", "--user", "ann"],
                "My name is Ann\nplease write a note\ny\n/history\n",
                &dir,
                &[("CHAT_KEY", &key)],
            )
        }
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("Hi Ann.\nWritten.\n"), "{stdout}\n{stderr}");
    assert_eq!(std::fs::read_to_string(dir.join("work/note.txt")).unwrap(), "hello");
    assert!(stderr.contains("→ write_file("), "{stderr}");
    assert!(stderr.contains("? `write_file` needs approval"), "{stderr}");
    assert!(stderr.contains("← write_file: "), "{stderr}");
    assert!(stdout.contains("you: My name is Ann\nassistant: Hi Ann.\nyou: please write a note\n"), "{stdout}");
    // One server session: the second run's model request carries the first exchange.
    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    let second = messages(&requests[1].json());
    assert!(second.contains(&("user".into(), "My name is Ann".into())), "{second:?}");
    assert!(second.contains(&("assistant".into(), "Hi Ann.".into())), "{second:?}");

    // A wrong key: exit 2, said plainly.
    let out = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || chat(&["--url", &base, "--key-env", "CHAT_KEY"], "hello\n", &dir, &[("CHAT_KEY", "loom_wrong")])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    drop(served);
    std::fs::remove_dir_all(&dir).ok();
}
