//! Proxmox VE over an `http` target: typed operations on the Proxmox API (`/api2/json`) — nodes,
//! guests (QEMU VMs and LXC containers), guest status and power actions, snapshots, tasks.
//!
//! Every request goes through [`super::http::Http`], so the target's own rules still apply
//! (allowed methods and path prefixes, TLS, the `PVEAPIToken=` header from a secret file, body
//! caps, token redaction). This module owns the Proxmox knowledge: which paths, which JSON shapes
//! (`{"data": ...}`), and the validation of everything that becomes part of a path (node names,
//! vmids, snapshot names, UPIDs) — checked here before any request is built.
//!
//! Knows nothing about callers or policy.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ExecError;
use super::http::Http;
use super::show::cut_after;

/// Smallest and largest vmid Proxmox accepts.
pub const VMID_MIN: i64 = 100;
pub const VMID_MAX: i64 = 999_999_999;
/// How often a task's status is polled while waiting for it.
pub const TASK_POLL: Duration = Duration::from_millis(500);

/// A guest's kind, as the API names it in paths and in `/cluster/resources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuestType {
    /// A QEMU/KVM virtual machine.
    Qemu,
    /// An LXC container.
    Lxc,
}

impl GuestType {
    pub fn as_str(self) -> &'static str {
        match self {
            GuestType::Qemu => "qemu",
            GuestType::Lxc => "lxc",
        }
    }
}

/// A power action on a guest (`POST .../status/{action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuestAction {
    /// Boot the guest.
    Start,
    /// Hard stop: like pulling the power cord (unsaved guest state is lost).
    Stop,
    /// Clean shutdown through ACPI (VMs) or the container's init.
    Shutdown,
    /// Clean reboot.
    Reboot,
}

impl GuestAction {
    pub fn as_str(self) -> &'static str {
        match self {
            GuestAction::Start => "start",
            GuestAction::Stop => "stop",
            GuestAction::Shutdown => "shutdown",
            GuestAction::Reboot => "reboot",
        }
    }
}

/// A cluster node (`GET /nodes`).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Node {
    pub node: String,
    /// `online`, `offline` or `unknown`.
    pub status: String,
    /// CPU usage in percent of all the node's CPUs.
    pub cpu_percent: Option<f64>,
    pub cpus: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub disk_used_bytes: Option<u64>,
    pub disk_total_bytes: Option<u64>,
    pub uptime_seconds: Option<u64>,
}

/// A VM or container as `/cluster/resources?type=vm` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Guest {
    pub vmid: u64,
    #[serde(rename = "type")]
    pub kind: GuestType,
    pub name: Option<String>,
    pub node: String,
    /// `running`, `stopped`, `paused`, ... (as Proxmox reports it).
    pub status: String,
    /// A template (cannot be started).
    pub template: bool,
    pub cpus: Option<f64>,
    /// CPU usage in percent of the guest's CPUs.
    pub cpu_percent: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub disk_total_bytes: Option<u64>,
    pub uptime_seconds: Option<u64>,
    /// Tags, `;`-separated as Proxmox writes them (a string keeps rows flat: TOON tables).
    pub tags: Option<String>,
    /// A config lock (`backup`, `snapshot`, `migrate`, ...) when one is held.
    pub lock: Option<String>,
}

/// `GET /nodes/{node}/{type}/{vmid}/status/current`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct GuestStatus {
    pub vmid: u64,
    #[serde(rename = "type")]
    pub kind: GuestType,
    pub node: String,
    pub name: Option<String>,
    pub status: String,
    /// QEMU only: the QMP state (`running`, `paused`, `prelaunch`, ...).
    pub qmp_status: Option<String>,
    pub cpus: Option<f64>,
    pub cpu_percent: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub disk_total_bytes: Option<u64>,
    pub uptime_seconds: Option<u64>,
    pub pid: Option<u64>,
    pub lock: Option<String>,
    /// Managed by Proxmox HA (start/stop then go through the HA manager).
    pub ha_managed: bool,
    /// Tags, `;`-separated as Proxmox writes them.
    pub tags: Option<String>,
}

