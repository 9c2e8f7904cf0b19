//! The journald mirror of committed audit records, in journald's native protocol.
//!
//! Why native, not `tracing-journald`: the audit mirror must not depend on logging
//! configuration. A tracing layer sees an event only if the process's filters let it through
//! (`RUST_LOG=warn` would silence audit events), it prefixes custom fields (`F_`) unless told not
//! to, and it sends synchronously on the emitting thread. Writing the datagram ourselves gives
//! exact `TAILOPS_*` field names and a send that never waits: the SQLite writer sends each
//! committed event itself on a connected, non-blocking socket, and only when journald is behind
//! (the socket would block) or the socket failed does the event go to a bounded queue, whose
//! thread waits for journald (up to [`SEND_TIMEOUT`] per event) and sends by path. While that
//! queue holds anything, later events join it, so journald receives them in commit order. A
//! slow, missing or broken journald can never block or fail an audit commit. The protocol is
//! small: `KEY=value\n` per field, or `KEY\n<u64 LE length><bytes>\n` when the value contains a
//! newline (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>). Values are capped at 4 KiB so a
//! datagram always fits the socket buffer, so the memfd fallback is never needed.
//!
//! Each event carries the row's chain hash (`TAILOPS_ROW_HASH`, and `TAILOPS_COMPLETION_HASH` on a
//! completion), so the journal and SQLite can be cross-checked: an edited, deleted or re-chained
//! row no longer matches the hash journald received when it was committed.
//!
//! Does not: send arguments, decide what is recorded, or retry: SQLite is the record; a journald
//! failure is logged once (`tracing::warn`) until sending works again, and counted.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use super::{Decision, Record, redact, render};

/// journald's native protocol socket.
pub(crate) const SOCKET: &str = "/run/systemd/journal/socket";
/// `SYSLOG_IDENTIFIER` of every audit event: `journalctl -t tailopsmcp-audit`.
pub(crate) const IDENTIFIER: &str = super::JOURNAL_IDENTIFIER;
/// Encoded events waiting for the backlog thread; beyond this they are dropped (and counted).
/// The queue allocates (and touches) all of its slots up front, so a slot holds a boxed slice
/// (16 bytes), not the datagram itself.
const QUEUE: usize = 8192;
/// How long one send may block when journald is not reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a lost direct socket is reconnected: while journald is gone, events go to the
/// backlog thread instead of costing the SQLite writer a failed `connect` each.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// One committed link to mirror: the row (without arguments) and its chain hashes.
pub(crate) struct Event {
    pub(crate) rec: Record,
    /// The row's `row_hash` (`None` only for a row older than the chain).
    pub(crate) row_hash: Option<String>,
    /// Set on a completion event: the completion link's hash.
    pub(crate) completion_hash: Option<String>,
}

/// A running mirror, owned by the SQLite writer thread. Dropping it stops the backlog thread.
pub(crate) struct Mirror {
    /// Connected to journald and non-blocking; `None` after it failed, until reconnected.
    direct: Option<UnixDatagram>,
    /// When `direct` was last (re)connected or tried.
    connected_at: Instant,
    /// Datagrams for the backlog thread, which waits for journald.
    tx: SyncSender<Box<[u8]>>,
    /// Datagrams queued to or being sent by the backlog thread.
    backlog: Arc<AtomicUsize>,
    state: Arc<State>,
    socket: PathBuf,
}

#[derive(Default)]
struct State {
    /// Set while events are being lost; the first loss warns, the next success says so.
    failing: AtomicBool,
    dropped: AtomicU64,
}

impl State {
    fn lost(&self, why: &str, socket: &Path) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                socket = %socket.display(),
                reason = why,
                "audit events are not reaching journald (SQLite still has every record); \
                 warning once until it recovers"
            );
        }
    }

    fn delivered(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(
                dropped = self.dropped.load(Ordering::Relaxed),
                "audit events reach journald again"
            );
        }
    }
}

