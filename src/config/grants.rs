//! `[[grant]]`: local grants, for callers whose tailnet policy file grants nothing (or to add to
//! it): who they match (`match`), the scopes they give and on which targets.

use serde::Deserialize;

use super::{Invalid, invalid};
use crate::policy::{self, LocalGrant};

/// One `[[grant]]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantSection {
    #[serde(rename = "match")]
    matcher: String,
    scopes: Vec<String>,
    #[serde(default)]
    targets: Option<Vec<String>>,
}

/// Validate every `[[grant]]`: a matcher that parses, at least one scope word (bundles expanded),
/// at least one target (default: `local`).
pub(super) fn build(sections: Vec<GrantSection>) -> Result<Vec<LocalGrant>, Invalid> {
    let mut grants = Vec::new();
    for (i, g) in sections.into_iter().enumerate() {
        let key = |field: &str| format!("grant[{i}].{field}");
        let matcher = g.matcher.parse().map_err(|e| invalid(key("match"), e))?;
        if g.scopes.is_empty() {
            return Err(invalid(key("scopes"), "names no scopes"));
        }
        let mut scopes = Vec::new();
        for w in &g.scopes {
            scopes.extend(policy::expand(w).map_err(|e| invalid(key("scopes"), e))?);
        }
        scopes.sort();
        scopes.dedup();
        let targets = g.targets.unwrap_or_else(|| vec!["local".to_string()]);
        if targets.is_empty() || targets.iter().any(|t| t.is_empty()) {
            return Err(invalid(key("targets"), "must name at least one target (or `*`)"));
        }
        grants.push(LocalGrant {
            matcher,
            words: g.scopes,
            scopes,
            targets,
        });
    }
    Ok(grants)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check_err, load};
    use super::*;

    #[test]
    fn refuses_bad_values_naming_the_key() {
        check_err("[[grant]]\nmatch = \"alice\"\nscopes = [\"monitor\"]", "grant[0].match");
        check_err(
            "[[grant]]\nmatch = \"node:alice-laptop\"\nscopes = [\"monitor\"]",
            "grant[0].match: `node:alice-laptop` names a node by name",
        );
        check_err(
            "[[grant]]\nmatch = \"*\"\nscopes = [\"monitor\"]\n[[grant]]\nmatch = \"node-id:alice-laptop.tail3f9c2.ts.net\"\nscopes = [\"monitor\"]",
            "grant[1].match: `node-id:alice-laptop.tail3f9c2.ts.net` is not a StableID: it looks like a node name",
        );
        let c = load("[[grant]]\nmatch = \"node-id:7\"\nscopes = [\"monitor\"]").unwrap();
        assert_eq!(c.grants[0].matcher, policy::Matcher::NodeId("7".into()));
        check_err(
            "[[grant]]\nmatch = \"*\"\nscopes = [\"system:write\"]",
            "grant[0].scopes: unknown level `write`",
        );
        check_err("[[grant]]\nmatch = \"*\"\nscopes = []", "grant[0].scopes");
        check_err(
            "[[grant]]\nmatch = \"*\"\nscopes = [\"monitor\"]\ntargets = []",
            "grant[0].targets",
        );
    }
}
