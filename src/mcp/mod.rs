//! The MCP adapter: rmcp's `ServerHandler` over the [`call`](crate::call) pipeline. `tools/list`
//! is the catalog filtered by the caller's grants; `tools/call` becomes a [`Call`] run by the
//! pipeline, with this session as its [`Client`]; `resources/read` is authorized and audited
//! here; a request rmcp could not parse is answered (and, for a call, audited) here.
//!
//! **Invariant:** the caller comes from the HTTP request (put there by the identity middleware
//! after whois), never from anything the client sends. No policy, approvals or audit decision
//! is made here for tools: the pipeline makes them.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool as McpTool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use crate::audit::{self, Auditor, Outcome, Record};
use crate::call::{self, Call, CallError, Pipeline, Response};
use crate::model::{Caller, Client, Requirement, Reresolve};
use crate::policy::{self, LocalGrant};
use crate::targets::Registry;
use crate::tools::Tool;

mod session;

use session::{CONFIRM_KEY, Session, confirm_form, reply_of};

/// What every MCP session of this server shares: the pipeline, and each tool as MCP lists it.
pub struct Shared {
    pub pipeline: Pipeline,
    /// Each tool as MCP lists it (schemas with the pipeline's arguments), built on first use:
    /// `tools/list` and rmcp's per-call header check (`Mcp-Name`, 2026-07-28) read it, and
    /// rebuilding it deep-copies the tool's schemas.
    listed: Vec<OnceLock<McpTool>>,
}

impl std::ops::Deref for Shared {
    type Target = Pipeline;
    fn deref(&self) -> &Pipeline {
        &self.pipeline
    }
}

impl Shared {
    pub fn new(
        config: Arc<crate::config::Config>,
        tools: Vec<Arc<dyn Tool>>,
        targets: Arc<Registry>,
        capability: String,
        grants: Vec<LocalGrant>,
        auditor: Auditor,
    ) -> Shared {
        Shared {
            listed: tools.iter().map(|_| OnceLock::new()).collect(),
            pipeline: Pipeline::new(config, tools, targets, capability, grants, auditor),
        }
    }

    /// The approvals store calls with `confirm` or `two_person` mode need.
    pub fn with_approvals(mut self, approvals: Arc<crate::approvals::Approvals>) -> Shared {
        self.pipeline = self.pipeline.with_approvals(approvals);
        self
    }

    /// Tool `i` of the pipeline's tools as MCP lists it.
    fn listed(&self, i: usize) -> McpTool {
        self.listed[i]
            .get_or_init(|| to_mcp_tool(self.tools[i].as_ref()))
            .clone()
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

/// Client request methods rmcp parses into typed requests: one that reaches
/// `on_custom_request` had params rmcp could not parse.
const SERVED_METHODS: &[&str] = {
    use rmcp::model::*;
    &[
        <InitializeResultMethod as ConstString>::VALUE,
        <PingRequestMethod as ConstString>::VALUE,
        <DiscoverRequestMethod as ConstString>::VALUE,
        <CompleteRequestMethod as ConstString>::VALUE,
        <SetLevelRequestMethod as ConstString>::VALUE,
        <GetPromptRequestMethod as ConstString>::VALUE,
        <ListPromptsRequestMethod as ConstString>::VALUE,
        <ListResourcesRequestMethod as ConstString>::VALUE,
        <ListResourceTemplatesRequestMethod as ConstString>::VALUE,
        <ReadResourceRequestMethod as ConstString>::VALUE,
        <SubscriptionsListenRequestMethod as ConstString>::VALUE,
        <SubscribeRequestMethod as ConstString>::VALUE,
        <UnsubscribeRequestMethod as ConstString>::VALUE,
        <CallToolRequestMethod as ConstString>::VALUE,
        <ListToolsRequestMethod as ConstString>::VALUE,
        <GetTaskMethod as ConstString>::VALUE,
        <UpdateTaskMethod as ConstString>::VALUE,
        <CancelTaskMethod as ConstString>::VALUE,
        <ListSkillsRequestMethod as ConstString>::VALUE,
        <GetSkillRequestMethod as ConstString>::VALUE,
        <ReadResourceDirectoryRequestMethod as ConstString>::VALUE,
    ]
};

fn to_mcp_tool(t: &dyn Tool) -> McpTool {
    let s = t.spec();
    let fans_out = matches!(s.requires, Requirement::Scope(_));
    let mut tool = McpTool::new(
        s.name,
        s.description,
        call::listed_input_schema(&s.input_schema, s.requires),
    );
    tool.title = Some(s.title.to_string());
    tool.output_schema = Some(if fans_out {
        call::fanout_output_schema(&s.output_schema)
    } else {
        s.output_schema.clone()
    });
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

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        let mut implementation = Implementation::new("tailopsmcp", env!("CARGO_PKG_VERSION"));
        implementation.title = Some("tailopsmcp".into());
        implementation.description =
            Some("Operate this host over your tailnet, as yourself, with every call audited".into());
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_prompts()
            .enable_resources()
            .build();
        ServerConfig::new(capabilities)
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
        let effective = self.shared.effective(&caller);
        let tools = (0..self.shared.tools.len())
            .filter(|&i| self.shared.listable(&effective, self.shared.tools[i].as_ref()))
            .map(|i| self.shared.listed(i))
            .collect();
        let mut result = ListToolsResult::with_all_items(tools);
        result.cache_scope = Some(CacheScope::Private);
        Ok(result)
    }

    fn get_tool(&self, name: &str) -> Option<McpTool> {
        self.shared.position(name).map(|i| self.shared.listed(i))
    }

    // The two handlers below run their bodies from the heap. rmcp moves a request handler's
    // future into a task of its own and writes the task's output over it, so the largest
    // handler's future is copied several times per request: `call_tool`'s body is ~8 KB (it
    // holds the policy, approvals and audit steps), which made every request's task ~11 KB.
    fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<CallToolResponse, ErrorData>> + Send + '_ {
        Box::pin(self.tools_call(request, ctx))
    }

