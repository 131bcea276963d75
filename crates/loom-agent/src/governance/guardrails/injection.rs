//! [`InjectionGuard`]: prompt-injection markers in input and tool results.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::{Regex, RegexSet};

use super::{Stages, splice};
use crate::error::Error;
use crate::governance::{GuardStage, GuardVerdict, Guardrail};

/// What [`InjectionGuard`] does with a marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InjectionAction {
    /// Stop the run (the default).
    #[default]
    Block,
    /// Remove the matched phrases and let the rest through.
    Redact,
}

/// Between the words of a marker: any run of whitespace (Unicode), underscores, asterisks or
/// dashes, so `ignore   previous\ninstructions` and `**ignore** previous_instructions` still match.
const SEP: &str = r"[\s_*\-]+";

/// The markers, as (label, pattern). A space in a pattern stands for [`SEP`]; every pattern is
/// matched case-insensitively (Unicode case folding).
const MARKERS: &[(&str, &str)] = &[
    (
        "ignore previous instructions",
        r"(?:ignore|disregard|forget|override|bypass|skip) (?:all |any |every )?(?:of )?(?:the |your |my |these |those )?(?:previous|prior|above|earlier|preceding|foregoing|former|initial|original|system|developer) (?:instructions?|prompts?|directions?|rules|guidelines|messages?|commands?|context)",
    ),
    (
        "ignore all instructions",
        r"(?:ignore|disregard|forget) (?:all|any|every) (?:of )?(?:the |your )?(?:instructions|rules|guidelines)",
    ),
    (
        "jailbreak persona",
        r"you (?:are|r) now (?:dan(?-u:\b)|in (?:developer|god|jailbreak|jailbroken|unrestricted|dan) mode|jailbroken|unrestricted|unfiltered|uncensored)|(?-u:\b)dan mode|(?-u:\b)do anything now|(?:enable|activate|enter) (?:developer|god|jailbreak|dan) mode",
    ),
    (
        "unrestricted role-play",
        r"(?:act|pretend|behave) (?:as|like) (?:if (?:you )?(?:are|were) )?(?:an? )?(?:unrestricted|unfiltered|uncensored|jailbroken)",
    ),
    (
        "chat template token",
        r"<\|(?:im_start|im_end|system|endoftext|begin_of_text|start_header_id|eot_id)\|>|\[/?inst\]|<</?sys>>",
    ),
    (
        "role override",
        r"#{2,}[\s*]*(?:system|developer|new instructions?)[\s*]*:|</?(?:system|system_prompt|sys)>|(?m:^)[ \t]*(?:system|developer)(?: (?:message|prompt|override))?[ \t]*:[ \t]*(?:you|ignore|disregard|forget|from now on|new)|\x22role\x22\s*:\s*\x22(?:system|developer)\x22|(?:new|updated|revised|override) (?:system )?instructions[ \t]*:",
    ),
    (
        "system prompt extraction",
        r"(?:reveal|show|print|repeat|output|display|leak|dump|tell|give) (?:me )?(?:your |the )?(?:(?:full|entire|original|initial|hidden|secret|exact) )?(?:system (?:prompt|message|instructions)|(?:initial|hidden|secret|original) (?:prompt|instructions))",
    ),
    (
        "safety bypass",
        r"(?:override|bypass|disable|turn off) (?:your |the |all )?(?:safety|content|moderation) (?:filters?|guidelines|restrictions|rules|polic(?:y|ies))",
    ),
];

fn expand(pattern: &str) -> String {
    format!("(?i:{})", pattern.replace(' ', SEP))
}

struct Compiled {
    any: Regex,
    set: RegexSet,
}

#[allow(clippy::expect_used)] // the patterns are constants, compiled by the tests
fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        let parts: Vec<String> = MARKERS.iter().map(|(_, p)| expand(p)).collect();
        Compiled {
            any: Regex::new(&parts.join("|")).expect("the injection markers compile"),
            set: RegexSet::new(&parts).expect("the injection markers compile"),
        }
    })
}

/// Zero-width and formatting characters an attacker may slip between letters (`ig\u{200B}nore`).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{034F}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

/// The text with invisible characters removed (borrowed when there are none).
fn visible(text: &str) -> Cow<'_, str> {
    if text.is_ascii() || !text.chars().any(is_invisible) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.chars().filter(|c| !is_invisible(*c)).collect())
    }
}

