//! The `inventory` toolset: scan a host for well-known applications (with evidence, ports and
//! versions) and its identity, store the result, read it back, and let operators tag, describe
//! and annotate the host and its applications.
//!
//! Detection lives in `exec::inventory` (a rule table and the host reads); storage in
//! `store::inventory` (the only code that touches the `inventory_*` tables). Tools here validate
//! arguments, call those inside `spawn_blocking`, build the plan of what changes, and render a
//! compact text. Every tool that writes takes `dry_run` and returns its `plan`. They never check
//! scopes and never write audit rows.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    ANY_KIND, Annotations, Declaration, Kind, Output, Requirement, Risk, Step, StepKind, Tool, ToolContext, ToolError,
    blocking, tool,
};
use crate::exec::inventory::{self as detect, DetectedApp, HostIdentity};
use crate::policy::{Area, Level, Scope};
use crate::store::inventory::{self as store, Attributes, InventoryView, Note, ScanDocument, ScanMeta};

/// Most tags on one subject.
pub const MAX_TAGS: usize = 32;
/// Most fields on one subject.
pub const MAX_FIELDS: usize = 64;
/// Longest field value, in characters.
pub const MAX_FIELD_VALUE: usize = 1024;
/// Longest note, in characters.
pub const MAX_NOTE: usize = 4000;

/// A scan reads this server's own host; stored entries exist for any target id.
const SCAN_KINDS: &[Kind] = &[Kind::Local];

/// The tools of this toolset, in catalog order.
pub fn tools() -> Vec<Arc<dyn Tool>> {
    vec![
        tool(
            Declaration {
                name: "inventory_scan",
                title: "Scan for applications",
                description: "Scan this host for well-known homelab applications — Jellyfin, Plex, Pi-hole, AdGuard \
                    Home, Ollama, PostgreSQL, MySQL, MariaDB, Redis, MongoDB, nginx, Apache, Caddy, Traefik, Home \
                    Assistant, Portainer, Nextcloud, WireGuard, Prometheus, Grafana, Tailscale, Docker — and store \
                    the result as the target's inventory. Each app found has `evidence` (kinds: process, port, \
                    systemd_unit, package, file, interface, each with what was seen), `status` (running when a \
                    process was seen, else installed), its listening `ports` (every listener of its processes, \
                    plus its default ports when no visible process holds them, at most 32; a port alone never \
                    counts as a finding), its pids, and a `version` from the package database, a file, or the binary's \
                    version flag (run by absolute path with a 3 s timeout). Also returns the host identity \
                    (hostname, machine-id, OS, kernel, virtualization, LXC/Docker container id) and the apps \
                    checked and not found. Keeps the newest 20 scans per target. `dry_run: true` detects and \
                    returns the findings and plan but runs no version command and stores nothing. Local target \
                    only.",
                requires: Requirement::Scope(Scope::new(Area::Inventory, Level::Control)),
                risk: Risk::Low,
                annotations: Annotations {
                    read_only: false,
                    destructive: false,
                    idempotent: false,
                    open_world: false,
                },
                kinds: SCAN_KINDS,
            },
            scan,
        ),
        tool(
            Declaration {
                name: "inventory_get",
                title: "Read the inventory",
                description: "The stored inventory of a target: the latest scan (`scan`: id, time, who ran it; absent \
                    when never scanned), the host (identity from the scan, operator `attributes` = tags and \
                    fields, newest 20 `notes` with `notes_total`), and `apps`: each detected app (`detected: true`, \
                    the scan's `detection` with evidence, ports and version) and apps known only from operator \
                    attributes or notes (`detected: false`), each with its attributes and notes. `app` returns \
                    only that application (an id not in the inventory is an error). Reads only the database; run \
                    inventory_scan to refresh.",
                requires: Requirement::Scope(Scope::new(Area::Inventory, Level::Read)),
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: ANY_KIND,
            },
            get,
        ),
        tool(
            Declaration {
                name: "inventory_set",
                title: "Tag and describe an inventory entry",
                description: "Set operator attributes on the target's host entry or on one application (`app`, \
                    which need not have been detected): `tags` replaces the tag list (sorted, duplicates removed; \
                    at most 32), `fields` sets string fields (`{\"owner\": \"ops\", \"url\": \"https://...\"}`) and \
                    removes those given as null (at most 64 per entry). Returns the attributes after the change and \
                    the plan (the database write). `dry_run: true` returns both without writing. Works for any \
                    target: it writes only this server's database.",
                requires: Requirement::Scope(Scope::new(Area::Inventory, Level::Control)),
                risk: Risk::Low,
                annotations: Annotations {
                    read_only: false,
                    destructive: false,
                    idempotent: true,
                    open_world: false,
                },
                kinds: ANY_KIND,
            },
            set,
        ),
        tool(
            Declaration {
                name: "inventory_annotate",
                title: "Add a note to an inventory entry",
                description: "Append an operator note to the target's host entry or to one application (`app`, \
                    which need not have been detected). Notes are kept with their author (the caller) and time, \
                    and are never edited; inventory_get shows the newest 20 per entry. `dry_run: true` returns the \
                    plan without writing. Works for any target: it writes only this server's database.",
                requires: Requirement::Scope(Scope::new(Area::Inventory, Level::Control)),
                risk: Risk::Low,
                annotations: Annotations {
                    read_only: false,
                    destructive: false,
                    idempotent: false,
                    open_world: false,
                },
                kinds: ANY_KIND,
            },
            annotate,
        ),
    ]
}

