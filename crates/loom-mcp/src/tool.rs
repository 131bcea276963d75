//! An MCP server's tool as a Loom [`Tool`]: its schema as given, its annotations as flags, and
//! its result (content blocks and structured content) as text the model reads.

use std::sync::Arc;
use std::time::Duration;

use loom_core::tool::{Tool, ToolContext, ToolError, ToolFlags, ToolOutput};
use rmcp::model::{CallToolResult, ContentBlock, ResourceContents, ToolAnnotations};

use crate::server::{Shared, sanitize};

/// The separator between the server's name and the tool's: `SERVER__TOOL`.
pub const SEPARATOR: &str = "__";

/// Loom's tool names are at most 64 characters.
const MAX_NAME: usize = 64;

/// A tool of an MCP server.
pub(crate) struct McpTool {
    server: Arc<Shared>,
    name: String,
    remote: String,
    description: String,
    parameters: serde_json::Value,
    flags: ToolFlags,
    timeout: Option<Duration>,
}

/// Loom's flags for MCP annotations. `readOnlyHint: true` → read_only (and concurrency_safe);
/// `destructiveHint` → destructive, absent meaning `true` as the MCP spec says (so a tool without
/// annotations asks for approval under the default permissions); a read-only tool is never
/// destructive; `idempotentHint: true` → idempotent.
pub fn flags_for(annotations: Option<&ToolAnnotations>) -> ToolFlags {
    let hint = |f: fn(&ToolAnnotations) -> Option<bool>| annotations.and_then(f);
    let read_only = hint(|a| a.read_only_hint) == Some(true);
    let mut flags = ToolFlags::new();
    if read_only {
        flags = flags.read_only().concurrency_safe();
    } else if hint(|a| a.destructive_hint).unwrap_or(true) {
        flags = flags.destructive();
    }
    if hint(|a| a.idempotent_hint) == Some(true) {
        flags = flags.idempotent();
    }
    flags
}

impl McpTool {
    /// `SERVER__TOOL`, sanitized and cut to 64 characters.
    pub(crate) fn local_name(server: &str, tool: &str) -> String {
        let mut name = format!("{server}{SEPARATOR}{}", sanitize(tool));
        name.truncate(MAX_NAME);
        name
    }

    pub(crate) fn new(server: Arc<Shared>, name: String, tool: rmcp::model::Tool, timeout: Option<Duration>) -> Self {
        let description = tool
            .description
            .as_deref()
            .map(str::to_string)
            .or_else(|| tool.title.clone())
            .unwrap_or_else(|| format!("The `{}` tool of MCP server `{}`.", tool.name, server.name()));
        McpTool {
            flags: flags_for(tool.annotations.as_ref()),
            parameters: serde_json::Value::Object((*tool.input_schema).clone()),
            remote: tool.name.into_owned(),
            description,
            name,
            server,
            // A little longer than the call's own timeout, so the server's cancellation and the
            // clearer message come from the call.
            timeout: timeout.map(|t| t + Duration::from_secs(2)),
        }
    }
}

#[async_trait::async_trait]
impl Tool for McpTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> serde_json::Value {
        self.parameters.clone()
    }

    fn flags(&self) -> ToolFlags {
        self.flags
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    async fn call(&self, ctx: ToolContext, args: serde_json::Value) -> Result<ToolOutput, ToolError> {
        let result = self.server.call(&self.remote, args, ctx.cancellation()).await?;
        let text = result_text(&result, Some(&ctx));
        if result.is_error == Some(true) {
            let text =
                if text.trim().is_empty() { "the tool reported an error without a message".into() } else { text };
            return Err(ToolError::new(text));
        }
        Ok(ToolOutput::text(text))
    }
}

