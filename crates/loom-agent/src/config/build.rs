//! From an [`AgentConfig`] to an [`AgentBuilder`].

use super::{AgentConfig, ApprovalConfig, CapabilityConfig, GuardrailConfig, ToolRegistry};
use crate::AgentBuilder;
use crate::error::Error;
use crate::governance::{
    Approval, FnApproval, InjectionAction, InjectionGuard, PermissionMode, PiiAction, PiiGuard, RateLimitMode,
    RegexAction, RegexGuard, StandardBudget, StandardPermissions, TokenBucketLimiter,
};
use crate::model::Model;

fn env_value(var: &str, key: &str) -> Result<String, Error> {
    std::env::var(var)
        .map_err(|_| Error::Config(format!("`{key}` names the environment variable {var}, which is not set")))
}

pub(super) fn journal_url(config: &AgentConfig) -> Result<Option<String>, Error> {
    match (&config.journal, &config.journal_env) {
        (Some(url), _) => Ok(Some(url.clone())),
        (None, Some(var)) => env_value(var, "journal_env").map(Some),
        (None, None) => Ok(None),
    }
}

pub(super) fn builder(config: &AgentConfig, registry: &ToolRegistry) -> Result<AgentBuilder, Error> {
    let mut b = AgentBuilder::default();
    if let Some(name) = &config.name {
        b = b.name(name);
    }
    if let Some(spec) = &config.model {
        let key = config.api_key_env.as_deref().map(|v| env_value(v, "api_key_env")).transpose()?;
        b = b.model(Model::parse_with_key(spec, config.base_url.as_deref(), key.as_deref())?);
    } else if config.base_url.is_some() || config.api_key_env.is_some() {
        return Err(Error::Config("`base_url` and `api_key_env` need a `model`".into()));
    }
    if let Some(i) = &config.instructions {
        b = b.instructions(i);
    }
    for name in &config.tools {
        let tool = registry.get(name).ok_or_else(|| {
            let known = registry.names();
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            Error::Config(format!("unknown tool `{name}` in `tools`; the program offers: {known}"))
        })?;
        b = b.tool(tool);
    }
    for cap in &config.capabilities {
        b = match cap {
            CapabilityConfig::Files { root, writable } => {
                let files = crate::capability::files(root);
                b.capability(if *writable { files.writable() } else { files.read_only() })
            }
            CapabilityConfig::Web { allow_hosts } => {
                #[cfg(feature = "web")]
                {
                    let mut web = crate::capability::web();
                    for h in allow_hosts {
                        web = web.allow_host(h);
                    }
                    b.capability(web)
                }
                #[cfg(not(feature = "web"))]
                {
                    let _ = allow_hosts;
                    return Err(Error::Config("the web capability needs loom-agent's `web` feature".into()));
                }
            }
            CapabilityConfig::Shell { root } => b.capability(crate::capability::shell(root)),
            CapabilityConfig::Skills { dir } => {
                b.capability(crate::capability::skills(dir).map_err(|e| Error::Config(format!("skills: {e}")))?)
            }
            CapabilityConfig::A2a { url, token_env, name, timeout } => {
                #[cfg(feature = "a2a")]
                {
                    let mut remote = crate::capability::a2a(url);
                    if let Some(var) = token_env {
                        remote = remote.bearer_env(var);
                    }
                    if let Some(name) = name {
                        remote = remote.name(name);
                    }
                    if let Some(t) = timeout {
                        remote = remote.timeout(*t);
                    }
                    b.capability(remote)
                }
                #[cfg(not(feature = "a2a"))]
                {
                    let _ = (url, token_env, name, timeout);
                    return Err(Error::Config("the a2a capability needs loom-agent's `a2a` feature".into()));
                }
            }
        };
    }
    if let Some(g) = &config.generation {
        b = b.generation(g.clone());
    }
    if let Some(r) = &config.runtime {
        let mut runtime = match r.profile.as_deref().unwrap_or("sdk") {
            "sdk" => crate::Runtime::sdk(),
            "long_running" => crate::Runtime::long_running(Vec::<String>::new()),
            "supervised" => crate::Runtime::supervised(),
            other => {
                return Err(Error::Config(format!(
                    "unknown runtime profile `{other}`; known: sdk, long_running, supervised"
                )));
            }
        };
        runtime = runtime.with_criteria(r.criteria.clone());
        if let Some(t) = r.max_turns {
            runtime = runtime.with_max_turns(t);
        }
        if r.timeout.is_some() {
            runtime.timeout = r.timeout;
        }
        b = b.runtime(runtime);
    }
    if let Some(a) = &config.architecture {
        b = b.architecture_name(a);
    }
    if let Some(v) = config.max_turns {
        b = b.max_turns(v);
    }
    if let Some(v) = config.timeout {
        b = b.timeout(v);
    }
    if let Some(v) = config.output_retries {
        b = b.output_retries(v);
    }
    if let Some(v) = config.tool_output_limit {
        b = b.tool_output_limit(v);
    }
    if let Some(v) = config.tool_timeout {
        b = b.tool_timeout(v);
    }
    if let Some(url) = journal_url(config)? {
        b = b.journal(url.as_str());
    }
    if let Some(v) = config.lease_ttl {
        b = b.lease_ttl(v);
    }
    if let Some(m) = &config.memory {
        b = b.memory(m.as_str());
    }
    if let Some(on) = config.memory_tools {
        b = b.memory_tools(on);
    }
    if let Some(c) = &config.budget {
        b = b.budget(budget(c));
    }
    if let Some(p) = &config.permissions {
        let mode = match p.mode.as_deref().unwrap_or("default") {
            "default" => PermissionMode::Default,
            "accept_edits" => PermissionMode::AcceptEdits,
            "bypass" => PermissionMode::Bypass,
            "read_only" => PermissionMode::ReadOnly,
            other => {
                return Err(Error::Config(format!(
                    "unknown permissions.mode `{other}`; known: default, accept_edits, bypass, read_only"
                )));
            }
        };
        let mut perms = StandardPermissions::new().mode(mode);
        if !p.allow.is_empty() {
            perms = perms.allow_tools(p.allow.clone());
        }
        perms = perms.deny_tools(p.deny.clone());
        for t in &p.ask {
            perms = perms.ask(t);
        }
        b = b.permissions(perms);
    }
    match config.approval.unwrap_or_default() {
        ApprovalConfig::Deny => {}
        ApprovalConfig::Allow => b = b.approval_handler(FnApproval::new(|_| async { Approval::Allow })),
        ApprovalConfig::Defer => b = b.approval_handler(FnApproval::new(|_| async { Approval::Defer })),
    }
    for g in &config.guardrails {
        b = match g {
            GuardrailConfig::Pii { action } => {
                let action = match action.as_deref().unwrap_or("redact") {
                    "redact" => PiiAction::Redact,
                    "block" => PiiAction::Block,
                    other => return Err(Error::Config(format!("unknown pii action `{other}`; known: redact, block"))),
                };
                b.guardrail(PiiGuard::new().action(action))
            }
            GuardrailConfig::Injection { action } => {
                let action = match action.as_deref().unwrap_or("block") {
                    "block" => InjectionAction::Block,
                    "redact" => InjectionAction::Redact,
                    other => {
                        return Err(Error::Config(format!("unknown injection action `{other}`; known: block, redact")));
                    }
                };
                b.guardrail(InjectionGuard::new().action(action))
            }
            GuardrailConfig::Regex { name, pattern, replace } => {
                let action = match replace {
                    Some(r) => RegexAction::Redact(r.clone()),
                    None => RegexAction::Block,
                };
                b.guardrail(RegexGuard::new(name, pattern, action)?)
            }
        };
    }
    if let Some(r) = &config.rate_limiter {
        b = b.rate_limiter(rate_limiter(r)?);
    }
    if let Some(a) = &config.audit_log {
        let secret = env_value(&a.secret_env, "audit_log.secret_env")?;
        b = b.audit_log(crate::governance::FileAuditLog::open(&a.path, secret)?);
    }
    if let Some(on) = config.capture_content {
        b = b.telemetry(crate::telemetry::Telemetry::new().capture_content(on));
    }
    Ok(b)
}

