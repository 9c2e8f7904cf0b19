//! The hash chain over audit rows: the canonical byte encoding of a row and of a completion, and
//! the SHA-256 links between them. Defined once here; the writer (hashing) and `verify`
//! (re-hashing what is stored) both build their bytes through [`RowFields::canonical`] and
//! [`CompletionFields::canonical`], so they cannot drift apart.
//!
//! # Canonical encoding (version 1)
//!
//! A row is encoded as the domain tag `b"tailopsmcp/audit/row/v1\n"` followed by these fields,
//! in this order, each as one typed item:
//!
//! `id, time, request_id, session_id, principal, user_id, login, node_id, node_name, tags,
//! remote_addr, identity_source, method, tool, target, arguments, decision, reason, grants,
//! outcome, error, duration_ms, result_bytes`
//!
//! An item is a type byte and a payload: `0x00` NULL (no payload); `0x01` text (u32 big-endian
//! byte length, then the UTF-8 bytes); `0x02` integer (i64 big-endian); `0x03` real (the IEEE-754
//! bits as u64 big-endian, with NaN stored as NULL and `-0.0` as `0.0`, exactly as SQLite keeps
//! them). Every value is the one stored in its SQLite column: `tags`, `grants` and `arguments` are
//! the JSON texts the writer stored (compact `serde_json` output, keys in insertion order), hashed as
//! bytes, never re-serialized; `time` is the canonical RFC 3339 text. Fixed order, type bytes and
//! length prefixes make the encoding injective: no two different rows encode alike.
//!
//! `row_hash = SHA-256(canonical(row) || prev_hash)`, with `prev_hash` as its 32 raw bytes; the
//! first link's `prev_hash` is [`GENESIS`] (32 zero bytes) unless a checkpoint says otherwise.
//!
//! A completion (a pending row getting its outcome) is its own link: the domain tag
//! `b"tailopsmcp/audit/completion/v1\n"`, then `id, row_hash (text, hex), completed_after,
//! outcome, error, duration_ms, result_bytes`, and `completion_hash = SHA-256(canonical ||
//! completion_prev)`. A row inserted by `begin` is hashed with `outcome = 'pending'` and NULL
//! `error`, `duration_ms`, `result_bytes` (what it held at insert).
//!
//! Does not: touch SQLite, decide what is stored, or know the chain's order (the writer and
//! `verify` do).

use sha2::{Digest, Sha256};

/// A link hash.
pub(crate) type Hash = [u8; 32];

/// `prev_hash` of the very first link of a chain that was never pruned.
pub(crate) const GENESIS: Hash = [0; 32];

const ROW_DOMAIN: &[u8] = b"tailopsmcp/audit/row/v1\n";
const COMPLETION_DOMAIN: &[u8] = b"tailopsmcp/audit/completion/v1\n";

const NULL: u8 = 0x00;
const TEXT: u8 = 0x01;
const INT: u8 = 0x02;
const REAL: u8 = 0x03;

/// Byte offset of the id's 8 bytes in a row's canonical encoding (domain, then the INT type
/// byte), so the writer can encode a row on the caller's task and fill the id in last.
pub(crate) const ROW_ID_OFFSET: usize = ROW_DOMAIN.len() + 1;

/// The stored values of one audit row, as its columns hold them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowFields<'a> {
    pub id: i64,
    pub time: &'a str,
    pub request_id: &'a str,
    pub session_id: Option<&'a str>,
    pub principal: Option<&'a str>,
    pub user_id: Option<i64>,
    pub login: Option<&'a str>,
    pub node_id: Option<&'a str>,
    pub node_name: Option<&'a str>,
    pub tags_json: &'a str,
    pub remote_addr: Option<&'a str>,
    pub identity_source: Option<&'a str>,
    pub method: &'a str,
    pub tool: Option<&'a str>,
    pub target: Option<&'a str>,
    pub arguments_json: Option<&'a str>,
    pub decision: &'a str,
    pub reason: Option<&'a str>,
    pub grants_json: &'a str,
    pub outcome: &'a str,
    pub error: Option<&'a str>,
    pub duration_ms: Option<f64>,
    pub result_bytes: Option<i64>,
}

