//! Host keys: what an OpenSSH `known_hosts` file records for a host (read as OpenSSH reads
//! it; hashed entries through russh's reader), the decision on a presented key (known, changed,
//! unknown, revoked, pinned; trust on first use appends it), and the russh client handler that
//! applies that decision during the handshake.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};

use russh::client;
use russh::keys::{HashAlg, PublicKey};

use crate::exec::{ExecError, lock};
use crate::text::glob_match;

/// What the handshake learned, read after it.
#[derive(Default, Clone)]
pub(super) struct Handshake {
    pub(super) fingerprint: String,
    pub(super) server_version: String,
}

pub(super) struct Client {
    pub(super) verifier: Verifier,
    pub(super) state: Arc<StdMutex<Handshake>>,
}

#[derive(Debug)]
pub(super) enum ClientError {
    Ssh(russh::Error),
    HostKey(String),
}

impl From<russh::Error> for ClientError {
    fn from(e: russh::Error) -> Self {
        ClientError::Ssh(e)
    }
}

impl client::Handler for Client {
    type Error = ClientError;

    async fn check_server_key(&mut self, key: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Err(ClientError::HostKey(format!(
                "{} presented a host certificate; host certificates are not supported",
                self.verifier.dest
            )));
        };
        lock(&self.state).fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        self.verifier.verify(key).map_err(ClientError::HostKey)?;
        Ok(true)
    }

    async fn kex_done(
        &mut self,
        _shared_secret: Option<&[u8]>,
        _names: &russh::Names,
        session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let mut state = lock(&self.state);
        if state.server_version.is_empty() {
            state.server_version = String::from_utf8_lossy(session.remote_sshid()).trim().to_string();
        }
        Ok(())
    }
}

/// The host-key decision for one connection attempt.
pub(super) struct Verifier {
    pub(super) dest: String,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) known_hosts: Option<PathBuf>,
    /// What `known_hosts` says about this host, read before connecting.
    pub(super) recorded: Recorded,
    pub(super) pin: Option<String>,
    pub(super) tofu: bool,
    pub(super) target_id: String,
}

