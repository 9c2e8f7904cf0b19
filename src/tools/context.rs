//! What a tool knows about the call it serves ([`ToolContext`]), and the link back to the MCP
//! client for the few tools that talk to it while they run.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;

pub use crate::model::Sampled;
use crate::model::{Caller, Client, Requirement};
use crate::policy;

/// What a tool knows about the call it serves.
#[derive(Clone)]
pub struct ToolContext {
    pub caller: Arc<Caller>,
    /// The target this run is for (fan-out runs the tool once per target).
    pub target: Arc<crate::targets::Target>,
    /// Every target the server knows (for `targets_*` tools).
    pub targets: Arc<crate::targets::Registry>,
    /// The effective grants of the caller (for `whoami`).
    pub grants: Arc<policy::Effective>,
    /// Facts about this server's own tailnet node, when known.
    pub tailnet: Arc<TailnetInfo>,
    /// The server's configuration (toolset sections such as file roots live here).
    pub config: Arc<crate::config::Config>,
    /// The approvals store (for the `approvals_*` tools); `None` outside a server.
    pub approvals: Option<Arc<crate::approvals::Approvals>>,
    /// The MCP client of this call (progress notifications, sampling); `None` outside a server.
    pub client: Option<ClientLink>,
}

impl ToolContext {
    /// Whether the caller holds `scope` on target `id` (its grants and the target's ceiling);
    /// an unknown target allows nothing.
    pub fn may(&self, scope: policy::Scope, id: &str) -> bool {
        self.targets
            .get(id)
            .is_some_and(|t| t.authorize(&self.grants, Requirement::Scope(scope)).allowed)
    }
}

/// The client a call came from, for the few tools that talk back to it while they run:
/// progress notifications (when the call carried a progress token) and sampling (when the
/// client declared the capability). One link per call: fan-out runs share its counter.
#[derive(Clone)]
pub struct ClientLink {
    client: Arc<dyn Client>,
    /// Fan-out: several targets report under one token, so progress is a call-wide counter
    /// (it must increase) with no total, and each message names its target.
    fanout: bool,
    sent: Arc<std::sync::atomic::AtomicU32>,
}

impl ClientLink {
    pub fn new(client: Arc<dyn Client>, fanout: bool) -> ClientLink {
        ClientLink {
            client,
            fanout,
            sent: Arc::new(std::sync::atomic::AtomicU32::new(0)),
        }
    }
}

impl ToolContext {
    /// A context for running a tool on this host outside an MCP call (the CLI, unit tests): the
    /// `local` target only, no grants, no tailnet facts, no approvals store and no client.
    pub fn local(caller: Arc<Caller>, config: Arc<crate::config::Config>) -> ToolContext {
        ToolContext {
            caller,
            target: Arc::new(crate::targets::Target::local()),
            targets: Arc::new(crate::targets::Registry::local_only()),
            grants: Arc::new(policy::Effective::default()),
            tailnet: Arc::new(TailnetInfo::default()),
            config,
            approvals: None,
            client: None,
        }
    }

    /// A caller for tools run outside MCP in tests: `t@example.com` in dev mode.
    #[doc(hidden)]
    pub fn test_caller() -> Arc<Caller> {
        Arc::new(Caller::dev("t@example.com", "127.0.0.1:1".parse().expect("an address")))
    }

    /// Report step `step` of `total` to the client; a no-op unless the call carried a progress
    /// token. Delivery is best effort (a client that went away does not fail the tool).
    pub async fn progress(&self, step: u32, total: u32, message: &str) {
        let Some(link) = &self.client else { return };
        if !link.client.has_progress_token() {
            return;
        }
        let sent = link.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if link.fanout {
            let message = format!("{}: {message} ({step}/{total})", self.target.id);
            link.client.progress(f64::from(sent), None, message).await;
        } else {
            let (at, of) = (f64::from(step.max(sent)), f64::from(total.max(step)));
            link.client.progress(at, Some(of), message.to_string()).await;
        }
    }

    /// A progress reporter for `exec` operations (which know nothing of MCP): `None` without
    /// a progress token, so they skip building messages.
    pub fn progress_fn(&self) -> Option<crate::exec::ProgressFn> {
        self.client.as_ref().filter(|l| l.client.has_progress_token())?;
        let ctx = self.clone();
        Some(Arc::new(move |step: u32, total: u32, message: String| {
            let ctx = ctx.clone();
            Box::pin(async move { ctx.progress(step, total, &message).await }) as BoxFuture<'static, ()>
        }))
    }

    /// Whether the client can be asked to sample (declared `sampling` at initialize).
    pub fn can_sample(&self) -> bool {
        self.client.as_ref().is_some_and(|l| l.client.can_sample())
    }

    /// Ask the client's model (`sampling/createMessage`) for a reply to `prompt` under `system`,
    /// at most `max_tokens` long (a longer answer is cut at 8 characters per token), waiting at
    /// most `timeout`. Errors are messages for the result (the client cannot sample, refused,
    /// or answered without text).
    pub async fn sample(
        &self,
        system: &str,
        prompt: &str,
        max_tokens: u32,
        timeout: std::time::Duration,
    ) -> Result<Sampled, String> {
        let link = match &self.client {
            Some(l) if l.client.can_sample() => l,
            _ => return Err("the client did not declare the sampling capability".into()),
        };
        let sampled = link
            .client
            .sample(system.to_string(), prompt.to_string(), max_tokens, timeout)
            .await?;
        if sampled.text.trim().is_empty() {
            return Err("the client's model answered without text".into());
        }
        // A client may ignore `max_tokens`: keep at most 8 characters per token asked for.
        let cap = max_tokens as usize * 8;
        let text = match sampled.text.char_indices().nth(cap) {
            Some((at, _)) => format!("{}… [cut at {cap} characters]", &sampled.text[..at]),
            None => sampled.text,
        };
        Ok(Sampled {
            text,
            model: sampled.model,
        })
    }
}

/// The server's own place in the tailnet, from LocalAPI status (empty in dev mode).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TailnetInfo {
    /// Tailnet name (`CurrentTailnet.Name`).
    pub tailnet: Option<String>,
    /// MagicDNS suffix (`CurrentTailnet.MagicDNSSuffix`).
    pub magic_dns_suffix: Option<String>,
    /// This node's MagicDNS name, without the trailing dot.
    pub dns_name: Option<String>,
    pub addresses: Vec<std::net::IpAddr>,
}
