//! The tool catalog: each tool is declared as data ([`ToolSpec`]: name, scope, risk, required
//! annotations, schemas) next to its handler, one file per toolset.
//!
//! Tools do not touch bollard, russh, reqwest or rusqlite: they call `exec` for anything that
//! reaches the system, and never write audit rows (the `mcp` layer does that around them).
//! Filtering (policy, read-only mode) happens in one place, `mcp`; a tool never checks scopes.

pub mod approvals;
pub mod containers;
pub mod files;
pub mod format;
pub mod identity;
pub mod inventory;
pub mod logs;
pub mod network;
pub mod packages;
pub mod proxmox;
pub mod services;
pub mod stacks;
pub mod system;
pub mod targets;

use std::sync::Arc;

use futures::future::BoxFuture;
use rmcp::model::JsonObject;
use serde::Serialize;

use crate::policy;
use crate::tailnet::Caller;

/// How much harm a tool can do; drives approvals in later layers and is shown in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    Low,
    Moderate,
    High,
    Critical,
}

/// The four MCP tool annotations, all required: MCP's defaults (`destructiveHint` = true,
/// the others false) are easy to get wrong by omission, so no tool may omit one.
/// They are hints to clients, not authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Annotations {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

impl Annotations {
    /// A tool that only reads this side of the world: not destructive, idempotent, closed-world.
    pub const READ_ONLY: Annotations = Annotations {
        read_only: true,
        destructive: false,
        idempotent: true,
        open_world: false,
    };
}

/// What the policy layer needs from a tool before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "scope")]
pub enum Requirement {
    /// The caller must hold this scope on the call's target.
    Scope(policy::Scope),
    /// Any caller holding at least one grant (used by `whoami`).
    AnyGrant,
    /// This scope on every target of each record the tool shows or changes (the approvals
    /// tools: a request names its own targets). The call names no target; the `mcp` layer
    /// admits it when the caller holds the scope on some target, and the tool checks each
    /// record with [`ToolContext::may`].
    Across(policy::Scope),
}

/// A tool declared as data.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    /// `<toolset>_<verb>[_<noun>]`, snake case.
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub requires: Requirement,
    pub risk: Risk,
    pub annotations: Annotations,
    /// JSON Schema of the arguments (an object schema).
    pub input_schema: Arc<JsonObject>,
    /// JSON Schema of `structuredContent`.
    pub output_schema: Arc<JsonObject>,
}

impl ToolSpec {
    /// Whether running this tool can change anything (the audit row is then committed before
    /// the action runs).
    pub fn mutates(&self) -> bool {
        !self.annotations.read_only
    }
}

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

/// A successful tool result: structured content plus a readable rendering of it.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    pub structured: serde_json::Value,
    pub text: String,
}

impl ToolOutput {
    /// Structured content from any serializable value, with `text` as its rendering.
    pub fn new<T: Serialize>(value: &T, text: String) -> Result<ToolOutput, ToolError> {
        let structured =
            serde_json::to_value(value).map_err(|e| ToolError::Internal(format!("result does not serialize: {e}")))?;
        Ok(ToolOutput { structured, text })
    }
}

/// Why a tool call failed. The message is safe to show the caller.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The arguments are wrong: a protocol-level "invalid params" error.
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    /// The operation failed on the system it ran against.
    #[error("{0}")]
    Failed(String),
    /// A bug or an unexpected condition in the server.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A tool: its spec and its handler.
pub trait Tool: Send + Sync {
    fn spec(&self) -> &ToolSpec;
    fn call(&self, ctx: ToolContext, args: JsonObject) -> BoxFuture<'_, Result<ToolOutput, ToolError>>;
    /// Whether the tool can work on targets of `kind` (default: every kind). A tool that no
    /// configured target supports is not offered ([`for_targets`]); on an unsupported target it
    /// still refuses at call time.
    fn supports(&self, kind: crate::targets::Kind) -> bool {
        let _ = kind;
        true
    }
}

