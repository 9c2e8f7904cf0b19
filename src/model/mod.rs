//! The vocabulary every layer shares: scopes, tools as data, target kinds and the caller's
//! identity. It depends on nothing else in the crate, so any module may use it.

mod client;
mod identity;
mod scope;
mod target;
mod tool;

pub use client::{Client, Reply, Sampled};
pub use identity::{Caller, IdentitySource, Reresolve, host_identity};
pub use scope::{Area, BUNDLES, Level, Scope, expand};
pub use target::{Kind, LOCAL};
pub use tool::{Annotations, Requirement, Risk, Step, StepKind, ToolSpec};

/// A JSON object: tool arguments and schemas (the same type as rmcp's `JsonObject`).
pub type JsonObject = serde_json::Map<String, serde_json::Value>;
