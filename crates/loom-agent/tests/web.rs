//! The web capability against local servers on 127.0.0.1 (the testkit's mock server): fetching
//! HTML, text, JSON, huge, slow and binary bodies and redirects with `allow_private`; the SSRF
//! refusals without it (loopback and metadata literals, IPv6 and IPv4-mapped forms, a name that
//! resolves to loopback, a redirect to loopback); host lists; SearXNG and Brave mocks; and a run
//! whose scripted model calls `web_fetch`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use loom_agent::capability::web::{Brave, SearXng, SearchBackend, SearchError, SearchResult};
use loom_agent::capability::{self, Capability, Web};
use loom_agent::model::ScriptedTurn;
use loom_agent::tool::{Tool, ToolContext, ToolErrorKind, ToolOutput};
use loom_agent::{Agent, RunState, ToolError};
use loom_testkit::{MockServer, Part, Reply};
use serde_json::{Value, json};

fn tool(web: &Web, name: &str) -> Arc<dyn Tool> {
    web.tools().into_iter().find(|t| t.name() == name).unwrap_or_else(|| panic!("no tool {name}"))
}

async fn fetch(web: &Web, args: Value) -> Result<ToolOutput, ToolError> {
    let fetch = tool(web, "web_fetch");
    within(60, "web_fetch", fetch.call(ToolContext::detached("run_1", "sess_1"), args)).await
}

async fn fetch_url(web: &Web, url: &str) -> Result<ToolOutput, ToolError> {
    fetch(web, json!({"url": url})).await
}

fn addr(server: &MockServer) -> SocketAddr {
    server.url().trim_start_matches("http://").parse().unwrap()
}

const PAGE: &str = r#"<!doctype html><html><head><title>T</title><style>body { color: red }</style>
<script>var secret = "do-not-show";</script></head>
<body><h1>Release notes</h1><p>Loom is <b>fast</b> and <a href="https://example.com/docs">documented</a>.</p>
<ul><li>first item</li><li>second item</li></ul></body></html>"#;

#[tokio::test]
async fn html_becomes_readable_text_and_text_and_json_come_as_they_are() {
    let server = MockServer::start().await;
    let web = capability::web().allow_private();
    server.enqueue(Reply::html(200, PAGE));
    let out = fetch_url(&web, &format!("{}/page", server.url())).await.unwrap().content;
    assert!(out.contains("# Release notes"), "{out}");
    assert!(out.contains("**fast**"), "{out}");
    assert!(out.contains("first item") && out.contains("second item"), "{out}");
    assert!(out.contains("https://example.com/docs"), "links are listed: {out}");
    assert!(!out.contains('<'), "no markup left: {out}");
    assert!(!out.contains("do-not-show") && !out.contains("color: red"), "scripts and styles dropped: {out}");

    // The same page raw.
    server.enqueue(Reply::html(200, PAGE));
    let raw = fetch(&web, json!({"url": server.url(), "format": "raw"})).await.unwrap().content;
    assert!(raw.starts_with("<!doctype html>"), "{raw}");

    server.enqueue(Reply::bytes(200, "text/plain; charset=utf-8", "line one\n<b>not html</b>\n"));
    let text = fetch_url(&web, &server.url()).await.unwrap().content;
    assert_eq!(text, "line one\n<b>not html</b>");

    server.enqueue(Reply::json(200, json!({"name": "loom", "stars": 3})));
    let body = fetch_url(&web, &server.url()).await.unwrap().content;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"name": "loom", "stars": 3}));

    // No content type: text is read, binary refused.
    server.enqueue(Reply::bytes(200, "", "plain words"));
    assert_eq!(fetch_url(&web, &server.url()).await.unwrap().content, "plain words");
    server.enqueue(Reply::bytes(200, "", vec![0x89, b'P', b'N', b'G', 0, 0, 1, 2]));
    let err = fetch_url(&web, &server.url()).await.unwrap_err();
    assert!(err.message().contains("binary data"), "{}", err.message());

    // The request said what it accepts.
    let requests = server.requests();
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/page");
    assert!(requests[0].header("accept").unwrap().starts_with("text/html"), "{:?}", requests[0].headers);
    assert!(requests[0].header("user-agent").unwrap().starts_with("loom/"));
}

