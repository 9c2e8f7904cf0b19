//! The MCP server handler: `tools/list` is the catalog filtered by the caller's grants, and
//! `tools/call` is authorize → rate limit → approvals gate → (after a person's yes, authorize
//! again) → in-flight slots → audit → run → audit → result.
//!
//! **Invariant:** every `tools/call` produces exactly one audit record, denials and bad input
//! included; for a tool that can change something, the record is committed before the tool runs
//! and completed after it. The caller comes from the HTTP request (put there by the identity
//! middleware after whois), never from anything the client sends. This module runs no commands
//! itself: tools do, through `exec`.

use std::sync::{Arc, OnceLock, RwLock};

use futures::StreamExt;
use std::time::Instant;

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool as McpTool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use crate::approvals::{self, Approvals, Mode, Recall};
use crate::audit::{self, Auditor, Outcome, Record};
use crate::limits::Limits;
use crate::policy::{self, LocalGrant};
use crate::tailnet::{Caller, Reresolve};
use crate::targets::{Registry, Target};
use crate::tools::{Requirement, Risk, TailnetInfo, Tool, ToolContext, ToolError, ToolOutput};

/// The target a call runs on when it names none.
pub const LOCAL_TARGET: &str = crate::targets::LOCAL;

/// What every MCP session of this server shares.
pub struct Shared {
    pub config: Arc<crate::config::Config>,
    pub tools: Vec<Arc<dyn Tool>>,
    /// Each tool as MCP lists it (schemas with the layer's arguments), built on first use:
    /// `tools/list` and rmcp's per-call header check (`Mcp-Name`, 2026-07-28) read it, and
    /// rebuilding it deep-copies the tool's schemas.
    listed: Vec<OnceLock<McpTool>>,
    pub targets: Arc<Registry>,
    pub capability: String,
    pub grants: Vec<LocalGrant>,
    pub auditor: Auditor,
    /// This node's tailnet facts; refreshed by the listener when tailscaled's status changes.
    pub tailnet: RwLock<Arc<TailnetInfo>>,
    /// Two-person approvals and confirmation sealing; without it, calls that need either are
    /// refused (see [`Shared::with_approvals`]).
    pub approvals: Option<Arc<Approvals>>,
    /// Rate limits and the in-flight cap (`[limits]`).
    pub limits: Limits,
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
            tools,
            targets,
            capability,
            grants,
            auditor,
            tailnet: RwLock::new(Arc::new(TailnetInfo::default())),
            approvals: None,
            limits: Limits::new(config.limits.clone()),
            config,
        }
    }

    /// The approvals store calls with `confirm` or `two_person` mode need.
    pub fn with_approvals(mut self, approvals: Arc<Approvals>) -> Shared {
        self.approvals = Some(approvals);
        self
    }

    pub fn set_tailnet(&self, info: TailnetInfo) {
        if let Ok(mut t) = self.tailnet.write() {
            *t = Arc::new(info);
        }
    }

    fn tailnet(&self) -> Arc<TailnetInfo> {
        self.tailnet.read().map(|t| t.clone()).unwrap_or_default()
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.tools.iter().position(|t| t.spec().name == name)
    }

    fn find(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.position(name).map(|i| &self.tools[i])
    }

    /// Tool `i` of [`Shared::tools`] as MCP lists it.
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

/// Whether the tool belongs in this caller's lists: some target of a kind it works on allows it.
fn listable(effective: &policy::Effective, tool: &dyn Tool, targets: &Registry) -> bool {
    let requires = tool.spec().requires;
    targets
        .all()
        .iter()
        .any(|t| tool.supports(t.kind) && t.authorize(effective, requires).allowed)
}

