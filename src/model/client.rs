//! What the server may ask of the MCP client a call came from, without knowing the protocol:
//! the approvals gate asks its user to confirm and reports progress while it waits for a second
//! person; tools report progress and ask the client's model to sample. The MCP adapter
//! implements [`Client`] over an rmcp session; tests implement it with scripted answers.

use std::time::Duration;

use futures::future::BoxFuture;

/// A user's answer to "run this?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The form was accepted; `checked` is whether the confirm box was ticked.
    Accept {
        checked: bool,
    },
    Decline,
    Cancel,
}

/// A model-written text from the client (`sampling/createMessage`).
#[derive(Debug, Clone)]
pub struct Sampled {
    pub text: String,
    /// The model the client says wrote it.
    pub model: String,
}

/// The client of one call.
pub trait Client: Send + Sync {
    /// The call came over the stateless protocol (2026-07-28): the server cannot send the client
    /// requests; a confirmation is a sealed input-required round trip instead.
    fn stateless(&self) -> bool;
    /// The client declared elicitation (it can ask its user).
    fn can_elicit(&self) -> bool;
    /// The client declared sampling (and the protocol lets the server ask).
    fn can_sample(&self) -> bool;
    /// The call carried a progress token, so progress notifications reach the caller.
    fn has_progress_token(&self) -> bool;
    /// Report progress (best effort: a client that went away does not fail anything).
    fn progress(&self, progress: f64, total: Option<f64>, message: String) -> BoxFuture<'_, ()>;
    /// Ask the user to confirm `message` with a checkbox form, waiting at most `timeout`.
    fn confirm(&self, message: String, timeout: Duration) -> BoxFuture<'_, Result<Reply, String>>;
    /// Ask the client's model for a reply to `prompt` under `system`.
    fn sample(
        &self,
        system: String,
        prompt: String,
        max_tokens: u32,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Sampled, String>>;
    /// Resolves when the client cancels the call (or its session ends).
    fn cancelled(&self) -> BoxFuture<'_, ()>;
}
