//! Authorization, as pure functions: `(Caller, grants, Requirement, target) → Decision` with the
//! reason and the grants used. Deny by default.
//!
//! Scopes come from two places that add up: the tailnet policy file's app capability (each
//! grant object `{"scopes": [...], "targets": [...]}` in whois `CapMap`) and local `[[grant]]`
//! rules in the config. This module does no IO and never awaits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::model::{Area, BUNDLES, Level, Scope, expand};
use crate::model::{Caller, Requirement};

/// Which callers a local `[[grant]]` rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// `user:LOGIN` — a user-owned node of this login (or the dev identity).
    User(String),
    /// `tag:NAME` — a tagged node carrying this tag.
    Tag(String),
    /// `node-id:STABLEID` — one node by its StableID (`Node.StableID` in whois), compared exactly
    /// with the caller's [`Caller::node_id`] and never with a name: a name passes to whichever
    /// machine registers it after the node is removed; a StableID is never reused.
    NodeId(String),
    /// `*` — every caller with a tailnet identity.
    Any,
}

/// Longest StableID accepted in `node-id:` (Tailscale's are 16 characters, headscale's decimal).
const MAX_STABLE_ID: usize = 64;

impl FromStr for Matcher {
    type Err = String;
    fn from_str(s: &str) -> Result<Matcher, String> {
        let nonempty = |v: &str, what: &str| {
            if v.is_empty() {
                Err(format!("`{s}` names no {what}"))
            } else {
                Ok(v.to_string())
            }
        };
        if s == "*" {
            Ok(Matcher::Any)
        } else if let Some(login) = s.strip_prefix("user:") {
            nonempty(login, "user").map(Matcher::User)
        } else if let Some(tag) = s.strip_prefix("tag:") {
            nonempty(tag, "tag").map(|_| Matcher::Tag(s.to_string()))
        } else if let Some(id) = s.strip_prefix("node-id:") {
            stable_id(s, id).map(Matcher::NodeId)
        } else if let Some(name) = s.strip_prefix("node:")
            && issued_stable_id(name)
        {
            // `node:STABLEID`: accepted when the value has the shape control servers give
            // StableIDs, so it can never be read as a name.
            Ok(Matcher::NodeId(name.to_string()))
        } else if let Some(name) = s.strip_prefix("node:") {
            Err(format!(
                "`{s}` names a node by name, and a name passes to whichever machine registers it after \
                 this one is removed; name the node by its StableID instead: `node-id:STABLEID` or `node:STABLEID` ({FIND_STABLE_ID}{})",
                if name.is_empty() {
                    String::new()
                } else {
                    format!(" for `{name}`")
                }
            ))
        } else {
            Err(format!(
                "`{s}` is not `user:LOGIN`, `tag:NAME`, `node-id:STABLEID` or `*`"
            ))
        }
    }
}

/// Whether `id` has the shape of a StableID a control server issued: Tailscale's
/// `n` + letters and digits + `CNTRL`, or headscale's decimal node id. Such a value is never
/// taken for a host name in `node:` (any other value there is refused; `node-id:` takes any
/// letters and digits).
fn issued_stable_id(id: &str) -> bool {
    let tailscale =
        id.len() > 6 && id.starts_with('n') && id.ends_with("CNTRL") && id.bytes().all(|b| b.is_ascii_alphanumeric());
    let headscale = !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit());
    tailscale || headscale
}

/// Where an admin finds a node's StableID; named in every error about `node-id:`.
const FIND_STABLE_ID: &str = "`tailopsmcp whois IP` prints it as `node id`, `tailscale status --json` as `ID` of `Self` \
     and of each `Peer`, headscale's `headscale nodes list` as `ID`";

