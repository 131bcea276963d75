use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Tool, ToolSpec};
use crate::error::Error;

pub(crate) struct RegisteredTool {
    pub(crate) tool: Arc<dyn Tool>,
    pub(crate) spec: ToolSpec,
    pub(crate) timeout: Option<Duration>,
    validator: jsonschema::Validator,
}

impl RegisteredTool {
    /// Checks arguments against the schema; the error lists every violation with its location.
    pub(crate) fn validate(&self, args: &serde_json::Value) -> Result<(), String> {
        crate::output::check_schema(&self.validator, args)
    }
}

/// The tools of an agent, with their schemas compiled once.
#[derive(Default)]
pub(crate) struct ToolRegistry {
    entries: Vec<RegisteredTool>,
    by_name: HashMap<String, usize>,
    specs: Arc<[ToolSpec]>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl ToolRegistry {
    pub(crate) fn new(tools: Vec<Arc<dyn Tool>>) -> Result<Self, Error> {
        let mut entries = Vec::with_capacity(tools.len());
        let mut by_name = HashMap::with_capacity(tools.len());
        for tool in tools {
            let name = tool.name().to_string();
            if !valid_name(&name) {
                return Err(Error::Config(format!(
                    "tool name `{name}` is invalid: use 1 to 64 letters, digits, `_` or `-`"
                )));
            }
            if by_name.contains_key(&name) {
                return Err(Error::Config(format!("two tools are named `{name}`; tool names must be unique")));
            }
            let parameters = tool.parameters();
            if !parameters.is_object() {
                return Err(Error::Config(format!("tool `{name}`: the parameters schema must be a JSON object")));
            }
            let validator = jsonschema::validator_for(&parameters)
                .map_err(|e| Error::Config(format!("tool `{name}`: invalid parameters schema: {e}")))?;
            let spec = ToolSpec {
                name: name.clone(),
                description: tool.description().to_string(),
                parameters,
                flags: tool.flags(),
            };
            by_name.insert(name, entries.len());
            let timeout = tool.timeout();
            entries.push(RegisteredTool { tool, spec, timeout, validator });
        }
        let specs: Arc<[ToolSpec]> = entries.iter().map(|e| e.spec.clone()).collect();
        Ok(ToolRegistry { entries, by_name, specs })
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub(crate) fn entry(&self, index: usize) -> &RegisteredTool {
        &self.entries[index]
    }

    /// The tools, in order (to build a changed registry from).
    pub(crate) fn tools(&self) -> Vec<Arc<dyn Tool>> {
        self.entries.iter().map(|e| e.tool.clone()).collect()
    }

    pub(crate) fn specs(&self) -> &Arc<[ToolSpec]> {
        &self.specs
    }
}