impl Mirror {
    /// Start mirroring to the journald socket at `socket`; `None` (with a warning) when it does
    /// not exist or the backlog thread cannot start.
    pub(crate) fn start(socket: &Path) -> Option<Mirror> {
        if !socket.exists() {
            tracing::warn!(
                socket = %socket.display(),
                "journald socket not found; audit records are not mirrored to journald"
            );
            return None;
        }
        let sock = match UnixDatagram::unbound().and_then(|s| s.set_write_timeout(Some(SEND_TIMEOUT)).map(|()| s)) {
            Ok(sock) => sock,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a socket for journald; audit records are not mirrored");
                return None;
            }
        };
        let (tx, rx) = sync_channel(QUEUE);
        let state = Arc::new(State::default());
        let backlog = Arc::new(AtomicUsize::new(0));
        let thread = Backlog {
            sock,
            socket: socket.to_path_buf(),
            state: Arc::clone(&state),
            pending: Arc::clone(&backlog),
        };
        match std::thread::Builder::new()
            .name("audit-journald".to_string())
            .spawn(move || thread.run(rx))
        {
            Ok(_) => Some(Mirror {
                direct: connect(socket),
                connected_at: Instant::now(),
                tx,
                backlog,
                state,
                socket: socket.to_path_buf(),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the journald sender; audit records are not mirrored");
                None
            }
        }
    }

    /// Send a committed link to journald, or queue it for the backlog thread. Never blocks.
    pub(crate) fn send(&mut self, event: Event) {
        let datagram = encode(&event);
        if self.backlog.load(Ordering::Acquire) == 0 {
            if self.direct.is_none() && self.connected_at.elapsed() >= RECONNECT_EVERY {
                self.direct = connect(&self.socket);
                self.connected_at = Instant::now();
            }
            if let Some(sock) = &self.direct {
                match sock.send(&datagram) {
                    Ok(_) => return self.state.delivered(),
                    // journald is behind: the backlog thread waits for it.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    // journald restarted or went away: the backlog thread sends by path (and
                    // counts the loss if that fails too); reconnect once it is empty, at most
                    // once every `RECONNECT_EVERY`.
                    Err(_) => self.direct = None,
                }
            }
        }
        self.backlog.fetch_add(1, Ordering::AcqRel);
        let lost = match self.tx.try_send(datagram.into_boxed_slice()) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => "queue full",
            Err(TrySendError::Disconnected(_)) => "sender thread stopped",
        };
        self.backlog.fetch_sub(1, Ordering::AcqRel);
        self.state.lost(lost, &self.socket);
    }
}

/// A non-blocking datagram socket connected to `socket`, or `None`.
fn connect(socket: &Path) -> Option<UnixDatagram> {
    let sock = UnixDatagram::unbound().ok()?;
    sock.connect(socket).ok()?;
    sock.set_nonblocking(true).ok()?;
    Some(sock)
}

/// The backlog thread: sends queued datagrams by path, waiting up to [`SEND_TIMEOUT`] for each.
struct Backlog {
    sock: UnixDatagram,
    socket: PathBuf,
    state: Arc<State>,
    pending: Arc<AtomicUsize>,
}

