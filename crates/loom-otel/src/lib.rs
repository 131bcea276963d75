//! OpenTelemetry for loom-agent.
//!
//! loom-agent emits `tracing` spans (`invoke_agent`, `chat`, `execute_tool`) and metric events that
//! follow the OpenTelemetry GenAI semantic conventions. This crate turns them into OpenTelemetry
//! spans and metrics: [`layers`] builds the `tracing` layers for your own pipeline, and, with the
//! `otlp` feature, [`otlp::init`] installs a complete pipeline exporting over OTLP/HTTP.
//!
//! ```
//! use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let exporter = InMemorySpanExporter::default();
//! let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
//! let subscriber = tracing_subscriber::registry().with(loom_otel::trace_layer(&provider));
//! let _guard = tracing::subscriber::set_default(subscriber);
//! // … run agents: their spans reach `exporter`.
//! ```

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use tracing::Subscriber;
use tracing_opentelemetry::{MetricsLayer, OpenTelemetryLayer};
use tracing_subscriber::registry::LookupSpan;

/// The instrumentation scope name of Loom's spans and metrics.
pub const SCOPE: &str = "loom-agent";

/// A `tracing` layer sending spans to `provider`'s tracer.
pub fn trace_layer<S>(provider: &SdkTracerProvider) -> OpenTelemetryLayer<S, Tracer>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer(SCOPE)).with_tracked_inactivity(false)
}

/// A `tracing` layer turning Loom's metric events (`histogram.*`, `monotonic_counter.*` fields on
/// target `loom::metrics`) into instruments of `provider`.
pub fn metrics_layer<S>(provider: &SdkMeterProvider) -> MetricsLayer<S, SdkMeterProvider>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    MetricsLayer::new(provider.clone())
}

/// Errors setting up a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The exporter could not be built.
    #[error("cannot build the OpenTelemetry exporter: {0}")]
    Exporter(String),
    /// A global subscriber is already installed.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Keeps the providers alive; flushes and shuts them down when dropped.
pub struct OtelGuard {
    traces: SdkTracerProvider,
    metrics: SdkMeterProvider,
}

impl OtelGuard {
    /// The tracer provider.
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.traces
    }

    /// The meter provider.
    pub fn meter_provider(&self) -> &SdkMeterProvider {
        &self.metrics
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        let _ = self.traces.force_flush();
        let _ = self.metrics.force_flush();
        let _ = self.traces.shutdown();
        let _ = self.metrics.shutdown();
    }
}

/// OTLP/HTTP export (the `otlp` feature).
#[cfg(feature = "otlp")]
pub mod otlp {
    use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    use super::{Error, OtelGuard, metrics_layer, trace_layer};

    /// Installs a global `tracing` subscriber that exports Loom's spans and metrics over
    /// OTLP/HTTP to `endpoint` (such as `http://localhost:4318`), as `service_name`.
    pub fn init(endpoint: &str, service_name: &str) -> Result<OtelGuard, Error> {
        let base = endpoint.trim_end_matches('/');
        let resource = Resource::builder().with_service_name(service_name.to_string()).build();
        let spans = SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{base}/v1/traces"))
            .build()
            .map_err(|e| Error::Exporter(e.to_string()))?;
        let metrics = MetricExporter::builder()
            .with_http()
            .with_endpoint(format!("{base}/v1/metrics"))
            .build()
            .map_err(|e| Error::Exporter(e.to_string()))?;
        let traces = SdkTracerProvider::builder().with_batch_exporter(spans).with_resource(resource.clone()).build();
        let meters = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics).build())
            .with_resource(resource)
            .build();
        let subscriber = tracing_subscriber::registry().with(trace_layer(&traces)).with(metrics_layer(&meters));
        tracing::subscriber::set_global_default(subscriber).map_err(|_| Error::AlreadyInstalled)?;
        Ok(OtelGuard { traces, metrics: meters })
    }
}
