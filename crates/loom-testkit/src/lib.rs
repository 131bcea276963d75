//! Test tools for loom-agent.
//!
//! [`MockServer`] listens on 127.0.0.1 on a random port and answers each request with the next
//! scripted [`Reply`], recording every request (method, path, headers, body) for assertions. Replies
//! can stream a body in chunks with pauses, wait before the first byte, drop the connection part way,
//! or send anything at all (malformed SSE, oversized bodies). [`wire`] builds bodies in each
//! provider's wire format.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use loom_testkit::{MockServer, Reply};
//!
//! let server = MockServer::start().await;
//! server.enqueue(Reply::json(200, serde_json::json!({"ok": true})));
//! assert!(server.url().starts_with("http://127.0.0.1:"));
//! # }
//! ```

pub mod wire;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// A request as the server received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `POST`, `GET`, …
    pub method: String,
    /// The path with the query string.
    pub path: String,
    /// Header names in lower case, with their values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One piece of a reply body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Bytes to send.
    Bytes(Vec<u8>),
    /// A pause.
    Pause(Duration),
    /// Close the connection here, abruptly.
    Drop,
}

/// A scripted reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body, sent with chunked transfer encoding when it has more than one part.
    pub parts: Vec<Part>,
    /// A wait before anything is sent (headers included).
    pub first_byte_delay: Duration,
    /// Close the connection without any answer.
    pub no_answer: bool,
    /// The content type.
    pub content_type: String,
}

impl Reply {
    /// A JSON reply.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            parts: vec![Part::Bytes(body.to_string().into_bytes())],
            first_byte_delay: Duration::ZERO,
            no_answer: false,
            content_type: "application/json".into(),
        }
    }

    /// A reply with raw bytes.
    pub fn bytes(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Reply {
            content_type: content_type.into(),
            parts: vec![Part::Bytes(body.into())],
            ..Reply::json(status, serde_json::Value::Null)
        }
    }

    /// An event stream: each string is sent as one chunk, exactly as given (use
    /// [`wire::sse_event`] to frame events).
    pub fn sse<I, S>(chunks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Reply {
            content_type: "text/event-stream".into(),
            parts: chunks.into_iter().map(|c| Part::Bytes(c.into().into_bytes())).collect(),
            ..Reply::json(200, serde_json::Value::Null)
        }
    }

    /// An HTML page (what a proxy, a login portal or a wrong base URL answers), with
    /// `content-type: text/html; charset=utf-8`.
    pub fn html(status: u16, body: &str) -> Self {
        Reply::bytes(status, "text/html; charset=utf-8", body)
    }

    /// A reply that never comes: the connection stays open and nothing is sent, not even the
    /// headers (the server waits a day), so only the client's first-byte timeout ends the wait.
    pub fn silent() -> Self {
        Reply::json(200, serde_json::Value::Null).delay_first_byte(Duration::from_secs(24 * 3600))
    }

    /// A reply that closes the connection without answering.
    pub fn hang_up() -> Self {
        Reply { no_answer: true, ..Reply::json(200, serde_json::Value::Null) }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Waits before sending anything.
    pub fn delay_first_byte(mut self, delay: Duration) -> Self {
        self.first_byte_delay = delay;
        self
    }

    /// Pauses between the body's chunks.
    pub fn pause_between_chunks(mut self, pause: Duration) -> Self {
        let mut parts = Vec::with_capacity(self.parts.len() * 2);
        for (i, p) in self.parts.into_iter().enumerate() {
            if i > 0 {
                parts.push(Part::Pause(pause));
            }
            parts.push(p);
        }
        self.parts = parts;
        self
    }

    /// Keeps the first `n` body chunks, then drops the connection.
    pub fn drop_after_chunks(mut self, n: usize) -> Self {
        let mut kept = 0;
        let mut parts = Vec::new();
        for p in self.parts {
            if matches!(p, Part::Bytes(_)) {
                if kept == n {
                    break;
                }
                kept += 1;
            }
            parts.push(p);
        }
        parts.push(Part::Drop);
        self.parts = parts;
        self
    }
}

/// A reply computed from the request (see [`MockServer::respond_with`]).
pub type Responder = Arc<dyn Fn(&RecordedRequest) -> Reply + Send + Sync>;

#[derive(Default)]
struct State {
    replies: VecDeque<Reply>,
    fallback: Option<Reply>,
    responder: Option<Responder>,
    requests: Vec<RecordedRequest>,
    connections: usize,
}

