//! `loom tools`: the tools an agent built from the same flags as `loom run` would offer its model,
//! listed without running a model.

use loom_agent::tool::{ToolFlags, ToolSpec};

use crate::cli::ToolsArgs;
use crate::run::{Exit, async_runtime, build_agent, describe, report};

/// Runs `loom tools`.
pub fn main(mut args: ToolsArgs) -> Exit {
    // No model is called: without --model, the echo model keeps the embedded model unloaded and
    // the default-model note off stderr.
    if args.agent.model.is_none() {
        args.agent.model = Some("echo".to_string());
    }
    let agent = match build_agent(args.agent) {
        Ok(agent) => agent,
        Err(message) => {
            report(&message);
            return Exit::Usage;
        }
    };
    // MCP servers are started and asked for their tools, as a run's first turn would.
    let runtime = match async_runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    let tools = match runtime.block_on(agent.current_tools()) {
        Ok(tools) => tools,
        Err(e) => {
            report(&describe(&e));
            return Exit::Failed;
        }
    };
    let written = if args.json { print_json(&tools) } else { print_table(&tools) };
    match written {
        Ok(()) => Exit::Completed,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Completed,
        Err(e) => {
            report(&format!("cannot write the list: {e}"));
            Exit::Failed
        }
    }
}

/// One JSON document: an array of `{name, description, parameters, flags}`.
fn print_json(tools: &[ToolSpec]) -> std::io::Result<()> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(tools).map_err(std::io::Error::other)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
}

/// A human list: each tool's name and flags, then its description and arguments, indented.
fn print_table(tools: &[ToolSpec]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if tools.is_empty() {
        writeln!(out, "no tools (add some with --files, --web, --shell, --mcp or --skills)")?;
        return Ok(());
    }
    for tool in tools {
        let flags = flag_names(&tool.flags);
        if flags.is_empty() {
            writeln!(out, "{}", tool.name)?;
        } else {
            writeln!(out, "{}  [{}]", tool.name, flags.join(", "))?;
        }
        let summary = tool.description.lines().next().unwrap_or_default();
        if !summary.is_empty() {
            writeln!(out, "    {summary}")?;
        }
        let arguments = argument_names(&tool.parameters);
        if !arguments.is_empty() {
            writeln!(out, "    arguments: {}", arguments.join(", "))?;
        }
    }
    Ok(())
}

fn flag_names(flags: &ToolFlags) -> Vec<&'static str> {
    [
        (flags.read_only, "read-only"),
        (flags.destructive, "destructive"),
        (flags.requires_permission, "asks permission"),
        (flags.idempotent, "idempotent"),
        (flags.concurrency_safe, "concurrent"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

/// The schema's properties, required ones first, optional ones marked with `?`.
fn argument_names(schema: &serde_json::Value) -> Vec<String> {
    let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) else { return Vec::new() };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(|r| r.as_array())
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let mut names: Vec<String> = properties.keys().filter(|k| required.contains(&k.as_str())).cloned().collect();
    names.extend(properties.keys().filter(|k| !required.contains(&k.as_str())).map(|k| format!("{k}?")));
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_list_required_first_and_mark_optional() {
        let schema = json!({
            "type": "object",
            "properties": {"limit": {"type": "integer"}, "path": {"type": "string"}},
            "required": ["path"]
        });
        assert_eq!(argument_names(&schema), vec!["path".to_string(), "limit?".to_string()]);
        assert!(argument_names(&json!({"type": "object"})).is_empty());
    }

    #[test]
    fn flags_are_named() {
        let flags = ToolFlags::new().read_only().idempotent();
        assert_eq!(flag_names(&flags), vec!["read-only", "idempotent"]);
    }
}
