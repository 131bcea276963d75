//! The shared HTTP model layer under faults, through the OpenAI Chat Completions wire format against
//! a mock server on 127.0.0.1: retries (which errors, how long between, when to stop), timeouts,
//! size limits, the concurrency limit, keep-alive, and keeping the key out of errors and logs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use loom_agent::event::DeltaKind;
use loom_agent::model::providers::{ApiKey, HttpConfig, OpenAIModel, RetryPolicy, WireFormat};
use loom_agent::model::{LanguageModel, ModelChunk, ModelRequest, ResponseAssembler};
use loom_agent::{Agent, Error, EventKind, Generation, Message, Model, ModelError, RunResult, RunState};
use loom_testkit::wire::openai as wire;
use loom_testkit::{MockServer, Part, Reply};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "sk-test-0123456789abcdef-SECRET";

/// Tiny delays: three attempts, 5 ms then 10 ms backoff (with jitter), generous timeouts.
fn config() -> HttpConfig {
    HttpConfig {
        connect_timeout: Duration::from_secs(2),
        first_byte_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        total_timeout: Duration::from_secs(20),
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
        },
        max_concurrency: None,
        max_response_bytes: 1024 * 1024,
    }
}

fn model_at(url: &str, config: HttpConfig) -> OpenAIModel {
    Model::openai("gpt-4o-mini").base_url(url).api_key(KEY).with_config(config)
}

fn model(server: &MockServer) -> OpenAIModel {
    model_at(&server.url(), config())
}

fn ok_stream(text: &str) -> Reply {
    Reply::sse(wire::text_stream(text))
}

fn error_reply(status: u16, kind: &str, message: &str) -> Reply {
    Reply::json(status, wire::error(kind, message))
}

/// One call through `LanguageModel::stream`, drained: the chunks, or the first error.
async fn call(model: &dyn LanguageModel) -> Result<Vec<ModelChunk>, ModelError> {
    let messages = [Message::user("hi")];
    let generation = Generation::default();
    let request = ModelRequest {
        messages: &messages,
        tools: &[],
        generation: &generation,
        output_schema: None,
        run_id: "run_t",
        user_id: None,
        turn: 1,
    };
    let mut stream = model.stream(&request).await?;
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk?);
    }
    Ok(chunks)
}

fn text_of(chunks: &[ModelChunk]) -> String {
    let mut a = ResponseAssembler::new();
    for c in chunks {
        a.push(c.clone());
    }
    a.finish(1).unwrap().text
}

/// A whole agent run on `model`: completed or not, its result.
async fn run(model: impl LanguageModel) -> RunResult {
    let agent = Agent::builder().model(model).build().unwrap();
    let fut = agent.run("hi");
    match tokio::time::timeout(Duration::from_secs(30), fut).await.expect("the run hung") {
        Ok(r) => r,
        Err(Error::Run(failure)) => failure.into_result(),
        Err(other) => panic!("unexpected error: {other}"),
    }
}

fn failed_with(result: &RunResult, kind: &str) -> String {
    assert_eq!(result.state, RunState::Failed, "{result:?}");
    let error = result.error.as_ref().expect("a failed run has an error");
    assert_eq!(error.model_error.as_deref(), Some(kind), "{error:?}");
    error.message.clone()
}