#[tokio::test]
async fn binary_types_are_refused_before_the_body_is_read() {
    let server = MockServer::start().await;
    let web = capability::web().allow_private();
    for ct in ["image/png", "application/pdf", "application/octet-stream", "application/zip"] {
        server.enqueue(Reply::bytes(200, ct, vec![1u8; 1000]));
        let err = fetch_url(&web, &server.url()).await.unwrap_err();
        assert_eq!(
            err.message(),
            format!("`{}/` is `{ct}`, a binary type; web_fetch reads HTML, text and JSON only", server.url())
        );
    }
}

#[tokio::test]
async fn a_huge_body_is_cut_at_the_cap_without_reading_the_rest() {
    let server = MockServer::start().await;
    let web = capability::web().allow_private().max_bytes(64 * 1024);
    // 256 MiB in 64 KiB chunks: reading it all would take far longer than the test allows.
    let mut reply = Reply::bytes(200, "text/plain", Vec::new());
    reply.parts = (0..4096).map(|_| Part::Bytes(vec![b'a'; 64 * 1024])).collect();
    server.enqueue(reply);
    let started = Instant::now();
    let out = fetch_url(&web, &server.url()).await.unwrap().content;
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let (body, note) = out.split_once("\n\n[cut").expect("the output says it was cut");
    assert_eq!(body.len(), 64 * 1024);
    assert_eq!(note, ": only the first 65536 bytes of the body were read]");

    // A call may ask for less, never for more.
    server.enqueue(Reply::bytes(200, "text/plain", "0123456789"));
    let out = fetch(&web, json!({"url": server.url(), "max_bytes": 4})).await.unwrap().content;
    assert_eq!(out, "0123\n\n[cut: only the first 4 bytes of the body were read]");
    // A body of exactly the cap is whole.
    server.enqueue(Reply::bytes(200, "text/plain", "0123"));
    let out = fetch(&web, json!({"url": server.url(), "max_bytes": 4})).await.unwrap().content;
    assert_eq!(out, "0123");
}

#[tokio::test]
async fn the_time_cap_returns_what_arrived_or_fails_clearly() {
    let server = MockServer::start().await;
    let web = capability::web().allow_private().timeout(Duration::from_millis(1500));
    // A body that trickles: the first chunk arrives, the rest too late.
    let slow = Reply::sse(["first part ", "second part ", "third part"]).pause_between_chunks(Duration::from_secs(1));
    server.enqueue(Reply { content_type: "text/plain".into(), ..slow });
    let started = Instant::now();
    let out = fetch_url(&web, &server.url()).await.unwrap().content;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(out.starts_with("first part second part"), "{out}");
    assert!(!out.contains("third part"), "{out}");
    assert!(out.ends_with("[cut: the time cap of 1.5 s expired while the body was arriving]"), "{out}");

    // No headers at all within the cap.
    server.enqueue(Reply::silent());
    let err = fetch_url(&web, &server.url()).await.unwrap_err();
    assert_eq!(err.kind(), ToolErrorKind::Timeout);
    assert_eq!(err.message(), format!("fetching `{}/`: no answer within 1.5 s", server.url()));
}

#[tokio::test]
async fn error_statuses_and_broken_connections_are_tool_errors() {
    let server = MockServer::start().await;
    let web = capability::web().allow_private();
    server.enqueue(Reply::html(404, "<html><body><h1>Not here</h1></body></html>"));
    let err = fetch_url(&web, &format!("{}/missing", server.url())).await.unwrap_err();
    assert_eq!(err.message(), format!("`{}/missing` answered HTTP 404 Not Found:\n# Not here", server.url()));

    server.enqueue(Reply::hang_up());
    let err = fetch_url(&web, &server.url()).await.unwrap_err();
    assert!(
        err.message().starts_with(&format!("fetching `{}/`: the request failed", server.url())),
        "{}",
        err.message()
    );

    // Nothing listens on this port.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let err = fetch_url(&web, &format!("http://{closed}/")).await.unwrap_err();
    assert!(err.message().contains("the connection failed"), "{}", err.message());
}

