//! [`Runtime`]: a run profile (the seed's name for it), a named bundle of run policy.

use serde::{Deserialize, Serialize};

/// A runtime profile: a named bundle of run policy. Its criteria are added to the instructions
/// (under "Acceptance criteria for every answer:"), and its max_turns applies when the agent sets none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    /// The profile's name.
    pub name: String,
    /// Criteria every answer should meet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub criteria: Vec<String>,
    /// The turn limit for runs under this profile.
    pub max_turns: u32,
}

impl Runtime {
    /// For SDK-style request/response use: 32 turns.
    pub fn sdk() -> Self {
        Runtime { name: "sdk".into(), criteria: Vec::new(), max_turns: 32 }
    }

    /// For long tasks held to criteria: 128 turns.
    pub fn long_running<I, S>(criteria: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Runtime {
            name: "long_running".into(),
            criteria: criteria.into_iter().map(Into::into).collect(),
            max_turns: 128,
        }
    }

    /// For supervised work held to criteria: 80 turns.
    pub fn supervised<I, S>(criteria: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Runtime { name: "supervised".into(), criteria: criteria.into_iter().map(Into::into).collect(), max_turns: 80 }
    }

    /// Sets max_turns.
    pub fn with_max_turns(mut self, max_turns: u32) -> Self {
        self.max_turns = max_turns;
        self
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::sdk()
    }
}