fn text_deltas(result: &RunResult) -> String {
    result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ModelDelta(d) if d.kind == DeltaKind::Text => Some(d.text.as_str()),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Retries: what is retried, how long in between, and what surfaces when attempts run out.

#[tokio::test]
async fn a_429_with_retry_after_seconds_waits_that_long_then_succeeds() {
    let server = MockServer::start().await;
    server.enqueue(error_reply(429, "rate_limit_exceeded", "slow down").header("Retry-After", "0.05"));
    server.enqueue(ok_stream("hello"));
    let cfg = HttpConfig { retry: RetryPolicy { max_delay: Duration::from_secs(1), ..config().retry }, ..config() };
    let m = model_at(&server.url(), cfg);
    let started = Instant::now();
    let chunks = call(&m).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(text_of(&chunks), "hello");
    assert_eq!(server.requests().len(), 2);
    // The backoff alone would be at most 5 ms: only the header explains 50 ms.
    assert!(elapsed >= Duration::from_millis(50), "retried after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[tokio::test]
async fn a_429_with_retry_after_ms_waits_that_long_then_succeeds() {
    let server = MockServer::start().await;
    server.enqueue(error_reply(429, "rate_limit_exceeded", "slow down").header("retry-after-ms", "60"));
    server.enqueue(ok_stream("hello"));
    let cfg = HttpConfig { retry: RetryPolicy { max_delay: Duration::from_secs(1), ..config().retry }, ..config() };
    let m = model_at(&server.url(), cfg);
    let started = Instant::now();
    assert_eq!(text_of(&call(&m).await.unwrap()), "hello");
    let elapsed = started.elapsed();
    assert_eq!(server.requests().len(), 2);
    assert!(elapsed >= Duration::from_millis(60), "retried after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[tokio::test]
async fn retry_after_is_capped_by_max_delay_and_absurd_values_do_not_panic() {
    // 10^30 seconds, infinity and garbage: capped at max_delay (50 ms) or ignored, never a panic.
    for (name, value) in
        [("retry-after", "1e30"), ("retry-after-ms", "inf"), ("retry-after", "soon"), ("retry-after-ms", "-5")]
    {
        let server = MockServer::start().await;
        server.enqueue(error_reply(429, "rate_limit_exceeded", "slow down").header(name, value));
        server.enqueue(ok_stream("ok"));
        let started = Instant::now();
        assert_eq!(text_of(&call(&model(&server)).await.unwrap()), "ok", "{name}: {value}");
        assert!(started.elapsed() < Duration::from_secs(3), "{name}: {value}");
        assert_eq!(server.requests().len(), 2);
    }
}

#[tokio::test]
async fn a_503_with_retry_after_is_honoured_too() {
    let server = MockServer::start().await;
    server.enqueue(error_reply(503, "server_error", "try later").header("Retry-After", "0.08"));
    server.enqueue(ok_stream("back"));
    let cfg = HttpConfig { retry: RetryPolicy { max_delay: Duration::from_secs(1), ..config().retry }, ..config() };
    let started = Instant::now();
    assert_eq!(text_of(&call(&model_at(&server.url(), cfg)).await.unwrap()), "back");
    assert!(started.elapsed() >= Duration::from_millis(80), "{:?}", started.elapsed());
}

#[tokio::test]
async fn transient_statuses_are_retried_and_succeed_on_the_last_attempt() {
    let overloaded = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    let cases: Vec<(&str, Reply)> = vec![
        ("500", error_reply(500, "server_error", "boom")),
        ("502", Reply::bytes(502, "text/html", "<html>bad gateway</html>")),
        ("503", error_reply(503, "server_error", "unavailable")),
        ("408", error_reply(408, "timeout", "request timeout")),
        ("409", error_reply(409, "conflict", "try again")),
        ("529 overloaded", Reply::json(529, overloaded.clone())),
        ("400 overloaded", Reply::json(400, overloaded)),
    ];
    for (name, reply) in cases {
        let server = MockServer::start().await;
        server.enqueue(reply.clone());
        server.enqueue(reply);
        server.enqueue(ok_stream("third time lucky"));
        let chunks = call(&model(&server)).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(text_of(&chunks), "third time lucky", "{name}");
        assert_eq!(server.requests().len(), 3, "{name}");
    }
}

#[tokio::test]
async fn exhausted_retries_surface_the_last_error_as_the_runs_error() {
    let server = MockServer::start().await;
    server.enqueue(error_reply(500, "server_error", "first"));
    server.enqueue(error_reply(502, "server_error", "second"));
    server.enqueue(error_reply(503, "server_error", "the last one"));
    server.always(ok_stream("never reached"));
    let result = run(model(&server)).await;
    let message = failed_with(&result, "transient");
    assert!(message.contains("the last one") && message.contains("503"), "{message}");
    assert_eq!(server.requests().len(), 3);

    let server = MockServer::start().await;
    server.always(error_reply(429, "rate_limit_exceeded", "quota").header("retry-after-ms", "1"));
    let result = run(model(&server)).await;
    let message = failed_with(&result, "rate_limited");
    assert!(message.contains("quota"), "{message}");
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let cases = [
        (400, error_reply(400, "invalid_request_error", "bad field"), "invalid_request"),
        (401, error_reply(401, "invalid_api_key", "wrong key"), "authentication"),
        (403, error_reply(403, "permission_denied", "not allowed"), "authentication"),
        (404, error_reply(404, "not_found", "no such model"), "invalid_request"),
        (
            400,
            Reply::json(
                400,
                json!({"error": {"message": "flagged", "type": "invalid_request_error", "code": "content_filter"}}),
            ),
            "content_filter",
        ),
        (
            400,
            error_reply(400, "invalid_request_error", "This model's maximum context length is 128000 tokens"),
            "context_length_exceeded",
        ),
    ];
    for (status, reply, kind) in cases {
        let server = MockServer::start().await;
        server.enqueue(reply.clone());
        server.always(ok_stream("must not be asked"));
        let err = call(&model(&server)).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{status}: {err}");
        assert_eq!(server.requests().len(), 1, "{status} must not be retried");
        // Through a run: the run's error carries the kind.
        server.enqueue(reply);
        let result = run(model(&server)).await;
        failed_with(&result, kind);
        assert_eq!(server.requests().len(), 2, "{status} must not be retried");
    }
}

#[tokio::test]
async fn a_refused_connection_is_transient_retried_and_then_fails_clearly() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let cfg = HttpConfig {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(200),
        },
        ..config()
    };
    let m = model_at(&format!("http://127.0.0.1:{port}"), cfg);
    let started = Instant::now();
    let err = call(&m).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, ModelError::Transient { status: None, .. }), "{err:?}");
    let text = err.to_string().to_lowercase();
    assert!(text.contains("connect") || text.contains("refused"), "{text}");
    // Two backoffs of at least 20 ms and 40 ms (jitter keeps at least half): three attempts were made.
    assert!(elapsed >= Duration::from_millis(60), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let result = run(m).await;
    failed_with(&result, "transient");
}

#[tokio::test]
async fn a_server_that_hangs_up_without_answering_is_retried() {
    let server = MockServer::start().await;
    server.enqueue(Reply::hang_up());
    server.enqueue(Reply::hang_up());
    server.enqueue(ok_stream("finally"));
    assert_eq!(text_of(&call(&model(&server)).await.unwrap()), "finally");
    assert_eq!(server.requests().len(), 3);

    let server = MockServer::start().await;
    server.always(Reply::hang_up());
    let err = call(&model(&server)).await.unwrap_err();
    assert_eq!(err.kind(), "transient", "{err}");
    assert_eq!(server.requests().len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Streams: retried only before the first chunk reached the caller.

fn long_stream() -> Vec<String> {
    vec![
        wire::text("Hel"),
        wire::text("lo, "),
        wire::text("world"),
        wire::finish("stop"),
        wire::usage(5, 0, 3),
        wire::done(),
    ]
}

#[tokio::test]
async fn a_stream_dropped_after_its_first_chunk_is_not_retried() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(long_stream()).drop_after_chunks(1));
    server.always(ok_stream("a retry would say this"));
    let result = run(model(&server)).await;
    let message = failed_with(&result, "transient");
    assert_eq!(server.requests().len(), 1, "a stream that reached the caller must not be retried");
    assert_eq!(text_deltas(&result), "Hel", "the text already streamed stays in the events: {message}");

    // The same through the model interface: the chunk arrives, then the error.
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(long_stream()).drop_after_chunks(2));
    server.always(ok_stream("a retry would say this"));
    let m = model(&server);
    let messages = [Message::user("hi")];
    let generation = Generation::default();
    let request = ModelRequest {
        messages: &messages,
        tools: &[],
        generation: &generation,
        output_schema: None,
        run_id: "r",
        user_id: None,
        turn: 1,
    };
    let mut stream = m.stream(&request).await.unwrap();
    let mut got = Vec::new();
    let mut error = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(c) => got.push(c),
            Err(e) => error = Some(e),
        }
    }
    assert_eq!(got, [ModelChunk::Text("Hel".into()), ModelChunk::Text("lo, ".into())]);
    assert_eq!(error.map(|e| e.kind()), Some("transient"));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_stream_dropped_before_any_chunk_is_retried() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(long_stream()).drop_after_chunks(0));
    server.enqueue(Reply::sse(long_stream()));
    let result = run(model(&server)).await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "Hello, world");
    assert_eq!(text_deltas(&result), "Hello, world");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn chunks_decoded_before_a_mid_stream_error_reach_the_caller_first() {
    // One network chunk carries a text delta and then a stream error event.
    let server = MockServer::start().await;
    let error = wire::error("server_error", "the model crashed");
    server.enqueue(Reply::sse([
        wire::text("A"),
        format!("{}data: {}\n\n", wire::text("B"), error),
        wire::finish("stop"),
        wire::done(),
    ]));
    let result = run(model(&server)).await;
    let message = failed_with(&result, "transient");
    assert!(message.contains("the model crashed"), "{message}");
    assert_eq!(text_deltas(&result), "AB");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn malformed_sse_is_a_protocol_error_and_not_retried() {
    let invalid_json = Reply::sse(["data: {\"choices\": [oops\n\n".to_string()]);
    let mut invalid_utf8 = Reply::sse(Vec::<String>::new());
    invalid_utf8.parts =
        vec![Part::Bytes(b"data: {\"choices\":[{\"delta\":{\"content\":\"\xff\xfe\"}}]}\n\n".to_vec())];
    // Valid first, malformed second: the error after the first chunk is not retried either.
    let late = Reply::sse([wire::text("ok so far"), "data: {nope}\n\n".to_string()]);
    for (name, reply) in [("invalid JSON", invalid_json), ("invalid UTF-8", invalid_utf8), ("late invalid JSON", late)]
    {
        let server = MockServer::start().await;
        server.enqueue(reply);
        server.always(ok_stream("must not be asked"));
        let result = run(model(&server)).await;
        let message = failed_with(&result, "protocol");
        assert_eq!(server.requests().len(), 1, "{name}: {message}");
    }
}

// ---------------------------------------------------------------------------------------------
// Timeouts.

#[tokio::test]
async fn a_first_byte_slower_than_first_byte_timeout_is_retried() {
    let server = MockServer::start().await;
    server.enqueue(ok_stream("too late").delay_first_byte(Duration::from_millis(1500)));
    server.enqueue(ok_stream("on time"));
    let cfg = HttpConfig { first_byte_timeout: Duration::from_millis(150), ..config() };
    let started = Instant::now();
    let chunks = call(&model_at(&server.url(), cfg.clone())).await.unwrap();
    assert_eq!(text_of(&chunks), "on time");
    assert_eq!(server.requests().len(), 2);
    assert!(started.elapsed() < Duration::from_millis(1400), "{:?}", started.elapsed());

    // Every attempt too slow: the timeout is the error, after max_attempts requests.
    let server = MockServer::start().await;
    server.always(ok_stream("too late").delay_first_byte(Duration::from_secs(3)));
    let err = call(&model_at(&server.url(), cfg)).await.unwrap_err();
    assert_eq!(err.kind(), "transient");
    assert!(err.to_string().contains("150 ms"), "{err}");
    server.wait_for_requests(3).await;
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn keep_alive_comments_before_the_first_chunk_are_bounded_by_the_total_timeout() {
    // Headers at once, then only comments every 50 ms: the server is alive (each wait is within
    // idle_timeout), the caller has nothing yet. The total timeout ends it, without a retry.
    let mut pings: Vec<String> = (0..40).map(|_| ": ping\n\n".to_string()).collect();
    pings.extend(wire::text_stream("late"));
    let server = MockServer::start().await;
    server.always(Reply::sse(pings.clone()).pause_between_chunks(Duration::from_millis(50)));
    let cfg = HttpConfig {
        first_byte_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        total_timeout: Duration::from_millis(500),
        ..config()
    };
    let started = Instant::now();
    let err = call(&model_at(&server.url(), cfg.clone())).await.unwrap_err();
    assert_eq!(err.kind(), "transient", "{err}");
    assert!(err.to_string().contains("total timeout of 500 ms"), "{err}");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    assert_eq!(server.requests().len(), 1);

    // With time enough, the same pings only keep the call alive.
    let server = MockServer::start().await;
    server.always(Reply::sse(pings).pause_between_chunks(Duration::from_millis(10)));
    let cfg = HttpConfig { total_timeout: Duration::from_secs(10), ..cfg };
    assert_eq!(text_of(&call(&model_at(&server.url(), cfg)).await.unwrap()), "late");
}

#[tokio::test]
async fn a_stall_between_chunks_beyond_idle_timeout_fails_the_stream() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(long_stream()).pause_between_chunks(Duration::from_millis(1500)));
    server.always(ok_stream("must not be asked"));
    let cfg =
        HttpConfig { first_byte_timeout: Duration::from_secs(5), idle_timeout: Duration::from_millis(150), ..config() };
    let started = Instant::now();
    let result = run(model_at(&server.url(), cfg)).await;
    let message = failed_with(&result, "transient");
    assert!(message.contains("stalled") && message.contains("150 ms"), "{message}");
    assert!(started.elapsed() < Duration::from_millis(1400), "{:?}", started.elapsed());
    assert_eq!(text_deltas(&result), "Hel");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn total_timeout_bounds_a_stream_that_keeps_trickling() {
    // Each chunk comes within idle_timeout, but the whole answer would take 4 s.
    let chunks: Vec<String> = (0..40).map(|i| wire::text(&format!("{i} "))).collect();
    let server = MockServer::start().await;
    server.always(Reply::sse(chunks).pause_between_chunks(Duration::from_millis(100)));
    let cfg = HttpConfig {
        first_byte_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_millis(500),
        total_timeout: Duration::from_millis(400),
        ..config()
    };
    let started = Instant::now();
    let err = call(&model_at(&server.url(), cfg)).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), "transient", "{err}");
    assert!(err.to_string().contains("total timeout"), "{err}");
    assert!(elapsed >= Duration::from_millis(350) && elapsed < Duration::from_millis(1500), "{elapsed:?}");
}