fn to_mcp_tool(t: &dyn Tool) -> McpTool {
    let s = t.spec();
    let fans_out = matches!(s.requires, Requirement::Scope(_));
    let mut tool = McpTool::new(s.name, s.description, with_target_args(&s.input_schema, s.requires));
    tool.title = Some(s.title.to_string());
    tool.output_schema = Some(if fans_out {
        with_fanout_output(&s.output_schema)
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

/// The tool's input schema plus the layer's `format`, `target` (not for a tool across
/// targets) and, for fan-out tools, `targets`.
fn with_target_args(input: &JsonObject, requires: Requirement) -> Arc<JsonObject> {
    let fans_out = matches!(requires, Requirement::Scope(_));
    let mut schema = input.clone();
    let props = schema.entry("properties").or_insert_with(|| serde_json::json!({}));
    if let Some(props) = props.as_object_mut() {
        if !matches!(requires, Requirement::Across(_)) {
            props.insert(
                "target".into(),
                serde_json::json!({"type": "string", "description": "The target to run on (default `local`); see `targets_list`."}),
            );
        }
        props.insert(
            "format".into(),
            serde_json::json!({
                "type": "string", "enum": ["text", "toon", "json"],
                "description": "How the text part of the result is rendered: `text` (a readable summary, the default), \
                                `toon` (the structured result in TOON, compact for tables) or `json`. The structured \
                                result is the same either way."
            }),
        );
        if fans_out {
            props.insert(
                "targets".into(),
                serde_json::json!({
                    "type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": MAX_FANOUT,
                    "description": "Run on several targets at once (ids or `group:NAME`); the result lists each target's \
                                    result or error. Give `target` or `targets`, not both."
                }),
            );
        }
    }
    Arc::new(schema)
}

/// The tool's output schema, or the fan-out envelope `{"results": [{target, ok, result|error}]}`.
/// Definitions are hoisted to the root so `#/$defs/...` references keep resolving.
fn with_fanout_output(output: &JsonObject) -> Arc<JsonObject> {
    let mut single = output.clone();
    single.remove("$schema");
    let defs = single.remove("$defs");
    let fanout = serde_json::json!({
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["target", "ok"],
                    "properties": {
                        "target": {"type": "string"},
                        "ok": {"type": "boolean"},
                        "result": {"type": "object", "description": "This tool's result on that target"},
                        "error": {"type": "string"}
                    }
                }
            }
        }
    });
    let mut schema = JsonObject::new();
    schema.insert("type".into(), "object".into());
    schema.insert(
        "anyOf".into(),
        serde_json::json!([serde_json::Value::Object(single), fanout]),
    );
    if let Some(defs) = defs {
        schema.insert("$defs".into(), defs);
    }
    Arc::new(schema)
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
        let effective = policy::effective(&caller, &self.shared.capability, &self.shared.grants);
        let tools = (0..self.shared.tools.len())
            .filter(|&i| listable(&effective, self.shared.tools[i].as_ref(), &self.shared.targets))
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
        let effective = policy::effective(&caller, &self.shared.capability, &self.shared.grants);
        let usable = |name: &str| {
            self.shared
                .find(name)
                .is_some_and(|t| listable(&effective, t.as_ref(), &self.shared.targets))
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
                let mut rec = record_for(&caller, session, "tools/call");
                rec.tool = field("name");
                rec.arguments = params.get("arguments").cloned();
                (why, Some(rec))
            }
            "resources/read" => {
                let why = serde_json::from_value::<rmcp::model::ReadResourceRequestParams>(params.clone()).err();
                let (caller, session) = request_facts(&ctx)?;
                let mut rec = record_for(&caller, session, "resources/read");
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
        if let Some(mut rec) = rec {
            rec.decision = audit::Decision::Deny;
            rec.outcome = Outcome::Denied;
            rec.reason = Some(message.clone());
            audit_refusal(&self.shared.auditor, rec).await?;
        }
        Err(ErrorData::invalid_params(message, None))
    }

    /// A `tools/call`.
    async fn tools_call(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = Instant::now();
        let (caller, session) = request_facts(&ctx)?;
        let shared = &self.shared;
        let mut rec = record_for(&caller, session, "tools/call");
        rec.tool = Some(request.name.to_string());
        // A confirmation round trip on 2026-07-28 echoes these back (see `McpServer::gate`).
        let answer = Answer {
            state: request.request_state.clone(),
            responses: request.input_responses.clone(),
        };
        let mut args: JsonObject = request.arguments.unwrap_or_default();
        rec.arguments = Some(serde_json::Value::Object(args.clone()));

        // The row of a call that does not run. Refusals (`repeatable`) go through the audit
        // log's counting of identical repeats; a gate's answer or a revoked authorization is a
        // row of its own.
        let deny = |mut rec: Record, reason: String, repeatable: bool| async move {
            rec.decision = audit::Decision::Deny;
            rec.outcome = Outcome::Denied;
            rec.reason = Some(reason);
            rec.duration_ms = Some(started.elapsed().as_secs_f64() * 1e3);
            if repeatable {
                audit_refusal(&shared.auditor, rec).await
            } else {
                shared.auditor.record(rec).await.map(drop).map_err(audit_failed)
            }
        };
        // Every refused call is charged to the caller's bucket like any other call, so a flood
        // of refused calls is slowed too and told when to retry. Past the bucket, the refusal
        // says so; its audit reason leaves the wait out, so identical refusals stay identical
        // (the audit log counts repeats instead of writing each one).
        let principal = caller.principal.as_str();
        let refuse = |rec: Record, reason: String, risk: Risk| async move {
            let refusal = match shared.limits.charge(principal, risk) {
                Ok(()) => Refusal {
                    reason,
                    retry: None,
                    said: "",
                },
                Err(limited) => Refusal {
                    reason: format!("{reason}; {}", limited.reason),
                    retry: Some(limited.retry_after_secs),
                    said: "",
                },
            };
            deny(rec, refusal.reason.clone(), true).await?;
            Ok::<_, ErrorData>(refusal)
        };

        let Some(tool) = shared.find(&request.name).cloned() else {
            let refusal = refuse(rec, format!("unknown tool `{}`", quoted(&request.name)), Risk::Low).await?;
            return Err(ErrorData::invalid_params(refusal.text(), refusal.data()));
        };
        let spec = tool.spec();

        // `target`, `targets` and `format` are the layer's arguments, not the tool's.
        let taken = take_format(&mut args).and_then(|f| Ok((f, take_targets(&mut args, spec.requires)?)));
        let (format, selection) = match taken {
            Ok(t) => t,
            Err(message) => return Ok(refuse(rec, message, spec.risk).await?.result()),
        };
        let targets = match &selection {
            Selection::One(id) => shared.targets.resolve(std::slice::from_ref(id)),
            Selection::Fanout(ids) => shared.targets.resolve(ids),
            Selection::Across => Ok(shared.targets.all().to_vec()),
        };
        if !matches!(selection, Selection::Across) {
            let names = match &selection {
                Selection::One(id) => id.clone(),
                Selection::Fanout(ids) => ids.join(","),
                Selection::Across => String::new(),
            };
            rec.target = Some(names);
        }
        let targets = match targets {
            Ok(t) => t,
            Err(e) => {
                let message = format!("{e} (known targets: {})", shared.targets.ids().join(", "));
                return Ok(refuse(rec, message, spec.risk).await?.result());
            }
        };
        let fanout = matches!(selection, Selection::Fanout(_));
        let effective = Arc::new(policy::effective(&caller, &shared.capability, &shared.grants));
        let authorized = authorize_all(&effective, spec.requires, targets, &selection);
        if !matches!(selection, Selection::Across) {
            rec.target = Some(authorized.target_list());
        }
        rec.grants = authorized.grants.clone();
        if authorized.allowed.is_empty() {
            let refusal = refuse(rec, authorized.denial(fanout), spec.risk).await?;
            return Ok(Refusal {
                said: "denied: ",
                ..refusal
            }
            .result());
        }
        rec.decision = audit::Decision::Allow;
        rec.reason = Some(authorized.reason());

        // One link per call: fan-out runs share its progress counter.
        // Sampling is a server-to-client request: not on the stateless protocol (2026-07-28).
        let sampling = ctx.client_capabilities().is_some_and(|c| c.sampling.is_some())
            && ctx.protocol_version().is_none_or(|v| v.has_initialize());
        let client = crate::tools::ClientLink::new(ctx.peer.clone(), ctx.meta.get_progress_token(), sampling, fanout);
        let context = |target: &Arc<Target>| ToolContext {
            caller: caller.clone(),
            target: target.clone(),
            targets: shared.targets.clone(),
            grants: effective.clone(),
            tailnet: shared.tailnet(),
            config: shared.config.clone(),
            approvals: shared.approvals.clone(),
            client: Some(client.clone()),
        };

        // The rate limit, then approvals: after authorization, before anything runs. A refusal
        // is audited like a denial and says what to do next.
        if let Err(limited) = shared.limits.charge(&caller.principal, spec.risk) {
            let refusal = Refusal::limited(limited);
            deny(rec, refusal.reason.clone(), true).await?;
            return Ok(refusal.result());
        }
        // The gate may wait for the client's user or a second person: it holds no in-flight
        // slot while it does.
        let scope_target = rec.target.clone().unwrap_or_default();
        let gate = self
            .gate(
                &ctx,
                answer,
                &caller,
                &tool,
                &authorized.allowed,
                &scope_target,
                &args,
                &context,
            )
            .await;
        match gate {
            Gate::Proceed { note, recheck } => {
                if let Some(note) = note {
                    rec.reason = Some(format!("{}; {note}", rec.reason.take().unwrap_or_default()));
                }
                // Someone said yes, maybe minutes ago: the caller must still be who it was and
                // still hold what it held, right before the call runs.
                if recheck
                    && let Err(reason) = still_authorized(&ctx, shared, &caller, spec.requires, &authorized).await
                {
                    let why = format!("{}; {reason}", rec.reason.take().unwrap_or_default());
                    deny(rec, why, false).await?;
                    return Ok(error_result(format!("denied: {reason}")).into());
                }
            }
            Gate::Respond { reason, response } => {
                deny(rec, reason, false).await?;
                return Ok(*response);
            }
        }
        let slots: Vec<(&str, usize)> = match selection {
            Selection::Across => Vec::new(),
            _ => authorized
                .allowed
                .iter()
                .map(|t| (t.id.as_str(), t.max_concurrent))
                .collect(),
        };
        let _in_flight = match shared.limits.occupy(&caller.principal, &slots) {
            Ok(held) => held,
            Err(busy) => {
                let refusal = Refusal::limited(busy);
                deny(rec, refusal.reason.clone(), true).await?;
                return Ok(refusal.result());
            }
        };
        if let Some(note) = decide_note(shared, spec.name, &args).await {
            rec.reason = Some(format!("{}; {note}", rec.reason.take().unwrap_or_default()));
        }

        // A tool that can change something runs only once its audit row is committed.
        let pending = if spec.mutates() {
            let mut begin = rec.clone();
            begin.outcome = Outcome::Pending;
            Some(shared.auditor.begin(begin).await.map_err(audit_failed)?)
        } else {
            None
        };
        let (outcome, error, response) = if fanout {
            let jobs: Vec<(usize, ToolContext, bool, String)> = authorized
                .decisions
                .iter()
                .enumerate()
                .map(|(i, (t, d))| (i, context(t), d.allowed, d.reason.clone()))
                .collect();
            let runs = futures::stream::iter(jobs.into_iter().map(|(i, ctx, allowed, reason)| {
                let tool = tool.clone();
                let args = args.clone();
                async move {
                    let r = if allowed {
                        run_on(tool.as_ref(), ctx, args).await
                    } else {
                        Err(format!("denied: {reason}"))
                    };
                    (i, r)
                }
            }))
            .buffer_unordered(FANOUT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
            fanout_result(&authorized.decisions, runs)
        } else {
            let on = match selection {
                // A tool across targets runs once, in this host's context.
                Selection::Across => shared
                    .targets
                    .get(LOCAL_TARGET)
                    .cloned()
                    .unwrap_or_else(|| authorized.allowed[0].clone()),
                _ => authorized.allowed[0].clone(),
            };
            match run_on(tool.as_ref(), context(&on), args).await {
                Ok(ToolOutput { structured, text }) => {
                    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
                    r.structured_content = Some(structured);
                    (Outcome::Ok, None, r)
                }
                Err(message) => (Outcome::Error, Some(message.clone()), error_result(message)),
            }
        };
        let response = format.apply(response);
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
        let mut rec = record_for(&caller, session, "resources/read");
        rec.arguments = Some(serde_json::json!({ "uri": uri }));
        let effective = policy::effective(&caller, &shared.capability, &shared.grants);
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
            _ => policy::authorize(&effective, Requirement::AnyGrant, LOCAL_TARGET),
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
            rec.decision = audit::Decision::Deny;
            rec.outcome = Outcome::Denied;
            rec.reason = Some(err.message.to_string());
            rec.duration_ms = Some(started.elapsed().as_secs_f64() * 1e3);
            shared.auditor.record(rec).await.map_err(audit_failed)?;
            return Err(err);
        }
        rec.decision = audit::Decision::Allow;
        rec.reason = Some(decision.reason.clone());
        let value = match which {
            Some(Which::AuditMine) => {
                let auditor = shared.auditor.clone();
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
        rec.result_bytes = result.as_ref().ok().and_then(serialized_len);
        shared.auditor.record(rec).await.map_err(audit_failed)?;
        result.map(Into::into)
    }
}

/// A refused call: why (as audited) and, when the caller's bucket ran dry, when to retry.
struct Refusal {
    reason: String,
    retry: Option<u64>,
    /// Put before the reason in the answer (`denied: ` for a policy denial).
    said: &'static str,
}

impl Refusal {
    /// A call a limit refused before it ran.
    fn limited(refused: crate::limits::Refused) -> Refusal {
        Refusal {
            reason: format!("{}; nothing ran", refused.reason),
            retry: Some(refused.retry_after_secs),
            said: "",
        }
    }

    fn text(&self) -> String {
        match self.retry {
            Some(secs) => format!("{}{}; retry after {secs} s", self.said, self.reason),
            None => format!("{}{}", self.said, self.reason),
        }
    }

    /// `{"tailopsmcp/retryAfterSecs": N}` when there is a wait to tell.
    fn data(&self) -> Option<serde_json::Value> {
        self.retry.map(|secs| serde_json::json!({ RETRY_AFTER_KEY: secs }))
    }

    /// The refusal as an `isError` result, the wait also in `_meta`.
    fn result(self) -> CallToolResponse {
        let mut result = error_result(self.text());
        if let Some(secs) = self.retry {
            let mut meta = rmcp::model::MetaObject::new();
            meta.insert(RETRY_AFTER_KEY.into(), secs.into());
            result.meta = Some(meta);
        }
        result.into()
    }
}

/// Where a refusal tells how long to wait, in `_meta` (results) or `data` (errors).
const RETRY_AFTER_KEY: &str = "tailopsmcp/retryAfterSecs";

/// Record a refused call (repeats of an identical refusal are counted by the audit log).
async fn audit_refusal(auditor: &Auditor, rec: Record) -> Result<(), ErrorData> {
    auditor.refuse(rec).await.map_err(audit_failed)
}

/// Who may run a call where: each named target's decision (grants and ceiling together).
struct Authorized {
    decisions: Vec<(Arc<Target>, policy::Decision)>,
    allowed: Vec<Arc<Target>>,
    grants: Vec<String>,
}

impl Authorized {
    /// The targets as the audit row names them.
    fn target_list(&self) -> String {
        self.decisions
            .iter()
            .map(|(t, _)| t.id.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn denied(&self) -> Vec<String> {
        self.decisions
            .iter()
            .filter(|(_, d)| !d.allowed)
            .map(|(t, d)| format!("{}: {}", t.id, d.reason))
            .collect()
    }

    /// Why nothing is allowed.
    fn denial(&self, fanout: bool) -> String {
        match (&self.decisions[..], fanout) {
            ([(_, d)], false) => d.reason.clone(),
            _ => self.denied().join("; "),
        }
    }

    /// Why the call may run (and where it may not, under fan-out).
    fn reason(&self) -> String {
        let denied = self.denied();
        if denied.is_empty() {
            self.decisions
                .iter()
                .map(|(_, d)| d.reason.clone())
                .collect::<Vec<_>>()
                .join("; ")
        } else {
            format!("partly denied: {}", denied.join("; "))
        }
    }
}

/// Decide `requires` on each of `targets`. Across targets (the approvals tools), only the
/// targets that allow it count, and the call is denied when none does.
fn authorize_all(
    effective: &policy::Effective,
    requires: Requirement,
    targets: Vec<Arc<Target>>,
    selection: &Selection,
) -> Authorized {
    let mut decisions: Vec<(Arc<Target>, policy::Decision)> = targets
        .into_iter()
        .map(|t| {
            let d = t.authorize(effective, requires);
            (t, d)
        })
        .collect();
    if matches!(selection, Selection::Across) {
        let any = decisions.iter().find(|(_, d)| !d.allowed).map(|(_, d)| d.clone());
        decisions.retain(|(_, d)| d.allowed);
        if decisions.is_empty() {
            let (scope, why) = match requires {
                Requirement::Across(s) | Requirement::Scope(s) => (s.to_string(), any.map(|d| d.reason)),
                Requirement::AnyGrant => ("a grant".into(), None),
            };
            return Authorized {
                decisions: vec![(
                    Arc::new(Target::local()),
                    policy::Decision {
                        allowed: false,
                        reason: format!(
                            "{scope} is not granted on any target{}",
                            why.map(|w| format!(" ({w})")).unwrap_or_default()
                        ),
                        grants: Vec::new(),
                    },
                )],
                allowed: Vec::new(),
                grants: Vec::new(),
            };
        }
    }
    let allowed = decisions
        .iter()
        .filter(|(_, d)| d.allowed)
        .map(|(t, _)| t.clone())
        .collect();
    let mut grants: Vec<String> = decisions.iter().flat_map(|(_, d)| d.grants.clone()).collect();
    grants.sort();
    grants.dedup();
    Authorized {
        decisions,
        allowed,
        grants,
    }
}

/// After a wait for a person: ask tailscaled again who is behind the connection (no cache)
/// and check that it is the same principal and node and still holds the call's scope on every
/// target it was allowed on. Any doubt refuses.
async fn still_authorized(
    ctx: &RequestContext<RoleServer>,
    shared: &Shared,
    caller: &Caller,
    requires: Requirement,
    authorized: &Authorized,
) -> Result<(), String> {
    let again = ctx
        .extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<Arc<dyn Reresolve>>())
        .cloned()
        .ok_or_else(|| "authorization could not be checked again after the wait; nothing ran".to_string())?;
    let now = again
        .fresh()
        .await
        .map_err(|e| format!("authorization checked again after the wait: {e}; nothing ran"))?;
    if now.principal != caller.principal || now.node_id != caller.node_id {
        return Err(format!(
            "authorization checked again after the wait: the connection is now {} on {}, not {} on {}; nothing ran",
            now.principal, now.node_id, caller.principal, caller.node_id
        ));
    }
    let effective = policy::effective(&now, &shared.capability, &shared.grants);
    let lost: Vec<String> = authorized
        .allowed
        .iter()
        .filter_map(|t| {
            let d = t.authorize(&effective, requires);
            (!d.allowed).then(|| format!("{}: {}", t.id, d.reason))
        })
        .collect();
    if lost.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "authorization revoked during the wait ({}); nothing ran",
            lost.join("; ")
        ))
    }
}