#[tokio::test]
async fn bad_urls_and_schemes_are_refused() {
    let web = capability::web().allow_private();
    let err = fetch_url(&web, "not a url").await.unwrap_err();
    assert_eq!(err.kind(), ToolErrorKind::InvalidArguments);
    assert!(err.message().starts_with("`not a url` is not a valid URL"), "{}", err.message());
    for (url, scheme) in [("file:///etc/passwd", "file"), ("ftp://example.com/x", "ftp"), ("gopher://x/", "gopher")] {
        let err = fetch_url(&web, url).await.unwrap_err();
        assert_eq!(err.kind(), ToolErrorKind::Denied);
        assert_eq!(
            err.message(),
            format!("refused: the URL scheme `{scheme}` is not allowed; only http and https URLs can be fetched")
        );
    }
    let err = fetch(&web, json!({"url": "https://example.com", "format": "pdf"})).await.unwrap_err();
    assert_eq!(err.kind(), ToolErrorKind::InvalidArguments);
}

const NOTE: &str = "web_fetch does not reach private, loopback, link-local or metadata addresses";

#[tokio::test]
async fn private_addresses_are_refused_by_default() {
    let server = MockServer::start().await;
    server.always(Reply::bytes(200, "text/plain", "internal secret"));
    let port = addr(&server).port();
    let web = capability::web();
    let cases = [
        (format!("http://127.0.0.1:{port}/"), format!("refused: `127.0.0.1` is a loopback address; {NOTE}")),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            format!("refused: `169.254.169.254` is a cloud metadata service address; {NOTE}"),
        ),
        (format!("http://[::1]:{port}/"), format!("refused: `[::1]` is a loopback address; {NOTE}")),
        ("http://[::ffff:127.0.0.1]/".to_string(), format!("refused: `[::ffff:7f00:1]` is a loopback address; {NOTE}")),
        (
            "http://[fd00:ec2::254]/".to_string(),
            format!("refused: `[fd00:ec2::254]` is a cloud metadata service address; {NOTE}"),
        ),
        ("http://10.0.0.1/".to_string(), format!("refused: `10.0.0.1` is a private network address; {NOTE}")),
        (
            "http://100.64.0.1/".to_string(),
            format!("refused: `100.64.0.1` is a shared (carrier-grade NAT) address; {NOTE}"),
        ),
        ("http://0.0.0.0/".to_string(), format!("refused: `0.0.0.0` is an unspecified address; {NOTE}")),
        // 2130706433 is 127.0.0.1 written as one number.
        (format!("http://2130706433:{port}/"), format!("refused: `127.0.0.1` is a loopback address; {NOTE}")),
        // A name that resolves to loopback: refused by the resolver, after resolution.
        (format!("http://localhost:{port}/"), format!("refused: `localhost` resolves to a loopback address; {NOTE}")),
    ];
    for (url, want) in cases {
        let err = fetch_url(&web, &url).await.unwrap_err();
        assert_eq!(err.kind(), ToolErrorKind::Denied, "{url}");
        assert_eq!(err.message(), want, "{url}");
    }
    assert!(server.requests().is_empty(), "nothing reached the server: {:?}", server.requests());

    // With allow_private the same server answers.
    let open = capability::web().allow_private();
    assert_eq!(fetch_url(&open, &format!("http://localhost:{port}/")).await.unwrap().content, "internal secret");
    assert_eq!(fetch_url(&open, &format!("http://127.0.0.1:{port}/")).await.unwrap().content, "internal secret");
}