#[tokio::test]
async fn total_timeout_bounds_retries_and_slow_servers() {
    let server = MockServer::start().await;
    server.always(ok_stream("late").delay_first_byte(Duration::from_secs(5)));
    let cfg = HttpConfig {
        first_byte_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_millis(300),
        retry: RetryPolicy { max_attempts: 10, ..config().retry },
        ..config()
    };
    let started = Instant::now();
    let err = call(&model_at(&server.url(), cfg)).await.unwrap_err();
    assert_eq!(err.kind(), "transient", "{err}");
    assert!(err.to_string().contains("total timeout"), "{err}");
    assert!(started.elapsed() < Duration::from_millis(1200), "{:?}", started.elapsed());
    assert_eq!(server.requests().len(), 1, "no retry once the total time is spent");
}

/// A loopback address whose accept queue is full: the kernel drops new SYNs, so a connect hangs.
async fn unanswered_address() -> (std::net::SocketAddr, Vec<tokio::net::TcpStream>, tokio::net::TcpListener) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(100), tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            _ => break,
        }
    }
    (addr, held, listener)
}

#[tokio::test]
async fn connect_timeout_comes_from_the_models_config() {
    // Two models, two connect timeouts: each must use its own (the client pool is shared).
    let server = MockServer::start().await;
    server.always(ok_stream("ok"));
    let a = model_at(&server.url(), HttpConfig { connect_timeout: Duration::from_secs(7), ..config() });
    assert_eq!(text_of(&call(&a).await.unwrap()), "ok");
    let (addr, _held, _listener) = unanswered_address().await;
    let b = model_at(
        &format!("http://{addr}"),
        HttpConfig {
            connect_timeout: Duration::from_millis(200),
            retry: RetryPolicy::none(),
            first_byte_timeout: Duration::from_secs(10),
            ..config()
        },
    );
    let started = Instant::now();
    let err = call(&b).await.unwrap_err();
    assert_eq!(err.kind(), "transient", "{err}");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}: {err}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_millis(150), "{:?}: {err}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Size limits.

