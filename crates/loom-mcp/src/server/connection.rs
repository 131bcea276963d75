//! The connection to one MCP server: opening it (stdio or Streamable HTTP, the handshake and its
//! fallback), noticing that it died, calling tools, and the tools as a [`ToolSource`].

use super::*;

/// One live connection.
pub(super) struct Live {
    pub(super) service: RunningService<RoleClient, Handler>,
    pub(super) process: Option<std::sync::Mutex<ProcessGuard>>,
    pub(super) stderr: Arc<StderrTail>,
    pub(super) dead: AtomicBool,
}

impl Live {
    pub(super) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire) || self.service.is_closed()
    }

    /// Waits (at most `limit`) for a dying server: its process to end and its stderr to close,
    /// so the error can say how it ended and what it said last.
    pub(super) async fn settle(&self, limit: Duration) {
        self.stderr.settle(limit).await;
        let Some(process) = &self.process else { return };
        let deadline = tokio::time::Instant::now() + limit;
        while process.lock().unwrap_or_else(|e| e.into_inner()).exit_status().is_none()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How the process ended, when it has: ` (the server exited: …)`.
    pub(super) fn exit(&self) -> String {
        let Some(process) = &self.process else { return String::new() };
        let mut guard = process.lock().unwrap_or_else(|e| e.into_inner());
        match guard.exit_status() {
            Some(status) => format!(" (the server process ended: {status})"),
            None => String::new(),
        }
    }
}

/// Answers the server: says who we are, and answers elicitation through the configured callback
/// (form mode only; advertised only when there is one) or declines it.
pub(super) struct Handler {
    server: String,
    elicitation: Option<ElicitationFn>,
}

impl ClientHandler for Handler {
    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, rmcp::ErrorData> {
        let (Some(callback), ElicitRequestParams::FormElicitationParams { message, requested_schema, .. }) =
            (&self.elicitation, request)
        else {
            return Ok(ElicitResult::new(ElicitationAction::Decline));
        };
        let schema = serde_json::to_value(&requested_schema).unwrap_or(serde_json::Value::Null);
        let answer = callback(ElicitationRequest { server: self.server.clone(), message, schema }).await;
        Ok(match answer {
            ElicitationAnswer::Accept(content) => ElicitResult::new(ElicitationAction::Accept).with_content(content),
            ElicitationAnswer::Cancel => ElicitResult::new(ElicitationAction::Cancel),
            ElicitationAnswer::Decline => ElicitResult::new(ElicitationAction::Decline),
        })
    }

    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::default();
        if self.elicitation.is_some() {
            capabilities.elicitation = Some(ElicitationCapability::new().with_form(FormElicitationCapability::new()));
        }
        let mut info = ClientConfig::new(capabilities, Implementation::new("loom", env!("CARGO_PKG_VERSION")));
        info.protocol_version = ProtocolVersion::LATEST_WITH_INITIALIZE;
        info
    }
}

