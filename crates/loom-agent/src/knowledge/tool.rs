//! The `search_knowledge` tool: the model looks things up in the agent's knowledge sources.

use std::sync::Arc;

use serde_json::{Value, json};

use super::engine::Knowledge;
use super::resolve::KnowledgeQuery;
use crate::error::ToolError;
use crate::tool::{Tool, ToolContext, ToolFlags, ToolOutput};

/// The `search_knowledge` tool on `knowledge`. A run sees the shared sources and those of the
/// tenant named by its user id.
pub(crate) fn search_tool(knowledge: Arc<Knowledge>) -> Arc<dyn Tool> {
    Arc::new(SearchKnowledge { knowledge })
}

struct SearchKnowledge {
    knowledge: Arc<Knowledge>,
}

#[async_trait::async_trait]
impl Tool for SearchKnowledge {
    fn name(&self) -> &str {
        "search_knowledge"
    }

    fn description(&self) -> &str {
        "Search the knowledge base (documents, manuals, notes). Returns numbered passages with their \
         citations (document and lines or page); cite them in your answer."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "what to look for"},
                "top_k": {"type": "integer", "minimum": 1, "maximum": 10, "description": "at most this many passages (default 3)"}
            },
            "required": ["query"],
            "additionalProperties": false
        })
    }

    fn flags(&self) -> ToolFlags {
        let mut flags = ToolFlags::new();
        flags.read_only = true;
        flags.concurrency_safe = true;
        flags.idempotent = true;
        flags
    }

    async fn call(&self, ctx: ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        let text = args
            .get("query")
            .and_then(Value::as_str)
            .ok_or_else(|| ToolError::invalid_arguments("`query` must be a string"))?;
        let top_k = args.get("top_k").and_then(Value::as_u64).unwrap_or(3).clamp(1, 10) as usize;
        let query = KnowledgeQuery::new(text).top_k(top_k).tenant(ctx.user_id().unwrap_or_default());
        let bundle = self.knowledge.resolve(&query).await.map_err(|e| ToolError::new(e.to_string()))?;
        if bundle.is_empty() {
            return Ok(ToolOutput::text(format!("Nothing in the knowledge base matches `{text}`.")));
        }
        Ok(ToolOutput::text(bundle.render()))
    }
}