fn small_limit() -> HttpConfig {
    HttpConfig { max_response_bytes: 16 * 1024, ..config() }
}

#[tokio::test]
async fn an_oversized_body_is_a_protocol_error() {
    let big = "x".repeat(64 * 1024);
    // Non-streamed, with a content length.
    let server = MockServer::start().await;
    server.always(Reply::json(200, wire::completion(Some(&big), &[], 1, 1)));
    let m = model_at(&server.url(), small_limit()).streaming(false);
    let err = call(&m).await.unwrap_err();
    assert!(matches!(err, ModelError::Protocol(_)), "{err:?}");
    assert!(err.to_string().contains("exceeded 16384 bytes"), "{err}");
    assert_eq!(server.requests().len(), 1);

    // Streamed: many small valid events add up past the limit.
    let server = MockServer::start().await;
    let mut chunks: Vec<String> = (0..200).map(|_| wire::text(&"y".repeat(200))).collect();
    chunks.extend([wire::finish("stop"), wire::done()]);
    server.always(Reply::sse(chunks));
    let result = run(model_at(&server.url(), small_limit())).await;
    let message = failed_with(&result, "protocol");
    assert!(message.contains("exceeded 16384 bytes"), "{message}");
    assert_eq!(server.requests().len(), 1);

    // Streamed: one event that never ends.
    let server = MockServer::start().await;
    let parts: Vec<String> = std::iter::once("data: {\"choices\":[{\"delta\":{\"content\":\"".to_string())
        .chain((0..100).map(|_| "z".repeat(1000)))
        .collect();
    server.always(Reply::sse(parts));
    let err = call(&model_at(&server.url(), small_limit())).await.unwrap_err();
    assert!(matches!(err, ModelError::Protocol(_)), "{err:?}");
    assert!(err.to_string().contains("16384 bytes"), "{err}");
}

