//! What a tool knows about the call it serves ([`ToolContext`]), and the link back to the MCP
//! client for the few tools that talk to it while they run.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::model::{Caller, Requirement};
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

/// The MCP session a call came from, for the few tools that talk back to the client while
/// they run: progress notifications (when the call carried a progress token) and sampling
/// (when the client declared the capability). The only rmcp types a tool sees are inside it.
#[derive(Clone)]
pub struct ClientLink {
    peer: rmcp::Peer<rmcp::RoleServer>,
    token: Option<rmcp::model::ProgressToken>,
    sampling: bool,
    /// Fan-out: several targets report under one token, so progress is a call-wide counter
    /// (it must increase) with no total, and each message names its target.
    fanout: bool,
    sent: Arc<std::sync::atomic::AtomicU32>,
}

/// A model-written text from the client (`sampling/createMessage`).
#[derive(Debug, Clone)]
pub struct Sampled {
    pub text: String,
    /// The model the client says wrote it.
    pub model: String,
}

impl ClientLink {
    /// `peer` of the session, `token` from the request's `_meta.progressToken`; `sampling`
    /// when the client declared that capability (and the protocol allows the server to ask).
    pub fn new(
        peer: rmcp::Peer<rmcp::RoleServer>,
        token: Option<rmcp::model::ProgressToken>,
        sampling: bool,
        fanout: bool,
    ) -> ClientLink {
        ClientLink {
            peer,
            token,
            sampling,
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
        let Some(token) = &link.token else { return };
        let sent = link.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let param = if link.fanout {
            rmcp::model::ProgressNotificationParam::new(token.clone(), f64::from(sent))
                .with_message(format!("{}: {message} ({step}/{total})", self.target.id))
        } else {
            rmcp::model::ProgressNotificationParam::new(token.clone(), f64::from(step.max(sent)))
                .with_total(f64::from(total.max(step)))
                .with_message(message.to_string())
        };
        if let Err(e) = link.peer.notify_progress(param).await {
            tracing::debug!("progress notification not delivered: {e}");
        }
    }

    /// A progress reporter for `exec` operations (which know nothing of MCP): `None` without
    /// a progress token, so they skip building messages.
    pub fn progress_fn(&self) -> Option<crate::exec::ProgressFn> {
        self.client.as_ref()?.token.as_ref()?;
        let ctx = self.clone();
        Some(Arc::new(move |step: u32, total: u32, message: String| {
            let ctx = ctx.clone();
            Box::pin(async move { ctx.progress(step, total, &message).await }) as BoxFuture<'static, ()>
        }))
    }

    /// Whether the client can be asked to sample (declared `sampling` at initialize).
    pub fn can_sample(&self) -> bool {
        self.client.as_ref().is_some_and(|c| c.sampling)
    }

    /// Ask the client's model (`sampling/createMessage`) for a reply to `prompt` under `system`,
    /// at most `max_tokens` long (a longer answer is cut at 8 characters per token), waiting at
    /// most `timeout`. Errors are messages for the result (the client cannot sample, refused,
    /// or answered without text).
    #[allow(deprecated)] // sampling is deprecated by SEP-2577 but current clients still offer it
    pub async fn sample(
        &self,
        system: &str,
        prompt: &str,
        max_tokens: u32,
        timeout: std::time::Duration,
    ) -> Result<Sampled, String> {
        use rmcp::model::{CreateMessageRequestParams, Role, SamplingMessage, SamplingMessageContentBlock};
        let link = match &self.client {
            Some(l) if l.sampling => l,
            _ => return Err("the client did not declare the sampling capability".into()),
        };
        let params = CreateMessageRequestParams::new(
            vec![SamplingMessage::new(
                Role::User,
                SamplingMessageContentBlock::text(prompt),
            )],
            max_tokens,
        )
        .with_system_prompt(system)
        .with_temperature(0.2);
        let result = match tokio::time::timeout(timeout, link.peer.create_message(params)).await {
            Err(_) => return Err(format!("the client did not answer within {}s", timeout.as_secs())),
            Ok(Err(e)) => return Err(format!("the client's sampling failed: {e}")),
            Ok(Ok(r)) => r,
        };
        let text: String = result
            .message
            .content
            .into_vec()
            .into_iter()
            .filter_map(|c| match c {
                SamplingMessageContentBlock::Text(t) => Some(t.text),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n");
        if text.trim().is_empty() {
            return Err("the client's model answered without text".into());
        }
        // A client may ignore `max_tokens`: keep at most 8 characters per token asked for.
        let cap = max_tokens as usize * 8;
        let text = match text.char_indices().nth(cap) {
            Some((at, _)) => format!("{}… [cut at {cap} characters]", &text[..at]),
            None => text,
        };
        Ok(Sampled {
            text,
            model: result.model,
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
