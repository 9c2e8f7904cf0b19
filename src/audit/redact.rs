//! Redaction of tool arguments before they are stored: secret-looking keys (at any depth) and
//! configured keys get `"[REDACTED]"`; long strings are truncated with a marker.
//!
//! Pure functions only: no IO, no configuration loading, no knowledge of tools. It errs on the
//! side of redacting too much (`max_tokens` is redacted because it contains `token`).

use serde_json::{Map, Value};

/// What a redacted value is replaced with.
pub(crate) const REDACTED: &str = "[REDACTED]";
/// Strings longer than this (in bytes) are truncated.
pub(crate) const MAX_STRING: usize = 4096;
/// Redacted arguments whose JSON is longer than this are replaced by a summary object.
pub(crate) const MAX_ARGUMENTS_JSON: usize = 64 * 1024;

/// Key fragments (lowercase, with `_` and `-` removed) that mark a key as secret anywhere in it.
const SECRET_FRAGMENTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "authorization",
    "credential",
    "cookie",
];
/// Keys (normalized the same way) that are secret only as a whole.
const SECRET_KEYS: &[&str] = &["key", "pass", "auth"];
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
            extra: extra.iter().map(|k| normalize(k)).filter(|k| !k.is_empty()).collect(),
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
                    } else if ENV_KEYS.contains(&normalize(k).as_str()) {
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

    /// Whether the object key `key` names a secret.
    pub(crate) fn is_secret(&self, key: &str) -> bool {
        let k = normalize(key);
        SECRET_FRAGMENTS.iter().any(|f| k.contains(f)) || SECRET_KEYS.contains(&k.as_str()) || self.extra.contains(&k)
    }
}

/// The JSON text to store for already-redacted `arguments`: as is, or a summary object when it
/// is larger than [`MAX_ARGUMENTS_JSON`] (the row must stay small; the prefix keeps it useful).
pub(crate) fn arguments_json(redacted: &Value) -> String {
    let json = redacted.to_string();
    if json.len() <= MAX_ARGUMENTS_JSON {
        return json;
    }
    serde_json::json!({
        "truncated": true,
        "bytes": json.len(),
        "prefix": truncate_to(&json, MAX_STRING),
    })
    .to_string()
}

/// `s` cut to at most [`MAX_STRING`] bytes (on a char boundary) plus a marker saying how long it
/// was; unchanged when short enough.
pub(crate) fn truncate(s: &str) -> String {
    if s.len() <= MAX_STRING {
        return s.to_string();
    }
    truncate_to(s, MAX_STRING)
}

fn truncate_to(s: &str, max: usize) -> String {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[truncated, {} bytes]", &s[..end], s.len())
}

/// Lowercase with `_` and `-` removed: `X-Api-Key`, `api_key` and `apiKey` all become `xapikey`/`apikey`.
fn normalize(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
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
        let want = format!("{}…[truncated, {} bytes]", "b".repeat(MAX_STRING), MAX_STRING + 10);
        check(json!({"s": long.clone()}), json!({"s": want.clone()}));
        check(json!([long]), json!([want]));
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let s = format!("a{}", "é".repeat(MAX_STRING)); // 1 + 2*4096 bytes
        let t = truncate(&s);
        let kept = t.split('…').next().unwrap();
        assert!(
            kept.len() <= MAX_STRING && kept.len() >= MAX_STRING - 1,
            "{}",
            kept.len()
        );
        assert!(t.ends_with(&format!("[truncated, {} bytes]", s.len())));
        assert_eq!(truncate("short"), "short");
    }

    #[test]
    fn huge_arguments_become_a_summary() {
        let small = json!({"a": 1});
        assert_eq!(arguments_json(&small), r#"{"a":1}"#);
        let many: Vec<Value> = (0..20_000).map(|i| json!(format!("item-{i}"))).collect();
        let big = Value::Array(many);
        let out: Value = serde_json::from_str(&arguments_json(&big)).unwrap();
        assert_eq!(out["truncated"], true);
        assert_eq!(out["bytes"], big.to_string().len());
        assert!(out["prefix"].as_str().unwrap().starts_with("[\"item-0\""));
    }
}
