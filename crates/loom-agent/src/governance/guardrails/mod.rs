//! Built-in guardrails: [`PiiGuard`], [`InjectionGuard`] and [`RegexGuard`].
//!
//! Each compiles its patterns once (at construction or into process-wide statics) and checks a text
//! in one pass per pattern family, so they are cheap enough for the output stage, which runs on
//! streamed text as it arrives.

mod injection;
mod pii;
mod regex_guard;

pub use injection::{InjectionAction, InjectionGuard};
pub use pii::{PiiAction, PiiGuard, PiiKind};
pub use regex_guard::{RegexAction, RegexGuard};

use super::GuardStage;

/// A set of stages, as a bitmask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stages(u8);

impl Stages {
    pub(crate) const ALL: Stages = Stages(0b111);

    fn bit(stage: GuardStage) -> u8 {
        match stage {
            GuardStage::Input => 1,
            GuardStage::Output => 2,
            GuardStage::ToolResult => 4,
        }
    }

    pub(crate) fn of(stages: impl IntoIterator<Item = GuardStage>) -> Stages {
        Stages(stages.into_iter().fold(0, |acc, s| acc | Self::bit(s)))
    }

    pub(crate) fn contains(self, stage: GuardStage) -> bool {
        self.0 & Self::bit(stage) != 0
    }
}

/// Rebuilds `text` with each `(start, end, replacement)` span replaced. Spans must be sorted and
/// must not overlap.
pub(crate) fn splice<'r>(text: &str, spans: impl IntoIterator<Item = (usize, usize, &'r str)>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, replacement) in spans {
        out.push_str(&text[at..start]);
        out.push_str(replacement);
        at = end;
    }
    out.push_str(&text[at..]);
    out
}
