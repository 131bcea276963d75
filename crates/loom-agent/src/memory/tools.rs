//! The memory tools the model can use: `memory_search`, `memory_block_update`, `memory_forget`.
//! Each acts on the memory of the run's user (a run without a user id gets an error result).

use std::sync::Arc;

use serde_json::{Value, json};

use super::engine::MemoryEngine;
use super::types::{Forget, Owner};
use crate::error::ToolError;
use crate::tool::{Tool, ToolContext, ToolFlags, ToolOutput};

/// The three memory tools on `engine`.
pub(crate) fn memory_tools(engine: &Arc<MemoryEngine>) -> Vec<Arc<dyn Tool>> {
    vec![
        Arc::new(MemoryTool { engine: engine.clone(), kind: Kind::Search }),
        Arc::new(MemoryTool { engine: engine.clone(), kind: Kind::BlockUpdate }),
        Arc::new(MemoryTool { engine: engine.clone(), kind: Kind::Forget }),
    ]
}

#[derive(Clone, Copy)]
enum Kind {
    Search,
    BlockUpdate,
    Forget,
}

struct MemoryTool {
    engine: Arc<MemoryEngine>,
    kind: Kind,
}

fn owner(engine: &MemoryEngine, ctx: &ToolContext) -> Result<Owner, ToolError> {
    let user = ctx.user_id().ok_or_else(|| ToolError::new("memory is per user, and this run has no user id"))?;
    engine.owner(user).map_err(|e| ToolError::new(e.to_string()))
}

fn str_arg<'a>(args: &'a Value, name: &str) -> Result<&'a str, ToolError> {
    args.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ToolError::invalid_arguments(format!("`{name}` must be a string")))
}

#[async_trait::async_trait]
impl Tool for MemoryTool {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Search => "memory_search",
            Kind::BlockUpdate => "memory_block_update",
            Kind::Forget => "memory_forget",
        }
    }

    fn description(&self) -> &str {
        match self.kind {
            Kind::Search => {
                "Search your long-term memory of this user (facts and earlier conversations). Returns items \
                 with their ids, best first."
            }
            Kind::BlockUpdate => {
                "Replace the text of one of your working-memory blocks (always shown to you), such as `profile` \
                 or `scratchpad`; an empty text deletes the block."
            }
            Kind::Forget => "Forget one memory item by its id (as memory_search shows it), when the user asks you to.",
        }
    }

    fn parameters(&self) -> Value {
        match self.kind {
            Kind::Search => json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "what to look for"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 20, "description": "at most this many (default 5)"}
                },
                "required": ["query"],
                "additionalProperties": false
            }),
            Kind::BlockUpdate => json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "the block's name: letters, digits, _ - ."},
                    "text": {"type": "string", "description": "the block's new full text"}
                },
                "required": ["name", "text"],
                "additionalProperties": false
            }),
            Kind::Forget => json!({
                "type": "object",
                "properties": {"id": {"type": "string", "description": "the item's id"}},
                "required": ["id"],
                "additionalProperties": false
            }),
        }
    }

    fn flags(&self) -> ToolFlags {
        let mut flags = ToolFlags::new();
        match self.kind {
            Kind::Search => {
                flags.read_only = true;
                flags.concurrency_safe = true;
                flags.idempotent = true;
            }
            Kind::BlockUpdate | Kind::Forget => flags.idempotent = true,
        }
        flags
    }

    async fn call(&self, ctx: ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        let owner = owner(&self.engine, &ctx)?;
        let failed = |e: crate::Error| ToolError::new(e.to_string());
        match self.kind {
            Kind::Search => {
                let query = str_arg(&args, "query")?;
                let limit = args.get("limit").and_then(Value::as_u64).unwrap_or(5).clamp(1, 20) as usize;
                let found = self.engine.search(&owner, query, limit).await.map_err(failed)?;
                let items: Vec<Value> = found
                    .into_iter()
                    .map(|(score, item)| {
                        json!({"id": item.id, "kind": item.kind, "text": item.text,
                               "recorded_at": item.recorded_at, "score": score})
                    })
                    .collect();
                Ok(ToolOutput::json(&json!({ "items": items })))
            }
            Kind::BlockUpdate => {
                let name = str_arg(&args, "name")?;
                let text = str_arg(&args, "text")?;
                if text.trim().is_empty() {
                    let existed = self.engine.store().delete_block(&owner, name).await.map_err(failed)?;
                    return Ok(ToolOutput::text(if existed {
                        format!("Deleted the block `{name}`.")
                    } else {
                        format!("There was no block `{name}`.")
                    }));
                }
                let block = self.engine.set_block(&owner, name, text).await.map_err(failed)?;
                Ok(ToolOutput::text(format!(
                    "Updated the block `{}` ({} characters).",
                    block.name,
                    block.text.chars().count()
                )))
            }
            Kind::Forget => {
                let id = str_arg(&args, "id")?;
                let n = self.engine.store().forget(&owner, &Forget::Item(id.to_string())).await.map_err(failed)?;
                Ok(ToolOutput::text(if n > 0 { format!("Forgot `{id}`.") } else { format!("No memory item `{id}`.") }))
            }
        }
    }
}
