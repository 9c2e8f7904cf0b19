//! `[tools]`: which tools this server registers at all (read-only only, an allow-list, a
//! deny-list). The names are checked against the catalog at start-up (`tools::select`), not
//! here: the catalog is a layer above.

use serde::Deserialize;

/// `[tools]`: which tools are registered at all. A tool filtered out here is never listed and
/// never callable, whatever a caller's grants say. Tool names are checked against the catalog
/// at start-up (`tools::select`).
#[derive(Debug, Clone, Default)]
pub struct ToolsConfig {
    /// Offer only tools annotated read-only.
    pub read_only: bool,
    /// When non-empty, offer only these tools.
    pub enable: Vec<String>,
    /// Never offer these tools.
    pub disable: Vec<String>,
}

/// `[tools]` as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ToolsSection {
    read_only: bool,
    enable: Vec<String>,
    disable: Vec<String>,
}

impl From<ToolsSection> for ToolsConfig {
    fn from(s: ToolsSection) -> ToolsConfig {
        ToolsConfig {
            read_only: s.read_only,
            enable: s.enable,
            disable: s.disable,
        }
    }
}