/// Arguments of `inventory_scan`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryScanArgs {
    /// Detect and return the findings and the plan, but run no version command and store
    /// nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// `structuredContent` of `inventory_scan`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InventoryScanOutput {
    pub dry_run: bool,
    /// Version commands (run, or to be run) and the database write, in order.
    pub plan: Vec<Step>,
    /// The stored scan (absent on a dry run).
    pub stored: Option<ScanMeta>,
    pub host: HostIdentity,
    pub apps: Vec<DetectedApp>,
    /// Applications checked and not found.
    pub not_found: Vec<String>,
}

/// Arguments of `inventory_get`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryGetArgs {
    /// Only this application (its id, e.g. `redis`, `homeassistant`).
    #[serde(default)]
    pub app: Option<String>,
}

/// Arguments of `inventory_set`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InventorySetArgs {
    /// The application (id, lowercase, e.g. `redis`; need not have been detected). Omitted: the
    /// host itself.
    #[serde(default)]
    pub app: Option<String>,
    /// Replace the tags with these (at most 32; letters, digits and `_.:/-`, 1-64 characters
    /// each). Omitted: tags unchanged.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Fields to set (`"owner": "ops"`) or, with `null`, remove. Keys: lowercase letters,
    /// digits and `_.-`, starting with a letter, at most 64 characters; values at most 1024
    /// characters; at most 64 fields per subject.
    #[serde(default)]
    pub fields: Option<BTreeMap<String, Option<String>>>,
    /// Return the plan and the attributes as they would be, without writing.
    #[serde(default)]
    pub dry_run: bool,
}

/// `structuredContent` of `inventory_set`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InventorySetOutput {
    pub dry_run: bool,
    pub plan: Vec<Step>,
    /// `host` or `app:<id>`.
    pub subject: String,
    /// The attributes after the change (as they would be, on a dry run).
    pub attributes: Attributes,
}

/// Arguments of `inventory_annotate`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryAnnotateArgs {
    /// The application the note is about (id, lowercase). Omitted: the host itself.
    #[serde(default)]
    pub app: Option<String>,
    /// The note (1-4000 characters; newlines and tabs allowed, other control characters not).
    pub note: String,
    /// Return the plan without writing.
    #[serde(default)]
    pub dry_run: bool,
}

