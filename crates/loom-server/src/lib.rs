//! `loom serve`: Loom agents as a multi-tenant HTTP service.
//!
//! Runs (`/runs`, with the busy-session strategy, cancel, resume, `POST /runs/stream` (start and
//! stream in one request) and events as SSE with
//! `Last-Event-ID` resumption or JSON pages), sessions, approvals, signals and schedules, memory
//! (facts, search, blocks, forget, export), knowledge search, per-tenant daily budgets
//! (`GET /budget`, 429 `tenant_budget_exceeded`), OpenAI-compatible
//! `/v1/chat/completions` and `/v1/responses`, A2A 1.0 (`/.well-known/agent-card.json` and the
//! JSON-RPC endpoint `/a2a`, see [`a2a`]), the agents as MCP tools at `/mcp` (Streamable HTTP), `/health`, `/ready`, `/metrics` (Prometheus) and
//! `/openapi.json`, and the dashboard at `/ui` (with `/usage`, `/audit` and
//! `/runs/{id}/transcript` for it). Every API request needs `Authorization: Bearer KEY`; each key belongs to a
//! tenant, and a tenant sees only its own users' sessions, runs and events (another tenant's id is
//! a 404). Keys are stored as SHA-256 hashes in the journal's database.
//!
//! ```no_run
//! # async fn demo() -> Result<(), loom_agent::Error> {
//! let config = loom_agent::config::AgentConfig::from_file("agent.toml")?;
//! let server = loom_server::Server::from_config(&config, &Default::default()).await?;
//! server.serve("127.0.0.1:8080".parse().unwrap()).await?;
//! # Ok(()) }
//! ```

pub mod a2a;
mod approvals;
mod audit;
mod auth;
mod budgets;
mod elsewhere;
mod error;
mod events;
mod exec;
mod knowledge;
mod mcp;
mod memory;
mod metrics;
mod openai;
pub mod openapi;
mod queued;
mod runs;
mod sessions;
mod signals;
mod sse;
mod state;
mod transcript;
mod ui;
mod usage;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use axum_server::accept::NoDelayAcceptor;
use loom_agent::Error;
use loom_agent::config::{AgentConfig, ToolRegistry};
use loom_agent::store::{ApiKeyStore, SessionKey};
use serde_json::json;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use audit::{AuditSource, AuditSources};
pub use auth::{DEFAULT_KEY_CACHE_TTL, DEFAULT_TENANT, create_key, valid_tenant};
pub use budgets::{DayUsage, REFRESH as BUDGET_REFRESH, TenantBudgets};
pub use error::ApiError;
pub use metrics::Metrics;
pub use state::{AppState, DEFAULT_MAX_SESSIONS, Tenant};

/// The default largest request body: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// A configured server: the router and how to listen.
pub struct Server {
    state: Arc<AppState>,
    settings: loom_agent::config::ServerConfig,
    audit: AuditSources,
    /// In queue mode, when this server also runs queued runs.
    worker: Option<loom_agent::QueueWorker>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("agents", &self.state.agents.keys().collect::<Vec<_>>()).finish()
    }
}

/// The key store of a configuration: the first agent's journal database. Needed unless
/// `[server] auth = false`.
pub async fn key_store(config: &AgentConfig) -> Result<Arc<dyn ApiKeyStore>, Error> {
    for (_, agent) in config.agent_configs() {
        if let Some(url) = agent.journal_url()? {
            return loom_agent::store::open_api_keys(&url).await;
        }
    }
    Err(Error::Config(
        "API keys live in the journal's database: configure `journal = \"sqlite:./loom.db\"` (or postgres://…), \
         or set `[server] auth = false` for local development"
            .into(),
    ))
}

/// The first agent's journal URL that names a database (`sqlite:…`, `postgres://…`).
fn durable_journal_url(config: &AgentConfig) -> Result<Option<String>, Error> {
    for (_, agent) in config.agent_configs() {
        if let Some(url) = agent.journal_url()?
            && (url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Ok(Some(url));
        }
    }
    Ok(None)
}