impl Backlog {
    fn run(self, rx: Receiver<Box<[u8]>>) {
        for datagram in rx {
            match self.sock.send_to(&datagram, &self.socket) {
                Ok(_) => self.state.delivered(),
                Err(e) => self.state.lost(&e.to_string(), &self.socket),
            }
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The native-protocol datagram for `event` (fields without a value are left out).
pub(crate) fn encode(event: &Event) -> Vec<u8> {
    let rec = &event.rec;
    let mut buf = Vec::with_capacity(1024);
    let priority = if rec.decision == Decision::Deny { "4" } else { "6" };
    field(&mut buf, "PRIORITY", priority);
    field(&mut buf, "SYSLOG_IDENTIFIER", IDENTIFIER);
    field(&mut buf, "MESSAGE", &summary(rec));
    let opt = |buf: &mut Vec<u8>, name: &str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            field(buf, name, v);
        }
    };
    opt(&mut buf, "TAILOPS_AUDIT_ID", rec.id.map(|i| i.to_string()).as_deref());
    opt(&mut buf, "TAILOPS_REQUEST_ID", Some(&rec.request_id));
    opt(&mut buf, "TAILOPS_SESSION_ID", rec.session_id.as_deref());
    opt(&mut buf, "TAILOPS_PRINCIPAL", rec.principal.as_deref());
    opt(
        &mut buf,
        "TAILOPS_USER_ID",
        rec.user_id.map(|i| i.to_string()).as_deref(),
    );
    opt(&mut buf, "TAILOPS_LOGIN", rec.login.as_deref());
    opt(&mut buf, "TAILOPS_NODE_ID", rec.node_id.as_deref());
    opt(&mut buf, "TAILOPS_NODE", rec.node_name.as_deref());
    opt(&mut buf, "TAILOPS_TAGS", Some(&rec.tags.join(",")));
    opt(&mut buf, "TAILOPS_REMOTE_ADDR", rec.remote_addr.as_deref());
    opt(&mut buf, "TAILOPS_IDENTITY_SOURCE", rec.identity_source.as_deref());
    opt(&mut buf, "TAILOPS_METHOD", Some(&rec.method));
    opt(&mut buf, "TAILOPS_TOOL", rec.tool.as_deref());
    opt(&mut buf, "TAILOPS_TARGET", rec.target.as_deref());
    field(&mut buf, "TAILOPS_DECISION", rec.decision.as_str());
    opt(&mut buf, "TAILOPS_REASON", rec.reason.as_deref());
    opt(&mut buf, "TAILOPS_GRANTS", Some(&rec.grants.join(",")));
    field(&mut buf, "TAILOPS_OUTCOME", rec.outcome.as_str());
    opt(&mut buf, "TAILOPS_ERROR", rec.error.as_deref());
    opt(
        &mut buf,
        "TAILOPS_DURATION_MS",
        rec.duration_ms.filter(|d| d.is_finite()).map(millis).as_deref(),
    );
    opt(
        &mut buf,
        "TAILOPS_RESULT_BYTES",
        rec.result_bytes.map(|n| n.to_string()).as_deref(),
    );
    opt(&mut buf, "TAILOPS_ROW_HASH", event.row_hash.as_deref());
    opt(&mut buf, "TAILOPS_COMPLETION_HASH", event.completion_hash.as_deref());
    buf
}

/// `alice@example.com whoami local allow ok`: principal, tool (or method), target, decision,
/// outcome; `-` for what is missing. Control characters and line separators in the values are
/// escaped ([`render::escape`]): `MESSAGE` is always one line, so a tool name with `\n` cannot
/// forge a second entry in `journalctl` output.
fn summary(rec: &Record) -> String {
    let dash = |v: Option<&str>| {
        v.filter(|v| !v.is_empty())
            .map_or_else(|| "-".to_string(), render::escape)
    };
    format!(
        "{} {} {} {} {}",
        dash(rec.principal.as_deref()),
        dash(rec.tool.as_deref().or(Some(&rec.method))),
        dash(rec.target.as_deref()),
        rec.decision,
        rec.outcome
    )
}

/// `TAILOPS_DURATION_MS`: milliseconds to the microsecond, trailing zeros dropped (`0.412`,
/// `12.5`, `3`). The SQLite row keeps the full value. Rounding keeps the field readable, and lets
/// journald reuse one stored value for many events instead of storing a new one per event (each
/// new value fills journald's data hash table, which starts a new journal file when full).
fn millis(ms: f64) -> String {
    let mut s = format!("{ms:.3}");
    let kept = s.trim_end_matches('0').trim_end_matches('.').len();
    s.truncate(kept);
    s
}

fn field(buf: &mut Vec<u8>, name: &str, value: &str) {
    let value = redact::truncate(value);
    buf.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
        buf.extend_from_slice(value.as_bytes());
    } else {
        buf.push(b'=');
        buf.extend_from_slice(value.as_bytes());
    }
    buf.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{JOURNAL_FIELDS, Outcome};
    use std::collections::BTreeMap;

