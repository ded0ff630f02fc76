//! Gemini thought signatures carried inside OpenAI tool call ids.
//!
//! The id becomes `<id>__ts__<signature>`, the signature re-encoded as URL-safe base64 without
//! padding so the id stays within `[A-Za-z0-9_-]` (some clients and other providers check tool
//! call ids against that). A signature that is not base64 is carried as it is.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;

/// Between the id and the signature. The hub's own id stems are alphanumeric with single
/// underscores, so the first occurrence is the separator.
const SEP: &str = "__ts__";

/// `id` carrying `sig`.
pub(crate) fn attach(id: &str, sig: &str) -> String {
    let carried = match STANDARD.decode(sig) {
        Ok(raw) => URL_SAFE_NO_PAD.encode(raw),
        Err(_) => sig.to_owned(),
    };
    format!("{id}{SEP}{carried}")
}

/// The signature carried by a tool call id, as Gemini sent it.
pub(crate) fn extract(id: &str) -> Option<String> {
    let (_, carried) = id.split_once(SEP)?;
    if carried.is_empty() {
        return None;
    }
    Some(match URL_SAFE_NO_PAD.decode(carried) {
        Ok(raw) => STANDARD.encode(raw),
        Err(_) => carried.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_round_trip_through_ids() {
        for sig in ["CiQBjz1rX+/abQ==", "AAAA", "not base64!"] {
            let id = attach("call_r1_0", sig);
            assert!(id.starts_with("call_r1_0__ts__"), "{id}");
            assert_eq!(extract(&id).as_deref(), Some(sig));
        }
        let id = attach("call_r1_0", "CiQBjz1rX+/abQ==");
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{id}"
        );
        assert_eq!(extract("call_plain_0"), None);
    }
}
