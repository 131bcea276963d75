//! [`Supervised`]: permissions under which every tool that is not read-only needs a person's
//! approval (the `supervised` runtime profile).

use std::sync::Arc;

use serde_json::Value;

use super::{Decision, Permissions, Scope};
use crate::tool::ToolSpec;

/// Wraps permissions so that every call they would allow of a tool not flagged `read_only` asks
/// the approval handler instead; denials and questions stay as they are, read-only tools are left
/// to the inner permissions.
///
/// ```
/// use loom_agent::governance::{Decision, DefaultPermissions, Permissions, Scope, Supervised};
/// use loom_agent::tool::{ToolFlags, ToolSpec};
/// use serde_json::json;
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let supervised = Supervised::new(Arc::new(DefaultPermissions));
/// let scope = Scope { run_id: "r".into(), session_id: "s".into(), user_id: None };
/// let spec = |flags| ToolSpec { name: "t".into(), description: String::new(), parameters: json!({}), flags };
/// assert!(matches!(supervised.check(&scope, &spec(ToolFlags::new()), &json!({})).await, Decision::Ask(_)));
/// assert_eq!(supervised.check(&scope, &spec(ToolFlags::new().read_only()), &json!({})).await, Decision::Allow);
/// # }
/// ```
pub struct Supervised {
    inner: Arc<dyn Permissions>,
}

impl Supervised {
    /// Supervises `inner`.
    pub fn new(inner: Arc<dyn Permissions>) -> Self {
        Supervised { inner }
    }
}

#[async_trait::async_trait]
impl Permissions for Supervised {
    async fn check(&self, scope: &Scope, tool: &ToolSpec, args: &Value) -> Decision {
        match self.inner.check(scope, tool, args).await {
            Decision::Allow if !tool.flags.read_only => {
                Decision::Ask(format!("`{}` is not read-only, and this agent is supervised", tool.name))
            }
            other => other,
        }
    }
}
