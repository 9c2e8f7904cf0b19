//! How a `docker` target reaches its engine: the settings, the [`Docker`] handle with its
//! connection (made on first use, with the API version negotiated then, and reused; a failed
//! connection is retried on the next call), the target's timeout around every call, and the one
//! mapping from bollard's errors to ours.
//!
//! TLS is configured here rather than by bollard's `connect_with_ssl`: that constructor requires a
//! CA file, fails when any system root does not load, looks up a process-wide rustls provider with
//! `expect` (a panic when none is installed) and hides why a handshake failed. We build the rustls
//! configuration ourselves (aws-lc-rs provider, the one reqwest uses too; the CA file, or the
//! system roots when no CA is given) and hand bollard a hyper-rustls client as a custom
//! transport, so a certificate problem maps to [`ExecError::HostVerification`] and a refused
//! client certificate to [`ExecError::Auth`].

use std::error::Error as StdError;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bollard::errors::Error as BollardError;
use schemars::JsonSchema;
use serde::Deserialize;

use super::model::EngineInfo;
use crate::exec::{ExecError, Limits, Secret};

/// The endpoint used when a target gives none.
pub const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";

/// How a `[[target]]` of kind `docker` reaches its engine.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerSettings {
    /// `unix:///var/run/docker.sock` (default) or `tcp://HOST:PORT`.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// CA certificate(s) (PEM) that sign the engine's certificate; the system roots when absent.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) presented to the engine; goes with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Allow `tcp://` without TLS. Anyone on the path can then run containers as root on the
    /// engine's host: only for an engine on a trusted, isolated network.
    #[serde(default)]
    pub insecure_plain_tcp: bool,
}

impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            endpoint: default_endpoint(),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            insecure_plain_tcp: false,
        }
    }
}

fn default_endpoint() -> String {
    DEFAULT_ENDPOINT.to_string()
}

/// One Docker engine. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct Docker {
    inner: Arc<Inner>,
}

