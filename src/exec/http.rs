//! The HTTP executor: requests to one HTTP API target (Proxmox VE, a NAS, a router) under the
//! target's own constraints. The only user of reqwest.
//!
//! What a target allows is enforced here, before anything is sent:
//! - the method must be in `allowed_methods` (default `GET` only);
//! - the caller's path is relative to `base_url` and is normalized first: absolute URLs,
//!   `//`, dot segments (`.`, `..`, also percent-encoded, also double-encoded), encoded `/` or
//!   `\`, control characters, `?` and `#` are refused; so are segments some servers fold into
//!   a dot segment: any `;` (`..;` is `..` to Tomcat and Jetty), only dots and spaces (`..%20`,
//!   `...`: IIS trims trailing dots and spaces), dot look-alikes (U+FF0E and others that NFKC
//!   maps to dots), and percent-encodings that do not decode to UTF-8 (overlong `%C0%AE`);
//!   the joined URL must keep the base's scheme, host and port and stay under its path;
//! - the path must then lie under one of `allowed_path_prefixes`, matched whole segment by
//!   whole segment after percent-decoding (`/nodes` allows `/nodes` and `/nodes/pve`, not
//!   `/nodes2`); an empty list allows everything under `base_url`.
//!
//! Redirects are followed only within the same origin, only to paths the rules above allow,
//! at most [`MAX_REDIRECTS`] times, and, on a target that does not allow `GET`, not when
//! following would turn the request into a `GET` (a 303, or a 301/302 after a `POST`); any
//! other redirect is returned as the 3xx response it is. TLS is verified by default against
//! the platform's roots plus an optional `ca_file`; `insecure_skip_verify` turns verification
//! off and says so loudly in the log. Proxies from the environment are ignored (the token must
//! not go to a proxy). One deadline (`Limits::timeout`) covers connecting, sending and reading
//! the body.
//!
//! Body cap: at most `max_response_bytes` are kept. Past that, the body is counted and dropped:
//! with a `Content-Length` the count is exact and reading stops at once; without one, the rest
//! is drained and counted up to [`DRAIN_LIMIT`] more bytes or the deadline, so `truncated_bytes`
//! is then a lower bound. A JSON response (`application/json`, `*/*+json`) that arrived whole is
//! returned as JSON; anything else, or a cut JSON body, as text (lossy UTF-8), which ends with
//! the marker line of [`super::process::cut_marker`] when cut. When a body is cut and a token
//! is configured, the last (token length − 1) kept bytes are dropped too (counted as cut), so
//! the start of a token cut by the cap is never returned.
//!
//! Secrets: the token is read from its file or variable for each request (so rotation works),
//! sent in a header marked sensitive, and never appears in errors, logs or `Debug` output. The
//! response's headers are an allow-list ([`RETURNED_HEADERS`]: no cookies, no auth headers), and
//! any occurrence of the token (of 8 bytes or more) in returned headers, body text or JSON
//! strings is replaced by `[redacted]`.
//!
//! Knows nothing about callers or policy.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use percent_encoding::percent_decode_str;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url, redirect};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ExecError, Limits, Secret};

/// Redirect hops followed (same origin, allowed path) before the 3xx is returned as is.
pub const MAX_REDIRECTS: usize = 5;
/// Bytes read and counted, past `max_response_bytes`, from a body without a `Content-Length`.
pub const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;
/// Response headers returned to the caller (lowercase); every other header is dropped.
pub const RETURNED_HEADERS: &[&str] = &[
    "age",
    "allow",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-type",
    "date",
    "etag",
    "expires",
    "last-modified",
    "location",
    "retry-after",
    "server",
    "vary",
    "www-authenticate",
    "x-request-id",
];
/// Methods a target may allow.
const KNOWN_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
const REDACTED: &str = "[redacted]";
/// Tokens shorter than this are not searched for in responses (replacing every `ab` in a body
/// would wreck it, and such a token is no secret anyway).
const MIN_REDACTED_LEN: usize = 8;

tokio::task_local! {
    /// The method of the request being sent, for the redirect policy (see [`redirect_becomes_get`]).
    static REQUEST_METHOD: Method;
}

/// Whether following a redirect with `status` turns a request sent as `method` into a `GET`
/// (what tower-http, under reqwest, does): a 303 for anything but `HEAD`, a 301 or 302 for
/// `POST`. A `GET` stays a `GET`, which is no change. `None` (method unknown) answers yes
/// for every status that can change the method.
fn redirect_becomes_get(status: reqwest::StatusCode, method: Option<&Method>) -> bool {
    use reqwest::StatusCode;
    match (status, method) {
        (StatusCode::SEE_OTHER | StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND, None) => true,
        (StatusCode::SEE_OTHER, Some(m)) => *m != Method::GET && *m != Method::HEAD,
        (StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND, Some(m)) => *m == Method::POST,
        _ => false,
    }
}

/// The `[[target]]` settings of a `kind = "http"` target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// `http://` or `https://` URL every request path is relative to, e.g.
    /// `https://pve.lan:8006/api2/json`. No user info, query or fragment.
    pub base_url: String,
    /// Header that carries the token, e.g. `Authorization` (the default when a token is set).
    pub auth_header: Option<String>,
    /// Text sent before the token, e.g. `PVEAPIToken=` or `Bearer `.
    pub auth_prefix: Option<String>,
    /// The token, from a file (relative paths resolve in `$CREDENTIALS_DIRECTORY`)…
    pub token_file: Option<PathBuf>,
    /// …or from an environment variable (at most one of the two).
    pub token_env: Option<String>,
    /// Methods callers may use; default `["GET"]`.
    #[serde(default = "get_only")]
    pub allowed_methods: Vec<String>,
    /// Paths (relative to `base_url`) callers may reach; empty = everything under `base_url`.
    #[serde(default)]
    pub allowed_path_prefixes: Vec<String>,
    /// Path (relative to `base_url`) that `check` requests; default `base_url` itself.
    #[serde(default)]
    pub health_path: Option<String>,
    /// An extra trusted CA (PEM, may hold several), added to the platform's roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate. Logged as a warning whenever the target is built.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Bytes of a response body kept; the rest is counted and dropped. Default 1 MiB.
    #[serde(default = "default_max_response")]
    pub max_response_bytes: usize,
}

