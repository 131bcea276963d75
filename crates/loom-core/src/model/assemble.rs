use crate::error::ModelError;
use crate::message::{FinishReason, Thinking, ToolCall, Usage};

use super::{ModelChunk, ModelResponse};

/// Assembles streamed chunks into a [`ModelResponse`]: text is concatenated, thinking is grouped
/// into blocks closed by a signature, tool-call pieces are joined by index.
#[derive(Debug, Default)]
pub struct ResponseAssembler {
    text: String,
    thinking: Vec<Thinking>,
    thinking_open: bool,
    calls: Vec<PartialCall>,
    usage: Usage,
    finish: Option<FinishReason>,
}

#[derive(Debug, Default)]
struct PartialCall {
    index: usize,
    id: Option<String>,
    name: Option<String>,
    arguments: String,
}

impl ResponseAssembler {
    /// An empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one chunk.
    pub fn push(&mut self, chunk: ModelChunk) {
        match chunk {
            ModelChunk::Text(t) => self.text.push_str(&t),
            ModelChunk::Thinking { text, signature, provider } => {
                if !self.thinking_open {
                    self.thinking.push(Thinking::text(String::new()));
                    self.thinking_open = true;
                }
                if let Some(block) = self.thinking.last_mut() {
                    block.text.push_str(&text);
                    if signature.is_some() {
                        block.signature = signature;
                        block.provider = provider;
                        self.thinking_open = false;
                    }
                }
            }
            ModelChunk::ToolCallDelta { index, id, name, arguments } => {
                let pos = match self.calls.iter().position(|c| c.index == index) {
                    Some(p) => p,
                    None => {
                        self.calls.push(PartialCall { index, ..PartialCall::default() });
                        self.calls.len() - 1
                    }
                };
                let call = &mut self.calls[pos];
                if let Some(id) = id.filter(|s| !s.is_empty()) {
                    call.id = Some(id);
                }
                if let Some(name) = name.filter(|s| !s.is_empty()) {
                    match &mut call.name {
                        Some(existing) if existing != &name => existing.push_str(&name),
                        Some(_) => {}
                        None => call.name = Some(name),
                    }
                }
                call.arguments.push_str(&arguments);
            }
            ModelChunk::Usage(u) => {
                // Providers send cumulative usage; keep the largest value of each field.
                self.usage.input_tokens = self.usage.input_tokens.max(u.input_tokens);
                self.usage.cached_input_tokens = self.usage.cached_input_tokens.max(u.cached_input_tokens);
                self.usage.cache_write_tokens = self.usage.cache_write_tokens.max(u.cache_write_tokens);
                self.usage.output_tokens = self.usage.output_tokens.max(u.output_tokens);
                self.usage.cost_usd = self.usage.cost_usd.max(u.cost_usd);
            }
            ModelChunk::Finish(reason) => self.finish = Some(reason),
        }
    }

    /// Finishes the answer. Tool calls without a name are a protocol error; calls without an id get
    /// one (`call_<turn>_<index>`), and empty arguments become `{}`.
    pub fn finish(mut self, turn: u32) -> Result<ModelResponse, ModelError> {
        self.calls.sort_by_key(|c| c.index);
        let mut tool_calls = Vec::with_capacity(self.calls.len());
        for (i, call) in self.calls.into_iter().enumerate() {
            let Some(name) = call.name else {
                return Err(ModelError::Protocol(format!("tool call #{} has no name", call.index)));
            };
            let id = call.id.unwrap_or_else(|| format!("call_{turn}_{i}"));
            let arguments = if call.arguments.trim().is_empty() { "{}".to_string() } else { call.arguments };
            tool_calls.push(ToolCall { id, name, arguments });
        }
        let finish_reason = match self.finish {
            Some(r) => r,
            None if !tool_calls.is_empty() => FinishReason::ToolCalls,
            None => FinishReason::Stop,
        };
        Ok(ModelResponse { text: self.text, thinking: self.thinking, tool_calls, usage: self.usage, finish_reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_tool_call_pieces_by_index_and_keeps_order() {
        let mut a = ResponseAssembler::new();
        a.push(ModelChunk::ToolCallDelta {
            index: 1,
            id: Some("b".into()),
            name: Some("two".into()),
            arguments: "{\"x\"".into(),
        });
        a.push(ModelChunk::ToolCallDelta {
            index: 0,
            id: Some("a".into()),
            name: Some("one".into()),
            arguments: String::new(),
        });
        a.push(ModelChunk::ToolCallDelta { index: 1, id: None, name: None, arguments: ":1}".into() });
        a.push(ModelChunk::Text("hi".into()));
        let r = a.finish(1).unwrap();
        assert_eq!(r.tool_calls[0], ToolCall { id: "a".into(), name: "one".into(), arguments: "{}".into() });
        assert_eq!(r.tool_calls[1].arguments, "{\"x\":1}");
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
        assert_eq!(r.text, "hi");
    }

    #[test]
    fn nameless_call_is_a_protocol_error() {
        let mut a = ResponseAssembler::new();
        a.push(ModelChunk::ToolCallDelta { index: 0, id: None, name: None, arguments: "{}".into() });
        assert!(matches!(a.finish(1), Err(ModelError::Protocol(_))));
    }

    #[test]
    fn thinking_blocks_close_on_signature() {
        let mut a = ResponseAssembler::new();
        a.push(ModelChunk::Thinking { text: "a".into(), signature: None, provider: None });
        a.push(ModelChunk::Thinking { text: "b".into(), signature: Some("sig".into()), provider: Some("p".into()) });
        a.push(ModelChunk::Thinking { text: "c".into(), signature: None, provider: None });
        let r = a.finish(1).unwrap();
        assert_eq!(r.thinking.len(), 2);
        assert_eq!(r.thinking[0], Thinking::signed("ab", "sig", "p"));
    }
}
