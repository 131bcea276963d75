//! `FallbackModel` over real HTTP models against mock servers: failover on errors another provider
//! might not have, none on errors every provider would repeat, and none once a stream has started.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use loom_agent::model::providers::{FallbackModel, HttpConfig, OpenAIModel, RetryPolicy};
use loom_agent::model::{LanguageModel, ModelCapabilities, ModelChunk, ModelRequest, ModelStream, SharedModel};
use loom_agent::{Agent, Error, Generation, Message, Model, ModelError, RunResult, RunState};
use loom_testkit::wire::openai as wire;
use loom_testkit::{MockServer, Reply};

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

fn model(name: &str, server: &MockServer) -> OpenAIModel {
    Model::openai(name).base_url(server.url()).api_key("sk-fallback-test-key").with_config(config())
}

fn chain(a: &MockServer, b: &MockServer) -> Arc<FallbackModel> {
    Arc::new(Model::fallback([model("gpt-4o", a), model("gpt-4o-mini", b)]).unwrap())
}

async fn run(model: SharedModel) -> RunResult {
    let agent = Agent::builder().model(model).build().unwrap();
    match tokio::time::timeout(Duration::from_secs(30), agent.run("hi")).await.expect("the run hung") {
        Ok(r) => r,
        Err(Error::Run(failure)) => failure.into_result(),
        Err(other) => panic!("unexpected error: {other}"),
    }
}

fn error_reply(status: u16, kind: &str, message: &str) -> Reply {
    Reply::json(status, wire::error(kind, message))
}

#[tokio::test]
async fn a_first_model_out_of_retries_fails_over_to_the_second() {
    let (a, b) = (MockServer::start().await, MockServer::start().await);
    a.always(error_reply(503, "server_error", "down for maintenance"));
    b.always(Reply::sse(wire::text_stream("from the second")));
    let fallback = chain(&a, &b);
    let result = run(fallback.clone()).await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "from the second");
    assert_eq!(a.requests().len(), 3, "the first model used all its attempts");
    assert_eq!(b.requests().len(), 1);
    assert_eq!(fallback.last_served(), 1);
    assert_eq!(fallback.name(), "gpt-4o > gpt-4o-mini");

    // Once the first model is back, it serves again.
    let (a2, b2) = (MockServer::start().await, MockServer::start().await);
    a2.always(Reply::sse(wire::text_stream("from the first")));
    let fallback2 = chain(&a2, &b2);
    assert_eq!(run(fallback2.clone()).await.output, "from the first");
    assert_eq!(fallback2.last_served(), 0);
    assert!(b2.requests().is_empty());
}

#[tokio::test]
async fn rate_limits_and_authentication_errors_fail_over() {
    for (reply, served) in [
        (error_reply(429, "rate_limit_exceeded", "quota").header("retry-after-ms", "1"), 1),
        (error_reply(401, "invalid_api_key", "bad key"), 1),
    ] {
        let (a, b) = (MockServer::start().await, MockServer::start().await);
        a.always(reply);
        b.always(Reply::sse(wire::text_stream("second")));
        let fallback = chain(&a, &b);
        let result = run(fallback.clone()).await;
        assert_eq!(result.output, "second");
        assert_eq!(fallback.last_served(), served);
    }
}

#[tokio::test]
async fn an_invalid_request_does_not_fail_over() {
    for (reply, kind) in [
        (error_reply(400, "invalid_request_error", "unknown field"), "invalid_request"),
        (error_reply(400, "invalid_request_error", "maximum context length is 8192 tokens"), "context_length_exceeded"),
    ] {
        let (a, b) = (MockServer::start().await, MockServer::start().await);
        a.always(reply);
        b.always(Reply::sse(wire::text_stream("must not be asked")));
        let fallback = chain(&a, &b);
        let result = run(fallback.clone()).await;
        assert_eq!(result.state, RunState::Failed);
        assert_eq!(result.error.as_ref().unwrap().model_error.as_deref(), Some(kind));
        assert_eq!(a.requests().len(), 1);
        assert!(b.requests().is_empty(), "{kind}: the second model must not be asked");
    }
}

#[tokio::test]
async fn both_models_down_surface_the_last_error() {
    let (a, b) = (MockServer::start().await, MockServer::start().await);
    a.always(error_reply(503, "server_error", "first is down"));
    b.always(error_reply(429, "rate_limit_exceeded", "second is busy").header("retry-after-ms", "1"));
    let fallback = chain(&a, &b);
    let result = run(fallback.clone()).await;
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.model_error.as_deref(), Some("rate_limited"), "{error:?}");
    assert!(error.message.contains("second is busy"), "{}", error.message);
    assert_eq!((a.requests().len(), b.requests().len()), (3, 3));
}

