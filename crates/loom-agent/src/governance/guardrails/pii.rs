//! [`PiiGuard`]: finds email addresses, phone numbers, payment card numbers and secrets.

use std::sync::OnceLock;

use regex::Regex;

use super::{Stages, splice};
use crate::governance::{GuardStage, GuardVerdict, Guardrail};

/// A family of personal or secret data that [`PiiGuard`] looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PiiKind {
    /// Email addresses (`local@domain.tld`).
    Email,
    /// Phone numbers: international (`+CC …` or `00CC …`, 8 to 15 digits) and common national
    /// formats written with separators (`(555) 123-4567`, `555-123-4567`, `020 7946 0958`).
    Phone,
    /// Payment card numbers: 13 to 19 digits, in one block or in groups split by spaces or dashes,
    /// that pass the Luhn check.
    Card,
    /// API keys and tokens: OpenAI `sk-…`, Anthropic `sk-ant-…`, Google `AIza…`, GitHub
    /// `ghp_`/`gho_`/`ghs_`/`ghu_`/`ghr_`/`github_pat_…`, Slack `xox[abprs]-…`, AWS `AKIA…`/`ASIA…`,
    /// JWTs (`eyJ….eyJ….…`) and `Bearer <token>`.
    Secret,
}

impl PiiKind {
    /// Every kind.
    pub const ALL: [PiiKind; 4] = [PiiKind::Email, PiiKind::Phone, PiiKind::Card, PiiKind::Secret];

    /// `email`, `phone`, `card` or `secret`.
    pub fn label(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Card => "card",
            PiiKind::Secret => "secret",
        }
    }

    /// What a redacted match becomes: `[redacted:<label>]`.
    pub fn marker(self) -> &'static str {
        match self {
            PiiKind::Email => "[redacted:email]",
            PiiKind::Phone => "[redacted:phone]",
            PiiKind::Card => "[redacted:card]",
            PiiKind::Secret => "[redacted:secret]",
        }
    }

    fn bit(self) -> u8 {
        match self {
            PiiKind::Email => 1,
            PiiKind::Phone => 2,
            PiiKind::Card => 4,
            PiiKind::Secret => 8,
        }
    }
}

/// What [`PiiGuard`] does with what it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PiiAction {
    /// Replace each match with `[redacted:<kind>]` (the default).
    #[default]
    Redact,
    /// Stop the run; the reason names the kinds found, never the values.
    Block,
}

/// Redacts (or blocks on) personal data and secrets: see [`PiiKind`] for exactly what each
/// detector matches. By default it looks for every kind, at every stage, and redacts.
///
/// ```
/// use loom_agent::governance::{GuardStage, GuardVerdict, Guardrail, PiiGuard};
///
/// let guard = PiiGuard::new();
/// let verdict = guard.check(GuardStage::Output, "Mail jane@example.com or call +44 20 7946 0958.");
/// assert_eq!(verdict, GuardVerdict::Redact("Mail [redacted:email] or call [redacted:phone].".into()));
/// ```
#[derive(Clone, Debug)]
pub struct PiiGuard {
    name: String,
    action: PiiAction,
    kinds: u8,
    stages: Stages,
}

impl Default for PiiGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl PiiGuard {
    /// Every detector, every stage, redacting; named `pii`.
    pub fn new() -> Self {
        // Compile the patterns now rather than on the first streamed delta.
        let _ = (email_re(), phone_re(), number_re(), secret_re(), bearer_re());
        PiiGuard { name: "pii".to_string(), action: PiiAction::Redact, kinds: 0b1111, stages: Stages::ALL }
    }

    /// Renames it (the name appears in events and interruption reasons).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Redact or block.
    pub fn action(mut self, action: PiiAction) -> Self {
        self.action = action;
        self
    }

    /// Looks only for these kinds.
    pub fn detectors(mut self, kinds: impl IntoIterator<Item = PiiKind>) -> Self {
        self.kinds = kinds.into_iter().fold(0, |acc, k| acc | k.bit());
        self
    }

    /// Looks only at these stages.
    pub fn stages(mut self, stages: impl IntoIterator<Item = GuardStage>) -> Self {
        self.stages = Stages::of(stages);
        self
    }