#[tokio::test]
async fn an_allowed_host_does_not_lift_the_private_address_check() {
    let server = MockServer::start().await;
    server.always(Reply::bytes(200, "text/plain", "internal"));
    let port = addr(&server).port();
    let web = capability::web().allow_host("localhost").allow_host("127.0.0.1");
    let err = fetch_url(&web, &format!("http://localhost:{port}/")).await.unwrap_err();
    assert_eq!(err.message(), format!("refused: `localhost` resolves to a loopback address; {NOTE}"));
    let err = fetch_url(&web, &format!("http://127.0.0.1:{port}/")).await.unwrap_err();
    assert_eq!(err.message(), format!("refused: `127.0.0.1` is a loopback address; {NOTE}"));
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn redirects_are_followed_and_each_hop_is_checked() {
    let server = MockServer::start().await;
    let port = addr(&server).port();

    // With allow_private: followed, and the output says where it ended.
    let open = capability::web().allow_private();
    server.enqueue(Reply::bytes(302, "text/plain", "").header("location", "/final"));
    server.enqueue(Reply::bytes(200, "text/plain", "landed"));
    let out = fetch_url(&open, &format!("{}/start", server.url())).await.unwrap().content;
    assert_eq!(out, format!("[redirected to {}/final]\n\nlanded", server.url()));

    // A public-looking name pinned to the mock server (the test hook) lets the first hop through;
    // the redirect it answers must be refused. The pinned name is the only exemption.
    let web = capability::web().pin_host_unchecked("public.example", addr(&server));
    let targets = [
        (format!("http://127.0.0.1:{port}/secret"), format!("refused: `127.0.0.1` is a loopback address; {NOTE}")),
        (
            format!("http://localhost:{port}/secret"),
            format!("refused: `localhost` resolves to a loopback address; {NOTE}"),
        ),
        (
            "http://169.254.169.254/latest/meta-data/".into(),
            format!("refused: `169.254.169.254` is a cloud metadata service address; {NOTE}"),
        ),
        (format!("http://[::1]:{port}/secret"), format!("refused: `[::1]` is a loopback address; {NOTE}")),
        (
            "file:///etc/passwd".into(),
            "refused: the URL scheme `file` is not allowed; only http and https URLs can be fetched".into(),
        ),
    ];
    for (target, want) in targets {
        let before = server.requests().len();
        server.enqueue(Reply::bytes(302, "text/plain", "").header("location", &target));
        let err = fetch_url(&web, &format!("http://public.example:{port}/start")).await.unwrap_err();
        assert_eq!(err.kind(), ToolErrorKind::Denied, "{target}");
        assert_eq!(err.message(), want, "{target}");
        let requests = server.requests();
        assert_eq!(requests.len(), before + 1, "only the first hop reached the server ({target})");
        assert_eq!(requests[before].path, "/start");
    }
    // The pinned first hop itself works when it answers.
    server.enqueue(Reply::bytes(200, "text/plain", "public page"));
    assert_eq!(fetch_url(&web, &format!("http://public.example:{port}/")).await.unwrap().content, "public page");

    // Too many hops.
    let capped = capability::web().allow_private().max_redirects(2);
    for i in 0..3 {
        server.enqueue(Reply::bytes(302, "text/plain", "").header("location", &format!("/hop{i}")));
    }
    let err = fetch_url(&capped, &server.url()).await.unwrap_err();
    assert_eq!(err.message(), "refused: more than 2 redirects");
}

#[tokio::test]
async fn host_lists_decide_which_hosts_may_be_fetched() {
    let server = MockServer::start().await;
    server.always(Reply::bytes(200, "text/plain", "ok"));
    let port = addr(&server).port();
    // Pinned names stand for public hosts (their DNS is the test's).
    let pinned = |web: Web| {
        ["docs.example", "api.docs.example", "evil.example", "other.example"]
            .into_iter()
            .fold(web, |w, h| w.pin_host_unchecked(h, addr(&server)))
    };
    let allow = pinned(capability::web().allow_host("docs.example").allow_host("*.docs.example"));
    assert_eq!(fetch_url(&allow, &format!("http://docs.example:{port}/")).await.unwrap().content, "ok");
    assert_eq!(fetch_url(&allow, &format!("http://API.docs.example:{port}/")).await.unwrap().content, "ok");
    let err = fetch_url(&allow, &format!("http://other.example:{port}/")).await.unwrap_err();
    assert_eq!(err.message(), "refused: the host `other.example` is not on the allow-list");

    let deny = pinned(capability::web().deny_host("evil.example").allow_host("*.example").allow_host("evil.example"));
    let err = fetch_url(&deny, &format!("http://evil.example:{port}/")).await.unwrap_err();
    assert_eq!(err.message(), "refused: the host `evil.example` is on the deny-list", "the deny-list wins");
    assert_eq!(fetch_url(&deny, &format!("http://other.example:{port}/")).await.unwrap().content, "ok");

    // A redirect to a host off the allow-list is refused too.
    server.enqueue(Reply::bytes(302, "text/plain", "").header("location", &format!("http://other.example:{port}/")));
    let err = fetch_url(&allow, &format!("http://docs.example:{port}/")).await.unwrap_err();
    assert_eq!(err.message(), "refused: the host `other.example` is not on the allow-list");

    // The instructions name the allowed hosts.
    let text = allow.instructions().unwrap();
    assert!(text.contains("docs.example, *.docs.example"), "{text}");
}

#[tokio::test]
async fn deeply_nested_html_does_not_exhaust_the_stack() {
    let server = MockServer::start().await;
    // 400,000 levels fit in the default 2 MiB cap; html5ever's tree builder would take hours.
    let depth = 400_000;
    let page =
        format!("<html><body><h1>Top</h1>{}deep text{}</body></html>", "<div>".repeat(depth), "</div>".repeat(depth));
    server.enqueue(Reply::html(200, &page));
    let web = capability::web().allow_private().max_bytes(8 * 1024 * 1024);
    let started = Instant::now();
    let out = fetch_url(&web, &server.url()).await.unwrap().content;
    assert_eq!(out, "Top\ndeep text");
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
}

#[tokio::test]
async fn web_search_exists_only_with_a_backend() {
    let names = |web: Web| web.tools().iter().map(|t| t.name().to_string()).collect::<Vec<_>>();
    assert_eq!(names(capability::web()), ["web_fetch"]);
    let searx = SearXng::new("http://127.0.0.1:9").unwrap();
    assert_eq!(names(capability::web().search(searx)), ["web_fetch", "web_search"]);
    for tool in capability::web().search(SearXng::new("http://127.0.0.1:9").unwrap()).tools() {
        let flags = tool.flags();
        assert!(flags.read_only && flags.idempotent && flags.concurrency_safe, "{}: {flags:?}", tool.name());
        assert!(!flags.needs_approval(), "{}", tool.name());
        assert!(tool.timeout().is_some());
    }
}

async fn search(web: &Web, args: Value) -> Result<ToolOutput, ToolError> {
    let search = tool(web, "web_search");
    within(30, "web_search", search.call(ToolContext::detached("run_1", "sess_1"), args)).await
}

#[tokio::test]
async fn searxng_is_asked_for_json_and_its_results_are_listed() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(
        200,
        json!({"query": "rust async", "results": [
            {"title": "Async Rust", "url": "https://rust-lang.github.io/async-book/", "content": "The  async\nbook.", "engine": "ddg"},
            {"title": "Tokio", "url": "https://tokio.rs/", "content": "A runtime."},
            {"title": "", "url": "https://example.com/3"},
        ]}),
    ));
    // The base URL may carry a path; the backend is not subject to the SSRF guard (127.0.0.1).
    let web = capability::web().search(SearXng::new(&format!("{}/searx", server.url())).unwrap());
    let out = search(&web, json!({"query": "rust async", "count": 2})).await.unwrap().content;
    assert_eq!(
        out,
        "1. Async Rust\n   https://rust-lang.github.io/async-book/\n   The async book.\n\n2. Tokio\n   https://tokio.rs/\n   A runtime."
    );
    let request = &server.requests()[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/searx/search?q=rust+async&format=json");
    assert_eq!(request.header("accept"), Some("application/json"));

    server.enqueue(Reply::json(200, json!({"results": []})));
    let out = search(&web, json!({"query": "nothing"})).await.unwrap().content;
    assert_eq!(out, "No results for `nothing`.");

    let err = search(&web, json!({"query": "  "})).await.unwrap_err();
    assert_eq!(err.kind(), ToolErrorKind::InvalidArguments);
}