/// One snapshot (`GET .../snapshot`); the `current` pseudo-entry is reported as `is_current`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Snapshot {
    pub name: String,
    pub description: Option<String>,
    /// RFC 3339 UTC; absent for `current`.
    pub created_at: Option<String>,
    pub parent: Option<String>,
    /// QEMU: the snapshot includes the VM's RAM.
    pub includes_ram: bool,
    /// The "you are here" entry: the guest's present state, not a snapshot.
    pub is_current: bool,
}

/// A Proxmox task (`GET /nodes/{node}/tasks/{upid}/status`).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct TaskStatus {
    pub upid: String,
    /// `running` or `stopped`.
    pub status: String,
    /// When stopped: `OK`, or the error/warning text (`WARNINGS: 1`, `VM 100 already running`).
    pub exit_status: Option<String>,
}

impl TaskStatus {
    /// Stopped with `OK` (or only warnings).
    pub fn succeeded(&self) -> bool {
        self.status == "stopped"
            && self
                .exit_status
                .as_deref()
                .is_some_and(|e| e == "OK" || e.starts_with("WARNINGS"))
    }
}

/// A node name as Proxmox allows it (a host name label): letters, digits and `-`, 1 to 63
/// characters, not starting or ending with `-`.
pub fn validate_node(node: &str) -> Result<(), String> {
    let ok = !node.is_empty()
        && node.len() <= 63
        && node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !node.starts_with('-')
        && !node.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid node name `{}`: letters, digits and `-` (1-63 characters, no leading or trailing `-`)",
            shown(node)
        ))
    }
}

/// A vmid within Proxmox's range.
pub fn validate_vmid(vmid: i64) -> Result<u64, String> {
    if (VMID_MIN..=VMID_MAX).contains(&vmid) {
        Ok(vmid as u64)
    } else {
        Err(format!(
            "invalid vmid {vmid}: must be between {VMID_MIN} and {VMID_MAX}"
        ))
    }
}

/// A snapshot name as Proxmox allows it: a letter, then letters, digits, `_` or `-`, 2 to 40
/// characters; `current` and `vzdump` are reserved.
pub fn validate_snapshot_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let ok = (2..=40).contains(&name.len())
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(format!(
            "invalid snapshot name `{}`: a letter, then letters, digits, `_` or `-` (2-40 characters)",
            shown(name)
        ));
    }
    if name == "current" || name == "vzdump" {
        return Err(format!("snapshot name `{name}` is reserved by Proxmox"));
    }
    Ok(())
}

/// A task id the API returned: `UPID:{node}:...:`, printable, without characters that could
/// change the path it is put in.
pub fn validate_upid(upid: &str, node: &str) -> Result<(), String> {
    let ok = upid.len() <= 512
        && upid.starts_with(&format!("UPID:{node}:"))
        && upid.ends_with(':')
        && upid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":@!._-=+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected task id `{}` from node {node}", shown(upid)))
    }
}

/// The API path of a guest: `/nodes/{node}/{type}/{vmid}` (inputs validated by the caller of
/// the operations below; checked again here).
pub fn guest_path(node: &str, kind: GuestType, vmid: u64) -> Result<String, ExecError> {
    validate_node(node).map_err(ExecError::Refused)?;
    validate_vmid(vmid as i64).map_err(ExecError::Refused)?;
    Ok(format!("/nodes/{node}/{}/{vmid}", kind.as_str()))
}

/// The `POST` path of a power action.
pub fn action_path(node: &str, kind: GuestType, vmid: u64, action: GuestAction) -> Result<String, ExecError> {
    Ok(format!("{}/status/{}", guest_path(node, kind, vmid)?, action.as_str()))
}

