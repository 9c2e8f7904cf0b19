//! Names that go into the engine's URL paths, checked before any request is built (bollard puts
//! them into the path unescaped): container names and ids, and image references. Pure.

use crate::exec::ExecError;

/// Longest container name or id accepted.
pub const MAX_REF_LEN: usize = 255;

/// Accepts a container name or id: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most [`MAX_REF_LEN`]
/// characters. Anything else is refused before a request is built.
pub fn validate_ref(s: &str) -> Result<(), ExecError> {
    let mut chars = s.chars();
    let ok = s.len() <= MAX_REF_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        return Ok(());
    }
    let shown: String = s.chars().take(64).collect();
    let more = if s.chars().count() > 64 { "…" } else { "" };
    Err(ExecError::Refused(format!(
        "invalid container name or id {shown:?}{more}: expected letters, digits, `_`, `.` and `-`, \
         starting with a letter or digit, at most {MAX_REF_LEN} characters"
    )))
}

/// Longest image reference accepted.
pub const MAX_IMAGE_REF_LEN: usize = 255;

/// A validated image reference: `[registry[:port]/]path[:tag|@digest]`. A reference without a
/// tag or digest means `:latest` (the engine would otherwise pull every tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Repository name with its registry, e.g. `nginx`, `ghcr.io/org/app`, `127.0.0.1:5000/x`.
    pub name: String,
    /// The tag, or the digest (`sha256:…`) when `digest`.
    pub tag: String,
    pub digest: bool,
}

impl ImageRef {
    /// Parses and validates `s` (Docker's reference grammar; lowercase path components).
    pub fn parse(s: &str) -> Result<ImageRef, ExecError> {
        let bad = |why: &str| {
            let shown: String = s.chars().take(64).collect();
            let more = if s.chars().count() > 64 { "…" } else { "" };
            ExecError::Refused(format!(
                "invalid image reference {shown:?}{more}: {why} (expected [registry[:port]/]name[:tag|@sha256:digest])"
            ))
        };
        if s.is_empty() || s.len() > MAX_IMAGE_REF_LEN {
            return Err(bad(&format!("must be 1 to {MAX_IMAGE_REF_LEN} characters")));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (s, None),
        };
        let (name, tag) = match digest {
            Some(d) => {
                let (algo, hex) = d.split_once(':').ok_or_else(|| bad("digest must be ALGORITHM:HEX"))?;
                let algo_ok = !algo.is_empty() && algo.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
                let hex_ok = hex.len() >= 32 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
                if !algo_ok || !hex_ok {
                    return Err(bad("digest must be ALGORITHM:HEX (at least 32 lowercase hex digits)"));
                }
                // `name:tag@digest` pins the digest; the tag is informational.
                let name = match rest.rfind(':') {
                    Some(i) if !rest[i..].contains('/') => &rest[..i],
                    _ => rest,
                };
                (name, d.to_string())
            }
            None => match rest.rfind(':') {
                Some(i) if !rest[i..].contains('/') => {
                    let tag = &rest[i + 1..];
                    let mut chars = tag.chars();
                    let ok = tag.len() <= 128
                        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
                    if !ok {
                        return Err(bad(
                            "a tag is 1 to 128 of letters, digits, `_`, `.`, `-`, not starting with `.` or `-`",
                        ));
                    }
                    (&rest[..i], tag.to_string())
                }
                _ => (rest, "latest".to_string()),
            },
        };
        let mut parts: Vec<&str> = name.split('/').collect();
        if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
            if !valid_registry(parts[0]) {
                return Err(bad("invalid registry host"));
            }
            parts.remove(0);
        }
        if parts.iter().any(|p| !valid_path_component(p)) {
            return Err(bad(
                "each path component is lowercase letters and digits, separated by `.`, `_`, `__` or dashes",
            ));
        }
        Ok(ImageRef {
            name: name.to_string(),
            tag,
            digest: digest.is_some(),
        })
    }

    /// `name:tag` or `name@digest`.
    pub fn reference(&self) -> String {
        if self.digest {
            format!("{}@{}", self.name, self.tag)
        } else {
            format!("{}:{}", self.name, self.tag)
        }
    }
}

/// `host[:port]`: DNS labels of letters, digits and inner `-`, separated by dots.
fn valid_registry(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()));
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    port_ok && host_ok
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(s: &str) -> bool {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let sep_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &s[sep_start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_ref(input: &str, ok: bool) {
        let got = validate_ref(input);
        assert_eq!(got.is_ok(), ok, "{input:?}: {got:?}");
        if let Err(e) = got {
            assert!(matches!(e, ExecError::Refused(_)), "{input:?}: {e:?}");
        }
    }

    #[test]
    fn container_references() {
        check_ref("web", true);
        check_ref("web-1.prod_x", true);
        check_ref("0123456789ab", true);
        check_ref(&"a".repeat(64), true);
        check_ref(&"a".repeat(MAX_REF_LEN), true);
        check_ref(&"a".repeat(MAX_REF_LEN + 1), false);
        check_ref("", false);
        check_ref("x; rm -rf /", false);
        check_ref("../x", false);
        check_ref("x/../../version", false);
        check_ref("/web", false);
        check_ref("-rf", false);
        check_ref(".hidden", false);
        check_ref("_x", false);
        check_ref("x?all=1", false);
        check_ref("x#", false);
        check_ref("x%2F..", false);
        check_ref("wéb", false);
        check_ref("x\n", false);
        check_ref("a b", false);
        let msg = validate_ref("x; rm -rf /").unwrap_err().to_string();
        assert!(msg.contains("invalid container name or id \"x; rm -rf /\""), "{msg}");
    }
}
