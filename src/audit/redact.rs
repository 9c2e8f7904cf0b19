//! Redaction and capping of what reaches an audit row: secret keys (at any depth, decided by
//! [`crate::secrets::is_secret_name`], the one rule set the whole server uses) and configured keys
//! get `"[REDACTED]"`; every string a caller can influence is capped ([`cap`], the one function
//! that does it, with the per-field limits of [`cap_record`]); oversized argument objects become a
//! summary that keeps their key names, size and SHA-256.
//!
//! Pure functions only: no IO, no configuration loading, no knowledge of tools. It errs on the
//! side of redacting too much (`max_tokens` is redacted because it contains `token`).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::Record;

/// What a redacted value is replaced with.
pub(crate) const REDACTED: &str = "[REDACTED]";
/// Strings longer than this (in bytes) are truncated: argument strings, `reason`, `error`, and
/// every journald field value.
pub(crate) const MAX_STRING: usize = 4096;
/// Cap of `method`, `tool`, `request_id` and `session_id` (bytes).
pub(crate) const MAX_NAME: usize = 128;
/// Cap of `target` and of identity fields (principal, login, node, address, tags, grants).
pub(crate) const MAX_TARGET: usize = 1024;
/// Redacted arguments whose JSON is longer than this are replaced by a summary object (key
/// names, size, SHA-256 and a prefix), so a flood of large calls stays small on disk.
pub(crate) const MAX_ARGUMENTS_JSON: usize = 8 * 1024;
/// The prefix a summary keeps of the arguments' JSON, and the room its key names may take.
const SUMMARY_PREFIX: usize = 1024;
const SUMMARY_KEYS: usize = 2048;
/// Most entries kept of a list field (`tags`, `grants`).
const MAX_LIST: usize = 64;

/// Keys (normalized) of environment maps: the variable names are kept, every value is redacted
/// (env values carry passwords under any name, e.g. `stacks_deploy`'s `env`).
const ENV_KEYS: &[&str] = &["env", "environment"];

/// The redaction rules with the configured extra keys, normalized once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Redactor {
    extra: Vec<String>,
}

impl Redactor {
    pub(crate) fn new(extra: &[String]) -> Redactor {
        Redactor {
            extra: extra
                .iter()
                .map(|k| crate::secrets::normalize(k))
                .filter(|k| !k.is_empty())
                .collect(),
        }
    }

    /// `value` with secrets replaced and long strings truncated.
    pub(crate) fn redact(&self, value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut out = Map::with_capacity(map.len());
                for (k, v) in map {
                    let v = if self.is_secret(k) {
                        Value::String(REDACTED.to_string())
                    } else if ENV_KEYS.contains(&crate::secrets::normalize(k).as_str()) {
                        self.redact_env(v)
                    } else {
                        self.redact(v)
                    };
                    out.insert(k.clone(), v);
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| self.redact(v)).collect()),
            Value::String(s) if s.len() > MAX_STRING => Value::String(truncate(s)),
            other => other.clone(),
        }
    }

    /// An environment map (`{"NAME": value}`) or list (`["NAME=value"]`) with every value
    /// redacted and the names kept. Objects in a list (`{"name": .., "value": ..}` shapes) get
    /// the ordinary key-based redaction; anything else under an env key is redacted whole.
    fn redact_env(&self, v: &Value) -> Value {
        let redacted = || Value::String(REDACTED.to_string());
        match v {
            Value::Object(vars) => Value::Object(vars.keys().map(|name| (name.clone(), redacted())).collect()),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| match item {
                        Value::String(s) => match s.split_once('=') {
                            Some((name, _)) => Value::String(format!("{name}={REDACTED}")),
                            None => redacted(),
                        },
                        Value::Object(_) => self.redact(item),
                        _ => redacted(),
                    })
                    .collect(),
            ),
            _ => redacted(),
        }
    }

    /// Whether the object key `key` names a secret: the server-wide rule
    /// ([`crate::secrets::is_secret_name`]) or a configured key.
    pub(crate) fn is_secret(&self, key: &str) -> bool {
        crate::secrets::is_secret_name(key) || self.extra.contains(&crate::secrets::normalize(key))
    }
}

