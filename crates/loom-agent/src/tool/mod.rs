//! Tools: the [`Tool`] protocol (from `loom-core`) and the registry an agent keeps.

mod registry;

pub use loom_core::tool::*;
pub(crate) use registry::ToolRegistry;
