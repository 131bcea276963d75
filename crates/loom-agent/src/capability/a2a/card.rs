//! Fetching and reading a remote agent's card (A2A 1.0, §4.4.1): its name, description, skills and
//! the JSON-RPC interface to call.

use serde_json::Value;
use url::Url;

use super::A2aError;

/// What Loom needs from a remote agent card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteCard {
    /// The agent's name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its skills: (name, description).
    pub skills: Vec<(String, String)>,
    /// The JSON-RPC endpoint of its A2A 1.0 interface.
    pub endpoint: String,
    /// Whether it declares streaming.
    pub streaming: bool,
}

/// The card's URL for the URL the developer gave: a URL ending in `.json` is the card itself;
/// any other is the agent's base URL, whose card is at `/.well-known/agent-card.json`.
pub(super) fn card_url(url: &str) -> Result<Url, A2aError> {
    let parsed = Url::parse(url).map_err(|e| A2aError::InvalidUrl { url: url.to_string(), message: e.to_string() })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(A2aError::InvalidUrl { url: url.to_string(), message: "only http and https are supported".into() });
    }
    if parsed.path().ends_with(".json") {
        return Ok(parsed);
    }
    let base = if parsed.path().ends_with('/') { parsed } else { Url::parse(&format!("{parsed}/")).unwrap_or(parsed) };
    base.join(".well-known/agent-card.json")
        .map_err(|e| A2aError::InvalidUrl { url: url.to_string(), message: e.to_string() })
}

fn malformed(url: &Url, message: impl Into<String>) -> A2aError {
    A2aError::MalformedCard { url: url.to_string(), message: message.into() }
}

/// Whether a declared protocol version is 1.0 (a patch number ignored).
fn is_v1_0(version: &str) -> bool {
    let mut parts = version.split('.');
    matches!((parts.next(), parts.next()), (Some("1"), Some("0")))
}