/// A raw HTTP server that answers one request with a chunked body that never ends, and counts
/// what it managed to write before the client went away.
async fn endless_server(content_type: &'static str, chunk: Vec<u8>) -> (String, tokio::task::JoinHandle<usize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = Vec::new();
        // Read the head and the (small) body: enough that the client is waiting for an answer.
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
        let head = format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n");
        socket.write_all(head.as_bytes()).await.unwrap();
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(b"\r\n");
        let mut written = 0usize;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match socket.write_all(&framed).await {
                Ok(()) => written += framed.len(),
                Err(_) => break,
            }
        }
        written
    });
    (url, task)
}

#[tokio::test]
async fn an_endless_body_is_cut_at_the_limit_without_buffering_it() {
    let limit = 256 * 1024;
    let cfg = HttpConfig { max_response_bytes: limit, retry: RetryPolicy::none(), ..config() };
    let event = wire::text(&"w".repeat(1000)).into_bytes();
    let cases: [(&str, &'static str, Vec<u8>, bool); 3] = [
        ("endless valid events", "text/event-stream", event, true),
        (
            "one endless event",
            "text/event-stream",
            b"data: ".iter().chain([b'v'; 4096].iter()).copied().collect(),
            true,
        ),
        ("endless JSON body", "application/json", vec![b' '; 4096], false),
    ];
    for (name, content_type, chunk, streaming) in cases {
        let (url, server) = endless_server(content_type, chunk).await;
        let m = model_at(&url, cfg.clone()).streaming(streaming);
        let started = Instant::now();
        let err = call(&m).await.unwrap_err();
        assert!(matches!(err, ModelError::Protocol(_)), "{name}: {err:?}");
        assert!(err.to_string().contains("262144 bytes"), "{name}: {err}");
        assert!(started.elapsed() < Duration::from_secs(10), "{name}");
        // The server could write the limit plus what the kernel's socket buffers hold, not more.
        let written = tokio::time::timeout(Duration::from_secs(25), server).await.unwrap().unwrap();
        assert!(written < 32 * 1024 * 1024, "{name}: the server wrote {written} bytes");
    }
}

#[tokio::test]
async fn a_declared_oversized_length_fails_before_reading_the_body() {
    let server = MockServer::start().await;
    let big = "q".repeat(64 * 1024);
    server.always(Reply::json(200, wire::completion(Some(&big), &[], 1, 1)).delay_first_byte(Duration::ZERO));
    let m = model_at(&server.url(), small_limit()).streaming(false);
    let err = call(&m).await.unwrap_err();
    assert!(err.to_string().contains("exceeded 16384 bytes"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Concurrency limit and keep-alive.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_one_serializes_calls() {
    let server = MockServer::start().await;
    // Each answer streams in pieces over ~200 ms: long enough to be seen overlapping if it could.
    server.always(
        Reply::sse(long_stream())
            .delay_first_byte(Duration::from_millis(100))
            .pause_between_chunks(Duration::from_millis(20)),
    );
    let m = Arc::new(model_at(&server.url(), HttpConfig { max_concurrency: Some(1), ..config() }));
    let finished: Arc<[AtomicBool; 3]> = Arc::new(Default::default());
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (m, finished) = (m.clone(), finished.clone());
        tasks.push(tokio::spawn(async move {
            let messages = [Message::user("hi")];
            let generation = Generation::default();
            let request = ModelRequest {
                messages: &messages,
                tools: &[],
                generation: &generation,
                output_schema: None,
                run_id: "r",
                user_id: None,
                turn: 1,
            };
            let mut stream = m.stream(&request).await.unwrap();
            let mut text = String::new();
            while let Some(c) = stream.next().await {
                match c.unwrap() {
                    ModelChunk::Text(t) => text.push_str(&t),
                    // The answer is complete ([DONE] was read): marked before the stream can end
                    // and give its place in the limit back.
                    ModelChunk::Finish(_) => finished[i].store(true, Ordering::SeqCst),
                    _ => {}
                }
            }
            drop(stream);
            text
        }));
    }
    let finished_count = || finished.iter().filter(|f| f.load(Ordering::SeqCst)).count();
    // Server-side evidence: whenever request n arrives, answers 1..n-1 were already fully read.
    for n in 1..=3 {
        server.wait_for_requests(n).await;
        let done = finished_count();
        assert!(done >= n - 1, "request {n} arrived while only {done} answers were complete");
    }
    // And at every moment until the end: requests received <= answers complete + 1. (Requests are
    // read first: answers only grow, so a later count can only make the check easier to pass.)
    while tasks.iter().any(|t| !t.is_finished()) {
        let received = server.requests().len();
        let done = finished_count();
        assert!(received <= done + 1, "{received} requests while {done} answers were complete");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "Hello, world");
    }
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn without_a_limit_calls_overlap() {
    // The control for the test above: the same calls, no limit, all three requests in flight at once.
    let server = MockServer::start().await;
    server.always(Reply::sse(long_stream()).delay_first_byte(Duration::from_millis(300)));
    let m = Arc::new(model(&server));
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move { call(&*m).await.map(|c| text_of(&c)) })
        })
        .collect();
    server.wait_for_requests(3).await;
    assert!(tasks.iter().all(|t| !t.is_finished()), "all three requests arrived before any answer");
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "Hello, world");
    }
}

