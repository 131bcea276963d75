//! `HttpEmbedder` against a mock OpenAI-compatible server on 127.0.0.1: the request it sends, the
//! answers it accepts, and the faults it reports (500 retried then given up, 401, malformed JSON,
//! wrong dimensions, wrong counts), with the key kept out of `Debug` output and error messages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use loom_core::embed::Embedder;
use loom_core::error::{Error, ModelError};
use loom_providers::embeddings::HttpEmbedder;
use loom_providers::{HttpConfig, RetryPolicy};
use loom_testkit::{MockServer, Reply};
use serde_json::{Value, json};

const KEY: &str = "sk-test-0123456789abcdef";

fn fast() -> HttpConfig {
    HttpConfig {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        },
        first_byte_timeout: Duration::from_secs(5),
        ..HttpConfig::default()
    }
}

fn texts(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// An OpenAI `/v1/embeddings` answer: vectors in the order given, with their indices.
fn answer(vectors: &[Vec<f32>]) -> Value {
    json!({
        "object": "list",
        "data": vectors.iter().enumerate().map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v})).collect::<Vec<_>>(),
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8}
    })
}

fn embedder(server: &MockServer) -> HttpEmbedder {
    HttpEmbedder::compatible(format!("{}/v1", server.url()), "nomic-embed-text").api_key(KEY).with_config(fast())
}

