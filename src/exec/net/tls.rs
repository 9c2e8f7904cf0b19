//! TLS certificate checks: a handshake that accepts any chain (its signatures still checked), so
//! that a bad certificate can be described, then the chain verified and reported.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_rustls::rustls;

use super::model::{CertInfo, TlsReport};
use super::ms;
use crate::exec::ExecError;
use crate::exec::show::cut;

/// Certificates from PEM text (at least one).
pub fn parse_pem_certs(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca_pem: {e}"))?;
    if certs.is_empty() {
        return Err("ca_pem holds no PEM certificate".to_string());
    }
    Ok(certs)
}

pub(super) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub(super) fn root_store(
    ca: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> Result<rustls::RootCertStore, ExecError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(certs) => {
            for c in certs {
                roots
                    .add(c.clone())
                    .map_err(|e| ExecError::Config(format!("ca_pem: {e}")))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    Ok(roots)
}

pub(super) fn server_name(name: &str) -> Result<rustls::pki_types::ServerName<'static>, ExecError> {
    rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|_| ExecError::Config(format!("`{}` is not a valid TLS server name", cut(name, 80))))
}

/// Connect to `addr`, complete a TLS handshake naming `name`, and report the chain and whether
/// it verifies against `ca` (or the system store). The handshake itself accepts any chain (its
/// signatures are still checked) so that a bad certificate can be described, not just refused.
pub async fn tls_check(
    addr: SocketAddr,
    name: &str,
    ca: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    timeout: Duration,
) -> Result<TlsReport, ExecError> {
    let started = Instant::now();
    let sni = server_name(name)?;
    let roots = Arc::new(root_store(ca)?);
    let provider = provider();
    let capture = Arc::new(Capture {
        provider: provider.clone(),
        chain: std::sync::Mutex::new(Vec::new()),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ExecError::Config(format!("tls: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let work = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| ExecError::Unreachable(format!("cannot connect to {addr}: {e}")))?;
        connector
            .connect(sni.clone(), tcp)
            .await
            .map_err(|e| ExecError::Failed(format!("TLS handshake with {addr} failed: {e}")))
    };
    let stream = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ExecError::Timeout(timeout))??;
    let (_, conn) = stream.get_ref();
    let protocol = conn.protocol_version().map(|v| format!("{v:?}"));
    let cipher_suite = conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite()));
    let chain_der: Vec<rustls::pki_types::CertificateDer<'static>> =
        capture.chain.lock().map(|c| c.clone()).unwrap_or_default();
    drop(stream);

    let now = chrono::Utc::now().timestamp();
    let chain: Vec<CertInfo> = chain_der.iter().filter_map(|c| cert_info(c, now)).collect();
    let leaf = chain.first();
    let verify_error = match chain_der.split_first() {
        None => Some("the server sent no certificate".to_string()),
        Some((end, rest)) => {
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| ExecError::Config(format!("no trust anchors: {e}")))?;
            use rustls::client::danger::ServerCertVerifier;
            verifier
                .verify_server_cert(end, rest, &sni, &[], rustls::pki_types::UnixTime::now())
                .err()
                .map(|e| e.to_string())
        }
    };
    Ok(TlsReport {
        address: addr.to_string(),
        server_name: name.to_string(),
        protocol,
        cipher_suite,
        expires_at: leaf.map(|l| l.not_after.clone()),
        days_left: leaf.map(|l| l.days_left),
        expired: chain_der
            .first()
            .and_then(|c| cert_times(c))
            .is_some_and(|(_, na)| na < now),
        name_matches: leaf.is_some_and(|l| name_matches(name, &l.sans)),
        verified: verify_error.is_none(),
        verify_error,
        trust: if ca.is_some() { "given CA" } else { "system" }.to_string(),
        chain,
        elapsed_ms: ms(started.elapsed()),
    })
}

/// Whether `name` (a DNS name or an IP address) matches one of `sans`. A wildcard SAN
/// (`*.example.com`) matches exactly one left-most label; IP addresses match exactly.
pub fn name_matches(name: &str, sans: &[String]) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if let Ok(ip) = name.parse::<IpAddr>() {
        return sans.iter().any(|s| s.parse::<IpAddr>().ok() == Some(ip));
    }
    sans.iter().any(|san| {
        let san = san.trim_end_matches('.').to_ascii_lowercase();
        match san.strip_prefix("*.") {
            Some(suffix) => name
                .split_once('.')
                .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
            None => san == name,
        }
    })
}

fn cert_times(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

fn cert_info(der: &[u8], now: i64) -> Option<CertInfo> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(d) => sans.push(d.to_string()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => sans.push(Ipv4Addr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
                    16 => sans.push(Ipv6Addr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string()),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    sans.truncate(100);
    Some(CertInfo {
        subject: cut(&cert.subject().to_string(), 512),
        issuer: cut(&cert.issuer().to_string(), 512),
        serial: cert.raw_serial_as_string(),
        not_before: rfc3339(not_before),
        not_after: rfc3339(not_after),
        days_left: (not_after - now).div_euclid(86_400),
        is_ca: cert.is_ca(),
        sans,
    })
}

/// [`crate::when::rfc3339`], or the number itself when it is out of range (a certificate may
/// say anything).
fn rfc3339(ts: i64) -> String {
    crate::when::rfc3339(ts).unwrap_or_else(|| ts.to_string())
}

/// A verifier that records the chain and accepts it; handshake signatures are still verified
/// with the provider's algorithms. Used only by [`tls_check`], which verifies the chain itself
/// afterwards and reports the outcome.
#[derive(Debug)]
struct Capture {
    provider: Arc<rustls::crypto::CryptoProvider>,
    chain: std::sync::Mutex<Vec<rustls::pki_types::CertificateDer<'static>>>,
}

impl rustls::client::danger::ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Ok(mut chain) = self.chain.lock() {
            chain.clear();
            chain.push(end_entity.clone().into_owned());
            chain.extend(intermediates.iter().take(9).map(|c| c.clone().into_owned()));
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_sans() {
        let sans = vec![
            "example.com".to_string(),
            "*.lan.example.com".to_string(),
            "10.0.0.1".to_string(),
        ];
        for (name, ok) in [
            ("example.com", true),
            ("EXAMPLE.com.", true),
            ("nas.lan.example.com", true),
            ("lan.example.com", false),
            ("a.b.lan.example.com", false),
            ("www.example.com", false),
            ("10.0.0.1", true),
            ("10.0.0.2", false),
        ] {
            assert_eq!(name_matches(name, &sans), ok, "{name}");
        }
    }
}