impl Docker {
    /// Checks `settings` and reads the TLS files; connects on first use, not here.
    /// `target_id` names the target in error messages.
    pub fn new(target_id: &str, settings: DockerSettings, limits: Limits) -> Result<Docker, ExecError> {
        let transport = Transport::from_settings(&settings)?;
        Ok(Docker {
            inner: Arc::new(Inner {
                target_id: target_id.to_string(),
                endpoint: settings.endpoint,
                limits,
                transport,
                client: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// The engine's version and the API version negotiated with it (connects if needed).
    pub async fn version(&self) -> Result<EngineInfo, ExecError> {
        self.bounded(async {
            let client = self.client().await?;
            let v = client.version().await.map_err(|e| self.map_err(e, None))?;
            let negotiated = client.client_version();
            Ok(EngineInfo {
                endpoint: self.inner.endpoint.clone(),
                version: v.version,
                api_version: v.api_version,
                min_api_version: v.min_api_version,
                negotiated_api_version: format!("{}.{}", negotiated.major_version, negotiated.minor_version),
                os: v.os,
                arch: v.arch,
                kernel_version: v.kernel_version,
                go_version: v.go_version,
                git_commit: v.git_commit,
            })
        })
        .await
    }

    /// The target's limits, as given to [`Docker::new`].
    pub(super) fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The target's id, as given to [`Docker::new`].
    pub fn target_id(&self) -> &str {
        &self.inner.target_id
    }
}

struct Inner {
    target_id: String,
    endpoint: String,
    limits: Limits,
    transport: Transport,
    client: tokio::sync::OnceCell<bollard::Docker>,
}

/// How to reach the engine, checked at construction.
enum Transport {
    Unix {
        path: String,
    },
    PlainTcp {
        authority: String,
    },
    Tls {
        authority: String,
        config: Arc<rustls::ClientConfig>,
    },
}

impl Transport {
    fn from_settings(s: &DockerSettings) -> Result<Transport, ExecError> {
        let any_tls = s.tls_ca.is_some() || s.tls_cert.is_some() || s.tls_key.is_some();
        if let Some(path) = s.endpoint.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(ExecError::Config(format!(
                    "docker endpoint `{}`: a unix socket path must be absolute (unix:///var/run/docker.sock)",
                    s.endpoint
                )));
            }
            if any_tls || s.insecure_plain_tcp {
                return Err(ExecError::Config(format!(
                    "docker endpoint `{}`: tls_ca/tls_cert/tls_key/insecure_plain_tcp apply to tcp:// endpoints only",
                    s.endpoint
                )));
            }
            return Ok(Transport::Unix { path: path.to_string() });
        }
        let Some(rest) = s.endpoint.strip_prefix("tcp://") else {
            return Err(ExecError::Config(format!(
                "docker endpoint `{}`: expected unix:///PATH or tcp://HOST:PORT",
                s.endpoint
            )));
        };
        let authority = parse_authority(&s.endpoint, rest, if any_tls { 2376 } else { 2375 })?;
        if s.insecure_plain_tcp {
            if any_tls {
                return Err(ExecError::Config(format!(
                    "docker endpoint `{}`: insecure_plain_tcp = true contradicts tls_ca/tls_cert/tls_key",
                    s.endpoint
                )));
            }
            return Ok(Transport::PlainTcp { authority });
        }
        if !any_tls {
            return Err(ExecError::Config(format!(
                "docker endpoint `{}`: plain tcp:// is refused (anyone on the path could control the engine); \
                 set tls_cert and tls_key (and tls_ca), or insecure_plain_tcp = true",
                s.endpoint
            )));
        }
        let config = tls_config(s)?;
        Ok(Transport::Tls {
            authority,
            config: Arc::new(config),
        })
    }
}

/// `HOST[:PORT]` from a `tcp://` endpoint, with the default port added.
fn parse_authority(endpoint: &str, rest: &str, default_port: u16) -> Result<String, ExecError> {
    let bad = |why: &str| ExecError::Config(format!("docker endpoint `{endpoint}`: {why}"));
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) || rest.chars().any(char::is_whitespace) {
        return Err(bad("expected tcp://HOST:PORT"));
    }
    let uri: http::Uri = format!("https://{rest}")
        .parse()
        .map_err(|_| bad("expected tcp://HOST:PORT"))?;
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("missing host"))?;
    let port = uri.port_u16().unwrap_or(default_port);
    if port == 0 {
        return Err(bad("port 0"));
    }
    Ok(format!("{host}:{port}"))
}

fn tls_config(s: &DockerSettings) -> Result<rustls::ClientConfig, ExecError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let read_certs = |what: &str, path: &Path| -> Result<Vec<CertificateDer<'static>>, ExecError> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ExecError::Config(format!("{what} {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(ExecError::Config(format!(
                "{what} {}: no PEM certificate in it",
                path.display()
            )));
        }
        Ok(certs)
    };

    let mut roots = rustls::RootCertStore::empty();
    match &s.tls_ca {
        Some(path) => {
            for cert in read_certs("tls_ca", path)? {
                roots
                    .add(cert)
                    .map_err(|e| ExecError::Config(format!("tls_ca {}: {e}", path.display())))?;
            }
        }
        None => {
            // Like the docker CLI without --tlscacert: the system's trust store.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(ExecError::Config(
                    "no tls_ca given and no system CA certificates found: set tls_ca".to_string(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ExecError::Config(format!("tls: {e}")))?
        .with_root_certificates(roots);
    match (&s.tls_cert, &s.tls_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("tls_cert", cert)?;
            // A secret like any other: a relative path is a systemd credential's name.
            let pem = Secret::File(key.clone()).read()?;
            let key_der = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| ExecError::Config(format!("tls_key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| ExecError::Config(format!("tls_cert/tls_key {}: {e}", cert.display())))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(ExecError::Config(
            "tls_cert and tls_key must be given together".to_string(),
        )),
    }
}

impl Docker {
    /// Runs `fut` within the target's timeout.
    pub(super) async fn bounded<T>(&self, fut: impl Future<Output = Result<T, ExecError>>) -> Result<T, ExecError> {
        let timeout = self.inner.limits.timeout;
        match tokio::time::timeout(timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(ExecError::Timeout(timeout)),
        }
    }

    /// The connected client, connecting and negotiating the API version on first use.
    pub(super) async fn client(&self) -> Result<&bollard::Docker, ExecError> {
        self.inner
            .client
            .get_or_try_init(|| async {
                let docker = self.connect()?;
                docker.negotiate_version().await.map_err(|e| self.map_err(e, None))
            })
            .await
    }

    fn connect(&self) -> Result<bollard::Docker, ExecError> {
        // bollard's own per-request timeout stays behind ours, which is the real bound.
        let secs = self.inner.limits.timeout.as_secs().saturating_add(1).max(1);
        let version = bollard::API_DEFAULT_VERSION;
        let result = match &self.inner.transport {
            Transport::Unix { path } => bollard::Docker::connect_with_unix(path, secs, version),
            Transport::PlainTcp { authority } => {
                bollard::Docker::connect_with_http(&format!("tcp://{authority}"), secs, version)
            }
            Transport::Tls { authority, config } => {
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config((**config).clone())
                    .https_only()
                    .enable_http1()
                    .build();
                let client = Arc::new(
                    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https),
                );
                let transport = move |req: bollard::BollardRequest| {
                    let client = Arc::clone(&client);
                    async move { client.request(req).await.map_err(BollardError::from) }
                };
                bollard::Docker::connect_with_custom_transport(
                    transport,
                    Some(format!("https://{authority}")),
                    secs,
                    version,
                )
            }
        };
        result.map_err(|e| self.map_err(e, None))
    }

    /// One engine request within the target's timeout, its error mapped (naming `container` in
    /// "no such container").
    pub(super) async fn call<T>(
        &self,
        container: Option<&str>,
        request: impl Future<Output = Result<T, BollardError>>,
    ) -> Result<T, ExecError> {
        self.bounded(async { request.await.map_err(|e| self.map_err(e, container)) })
            .await
    }

    /// `GET /containers/{reference}/json`; "no such container" names `shown` (the reference the
    /// caller gave).
    pub(super) async fn inspect_raw(
        &self,
        client: &bollard::Docker,
        reference: &str,
        shown: &str,
    ) -> Result<bollard::models::ContainerInspectResponse, ExecError> {
        client
            .inspect_container(reference, None)
            .await
            .map_err(|e| self.map_err(e, Some(shown)))
    }

    /// One mapping from bollard's errors to ours. `container` is the reference the caller gave,
    /// for "no such container".
    pub(super) fn map_err(&self, err: BollardError, container: Option<&str>) -> ExecError {
        let engine = format!("docker engine `{}` at {}", self.inner.target_id, self.inner.endpoint);
        match err {
            BollardError::DockerResponseServerError { status_code, message } => match (status_code, container) {
                (404, Some(c)) if message.contains("No such container") || message.contains("no such container") => {
                    ExecError::Failed(format!("no such container `{c}`"))
                }
                (401 | 403, _) => ExecError::Auth(format!("{engine}: {message}")),
                _ => ExecError::Failed(format!("{engine}: {} (HTTP {status_code})", message.trim())),
            },
            BollardError::RequestTimeoutError => ExecError::Timeout(self.inner.limits.timeout),
            BollardError::SocketNotFoundError(path) => {
                ExecError::Unreachable(format!("{engine}: socket {path} does not exist"))
            }
            BollardError::IOError { err } => classify_chain(&engine, &err),
            BollardError::HyperResponseError { err } => classify_chain(&engine, &err),
            BollardError::HyperLegacyError { err } => {
                let mapped = classify_chain(&engine, &err);
                match mapped {
                    ExecError::Failed(msg) if err.is_connect() => ExecError::Unreachable(msg),
                    other => other,
                }
            }
            other => ExecError::Failed(format!("{engine}: {other}")),
        }
    }
}