fn get_only() -> Vec<String> {
    vec!["GET".to_owned()]
}

fn default_max_response() -> usize {
    1024 * 1024
}

/// What an HTTP API answered.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct HttpResponse {
    pub status: u16,
    /// The returned subset of the response headers ([`RETURNED_HEADERS`]), names lowercase,
    /// repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// JSON when the response was JSON and arrived whole; otherwise text (lossy UTF-8).
    pub body: serde_json::Value,
    /// Body bytes dropped by the size cap (a lower bound when the server sent no length and
    /// the body went on past the drain limit or the deadline).
    pub truncated_bytes: u64,
    pub duration_ms: f64,
}

/// The outcome of [`Http::check`] when the target answered with a status other than 401/403.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct HttpCheck {
    /// The URL requested.
    pub url: String,
    pub status: u16,
    /// From sending the request to the end of the (capped) body.
    pub latency_ms: f64,
    pub tls: TlsState,
}

/// How the connection of a check was secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TlsState {
    /// Plain `http://`.
    None,
    /// `https://` with the certificate verified.
    Verified,
    /// `https://` with verification turned off (`insecure_skip_verify`).
    Unverified,
}

/// One HTTP API target. Cheap to clone (shares one connection pool).
#[derive(Clone)]
pub struct Http {
    inner: Arc<Inner>,
}

struct Inner {
    target: String,
    rules: Arc<PathRules>,
    methods: Vec<Method>,
    auth: Option<Auth>,
    health_path: Option<String>,
    client: reqwest::Client,
    limits: Limits,
    max_response: usize,
    insecure: bool,
}

struct Auth {
    header: HeaderName,
    prefix: String,
    secret: Secret,
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        let auth = i.auth.as_ref().map(|a| {
            let source = match a.secret {
                Secret::File(_) => "file",
                Secret::Env(_) => "env",
            };
            format!("{}: {}<token from {source}>", a.header, a.prefix)
        });
        f.debug_struct("Http")
            .field("target", &i.target)
            .field("base_url", &i.rules.base.as_str())
            .field("methods", &i.methods)
            .field("prefixes", &i.rules.prefixes)
            .field("auth", &auth)
            .field("insecure_skip_verify", &i.insecure)
            .field("limits", &i.limits)
            .field("max_response_bytes", &i.max_response)
            .finish()
    }
}

impl Http {
    /// Build the target's client: validates the base URL (http/https, a host, no user info,
    /// query or fragment), the methods, the path prefixes and the token settings, and reads
    /// `ca_file`. The token itself is not read here.
    pub fn new(target_id: &str, settings: HttpSettings, limits: Limits) -> Result<Http, ExecError> {
        let config = |msg: String| ExecError::Config(format!("target {target_id}: {msg}"));

        let base = parse_base(&settings.base_url).map_err(config)?;
        let mut prefixes = Vec::new();
        for prefix in &settings.allowed_path_prefixes {
            let p =
                normalize(prefix).map_err(|why| config(format!("allowed_path_prefixes entry `{prefix}`: {why}")))?;
            prefixes.push(p.segments);
        }
        let rules = Arc::new(PathRules { base, prefixes });

        if settings.allowed_methods.is_empty() {
            return Err(config("allowed_methods is empty".into()));
        }
        let mut methods = Vec::new();
        for m in &settings.allowed_methods {
            let upper = m.to_ascii_uppercase();
            if !KNOWN_METHODS.contains(&upper.as_str()) {
                return Err(config(format!("unknown method `{m}` in allowed_methods")));
            }
            let method = Method::from_bytes(upper.as_bytes()).map_err(|_| config(format!("bad method `{m}`")))?;
            if !methods.contains(&method) {
                methods.push(method);
            }
        }

        let secret = match (&settings.token_file, &settings.token_env) {
            (Some(_), Some(_)) => return Err(config("set token_file or token_env, not both".into())),
            (Some(path), None) => Some(Secret::File(path.clone())),
            (None, Some(name)) => {
                super::hide_env_from_children(name);
                Some(Secret::Env(name.clone()))
            }
            (None, None) => None,
        };
        let auth = match secret {
            Some(secret) => {
                let name = settings.auth_header.as_deref().unwrap_or("Authorization");
                let header = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| config(format!("auth_header `{name}` is not a valid header name")))?;
                let prefix = settings.auth_prefix.clone().unwrap_or_default();
                HeaderValue::from_str(&prefix).map_err(|_| config("auth_prefix is not a valid header value".into()))?;
                Some(Auth { header, prefix, secret })
            }
            None if settings.auth_header.is_some() || settings.auth_prefix.is_some() => {
                return Err(config(
                    "auth_header/auth_prefix set without token_file or token_env".into(),
                ));
            }
            None => None,
        };

        let health_path = match settings.health_path {
            Some(p) => {
                normalize(&p).map_err(|why| config(format!("health_path `{p}`: {why}")))?;
                Some(p)
            }
            None => None,
        };