/// How a result's text content is rendered (`format`); structured content never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Toon,
    Json,
}

impl Format {
    /// Replace a successful result's text with the chosen rendering of its structured content.
    fn apply(self, mut result: CallToolResult) -> CallToolResult {
        if self == Format::Text || result.is_error == Some(true) {
            return result;
        }
        let Some(structured) = &result.structured_content else {
            return result;
        };
        let text = match self {
            Format::Toon => crate::tools::format::toon(structured),
            _ => serde_json::to_string_pretty(structured).unwrap_or_default(),
        };
        result.content = vec![ContentBlock::text(text)];
        result
    }
}

/// The most of a caller's value an error quotes back (and the audit log stores as the reason).
const QUOTED_MAX_BYTES: usize = 128;

/// A caller's value as an error quotes it: a 1 MiB tool name or `format` does not come back as
/// a 1 MiB error.
fn quoted(value: &str) -> String {
    crate::text::cap(value, QUOTED_MAX_BYTES)
}

/// Take `format` out of the arguments.
fn take_format(args: &mut JsonObject) -> Result<Format, String> {
    match args.remove("format") {
        None | Some(serde_json::Value::Null) => Ok(Format::Text),
        Some(serde_json::Value::String(s)) => match s.as_str() {
            "text" => Ok(Format::Text),
            "toon" => Ok(Format::Toon),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "invalid arguments: `format` must be `text`, `toon` or `json`, got `{}`",
                quoted(other)
            )),
        },
        Some(other) => Err(format!(
            "invalid arguments: `format` must be a string, got {}",
            quoted(&other.to_string())
        )),
    }
}