/// Finds why a request failed in an error's source chain: a TLS problem, a refused or missing
/// connection, or something else.
fn classify_chain(engine: &str, top: &(dyn StdError + 'static)) -> ExecError {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(top);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return classify_tls(engine, tls);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::ConnectionRefused
                | K::NotFound
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::AddrNotAvailable
                | K::HostUnreachable
                | K::NetworkUnreachable
                | K::NotConnected => return ExecError::Unreachable(format!("{engine}: {io}")),
                K::PermissionDenied => return ExecError::Auth(format!("{engine}: {io}")),
                K::TimedOut => return ExecError::Unreachable(format!("{engine}: {io}")),
                _ => {}
            }
            // An io::Error's `source()` skips the error it wraps (hyper-rustls wraps tokio-rustls'
            // io::Error, which wraps the rustls::Error): follow the wrapped one instead.
            if let Some(inner) = io.get_ref() {
                cur = Some(inner as &(dyn StdError + 'static));
                continue;
            }
        }
        cur = err.source();
    }
    ExecError::Failed(format!("{engine}: {}", chain_text(top)))
}

fn classify_tls(engine: &str, err: &rustls::Error) -> ExecError {
    use rustls::AlertDescription as A;
    match err {
        rustls::Error::AlertReceived(
            alert @ (A::BadCertificate
            | A::CertificateRequired
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::UnsupportedCertificate
            | A::AccessDenied),
        ) => ExecError::Auth(format!(
            "{engine}: the engine refused our client certificate (TLS alert: {alert:?})"
        )),
        rustls::Error::InvalidCertificate(why) => {
            ExecError::HostVerification(format!("{engine}: the engine's certificate did not verify: {why:?}"))
        }
        other => ExecError::HostVerification(format!("{engine}: TLS handshake failed: {other}")),
    }
}