impl Verifier {
    fn verify(&self, presented: &PublicKey) -> Result<(), String> {
        let fp = presented.fingerprint(HashAlg::Sha256).to_string();
        let algo = presented.algorithm().to_string();
        if let Some(pin) = &self.pin
            && *pin != fp
        {
            return Err(format!(
                "HOST KEY MISMATCH for {}: the server presents {algo} {fp} but host_key_fingerprint pins {pin}. \
                 Someone may be intercepting the connection (man-in-the-middle), or the host was reinstalled. \
                 Refusing to connect; update the pin only after verifying the new fingerprint out of band",
                self.dest
            ));
        }
        let Some(path) = &self.known_hosts else {
            return Ok(()); // pinned and matched
        };
        if self
            .recorded
            .revoked
            .iter()
            .any(|k| k.key_data() == presented.key_data())
        {
            return Err(format!(
                "host key {algo} {fp} of {} is marked @revoked in {}; refusing to connect",
                self.dest,
                path.display()
            ));
        }
        match host_key_status(presented, &self.recorded.entries) {
            KeyStatus::Known => Ok(()),
            KeyStatus::Changed(recorded) => {
                let was = recorded
                    .iter()
                    .map(|(line, key)| {
                        format!("{} {} (line {line})", key.algorithm(), key.fingerprint(HashAlg::Sha256))
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                Err(format!(
                    "HOST KEY CHANGED for {}: the server presents {algo} {fp} but {} records {was}. \
                     Someone may be intercepting the connection (man-in-the-middle), or the host was reinstalled. \
                     Refusing to connect; replace the entry only after verifying the new fingerprint out of band",
                    self.dest,
                    path.display()
                ))
            }
            KeyStatus::Unknown if self.pin.is_some() => Ok(()), // the pin matched
            KeyStatus::Unknown if self.tofu => {
                append_known_host(path, &self.host, self.port, presented).map_err(|e| {
                    format!(
                        "trust_on_first_use: cannot record the host key in {}: {e}",
                        path.display()
                    )
                })?;
                tracing::warn!(
                    target_id = %self.target_id, dest = %self.dest, key = %format!("{algo} {fp}"),
                    known_hosts = %path.display(),
                    "trust on first use: accepted an unknown SSH host key and recorded it"
                );
                Ok(())
            }
            KeyStatus::Unknown => Err(format!(
                "host key for {} is not in known_hosts {} (the server presents {algo} {fp}); add it after \
                 verifying the fingerprint out of band, or pin it with host_key_fingerprint",
                self.dest,
                path.display()
            )),
        }
    }
}

#[derive(Debug, PartialEq)]
enum KeyStatus {
    Known,
    /// The host has entries, none with the presented key (of any type: a server that has a
    /// recorded type is asked for it first, see [`host_key_order`]).
    Changed(Vec<(usize, PublicKey)>),
    /// No entry at all for the host: the only case trust on first use may accept.
    Unknown,
}

/// A recorded key equal to the presented one → known; otherwise any entry for the host, whatever
/// its key type → changed (stricter than OpenSSH, which calls a key of a new type unknown: a
/// man-in-the-middle offering only another type must not pass as a first contact); no entry →
/// unknown.
fn host_key_status(presented: &PublicKey, recorded: &[(usize, PublicKey)]) -> KeyStatus {
    if recorded.iter().any(|(_, k)| k.key_data() == presented.key_data()) {
        KeyStatus::Known
    } else if recorded.is_empty() {
        KeyStatus::Unknown
    } else {
        KeyStatus::Changed(recorded.to_vec())
    }
}

fn is_rsa(a: &russh::keys::Algorithm) -> bool {
    matches!(a, russh::keys::Algorithm::Rsa { .. })
}

/// Host key algorithms to offer: those recorded for the host first (so a server with several
/// host keys presents one we know), then the rest of russh's default order.
pub(super) fn host_key_order(recorded: &[(usize, PublicKey)]) -> Vec<russh::keys::Algorithm> {
    let defaults = russh::Preferred::default().key.into_owned();
    let known = |a: &russh::keys::Algorithm| {
        recorded.iter().any(|(_, k)| {
            let r = k.algorithm();
            r == *a || (is_rsa(&r) && is_rsa(a))
        })
    };
    let mut order: Vec<_> = defaults.iter().filter(|a| known(a)).cloned().collect();
    order.extend(defaults.iter().filter(|a| !known(a)).cloned());
    order
}

/// What a known_hosts file says about one host.
#[derive(Default, Debug)]
pub(super) struct Recorded {
    /// `(line, key)` entries for this host.
    pub(super) entries: Vec<(usize, PublicKey)>,
    /// Keys on `@revoked` lines.
    pub(super) revoked: Vec<PublicKey>,
    /// Lines whose host field is hashed (matched by russh's reader).
    pub(super) hashed_lines: Vec<usize>,
}

/// The known_hosts entries for `host:port`. A missing file is an error unless trusting on first
/// use (which creates it).
///
/// Plain host lines are read here, as OpenSSH reads them: fields separated by any run of spaces
/// or tabs, host names compared case-insensitively, comma-separated patterns with `*` and `?`
/// wildcards and `!` negation. Hashed names (`|1|salt|hmac`) are matched by russh's reader
/// against the lowercased name (as ssh hashes it); it splits fields on single spaces, which is
/// how ssh and `ssh-keygen -H` write them. A line naming this host whose key cannot be parsed is
/// an error (it must not be skipped into "no entry", which would allow trust on first use).
pub(super) fn recorded_keys(host: &str, port: u16, path: &Path, tofu: bool) -> Result<Recorded, ExecError> {
    match std::fs::metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && tofu => return Ok(Recorded::default()),
        Err(e) => {
            return Err(ExecError::HostVerification(format!(
                "cannot read known_hosts {}: {e}",
                path.display()
            )));
        }
    }
    let unreadable = |e: &dyn std::fmt::Display| {
        ExecError::HostVerification(format!("cannot read known_hosts {}: {e}", path.display()))
    };
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(&e))?;
    let lower = host.to_ascii_lowercase();
    let mut recorded = parse_known_hosts(&text, &known_hosts_name(&lower, port)).map_err(|e| unreadable(&e))?;
    if recorded.hashed_lines.is_empty() {
        return Ok(recorded);
    }
    let hashed = russh::keys::known_hosts::known_host_keys_path(&lower, port, path).map_err(|e| unreadable(&e))?;
    // russh numbers entries without counting `#` comment lines; report the file's own line numbers.
    let physical: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#'))
        .map(|(i, _)| i + 1)
        .collect();
    for (n, key) in hashed {
        // Plain lines russh also matched are already in (read above, by OpenSSH's rules).
        if let Some(&line) = physical.get(n.wrapping_sub(1))
            && recorded.hashed_lines.contains(&line)
            && !recorded.entries.iter().any(|(l, _)| *l == line)
        {
            recorded.entries.push((line, key));
        }
    }
    recorded.entries.sort_by_key(|(line, _)| *line);
    Ok(recorded)
}

