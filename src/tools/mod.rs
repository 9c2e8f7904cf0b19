//! The tool catalog, one file per toolset. Every tool is made one way: [`tool`] from a
//! [`Declaration`] (name, words for clients, requirement, risk, annotations, target kinds) and a
//! handler of typed arguments returning a typed [`Output`]; the schemas come from those types.
//!
//! Tools do not touch bollard, russh, reqwest or rusqlite: they call `exec` for anything that
//! reaches the system, and never write audit rows (the `call` pipeline does that around them).
//! Authorization and the target-kind check happen in one place, the `call` pipeline; a tool
//! never checks scopes or kinds. `[tools]` filtering is [`select`], once at start-up.

pub mod approvals;
pub mod containers;
mod context;
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

pub use crate::model::{Annotations, Kind, Requirement, Risk, Step, StepKind, ToolSpec};
pub use context::{ClientLink, Sampled, TailnetInfo, ToolContext};

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

/// An `exec` failure is the call's failure, with `exec`'s message. (A toolset whose messages
/// differ on purpose maps it itself, e.g. `containers` turns a refusal into a bad argument.)
impl From<crate::exec::ExecError> for ToolError {
    fn from(e: crate::exec::ExecError) -> ToolError {
        ToolError::Failed(e.to_string())
    }
}

/// The error for a target whose executor a handler cannot use. The call pipeline runs a tool
/// only on the target kinds it declares, so reaching this is a bug (or a direct call that
/// skipped the pipeline).
pub(crate) fn undeclared_kind(ctx: &ToolContext) -> ToolError {
    ToolError::Internal(format!(
        "target `{}` is a {} target, a kind this tool does not declare",
        ctx.target.id,
        ctx.target.kind.as_str()
    ))
}

/// Run blocking code (`exec`, the stores) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ToolError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ToolError::Internal(format!("blocking task failed: {e}")))
}

/// A tool as the server runs it: its spec, the target kinds it works on, and its handler. Every
/// tool is built by [`tool`] from a [`Declaration`] and a typed handler; nothing else implements
/// this trait.
pub trait Tool: Send + Sync {
    fn spec(&self) -> &ToolSpec;
    /// The target kinds it works on (a [`Declaration`]'s `kinds`). The call pipeline checks a
    /// call's targets against them before the handler runs; a tool no configured target
    /// supports is not offered ([`for_targets`]).
    fn kinds(&self) -> &'static [Kind];
    fn call(&self, ctx: ToolContext, args: JsonObject) -> BoxFuture<'_, Result<ToolOutput, ToolError>>;
    fn supports(&self, kind: Kind) -> bool {
        self.kinds().contains(&kind)
    }
}

/// Every target kind (a tool that runs on the server's own context whatever the target).
pub const ANY_KIND: &[Kind] = &[Kind::Local, Kind::Ssh, Kind::Docker, Kind::Http];

/// What a tool declares besides its types: its name and words for clients, what the caller
/// must hold, how much harm it can do, its MCP annotations, and the target kinds it works on.
/// Its schemas come from its argument and output types (see [`tool`]).
#[derive(Debug, Clone, Copy)]
pub struct Declaration {
    /// `<toolset>_<verb>[_<noun>]`, snake case.
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub requires: Requirement,
    pub risk: Risk,
    pub annotations: Annotations,
    pub kinds: &'static [Kind],
}

/// What a handler returns: its typed result and a readable rendering of it.
#[derive(Debug)]
pub struct Output<O> {
    pub value: O,
    pub text: String,
}

impl<O> Output<O> {
    pub fn new(value: O, text: impl Into<String>) -> Output<O> {
        Output {
            value,
            text: text.into(),
        }
    }
}

