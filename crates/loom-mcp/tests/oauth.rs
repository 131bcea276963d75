//! OAuth through `McpServer::oauth`, against a protected MCP server and its authorization server
//! on 127.0.0.1 (tests/support/oauth_server.rs): the flow runs when the server challenges, the
//! token is reused by later calls and reconnections, refreshed when it expires, restored from a
//! token store, and a refusal is a typed error without secrets.
#![cfg(feature = "oauth")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/oauth_server.rs"]
mod oauth_server;

use std::sync::Arc;
use std::time::Duration;

use loom_mcp::McpError;
use loom_mcp::oauth::{InMemoryTokenStore, LoopbackUserAgent, OAuthConfig, TokenStore};
use oauth_server::{Behaviour, OAuthMcpServer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn text(result: &loom_mcp::model::CallToolResult) -> String {
    loom_mcp::result_text(result, None)
}

#[tokio::test]
async fn the_flow_runs_once_and_the_token_is_reused_by_later_calls_and_reconnections() {
    let mock = OAuthMcpServer::start(Behaviour::default()).await;
    let server = loom_mcp::http(mock.url()).name("secure").oauth(OAuthConfig::new("loom-test"));
    let client = server.connect().await.unwrap();
    let counts = mock.counts();
    assert_eq!((counts.authorizations, counts.code_grants, counts.registrations), (1, 1, 1), "{counts:?}");
    assert!(counts.challenges >= 1, "the server challenged first: {counts:?}");

    let first = client.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(text(&first), "authorized call #1");
    let second = client.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(text(&second), "authorized call #2");
    let tools = client.tools().await.unwrap();
    assert_eq!(tools.iter().map(|t| t.name().to_string()).collect::<Vec<_>>(), ["secure__whoami"]);
    assert_eq!(mock.counts().authorizations, 1, "no second authorization");

    // The token is revoked: the next request is challenged and the client authorizes again.
    mock.revoke_access_tokens();
    let third = client.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(text(&third), "authorized call #3");
    assert_eq!(mock.counts().authorizations, 2);
}

#[tokio::test]
async fn an_expired_token_is_refreshed_without_asking_again() {
    let mock = OAuthMcpServer::start(Behaviour { expires_in: Some(2), ..Behaviour::default() }).await;
    let client = loom_mcp::http(mock.url()).oauth(OAuthConfig::new("loom-test")).connect().await.unwrap();
    client.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(mock.counts().refresh_grants, 0);
    // rmcp refreshes a token with less than a second (half of 2 s, at most 30 s) left.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let after = client.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(text(&after), "authorized call #2");
    let counts = mock.counts();
    assert_eq!((counts.authorizations, counts.refresh_grants), (1, 1), "{counts:?}");
}

#[tokio::test]
async fn a_token_store_carries_the_tokens_to_a_new_client() {
    let mock = OAuthMcpServer::start(Behaviour::default()).await;
    let store: Arc<dyn TokenStore> = Arc::new(InMemoryTokenStore::new());
    let config = OAuthConfig::new("loom-test").token_store(store.clone());
    let first = loom_mcp::http(mock.url()).oauth(config.clone()).connect().await.unwrap();
    first.call_tool("whoami", json!({})).await.unwrap();
    drop(first);
    let saved = store.load().await.unwrap().expect("the tokens were saved");
    assert!(saved.token_response.is_some());
    assert!(!format!("{saved:?}").contains("at-"), "the store's Debug hides tokens");

    // Another server value (another process, with a persistent store): no authorization.
    let again = loom_mcp::http(mock.url()).oauth(config).connect().await.unwrap();
    assert_eq!(text(&again.call_tool("whoami", json!({})).await.unwrap()), "authorized call #2");
    let counts = mock.counts();
    assert_eq!((counts.authorizations, counts.code_grants), (1, 1), "{counts:?}");
}

#[tokio::test]
async fn a_refused_authorization_is_a_typed_error_without_secrets() {
    let mock = OAuthMcpServer::start(Behaviour { deny: true, ..Behaviour::default() }).await;
    let config = OAuthConfig::new("loom-test").preregistered("client-7", Some("s3cr3t-value".to_owned()));
    let server = loom_mcp::http(mock.url()).name("secure").oauth(config);
    let error = server.connect().await.unwrap_err();
    let McpError::Authorization { server: name, message } = &error else { panic!("{error:?}") };
    assert_eq!(name, "secure");
    assert!(message.contains("access_denied") && message.contains("the user said no"), "{message}");
    for shown in [error.to_string(), format!("{error:?}"), format!("{server:?}")] {
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
    }
    assert!(format!("{server:?}").contains("<redacted>"));
    assert_eq!(mock.counts().code_grants, 0);
}

#[tokio::test]
async fn the_loopback_agent_shows_the_url_and_takes_the_redirect() {
    let mock = OAuthMcpServer::start(Behaviour::default()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let browser = LoopbackUserAgent::bind(0, Duration::from_secs(20)).unwrap().on_url(move |url| {
        let _ = tx.send(url.to_owned());
    });
    let redirect_uri = browser.redirect_uri().to_owned();
    assert!(redirect_uri.starts_with("http://127.0.0.1:") && redirect_uri.ends_with("/callback"));
    let server = loom_mcp::http(mock.url()).oauth(browser.configure(OAuthConfig::new("loom-test")));
    let connecting = tokio::spawn(async move { server.connect().await });

    // The "user": opens the URL; the authorization server redirects; the browser follows to the
    // loopback listener (a stray request first, which gets a 404).
    let url = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.unwrap().unwrap();
    assert!(
        url.contains("/authorize?") && url.contains(&format!("redirect_uri={}", urlencode(&redirect_uri))),
        "{url}"
    );
    let location = http_get(&url).await.1.expect("a redirect");
    assert!(location.starts_with(&redirect_uri), "{location}");
    let port_path = location.trim_start_matches("http://");
    let stray = http_get(&format!("http://{}", port_path.replace("/callback", "/favicon.ico"))).await.0;
    assert!(stray.starts_with("HTTP/1.1 404"), "{stray}");
    let page = http_get(&location).await.0;
    assert!(page.contains("200 OK") && page.contains("close this window"), "{page}");

    let client = connecting.await.unwrap().unwrap();
    assert_eq!(text(&client.call_tool("whoami", json!({})).await.unwrap()), "authorized call #1");
}

#[tokio::test]
async fn the_loopback_agent_gives_up_after_its_timeout() {
    let mock = OAuthMcpServer::start(Behaviour::default()).await;
    let browser = LoopbackUserAgent::bind(0, Duration::from_millis(300)).unwrap().on_url(|_| {});
    let server = loom_mcp::http(mock.url()).oauth(browser.configure(OAuthConfig::new("loom-test")));
    let error = server.connect().await.unwrap_err();
    let McpError::Authorization { message, .. } = &error else { panic!("{error:?}") };
    assert!(message.contains("no redirect reached") && message.contains("300ms"), "{message}");
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A bare GET: the whole response, and its `Location` header.
async fn http_get(url: &str) -> (String, Option<String>) {
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut socket = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    let location = response
        .lines()
        .find_map(|l| l.strip_prefix("Location: ").or_else(|| l.strip_prefix("location: ")))
        .map(str::to_owned);
    (response, location)
}
