//! Whether one tool call may run, and with which arguments: the tool and its arguments are
//! checked, then the permission policy decides (a remembered "for this run" answer first), then
//! the approver when the policy asks (or the journal's recorded decision, on resume), then the
//! `before_tool` hooks. Every decision is a `permission.decision` event and an audit entry.

use serde_json::Value;

use super::context::RunCx;
use super::replay::ApprovalReplay;
use crate::error::{RunError, RunErrorKind, ToolError, ToolErrorKind};
use crate::event::{EventKind, PermissionDecisionEvent};
use crate::governance::{
    Approval, ApprovalRequest, AuditAction, DecidedBy, Decision, PermissionDecision, ToolHookAction,
};
use crate::message::ToolCall;
use crate::store::JournalEntry;

/// One prepared tool call: ready to run, or already failed.
///
/// Both payloads are boxed: a prepared call is a parameter of the call's future, which keeps its
/// parameters for its whole life (the tool's run, once per in-flight call); boxed, the arguments
/// are freed when the tool takes them.
pub(super) enum Prepared {
    Ready { index: usize, args: Box<Value> },
    Failed(Box<ToolError>),
}

/// A check's outcome: `Err(RunError)` stops the run; `Ok(Err(ToolError))` refuses the call (the
/// model reads the error); `Ok(Ok(v))` goes on with `v`.
type Checked<T> = Result<Result<T, ToolError>, RunError>;

impl RunCx {
    /// Resolves the tool, parses and checks the arguments, and asks permissions, the approver and
    /// hooks.
    pub(super) async fn prepare(&mut self, turn: u32, call: &ToolCall) -> Result<Prepared, RunError> {
        let (index, args) = match self.resolve(call) {
            Ok(v) => v,
            Err(e) => return Ok(Prepared::Failed(Box::new(e))),
        };
        let checked = match self.permit(turn, call, index, args).await? {
            Ok(args) => self.before_tool(turn, call, index, args).await,
            Err(e) => return Ok(Prepared::Failed(Box::new(e))),
        };
        Ok(match checked {
            Ok(args) => Prepared::Ready { index, args: Box::new(args) },
            Err(e) => Prepared::Failed(Box::new(e)),
        })
    }

    /// The tool's index and the call's arguments, parsed and valid against its schema.
    fn resolve(&self, call: &ToolCall) -> Result<(usize, Value), ToolError> {
        let tools = &self.tools;
        let Some(index) = tools.index_of(&call.name) else {
            let names: Vec<&str> = tools.specs().iter().map(|t| t.name.as_str()).collect();
            let available = if names.is_empty() { "none".to_string() } else { names.join(", ") };
            return Err(ToolError::with_kind(
                ToolErrorKind::NotFound,
                format!("unknown tool `{}`; available tools: {available}", call.name),
            ));
        };
        let args: Value = serde_json::from_str(&call.arguments).map_err(|e| {
            ToolError::invalid_arguments(format!(
                "the arguments for `{}` are not valid JSON ({e}); send a JSON object",
                call.name
            ))
        })?;
        tools.entry(index).validate(&args).map_err(|problems| {
            ToolError::invalid_arguments(format!(
                "the arguments for `{}` do not match its schema: {problems}",
                call.name
            ))
        })?;
        Ok((index, args))
    }

    /// The permission policy's decision, after any remembered denial; the approver when it asks.
    async fn permit(&mut self, turn: u32, call: &ToolCall, index: usize, args: Value) -> Checked<Value> {
        let tools = self.tools.clone();
        let spec = &tools.entry(index).spec;
        let remembered = self.remembered.iter().find(|(tool, _)| *tool == call.name).map(|(_, r)| r.clone());
        if let Some(Err(reason)) = &remembered {
            self.decided(turn, call, PermissionDecision::Deny, DecidedBy::Remembered, Some(reason.clone())).await;
            return Ok(Err(denied(format!("denied by approver: {reason}"))));
        }
        // A remembered "allow for this run" only answers the approval question: the policy still
        // decides first, so a call it denies (other arguments, a deny list) stays denied.
        match self.env.policies.permissions.check(&self.scope, spec, &args).await {
            Decision::Ask(_) if remembered.is_some() => {
                self.decided(turn, call, PermissionDecision::Allow, DecidedBy::Remembered, None).await;
                Ok(Ok(args))
            }
            Decision::Allow => {
                if spec.flags.needs_approval() {
                    self.decided(turn, call, PermissionDecision::Allow, DecidedBy::Policy, None).await;
                }
                Ok(Ok(args))
            }
            Decision::Deny(reason) => {
                self.decided(turn, call, PermissionDecision::Deny, DecidedBy::Policy, Some(reason.clone())).await;
                Ok(Err(denied(format!("permission denied: {reason}"))))
            }
            Decision::Ask(reason) => self.approve(turn, call, index, args, reason).await,
        }
    }

