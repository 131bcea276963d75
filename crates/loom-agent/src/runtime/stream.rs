//! One live model call: the request, the streamed answer assembled, deltas emitted as events
//! through the output guardrails' filter.

use futures::StreamExt;

use super::calls::ModelCall;
use super::context::RunCx;
use super::output_filter::OutputFilter;
use crate::error::{ModelError, RunError};
use crate::event::{DeltaKind, EventKind, ModelDelta, ModelRequestEvent};
use crate::governance::GuardStage;
use crate::message::Message;
use crate::model::{ModelChunk, ModelRequest, ModelResponse, ResponseAssembler};
use crate::output::OutputSchema;
use crate::tool::ToolSpec;

impl RunCx {
    /// Sends the conversation to the model and assembles the streamed answer, emitting deltas
    /// (through the output guardrails' filter).
    pub(super) async fn stream_turn(
        &self,
        turn: u32,
        messages: &[Message],
        call: Option<&ModelCall>,
    ) -> Result<ModelResponse, RunError> {
        let env = &self.env;
        let offer = env.model.capabilities().tools && call.is_none_or(ModelCall::offers_tools);
        let tools: &[ToolSpec] = if offer { self.tools.specs() } else { &[] };
        let schema = match call {
            None => self.native_schema.as_ref(),
            Some(c) => self.native_schema_for(c),
        };
        self.log.emit(EventKind::ModelRequest(ModelRequestEvent {
            turn,
            model: env.model.name().to_string(),
            messages: messages.len(),
            tools: tools.len(),
        }));
        let request = ModelRequest {
            messages,
            tools,
            generation: &env.generation,
            output_schema: schema.map(OutputSchema::schema),
            run_id: &self.scope.run_id,
            user_id: self.scope.user_id.as_deref(),
            turn,
        };
        let mut stream = env.model.stream(&request).await.map_err(|e| RunError::from_model(&e))?;
        let mut assembler = ResponseAssembler::new();
        let mut filter = OutputFilter::new(&env.policies.guardrails);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| RunError::from_model(&e))?;
            match &chunk {
                ModelChunk::Text(text) if !text.is_empty() => {
                    let shown = match &mut filter {
                        None => Some(text.clone()),
                        Some(f) => match f.push(text) {
                            Ok(shown) => shown,
                            Err((name, reason)) => {
                                return Err(Box::pin(self.guard_blocked(GuardStage::Output, name, reason)).await);
                            }
                        },
                    };
                    if let Some(text) = shown.filter(|t| !t.is_empty()) {
                        self.log.emit(EventKind::ModelDelta(ModelDelta { turn, kind: DeltaKind::Text, text }));
                    }
                }
                ModelChunk::Thinking { text, .. } if !text.is_empty() => {
                    self.log.emit(EventKind::ModelDelta(ModelDelta {
                        turn,
                        kind: DeltaKind::Thinking,
                        text: text.clone(),
                    }));
                }
                _ => {}
            }
            assembler.push(chunk);
        }
        drop(stream);
        let response = assembler.finish(turn).map_err(|e: ModelError| RunError::from_model(&e))?;
        if let Some(f) = &mut filter {
            let rest = match f.finish() {
                Ok(rest) => rest,
                Err((name, reason)) => {
                    return Err(Box::pin(self.guard_blocked(GuardStage::Output, name, reason)).await);
                }
            };
            if !rest.is_empty() {
                self.log.emit(EventKind::ModelDelta(ModelDelta { turn, kind: DeltaKind::Text, text: rest }));
            }
        }
        Ok(response)
    }
}
