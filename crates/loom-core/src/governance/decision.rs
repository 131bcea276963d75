//! Typed decisions and actions, as events and audit entries carry them. Each serializes to the
//! snake_case string the wire format has always used.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What was decided about a tool call (`permission.decision`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PermissionDecision {
    /// The call may run.
    Allow,
    /// The call may not run.
    Deny,
    /// The call runs with arguments the approver edited.
    Edit,
    /// The approver will decide later: the run suspends.
    Defer,
}

/// Who made a permission decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// The permission policy.
    Policy,
    /// The approval handler (a person, a service).
    Approver,
    /// An approval remembered for the run ("allow / deny for this run").
    Remembered,
    /// A `before_tool` hook.
    Hook,
}

/// What a guardrail did (`guardrail.triggered`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardAction {
    /// Parts of the text were replaced.
    Redact,
    /// The text was refused.
    Block,
}

macro_rules! names {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// The snake_case name, as serialized.
            pub const fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),* }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

names!(PermissionDecision { Allow => "allow", Deny => "deny", Edit => "edit", Defer => "defer" });
names!(DecidedBy { Policy => "policy", Approver => "approver", Remembered => "remembered", Hook => "hook" });
names!(GuardAction { Redact => "redact", Block => "block" });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialize_to_the_wire_strings() {
        assert_eq!(serde_json::to_value(PermissionDecision::Defer).ok(), Some(serde_json::json!("defer")));
        assert_eq!(serde_json::to_value(DecidedBy::Remembered).ok(), Some(serde_json::json!("remembered")));
        assert_eq!(serde_json::to_value(GuardAction::Block).ok(), Some(serde_json::json!("block")));
        assert_eq!(serde_json::from_str::<DecidedBy>("\"hook\"").ok(), Some(DecidedBy::Hook));
        assert!(PermissionDecision::Allow == "allow");
    }
}