/// `structuredContent` of `inventory_annotate`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InventoryAnnotateOutput {
    pub dry_run: bool,
    pub plan: Vec<Step>,
    /// `host` or `app:<id>`.
    pub subject: String,
    /// The stored note (absent on a dry run).
    pub note: Option<Note>,
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// `inventory_scan`.
async fn scan(ctx: ToolContext, args: InventoryScanArgs) -> Result<Output<InventoryScanOutput>, ToolError> {
    let (host, mut apps, commands) = blocking(|| {
        let seen = detect::gather();
        let mut apps = detect::detect(detect::RULES, &seen);
        detect::file_versions(detect::RULES, &mut apps);
        let commands = detect::version_commands(detect::RULES, &apps);
        (detect::host_identity(), apps, commands)
    })
    .await?;
    let db = ctx.config.database.clone();
    let target = ctx.target.id.clone();
    let mut plan: Vec<Step> = commands
        .iter()
        .map(|c| Step {
            kind: StepKind::Command,
            target: target.clone(),
            detail: detect::command_line(&c.command),
        })
        .collect();
    plan.push(Step {
        kind: StepKind::File,
        target: target.clone(),
        detail: format!(
            "write {}: insert into inventory_scans (target `{target}`, {} apps), delete scans of `{target}` \
             beyond the newest {}",
            db.display(),
            apps.len(),
            store::KEEP_SCANS
        ),
    });
    let not_found: Vec<String> = detect::RULES
        .iter()
        .filter(|r| !apps.iter().any(|a| a.id == r.id))
        .map(|r| r.id.to_string())
        .collect();
    let stored = if args.dry_run {
        None
    } else {
        detect::run_version_commands(&commands, &mut apps).await;
        let doc = ScanDocument {
            host: host.clone(),
            apps: apps.clone(),
        };
        let by = ctx.caller.principal.clone();
        let t = target.clone();
        Some(
            blocking(move || store::save_scan(&db, &t, &by, &doc))
                .await?
                .map_err(store_failed)?,
        )
    };
    let out = InventoryScanOutput {
        dry_run: args.dry_run,
        plan,
        stored,
        host,
        apps,
        not_found,
    };
    let text = render_scan(&out);
    Ok(Output::new(out, text))
}

