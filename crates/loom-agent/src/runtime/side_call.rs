//! A model call that is not a turn of the run: the criteria judge, the context summarizer. It goes
//! through the same budget check and rate limiter as a turn, its usage counts toward the run and
//! the budget, and it emits no model events of its own (its caller emits one event for it).

use futures::StreamExt;

use super::context::RunCx;
use crate::error::{ModelError, RunError};
use crate::message::Message;
use crate::model::{Generation, ModelRequest, ModelResponse, ResponseAssembler, SharedModel};

impl RunCx {
    /// One model call outside the run's turns, with no tools.
    pub(super) async fn side_call(
        &mut self,
        model: &SharedModel,
        messages: &[Message],
        output_schema: Option<&serde_json::Value>,
        generation: &Generation,
    ) -> Result<ModelResponse, RunError> {
        self.check_cancelled()?;
        self.check_budget().await?;
        self.rate_limit().await?;
        let request = ModelRequest {
            messages,
            tools: &[],
            generation,
            output_schema,
            run_id: &self.scope.run_id,
            user_id: self.scope.user_id.as_deref(),
            turn: self.turn,
        };
        let mut stream = model.stream(&request).await.map_err(|e| RunError::from_model(&e))?;
        let mut assembler = ResponseAssembler::new();
        while let Some(chunk) = stream.next().await {
            assembler.push(chunk.map_err(|e| RunError::from_model(&e))?);
        }
        drop(stream);
        let response = assembler.finish(self.turn).map_err(|e: ModelError| RunError::from_model(&e))?;
        self.log.add_usage(&response.usage);
        if let Some(budget) = &self.env.policies.budget {
            budget.record(&self.scope, &response.usage);
        }
        self.log.roll_up(&response.usage, self.env.policies.budget.as_ref());
        Ok(response)
    }
}
