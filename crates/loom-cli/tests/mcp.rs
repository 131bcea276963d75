//! `loom run --mcp`: an MCP server's tools in a run from the command line, against the npm
//! reference server started by the CLI itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../loom-mcp/tests/support/mod.rs"]
mod support;

use std::process::{Command, Output};

fn loom(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loom"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("LOOM_MODEL")
        .env("NO_COLOR", "1")
        .output()
        .expect("loom starts")
}

#[test]
fn run_with_an_mcp_server_over_stdio() {
    let Some(entry) = support::reference_server() else { return };
    let spec = format!("everything=node '{}' stdio", entry.display());
    let out = loom(&["run", "--model", "scripted:tests/fixtures/mcp_sum.json", "--mcp", &spec, "add 2 and 3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("The sum is five."), "{stdout}");
    assert!(stderr.contains("everything__get-sum"), "{stderr}");
    assert!(stderr.contains("The sum of 2 and 3 is 5."), "{stderr}");

    // --deny takes an MCP tool's name before the server runs: the call is refused.
    let out = loom(&[
        "run",
        "--model",
        "scripted:tests/fixtures/mcp_sum.json",
        "--mcp",
        &spec,
        "--deny",
        "everything__get-sum",
        "add 2 and 3",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("denied"), "{stderr}");
    assert!(!stderr.contains("The sum of 2 and 3 is 5."), "{stderr}");
}

#[test]
fn bad_mcp_specs_and_mute_servers() {
    let out = loom(&["run", "--model", "echo", "--mcp", "", "hi"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--mcp : MCP server ``: no command or URL given"));
    let out = loom(&["run", "--model", "echo", "--mcp", "x='unclosed", "hi"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unbalanced quotes"));
    let out = loom(&["run", "--model", "echo", "--mcp", "a=cat", "--mcp", "a=http://127.0.0.1:1/mcp", "hi"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("named `a`"));

    // A server that exits at once fails the run, with what it said.
    let out = loom(&["run", "--model", "echo", "--mcp", "gone=sh -c 'echo no licence >&2; exit 1'", "hi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("MCP server `gone`: the handshake failed"), "{stderr}");
    assert!(stderr.contains("no licence"), "{stderr}");
}

#[test]
fn loom_tools_lists_an_mcp_servers_tools_with_their_flags() {
    let Some(entry) = support::reference_server() else { return };
    let spec = format!("ev=node '{}' stdio", entry.display());
    let out = loom(&["tools", "--mcp", &spec, "--files", "tests", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let tools: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let echo = tools.iter().find(|t| t["name"] == "ev__echo").expect("the server's echo, prefixed");
    assert_eq!(echo["flags"]["read_only"], true, "readOnlyHint maps to read_only: {echo}");
    assert!(echo["parameters"]["properties"]["message"].is_object(), "the server's schema as given: {echo}");
    assert!(tools.iter().any(|t| t["name"] == "read_file"), "fixed tools come too");

    // A server that never starts is a failure, not an empty list.
    let out = loom(&["tools", "--mcp", "dead=/no/such/server"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dead"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[path = "../../loom-mcp/tests/support/oauth_server.rs"]
mod oauth_server;

/// A bare GET: the whole response, and its `Location` header.
async fn http_get(url: &str) -> (String, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut socket = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    let location = response.lines().find_map(|l| l.strip_prefix("Location: ")).map(str::to_owned);
    (response, location)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_oauth_prints_the_authorization_url_and_takes_the_redirect_on_loopback() {
    use tokio::io::AsyncBufReadExt;
    let mock = oauth_server::OAuthMcpServer::start(oauth_server::Behaviour::default()).await;
    let spec = format!("secure={}", mock.url());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_loom"))
        .args(["tools", "--mcp", &spec, "--mcp-oauth", "--json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("LOOM_MODEL")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let url = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            seen.push(line.clone());
            if let Some(url) = line.trim().strip_prefix("http://").filter(|u| u.contains("/authorize?")) {
                return format!("http://{url}");
            }
        }
        panic!("no authorization URL on stderr: {seen:#?}")
    })
    .await
    .expect("the authorization URL is printed");
    assert!(seen.iter().any(|l| l.contains("MCP server `secure` asks for authorization")), "{seen:#?}");
    // The "browser": the authorization server redirects to the CLI's loopback listener.
    let location = http_get(&url).await.1.expect("a redirect");
    assert!(location.starts_with("http://127.0.0.1:") && location.contains("/callback?code="), "{location}");
    let page = http_get(&location).await.0;
    assert!(page.contains("close this window"), "{page}");

    let mut stdout = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).await.unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}; stdout: {stdout}");
    assert!(stdout.contains("secure__whoami"), "{stdout}");
    let counts = mock.counts();
    assert_eq!((counts.authorizations, counts.code_grants), (1, 1), "{counts:?}");
}
