//! Models: the [`LanguageModel`] trait every provider implements, the [`Model`] handle users pass
//! around (with constructors for every provider), generation settings, and the built-in offline
//! models ([`ScriptedModel`], [`EchoModel`]).
//!
//! The HTTP providers are the `loom-providers` crate, here as `providers` (the `providers`
//! feature, on by default); the embedded local model is the `loom-local` crate, here as `local`
//! (the `local` feature).

mod echo;
mod handle;
mod scripted;

/// The embedded local model (the `local` feature): the `loom-local` crate.
#[cfg(feature = "local")]
pub use loom_local as local;
/// Model providers over HTTP (the `providers` feature): the `loom-providers` crate.
#[cfg(feature = "providers")]
pub use loom_providers as providers;

pub use echo::EchoModel;
pub use handle::{ACCEPTED_MODEL_STRINGS, Model};
#[cfg(feature = "local")]
pub use local::LocalModel;
pub use loom_core::model::*;
pub use scripted::{FnModel, RecordedRequest, ScriptedModel, ScriptedToolCall, ScriptedTurn};

use crate::error::Error;

/// Resolves what an agent was given as a model: a value as it is, a model string through
/// [`Model::parse`].
pub fn resolve_model(model: impl IntoModel) -> Result<SharedModel, Error> {
    match model.into_model_ref()? {
        ModelRef::Model(m) => Ok(m),
        ModelRef::Name(name) => Model::parse(&name).map(|m| m.0),
    }
}

impl IntoModel for Model {
    fn into_model_ref(self) -> Result<ModelRef, Error> {
        Ok(ModelRef::Model(self.0))
    }
}

/// Resolves a model string; see [`Model::parse`].
pub fn parse_model(spec: &str) -> Result<SharedModel, Error> {
    Model::parse(spec).map(|m| m.0)
}
