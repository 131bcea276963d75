//! `loom serve`: Loom agents as a multi-tenant HTTP service.
//!
//! Runs (`/runs`, with the busy-session strategy, cancel, resume and events as SSE with
//! `Last-Event-ID` resumption or JSON pages), sessions, approvals, OpenAI-compatible
//! `/v1/chat/completions` and `/v1/responses`, `/health`, `/ready`, `/metrics` (Prometheus) and
//! `/openapi.json`. Every API request needs `Authorization: Bearer KEY`; each key belongs to a
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

mod approvals;
mod auth;
mod error;
mod events;
mod metrics;
mod openai;
pub mod openapi;
mod runs;
mod sessions;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_server::accept::NoDelayAcceptor;
use loom_agent::Error;
use loom_agent::config::{AgentConfig, ToolRegistry};
use loom_agent::store::{ApiKeyStore, SessionKey};
use serde_json::json;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use auth::{DEFAULT_KEY_CACHE_TTL, DEFAULT_TENANT, create_key, valid_tenant};
pub use error::ApiError;
pub use metrics::Metrics;
pub use state::{AppState, Tenant};

/// The default largest request body: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// A configured server: the router and how to listen.
pub struct Server {
    state: Arc<AppState>,
    settings: loom_agent::config::ServerConfig,
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

impl Server {
    /// Builds the agents of a configuration and the server around them.
    pub async fn from_config(config: &AgentConfig, registry: &ToolRegistry) -> Result<Server, Error> {
        let agents = config.build_all(registry)?;
        let settings = config.server.clone().unwrap_or_default();
        let keys = if settings.auth.unwrap_or(true) { Some(key_store(config).await?) } else { None };
        let limiter = settings
            .tenant_rate_limit
            .as_ref()
            .map(|c| loom_agent::config::RateLimiterConfig { mode: Some("reject".into()), ..c.clone() }.build())
            .transpose()?;
        Ok(Server { state: Arc::new(AppState::new(agents, keys, limiter)), settings })
    }

    /// A server over a state made in code.
    pub fn new(state: AppState, settings: loom_agent::config::ServerConfig) -> Server {
        Server { state: Arc::new(state), settings }
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The router (for tests and embedding).
    pub fn router(&self) -> Result<Router, Error> {
        router(self.state.clone(), &self.settings)
    }

    /// The address from the settings (`127.0.0.1:8080` by default).
    pub fn bind_addr(&self) -> Result<SocketAddr, Error> {
        let bind = self.settings.bind.as_deref().unwrap_or("127.0.0.1:8080");
        bind.parse().map_err(|e| Error::Config(format!("server.bind `{bind}`: {e}")))
    }

    /// Listens on `addr` until the process is interrupted (Ctrl-C) — over TLS when the settings
    /// give a certificate and key.
    pub async fn serve(self, addr: SocketAddr) -> Result<(), Error> {
        let listener = std::net::TcpListener::bind(addr).map_err(|e| Error::Config(format!("binding {addr}: {e}")))?;
        self.serve_on(listener).await
    }

    /// Serves on a bound listener (port 0 in tests: read the address from the listener first).
    pub async fn serve_on(self, listener: std::net::TcpListener) -> Result<(), Error> {
        listener.set_nonblocking(true).map_err(|e| Error::Config(format!("listener: {e}")))?;
        let app = self.router()?;
        let handle = axum_server::Handle::new();
        let h = handle.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            h.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
        });
        let service = app.into_make_service();
        let io = |e: std::io::Error| Error::Config(format!("server: {e}"));
        match (&self.settings.tls_cert, &self.settings.tls_key) {
            (Some(cert), Some(key)) => {
                let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .map_err(|e| Error::Config(format!("TLS certificate {cert} / key {key}: {e}")))?;
                // TCP_NODELAY on every connection: an SSE event is a small write, and with Nagle's
                // algorithm it would wait for the client's delayed ACK of the one before (~40 ms).
                let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls).acceptor(NoDelayAcceptor::new());
                axum_server::from_tcp(listener).acceptor(acceptor).handle(handle).serve(service).await.map_err(io)
            }
            (None, None) => axum_server::from_tcp(listener)
                .acceptor(NoDelayAcceptor::new())
                .handle(handle)
                .serve(service)
                .await
                .map_err(io),
            _ => Err(Error::Config("TLS needs both server.tls_cert and server.tls_key".into())),
        }
    }
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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(&live))
}

async fn openapi() -> impl IntoResponse {
    Json(openapi::document())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// The router: public endpoints, the API behind authentication, the body limit and CORS.
pub fn router(state: Arc<AppState>, settings: &loom_agent::config::ServerConfig) -> Result<Router, Error> {
    let api = Router::new()
        .route("/runs", post(runs::create).get(runs::list))
        .route("/runs/{run_id}", get(runs::get))
        .route("/runs/{run_id}/cancel", post(runs::cancel))
        .route("/runs/{run_id}/resume", post(runs::resume))
        .route("/runs/{run_id}/events", get(events::events))
        .route("/runs/{run_id}/approvals/{call_id}", post(approvals::decide))
        .route("/approvals", get(approvals::list))
        .route("/sessions", post(sessions::create).get(sessions::list))
        .route("/sessions/{session_id}", get(sessions::get))
        .route("/sessions/{session_id}/close", post(sessions::close))
        .route("/sessions/{session_id}/history", get(sessions::history))
        .route("/sessions/{session_id}/runs", get(sessions::runs))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/responses", post(openai::responses))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate));
    let mut app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY)))
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
        app =
            app.layer(CorsLayer::new().allow_origin(origins).allow_methods([Method::GET, Method::POST]).allow_headers(
                [header::AUTHORIZATION, header::CONTENT_TYPE, header::HeaderName::from_static("last-event-id")],
            ));
    }
    Ok(app)
}