#[tokio::test]
async fn sequential_calls_reuse_one_connection() {
    let server = MockServer::start().await;
    server.always(Reply::sse(long_stream()));
    let m = model(&server);
    for _ in 0..10 {
        assert_eq!(text_of(&call(&m).await.unwrap()), "Hello, world");
    }
    assert_eq!(server.requests().len(), 10);
    assert_eq!(server.connections(), 1, "keep-alive: one TCP connection for every streamed call");

    let server = MockServer::start().await;
    server.always(Reply::json(200, wire::completion(Some("plain"), &[], 3, 1)));
    let m = model(&server).streaming(false);
    for _ in 0..10 {
        assert_eq!(text_of(&call(&m).await.unwrap()), "plain");
    }
    assert_eq!(server.connections(), 1, "keep-alive: one TCP connection for every plain call");

    // Error answers are read to their end too, so the connection survives them.
    let server = MockServer::start().await;
    for _ in 0..5 {
        server.enqueue(error_reply(400, "invalid_request_error", "no"));
        assert_eq!(call(&model(&server)).await.unwrap_err().kind(), "invalid_request");
    }
    assert_eq!(server.connections(), 1, "keep-alive across error answers");
}

// ---------------------------------------------------------------------------------------------
// Key hygiene.

#[tokio::test]
async fn the_key_never_shows_in_errors_or_debug_output() {
    let server = MockServer::start().await;
    server.always(error_reply(401, "invalid_api_key", &format!("Incorrect API key provided: {KEY}. Check it.")));
    let m = model(&server);
    let err = call(&m).await.unwrap_err();
    assert_eq!(err.kind(), "authentication");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(KEY) && !shown.contains("SECRET"), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
    // The key was sent, though.
    assert_eq!(server.requests()[0].header("authorization"), Some(format!("Bearer {KEY}").as_str()));

    // Through a run: the run's error and events.
    let result = run(model(&server)).await;
    let message = failed_with(&result, "authentication");
    assert!(!message.contains(KEY), "{message}");
    let events = serde_json::to_string(&*result.events).unwrap();
    assert!(!events.contains(KEY), "{events}");

    let debug = format!("{m:?}");
    assert!(!debug.contains(KEY) && !debug.contains("SECRET"), "{debug}");
    assert!(format!("{:?}", ApiKey::new(KEY)).contains("redacted"));

    let messages = [Message::user("hi")];
    let generation = Generation::default();
    let request = ModelRequest {
        messages: &messages,
        tools: &[],
        generation: &generation,
        output_schema: None,
        run_id: "r",
        user_id: None,
        turn: 1,
    };
    let http = m.wire().build(&request, true, Some(&ApiKey::new(KEY))).unwrap();
    let debug = format!("{http:?}");
    assert!(!debug.contains(KEY) && !debug.contains("SECRET"), "{debug}");
    assert!(debug.to_lowercase().contains("authorization"), "{debug}");
}

