//! Secret redaction for recorded request and answer bodies.
//!
//! Two rules, applied before anything is written: a JSON member whose name says it holds a
//! credential (`api_key`, `authorization`, `password`, `secret`, `token`, ...) has its value
//! replaced, and inside every string, anything shaped like a provider or client key (`sk-...`,
//! `sk-ant-...`, `AIza...`, `nx-...`, `Bearer ...`, a JWT) keeps only its first characters. The
//! rules err on the side of hiding: a recorded body is for debugging, not for replay.

use serde_json::Value;

/// What a hidden value becomes.
pub const REDACTED: &str = "[redacted]";

/// The longest recorded body, in bytes; longer ones are cut (and say so).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Member names (lower case, `-` read as `_`) whose values are credentials.
const SECRET_NAMES: &[&str] = &[
    "api_key",
    "apikey",
    "x_api_key",
    "authorization",
    "proxy_authorization",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "session_token",
    "private_key",
    "x_goog_api_key",
];

/// Prefixes of keys: what follows them (letters, digits, `-`, `_`, `.`) is a key when long enough.
const KEY_PREFIXES: &[&str] = &["sk-", "AIza", "nx-", "xai-", "gsk_", "hf_", "eyJ"];

/// The shortest run after a prefix that counts as a key.
const MIN_KEY_TAIL: usize = 12;

fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace('-', "_");
    SECRET_NAMES.contains(&n.as_str())
}

fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// `s` with every key-shaped run cut to its prefix and [`REDACTED`], and every `Bearer <token>`
/// hidden.
pub fn redact_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    'outer: while !rest.is_empty() {
        for p in KEY_PREFIXES {
            if rest.starts_with(p) {
                let tail = rest[p.len()..]
                    .char_indices()
                    .find(|&(_, c)| !key_char(c))
                    .map_or(rest.len() - p.len(), |(i, _)| i);
                if tail >= MIN_KEY_TAIL {
                    out.push_str(p);
                    out.push_str(REDACTED);
                    rest = &rest[p.len() + tail..];
                    continue 'outer;
                }
            }
        }
        if let Some(after) = rest.strip_prefix("Bearer ") {
            let n = after
                .char_indices()
                .find(|&(_, c)| !key_char(c))
                .map_or(after.len(), |(i, _)| i);
            if n > 0 {
                out.push_str("Bearer ");
                out.push_str(REDACTED);
                rest = &after[n..];
                continue;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
            // Inside a word a prefix is not a key's start (`task-...`, `desk-...`).
            if c.is_ascii_alphanumeric() {
                let skip = chars.as_str().find(|c: char| !c.is_ascii_alphanumeric());
                let word = skip.unwrap_or(chars.as_str().len());
                out.push_str(&chars.as_str()[..word]);
                rest = &chars.as_str()[word..];
                continue;
            }
        }
        rest = chars.as_str();
    }
    out
}

/// `v` with credentials hidden (see the module docs).
pub fn redact_json(v: &mut Value) {
    match v {
        Value::String(s) => {
            let r = redact_text(s);
            if r != *s {
                *s = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_json),
        Value::Object(o) => {
            for (k, val) in o.iter_mut() {
                if is_secret_name(k) && !val.is_null() {
                    *val = Value::String(REDACTED.into());
                } else {
                    redact_json(val);
                }
            }
        }
        _ => {}
    }
}

/// A body to record: JSON is redacted member by member, anything else as text; cut to
/// [`MAX_BODY_BYTES`].
pub fn redact_body(body: &[u8]) -> String {
    let s = match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            redact_json(&mut v);
            v.to_string()
        }
        Err(_) => redact_text(&String::from_utf8_lossy(body)),
    };
    cut(s)
}

/// A value to record, redacted and cut like [`redact_body`].
pub fn redact_value(v: &Value) -> String {
    let mut v = v.clone();
    redact_json(&mut v);
    cut(v.to_string())
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_BODY_BYTES {
        let mut end = MAX_BODY_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("…[cut]");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_in_text_keep_only_their_prefix() {
        let t = redact_text(
            "my key is sk-proj-abcdefghijklmnop1234, ok? and AIzaSyA1234567890abcdefghij",
        );
        assert_eq!(t, "my key is sk-[redacted], ok? and AIza[redacted]");
        assert_eq!(
            redact_text("Authorization: Bearer abc.def-123 done"),
            "Authorization: Bearer [redacted] done"
        );
        // Short runs and prefixes inside words are not keys.
        assert_eq!(
            redact_text("sk-short task-abcdefghijklmnopqrstu"),
            "sk-short task-abcdefghijklmnopqrstu"
        );
        assert_eq!(redact_text("héllo wörld"), "héllo wörld");
    }

    #[test]
    fn secret_members_are_hidden_at_any_depth() {
        let mut v = json!({"model": "m", "api_key": "plain", "nested": [{"Authorization": "x", "X-Api-Key": "y"}],
                           "messages": [{"role": "user", "content": "use sk-ant-api03-abcdefghijklmnopqrstuvwx"}],
                           "token": null});
        redact_json(&mut v);
        assert_eq!(v["api_key"], REDACTED);
        assert_eq!(v["nested"][0]["Authorization"], REDACTED);
        assert_eq!(v["nested"][0]["X-Api-Key"], REDACTED);
        assert_eq!(v["messages"][0]["content"], "use sk-[redacted]");
        assert!(v["token"].is_null());
        assert_eq!(v["model"], "m");
    }

    #[test]
    fn long_bodies_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_BODY_BYTES);
        let r = redact_body(long.as_bytes());
        assert!(r.len() <= MAX_BODY_BYTES + 10);
        assert!(r.ends_with("…[cut]"));
    }
}