/// The StableID of a `node-id:` rule: letters and digits only (Tailscale's `nXXXXXXXXXXXCNTRL`,
/// headscale's decimal `7`), so a MagicDNS name or a host name with `.` or `-` is refused here
/// rather than silently never matching.
fn stable_id(rule: &str, id: &str) -> Result<String, String> {
    if id.is_empty() {
        return Err(format!("`{rule}` names no StableID ({FIND_STABLE_ID})"));
    }
    if id.len() > MAX_STABLE_ID || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        let looks = if id.contains(['.', '-', '_']) {
            "it looks like a node name, and grants never match names; "
        } else {
            ""
        };
        return Err(format!(
            "`{rule}` is not a StableID: {looks}a StableID is letters and digits only (e.g. `nQmK8XyZp711CNTRL` \
             on Tailscale, `7` on headscale); {FIND_STABLE_ID}"
        ));
    }
    Ok(id.to_string())
}

impl Matcher {
    pub fn matches(&self, caller: &Caller) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::User(login) => !caller.is_tagged() && caller.login.eq_ignore_ascii_case(login),
            Matcher::Tag(tag) => caller.tags.iter().any(|t| t == tag),
            // Exact: StableIDs are case-sensitive, and the node's name is never consulted.
            Matcher::NodeId(id) => caller.node_id == *id,
        }
    }
}

/// A local grant rule from the config, already validated.
#[derive(Debug, Clone)]
pub struct LocalGrant {
    pub matcher: Matcher,
    /// The words as written (scopes or bundles), for display.
    pub words: Vec<String>,
    pub scopes: Vec<Scope>,
    pub targets: Vec<String>,
}

/// Where a grant came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GrantSource {
    /// Element `index` of `CapMap[capability]` in the caller's whois.
    Capability { capability: String, index: usize },
    /// The `index`-th `[[grant]]` of the config (0-based), matching `rule`.
    Config { index: usize, rule: String },
}

impl fmt::Display for GrantSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantSource::Capability { capability, index } => write!(f, "cap:{capability}[{index}]"),
            GrantSource::Config { index, rule } => write!(f, "config:grant[{index}]({rule})"),
        }
    }
}

/// One grant that applies to the caller.
#[derive(Debug, Clone, Serialize)]
pub struct Grant {
    pub source: GrantSource,
    pub scopes: Vec<Scope>,
    /// Target patterns: exact ids, or globs with `*`.
    pub targets: Vec<String>,
}

/// A grant element that was ignored, and why (shown by `whoami` and `tailopsmcp whois`).
#[derive(Debug, Clone, Serialize)]
pub struct Ignored {
    pub source: GrantSource,
    pub reason: String,
}

/// Everything the caller holds: the grants that apply, and what was ignored.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Effective {
    pub grants: Vec<Grant>,
    pub ignored: Vec<Ignored>,
}

/// The shape of one app-capability grant object in the tailnet policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CapGrant {
    scopes: Vec<String>,
    #[serde(default = "default_targets")]
    targets: Vec<String>,
}

/// Targets a grant covers when it names none: only the host the server runs on.
fn default_targets() -> Vec<String> {
    vec!["local".to_string()]
}

/// Resolve what `caller` holds: capability grants (parsed from whois) plus matching local rules.
/// A capability element that does not parse, or a scope word that is unknown, grants nothing and
/// is reported in `ignored`.
pub fn effective(caller: &Caller, capability: &str, local: &[LocalGrant]) -> Effective {
    let mut out = Effective::default();
    for (index, raw) in caller.cap_grants.iter().enumerate() {
        let source = GrantSource::Capability {
            capability: capability.to_string(),
            index,
        };
        match serde_json::from_value::<CapGrant>(raw.clone()) {
            Ok(g) => {
                let mut scopes = Vec::new();
                for word in &g.scopes {
                    match expand(word) {
                        Ok(s) => scopes.extend(s),
                        Err(reason) => out.ignored.push(Ignored {
                            source: source.clone(),
                            reason,
                        }),
                    }
                }
                scopes.sort();
                scopes.dedup();
                if g.targets.is_empty() {
                    out.ignored.push(Ignored {
                        source: source.clone(),
                        reason: "grant names no targets".into(),
                    });
                } else if !scopes.is_empty() {
                    out.grants.push(Grant {
                        source,
                        scopes,
                        targets: g.targets,
                    });
                }
            }
            Err(e) => out.ignored.push(Ignored {
                source,
                reason: format!("grant object does not parse: {e}"),
            }),
        }
    }
    for (index, rule) in local.iter().enumerate() {
        if rule.matcher.matches(caller) {
            out.grants.push(Grant {
                source: GrantSource::Config {
                    index,
                    rule: matcher_text(&rule.matcher),
                },
                scopes: rule.scopes.clone(),
                targets: rule.targets.clone(),
            });
        }
    }
    out
}