/// How many targets one fan-out call works on at once.
const FANOUT_CONCURRENCY: usize = 8;

/// Which targets a call names.
enum Selection {
    One(String),
    Fanout(Vec<String>),
    /// None: the tool checks its scope on each record's own targets ([`Requirement::Across`]).
    Across,
}

/// Take `target` / `targets` out of the arguments.
fn take_targets(args: &mut JsonObject, requires: Requirement) -> Result<Selection, String> {
    let target = args.remove("target");
    let targets = args.remove("targets");
    if let Requirement::Across(scope) = requires {
        return match (target, targets) {
            (None | Some(serde_json::Value::Null), None | Some(serde_json::Value::Null)) => Ok(Selection::Across),
            _ => Err(format!(
                "invalid arguments: this tool takes no `target`: it shows and acts only on requests whose targets \
                 all grant you {scope}"
            )),
        };
    }
    match (target, targets) {
        (Some(t), Some(_)) if !t.is_null() => Err("invalid arguments: give `target` or `targets`, not both".into()),
        (_, Some(serde_json::Value::Array(list))) => {
            if requires == Requirement::AnyGrant {
                return Err("invalid arguments: this tool takes no `targets`".into());
            }
            if list.is_empty() || list.len() > MAX_FANOUT {
                return Err(format!(
                    "invalid arguments: `targets` must name 1 to {MAX_FANOUT} targets or groups"
                ));
            }
            list.into_iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => Ok(s),
                    other => Err(format!(
                        "invalid arguments: `targets` entries must be strings, got {}",
                        quoted(&other.to_string())
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Selection::Fanout)
        }
        (_, Some(serde_json::Value::Null)) | (None, None) | (Some(serde_json::Value::Null), None) => {
            Ok(Selection::One(LOCAL_TARGET.to_string()))
        }
        (_, Some(other)) => Err(format!(
            "invalid arguments: `targets` must be an array of strings, got {}",
            quoted(&other.to_string())
        )),
        (Some(serde_json::Value::String(t)), None) => Ok(Selection::One(t)),
        (Some(other), None) => Err(format!(
            "invalid arguments: `target` must be a string, got {}",
            quoted(&other.to_string())
        )),
    }
}

/// The most targets one call may name (after group expansion the registry bounds it).
const MAX_FANOUT: usize = 64;

/// Run the tool on one target within the target's concurrency limit. A tool that panics is a
/// bug, but the call still gets an answer (an internal error) and its audit row.
async fn run_on(tool: &dyn Tool, ctx: ToolContext, args: JsonObject) -> Result<ToolOutput, String> {
    use futures::FutureExt;
    let target = ctx.target.clone();
    let name = tool.spec().name;
    if !tool.supports(target.kind) {
        return Err(unsupported(name, tool.kinds(), &target));
    }
    let _permit = target.permit().await.map_err(|e| e.to_string())?;
    let ran = std::panic::AssertUnwindSafe(tool.call(ctx, args)).catch_unwind().await;
    let ran = ran.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(ToolError::Internal(format!(
            "the tool failed unexpectedly ({})",
            crate::text::cap(&what, 256)
        )))
    });
    ran.map_err(|e| {
        if let ToolError::Internal(_) = e {
            tracing::error!(tool = name, target = %target.id, error = %e, "tool failed");
        }
        e.to_string()
    })
}