impl RowFields<'_> {
    /// The canonical encoding (see the module documentation).
    pub(crate) fn canonical(&self) -> Vec<u8> {
        let mut e = Encoder(Vec::with_capacity(512));
        e.0.extend_from_slice(ROW_DOMAIN);
        e.int(Some(self.id));
        e.text(Some(self.time));
        e.text(Some(self.request_id));
        e.text(self.session_id);
        e.text(self.principal);
        e.int(self.user_id);
        e.text(self.login);
        e.text(self.node_id);
        e.text(self.node_name);
        e.text(Some(self.tags_json));
        e.text(self.remote_addr);
        e.text(self.identity_source);
        e.text(Some(self.method));
        e.text(self.tool);
        e.text(self.target);
        e.text(self.arguments_json);
        e.text(Some(self.decision));
        e.text(self.reason);
        e.text(Some(self.grants_json));
        e.text(Some(self.outcome));
        e.text(self.error);
        e.real(self.duration_ms);
        e.int(self.result_bytes);
        e.0
    }
}

/// The values a completion link covers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CompletionFields<'a> {
    pub id: i64,
    /// The completed row's own `row_hash` (hex); `None` for a row older than the chain.
    pub row_hash: Option<&'a str>,
    /// The newest row id when the completion was linked (where it sits in the chain).
    pub completed_after: i64,
    pub outcome: &'a str,
    pub error: Option<&'a str>,
    pub duration_ms: Option<f64>,
    pub result_bytes: Option<i64>,
}

impl CompletionFields<'_> {
    /// The canonical encoding (see the module documentation).
    pub(crate) fn canonical(&self) -> Vec<u8> {
        let mut e = Encoder(Vec::with_capacity(160));
        e.0.extend_from_slice(COMPLETION_DOMAIN);
        e.int(Some(self.id));
        e.text(self.row_hash);
        e.int(Some(self.completed_after));
        e.text(Some(self.outcome));
        e.text(self.error);
        e.real(self.duration_ms);
        e.int(self.result_bytes);
        e.0
    }
}

/// `SHA-256(canonical || prev)`.
pub(crate) fn link(canonical: &[u8], prev: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(canonical);
    h.update(prev);
    h.finalize().into()
}

/// A real as SQLite stores it: NaN becomes NULL, `-0.0` becomes `0.0`.
pub(crate) fn stored_real(v: Option<f64>) -> Option<f64> {
    match v {
        Some(f) if f.is_nan() => None,
        // Matches -0.0 too (float patterns compare with ==).
        Some(0.0) => Some(0.0),
        other => other,
    }
}