    /// Prompts are static text: listed for any identified caller, not audited.
    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListPromptsResult, ErrorData> {
        request_facts(&ctx)?;
        Ok(rmcp::model::ListPromptsResult::with_all_items(crate::prompts::list()))
    }

    /// A prompt rendered for this caller: steps naming tools the caller cannot use are left out.
    async fn get_prompt(
        &self,
        request: rmcp::model::GetPromptRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetPromptResponse, ErrorData> {
        let (caller, _) = request_facts(&ctx)?;
        let effective = self.shared.effective(&caller);
        let usable = |name: &str| {
            self.shared
                .find(name)
                .is_some_and(|t| self.shared.listable(&effective, t.as_ref()))
        };
        let args = request.arguments.unwrap_or_default();
        crate::prompts::get(&request.name, &args, &usable)
            .map(Into::into)
            .map_err(|e| ErrorData::invalid_params(e.to_string(), None))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourcesResult, ErrorData> {
        request_facts(&ctx)?;
        Ok(
            rmcp::model::ListResourcesResult::with_all_items(crate::resources::list())
                .with_cache_scope(CacheScope::Private),
        )
    }

    /// A request rmcp could not parse as the method it names ends here: for a method this server
    /// serves, its params were malformed (`tools/call` with `"arguments": 5`). Answered with
    /// -32602 saying what is wrong; a malformed `tools/call` or `resources/read` is audited (denied,
    /// with the tool or URI when one is named), so every call still has its record. Boxed like
    /// `call_tool`: unboxed, this future made every request's task larger.
    fn on_custom_request(
        &self,
        request: rmcp::model::CustomRequest,
        ctx: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<rmcp::model::CustomResult, ErrorData>> + Send + '_ {
        Box::pin(self.custom_request(request, ctx))
    }

    /// A resource read is authorized (any grant) and audited like a tool call: one record per
    /// `resources/read`, denials and unknown URIs included.
    fn read_resource(
        &self,
        request: rmcp::model::ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> impl Future<Output = Result<rmcp::model::ReadResourceResponse, ErrorData>> + Send + '_ {
        Box::pin(self.resources_read(request, ctx))
    }
}

/// The bodies of the `tools/call`, `resources/read` and custom-request handlers (boxed by
/// [`ServerHandler`]'s methods above).
impl McpServer {
    /// The body of `on_custom_request`.
    async fn custom_request(
        &self,
        request: rmcp::model::CustomRequest,
        ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CustomResult, ErrorData> {
        let rmcp::model::CustomRequest { method, params, .. } = request;
        let params = params.unwrap_or(serde_json::Value::Null);
        let field = |name: &str| params.get(name).and_then(serde_json::Value::as_str).map(str::to_string);
        let (why, rec) = match method.as_str() {
            "tools/call" => {
                let why = serde_json::from_value::<CallToolRequestParams>(params.clone()).err();
                let (caller, session) = request_facts(&ctx)?;
                let mut rec = Record::request(&caller, session, "tools/call");
                rec.tool = field("name");
                rec.arguments = params.get("arguments").cloned();
                (why, Some(rec))
            }
            "resources/read" => {
                let why = serde_json::from_value::<rmcp::model::ReadResourceRequestParams>(params.clone()).err();
                let (caller, session) = request_facts(&ctx)?;
                let mut rec = Record::request(&caller, session, "resources/read");
                rec.arguments = Some(serde_json::json!({ "uri": params.get("uri") }));
                (why, Some(rec))
            }
            m if SERVED_METHODS.contains(&m) => (None, None),
            _ => {
                request_facts(&ctx)?;
                return Err(ErrorData::new(
                    rmcp::model::ErrorCode::METHOD_NOT_FOUND,
                    format!("unknown method `{method}`"),
                    None,
                ));
            }
        };
        let message = match why {
            Some(e) => format!(
                "malformed params for `{method}`: {}",
                crate::text::cap_middle(&e.to_string(), 512)
            ),
            None => format!("malformed params for `{method}`"),
        };
        if let Some(rec) = rec {
            self.shared
                .audit
                .refuse(rec.denied(message.clone()))
                .await
                .map_err(audit_failed)?;
        }
        Err(ErrorData::invalid_params(message, None))
    }

    /// A `tools/call`: the pipeline runs it with this session as its client.
    async fn tools_call(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let (caller, session) = request_facts(&ctx)?;
        let again = ctx
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.extensions.get::<Arc<dyn Reresolve>>())
            .cloned();
        // A confirmation round trip on 2026-07-28 echoes the sealed state and the user's reply.
        let reply = request
            .input_responses
            .as_ref()
            .and_then(|r| r.get(CONFIRM_KEY))
            .and_then(|v| serde_json::from_value::<rmcp::model::ElicitResult>(v.clone()).ok())
            .map(|r| reply_of(&r));
        let call = Call {
            caller,
            session,
            tool: request.name.to_string(),
            arguments: request.arguments.unwrap_or_default(),
            answer: call::Answer {
                state: request.request_state,
                reply,
            },
            again,
        };
        let client: Arc<dyn Client> = Arc::new(Session::of(&ctx));
        match self.shared.run(call, client).await {
            Ok(Response::Result(r)) => {
                let mut result = if r.is_error {
                    CallToolResult::error(vec![ContentBlock::text(r.text)])
                } else {
                    CallToolResult::success(vec![ContentBlock::text(r.text)])
                };
                result.structured_content = r.structured;
                if let Some(secs) = r.retry_after {
                    let mut meta = rmcp::model::MetaObject::new();
                    meta.insert(call::RETRY_AFTER_KEY.into(), secs.into());
                    result.meta = Some(meta);
                }
                Ok(result.into())
            }
            Ok(Response::InputRequired { message, state }) => {
                let mut requests = rmcp::model::InputRequests::new();
                requests.insert(
                    CONFIRM_KEY.to_string(),
                    rmcp::model::InputRequest::Elicitation(rmcp::model::ElicitRequest::new(confirm_form(message))),
                );
                Ok(rmcp::model::InputRequiredResult::new(Some(requests), Some(state)).into())
            }
            Err(CallError::InvalidParams { message, retry_after }) => Err(ErrorData::invalid_params(
                message,
                retry_after.map(|secs| serde_json::json!({ call::RETRY_AFTER_KEY: secs })),
            )),
            Err(CallError::Internal(message)) => Err(ErrorData::internal_error(message, None)),
        }
    }

    /// A `resources/read` (see [`ServerHandler::read_resource`] above).
    async fn resources_read(
        &self,
        request: rmcp::model::ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ReadResourceResponse, ErrorData> {
        use crate::resources::{self, Which};
        let started = Instant::now();
        let (caller, session) = request_facts(&ctx)?;
        let shared = &self.shared;
        let uri: String = request.uri.chars().take(512).collect();
        let mut rec = Record::request(&caller, session, "resources/read");
        rec.arguments = Some(serde_json::json!({ "uri": uri }));
        let effective = shared.effective(&caller);
        let which = Which::parse(&request.uri);
        let inventory_read = Requirement::Scope(policy::Scope {
            area: policy::Area::Inventory,
            level: policy::Level::Read,
        });
        // May this caller read the stored inventory of target `id` (grants and, for a configured
        // target, its ceiling)?
        let may_read = |id: &str| match shared.targets.resolve(&[id.to_string()]) {
            Ok(t) => t[0].authorize(&effective, inventory_read).allowed,
            Err(_) => policy::authorize(&effective, inventory_read, id).allowed,
        };
        let decision = match which {
            Some(Which::Inventory) => {
                let on: Vec<String> = shared
                    .targets
                    .ids()
                    .into_iter()
                    .filter(|id| may_read(id))
                    .map(str::to_string)
                    .collect();
                policy::Decision {
                    allowed: !on.is_empty(),
                    reason: if on.is_empty() {
                        "inventory:read is not granted on any target".to_string()
                    } else {
                        format!("inventory:read on {}", on.join(", "))
                    },
                    grants: Vec::new(),
                }
            }
            _ => policy::authorize(&effective, Requirement::AnyGrant, call::LOCAL_TARGET),
        };
        rec.grants = decision.grants.clone();
        let refusal = match which {
            None => Some(ErrorData::resource_not_found(format!("unknown resource `{uri}`"), None)),
            Some(_) if !decision.allowed => {
                Some(ErrorData::invalid_request(format!("denied: {}", decision.reason), None))
            }
            Some(_) => None,
        };
        if let Some(err) = refusal {
            let mut rec = rec.denied(err.message.to_string());
            rec.duration_ms = Some(started.elapsed().as_secs_f64() * 1e3);
            shared.audit.record(rec).await.map_err(audit_failed)?;
            return Err(err);
        }
        rec.decision = audit::Decision::Allow;
        rec.reason = Some(decision.reason.clone());
        let value = match which {
            Some(Which::AuditMine) => {
                let auditor = shared.audit.clone();
                let principal = caller.principal.clone();
                tokio::task::spawn_blocking(move || resources::audit_mine(&auditor, &principal))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            }
            Some(Which::Inventory) => {
                let db = shared.config.database.clone();
                let readable: std::collections::HashSet<String> = crate::store::inventory::targets(&db)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|id| may_read(id))
                    .collect();
                tokio::task::spawn_blocking(move || resources::inventory(&db, &|id| readable.contains(id)))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r)
            }
            _ => Ok(resources::targets(&shared.targets, &effective)),
        };
        let (result, outcome, error) = match value {
            Ok(v) => {
                let text = serde_json::to_string_pretty(&v).unwrap_or_default();
                let contents =
                    rmcp::model::ResourceContents::text(text, request.uri.clone()).with_mime_type(resources::MIME);
                (
                    Ok(rmcp::model::ReadResourceResult::new(vec![contents])),
                    Outcome::Ok,
                    None,
                )
            }
            Err(e) => {
                tracing::error!(uri = %uri, error = %e, "resource read failed");
                (
                    Err(ErrorData::internal_error("the resource could not be read", None)),
                    Outcome::Error,
                    Some(e),
                )
            }
        };
        rec.outcome = outcome;
        rec.error = error;
        rec.duration_ms = Some(started.elapsed().as_secs_f64() * 1e3);
        rec.result_bytes = result
            .as_ref()
            .ok()
            .and_then(|r| serde_json::to_vec(r).ok())
            .map(|b| b.len() as i64);
        shared.audit.record(rec).await.map_err(audit_failed)?;
        result.map(Into::into)
    }
}

/// The audit store could not record the request: fail closed, without the store's details.
fn audit_failed(e: audit::AuditError) -> ErrorData {
    tracing::error!(error = %e, "audit write failed; refusing the request");
    ErrorData::internal_error("the audit log could not record this call; refused", None)
}
