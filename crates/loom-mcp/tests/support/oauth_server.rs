//! A protected MCP server and its OAuth 2.1 authorization server on one 127.0.0.1 port, written
//! here (plain HTTP/1.1 on tokio) so the tests can count what the client did: the MCP endpoint
//! (`/mcp`, Streamable HTTP answering with JSON, protocol 2025-11-25, one tool `whoami`) answers
//! `401` with a `WWW-Authenticate` challenge unless the request carries a live access token; the
//! authorization server publishes RFC 9728 and RFC 8414 metadata, registers clients dynamically,
//! authorizes without a login (a `302` to the redirect URI, or an `access_denied` redirect when
//! told to refuse), and issues and refreshes tokens.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server saw.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// `GET /authorize`.
    pub authorizations: usize,
    /// `POST /register`.
    pub registrations: usize,
    /// Tokens issued for an authorization code.
    pub code_grants: usize,
    /// Tokens issued for a refresh token.
    pub refresh_grants: usize,
    /// MCP requests answered with `401`.
    pub challenges: usize,
    /// `tools/call` requests served.
    pub tool_calls: usize,
}

#[derive(Default)]
struct State {
    counts: Counts,
    codes: HashMap<String, String>,
    /// Access token → when it stops being accepted.
    access: HashMap<String, Option<Instant>>,
    refresh: Vec<String>,
    next: usize,
}

/// How the authorization server behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Behaviour {
    /// Redirect with `error=access_denied` instead of a code.
    pub deny: bool,
    /// The access tokens' lifetime (`expires_in`); `None`: they do not expire.
    pub expires_in: Option<u64>,
}

pub struct OAuthMcpServer {
    base: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OAuthMcpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OAuthMcpServer {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let state = Arc::new(Mutex::new(State::default()));
        let (b, s) = (base.clone(), state.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                let (b, s) = (b.clone(), s.clone());
                tokio::spawn(async move {
                    let _ = serve(socket, &b, &s, behaviour).await;
                });
            }
        });
        Self { base, state, task }
    }

    /// The MCP endpoint.
    pub fn url(&self) -> String {
        format!("{}/mcp", self.base)
    }

    pub fn counts(&self) -> Counts {
        self.state.lock().unwrap().counts.clone()
    }

    /// Forgets every access token, as a server restart or a revocation would.
    pub fn revoke_access_tokens(&self) {
        self.state.lock().unwrap().access.clear();
    }
}

struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

async fn read_request(socket: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), form(q)),
        None => (target, HashMap::new()),
    };
    Some(Request { method, path, query, headers, body })
}

fn form(text: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(text.as_bytes()).into_owned().collect()
}

async fn reply(socket: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &str) {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    let _ = socket.write_all(out.as_bytes()).await;
    let _ = socket.shutdown().await;
}

async fn json_reply(socket: &mut TcpStream, status: &str, body: Value) {
    reply(socket, status, &[("Content-Type", "application/json".to_string())], &body.to_string()).await;
}

