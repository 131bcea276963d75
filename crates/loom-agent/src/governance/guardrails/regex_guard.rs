//! [`RegexGuard`]: a guardrail from a user pattern.

use regex::Regex;

use super::{Stages, splice};
use crate::error::Error;
use crate::governance::{GuardStage, GuardVerdict, Guardrail};

/// What [`RegexGuard`] does with a match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegexAction {
    /// Replace every match with this text, taken literally (`$1` is not expanded).
    Redact(String),
    /// Stop the run.
    Block,
}

/// Redacts or blocks on a regular expression (Rust `regex` syntax: linear time, no look-around or
/// back-references). Empty matches are ignored. Looks at every stage unless told otherwise.
///
/// ```
/// use loom_agent::governance::{GuardStage, GuardVerdict, Guardrail, RegexAction, RegexGuard};
///
/// let guard = RegexGuard::new("ticket", r"TICKET-\d+", RegexAction::Redact("[ticket]".into()))?
///     .stages([GuardStage::Output]);
/// assert_eq!(guard.check(GuardStage::Output, "see TICKET-42"), GuardVerdict::Redact("see [ticket]".into()));
/// assert!(!guard.applies_to(GuardStage::Input));
/// # Ok::<(), loom_agent::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct RegexGuard {
    name: String,
    regex: Regex,
    action: RegexAction,
    stages: Stages,
}

impl RegexGuard {
    /// A guard named `name` (as it appears in events and interruption reasons). A pattern that
    /// does not compile is an [`Error::Config`].
    pub fn new(name: impl Into<String>, pattern: &str, action: RegexAction) -> Result<Self, Error> {
        let name = name.into();
        let regex = Regex::new(pattern)
            .map_err(|e| Error::Config(format!("guardrail `{name}`: invalid regular expression: {e}")))?;
        Ok(RegexGuard { name, regex, action, stages: Stages::ALL })
    }

    /// Looks only at these stages.
    pub fn stages(mut self, stages: impl IntoIterator<Item = GuardStage>) -> Self {
        self.stages = Stages::of(stages);
        self
    }
}

impl Guardrail for RegexGuard {
    fn name(&self) -> &str {
        &self.name
    }

    fn applies_to(&self, stage: GuardStage) -> bool {
        self.stages.contains(stage)
    }

    fn check(&self, _stage: GuardStage, text: &str) -> GuardVerdict {
        let mut matches = self.regex.find_iter(text).filter(|m| !m.is_empty()).peekable();
        if matches.peek().is_none() {
            return GuardVerdict::Pass;
        }
        match &self.action {
            RegexAction::Block => GuardVerdict::Block(format!("the text matches the pattern of `{}`", self.name)),
            RegexAction::Redact(replacement) => {
                let out = splice(text, matches.map(|m| (m.start(), m.end(), replacement.as_str())));
                if out == text { GuardVerdict::Pass } else { GuardVerdict::Redact(out) }
            }
        }
    }
}