/// Looks for prompt-injection markers: "ignore (all) previous instructions", "disregard the system
/// prompt", "you are now DAN", chat-template tokens (`<|im_start|>system`, `[INST]`, `<<SYS>>`),
/// `### system:` headers and other role overrides (`<system>`, `"role": "system"`, `system: ignore…`,
/// `new instructions:`), "reveal your system prompt", "bypass your safety filters". Matching is
/// case-insensitive, tolerates any whitespace, `_`, `*` or `-` between words, and ignores zero-width
/// characters.
///
/// By default it looks at the input and tool results (where third-party text enters the run) and
/// blocks; with [`InjectionAction::Redact`] it removes the matched phrases instead (repeatedly, so
/// removing one cannot join the pieces of another).
#[derive(Clone, Debug)]
pub struct InjectionGuard {
    name: String,
    action: InjectionAction,
    stages: Stages,
    extra: Vec<(String, Regex)>,
}

impl Default for InjectionGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl InjectionGuard {
    /// Named `injection`; input and tool results; blocks.
    pub fn new() -> Self {
        let _ = compiled();
        InjectionGuard {
            name: "injection".to_string(),
            action: InjectionAction::Block,
            stages: Stages::of([GuardStage::Input, GuardStage::ToolResult]),
            extra: Vec::new(),
        }
    }

    /// Renames it.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Block or redact.
    pub fn action(mut self, action: InjectionAction) -> Self {
        self.action = action;
        self
    }

    /// Looks only at these stages.
    pub fn stages(mut self, stages: impl IntoIterator<Item = GuardStage>) -> Self {
        self.stages = Stages::of(stages);
        self
    }

    /// Adds a marker of your own (matched case-insensitively; a space stands for any separator).
    /// A pattern that does not compile is an [`Error::Config`].
    pub fn marker(mut self, label: impl Into<String>, pattern: &str) -> Result<Self, Error> {
        let label = label.into();
        let regex = Regex::new(&expand(pattern))
            .map_err(|e| Error::Config(format!("injection marker `{label}`: invalid regular expression: {e}")))?;
        self.extra.push((label, regex));
        Ok(self)
    }

    /// The label of the first marker found, if any.
    pub fn detect(&self, text: &str) -> Option<String> {
        let text = visible(text);
        let c = compiled();
        if c.any.is_match(&text) {
            let i = c.set.matches(&text).iter().next().unwrap_or(0);
            return Some(MARKERS[i].0.to_string());
        }
        self.extra.iter().find(|(_, re)| re.is_match(&text)).map(|(label, _)| label.clone())
    }

    fn spans(&self, text: &str) -> Vec<(usize, usize)> {
        let mut spans: Vec<(usize, usize)> = compiled().any.find_iter(text).map(|m| (m.start(), m.end())).collect();
        if !self.extra.is_empty() {
            for (_, re) in &self.extra {
                spans.extend(re.find_iter(text).map(|m| (m.start(), m.end())));
            }
            spans.sort_unstable();
            let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
            for (s, e) in spans {
                match merged.last_mut() {
                    Some(last) if s <= last.1 => last.1 = last.1.max(e),
                    _ => merged.push((s, e)),
                }
            }
            spans = merged;
        }
        spans.retain(|(s, e)| e > s);
        spans
    }
}

impl Guardrail for InjectionGuard {
    fn name(&self) -> &str {
        &self.name
    }

    fn applies_to(&self, stage: GuardStage) -> bool {
        self.stages.contains(stage)
    }

    fn check(&self, _stage: GuardStage, text: &str) -> GuardVerdict {
        match self.action {
            InjectionAction::Block => match self.detect(text) {
                None => GuardVerdict::Pass,
                Some(label) => GuardVerdict::Block(format!("possible prompt injection ({label})")),
            },
            InjectionAction::Redact => {
                let mut current = visible(text).into_owned();
                let mut changed = false;
                // Removing a phrase can join the pieces around it into a new one: repeat, a bounded
                // number of times, then give up and block.
                for _ in 0..8 {
                    let spans = self.spans(&current);
                    if spans.is_empty() {
                        return if changed { GuardVerdict::Redact(current) } else { GuardVerdict::Pass };
                    }
                    current = splice(&current, spans.iter().map(|&(s, e)| (s, e, "")));
                    changed = true;
                }
                match self.detect(&current) {
                    None => GuardVerdict::Redact(current),
                    Some(label) => GuardVerdict::Block(format!("possible prompt injection ({label})")),
                }
            }
        }
    }
}