    /// The approver's answer (or the journal's recorded one), applied.
    async fn approve(
        &mut self,
        turn: u32,
        call: &ToolCall,
        index: usize,
        args: Value,
        reason: String,
    ) -> Checked<Value> {
        let tools = self.tools.clone();
        let entry = tools.entry(index);
        let mut replayed = false;
        let approval = match self.recorder.approval(&call.id) {
            ApprovalReplay::Decided(approval) => {
                replayed = true;
                approval
            }
            ApprovalReplay::None | ApprovalReplay::Pending => {
                let Some(handler) = self.env.policies.approval.clone() else {
                    let reason = format!("{reason} and needs approval, and no approval handler is configured");
                    self.decided(turn, call, PermissionDecision::Deny, DecidedBy::Policy, Some(reason.clone())).await;
                    return Ok(Err(denied(format!("permission denied: {reason}"))));
                };
                let request = ApprovalRequest {
                    scope: self.scope.clone(),
                    tool: entry.spec.clone(),
                    call: call.clone(),
                    args: args.clone(),
                    reason: reason.clone(),
                };
                handler.approve(request).await
            }
        };
        let by = DecidedBy::Approver;
        // A "for this run" answer outlives this call: the journal keeps it, so a resumed run
        // remembers it (see `RunCx::resume`).
        if !replayed && matches!(approval, Approval::AllowForRun | Approval::DenyForRun(_)) {
            let entry = JournalEntry::ApprovalDecision { call_id: call.id.clone(), approval: approval.clone() };
            self.recorder.record(|| entry).await?;
        }
        match approval {
            Approval::Defer if !self.recorder.is_journaled() => {
                let reason = "the approver deferred the decision, and deferring needs a journal".to_string();
                self.decided(turn, call, PermissionDecision::Deny, by, Some(reason.clone())).await;
                Ok(Err(denied(format!("denied: {reason}"))))
            }
            Approval::Defer => {
                self.decided(turn, call, PermissionDecision::Defer, by, Some(reason.clone())).await;
                self.recorder.record(|| JournalEntry::ApprovalPending { turn, call: call.clone(), reason }).await?;
                Err(RunError::interrupted(
                    RunErrorKind::ApprovalPending,
                    "approval_pending",
                    format!("waiting for a decision on `{}` (call {}); send it with Agent::decide", call.name, call.id),
                ))
            }
            Approval::Allow => {
                self.decided(turn, call, PermissionDecision::Allow, by, None).await;
                Ok(Ok(args))
            }
            Approval::AllowForRun => {
                self.remembered.push((call.name.clone(), Ok(())));
                self.decided(turn, call, PermissionDecision::Allow, by, Some("for this run".into())).await;
                Ok(Ok(args))
            }
            Approval::Deny(reason) => {
                self.decided(turn, call, PermissionDecision::Deny, by, Some(reason.clone())).await;
                Ok(Err(denied(format!("denied by approver: {reason}"))))
            }
            Approval::DenyForRun(reason) => {
                self.remembered.push((call.name.clone(), Err(reason.clone())));
                self.decided(turn, call, PermissionDecision::Deny, by, Some(reason.clone())).await;
                Ok(Err(denied(format!("denied by approver: {reason}"))))
            }
            Approval::Edit(edited) => {
                if let Err(problems) = entry.validate(&edited) {
                    self.decided(turn, call, PermissionDecision::Deny, by, Some("invalid edit".into())).await;
                    return Ok(Err(ToolError::invalid_arguments(format!(
                        "the approver's edited arguments do not match the schema of `{}`: {problems}",
                        call.name
                    ))));
                }
                self.decided(turn, call, PermissionDecision::Edit, by, None).await;
                Ok(Ok(edited))
            }
        }
    }

    /// The `before_tool` hooks, in order: a rewrite is what the next hook sees; the first deny wins.
    async fn before_tool(
        &mut self,
        turn: u32,
        call: &ToolCall,
        index: usize,
        mut args: Value,
    ) -> Result<Value, ToolError> {
        let live = self.live.clone();
        let hooks = &live.hooks;
        for hook in hooks.iter() {
            let action = match hooks.call(hook.before_tool(&self.scope, call, &args)).await {
                Ok(action) => action,
                Err(e) if hooks.failure_denies => ToolHookAction::Deny(e),
                Err(e) => {
                    tracing::warn!(run_id = %self.scope.run_id, error = %e, "a before_tool hook failed");
                    ToolHookAction::Continue
                }
            };
            match action {
                ToolHookAction::Continue => {}
                ToolHookAction::Deny(reason) => {
                    self.decided(turn, call, PermissionDecision::Deny, DecidedBy::Hook, Some(reason.clone())).await;
                    return Err(denied(format!("denied by hook: {reason}")));
                }
                ToolHookAction::Rewrite(new_args) => {
                    if let Err(problems) = self.tools.entry(index).validate(&new_args) {
                        return Err(ToolError::invalid_arguments(format!(
                            "a hook rewrote the arguments of `{}` into ones that do not match its schema: {problems}",
                            call.name
                        )));
                    }
                    args = new_args;
                }
            }
        }
        Ok(args)
    }

    /// A decision: its audit entry and its `permission.decision` event.
    async fn decided(
        &self,
        turn: u32,
        call: &ToolCall,
        decision: PermissionDecision,
        by: DecidedBy,
        reason: Option<String>,
    ) {
        self.env
            .policies
            .audit_or_warn(&self.scope, AuditAction::PermissionDecision, || {
                serde_json::json!({"tool": call.name, "call_id": call.id, "decision": decision, "by": by,
                                   "reason": reason, "turn": turn})
            })
            .await;
        self.log.emit(EventKind::PermissionDecision(PermissionDecisionEvent {
            turn,
            call_id: call.id.clone(),
            tool: call.name.clone(),
            decision,
            by,
            reason,
        }));
    }
}

fn denied(reason: String) -> ToolError {
    ToolError::with_kind(ToolErrorKind::Denied, reason)
}