async fn serve(mut socket: TcpStream, base: &str, state: &Mutex<State>, behaviour: Behaviour) -> Option<()> {
    let request = read_request(&mut socket).await?;
    let resource_metadata = format!("{base}/.well-known/oauth-protected-resource/mcp");
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/.well-known/oauth-protected-resource/mcp" | "/.well-known/oauth-protected-resource") => {
            let body = json!({
                "resource": format!("{base}/mcp"),
                "authorization_servers": [base],
                "scopes_supported": ["mcp:tools"],
            });
            json_reply(&mut socket, "200 OK", body).await;
        }
        ("GET", "/.well-known/oauth-authorization-server") => {
            let body = json!({
                "issuer": base,
                "authorization_endpoint": format!("{base}/authorize"),
                "token_endpoint": format!("{base}/token"),
                "registration_endpoint": format!("{base}/register"),
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
                "scopes_supported": ["mcp:tools"],
            });
            json_reply(&mut socket, "200 OK", body).await;
        }
        ("POST", "/register") => {
            let mut body: Value = serde_json::from_slice(&request.body).unwrap_or(json!({}));
            let id = {
                let mut s = state.lock().unwrap();
                s.counts.registrations += 1;
                s.next += 1;
                format!("dyn-client-{}", s.next)
            };
            body["client_id"] = json!(id);
            body["token_endpoint_auth_method"] = json!("none");
            json_reply(&mut socket, "201 Created", body).await;
        }
        ("GET", "/authorize") => {
            let redirect = request.query.get("redirect_uri").cloned().unwrap_or_default();
            let st = request.query.get("state").cloned().unwrap_or_default();
            assert_eq!(request.query.get("code_challenge_method").map(String::as_str), Some("S256"));
            let location = {
                let mut s = state.lock().unwrap();
                s.counts.authorizations += 1;
                if behaviour.deny {
                    format!("{redirect}?error=access_denied&error_description=the+user+said+no&state={st}")
                } else {
                    s.next += 1;
                    let code = format!("code-{}", s.next);
                    s.codes.insert(code.clone(), redirect.clone());
                    format!("{redirect}?code={code}&state={st}")
                }
            };
            reply(&mut socket, "302 Found", &[("Location", location)], "").await;
        }
        ("POST", "/token") => {
            let params = form(&String::from_utf8_lossy(&request.body));
            let issued = {
                let mut s = state.lock().unwrap();
                let ok = match params.get("grant_type").map(String::as_str) {
                    Some("authorization_code") => {
                        let known = params.get("code").and_then(|c| s.codes.remove(c)).is_some();
                        let verified = params.get("code_verifier").is_some_and(|v| v.len() >= 43);
                        if known && verified {
                            s.counts.code_grants += 1;
                        }
                        known && verified
                    }
                    Some("refresh_token") => {
                        let known = params.get("refresh_token").is_some_and(|r| s.refresh.contains(r));
                        if known {
                            s.counts.refresh_grants += 1;
                        }
                        known
                    }
                    _ => false,
                };
                ok.then(|| {
                    s.next += 1;
                    let (access, refresh) = (format!("at-{}", s.next), format!("rt-{}", s.next));
                    let until = behaviour.expires_in.map(|secs| Instant::now() + Duration::from_secs(secs));
                    s.access.insert(access.clone(), until);
                    s.refresh.push(refresh.clone());
                    (access, refresh)
                })
            };
            match issued {
                Some((access, refresh)) => {
                    let mut body = json!({
                        "access_token": access,
                        "token_type": "Bearer",
                        "refresh_token": refresh,
                        "scope": "mcp:tools",
                    });
                    if let Some(secs) = behaviour.expires_in {
                        body["expires_in"] = json!(secs);
                    }
                    json_reply(&mut socket, "200 OK", body).await;
                }
                None => json_reply(&mut socket, "400 Bad Request", json!({"error": "invalid_grant"})).await,
            }
        }
        (method, "/mcp") => {
            let token = request.headers.get("authorization").and_then(|v| v.strip_prefix("Bearer ")).map(str::to_owned);
            let live = {
                let mut s = state.lock().unwrap();
                let live = token
                    .as_ref()
                    .and_then(|t| s.access.get(t).copied())
                    .is_some_and(|until| until.is_none_or(|u| Instant::now() < u));
                if !live {
                    s.counts.challenges += 1;
                }
                live
            };
            if !live {
                let challenge = format!(r#"Bearer resource_metadata="{resource_metadata}", scope="mcp:tools""#);
                reply(&mut socket, "401 Unauthorized", &[("WWW-Authenticate", challenge)], "unauthorized").await;
                return Some(());
            }
            if method != "POST" {
                reply(&mut socket, "405 Method Not Allowed", &[], "").await;
                return Some(());
            }
            let message: Value = serde_json::from_slice(&request.body).ok()?;
            let Some(id) = message.get("id").cloned() else {
                reply(&mut socket, "202 Accepted", &[], "").await;
                return Some(());
            };
            let answer = match message["method"].as_str().unwrap_or_default() {
                "initialize" => json!({"jsonrpc": "2.0", "id": id, "result": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "secure", "version": "1.0.0"},
                }}),
                "tools/list" => json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [{
                    "name": "whoami",
                    "description": "Says who the caller is authorized as.",
                    "inputSchema": {"type": "object", "properties": {}},
                    "annotations": {"readOnlyHint": true},
                }]}}),
                "tools/call" => {
                    let n = {
                        let mut s = state.lock().unwrap();
                        s.counts.tool_calls += 1;
                        s.counts.tool_calls
                    };
                    json!({"jsonrpc": "2.0", "id": id, "result": {
                        "content": [{"type": "text", "text": format!("authorized call #{n}")}],
                    }})
                }
                _ => json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}}),
            };
            json_reply(&mut socket, "200 OK", answer).await;
        }
        _ => reply(&mut socket, "404 Not Found", &[], "").await,
    }
    Some(())
}
