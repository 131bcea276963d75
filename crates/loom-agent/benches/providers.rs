//! The client-side cost of the shared HTTP model layer, and the SSE parser's throughput.
//!
//! 1. `model_call`: one streamed Chat Completions call against a mock server on 127.0.0.1
//!    (keep-alive, a realistic answer of ~8.9 KB on the wire: 40 text deltas, a tool call (a start
//!    and 6 argument pieces), finish, usage, `[DONE]`, each event its own network chunk).
//!    `bare_reqwest` POSTs the same JSON body with a bare `reqwest::Client` and reads the byte
//!    stream to its end; `http_model` is `HttpModel::stream` (request building, retry and timeout
//!    machinery, SSE parsing, JSON decoding) drained into a `ResponseAssembler`. The difference is
//!    what the layer costs per call. `http_layer_only` is `HttpModel` over a wire format that builds
//!    nothing and parses no JSON (`NullWire`): the cost of the shared layer (http.rs, sse.rs) alone.
//!    Measured twice: wall time, and the CPU time of the bench thread alone (the client runs on a
//!    current-thread runtime on that thread; the server runs on its own thread, so its work is not
//!    counted). Thread CPU time comes from `/proc/thread-self/schedstat`, read after a
//!    `sched_yield` so the kernel brings the running total up to date.
//! 2. `sse`: `SseParser::feed` over a ~1 MB realistic OpenAI stream fed in 1, 4 and 16 KB pieces, and
//!    the full decode (SSE + JSON into `ModelChunk`s) over the same bytes.
//! 3. `sse_vs_crate`: our `SseParser` against the `eventsource-stream` crate on the same ~1 MB
//!    stream, in the same run: fed one event per piece (as providers stream them, and as
//!    `model_call` serves them), and in 1, 4 and 16 KB pieces. The crate is driven as a `Stream`
//!    over the pieces, polled by `futures::executor::block_on_stream` (the pieces are always ready,
//!    so that costs one poll per event).
//! 4. `body`: building one call's request (`WireFormat::build`: URL, headers and the JSON body) for
//!    a conversation of 14 messages (a system prompt, 4 user turns, 4 tool round trips with
//!    thinking on two of them) and 4 tools, for each HTTP wire format.
//!
//! ```text
//! cargo bench -p loom-agent --bench providers -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! See docs/benchmarks.md for results and the targets they are held to.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use futures::StreamExt;
use loom_agent::model::providers::sse::{SseEvent, SseParser};
use loom_agent::model::providers::{
    ApiKey, ChatCompletions, HttpConfig, HttpModel, HttpRequest, OpenAIModel, StreamDecoder, WireFormat,
};
use loom_agent::model::{LanguageModel, ModelCapabilities, ModelChunk, ModelRequest, ResponseAssembler};
use loom_agent::tool::ToolSpec;
use loom_agent::{FinishReason, Generation, Message, Model, ModelError};
use loom_testkit::wire::openai as wire;
use loom_testkit::{MockServer, Reply};
use reqwest::header::HeaderMap;
use serde_json::json;
use tokio::runtime::Runtime;

const KEY: &str = "sk-bench-0123456789abcdef";

/// The answer: 40 text deltas, one tool call in pieces, finish, usage, `[DONE]`: one event a chunk.
fn answer_events() -> Vec<String> {
    let words = "The weather in Paris is mild today with a light breeze from the west and some clouds \
                 drifting over the river while people walk along the quays and the cafes fill up slowly \
                 before noon as the market stalls open and the bakers sell";
    let mut events: Vec<String> = words.split(' ').take(40).map(|w| wire::text(&format!("{w} "))).collect();
    assert_eq!(events.len(), 40);
    events.push(wire::tool_call_start(0, "call_9f8e7d6c5b4a", "get_weather"));
    for piece in ["{\"ci", "ty\": \"Pa", "ris\", \"un", "it\": \"cel", "sius\"", "}"] {
        events.push(wire::tool_call_args(0, piece));
    }
    events.push(wire::finish("tool_calls"));
    events.push(wire::usage(1250, 1024, 58));
    events.push(wire::done());
    events
}

fn tools() -> Vec<ToolSpec> {
    vec![ToolSpec {
        name: "get_weather".into(),
        description: "The current weather in a city.".into(),
        parameters: json!({
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]
        }),
        flags: Default::default(),
    }]
}

