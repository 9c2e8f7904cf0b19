//! Renderings of structured results for a model's context: TOON (Token-Oriented Object
//! Notation, <https://toonformat.dev>), which writes arrays of uniform objects as one header
//! plus one comma-separated row per item. Encoding is `toon-format`'s, the format's reference
//! Rust implementation; this module only picks its options and never fails a call over it.

/// `value` in TOON; JSON as a fallback should the encoder refuse a value (it accepts any JSON).
pub fn toon(value: &serde_json::Value) -> String {
    match toon_format::encode_default(value) {
        Ok(text) => text,
        Err(e) => {
            tracing::warn!(error = %e, "TOON encoding failed; rendering JSON");
            serde_json::to_string_pretty(value).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uniform_rows_become_one_table() {
        let v = json!({"count": 2, "rows": [{"pid": 1, "name": "init"}, {"pid": 42, "name": "sshd"}]});
        let t = toon(&v);
        assert_eq!(t, "count: 2\nrows[2]{pid,name}:\n  1,init\n  42,sshd");
    }

    #[test]
    fn strings_that_look_like_other_things_are_quoted() {
        let v = json!({"a": "true", "b": "1,2", "c": ""});
        let t = toon(&v);
        assert_eq!(t, "a: \"true\"\nb: \"1,2\"\nc: \"\"");
    }
}