    /// Parse a native-protocol datagram (both forms) into fields.
    fn decode(mut d: &[u8]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        while !d.is_empty() {
            let nl = d.iter().position(|b| *b == b'\n').unwrap();
            let line = &d[..nl];
            if let Some(eq) = line.iter().position(|b| *b == b'=') {
                out.insert(
                    String::from_utf8(line[..eq].to_vec()).unwrap(),
                    String::from_utf8(line[eq + 1..].to_vec()).unwrap(),
                );
                d = &d[nl + 1..];
            } else {
                let name = String::from_utf8(line.to_vec()).unwrap();
                let len = u64::from_le_bytes(d[nl + 1..nl + 9].try_into().unwrap()) as usize;
                let value = &d[nl + 9..nl + 9 + len];
                assert_eq!(d[nl + 9 + len], b'\n');
                out.insert(name, String::from_utf8(value.to_vec()).unwrap());
                d = &d[nl + 10 + len..];
            }
        }
        out
    }

    fn full() -> Event {
        Event {
            rec: full_record(),
            row_hash: Some("ab".repeat(32)),
            completion_hash: Some("cd".repeat(32)),
        }
    }

    fn plain(rec: Record) -> Event {
        Event {
            rec,
            row_hash: None,
            completion_hash: None,
        }
    }

    fn full_record() -> Record {
        Record {
            id: Some(42),
            time: "2025-01-02T03:04:05.678Z".into(),
            request_id: "0b6e1c3e-0000-4000-8000-000000000001".into(),
            session_id: Some("sess".into()),
            principal: Some("alice@example.com".into()),
            user_id: Some(7),
            login: Some("alice@example.com".into()),
            node_id: Some("nXYZ".into()),
            node_name: Some("laptop.tail.ts.net".into()),
            tags: vec!["tag:a".into(), "tag:b".into()],
            remote_addr: Some("100.100.2.2:43817".into()),
            identity_source: Some("whois".into()),
            method: "tools/call".into(),
            tool: Some("whoami".into()),
            target: Some("local".into()),
            arguments: Some(serde_json::json!({"never": "sent"})),
            decision: Decision::Allow,
            reason: Some("granted".into()),
            grants: vec!["system:read".into(), "logs:read".into()],
            outcome: Outcome::Ok,
            error: Some("line one\nline two".into()),
            duration_ms: Some(12.5),
            result_bytes: Some(99),
        }
    }

    fn check(event: &Event, expected: &[(&str, &str)]) {
        let got = decode(&encode(event));
        for (k, v) in expected {
            assert_eq!(got.get(*k).map(String::as_str), Some(*v), "{k} in {got:?}");
        }
    }

    #[test]
    fn encodes_every_documented_field_and_nothing_else() {
        let got = decode(&encode(&full()));
        let names: Vec<&str> = got.keys().map(String::as_str).collect();
        let mut documented: Vec<&str> = JOURNAL_FIELDS.iter().map(|(n, _)| *n).collect();
        documented.sort();
        assert_eq!(names, documented);
        assert!(!String::from_utf8_lossy(&encode(&full())).contains("never"));
    }