fn matcher_text(m: &Matcher) -> String {
    match m {
        Matcher::Any => "*".to_string(),
        Matcher::User(l) => format!("user:{l}"),
        Matcher::Tag(t) => t.clone(),
        Matcher::NodeId(id) => format!("node-id:{id}"),
    }
}

/// Whether a target pattern (exact id or `*` glob) covers `target`.
pub fn target_matches(pattern: &str, target: &str) -> bool {
    crate::text::glob_match(pattern.as_bytes(), target.as_bytes())
}

/// The outcome of an authorization check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    /// Why, in words fit for an audit row and (for denials) the caller.
    pub reason: String,
    /// The grants that allowed it (display form of their sources).
    pub grants: Vec<String>,
}

/// Decide whether the holder of `effective` may do what `requires` asks on `target`.
pub fn authorize(effective: &Effective, requires: Requirement, target: &str) -> Decision {
    match requires {
        Requirement::AnyGrant => {
            let grants: Vec<String> = effective.grants.iter().map(|g| g.source.to_string()).collect();
            if grants.is_empty() {
                Decision {
                    allowed: false,
                    reason: "no grants for this caller".into(),
                    grants,
                }
            } else {
                Decision {
                    allowed: true,
                    reason: "caller holds at least one grant".into(),
                    grants,
                }
            }
        }
        Requirement::Scope(needed) | Requirement::Across(needed) => {
            let using: Vec<String> = effective
                .grants
                .iter()
                .filter(|g| g.scopes.iter().any(|s| s.covers(needed)))
                .filter(|g| g.targets.iter().any(|p| target_matches(p, target)))
                .map(|g| g.source.to_string())
                .collect();
            if !using.is_empty() {
                return Decision {
                    allowed: true,
                    reason: format!("{needed} on {target}"),
                    grants: using,
                };
            }
            let anywhere = effective
                .grants
                .iter()
                .any(|g| g.scopes.iter().any(|s| s.covers(needed)));
            let reason = if anywhere {
                format!("scope {needed} is not granted on target `{target}`")
            } else {
                format!("scope {needed} is not granted")
            };
            Decision {
                allowed: false,
                reason,
                grants: Vec::new(),
            }
        }
    }
}

