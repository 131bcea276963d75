//! Capabilities: named bundles of tools and instructions (files, web, shell, MCP, skills) that an
//! agent takes as one unit.

mod files;

pub use files::{Files, ReadOnlyFiles, files};
pub use loom_core::capability::Capability;