fn budget(c: &super::BudgetConfig) -> StandardBudget {
    let mut b = StandardBudget::new();
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = c.$f { b = b.$f(v); } )* };
    }
    set!(
        max_tokens,
        max_input_tokens,
        max_output_tokens,
        max_cost_usd,
        max_wall_clock,
        max_turns,
        max_tool_calls,
        per_user_max_tokens,
        per_user_max_cost_usd,
        total_max_tokens,
        total_max_cost_usd,
        soft_warning_at
    );
    b
}

/// The token bucket a [`super::RateLimiterConfig`] describes.
pub(super) fn rate_limiter(c: &super::RateLimiterConfig) -> Result<TokenBucketLimiter, Error> {
    if c.capacity == 0 || c.refill_per_second.is_nan() || c.refill_per_second <= 0.0 {
        return Err(Error::Config("a rate limiter needs capacity ≥ 1 and refill_per_second > 0".into()));
    }
    let mode = match c.mode.as_deref().unwrap_or("wait") {
        "wait" => RateLimitMode::Wait,
        "reject" => RateLimitMode::Reject,
        other => return Err(Error::Config(format!("unknown rate limiter mode `{other}`; known: wait, reject"))),
    };
    Ok(TokenBucketLimiter::per_user(c.capacity, c.refill_per_second).mode(mode))
}