    #[test]
    fn encodes_values() {
        check(
            &full(),
            &[
                ("PRIORITY", "6"),
                ("SYSLOG_IDENTIFIER", "tailopsmcp-audit"),
                ("MESSAGE", "alice@example.com whoami local allow ok"),
                ("TAILOPS_AUDIT_ID", "42"),
                ("TAILOPS_USER_ID", "7"),
                ("TAILOPS_NODE", "laptop.tail.ts.net"),
                ("TAILOPS_TAGS", "tag:a,tag:b"),
                ("TAILOPS_GRANTS", "system:read,logs:read"),
                ("TAILOPS_ERROR", "line one\nline two"),
                ("TAILOPS_DURATION_MS", "12.5"),
                ("TAILOPS_RESULT_BYTES", "99"),
                ("TAILOPS_OUTCOME", "ok"),
                ("TAILOPS_ROW_HASH", &"ab".repeat(32)),
                ("TAILOPS_COMPLETION_HASH", &"cd".repeat(32)),
            ],
        );
        let deny = Record {
            method: "http".into(),
            decision: Decision::Deny,
            outcome: Outcome::Denied,
            request_id: "r".into(),
            ..Record::default()
        };
        let deny = plain(deny);
        check(
            &deny,
            &[
                ("PRIORITY", "4"),
                ("MESSAGE", "- http - deny denied"),
                ("TAILOPS_DECISION", "deny"),
            ],
        );
        let got = decode(&encode(&deny));
        assert!(!got.contains_key("TAILOPS_TAGS") && !got.contains_key("TAILOPS_AUDIT_ID"));
        assert!(!got.contains_key("TAILOPS_ROW_HASH") && !got.contains_key("TAILOPS_COMPLETION_HASH"));
    }

    #[test]
    fn durations_go_to_the_microsecond() {
        for (ms, text) in [
            (0.412_345_678, "0.412"),
            (0.412_6, "0.413"),
            (0.999_9, "1"),
            (12.5, "12.5"),
            (3.0, "3"),
            (10.0, "10"),
            (0.000_4, "0"),
            (1_234.567_89, "1234.568"),
        ] {
            assert_eq!(millis(ms), text, "{ms}");
        }
        let mut e = full();
        e.rec.duration_ms = Some(0.412_345_678);
        assert_eq!(decode(&encode(&e))["TAILOPS_DURATION_MS"], "0.412");
    }

    #[test]
    fn message_is_one_line_whatever_the_values_hold() {
        let mut e = full();
        e.rec.tool = Some("x\nFORGED tailopsmcp-audit: allowed admin".into());
        e.rec.target = Some("a\rb\tc\u{1b}[31md\u{85}e\u{2028}f\u{2029}g\u{202e}h".into());
        let got = decode(&encode(&e));
        let message = &got["MESSAGE"];
        assert_eq!(
            message,
            "alice@example.com x\\nFORGED tailopsmcp-audit: allowed admin \
             a\\rb\\tc\\u{1b}[31md\\u{85}e\\u{2028}f\\u{2029}g\\u{202e}h allow ok"
        );
        assert!(!message.chars().any(|c| c.is_control()));
        // The field itself keeps the value (length-framed, so it cannot break the framing).
        assert_eq!(got["TAILOPS_TOOL"], "x\nFORGED tailopsmcp-audit: allowed admin");
        let raw = encode(&e);
        assert!(raw.windows(13).any(|w| w == b"TAILOPS_TOOL\n"), "binary length form");
    }

    #[test]
    fn long_values_are_capped() {
        let mut r = full();
        r.rec.error = Some("e".repeat(100_000));
        let got = decode(&encode(&r));
        assert!(got["TAILOPS_ERROR"].len() < redact::MAX_STRING + 64);
    }

    /// A stand-in journald socket at `path`; reads wait up to 5 s.
    fn journald_at(path: &Path) -> UnixDatagram {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock
    }