/// The text the model reads for a tool result: each content block in order (text as is; images,
/// audio and binary resources as artifacts of the run with a placeholder line; resource links and
/// embedded text resources with their URI), then the structured content as JSON when no text
/// block already holds it.
pub fn result_text(result: &CallToolResult, ctx: Option<&ToolContext>) -> String {
    let mut parts: Vec<String> = Vec::with_capacity(result.content.len() + 1);
    let artifact = |kind: &str, mime: &str, data: &str, name: String| -> String {
        // Base64 length → bytes.
        let bytes = data.len() / 4 * 3;
        match ctx {
            Some(ctx) => {
                let a = ctx.create_artifact(name, mime, data);
                format!("[{kind} {mime}, about {bytes} bytes, saved as artifact {} (base64)]", a.id)
            }
            None => format!("[{kind} {mime}, about {bytes} bytes]"),
        }
    };
    for (i, block) in result.content.iter().enumerate() {
        match block {
            ContentBlock::Text(t) => parts.push(t.text.clone()),
            ContentBlock::Image(img) => {
                parts.push(artifact("image", &img.mime_type, &img.data, format!("image-{i}")));
            }
            ContentBlock::Audio(audio) => {
                parts.push(artifact("audio", &audio.mime_type, &audio.data, format!("audio-{i}")));
            }
            ContentBlock::ResourceLink(link) => {
                let mut line = format!("[resource link: {} <{}>", link.name, link.uri);
                if let Some(mime) = &link.mime_type {
                    line.push_str(&format!(" ({mime})"));
                }
                if let Some(d) = &link.description {
                    line.push_str(&format!(" — {d}"));
                }
                line.push(']');
                parts.push(line);
            }
            ContentBlock::Resource(embedded) => match &embedded.resource {
                ResourceContents::TextResourceContents { uri, text, .. } => {
                    parts.push(format!("[resource <{uri}>]\n{text}"));
                }
                ResourceContents::BlobResourceContents { uri, mime_type, blob, .. } => {
                    let mime = mime_type.as_deref().unwrap_or("application/octet-stream");
                    let name = uri.rsplit('/').next().filter(|s| !s.is_empty()).unwrap_or("resource").to_string();
                    parts.push(format!("[resource <{uri}>] {}", artifact("resource", mime, blob, name)));
                }
                #[allow(unreachable_patterns)]
                _ => parts.push("[resource of an unknown kind]".to_string()),
            },
            #[allow(unreachable_patterns)]
            _ => parts.push("[content of an unknown kind]".to_string()),
        }
    }
    if let Some(structured) = &result.structured_content {
        let already = result.content.iter().any(|b| match b {
            ContentBlock::Text(t) => serde_json::from_str::<serde_json::Value>(&t.text).is_ok_and(|v| v == *structured),
            _ => false,
        });
        if !already {
            parts.push(format!("structured content: {structured}"));
        }
    }
    parts.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(read_only: Option<bool>, destructive: Option<bool>, idempotent: Option<bool>) -> ToolAnnotations {
        let mut a = ToolAnnotations::default();
        a.read_only_hint = read_only;
        a.destructive_hint = destructive;
        a.idempotent_hint = idempotent;
        a
    }

    #[test]
    fn annotations_become_flags() {
        let none = flags_for(None);
        assert!(!none.read_only && none.destructive && !none.idempotent);
        let ro = flags_for(Some(&annotations(Some(true), Some(false), Some(true))));
        assert!(ro.read_only && !ro.destructive && ro.idempotent && ro.concurrency_safe);
        let safe_write = flags_for(Some(&annotations(Some(false), Some(false), None)));
        assert!(!safe_write.read_only && !safe_write.destructive && !safe_write.needs_approval());
        let empty = flags_for(Some(&annotations(None, None, None)));
        assert!(!empty.read_only && empty.destructive);
    }

    #[test]
    fn names_are_prefixed_sanitized_and_cut() {
        assert_eq!(McpTool::local_name("fs", "read.file"), "fs__read_file");
        assert_eq!(McpTool::local_name("s", &"x".repeat(100)).len(), 64);
    }

    #[test]
    fn results_become_text() {
        let result: CallToolResult = serde_json::from_value(serde_json::json!({
            "content": [
                {"type": "text", "text": "{\"a\":1}"},
                {"type": "image", "data": "AAAA", "mimeType": "image/png"},
                {"type": "resource_link", "uri": "test://x", "name": "x", "mimeType": "text/plain"},
                {"type": "resource", "resource": {"uri": "test://y", "text": "hello"}}
            ],
            "structuredContent": {"a": 1}
        }))
        .unwrap();
        let ctx = ToolContext::detached("run", "session");
        let text = result_text(&result, Some(&ctx));
        assert!(text.starts_with("{\"a\":1}\n[image image/png, about 3 bytes, saved as artifact art"), "{text}");
        assert!(text.contains("[resource link: x <test://x> (text/plain)]"));
        assert!(text.contains("[resource <test://y>]\nhello"));
        assert!(!text.contains("structured content"), "already in a text block: {text}");
        let only_structured: CallToolResult =
            serde_json::from_value(serde_json::json!({"content": [], "structuredContent": {"b": 2}})).unwrap();
        assert_eq!(result_text(&only_structured, None), "structured content: {\"b\":2}");
    }
}