fn messages() -> Vec<Message> {
    vec![
        Message::system("You are a helpful assistant. Answer briefly and use tools when they help."),
        Message::user("What is the weather like in Paris right now, and should I take an umbrella?"),
    ]
}

/// A mock server on its own thread and runtime (so its CPU time is not the bench thread's).
fn start_server(reply: Reply) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let server = MockServer::start().await;
            server.always(reply);
            tx.send(server.url()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

/// CPU time this thread has used. The `sched_yield` makes the kernel update the running total
/// (otherwise it lags by up to a scheduler tick).
struct ThreadCpu(std::fs::File);

impl ThreadCpu {
    fn open() -> Self {
        ThreadCpu(std::fs::File::open("/proc/thread-self/schedstat").expect("/proc/thread-self/schedstat"))
    }

    fn now(&self) -> Duration {
        std::thread::yield_now();
        let mut buf = [0u8; 128];
        let n = self.0.read_at(&mut buf, 0).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        Duration::from_nanos(text.split_whitespace().next().unwrap().parse().unwrap())
    }
}

/// The Chat Completions wire format with its JSON taken out: the request is built once, and each
/// event becomes one small text chunk without being parsed. `HttpModel` over it costs what the
/// shared layer (http.rs, sse.rs) costs, without the wire format's own work.
struct NullWire {
    inner: ChatCompletions,
    request: (reqwest::Url, HeaderMap, Vec<u8>),
}

struct NullDecoder;

impl StreamDecoder for NullDecoder {
    fn event(&mut self, event: SseEvent, out: &mut Vec<ModelChunk>) -> Result<bool, ModelError> {
        if event.data == "[DONE]" {
            return Ok(true);
        }
        out.push(ModelChunk::Text(String::from("x")));
        Ok(false)
    }

    fn end(&mut self, out: &mut Vec<ModelChunk>) -> Result<(), ModelError> {
        out.push(ModelChunk::Finish(FinishReason::Stop));
        Ok(())
    }
}

impl WireFormat for NullWire {
    fn provider(&self) -> &str {
        "null"
    }
    fn model(&self) -> &str {
        self.inner.model()
    }
    fn capabilities(&self) -> ModelCapabilities {
        self.inner.capabilities()
    }
    fn key_env(&self) -> &str {
        ""
    }
    fn set_base_url(&mut self, url: String) {
        self.inner.set_base_url(url);
    }
    fn build(&self, _: &ModelRequest<'_>, _: bool, _: Option<&ApiKey>) -> Result<HttpRequest, ModelError> {
        let (url, headers, body) = &self.request;
        Ok(HttpRequest { url: url.clone(), headers: headers.clone(), body: body.clone() })
    }
    fn decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(NullDecoder)
    }
    fn decode_body(&self, _: &[u8]) -> Result<Vec<ModelChunk>, ModelError> {
        Ok(vec![ModelChunk::Finish(FinishReason::Stop)])
    }
}

struct Bench {
    rt: Runtime,
    url: String,
    model: OpenAIModel,
    null_model: HttpModel<NullWire>,
    bare: reqwest::Client,
    body: bytes::Bytes,
    messages: Vec<Message>,
    tools: Vec<ToolSpec>,
    generation: Generation,
}

impl Bench {
    fn new() -> Self {
        let url = start_server(Reply::sse(answer_events()));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let model = Model::openai("gpt-4o").base_url(&url).api_key(KEY).with_config(HttpConfig::default());
        let bare = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .unwrap();
        let (messages, tools, generation) = (messages(), tools(), Generation::default());
        let request = ModelRequest {
            messages: &messages,
            tools: &tools,
            generation: &generation,
            output_schema: None,
            run_id: "run_bench",
            user_id: None,
            turn: 1,
        };
        let built = model.wire().build(&request, true, Some(&ApiKey::new(KEY))).unwrap();
        let body = built.body.clone().into();
        let null_wire = NullWire { inner: model.wire().clone(), request: (built.url, built.headers, built.body) };
        let null_model = HttpModel::new(null_wire).api_key(KEY).with_config(HttpConfig::default());
        Bench { rt, url, model, null_model, bare, body, messages, tools, generation }
    }

