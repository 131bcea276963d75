//! `GET /runs/{id}/transcript`: a run's conversation as the model saw it — instructions, context,
//! history, input, every model answer with its tool calls, and every tool result. For a run in
//! flight the saved conversation is only what was seeded (`complete: false`); its turns are in
//! its events.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use loom_agent::store::SessionKey;
use loom_agent::{Message, Transcript};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Tenant};

fn body(run_id: &str, t: &Transcript, messages: &[Message], complete: bool) -> Value {
    json!({
        "run_id": run_id,
        "session_id": t.session_id,
        "state": t.state,
        "complete": complete,
        "messages": messages,
        "output": t.output,
        "usage": t.usage,
        "turns": t.turns,
    })
}

pub(crate) async fn transcript(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(run_id): Path<String>,
) -> ApiResult<Json<Value>> {
    if let Some(e) = state.run_entry(&tenant, &run_id) {
        let mut t = e.run.transcript();
        t.state = e.run.state();
        let complete = t.state.is_terminal();
        return Ok(Json(body(&run_id, &t, &t.messages, complete)));
    }
    if state.runs().contains_key(&run_id) {
        return Err(ApiError::not_found("run", &run_id));
    }
    for agent in state.agents.values() {
        let Some(journal) = agent.journal() else { continue };
        let Some(stored) = journal.load(&run_id).await? else { continue };
        if tenant.owns(stored.record.user_id.as_deref()).is_none() {
            break;
        }
        let key = SessionKey::scoped(stored.record.user_id.as_deref(), &stored.record.session_id);
        if let Some(t) = agent.session_store().get_run(key, &run_id).await? {
            return Ok(Json(body(&run_id, &t, &t.messages, true)));
        }
        // Not saved yet (in flight in another process, or crashed): what was seeded.
        return Ok(Json(json!({
            "run_id": run_id,
            "session_id": stored.record.session_id,
            "state": stored.state,
            "complete": false,
            "messages": stored.record.seeds,
        })));
    }
    Err(ApiError::not_found("run", &run_id))
}