/// `inventory_get`.
async fn get(ctx: ToolContext, args: InventoryGetArgs) -> Result<Output<InventoryView>, ToolError> {
    if let Some(app) = &args.app {
        validate_app(app)?;
    }
    let db = ctx.config.database.clone();
    let target = ctx.target.id.clone();
    let mut view = blocking(move || store::view(&db, &target))
        .await?
        .map_err(store_failed)?;
    if let Some(app) = &args.app {
        if !view.apps.iter().any(|a| &a.id == app) {
            let known: Vec<&str> = view.apps.iter().map(|a| a.id.as_str()).collect();
            return Err(ToolError::Failed(format!(
                "no app `{app}` in the inventory of target `{}` (apps: {})",
                ctx.target.id,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        view.apps.retain(|a| &a.id == app);
    }
    let text = render_view(&view);
    Ok(Output::new(view, text))
}

/// `inventory_set`.
async fn set(ctx: ToolContext, args: InventorySetArgs) -> Result<Output<InventorySetOutput>, ToolError> {
    let subject = subject(args.app.as_deref())?;
    if args.tags.is_none() && args.fields.is_none() {
        return Err(ToolError::InvalidArgs(
            "give `tags`, `fields` or both: there is nothing to set".into(),
        ));
    }
    if let Some(tags) = &args.tags {
        validate_tags(tags)?;
    }
    let fields = args.fields.unwrap_or_default();
    validate_fields(&fields)?;
    let db = ctx.config.database.clone();
    let target = ctx.target.id.clone();
    let current = {
        let (db, target, subject) = (db.clone(), target.clone(), subject.clone());
        blocking(move || store::attributes(&db, &target, &subject))
            .await?
            .map_err(store_failed)?
    };
    let mut after = current.clone();
    store::apply_changes(&mut after, args.tags.as_deref(), &fields);
    if after.fields.len() > MAX_FIELDS {
        return Err(ToolError::InvalidArgs(format!(
            "`{subject}` would have {} fields; at most {MAX_FIELDS} are allowed",
            after.fields.len()
        )));
    }
    let plan = vec![Step {
        kind: StepKind::File,
        target: target.clone(),
        detail: set_detail(&db, &target, &subject, args.tags.as_deref(), &fields),
    }];
    let attributes = if args.dry_run {
        after
    } else {
        let by = ctx.caller.principal.clone();
        let (t, s) = (target.clone(), subject.clone());
        blocking(move || store::set_attributes(&db, &t, &s, args.tags.as_deref(), &fields, &by))
            .await?
            .map_err(store_failed)?
    };
    let out = InventorySetOutput {
        dry_run: args.dry_run,
        plan,
        subject,
        attributes,
    };
    let mut text = format!(
        "{}{}: tags [{}]",
        if out.dry_run { "dry run: " } else { "" },
        out.subject,
        out.attributes.tags.join(", ")
    );
    for (k, v) in &out.attributes.fields {
        let _ = write!(text, "; {k}={v}");
    }
    Ok(Output::new(out, text))
}

/// `inventory_annotate`.
async fn annotate(ctx: ToolContext, args: InventoryAnnotateArgs) -> Result<Output<InventoryAnnotateOutput>, ToolError> {
    let subject = subject(args.app.as_deref())?;
    validate_note(&args.note)?;
    let db = ctx.config.database.clone();
    let target = ctx.target.id.clone();
    let plan = vec![Step {
        kind: StepKind::File,
        target: target.clone(),
        detail: format!(
            "write {}: insert into inventory_notes (target `{target}`, subject `{subject}`, {} characters)",
            db.display(),
            args.note.chars().count()
        ),
    }];
    let note = if args.dry_run {
        None
    } else {
        let by = ctx.caller.principal.clone();
        let s = subject.clone();
        let text = args.note.clone();
        Some(
            blocking(move || store::add_note(&db, &target, &s, &text, &by))
                .await?
                .map_err(store_failed)?,
        )
    };
    let text = match &note {
        Some(n) => format!("note {} added to {subject} by {}", n.id, n.author),
        None => format!("dry run: would add a note to {subject}"),
    };
    let out = InventoryAnnotateOutput {
        dry_run: args.dry_run,
        plan,
        subject,
        note,
    };
    Ok(Output::new(out, text))
}

// ---------------------------------------------------------------------------------------------
// Validation

/// `host` for no app, `app:<id>` for a valid id.
fn subject(app: Option<&str>) -> Result<String, ToolError> {
    match app {
        None => Ok("host".to_string()),
        Some(id) => {
            validate_app(id)?;
            Ok(format!("app:{id}"))
        }
    }
}

/// An application id: lowercase letters, digits and `_.-`, starting with a letter or digit,
/// 1-64 characters.
fn validate_app(id: &str) -> Result<(), ToolError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ToolError::InvalidArgs(format!(
            "`app` must be an application id (lowercase letters, digits and _.-, 1-64 characters, e.g. `redis`), \
             got `{}`",
            shorten(id)
        )))
    }
}

fn validate_tags(tags: &[String]) -> Result<(), ToolError> {
    if tags.len() > MAX_TAGS {
        return Err(ToolError::InvalidArgs(format!(
            "at most {MAX_TAGS} tags are allowed, got {}",
            tags.len()
        )));
    }
    for t in tags {
        let ok = !t.is_empty()
            && t.len() <= 64
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'/' | b'-'));
        if !ok {
            return Err(ToolError::InvalidArgs(format!(
                "tag `{}` is not valid: use letters, digits and _.:/-, 1-64 characters",
                shorten(t)
            )));
        }
    }
    Ok(())
}