#[tokio::test]
async fn brave_sends_its_key_in_the_header_and_never_shows_it() {
    const KEY: &str = "BSA-secret-key-123";
    let server = MockServer::start().await;
    server.enqueue(Reply::json(
        200,
        json!({"type": "search", "web": {"results": [
            {"title": "The <strong>Rust</strong> Book", "url": "https://doc.rust-lang.org/book/",
             "description": "Learn <strong>Rust</strong> &amp; more."},
        ]}}),
    ));
    let brave = Brave::new(KEY).unwrap().endpoint(&format!("{}/res/v1/web/search", server.url())).unwrap();
    assert!(!format!("{brave:?}").contains(KEY));
    let web = capability::web().search(brave);
    assert!(!format!("{web:?}").contains(KEY));
    let out = search(&web, json!({"query": "rust book", "count": 3})).await.unwrap().content;
    assert_eq!(out, "1. The **Rust** Book\n   https://doc.rust-lang.org/book/\n   Learn **Rust** & more.");
    let request = &server.requests()[0];
    assert_eq!(request.path, "/res/v1/web/search?q=rust+book&count=3");
    assert_eq!(request.header("x-subscription-token"), Some(KEY));
    assert_eq!(request.header("accept"), Some("application/json"));

    // Backend errors are clear and never carry the key, even when the backend echoes it.
    server.enqueue(Reply::json(500, json!({"error": format!("invalid token {KEY}")})));
    let err = search(&web, json!({"query": "x"})).await.unwrap_err();
    assert!(err.message().starts_with("the brave search backend answered HTTP 500: "), "{}", err.message());
    assert!(err.message().contains("[redacted]") && !err.message().contains(KEY), "{}", err.message());

    server.enqueue(Reply::bytes(200, "application/json", "{not json"));
    let err = search(&web, json!({"query": "x"})).await.unwrap_err();
    assert!(
        err.message().starts_with("the brave search backend sent an answer that could not be read"),
        "{}",
        err.message()
    );

    // A key that cannot be a header value is a clear error that does not print it.
    let bad = capability::web().search(Brave::new("bad\nkey").unwrap().endpoint(&server.url()).unwrap());
    let err = search(&bad, json!({"query": "x"})).await.unwrap_err();
    assert_eq!(
        err.message(),
        "the brave search backend is misconfigured: the key holds characters an HTTP header cannot carry"
    );
}