/// Why `tool` cannot run on `target`: the one refusal for a target of a kind the tool does not
/// declare.
fn unsupported(tool: &str, kinds: &[crate::targets::Kind], target: &Target) -> String {
    let kind = target.kind.as_str();
    let on: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    format!(
        "{tool} is not supported on {kind} targets: target `{}` is a {kind} target ({tool} works on {} targets only)",
        target.id,
        on.join(" and ")
    )
}

/// One target's part of a fan-out result.
#[derive(serde::Serialize)]
struct TargetResult {
    target: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Per-target results in the order the targets were named; one failure hides no other result.
fn fanout_result(
    decisions: &[(Arc<Target>, policy::Decision)],
    mut runs: Vec<(usize, Result<ToolOutput, String>)>,
) -> (Outcome, Option<String>, CallToolResult) {
    runs.sort_by_key(|(i, _)| *i);
    let mut results = Vec::new();
    let mut text = String::new();
    let mut failures = Vec::new();
    for ((target, _), (_, run)) in decisions.iter().zip(runs) {
        match run {
            Ok(out) => {
                text.push_str(&format!("== {} ==\n{}\n", target.id, out.text.trim_end()));
                results.push(TargetResult {
                    target: target.id.clone(),
                    ok: true,
                    result: Some(out.structured),
                    error: None,
                });
            }
            Err(e) => {
                text.push_str(&format!("== {} ==\nerror: {e}\n", target.id));
                failures.push(format!("{}: {e}", target.id));
                results.push(TargetResult {
                    target: target.id.clone(),
                    ok: false,
                    result: None,
                    error: Some(e),
                });
            }
        }
    }
    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
    r.structured_content = Some(serde_json::json!({ "results": results }));
    if failures.is_empty() {
        (Outcome::Ok, None, r)
    } else {
        let summary = format!(
            "{} of {} targets failed: {}",
            failures.len(),
            decisions.len(),
            failures.join("; ")
        );
        (Outcome::Error, Some(summary), r)
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

/// What a client echoed back on a confirmation round trip (protocol 2026-07-28).
struct Answer {
    state: Option<String>,
    responses: Option<rmcp::model::InputResponses>,
}

/// What the approvals gate decided about a call.
enum Gate {
    /// Run it; the note (who approved or confirmed) goes into the audit reason. `recheck`: a
    /// person said yes (maybe after a wait), so the caller's authorization is checked again
    /// right before the run.
    Proceed { note: Option<String>, recheck: bool },
    /// Do not run it: answer with `response` and audit `reason`.
    Respond {
        reason: String,
        response: Box<CallToolResponse>,
    },
}

impl Gate {
    fn refuse(reason: String) -> Gate {
        Gate::Respond {
            response: Box::new(error_result(reason.clone()).into()),
            reason,
        }
    }
}

/// The key of the confirmation in an input-required result (2026-07-28).
const CONFIRM_KEY: &str = "confirm";
/// The boolean property the user sets in a confirmation form.
const CONFIRM_FIELD: &str = "confirm";
/// What the audit says about every client confirmation.
const CLIENT_NOT_PERSON: &str = "a client confirmation, not a second person";

impl McpServer {
    /// The approvals gate between authorization and the run: nothing for `none`, the client's
    /// yes for `confirm`, a different person's approval for `two_person`. A dry run of a
    /// changing tool changes nothing and needs neither.
    #[allow(clippy::too_many_arguments)]
    async fn gate(
        &self,
        ctx: &RequestContext<RoleServer>,
        answer: Answer,
        caller: &Caller,
        tool: &Arc<dyn Tool>,
        allowed: &[Arc<Target>],
        target: &str,
        args: &JsonObject,
        context: &(dyn Fn(&Arc<Target>) -> ToolContext + Sync),
    ) -> Gate {
        let spec = tool.spec();
        let mode = self.shared.config.approvals.mode_for(spec);
        if mode == Mode::None {
            return Gate::Proceed {
                note: None,
                recheck: false,
            };
        }
        if spec.mutates() && args.get("dry_run") == Some(&serde_json::Value::Bool(true)) {
            return Gate::Proceed {
                note: Some(format!("{} mode skipped for a dry run", mode.as_str())),
                recheck: false,
            };
        }
        let Some(store) = self.shared.approvals.clone() else {
            return Gate::refuse(format!(
                "`{}` needs {} and the approvals store is not available; nothing ran",
                spec.name,
                mode.as_str()
            ));
        };
        let hash = approvals::call_hash(spec.name, target, args);
        let call = format!(
            "`{}` on {target} with {}",
            spec.name,
            approvals::canonical_json(&self.shared.auditor.redacted(&serde_json::Value::Object(args.clone())))
        );
        // What would run: the dry-run plan of a changing tool; the call itself for a read. Lazy:
        // a re-call that spends an approval does not run the dry run again.
        let name = spec.name;
        let what = async move {
            let plan = if tool.spec().mutates() {
                match dry_run_plan(tool.as_ref(), allowed, args, context).await {
                    Ok(p) => Some(p),
                    Err(e) => return Err(format!("the dry run of `{name}` failed, nothing ran: {e}")),
                }
            } else {
                None
            };
            let summary = match &plan {
                Some(steps) => format!("{call}; plan: {}", plan_text(steps)),
                None => format!("{call} (read-only: the call is the plan)"),
            };
            Ok((plan, summary))
        };
        match mode {
            Mode::None => Gate::Proceed {
                note: None,
                recheck: false,
            },
            Mode::Confirm => match what.await {
                Ok((_, summary)) => {
                    self.confirm(ctx, answer, caller, name, target, &hash, &summary, &store)
                        .await
                }
                Err(e) => Gate::refuse(e),
            },
            Mode::TwoPerson => {
                // A caller that sent a progress token may wait for the decision, if allowed.
                let wait = store.config.wait;
                let waiter = ctx
                    .meta
                    .get_progress_token()
                    .filter(|_| !wait.is_zero())
                    .map(|token| Waiter {
                        peer: ctx.peer.clone(),
                        token,
                        ct: ctx.ct.clone(),
                        wait,
                    });
                two_person(
                    &store,
                    caller,
                    name,
                    target,
                    args,
                    &hash,
                    what,
                    &self.shared.auditor,
                    waiter,
                )
                .await
            }
        }
    }

    /// `confirm`: elicitation on protocol versions with server-to-client requests; a sealed
    /// input-required round trip on 2026-07-28; refused where the client cannot ask.
    #[allow(clippy::too_many_arguments)]
    async fn confirm(
        &self,
        ctx: &RequestContext<RoleServer>,
        answer: Answer,
        caller: &Caller,
        tool: &str,
        target: &str,
        hash: &str,
        summary: &str,
        store: &Approvals,
    ) -> Gate {
        let message = format!("Run this? {summary}");
        let form = rmcp::model::ElicitRequestParams::FormElicitationParams {
            meta: None,
            message: message.clone(),
            requested_schema: rmcp::model::ElicitationSchema::builder()
                .required_bool_property(CONFIRM_FIELD, |b| {
                    b.title("Run it").description("Check to run exactly this call")
                })
                .build_unchecked(),
        };
        let timeout = store.config.confirm_timeout;
        let stateless = ctx.protocol_version().is_some_and(|v| !v.has_initialize());
        if stateless {
            let Some(state) = answer.state else {
                let sealed = match store.sealer.seal(&caller.principal, tool, target, hash, timeout) {
                    Ok(s) => s,
                    Err(e) => return Gate::refuse(format!("cannot seal a confirmation ({e}); nothing ran")),
                };
                let mut requests = rmcp::model::InputRequests::new();
                requests.insert(
                    CONFIRM_KEY.to_string(),
                    rmcp::model::InputRequest::Elicitation(rmcp::model::ElicitRequest::new(form)),
                );
                return Gate::Respond {
                    reason: format!(
                        "confirmation asked of the client (input required, sealed state bound to this call; {CLIENT_NOT_PERSON}); nothing ran yet"
                    ),
                    response: Box::new(rmcp::model::InputRequiredResult::new(Some(requests), Some(sealed)).into()),
                };
            };
            if let Err(e) = store.sealer.open(&state, &caller.principal, tool, target, hash) {
                return Gate::refuse(format!("confirmation refused: {e}; nothing ran"));
            }
            let reply = answer
                .responses
                .as_ref()
                .and_then(|r| r.get(CONFIRM_KEY))
                .and_then(|v| serde_json::from_value::<rmcp::model::ElicitResult>(v.clone()).ok());
            return confirmed(reply, "input-required round trip, sealed state verified");
        }
        let can_ask = ctx.client_capabilities().is_some_and(|c| c.elicitation.is_some());
        if !can_ask {
            return Gate::refuse(format!(
                "`{tool}` needs a confirmation and this client cannot ask its user (it did not declare the \
                 elicitation capability); nothing ran. Use a client that supports elicitation, or ask the operator \
                 to change [approvals] for this tool."
            ));
        }
        match ctx.peer.create_elicitation_with_timeout(form, Some(timeout)).await {
            Ok(reply) => confirmed(Some(reply), "elicitation"),
            Err(e) => Gate::refuse(format!("confirmation failed ({e}); nothing ran")),
        }
    }
}

/// The client's answer to a confirmation: only an accepted form with the box checked runs.
fn confirmed(reply: Option<rmcp::model::ElicitResult>, how: &str) -> Gate {
    let Some(reply) = reply else {
        return Gate::refuse("confirmation refused: the client sent no answer to the confirmation; nothing ran".into());
    };
    let checked = reply
        .content
        .as_ref()
        .and_then(|c| c.get(CONFIRM_FIELD))
        .and_then(serde_json::Value::as_bool)
        == Some(true);
    match reply.action {
        rmcp::model::ElicitationAction::Accept if checked => Gate::Proceed {
            note: Some(format!("confirmed by the client ({how}; {CLIENT_NOT_PERSON})")),
            recheck: true,
        },
        action => Gate::refuse(format!(
            "not confirmed: the client answered {} ({how}); nothing ran",
            match action {
                rmcp::model::ElicitationAction::Accept => "accept without checking the box",
                rmcp::model::ElicitationAction::Decline => "no",
                rmcp::model::ElicitationAction::Cancel => "cancel",
                _ => "something else",
            }
        )),
    }
}

/// Where a waiting two-person call reports progress: the session's peer and the caller's
/// progress token, for up to `[approvals] wait_secs`.
struct Waiter {
    peer: rmcp::Peer<RoleServer>,
    token: rmcp::model::ProgressToken,
    ct: tokio_util::sync::CancellationToken,
    wait: std::time::Duration,
}

/// How often a waiting call looks for a decision.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Look up this exact call's approval (spending it if approved and live).
async fn recall(store: &Arc<Approvals>, caller: &Caller, tool: &str, target: &str, hash: &str) -> Result<Recall, Gate> {
    let s = store.clone();
    let (principal, t, tg, h) = (
        caller.principal.clone(),
        tool.to_string(),
        target.to_string(),
        hash.to_string(),
    );
    match tokio::task::spawn_blocking(move || s.recall(&principal, &t, &tg, &h)).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "approvals store failed");
            Err(Gate::refuse("the approvals store failed; nothing ran".into()))
        }
        Err(e) => Err(Gate::refuse(format!("the approvals check failed ({e}); nothing ran"))),
    }
}

