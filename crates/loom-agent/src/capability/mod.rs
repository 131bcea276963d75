//! Capabilities: named bundles of tools and instructions (files, web, shell, MCP, skills) that an
//! agent takes as one unit.

mod files;
#[cfg(feature = "web")]
pub mod web;

pub use files::Files;
pub use loom_core::capability::Capability;
#[cfg(feature = "web")]
pub use web::{Web, web};