/// Lowercase hex, 64 characters.
pub(crate) fn to_hex(h: &Hash) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in h {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// Parse 64 lowercase hex digits (what [`to_hex`] writes); anything else is `None`.
pub(crate) fn from_hex(s: &str) -> Option<Hash> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

struct Encoder(Vec<u8>);

impl Encoder {
    fn text(&mut self, v: Option<&str>) {
        match v {
            None => self.0.push(NULL),
            Some(s) => {
                self.0.push(TEXT);
                // Stored values are capped far below 4 GiB (see `redact`); a longer one would
                // still encode unambiguously because the length saturates only past u32::MAX.
                let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
                self.0.extend_from_slice(&len.to_be_bytes());
                self.0.extend_from_slice(s.as_bytes());
            }
        }
    }

    fn int(&mut self, v: Option<i64>) {
        match v {
            None => self.0.push(NULL),
            Some(i) => {
                self.0.push(INT);
                self.0.extend_from_slice(&i.to_be_bytes());
            }
        }
    }

    fn real(&mut self, v: Option<f64>) {
        match stored_real(v) {
            None => self.0.push(NULL),
            Some(f) => {
                self.0.push(REAL);
                self.0.extend_from_slice(&f.to_bits().to_be_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden_row() -> RowFields<'static> {
        RowFields {
            id: 7,
            time: "2025-01-02T03:04:05.678Z",
            request_id: "0b6e1c3e-0000-4000-8000-000000000001",
            session_id: None,
            principal: Some("alice@example.com"),
            user_id: Some(42),
            login: Some("alice@example.com"),
            node_id: Some("nStable1"),
            node_name: Some("laptop.tail1234.ts.net"),
            tags_json: r#"["tag:a"]"#,
            remote_addr: Some("100.100.2.2:43817"),
            identity_source: Some("whois"),
            method: "tools/call",
            tool: Some("whoami"),
            target: Some("local"),
            arguments_json: Some(r#"{"verbose":true}"#),
            decision: "allow",
            reason: Some("scope system:read"),
            grants_json: r#"["system:read"]"#,
            outcome: "ok",
            error: None,
            duration_ms: Some(1.25),
            result_bytes: Some(512),
        }
    }

    /// The golden vector (hashes cross-checked with Python's hashlib over the same bytes): if
    /// this changes, every stored chain stops verifying. Change the encoding only with a new
    /// domain version (`v2`) and keep verifying `v1`.
    #[test]
    fn golden_row_vector() {
        let c = golden_row().canonical();
        let mut expected = Vec::new();
        expected.extend_from_slice(b"tailopsmcp/audit/row/v1\n");
        expected.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 0, 0, 7]);
        let text = |e: &mut Vec<u8>, s: &str| {
            e.push(0x01);
            e.extend_from_slice(&(s.len() as u32).to_be_bytes());
            e.extend_from_slice(s.as_bytes());
        };
        text(&mut expected, "2025-01-02T03:04:05.678Z");
        text(&mut expected, "0b6e1c3e-0000-4000-8000-000000000001");
        expected.push(0x00);
        text(&mut expected, "alice@example.com");
        expected.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 0, 0, 42]);
        for s in [
            "alice@example.com",
            "nStable1",
            "laptop.tail1234.ts.net",
            r#"["tag:a"]"#,
            "100.100.2.2:43817",
            "whois",
            "tools/call",
            "whoami",
            "local",
            r#"{"verbose":true}"#,
            "allow",
            "scope system:read",
            r#"["system:read"]"#,
            "ok",
        ] {
            text(&mut expected, s);
        }
        expected.push(0x00);
        expected.push(0x03);
        expected.extend_from_slice(&1.25f64.to_bits().to_be_bytes());
        expected.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 0, 2, 0]);
        assert_eq!(c, expected);
        assert_eq!(
            to_hex(&link(&c, &GENESIS)),
            "7666920c0d3b7a247d46882fcc9fd604df76ccd53da9c59b7643e7fca5a55bcc"
        );
        assert_eq!(&c[ROW_ID_OFFSET..ROW_ID_OFFSET + 8], &7i64.to_be_bytes());
    }

    #[test]
    fn golden_completion_vector() {
        let c = CompletionFields {
            id: 7,
            row_hash: Some("7666920c0d3b7a247d46882fcc9fd604df76ccd53da9c59b7643e7fca5a55bcc"),
            completed_after: 9,
            outcome: "error",
            error: Some("exit 1"),
            duration_ms: Some(-0.0),
            result_bytes: None,
        };
        let prev = [0x11; 32];
        assert_eq!(
            to_hex(&link(&c.canonical(), &prev)),
            "93845acfafadc183e85c46309d26410d36f434b28bef0cee2bdef62609573830"
        );
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = golden_row();
        let h = |r: RowFields<'_>| link(&r.canonical(), &GENESIS);
        let b = h(base);
        let edits: [fn(&mut RowFields<'static>); 23] = [
            |r| r.id = 8,
            |r| r.time = "2025-01-02T03:04:05.679Z",
            |r| r.request_id = "x",
            |r| r.session_id = Some(""),
            |r| r.principal = None,
            |r| r.user_id = None,
            |r| r.login = Some("bob"),
            |r| r.node_id = None,
            |r| r.node_name = None,
            |r| r.tags_json = "[]",
            |r| r.remote_addr = None,
            |r| r.identity_source = Some("dev"),
            |r| r.method = "http",
            |r| r.tool = None,
            |r| r.target = Some("web"),
            |r| r.arguments_json = None,
            |r| r.decision = "deny",
            |r| r.reason = None,
            |r| r.grants_json = "[]",
            |r| r.outcome = "error",
            |r| r.error = Some("e"),
            |r| r.duration_ms = Some(1.5),
            |r| r.result_bytes = Some(513),
        ];
        for edit in edits {
            let mut v = base;
            edit(&mut v);
            assert_ne!(h(v), b, "{v:?}");
        }
        assert_ne!(link(&base.canonical(), &[1; 32]), b, "prev_hash is covered");
        // Moving bytes between adjacent fields changes the encoding (length prefixes).
        let a = RowFields {
            login: Some("ab"),
            node_id: Some("c"),
            ..base
        };
        let c = RowFields {
            login: Some("a"),
            node_id: Some("bc"),
            ..base
        };
        assert_ne!(a.canonical(), c.canonical());
    }

    #[test]
    fn reals_encode_as_sqlite_stores_them() {
        assert_eq!(stored_real(Some(f64::NAN)), None);
        assert_eq!(stored_real(Some(-0.0)).map(f64::to_bits), Some(0.0f64.to_bits()));
        assert_eq!(stored_real(Some(2.5)), Some(2.5));
    }

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        let h: Hash = std::array::from_fn(|i| i as u8 * 7);
        assert_eq!(from_hex(&to_hex(&h)), Some(h));
        assert_eq!(to_hex(&GENESIS), "0".repeat(64));
        assert_eq!(from_hex(&"A".repeat(64)), None);
        assert_eq!(from_hex("00"), None);
        assert_eq!(from_hex(&"g".repeat(64)), None);
    }
}
