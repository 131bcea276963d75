//! Parsing an agent configuration: unknown keys with "did you mean", inline secrets, variable
//! names, and the shape of a file of several agents.

use super::AgentConfig;
use crate::error::Error;

/// Keys that would hold a secret inline, and what to write instead.
const SECRET_KEYS: &[(&str, &str)] = &[
    ("api_key", "api_key_env = \"OPENAI_API_KEY\""),
    ("apikey", "api_key_env = \"OPENAI_API_KEY\""),
    ("key", "api_key_env = \"OPENAI_API_KEY\""),
    ("token", "api_key_env = \"…\""),
    ("secret", "secret_env = \"LOOM_AUDIT_KEY\""),
    ("password", "journal_env = \"DATABASE_URL\""),
];

/// The fields of `Generation` (a loom-core type that accepts unknown keys itself).
const GENERATION_FIELDS: &[&str] = &["temperature", "max_output_tokens", "top_p", "stop", "seed", "extensions"];

pub(super) fn parse(text: &str) -> Result<AgentConfig, Error> {
    let table: toml::Table = toml::from_str(text).map_err(|e| Error::Config(format!("invalid TOML: {e}")))?;
    find_secrets(&table, "")?;
    let mut ignored = Vec::new();
    let de = toml::Deserializer::parse(text).map_err(|e| Error::Config(format!("invalid TOML: {e}")))?;
    let config: AgentConfig = serde_ignored::deserialize(de, |path| ignored.push(path.to_string()))
        .map_err(|e| Error::Config(with_suggestion(&e.to_string())))?;
    if let Some(path) = ignored.first() {
        let path = path.replace(".?", "");
        let path = path.trim_start_matches("?.");
        let key = path.rsplit('.').next().unwrap_or(path);
        let hint = suggest(key, GENERATION_FIELDS).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
        return Err(Error::Config(format!("unknown key `{path}`{hint}")));
    }
    check_shape(&config)?;
    Ok(config)
}

/// Refuses keys that hold secrets and URLs with a password, anywhere in the file.
fn find_secrets(table: &toml::Table, prefix: &str) -> Result<(), Error> {
    for (key, value) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        if let Some((_, instead)) = SECRET_KEYS.iter().find(|(k, _)| key.eq_ignore_ascii_case(k)) {
            return Err(Error::Config(format!(
                "`{path}`: secrets are not written in the configuration; put the value in an environment \
                 variable and name it, e.g. {instead}"
            )));
        }
        check_value(value, &path)?;
    }
    Ok(())
}

fn check_value(value: &toml::Value, path: &str) -> Result<(), Error> {
    match value {
        toml::Value::Table(t) => find_secrets(t, path),
        toml::Value::Array(items) => items.iter().try_for_each(|v| check_value(v, path)),
        toml::Value::String(s) if url_has_password(s) => Err(Error::Config(format!(
            "`{path}`: the URL carries a password; put the whole URL in an environment variable and name it \
             (e.g. journal_env = \"DATABASE_URL\")"
        ))),
        _ => Ok(()),
    }
}

/// `scheme://user:password@host…`.
fn url_has_password(s: &str) -> bool {
    let Some((_, rest)) = s.split_once("://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// Adds "did you mean" to serde's `unknown field `x`, expected one of `a`, `b`` messages.
fn with_suggestion(message: &str) -> String {
    let Some(start) = message.find("unknown field `") else { return message.to_string() };
    let rest = &message[start + "unknown field `".len()..];
    let Some(end) = rest.find('`') else { return message.to_string() };
    let field = &rest[..end];
    let expected: Vec<&str> = rest[end + 1..].split('`').skip(1).step_by(2).collect();
    match suggest(field, &expected) {
        Some(s) => format!("{}; did you mean `{s}`?", message.trim_end()),
        None => message.to_string(),
    }
}

/// The known name nearest to `key`, when it is near enough to be a typo.
fn suggest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), *k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_env(value: Option<&str>, key: &str) -> Result<(), Error> {
    match value {
        Some(v) if !valid_env_name(v) => Err(Error::Config(format!(
            "`{key}` names an environment variable (letters, digits and `_`), not its value: got a value \
             that is not a variable name"
        ))),
        _ => Ok(()),
    }
}

fn check_agent(config: &AgentConfig, label: &str) -> Result<(), Error> {
    let at = |k: &str| if label.is_empty() { k.to_string() } else { format!("{label}.{k}") };
    check_env(config.api_key_env.as_deref(), &at("api_key_env"))?;
    check_env(config.journal_env.as_deref(), &at("journal_env"))?;
    if let Some(audit) = &config.audit_log {
        check_env(Some(&audit.secret_env), &at("audit_log.secret_env"))?;
    }
    for (i, cap) in config.capabilities.iter().enumerate() {
        if let super::CapabilityConfig::A2a { token_env, .. } = cap {
            check_env(token_env.as_deref(), &at(&format!("capabilities[{i}].token_env")))?;
        }
    }
    if config.journal.is_some() && config.journal_env.is_some() {
        return Err(Error::Config(format!("set `{}` or `{}`, not both", at("journal"), at("journal_env"))));
    }
    Ok(())
}

fn check_shape(config: &AgentConfig) -> Result<(), Error> {
    check_agent(config, "")?;
    if config.agents.is_empty() {
        return Ok(());
    }
    let top = AgentConfig { agents: Default::default(), server: None, ..config.clone() };
    if top != AgentConfig::default() {
        return Err(Error::Config(
            "a file with [agents.NAME] tables keeps every agent setting inside its table; \
             only [server] may stand at the top"
                .into(),
        ));
    }
    for (name, agent) in &config.agents {
        let label = format!("agents.{name}");
        if !agent.agents.is_empty() || agent.server.is_some() {
            return Err(Error::Config(format!("`{label}`: agents and server tables belong at the top of the file")));
        }
        if agent.name.as_ref().is_some_and(|n| n != name) {
            return Err(Error::Config(format!("`{label}.name` differs from the table's name; drop it")));
        }
        check_agent(agent, &label)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_found() {
        assert!(url_has_password("postgres://u:p@h/db"));
        assert!(!url_has_password("postgres://u@h/db"));
        assert!(!url_has_password("sqlite:./loom.db"));
        assert!(!url_has_password("https://h/a@b:c"));
    }

    #[test]
    fn suggestions_are_near() {
        assert_eq!(suggest("modle", &["model", "memory"]), Some("model"));
        assert_eq!(suggest("zzz", &["model", "memory"]), None);
    }
}
