//! Secrets are redacted from audit payloads before they are hashed and written.

use serde_json::Value;

/// What a redacted value or secret becomes.
pub const REDACTED: &str = "[redacted]";

/// Redacts secrets in place: what audit logs do to every payload before hashing and writing it.
///
/// The rules, applied to the whole payload at every depth:
///
/// 1. **Secret-named keys.** The value of an object key is replaced by `"[redacted]"` (unless it is
///    `null`) when the key, split into words (`snake_case`, `kebab-case`, `camelCase`, spaces, dots)
///    and lower-cased, ends in one of `password`, `passwd`, `passphrase`, `pwd`, `secret`, `token`,
///    `authorization`, `apikey`, `cookie`, `credential(s)`, or in `api key`, `private key`,
///    `secret key`, `access key`, `signing key`, `encryption key`. So `api_key`, `x-api-key`,
///    `apiKey`, `Authorization`, `client_secret`, `accessToken`, `AWS_SECRET_ACCESS_KEY` are
///    redacted; `input_tokens`, `max_tokens`, `token_count`, `key` are not.
/// 2. **Key-shaped strings.** Inside any string, these tokens (runs of ASCII letters, digits, `_`
///    and `-` not preceded by one) become `[redacted]`: `sk-…`, `sk_live_…`, `sk_test_…`,
///    `rk_live_…` (OpenAI, Anthropic `sk-ant-…`, Stripe) of 20+ characters with a digit; `AIza…`
///    (Google) of 30+; `ghp_`/`gho_`/`ghu_`/`ghs_`/`ghr_`/`github_pat_` (GitHub) of 20+ with a digit;
///    `glpat-…` (GitLab) of 20+; `xoxb-`/`xoxp-`/`xoxa-`/`xoxr-`/`xoxs-`/`xapp-` (Slack) of 15+;
///    `hf_…` (Hugging Face) of 30+; `AKIA…`/`ASIA…` (AWS access key ids) of exactly 20 upper-case
///    letters and digits.
/// 3. **Bearer credentials.** `Bearer <credential>` (any case) with a credential of 8+ characters
///    becomes `[redacted]`, scheme word included.
/// 4. **Secrets after a key in text.** In `…key=V`, `…token: V`, `"secret": "V"` and the like (a word
///    ending in `key`, `token`, `secret`, `password`, `passwd` or `pwd`, an optional quote, `=` or
///    `:`, an optional quote), the value `V` becomes `[redacted]`: for the password words any
///    value; for the others a value of 16+ characters of hex/base64/base64url/`.` (a long secret,
///    not a word or a number).
///
/// A string that is nothing but a secret therefore becomes exactly `"[redacted]"`; a longer text
/// keeps its words and loses only the secret. Redaction is best effort: it is meant to keep
/// well-known credential shapes out of the log, not to replace keeping secrets out of payloads.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if !item.is_null() && is_secret_key(key) {
                    *item = Value::String(REDACTED.to_string());
                } else {
                    redact(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(text) => {
            if let Some(clean) = redact_text(text) {
                *text = clean;
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The text with secrets replaced by `[redacted]`, or `None` when it holds none (rules 2 to 4 of
/// [`redact`]).
pub fn redact_text(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    // Quick exit for the common case: nothing that could start any rule. Every key shape has a `-`
    // or `_` but `AIza…`, `AKIA…` and `ASIA…`; rule 4 needs `=` or `:`; rule 3 a space.
    if bytes.len() < 8 {
        return None;
    }
    let maybe = bytes.iter().any(|b| matches!(b, b'-' | b'_' | b'=' | b':' | b' '))
        || text.contains("AIza")
        || text.contains("AKIA")
        || text.contains("ASIA");
    if !maybe {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let lower = lower.as_bytes();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    bearer_spans(bytes, lower, &mut spans);
    token_spans(text, &mut spans);
    keyed_spans(bytes, lower, &mut spans);
    if spans.is_empty() {
        return None;
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        if end <= at {
            continue;
        }
        let start = start.max(at);
        out.push_str(&text[at..start]);
        if !out.ends_with(REDACTED) || start > at {
            out.push_str(REDACTED);
        }
        at = end;
    }
    out.push_str(&text[at..]);
    Some(out)
}

fn is_secret_key(key: &str) -> bool {
    // Most keys hold none of the words: decide those without allocating.
    const HINTS: [&[u8]; 7] = [b"pass", b"pwd", b"secret", b"token", b"auth", b"key", b"cookie"];
    let lower_has = |hint: &[u8]| key.as_bytes().windows(hint.len()).any(|w| w.eq_ignore_ascii_case(hint));
    if !HINTS.iter().any(|h| lower_has(h)) && !lower_has(b"credential") {
        return false;
    }
    let words = key_words(key);
    let Some(last) = words.last() else { return false };
    const LAST: [&str; 11] = [
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "secret",
        "token",
        "authorization",
        "apikey",
        "cookie",
        "credential",
        "credentials",
    ];
    const KEY_PAIRS: [&str; 6] = ["api", "private", "secret", "access", "signing", "encryption"];
    if LAST.contains(&last.as_str()) {
        return true;
    }
    last == "key" && words.len() >= 2 && KEY_PAIRS.contains(&words[words.len() - 2].as_str())
}

/// `apiKey`, `API_KEY`, `x-api-key`, `APIKey` → `[api, key]`-like lower-case words.
fn key_words(key: &str) -> Vec<String> {
    let chars: Vec<char> = key.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            continue;
        }
        if c.is_uppercase() && !word.is_empty() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_numeric() || (prev.is_uppercase() && next_lower) {
                words.push(std::mem::take(&mut word));
            }
        }
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Rule 2: well-known key shapes.
fn token_spans(text: &str, spans: &mut Vec<(usize, usize)>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !is_token_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_token_byte(bytes[i]) {
            i += 1;
        }
        if looks_like_key(&text[start..i]) {
            spans.push((start, i));
        }
    }
}

fn looks_like_key(token: &str) -> bool {
    let len = token.len();
    let has_digit = || token.bytes().any(|b| b.is_ascii_digit());
    let prefixed = |prefixes: &[&str]| prefixes.iter().any(|p| token.starts_with(p));
    if prefixed(&["sk-", "sk_live_", "sk_test_", "rk_live_"]) {
        return len >= 20 && has_digit();
    }
    if prefixed(&["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"]) {
        return len >= 20 && has_digit();
    }
    if prefixed(&["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-", "xapp-"]) {
        return len >= 15;
    }
    if token.starts_with("AIza") || token.starts_with("hf_") {
        return len >= 30;
    }
    if token.starts_with("glpat-") {
        return len >= 20;
    }
    if token.starts_with("AKIA") || token.starts_with("ASIA") {
        return len == 20 && token.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    }
    false
}

fn is_credential_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'+' | b'/' | b'=' | b'-')
}

/// Rule 3: `Bearer <credential>`.
fn bearer_spans(bytes: &[u8], lower: &[u8], spans: &mut Vec<(usize, usize)>) {
    const WORD: &[u8] = b"bearer";
    let mut from = 0;
    while let Some(found) = find(lower, WORD, from) {
        from = found + WORD.len();
        if found > 0 && bytes[found - 1].is_ascii_alphanumeric() {
            continue;
        }
        let mut i = from;
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        if i == from {
            continue;
        }
        let cred = i;
        while i < bytes.len() && is_credential_byte(bytes[i]) {
            i += 1;
        }
        if i - cred >= 8 {
            spans.push((found, i));
            from = i;
        }
    }
}

/// Rule 4: a secret after a key-like word and `=` or `:`.
fn keyed_spans(bytes: &[u8], lower: &[u8], spans: &mut Vec<(usize, usize)>) {
    const WORDS: [(&[u8], bool); 6] = [
        (b"password", true),
        (b"passwd", true),
        (b"pwd", true),
        (b"secret", false),
        (b"token", false),
        (b"key", false),
    ];
    for (word, any_value) in WORDS {
        let mut from = 0;
        while let Some(found) = find(lower, word, from) {
            from = found + word.len();
            let mut i = from;
            if i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                continue; // `tokens`, `keyboard`, `secret_name`
            }
            if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
                i += 1;
            }
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            if i >= bytes.len() || (bytes[i] != b'=' && bytes[i] != b':') {
                continue;
            }
            i += 1;
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
                i += 1;
            }
            let start = i;
            while i < bytes.len()
                && !bytes[i].is_ascii_whitespace()
                && !matches!(bytes[i], b'"' | b'\'' | b',' | b';' | b'&' | b'}' | b')' | b']')
            {
                i += 1;
            }
            let value = &bytes[start..i];
            if value.is_empty() || value.starts_with(REDACTED.as_bytes()) {
                continue;
            }
            let secret = if any_value {
                true
            } else {
                value.len() >= 16 && value.iter().all(|&b| is_credential_byte(b) && b != b'~')
            };
            if secret {
                spans.push((start, i));
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from >= haystack.len() {
        return None;
    }
    haystack[from..].windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn r(text: &str) -> String {
        redact_text(text).unwrap_or_else(|| text.to_string())
    }

    #[test]
    fn key_shapes_are_redacted() {
        for key in [
            "sk-live-abc123def456ghi789",
            "sk-ant-api03-AbCdEf0123456789xyz",
            "sk-proj-0123456789abcdefghij",
            "sk_live_51H8abcdefghijklmnop",
            "AIzaSyA1234567890abcdefghijklmnopqrstu",
            "ghp_0123456789abcdefghijklmnopqrstuvwxyz",
            "github_pat_11ABCDEFG0123456789_abcdefghijkl",
            "xoxb-1234-5678-abcdefgh",
            "AKIAIOSFODNN7EXAMPLE",
            "glpat-abcdefghij0123456789",
            "hf_abcdefghijklmnopqrstuvwxyz0123456789",
        ] {
            assert_eq!(r(key), REDACTED, "{key}");
        }
        assert_eq!(r("Authorization: Bearer abc.def-ghi_jkl"), "Authorization: [redacted]");
        assert_eq!(r("bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"), REDACTED);
        assert_eq!(r("use key sk-live-abc123def456ghi789 now"), "use key [redacted] now");
        assert_eq!(r("curl -H 'x-api-key: 0123456789abcdef0123' x"), "curl -H 'x-api-key: [redacted]' x");
        assert_eq!(r("API_KEY=0123456789abcdef0123456789abcdef make"), "API_KEY=[redacted] make");
        assert_eq!(r(r#"{"token": "dGhpcyBpcyBhIHNlY3JldCB0b2tlbg=="}"#), r#"{"token": "[redacted]"}"#);
        assert_eq!(r("login --password hunter2"), "login --password hunter2", "no `=` or `:`");
        assert_eq!(r("password=hunter2&user=bob"), "password=[redacted]&user=bob");
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for text in [
            "the task-force met on monday",
            "sk-learn is a library",
            "max_tokens: 1024",
            "input_tokens=12345678901234567890",
            "token: short",
            "keyboard: a-very-long-keyboard-layout-name",
            "ASIA is a continent",
            "deadbeef",
            "sha256 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(redact_text(text), None, "{text}");
        }
    }

    #[test]
    fn secret_named_keys_are_redacted_at_any_depth() {
        let mut v = json!({
            "api_key": "x", "apiKey": 42, "X-Api-Key": "y", "Authorization": "Basic abc", "password": "p",
            "client_secret": {"nested": 1}, "accessToken": "t", "AWS_SECRET_ACCESS_KEY": "k",
            "user_token": null,
            "input_tokens": 10, "max_tokens": 5, "token_count": 3, "key": "name", "secret_name": "prod",
            "args": [{"headers": {"authorization": "Bearer zzzzzzzzzzzz"}}, "sk-live-abc123def456ghi789"],
        });
        redact(&mut v);
        assert_eq!(
            v,
            json!({
                "api_key": REDACTED, "apiKey": REDACTED, "X-Api-Key": REDACTED, "Authorization": REDACTED,
                "password": REDACTED, "client_secret": REDACTED, "accessToken": REDACTED,
                "AWS_SECRET_ACCESS_KEY": REDACTED, "user_token": null,
                "input_tokens": 10, "max_tokens": 5, "token_count": 3, "key": "name", "secret_name": "prod",
                "args": [{"headers": {"authorization": REDACTED}}, REDACTED],
            })
        );
    }

    #[test]
    fn redaction_is_idempotent_and_keeps_unicode_intact() {
        let text = "ключ: api_key=0123456789abcdef0123456789 — sk-live-abc123def456ghi789 ✓";
        let once = r(text);
        assert_eq!(once, "ключ: api_key=[redacted] — [redacted] ✓");
        assert_eq!(r(&once), once);
    }
}