/// The JSON text to store for already-redacted `arguments`: as is, or a summary object when it
/// is larger than [`MAX_ARGUMENTS_JSON`] (the row must stay small): `{"truncated": true,
/// "bytes": N, "sha256": "…", "keys": [top-level key names], "prefix": "…"}`, so the row still
/// says what was sent.
pub(crate) fn arguments_json(redacted: &Value) -> String {
    let json = redacted.to_string();
    if json.len() <= MAX_ARGUMENTS_JSON {
        return json;
    }
    let mut keys = Vec::new();
    let mut room = SUMMARY_KEYS;
    if let Value::Object(map) = redacted {
        for k in map.keys() {
            let k = cap(k, MAX_NAME);
            if k.len() > room {
                keys.push(Value::String(format!("…[{} more keys]", map.len() - keys.len())));
                break;
            }
            room -= k.len();
            keys.push(Value::String(k));
        }
    }
    let sha = Sha256::digest(json.as_bytes());
    serde_json::json!({
        "truncated": true,
        "bytes": json.len(),
        "sha256": sha.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "keys": keys,
        "prefix": cap(&json, SUMMARY_PREFIX),
    })
    .to_string()
}

/// `s` capped at [`MAX_STRING`] bytes (see [`cap`]).
pub(crate) fn truncate(s: &str) -> String {
    cap(s, MAX_STRING)
}

/// THE cap of every caller-influenced string the audit stores or mirrors ([`crate::text::cap`]).
pub(crate) fn cap(s: &str, max: usize) -> String {
    crate::text::cap(s, max)
}