/// `tools` without those no target in `registry` supports (e.g. the Proxmox tools on a server
/// without an `http` target): they could only ever fail, and would crowd the model's context.
pub fn for_targets(tools: Vec<Arc<dyn Tool>>, registry: &crate::targets::Registry) -> Vec<Arc<dyn Tool>> {
    tools
        .into_iter()
        .filter(|t| registry.all().iter().any(|target| t.supports(target.kind)))
        .collect()
}

/// Parse arguments into a typed struct, with a clear error for wrong types or unknown fields.
/// serde's message quotes the offending value (`unknown variant `…`, expected one of …`): a long
/// one is cut in the middle, so a 1 MiB argument never comes back as a 1 MiB error.
pub fn parse_args<T: serde::de::DeserializeOwned>(args: JsonObject) -> Result<T, ToolError> {
    serde_json::from_value(serde_json::Value::Object(args))
        .map_err(|e| ToolError::InvalidArgs(crate::text::cap_middle(&e.to_string(), ARGS_ERROR_MAX_CHARS)))
}

/// The longest argument error [`parse_args`] returns, in characters.
const ARGS_ERROR_MAX_CHARS: usize = 512;

/// The input JSON Schema of `T` (root type must be an object; checked by a catalog test).
pub fn input_schema<T: schemars::JsonSchema + std::any::Any>() -> Arc<JsonObject> {
    rmcp::handler::server::common::schema_for_input::<T>()
        .unwrap_or_else(|e| panic!("input schema of {}: {e}", std::any::type_name::<T>()))
}

/// The output JSON Schema of `T`, for `structuredContent`.
pub fn output_schema<T: schemars::JsonSchema + std::any::Any>() -> Arc<JsonObject> {
    rmcp::handler::server::common::schema_for_output::<T>()
}

/// One step of what a changing tool does or, with `dry_run: true`, would do.
///
/// Every tool that can change something accepts `dry_run` and returns its plan either way:
/// the exact commands (argv, quoted as a shell would need them), API calls (method and path)
/// and file writes, in order. The approvals layer shows this plan before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Step {
    pub kind: StepKind,
    /// Where it happens: a target id.
    pub target: String,
    /// The exact operation: `systemctl restart nginx.service`, `POST /containers/web/restart`,
    /// `write /srv/stacks/app/.env (mode 0600, 3 keys)`.
    pub detail: String,
}

/// What kind of operation a [`Step`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// A process started with an argument vector (locally or over SSH).
    Command,
    /// A call to an engine or HTTP API (Docker, Proxmox).
    Api,
    /// A file written, moved or removed.
    File,
}

/// A count argument (`limit`, `lines`, ...) with a default and an allowed range. Out of range
/// is an error naming the range, never a silent clamp: the caller learns the cap.
pub fn bounded(name: &str, value: Option<i64>, default: i64, min: i64, max: i64) -> Result<usize, ToolError> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(ToolError::InvalidArgs(format!(
            "`{name}` must be between {min} and {max}, got {v}"
        )));
    }
    Ok(v as usize)
}

/// What a capped result left out. Tools put it in their output as `truncated` (absent or
/// null when nothing was cut), so a model can tell a short answer from a cut one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Truncated {
    /// The cap that applied, e.g. `limit=50` or `65536 bytes`.
    pub cap: String,
    /// How many items (or bytes, as `cap` says) were left out, when known.
    pub omitted: Option<u64>,
}

/// The tools this server offers: the catalog filtered by `[tools]` (`read_only`, `enable`,
/// `disable`). A name in `enable`/`disable` that no tool has is an error, so a typo cannot
/// silently leave a tool on.
pub fn select(config: &crate::config::ToolsConfig) -> Result<Vec<Arc<dyn Tool>>, String> {
    let all = catalog();
    for (key, names) in [("tools.enable", &config.enable), ("tools.disable", &config.disable)] {
        for n in names {
            if !all.iter().any(|t| t.spec().name == n.as_str()) {
                return Err(format!("{key}: no tool is named `{n}`"));
            }
        }
    }
    Ok(all
        .into_iter()
        .filter(|t| {
            let s = t.spec();
            (!config.read_only || s.annotations.read_only)
                && (config.enable.is_empty() || config.enable.iter().any(|n| n == s.name))
                && !config.disable.iter().any(|n| n == s.name)
        })
        .collect())
}

