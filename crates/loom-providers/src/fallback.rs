//! Ordered failover across models.

use std::sync::Arc;

use futures::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};

use loom_core::error::ModelError;
use loom_core::model::{LanguageModel, ModelCapabilities, ModelRequest, ModelStream};

/// Tries each model in order; moves to the next on an error that another provider might not have
/// (transient, rate limited, unavailable, authentication). Invalid requests, content filters and
/// context-length errors are returned at once: another model would refuse them too, or the caller
/// must change the request. Failover happens only before a stream starts.
pub struct FallbackModel {
    models: Vec<Arc<dyn LanguageModel>>,
    name: String,
    last_served: AtomicUsize,
}

impl FallbackModel {
    /// Failover across `models`, first to last.
    pub fn new(models: Vec<Arc<dyn LanguageModel>>) -> Self {
        let name = models.iter().map(|m| m.name().to_string()).collect::<Vec<_>>().join(" > ");
        FallbackModel { models, name, last_served: AtomicUsize::new(0) }
    }

    /// The index of the model that served the last call.
    pub fn last_served(&self) -> usize {
        self.last_served.load(Ordering::Relaxed)
    }

    fn falls_over(e: &ModelError) -> bool {
        matches!(
            e,
            ModelError::Transient { .. }
                | ModelError::RateLimited { .. }
                | ModelError::Unavailable(_)
                | ModelError::Authentication(_)
                | ModelError::Protocol(_)
        )
    }
}

impl std::fmt::Debug for FallbackModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackModel").field("models", &self.name).finish()
    }
}

#[async_trait::async_trait]
impl LanguageModel for FallbackModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn provider(&self) -> &str {
        "fallback"
    }

    fn capabilities(&self) -> ModelCapabilities {
        // What every model in the chain supports.
        let mut caps = ModelCapabilities { tools: true, native_structured_output: true, context_window: None };
        for m in &self.models {
            let c = m.capabilities();
            caps.tools &= c.tools;
            caps.native_structured_output &= c.native_structured_output;
            caps.context_window = match (caps.context_window, c.context_window) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        caps
    }

    async fn stream(&self, request: &ModelRequest<'_>) -> Result<ModelStream, ModelError> {
        let mut last = ModelError::Unavailable("the fallback chain is empty".into());
        for (i, model) in self.models.iter().enumerate() {
            let result = match model.stream(request).await {
                // A stream whose first item is already an error has given the caller nothing yet:
                // that error may still fail over (models that open their stream before the call).
                Ok(mut s) => match s.next().await {
                    Some(Err(e)) => Err(e),
                    Some(Ok(first)) => Ok(Box::pin(futures::stream::iter([Ok(first)]).chain(s)) as ModelStream),
                    None => Ok(s),
                },
                Err(e) => Err(e),
            };
            match result {
                Ok(s) => {
                    self.last_served.store(i, Ordering::Relaxed);
                    return Ok(s);
                }
                Err(e) if Self::falls_over(&e) => {
                    tracing::debug!(model = model.name(), error = %e, "falling over to the next model");
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}