/// The plain (unhashed) entries of known_hosts `text` for `name` (`host` or `[host]:port`,
/// lowercased), the `@revoked` keys, and the lines with hashed host names (left to russh).
/// `@cert-authority` lines are skipped: host certificates are not supported.
fn parse_known_hosts(text: &str, name: &str) -> Result<Recorded, String> {
    let mut recorded = Recorded::default();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let mut fields = line.split_whitespace();
        let Some(hosts) = fields.next() else { continue };
        if hosts.starts_with('#') {
            continue;
        }
        if hosts == "@revoked" {
            // `@revoked PATTERNS TYPE KEY`: refused for every host (the pattern is not consulted).
            if let Some(key) = fields
                .nth(2)
                .and_then(|b64| russh::keys::parse_public_key_base64(b64).ok())
            {
                recorded.revoked.push(key);
            }
            continue;
        }
        if hosts.starts_with('@') {
            continue;
        }
        if hosts.split(',').any(|p| p.starts_with("|1|")) {
            recorded.hashed_lines.push(n);
        }
        if !host_patterns_match(hosts, name) {
            continue;
        }
        let key = fields
            .nth(1)
            .and_then(|b64| russh::keys::parse_public_key_base64(b64).ok())
            .ok_or_else(|| format!("line {n} names {name} but its key cannot be parsed"))?;
        recorded.entries.push((n, key));
    }
    Ok(recorded)
}

/// OpenSSH's rule for a known_hosts host field: some pattern of the comma-separated list matches
/// `name` and no negated (`!`) one does; case-insensitive, with `*` and `?` wildcards. Hashed
/// patterns never match here.
fn host_patterns_match(patterns: &str, name: &str) -> bool {
    let mut positive = false;
    for pattern in patterns.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        // `*` any run of bytes, `?` any one byte (OpenSSH's `match_pattern`): the crate's glob.
        if pattern.starts_with("|1|") || !glob_match(pattern.to_ascii_lowercase().as_bytes(), name.as_bytes()) {
            continue;
        }
        if negated {
            return false;
        }
        positive = true;
    }
    positive
}

/// Trust on first use: append `[host]:port KEY` (the line russh would write) to known_hosts,
/// created with mode 0600, and make sure it reached the disk before the key counts as recorded.
fn append_known_host(path: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let key = key.to_openssh().map_err(std::io::Error::other)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let mut line = String::new();
    let mut last = [0u8; 1];
    if file.seek(SeekFrom::End(-1)).is_ok() {
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.push('\n');
        }
    }
    line.push_str(&format!(
        "{} {key}\n",
        known_hosts_name(&host.to_ascii_lowercase(), port)
    ));
    file.write_all(line.as_bytes())?;
    file.sync_all()
}

pub(super) fn handshake_error(dest: &str, e: ClientError) -> ExecError {
    match e {
        ClientError::HostKey(msg) => ExecError::HostVerification(msg),
        ClientError::Ssh(russh::Error::NoCommonAlgo { kind, .. }) => {
            ExecError::Failed(format!("{dest}: no common {kind:?} algorithm with the server"))
        }
        ClientError::Ssh(e @ (russh::Error::IO(_) | russh::Error::Disconnect | russh::Error::HUP)) => {
            ExecError::Unreachable(format!("{dest}: connection closed during the SSH handshake ({e})"))
        }
        ClientError::Ssh(e) => ssh_failed(dest, e),
    }
}