    fn wants(&self, kind: PiiKind) -> bool {
        self.kinds & kind.bit() != 0
    }

    /// Every match, sorted by position, without overlaps (an earlier match wins; at the same
    /// position, the longer one).
    pub fn find(&self, text: &str) -> Vec<(usize, usize, PiiKind)> {
        let mut found = Vec::new();
        if self.wants(PiiKind::Secret) {
            find_secrets(text, &mut found);
        }
        let has_digit = text.bytes().any(|b| b.is_ascii_digit());
        if has_digit && self.wants(PiiKind::Card) {
            find_cards(text, &mut found);
        }
        if self.wants(PiiKind::Email) && text.contains('@') {
            found.extend(email_re().find_iter(text).map(|m| (m.start(), m.end(), PiiKind::Email)));
        }
        if has_digit && self.wants(PiiKind::Phone) {
            find_phones(text, &mut found);
        }
        if found.len() > 1 {
            // Stable: at the same span, the detector that ran first (secret, card, email, phone) wins.
            found.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            let mut end = 0;
            found.retain(|&(s, e, _)| {
                let keep = s >= end;
                if keep {
                    end = e;
                }
                keep
            });
        }
        found
    }
}

impl Guardrail for PiiGuard {
    fn name(&self) -> &str {
        &self.name
    }

    fn applies_to(&self, stage: GuardStage) -> bool {
        self.stages.contains(stage)
    }

    fn check(&self, _stage: GuardStage, text: &str) -> GuardVerdict {
        let found = self.find(text);
        if found.is_empty() {
            return GuardVerdict::Pass;
        }
        match self.action {
            PiiAction::Redact => GuardVerdict::Redact(splice(text, found.iter().map(|&(s, e, k)| (s, e, k.marker())))),
            PiiAction::Block => {
                let kinds: Vec<&str> =
                    PiiKind::ALL.iter().filter(|k| found.iter().any(|f| f.2 == **k)).map(|k| k.label()).collect();
                GuardVerdict::Block(format!("found sensitive data: {}", kinds.join(", ")))
            }
        }
    }
}

/// Compiles a built-in pattern once per process.
#[allow(clippy::expect_used)] // the patterns are constants, compiled by the tests
fn compiled(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("a built-in guardrail pattern compiles"))
}

fn email_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    compiled(
        &RE,
        r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,63}",
    )
}

/// Phone candidates; [`find_phones`] checks the digit count and the neighbours.
fn phone_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    compiled(
        &RE,
        concat!(
            // International: +CC or 00CC, then groups of digits (an area code may be in parentheses).
            r"(?:\+|(?-u:\b)00)[1-9][0-9]{0,3}(?:[ .\-]?\(?[0-9]{1,5}\)?){1,6}",
            // North American: (555) 123-4567, 555-123-4567, 1-800-555-1234.
            r"|(?:(?-u:\b)1[ .\-])?(?:\([2-9][0-9]{2}\)[ .\-]?|(?-u:\b)[2-9][0-9]{2}[ .\-])[2-9][0-9]{2}[ .\-][0-9]{4}(?-u:\b)",
            // National with a trunk 0: 020 7946 0958, 07700 900123, 030-1234-5678.
            r"|(?-u:\b)0[1-9][0-9]{1,4}[ .\-][0-9]{3,4}(?:[ .\-]?[0-9]{3,4})?(?-u:\b)",
        ),
    )
}

/// Runs of digits split by single spaces or dashes: card candidates.
fn number_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    compiled(&RE, r"(?-u:\b)[0-9]+(?:[ \-][0-9]+)*(?-u:\b)")
}

fn secret_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    compiled(
        &RE,
        concat!(
            r"(?-u:\b)sk-[A-Za-z0-9_\-]{20,}",
            r"|(?-u:\b)AIza[0-9A-Za-z_\-]{35}",
            r"|(?-u:\b)gh[oprsu]_[A-Za-z0-9]{20,}",
            r"|(?-u:\b)github_pat_[A-Za-z0-9_]{20,}",
            r"|(?-u:\b)xox[abprs]-[A-Za-z0-9\-]{10,}",
            r"|(?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)",
            r"|(?-u:\b)eyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*",
        ),
    )
}