#[tokio::test]
async fn a_key_echoed_in_a_long_error_body_is_redacted_even_where_the_message_is_cut() {
    // The message is cut at 500 characters; the key straddles the cut.
    let server = MockServer::start().await;
    let message = format!("{}{KEY}", "e".repeat(490));
    server.always(error_reply(401, "invalid_api_key", &message));
    let err = call(&model(&server)).await.unwrap_err();
    let shown = err.to_string();
    assert!(!shown.contains(&KEY[..10]), "a prefix of the key leaked: {shown}");
}

#[tokio::test]
async fn unbounded_timeouts_are_accepted() {
    // Duration::MAX as "no limit" must not overflow an Instant anywhere.
    let server = MockServer::start().await;
    server.enqueue(error_reply(503, "server_error", "once"));
    server.always(Reply::sse(long_stream()));
    let cfg = HttpConfig {
        connect_timeout: Duration::MAX,
        first_byte_timeout: Duration::MAX,
        idle_timeout: Duration::MAX,
        total_timeout: Duration::MAX,
        ..config()
    };
    assert_eq!(text_of(&call(&model_at(&server.url(), cfg.clone())).await.unwrap()), "Hello, world");
    assert_eq!(server.requests().len(), 2);
    let server = MockServer::start().await;
    server.always(Reply::json(200, wire::completion(Some("whole"), &[], 1, 1)));
    assert_eq!(text_of(&call(&model_at(&server.url(), cfg).streaming(false)).await.unwrap()), "whole");
}

// ---------------------------------------------------------------------------------------------
// Configuration and unexpected answers: a malformed base URL, a base URL with a query, an HTML
// page where an event stream was expected, and retries announced through `tracing`.

#[tokio::test]
async fn a_malformed_base_url_is_a_configuration_error_and_never_retried() {
    for bad in ["localhost:8080/v1", "api.openai.com/v1", "ftp://example.com/v1", "not a url"] {
        let m = model_at(bad, config());
        let err = m.check().unwrap_err();
        assert!(matches!(err, ModelError::Configuration(_)), "{bad}: {err:?}");
        // A call fails the same way, at once: nothing was sent, so nothing is retried.
        let started = Instant::now();
        let err = call(&m).await.unwrap_err();
        assert_eq!(err.kind(), "configuration", "{bad}: {err:?}");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("invalid base URL") && err.to_string().contains(bad), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        // As a model string's base URL, it is a configuration error before any run.
        let parsed = Model::parse_with("openai:gpt-4o-mini", Some(bad));
        assert!(matches!(parsed, Err(Error::Config(ref m)) if m.contains("invalid base URL")), "{bad}: {parsed:?}");
    }
    let result = run(model_at("localhost:8080/v1", config())).await;
    let message = failed_with(&result, "configuration");
    assert!(message.contains("localhost:8080/v1"), "{message}");
}

#[tokio::test]
async fn a_base_url_with_a_query_keeps_it_and_gets_the_endpoint_path() {
    let server = MockServer::start().await;
    server.enqueue(ok_stream("hello"));
    let m = model_at(&format!("{}/openai/v1?api-version=2024-10-21", server.url()), config());
    m.check().unwrap();
    assert_eq!(text_of(&call(&m).await.unwrap()), "hello");
    assert_eq!(server.requests()[0].path, "/openai/v1/chat/completions?api-version=2024-10-21");

    // Gemini adds its own query parameter to the base's.
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(loom_testkit::wire::gemini::text_stream("hi", 3, 1)));
    let gemini = Model::gemini("gemini-2.5-flash")
        .base_url(format!("{}/proxy/?tenant=a", server.url()))
        .api_key(KEY)
        .with_config(config());
    call(&gemini).await.unwrap();
    assert_eq!(
        server.requests()[0].path,
        "/proxy/v1beta/models/gemini-2.5-flash:streamGenerateContent?tenant=a&alt=sse"
    );

    // Anthropic: the base's path and query both survive.
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(loom_testkit::wire::anthropic::text_stream("hi", 3, 1)));
    let claude = Model::anthropic("claude-sonnet-4-5")
        .base_url(format!("{}/gw?k=v", server.url()))
        .api_key(KEY)
        .with_config(config());
    call(&claude).await.unwrap();
    assert_eq!(server.requests()[0].path, "/gw/v1/messages?k=v");
}