fn validate_fields(fields: &BTreeMap<String, Option<String>>) -> Result<(), ToolError> {
    if fields.len() > MAX_FIELDS {
        return Err(ToolError::InvalidArgs(format!(
            "at most {MAX_FIELDS} fields are allowed, got {}",
            fields.len()
        )));
    }
    for (k, v) in fields {
        let ok = !k.is_empty()
            && k.len() <= 64
            && k.as_bytes()[0].is_ascii_lowercase()
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(ToolError::InvalidArgs(format!(
                "field name `{}` is not valid: lowercase letters, digits and _.-, starting with a letter, 1-64 \
                 characters",
                shorten(k)
            )));
        }
        if let Some(v) = v {
            if v.chars().count() > MAX_FIELD_VALUE {
                return Err(ToolError::InvalidArgs(format!(
                    "field `{k}` is {} characters long; at most {MAX_FIELD_VALUE} are allowed",
                    v.chars().count()
                )));
            }
            if v.chars().any(char::is_control) {
                return Err(ToolError::InvalidArgs(format!(
                    "field `{k}` contains control characters"
                )));
            }
        }
    }
    Ok(())
}

fn validate_note(note: &str) -> Result<(), ToolError> {
    let n = note.chars().count();
    if note.trim().is_empty() || n > MAX_NOTE {
        return Err(ToolError::InvalidArgs(format!(
            "`note` must be 1 to {MAX_NOTE} characters and not blank, got {n}"
        )));
    }
    if note.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ToolError::InvalidArgs(
            "`note` contains control characters (only newlines and tabs are allowed)".into(),
        ));
    }
    Ok(())
}

fn shorten(s: &str) -> String {
    crate::exec::local::truncate_chars(&s.escape_debug().to_string(), 64)
}

fn set_detail(
    db: &std::path::Path,
    target: &str,
    subject: &str,
    tags: Option<&[String]>,
    fields: &BTreeMap<String, Option<String>>,
) -> String {
    let mut d = format!(
        "write {}: upsert inventory_attributes (target `{target}`, subject `{subject}`)",
        db.display()
    );
    if let Some(tags) = tags {
        let _ = write!(d, "; tags = [{}]", tags.join(", "));
    }
    let set: Vec<&str> = fields
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k.as_str())
        .collect();
    let removed: Vec<&str> = fields
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k.as_str())
        .collect();
    if !set.is_empty() {
        let _ = write!(d, "; set {}", set.join(", "));
    }
    if !removed.is_empty() {
        let _ = write!(d, "; remove {}", removed.join(", "));
    }
    d
}