/// An approval already used for this call, and one approved for other arguments.
type NoneOpen = (Option<Box<approvals::Approval>>, Option<Box<approvals::Approval>>);

/// The answer to a found approval; `Err` when there is no open one for this call.
fn recall_gate(found: Recall, tool: &str) -> Result<Gate, NoneOpen> {
    let view_time = |a: &approvals::Approval| a.view(approvals::now());
    Ok(match found {
        Recall::Run(a) => {
            let v = view_time(&a);
            Gate::Proceed {
                note: Some(format!(
                    "two-person {} approved by {} from {} at {}; spent by this call",
                    a.describe(),
                    v.decided_by.unwrap_or_default(),
                    v.decided_by_node.unwrap_or_default(),
                    v.decided_at.unwrap_or_default()
                )),
                recheck: true,
            }
        }
        Recall::Waiting(a) => pending(&a, tool, "still waiting for a second person"),
        Recall::Denied(a) => {
            let v = view_time(&a);
            Gate::refuse(format!(
                "two-person {} was denied by {} from {}; nothing ran. The request is closed; calling again asks anew.",
                a.describe(),
                v.decided_by.unwrap_or_default(),
                v.decided_by_node.unwrap_or_default()
            ))
        }
        Recall::Expired(a) => {
            let v = view_time(&a);
            Gate::refuse(format!(
                "two-person {} expired at {} ({}); nothing ran. Calling again asks anew.",
                a.describe(),
                v.expires,
                match v.decided_by {
                    Some(by) => format!("approved by {by} but not used in time"),
                    None => "nobody decided it in time".into(),
                }
            ))
        }
        Recall::Nothing { used, other } => return Err((used, other)),
    })
}

