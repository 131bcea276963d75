//! The chat template: the GGUF's own Jinja template (`tokenizer.chat_template`), rendered with
//! minijinja. The conversation is mapped to plain role/content messages the template can render:
//! one system message of our own (never the template's default), tool calls written as the JSON
//! the model produces under constraint, and tool results as user messages.

use minijinja::{Environment, ErrorKind, context};

use loom_core::error::Error;
use loom_core::message::Message;

/// ChatML, for GGUFs without a template.
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + \
                      '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' \
                      }}{% endif %}";

/// A compiled chat template.
pub(crate) struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

/// One message as the template sees it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TemplateMessage {
    pub(crate) role: &'static str,
    pub(crate) content: String,
}

impl ChatTemplate {
    pub(crate) fn new(source: Option<&str>, bos: String, eos: String) -> Result<ChatTemplate, Error> {
        let mut env = Environment::new();
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source.unwrap_or(CHATML).to_string())
            .map_err(|e| Error::ModelFile(format!("the GGUF's chat template does not compile: {e}")))?;
        Ok(ChatTemplate { env, bos, eos })
    }

    /// Renders the messages and the assistant prompt.
    pub(crate) fn render(&self, messages: &[TemplateMessage]) -> Result<String, Error> {
        let tmpl = self.env.get_template("chat").map_err(|e| Error::ModelFile(e.to_string()))?;
        let messages: Vec<minijinja::Value> =
            messages.iter().map(|m| context! { role => m.role, content => m.content.clone() }).collect();
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => self.bos.clone(),
            eos_token => self.eos.clone(),
        })
        .map_err(|e| Error::ModelFile(format!("rendering the chat template failed: {e}")))
    }
}

/// How an assistant turn with a tool call is written back into the conversation: the same JSON
/// the constrained decoder produces.
pub(crate) fn tool_call_json(name: &str, arguments: &str) -> String {
    let args: serde_json::Value =
        serde_json::from_str(arguments).unwrap_or(serde_json::Value::Object(Default::default()));
    serde_json::json!({ "tool": name, "arguments": args }).to_string()
}

/// Maps the conversation onto template messages, with `system` as the one system message.
/// Consecutive messages of one role are merged (small models follow alternating turns best).
pub(crate) fn to_template_messages(system: String, messages: &[Message], answer_json: bool) -> Vec<TemplateMessage> {
    let mut out = vec![TemplateMessage { role: "system", content: system }];
    let mut push = |role: &'static str, content: String| match out.last_mut() {
        Some(last) if last.role == role && role != "system" => {
            last.content.push_str("\n\n");
            last.content.push_str(&content);
        }
        _ => out.push(TemplateMessage { role, content }),
    };
    for m in messages {
        match m {
            // Instructions are folded into the system prompt by the caller.
            Message::System { .. } => {}
            Message::User { .. } => push("user", m.text()),
            Message::Assistant { content, tool_calls, .. } => {
                let mut parts: Vec<String> = tool_calls.iter().map(|c| tool_call_json(&c.name, &c.arguments)).collect();
                if !content.is_empty() {
                    if answer_json && tool_calls.is_empty() {
                        parts.push(serde_json::json!({ "answer": content }).to_string());
                    } else {
                        parts.push(content.clone());
                    }
                }
                push("assistant", parts.join("\n"));
            }
            Message::Tool { name, content, is_error, .. } => {
                let what = if *is_error { "failed" } else { "returned" };
                push("user", format!("The tool {name} {what}: {content}"));
            }
        }
    }
    // After tool results, restate the question: a small model answers it instead of echoing the
    // result.
    if let (Some(Message::Tool { .. }), Some(question)) =
        (messages.last(), messages.iter().rev().find(|m| matches!(m, Message::User { .. })))
        && let Some(last) = out.last_mut()
    {
        last.content.push_str(&format!("\n\nUsing this, answer my question: {}", question.text()));
    }
    out
}