/// Cap every string field of `rec` with its limit (see the constants): the one place a record's
/// strings are capped before it is hashed, stored and mirrored. Arguments are capped separately
/// (per string by [`Redactor::redact`], as a whole by [`arguments_json`]).
pub(crate) fn cap_record(rec: &mut Record) {
    let opt = |v: &mut Option<String>, max: usize| {
        if let Some(s) = v.as_mut().filter(|s| s.len() > max) {
            *s = cap(s, max);
        }
    };
    let list = |v: &mut Vec<String>| {
        if v.len() > MAX_LIST {
            let more = v.len() - MAX_LIST + 1;
            v.truncate(MAX_LIST - 1);
            v.push(format!("…[{more} more]"));
        }
        for s in v.iter_mut().filter(|s| s.len() > MAX_TARGET) {
            *s = cap(s, MAX_TARGET);
        }
    };
    if rec.request_id.len() > MAX_NAME {
        rec.request_id = cap(&rec.request_id, MAX_NAME);
    }
    if rec.method.len() > MAX_NAME {
        rec.method = cap(&rec.method, MAX_NAME);
    }
    opt(&mut rec.session_id, MAX_NAME);
    opt(&mut rec.tool, MAX_NAME);
    opt(&mut rec.identity_source, MAX_NAME);
    opt(&mut rec.target, MAX_TARGET);
    opt(&mut rec.principal, MAX_TARGET);
    opt(&mut rec.login, MAX_TARGET);
    opt(&mut rec.node_id, MAX_TARGET);
    opt(&mut rec.node_name, MAX_TARGET);
    opt(&mut rec.remote_addr, MAX_TARGET);
    opt(&mut rec.reason, MAX_STRING);
    opt(&mut rec.error, MAX_STRING);
    list(&mut rec.tags);
    list(&mut rec.grants);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(input: Value, expected: Value) {
        check_with(&[], input, expected);
    }

    fn check_with(extra: &[&str], input: Value, expected: Value) {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let got = Redactor::new(&extra).redact(&input);
        assert_eq!(got, expected, "input: {input}");
    }

    #[test]
    fn secret_keys_are_redacted_at_any_depth() {
        check(
            json!({"password": "hunter2", "user": "bob"}),
            json!({"password": REDACTED, "user": "bob"}),
        );
        check(
            json!({"a": {"b": [{"Api_Key": "k1"}, {"apikey": "k2"}, {"X-API-KEY": "k3"}]}}),
            json!({"a": {"b": [{"Api_Key": REDACTED}, {"apikey": REDACTED}, {"X-API-KEY": REDACTED}]}}),
        );
        check(
            json!({"headers": {"Authorization": "Bearer x", "Cookie": "s=1", "Accept": "*/*"}}),
            json!({"headers": {"Authorization": REDACTED, "Cookie": REDACTED, "Accept": "*/*"}}),
        );
        // The whole value goes, whatever its type.
        check(
            json!({"credentials": {"user": "u", "pw": "p"}, "tokens": [1, 2]}),
            json!({"credentials": REDACTED, "tokens": REDACTED}),
        );
        check(
            json!({"DB_PASSWD": 1, "client_secret": null, "privateKey": "-----BEGIN", "private-key": "x"}),
            json!({"DB_PASSWD": REDACTED, "client_secret": REDACTED, "privateKey": REDACTED, "private-key": REDACTED}),
        );
        check(
            json!({"access_token": "t", "Set-Cookie": "c", "ssh_private_key": "k"}),
            json!({"access_token": REDACTED, "Set-Cookie": REDACTED, "ssh_private_key": REDACTED}),
        );
    }

    #[test]
    fn env_maps_keep_their_names_and_lose_their_values() {
        check(
            json!({"name": "app", "env": {"GREETING": "hello", "DB": {"x": 1}}}),
            json!({"name": "app", "env": {"GREETING": REDACTED, "DB": REDACTED}}),
        );
        check(
            json!({"a": [{"Environment": {"X": "1"}}], "env": ["A=1", "B", {"name": "X", "API_KEY": "k"}], "ENV": "x"}),
            json!({"a": [{"Environment": {"X": REDACTED}}], "env": [format!("A={REDACTED}"), REDACTED, {"name": "X", "API_KEY": REDACTED}], "ENV": REDACTED}),
        );
    }

    #[test]
    fn short_keys_match_only_whole() {
        check(
            json!({"key": "k", "KEY": "k", "pass": "p", "Auth": "a"}),
            json!({"key": REDACTED, "KEY": REDACTED, "pass": REDACTED, "Auth": REDACTED}),
        );
        check(
            json!({"keyboard": "k", "passage": "p", "author": "a", "monkey": "m", "path": "/etc"}),
            json!({"keyboard": "k", "passage": "p", "author": "a", "monkey": "m", "path": "/etc"}),
        );
    }

    #[test]
    fn values_are_not_keys() {
        // A string value that says "password" is kept; only keys decide.
        check(
            json!({"command": "echo password", "list": ["token", "secret"]}),
            json!({"command": "echo password", "list": ["token", "secret"]}),
        );
        check(json!("password"), json!("password"));
        check(json!(null), json!(null));
        check(json!([1, true, 2.5]), json!([1, true, 2.5]));
    }

    #[test]
    fn configured_fields_are_redacted_case_insensitively() {
        check_with(
            &["vault_path", "Pin"],
            json!({"Vault-Path": "/v", "nested": {"PIN": 1234}, "pinned": true}),
            json!({"Vault-Path": REDACTED, "nested": {"PIN": REDACTED}, "pinned": true}),
        );
        check_with(&[""], json!({"": 1}), json!({"": 1}));
    }

    #[test]
    fn long_strings_are_truncated_with_a_marker() {
        let exact = "a".repeat(MAX_STRING);
        check(json!({"s": exact.clone()}), json!({"s": exact}));
        let long = "b".repeat(MAX_STRING + 10);
        let marker = format!("…[truncated, {} bytes]", MAX_STRING + 10);
        let want = format!("{}{marker}", "b".repeat(MAX_STRING - marker.len()));
        assert_eq!(want.len(), MAX_STRING);
        check(json!({"s": long.clone()}), json!({"s": want.clone()}));
        check(json!([long]), json!([want]));
    }

    #[test]
    fn truncation_respects_char_boundaries_and_the_limit() {
        let s = format!("a{}", "é".repeat(MAX_STRING)); // 1 + 2*4096 bytes
        let t = truncate(&s);
        assert!(t.len() <= MAX_STRING && t.len() >= MAX_STRING - 1, "{}", t.len());
        assert!(t.ends_with(&format!("…[truncated, {} bytes]", s.len())));
        assert_eq!(truncate("short"), "short");
        for max in [64, 100, 128, 1024] {
            let c = cap(&"ü".repeat(10_000), max);
            assert!(c.len() <= max && c.len() >= max - 1, "{max}: {}", c.len());
            assert!(c.ends_with("…[truncated, 20000 bytes]"));
        }
        assert_eq!(cap("x", 1), "x");
    }

    #[test]
    fn every_record_string_is_capped() {
        let mb = "x".repeat(1 << 20);
        let mut r = Record {
            request_id: mb.clone(),
            session_id: Some(mb.clone()),
            principal: Some(mb.clone()),
            login: Some(mb.clone()),
            node_id: Some(mb.clone()),
            node_name: Some(mb.clone()),
            tags: vec![mb.clone(); 1000],
            remote_addr: Some(mb.clone()),
            identity_source: Some(mb.clone()),
            method: mb.clone(),
            tool: Some(mb.clone()),
            target: Some(mb.clone()),
            reason: Some(mb.clone()),
            grants: vec![mb.clone(); 3],
            error: Some(mb.clone()),
            ..Record::default()
        };
        cap_record(&mut r);
        for (name, v, max) in [
            ("request_id", Some(&r.request_id), MAX_NAME),
            ("method", Some(&r.method), MAX_NAME),
            ("session_id", r.session_id.as_ref(), MAX_NAME),
            ("tool", r.tool.as_ref(), MAX_NAME),
            ("identity_source", r.identity_source.as_ref(), MAX_NAME),
            ("target", r.target.as_ref(), MAX_TARGET),
            ("principal", r.principal.as_ref(), MAX_TARGET),
            ("login", r.login.as_ref(), MAX_TARGET),
            ("node_id", r.node_id.as_ref(), MAX_TARGET),
            ("node_name", r.node_name.as_ref(), MAX_TARGET),
            ("remote_addr", r.remote_addr.as_ref(), MAX_TARGET),
            ("reason", r.reason.as_ref(), MAX_STRING),
            ("error", r.error.as_ref(), MAX_STRING),
        ] {
            let v = v.unwrap();
            assert!(v.len() <= max, "{name}: {}", v.len());
            assert!(v.ends_with("…[truncated, 1048576 bytes]"), "{name}");
        }
        assert_eq!(r.tags.len(), MAX_LIST);
        assert_eq!(r.tags.last().unwrap(), &format!("…[{} more]", 1000 - MAX_LIST + 1));
        assert!(r.tags.iter().chain(&r.grants).all(|t| t.len() <= MAX_TARGET));
        assert_eq!(r.grants.len(), 3);
    }

    #[test]
    fn huge_arguments_become_a_summary() {
        let small = json!({"a": 1});
        assert_eq!(arguments_json(&small), r#"{"a":1}"#);
        let many: Vec<Value> = (0..20_000).map(|i| json!(format!("item-{i}"))).collect();
        let big = Value::Array(many);
        let text = arguments_json(&big);
        assert!(text.len() < MAX_ARGUMENTS_JSON / 2, "{}", text.len());
        let out: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(out["truncated"], true);
        assert_eq!(out["bytes"], big.to_string().len());
        assert!(out["prefix"].as_str().unwrap().starts_with("[\"item-0\""));
        let sha = Sha256::digest(big.to_string().as_bytes());
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(out["sha256"], hex);
        // An object keeps its key names (capped, and only as many as fit).
        let mut obj = Map::new();
        obj.insert("path".into(), json!("x".repeat(200_000)));
        obj.insert("k".repeat(1000), json!(1));
        for i in 0..500 {
            obj.insert(format!("key{i:03}"), json!("v".repeat(100)));
        }
        let text = arguments_json(&Value::Object(obj));
        assert!(text.len() <= MAX_ARGUMENTS_JSON, "{}", text.len());
        let out: Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = out["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert!(keys.contains(&"path") && keys.contains(&"key000"), "{keys:?}");
        assert!(keys.iter().all(|k| k.len() <= MAX_NAME));
        assert!(keys.last().unwrap().ends_with("more keys]"), "{keys:?}");
    }
}