/// A mock HTTP/1.1 server on 127.0.0.1 (keep-alive, chunked streaming, faults).
pub struct MockServer {
    addr: std::net::SocketAddr,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
    held: Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl MockServer {
    /// Starts a server on a random port.
    ///
    /// # Panics
    /// When no port on 127.0.0.1 can be bound (a broken test machine).
    #[allow(clippy::expect_used)]
    pub async fn start() -> Self {
        // A backlog of 4,096 (tokio's `bind` asks for 128): benchmarks connect thousands of
        // clients at once, and past the backlog the kernel drops their SYNs (a 1 s wait each).
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind 127.0.0.1:0");
        let listener = socket.listen(4096).expect("listen on 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State::default()));
        let arrived = Arc::new(Notify::new());
        let held = Arc::new(tokio::sync::watch::channel(false).0);
        let (s, a, h) = (state.clone(), arrived.clone(), held.clone());
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                lock(&s).connections += 1;
                let (s, a, h) = (s.clone(), a.clone(), h.subscribe());
                tokio::spawn(async move {
                    let _ = serve(socket, s, a, h).await;
                });
            }
        });
        MockServer { addr, state, arrived, held, task }
    }

    /// Computes the reply of every request that finds no queued one (before [`MockServer::always`]'s).
    pub fn respond_with(&self, responder: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static) {
        lock(&self.state).responder = Some(Arc::new(responder));
    }

    /// Holds every reply (recorded requests wait unanswered) until [`MockServer::release`].
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Answers the held requests, and the next ones at once.
    pub fn release(&self) {
        self.held.send_replace(false);
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues a reply for the next request.
    pub fn enqueue(&self, reply: Reply) {
        lock(&self.state).replies.push_back(reply);
    }

    /// The reply for every request once the queue is empty (404 by default).
    pub fn always(&self, reply: Reply) {
        lock(&self.state).fallback = Some(reply);
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }

    /// How many TCP connections were accepted (1 for many requests means keep-alive worked).
    pub fn connections(&self) -> usize {
        lock(&self.state).connections
    }

    /// Waits until at least `n` requests have arrived.
    pub async fn wait_for_requests(&self, n: usize) {
        loop {
            let notified = self.arrived.notified();
            if lock(&self.state).requests.len() >= n {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    socket: TcpStream,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
    mut held: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let Some(request) = read_request(&mut reader).await? else { return Ok(()) };
        let reply = {
            let mut st = lock(&state);
            let reply = st
                .replies
                .pop_front()
                .or_else(|| st.responder.as_ref().map(|r| r(&request)))
                .or_else(|| st.fallback.clone());
            st.requests.push(request);
            reply
        };
        arrived.notify_waiters();
        let _ = held.wait_for(|h| !*h).await;
        let reply =
            reply.unwrap_or_else(|| Reply::json(404, serde_json::json!({"error": {"message": "no reply scripted"}})));
        if !reply.first_byte_delay.is_zero() {
            tokio::time::sleep(reply.first_byte_delay).await;
        }
        if reply.no_answer {
            return Ok(());
        }
        if !write_reply(&mut write, &reply).await? {
            return Ok(());
        }
    }
}

/// Reads one request; `None` at a clean end of the connection.
async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Option<RecordedRequest>> {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "content-length" {
                length = v.parse().unwrap_or(0);
            }
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0u8; length];
    if chunked {
        body.clear();
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if size == 0 {
                line.clear();
                reader.read_line(&mut line).await?;
                break;
            }
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk).await?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_exact(&mut body).await?;
    }
    Ok(Some(RecordedRequest { method, path, headers, body }))
}

/// Writes a reply; false when the connection must close.
async fn write_reply<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, reply: &Reply) -> std::io::Result<bool> {
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        529 => "Overloaded",
        _ => "Status",
    };
    let single = reply.parts.len() == 1 && matches!(reply.parts.first(), Some(Part::Bytes(_)));
    let mut head = format!("HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\n", reply.status, reply.content_type);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let (true, Some(Part::Bytes(b))) = (single, reply.parts.first()) {
        head.push_str(&format!("content-length: {}\r\n\r\n", b.len()));
        w.write_all(head.as_bytes()).await?;
        w.write_all(b).await?;
        w.flush().await?;
        return Ok(true);
    }
    head.push_str("transfer-encoding: chunked\r\n\r\n");
    w.write_all(head.as_bytes()).await?;
    w.flush().await?;
    for part in &reply.parts {
        match part {
            Part::Bytes(b) if b.is_empty() => {}
            Part::Bytes(b) => {
                w.write_all(format!("{:x}\r\n", b.len()).as_bytes()).await?;
                w.write_all(b).await?;
                w.write_all(b"\r\n").await?;
                w.flush().await?;
            }
            Part::Pause(d) => tokio::time::sleep(*d).await,
            Part::Drop => return Ok(false),
        }
    }
    w.write_all(b"0\r\n\r\n").await?;
    w.flush().await?;
    Ok(true)
}