#[tokio::test]
async fn no_failover_once_a_stream_has_started() {
    let (a, b) = (MockServer::start().await, MockServer::start().await);
    let chunks = vec![wire::text("partial "), wire::text("answer"), wire::finish("stop"), wire::done()];
    a.always(Reply::sse(chunks).drop_after_chunks(1));
    b.always(Reply::sse(wire::text_stream("must not be asked")));
    let fallback = chain(&a, &b);
    let result = run(fallback.clone()).await;
    assert_eq!(result.state, RunState::Failed);
    assert_eq!(result.error.unwrap().model_error.as_deref(), Some("transient"));
    assert_eq!(a.requests().len(), 1);
    assert!(b.requests().is_empty());
    assert_eq!(fallback.last_served(), 0);
}

#[tokio::test]
async fn an_empty_chain_is_unavailable() {
    let empty = FallbackModel::new(Vec::new());
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
    let err = empty.stream(&request).await.err().unwrap();
    assert!(matches!(err, ModelError::Unavailable(_)), "{err:?}");
}

/// A model that only describes itself.
struct Caps(&'static str, ModelCapabilities);

#[async_trait::async_trait]
impl LanguageModel for Caps {
    fn name(&self) -> &str {
        self.0
    }
    fn capabilities(&self) -> ModelCapabilities {
        self.1
    }
    async fn stream(&self, _request: &ModelRequest<'_>) -> Result<ModelStream, ModelError> {
        Ok(Box::pin(futures::stream::iter([Ok(ModelChunk::Text(self.0.into()))])))
    }
}

#[tokio::test]
async fn capabilities_are_what_every_model_supports() {
    let caps =
        |tools, native, window| ModelCapabilities { tools, native_structured_output: native, context_window: window };
    let chain = |models: Vec<ModelCapabilities>| {
        let models: Vec<SharedModel> = models.into_iter().map(|c| Arc::new(Caps("m", c)) as SharedModel).collect();
        FallbackModel::new(models).capabilities()
    };
    assert_eq!(
        chain(vec![caps(true, true, Some(200_000)), caps(true, true, Some(128_000))]),
        caps(true, true, Some(128_000))
    );
    assert_eq!(chain(vec![caps(true, true, Some(8_000)), caps(false, false, None)]), caps(false, false, Some(8_000)));
    assert_eq!(chain(vec![caps(true, false, None), caps(true, true, None)]), caps(true, false, None));

    // With real providers: the mock-free part of an HTTP model is its wire format's description.
    let server = MockServer::start().await;
    let http = model("gpt-4o", &server);
    let local = Caps("local", caps(false, false, Some(4_096)));
    let fallback = FallbackModel::new(vec![Arc::new(http), Arc::new(local)]);
    assert_eq!(fallback.capabilities(), caps(false, false, Some(4_096)));

    // And the model that serves is the first that answers.
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
    server.always(Reply::json(503, wire::error("server_error", "down")));
    let chunks: Vec<_> = fallback.stream(&request).await.unwrap().collect().await;
    assert_eq!(chunks, [Ok(ModelChunk::Text("local".into()))]);
    assert_eq!(fallback.last_served(), 1);
}

/// A model whose stream opens at once and fails on its first item.
struct FailsInStream(ModelError);

#[async_trait::async_trait]
impl LanguageModel for FailsInStream {
    fn name(&self) -> &str {
        "fails-in-stream"
    }
    async fn stream(&self, _request: &ModelRequest<'_>) -> Result<ModelStream, ModelError> {
        Ok(Box::pin(futures::stream::iter([Err(self.0.clone())])))
    }
}

#[tokio::test]
async fn an_error_as_the_first_item_of_a_stream_still_fails_over() {
    let server = MockServer::start().await;
    server.always(Reply::sse(wire::text_stream("served over HTTP")));
    let overloaded = ModelError::Transient { message: "overloaded".into(), status: Some(529) };
    let fallback =
        Arc::new(FallbackModel::new(vec![Arc::new(FailsInStream(overloaded)), Arc::new(model("gpt-4o", &server))]));
    let result = run(fallback.clone()).await;
    assert_eq!(result.output, "served over HTTP");
    assert_eq!(fallback.last_served(), 1);

    // Not for an error every model would repeat.
    let fallback = Arc::new(FallbackModel::new(vec![
        Arc::new(FailsInStream(ModelError::InvalidRequest("bad".into()))),
        Arc::new(model("gpt-4o", &server)),
    ]));
    let result = run(fallback).await;
    assert_eq!(result.error.unwrap().model_error.as_deref(), Some("invalid_request"));
    assert_eq!(server.requests().len(), 1);
}
