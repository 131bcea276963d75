//! Elicitation: a server asking the user for input in the middle of a request. Declined unless the
//! server value was given a handler ([`crate::McpServer::elicitation`]); only then is the
//! capability advertised.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What a server asks for.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ElicitationRequest {
    /// The server's name (as in `SERVER__TOOL`).
    pub server: String,
    /// The server's message to the user.
    pub message: String,
    /// The JSON Schema of the answer the server wants (an object of simple fields).
    pub schema: serde_json::Value,
}

/// The answer to an [`ElicitationRequest`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ElicitationAnswer {
    /// The user answered: an object matching the requested schema.
    Accept(serde_json::Value),
    /// The user declined to answer; the server's operation goes on without it.
    Decline,
    /// The user cancelled the whole operation.
    Cancel,
}

type BoxFuture = Pin<Box<dyn Future<Output = ElicitationAnswer> + Send>>;

/// A shared elicitation callback.
pub(crate) type ElicitationFn = Arc<dyn Fn(ElicitationRequest) -> BoxFuture + Send + Sync>;

pub(crate) fn boxed<F, Fut>(f: F) -> ElicitationFn
where
    F: Fn(ElicitationRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ElicitationAnswer> + Send + 'static,
{
    Arc::new(move |request| Box::pin(f(request)))
}
