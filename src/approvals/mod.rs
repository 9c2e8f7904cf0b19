//! Approvals: which calls need a person's yes before they run, and the record of that yes.
//!
//! Owns: the `[approvals]` configuration (risk level and per-tool → [`Mode`]), the [`Approvals`]
//! API over the `approvals` table (pending requests, decisions, the one use: the only caller of
//! `store::approvals`, which holds the table's SQL), what a stored approval means ([`Status`],
//! [`ApprovalView`]), approval ids, the canonical form and hash of a call's arguments, and the
//! sealed `requestState` of a confirmation on protocol 2026-07-28 ([`Sealer`]).
//!
//! Does not: run SQL (its [`Store`] handle goes to `store::approvals`), write audit rows (the `call` pipeline records every step, with both identities in the
//! reason), run tools (the `call` pipeline runs the dry run whose plan is stored here), or decide
//! scopes (`policy` does; the approvals tools need `approvals:read` / `approvals:control`).
//!
//! **Invariant:** an approval is decided once, by a principal other than its requester, and is
//! spent by exactly one re-call of the same requester with the same tool, target and arguments
//! (claimed with one conditional `UPDATE` inside a write transaction). Expired, denied and
//! already-used approvals never run anything.
//!
//! **Invariant:** a confirmation is the *client's* yes (elicitation, or a sealed request state
//! answered by the client), never a second person; a client that cannot ask is refused.

pub mod gate;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rmcp::model::{JsonObject, RequestStateCodec, RequestStateError, SealOptions};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::Store;
use crate::store::approvals as rows;

pub use crate::config::approvals::{ApprovalsConfig, Mode};
pub use crate::store::approvals::{Approval, DecideError, Decision, Recall, Spent};

