//! Permissions: who may run which tool, and approval by a person.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use serde_json::Value;

use crate::tool::ToolSpec;
pub use loom_core::governance::{Approval, ApprovalHandler, ApprovalRequest, Decision, Permissions};
use loom_core::run::Scope;

/// The default policy: tools flagged `destructive` or `requires_permission` need approval; every
/// other tool is allowed.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultPermissions;

#[async_trait::async_trait]
impl Permissions for DefaultPermissions {
    async fn check(&self, _scope: &Scope, tool: &ToolSpec, _args: &Value) -> Decision {
        if tool.flags.destructive {
            Decision::Ask(format!("`{}` is destructive", tool.name))
        } else if tool.flags.requires_permission {
            Decision::Ask(format!("`{}` requires permission", tool.name))
        } else {
            Decision::Allow
        }
    }
}
/// How much [`StandardPermissions`] lets through without asking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PermissionMode {
    /// Tools flagged `destructive` or `requires_permission` (or on the ask list) need approval.
    #[default]
    Default,
    /// Like `Default`, but the edit tools (by default `write_file`, `edit_file`, `write`, `edit`)
    /// run without asking.
    AcceptEdits,
    /// Everything not denied by the deny or allow list runs without asking.
    Bypass,
    /// Only tools flagged `read_only` may run (and those flagged `requires_permission` or on the ask
    /// list still need approval); every other tool is denied, without asking anyone.
    ReadOnly,
}

/// The standard permission policy: a deny list, an allow list, an ask list and a mode.
///
/// A call is decided in this order:
///
/// 1. the tool is on the deny list → deny;
/// 2. an allow list is set and the tool is not on it → deny;
/// 3. [`PermissionMode::ReadOnly`] and the tool is not flagged `read_only` → deny;
/// 4. [`PermissionMode::Bypass`] → allow;
/// 5. [`PermissionMode::AcceptEdits`] and the tool is an edit tool → allow;
/// 6. the tool is flagged `destructive` or `requires_permission`, or is on the ask list → ask;
/// 7. otherwise → allow.
///
/// So in the default mode a flagged tool always needs approval, even when it is on the allow list.
///
/// ```
/// use loom_agent::governance::{PermissionMode, StandardPermissions};
///
/// let policy = StandardPermissions::new()
///     .mode(PermissionMode::AcceptEdits)
///     .deny("shell")
///     .allow_tools(["read_file", "write_file"]);
/// # let _ = policy;
/// ```
#[derive(Clone, Debug)]
pub struct StandardPermissions {
    mode: PermissionMode,
    allowed: Option<HashSet<String>>,
    denied: HashSet<String>,
    ask: HashSet<String>,
    edit_tools: HashSet<String>,
}

impl Default for StandardPermissions {
    fn default() -> Self {
        Self::new()
    }
}

impl StandardPermissions {
    /// The edit tools [`PermissionMode::AcceptEdits`] lets through unless told otherwise.
    pub const DEFAULT_EDIT_TOOLS: [&'static str; 4] = ["write_file", "edit_file", "write", "edit"];

    /// The default mode, no lists.
    pub fn new() -> Self {
        StandardPermissions {
            mode: PermissionMode::Default,
            allowed: None,
            denied: HashSet::new(),
            ask: HashSet::new(),
            edit_tools: Self::DEFAULT_EDIT_TOOLS.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: PermissionMode) -> Self {
        self.mode = mode;
        self
    }

    /// Adds a tool to the allow list. Once the list has a tool, every tool not on it is denied.
    pub fn allow(mut self, tool: impl Into<String>) -> Self {
        self.allowed.get_or_insert_with(HashSet::new).insert(tool.into());
        self
    }

    /// Adds tools to the allow list (an empty iterator still sets the list: every tool is denied).
    pub fn allow_tools<I, S>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed.get_or_insert_with(HashSet::new).extend(tools.into_iter().map(Into::into));
        self
    }

    /// Adds a tool to the deny list: it never runs.
    pub fn deny(mut self, tool: impl Into<String>) -> Self {
        self.denied.insert(tool.into());
        self
    }

    /// Adds tools to the deny list.
    pub fn deny_tools<I, S>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.denied.extend(tools.into_iter().map(Into::into));
        self
    }

    /// Adds a tool to the ask list: it needs approval as if it were flagged `requires_permission`.
    pub fn ask(mut self, tool: impl Into<String>) -> Self {
        self.ask.insert(tool.into());
        self
    }

