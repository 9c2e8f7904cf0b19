//! What the reachability, TLS and HTTP checks return: plain serde + schemars types (DNS
//! answers are `dns`'s own).

use schemars::JsonSchema;
use serde::Serialize;

/// What `ping` measured.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PingResult {
    /// The host as asked.
    pub host: String,
    /// The address ping used (from its first line), when it resolved.
    pub address: Option<String>,
    pub transmitted: u32,
    pub received: u32,
    /// Packet loss in percent (0-100).
    pub loss_percent: f64,
    /// Round-trip times in milliseconds; absent when nothing came back.
    pub rtt_min_ms: Option<f64>,
    pub rtt_avg_ms: Option<f64>,
    pub rtt_max_ms: Option<f64>,
    pub rtt_mdev_ms: Option<f64>,
    /// Each reply's round-trip time in milliseconds, in order.
    pub replies_ms: Vec<f64>,
    /// ICMP errors reported (e.g. "Destination Host Unreachable"), at most 5.
    pub errors: Vec<String>,
}

/// One hop of a traceroute.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Hop {
    /// TTL of the probe (1 = first router).
    pub hop: u32,
    /// The address that answered; absent when no reply came (`*`).
    pub address: Option<String>,
    /// Round-trip time in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Annotations such as `!H` (host unreachable) or `reached`.
    pub note: Option<String>,
}

/// A traceroute's result.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct TraceResult {
    pub host: String,
    /// `traceroute` or `tracepath` (used when traceroute is not installed).
    pub program: String,
    pub max_hops: u32,
    /// Whether the last hop is the destination.
    pub reached: bool,
    pub hops: Vec<Hop>,
}

/// One port's state.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PortState {
    pub port: u16,
    /// `open` (connected), `closed` (refused), `filtered` (no answer within the timeout) or
    /// `error` (another failure, in `error`).
    pub state: String,
    /// Time to connect or to be refused, in milliseconds.
    pub elapsed_ms: f64,
    pub error: Option<String>,
}

/// One certificate of a chain.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    /// Serial number, colon-separated hex.
    pub serial: String,
    /// RFC 3339 UTC.
    pub not_before: String,
    pub not_after: String,
    /// Whole days until `not_after` (negative when expired).
    pub days_left: i64,
    pub is_ca: bool,
    /// DNS names and IP addresses from the subject alternative name extension.
    pub sans: Vec<String>,
}

/// What a TLS handshake showed.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct TlsReport {
    /// The address connected to.
    pub address: String,
    /// The name checked (and sent as SNI when it is a DNS name).
    pub server_name: String,
    /// e.g. `TLSv1_3`.
    pub protocol: Option<String>,
    pub cipher_suite: Option<String>,
    /// The certificates the server sent, leaf first.
    pub chain: Vec<CertInfo>,
    /// The leaf's `not_after` and days left (also in `chain[0]`).
    pub expires_at: Option<String>,
    pub days_left: Option<i64>,
    pub expired: bool,
    /// Whether `server_name` matches a SAN of the leaf (wildcards: one left-most label).
    pub name_matches: bool,
    /// Whether the chain verifies for `server_name` against `trust` now.
    pub verified: bool,
    /// Why verification failed.
    pub verify_error: Option<String>,
    /// `system` (the host's CA store) or `given CA` (the `ca_pem` argument).
    pub trust: String,
    pub elapsed_ms: f64,
}

/// Timings of a probe, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ProbeTiming {
    pub dns_ms: f64,
    pub connect_ms: f64,
    /// Absent for plain http.
    pub tls_ms: Option<f64>,
    /// From sending the request to the response headers.
    pub first_byte_ms: f64,
    pub total_ms: f64,
}

/// One response header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct HeaderField {
    /// Lower case.
    pub name: String,
    /// At most 256 characters (longer values end with `…`).
    pub value: String,
}

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ProbeResult {
    pub url: String,
    pub method: String,
    /// The checked address the connection went to.
    pub address: String,
    pub status: u16,
    pub reason: Option<String>,
    pub http_version: String,
    /// The reported subset of response headers ([`REPORTED_HEADERS`]), in the order received.
    pub headers: Vec<HeaderField>,
    /// How many response headers there were in all.
    pub header_count: usize,
    /// Body bytes read (at most `max_body_bytes`).
    pub body_bytes: u64,
    /// Whether the body went on past `max_body_bytes` (the rest was not read).
    pub body_truncated: bool,
    /// The first bytes of the body as text (lossy UTF-8), at most 512 bytes.
    pub body_preview: String,
    pub timing: ProbeTiming,
}