        let policy_rules = rules.clone();
        let get_allowed = methods.contains(&Method::GET);
        let policy = redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS || !policy_rules.allows_url(attempt.url()) {
                return attempt.stop();
            }
            // reqwest's `Attempt` does not carry the method: `send` puts it in REQUEST_METHOD
            // (an unknown method counts as one that would become GET).
            let method = REQUEST_METHOD.try_with(Method::clone).ok();
            if !get_allowed && redirect_becomes_get(attempt.status(), method.as_ref()) {
                return attempt.stop();
            }
            attempt.follow()
        });
        let mut builder = reqwest::Client::builder()
            .redirect(policy)
            .no_proxy()
            .referer(false)
            .connect_timeout(limits.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("tailopsmcp/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| config(format!("cannot read ca_file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| config(format!("ca_file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(config(format!("ca_file {} holds no certificate", path.display())));
            }
            builder = builder.tls_certs_merge(certs);
        }
        if settings.insecure_skip_verify {
            tracing::warn!(
                target_id,
                base_url = %rules.base,
                "TLS CERTIFICATE VERIFICATION IS OFF for this target (insecure_skip_verify): anyone on the \
                 path can impersonate it and read its token"
            );
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        if auth.is_some() && rules.base.scheme() == "http" {
            tracing::warn!(target_id, base_url = %rules.base, "the token of this target is sent over plain http");
        }
        let client = builder
            .build()
            .map_err(|e| config(format!("cannot build the HTTP client: {}", root_cause(&e))))?;

        Ok(Http {
            inner: Arc::new(Inner {
                target: target_id.to_owned(),
                rules,
                methods,
                auth,
                health_path,
                client,
                limits,
                max_response: settings.max_response_bytes,
                insecure: settings.insecure_skip_verify,
            }),
        })
    }

    /// The target's id.
    pub fn target_id(&self) -> &str {
        &self.inner.target
    }

    /// The base URL every path is relative to.
    pub fn base_url(&self) -> &str {
        self.inner.rules.base.as_str()
    }

    /// Send `method path?query` with an optional JSON body, within the target's constraints
    /// (see the module doc). A 4xx/5xx answer (401/403 included) is a response, not an error.
    ///
    /// Errors: method or path refused → `Refused`; token unreadable → `Config`; connection
    /// failed → `Unreachable`; certificate rejected → `HostVerification`; deadline → `Timeout`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: Option<serde_json::Value>,
    ) -> Result<HttpResponse, ExecError> {
        let i = &self.inner;
        let upper = method.to_ascii_uppercase();
        let method = match Method::from_bytes(upper.as_bytes()) {
            Ok(m) if i.methods.contains(&m) => m,
            _ => {
                return Err(ExecError::Refused(format!(
                    "method {} is not allowed on target {}",
                    printable(&upper),
                    i.target
                )));
            }
        };
        let normalized = normalize(path).map_err(|why| {
            ExecError::Refused(format!(
                "path `{}` is refused on target {}: {why}",
                printable(path),
                i.target
            ))
        })?;
        if !i.rules.allows(&normalized.segments) {
            return Err(ExecError::Refused(format!(
                "path `{}` is outside the allowed path prefixes of target {}",
                printable(path),
                i.target
            )));
        }
        let url = i.rules.join(&normalized).map_err(|why| {
            ExecError::Refused(format!(
                "path `{}` is refused on target {}: {why}",
                printable(path),
                i.target
            ))
        })?;
        self.send(method, url, query, body).await
    }

    /// Probe the target: `GET` its `health_path` (or `base_url`), with the token when one is
    /// configured. Not bound by `allowed_methods` or the path prefixes (it asks only what the
    /// configuration itself names). A 401/403 answer → `Auth`; otherwise the status, latency
    /// and how TLS went.
    pub async fn check(&self) -> Result<HttpCheck, ExecError> {
        let i = &self.inner;
        let url = match &i.health_path {
            Some(p) => {
                let n = normalize(p).map_err(|why| ExecError::Config(format!("health_path: {why}")))?;
                i.rules
                    .join(&n)
                    .map_err(|why| ExecError::Config(format!("health_path: {why}")))?
            }
            None => i.rules.base.clone(),
        };
        let shown = url.to_string();
        let response = self.send(Method::GET, url, &[], None).await?;
        if response.status == 401 || response.status == 403 {
            let with = if i.auth.is_some() {
                "the configured token"
            } else {
                "no token configured"
            };
            return Err(ExecError::Auth(format!(
                "target {} answered {} to GET {shown} ({with})",
                i.target, response.status
            )));
        }
        let tls = match (i.rules.base.scheme(), i.insecure) {
            ("https", false) => TlsState::Verified,
            ("https", true) => TlsState::Unverified,
            _ => TlsState::None,
        };
        Ok(HttpCheck {
            url: shown,
            status: response.status,
            latency_ms: response.duration_ms,
            tls,
        })
    }

    async fn send(
        &self,
        method: Method,
        mut url: Url,
        query: &[(String, String)],
        body: Option<serde_json::Value>,
    ) -> Result<HttpResponse, ExecError> {
        let i = &self.inner;
        let started = Instant::now();
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut token: Option<String> = None;
        let sent_method = method.clone();
        let mut request = i.client.request(method, url);
        if let Some(auth) = &i.auth {
            let secret = auth
                .secret
                .read()
                .map_err(|e| ExecError::Config(format!("target {}: {e}", i.target)))?;
            let secret = String::from_utf8(secret)
                .map_err(|_| ExecError::Config(format!("target {}: the token is not UTF-8", i.target)))?;
            let mut value = HeaderValue::from_str(&format!("{}{secret}", auth.prefix)).map_err(|_| {
                ExecError::Config(format!("target {}: the token is not a valid header value", i.target))
            })?;
            value.set_sensitive(true);
            request = request.header(auth.header.clone(), value);
            if !secret.is_empty() {
                token = Some(secret);
            }
        }
        if let Some(body) = &body {
            request = request.json(body);
        }

        let deadline = tokio::time::Instant::now() + i.limits.timeout;
        // The redirect policy runs while this future is polled, in this task: it reads the
        // method from here.
        let sending = REQUEST_METHOD.scope(sent_method, request.send());
        let response = match tokio::time::timeout_at(deadline, sending).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(self.map_error(&e)),
            Err(_) => return Err(ExecError::Timeout(i.limits.timeout)),
        };
        let status = response.status().as_u16();
        let json = is_json(response.headers());
        let headers = returned_headers(response.headers(), token.as_deref());

        let mut capped = Capped::new(i.max_response, response.content_length());
        let mut response = response;
        match tokio::time::timeout_at(deadline, capped.read(&mut response)).await {
            Ok(Ok(())) => {}
            // Past the cap only counting was left to do: return what was kept.
            Ok(Err(_)) | Err(_) if capped.cut > 0 => {}
            Ok(Err(e)) => return Err(self.map_error(&e)),
            Err(_) => return Err(ExecError::Timeout(i.limits.timeout)),
        }
        drop(response);

        let (body, truncated_bytes) = capped.into_body(json, token.as_deref());
        Ok(HttpResponse {
            status,
            headers,
            body,
            truncated_bytes,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// A safe message for a failed request: the target, the host, and the root cause (never
    /// the URL's query or a header).
    fn map_error(&self, e: &reqwest::Error) -> ExecError {
        let i = &self.inner;
        let base = &i.rules.base;
        let host = format!(
            "{}:{}",
            base.host_str().unwrap_or(""),
            base.port_or_known_default().unwrap_or(0)
        );
        if let Some(tls) = find_rustls_error(e) {
            return match tls {
                rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::InvalidCertRevocationList(_) => ExecError::HostVerification(format!(
                    "target {}: the certificate of {host} did not verify: {tls}",
                    i.target
                )),
                rustls::Error::General(msg) if msg.contains("certificate") => ExecError::HostVerification(format!(
                    "target {}: the certificate of {host} did not verify: {tls}",
                    i.target
                )),
                _ => ExecError::Unreachable(format!("target {}: TLS with {host} failed: {tls}", i.target)),
            };
        }
        if e.is_timeout() {
            return ExecError::Timeout(i.limits.timeout);
        }
        if e.is_connect() {
            return ExecError::Unreachable(format!(
                "target {}: cannot connect to {host}: {}",
                i.target,
                root_cause(e)
            ));
        }
        if e.is_redirect() {
            return ExecError::Failed(format!("target {}: too many redirects", i.target));
        }
        ExecError::Failed(format!(
            "target {}: request to {host} failed: {}",
            i.target,
            root_cause(e)
        ))
    }
}

/// A caller's path, checked and split: `raw` is what goes after the base path (starts with
/// `/` unless empty), `segments` are its percent-decoded segments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Normalized {
    raw: String,
    segments: Vec<String>,
}

/// Check a caller's path (relative to the base) and split it; the error says why it is refused.
fn normalize(path: &str) -> Result<Normalized, String> {
    if path.contains("://") {
        return Err("absolute URLs are not allowed".into());
    }
    if path.starts_with("//") {
        return Err("a path may not start with //".into());
    }
    if let Some(c) = path.chars().find(|c| c.is_control() || matches!(c, '\\' | '?' | '#')) {
        return Err(match c {
            '?' => "put the query in the query parameters, not the path".into(),
            '#' => "fragments are not allowed".into(),
            '\\' => "backslashes are not allowed".into(),
            _ => "control characters are not allowed".into(),
        });
    }
    let rest = path.strip_prefix('/').unwrap_or(path);
    if rest.is_empty() {
        return Ok(Normalized {
            raw: String::new(),
            segments: Vec::new(),
        });
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let mut segments = Vec::new();
    for (n, part) in parts.iter().enumerate() {
        if part.is_empty() {
            if n == parts.len() - 1 {
                break; // a trailing slash
            }
            return Err("empty segments (//) are not allowed".into());
        }
        // Decode until stable (bounded), so double-encoded dots and slashes are caught too;
        // every level is checked, and every level must be valid UTF-8.
        let not_utf8 = || {
            format!(
                "segment `{}` does not decode to valid UTF-8 (refused because some servers decode overlong \
                 forms such as %C0%AE to a dot)",
                printable(part)
            )
        };
        let decode = |s: &str| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|d| d.into_owned())
                .map_err(|_| not_utf8())
        };
        check_segment(part, part)?;
        let mut current = (*part).to_owned();
        for _ in 0..4 {
            let next = decode(&current)?;
            check_segment(part, &next)?;
            if next == current {
                break;
            }
            current = next;
        }
        if decode(&current)? != current {
            return Err("too many levels of percent-encoding".into());
        }
        // Prefixes match the segment as the server will read it: decoded once.
        segments.push(decode(part)?);
    }
    Ok(Normalized {
        raw: format!("/{rest}"),
        segments,
    })
}

