//! The one error taxonomy, pinned: for every [`ErrorKind`] (and the error shapes whose rendering
//! depends on more than the kind) the HTTP status, the OpenAI error `type` and `code`, the C
//! result code, the Python class, the Anthropic Messages status and type, and the public
//! message, compared with the checked-in snapshot `tests/snapshots/error_renderings.txt`. A change to any rendering is a visible diff there;
//! `NEXUS_BLESS=1 cargo test -p nexus --test error_renderings` rewrites it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use nexus::error::TimeoutPhase;
use nexus::{Error, ErrorKind};

fn upstream(status: Option<u16>) -> Error {
    Error::Upstream {
        status,
        message: "secret detail from 10.0.0.1:8443".into(),
        body: None,
        retry_after: None,
    }
}

/// One example error per kind, plus the variants that render differently.
fn examples() -> Vec<(&'static str, Error)> {
    vec![
        (
            "invalid request",
            Error::invalid_param("messages", "`messages` must not be empty"),
        ),
        ("payload too large", Error::PayloadTooLarge { limit: 8 }),
        (
            "authentication",
            Error::Authentication("invalid API key".into()),
        ),
        (
            "permission denied",
            Error::PermissionDenied("this key may not use model 'm'".into()),
        ),
        ("not found: model", Error::not_found("model 'm'")),
        ("not found: other", Error::not_found("session 's'")),
        ("conflict", Error::Conflict("already exists".into())),
        (
            "rate limited",
            Error::RateLimited {
                message: "rate limit of 1 requests per minute reached for this key".into(),
                retry_after: Some(Duration::from_secs(3)),
            },
        ),
        (
            "quota exceeded",
            Error::QuotaExceeded {
                message: "this key has used its budget of $5.00 until its monthly period rolls over; ask the gateway's operator to raise it".into(),
                retry_after: Some(Duration::from_secs(86_400)),
            },
        ),
        (
            "timeout",
            Error::Timeout {
                phase: TimeoutPhase::FirstByte,
            },
        ),
        ("upstream 400", upstream(Some(400))),
        ("upstream 401", upstream(Some(401))),
        ("upstream 403", upstream(Some(403))),
        ("upstream 404", upstream(Some(404))),
        ("upstream 429", upstream(Some(429))),
        ("upstream 302", upstream(Some(302))),
        ("upstream 500", upstream(Some(500))),
        ("upstream 529", upstream(Some(529))),
        ("upstream malformed", upstream(None)),
        (
            "transport",
            Error::Transport("connection refused (http://10.0.0.1:8443)".into()),
        ),
        (
            "unavailable",
            Error::Unavailable("every provider is cooling down".into()),
        ),
        (
            "storage",
            Error::Storage("disk I/O error at /var/lib/x".into()),
        ),
        (
            "config",
            Error::Config("master key does not decrypt".into()),
        ),
        ("internal", Error::Internal("invariant".into())),
    ]
}

fn render() -> String {
    let mut out = String::from(
        "# kind | example | http | openai type | openai code | retryable | C code | Python class | anthropic http | anthropic type | public message\n",
    );
    let covered: std::collections::HashSet<ErrorKind> =
        examples().iter().map(|(_, e)| e.kind()).collect();
    for k in ErrorKind::ALL {
        assert!(covered.contains(&k), "no example for {k}");
    }
    for (what, e) in examples() {
        let k = e.kind();
        out.push_str(&format!(
            "{} | {what} | {} | {} | {} | {} | {} | {} | {} | {} | {}\n",
            k.as_str(),
            e.http_status(),
            k.openai_type(),
            e.openai_code(),
            e.is_retryable(),
            k.c_code(),
            k.python_class(),
            e.anthropic_status(),
            e.anthropic_type(),
            e.public_message(),
        ));
    }
    out
}

#[test]
fn every_rendering_matches_the_snapshot() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots/error_renderings.txt");
    let got = render();
    if std::env::var_os("NEXUS_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        got, want,
        "error renderings changed; review the diff and rerun with NEXUS_BLESS=1 to accept"
    );
}

#[test]
fn c_codes_and_names_are_unique() {
    let mut codes = std::collections::HashSet::new();
    let mut classes = std::collections::HashSet::new();
    for k in ErrorKind::ALL {
        assert!(codes.insert(k.c_code()), "{k}");
        assert!(classes.insert(k.python_class()), "{k}");
    }
}
