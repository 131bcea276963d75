//! `loom chat` with a local agent: built from `loom run`'s flags, one `Session` across messages,
//! approvals answered from the chat's own input.

use futures::StreamExt;
use loom_agent::governance::{Approval, ApprovalRequest, FnApproval};
use loom_agent::{Agent, Message, RunRequest, Session, SessionConfig};
use tokio::sync::{mpsc, oneshot};

use super::view::ChatView;
use super::{Answer, ChatArgs, Lines, ask_approval};
use crate::run::{Exit, build_agent_with, describe, report};

/// A question from the run's approval handler, and where its answer goes.
type Question = (ApprovalRequest, oneshot::Sender<Approval>);

/// A chat with an agent of this process.
pub struct LocalChat {
    agent: Agent,
    user: Option<String>,
    session: Session,
    max_turns: Option<u32>,
    questions: mpsc::UnboundedReceiver<Question>,
}

impl LocalChat {
    /// Builds the agent (its approval handler asks in the chat) and opens the session.
    pub fn new(args: ChatArgs) -> Result<LocalChat, String> {
        if args.agent.memory.is_some() && args.user.is_none() {
            report("note: --memory without --user: memory is per user, so this chat neither recalls nor records");
        }
        let (tx, questions) = mpsc::unbounded_channel::<Question>();
        let approver = FnApproval::new(move |request: ApprovalRequest| {
            let tx = tx.clone();
            async move {
                let (answer, reply) = oneshot::channel();
                if tx.send((request, answer)).is_err() {
                    return Approval::Deny("the chat has ended".to_string());
                }
                reply.await.unwrap_or_else(|_| Approval::Deny("no answer in the chat".to_string()))
            }
        });
        let agent = build_agent_with(args.agent, None, |b| b.approval_handler(approver))?;
        let session =
            agent.session(SessionConfig { id: args.session, user_id: args.user.clone(), ..Default::default() });
        Ok(LocalChat { agent, user: args.user, session, max_turns: args.max_turns, questions })
    }

    /// One message: the run streams into the view; approval questions are asked as they come;
    /// Ctrl-C cancels the run (a second one stops waiting for it).
    pub async fn turn(&mut self, message: String, lines: &mut Lines, view: &mut ChatView) -> Exit {
        let mut request = RunRequest::new(message);
        if let Some(n) = self.max_turns {
            request = request.max_turns(n);
        }
        let run = self.session.start(request);
        let mut events = run.events();
        let mut cancelled = false;
        loop {
            tokio::select! {
                biased;
                Ok(()) = tokio::signal::ctrl_c() => {
                    if cancelled {
                        return Exit::Cancelled;
                    }
                    cancelled = true;
                    run.cancel();
                }
                Some((request, reply)) = self.questions.recv() => {
                    let approval = match ask_approval(lines, &request.tool.name, &request.reason, &request.args.to_string()).await {
                        Answer::Yes => Approval::Allow,
                        Answer::Always => Approval::AllowForRun,
                        Answer::No => Approval::Deny("denied in the chat".to_string()),
                    };
                    let _ = reply.send(approval);
                }
                event = events.next() => {
                    let Some(event) = event else { break };
                    if let Err(e) = view.event(&event) {
                        report(&format!("error: cannot write to stdout: {e}"));
                        run.cancel();
                        return Exit::Failed;
                    }
                }
            }
        }
        Exit::of(run.result().await.state)
    }

    /// Starts a new session; its id.
    pub fn new_session(&mut self) -> String {
        self.session = self.agent.session(SessionConfig { user_id: self.user.clone(), ..Default::default() });
        self.session.id().to_string()
    }

    /// The session's conversation.
    pub async fn history(&self) -> Result<Vec<Message>, String> {
        self.agent.session_store().history(self.session.key()).await.map_err(|e| describe(&e))
    }

    /// Waits for memory's background extraction, so nothing is lost on exit.
    pub async fn finish(&self) {
        if let Err(e) = self.agent.memory().flush().await {
            report(&format!("warning: memory: {} (extracted on a later run)", describe(&e)));
        }
    }
}