/// Characters that Unicode compatibility normalization (NFKC) turns into one or more dots,
/// which a server normalizing paths that way would then read as `.` or `..`.
const DOT_LOOKALIKES: &[char] = &[
    '\u{2024}', // ONE DOT LEADER
    '\u{2025}', // TWO DOT LEADER
    '\u{2026}', // HORIZONTAL ELLIPSIS
    '\u{FE19}', // PRESENTATION FORM FOR VERTICAL HORIZONTAL ELLIPSIS
    '\u{FE30}', // PRESENTATION FORM FOR VERTICAL TWO DOT LEADER
    '\u{FE52}', // SMALL FULL STOP
    '\u{FF0E}', // FULLWIDTH FULL STOP
];

/// Check one segment at one level of decoding (`segment`; `raw` is the segment as the caller
/// wrote it, which is what an error names).
fn check_segment(raw: &str, segment: &str) -> Result<(), String> {
    if segment == "." || segment == ".." {
        return Err("dot segments (. and ..) are not allowed".into());
    }
    if segment.contains('/') || segment.contains('\\') {
        return Err("encoded slashes are not allowed".into());
    }
    if segment.chars().any(char::is_control) {
        return Err("control characters are not allowed".into());
    }
    if segment.contains(';') {
        return Err(format!(
            "segment `{}` contains `;`, which servers such as Tomcat and Jetty read as the start of \
             path parameters (`..;` is read as `..`)",
            printable(raw)
        ));
    }
    if let Some(c) = segment.chars().find(|c| DOT_LOOKALIKES.contains(c)) {
        return Err(format!(
            "segment `{}` contains U+{:04X}, which servers may read as a dot",
            printable(raw),
            u32::from(c)
        ));
    }
    if segment.chars().all(|c| c == '.' || c == ' ') {
        return Err(format!(
            "segment `{}` is only dots and spaces, which servers that trim trailing dots and spaces \
             (IIS, Windows) read as a dot segment or an empty one",
            printable(raw)
        ));
    }
    Ok(())
}

/// The base URL and the allowed prefixes (decoded segments; empty list = all).
#[derive(Debug)]
struct PathRules {
    /// Without a trailing slash, unless its path is `/`.
    base: Url,
    prefixes: Vec<Vec<String>>,
}

impl PathRules {
    fn allows(&self, segments: &[String]) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| segments.starts_with(p))
    }

    fn base_path(&self) -> &str {
        self.base.path().trim_end_matches('/')
    }

    /// The base URL with `path` appended; the result must keep the base's origin and path.
    fn join(&self, path: &Normalized) -> Result<Url, String> {
        let mut joined = self.base.clone();
        joined.set_path(&format!("{}{}", self.base_path(), path.raw));
        if joined.origin() != self.base.origin() || !self.under_base(joined.path()) {
            return Err("the path leaves the target's base URL".into());
        }
        Ok(joined)
    }

    fn under_base(&self, path: &str) -> bool {
        let base = self.base_path();
        path == base
            || path
                .strip_prefix(base)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Whether a redirect may be followed to `url`: same origin, under the base, allowed path.
    fn allows_url(&self, url: &Url) -> bool {
        if url.origin() != self.base.origin() || url.fragment().is_some() || !self.under_base(url.path()) {
            return false;
        }
        let rest = &url.path()[self.base_path().len()..];
        match normalize(rest) {
            Ok(n) => self.allows(&n.segments),
            Err(_) => false,
        }
    }
}