#[tokio::test]
async fn search_backend_failures_are_clear_tool_errors() {
    let server = MockServer::start().await;
    let web = capability::web().search(SearXng::new(&server.url()).unwrap());
    server.enqueue(Reply::html(500, "<h1>boom</h1>"));
    let err = search(&web, json!({"query": "x"})).await.unwrap_err();
    assert_eq!(err.message(), "the searxng search backend answered HTTP 500: <h1>boom</h1>");

    // SearXNG without the JSON format enabled answers 403.
    server.enqueue(Reply::html(403, ""));
    let err = search(&web, json!({"query": "x"})).await.unwrap_err();
    assert_eq!(err.message(), "the searxng search backend answered HTTP 403");

    server.enqueue(Reply::json(200, json!({"results": "not a list"})));
    let err = search(&web, json!({"query": "x"})).await.unwrap_err();
    assert!(
        err.message().starts_with("the searxng search backend sent an answer that could not be read"),
        "{}",
        err.message()
    );

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let web = capability::web().search(SearXng::new(&format!("http://{closed}")).unwrap());
    let err = search(&web, json!({"query": "x"})).await.unwrap_err();
    assert!(err.message().starts_with("the searxng search backend could not be reached"), "{}", err.message());

    // A backend slower than the capability's time cap.
    let server = MockServer::start().await;
    server.enqueue(Reply::silent());
    let web = capability::web()
        .timeout(Duration::from_millis(300))
        .search(SearXng::new(&server.url()).unwrap().timeout(Duration::from_secs(60)));
    let err = search(&web, json!({"query": "x"})).await.unwrap_err();
    assert_eq!(err.kind(), ToolErrorKind::Timeout);
    assert_eq!(err.message(), "the searxng search backend did not answer within 0.3 s");
}