#[tokio::test]
async fn an_html_page_answering_a_streamed_call_names_its_content_type_and_is_not_retried() {
    let server = MockServer::start().await;
    let page = format!("<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>token {KEY}</body></html>");
    server.always(Reply::html(200, &page));
    let err = call(&model(&server)).await.unwrap_err();
    assert!(matches!(err, ModelError::Protocol(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("content type `text/html; charset=utf-8`"), "{message}");
    assert!(message.contains("not `text/event-stream`"), "{message}");
    assert!(message.contains("<!DOCTYPE html> <html><head><title>Sign in</title>"), "{message}");
    assert!(!message.contains("finish_reason"), "{message}");
    assert!(!message.contains(KEY), "the key is scrubbed: {message}");
    assert_eq!(server.requests().len(), 1, "not retried");
    // Through a run: the run's error says the same.
    let result = run(model(&server)).await;
    assert!(failed_with(&result, "protocol").contains("text/html"));
}

/// One `tracing` event: the thread it was emitted on, level, target and fields (the message
/// under `message`).
type CapturedEvent = (std::thread::ThreadId, tracing::Level, String, std::collections::BTreeMap<String, String>);

/// The process's `tracing` events. Installed as the global subscriber (once), so no callsite's
/// cached interest can hide an event; each test reads the events of its own thread.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<CapturedEvent>>>);

impl Captured {
    fn global() -> &'static Captured {
        static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
        CAPTURED.get_or_init(|| {
            let captured = Captured::default();
            tracing::subscriber::set_global_default(captured.clone()).unwrap();
            captured
        })
    }

    /// This thread's events from loom-providers.
    fn mine(&self) -> Vec<(tracing::Level, std::collections::BTreeMap<String, String>)> {
        let me = std::thread::current().id();
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|(thread, _, target, _)| *thread == me && target.starts_with("loom_providers"))
            .map(|(_, level, _, fields)| (*level, fields.clone()))
            .collect()
    }
}

impl tracing::Subscriber for Captured {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(std::collections::BTreeMap<String, String>);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.insert(field.name().to_string(), format!("{value:?}"));
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.insert(field.name().to_string(), value.to_string());
            }
        }
        let mut fields = Fields(Default::default());
        event.record(&mut fields);
        let meta = event.metadata();
        let thread = std::thread::current().id();
        self.0.lock().unwrap().push((thread, *meta.level(), meta.target().to_string(), fields.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn a_first_byte_that_never_comes_times_out_and_each_retry_is_announced() {
    let captured = Captured::global();
    let server = MockServer::start().await;
    server.always(Reply::silent());
    let cfg = HttpConfig {
        first_byte_timeout: Duration::from_millis(100),
        retry: RetryPolicy { max_attempts: 2, ..config().retry },
        ..config()
    };
    let started = Instant::now();
    let err = call(&model_at(&server.url(), cfg)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(err.kind(), "transient");
    assert!(err.to_string().contains("no response within 100 ms"), "{err}");
    assert_eq!(server.requests().len(), 2);

    let events = captured.mine();
    let warns: Vec<_> = events.iter().filter(|(level, _)| *level == tracing::Level::WARN).collect();
    assert_eq!(warns.len(), 2, "{events:?}");
    let retry = &warns[0].1;
    assert_eq!(retry["provider"], "openai");
    assert_eq!(retry["model"], "gpt-4o-mini");
    assert_eq!(retry["attempt"], "1");
    assert_eq!(retry["max_attempts"], "2");
    let delay: u64 = retry["delay_ms"].parse().unwrap();
    assert!(delay <= 50, "{delay}");
    assert!(retry["reason"].contains("no response within 100 ms"), "{retry:?}");
    assert!(retry["message"].contains(&format!("retrying in {delay} ms")), "{retry:?}");
    let gave_up = &warns[1].1;
    assert_eq!(gave_up["attempt"], "2");
    assert!(gave_up["message"].contains("no attempts left"), "{gave_up:?}");
    assert!(events.iter().any(|(level, f)| *level == tracing::Level::INFO && f["attempt"] == "2"), "{events:?}");
}

#[test]
fn the_default_timeouts_give_up_on_a_silent_server_within_minutes() {
    let d = HttpConfig::default();
    assert_eq!(d.first_byte_timeout, Duration::from_secs(60));
    assert_eq!(d.connect_timeout, Duration::from_secs(10));
    assert_eq!(d.total_timeout, Duration::from_secs(900));
    let silent = d.first_byte_timeout * d.retry.max_attempts + d.retry.max_delay * (d.retry.max_attempts - 1);
    assert!(silent <= Duration::from_secs(240), "{silent:?}");
}