/// The one way to make a tool: a declaration and a handler taking typed arguments `A` and
/// returning a typed result `O`. The input schema is `A`'s, the output schema `O`'s; arguments
/// are parsed with [`parse_args`] (the call layer's `target`, `targets` and `format` are taken
/// out before, so `A` never declares them).
pub fn tool<A, O, F, Fut>(declaration: Declaration, handler: F) -> Arc<dyn Tool>
where
    A: serde::de::DeserializeOwned + schemars::JsonSchema + std::any::Any + Send + 'static,
    O: Serialize + schemars::JsonSchema + std::any::Any + Send + 'static,
    F: Fn(ToolContext, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Output<O>, ToolError>> + Send + 'static,
{
    let d = declaration;
    Arc::new(Typed {
        spec: ToolSpec {
            name: d.name,
            title: d.title,
            description: d.description,
            requires: d.requires,
            risk: d.risk,
            annotations: d.annotations,
            input_schema: listed_input_schema::<A>(d.requires),
            output_schema: output_schema::<O>(),
        },
        kinds: d.kinds,
        handler,
        types: std::marker::PhantomData,
    })
}

/// A tool made by [`tool`].
struct Typed<A, O, F> {
    spec: ToolSpec,
    kinds: &'static [Kind],
    handler: F,
    types: std::marker::PhantomData<fn(A) -> O>,
}

impl<A, O, F, Fut> Tool for Typed<A, O, F>
where
    A: serde::de::DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
    F: Fn(ToolContext, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Output<O>, ToolError>> + Send + 'static,
{
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    fn kinds(&self) -> &'static [Kind] {
        self.kinds
    }
    fn call(&self, ctx: ToolContext, args: JsonObject) -> BoxFuture<'_, Result<ToolOutput, ToolError>> {
        let parsed = parse_args::<A>(args);
        Box::pin(async move {
            let out = (self.handler)(ctx, parsed?).await?;
            ToolOutput::new(&out.value, out.text)
        })
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

/// The input schema of a tool taking `A`: `A`'s, with a place for the call layer's `target` as
/// its first property unless the tool takes none ([`Requirement::Across`]). The call layer
/// takes `target` out of the arguments before `A` parses them and lists its own description of
/// it; keeping the place here keeps `target` first in the listed
/// schema, where clients have always seen it.
///
/// Built like rmcp's `schema_for_input` (the draft 2020-12 schema, then its root `title` and
/// `description` removed), with `properties` right after `type` as schemars writes it: the
/// listed schemas are byte for byte those of the argument structs that used to declare
/// `target` themselves (the catalog snapshot checks it).
fn listed_input_schema<A: schemars::JsonSchema + std::any::Any>(requires: Requirement) -> Arc<JsonObject> {
    if matches!(requires, Requirement::Across(_)) {
        return input_schema::<A>();
    }
    let raw = rmcp::handler::server::common::schema_for_type::<A>();
    let with_target = |props: Option<&JsonObject>| {
        let mut out = JsonObject::new();
        // A place holder: the call layer lists its own description of `target`.
        out.insert("target".into(), serde_json::json!({"type": "string"}));
        out.extend(props.into_iter().flatten().map(|(k, v)| (k.clone(), v.clone())));
        serde_json::Value::Object(out)
    };
    let mut schema = JsonObject::new();
    for (key, value) in raw.iter() {
        if key == "properties" {
            schema.insert(key.clone(), with_target(value.as_object()));
            continue;
        }
        schema.insert(key.clone(), value.clone());
        if key == "type" && !raw.contains_key("properties") {
            schema.insert("properties".into(), with_target(None));
        }
    }
    if schema.get("type").and_then(serde_json::Value::as_str) != Some("object") {
        panic!(
            "input schema of {}: the root is not an object",
            std::any::type_name::<A>()
        );
    }
    schema.remove("title");
    schema.remove("description");
    Arc::new(schema)
}

/// The output JSON Schema of `T`, for `structuredContent`.
pub fn output_schema<T: schemars::JsonSchema + std::any::Any>() -> Arc<JsonObject> {
    rmcp::handler::server::common::schema_for_output::<T>()
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
    let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
    tools.extend(identity::tools());
    tools.extend(system::tools());
    tools.extend(targets::tools());
    tools.extend(containers::tools());
    tools.extend(stacks::tools());
    tools.extend(services::tools());
    tools.extend(logs::tools());
    tools.extend(files::tools());
    tools.extend(network::tools());
    tools.extend(packages::tools());
    tools.extend(inventory::tools());
    tools.extend(proxmox::tools());
    tools.extend(approvals::tools());
    tools
}

/// What the toolsets' unit tests share: a direct call of a tool on the `local` target (no call
/// pipeline: no policy, no kind check, `target` never in the arguments) and the check for an
/// argument error.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use super::{Tool, ToolContext, ToolError, ToolOutput};

    /// Run `name`, one of `tools`, with `args` (a JSON object) and the default configuration.
    pub async fn call(tools: Vec<Arc<dyn Tool>>, name: &str, args: serde_json::Value) -> Result<ToolOutput, ToolError> {
        call_with(crate::config::Config::defaults(), tools, name, args).await
    }

    /// [`call`] with `config`.
    pub async fn call_with(
        config: crate::config::Config,
        tools: Vec<Arc<dyn Tool>>,
        name: &str,
        args: serde_json::Value,
    ) -> Result<ToolOutput, ToolError> {
        let serde_json::Value::Object(args) = args else {
            panic!("arguments are an object")
        };
        let tool = tools
            .into_iter()
            .find(|t| t.spec().name == name)
            .unwrap_or_else(|| panic!("no tool {name}"));
        tool.call(ToolContext::local(ToolContext::test_caller(), Arc::new(config)), args)
            .await
    }

    /// `r` is an argument error whose message contains `needle`.
    pub fn invalid(r: Result<ToolOutput, ToolError>, needle: &str) {
        match r {
            Err(ToolError::InvalidArgs(m)) => assert!(m.contains(needle), "`{m}` lacks `{needle}`"),
            other => panic!(
                "expected invalid arguments with `{needle}`, got {:?}",
                other.map(|o| o.text)
            ),
        }
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
