//! The pipeline's own arguments — `target`, `targets` and `format`, taken out before a tool
//! parses the rest — and the schemas that list them with each tool.

use std::sync::Arc;

use super::{LOCAL_TARGET, ToolResult};
use crate::model::{JsonObject, Requirement};

/// How a result's text content is rendered (`format`); structured content never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Text,
    Toon,
    Json,
}

impl Format {
    /// Replace a successful result's text with the chosen rendering of its structured content.
    pub(super) fn apply(self, mut result: ToolResult) -> ToolResult {
        if self == Format::Text || result.is_error {
            return result;
        }
        let Some(structured) = &result.structured else {
            return result;
        };
        result.text = match self {
            Format::Toon => crate::tools::format::toon(structured),
            _ => serde_json::to_string_pretty(structured).unwrap_or_default(),
        };
        result
    }
}

/// The most of a caller's value an error quotes back (and the audit log stores as the reason).
const QUOTED_MAX_BYTES: usize = 128;

/// A caller's value as an error quotes it: a 1 MiB tool name or `format` does not come back as
/// a 1 MiB error.
pub(super) fn quoted(value: &str) -> String {
    crate::text::cap(value, QUOTED_MAX_BYTES)
}

/// Take `format` out of the arguments.
pub(super) fn take_format(args: &mut JsonObject) -> Result<Format, String> {
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

/// Which targets a call names.
pub(super) enum Selection {
    One(String),
    Fanout(Vec<String>),
    /// None: the tool checks its scope on each record's own targets ([`Requirement::Across`]).
    Across,
}

/// Take `target` / `targets` out of the arguments.
pub(super) fn take_targets(args: &mut JsonObject, requires: Requirement) -> Result<Selection, String> {
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
pub const MAX_FANOUT: usize = 64;

/// The tool's input schema plus the layer's `format`, `target` (not for a tool across
/// targets) and, for fan-out tools, `targets`.
pub fn listed_input_schema(input: &JsonObject, requires: Requirement) -> Arc<JsonObject> {
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
pub fn fanout_output_schema(output: &JsonObject) -> Arc<JsonObject> {
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