/// The answer while `a` waits for a decision.
fn pending(a: &approvals::Approval, tool: &str, state: &str) -> Gate {
    let text = format!(
        "Approval pending: {} is {state}. Nothing ran.\n{}",
        a.describe(),
        how_to_approve(a, tool)
    );
    Gate::Respond {
        reason: format!("two-person approval required: {} {state}", a.describe()),
        response: Box::new(error_result(text).into()),
    }
}

/// Wait for a decision on `a`, reporting progress, until it is decided, the wait ends or the
/// client cancels; then answer like a re-call would (so an approval still runs once).
#[allow(clippy::too_many_arguments)]
async fn wait_for_decision(
    store: &Arc<Approvals>,
    caller: &Caller,
    tool: &str,
    target: &str,
    hash: &str,
    a: &approvals::Approval,
    waiter: Waiter,
    on_timeout: Gate,
) -> Gate {
    let deadline = tokio::time::Instant::now() + waiter.wait;
    let mut round = 0u32;
    loop {
        round += 1;
        let progress = rmcp::model::ProgressNotificationParam::new(waiter.token.clone(), f64::from(round))
            .with_message(format!("waiting for a second person to approve {}", a.describe()));
        let _ = waiter.peer.notify_progress(progress).await;
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return on_timeout;
        }
        tokio::select! {
            _ = waiter.ct.cancelled() => return on_timeout,
            _ = tokio::time::sleep(WAIT_POLL.min(deadline - now)) => {}
        }
        match recall(store, caller, tool, target, hash).await {
            Err(g) => return g,
            Ok(Recall::Waiting(_)) => continue,
            Ok(found) => {
                return recall_gate(found, tool)
                    .unwrap_or_else(|_| Gate::refuse(format!("{} is no longer open; nothing ran", a.describe())));
            }
        }
    }
}

/// `two_person`: spend an approval of exactly this call, or record a request for one (and, for
/// a caller that sent a progress token while `wait_secs` is set, wait for the decision).
#[allow(clippy::too_many_arguments)]
async fn two_person(
    store: &Arc<Approvals>,
    caller: &Caller,
    tool: &str,
    target: &str,
    args: &JsonObject,
    hash: &str,
    what: impl Future<Output = Result<(Option<serde_json::Value>, String), String>>,
    auditor: &Auditor,
    waiter: Option<Waiter>,
) -> Gate {
    let found = match recall(store, caller, tool, target, hash).await {
        Ok(found) => found,
        Err(g) => return g,
    };
    let (found, waiter) = match (found, waiter) {
        (Recall::Waiting(a), Some(w)) => {
            let on_timeout = pending(&a, tool, "still waiting for a second person");
            return wait_for_decision(store, caller, tool, target, hash, &a, w, on_timeout).await;
        }
        other => other,
    };
    let view_time = |a: &approvals::Approval| a.view(approvals::now());
    let (prefix, reason_prefix) = match recall_gate(found, tool) {
        Ok(gate) => return gate,
        Err((used, other)) => match (used, other) {
            (_, Some(o)) => (
                format!(
                    "Refused: {} was approved for different arguments of `{tool}` on {target} (hash {}…); an approval \
                     covers exactly the arguments it was asked for. Nothing ran.\n",
                    o.describe(),
                    &o.args_hash[..12]
                ),
                format!("changed arguments: {} covers other arguments; ", o.describe()),
            ),
            (Some(u), None) => (
                format!(
                    "{} for this exact call was already used at {}: an approval runs once. Nothing ran.\n",
                    u.describe(),
                    view_time(&u).used_at.unwrap_or_default()
                ),
                format!("already used: {}; ", u.describe()),
            ),
            (None, None) => (String::new(), String::new()),
        },
    };

    let (plan, summary) = match what.await {
        Ok(w) => w,
        Err(e) => return Gate::refuse(e),
    };
    let request = approvals::NewRequest {
        requester: caller.principal.clone(),
        requester_node: format!("{} ({})", caller.node_name, caller.node_id),
        tool: tool.to_string(),
        target: target.to_string(),
        arguments: auditor.redacted(&serde_json::Value::Object(args.clone())),
        args_hash: hash.to_string(),
        plan,
        summary,
    };
    let s = store.clone();
    let created = match tokio::task::spawn_blocking(move || s.request(&request)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "approvals store failed");
            return Gate::refuse("the approvals store could not record the request; nothing ran".into());
        }
        Err(e) => return Gate::refuse(format!("the approvals check failed ({e}); nothing ran")),
    };
    let text = format!(
        "{prefix}Approval required: {} needs a second person (two-person rule). Nothing ran.\n{}",
        created.summary,
        how_to_approve(&created, tool)
    );
    let answer = Gate::Respond {
        reason: format!(
            "{reason_prefix}two-person approval required: requested {}",
            created.describe()
        ),
        response: Box::new(error_result(text).into()),
    };
    match waiter {
        Some(w) => wait_for_decision(store, caller, tool, target, hash, &created, w, answer).await,
        None => answer,
    }
}

/// The lines every pending answer ends with: the id and how to approve it.
fn how_to_approve(a: &approvals::Approval, tool: &str) -> String {
    let v = a.view(approvals::now());
    format!(
        "Approval id: {id}\nExpires: {exp}\nSomeone else with approvals:control approves it with the `approvals_decide` \
         tool ({{\"id\": \"{id}\", \"decision\": \"approve\"}}) or on the server host with `tailopsmcp approvals \
         approve {id}`. Then call `{tool}` again with the same arguments: it runs once.",
        id = a.id,
        exp = v.expires
    )
}