/// The scopes the caller holds on `target` (deduplicated), for `whoami` and the CLI.
pub fn scopes_on(effective: &Effective, target: &str) -> Vec<(Scope, Vec<String>)> {
    let mut out: Vec<(Scope, Vec<String>)> = Vec::new();
    for g in &effective.grants {
        if !g.targets.iter().any(|p| target_matches(p, target)) {
            continue;
        }
        let source = g.source.to_string();
        for s in &g.scopes {
            match out.iter_mut().find(|(have, _)| have == s) {
                Some((_, sources)) => sources.push(source.clone()),
                None => out.push((*s, vec![source.clone()])),
            }
        }
    }
    out.sort_by_key(|(scope, _)| *scope);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tailnet::IdentitySource;
    use serde_json::json;

    const CAP: &str = "example.com/cap/tailopsmcp";
    /// The StableID of `alice-laptop`, the node every test caller is on unless it says otherwise.
    const ALICE_LAPTOP: &str = "nQmK8XyZp711CNTRL";

    fn caller(login: &str, tags: &[&str], grants: serde_json::Value) -> Caller {
        Caller {
            principal: if tags.is_empty() { login.into() } else { tags.join(",") },
            user_id: Some(1),
            login: login.into(),
            display_name: login.into(),
            node_id: ALICE_LAPTOP.into(),
            node_name: "alice-laptop.tail3f9c2.ts.net".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            os: None,
            addr: "100.100.2.2:1234".parse().unwrap(),
            cap_grants: grants.as_array().cloned().unwrap_or_default(),
            source: IdentitySource::Whois,
        }
    }

    fn rule(m: &str, words: &[&str], targets: &[&str]) -> LocalGrant {
        LocalGrant {
            matcher: m.parse().unwrap(),
            words: words.iter().map(|w| w.to_string()).collect(),
            scopes: words.iter().flat_map(|w| expand(w).unwrap()).collect(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn sc(s: &str) -> Requirement {
        Requirement::Scope(s.parse().unwrap())
    }

    /// One row of the decision table: does `caller` with `local` rules get `req` on `target`?
    fn check(c: &Caller, local: &[LocalGrant], req: Requirement, target: &str, expected: bool) {
        let eff = effective(c, CAP, local);
        let d = authorize(&eff, req, target);
        assert_eq!(d.allowed, expected, "{req:?} on {target}: {d:?} from {eff:?}");
        assert_eq!(
            d.allowed,
            !d.grants.is_empty(),
            "grants used must be named exactly when allowed: {d:?}"
        );
    }

    #[test]
    fn scope_names_are_area_colon_level_for_every_scope() {
        for area in Area::ALL {
            for level in [Level::Read, Level::Control, Level::Admin] {
                let scope = Scope::new(area, level);
                let want = format!("{}:{}", area.as_str(), level.as_str());
                assert_eq!(scope.name(), want);
                assert_eq!(scope.to_string(), want);
                assert_eq!(format!("{scope:<20}|"), format!("{want:<20}|"));
                assert_eq!(serde_json::to_value(scope).unwrap(), json!(want));
                assert_eq!(want.parse::<Scope>().unwrap(), scope);
            }
        }
    }

    #[test]
    fn capability_grants_from_the_user_fixture() {
        let c = caller(
            "alice@example.com",
            &[],
            json!([
                {"scopes": ["system:read", "containers:read"], "targets": ["*"]},
                {"scopes": ["containers:control"], "targets": ["docker-*"]}
            ]),
        );
        check(&c, &[], sc("system:read"), "local", true);
        check(&c, &[], sc("containers:read"), "nas", true);
        check(&c, &[], sc("containers:control"), "docker-nas", true);
        check(&c, &[], sc("containers:control"), "local", false);
        check(&c, &[], sc("containers:admin"), "docker-nas", false);
        check(&c, &[], sc("services:read"), "local", false);
        check(&c, &[], Requirement::AnyGrant, "local", true);
    }

    #[test]
    fn deny_by_default() {
        let c = caller("bob@example.com", &[], json!(null));
        check(&c, &[], sc("system:read"), "local", false);
        check(&c, &[], Requirement::AnyGrant, "local", false);
        assert_eq!(
            authorize(&effective(&c, CAP, &[]), sc("system:read"), "local").reason,
            "scope system:read is not granted"
        );
    }

    #[test]
    fn bad_grant_elements_grant_nothing_and_are_reported() {
        let c = caller(
            "carol@example.com",
            &[],
            json!([
                "not an object",
                {"scopes": "system:read"},
                {"scopes": ["system:read"], "targets": ["local"], "extra": 1},
                {"scopes": ["system:rule", "logs:read"], "targets": ["local"]},
                {"scopes": ["files:read"], "targets": []}
            ]),
        );
        let eff = effective(&c, CAP, &[]);
        assert_eq!(eff.grants.len(), 1, "{eff:?}");
        assert_eq!(eff.ignored.len(), 5, "{eff:?}");
        check(&c, &[], sc("system:read"), "local", false);
        check(&c, &[], sc("logs:read"), "local", true);
        check(&c, &[], sc("files:read"), "local", false);
    }

    #[test]
    fn grants_without_targets_cover_local_only() {
        let c = caller("dave@example.com", &[], json!([{"scopes": ["system:read"]}]));
        check(&c, &[], sc("system:read"), "local", true);
        check(&c, &[], sc("system:read"), "nas", false);
    }

    #[test]
    fn local_rules_match_users_tags_nodes_and_anyone() {
        let alice = caller("alice@example.com", &[], json!(null));
        let ci = caller("tagged-devices", &["tag:ci", "tag:mcp-client"], json!(null));
        let rules = [
            rule("user:alice@example.com", &["monitor"], &["*"]),
            rule("tag:ci", &["services:control"], &["local"]),
            rule("node-id:nQmK8XyZp711CNTRL", &["files:control"], &["local"]),
        ];
        check(&alice, &rules, sc("logs:read"), "anything", true);
        check(&alice, &rules, sc("services:control"), "local", false);
        check(&alice, &rules, sc("files:control"), "local", true);
        check(&ci, &rules, sc("services:control"), "local", true);
        check(&ci, &rules, sc("services:read"), "local", true);
        check(&ci, &rules, sc("logs:read"), "local", false);
        // A tagged node never matches a `user:` rule, even for the synthetic tagged-devices login.
        check(
            &ci,
            &[rule("user:tagged-devices", &["admin"], &["*"])],
            sc("system:read"),
            "local",
            false,
        );
        check(
            &ci,
            &[rule("*", &["system:read"], &["local"])],
            sc("system:read"),
            "local",
            true,
        );
    }

    #[test]
    fn levels_and_bundles_nest() {
        let s = |x: &str| x.parse::<Scope>().unwrap();
        assert!(s("containers:admin").covers(s("containers:read")));
        assert!(s("containers:control").covers(s("containers:read")));
        assert!(!s("containers:read").covers(s("containers:control")));
        assert!(!s("system:admin").covers(s("logs:read")));
        let sets: Vec<Vec<Scope>> = ["monitor", "operate", "configure", "manage", "admin"]
            .iter()
            .map(|b| expand(b).unwrap())
            .collect();
        let has = |set: &Vec<Scope>, x: Scope| set.iter().any(|h| h.covers(x));
        for pair in sets.windows(2) {
            for x in &pair[0] {
                assert!(has(&pair[1], *x), "{x} missing from the next bundle");
            }
        }
        assert!(!has(&sets[0], s("containers:control")));
        assert!(has(&sets[1], s("containers:control")));
        assert!(!has(&sets[3], s("approvals:control")), "manage must not approve");
        assert!(has(&sets[4], s("approvals:admin")));
        assert_eq!(expand("files:*").unwrap(), vec![s("files:admin")]);
        assert!(expand("files:write").is_err());
        assert!(expand("bogus").is_err());
    }

    #[test]
    fn target_globs() {
        for (p, t, want) in [
            ("*", "local", true),
            ("local", "local", true),
            ("local", "local2", false),
            ("docker-*", "docker-nas", true),
            ("docker-*", "nas-docker", false),
            ("*-prod", "db-prod", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ] {
            assert_eq!(target_matches(p, t), want, "{p} vs {t}");
        }
    }

    #[test]
    fn matcher_syntax() {
        assert_eq!("user:a@b".parse::<Matcher>().unwrap(), Matcher::User("a@b".into()));
        assert_eq!("tag:ci".parse::<Matcher>().unwrap(), Matcher::Tag("tag:ci".into()));
        assert_eq!(
            "node-id:nQmK8XyZp711CNTRL".parse::<Matcher>().unwrap(),
            Matcher::NodeId("nQmK8XyZp711CNTRL".into())
        );
        assert_eq!("node-id:7".parse::<Matcher>().unwrap(), Matcher::NodeId("7".into()));
        assert!("user:".parse::<Matcher>().is_err());
        assert!("group:admins".parse::<Matcher>().is_err());
        assert!("alice".parse::<Matcher>().is_err());
    }

    #[test]
    fn a_node_rule_matches_the_stable_id_and_never_a_name() {
        let original = caller("alice@example.com", &[], json!(null));
        // The node was removed and another machine registered under the same name: same
        // MagicDNS name, a new StableID.
        let successor = Caller {
            node_id: "nR3b0rnXyZ12CNTRL".into(),
            ..original.clone()
        };
        assert_eq!(successor.node_name, original.node_name);
        let by_id = [rule(&format!("node-id:{ALICE_LAPTOP}"), &["files:control"], &["local"])];
        check(&original, &by_id, sc("files:control"), "local", true);
        check(&successor, &by_id, sc("files:control"), "local", false);
        assert_eq!(
            effective(&original, CAP, &by_id).grants[0].source.to_string(),
            format!("config:grant[0](node-id:{ALICE_LAPTOP})")
        );
        // Exact: neither case nor a prefix of the id matches; nor does the name spelled as an id.
        for other in ["nqmk8xyzp711cntrl", "nQmK8XyZp711", "alicelaptop"] {
            let r = [rule(&format!("node-id:{other}"), &["files:control"], &["local"])];
            check(&original, &r, sc("files:control"), "local", false);
        }
        // headscale's decimal StableIDs.
        let seven = Caller {
            node_id: "7".into(),
            ..original.clone()
        };
        let r = [rule("node-id:7", &["system:read"], &["local"])];
        check(&seven, &r, sc("system:read"), "local", true);
        check(
            &Caller {
                node_id: "70".into(),
                ..original.clone()
            },
            &r,
            sc("system:read"),
            "local",
            false,
        );
    }

    #[test]
    fn node_names_are_refused_with_where_to_find_the_stable_id() {
        let err = |s: &str| s.parse::<Matcher>().unwrap_err();
        // `node:` takes a StableID as control servers issue them, never anything a name could be.
        assert_eq!(
            "node:nQmK8XyZp711CNTRL".parse::<Matcher>().unwrap(),
            Matcher::NodeId("nQmK8XyZp711CNTRL".into())
        );
        assert_eq!("node:7".parse::<Matcher>().unwrap(), Matcher::NodeId("7".into()));
        for named in [
            "node:alice-laptop",
            "node:alice-laptop.tail3f9c2.ts.net.",
            "node:nas",
            "node:CNTRL",
        ] {
            let e = err(named);
            assert!(e.contains("node-id:STABLEID"), "{e}");
            assert!(e.contains("tailopsmcp whois IP"), "{e}");
            assert!(e.contains("tailscale status --json"), "{e}");
        }
        let e = err("node-id:alice-laptop.tail3f9c2.ts.net");
        assert!(e.contains("looks like a node name"), "{e}");
        assert!(err("node-id:alice-laptop").contains("looks like a node name"));
        assert!(err("node-id:").contains("names no StableID"));
        assert!(err("node-id:n/1").contains("letters and digits only"));
        assert!(err(&format!("node-id:{}", "n".repeat(65))).contains("is not a StableID"));
    }

    #[test]
    fn scopes_on_names_their_grants() {
        let c = caller(
            "alice@example.com",
            &[],
            json!([{"scopes": ["system:read"], "targets": ["*"]}]),
        );
        let rules = [rule("user:alice@example.com", &["system:read"], &["local"])];
        let eff = effective(&c, CAP, &rules);
        let on = scopes_on(&eff, "local");
        assert_eq!(on.len(), 1);
        assert_eq!(
            on[0].1,
            vec![
                "cap:example.com/cap/tailopsmcp[0]",
                "config:grant[0](user:alice@example.com)"
            ]
        );
    }
}