/// A transport that moves the tools generation when `notifications/tools/list_changed` arrives,
/// as it is read: before any later response is handed to its caller. (rmcp's handler callback
/// runs on a spawned task, which could lose that race: a call that added a tool would return
/// before the agent saw the change.)
pub(super) struct Watched<T> {
    inner: T,
    generation: Arc<AtomicU64>,
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for Watched<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: rmcp::service::TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    fn receive(&mut self) -> impl Future<Output = Option<rmcp::service::RxJsonRpcMessage<RoleClient>>> + Send {
        let generation = self.generation.clone();
        let next = self.inner.receive();
        async move {
            let message = next.await;
            if let Some(JsonRpcMessage::Notification(n)) = &message
                && matches!(n.notification, ServerNotification::ToolListChangedNotification(_))
            {
                generation.fetch_add(1, Ordering::AcqRel);
            }
            message
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

pub(super) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

pub(super) fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

impl Shared {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn offered(&self, tool: &str) -> bool {
        let allowed = self.config.allow.as_ref().is_none_or(|allow| allow.iter().any(|p| matches(p, tool)));
        allowed && !self.config.deny.iter().any(|p| matches(p, tool))
    }

    /// The live connection, made (again) when there is none or it died.
    pub(super) async fn live(&self) -> Result<Arc<Live>, McpError> {
        let mut slot = self.conn.lock().await;
        if let Some(live) = slot.as_ref().filter(|l| !l.is_dead()) {
            return Ok(live.clone());
        }
        let reconnecting = slot.take().is_some();
        let live = Arc::new(self.open().await?);
        *slot = Some(live.clone());
        if reconnecting {
            // The tools may differ after a restart: runs load them again.
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(live)
    }

    pub(super) async fn open(&self) -> Result<Live, McpError> {
        let handler = Handler { server: self.name.clone(), elicitation: self.config.elicitation.clone() };
        let lifecycle = ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::LATEST],
            legacy_version: Some(ProtocolVersion::V_2025_11_25),
        };
        let timeout = self.config.handshake_timeout;
        let stderr = Arc::new(match self.config.endpoint {
            Endpoint::Stdio(_) => StderrTail::default(),
            Endpoint::Http { .. } => StderrTail::none(),
        });
        let (served, process) = match &self.config.endpoint {
            Endpoint::Stdio(spec) => {
                let (process, stdout, stdin) = stdio::spawn(spec, &stderr).map_err(|e| McpError::Spawn {
                    server: self.name.clone(),
                    command: spec.command.clone(),
                    message: e.to_string(),
                })?;
                let served = tokio::time::timeout(
                    timeout,
                    handler.serve_with_lifecycle(
                        Watched { inner: AsyncRwTransport::new(stdout, stdin), generation: self.generation.clone() },
                        lifecycle,
                    ),
                )
                .await;
                (served, Some(process))
            }
            Endpoint::Http { url, bearer, headers, .. } => {
                let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                if let Some(token) = bearer {
                    config = config.auth_header(token.clone());
                }
                let mut map = HashMap::new();
                for (name, value) in headers {
                    let name = http::HeaderName::try_from(name.as_str()).map_err(|_| McpError::Config {
                        server: self.name.clone(),
                        message: format!("`{name}` is not a valid HTTP header name"),
                    })?;
                    let mut value = http::HeaderValue::try_from(value.as_str()).map_err(|_| McpError::Config {
                        server: self.name.clone(),
                        message: format!("the value of header `{name}` is not a valid HTTP header value"),
                    })?;
                    value.set_sensitive(true);
                    map.insert(name, value);
                }
                let config = config.custom_headers(map);
                #[cfg(feature = "oauth")]
                if let Some(oauth) = &self.oauth {
                    let client =
                        oauth.clone().map_err(|message| McpError::Config { server: self.name.clone(), message })?;
                    let served = self
                        .serve_http(
                            || StreamableHttpClientTransport::with_client(client.clone(), config.clone()),
                            handler,
                            lifecycle,
                            timeout,
                        )
                        .await;
                    if matches!(served, Ok(Err(_)))
                        && let Some(message) = client.last_failure()
                    {
                        return Err(McpError::Authorization { server: self.name.clone(), message });
                    }
                    return self.finish(served, None, stderr, timeout).await;
                }
                let served = self
                    .serve_http(
                        || StreamableHttpClientTransport::from_config(config.clone()),
                        handler,
                        lifecycle,
                        timeout,
                    )
                    .await;
                (served, None)
            }
        };
        self.finish(served, process, stderr, timeout).await
    }

    /// Serves over Streamable HTTP on the transports `make` makes. A 2025 server that answers
    /// `server/discover` (an unknown method to it) with a success instead of an error gets the
    /// `initialize` handshake on a new transport.
    pub(super) async fn serve_http<C>(
        &self,
        make: impl Fn() -> StreamableHttpClientTransport<C>,
        handler: Handler,
        lifecycle: ClientLifecycleMode,
        timeout: Duration,
    ) -> Served
    where
        C: rmcp::transport::streamable_http_client::StreamableHttpClient + Send + Sync + 'static,
    {
        let transport = Watched { inner: make(), generation: self.generation.clone() };
        let served = tokio::time::timeout(timeout, handler.serve_with_lifecycle(transport, lifecycle)).await;
        match served {
            Ok(Err(rmcp::service::ClientInitializeError::ExpectedInitResult(_))) => {
                let transport = Watched { inner: make(), generation: self.generation.clone() };
                tokio::time::timeout(
                    timeout,
                    Handler { server: self.name.clone(), elicitation: self.config.elicitation.clone() }
                        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize),
                )
                .await
            }
            other => other,
        }
    }

    /// The live connection from the handshake's outcome, or the error that says why not.
    pub(super) async fn finish(
        &self,
        served: Served,
        process: Option<ProcessGuard>,
        stderr: Arc<StderrTail>,
        timeout: Duration,
    ) -> Result<Live, McpError> {
        match served {
            Ok(Ok(service)) => {
                Ok(Live { service, process: process.map(std::sync::Mutex::new), stderr, dead: AtomicBool::new(false) })
            }
            Ok(Err(e)) => {
                // Let a dying process finish writing its last words.
                stderr.settle(Duration::from_millis(500)).await;
                drop(process);
                Err(McpError::Handshake { server: self.name.clone(), message: e.to_string(), stderr: stderr.tail() })
            }
            Err(_) => {
                drop(process);
                stderr.settle(Duration::from_millis(200)).await;
                Err(McpError::HandshakeTimeout { server: self.name.clone(), timeout, stderr: stderr.tail() })
            }
        }
    }

    pub(super) fn request_error(&self, live: &Live, error: ServiceError) -> McpError {
        let closed = matches!(error, ServiceError::TransportClosed | ServiceError::TransportSend(_));
        if closed {
            live.dead.store(true, Ordering::Release);
        }
        #[cfg(feature = "oauth")]
        if !matches!(error, ServiceError::McpError(_))
            && let Some(Ok(client)) = &self.oauth
            && let Some(message) = client.last_failure()
        {
            return McpError::Authorization { server: self.name.clone(), message };
        }
        let message = match error {
            ServiceError::McpError(e) => format!("the server answered with an error: {}", e.message),
            e if closed => {
                format!("the connection closed{} ({}); the next request reconnects", live.exit(), root_cause(&e))
            }
            e => e.to_string(),
        };
        McpError::Request { server: self.name.clone(), message, stderr: live.stderr.tail() }
    }

    /// The server's tools as Loom tools, filtered and named `SERVER__TOOL`. A connection found
    /// dead is made again once.
    pub(super) async fn list_tools(self: &Arc<Self>) -> Result<Vec<Arc<dyn Tool>>, McpError> {
        let mut retried = false;
        let listed = loop {
            let live = self.live().await?;
            match live.service.peer().list_all_tools().await {
                Ok(tools) => break tools,
                Err(e) => {
                    let error = self.request_error(&live, e);
                    if retried || !live.is_dead() {
                        return Err(error);
                    }
                    retried = true;
                }
            }
        };
        let mut out: Vec<Arc<dyn Tool>> = Vec::with_capacity(listed.len());
        let mut seen = std::collections::HashSet::new();
        for tool in listed {
            if !self.offered(&tool.name) {
                continue;
            }
            let local = McpTool::local_name(&self.name, &tool.name);
            if !seen.insert(local.clone()) {
                tracing::warn!(server = %self.name, tool = %tool.name, "two tools of this MCP server map to `{local}`; the second is left out");
                continue;
            }
            out.push(Arc::new(McpTool::new(self.clone(), local, tool, self.config.call_timeout)));
        }
        Ok(out)
    }

    /// One tool call from a run: cancelled (with `notifications/cancelled` to the server) when
    /// the run is, timed out when it takes longer than the call timeout.
    pub(crate) async fn call(
        &self,
        tool: &str,
        arguments: serde_json::Value,
        cancel: &CancellationToken,
    ) -> Result<CallToolResult, ToolError> {
        let live = self.live().await.map_err(|e| ToolError::new(e.to_string()))?;
        let mut params = CallToolRequestParams::new(tool.to_string());
        if let serde_json::Value::Object(map) = arguments {
            params = params.with_arguments(map);
        }
        // Dropping the request future (cancel, timeout) makes rmcp send `notifications/cancelled`.
        let request = live.service.call_tool(params);
        let timed = async {
            match self.config.call_timeout {
                Some(limit) => tokio::time::timeout(limit, request).await.map_err(|_| limit),
                None => Ok(request.await),
            }
        };
        let outcome = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                return Err(ToolError::with_kind(
                    ToolErrorKind::Cancelled,
                    format!("the call to `{tool}` on MCP server `{}` was cancelled", self.name),
                ));
            }
            outcome = timed => outcome,
        };
        match outcome {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => {
                let closed = matches!(e, ServiceError::TransportClosed | ServiceError::TransportSend(_));
                if closed {
                    live.dead.store(true, Ordering::Release);
                    live.settle(Duration::from_millis(500)).await;
                }
                Err(ToolError::new(format!("`{tool}` failed: {}", self.request_error(&live, e))))
            }
            Err(limit) => Err(ToolError::with_kind(
                ToolErrorKind::Timeout,
                format!(
                    "`{tool}` on MCP server `{}` did not finish within {limit:?}; the call was cancelled",
                    self.name
                ),
            )),
        }
    }
}

/// The tool source an agent reads: the server's tools, loaded again when they changed.
pub(super) struct Source(pub(super) Arc<Shared>);

#[async_trait::async_trait]
impl ToolSource for Source {
    fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    async fn load(&self) -> Result<Vec<Arc<dyn Tool>>, String> {
        self.0.list_tools().await.map_err(|e| e.to_string())
    }
}