/// The plan of a changing tool: its dry run on every allowed target, steps in order.
async fn dry_run_plan(
    tool: &dyn Tool,
    allowed: &[Arc<Target>],
    args: &JsonObject,
    context: &(dyn Fn(&Arc<Target>) -> ToolContext + Sync),
) -> Result<serde_json::Value, String> {
    let mut steps = Vec::new();
    for target in allowed {
        let mut dry = args.clone();
        dry.insert("dry_run".into(), serde_json::Value::Bool(true));
        let out = run_on(tool, context(target), dry).await?;
        match out.structured.get("plan").and_then(serde_json::Value::as_array) {
            Some(plan) => steps.extend(plan.iter().cloned()),
            None => return Err("its dry run returned no plan".into()),
        }
    }
    Ok(serde_json::Value::Array(steps))
}

/// Plan steps as one line: `target: detail; ...`.
fn plan_text(steps: &serde_json::Value) -> String {
    steps
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    format!(
                        "{}: {}",
                        s.get("target").and_then(serde_json::Value::as_str).unwrap_or("?"),
                        s.get("detail").and_then(serde_json::Value::as_str).unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

/// For `approvals_decide`: whose request is being decided, so the decider's audit row names
/// both identities.
async fn decide_note(shared: &Shared, tool: &str, args: &JsonObject) -> Option<String> {
    if tool != "approvals_decide" {
        return None;
    }
    let id = args.get("id")?.as_str()?.to_string();
    if !approvals::valid_id(&id) {
        return None;
    }
    let store = shared.approvals.clone()?;
    let found = tokio::task::spawn_blocking(move || store.get(&id)).await.ok()?.ok()??;
    Some(format!("deciding {}: {}", found.describe(), found.summary))
}

#[cfg(test)]
mod gate_tests {
    use super::*;
    use crate::tools::{Annotations, Step, StepKind, ToolSpec};
    use futures::future::BoxFuture;

    /// A changing tool that reports one step per target and records whether it ran for real.
    struct Restart {
        spec: ToolSpec,
        ran: std::sync::atomic::AtomicUsize,
    }

    impl Tool for Restart {
        fn spec(&self) -> &ToolSpec {
            &self.spec
        }
        fn call(&self, ctx: ToolContext, args: JsonObject) -> BoxFuture<'_, Result<ToolOutput, ToolError>> {
            Box::pin(async move {
                let dry = args.get("dry_run") == Some(&serde_json::Value::Bool(true));
                if !dry {
                    self.ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                let plan = vec![Step {
                    kind: StepKind::Command,
                    target: ctx.target.id.clone(),
                    detail: format!("systemctl restart {}", args["unit"].as_str().unwrap_or("?")),
                }];
                ToolOutput::new(&serde_json::json!({ "plan": plan }), String::new())
            })
        }
    }

    fn restart() -> Restart {
        Restart {
            spec: ToolSpec {
                name: "services_restart",
                title: "t",
                description: "t",
                requires: Requirement::AnyGrant,
                risk: crate::tools::Risk::Moderate,
                annotations: Annotations {
                    read_only: false,
                    destructive: false,
                    idempotent: false,
                    open_world: false,
                },
                input_schema: Default::default(),
                output_schema: Default::default(),
            },
            ran: Default::default(),
        }
    }

    fn context(target: &Arc<Target>) -> ToolContext {
        ToolContext {
            caller: Arc::new(Caller::dev("t@example.com", "127.0.0.1:1".parse().unwrap())),
            target: target.clone(),
            targets: Arc::new(Registry::local_only()),
            grants: Arc::new(policy::Effective::default()),
            tailnet: Default::default(),
            config: Arc::new(crate::config::Config::defaults()),
            approvals: None,
            client: None,
        }
    }

    #[tokio::test]
    async fn the_plan_is_the_dry_run_of_every_target_and_nothing_runs() {
        let tool = restart();
        let targets = vec![Arc::new(Target::local()), Arc::new(Target::local())];
        let args: JsonObject = serde_json::from_str(r#"{"unit": "nginx.service"}"#).unwrap();
        let plan = dry_run_plan(&tool, &targets, &args, &context).await.unwrap();
        assert_eq!(plan.as_array().unwrap().len(), 2, "{plan}");
        assert_eq!(
            plan_text(&plan),
            "local: systemctl restart nginx.service; local: systemctl restart nginx.service"
        );
        assert_eq!(tool.ran.load(std::sync::atomic::Ordering::SeqCst), 0, "a dry run only");
    }

    /// A tool with a bug.
    struct Panics(ToolSpec);

    impl Tool for Panics {
        fn spec(&self) -> &ToolSpec {
            &self.0
        }
        fn call(&self, _: ToolContext, _: JsonObject) -> BoxFuture<'_, Result<ToolOutput, ToolError>> {
            Box::pin(async { panic!("byte index 4 is not a char boundary") })
        }
    }

    #[tokio::test]
    async fn a_tool_that_panics_is_an_internal_error_and_frees_its_slot() {
        let tool = Panics(restart().spec);
        let target = Arc::new(Target::local());
        let err = run_on(&tool, context(&target), JsonObject::new()).await.unwrap_err();
        assert!(err.contains("failed unexpectedly (byte index 4"), "{err}");
        // The target's slot came back.
        assert_eq!(target.permits_available(), target.max_concurrent);
    }

    fn reply(action: rmcp::model::ElicitationAction, content: Option<serde_json::Value>) -> rmcp::model::ElicitResult {
        let mut r = rmcp::model::ElicitResult::new(action);
        r.content = content;
        r
    }

    #[test]
    fn only_an_accepted_form_with_the_box_checked_confirms() {
        use rmcp::model::ElicitationAction::*;
        let yes = confirmed(
            Some(reply(Accept, Some(serde_json::json!({"confirm": true})))),
            "elicitation",
        );
        assert!(matches!(yes, Gate::Proceed { note: Some(n), recheck: true } if n.contains("not a second person")));
        for (r, needle) in [
            (
                Some(reply(Accept, Some(serde_json::json!({"confirm": false})))),
                "without checking",
            ),
            (Some(reply(Accept, None)), "without checking"),
            (
                Some(reply(Accept, Some(serde_json::json!({"confirm": "yes"})))),
                "without checking",
            ),
            (Some(reply(Decline, None)), "answered no"),
            (Some(reply(Cancel, None)), "answered cancel"),
            (None, "no answer"),
        ] {
            match confirmed(r, "elicitation") {
                Gate::Respond { reason, .. } => assert!(reason.contains(needle), "{reason}"),
                Gate::Proceed { .. } => panic!("waved through: {needle}"),
            }
        }
    }
}