impl Server {
    /// Builds the agents of a configuration and the server around them.
    pub async fn from_config(config: &AgentConfig, registry: &ToolRegistry) -> Result<Server, Error> {
        let agents = config.build_all(registry)?;
        let settings = config.server.clone().unwrap_or_default();
        if let Some(budget) = &settings.tenant_budget {
            budget.validate()?;
        }
        let keys = if settings.auth.unwrap_or(true) { Some(key_store(config).await?) } else { None };
        let limiter = settings
            .tenant_rate_limit
            .as_ref()
            .map(|c| loom_agent::config::RateLimiterConfig { mode: Some("reject".into()), ..c.clone() }.build())
            .transpose()?;
        let audit = audit_sources(config)?;
        let mut state = AppState::new(agents, keys, limiter).with_a2a(a2a::settings_from(config));
        // Tenant budgets are counted in the journal's database when there is one (shared by every
        // server on it and across restarts), in memory otherwise.
        if settings.tenant_budget.is_some()
            && let Some(url) = durable_journal_url(config)?
        {
            state = state.with_budget_store(loom_agent::store::open_tenant_usage(&url).await?);
        }
        let mut worker = None;
        if settings.execution == Some(loom_agent::config::Execution::Queue) {
            let urls = config
                .agent_configs()
                .iter()
                .map(|(_, a)| a.journal_url())
                .collect::<Result<std::collections::BTreeSet<_>, _>>()?;
            let mut urls = urls.into_iter();
            let (Some(Some(url)), None) = (urls.next(), urls.next()) else {
                return Err(Error::Config(
                    "[server] execution = \"queue\" needs one durable journal shared by every agent \
                     (journal = \"postgres://…\" or \"sqlite:…\")"
                        .into(),
                ));
            };
            let sqlite = url.starts_with("sqlite:");
            let queue =
                state.agents.values().next().ok_or_else(|| Error::Config("no agent to serve".into()))?.run_queue()?;
            state = state.with_queue(queue);
            if settings.serve_runs.unwrap_or(sqlite) {
                let agents = state.agents.iter().map(|(n, a)| (n.clone(), a.clone()));
                let mut w =
                    loom_agent::QueueWorker::new(agents)?.concurrency(settings.worker_concurrency.unwrap_or(64));
                if let Some(store) = state.budgets.store() {
                    w = w.tenant_usage(store.clone());
                }
                worker = Some(w);
            }
        }
        let mut server = Server::new(state, settings);
        server.audit = audit;
        server.worker = worker;
        Ok(server)
    }

    /// A server over a state made in code. The settings' `tenant_budget`, when set, replaces the
    /// state's budgets (keeping their store), and `max_sessions` the state's bound.
    pub fn new(mut state: AppState, settings: loom_agent::config::ServerConfig) -> Server {
        if state.a2a.public_url.is_none() {
            state.a2a.public_url = settings.public_url.clone();
        }
        state.a2a.tls |= settings.tls_cert.is_some();
        let state = match &settings.tenant_budget {
            Some(budget) => state.with_tenant_budget(Some(budget.clone())),
            None => state,
        };
        let state = match settings.max_sessions {
            Some(max) => state.max_sessions(max),
            None => state,
        };
        Server { state: Arc::new(state), settings, audit: AuditSources::default(), worker: None }
    }

    /// Shows this audit log on `GET /audit` (and the dashboard), with its verification status.
    pub fn with_audit_log(mut self, source: AuditSource) -> Server {
        self.audit.0.push(source);
        self
    }

    /// Has this server also claim and run queued runs (queue mode) with `worker`.
    pub fn with_worker(mut self, worker: loom_agent::QueueWorker) -> Server {
        self.worker = Some(worker);
        self
    }

