//! Tools: the [`Tool`] protocol (from `loom-core`) and the registry an agent keeps.

mod dynamic;
mod registry;

pub(crate) use dynamic::{DynamicTools, ToolSnapshot};
pub use loom_core::tool::*;
pub(crate) use registry::ToolRegistry;