fn chain_text(top: &(dyn StdError + 'static)) -> String {
    let mut text = top.to_string();
    let mut cur = top.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cur = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_settings(s: DockerSettings, expected: Result<&str, &str>) {
        let got = Docker::new("t", s.clone(), Limits::default());
        match (got, expected) {
            (Ok(d), Ok(kind)) => {
                let k = match d.inner.transport {
                    Transport::Unix { ref path } => format!("unix {path}"),
                    Transport::PlainTcp { ref authority } => format!("plain {authority}"),
                    Transport::Tls { ref authority, .. } => format!("tls {authority}"),
                };
                assert_eq!(k, kind, "{s:?}");
            }
            (Err(e), Err(fragment)) => {
                assert!(matches!(e, ExecError::Config(_)), "{s:?}: {e:?}");
                assert!(e.to_string().contains(fragment), "{s:?}: {e}");
            }
            (got, expected) => panic!("{s:?}: got {:?}, expected {expected:?}", got.map(|_| ())),
        }
    }

    fn tcp(endpoint: &str) -> DockerSettings {
        DockerSettings {
            endpoint: endpoint.to_string(),
            ..DockerSettings::default()
        }
    }

    #[test]
    fn settings() {
        let plain = |endpoint: &str| DockerSettings {
            insecure_plain_tcp: true,
            ..tcp(endpoint)
        };
        check_settings(DockerSettings::default(), Ok("unix /var/run/docker.sock"));
        check_settings(tcp("unix:///run/x.sock"), Ok("unix /run/x.sock"));
        check_settings(tcp("unix://run/x.sock"), Err("must be absolute"));
        check_settings(tcp("tcp://10.0.0.5:2376"), Err("plain tcp:// is refused"));
        check_settings(plain("tcp://10.0.0.5:2375"), Ok("plain 10.0.0.5:2375"));
        check_settings(plain("tcp://h"), Ok("plain h:2375"));
        check_settings(
            plain("tcp://[fd7a:115c:a1e0::1]:2375/"),
            Ok("plain [fd7a:115c:a1e0::1]:2375"),
        );
        check_settings(plain("tcp://h:2375/v1.41"), Err("expected tcp://"));
        check_settings(plain("tcp://u@h:2375"), Err("expected tcp://"));
        check_settings(plain("tcp://"), Err("expected tcp://"));
        check_settings(plain("tcp://h:0"), Err("port 0"));
        check_settings(tcp("http://h:2375"), Err("expected unix:///PATH or tcp://HOST:PORT"));
        check_settings(tcp("/var/run/docker.sock"), Err("expected unix:///PATH"));
        check_settings(plain(DEFAULT_ENDPOINT), Err("apply to tcp:// endpoints only"));
        let ca = |s: DockerSettings| DockerSettings {
            tls_ca: Some("/nonexistent/ca.pem".into()),
            ..s
        };
        check_settings(ca(DockerSettings::default()), Err("apply to tcp:// endpoints only"));
        check_settings(ca(plain("tcp://h:2376")), Err("contradicts"));
        check_settings(ca(tcp("tcp://h:2376")), Err("tls_ca /nonexistent/ca.pem"));
    }

    #[test]
    fn settings_from_toml() {
        let s: DockerSettings = toml::from_str("endpoint = \"tcp://h:2376\"\ntls_ca = \"/c\"").unwrap();
        assert_eq!(s.endpoint, "tcp://h:2376");
        assert_eq!(s.tls_ca.as_deref(), Some(Path::new("/c")));
        let d: DockerSettings = toml::from_str("").unwrap();
        assert_eq!(d, DockerSettings::default());
        let err = toml::from_str::<DockerSettings>("endpoit = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `endpoit`"), "{err}");
    }
}