    /// Starts what runs beside the listener until `shutdown` is cancelled: the queue worker (when
    /// this server runs queued runs) and the retention policy (`[server] retention`).
    fn background(&self, shutdown: &tokio::sync::watch::Receiver<bool>) {
        let stopped = |rx: tokio::sync::watch::Receiver<bool>| async move {
            let mut rx = rx;
            let _ = rx.wait_for(|stop| *stop).await;
        };
        if let Some(worker) = self.worker.clone() {
            let stop = stopped(shutdown.clone());
            tokio::spawn(async move { worker.run(stop).await });
        }
        if let Some(keep) = self.settings.retention
            && let Some(journal) = self.state.agents.values().find_map(|a| a.journal().cloned())
        {
            let every = std::time::Duration::from_secs(3600);
            tokio::spawn(loom_agent::prune_periodically(journal, keep, every, stopped(shutdown.clone())));
        }
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The router (for tests and embedding).
    pub fn router(&self) -> Result<Router, Error> {
        router_with(self.state.clone(), &self.settings, self.audit.clone())
    }

    /// The address from the settings (`127.0.0.1:8080` by default).
    pub fn bind_addr(&self) -> Result<SocketAddr, Error> {
        let bind = self.settings.bind.as_deref().unwrap_or("127.0.0.1:8080");
        bind.parse().map_err(|e| Error::Config(format!("server.bind `{bind}`: {e}")))
    }

    /// Listens on `addr` until the process is interrupted (Ctrl-C) — over TLS when the settings
    /// give a certificate and key.
    pub async fn serve(self, addr: SocketAddr) -> Result<(), Error> {
        self.serve_on(listen(addr)?).await
    }

    /// Serves on a bound listener (port 0 in tests: read the address from the listener first).
    pub async fn serve_on(self, listener: std::net::TcpListener) -> Result<(), Error> {
        listener.set_nonblocking(true).map_err(|e| Error::Config(format!("listener: {e}")))?;
        let app = self.router()?;
        let handle = axum_server::Handle::new();
        let h = handle.clone();
        let (stop, stopping) = tokio::sync::watch::channel(false);
        self.background(&stopping);
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            let _ = stop.send(true);
            h.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
        });
        let service = app.into_make_service();
        let io = |e: std::io::Error| Error::Config(format!("server: {e}"));
        let mut server = axum_server::from_tcp(listener);
        // A run's event stream is a long-lived HTTP/2 stream: a proxy or a backend multiplexing
        // many runs over one connection would be held to hyper's default of 200 at once.
        server.http_builder().http2().max_concurrent_streams(MAX_HTTP2_STREAMS);
        match (&self.settings.tls_cert, &self.settings.tls_key) {
            (Some(cert), Some(key)) => {
                let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .map_err(|e| Error::Config(format!("TLS certificate {cert} / key {key}: {e}")))?;
                // TCP_NODELAY on every connection: an SSE event is a small write, and with Nagle's
                // algorithm it would wait for the client's delayed ACK of the one before (~40 ms).
                let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls).acceptor(NoDelayAcceptor::new());
                server.acceptor(acceptor).handle(handle).serve(service).await.map_err(io)
            }
            (None, None) => server.acceptor(NoDelayAcceptor::new()).handle(handle).serve(service).await.map_err(io),
            _ => Err(Error::Config("TLS needs both server.tls_cert and server.tls_key".into())),
        }
    }
}

/// Streams one HTTP/2 connection may carry at once (runs streaming their events, say).
const MAX_HTTP2_STREAMS: u32 = 4096;

/// Connections waiting to be accepted that the kernel keeps (it caps the figure at
/// `net.core.somaxconn`, 4096 by default).
const BACKLOG: i32 = 4096;