/// JSON with object keys sorted at every level: the same arguments always give the same text,
/// whatever order the client sent them in.
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn sorted(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                serde_json::Value::Object(out)
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// SHA-256 (hex) over the tool, its target(s) and the canonical arguments: what an approval or
/// a sealed confirmation is bound to.
pub fn call_hash(tool: &str, target: &str, args: &JsonObject) -> String {
    let mut h = Sha256::new();
    h.update(b"tailopsmcp/call/v1\0");
    h.update(tool.as_bytes());
    h.update(b"\0");
    h.update(target.as_bytes());
    h.update(b"\0");
    h.update(canonical_json(&serde_json::Value::Object(args.clone())).as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` bytes from the kernel's CSPRNG.
fn random_bytes(n: usize) -> Result<Vec<u8>, std::io::Error> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// Approvals older than this are deleted when a new one is recorded.
pub const RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// Approval ids: 12 characters of a 32-letter alphabet without look-alikes (60 random bits).
const ID_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
const ID_LEN: usize = 12;

fn new_id() -> Result<String, std::io::Error> {
    Ok(random_bytes(ID_LEN)?
        .into_iter()
        .map(|b| ID_ALPHABET[(b & 31) as usize] as char)
        .collect())
}

/// Whether `id` has the shape of an approval id (checked before any query).
pub fn valid_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| ID_ALPHABET.contains(&b))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One approval as callers see it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ApprovalView {
    /// Short id: `approvals_decide` / `tailopsmcp approvals approve ID`.
    pub id: String,
    /// `pending`, `approved`, `denied`, `expired` or `used`.
    #[schemars(with = "String")]
    pub status: Status,
    /// Who asked (principal) and from which node.
    pub requester: String,
    pub requester_node: String,
    pub tool: String,
    pub target: String,
    /// The arguments exactly as they will run (secret-looking values redacted).
    pub arguments: serde_json::Value,
    /// SHA-256 of tool, target and the full arguments.
    pub args_hash: String,
    /// The dry-run plan of a changing tool; absent for a read-only tool (the call is the plan).
    pub plan: Option<serde_json::Value>,
    /// What runs, in one line.
    pub summary: String,
    pub created: String,
    pub expires: String,
    #[schemars(with = "Option<String>")]
    pub decision: Option<Decision>,
    pub decided_by: Option<String>,
    pub decided_by_node: Option<String>,
    pub decided_at: Option<String>,
    pub used_at: Option<String>,
}

/// Where an approval stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for a decision.
    Pending,
    /// Approved, live, not yet used.
    Approved,
    Denied,
    /// Past its expiry before it was used (decided or not).
    Expired,
    /// The approved call ran.
    Used,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Used => "used",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a stored approval means (the row and its queries are `store::approvals`).
impl Approval {
    /// The ids of the targets the requested call names (`target` is their comma-joined list).
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.target.split(',').filter(|t| !t.is_empty())
    }

    /// Where it stands as of `now`.
    pub fn status(&self, now: i64) -> Status {
        match (self.spent, self.decision) {
            (Some(Spent::Ran), _) => Status::Used,
            (_, Some(Decision::Deny)) => Status::Denied,
            _ if self.expires <= now || self.spent == Some(Spent::Expired) => Status::Expired,
            (_, Some(Decision::Approve)) => Status::Approved,
            _ => Status::Pending,
        }
    }

    pub fn view(&self, now: i64) -> ApprovalView {
        ApprovalView {
            id: self.id.clone(),
            status: self.status(now),
            requester: self.requester.clone(),
            requester_node: self.requester_node.clone(),
            tool: self.tool.clone(),
            target: self.target.clone(),
            arguments: serde_json::from_str(&self.arguments).unwrap_or(serde_json::Value::Null),
            args_hash: self.args_hash.clone(),
            plan: self.plan.as_deref().and_then(|p| serde_json::from_str(p).ok()),
            summary: self.summary.clone(),
            created: crate::when::rfc3339_ms(self.created),
            expires: crate::when::rfc3339_ms(self.expires),
            decision: self.decision,
            decided_by: self.decided_by.clone(),
            decided_by_node: self.decided_by_node.clone(),
            decided_at: self.decided_at.map(crate::when::rfc3339_ms),
            used_at: self.used_at.map(crate::when::rfc3339_ms),
        }
    }

    /// "approval `ID` (requested by P from N)", for audit reasons and messages.
    pub fn describe(&self) -> String {
        format!(
            "approval `{}` (requested by {} from {})",
            self.id, self.requester, self.requester_node
        )
    }
}

/// A new two-person request.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub requester: String,
    pub requester_node: String,
    pub tool: String,
    pub target: String,
    /// Redacted, for display.
    pub arguments: serde_json::Value,
    pub args_hash: String,
    pub plan: Option<serde_json::Value>,
    pub summary: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("open approvals store: {0}")]
    Open(#[from] crate::store::StoreError),
    #[error("approvals store {path}: {message}")]
    Sql { path: PathBuf, message: String },
    #[error("approvals: {0}")]
    Random(#[from] std::io::Error),
}

/// The approvals store and the confirmation sealer of one server (or one CLI run).
pub struct Approvals {
    pub config: ApprovalsConfig,
    /// The database handle the `approvals` table is reached through (`store::approvals`).
    store: Store,
    pub sealer: Sealer,
}

impl Approvals {
    /// Open (and migrate) the database at `path` (the process's [`Store`] on it, if one is
    /// already open); a fresh sealing key for confirmations.
    pub fn open(path: &Path, config: ApprovalsConfig) -> Result<Approvals, ApprovalError> {
        let store = Store::open(path)?;
        Ok(Approvals {
            config,
            store,
            sealer: Sealer::new()?,
        })
    }

    fn sql(&self, e: rusqlite::Error) -> ApprovalError {
        ApprovalError::Sql {
            path: self.store.path().to_path_buf(),
            message: e.to_string(),
        }
    }

    /// Record a pending request; it expires after `config.expiry`.
    pub fn request(&self, r: &NewRequest) -> Result<Approval, ApprovalError> {
        let id = new_id()?;
        let now = now_ms();
        let request = Approval {
            id: id.clone(),
            requester: r.requester.clone(),
            requester_node: r.requester_node.clone(),
            tool: r.tool.clone(),
            target: r.target.clone(),
            arguments: canonical_json(&r.arguments),
            args_hash: r.args_hash.clone(),
            plan: r.plan.as_ref().map(|p| p.to_string()),
            summary: r.summary.clone(),
            created: now,
            expires: now + self.config.expiry.as_millis() as i64,
            decision: None,
            decided_by: None,
            decided_by_node: None,
            decided_at: None,
            used_at: None,
            spent: None,
        };
        rows::insert(&self.store, &request, now - RETENTION.as_millis() as i64).map_err(|e| self.sql(e))?;
        self.get(&id)?
            .ok_or_else(|| self.sql(rusqlite::Error::QueryReturnedNoRows))
    }

    pub fn get(&self, id: &str) -> Result<Option<Approval>, ApprovalError> {
        rows::get(&self.store, id).map_err(|e| self.sql(e))
    }

    /// The requester's call of a two-person tool: find its approval and, if approved and live,
    /// spend it — all in one write transaction, so two concurrent re-calls cannot both run.
    pub fn recall(&self, requester: &str, tool: &str, target: &str, args_hash: &str) -> Result<Recall, ApprovalError> {
        rows::recall(&self.store, requester, tool, target, args_hash, now_ms()).map_err(|e| self.sql(e))
    }

    /// Decide a pending approval. `approver` must not be its requester; the decision is final.
    pub fn decide(
        &self,
        id: &str,
        approve: bool,
        approver: &str,
        approver_node: &str,
    ) -> Result<Approval, DecideError> {
        let decision = if approve { Decision::Approve } else { Decision::Deny };
        match rows::decide(&self.store, id, decision, approver, approver_node, now_ms()) {
            Err(e) => Err(DecideError::Store(self.sql(e).to_string())),
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => self
                .get(id)
                .map_err(|e| DecideError::Store(e.to_string()))?
                .ok_or_else(|| DecideError::NotFound(id.to_string())),
        }
    }

    /// Approvals, newest first: only those still waiting for a decision unless `all`.
    pub fn list(
        &self,
        all: bool,
        limit: usize,
        visible: impl Fn(&Approval) -> bool,
    ) -> Result<(Vec<Approval>, u64), ApprovalError> {
        rows::list(&self.store, all, limit, now_ms(), visible).map_err(|e| self.sql(e))
    }
}

/// The time now, in the store's unit (unix ms), for views.
pub fn now() -> i64 {
    now_ms()
}

/// Seals and opens the `requestState` of a confirmation on protocol 2026-07-28: an HMAC-SHA256
/// (rmcp's `RequestStateCodec`) over a one-time nonce, bound through the associated data to
/// the principal, tool, target and argument hash, with an expiry. The key is random per
/// process (so states do not survive a restart); used nonces are remembered until they expire,
/// so a state answers one retry only.
pub struct Sealer {
    codec: RequestStateCodec,
    used: Mutex<HashMap<String, i64>>,
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    v: u32,
    nonce: String,
    expires: i64,
}

/// Why an echoed request state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the request state has expired; call again without it to be asked anew")]
    Expired,
    #[error(
        "the request state does not verify: it was edited, or it was issued for another caller, tool, target or arguments"
    )]
    Invalid,
    #[error("the request state was already used; call again without it to be asked anew")]
    Replayed,
}

fn associated(principal: &str, tool: &str, target: &str, args_hash: &str) -> Vec<u8> {
    format!("tailopsmcp/confirm/v1\0{principal}\0{tool}\0{target}\0{args_hash}").into_bytes()
}

impl Sealer {
    fn new() -> Result<Sealer, std::io::Error> {
        let key = random_bytes(32)?;
        let codec = RequestStateCodec::try_new(key).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Sealer {
            codec,
            used: Mutex::new(HashMap::new()),
        })
    }

    pub fn seal(
        &self,
        principal: &str,
        tool: &str,
        target: &str,
        args_hash: &str,
        ttl: Duration,
    ) -> Result<String, std::io::Error> {
        let nonce = hex(&random_bytes(16)?);
        let payload = Sealed {
            v: 1,
            nonce,
            expires: now_ms() + ttl.as_millis() as i64,
        };
        let bytes = serde_json::to_vec(&payload).map_err(std::io::Error::other)?;
        let ad = associated(principal, tool, target, args_hash);
        Ok(self
            .codec
            .seal_with(&bytes, &SealOptions::new().associated_data(&ad).ttl(ttl)))
    }

    /// Verify an echoed state for this exact call and spend it.
    pub fn open(
        &self,
        sealed: &str,
        principal: &str,
        tool: &str,
        target: &str,
        args_hash: &str,
    ) -> Result<(), StateError> {
        let ad = associated(principal, tool, target, args_hash);
        let bytes = self.codec.open_with(sealed, &ad).map_err(|e| match e {
            RequestStateError::Expired => StateError::Expired,
            _ => StateError::Invalid,
        })?;
        let payload: Sealed = serde_json::from_slice(&bytes).map_err(|_| StateError::Invalid)?;
        let now = now_ms();
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.retain(|_, exp| *exp > now);
        if used.insert(payload.nonce, payload.expires).is_some() {
            return Err(StateError::Replayed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::approvals::{ApprovalsSection, check_tools};
    use crate::model::{Area, Requirement, Risk, ToolSpec};
    use crate::tools::Annotations;

    fn spec(name: &'static str, risk: Risk, area: Area) -> ToolSpec {
        ToolSpec {
            name,
            title: name,
            description: name,
            requires: Requirement::Scope(crate::policy::Scope::new(area, crate::policy::Level::Read)),
            risk,
            annotations: Annotations {
                read_only: true,
                destructive: false,
                idempotent: true,
                open_world: false,
            },
            input_schema: Default::default(),
            output_schema: Default::default(),
        }
    }

    fn check(config: &ApprovalsConfig, name: &'static str, risk: Risk, area: Area, expected: Mode) {
        assert_eq!(config.mode_for(&spec(name, risk, area)), expected, "{name} {risk:?}");
    }

    #[test]
    fn modes_come_from_the_tool_then_its_risk() {
        let mut c = ApprovalsConfig::default();
        check(&c, "a", Risk::Low, Area::System, Mode::None);
        check(&c, "a", Risk::Moderate, Area::System, Mode::None);
        check(&c, "a", Risk::High, Area::System, Mode::Confirm);
        check(&c, "a", Risk::Critical, Area::System, Mode::TwoPerson);
        c.tools.insert("system_status".into(), Mode::TwoPerson);
        c.tools.insert("packages_install".into(), Mode::None);
        check(&c, "system_status", Risk::Low, Area::System, Mode::TwoPerson);
        check(&c, "packages_install", Risk::Critical, Area::Packages, Mode::None);
        // Approving never needs an approval.
        c.tools.insert("approvals_decide".into(), Mode::TwoPerson);
        check(&c, "approvals_decide", Risk::Critical, Area::Approvals, Mode::None);
    }

    #[test]
    fn config_is_validated() {
        let s = ApprovalsSection {
            expiry_secs: 0,
            ..ApprovalsSection::default()
        };
        assert_eq!(ApprovalsConfig::build(s).unwrap_err().0, "approvals.expiry_secs");
        let mut c = ApprovalsConfig::default();
        c.tools.insert("nope".into(), Mode::Confirm);
        assert_eq!(
            check_tools(&c, &["whoami"]).unwrap_err(),
            "approvals.tools: no tool is named `nope`"
        );
        let parsed: ApprovalsSection =
            toml::from_str("expiry_secs = 60\nrisk = { high = \"two_person\" }\ntools = { whoami = \"confirm\" }")
                .unwrap();
        let c = ApprovalsConfig::build(parsed).unwrap();
        assert_eq!(c.risk.high, Mode::TwoPerson);
        assert_eq!(c.risk.critical, Mode::TwoPerson);
        assert_eq!(c.tools["whoami"], Mode::Confirm);
        assert!(toml::from_str::<ApprovalsSection>("risk = { high = \"maybe\" }").is_err());
    }

    #[test]
    fn the_hash_ignores_key_order_but_not_values_targets_or_tools() {
        let a: JsonObject = serde_json::from_str(r#"{"x": 1, "y": {"b": 2, "a": [1, {"d": 1, "c": 2}]}}"#).unwrap();
        let b: JsonObject = serde_json::from_str(r#"{"y": {"a": [1, {"c": 2, "d": 1}], "b": 2}, "x": 1}"#).unwrap();
        let c: JsonObject = serde_json::from_str(r#"{"x": 2, "y": {"b": 2, "a": [1, {"d": 1, "c": 2}]}}"#).unwrap();
        assert_eq!(call_hash("t", "local", &a), call_hash("t", "local", &b));
        assert_ne!(call_hash("t", "local", &a), call_hash("t", "local", &c));
        assert_ne!(call_hash("t", "local", &a), call_hash("t", "nas", &a));
        assert_ne!(call_hash("t", "local", &a), call_hash("u", "local", &a));
        assert_eq!(call_hash("t", "local", &a).len(), 64);
    }

    #[test]
    fn ids_are_short_random_and_checked() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert!(valid_id(&a) && valid_id(&b), "{a} {b}");
        assert_ne!(a, b);
        for bad in [
            "",
            "abc",
            "abcdefghijk1",
            "ABCDEFGHIJKM",
            "abcdefghijkm'",
            "../../etc/pa",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    fn store(expiry: Duration) -> (tempfile::TempDir, Approvals) {
        let dir = tempfile::tempdir().unwrap();
        let config = ApprovalsConfig {
            expiry,
            ..ApprovalsConfig::default()
        };
        let a = Approvals::open(&dir.path().join("a.db"), config).unwrap();
        (dir, a)
    }

    fn ask(a: &Approvals, who: &str, hash: &str) -> Approval {
        a.request(&NewRequest {
            requester: who.into(),
            requester_node: "n1".into(),
            tool: "system_status".into(),
            target: "local".into(),
            arguments: serde_json::json!({}),
            args_hash: hash.into(),
            plan: None,
            summary: "system_status on local".into(),
        })
        .unwrap()
    }

    #[test]
    fn an_approval_is_decided_by_someone_else_once_and_spent_once() {
        let (_d, a) = store(Duration::from_secs(60));
        let h = "a".repeat(64);
        let r = ask(&a, "alice", &h);
        assert_eq!(r.status(now()), Status::Pending);
        assert!(matches!(a.recall("alice", "system_status", "local", &h).unwrap(), Recall::Waiting(x) if x.id == r.id));
        assert_eq!(
            a.decide(&r.id, true, "alice", "n1").unwrap_err(),
            DecideError::SelfApproval("alice".into())
        );
        assert_eq!(
            a.decide("zzzzzzzzzzzz", true, "bob", "n2").unwrap_err(),
            DecideError::NotFound("zzzzzzzzzzzz".into())
        );
        let d = a.decide(&r.id, true, "bob", "n2").unwrap();
        assert_eq!(d.decided_by.as_deref(), Some("bob"));
        assert!(matches!(
            a.decide(&r.id, false, "carol", "n3").unwrap_err(),
            DecideError::AlreadyDecided { .. }
        ));
        // Other arguments: not this approval, but it is named.
        let other = "b".repeat(64);
        match a.recall("alice", "system_status", "local", &other).unwrap() {
            Recall::Nothing {
                used: None,
                other: Some(o),
            } => assert_eq!(o.id, r.id),
            x => panic!("{x:?}"),
        }
        // Someone else's identical call does not spend alice's approval.
        assert!(matches!(
            a.recall("mallory", "system_status", "local", &h).unwrap(),
            Recall::Nothing {
                used: None,
                other: None
            }
        ));
        assert!(matches!(a.recall("alice", "system_status", "local", &h).unwrap(), Recall::Run(x) if x.id == r.id));
        match a.recall("alice", "system_status", "local", &h).unwrap() {
            Recall::Nothing { used: Some(u), .. } => assert_eq!(u.id, r.id),
            x => panic!("second re-call: {x:?}"),
        }
        assert_eq!(
            a.decide(&r.id, true, "carol", "n3").unwrap_err(),
            DecideError::AlreadyUsed(r.id.clone())
        );
    }

    #[test]
    fn denied_and_expired_approvals_refuse_once_and_are_spent() {
        let (_d, a) = store(Duration::from_millis(300));
        let h = "c".repeat(64);
        let r = ask(&a, "alice", &h);
        a.decide(&r.id, false, "bob", "n2").unwrap();
        assert!(matches!(
            a.recall("alice", "system_status", "local", &h).unwrap(),
            Recall::Denied(_)
        ));
        assert!(matches!(
            a.recall("alice", "system_status", "local", &h).unwrap(),
            Recall::Nothing {
                used: None,
                other: None
            }
        ));
        let r = ask(&a, "alice", &h);
        a.decide(&r.id, true, "bob", "n2").unwrap();
        std::thread::sleep(Duration::from_millis(400));
        assert!(matches!(a.recall("alice", "system_status", "local", &h).unwrap(), Recall::Expired(x) if x.id == r.id));
        let r = ask(&a, "alice", &h);
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(
            a.decide(&r.id, true, "bob", "n2").unwrap_err(),
            DecideError::Expired(r.id.clone())
        );
        let (pending, omitted) = a.list(false, 10, |_| true).unwrap();
        assert!(pending.is_empty() && omitted == 0);
        let (all, _) = a.list(true, 2, |_| true).unwrap();
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn views_show_status_and_decision_as_strings() {
        let (_d, a) = store(Duration::from_secs(60));
        let r = ask(&a, "alice", &"e".repeat(64));
        let v = serde_json::to_value(r.view(now())).unwrap();
        assert_eq!(
            (&v["status"], &v["decision"]),
            (&serde_json::json!("pending"), &serde_json::Value::Null)
        );
        let d = a.decide(&r.id, false, "bob", "n2").unwrap();
        let v = serde_json::to_value(d.view(now())).unwrap();
        assert_eq!(
            (v["status"].as_str(), v["decision"].as_str()),
            (Some("denied"), Some("deny"))
        );
        assert_eq!(format!("[{:<8}]", d.status(now())), "[denied  ]");
        assert_eq!(
            a.decide(&r.id, true, "carol", "n3").unwrap_err().to_string(),
            format!("approval `{}` was already decided: deny by bob", r.id)
        );
    }

    #[test]
    fn the_database_refuses_changing_a_decision_or_a_request() {
        let (d, a) = store(Duration::from_secs(60));
        let r = ask(&a, "alice", &"d".repeat(64));
        a.decide(&r.id, false, "bob", "n2").unwrap();
        let c = rusqlite::Connection::open(d.path().join("a.db")).unwrap();
        for sql in [
            "UPDATE approvals SET decision = 'approve'",
            "UPDATE approvals SET args_hash = 'eeee'",
            "UPDATE approvals SET expires = expires + 1000",
        ] {
            assert!(c.execute(sql, []).is_err(), "{sql}");
        }
    }

    #[test]
    fn requests_older_than_the_retention_are_deleted() {
        let (d, a) = store(Duration::from_secs(60));
        let c = rusqlite::Connection::open(d.path().join("a.db")).unwrap();
        let old = now() - RETENTION.as_millis() as i64 - 1;
        c.execute(
            "INSERT INTO approvals (id, requester, requester_node, tool, target, arguments, args_hash, summary, \
             created, expires) VALUES ('oldoldoldold', 'alice', 'n', 't', 'local', '{}', ?1, 's', ?2, ?2)",
            rusqlite::params!["a".repeat(64), old],
        )
        .unwrap();
        assert!(a.get("oldoldoldold").unwrap().is_some());
        let fresh = ask(&a, "alice", &"b".repeat(64));
        assert!(a.get("oldoldoldold").unwrap().is_none());
        assert!(a.get(&fresh.id).unwrap().is_some());
    }

    #[test]
    fn sealed_states_bind_the_call_and_work_once() {
        let s = Sealer::new().unwrap();
        let h = "f".repeat(64);
        let state = s.seal("alice", "t", "local", &h, Duration::from_secs(60)).unwrap();
        assert_eq!(s.open(&state, "bob", "t", "local", &h), Err(StateError::Invalid));
        assert_eq!(s.open(&state, "alice", "u", "local", &h), Err(StateError::Invalid));
        assert_eq!(
            s.open(&state, "alice", "t", "local", &"0".repeat(64)),
            Err(StateError::Invalid)
        );
        let mut edited = state.clone().into_bytes();
        let i = edited.len() / 2;
        edited[i] = if edited[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            s.open(std::str::from_utf8(&edited).unwrap(), "alice", "t", "local", &h),
            Err(StateError::Invalid)
        );
        assert_eq!(s.open(&state, "alice", "t", "local", &h), Ok(()));
        assert_eq!(s.open(&state, "alice", "t", "local", &h), Err(StateError::Replayed));
        let other = Sealer::new().unwrap();
        let foreign = other.seal("alice", "t", "local", &h, Duration::from_secs(60)).unwrap();
        assert_eq!(s.open(&foreign, "alice", "t", "local", &h), Err(StateError::Invalid));
        let short = s.seal("alice", "t", "local", &h, Duration::from_millis(1)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(s.open(&short, "alice", "t", "local", &h), Err(StateError::Expired));
    }
}
