//! The MCP server handler: `tools/list` is the catalog filtered by the caller's grants, and
//! `tools/call` is authorize → audit → run → audit → result.
//!
//! **Invariant:** every `tools/call` produces exactly one audit record, denials and bad input
//! included; for a tool that can change something, the record is committed before the tool runs
//! and completed after it. The caller comes from the HTTP request (put there by the identity
//! middleware after whois), never from anything the client sends. This module runs no commands
//! itself: tools do, through `exec`.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool as McpTool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use crate::audit::{self, Auditor, Outcome, Record};
use crate::policy::{self, LocalGrant};
use crate::tailnet::Caller;
use crate::tools::{Requirement, TailnetInfo, Tool, ToolContext, ToolError, ToolOutput};

/// The one target that exists until the target registry does.
pub const LOCAL_TARGET: &str = "local";

/// What every MCP session of this server shares.
pub struct Shared {
    pub tools: Vec<Arc<dyn Tool>>,
    pub capability: String,
    pub grants: Vec<LocalGrant>,
    pub auditor: Auditor,
    /// This node's tailnet facts; refreshed by the listener when tailscaled's status changes.
    pub tailnet: RwLock<Arc<TailnetInfo>>,
}

impl Shared {
    pub fn new(tools: Vec<Arc<dyn Tool>>, capability: String, grants: Vec<LocalGrant>, auditor: Auditor) -> Shared {
        Shared {
            tools,
            capability,
            grants,
            auditor,
            tailnet: RwLock::new(Arc::new(TailnetInfo::default())),
        }
    }

    pub fn set_tailnet(&self, info: TailnetInfo) {
        if let Ok(mut t) = self.tailnet.write() {
            *t = Arc::new(info);
        }
    }

    fn tailnet(&self) -> Arc<TailnetInfo> {
        self.tailnet.read().map(|t| t.clone()).unwrap_or_default()
    }

    fn find(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.iter().find(|t| t.spec().name == name)
    }
}

/// One MCP service instance (rmcp creates one per session, or per request when stateless).
#[derive(Clone)]
pub struct McpServer {
    shared: Arc<Shared>,
}

impl McpServer {
    pub fn new(shared: Arc<Shared>) -> McpServer {
        McpServer { shared }
    }
}

/// The caller and HTTP facts the identity middleware attached to this request.
fn request_facts(ctx: &RequestContext<RoleServer>) -> Result<(Arc<Caller>, Option<String>), ErrorData> {
    let parts = ctx
        .extensions
        .get::<http::request::Parts>()
        .ok_or_else(|| ErrorData::internal_error("request arrived without HTTP context", None))?;
    let caller = parts
        .extensions
        .get::<Arc<Caller>>()
        .cloned()
        .ok_or_else(|| ErrorData::internal_error("request arrived without a caller identity", None))?;
    let session = parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((caller, session))
}

/// An audit record carrying the caller's identity.
pub fn record_for(caller: &Caller, session: Option<String>, method: &str) -> Record {
    let mut r = Record::new();
    r.session_id = session;
    r.principal = Some(caller.principal.clone());
    r.user_id = caller.user_id;
    r.login = Some(caller.login.clone());
    r.node_id = Some(caller.node_id.clone());
    r.node_name = Some(caller.node_name.clone());
    r.tags = caller.tags.clone();
    r.remote_addr = Some(caller.addr.to_string());
    r.identity_source = Some(caller.source.as_str().to_string());
    r.method = method.to_string();
    r
}

/// Whether the tool belongs in this caller's `tools/list`: the scope is held on some target.
fn listable(effective: &policy::Effective, requires: Requirement) -> bool {
    match requires {
        Requirement::AnyGrant => !effective.grants.is_empty(),
        Requirement::Scope(needed) => effective
            .grants
            .iter()
            .any(|g| g.scopes.iter().any(|s| s.covers(needed))),
    }
}

fn to_mcp_tool(t: &dyn Tool) -> McpTool {
    let s = t.spec();
    let mut tool = McpTool::new(s.name, s.description, s.input_schema.clone());
    tool.title = Some(s.title.to_string());
    tool.output_schema = Some(s.output_schema.clone());
    tool.annotations = Some(ToolAnnotations::from_raw(
        Some(s.title.to_string()),
        Some(s.annotations.read_only),
        Some(s.annotations.destructive),
        Some(s.annotations.idempotent),
        Some(s.annotations.open_world),
    ));
    let mut meta = JsonObject::new();
    meta.insert(
        "tailopsmcp/risk".into(),
        serde_json::to_value(s.risk).unwrap_or_default(),
    );
    meta.insert(
        "tailopsmcp/requires".into(),
        serde_json::to_value(s.requires).unwrap_or_default(),
    );
    tool.meta = Some(rmcp::model::MetaObject(meta));
    tool
}