fn parse_base(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("base_url `{raw}` is not a URL: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!("base_url `{raw}` must be http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("base_url `{raw}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("base_url must not hold user info (use token_file or token_env)".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("base_url `{raw}` must not have a query or fragment"));
    }
    let mut url = url;
    let trimmed = url.path().trim_end_matches('/').to_owned();
    url.set_path(if trimmed.is_empty() { "/" } else { &trimmed });
    Ok(url)
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

fn returned_headers(headers: &HeaderMap, token: Option<&str>) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        if !RETURNED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let text = redact(&String::from_utf8_lossy(value.as_bytes()), token);
        out.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&text);
            })
            .or_insert(text);
    }
    out
}

fn redact(text: &str, token: Option<&str>) -> String {
    match token {
        Some(t) if t.len() >= MIN_REDACTED_LEN && text.contains(t) => text.replace(t, REDACTED),
        _ => text.to_owned(),
    }
}

/// A response body: the first `max` bytes kept, the rest counted.
struct Capped {
    max: usize,
    content_length: Option<u64>,
    kept: Vec<u8>,
    cut: u64,
}

impl Capped {
    fn new(max: usize, content_length: Option<u64>) -> Capped {
        Capped {
            max,
            content_length,
            kept: Vec::new(),
            cut: 0,
        }
    }

    /// Read the body (resumable state in `self`, so a deadline keeps what arrived).
    async fn read(&mut self, response: &mut reqwest::Response) -> Result<(), reqwest::Error> {
        while let Some(chunk) = response.chunk().await? {
            let room = self.max.saturating_sub(self.kept.len());
            let keep = room.min(chunk.len());
            self.kept.extend_from_slice(&chunk[..keep]);
            self.cut += (chunk.len() - keep) as u64;
            if self.cut > 0 {
                if let Some(len) = self.content_length {
                    self.cut = len.saturating_sub(self.kept.len() as u64).max(self.cut);
                    return Ok(());
                }
                if self.cut >= DRAIN_LIMIT {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn into_body(mut self, json: bool, token: Option<&str>) -> (serde_json::Value, u64) {
        if json
            && self.cut == 0
            && let Ok(value) = serde_json::from_slice::<serde_json::Value>(&self.kept)
        {
            return match token {
                Some(t) if t.len() >= MIN_REDACTED_LEN && value_contains(&value, t) => (redact_value(value, t), 0),
                _ => (value, 0),
            };
        }
        if self.cut > 0
            && let Some(t) = token
            && t.len() >= MIN_REDACTED_LEN
        {
            self.drop_token_tail(t.as_bytes());
        }
        if self.cut > 0
            && let Err(e) = std::str::from_utf8(&self.kept)
            && e.error_len().is_none()
        {
            // Do not end on half a character.
            let partial = self.kept.len() - e.valid_up_to();
            self.kept.truncate(e.valid_up_to());
            self.cut += partial as u64;
        }
        let mut text = redact(&String::from_utf8_lossy(&self.kept), token);
        if self.cut > 0 {
            text.push_str(&super::process::cut_marker(self.cut));
        }
        (serde_json::Value::String(text), self.cut)
    }

    /// The cap may have cut an occurrence of the token, leaving its first bytes at the end of
    /// the kept text, too short to match and be redacted. So the last `token.len() - 1` kept
    /// bytes (everywhere such a piece can start) are dropped and counted as cut, and more when
    /// that point would split a whole occurrence (whose first bytes would then end the text).
    ///
    /// Dropped whatever they hold, not only when they equal a start of the token (of any
    /// minimum length): blanking only a matching tail would tell a caller who can make the
    /// server echo chosen bytes at the cut (a body of their choosing, a long path in an error
    /// page) whether those bytes start the token — a guessing oracle, a byte at a time once the
    /// first bytes are known, and a Proxmox token starts with the public `user@realm!tokenid=`.
    fn drop_token_tail(&mut self, token: &[u8]) {
        let mut end = self.kept.len().saturating_sub(token.len() - 1);
        // The earliest whole occurrence that `end` would split, until there is none.
        while let Some(start) =
            (end.saturating_sub(token.len() - 1)..end).find(|&p| self.kept.get(p..p + token.len()) == Some(token))
        {
            end = start;
        }
        self.cut += (self.kept.len() - end) as u64;
        self.kept.truncate(end);
    }
}

fn value_contains(value: &serde_json::Value, token: &str) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains(token),
        serde_json::Value::Array(items) => items.iter().any(|v| value_contains(v, token)),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains(token) || value_contains(v, token)),
        _ => false,
    }
}

fn redact_value(value: serde_json::Value, token: &str) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(s.replace(token, REDACTED)),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| redact_value(v, token)).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.replace(token, REDACTED), redact_value(v, token)))
                .collect(),
        ),
        other => other,
    }
}

fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // io::Error::source() skips the error it wraps (which may be another io::Error):
        // step into it instead.
        if let Some(inner) = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            current = Some(inner as &(dyn std::error::Error + 'static));
            continue;
        }
        current = err.source();
    }
    None
}