fn store_failed(e: store::InventoryError) -> ToolError {
    ToolError::Failed(format!("inventory store: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Text renderings

fn render_scan(out: &InventoryScanOutput) -> String {
    let mut t = String::new();
    let h = &out.host;
    let _ = writeln!(
        t,
        "{}{} ({}, {}{}): {} apps found",
        if out.dry_run { "dry run: " } else { "" },
        h.hostname.as_deref().unwrap_or("(unknown host)"),
        h.os.pretty_name.as_deref().unwrap_or("unknown OS"),
        h.virtualization,
        h.container_id.as_deref().map(|id| format!(" {id}")).unwrap_or_default(),
        out.apps.len()
    );
    for a in &out.apps {
        let ports: Vec<String> = a.ports.iter().map(|p| p.port.to_string()).collect();
        let mut kinds: Vec<&str> = a.evidence.iter().map(|e| e.kind.as_str()).collect();
        kinds.dedup();
        let _ = writeln!(
            t,
            "  {:<14} {:<9} {:<12} ports [{}]  evidence: {}",
            a.id,
            a.status,
            a.version.as_deref().unwrap_or("-"),
            ports.join(","),
            kinds.join(",")
        );
    }
    match &out.stored {
        Some(s) => {
            let _ = writeln!(t, "stored as scan {} at {}", s.id, s.scanned_at);
        }
        None => {
            let _ = writeln!(t, "not stored (dry run); plan: {} steps", out.plan.len());
        }
    }
    t
}

fn render_view(v: &InventoryView) -> String {
    let mut t = String::new();
    match &v.scan {
        Some(s) => {
            let _ = writeln!(
                t,
                "inventory of `{}`: scan {} at {} by {}",
                v.target, s.id, s.scanned_at, s.scanned_by
            );
        }
        None => {
            let _ = writeln!(t, "inventory of `{}`: never scanned (run inventory_scan)", v.target);
        }
    }
    if let Some(h) = &v.host.identity {
        let _ = writeln!(
            t,
            "host {} ({}, {})",
            h.hostname.as_deref().unwrap_or("?"),
            h.os.pretty_name.as_deref().unwrap_or("unknown OS"),
            h.virtualization
        );
    }
    render_attrs(&mut t, "  ", &v.host.attributes, &v.host.notes);
    for a in &v.apps {
        let d = a.detection.as_ref();
        let _ = writeln!(
            t,
            "{} {}{}",
            a.id,
            d.map(|d| d.status.as_str()).unwrap_or("not detected"),
            d.and_then(|d| d.version.as_deref())
                .map(|v| format!(" {v}"))
                .unwrap_or_default()
        );
        render_attrs(&mut t, "  ", &a.attributes, &a.notes);
    }
    t
}

fn render_attrs(t: &mut String, indent: &str, a: &Attributes, notes: &[Note]) {
    if !a.tags.is_empty() {
        let _ = writeln!(t, "{indent}tags: {}", a.tags.join(", "));
    }
    for (k, v) in &a.fields {
        let _ = writeln!(t, "{indent}{k}: {v}");
    }
    for n in notes.iter().take(3) {
        let first = n.note.lines().next().unwrap_or("");
        let _ = writeln!(t, "{indent}note ({}, {}): {first}", n.author, n.created_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::ToolSpec;

    #[test]
    fn names_tags_fields_and_notes_are_validated() {
        for ok in ["redis", "home-assistant", "app.v2", "0x"] {
            assert!(validate_app(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Redis", "../x", "a b", "a;rm", "-x", &"a".repeat(65)] {
            assert!(validate_app(bad).is_err(), "{bad}");
        }
        assert!(validate_tags(&["prod".into(), "role:db".into(), "rack/2".into()]).is_ok());
        assert!(validate_tags(&["bad tag".into()]).is_err());
        assert!(validate_tags(&vec!["t".to_string(); 33]).is_err());
        let f = |k: &str, v: Option<&str>| -> BTreeMap<String, Option<String>> {
            [(k.to_string(), v.map(str::to_string))].into()
        };
        assert!(validate_fields(&f("owner", Some("ops team"))).is_ok());
        assert!(validate_fields(&f("owner", None)).is_ok());
        assert!(validate_fields(&f("Owner", Some("x"))).is_err());
        assert!(validate_fields(&f("owner", Some("a\u{1b}[31m"))).is_err());
        assert!(validate_fields(&f("owner", Some(&"x".repeat(1025)))).is_err());
        assert!(validate_note("line one\n\tline two").is_ok());
        assert!(validate_note("   ").is_err());
        assert!(validate_note(&"x".repeat(4001)).is_err());
        assert!(validate_note("bell\u{7}").is_err());
        assert_eq!(subject(None).unwrap(), "host");
        assert_eq!(subject(Some("redis")).unwrap(), "app:redis");
    }

    #[test]
    fn specs_are_as_declared() {
        let specs: Vec<ToolSpec> = tools().iter().map(|t| t.spec().clone()).collect();
        let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            ["inventory_scan", "inventory_get", "inventory_set", "inventory_annotate"]
        );
        for s in &specs {
            let level = if s.name == "inventory_get" {
                Level::Read
            } else {
                Level::Control
            };
            assert_eq!(
                s.requires,
                Requirement::Scope(Scope::new(Area::Inventory, level)),
                "{}",
                s.name
            );
            assert_eq!(s.risk, Risk::Low);
            assert_eq!(s.annotations.read_only, s.name == "inventory_get", "{}", s.name);
            if s.mutates() {
                assert!(s.input_schema["properties"].get("dry_run").is_some(), "{}", s.name);
                assert!(s.output_schema["properties"].get("plan").is_some(), "{}", s.name);
            }
        }
    }
}