fn error_result(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        let mut implementation = Implementation::new("tailopsmcp", env!("CARGO_PKG_VERSION"));
        implementation.title = Some("tailopsmcp".into());
        implementation.description =
            Some("Operate this host over your tailnet, as yourself, with every call audited".into());
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(implementation)
            .with_instructions(
                "Tools operate the host this server runs on. Every call is authorized against your tailnet \
                 identity and recorded in an audit log. Call `whoami` to see your identity and scopes.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let (caller, _) = request_facts(&ctx)?;
        let effective = policy::effective(&caller, &self.shared.capability, &self.shared.grants);
        let tools = self
            .shared
            .tools
            .iter()
            .filter(|t| listable(&effective, t.spec().requires))
            .map(|t| to_mcp_tool(t.as_ref()))
            .collect();
        let mut result = ListToolsResult::with_all_items(tools);
        result.cache_scope = Some(CacheScope::Private);
        Ok(result)
    }

    fn get_tool(&self, name: &str) -> Option<McpTool> {
        self.shared.find(name).map(|t| to_mcp_tool(t.as_ref()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = Instant::now();
        let (caller, session) = request_facts(&ctx)?;
        let shared = &self.shared;
        let mut rec = record_for(&caller, session, "tools/call");
        rec.tool = Some(request.name.to_string());
        let mut args: JsonObject = request.arguments.unwrap_or_default();
        rec.arguments = Some(serde_json::Value::Object(args.clone()));

        let audit_denial = |mut rec: Record, reason: String| async move {
            rec.decision = audit::Decision::Deny;
            rec.outcome = Outcome::Denied;
            rec.reason = Some(reason);
            rec.duration_ms = Some(started.elapsed().as_secs_f64() * 1e3);
            shared.auditor.record(rec).await
        };

        let Some(tool) = shared.find(&request.name).cloned() else {
            let message = format!("unknown tool `{}`", request.name);
            audit_denial(rec, message.clone()).await.map_err(audit_failed)?;
            return Err(ErrorData::invalid_params(message, None));
        };

        // `target` is the layer's argument, not the tool's.
        let target = match args.remove("target") {
            None | Some(serde_json::Value::Null) => LOCAL_TARGET.to_string(),
            Some(serde_json::Value::String(t)) => t,
            Some(other) => {
                let message = format!("invalid arguments: `target` must be a string, got {other}");
                rec.target = None;
                audit_denial(rec, message.clone()).await.map_err(audit_failed)?;
                return Ok(error_result(message).into());
            }
        };
        rec.target = Some(target.clone());
        if target != LOCAL_TARGET {
            let message = format!("unknown target `{target}` (known targets: {LOCAL_TARGET})");
            audit_denial(rec, message.clone()).await.map_err(audit_failed)?;
            return Ok(error_result(message).into());
        }

        let effective = Arc::new(policy::effective(&caller, &shared.capability, &shared.grants));
        let spec = tool.spec();
        let decision = policy::authorize(&effective, spec.requires, &target);
        rec.grants = decision.grants.clone();
        if !decision.allowed {
            let message = format!("denied: {}", decision.reason);
            audit_denial(rec, decision.reason).await.map_err(audit_failed)?;
            return Ok(error_result(message).into());
        }
        rec.decision = audit::Decision::Allow;
        rec.reason = Some(decision.reason);

        // A tool that can change something runs only once its audit row is committed.
        let pending = if spec.mutates() {
            let mut begin = rec.clone();
            begin.outcome = Outcome::Pending;
            Some(shared.auditor.begin(begin).await.map_err(audit_failed)?)
        } else {
            None
        };

        let tool_ctx = ToolContext {
            caller: caller.clone(),
            target,
            grants: effective,
            tailnet: shared.tailnet(),
        };
        let result = tool.call(tool_ctx, args).await;
        let (outcome, error, response) = match result {
            Ok(ToolOutput { structured, text }) => {
                let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
                r.structured_content = Some(structured);
                (Outcome::Ok, None, r)
            }
            Err(e) => {
                let message = e.to_string();
                if let ToolError::Internal(_) = e {
                    tracing::error!(tool = spec.name, error = %message, "tool failed");
                }
                (Outcome::Error, Some(message.clone()), error_result(message))
            }
        };
        let bytes = serialized_len(&response);
        let duration_ms = started.elapsed().as_secs_f64() * 1e3;
        match pending {
            Some(id) => shared
                .auditor
                .complete(id, outcome, error, duration_ms, bytes)
                .await
                .map_err(audit_failed)?,
            None => {
                rec.outcome = outcome;
                rec.error = error;
                rec.duration_ms = Some(duration_ms);
                rec.result_bytes = bytes;
                shared.auditor.record(rec).await.map_err(audit_failed)?;
            }
        }
        Ok(response.into())
    }
}

/// Bytes `value` takes as JSON, counted without building the text.
fn serialized_len<T: serde::Serialize>(value: &T) -> Option<i64> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).ok().map(|()| count.0 as i64)
}

/// The audit store could not record the call: fail closed, without the store's details.
fn audit_failed(e: audit::AuditError) -> ErrorData {
    tracing::error!(error = %e, "audit write failed; refusing the call");
    ErrorData::internal_error("the audit log could not record this call; refused", None)
}