/// The `POST` path and JSON body of a snapshot.
pub fn snapshot_request(
    node: &str,
    kind: GuestType,
    vmid: u64,
    name: &str,
    description: Option<&str>,
    include_ram: bool,
) -> Result<(String, Value), ExecError> {
    validate_snapshot_name(name).map_err(ExecError::Refused)?;
    let path = format!("{}/snapshot", guest_path(node, kind, vmid)?);
    let mut body = serde_json::Map::new();
    body.insert("snapname".into(), name.into());
    if let Some(d) = description {
        body.insert("description".into(), d.into());
    }
    if kind == GuestType::Qemu {
        body.insert("vmstate".into(), u8::from(include_ram).into());
    }
    Ok((path, Value::Object(body)))
}

/// The Proxmox API of one `http` target.
pub struct Proxmox<'a> {
    http: &'a Http,
}

impl<'a> Proxmox<'a> {
    pub fn new(http: &'a Http) -> Proxmox<'a> {
        Proxmox { http }
    }

    /// `GET /nodes`, sorted by name.
    pub async fn nodes(&self) -> Result<Vec<Node>, ExecError> {
        let data = self.get("/nodes", &[]).await?;
        let mut nodes: Vec<Node> = items(&data, "/nodes")?
            .iter()
            .filter_map(|n| {
                Some(Node {
                    node: str_of(n, "node")?,
                    status: str_of(n, "status").unwrap_or_else(|| "unknown".into()),
                    cpu_percent: f64_of(n, "cpu").map(percent),
                    cpus: u64_of(n, "maxcpu"),
                    memory_used_bytes: u64_of(n, "mem"),
                    memory_total_bytes: u64_of(n, "maxmem"),
                    disk_used_bytes: u64_of(n, "disk"),
                    disk_total_bytes: u64_of(n, "maxdisk"),
                    uptime_seconds: u64_of(n, "uptime"),
                })
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(nodes)
    }

    /// Every VM and container of the cluster (`GET /cluster/resources?type=vm`), by vmid.
    pub async fn guests(&self) -> Result<Vec<Guest>, ExecError> {
        let query = [("type".to_string(), "vm".to_string())];
        let data = self.get("/cluster/resources", &query).await?;
        let mut guests: Vec<Guest> = items(&data, "/cluster/resources")?
            .iter()
            .filter_map(|g| {
                let kind = match g.get("type").and_then(Value::as_str)? {
                    "qemu" => GuestType::Qemu,
                    "lxc" => GuestType::Lxc,
                    _ => return None,
                };
                Some(Guest {
                    vmid: u64_of(g, "vmid")?,
                    kind,
                    name: str_of(g, "name"),
                    node: str_of(g, "node")?,
                    status: str_of(g, "status").unwrap_or_else(|| "unknown".into()),
                    template: u64_of(g, "template") == Some(1),
                    cpus: f64_of(g, "maxcpu"),
                    cpu_percent: f64_of(g, "cpu").map(percent),
                    memory_used_bytes: u64_of(g, "mem"),
                    memory_total_bytes: u64_of(g, "maxmem"),
                    disk_total_bytes: u64_of(g, "maxdisk"),
                    uptime_seconds: u64_of(g, "uptime"),
                    tags: tags(g),
                    lock: str_of(g, "lock"),
                })
            })
            .collect();
        guests.sort_by_key(|g| g.vmid);
        Ok(guests)
    }

    /// Where a guest lives: its node and type, from the cluster's resource list.
    pub async fn locate(&self, vmid: u64) -> Result<Guest, ExecError> {
        self.guests()
            .await?
            .into_iter()
            .find(|g| g.vmid == vmid)
            .ok_or_else(|| {
                ExecError::Failed(format!(
                    "no VM or container with vmid {vmid} on target {}",
                    self.http.target_id()
                ))
            })
    }

    /// `GET /nodes/{node}/{type}/{vmid}/status/current`.
    pub async fn guest_status(&self, node: &str, kind: GuestType, vmid: u64) -> Result<GuestStatus, ExecError> {
        let path = format!("{}/status/current", guest_path(node, kind, vmid)?);
        let s = self.get(&path, &[]).await?;
        if !s.is_object() {
            return Err(self.shape(&path, "an object"));
        }
        Ok(GuestStatus {
            vmid,
            kind,
            node: node.to_string(),
            name: str_of(&s, "name"),
            status: str_of(&s, "status").unwrap_or_else(|| "unknown".into()),
            qmp_status: str_of(&s, "qmpstatus"),
            cpus: f64_of(&s, "cpus").or_else(|| f64_of(&s, "maxcpu")),
            cpu_percent: f64_of(&s, "cpu").map(percent),
            memory_used_bytes: u64_of(&s, "mem"),
            memory_total_bytes: u64_of(&s, "maxmem"),
            disk_total_bytes: u64_of(&s, "maxdisk"),
            uptime_seconds: u64_of(&s, "uptime"),
            pid: u64_of(&s, "pid"),
            lock: str_of(&s, "lock"),
            ha_managed: s.get("ha").and_then(|h| u64_of(h, "managed")) == Some(1),
            tags: tags(&s),
        })
    }

    /// `POST /nodes/{node}/{type}/{vmid}/status/{action}`: the task id (UPID).
    pub async fn action(
        &self,
        node: &str,
        kind: GuestType,
        vmid: u64,
        action: GuestAction,
    ) -> Result<String, ExecError> {
        let path = action_path(node, kind, vmid, action)?;
        let data = self.post(&path, None).await?;
        self.upid(data, node, &path)
    }

    /// `GET /nodes/{node}/{type}/{vmid}/snapshot`, oldest first, `current` last.
    pub async fn snapshots(&self, node: &str, kind: GuestType, vmid: u64) -> Result<Vec<Snapshot>, ExecError> {
        let path = format!("{}/snapshot", guest_path(node, kind, vmid)?);
        let data = self.get(&path, &[]).await?;
        let mut snaps: Vec<(i64, Snapshot)> = items(&data, &path)?
            .iter()
            .filter_map(|s| {
                let name = str_of(s, "name")?;
                let time = s.get("snaptime").and_then(Value::as_i64);
                Some((
                    time.unwrap_or(i64::MAX),
                    Snapshot {
                        is_current: name == "current",
                        created_at: time.and_then(crate::when::rfc3339),
                        description: str_of(s, "description").map(|d| d.trim_end().to_string()),
                        parent: str_of(s, "parent"),
                        includes_ram: u64_of(s, "vmstate") == Some(1),
                        name,
                    },
                ))
            })
            .collect();
        snaps.sort_by_key(|a| (a.1.is_current, a.0));
        Ok(snaps.into_iter().map(|(_, s)| s).collect())
    }

    /// `POST /nodes/{node}/{type}/{vmid}/snapshot`: the task id (UPID).
    pub async fn snapshot_create(
        &self,
        node: &str,
        kind: GuestType,
        vmid: u64,
        name: &str,
        description: Option<&str>,
        include_ram: bool,
    ) -> Result<String, ExecError> {
        let (path, body) = snapshot_request(node, kind, vmid, name, description, include_ram)?;
        let data = self.post(&path, Some(body)).await?;
        self.upid(data, node, &path)
    }

    /// `GET /nodes/{node}/tasks/{upid}/status`.
    pub async fn task_status(&self, node: &str, upid: &str) -> Result<TaskStatus, ExecError> {
        validate_node(node).map_err(ExecError::Refused)?;
        validate_upid(upid, node).map_err(ExecError::Failed)?;
        let path = format!("/nodes/{node}/tasks/{upid}/status");
        let s = self.get(&path, &[]).await?;
        Ok(TaskStatus {
            upid: upid.to_string(),
            status: str_of(&s, "status").ok_or_else(|| self.shape(&path, "a task status"))?,
            exit_status: str_of(&s, "exitstatus"),
        })
    }

    /// Poll a task until it stops or `wait` has passed; the last status seen.
    pub async fn wait_task(&self, node: &str, upid: &str, wait: Duration) -> Result<TaskStatus, ExecError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let status = self.task_status(node, upid).await?;
            if status.status != "running" || tokio::time::Instant::now() + TASK_POLL > deadline {
                return Ok(status);
            }
            tokio::time::sleep(TASK_POLL).await;
        }
    }

    async fn get(&self, path: &str, query: &[(String, String)]) -> Result<Value, ExecError> {
        let r = self.http.request("GET", path, query, None).await?;
        self.data("GET", path, r)
    }

    async fn post(&self, path: &str, body: Option<Value>) -> Result<Value, ExecError> {
        let r = self.http.request("POST", path, &[], body).await?;
        self.data("POST", path, r)
    }

    /// The `data` of a Proxmox answer, or an error that says what the API said.
    fn data(&self, method: &str, path: &str, r: super::http::HttpResponse) -> Result<Value, ExecError> {
        let target = self.http.target_id();
        let detail = || match &r.body {
            Value::Object(o) => o
                .get("errors")
                .or_else(|| o.get("message"))
                .map(|e| format!(": {}", cut_after(&e.to_string(), 300)))
                .unwrap_or_default(),
            Value::String(s) if !s.trim().is_empty() => format!(": {}", cut_after(s.trim(), 300)),
            _ => String::new(),
        };
        match r.status {
            200..=299 => {}
            401 => {
                return Err(ExecError::Auth(format!(
                    "target {target} answered 401 to {method} {path}: the API token was refused"
                )));
            }
            403 => {
                return Err(ExecError::Auth(format!(
                    "target {target} answered 403 to {method} {path}: the API token lacks the privilege{}",
                    detail()
                )));
            }
            status => {
                return Err(ExecError::Failed(format!(
                    "target {target} answered {status} to {method} {path}{}",
                    detail()
                )));
            }
        }
        match r.body {
            Value::Object(mut o) if o.contains_key("data") => Ok(o.remove("data").unwrap_or(Value::Null)),
            _ => Err(self.shape(path, "`{\"data\": ...}`")),
        }
    }

    fn upid(&self, data: Value, node: &str, path: &str) -> Result<String, ExecError> {
        let upid = data
            .as_str()
            .ok_or_else(|| self.shape(path, "a task id (UPID)"))?
            .to_string();
        validate_upid(&upid, node).map_err(ExecError::Failed)?;
        Ok(upid)
    }

    fn shape(&self, path: &str, expected: &str) -> ExecError {
        ExecError::Failed(format!(
            "target {} did not answer {path} like the Proxmox VE API (expected {expected}; base_url should \
             end in /api2/json)",
            self.http.target_id()
        ))
    }
}

fn items<'v>(data: &'v Value, path: &str) -> Result<&'v Vec<Value>, ExecError> {
    data.as_array()
        .ok_or_else(|| ExecError::Failed(format!("the Proxmox API answered {path} without a list")))
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Proxmox sends numbers, and in some places numeric strings.
fn f64_of(v: &Value, key: &str) -> Option<f64> {
    match v.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn u64_of(v: &Value, key: &str) -> Option<u64> {
    match v.get(key)? {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Tags normalized to `a;b` (Proxmox accepts `;`, `,` and spaces between them); none → `None`.
fn tags(v: &Value) -> Option<String> {
    let t = str_of(v, "tags")?;
    let joined = t
        .split([';', ',', ' '])
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(";");
    (!joined.is_empty()).then_some(joined)
}

/// A 0..1 fraction as a percentage with two decimals.
fn percent(fraction: f64) -> f64 {
    (fraction * 10_000.0).round() / 100.0
}

/// A caller's string fit for an error message: at most 64 characters, no control characters.
fn shown(s: &str) -> String {
    cut_after(
        &s.chars()
            .map(|c| if c.is_control() { '�' } else { c })
            .collect::<String>(),
        64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: std::fmt::Debug>(got: Result<T, String>, ok: bool, says: &str) {
        match (&got, ok) {
            (Ok(_), true) => {}
            (Err(e), false) => assert!(e.contains(says), "{e:?} does not say {says:?}"),
            _ => panic!("got {got:?}, expected ok={ok}"),
        }
    }

    #[test]
    fn node_names() {
        for good in ["pve", "pve-1", "N0de", "a", &"x".repeat(63)] {
            check(validate_node(good), true, "");
        }
        for bad in [
            "",
            "-pve",
            "pve-",
            "pve/../access",
            "pve%2f",
            "pve.lan",
            "pve 1",
            "pve\n",
            "ünï",
            &"x".repeat(64),
        ] {
            check(validate_node(bad), false, "invalid node name");
        }
    }

    #[test]
    fn vmids() {
        assert_eq!(validate_vmid(100), Ok(100));
        assert_eq!(validate_vmid(999_999_999), Ok(999_999_999));
        for bad in [0, 99, -1, 1_000_000_000, i64::MAX] {
            check(validate_vmid(bad), false, "between 100 and 999999999");
        }
    }

    #[test]
    fn snapshot_names() {
        for good in ["pre-upgrade", "s1", "Before_Update-2", &format!("a{}", "b".repeat(39))] {
            check(validate_snapshot_name(good), true, "");
        }
        for bad in [
            "",
            "a",
            "1abc",
            "-x",
            "a b",
            "a/b",
            "../x",
            "a;rm",
            "a\nb",
            &"a".repeat(41),
        ] {
            check(validate_snapshot_name(bad), false, "invalid snapshot name");
        }
        check(validate_snapshot_name("current"), false, "reserved");
    }

    #[test]
    fn upids() {
        let good = "UPID:pve:0000ABCD:0001F2A3:65A1B2C3:qmstart:100:root@pam!tailops:";
        check(validate_upid(good, "pve"), true, "");
        for bad in [
            "UPID:pve2:0000ABCD:0001F2A3:65A1B2C3:qmstart:100:root@pam:",
            "UPID:pve:0000ABCD:../../access:",
            "UPID:pve:x?y:",
            "UPID:pve:x#y:",
            "UPID:pve:x%2fy:",
            "UPID:pve:no-trailing-colon",
            "TASK:pve:1:",
        ] {
            check(validate_upid(bad, "pve"), false, "unexpected task id");
        }
    }

    #[test]
    fn requests_are_exact() {
        assert_eq!(
            action_path("pve", GuestType::Lxc, 200, GuestAction::Shutdown).unwrap(),
            "/nodes/pve/lxc/200/status/shutdown"
        );
        let (path, body) = snapshot_request("pve", GuestType::Qemu, 100, "pre-up", Some("before"), true).unwrap();
        assert_eq!(path, "/nodes/pve/qemu/100/snapshot");
        assert_eq!(
            body,
            serde_json::json!({"snapname": "pre-up", "description": "before", "vmstate": 1})
        );
        let (_, body) = snapshot_request("pve", GuestType::Lxc, 200, "pre-up", None, false).unwrap();
        assert_eq!(body, serde_json::json!({"snapname": "pre-up"}));
        assert!(guest_path("pve/..", GuestType::Qemu, 100).is_err());
        assert!(guest_path("pve", GuestType::Qemu, 5).is_err());
        assert!(snapshot_request("pve", GuestType::Qemu, 100, "a/b", None, false).is_err());
    }

    #[test]
    fn task_outcomes() {
        let t = |status: &str, exit: Option<&str>| TaskStatus {
            upid: String::new(),
            status: status.into(),
            exit_status: exit.map(Into::into),
        };
        assert!(t("stopped", Some("OK")).succeeded());
        assert!(t("stopped", Some("WARNINGS: 2")).succeeded());
        assert!(!t("stopped", Some("VM 100 already running")).succeeded());
        assert!(!t("running", None).succeeded());
    }

    #[test]
    fn numbers_and_tags_parse_leniently() {
        let v = serde_json::json!({"cpu": 0.12345, "maxmem": "2048", "mem": 1.5e3, "tags": "web;prod"});
        assert_eq!(f64_of(&v, "cpu").map(percent), Some(12.35));
        assert_eq!(u64_of(&v, "maxmem"), Some(2048));
        assert_eq!(u64_of(&v, "mem"), Some(1500));
        assert_eq!(tags(&v).as_deref(), Some("web;prod"));
        assert_eq!(tags(&serde_json::json!({"tags": "a, b"})).as_deref(), Some("a;b"));
        assert_eq!(tags(&serde_json::json!({"tags": ""})), None);
    }
}