pub(super) fn ssh_failed(dest: &str, e: russh::Error) -> ExecError {
    ExecError::Failed(format!("{dest}: ssh: {e}"))
}

/// `host` for port 22, `[host]:port` otherwise (the known_hosts spelling).
pub(super) fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

pub(super) fn valid_sha256_pin(pin: &str) -> bool {
    pin.strip_prefix("SHA256:")
        .is_some_and(|b64| b64.len() == 43 && b64.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    const ED_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";

    const ED_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    const ECDSA: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBCCMZaMYIfJnE0f9S58a4ImwRJo0qEt+UseMVmVC0jVgROeExFXJGLs3ZYjSD9fnEWHKm2giltXy5cTWTkw8+1w=";

    #[test]
    fn host_key_status_refuses_any_other_key_for_a_recorded_host() {
        let (a, b) = (key(ED_A), key(ED_B));
        assert_eq!(host_key_status(&a, &[(1, a.clone())]), KeyStatus::Known);
        assert_eq!(
            host_key_status(&a, &[(3, b.clone())]),
            KeyStatus::Changed(vec![(3, b.clone())])
        );
        assert_eq!(host_key_status(&a, &[(1, b.clone()), (2, a.clone())]), KeyStatus::Known);
        assert_eq!(host_key_status(&a, &[]), KeyStatus::Unknown);
        // Only a key of another type is recorded: changed, not unknown (no trust on first use).
        let ecdsa = key(ECDSA);
        assert_eq!(
            host_key_status(&a, &[(2, ecdsa.clone())]),
            KeyStatus::Changed(vec![(2, ecdsa.clone())])
        );
        assert_eq!(
            host_key_status(&ecdsa, &[(1, a.clone())]),
            KeyStatus::Changed(vec![(1, a)])
        );
    }

    #[test]
    fn known_hosts_lines_are_read_as_openssh_reads_them() {
        let name = "[server.example]:2222";
        let parse = |text: &str| parse_known_hosts(text, name).unwrap();
        let lines = |text: &str| parse(text).entries.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        // Exact, other case, tabs and several spaces, in a list, wildcards.
        assert_eq!(lines(&format!("[server.example]:2222 ssh-ed25519 {ED_A}\n")), [1]);
        assert_eq!(
            lines(&format!("[Server.EXAMPLE]:2222 ssh-ed25519 {ED_A} comment\n")),
            [1]
        );
        assert_eq!(
            lines(&format!("# c\n\n  [server.example]:2222\tssh-ed25519  {ED_A}\n")),
            [3]
        );
        assert_eq!(lines(&format!("other,[server.example]:2222 ssh-ed25519 {ED_A}\n")), [1]);
        assert_eq!(lines(&format!("[*.example]:2222 ssh-ed25519 {ED_A}\n")), [1]);
        assert_eq!(lines(&format!("[server.exampl?]:* ssh-ed25519 {ED_A}\n")), [1]);
        assert_eq!(lines(&format!("* ssh-ed25519 {ED_A}\n")), [1]);
        // Not this host: another port, the name without its port, a negated match, a comment.
        assert!(lines(&format!("[server.example]:22 ssh-ed25519 {ED_A}\n")).is_empty());
        assert!(lines(&format!("server.example ssh-ed25519 {ED_A}\n")).is_empty());
        assert!(lines(&format!("*,![server.example]:2222 ssh-ed25519 {ED_A}\n")).is_empty());
        assert!(lines(&format!("#[server.example]:2222 ssh-ed25519 {ED_A}\n")).is_empty());
        assert!(lines(&format!("@cert-authority * ssh-ed25519 {ED_A}\n")).is_empty());
        // @revoked keys are collected whatever the pattern; hashed lines are noted for russh.
        let r = parse(&format!(
            "@revoked\tnowhere ssh-ed25519 {ED_B}\n|1|x|y ssh-ed25519 {ED_A}\n"
        ));
        assert_eq!(
            (r.entries.len(), r.revoked, r.hashed_lines),
            (0, vec![key(ED_B)], vec![2])
        );
        // A line for this host with a key that cannot be read is an error, not "no entry".
        let err = parse_known_hosts("[server.example]:2222 ssh-ed25519 AAAAnotakey\n", name).unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        assert!(parse_known_hosts("[server.example]:2222\n", name).is_err());
        assert!(parse_known_hosts("elsewhere ssh-ed25519 AAAAnotakey\n", name).is_ok());
    }

    #[test]
    fn wildcards_match_like_openssh() {
        for (pattern, text, want) in [
            ("abc", "abc", true),
            ("abc", "abd", false),
            ("a*", "a", true),
            ("*c", "abc", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*.*.example", "x.y.example", true),
            ("*a*b", "xaxxab", true),
            ("**", "", true),
            ("", "x", false),
        ] {
            assert_eq!(host_patterns_match(pattern, text), want, "{pattern:?} vs {text:?}");
        }
        assert!(host_patterns_match("A,B,*.Example", "x.example"));
        assert!(!host_patterns_match("!x.example,*.example", "x.example"));
        assert!(host_patterns_match("!y.example,*.example", "x.example"));
        assert!(!host_patterns_match("!x.example", "x.example"));
    }

    #[test]
    fn recorded_keys_reads_plain_and_hashed_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        // The hashed line is russh's own test entry for example.com (port 22).
        let hashed = "|1|O33ESRMWPVkMYIwJ1Uw+n877jTo=|nuuC5vEqXlEZ/8BXQR7m619W6Ak= ssh-ed25519 \
                      AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF";
        std::fs::write(
            &path,
            format!("# comment\nEXAMPLE.com\tssh-ed25519 {ED_A}\n{hashed}\nother ssh-ed25519 {ED_B}\n"),
        )
        .unwrap();
        let r = recorded_keys("Example.Com", 22, &path, false).unwrap();
        let lines: Vec<usize> = r.entries.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, [2, 3], "{r:?}");
        assert_eq!(r.entries[0].1, key(ED_A));
        let r = recorded_keys("other", 22, &path, false).unwrap();
        assert_eq!(r.entries, [(4, key(ED_B))]);
        assert!(
            recorded_keys("example.com", 2222, &path, false)
                .unwrap()
                .entries
                .is_empty()
        );
        // A missing file: an error, unless trusting on first use (which creates it).
        let missing = dir.path().join("missing");
        assert!(recorded_keys("h", 22, &missing, false).is_err());
        assert!(recorded_keys("h", 22, &missing, true).unwrap().entries.is_empty());
    }

    #[test]
    fn trust_on_first_use_appends_a_synced_line() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("known_hosts");
        append_known_host(&path, "Host.Example", 2222, &key(ED_A)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("[host.example]:2222 ssh-ed25519 {ED_A}\n"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A file without a final newline gets one before the new line; port 22 is the bare name.
        std::fs::write(&path, "x ssh-ed25519 AAAA").unwrap();
        append_known_host(&path, "h", 22, &key(ED_B)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("x ssh-ed25519 AAAA\nh ssh-ed25519 {ED_B}\n"));
        assert_eq!(parse_known_hosts(&text, "h").unwrap().entries, [(2, key(ED_B))]);
        // A write that cannot happen is an error, not a silent success.
        assert!(append_known_host(dir.path(), "h", 22, &key(ED_A)).is_err());
        assert!(append_known_host(Path::new("/dev/full"), "h", 22, &key(ED_A)).is_err());
    }

    #[test]
    fn known_host_algorithms_come_first() {
        let order = host_key_order(&[]);
        assert_eq!(order, russh::Preferred::default().key.into_owned());
        let ed = key(ED_A);
        assert_eq!(host_key_order(&[(1, ed)])[0], russh::keys::Algorithm::Ed25519);
        // Only ECDSA recorded: asked for first, so a server that also has it presents it.
        let order = host_key_order(&[(1, key(ECDSA))]);
        assert_eq!(
            order[0],
            russh::keys::Algorithm::Ecdsa {
                curve: russh::keys::EcdsaCurve::NistP256
            }
        );
        assert_eq!(order.len(), russh::Preferred::default().key.len());
    }
}