fn bearer_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    compiled(&RE, r"(?i-u:\bbearer)[ \t]+([A-Za-z0-9\-._~+/]{16,}=*)")
}

fn find_secrets(text: &str, found: &mut Vec<(usize, usize, PiiKind)>) {
    found.extend(secret_re().find_iter(text).map(|m| (m.start(), m.end(), PiiKind::Secret)));
    if text.len() >= 23 && contains_ignore_ascii_case(text, b"bearer") {
        for caps in bearer_re().captures_iter(text) {
            let Some(token) = caps.get(1) else { continue };
            // A token, not a word: "Bearer authentication" is prose.
            if token.as_str().bytes().any(|b| !b.is_ascii_alphabetic()) {
                found.push((token.start(), token.end(), PiiKind::Secret));
            }
        }
    }
}

fn contains_ignore_ascii_case(text: &str, needle: &[u8]) -> bool {
    text.as_bytes().windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

fn find_phones(text: &str, found: &mut Vec<(usize, usize, PiiKind)>) {
    let bytes = text.as_bytes();
    for m in phone_re().find_iter(text) {
        let digits = m.as_str().bytes().filter(u8::is_ascii_digit).count();
        let before = m.start().checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(m.end()).copied();
        let glued = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'_');
        // Years, short numbers and fragments of longer numbers are not phone numbers.
        if (8..=15).contains(&digits) && !glued(before) && !after.is_some_and(|b| b.is_ascii_digit()) {
            found.push((m.start(), m.end(), PiiKind::Phone));
        }
    }
}

/// Card numbers inside runs of digit groups: a single block of 13–19 digits, or groups whose first
/// has 4 digits and the others 1–6 (4-4-4-4, 4-6-5, 4-4-4-4-3…), 13–19 digits in all, passing Luhn.
/// The longest valid span from each group wins, so a number followed by a year is still found.
fn find_cards(text: &str, found: &mut Vec<(usize, usize, PiiKind)>) {
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for run in number_re().find_iter(text) {
        let s = run.as_str();
        if s.len() < 13 {
            continue;
        }
        groups.clear();
        let mut start = None;
        for (i, b) in s.bytes().enumerate() {
            match (b.is_ascii_digit(), start) {
                (true, None) => start = Some(i),
                (false, Some(st)) => {
                    groups.push((run.start() + st, run.start() + i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(st) = start {
            groups.push((run.start() + st, run.end()));
        }
        let mut i = 0;
        while i < groups.len() {
            match card_at(text, &groups[i..]) {
                Some(n) => {
                    found.push((groups[i].0, groups[i + n - 1].1, PiiKind::Card));
                    i += n;
                }
                None => i += 1,
            }
        }
    }
}

/// How many groups, from the first, make the longest valid card number.
fn card_at(text: &str, groups: &[(usize, usize)]) -> Option<usize> {
    let len = |g: &(usize, usize)| g.1 - g.0;
    let first = len(&groups[0]);
    if (13..=19).contains(&first) && luhn(&text[groups[0].0..groups[0].1]) {
        return Some(1);
    }
    if first != 4 {
        return None;
    }
    let mut total = first;
    let mut best = None;
    for (n, g) in groups.iter().enumerate().skip(1) {
        if !(1..=6).contains(&len(g)) || total + len(g) > 19 {
            break;
        }
        total += len(g);
        if total >= 13 && luhn(&text[groups[0].0..g.1]) {
            best = Some(n + 1);
        }
    }
    best
}

/// The Luhn checksum over the ASCII digits of `s` (anything else is skipped).
fn luhn(s: &str) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    for b in s.bytes().rev().filter(u8::is_ascii_digit) {
        let mut d = u32::from(b - b'0');
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
    }
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_checks() {
        assert!(luhn("4111111111111111"));
        assert!(luhn("4111-1111-1111-1111"));
        assert!(!luhn("4111111111111112"));
        assert!(luhn("378282246310005"));
    }
}