#[tokio::test]
async fn sends_the_openai_wire_format_and_returns_unit_vectors_in_order() {
    let server = MockServer::start().await;
    // Out of order on the wire: the index decides.
    server.enqueue(Reply::json(
        200,
        json!({"object": "list", "data": [
            {"object": "embedding", "index": 1, "embedding": [0.0, 3.0, 4.0]},
            {"object": "embedding", "index": 0, "embedding": [2.0, 0.0, 0.0]}
        ], "model": "nomic-embed-text", "usage": {"prompt_tokens": 4, "total_tokens": 4}}),
    ));
    let e = embedder(&server);
    let v = e.embed(&texts(&["first text", "second text"])).await.unwrap();
    assert_eq!(v, vec![vec![1.0, 0.0, 0.0], vec![0.0, 0.6, 0.8]]);
    assert_eq!(e.dimensions(), 3, "learned from the first answer");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/embeddings");
    assert_eq!(r.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/json")));
    assert_eq!(
        r.json(),
        json!({"model": "nomic-embed-text", "input": ["first text", "second text"], "encoding_format": "float"})
    );
    assert_eq!(e.model_id(), format!("{}/v1:nomic-embed-text", server.url()));
}

#[tokio::test]
async fn batches_requests_and_sends_dimensions_when_asked() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(200, answer(&[vec![1.0, 0.0], vec![0.0, 1.0]])));
    server.enqueue(Reply::json(200, answer(&[vec![1.0, 1.0]])));
    let e = embedder(&server).request_dimensions(2).batch_size(2);
    let v = e.embed(&texts(&["a", "b", "c"])).await.unwrap();
    assert_eq!(v.len(), 3);
    assert!((v[2][0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    let bodies: Vec<Value> = server.requests().iter().map(|r| r.json()).collect();
    assert_eq!(bodies[0]["input"], json!(["a", "b"]));
    assert_eq!(bodies[1]["input"], json!(["c"]));
    assert_eq!(bodies[0]["dimensions"], json!(2));
    assert_eq!(e.dimensions(), 2);
    assert!(e.model_id().ends_with("@2"), "{}", e.model_id());
    // Nothing to embed: no request.
    assert!(e.embed(&[]).await.unwrap().is_empty());
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_500_is_retried_and_then_succeeds() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(500, json!({"error": {"message": "upstream hiccup"}})));
    server.enqueue(Reply::json(200, answer(&[vec![0.0, 2.0]])));
    let v = embedder(&server).embed(&texts(&["x"])).await.unwrap();
    assert_eq!(v, vec![vec![0.0, 1.0]]);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_persistent_500_fails_as_transient_after_the_policy_s_attempts() {
    let server = MockServer::start().await;
    server.always(Reply::json(500, json!({"error": {"message": "down"}})));
    let err = embedder(&server).embed(&texts(&["x"])).await.unwrap_err();
    assert!(matches!(&err, Error::Model(ModelError::Transient { status: Some(500), .. })), "{err:?}");
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn a_401_is_an_authentication_error_without_retry_and_without_the_key() {
    let server = MockServer::start().await;
    // The server echoes the key, as some do: it must not reach the error.
    server.always(Reply::json(401, json!({"error": {"message": format!("Incorrect API key provided: {KEY}")}})));
    let err = embedder(&server).embed(&texts(&["x"])).await.unwrap_err();
    assert!(matches!(&err, Error::Model(ModelError::Authentication(_))), "{err:?}");
    assert!(!err.to_string().contains(KEY), "{err}");
    assert!(!format!("{err:?}").contains(KEY));
    assert_eq!(server.requests().len(), 1, "authentication errors are not retried");
}

#[tokio::test]
async fn malformed_json_is_a_protocol_error() {
    let server = MockServer::start().await;
    server.always(Reply::bytes(200, "application/json", "{\"data\": [ {\"embedding\": [0.1, "));
    let err = embedder(&server).embed(&texts(&["x"])).await.unwrap_err();
    assert!(matches!(&err, Error::Model(ModelError::Protocol(m)) if m.contains("malformed")), "{err:?}");
    assert_eq!(server.requests().len(), 1, "a malformed answer is not retried");
    // An HTML page from a proxy is not JSON either.
    let server = MockServer::start().await;
    server.always(Reply::html(200, "<html>login</html>"));
    let err = embedder(&server).embed(&texts(&["x"])).await.unwrap_err();
    assert!(matches!(&err, Error::Model(ModelError::Protocol(_))), "{err:?}");
}

#[tokio::test]
async fn wrong_dimensions_and_counts_are_protocol_errors() {
    // Expected 1536 for text-embedding-3-small, got 3.
    let server = MockServer::start().await;
    server.always(Reply::json(200, answer(&[vec![1.0, 2.0, 3.0]])));
    let e = HttpEmbedder::openai("text-embedding-3-small")
        .base_url(format!("{}/v1", server.url()))
        .api_key(KEY)
        .with_config(fast());
    assert_eq!(e.dimensions(), 1536);
    let err = e.embed(&texts(&["x"])).await.unwrap_err();
    assert!(matches!(&err, Error::Model(ModelError::Protocol(m)) if m.contains("1536")), "{err:?}");
    // Vectors of different lengths in one answer.
    let server = MockServer::start().await;
    server.always(Reply::json(200, answer(&[vec![1.0, 2.0], vec![1.0, 2.0, 3.0]])));
    let err = embedder(&server).embed(&texts(&["x", "y"])).await.unwrap_err();
    assert!(matches!(&err, Error::Model(ModelError::Protocol(m)) if m.contains("dimensions")), "{err:?}");
    // One vector for two inputs.
    let server = MockServer::start().await;
    server.always(Reply::json(200, answer(&[vec![1.0, 2.0]])));
    let err = embedder(&server).embed(&texts(&["x", "y"])).await.unwrap_err();
    assert!(matches!(&err, Error::Model(ModelError::Protocol(m)) if m.contains("1 vectors for 2")), "{err:?}");
    // A repeated index.
    let server = MockServer::start().await;
    server.always(Reply::json(
        200,
        json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]}),
    ));
    let err = embedder(&server).embed(&texts(&["x", "y"])).await.unwrap_err();
    assert!(matches!(&err, Error::Model(ModelError::Protocol(m)) if m.contains("index")), "{err:?}");
}

#[tokio::test]
async fn a_rate_limit_honours_retry_after_and_a_bad_base_url_fails_at_once() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(429, json!({"error": {"message": "slow down"}})).header("retry-after", "0"));
    server.enqueue(Reply::json(200, answer(&[vec![1.0]])));
    assert_eq!(embedder(&server).embed(&texts(&["x"])).await.unwrap(), vec![vec![1.0]]);
    let err = HttpEmbedder::compatible("localhost:11434/v1", "m").embed(&texts(&["x"])).await.unwrap_err();
    assert!(matches!(&err, Error::Model(ModelError::Configuration(_))), "{err:?}");
}

#[test]
fn the_key_never_shows_in_debug_output() {
    let e = HttpEmbedder::openai("text-embedding-3-small").api_key(KEY);
    let shown = format!("{e:?}");
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
    let e = HttpEmbedder::compatible("http://127.0.0.1:9/v1", "m");
    assert!(format!("{e:?}").contains("key: None"));
}