/// A listening socket on `addr` for [`Server::serve_on`], with room for a burst of new
/// connections: `std::net::TcpListener::bind` asks the kernel for a backlog of 128, and 1,000
/// clients connecting at once then lose their first packets past it and wait for a retransmission
/// (200 ms to 1 s each). Address reuse is on where it means rebinding a port whose old
/// connections linger (not on Windows, where it would let another socket take the port), so a
/// restarted server binds at once.
///
/// # Errors
/// [`Error::Config`] when the address cannot be bound (in use, not local, no permission).
pub fn listen(addr: SocketAddr) -> Result<std::net::TcpListener, Error> {
    use socket2::{Domain, Protocol, Socket, Type};
    let fail = |e: std::io::Error| Error::Config(format!("cannot listen on {addr}: {e}"));
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    #[cfg(not(windows))]
    socket.set_reuse_address(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(BACKLOG).map_err(fail)?;
    Ok(socket.into())
}

async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    for (name, agent) in &state.agents {
        if let Err(e) = agent.session_store().get_session(SessionKey::new("loom-ready-probe")).await {
            let body = json!({"status": "unavailable", "agent": name, "error": e.to_string()});
            return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
        }
    }
    (StatusCode::OK, Json(json!({"status": "ready"})))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let live: Vec<loom_agent::RunState> = state
        .runs()
        .values()
        .map(|e| e.run.state())
        .filter(|s| !s.is_terminal() || *s == loom_agent::RunState::Suspended)
        .collect();
    let mut text = state.metrics.render(&live);
    text.push_str(&state.budgets.render().await);
    // Queue mode: the runs waiting in the database for a worker (all servers' and workers').
    if let Some(queue) = &state.queue
        && let Ok(depth) = queue.depth().await
    {
        text.push_str(
            "# HELP loom_durable_queue_depth Runs queued in the database, not claimed by a worker.\n\
             # TYPE loom_durable_queue_depth gauge\n",
        );
        text.push_str(&format!("loom_durable_queue_depth {depth}\n"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

async fn openapi() -> impl IntoResponse {
    Json(openapi::document())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// The audit logs the agents of a configuration write (`audit_log = { path, secret_env }`), each
/// file once.
fn audit_sources(config: &AgentConfig) -> Result<AuditSources, Error> {
    let mut sources = AuditSources::default();
    let mut paths = std::collections::HashSet::new();
    for (_, agent) in config.agent_configs() {
        let Some(a) = &agent.audit_log else { continue };
        if !paths.insert(a.path.clone()) {
            continue;
        }
        let secret = std::env::var(&a.secret_env).map_err(|_| {
            Error::Config(format!(
                "`audit_log.secret_env` names the environment variable {}, which is not set",
                a.secret_env
            ))
        })?;
        sources.0.push(AuditSource::file(&a.path, secret));
    }
    Ok(sources)
}

/// The router: public endpoints, the API behind authentication, the body limit and CORS (no
/// audit log on `/audit`; [`Server::router`] has the configured ones).
pub fn router(state: Arc<AppState>, settings: &loom_agent::config::ServerConfig) -> Result<Router, Error> {
    router_with(state, settings, AuditSources::default())
}

fn router_with(
    state: Arc<AppState>,
    settings: &loom_agent::config::ServerConfig,
    audit: AuditSources,
) -> Result<Router, Error> {
    // The tenant's daily budget, checked on the routes that start or continue runs.
    let budget = || axum::middleware::from_fn_with_state(state.clone(), budgets::guard);
    let max_body = settings.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
    let mcp = mcp::service(state.clone(), state.keys.is_some(), max_body);
    let api = Router::new()
        .route("/runs", post(runs::create).route_layer(budget()).get(runs::list))
        .route("/runs/stream", post(events::create_stream).route_layer(budget()))
        .route("/runs/{run_id}", get(runs::get))
        .route("/runs/{run_id}/cancel", post(runs::cancel))
        .route("/runs/{run_id}/resume", post(runs::resume).route_layer(budget()))
        .route("/runs/{run_id}/events", get(events::events))
        .route("/runs/{run_id}/approvals/{call_id}", post(approvals::decide).route_layer(budget()))
        .route("/approvals", get(approvals::list))
        .route("/sessions", post(sessions::create).get(sessions::list))
        .route("/sessions/{session_id}", get(sessions::get))
        .route("/sessions/{session_id}/close", post(sessions::close))
        .route("/sessions/{session_id}/history", get(sessions::history))
        .route("/sessions/{session_id}/runs", get(sessions::runs))
        .route("/runs/{run_id}/transcript", get(transcript::transcript))
        .route("/usage", get(usage::usage))
        .route("/audit", get(audit::list).layer(axum::Extension(Arc::new(audit))))
        .route("/sessions/{session_id}/signals", post(signals::post).route_layer(budget()).get(signals::list))
        .route("/schedules", post(signals::create_schedule).get(signals::list_schedules))
        .route("/schedules/{schedule_id}", delete(signals::delete_schedule))
        .route("/memory", delete(memory::forget))
        .route("/memory/facts", get(memory::facts).post(memory::add_fact))
        .route("/memory/search", get(memory::search))
        .route("/memory/blocks", get(memory::blocks))
        .route("/memory/blocks/{name}", put(memory::put_block).delete(memory::delete_block))
        .route("/memory/export", get(memory::export))
        .route("/knowledge/search", get(knowledge::search))
        .route("/knowledge/index", post(knowledge::index))
        .route("/budget", get(budgets::show))
        .route("/v1/chat/completions", post(openai::chat_completions).route_layer(budget()))
        .route("/v1/responses", post(openai::responses).route_layer(budget()))
        .route("/a2a", post(a2a::endpoint))
        .route_service("/mcp", mcp)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate));
    let mut app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/ui", get(ui::root))
        .route("/ui/", get(ui::index))
        .route("/ui/{*path}", get(ui::asset))
        .route("/.well-known/agent-card.json", get(a2a::agent_card))
        .merge(api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state);
    if !settings.cors_origins.is_empty() {
        let origins = if settings.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            let list = settings
                .cors_origins
                .iter()
                .map(|o| HeaderValue::from_str(o).map_err(|_| Error::Config(format!("server.cors_origins: `{o}`"))))
                .collect::<Result<Vec<_>, _>>()?;
            AllowOrigin::list(list)
        };
        app = app.layer(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::HeaderName::from_static("last-event-id"),
                    header::HeaderName::from_static("a2a-version"),
                    header::HeaderName::from_static("mcp-protocol-version"),
                ]),
        );
    }
    Ok(app)
}