    #[test]
    fn mirror_delivers_datagrams_to_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let server = journald_at(&path);
        let mut mirror = Mirror::start(&path).unwrap();
        mirror.send(full());
        let mut buf = vec![0u8; 65536];
        let n = server.recv(&mut buf).unwrap();
        let got = decode(&buf[..n]);
        assert_eq!(got["TAILOPS_REQUEST_ID"], full().rec.request_id);
        assert_eq!(got["TAILOPS_ROW_HASH"], "ab".repeat(32));
    }

    /// A journald that falls behind makes direct sends would-block; those events wait in the
    /// backlog, and so do the ones after them, so journald still gets every event in commit order.
    #[test]
    fn a_journald_that_falls_behind_gets_every_event_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let server = journald_at(&path);
        // A slow reader: the socket's queue is full most of the time, with room now and then.
        const N: i64 = 3000;
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            (0..N)
                .map(|_| {
                    std::thread::sleep(Duration::from_micros(20));
                    let n = server.recv(&mut buf).unwrap();
                    decode(&buf[..n])["TAILOPS_AUDIT_ID"].parse::<i64>().unwrap()
                })
                .collect::<Vec<_>>()
        });
        let mut mirror = Mirror::start(&path).unwrap();
        let mut queued = 0;
        for id in 0..N {
            let mut event = full();
            event.rec.id = Some(id);
            mirror.send(event);
            queued += usize::from(mirror.backlog.load(Ordering::Acquire) > 0);
        }
        assert!(queued > 0, "the socket never filled up");
        assert_eq!(reader.join().unwrap(), (0..N).collect::<Vec<_>>());
        assert_eq!(mirror.state.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn mirror_survives_a_dead_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        drop(UnixDatagram::bind(&path).unwrap()); // the file stays; nobody reads it
        let mut mirror = Mirror::start(&path).unwrap();
        for _ in 0..3 {
            mirror.send(full()); // never blocks, never panics
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while mirror.state.dropped.load(Ordering::Relaxed) < 3 {
            assert!(std::time::Instant::now() < deadline, "sends did not fail");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(mirror.state.failing.load(Ordering::Relaxed));
        assert!(Mirror::start(&dir.path().join("absent")).is_none());
    }

    /// journald restarted: the direct socket fails, events go by path until the writer
    /// reconnects (at most once a second), and journald gets every event after the restart, in
    /// order, whichever way it was sent.
    #[test]
    fn a_restarted_journald_gets_the_events_after_the_restart_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let first = UnixDatagram::bind(&path).unwrap();
        let mut mirror = Mirror::start(&path).unwrap();
        let event = |id| {
            let mut e = full();
            e.rec.id = Some(id);
            e
        };
        mirror.send(event(0));
        drop(first);
        std::fs::remove_file(&path).unwrap();
        mirror.send(event(1)); // nobody there: lost, and counted
        let deadline = Instant::now() + Duration::from_secs(5);
        while mirror.state.dropped.load(Ordering::Relaxed) < 1 {
            assert!(Instant::now() < deadline, "the send to a missing socket did not fail");
            std::thread::sleep(Duration::from_millis(10));
        }
        let second = journald_at(&path);
        let mut ids = Vec::new();
        let mut buf = vec![0u8; 65536];
        // Before and after the reconnect interval has passed.
        for id in 2..6 {
            mirror.send(event(id));
        }
        std::thread::sleep(RECONNECT_EVERY + Duration::from_millis(50));
        for id in 6..10 {
            mirror.send(event(id));
        }
        for _ in 2..10 {
            let n = second.recv(&mut buf).unwrap();
            ids.push(decode(&buf[..n])["TAILOPS_AUDIT_ID"].parse::<i64>().unwrap());
        }
        assert_eq!(ids, (2..10).collect::<Vec<_>>());
        assert!(mirror.direct.is_some(), "the writer reconnected to the new journald");
        assert_eq!(mirror.state.dropped.load(Ordering::Relaxed), 1);
        assert!(
            !mirror.state.failing.load(Ordering::Relaxed),
            "delivery was reported recovered"
        );
    }
}