/// Reads a card's JSON. The endpoint must be on the card's origin unless `trust_endpoint`.
pub(super) fn parse(card_url: &Url, card: &Value, trust_endpoint: bool) -> Result<RemoteCard, A2aError> {
    let obj = card.as_object().ok_or_else(|| malformed(card_url, "the card is not a JSON object"))?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| malformed(card_url, "the card has no `name`"))?
        .to_string();
    let description = obj.get("description").and_then(Value::as_str).unwrap_or("").to_string();
    let interfaces = obj.get("supportedInterfaces").and_then(Value::as_array).ok_or_else(|| {
        if obj.contains_key("url") || obj.contains_key("preferredTransport") {
            A2aError::Unsupported {
                url: card_url.to_string(),
                message: "the card is an A2A 0.3 card (`url`, no `supportedInterfaces`); Loom speaks A2A 1.0".into(),
            }
        } else {
            malformed(card_url, "the card has no `supportedInterfaces`")
        }
    })?;
    let offered: Vec<String> = interfaces
        .iter()
        .map(|i| {
            format!(
                "{} {}",
                i.get("protocolBinding").and_then(Value::as_str).unwrap_or("?"),
                i.get("protocolVersion").and_then(Value::as_str).unwrap_or("?")
            )
        })
        .collect();
    let interface = interfaces
        .iter()
        .find(|i| {
            i.get("protocolBinding").and_then(Value::as_str) == Some("JSONRPC")
                && i.get("protocolVersion").and_then(Value::as_str).is_some_and(is_v1_0)
        })
        .ok_or_else(|| A2aError::Unsupported {
            url: card_url.to_string(),
            message: format!(
                "no JSONRPC interface with protocol version 1.0 (the card offers: {})",
                offered.join(", ")
            ),
        })?;
    if interface.get("tenant").and_then(Value::as_str).is_some_and(|t| !t.is_empty()) {
        return Err(A2aError::Unsupported {
            url: card_url.to_string(),
            message: "the interface needs a `tenant` field, which Loom does not send".into(),
        });
    }
    let raw = interface
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(card_url, "the interface has no `url`"))?;
    let endpoint = card_url.join(raw).map_err(|e| malformed(card_url, format!("the interface URL `{raw}`: {e}")))?;
    if !matches!(endpoint.scheme(), "http" | "https") {
        return Err(malformed(card_url, format!("the interface URL `{raw}` is not http or https")));
    }
    if !trust_endpoint && endpoint.origin() != card_url.origin() {
        return Err(A2aError::ForeignEndpoint { card: card_url.to_string(), endpoint: endpoint.to_string() });
    }
    let skills = obj
        .get("skills")
        .and_then(Value::as_array)
        .map(|skills| {
            skills
                .iter()
                .filter_map(|s| {
                    let name = s.get("name").and_then(Value::as_str)?.to_string();
                    Some((name, s.get("description").and_then(Value::as_str).unwrap_or("").to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    let streaming = obj.get("capabilities").and_then(|c| c.get("streaming")).and_then(Value::as_bool).unwrap_or(false);
    Ok(RemoteCard { name, description, skills, endpoint: endpoint.to_string(), streaming })
}

/// A tool name from a card name: lower case, letters, digits, `_` and `-`, at most 64 characters.
pub(super) fn tool_name(card_name: &str) -> String {
    let mut out = String::new();
    for c in card_name.trim().chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let out: String = out.trim_matches('_').chars().take(64).collect();
    if out.is_empty() { "remote_agent".to_string() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn card_urls() {
        assert_eq!(card_url("http://127.0.0.1:9/").unwrap().as_str(), "http://127.0.0.1:9/.well-known/agent-card.json");
        assert_eq!(card_url("http://h/agents/x").unwrap().as_str(), "http://h/agents/x/.well-known/agent-card.json");
        assert_eq!(card_url("https://h/card.json").unwrap().as_str(), "https://h/card.json");
        assert!(matches!(card_url("ftp://h/"), Err(A2aError::InvalidUrl { .. })));
        assert!(matches!(card_url("not a url"), Err(A2aError::InvalidUrl { .. })));
    }

    #[test]
    fn cards() {
        let u = card_url("http://127.0.0.1:8080").unwrap();
        let card = json!({
            "name": "Weather Bot", "description": "Forecasts.",
            "supportedInterfaces": [
                {"url": "http://127.0.0.1:8080/grpc", "protocolBinding": "GRPC", "protocolVersion": "1.0"},
                {"url": "/a2a", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
            ],
            "capabilities": {"streaming": true},
            "skills": [{"id": "w", "name": "weather", "description": "Today's weather", "tags": []}],
        });
        let c = parse(&u, &card, false).unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:8080/a2a");
        assert_eq!(c.skills, vec![("weather".to_string(), "Today's weather".to_string())]);
        assert!(c.streaming);
        assert_eq!(tool_name(&c.name), "weather_bot");
        let mut other = card.clone();
        other["supportedInterfaces"][1]["url"] = json!("http://169.254.169.254/a2a");
        assert!(matches!(parse(&u, &other, false), Err(A2aError::ForeignEndpoint { .. })));
        assert!(parse(&u, &other, true).is_ok());
        let old = json!({"name": "x", "url": "http://127.0.0.1:8080/", "protocolVersion": "0.3.0"});
        assert!(matches!(parse(&u, &old, false), Err(A2aError::Unsupported { .. })));
        let v03 = json!({"name": "x", "supportedInterfaces": [{"url": "/a", "protocolBinding": "JSONRPC", "protocolVersion": "0.3"}]});
        assert!(matches!(parse(&u, &v03, false), Err(A2aError::Unsupported { .. })));
        assert!(matches!(parse(&u, &json!([1]), false), Err(A2aError::MalformedCard { .. })));
        assert!(matches!(parse(&u, &json!({"supportedInterfaces": []}), false), Err(A2aError::MalformedCard { .. })));
        assert_eq!(tool_name("  !!! "), "remote_agent");
    }
}