    /// Replaces the edit tools (see [`PermissionMode::AcceptEdits`]).
    pub fn edit_tools<I, S>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.edit_tools = tools.into_iter().map(Into::into).collect();
        self
    }

    /// The decision for a tool, without the async wrapper.
    pub fn decide(&self, tool: &ToolSpec) -> Decision {
        let name = tool.name.as_str();
        if self.denied.contains(name) {
            return Decision::Deny(format!("`{name}` is on the deny list"));
        }
        if let Some(allowed) = &self.allowed
            && !allowed.contains(name)
        {
            return Decision::Deny(format!("`{name}` is not on the allow list"));
        }
        match self.mode {
            PermissionMode::ReadOnly if !tool.flags.read_only => {
                return Decision::Deny(format!(
                    "`{name}` is not a read-only tool, and the agent runs in read-only mode (only tools flagged \
                     read_only may run)"
                ));
            }
            PermissionMode::Bypass => return Decision::Allow,
            PermissionMode::AcceptEdits if self.edit_tools.contains(name) => return Decision::Allow,
            _ => {}
        }
        if tool.flags.destructive {
            Decision::Ask(format!("`{name}` is destructive"))
        } else if tool.flags.requires_permission {
            Decision::Ask(format!("`{name}` requires permission"))
        } else if self.ask.contains(name) {
            Decision::Ask(format!("`{name}` is on the ask list"))
        } else {
            Decision::Allow
        }
    }
}

#[async_trait::async_trait]
impl Permissions for StandardPermissions {
    async fn check(&self, _scope: &Scope, tool: &ToolSpec, _args: &Value) -> Decision {
        self.decide(tool)
    }
}

/// A permission policy per user: each user's own policy, else the default one. Runs without a user
/// id get the default.
///
/// ```
/// use loom_agent::governance::{PerUserPermissions, PermissionMode, StandardPermissions};
///
/// let policy = PerUserPermissions::new(StandardPermissions::new().deny("shell"))
///     .user("admin", StandardPermissions::new().mode(PermissionMode::Bypass));
/// # let _ = policy;
/// ```
#[derive(Clone)]
pub struct PerUserPermissions {
    default: Arc<dyn Permissions>,
    users: HashMap<String, Arc<dyn Permissions>>,
}

impl std::fmt::Debug for PerUserPermissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut users: Vec<&str> = self.users.keys().map(String::as_str).collect();
        users.sort_unstable();
        f.debug_struct("PerUserPermissions").field("users", &users).finish_non_exhaustive()
    }
}

impl PerUserPermissions {
    /// Routes every user without a policy of their own to `default`.
    pub fn new(default: impl Permissions) -> Self {
        PerUserPermissions { default: Arc::new(default), users: HashMap::new() }
    }

    /// Gives `user_id` its own policy.
    pub fn user(mut self, user_id: impl Into<String>, policy: impl Permissions) -> Self {
        self.users.insert(user_id.into(), Arc::new(policy));
        self
    }
}

#[async_trait::async_trait]
impl Permissions for PerUserPermissions {
    async fn check(&self, scope: &Scope, tool: &ToolSpec, args: &Value) -> Decision {
        let policy = scope.user_id.as_deref().and_then(|user| self.users.get(user)).unwrap_or(&self.default);
        policy.check(scope, tool, args).await
    }
}

/// An approval handler made from an async function or closure.
///
/// ```
/// use loom_agent::governance::{Approval, FnApproval};
///
/// let handler = FnApproval::new(|request| async move {
///     if request.tool.name == "rm" { Approval::Deny("no deleting".into()) } else { Approval::Allow }
/// });
/// # let _ = handler;
/// ```
pub struct FnApproval<F> {
    f: F,
}

impl<F> std::fmt::Debug for FnApproval<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnApproval").finish_non_exhaustive()
    }
}

impl<F, Fut> FnApproval<F>
where
    F: Fn(ApprovalRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Approval> + Send + 'static,
{
    /// Wraps `f`.
    pub fn new(f: F) -> Self {
        FnApproval { f }
    }
}

#[async_trait::async_trait]
impl<F, Fut> ApprovalHandler for FnApproval<F>
where
    F: Fn(ApprovalRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Approval> + Send + 'static,
{
    async fn approve(&self, request: ApprovalRequest) -> Approval {
        (self.f)(request).await
    }
}
