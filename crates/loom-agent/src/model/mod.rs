//! Models: the [`LanguageModel`] trait every provider implements, the [`Model`] handle users pass
//! around (with constructors for every provider), generation settings, and the built-in offline
//! models ([`ScriptedModel`], [`EchoModel`]).

mod echo;
mod handle;
#[cfg(feature = "local")]
pub mod local;
#[cfg(feature = "providers")]
pub mod providers;
mod scripted;

pub use echo::EchoModel;
pub use handle::{ACCEPTED_MODEL_STRINGS, Model};
#[cfg(feature = "local")]
pub use local::LocalModel;
pub use loom_core::model::*;
pub use scripted::{FnModel, ScriptedModel, ScriptedToolCall, ScriptedTurn};

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
