//! A conversation: messages through the model's chat template, the KV cache reused between turns.

use super::generation::{Event, GenerateOptions, Generation, StopReason};
use super::session::Session;
use crate::error::{Error, Result};
use crate::tokenizer::Message;

/// What [`Chat::send`] does when the conversation no longer fits the context.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContextPolicy {
    /// Return [`Error::ContextFull`]; the conversation is left as it was.
    Error,
    /// Drop the oldest turns (never the system message or the new one) until it fits, with room
    /// for a reply; [`Chat::dropped`] says how many messages went.
    #[default]
    DropOldest,
}

/// A conversation with a chat model: the messages so far, rendered by the model's template, with
/// the session's cache reused for the part an earlier turn already ran.
///
/// ```no_run
/// # fn run(model: &wgmoe::Model) -> wgmoe::Result<()> {
/// let mut chat = model.chat(&wgmoe::SessionOptions::default())?;
/// chat.set_system("You are brief.");
/// let reply = chat.ask("What is the capital of France?", &wgmoe::GenerateOptions::max_tokens(64))?;
/// println!("{reply}");
/// # Ok(())
/// # }
/// ```
pub struct Chat {
    session: Session,
    messages: Vec<Message>,
    policy: ContextPolicy,
    tools: Option<serde_json::Value>,
    dropped: usize,
}

impl Chat {
    /// A chat over `session` (which it resets). The model needs a chat template.
    pub fn new(mut session: Session) -> Result<Chat> {
        let model = session.model();
        if !model.has_chat_template() {
            return Err(Error::unsupported(format!(
                "{} has no chat template: use Session::generate with a plain prompt",
                model.path().display()
            )));
        }
        session.reset();
        Ok(Chat {
            session,
            messages: Vec::new(),
            policy: ContextPolicy::default(),
            tools: None,
            dropped: 0,
        })
    }

    /// The same chat with another [`ContextPolicy`].
    pub fn with_policy(mut self, policy: ContextPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Tool definitions (OpenAI's JSON schema form: a list of `{"type": "function", ...}`)
    /// passed to templates that render them (Qwen3, Llama 3.1, ...).
    pub fn set_tools(&mut self, tools: Option<serde_json::Value>) {
        self.tools = tools;
    }

    /// Set (or replace) the system message that starts the conversation.
    pub fn set_system(&mut self, text: impl Into<String>) {
        let text = text.into();
        match self.messages.first_mut() {
            Some(m) if m.role == "system" => m.content = text,
            _ => self.messages.insert(0, Message::system(text)),
        }
    }

    /// Add a message without generating (a tool's result, an earlier turn).
    pub fn push(&mut self, message: Message) {
        self.messages.push(message);
    }

    /// The conversation so far.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Forget the conversation but the system message.
    pub fn reset(&mut self) {
        self.messages.retain(|m| m.role == "system");
        self.session.reset();
        self.dropped = 0;
    }

    /// Messages dropped so far to fit the context ([`ContextPolicy::DropOldest`]).
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The session under the conversation.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Send a user message and stream the reply; the reply joins the conversation once it is
    /// done (also when it was cancelled or stopped at `max_tokens`).
    pub fn send(&mut self, text: impl Into<String>, options: &GenerateOptions) -> Result<ChatTurn<'_>> {
        self.messages.push(Message::user(text));
        let ids = match self.fit(options) {
            Ok(ids) => ids,
            Err(e) => {
                // Refused: the conversation stays as it was.
                self.messages.pop();
                return Err(e);
            }
        };
        let kept = self.session.keep_prefix(&ids);
        // At least one token runs, so there are logits to sample from.
        let from = kept.min(ids.len() - 1);
        self.session.truncate(from);
        match self.session.generate(ids[from..].to_vec(), options) {
            Ok(gen) => Ok(ChatTurn {
                gen,
                messages: &mut self.messages,
                reply: String::new(),
            }),
            Err(e) => {
                self.messages.pop();
                Err(e)
            }
        }
    }

    /// Send a user message and wait for the whole reply: [`Chat::send`] then [`ChatTurn::text`].
    pub fn ask(&mut self, text: impl Into<String>, options: &GenerateOptions) -> Result<String> {
        self.send(text, options)?.text()
    }

    /// The conversation's ids with the generation prompt, after dropping what the policy allows
    /// to leave room for a reply.
    fn fit(&mut self, options: &GenerateOptions) -> Result<Vec<u32>> {
        let capacity = self.session.capacity();
        // Room for a reply: what was asked for, within a quarter of the context by default.
        let reply = options.max_tokens.unwrap_or(capacity / 4).clamp(1, capacity / 2 + 1);
        loop {
            let ids = self.render()?;
            if ids.is_empty() {
                return Err(Error::unsupported(
                    "the chat template rendered the conversation as no tokens",
                ));
            }
            if ids.len() + reply <= capacity + 1 {
                return Ok(ids);
            }
            // The oldest message that is not the system message or the new one.
            let first = self.messages.iter().position(|m| m.role != "system");
            let droppable = first.filter(|&i| i + 1 < self.messages.len());
            match (self.policy, droppable) {
                (ContextPolicy::DropOldest, Some(i)) => {
                    self.messages.remove(i);
                    self.dropped += 1;
                }
                _ => {
                    return Err(Error::ContextFull {
                        needed: ids.len() + reply - 1,
                        free: capacity,
                        capacity,
                    })
                }
            }
        }
    }

    fn render(&self) -> Result<Vec<u32>> {
        let tok = self.session.model().tokenizer();
        let mut extra = serde_json::Map::new();
        if let Some(tools) = &self.tools {
            extra.insert("tools".into(), tools.clone());
        }
        let text = tok.apply_chat_template_with(&self.messages, true, &extra)?;
        tok.encode(&text, false)
    }
}

/// A reply being streamed: the [`Event`]s of its generation. When it ends (or is dropped) the
/// reply is added to the conversation as the assistant's message.
pub struct ChatTurn<'c> {
    gen: Generation<'c>,
    messages: &'c mut Vec<Message>,
    reply: String,
}

impl ChatTurn<'_> {
    /// Wait for the whole reply and return its text.
    pub fn text(mut self) -> Result<String> {
        for e in self.by_ref() {
            e?;
        }
        Ok(self.reply.clone())
    }
}

impl Iterator for ChatTurn<'_> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        let e = self.gen.next()?;
        if let Ok(Event::Token { text, .. } | Event::Text(text)) = &e {
            self.reply.push_str(text);
        }
        Some(e)
    }
}

impl Drop for ChatTurn<'_> {
    fn drop(&mut self) {
        self.messages.push(Message::assistant(std::mem::take(&mut self.reply)));
    }
}

impl StopReason {
    /// Whether the model ended its reply itself (a stop token or string).
    pub fn is_natural(&self) -> bool {
        matches!(self, StopReason::StopToken(_) | StopReason::StopString(_))
    }
}
