//! Loom's metric events, checked through an OpenTelemetry meter provider with an in-memory exporter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::{Agent, Usage};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "current_thread")]
async fn token_usage_latency_and_cost_become_instruments() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder().with_reader(PeriodicReader::builder(exporter.clone()).build()).build();
    let subscriber = tracing_subscriber::registry().with(loom_otel::metrics_layer(&provider));
    let _guard = tracing::subscriber::set_default(subscriber);
    let model = ScriptedModel::new([ScriptedTurn::text("hi").with_usage(Usage {
        input_tokens: 40,
        output_tokens: 2,
        cost_usd: 0.0125,
        ..Usage::default()
    })]);
    let agent = Agent::builder().model(model).build().unwrap();
    agent.run("hello").await.unwrap();
    provider.force_flush().unwrap();
    let names: Vec<String> = exporter
        .get_finished_metrics()
        .unwrap()
        .iter()
        .flat_map(|rm| rm.scope_metrics().flat_map(|sm| sm.metrics().map(|m| m.name().to_string())).collect::<Vec<_>>())
        .collect();
    for expected in ["gen_ai.client.token.usage", "gen_ai.client.operation.duration", "loom.cost.usd"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
}