    /// A bare reqwest call moving the same bytes: bytes read.
    async fn bare_call(&self) -> usize {
        let response = self
            .bare
            .post(format!("{}/chat/completions", self.url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header(reqwest::header::AUTHORIZATION, format!("Bearer {KEY}"))
            .body(self.body.clone())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        let mut bytes = response.bytes_stream();
        let mut n = 0;
        while let Some(b) = bytes.next().await {
            n += b.unwrap().len();
        }
        n
    }

    /// The same call through `HttpModel`: the assembled response's text length.
    async fn model_call(&self) -> usize {
        let request = ModelRequest {
            messages: &self.messages,
            tools: &self.tools,
            generation: &self.generation,
            output_schema: None,
            run_id: "run_bench",
            user_id: None,
            turn: 1,
        };
        let mut stream = self.model.stream(&request).await.unwrap();
        let mut assembler = ResponseAssembler::new();
        while let Some(chunk) = stream.next().await {
            assembler.push(chunk.unwrap());
        }
        let response = assembler.finish(1).unwrap();
        assert_eq!(response.tool_calls.len(), 1);
        response.text.len()
    }

    /// The same call through `HttpModel` over [`NullWire`]: chunks received.
    async fn null_model_call(&self) -> usize {
        let request = ModelRequest {
            messages: &self.messages,
            tools: &self.tools,
            generation: &self.generation,
            output_schema: None,
            run_id: "run_bench",
            user_id: None,
            turn: 1,
        };
        let mut stream = self.null_model.stream(&request).await.unwrap();
        let mut n = 0;
        while let Some(chunk) = stream.next().await {
            black_box(chunk.unwrap());
            n += 1;
        }
        n
    }

    fn check(&self) {
        assert_eq!(self.rt.block_on(self.null_model_call()), answer_events().len());
        let bytes = self.rt.block_on(self.bare_call());
        let text = self.rt.block_on(self.model_call());
        eprintln!("model_call: the answer is {bytes} bytes on the wire, {text} bytes of text");
    }
}

fn model_call(c: &mut Criterion) {
    let bench = Bench::new();
    bench.check();
    let cpu = ThreadCpu::open();
    let mut group = c.benchmark_group("model_call");
    group.bench_function("wall/bare_reqwest", |b| b.iter(|| black_box(bench.rt.block_on(bench.bare_call()))));
    group.bench_function("wall/http_model", |b| b.iter(|| black_box(bench.rt.block_on(bench.model_call()))));
    group.bench_function("wall/http_layer_only", |b| b.iter(|| black_box(bench.rt.block_on(bench.null_model_call()))));
    group.bench_function("thread_cpu/bare_reqwest", |b| {
        b.iter_custom(|iters| {
            let start = cpu.now();
            bench.rt.block_on(async {
                for _ in 0..iters {
                    black_box(bench.bare_call().await);
                }
            });
            cpu.now() - start
        })
    });
    group.bench_function("thread_cpu/http_model", |b| {
        b.iter_custom(|iters| {
            let start = cpu.now();
            bench.rt.block_on(async {
                for _ in 0..iters {
                    black_box(bench.model_call().await);
                }
            });
            cpu.now() - start
        })
    });
    group.bench_function("thread_cpu/http_layer_only", |b| {
        b.iter_custom(|iters| {
            let start = cpu.now();
            bench.rt.block_on(async {
                for _ in 0..iters {
                    black_box(bench.null_model_call().await);
                }
            });
            cpu.now() - start
        })
    });
    group.finish();
}

/// A large realistic stream: the answer's events (without `[DONE]`) repeated to about 1 MB, then
/// `[DONE]`.
fn big_stream() -> Vec<u8> {
    let events = answer_events();
    let body: String = events[..events.len() - 1].concat();
    let mut out = Vec::new();
    while out.len() < 1024 * 1024 {
        out.extend_from_slice(body.as_bytes());
    }
    out.extend_from_slice(events[events.len() - 1].as_bytes());
    out
}

fn parse(bytes: &[u8], piece: usize) -> usize {
    let mut parser = SseParser::new();
    let mut n = 0;
    for chunk in bytes.chunks(piece) {
        parser.feed(chunk, |e| n += e.data.len()).unwrap();
    }
    parser.finish(|e| n += e.data.len()).unwrap();
    n
}

fn decode(wire: &ChatCompletions, bytes: &[u8], piece: usize) -> usize {
    let mut parser = SseParser::new();
    let mut decoder = wire.decoder();
    let mut events: Vec<SseEvent> = Vec::new();
    let mut out: Vec<ModelChunk> = Vec::new();
    let mut n = 0;
    for chunk in bytes.chunks(piece) {
        parser.feed(chunk, |e| events.push(e)).unwrap();
        for e in events.drain(..) {
            decoder.event(e, &mut out).unwrap();
        }
        n += out.len();
        out.clear();
    }
    n
}

/// The same stream as [`big_stream`], one event per piece.
fn big_stream_events() -> Vec<Vec<u8>> {
    let events = answer_events();
    let (body, done) = events.split_at(events.len() - 1);
    let mut out = Vec::new();
    let mut len = 0;
    while len < 1024 * 1024 {
        for e in body {
            len += e.len();
            out.push(e.as_bytes().to_vec());
        }
    }
    out.push(done[0].as_bytes().to_vec());
    out
}

/// Our parser over the pieces: bytes of data and events seen.
fn parse_ours<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> (usize, usize) {
    let mut parser = SseParser::new();
    let (mut n, mut events) = (0, 0);
    for piece in pieces {
        parser
            .feed(piece, |e| {
                n += e.data.len();
                events += 1;
            })
            .unwrap();
    }
    parser
        .finish(|e| {
            n += e.data.len();
            events += 1;
        })
        .unwrap();
    (n, events)
}

/// The `eventsource-stream` crate over the same pieces.
fn parse_crate<'a>(pieces: impl Iterator<Item = &'a [u8]> + Unpin) -> (usize, usize) {
    use eventsource_stream::Eventsource;
    let stream = futures::stream::iter(pieces.map(Ok::<_, std::convert::Infallible>)).eventsource();
    let (mut n, mut events) = (0, 0);
    for e in futures::executor::block_on_stream(stream) {
        n += e.unwrap().data.len();
        events += 1;
    }
    (n, events)
}

fn sse_vs_crate(c: &mut Criterion) {
    let events = big_stream_events();
    let bytes = events.concat();
    assert_eq!(parse_ours(events.iter().map(Vec::as_slice)), parse_crate(events.iter().map(Vec::as_slice)));
    let mut group = c.benchmark_group("sse_vs_crate");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("ours/event", |b| b.iter(|| black_box(parse_ours(events.iter().map(Vec::as_slice)))));
    group.bench_function("eventsource_stream/event", |b| {
        b.iter(|| black_box(parse_crate(events.iter().map(Vec::as_slice))))
    });
    for kb in [1usize, 4, 16] {
        assert_eq!(parse_ours(bytes.chunks(kb * 1024)), parse_crate(bytes.chunks(kb * 1024)));
        group.bench_with_input(BenchmarkId::new("ours", format!("{kb}KB")), &kb, |b, &kb| {
            b.iter(|| black_box(parse_ours(bytes.chunks(kb * 1024))))
        });
        group.bench_with_input(BenchmarkId::new("eventsource_stream", format!("{kb}KB")), &kb, |b, &kb| {
            b.iter(|| black_box(parse_crate(bytes.chunks(kb * 1024))))
        });
    }
    group.finish();
}

fn sse(c: &mut Criterion) {
    let bytes = big_stream();
    let wire = Model::openai("gpt-4o").wire().clone();
    let mut group = c.benchmark_group("sse");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    for kb in [1usize, 4, 16] {
        group.bench_with_input(BenchmarkId::new("parse", format!("{kb}KB")), &kb, |b, &kb| {
            b.iter(|| black_box(parse(&bytes, kb * 1024)))
        });
    }
    for kb in [1usize, 4, 16] {
        group.bench_with_input(BenchmarkId::new("decode", format!("{kb}KB")), &kb, |b, &kb| {
            b.iter(|| black_box(decode(&wire, &bytes, kb * 1024)))
        });
    }
    group.finish();
}

/// The conversation `body` builds requests for: 14 messages, 4 tools.
fn conversation() -> (Vec<Message>, Vec<ToolSpec>) {
    use loom_agent::ToolCall;
    use loom_agent::message::Thinking;
    let mut messages = vec![Message::system("You are a careful assistant. Use the tools; answer briefly and cite.")];
    for i in 0..4 {
        messages.push(Message::user(format!("Question {i}: what does the file src/module_{i}.rs export, and why?")));
        let thinking = if i % 2 == 0 {
            vec![Thinking {
                text: "The user wants the exports; read the file first.".into(),
                signature: Some("EqQBCkgIARABGAIiQL2cBv0lT2y5sMw4KnGmF0pN1oT6A==".into()),
                provider: Some("anthropic".into()),
            }]
        } else {
            vec![]
        };
        let args = json!({"path": format!("src/module_{i}.rs"), "max_lines": 200});
        messages.push(Message::Assistant {
            content: String::new(),
            thinking,
            tool_calls: vec![ToolCall::new(format!("call_{i}"), "read_file", &args)],
        });
        messages.push(Message::tool(
            format!("call_{i}"),
            "read_file",
            "pub fn parse(input: &str) -> Result<Ast, Error> { /* 40 lines */ }\npub struct Ast { nodes: Vec<Node> }",
            false,
        ));
    }
    messages.push(Message::user("Thanks. Summarize in one line."));
    let schema = |props: serde_json::Value| json!({"type": "object", "properties": props, "required": ["path"]});
    let tools = ["read_file", "list_dir", "grep", "write_file"]
        .iter()
        .map(|name| ToolSpec {
            name: (*name).into(),
            description: format!("{name}: works on the files under the workspace root."),
            parameters: schema(json!({"path": {"type": "string"}, "max_lines": {"type": "integer", "minimum": 1}})),
            flags: Default::default(),
        })
        .collect();
    (messages, tools)
}

fn body(c: &mut Criterion) {
    let (messages, tools) = conversation();
    let generation = Generation::new().max_output_tokens(1000).temperature(0.2);
    let request = ModelRequest {
        messages: &messages,
        tools: &tools,
        generation: &generation,
        output_schema: None,
        run_id: "run_bench",
        user_id: None,
        turn: 5,
    };
    let key = ApiKey::new(KEY);
    let openai = Model::openai("gpt-4o").wire().clone();
    let anthropic = Model::anthropic("claude-sonnet-4-5").wire().clone();
    let responses = Model::openai_responses("gpt-4.1").wire().clone();
    let gemini = Model::gemini("gemini-2.5-flash").wire().clone();
    let mut group = c.benchmark_group("body");
    group.bench_function("chat_completions", |b| {
        b.iter(|| black_box(openai.build(black_box(&request), true, Some(&key)).unwrap().body.len()))
    });
    group.bench_function("anthropic_messages", |b| {
        b.iter(|| black_box(anthropic.build(black_box(&request), true, Some(&key)).unwrap().body.len()))
    });
    group.bench_function("responses", |b| {
        b.iter(|| black_box(responses.build(black_box(&request), true, Some(&key)).unwrap().body.len()))
    });
    group.bench_function("gemini", |b| {
        b.iter(|| black_box(gemini.build(black_box(&request), true, Some(&key)).unwrap().body.len()))
    });
    group.finish();
}

/// How long one `Instant::now()` pair and a thread-CPU read cost, for reading the numbers above.
fn clock_cost(c: &mut Criterion) {
    let cpu = ThreadCpu::open();
    c.bench_function("clock/thread_cpu_read", |b| b.iter(|| black_box(cpu.now())));
    c.bench_function("clock/instant_now", |b| b.iter(|| black_box(Instant::now())));
}

/// `LOOM_PROFILE_CALLS=bare:N`, `model:N` or `layer:N`: makes N calls of one kind and exits, for counting
/// instructions per call under `valgrind --tool=callgrind` (run two N and take the difference, so
/// the setup cancels out).
fn profile(spec: &str) {
    let (kind, n) = spec.split_once(':').expect("KIND:N");
    let n: usize = n.parse().expect("a number of calls");
    let bench = Bench::new();
    bench.rt.block_on(async {
        for _ in 0..n {
            match kind {
                "bare" => black_box(bench.bare_call().await),
                "model" => black_box(bench.model_call().await),
                "layer" => black_box(bench.null_model_call().await),
                other => panic!("unknown kind {other}"),
            };
        }
    });
}

criterion_group!(benches, model_call, sse, sse_vs_crate, body, clock_cost);

fn main() {
    if let Ok(spec) = std::env::var("LOOM_PROFILE_CALLS") {
        profile(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