/// The innermost error's message (reqwest's own message names the URL; the root cause does not).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// A caller-supplied string fit for an error message: at most 200 characters, no control
/// characters.
fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(200)
        .map(|c| if c.is_control() { '�' } else { c })
        .collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(base: &str, prefixes: &[&str]) -> PathRules {
        PathRules {
            base: parse_base(base).unwrap(),
            prefixes: prefixes.iter().map(|p| normalize(p).unwrap().segments).collect(),
        }
    }

    /// `Ok(url)` when the path is allowed, `Err(reason)` otherwise.
    fn check(r: &PathRules, path: &str, expected: Result<&str, &str>) {
        let got = normalize(path).and_then(|n| {
            if !r.allows(&n.segments) {
                return Err("outside the allowed path prefixes".to_owned());
            }
            r.join(&n).map(|u| u.to_string())
        });
        match (&got, expected) {
            (Ok(url), Ok(want)) => assert_eq!(url, want, "path {path:?}"),
            (Err(why), Err(want)) => assert!(why.contains(want), "path {path:?}: {why:?} does not say {want:?}"),
            _ => panic!("path {path:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn paths_are_normalized_and_confined() {
        let pve = rules("https://pve.lan:8006/api2/json/", &["/nodes", "cluster/status"]);
        let b = "https://pve.lan:8006/api2/json";
        check(&pve, "/nodes", Ok(&format!("{b}/nodes")));
        check(&pve, "nodes/pve/qemu", Ok(&format!("{b}/nodes/pve/qemu")));
        check(&pve, "/nodes/", Ok(&format!("{b}/nodes/")));
        check(&pve, "/cluster/status", Ok(&format!("{b}/cluster/status")));
        check(&pve, "/nodes/a%20b", Ok(&format!("{b}/nodes/a%20b")));
        check(&pve, "/nodes/a b", Ok(&format!("{b}/nodes/a%20b")));
        // Decoded before matching: an encoded letter is the same segment.
        check(&pve, "/%6eodes/pve", Ok(&format!("{b}/%6eodes/pve")));
        // Whole segments only.
        check(&pve, "/nodes2", Err("outside"));
        check(&pve, "/cluster", Err("outside"));
        check(&pve, "/cluster/statusx", Err("outside"));
        check(&pve, "/access/users", Err("outside"));
        check(&pve, "", Err("outside"));
        // Traversal and smuggling.
        check(&pve, "/nodes/../access", Err("dot segments"));
        check(&pve, "/nodes/./pve", Err("dot segments"));
        check(&pve, "/nodes/%2e%2e/access", Err("dot segments"));
        check(&pve, "/nodes/%2E%2e/access", Err("dot segments"));
        check(&pve, "/nodes/.%2e/access", Err("dot segments"));
        check(&pve, "/nodes/%252e%252e/access", Err("dot segments"));
        check(&pve, "/nodes/%25252e%25252e/access", Err("dot segments"));
        check(&pve, "/nodes/a%2fb", Err("encoded slashes"));
        check(&pve, "/nodes/a%5cb", Err("encoded slashes"));
        check(&pve, "/nodes/a\\b", Err("backslashes"));
        check(&pve, "/nodes//pve", Err("empty segments"));
        check(&pve, "//evil.example/nodes", Err("may not start with //"));
        check(&pve, "http://evil/nodes", Err("absolute URLs"));
        check(&pve, "https://pve.lan:8006/api2/json/nodes", Err("absolute URLs"));
        check(&pve, "/nodes?x=1", Err("query"));
        check(&pve, "/nodes#x", Err("fragments"));
        check(&pve, "/nodes/a\nb", Err("control"));
        check(&pve, "/nodes/%0a", Err("control"));
        check(&pve, "/nodes/%00", Err("control"));

        // No prefixes: everything under the base, nothing above it.
        let all = rules("http://127.0.0.1:8080", &[]);
        check(&all, "", Ok("http://127.0.0.1:8080/"));
        check(&all, "/", Ok("http://127.0.0.1:8080/"));
        check(&all, "/x/y", Ok("http://127.0.0.1:8080/x/y"));
        check(&all, "/../etc", Err("dot segments"));
        check(&all, "..", Err("dot segments"));
    }

    #[test]
    fn segments_servers_fold_into_dot_segments_are_refused() {
        let pve = rules("https://pve.lan:8006/api2/json", &["/nodes"]);
        let b = "https://pve.lan:8006/api2/json";
        // `;`: Tomcat, Jetty and Spring read `..;` as `..`.
        check(&pve, "/nodes/..;/access", Err("segment `..;` contains `;`"));
        check(&pve, "/nodes/%2e%2e;/access", Err("segment `%2e%2e;` contains `;`"));
        check(&pve, "/nodes/%2e%2e%3b/access", Err("segment `%2e%2e%3b` contains `;`"));
        check(&pve, "/nodes/%252e%252e%253b/access", Err("contains `;`"));
        check(&pve, "/nodes/.;/access", Err("contains `;`"));
        check(&pve, "/nodes/pve;jsessionid=x", Err("contains `;`"));
        // Only dots and spaces: IIS and Windows trim trailing dots and spaces.
        for seg in [
            "..%20", "..%20%20", ".%20", "...", "....", ".%2e.", "%20", "%20%20", ". .", "..%2520",
        ] {
            check(
                &pve,
                &format!("/nodes/{seg}/access"),
                Err(&format!("segment `{seg}` is only dots and spaces")),
            );
        }
        check(&pve, "/nodes/.. /access", Err("segment `.. ` is only dots and spaces"));
        // Dot look-alikes, raw or encoded (NFKC folds them into dots).
        check(
            &pve,
            "/nodes/%EF%BC%8E%EF%BC%8E/access",
            Err("segment `%EF%BC%8E%EF%BC%8E` contains U+FF0E"),
        );
        check(&pve, "/nodes/\u{FF0E}\u{FF0E}/access", Err("contains U+FF0E"));
        check(&pve, "/nodes/%25EF%25BC%258E/access", Err("contains U+FF0E"));
        check(&pve, "/nodes/%E2%80%A4%E2%80%A4/access", Err("contains U+2024"));
        check(&pve, "/nodes/%E2%80%A5/access", Err("contains U+2025"));
        check(&pve, "/nodes/%EF%B9%92./access", Err("contains U+FE52"));
        check(&pve, "/nodes/a\u{2026}b", Err("contains U+2026"));
        // Not UTF-8 once decoded (overlong dots, stray bytes), at any level of encoding.
        check(
            &pve,
            "/nodes/%C0%AE%C0%AE/access",
            Err("segment `%C0%AE%C0%AE` does not decode to valid UTF-8"),
        );
        check(&pve, "/nodes/%c0%ae/access", Err("does not decode to valid UTF-8"));
        check(&pve, "/nodes/%E0%80%AE/access", Err("does not decode to valid UTF-8"));
        check(&pve, "/nodes/%25C0%25AE/access", Err("does not decode to valid UTF-8"));
        check(&pve, "/nodes/caf%E9", Err("does not decode to valid UTF-8"));
        // A refused segment's name in the message is made printable and bounded.
        let long = format!("/nodes/{};", "a".repeat(300));
        let why = normalize(&long).unwrap_err();
        assert!(why.contains(&format!("`{}…`", "a".repeat(200))), "{why}");

        // What was accepted before still is.
        for seg in [
            "v1.2",
            "a..b",
            ".well-known",
            "..a",
            "a..",
            "a.",
            "a%20",
            "%2e%2ea",
            "a%20b",
            "pve",
            "UPID:pve:0001:00:00:task:100:root@pam:",
            "caf%C3%A9",
            "\u{00E9}t\u{00E9}",
        ] {
            let n = normalize(&format!("/nodes/{seg}")).unwrap_or_else(|why| panic!("{seg}: {why}"));
            assert!(pve.allows(&n.segments), "{seg}");
        }
        check(
            &pve,
            "/nodes/v1.2/.well-known",
            Ok(&format!("{b}/nodes/v1.2/.well-known")),
        );
        check(&pve, "/nodes/a..b", Ok(&format!("{b}/nodes/a..b")));
        assert_eq!(normalize("/nodes/caf%C3%A9").unwrap().segments, ["nodes", "café"]);
    }

    #[test]
    fn redirects_stay_on_origin_and_inside_the_rules() {
        let r = rules("https://pve.lan:8006/api2/json", &["/nodes"]);
        let ok = |u: &str| r.allows_url(&Url::parse(u).unwrap());
        assert!(ok("https://pve.lan:8006/api2/json/nodes/pve"));
        assert!(ok("https://pve.lan:8006/api2/json/nodes?x=1"));
        assert!(!ok("https://pve.lan:8006/api2/json/access"));
        assert!(!ok("https://pve.lan:8006/api2/jsonx/nodes"));
        assert!(!ok("https://pve.lan:8006/other"));
        assert!(!ok("https://pve.lan:8007/api2/json/nodes"));
        assert!(!ok("http://pve.lan:8006/api2/json/nodes"));
        assert!(!ok("https://evil.example:8006/api2/json/nodes"));
        assert!(!ok("https://pve.lan:8006/api2/json/nodes/%2e%2e/access"));
        // The same segment rules as a caller's path.
        assert!(ok("https://pve.lan:8006/api2/json/nodes/v1.2/a..b"));
        for path in [
            "nodes/..;/access",
            "nodes/%2e%2e;/access",
            "nodes/..%3b/access",
            "nodes/pve;x=1",
            "nodes/..%20/access",
            "nodes/.../access",
            "nodes/%EF%BC%8E%EF%BC%8E/access",
            "nodes/\u{FF0E}\u{FF0E}/access",
            "nodes/%C0%AE%C0%AE/access",
        ] {
            assert!(!ok(&format!("https://pve.lan:8006/api2/json/{path}")), "{path}");
        }
    }

    #[test]
    fn redirects_that_would_become_get() {
        use reqwest::StatusCode as S;
        let becomes = |s: S, m: Method| redirect_becomes_get(s, Some(&m));
        // 303: everything but HEAD (and GET, which stays GET).
        for m in [
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(becomes(S::SEE_OTHER, m.clone()), "{m}");
            assert!(!becomes(S::MOVED_PERMANENTLY, m.clone()) || m == Method::POST, "{m}");
        }
        assert!(!becomes(S::SEE_OTHER, Method::HEAD));
        assert!(!becomes(S::SEE_OTHER, Method::GET));
        // 301/302: POST only.
        assert!(becomes(S::MOVED_PERMANENTLY, Method::POST));
        assert!(becomes(S::FOUND, Method::POST));
        assert!(!becomes(S::FOUND, Method::PUT));
        assert!(!becomes(S::FOUND, Method::HEAD));
        // 307/308 keep the method.
        for s in [S::TEMPORARY_REDIRECT, S::PERMANENT_REDIRECT] {
            assert!(!becomes(s, Method::POST));
            assert!(!redirect_becomes_get(s, None));
        }
        // Method unknown: assume the worst.
        for s in [S::MOVED_PERMANENTLY, S::FOUND, S::SEE_OTHER] {
            assert!(redirect_becomes_get(s, None));
        }
    }

    #[test]
    fn base_urls_are_validated() {
        for (raw, why) in [
            ("ftp://host/x", "http:// or https://"),
            ("not a url", "not a URL"),
            ("https://user:pw@host/", "user info"),
            ("https://host/x?y=1", "query"),
            ("https://host/x#y", "query or fragment"),
            ("unix:/run/x.sock", "http:// or https://"),
        ] {
            let err = parse_base(raw).unwrap_err();
            assert!(err.contains(why), "{raw}: {err}");
        }
        assert_eq!(
            parse_base("https://h:8006/api2/json/").unwrap().as_str(),
            "https://h:8006/api2/json"
        );
        assert_eq!(parse_base("http://h").unwrap().as_str(), "http://h/");
    }

    fn settings(base: &str) -> HttpSettings {
        HttpSettings {
            base_url: base.into(),
            auth_header: None,
            auth_prefix: None,
            token_file: None,
            token_env: None,
            allowed_methods: get_only(),
            allowed_path_prefixes: Vec::new(),
            health_path: None,
            ca_file: None,
            insecure_skip_verify: false,
            max_response_bytes: default_max_response(),
        }
    }

    #[test]
    fn settings_are_validated() {
        let err = |s: HttpSettings| Http::new("t", s, Limits::default()).unwrap_err().to_string();
        assert!(
            err(HttpSettings {
                allowed_methods: vec!["FETCH".into()],
                ..settings("http://h")
            })
            .contains("unknown method")
        );
        assert!(
            err(HttpSettings {
                allowed_methods: vec![],
                ..settings("http://h")
            })
            .contains("empty")
        );
        assert!(
            err(HttpSettings {
                allowed_path_prefixes: vec!["/a/../b".into()],
                ..settings("http://h")
            })
            .contains("allowed_path_prefixes")
        );
        assert!(
            err(HttpSettings {
                token_file: Some("a".into()),
                token_env: Some("B".into()),
                ..settings("http://h")
            })
            .contains("not both")
        );
        assert!(
            err(HttpSettings {
                auth_header: Some("X-Token".into()),
                ..settings("http://h")
            })
            .contains("without")
        );
        assert!(
            err(HttpSettings {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..settings("https://h")
            })
            .contains("ca_file")
        );
        let s: HttpSettings = toml::from_str("base_url = \"http://h\"").unwrap();
        assert_eq!(s.allowed_methods, ["GET"]);
        assert_eq!(s.max_response_bytes, 1024 * 1024);
        assert!(!s.insecure_skip_verify);
        let unknown = toml::from_str::<HttpSettings>("base_url = \"http://h\"\ntoken = \"x\"").unwrap_err();
        assert!(unknown.to_string().contains("unknown field"), "{unknown}");
        let http = Http::new(
            "t",
            HttpSettings {
                allowed_methods: vec!["get".into(), "Post".into()],
                ..settings("http://h")
            },
            Limits::default(),
        )
        .unwrap();
        assert_eq!(http.inner.methods, [Method::GET, Method::POST]);
    }

    #[test]
    fn headers_are_an_allow_list_and_the_token_is_redacted() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("set-cookie", HeaderValue::from_static("session=abc"));
        h.insert("authorization", HeaderValue::from_static("Bearer s3cr3t-token"));
        h.insert("x-auth-token", HeaderValue::from_static("s3cr3t-token"));
        h.insert("location", HeaderValue::from_static("/next?t=s3cr3t-token"));
        h.append("vary", HeaderValue::from_static("a"));
        h.append("vary", HeaderValue::from_static("b"));
        let got = returned_headers(&h, Some("s3cr3t-token"));
        let want: BTreeMap<String, String> = [
            ("content-type", "application/json"),
            ("location", "/next?t=[redacted]"),
            ("vary", "a, b"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(got, want);
        assert!(is_json(&h));
    }

    #[test]
    fn bodies_are_capped_and_redacted() {
        let capped = |max: usize, len: Option<u64>, data: &[u8], json: bool, token: Option<&str>| {
            let mut c = Capped::new(max, len);
            let keep = max.min(data.len());
            c.kept.extend_from_slice(&data[..keep]);
            c.cut = (data.len() - keep) as u64;
            c.into_body(json, token)
        };
        let body =
            |max: usize, len: Option<u64>, data: &[u8], json: bool| capped(max, len, data, json, Some("tok-12345"));
        assert_eq!(
            body(100, None, br#"{"a":[1,"x tok-12345"],"tok-12345":0}"#, true),
            (serde_json::json!({"a": [1, "x [redacted]"], "[redacted]": 0}), 0)
        );
        assert_eq!(body(100, None, b"{not json", true), (serde_json::json!("{not json"), 0));
        assert_eq!(body(100, None, b"[1,2]", false), (serde_json::json!("[1,2]"), 0));
        // Cut JSON comes back as text with the marker; a cut never splits a character (no
        // token here: with one, more is dropped, see below).
        assert_eq!(
            capped(4, None, br#"{"a":1}"#, true, None),
            (serde_json::json!("{\"a\"\n[… 3 bytes cut]"), 3)
        );
        assert_eq!(
            capped(3, None, "ééé".as_bytes(), false, None),
            (serde_json::json!("é\n[… 4 bytes cut]"), 4)
        );
        // With a token: the last (token length - 1) bytes go too, then the half character.
        assert_eq!(
            body(11, None, "éééééééé".as_bytes(), false),
            (serde_json::json!("é\n[… 14 bytes cut]"), 14)
        );
        assert_eq!(
            body(100, None, b"auth tok-12345 ok", false),
            (serde_json::json!("auth [redacted] ok"), 0)
        );
        // A token cut by the cap: none of it comes back, at any cut point; the last
        // (token length - 1) kept bytes are dropped and counted whatever they hold.
        let token = "tok-12345";
        let data = format!("head {token} tail");
        for max in 1..data.len() {
            let (value, cut) = body(max, None, data.as_bytes(), false);
            let text = value.as_str().unwrap();
            let (shown, marker) = text.split_once('\n').unwrap();
            assert!(!shown.contains('t'), "max {max}: {text:?}");
            let want = if max >= 5 + token.len() {
                // The whole token was kept but the drop point split it: moved back before it.
                "head "
            } else {
                &data[..max.saturating_sub(token.len() - 1)]
            };
            assert_eq!(shown, want, "max {max}");
            assert_eq!(cut, (data.len() - want.len()) as u64, "max {max}");
            assert_eq!(marker, format!("[… {cut} bytes cut]"));
        }
        // A whole occurrence well before the cut is redacted and kept.
        assert_eq!(
            body(30, None, b"a tok-12345 b 0123456789abcdefghijklmnop", false),
            (serde_json::json!("a [redacted] b 01234567\n[… 18 bytes cut]"), 18)
        );
        // Overlapping occurrences of a repetitive token: the split point moves back until
        // no occurrence is split.
        let mut c = Capped::new(14, None);
        c.kept.extend_from_slice(b"xaaaaaaaaaaaaa");
        c.cut = 10;
        assert_eq!(
            c.into_body(false, Some("aaaaaaaa")),
            (serde_json::json!("x\n[… 23 bytes cut]"), 23)
        );
        // Not cut: nothing dropped.
        assert_eq!(
            body(100, None, b"ends with tok-1234", false),
            (serde_json::json!("ends with tok-1234"), 0)
        );
        // A token too short to search for is left alone (and the body with it).
        let mut short = Capped::new(100, None);
        short.kept.extend_from_slice(b"a bc d");
        assert_eq!(short.into_body(false, Some("bc")), (serde_json::json!("a bc d"), 0));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "very-secret-token\n").unwrap();
        let http = Http::new(
            "pve",
            HttpSettings {
                auth_prefix: Some("PVEAPIToken=".into()),
                token_file: Some(file),
                ..settings("https://pve.lan:8006/api2/json")
            },
            Limits::default(),
        )
        .unwrap();
        let shown = format!("{http:?}");
        assert!(!shown.contains("very-secret-token"), "{shown}");
        assert!(
            shown.contains("authorization: PVEAPIToken=<token from file>"),
            "{shown}"
        );
    }
}