/// A backend of our own, through the trait.
struct Fixed;

#[async_trait::async_trait]
impl SearchBackend for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }

    async fn search(&self, query: &str, limit: usize) -> Result<Vec<SearchResult>, SearchError> {
        Ok((0..limit.min(30))
            .map(|i| SearchResult {
                title: format!("{query} {i}"),
                url: format!("https://example.com/{i}"),
                snippet: String::new(),
            })
            .collect())
    }
}

#[tokio::test]
async fn a_custom_backend_gets_the_count_capped() {
    let web = capability::web().search(Fixed);
    let out = search(&web, json!({"query": "q", "count": 1})).await.unwrap().content;
    assert_eq!(out, "1. q 0\n   https://example.com/0");
    let out = search(&web, json!({"query": "q"})).await.unwrap().content;
    assert_eq!(out.matches("https://").count(), 5, "five results by default");
}

#[tokio::test]
async fn a_scripted_run_fetches_a_page_end_to_end() {
    let server = MockServer::start().await;
    server.enqueue(Reply::html(200, PAGE));
    let url = format!("{}/notes", server.url());
    let (model, shared) = scripted([
        ScriptedTurn::tool_call("web_fetch", json!({"url": url})),
        ScriptedTurn::tool_call("web_fetch", json!({"url": "http://169.254.169.254/latest/meta-data/"})),
        ScriptedTurn::text("Loom is fast."),
    ]);
    let agent = Agent::builder()
        .model(shared)
        .capability(
            capability::web()
                .allow_host("127.0.0.1")
                .allow_host("169.254.169.254")
                .allow_private()
                .deny_host("169.254.169.254"),
        )
        .build()
        .unwrap();
    let result = within(60, "run", agent.run("What do the release notes say?")).await.unwrap();
    assert_eq!(result.state, RunState::Completed);
    assert_eq!(result.output, "Loom is fast.");
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Completed);

    let results = tool_results(&result.events);
    assert_eq!(results.len(), 2);
    assert!(!results[0].is_error, "{:?}", results[0]);
    assert!(results[1].is_error);
    assert_eq!(results[1].error_kind, Some(ToolErrorKind::Denied));
    // The model read the page as text, then the refusal.
    let requests = model.requests();
    let fed = tool_messages(&requests[1].messages);
    assert_eq!(fed.len(), 1);
    assert!(fed[0].1.contains("# Release notes") && fed[0].1.contains("first item"), "{}", fed[0].1);
    let fed = tool_messages(&requests[2].messages);
    let refusal = &fed.last().unwrap().1;
    assert!(refusal.contains("the host `169.254.169.254` is on the deny-list"), "{refusal}");
    // The instructions the model got mention the capability.
    let system = format!("{:?}", requests[0].messages[0]);
    assert!(system.contains("web_fetch"), "{system}");
    assert_eq!(server.requests().len(), 1);
}
