//! `whoami`: the caller's tailnet identity as the server sees it, the scopes it holds on each
//! target pattern, and the grant behind each scope. Reads nothing but the request's own context.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ANY_KIND, Annotations, Declaration, Output, Requirement, Risk, Tool, ToolContext, tool};
use crate::policy;

pub fn tools() -> Vec<Arc<dyn Tool>> {
    vec![tool(
        Declaration {
            name: "whoami",
            title: "Who am I",
            description: "Your tailnet identity as this server sees it (from tailscaled, not from anything your \
                          client sent): principal, user, node, tags, address, and every scope you hold with the \
                          grant that gives it. Call this first to learn what you may do.",
            requires: Requirement::AnyGrant,
            risk: Risk::Low,
            annotations: Annotations::READ_ONLY,
            kinds: ANY_KIND,
        },
        |ctx, _: WhoAmIArgs| async move {
            let result = describe(&ctx);
            let text = render(&result);
            Ok(Output::new(result, text))
        },
    )]
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WhoAmIArgs {}

/// The caller's identity and effective grants.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WhoAmIResult {
    /// Who policy and audit see: a login for a user's node, the tag set for a tagged node.
    pub principal: String,
    /// `user` or `tagged` (or `dev` for a loopback dev server).
    pub kind: String,
    pub login: String,
    pub display_name: String,
    pub user_id: Option<i64>,
    pub node_id: String,
    pub node_name: String,
    pub tags: Vec<String>,
    pub os: Option<String>,
    pub remote_addr: String,
    /// `whois` (tailscaled) or `dev`.
    pub identity_source: String,
    /// The target these scopes apply to.
    pub target: String,
    /// Each scope held on `target`, with the grants that give it.
    pub scopes: Vec<ScopeGrant>,
    /// Every grant that applies to the caller (capability grants and local rules).
    pub grants: Vec<GrantView>,
    /// Grant elements that were ignored, and why.
    pub ignored: Vec<IgnoredView>,
    /// The server's tailnet, when known.
    pub tailnet: Option<String>,
    pub server: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ScopeGrant {
    pub scope: String,
    pub granted_by: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GrantView {
    pub source: String,
    pub scopes: Vec<String>,
    pub targets: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct IgnoredView {
    pub source: String,
    pub reason: String,
}

/// Build the `whoami` view of a caller (also used by `tailopsmcp whois`).
pub fn describe(ctx: &ToolContext) -> WhoAmIResult {
    let c = &ctx.caller;
    let kind = match (c.source, c.is_tagged()) {
        (crate::tailnet::IdentitySource::Dev, _) => "dev",
        (_, true) => "tagged",
        (_, false) => "user",
    };
    let show = |v: &[policy::Scope]| v.iter().map(|s| s.name().to_string()).collect::<Vec<_>>();
    WhoAmIResult {
        principal: c.principal.clone(),
        kind: kind.to_string(),
        login: c.login.clone(),
        display_name: c.display_name.clone(),
        user_id: c.user_id,
        node_id: c.node_id.clone(),
        node_name: c.node_name.clone(),
        tags: c.tags.clone(),
        os: c.os.clone(),
        remote_addr: c.addr.to_string(),
        identity_source: c.source.as_str().to_string(),
        target: ctx.target.id.clone(),
        scopes: policy::scopes_on(&ctx.grants, &ctx.target.id)
            .into_iter()
            .map(|(s, by)| ScopeGrant {
                scope: s.name().to_string(),
                granted_by: by,
            })
            .collect(),
        grants: ctx
            .grants
            .grants
            .iter()
            .map(|g| GrantView {
                source: g.source.to_string(),
                scopes: show(&g.scopes),
                targets: g.targets.clone(),
            })
            .collect(),
        ignored: ctx
            .grants
            .ignored
            .iter()
            .map(|i| IgnoredView {
                source: i.source.to_string(),
                reason: i.reason.clone(),
            })
            .collect(),
        tailnet: ctx.tailnet.tailnet.clone(),
        server: ctx.tailnet.dns_name.clone(),
    }
}

/// A readable rendering of [`WhoAmIResult`]. Built with `push_str`, not a `format!` per line:
/// `whoami` is the call every client makes first, and the one the throughput budget measures.
/// (`writeln!` into one `String` reads better and cost 9,000-12,000 more instructions per call
/// under `benches/instructions.sh`, 3% of the call, mostly the padding of each scope line.)
pub fn render(r: &WhoAmIResult) -> String {
    let mut out = String::with_capacity(128 + 80 * r.scopes.len());
    for part in [
        r.principal.as_str(),
        " (",
        &r.kind,
        ") on node ",
        &r.node_name,
        " [",
        &r.node_id,
        "] from ",
        &r.remote_addr,
        " via ",
        &r.identity_source,
        "\n",
    ] {
        out.push_str(part);
    }
    if !r.tags.is_empty() {
        out.push_str("tags: ");
        out.push_str(&r.tags.join(", "));
        out.push('\n');
    }
    if r.scopes.is_empty() {
        out.push_str("no scopes on target ");
        out.push_str(&r.target);
        out.push('\n');
    } else {
        out.push_str("scopes on target ");
        out.push_str(&r.target);
        out.push_str(":\n");
        for s in &r.scopes {
            // `{:<22}`: the scope left-aligned in 22 columns (scope names are ASCII).
            out.push_str("  ");
            out.push_str(&s.scope);
            out.extend(std::iter::repeat_n(' ', 22usize.saturating_sub(s.scope.len())));
            out.push_str(" from ");
            for (i, by) in s.granted_by.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(by);
            }
            out.push('\n');
        }
    }
    for i in &r.ignored {
        out.push_str("ignored ");
        out.push_str(&i.source);
        out.push_str(": ");
        out.push_str(&i.reason);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(tags: &[&str], scopes: &[(&str, &[&str])], ignored: &[(&str, &str)]) -> WhoAmIResult {
        WhoAmIResult {
            principal: "alice@example.com".into(),
            kind: "user".into(),
            login: "alice@example.com".into(),
            display_name: "Alice".into(),
            user_id: Some(7),
            node_id: "nXyZ".into(),
            node_name: "alice-laptop".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            os: None,
            remote_addr: "100.100.2.2:51000".into(),
            identity_source: "whois".into(),
            target: "local".into(),
            scopes: scopes
                .iter()
                .map(|(s, by)| ScopeGrant {
                    scope: s.to_string(),
                    granted_by: by.iter().map(|b| b.to_string()).collect(),
                })
                .collect(),
            grants: Vec::new(),
            ignored: ignored
                .iter()
                .map(|(source, reason)| IgnoredView {
                    source: source.to_string(),
                    reason: reason.to_string(),
                })
                .collect(),
            tailnet: None,
            server: None,
        }
    }

    #[test]
    fn render_lists_identity_tags_scopes_with_their_grants_and_ignored_grants() {
        assert_eq!(
            render(&view(&[], &[], &[])),
            "alice@example.com (user) on node alice-laptop [nXyZ] from 100.100.2.2:51000 via whois\n\
             no scopes on target local\n"
        );
        let full = view(
            &["tag:ci", "tag:prod"],
            &[
                ("system:read", &["cap:example.com/cap/tailopsmcp[0]"]),
                (
                    "containers:control",
                    &["cap:example.com/cap/tailopsmcp[1]", "config:grant[0](*)"],
                ),
                ("a-scope-name-longer-than-22", &["config:grant[2](tag:ci)"]),
            ],
            &[("cap:example.com/cap/tailopsmcp[2]", "grant names no targets")],
        );
        assert_eq!(
            render(&full),
            "alice@example.com (user) on node alice-laptop [nXyZ] from 100.100.2.2:51000 via whois\n\
             tags: tag:ci, tag:prod\n\
             scopes on target local:\n\
             \x20 system:read            from cap:example.com/cap/tailopsmcp[0]\n\
             \x20 containers:control     from cap:example.com/cap/tailopsmcp[1], config:grant[0](*)\n\
             \x20 a-scope-name-longer-than-22 from config:grant[2](tag:ci)\n\
             ignored cap:example.com/cap/tailopsmcp[2]: grant names no targets\n"
        );
    }
}