/// Every tool this build knows, in catalog order, each with the target kinds it works on.
pub fn catalog() -> Vec<Arc<dyn Tool>> {
    use crate::targets::Kind::{Docker, Local, Ssh};
    let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
    tools.extend(identity::tools());
    tools.extend(on(&[Local, Ssh], system::tools()));
    tools.extend(targets::tools());
    tools.extend(on(&[Docker], containers::tools()));
    tools.extend(on(&[Local], stacks::tools()));
    tools.extend(on(&[Local, Ssh], services::tools()));
    tools.extend(on(&[Local], logs::tools()));
    tools.extend(on(&[Local], files::tools()));
    for t in network::tools() {
        // ping and traceroute are commands run on the target; the others use this host's sockets.
        let kinds: &'static [crate::targets::Kind] = match t.spec().name {
            "network_ping" | "network_traceroute" => &[Local, Ssh],
            _ => &[Local],
        };
        tools.extend(on(kinds, vec![t]));
    }
    tools.extend(on(&[Local, Ssh], packages::tools()));
    for t in inventory::tools() {
        // A scan reads this host; stored entries (get/set/annotate) exist for any target id.
        if t.spec().name == "inventory_scan" {
            tools.extend(on(&[Local], vec![t]));
        } else {
            tools.push(t);
        }
    }
    tools.extend(proxmox::tools());
    tools.extend(approvals::tools());
    tools
}

/// `tools`, declared to work only on targets of `kinds`: not listed for a caller unless one of
/// their allowed targets has such a kind, and not offered at all when no target has.
fn on(kinds: &'static [crate::targets::Kind], tools: Vec<Arc<dyn Tool>>) -> Vec<Arc<dyn Tool>> {
    tools
        .into_iter()
        .map(|inner| Arc::new(OnKinds { inner, kinds }) as Arc<dyn Tool>)
        .collect()
}

struct OnKinds {
    inner: Arc<dyn Tool>,
    kinds: &'static [crate::targets::Kind],
}

impl Tool for OnKinds {
    fn spec(&self) -> &ToolSpec {
        self.inner.spec()
    }
    fn call(&self, ctx: ToolContext, args: JsonObject) -> BoxFuture<'_, Result<ToolOutput, ToolError>> {
        self.inner.call(ctx, args)
    }
    fn supports(&self, kind: crate::targets::Kind) -> bool {
        self.kinds.contains(&kind) && self.inner.supports(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Sort {
        Cpu,
        Memory,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Args {
        sort: Sort,
    }

    #[test]
    fn an_argument_error_never_echoes_a_huge_value() {
        let mut args = JsonObject::new();
        args.insert("sort".into(), serde_json::Value::from("A".repeat(1 << 20)));
        let ToolError::InvalidArgs(msg) = parse_args::<Args>(args).unwrap_err() else {
            panic!("not an argument error")
        };
        assert!(
            msg.chars().count() <= ARGS_ERROR_MAX_CHARS,
            "{} chars",
            msg.chars().count()
        );
        assert!(msg.starts_with("unknown variant `AAAA"), "{msg}");
        assert!(msg.ends_with("expected `cpu` or `memory`"), "{msg}");
        // Short messages are whole.
        let mut args = JsonObject::new();
        args.insert("sort".into(), serde_json::Value::from("disk"));
        let err = parse_args::<Args>(args).unwrap_err().to_string();
        assert!(
            err.contains("unknown variant `disk`, expected `cpu` or `memory`"),
            "{err}"
        );
        let _ = (Sort::Cpu, Sort::Memory);
    }
}
