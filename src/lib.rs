//! tailopsmcp: an MCP server for operating a homelab or small fleet, reachable only over the
//! owner's tailnet, with the caller's tailnet identity attached to every request.
//!
//! See ARCHITECTURE.md for the code map. Modules form layers, bottom first: `model`; `text`,
//! `secrets`, `when`; `tailnet`; `exec`; `policy`; `config`; `store`; `targets`; `limits`;
//! `audit`; `approvals`; `tools`; `call`; `prompts`, `resources`; `mcp`; `http`. A module uses
//! only layers below its own (`layering`'s tests check it).

pub mod approvals;
pub mod audit;
pub mod call;
pub mod config;
pub mod exec;
pub mod http;
#[cfg(test)]
mod layering;
pub mod limits;
pub mod mcp;
pub mod model;
pub mod policy;
pub mod prompts;
pub mod resources;
pub mod secrets;
pub mod store;
pub mod tailnet;
pub mod targets;
pub mod text;
pub mod tools;
pub mod when;
